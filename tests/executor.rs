//! The executor on real (small) nodes: caching across runs, partial re-execution, failures,
//! panics, cancellation, targets, the cache budget, and a 100,000-node chain.
use std::sync::Arc;

use weft_engine::{
    CancelToken, Event, Executor, ExecutorConfig, InputSpec, Inputs, Node, NodeContext, NodeEntry,
    NodeError, NodeResult, NodeSpec, OutputSpec, Registry, RunRequest, RunStatus, Value, ValueType,
    Workflow,
};

fn executor_with(registry: Registry, out: &std::path::Path) -> Executor {
    Executor::new(
        Arc::new(registry),
        ExecutorConfig {
            output_dir: out.to_path_buf(),
            ..ExecutorConfig::default()
        },
    )
}

fn run(executor: &mut Executor, wf: &Workflow) -> (weft_engine::RunReport, Vec<Event>) {
    let mut events = Vec::new();
    let report = executor.run(
        RunRequest::new(wf),
        &CancelToken::new(),
        &mut |e: &Event| events.push(e.clone()),
    );
    (report, events)
}

fn started(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NodeStarted { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect()
}

/// noise -> upscale -> preview -> save, plus an independent int branch.
fn image_workflow(seed: i64, prefix: &str) -> Workflow {
    let mut wf = Workflow::new();
    wf.add(
        "noise",
        NodeEntry::new("RandomNoise")
            .with("seed", seed)
            .with("width", 32i64)
            .with("height", 32i64),
    )
    .add(
        "upscale",
        NodeEntry::new("LatentUpscale")
            .link("latent", "noise", "latent")
            .with("scale", 2.0),
    )
    .add(
        "preview",
        NodeEntry::new("LatentPreview").link("latent", "upscale", "latent"),
    )
    .add(
        "save",
        NodeEntry::new("SaveImage")
            .link("image", "preview", "image")
            .with("prefix", prefix),
    )
    .add("two", NodeEntry::new("Int").with("value", 2i64))
    .add(
        "sum",
        NodeEntry::new("AddInt")
            .link("a", "two", "value")
            .with("b", 40i64),
    )
    .add(
        "show",
        NodeEntry::new("ShowInt").link("value", "sum", "sum"),
    );
    wf
}

#[test]
fn second_run_executes_nothing_and_a_changed_constant_reruns_only_its_descendants() {
    let out = tempfile::tempdir().unwrap();
    let mut ex = executor_with(weft_nodes::registry(), out.path());
    let wf = image_workflow(1, "first");
    let (first, events) = run(&mut ex, &wf);
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.errors);
    assert_eq!(started(&events).len(), 7);
    let result = |id: &str| {
        first
            .results
            .iter()
            .find(|(n, _)| n == id)
            .map(|(_, r)| r.clone())
    };
    assert_eq!(result("show").as_deref(), Some("42"));
    assert!(result("save").unwrap().starts_with("image [1, 3, 64, 64]"));

    let (second, events) = run(&mut ex, &wf);
    assert_eq!(second.status, RunStatus::Succeeded);
    assert!(
        started(&events).is_empty(),
        "second run started {:?}",
        started(&events)
    );
    assert_eq!(second.cached(), 7);

    let wf = image_workflow(1, "renamed");
    let (_, events) = run(&mut ex, &wf);
    assert_eq!(started(&events), ["save"], "only the save prefix changed");

    let wf = image_workflow(2, "renamed");
    let (_, events) = run(&mut ex, &wf);
    assert_eq!(
        started(&events),
        ["noise", "upscale", "preview", "save"],
        "the seed changed: noise and its descendants"
    );

    let mut wf = image_workflow(2, "renamed");
    wf.nodes.get_mut("sum").unwrap().inputs.shift_remove("b");
    let mut wf2 = wf.clone();
    let (_, events) = run(&mut ex, &wf);
    assert_eq!(started(&events), ["sum", "show"]);
    // Writing an input's default explicitly is the same node: no re-run.
    wf2.nodes.get_mut("sum").unwrap().inputs.insert(
        "b".into(),
        weft_engine::workflow::InputEntry {
            value: weft_engine::InputValue::Constant(0i64.into()),
            pos: None,
        },
    );
    let (_, events) = run(&mut ex, &wf2);
    assert!(started(&events).is_empty());
}

