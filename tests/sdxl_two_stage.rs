//! SDXL base then refiner through `weft run`, on reduced-width SDXL-architecture single files
//! written at test time (test-support's `write_tiny_sdxl_checkpoints`: both text towers with
//! the real 49408-token vocabulary, so the real tokenizer's ids and a long weighted prompt go
//! through them): the graph runs, the refiner's image comes out, and the latent the base hands
//! over with its noise left in is what the refiner samples from.
use std::path::{Path, PathBuf};

use weft_test_support::{converted_asset, weft_run_ok, write_tiny_sdxl_checkpoints};

const PROMPT: &str = "a (lighthouse:1.2) on a rocky island at dusk, waves crashing against the \
    rocks, seagulls circling overhead, warm light from the lantern room, dramatic clouds, oil \
    painting in the style of the old masters, highly detailed brushwork, golden hour, long \
    shadows, a small fishing boat returning to the harbour, mist over the water";

/// Base steps 0-4 of 6 with the noise left in, then: the refiner from step 4 (the two-stage
/// graph), the base itself from step 4 (must equal one 6-step run), and the refiner from a
/// base latent returned without its noise (must differ). Latents are saved as previews.
fn workflow(base: &Path, refiner: &Path) -> String {
    let sampler = |name: &str, model: &str, pos: &str, neg: &str, latent: &str, window: &str| {
        format!(
            "  {name}:\n    type: SamplerAdvanced\n    model: ${model}.unet\n    positive: ${pos}.conditioning\n    negative: ${neg}.conditioning\n    latent: ${latent}.latent\n    seed: 7\n    steps: 6\n    cfg: 5.0\n    sampler: euler\n    schedule: normal\n{window}"
        )
    };
    let save = |name: &str, latent: &str| {
        format!(
            "  {name}_view:\n    type: LatentPreview\n    latent: ${latent}.latent\n  {name}_save:\n    type: SaveImage\n    image: ${name}_view.image\n    prefix: {name}\n"
        )
    };
    let mut yaml = format!(
        "weft: 1\nnodes:\n  base:\n    type: LoadCheckpoint\n    name: {}\n  refiner:\n    type: LoadCheckpoint\n    name: {}\n",
        base.display(),
        refiner.display()
    );
    yaml += &format!(
        "  positive:\n    type: PromptEncodeSdxl\n    encoder: $base.text_encoder\n    text_g: \"{PROMPT}\"\n    text_l: \"{PROMPT}\"\n    width: 1024\n    height: 768\n    crop_w: 64\n    crop_h: 32\n  negative:\n    type: PromptEncode\n    encoder: $base.text_encoder\n    text: blurry\n"
    );
    yaml += &format!(
        "  refiner_positive:\n    type: PromptEncodeSdxlRefiner\n    encoder: $refiner.text_encoder\n    ascore: 6.0\n    width: 64\n    height: 64\n    text: \"{PROMPT}\"\n  refiner_negative:\n    type: PromptEncodeSdxlRefiner\n    encoder: $refiner.text_encoder\n    ascore: 2.5\n    width: 64\n    height: 64\n    text: blurry\n"
    );
    yaml += "  latent:\n    type: EmptyLatent\n    width: 64\n    height: 64\n";
    let first = "    add_noise: true\n    start_at_step: 0\n    end_at_step: 4\n";
    let rest = "    add_noise: false\n    start_at_step: 4\n    end_at_step: 10000\n    leftover_noise: false\n";
    yaml += &sampler(
        "base_sample",
        "base",
        "positive",
        "negative",
        "latent",
        &format!("{first}    leftover_noise: true\n"),
    );
    yaml += &sampler(
        "base_clean",
        "base",
        "positive",
        "negative",
        "latent",
        &format!("{first}    leftover_noise: false\n"),
    );
    yaml += &sampler(
        "refine",
        "refiner",
        "refiner_positive",
        "refiner_negative",
        "base_sample",
        rest,
    );
    yaml += &sampler(
        "refine_clean",
        "refiner",
        "refiner_positive",
        "refiner_negative",
        "base_clean",
        rest,
    );
    yaml += &sampler(
        "base_finish",
        "base",
        "positive",
        "negative",
        "base_sample",
        rest,
    );
    yaml += &sampler(
        "base_whole",
        "base",
        "positive",
        "negative",
        "latent",
        "    add_noise: true\n    start_at_step: 0\n    end_at_step: 10000\n    leftover_noise: false\n",
    );
    yaml += "  decode:\n    type: VaeDecode\n    vae: $refiner.vae\n    latent: $refine.latent\n  save:\n    type: SaveImage\n    image: $decode.image\n    prefix: two_stage\n";
    for (name, latent) in [
        ("handed_over", "base_sample"),
        ("handed_over_clean", "base_clean"),
        ("refined", "refine"),
        ("refined_clean", "refine_clean"),
        ("finished", "base_finish"),
        ("whole", "base_whole"),
    ] {
        yaml += &save(name, latent);
    }
    yaml
}

