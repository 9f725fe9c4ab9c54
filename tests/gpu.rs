//! On a CUDA device: txt2img through the whole workflow in fp16, the same seed on CPU and GPU in
//! fp32 giving the same picture within a stated tolerance, the UNet replayed from a CUDA graph
//! following new inputs as the eager call does, and the device memory a run reports agreeing
//! with the cache's accounting. Ignored without a GPU; the README's test command runs the
//! `cuda_` tests only where `nvidia-smi` sees a device.
use std::path::{Path, PathBuf};
use std::process::Command;

use weft_test_support::{converted_asset, repo_root};

/// Runs txt2img on `device` with `precision`, returns the PNG it wrote.
fn txt2img(out: &Path, device: &str, precision: &str) -> PathBuf {
    txt2img_output(out, device, precision).0
}

/// Runs txt2img on `device` with `precision`; the PNG it wrote and what it printed.
fn txt2img_output(out: &Path, device: &str, precision: &str) -> (PathBuf, String) {
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
    (
        PathBuf::from(line.trim_start_matches("wrote ")),
        stdout.to_string(),
    )
}

/// These tests are asked for only where a GPU is: libtorch must see it (once CUDA support is
/// loaded, as `weft --device cuda` does).
fn require_cuda() {
    weft_cuda::load().expect("loading CUDA support");
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device is visible to libtorch"
    );
}

fn pixels(png: &Path) -> Vec<u8> {
    image::open(png).expect("a PNG").to_rgb8().into_raw()
}

#[test]
#[ignore = "needs a CUDA device; `make test` runs it where nvidia-smi sees one"]
fn cuda_txt2img_fp16_runs_the_whole_workflow() {
    require_cuda();
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
    require_cuda();
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

#[test]
#[ignore = "needs a CUDA device; `make test` runs it where nvidia-smi sees one"]
fn cuda_graph_replay_follows_new_inputs_like_the_eager_unet() {
    use tch::{Device, Kind, Tensor};
    use weft_nodes::models::unet_2d_condition::{UNet2DConditionModel, UNetConfig};
    use weft_nodes::models::unet_cuda_graph::UNetGraphs;
    use weft_nodes::weights::{WeightedModel, Weights};

    require_cuda();
    let device = Device::Cuda(0);
    let config = UNetConfig::tiny_sd1();
    tch::manual_seed(0);
    let tensors = UNet2DConditionModel::weight_shapes(config.clone())
        .unwrap()
        .into_iter()
        .map(|(name, shape)| {
            let t = Tensor::randn(&shape, (Kind::Float, device)) * 0.05;
            (name, t.to_kind(Kind::Half))
        })
        .collect();
    let unet = UNet2DConditionModel::new(&Weights::new("random", tensors), "", config).unwrap();
    let graphs = UNetGraphs::default();
    let dim = unet.config().cross_attention_dim;
    for (round, t) in [900.0, 500.0, 20.0].into_iter().enumerate() {
        let sample = Tensor::randn([2, 4, 16, 16], (Kind::Half, device));
        let timesteps = Tensor::full([2], t, (Kind::Float, device));
        let context = Tensor::randn([2, 7, dim], (Kind::Half, device));
        let eager = unet.forward(&sample, &timesteps, &context).unwrap();
        let replayed = graphs
            .forward(&unet, &sample, &timesteps, &context)
            .expect("graphs apply on CUDA")
            .unwrap();
        let worst = weft_test_support::max_abs_diff(&eager, &replayed);
        assert!(worst < 1e-2, "round {round}: replay differs by {worst}");
    }
    assert_eq!(graphs.off_because(), None);
    assert_eq!(graphs.captured(), 1, "one shape, one graph");
}

#[test]
#[ignore = "needs a CUDA device; `make test` runs it where nvidia-smi sees one"]
fn cuda_run_reports_device_memory_that_the_cache_accounts_for() {
    require_cuda();
    let dir = tempfile::tempdir().unwrap();
    let (_, stdout) = txt2img_output(dir.path(), "cuda", "fp16");
    // "memory: cache 95.3 MiB of 4096.0 MiB (7 values); cuda allocated 97.0 MiB (peak ...), ..."
    let line = stdout
        .lines()
        .find(|l| l.starts_with("memory: "))
        .unwrap_or_else(|| panic!("no memory line in:\n{stdout}"));
    let mib = |after: &str| -> f64 {
        let rest = &line[line.find(after).expect(after) + after.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (cache, allocated) = (mib("memory: cache "), mib("cuda allocated "));
    // Everything the run left on the device is in the cache (models, conditioning, latents),
    // give or take library workspaces.
    assert!(
        allocated <= cache * 1.05 + 64.0 && allocated >= cache * 0.5,
        "device holds {allocated} MiB, cache accounts for {cache} MiB: {line}"
    );
}
