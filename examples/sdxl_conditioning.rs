//! Writes what weft's SDXL text side makes of a prompt (both towers' states concatenated and
//! bigG's pooled output) to a safetensors file, for comparing tensor by tensor with ComfyUI's
//! CLIPTextEncodeSDXL (scripts/parity/sdxl_comfyui.py `--conditioning`):
//! `cargo run --release --example sdxl_conditioning -- CHECKPOINT VOCAB OUT.safetensors TEXT_G TEXT_L`.
//! The towers are loaded as LoadCheckpoint's `precision: auto` loads them on the CPU (fp16
//! weights, fp32 arithmetic).
use std::path::Path;

use tch::{Device, Kind};
use weft_nodes::models::clip_tokenizer::ClipTokenizer;
use weft_nodes::models::sdxl_text::SdxlTextEncoders;
use weft_nodes::weights::checkpoint::{load_checkpoint, LoadOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [checkpoint, vocab, out, text_g, text_l] = args.as_slice() else {
        eprintln!("usage: sdxl_conditioning CHECKPOINT VOCAB OUT.safetensors TEXT_G TEXT_L");
        std::process::exit(2);
    };
    if let Err(e) = run(checkpoint, vocab, out, text_g, text_l) {
        eprintln!("sdxl_conditioning: {e}");
        std::process::exit(1);
    }
}

fn run(
    checkpoint: &str,
    vocab: &str,
    out: &str,
    text_g: &str,
    text_l: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let tokenizer = ClipTokenizer::from_file(Path::new(vocab))?;
    let options = LoadOptions {
        sdxl_text_kind: Some(Kind::Half),
        ..LoadOptions::default()
    };
    let loaded = load_checkpoint(Path::new(checkpoint), &options)?;
    let clip_g = loaded
        .text_encoder_2
        .ok_or_else(|| format!("{checkpoint}: not an SDXL base checkpoint (no bigG tower)"))?;
    let encoders = SdxlTextEncoders::from_weights(
        loaded.text_encoder_weights,
        &loaded.text_encoder_config,
        clip_g.weights,
        &clip_g.config,
        tokenizer,
        Device::Cpu,
        Kind::Float,
    )?;
    let encoded = encoders.encode_pair(text_l, text_g)?;
    tch::Tensor::write_safetensors(
        &[("context", &encoded.context), ("pooled", &encoded.pooled)],
        out,
    )?;
    Ok(())
}