#[test]
fn every_cached_node_is_announced_before_the_first_node_runs() {
    let out = tempfile::tempdir().unwrap();
    let mut ex = executor_with(weft_nodes::registry(), out.path());
    run(&mut ex, &image_workflow(1, "first"));
    // A new seed re-runs the image branch; the int branch is served from the cache.
    let (report, events) = run(&mut ex, &image_workflow(2, "first"));
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);
    // In run order a cached node comes after one that runs, so announcing hits as they are
    // reached would put it after a NodeStarted.
    let order: Vec<bool> = report.nodes.iter().map(|n| n.cached).collect();
    let first_ran = order.iter().position(|c| !c).unwrap();
    assert!(order[first_ran..].contains(&true), "{order:?}");
    let first_started = events
        .iter()
        .position(|e| matches!(e, Event::NodeStarted { .. }))
        .unwrap();
    let cached: Vec<(usize, &str)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Event::NodeCached { node, .. } => Some((i, node.as_str())),
            _ => None,
        })
        .collect();
    let mut names: Vec<&str> = cached.iter().map(|(_, n)| *n).collect();
    names.sort();
    assert_eq!(names, ["show", "sum", "two"]);
    assert!(cached.iter().all(|(i, _)| *i < first_started), "{events:?}");
    assert_eq!(started(&events), ["noise", "upscale", "preview", "save"]);
}

/// Each started node with why it ran.
fn started_why(events: &[Event]) -> Vec<(String, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NodeStarted { node, why, .. } => Some((node.clone(), why.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_rerun_node_says_which_input_or_upstream_node_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut executor = executor_with(weft_nodes::registry(), dir.path());
    let (_, events) = run(&mut executor, &image_workflow(1, "a"));
    assert!(started_why(&events)
        .iter()
        .all(|(_, why)| why == &["first run"]));
    let (_, events) = run(&mut executor, &image_workflow(2, "a"));
    let why: std::collections::HashMap<String, Vec<String>> =
        started_why(&events).into_iter().collect();
    assert_eq!(why["noise"], ["input 'seed' changed"]);
    assert_eq!(why["upscale"], ["upstream 'noise' changed"]);
    assert_eq!(why["preview"], ["upstream 'upscale' changed"]);
    assert_eq!(why["save"], ["upstream 'preview' changed"]);
    assert!(!why.contains_key("sum"), "the int branch stays cached");
    // Back to a value whose results are still cached: nothing re-runs.
    let (_, events) = run(&mut executor, &image_workflow(1, "a"));
    assert!(started_why(&events).is_empty());
}

#[test]
fn target_runs_only_what_the_target_needs() {
    let out = tempfile::tempdir().unwrap();
    let mut ex = executor_with(weft_nodes::registry(), out.path());
    let wf = image_workflow(1, "t");
    let mut events = Vec::new();
    let report = ex.run(
        RunRequest {
            workflow: &wf,
            target: Some("upscale"),
            run: None,
            batch: None,
        },
        &CancelToken::new(),
        &mut |e: &Event| events.push(e.clone()),
    );
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(started(&events), ["noise", "upscale"]);
}

struct Explode {
    panic: bool,
}
impl Node for Explode {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: if self.panic { "Panic" } else { "Fail" },
            category: "test",
            doc: "fails on purpose",
            version: 1,
            inputs: vec![InputSpec::new("value", ValueType::Int, "passed through").default(0)],
            outputs: vec![OutputSpec::new("value", ValueType::Int, "never produced")],
            output_node: true,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let v = inputs.int("value")?;
        if self.panic {
            panic!("boom at {v}");
        }
        Err(NodeError::msg(format!("refusing {v}")))
    }
}

#[test]
fn a_failing_or_panicking_node_fails_its_run_with_its_id_and_the_executor_goes_on() {
    let out = tempfile::tempdir().unwrap();
    let mut registry = weft_nodes::registry();
    registry
        .register(Explode { panic: true })
        .register(Explode { panic: false });
    let mut ex = executor_with(registry, out.path());
    for (kind, message) in [
        ("Panic", "node panicked: boom at 7"),
        ("Fail", "refusing 7"),
    ] {
        let mut wf = Workflow::new();
        wf.add("seven", NodeEntry::new("Int").with("value", 7i64))
            .add("bad", NodeEntry::new(kind).link("value", "seven", "value"));
        let (report, events) = run(&mut ex, &wf);
        assert_eq!(report.status, RunStatus::Failed);
        assert_eq!(report.errors[0].node.as_deref(), Some("bad"));
        assert!(
            report.errors[0].message.contains(message),
            "{}",
            report.errors[0].message
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Error { node: Some(n), .. } if n == "bad")));
    }
    let (report, _) = run(&mut ex, &image_workflow(3, "after"));
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "the executor still works after failures"
    );
}

