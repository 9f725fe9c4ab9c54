//! Times weft's UNet forward on a full-size SDXL file as the sampler calls it (batch 2: the
//! prompt and the negative; the context's cross-attention keys and values remembered between
//! steps), for scripts/bench/sdxl_unet_step.py to set beside ComfyUI's UNet on the same shapes:
//! `cargo run --release --example sdxl_unet_step -- CHECKPOINT [--fp32] [--threads N]
//! [--steps N] SIZE...` (SIZE: image side in pixels, e.g. 128 512). The UNet is loaded as
//! LoadCheckpoint's `precision: auto` loads it on the CPU (an fp16 file's weights kept fp16,
//! computed in fp32), or with `--fp32` converted to fp32 (`precision: fp32`). Prints one line
//! per size: `size SIZE forward_s S1 S2 ...` after one untimed warm-up forward.
use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use weft_nodes::models::attention::KeyValueMemo;
use weft_nodes::weights::checkpoint::{load_checkpoint, LoadOptions};

struct Args {
    checkpoint: String,
    fp32: bool,
    threads: Option<i32>,
    steps: usize,
    sizes: Vec<i64>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        checkpoint: String::new(),
        fp32: false,
        threads: None,
        steps: 3,
        sizes: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--fp32" => args.fp32 = true,
            "--threads" => {
                args.threads = Some(value("--threads")?.parse().map_err(|e| format!("{e}"))?)
            }
            "--steps" => args.steps = value("--steps")?.parse().map_err(|e| format!("{e}"))?,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s if args.checkpoint.is_empty() => args.checkpoint = s.to_string(),
            s => args
                .sizes
                .push(s.parse().map_err(|e| format!("size {s}: {e}"))?),
        }
    }
    if args.checkpoint.is_empty() || args.sizes.is_empty() || args.steps == 0 {
        return Err("usage: sdxl_unet_step CHECKPOINT [--fp32] [--threads N] \
                    [--steps N] SIZE..."
            .into());
    }
    Ok(args)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sdxl_unet_step: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("sdxl_unet_step: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // The allocator as `weft` sets it up: freed memory stays in the heap for reuse.
    weft_engine::host_memory::keep_freed_memory_for_reuse();
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let options = LoadOptions {
        sdxl_text_kind: Some(Kind::Half),
        sdxl_unet_as_stored: !args.fp32,
        ..LoadOptions::default()
    };
    let started = Instant::now();
    let loaded = load_checkpoint(Path::new(&args.checkpoint), &options)?;
    println!("load_s {:.2}", started.elapsed().as_secs_f64());
    let unet = loaded.unet;
    println!("weights {:?} compute {:?}", unet.weight_kind(), unet.kind());
    // Only the UNet is timed: the rest would hold memory the comparison does not count.
    drop((
        loaded.vae,
        loaded.text_encoder_weights,
        loaded.text_encoder_2,
    ));
    let cpu = (Kind::Float, Device::Cpu);
    tch::manual_seed(0);
    let context = Tensor::randn([2, 77, 2048], cpu);
    let pooled = Tensor::randn([2, 1280], cpu);
    let time_ids = Tensor::from_slice(&[1024f32, 1024., 0., 0., 1024., 1024.])
        .reshape([1, 6])
        .repeat([2, 1]);
    let added = unet.added_conditioning(&pooled, &time_ids)?;
    for &size in &args.sizes {
        let sample = Tensor::randn([2, 4, size / 8, size / 8], cpu);
        let memo = KeyValueMemo::default();
        let mut times = Vec::new();
        for step in 0..=args.steps {
            let t = Tensor::from_slice(&[999.0f32 - 50.0 * step as f32; 2]);
            let started = Instant::now();
            let out = unet.forward_with_added(&sample, &t, &context, Some(&added), Some(&memo))?;
            let took = started.elapsed().as_secs_f64();
            let _ = out.sum(Kind::Float).double_value(&[]);
            // The first call computes the remembered keys and values and touches fresh pages.
            if step > 0 {
                times.push(format!("{took:.3}"));
            }
        }
        println!("size {size} forward_s {}", times.join(" "));
    }
    Ok(())
}
