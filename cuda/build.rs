//! Compiles csrc/cuda_shim.cpp into a shared library against the torch that tch links (the
//! venv's, found the same way as the root build.rs: WEFT_TORCH_LIB, else python3) and the CUDA
//! runtime headers PyPI's packages ship; the crate embeds it and loads it, after libtorch_cuda,
//! only when CUDA is wanted (a CPU run never maps the CUDA libraries). Where torch has no CUDA
//! build or the headers are missing, nothing is compiled and CUDA stays unavailable.
use std::path::{Path, PathBuf};

include!("torch_lib.rs");

/// A folder with the CUDA runtime's headers complete (cuda_runtime_api.h and the crt/ headers
/// it includes, which PyPI's runtime wheels leave to the compiler's package): the copy triton,
/// a dependency of torch, ships; PyPI's CUDA 13 layout where nvcc's wheel filled it in; a
/// system toolkit.
fn cuda_include_dir(site_packages: &Path) -> Option<PathBuf> {
    let mut candidates = vec![
        site_packages.join("triton/backends/nvidia/include"),
        site_packages.join("nvidia/cu13/include"),
    ];
    if let Ok(home) = std::env::var("CUDA_HOME") {
        candidates.push(Path::new(&home).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.into_iter().find(|dir| {
        dir.join("cuda_runtime_api.h").exists() && dir.join("crt/host_config.h").exists()
    })
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(weft_cuda_shim)");
    println!("cargo:rerun-if-env-changed=WEFT_TORCH_LIB");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=torch_lib.rs");
    println!("cargo:rerun-if-changed=csrc/cuda_shim.cpp");
    let Some(lib) = torch_lib_dir() else {
        println!(
            "cargo:warning=weft-cuda: no torch found; CUDA graphs and memory statistics are off"
        );
        return;
    };
    let torch = lib.parent().expect("torch/lib has a parent").to_path_buf();
    let site_packages = torch.parent().expect("torch has a parent").to_path_buf();
    let include = torch.join("include");
    let has_cuda_torch = ["libtorch_cuda.so", "libc10_cuda.so"]
        .iter()
        .all(|name| lib.join(name).exists())
        && include.join("ATen/cuda/CUDAGraph.h").exists();
    let Some(cuda_include) = cuda_include_dir(&site_packages).filter(|_| has_cuda_torch) else {
        println!(
            "cargo:warning=weft-cuda: {} has no CUDA build of torch or no CUDA runtime headers; \
             CUDA graphs and memory statistics are off",
            torch.display()
        );
        return;
    };
    // cc knows the C++ compiler and its flags; the library is linked by hand since cc makes
    // static archives only.
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let library = out.join("libweft_cuda_shim.so");
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-O2", "-std=c++17", "-w"])
        // PyPI's torch is built with the C++11 string ABI.
        .arg("-D_GLIBCXX_USE_CXX11_ABI=1")
        .arg("-I")
        .arg(&include)
        .arg("-I")
        .arg(include.join("torch/csrc/api/include"))
        .arg("-I")
        .arg(&cuda_include)
        .arg("csrc/cuda_shim.cpp")
        .arg("-o")
        .arg(&library)
        .arg(format!("-L{}", lib.display()))
        .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"])
        .status()
        .expect("running the C++ compiler");
    assert!(status.success(), "compiling csrc/cuda_shim.cpp failed");
    println!(
        "cargo:rustc-env=WEFT_CUDA_SHIM_LIBRARY={}",
        library.display()
    );
    println!("cargo:rustc-cfg=weft_cuda_shim");
}