struct SlowSteps;
impl Node for SlowSteps {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "SlowSteps",
            category: "test",
            doc: "a long node that checks for cancellation between steps",
            version: 1,
            inputs: vec![],
            outputs: vec![OutputSpec::new("value", ValueType::Int, "steps done")],
            output_node: true,
        }
    }
    fn run(&self, _inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        for step in 1..=1000 {
            ctx.check_cancelled()?;
            ctx.progress(step, 1000);
            if step == 3 {
                // Whoever holds the token (a UI, Ctrl-C) cancels while the node runs.
                ctx.cancel_token().cancel();
            }
        }
        Ok(vec![Value::Int(1000)])
    }
}

#[test]
fn cancellation_stops_a_long_node_between_steps() {
    let out = tempfile::tempdir().unwrap();
    let mut registry = weft_nodes::registry();
    registry.register(SlowSteps);
    let mut ex = executor_with(registry, out.path());
    let mut wf = Workflow::new();
    wf.add("slow", NodeEntry::new("SlowSteps"));
    let mut progress = 0;
    let report = ex.run(
        RunRequest::new(&wf),
        &CancelToken::new(),
        &mut |e: &Event| {
            if matches!(e, Event::Progress { .. }) {
                progress += 1;
            }
        },
    );
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(progress, 3);
}

#[test]
fn the_cache_budget_is_respected() {
    let out = tempfile::tempdir().unwrap();
    let mut ex = executor_with(weft_nodes::registry(), out.path());
    ex.set_cache_budget(64 * 1024);
    for seed in 0..5 {
        let (report, _) = run(&mut ex, &image_workflow(seed, "b"));
        assert_eq!(report.status, RunStatus::Succeeded);
        assert!(
            ex.cache_stats().bytes <= 64 * 1024,
            "{:?}",
            ex.cache_stats()
        );
    }
    assert!(ex.cache_stats().evictions > 0);
}

fn chain(n: usize) -> Workflow {
    let mut wf = Workflow::new();
    wf.add("n0", NodeEntry::new("Int").with("value", 0i64));
    for i in 1..n {
        wf.add(
            &format!("n{i}"),
            NodeEntry::new("AddInt")
                .link("a", &format!("n{}", i - 1), "sum")
                .with("b", 1i64),
        );
    }
    // n0 is an Int (output `value`): relink the first adder.
    if n > 1 {
        *wf.nodes.get_mut("n1").unwrap() = NodeEntry::new("AddInt")
            .link("a", "n0", "value")
            .with("b", 1i64);
    }
    wf.add(
        "show",
        NodeEntry::new("ShowInt").link(
            "value",
            &format!("n{}", n - 1),
            if n > 1 { "sum" } else { "value" },
        ),
    );
    wf
}

#[test]
fn a_100k_node_chain_validates_plans_and_runs_with_events_proportional_to_nodes() {
    // Run on a thread with a small stack: nothing may recurse per node.
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let n = 100_000;
            let wf = chain(n);
            // And through the text form, as a user's file would come.
            let wf = Workflow::parse_str(&wf.to_yaml()).expect("chain parses");
            let out = tempfile::tempdir().unwrap();
            let mut ex = executor_with(weft_nodes::registry(), out.path());
            let (report, events) = run(&mut ex, &wf);
            assert_eq!(
                report.status,
                RunStatus::Succeeded,
                "{:?}",
                report.errors.first()
            );
            assert_eq!(
                report.results,
                vec![("show".to_string(), (n - 1).to_string())]
            );
            // run_started + started/finished per node + run_finished.
            assert_eq!(events.len(), 2 * (n + 1) + 2);
            let (again, events) = run(&mut ex, &wf);
            assert_eq!(again.cached(), n + 1);
            assert_eq!(events.len(), (n + 1) + 2);
            // The last node changed: exactly it and the show node run.
            let mut changed = wf.clone();
            let last = format!("n{}", n - 1);
            *changed.nodes.get_mut(&last).unwrap() = NodeEntry::new("AddInt")
                .link("a", &format!("n{}", n - 2), "sum")
                .with("b", 2i64);
            let (report, events) = run(&mut ex, &changed);
            assert_eq!(report.ran_ids(), [last.as_str(), "show"]);
            assert_eq!(report.results[0].1, n.to_string());
            assert_eq!(events.len(), (n - 1) + 2 * 2 + 2);
        })
        .unwrap()
        .join()
        .expect("no stack overflow, no panic");
}

