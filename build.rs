//! Link arguments for the `weft` binary: keep libtorch_cuda (its CUDA hooks register when it
//! loads, so CUDA is found on a GPU machine; only weft-cuda's shim names its symbols, and only
//! where torch has CUDA) and an rpath to the venv's torch/lib so `target/release/weft` runs
//! without LD_LIBRARY_PATH.
include!("cuda/torch_lib.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=WEFT_TORCH_LIB");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda/torch_lib.rs");
    if let Some(dir) = torch_lib_dir() {
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
