//! `weft import` and `weft export-comfy` on the ComfyUI workflows in tests/comfy/ (written as
//! ComfyUI exports them): each imports and validates, some run end to end on the embedded
//! tiny-shapes model, the UI and API forms of one workflow give the same nodes, the round trip
//! through ComfyUI's API format is exact for the one-to-one ones, and errors are located.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use weft_engine::Workflow;

const CKPT: &str = "v1-5-pruned-emaonly.safetensors=tiny-shapes";

/// The files that import one to one: their export is the original API workflow.
const ONE_TO_ONE: [&str; 15] = [
    "01_txt2img_default",
    "02_txt2img_ancestral_karras",
    "03_txt2img_dpmpp_2m_sde_exponential",
    "04_img2img",
    "05_hires_fix",
    "08_upscale_with_model",
    "11_three_samplers",
    "12_ui_txt2img.api",
    "13_sdxl_base",
    "14_txt2img_dpmpp_2m_sde_beta",
    "15_two_stage_advanced",
    "30_inpaint_noise_mask",
    "31_outpaint_vae_encode_for_inpaint",
    "32_inpaint_model_conditioning",
    "33_color_mask_inpaint",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("weft runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn comfy_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/comfy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Imports `file` into `dir/<stem>.yaml`; panics with weft's output on failure.
fn import(file: &Path, dir: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{}.yaml", stem(file)));
    let mut args = vec![
        "import",
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = weft(&args);
    assert!(
        o.status.success(),
        "import {}: {}",
        file.display(),
        text(&o.stderr)
    );
    out
}

fn read_workflow(path: &Path) -> Workflow {
    Workflow::parse(&std::fs::read(path).unwrap()).unwrap()
}

/// The YAML without its first two lines (schema line, "Imported from ...") and without the
/// layout (ComfyUI's API format has no positions).
fn body(path: &Path) -> String {
    let t = std::fs::read_to_string(path).unwrap();
    let t = t.split("\nlayout:\n").next().unwrap();
    t.lines().skip(2).collect::<Vec<_>>().join("\n")
}

fn minilm_ready() -> bool {
    let ready = repo()
        .join("models/converted/minilm/model.safetensors")
        .exists();
    if !ready {
        eprintln!("SKIPPED: models/converted/minilm is missing; run scripts/setup.sh");
    }
    ready
}

#[test]
fn every_comfy_workflow_imports_and_validates() {
    let files = comfy_files();
    assert!(files.len() >= 12, "{files:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut ui = 0;
    for file in &files {
        let json: Json = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        ui += usize::from(json.get("nodes").is_some_and(Json::is_array));
        let yaml = import(
            file,
            dir.path(),
            &["--model", CKPT, "--inputs", "workflows/inputs"],
        );
        let v = weft(&["validate", yaml.to_str().unwrap()]);
        assert!(
            v.status.success(),
            "{}: {}",
            file.display(),
            text(&v.stderr)
        );
        let wf = read_workflow(&yaml);
        assert!(
            wf.nodes
                .keys()
                .all(|id| id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())),
            "{}: numeric ids are given a role: {:?}",
            file.display(),
            wf.nodes.keys()
        );
        assert_eq!(wf.nodes["checkpoint_4"].type_name, "LoadCheckpoint");
    }
    assert!(ui >= 1, "at least one UI-format workflow");
}

#[test]
fn imported_yaml_reads_naturally() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = import(
        &repo().join("tests/comfy/01_txt2img_default.json"),
        dir.path(),
        &[],
    );
    let expected = "weft: 1
nodes:
  checkpoint_4:
    type: LoadCheckpoint
    name: checkpoints/v1-5-pruned-emaonly.safetensors
  latent_5:
    type: EmptyLatent
    width: 64
    height: 64
    batch: 1
  positive_6:
    type: PromptEncode
    encoder: $checkpoint_4.text_encoder
    text: a red circle on a blue background
  negative_7:
    type: PromptEncode
    encoder: $checkpoint_4.text_encoder
    text: \"\"
  ksampler_3:
    type: Sampler
    model: $checkpoint_4.unet
    positive: $positive_6.conditioning
    negative: $negative_7.conditioning
    latent: $latent_5.latent
    seed: 156680208700286
    steps: 6
    cfg: 5.0
    sampler: euler
    schedule: normal
    denoise: 1.0
  decode_8:
    type: VaeDecode
    vae: $checkpoint_4.vae
    latent: $ksampler_3.latent
  save_9:
    type: SaveImage
    image: $decode_8.image
    prefix: ComfyUI";
    assert_eq!(body(&yaml), expected);
}

#[test]
fn imported_workflows_run_on_the_embedded_model() {
    if !minilm_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // (file, images written, side of each image)
    for (name, images, side) in [
        ("01_txt2img_default", 1, 64),
        ("04_img2img", 1, 64),
        ("05_hires_fix", 1, 128),
        ("07_ksampler_advanced", 2, 64),
        ("12_ui_txt2img", 1, 64),
        ("14_txt2img_dpmpp_2m_sde_beta", 1, 64),
        ("15_two_stage_advanced", 2, 64),
        ("30_inpaint_noise_mask", 1, 64),
        ("32_inpaint_model_conditioning", 1, 64),
        ("33_color_mask_inpaint", 1, 64),
    ] {
        let file = repo().join(format!("tests/comfy/{name}.json"));
        let yaml = import(
            &file,
            dir.path(),
            &["--model", CKPT, "--inputs", "workflows/inputs"],
        );
        let out_dir = dir.path().join(format!("out-{name}"));
        let o = weft(&[
            "run",
            yaml.to_str().unwrap(),
            "--device",
            "cpu",
            "--output",
            out_dir.to_str().unwrap(),
        ]);
        let stdout = text(&o.stdout);
        assert!(o.status.success(), "{name}: {stdout}\n{}", text(&o.stderr));
        let written: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("wrote "))
            .collect();
        assert_eq!(written.len(), images, "{name}: {stdout}");
        for png in &written {
            let img = image::open(png).unwrap();
            assert_eq!((img.width(), img.height()), (side, side), "{name}: {png}");
        }
        if name == "12_ui_txt2img" {
            // The same settings written by hand in weft give the same pixels.
            let native_dir = dir.path().join("native");
            let o = weft(&[
                "run",
                "workflows/txt2img.yaml",
                "--device",
                "cpu",
                "--output",
                native_dir.to_str().unwrap(),
                "--set",
                "positive.text=a blue triangle on a yellow background",
                "--set",
                "sample.steps=6",
            ]);
            let stdout = text(&o.stdout);
            assert!(o.status.success(), "{stdout}\n{}", text(&o.stderr));
            let native = stdout
                .lines()
                .find_map(|l| l.strip_prefix("wrote "))
                .unwrap();
            let a = image::open(written[0]).unwrap().to_rgb8();
            let b = image::open(native).unwrap().to_rgb8();
            assert!(a == b, "imported and native txt2img differ");
        }
    }
}

#[test]
fn ui_and_api_forms_of_one_workflow_import_to_the_same_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ui_dir = dir.path().join("ui");
    std::fs::create_dir(&ui_dir).unwrap();
    let ui = read_workflow(&import(
        &repo().join("tests/comfy/12_ui_txt2img.json"),
        &ui_dir,
        &[],
    ));
    let api = read_workflow(&import(
        &repo().join("tests/comfy/12_ui_txt2img.api.json"),
        dir.path(),
        &[],
    ));
    // The primitive's seed is written in place, the reroute followed, the note left out; the
    // muted preview is kept muted (`mute: true`), and an API prompt has no muted nodes.
    let muted: Vec<&String> = ui
        .nodes
        .iter()
        .filter(|(_, n)| n.mode == weft_engine::workflow::NodeMode::Mute)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(muted.len(), 1, "{}", ui.to_yaml());
    let mut running = ui.to_json()["nodes"].clone();
    running.as_object_mut().unwrap().remove(muted[0].as_str());
    assert_eq!(running, api.to_json()["nodes"]);
    assert_eq!(ui.to_json()["nodes"]["ksampler_3"]["seed"], 42);
    assert_eq!(ui.nodes.len(), 8);
    // UI positions become the layout.
    assert_eq!(ui.layout["ksampler_3"], [863.0, 186.0]);
    assert_eq!(ui.layout.len(), 8);
    assert!(api.layout.is_empty());
    // The Reroute (node 11, checkpoint VAE -> VAEDecode) is a reroute point at its position.
    let points: Vec<_> = ui.reroutes.iter().collect();
    assert_eq!(points.len(), 1, "{}", ui.to_yaml());
    let (id, point) = points[0];
    assert_eq!(id, "reroute_11");
    assert_eq!(point.at, [1000.0, 480.0]);
    assert_eq!(point.from.output, "vae");
    assert_eq!(ui.nodes[&point.from.node].type_name, "LoadCheckpoint");
    assert_eq!(point.to.len(), 1);
    assert_eq!(ui.nodes[&point.to[0].0].type_name, "VaeDecode");
    assert_eq!(point.to[0].1, "vae");
    assert!(api.reroutes.is_empty());
}