/// The cache's bytes for the embedded model at `precision` (LoadCheckpoint alone).
fn cached_model_bytes(precision: &str) -> u64 {
    let out = tempfile::tempdir().unwrap();
    let mut ex = Executor::new(
        Arc::new(weft_nodes::registry()),
        ExecutorConfig {
            output_dir: out.path().to_path_buf(),
            models: weft_engine::ModelFolders::single(
                weft_test_support::repo_root().join("models"),
            ),
            ..ExecutorConfig::default()
        },
    );
    let mut wf = Workflow::new();
    wf.add(
        "model",
        NodeEntry::new("LoadCheckpoint")
            .with("name", "tiny-shapes")
            .with("precision", precision),
    );
    let report = ex.run(
        RunRequest {
            workflow: &wf,
            target: Some("model"),
            run: None,
            batch: None,
        },
        &CancelToken::new(),
        &mut |_: &Event| {},
    );
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);
    ex.cache_stats().bytes
}

#[test]
fn a_loaded_model_counts_its_weights_in_the_precision_it_was_loaded_in() {
    let minilm = weft_test_support::converted_asset("minilm/model.safetensors");
    let fp32 = cached_model_bytes("fp32");
    let fp16 = cached_model_bytes("fp16");
    // UNet and VAE halve in fp16; MiniLM (the text encoder) is fp32 in both.
    let unet_and_vae_fp16 = fp32 - fp16;
    let text_encoder = fp16 - unet_and_vae_fp16;
    let file = |path: std::path::PathBuf| std::fs::metadata(path).unwrap().len() as f64;
    let model = weft_test_support::repo_root().join("models/tiny-shapes");
    // The files hold the same tensors (the UNet and VAE in fp16) plus small JSON headers.
    let files_fp16 = file(model.join("unet/diffusion_pytorch_model.safetensors"))
        + file(model.join("vae/diffusion_pytorch_model.safetensors"));
    let close = |counted: u64, on_disk: f64| (counted as f64 - on_disk).abs() / on_disk < 0.02;
    assert!(
        close(unet_and_vae_fp16, files_fp16),
        "UNet + VAE counted {unet_and_vae_fp16} bytes in fp16, the files hold {files_fp16}"
    );
    assert!(
        close(text_encoder, file(minilm.clone())),
        "MiniLM counted {text_encoder} bytes, its fp32 file holds {}",
        file(minilm)
    );
}

/// ComfyUI's seeds are u64: a seed above i64::MAX is read whole from YAML and JSON, written
/// back as written, validated as a seed (an int input refuses it) and keyed apart from the
/// seed with the same 64 bits read as signed, so it draws its own noise.
#[test]
fn a_seed_above_i64_is_taken_whole_and_keyed_as_its_own_seed() {
    let yaml = |seed: &str| {
        format!(
            "weft: 1\nnodes:\n  noise:\n    type: RandomNoise\n    seed: {seed}\n    width: 16\n    height: 16\n  \
             preview:\n    type: LatentPreview\n    latent: $noise.latent\n  save:\n    type: SaveImage\n    image: $preview.image\n"
        )
    };
    let registry = weft_nodes::registry();
    let top = Workflow::parse_str(&yaml("18446744073709551615")).unwrap();
    assert!(weft_engine::validate(&top, &registry, None).is_empty());
    assert!(top.to_yaml().contains("seed: 18446744073709551615"));
    let json = top.to_json().to_string();
    assert!(json.contains("18446744073709551615"), "{json}");
    let from_json = Workflow::parse_str(&json).unwrap();
    assert_eq!(
        from_json.nodes["noise"].inputs["seed"].value,
        top.nodes["noise"].inputs["seed"].value
    );

    let dir = tempfile::tempdir().unwrap();
    let mut executor = executor_with(registry, dir.path());
    let (first, _) = run(
        &mut executor,
        &Workflow::parse_str(&yaml(&i64::MAX.to_string())).unwrap(),
    );
    assert_eq!(first.status, RunStatus::Succeeded);
    for seed in ["18446744073709551615", "9223372036854788152"] {
        let (report, events) = run(&mut executor, &Workflow::parse_str(&yaml(seed)).unwrap());
        assert_eq!(
            report.status,
            RunStatus::Succeeded,
            "{seed}: {:?}",
            report.errors
        );
        assert!(
            started(&events).contains(&"noise".to_string()),
            "{seed} was served from another seed's cache"
        );
    }
    // An int input refuses it with the reason.
    let steps = "weft: 1\nnodes:\n  l:\n    type: EmptyLatent\n    width: 9223372036854775808\n  p:\n    type: LatentPreview\n    latent: $l.latent\n  s:\n    type: SaveImage\n    image: $p.image\n";
    let errors = weft_engine::validate(
        &Workflow::parse_str(steps).unwrap(),
        &weft_nodes::registry(),
        None,
    );
    assert!(
        errors[0].message.contains("above the largest integer"),
        "{}",
        errors[0]
    );
}

