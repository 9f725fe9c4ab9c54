//! Writes an SDXL-base-sized fp16 single-file checkpoint of small pseudo-random values (6.9 GB,
//! the layout of test-support/data/sdxl_ldm_shapes.json: model.diffusion_model.*,
//! first_stage_model.*, conditioner.embedders.0/1.*) for measuring load time, step time and
//! memory: `cargo run --release --example write_sdxl_checkpoint -- OUT.safetensors`.
fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: write_sdxl_checkpoint OUT.safetensors");
        std::process::exit(2);
    };
    if let Err(e) = weft_test_support::write_sdxl_shaped_checkpoint(std::path::Path::new(&out)) {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
}
