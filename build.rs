//! Link arguments for the `weft` binary: an rpath to the venv's torch/lib, so that
//! `target/release/weft` runs without LD_LIBRARY_PATH and finds libtorch_cuda there when CUDA
//! is wanted (weft-cuda loads it then; a CPU run never maps the CUDA libraries).
include!("cuda/torch_lib.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=WEFT_TORCH_LIB");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda/torch_lib.rs");
    if let Some(dir) = torch_lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
