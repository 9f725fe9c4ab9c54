//! Writes an SDXL-base-sized fp16 single-file checkpoint of small pseudo-random values (6.9 GB,
//! the layout of test-support/data/sdxl_ldm_shapes.json: model.diffusion_model.*,
//! first_stage_model.*, conditioner.embedders.0/1.*), or with `--refiner` an SDXL-refiner-sized
//! one (6.1 GB, test-support/data/sdxl_refiner_ldm_shapes.json: bigG alone at
//! conditioner.embedders.0.model.*), for measuring load time, step time and memory:
//! `cargo run --release --example write_sdxl_checkpoint -- [--refiner] [--fan-in-scaled] OUT.safetensors`.
//! `--fan-in-scaled` (base only) scales the values as a default initialisation does (kernels
//! of standard deviation 1/sqrt(fan-in), norms 1, biases 0): activations keep their size through
//! the UNet, so a full-size image has structure to compare (the small values draw flat grey).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let refiner = args.iter().any(|a| a == "--refiner");
    let fan_in_scaled = args.iter().any(|a| a == "--fan-in-scaled");
    let unknown: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--") && *a != "--refiner" && *a != "--fan-in-scaled")
        .collect();
    let Some(out) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: write_sdxl_checkpoint [--refiner] [--fan-in-scaled] OUT.safetensors");
        std::process::exit(2);
    };
    if !unknown.is_empty() || (refiner && fan_in_scaled) {
        eprintln!(
            "write_sdxl_checkpoint: unknown option or --fan-in-scaled with --refiner ({unknown:?}); \
             usage: write_sdxl_checkpoint [--refiner] [--fan-in-scaled] OUT.safetensors"
        );
        std::process::exit(2);
    }
    let path = std::path::Path::new(out);
    let written = if refiner {
        weft_test_support::write_sdxl_refiner_shaped_checkpoint(path)
    } else if fan_in_scaled {
        weft_test_support::write_sdxl_shaped_checkpoint_fan_in_scaled(path)
    } else {
        weft_test_support::write_sdxl_shaped_checkpoint(path)
    };
    if let Err(e) = written {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
}