fn png(out: &Path, prefix: &str) -> image::RgbImage {
    let path: PathBuf = out.join(format!("{prefix}_00001.png"));
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn sdxl_base_then_refiner_runs_and_the_refiner_samples_the_bases_leftover_noise() {
    converted_asset("clip/bpe_simple_vocab_16e6.txt.gz");
    let dir = tempfile::tempdir().unwrap();
    let (base, refiner) = write_tiny_sdxl_checkpoints(dir.path()).unwrap();
    std::fs::write(dir.path().join("two_stage.yaml"), workflow(&base, &refiner)).unwrap();
    let run = weft_run_ok(
        Path::new(env!("CARGO_BIN_EXE_weft")),
        dir.path(),
        "two_stage.yaml",
        "out",
    );
    let log =
        String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
    let out = dir.path().join("out");

    let image = png(&out, "two_stage");
    assert_eq!(image.dimensions(), (64, 64), "{log}");

    // The base's window hands over a latent that the rest of the schedule continues exactly:
    // steps 0-4 with the noise left in, then 4-6 without new noise, equal one 6-step run.
    assert_eq!(
        png(&out, "finished"),
        png(&out, "whole"),
        "base 0-4 + 4-6 differs from base 0-6"
    );
    // What the refiner starts from is the noisy latent (not the one denoised to the end of
    // step 4), and what it returns depends on it.
    assert_ne!(
        png(&out, "handed_over"),
        png(&out, "handed_over_clean"),
        "leftover noise made no difference to the base's latent"
    );
    assert_ne!(
        png(&out, "refined"),
        png(&out, "refined_clean"),
        "the refiner ignored the latent the base handed over"
    );
    assert_ne!(
        png(&out, "refined"),
        png(&out, "handed_over"),
        "the refiner did not change the latent"
    );
}

/// LoadCheckpoint looks for the CLIP vocabulary before it reads a checkpoint (an SDXL file
/// is 7 GB): with no vocabulary in the model folders, the error names it, not the file.
#[test]
fn a_missing_clip_vocabulary_is_reported_before_the_checkpoint_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    // Not a safetensors file: reading it first would fail on its header instead.
    std::fs::write(models.join("unread.safetensors"), b"not a checkpoint").unwrap();
    std::fs::write(
        dir.path().join("load.yaml"),
        "weft: 1\nnodes:\n  base:\n    type: LoadCheckpoint\n    name: unread.safetensors\n  encode:\n    type: PromptEncode\n    encoder: $base.text_encoder\n    text: a cube\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir.path())
        .args([
            "run",
            "load.yaml",
            "--target",
            "encode",
            "--device",
            "cpu",
            "--models",
        ])
        .arg(&models)
        .output()
        .expect("weft runs");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("CLIP vocabulary"), "{text}");
    assert!(
        !text.contains("not a valid"),
        "the checkpoint was read first: {text}"
    );
}
