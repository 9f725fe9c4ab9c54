//! Reproducibility: the same workflow (two library subgraphs, fixed seeds) gives byte-identical
//! PNGs in two separate processes, and `weft run IMAGE.png` re-makes the image byte for byte
//! from the workflow the PNG carries, with nothing beside it (no workflow file, no lib/).
use std::path::Path;
use std::process::{Command, Output};

use weft_test_support::{converted_asset, copy_library, repo_root, weft_run_ok};

fn weft_run(dir: &Path, file: &str, output: &str) -> Output {
    weft_run_ok(Path::new(env!("CARGO_BIN_EXE_weft")), dir, file, output)
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn the_same_workflow_and_seed_give_the_same_png_and_the_png_reproduces_itself() {
    converted_asset("minilm/model.safetensors");
    let project = tempfile::tempdir().unwrap();
    copy_library(project.path());
    // The example, with fewer steps to stay quick.
    let example =
        std::fs::read_to_string(repo_root().join("workflows/txt2img-then-img2img.yaml")).unwrap();
    let quick = example
        .replace("    seed: 3\n", "    seed: 3\n    steps: 4\n")
        .replace("    seed: 7\n", "    seed: 7\n    steps: 4\n");
    assert_eq!(quick.matches("steps: 4").count(), 2, "{quick}");
    std::fs::write(project.path().join("flow.yaml"), quick).unwrap();

    weft_run(project.path(), "flow.yaml", "first");
    weft_run(project.path(), "flow.yaml", "second");
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let first = read(&project.path().join("first/repainted_00001.png"));
    assert_eq!(
        first,
        read(&project.path().join("second/repainted_00001.png")),
        "two processes, same workflow and seeds: the same bytes"
    );
    assert_eq!(
        read(&project.path().join("first/star_00001.png")),
        read(&project.path().join("second/star_00001.png"))
    );

    // The PNG alone, in an empty folder: it carries the workflow with its subgraphs inlined.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("image.png"), &first).unwrap();
    let out = weft_run(elsewhere.path(), "image.png", "again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("draw__sample"), "inner nodes ran: {stdout}");
    assert_eq!(
        read(&elsewhere.path().join("again/repainted_00001.png")),
        first,
        "weft run IMAGE.png re-makes IMAGE.png byte for byte"
    );
}

#[test]
fn a_png_without_a_workflow_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]))
        .save(dir.path().join("plain.png"))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir.path())
        .args(["run", "plain.png", "--device", "cpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plain.png is a PNG without a weft workflow"),
        "{stderr}"
    );
}
