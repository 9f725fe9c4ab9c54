//! Times one UNet denoising step (and one VAE decode) of Stable Diffusion with random weights:
//! by default the SD 1.5 config in fp16 on CUDA, batch 2 (classifier-free guidance), 64x64
//! latent (512x512 image), 77x768 text context: the shape of the PyTorch baseline in the
//! project's GPU notes (scripts/device/pytorch_sd15_reference.py measures it in the same call),
//! so the figures compare one to one.
//!
//! ```text
//! cargo run --release -p weft-nodes --example unet_bench -- [--tiny] [--sd21] [--cpu]
//!     [--fp32|--bf16] [--batch N] [--latent N] [--steps N] [--warmup N] [--no-vae]
//!     [--vae-latent N] [--graph]
//! ```
//! `--graph` (CUDA) also times the step replayed from a CUDA graph (the sampler's path: inputs
//! copied in, output copied out) and prints how far it is from the eager output. The last line
//! is the figures as JSON.
//! `--tiny` uses the tiny test configs (CPU-friendly). Weights are random (zero biases, unit
//! norms, fan-in-scaled normals), so activations stay finite in fp16.
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use weft_nodes::models::autoencoder_kl::{AutoencoderKL, VaeConfig};
use weft_nodes::models::unet_2d_condition::{UNet2DConditionModel, UNetConfig};
use weft_nodes::models::unet_cuda_graph::UNetGraphs;
use weft_nodes::weights::{WeightedModel, Weights};

