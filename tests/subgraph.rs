//! Subgraphs through the CLI: a workflow file used as a node plans to the same cache keys as
//! its nodes written inline, its errors point into its own file, files that include each
//! other are refused, and the parent's use of it is checked against what it declares.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weft_test_support::{copy_library, repo_root};

fn weft(args: &[&str]) -> Output {
    weft_in(&repo_root(), args)
}

/// `weft ARGS` run in `dir` (where its `models/` folder is looked for).
fn weft_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("weft runs")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Node id -> cache key, from `weft plan --json`.
fn keys(workflow: &Path) -> BTreeMap<String, String> {
    keys_in(&repo_root(), workflow)
}

/// [`keys`], planned from `dir`.
fn keys_in(dir: &Path, workflow: &Path) -> BTreeMap<String, String> {
    let out = weft_in(dir, &["plan", workflow.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["node"].as_str().unwrap().into(),
                v["key"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// A workflow in `dir` (beside a copy of the library in `dir/lib`).
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    if !dir.join("lib").exists() {
        copy_library(dir);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const TXT2IMG_AS_SUBGRAPH: &str = "weft: 1
nodes:
  model:
    type: LoadCheckpoint
    name: tiny-shapes
  gen:
    type: Txt2Img
    unet: $model.unet
    vae: $model.vae
    text_encoder: $model.text_encoder
    prompt: a red circle on a blue background
    seed: 42
    cfg: 5
  save:
    type: SaveImage
    image: $gen.image
    prefix: txt2img
";

#[test]
fn subgraph_nodes_have_the_cache_keys_of_the_same_nodes_inline() {
    let dir = tempfile::tempdir().unwrap();
    let sub = keys(&write(dir.path(), "sub.yaml", TXT2IMG_AS_SUBGRAPH));
    let inline = keys(&repo_root().join("workflows/txt2img.yaml"));
    for (inner, outer) in [
        ("gen__positive", "positive"),
        ("gen__negative", "negative"),
        ("gen__latent", "latent"),
        ("gen__sample", "sample"),
        ("gen__decode", "decode"),
        ("save", "save"),
    ] {
        assert_eq!(sub[inner], inline[outer], "{inner} vs {outer}");
    }
}

const SDXL_TWO_STAGE: &str = "weft: 1
nodes:
  base:
    type: LoadCheckpoint
    name: sd_xl_base_1.0.safetensors
  refiner:
    type: LoadCheckpoint
    name: sd_xl_refiner_1.0.safetensors
  both:
    type: SdxlTwoStage
    base_unet: $base.unet
    base_text_encoder: $base.text_encoder
    refiner_unet: $refiner.unet
    refiner_text_encoder: $refiner.text_encoder
    vae: $refiner.vae
    prompt: a lighthouse on a cliff at sunset, dramatic clouds, oil painting
    negative: blurry, low quality
    seed: 42
  save:
    type: SaveImage
    image: $both.image
    prefix: sdxl_refiner
";

/// The library's SDXL base-then-refiner node plans to the keys of workflows/sdxl_refiner.yaml
/// written inline, so the two-stage example and the node share their cache. Planning hashes the
/// model files and loads nothing, so placeholder files stand in for the 6-7 GB checkpoints.
#[test]
fn the_sdxl_two_stage_node_has_the_cache_keys_of_the_example_inline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    for (name, fill) in [
        ("sd_xl_base_1.0.safetensors", 1u8),
        ("sd_xl_refiner_1.0.safetensors", 2),
    ] {
        std::fs::write(dir.path().join("models").join(name), vec![fill; 1024]).unwrap();
    }
    let sub = keys_in(
        dir.path(),
        &write(dir.path(), "two_stage.yaml", SDXL_TWO_STAGE),
    );
    let inline = keys_in(dir.path(), &repo_root().join("workflows/sdxl_refiner.yaml"));
    let inner = [
        "positive",
        "negative",
        "refiner_positive",
        "refiner_negative",
        "latent",
        "base_sample",
        "refine",
        "decode",
    ];
    for node in inner {
        assert_eq!(sub[&format!("both__{node}")], inline[node], "{node}");
    }
    assert_eq!(sub["save"], inline["save"]);
    assert_eq!(sub.len(), inline.len(), "{sub:?}");
}

const INPAINT_AS_SUBGRAPH: &str = "weft: 1
nodes:
  model:
    type: LoadCheckpoint
    name: tiny-shapes
  input:
    type: LoadImage
    path: workflows/inputs/yellow-star-masked.png
  paint:
    type: Inpaint
    image: $input.image
    mask: $input.mask
    unet: $model.unet
    vae: $model.vae
    text_encoder: $model.text_encoder
    prompt: a large red circle on a purple background
    seed: 7
  save:
    type: SaveImage
    image: $paint.image
    prefix: inpaint
";

/// The library's Inpaint node plans to the keys of workflows/inpaint.yaml written inline (its
/// defaults are the example's settings), so the example and the node share their cache.
#[test]
fn the_inpaint_node_has_the_cache_keys_of_the_example_inline() {
    let dir = tempfile::tempdir().unwrap();
    // Planned from the repository, where the image's path is the example's.
    let sub = keys(&write(dir.path(), "inpaint.yaml", INPAINT_AS_SUBGRAPH));
    let inline = keys(&repo_root().join("workflows/inpaint.yaml"));
    for node in [
        "encode",
        "masked",
        "positive",
        "negative",
        "sample",
        "decode",
        "composite",
    ] {
        assert_eq!(sub[&format!("paint__{node}")], inline[node], "{node}");
    }
    for node in ["model", "input", "save"] {
        assert_eq!(sub[node], inline[node], "{node}");
    }
    assert_eq!(sub.len(), inline.len(), "{sub:?}");
}

#[test]
fn a_path_type_is_relative_to_the_workflow_and_the_example_validates() {
    let dir = tempfile::tempdir().unwrap();
    let text = TXT2IMG_AS_SUBGRAPH.replace("type: Txt2Img", "type: ./lib/Txt2Img.yaml");
    let out = weft(&[
        "validate",
        write(dir.path(), "path.yaml", &text).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let example = repo_root().join("workflows/txt2img-then-img2img.yaml");
    let out = weft(&["validate", example.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
}

#[test]
fn an_error_inside_a_subgraph_points_into_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let broken = std::fs::read_to_string(repo_root().join("workflows/lib/Txt2Img.yaml"))
        .unwrap()
        .replace(
            "    type: EmptyLatent\n",
            "    type: EmptyLatent\n    batch: 0\n",
        );
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    std::fs::write(dir.path().join("lib/Txt2Img.yaml"), &broken).unwrap();
    let line = broken.lines().position(|l| l == "    batch: 0").unwrap() + 1;
    let out = weft(&[
        "validate",
        write(dir.path(), "w.yaml", TXT2IMG_AS_SUBGRAPH)
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let all = output_text(&out);
    assert!(
        all.contains(&format!(
            "lib/Txt2Img.yaml:{line}:12: error: node 'gen__latent', input 'batch'"
        )),
        "{all}"
    );
}

#[test]
fn the_parent_is_checked_against_what_the_subgraph_declares() {
    let dir = tempfile::tempdir().unwrap();
    let text = TXT2IMG_AS_SUBGRAPH
        .replace(
            "    prompt: a red circle on a blue background\n",
            "    promt: a red circle\n",
        )
        .replace("    cfg: 5\n", "    cfg: 500\n")
        .replace("image: $gen.image", "image: $gen.picture");
    let out = weft(&[
        "validate",
        write(dir.path(), "w.yaml", &text).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let all = output_text(&out);
    for expected in [
        "node 'gen', input 'promt': unknown input 'promt' of this subgraph",
        "did you mean 'prompt'?",
        "node 'gen', input 'prompt': missing input 'prompt' (string)",
        "node 'gen', input 'cfg': value 500 is out of range",
        "node 'save', input 'image': subgraph 'gen'",
        "has no output 'picture'",
    ] {
        assert!(all.contains(expected), "expected {expected:?} in:\n{all}");
    }
    // Each mistake once, at the parent: nothing cascades into the subgraph's own file.
    assert!(all.contains("4 errors in"), "{all}");
}

#[test]
fn subgraph_files_that_include_each_other_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let looping = |other: &str| {
        format!(
            "weft: 1\ninputs: {{}}\noutputs:\n  value: $inner.value\nnodes:\n  inner:\n    type: ./{other}\n"
        )
    };
    write(dir.path(), "a.yaml", &looping("b.yaml"));
    write(dir.path(), "b.yaml", &looping("a.yaml"));
    let top = write(
        dir.path(),
        "top.yaml",
        "weft: 1\nnodes:\n  start:\n    type: ./a.yaml\n  show:\n    type: ShowInt\n    value: $start.value\n",
    );
    let out = weft(&["validate", top.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let all = output_text(&out);
    assert!(
        all.contains("subgraph files include each other:") && all.contains("a.yaml -> "),
        "{all}"
    );
}

#[test]
fn nodes_and_schema_list_library_subgraphs() {
    let out = weft(&["nodes", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let img2img = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "Img2Img")
        .expect("Img2Img listed");
    assert_eq!(img2img["category"], "subgraph");
    assert_eq!(img2img["outputs"][0]["type"], "image");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("workflows/schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema["$defs"]["subgraph.Txt2Img"]["properties"]["width"]["default"],
        64
    );
}
