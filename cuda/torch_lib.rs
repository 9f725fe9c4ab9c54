// The venv torch's lib folder, for build scripts (included by build.rs here and at the root):
// WEFT_TORCH_LIB (scripts/env.sh sets it), else asked of python3.
fn torch_lib_dir() -> Option<std::path::PathBuf> {
    if let Ok(dir) = std::env::var("WEFT_TORCH_LIB") {
        return Some(dir.into());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os,torch;print(os.path.join(os.path.dirname(torch.__file__),'lib'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().into())
}