/// Random values for every tensor in `shapes` (a model's `weight_shapes`), on `device` / `kind`.
fn random_weights(
    shapes: BTreeMap<String, Vec<i64>>,
    device: Device,
    kind: Kind,
) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (name, shape) in shapes {
        let opts = (Kind::Float, device);
        let t = if name.ends_with(".bias") {
            Tensor::zeros(&shape, opts)
        } else if shape.len() == 1 {
            Tensor::ones(&shape, opts) // norm scales
        } else {
            let fan_in: i64 = shape[1..].iter().product();
            Tensor::randn(&shape, opts) / (fan_in as f64).sqrt()
        };
        out.insert(name, t.to_kind(kind));
    }
    out
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `f` `warmup` times, then `steps` times, and returns the mean milliseconds per call.
fn time_ms(device: Device, warmup: usize, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    sync(device);
    let start = Instant::now();
    for _ in 0..steps {
        f();
    }
    sync(device);
    start.elapsed().as_secs_f64() * 1000.0 / steps as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let value = |flag: &str, default: i64| -> i64 {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let tiny = has("--tiny");
    let device = if has("--cpu") {
        Device::Cpu
    } else {
        // libtorch finds CUDA only once libtorch_cuda is loaded, before any question about it.
        if let Err(e) = weft_cuda::load() {
            eprintln!("no CUDA support: {e}");
        }
        Device::cuda_if_available()
    };
    let kind = if has("--fp32") || (device == Device::Cpu && !has("--bf16")) {
        Kind::Float
    } else if has("--bf16") {
        Kind::BFloat16
    } else {
        Kind::Half
    };
    if let Device::Cuda(_) = device {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let (unet_config, vae_config) = match (tiny, has("--sd21")) {
        (true, false) => (UNetConfig::tiny_sd1(), VaeConfig::tiny()),
        (true, true) => (UNetConfig::tiny_sd2(), VaeConfig::tiny()),
        (false, false) => (UNetConfig::sd15(), VaeConfig::sd()),
        (false, true) => (UNetConfig::sd21(), VaeConfig::sd()),
    };
    let batch = value("--batch", 2);
    let latent = value("--latent", if tiny { 16 } else { 64 });
    let steps = value("--steps", if tiny { 10 } else { 20 }) as usize;
    let warmup = value("--warmup", 3) as usize;
    println!(
        "device {device:?}, {kind:?}, {} UNet, batch {batch}, latent {latent}x{latent}, context 77x{}",
        if tiny { "tiny" } else { "full" },
        unet_config.cross_attention_dim
    );

    let start = Instant::now();
    let tensors = random_weights(
        UNet2DConditionModel::weight_shapes(unet_config.clone()).expect("valid config"),
        device,
        kind,
    );
    let params: i64 = tensors.values().map(|t| t.numel() as i64).sum();
    let unet = UNet2DConditionModel::new(&Weights::new("random", tensors), "", unet_config.clone())
        .expect("random weights fit");
    println!(
        "UNet: {:.1} M parameters, built in {:.2} s",
        params as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    let sample = Tensor::randn([batch, 4, latent, latent], (kind, device));
    let context = Tensor::randn([batch, 77, unet_config.cross_attention_dim], (kind, device));
    let timestep = Tensor::from_slice(&vec![500f32; batch as usize]).to_device(device);
    let mut out = None;
    let ms = time_ms(device, warmup, steps, || {
        out = Some(
            unet.forward(&sample, &timestep, &context)
                .expect("UNet step"),
        );
    });
    let out = out.expect("ran");
    let finite = out.isfinite().all().int64_value(&[]) == 1;
    println!(
        "UNet step: {ms:.2} ms (mean of {steps}; output {:?}, finite: {finite})",
        out.size()
    );
    let mut figures = vec![
        ("unet_step_ms".to_string(), ms),
        ("batch".to_string(), batch as f64),
        ("latent".to_string(), latent as f64),
    ];

    if has("--graph") {
        let graphs = UNetGraphs::default();
        let mut replayed = None;
        let graph_ms = time_ms(device, warmup, steps, || {
            replayed = Some(
                graphs
                    .forward(&unet, &sample, &timestep, &context)
                    .expect("CUDA graphs apply here (CUDA device, WEFT_CUDA_GRAPHS not 0)")
                    .expect("graph replay"),
            );
        });
        // New inputs through the same graph: it must follow them, not repeat the captured call.
        let sample2 = Tensor::randn([batch, 4, latent, latent], (kind, device));
        let context2 = Tensor::randn([batch, 77, unet_config.cross_attention_dim], (kind, device));
        let eager2 = unet
            .forward(&sample2, &timestep, &context2)
            .expect("UNet step");
        let graph2 = graphs
            .forward(&unet, &sample2, &timestep, &context2)
            .expect("graphs apply")
            .expect("graph replay");
        let diff = |a: &Tensor, b: &Tensor| {
            (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
                .abs()
                .max()
                .double_value(&[])
        };
        let first_diff = diff(&replayed.expect("ran"), &out);
        let second_diff = diff(&graph2, &eager2);
        println!(
            "UNet step, CUDA graph replay: {graph_ms:.2} ms ({:.2}x eager); largest difference \
             from eager: {first_diff:e} (captured inputs), {second_diff:e} (new inputs); {} graph(s)",
            graph_ms / ms,
            graphs.captured()
        );
        figures.push(("graph_step_ms".into(), graph_ms));
        figures.push(("graph_max_diff".into(), first_diff.max(second_diff)));
    }

    if !has("--no-vae") {
        let tensors = random_weights(
            AutoencoderKL::weight_shapes(vae_config.clone()).expect("valid config"),
            device,
            kind,
        );
        let vae = AutoencoderKL::new(&Weights::new("random", tensors), "", vae_config)
            .expect("random weights fit");
        let vae_latent = value("--vae-latent", latent);
        let latents = Tensor::randn([1, 4, vae_latent, vae_latent], (kind, device));
        let mut image = None;
        let ms = time_ms(device, 1, steps.min(5), || {
            image = Some(vae.decode(&latents).expect("VAE decode"));
        });
        println!(
            "VAE decode: {ms:.2} ms (batch 1, image {:?})",
            image.expect("ran").size()
        );
        figures.push((format!("vae_decode_ms_{}", vae_latent * 8), ms));
    }
    let json: Vec<String> = figures
        .iter()
        .map(|(name, value)| format!("\"{name}\": {value}"))
        .collect();
    println!("{{{}}}", json.join(", "));
}
