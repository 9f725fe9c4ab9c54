//! The embedded tiny-shapes model, judged through weft on prompts its training never used:
//! scripts/eval_tiny_shapes.py renders all of scripts/tiny_shapes_heldout.py (24 prompts per
//! set, two seeds each: the goals are stated over the whole set) with this build's
//! `weft run`, checks its own judge on rendered ground truth, and fails when the
//! judge or the unseen combinations are under issue 9's goals (shape colour 90%, background
//! 95%, shape 85%), or when fewer than 80% of the place prompts (nine places, two prompts, two
//! seeds) put the shape in the named ninth of the image. The paraphrase sets' rates are
//! printed, not asserted: the current model is far from their 60% goal, and the text encoder is
//! why (models/tiny-shapes/README.md says by how much).
use std::process::Command;

use weft_test_support::{converted_asset, repo_root, setup_python};

#[test]
#[ignore = "needs set-up's venv and models/converted; `make test` runs it"]
fn tiny_shapes_follows_held_out_prompts() {
    converted_asset("minilm/model.safetensors");
    let root = repo_root();
    let output = Command::new(setup_python())
        .arg(root.join("scripts/eval_tiny_shapes.py"))
        .args(["--check-judge", "150", "--assert"])
        .arg("--weft")
        .arg(env!("CARGO_BIN_EXE_weft"))
        .arg("--models")
        .arg(root.join("models"))
        .output()
        .expect("run scripts/eval_tiny_shapes.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "held-out evaluation failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "judge on 150 rendered images",
        "combinations (48 images)",
        "paraphrases (48 images)",
        "paraphrases-2 (48 images)",
        "paraphrases-3 (48 images)",
        "positions (36 images",
    ] {
        assert!(
            stdout.contains(line),
            "the evaluation printed no '{line}' line"
        );
    }
}
