//! On a CUDA device: txt2img through the whole workflow in fp16, and the same seed on CPU and
//! GPU in fp32 giving the same picture within a stated tolerance. Ignored without a GPU; the
//! README's test command runs the `cuda_` tests only where `nvidia-smi` sees a device.
use std::path::{Path, PathBuf};
use std::process::Command;

use weft_test_support::{converted_asset, repo_root};

/// Runs txt2img on `device` with `precision`, returns the PNG it wrote.
fn txt2img(out: &Path, device: &str, precision: &str) -> PathBuf {
    converted_asset("minilm/model.safetensors");
    let workflow = repo_root().join("workflows/txt2img.yaml");
    let result = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(repo_root())
        .args(["run", workflow.to_str().unwrap(), "--device", device])
        .args(["--output", out.to_str().unwrap()])
        .args(["--set", &format!("model.precision={precision}")])
        .args(["--set", &format!("save.prefix={device}-{precision}")])
        .output()
        .expect("weft runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "weft run on {device}: {stdout}{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("wrote "))
        .expect("a 'wrote' line");
    PathBuf::from(line.trim_start_matches("wrote "))
}

fn pixels(png: &Path) -> Vec<u8> {
    image::open(png).expect("a PNG").to_rgb8().into_raw()
}

#[test]
#[ignore = "needs a CUDA device; `make test` runs it where nvidia-smi sees one"]
fn cuda_txt2img_fp16_runs_the_whole_workflow() {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device is visible to libtorch"
    );
    let dir = tempfile::tempdir().unwrap();
    let png = txt2img(dir.path(), "cuda", "fp16");
    let rgb = pixels(&png);
    assert_eq!(rgb.len(), 64 * 64 * 3);
    // The prompt is a red circle on blue: the picture is not blank and blue leads on the edge.
    let (mut red, mut blue) = (0u64, 0u64);
    for (i, px) in rgb.chunks(3).enumerate() {
        let (x, y) = (i % 64, i / 64);
        if x < 8 || y < 8 || x >= 56 || y >= 56 {
            red += px[0] as u64;
            blue += px[2] as u64;
        }
    }
    assert!(blue > red, "border should be blue: red {red}, blue {blue}");
}

#[test]
#[ignore = "needs a CUDA device; `make test` runs it where nvidia-smi sees one"]
fn cuda_and_cpu_fp32_images_agree_within_two_levels() {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device is visible to libtorch"
    );
    let dir = tempfile::tempdir().unwrap();
    let cpu = pixels(&txt2img(dir.path(), "cpu", "fp32"));
    let gpu = pixels(&txt2img(dir.path(), "cuda", "fp32"));
    // Initial noise is drawn on the CPU for both, so only kernel rounding differs.
    let worst = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 2, "CPU and CUDA differ by {worst} levels of 255");
}
