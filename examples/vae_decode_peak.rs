//! Measures the SDXL VAE decode's memory peak and time on the CPU (issue 19): loads only the
//! VAE tensors of a single-file SDXL checkpoint, decodes one seeded random latent and prints
//! the decode seconds and how far resident anonymous memory rose above its level before the
//! decode: `cargo run --release --example vae_decode_peak -- CHECKPOINT [--size PIXELS]
//! [--seed N] [--threads N] [--out FILE] [--reference FILE] [--glibc-defaults]`. `--out`
//! writes the decoded tensor (to compare another build's decode against); `--reference` reads
//! such a file and prints the largest difference in 8-bit pixels, rounded as the image nodes
//! round. The allocator is set up as `weft` sets it up (freed buffers stay in the heap, no
//! `mmap` per buffer), so the peak is the heap's high-water mark as in a `weft` run;
//! `--glibc-defaults` keeps glibc's defaults instead (buffers over 32 MB mapped and unmapped).
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use weft_nodes::models::autoencoder_kl::{AutoencoderKL, VaeConfig};
use weft_nodes::weights::ldm_keymap::{vae_key, Mapped, VAE_PREFIX};
use weft_nodes::weights::{MappedFile, WeightedModel, Weights};

struct Args {
    checkpoint: String,
    size: i64,
    seed: i64,
    threads: Option<i32>,
    out: Option<String>,
    reference: Option<String>,
    glibc_defaults: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        checkpoint: String::new(),
        size: 512,
        seed: 0,
        threads: None,
        out: None,
        reference: None,
        glibc_defaults: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |s: String| s.parse::<i64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--size" => args.size = number(value("--size")?)?,
            "--seed" => args.seed = number(value("--seed")?)?,
            "--threads" => args.threads = Some(number(value("--threads")?)? as i32),
            "--out" => args.out = Some(value("--out")?),
            "--reference" => args.reference = Some(value("--reference")?),
            "--glibc-defaults" => args.glibc_defaults = true,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s if args.checkpoint.is_empty() => args.checkpoint = s.to_string(),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    if args.checkpoint.is_empty() || args.size <= 0 || args.size % 8 != 0 {
        return Err(
            "usage: vae_decode_peak CHECKPOINT [--size PIXELS (multiple of 8)] \
                    [--seed N] [--threads N] [--out FILE] [--reference FILE] [--glibc-defaults]"
                .into(),
        );
    }
    Ok(args)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vae_decode_peak: {e}");
            std::process::exit(2);
        }
    };
    // Before any thread exists, as weft's main does.
    if !args.glibc_defaults {
        weft_engine::host_memory::keep_freed_memory_for_reuse();
    }
    if let Err(e) = run(&args) {
        eprintln!("vae_decode_peak: {e}");
        std::process::exit(1);
    }
}

/// A `kB` field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The VAE alone from an LDM single file (`first_stage_model.*`), in fp32 as weft keeps an
/// SDXL VAE: the UNet and text towers are never read.
fn load_vae(path: &Path) -> Result<AutoencoderKL, Box<dyn std::error::Error>> {
    let config = VaeConfig::sdxl();
    let blocks = config.block_out_channels.len();
    let file = MappedFile::open(path)?;
    let mut conv_to_linear = Vec::new();
    let mut tensors = file.read(Device::Cpu, Some(Kind::Float), |name| {
        match vae_key(name.strip_prefix(VAE_PREFIX)?, blocks)? {
            Mapped::Rename(new) => Some(new),
            Mapped::ConvToLinear(new) => {
                conv_to_linear.push(new.clone());
                Some(new)
            }
            _ => None,
        }
    })?;
    for name in conv_to_linear {
        if let Some(t) = tensors.get_mut(&name) {
            let s = t.size();
            if s.len() == 4 {
                *t = t.reshape([s[0], s[1]]);
            }
        }
    }
    let weights = Weights::new(format!("{} (VAE)", path.display()), tensors);
    Ok(AutoencoderKL::new(&weights, "", config)?)
}

/// 8-bit pixels as the image nodes make them from a decode in [-1, 1].
fn to_8bit(decoded: &Tensor) -> Tensor {
    ((decoded + 1.0) / 2.0)
        .clamp(0.0, 1.0)
        .multiply_scalar(255.0)
        .round()
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let vae = load_vae(Path::new(&args.checkpoint))?;
    tch::manual_seed(args.seed);
    let side = args.size / 8;
    // Unscaled latents, as VaeDecode hands them over: the sampler's spread over the scale.
    let latent = Tensor::randn([1, 4, side, side], (Kind::Float, Device::Cpu))
        / VaeConfig::sdxl().scaling_factor;

    let before = status_bytes("RssAnon");
    // VmHWM restarts from the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_bytes("VmRSS");
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(status_bytes("RssAnon"));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let started = Instant::now();
    let decoded = vae.decode(&latent)?;
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().map_err(|_| "sampler thread panicked")?;
    let hwm = status_bytes("VmHWM");
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "decode_s {seconds:.2} rss_anon_before_gib {:.3} rss_anon_peak_delta_gib {:.3} \
         hwm_delta_gib {:.3}",
        gib(before),
        gib(peak.saturating_sub(before)),
        gib(hwm.saturating_sub(rss_before)),
    );
    let decoded = decoded.contiguous();
    if let Some(out) = &args.out {
        decoded.save(out)?;
    }
    if let Some(reference) = &args.reference {
        let want = Tensor::load(reference)?;
        let float_diff = (&decoded - &want).abs().max().double_value(&[]);
        let pixel_diff = (to_8bit(&decoded) - to_8bit(&want))
            .abs()
            .max()
            .double_value(&[]);
        println!("max_abs_diff {float_diff:.3e} max_8bit_diff {pixel_diff}");
    }
    Ok(())
}