/// `a` and `b` as ComfyUI reads them: numbers by value (8 and 8.0 are one cfg), `_meta` and
/// LoadImage's `upload` button value ignored.
fn same_api_workflow(a: &Json, b: &Json) -> Result<(), String> {
    let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
    let ids = |m: &serde_json::Map<String, Json>| {
        let mut k: Vec<String> = m.keys().cloned().collect();
        k.sort();
        k
    };
    if ids(a) != ids(b) {
        return Err(format!("node ids {:?} vs {:?}", ids(a), ids(b)));
    }
    for (id, na) in a {
        let nb = &b[id];
        if na["class_type"] != nb["class_type"] {
            return Err(format!(
                "node {id}: {} vs {}",
                na["class_type"], nb["class_type"]
            ));
        }
        let inputs = |n: &Json| -> Vec<(String, Json)> {
            let mut v: Vec<(String, Json)> = n["inputs"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "upload")
                .map(|(k, v)| {
                    let v = match v.as_f64() {
                        Some(f) if !v.is_u64() || f < 1e15 => serde_json::json!(f),
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        if inputs(na) != inputs(nb) {
            return Err(format!(
                "node {id}: inputs {:?} vs {:?}",
                inputs(na),
                inputs(nb)
            ));
        }
    }
    Ok(())
}

#[test]
fn round_trip_through_comfyuis_api_format() {
    let dir = tempfile::tempdir().unwrap();
    for file in comfy_files() {
        let name = stem(&file);
        let sub = dir.path().join(&name);
        std::fs::create_dir(&sub).unwrap();
        let yaml = import(&file, &sub, &[]);
        let exported = sub.join("exported.json");
        let o = weft(&[
            "export-comfy",
            yaml.to_str().unwrap(),
            "-o",
            exported.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let again = import(&exported, &sub, &[]);
        // Always: importing the export gives the same weft workflow, less its muted and
        // bypassed nodes (an API prompt holds only what runs: the export rewrites them away).
        let mut running = read_workflow(&yaml);
        if let Some(rewritten) =
            weft_engine::modes::apply_modes(&running, &weft_nodes::registry()).unwrap()
        {
            running = rewritten;
        }
        let mut imported_again = read_workflow(&again);
        for wf in [&mut running, &mut imported_again] {
            wf.layout.clear();
            wf.groups.clear();
            // Drawing only, and an API prompt has none.
            wf.reroutes.clear();
        }
        assert_eq!(running.to_yaml(), imported_again.to_yaml(), "{name}");
        // One-to-one files: the export is the original API workflow.
        if ONE_TO_ONE.contains(&name.as_str()) {
            let original: Json = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            let back: Json = serde_json::from_slice(&std::fs::read(&exported).unwrap()).unwrap();
            if let Err(e) = same_api_workflow(&original, &back) {
                panic!("{name}: {e}");
            }
        }
    }
}

#[test]
fn a_weft_workflow_keeps_its_ids_through_comfyui() {
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("txt2img.json");
    let o = weft(&[
        "export-comfy",
        "workflows/txt2img.yaml",
        "-o",
        exported.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let back = read_workflow(&import(&exported, dir.path(), &[]));
    let original = read_workflow(&repo().join("workflows/txt2img.yaml"));
    assert_eq!(
        back.nodes.keys().collect::<Vec<_>>(),
        original.nodes.keys().collect::<Vec<_>>()
    );
    // Every value comes back; inputs the original left to their defaults come back explicit.
    let registry = weft_nodes::registry();
    for (id, node) in &original.nodes {
        let came_back = &back.nodes[id];
        assert_eq!(came_back.type_name, node.type_name);
        for (name, entry) in &came_back.inputs {
            match node.inputs.get(name) {
                Some(e) => assert_eq!(e.value, entry.value, "{id}.{name}"),
                None => {
                    let spec = &registry.get(&node.type_name).unwrap().spec;
                    let default = spec.input(name).unwrap().1.default.clone().unwrap();
                    assert_eq!(
                        entry.value,
                        weft_engine::InputValue::Constant(default),
                        "{id}.{name}"
                    );
                }
            }
        }
        assert!(node.inputs.keys().all(|k| came_back.inputs.contains_key(k)));
    }
}

fn import_error(name: &str) -> String {
    let o = weft(&["import", &format!("tests/comfy/errors/{name}.json")]);
    assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o.stdout));
    assert!(o.stdout.is_empty(), "nothing is written on errors");
    text(&o.stderr)
}

#[test]
fn unknown_class_types_are_listed_in_one_error() {
    let err = import_error("unknown_types");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("HypernetworkLoader (nodes 10, 12)")
            && lines[0].contains("CLIPSetLastLayer (node 11)"),
        "{err}"
    );
    assert!(
        err.contains("weft imports CheckpointLoaderSimple, CLIPTextEncode"),
        "{err}"
    );
}

#[test]
fn comfyuis_sde_samplers_and_newer_schedulers_import() {
    let dir = tempfile::tempdir().unwrap();
    let file = repo().join("tests/comfy/14_txt2img_dpmpp_2m_sde_beta.json");
    let wf = read_workflow(&import(&file, dir.path(), &["--model", CKPT]));
    let sampler = &wf.to_json()["nodes"]["ksampler_3"];
    assert_eq!(sampler["sampler"], "dpmpp_2m_sde", "{sampler}");
    assert_eq!(sampler["schedule"], "beta", "{sampler}");
}

#[test]
fn unknown_sampler_and_scheduler_name_weft_choices() {
    let err = import_error("unknown_sampler");
    assert!(
        err.contains(
            "node 3 (KSampler), input 'sampler_name': sampler 'euler_smea_dy' is not in weft"
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "weft has {}",
            weft_nodes::samplers::SamplerKind::NAMES.join(", ")
        )),
        "{err}"
    );
    assert!(
        err.contains("input 'scheduler': scheduler 'align_your_steps' is not in weft"),
        "{err}"
    );
    assert!(err.contains("2 errors"), "{err}");
}

#[test]
fn dangling_links_name_the_node_and_input() {
    let err = import_error("dangling_link");
    assert!(
        err.contains(
            "node 3 (KSampler), input 'model': dangling link: it links to node 99, which is not in the workflow"
        ),
        "{err}"
    );
    assert!(
        err.contains("node 8 (VAEDecode), input 'vae': dangling link: it links to output 5 of node 4 (CheckpointLoaderSimple), which has 3 outputs"),
        "{err}"
    );
}

/// ComfyUI's two-stage KSamplerAdvanced pair (steps 0-12 of 20 leaving the noise in, then
/// 12-20 without adding noise) becomes two SamplerAdvanced nodes with the same window.
#[test]
fn a_two_stage_ksampler_advanced_imports_to_sampler_advanced_windows() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = import(
        &repo().join("tests/comfy/15_two_stage_advanced.json"),
        dir.path(),
        &[],
    );
    let wf = read_workflow(&yaml);
    let constant = |node: &str, input: &str| match &wf.nodes[node].inputs[input].value {
        weft_engine::InputValue::Constant(c) => c.clone(),
        other => panic!("{node}.{input}: {other:?}"),
    };
    use weft_engine::Constant::{Bool, Int};
    for (node, start, end, add_noise, leftover) in [
        ("ksampler_3", 0, 12, true, true),
        ("ksampler_10", 12, 10000, false, false),
    ] {
        assert_eq!(wf.nodes[node].type_name, "SamplerAdvanced");
        assert_eq!(constant(node, "start_at_step"), Int(start), "{node}");
        assert_eq!(constant(node, "end_at_step"), Int(end), "{node}");
        assert_eq!(constant(node, "add_noise"), Bool(add_noise), "{node}");
        assert_eq!(constant(node, "leftover_noise"), Bool(leftover), "{node}");
    }
    assert_eq!(
        wf.nodes["ksampler_10"].inputs["latent"].value,
        weft_engine::InputValue::Link(weft_engine::workflow::Link {
            node: "ksampler_3".into(),
            output: "latent".into()
        })
    );
}

#[test]
fn export_refuses_weft_only_nodes_in_one_error() {
    let o = weft(&["export-comfy", "workflows/txt2img-upscale-safe.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("LoadSafetyModel (safety), SafetyFilter (filter)"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("error:")).count(),
        1,
        "{err}"
    );
}

#[test]
fn nodes_comfy_prints_object_info() {
    let o = weft(&["nodes", "--comfy"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let info: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["KSampler"]["input"]["required"]["model"][0], "MODEL");
    assert_eq!(info["VAEDecode"]["output"][0], "IMAGE");
}

#[test]
fn values_weft_refuses_are_located_in_the_yaml_and_name_the_comfyui_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut wf: Json = serde_json::from_slice(
        &std::fs::read(repo().join("tests/comfy/05_hires_fix.json")).unwrap(),
    )
    .unwrap();
    wf["10"]["inputs"]["scale_by"] = serde_json::json!(0.05);
    let file = dir.path().join("small_scale.json");
    std::fs::write(&file, wf.to_string()).unwrap();
    let yaml = dir.path().join("small_scale.yaml");
    let o = weft(&[
        "import",
        file.to_str().unwrap(),
        "-o",
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("small_scale.yaml:")
            && line.contains("node 'latent_upscale_10', input 'scale'")
            && line.ends_with("(ComfyUI node 10)"),
        "{err}"
    );
    // The file is written, so it can be fixed.
    assert!(yaml.exists());
}

/// A PNG as ComfyUI saves it: tEXt chunks "prompt" (API format) and "workflow" (UI format).
fn comfy_png(path: &Path, prompt: Option<&str>, workflow: Option<&str>) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 1, 1);
    encoder.set_color(png::ColorType::Rgb);
    if let Some(p) = prompt {
        encoder.add_text_chunk("prompt".into(), p.into()).unwrap();
    }
    if let Some(w) = workflow {
        encoder.add_text_chunk("workflow".into(), w.into()).unwrap();
    }
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[0, 0, 0]).unwrap();
    writer.finish().unwrap();
}

#[test]
fn a_comfyui_png_imports_its_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str| std::fs::read_to_string(repo().join("tests/comfy").join(name)).unwrap();
    // Both chunks: the UI workflow is taken (it has the positions).
    let png = dir.path().join("ComfyUI_00001_.png");
    comfy_png(
        &png,
        Some(&read("12_ui_txt2img.api.json")),
        Some(&read("12_ui_txt2img.json")),
    );
    let wf = read_workflow(&import(&png, dir.path(), &[]));
    assert_eq!(wf.layout["ksampler_3"], [863.0, 186.0]);
    // Only the prompt: the API workflow.
    let png = dir.path().join("prompt_only.png");
    comfy_png(&png, Some(&read("01_txt2img_default.json")), None);
    let wf = read_workflow(&import(&png, dir.path(), &[]));
    assert_eq!(wf.nodes.len(), 7);
    assert!(wf.layout.is_empty());
    // Neither: a clear error.
    let png = dir.path().join("plain.png");
    comfy_png(&png, None, None);
    let o = weft(&["import", png.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no ComfyUI workflow in this PNG"),
        "{}",
        text(&o.stderr)
    );
}
