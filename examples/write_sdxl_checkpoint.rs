//! Writes an SDXL-base-sized fp16 single-file checkpoint of small pseudo-random values (6.9 GB,
//! the layout of test-support/data/sdxl_ldm_shapes.json: model.diffusion_model.*,
//! first_stage_model.*, conditioner.embedders.0/1.*), or with `--refiner` an SDXL-refiner-sized
//! one (6.1 GB, test-support/data/sdxl_refiner_ldm_shapes.json: bigG alone at
//! conditioner.embedders.0.model.*), for measuring load time, step time and memory:
//! `cargo run --release --example write_sdxl_checkpoint -- [--refiner] OUT.safetensors`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let refiner = args.iter().any(|a| a == "--refiner");
    let Some(out) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: write_sdxl_checkpoint [--refiner] OUT.safetensors");
        std::process::exit(2);
    };
    let path = std::path::Path::new(out);
    let written = if refiner {
        weft_test_support::write_sdxl_refiner_shaped_checkpoint(path)
    } else {
        weft_test_support::write_sdxl_shaped_checkpoint(path)
    };
    if let Err(e) = written {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
}
