//! Link arguments for the `weft` binary: keep libtorch_cuda (so CUDA is found on a GPU
//! machine even though no symbol of it is referenced directly) and an rpath to the venv's
//! torch/lib so `target/release/weft` runs without LD_LIBRARY_PATH.
use std::process::Command;

fn torch_lib_dir() -> Option<String> {
    if let Ok(dir) = std::env::var("WEFT_TORCH_LIB") {
        return Some(dir);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os,torch;print(os.path.join(os.path.dirname(torch.__file__),'lib'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=WEFT_TORCH_LIB");
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(dir) = torch_lib_dir() {
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
