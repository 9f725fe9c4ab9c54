//! Writes an SD1.5-sized fp16 single-file checkpoint of small pseudo-random values (2.1 GB,
//! the LDM layout of test-support/data/sd15_ldm_shapes.json) for measuring load time and memory:
//! `cargo run --release --example write_sd15_checkpoint -- OUT.safetensors`.
fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: write_sd15_checkpoint OUT.safetensors");
        std::process::exit(2);
    };
    if let Err(e) = weft_test_support::write_sd15_shaped_checkpoint(std::path::Path::new(&out)) {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
}
