//! Compiles csrc/cuda_shim.cpp against the torch that tch links (the venv's, found the same way
//! as the root build.rs: WEFT_TORCH_LIB, else python3) and the CUDA runtime headers PyPI's
//! nvidia packages ship. Where either is missing (a CPU-only torch), nothing is compiled and
//! the crate reports CUDA graphs and memory statistics as unavailable.
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
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("csrc/cuda_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&cuda_include)
        // PyPI's torch is built with the C++11 string ABI.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("weft_cuda_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    for name in ["torch_cuda", "c10_cuda", "torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    println!("cargo:rustc-cfg=weft_cuda_shim");
}