/// Issue 18: a file checked when a run is queued and swapped for a link before the run starts
/// must not be read (the check is made on the file the run opens, not on the path earlier).
#[test]
fn a_run_refuses_an_input_swapped_for_a_link_to_a_file_outside_its_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, models, out) = (
        dir.path().join("inputs"),
        dir.path().join("models"),
        dir.path().join("out"),
    );
    for folder in [&inputs, &models, &out] {
        std::fs::create_dir_all(folder).unwrap();
    }
    let swap = inputs.join("swap.png");
    let outside = dir.path().join("outside.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
        .save(&swap)
        .unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([0, 0, 0]))
        .save(&outside)
        .unwrap();
    let models = weft_engine::ModelFolders::single(&models);
    let files =
        weft_engine::FileAccess::within(&models, &[inputs.clone(), out.clone()], "the folders");
    let mut ex = Executor::new(
        Arc::new(weft_nodes::registry()),
        ExecutorConfig {
            output_dir: out.clone(),
            models,
            files: files.clone(),
            ..ExecutorConfig::default()
        },
    );
    let mut wf = Workflow::new();
    wf.add(
        "load",
        NodeEntry::new("LoadImage").with("path", swap.to_string_lossy().as_ref()),
    );
    wf.add(
        "save",
        NodeEntry::new("SaveImage")
            .link("image", "load", "image")
            .with("prefix", "swap"),
    );
    // Queue time: the path is a regular file inside the inputs folder.
    files.check(&swap).unwrap();
    let (report, _) = run(&mut ex, &wf);
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.errors);

    std::fs::remove_file(&swap).unwrap();
    std::os::unix::fs::symlink(&outside, &swap).unwrap();
    let (report, events) = run(&mut ex, &wf);
    // Refused while planning (hashing the file), before any node ran.
    assert_eq!(report.status, RunStatus::Invalid);
    let error = &report.errors[0];
    assert_eq!(error.node.as_deref(), Some("load"), "{error:?}");
    assert!(
        error.message.contains("symbolic link") && error.message.contains("swap.png"),
        "{}",
        error.message
    );
    assert!(started(&events).is_empty(), "nothing ran: {events:?}");
    assert!(report.outputs.is_empty());
}

/// Two outputs, each declared to depend on one input only (as LoadLora's model and text
/// encoder outputs do on their own strengths).
struct SplitPair;
impl Node for SplitPair {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "SplitPair",
            category: "test",
            doc: "a and b, each times ten, each keyed by its own input",
            version: 1,
            inputs: vec![
                InputSpec::new("a", ValueType::Int, "first").default(0),
                InputSpec::new("b", ValueType::Int, "second").default(0),
            ],
            outputs: vec![
                OutputSpec::new("a", ValueType::Int, "a * 10").depends_on(&["a"]),
                OutputSpec::new("b", ValueType::Int, "b * 10").depends_on(&["b"]),
            ],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        Ok(vec![
            Value::Int(inputs.int("a")? * 10),
            Value::Int(inputs.int("b")? * 10),
        ])
    }
}

fn split_workflow(a: i64, b: i64) -> Workflow {
    let mut wf = Workflow::new();
    wf.add(
        "pair",
        NodeEntry::new("SplitPair").with("a", a).with("b", b),
    )
    .add(
        "show_a",
        NodeEntry::new("ShowInt").link("value", "pair", "a"),
    )
    .add(
        "show_b",
        NodeEntry::new("ShowInt").link("value", "pair", "b"),
    );
    wf
}

#[test]
fn an_output_keyed_by_its_own_inputs_keeps_its_consumers_cached_when_another_input_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = weft_nodes::registry();
    registry.register(SplitPair);
    let mut executor = executor_with(registry, dir.path());
    let (report, _) = run(&mut executor, &split_workflow(1, 2));
    assert_eq!(report.status, RunStatus::Succeeded);
    let (_, events) = run(&mut executor, &split_workflow(1, 3));
    let why: std::collections::HashMap<String, Vec<String>> =
        started_why(&events).into_iter().collect();
    assert_eq!(why["pair"], ["input 'b' changed"]);
    assert_eq!(why["show_b"], ["upstream 'pair' changed"]);
    assert!(
        !why.contains_key("show_a"),
        "what uses only output a stays cached: {why:?}"
    );
    let (_, events) = run(&mut executor, &split_workflow(4, 3));
    let ran = started(&events);
    assert_eq!(ran, ["pair", "show_a"]);
}
