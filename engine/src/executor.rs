//! The executor: validates, plans, then runs each planned node unless its cache key hits,
//! emitting one event per piece of news. A node that fails or panics fails the run with its
//! id; the executor (and the process) go on. Lives on the device worker thread.
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tch::Device;

use crate::cache::{Cache, CacheStats, DiskLookup};
use crate::cancel::CancelToken;
use crate::diagnostic::Diagnostic;
use crate::disk_cache::{DiskCacheConfig, DiskCacheStats};
use crate::events::{Event, RunStatus};
use crate::file_access::FileAccess;
use crate::model_folders::ModelFolders;
use crate::node::{Inputs, NodeContext, NodeError};
use crate::plan::{plan, why_not_cached, CacheKey, KeyParts, Plan, PlannedInput, Step};
use crate::registry::Registry;
use crate::subgraph::attribute_files;
use crate::validate::validate;
use crate::value::Value;
use crate::workflow::Workflow;

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub device: Device,
    pub cache_budget: u64,
    pub output_dir: PathBuf,
    /// The folders models are looked up in, in order.
    pub models: ModelFolders,
    /// The rule for the files a run opens (the server limits it; the CLI does not).
    pub files: FileAccess,
    /// Intra-op CPU threads for libtorch; `None` keeps its default.
    pub cpu_threads: Option<i32>,
    /// The disk tier of the cache; `None` (or a zero budget) keeps the cache in memory only.
    pub disk_cache: Option<DiskCacheConfig>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            cache_budget: 8 << 30,
            output_dir: PathBuf::from("out"),
            models: ModelFolders::single("models"),
            files: FileAccess::anywhere(),
            cpu_threads: None,
            disk_cache: None,
        }
    }
}

/// What happened to one planned node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeReport {
    pub id: String,
    pub type_name: &'static str,
    pub cached: bool,
    /// Served by the disk tier of the cache.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_disk: bool,
    pub micros: u64,
    #[serde(skip)]
    pub key: CacheKey,
    /// Why it ran instead of coming from the cache (empty when cached).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub run: u64,
    pub status: RunStatus,
    pub nodes: Vec<NodeReport>,
    pub errors: Vec<Diagnostic>,
    pub outputs: Vec<PathBuf>,
    /// Files cached output nodes wrote in earlier runs, which stand for this run's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<PathBuf>,
    /// What each output node produced, described in a line (`ShowInt` -> "42").
    pub results: Vec<(String, String)>,
    pub micros: u64,
    /// What the cache and the device held when the run ended (set by the device worker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::device_memory::MemoryReport>,
    /// The keys of the largest values the cache holds when the run ended, largest first (set
    /// by the device worker; a fleet's worker publishes them for cache-aware claims).
    #[serde(skip)]
    pub cache_holds: Vec<CacheKey>,
}

impl RunReport {
    fn new(run: u64) -> Self {
        Self {
            run,
            status: RunStatus::Succeeded,
            nodes: Vec::new(),
            errors: Vec::new(),
            outputs: Vec::new(),
            kept: Vec::new(),
            results: Vec::new(),
            micros: 0,
            memory: None,
            cache_holds: Vec::new(),
        }
    }
    pub fn ran(&self) -> usize {
        self.nodes.iter().filter(|n| !n.cached).count()
    }
    pub fn cached(&self) -> usize {
        self.nodes.iter().filter(|n| n.cached).count()
    }
    pub fn ran_ids(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| !n.cached)
            .map(|n| n.id.as_str())
            .collect()
    }
}

pub struct RunRequest<'a> {
    pub workflow: &'a Workflow,
    pub target: Option<&'a str>,
    pub run: Option<u64>,
    /// Other variants of one node to compute in this run's batch (see [`Batch`]).
    pub batch: Option<&'a Batch>,
}

impl<'a> RunRequest<'a> {
    pub fn new(workflow: &'a Workflow) -> Self {
        Self {
            workflow,
            target: None,
            run: None,
            batch: None,
        }
    }
}

/// Other workflows (a sweep's cells) that differ from a run's only in the per-image inputs of
/// node `node` ([`crate::Node::per_image_inputs`]): when the run reaches that node and it
/// misses the cache, the node runs once for this run's variant and theirs as one batch
/// ([`crate::Node::run_batch`]), and each other variant's outputs join the cache under its own
/// key, so those workflows' own runs find the node cached. A variant whose node differs in
/// anything else (another upstream key, another constant), or is cached already, is left to
/// its own run. A per-image input linked to another upstream result (a prompt axis: another
/// encode) joins too: that result is taken from the cache or computed for the batch (a notice
/// says so), and the variant's own run then finds it cached.
#[derive(Debug, Clone)]
pub struct Batch {
    pub node: String,
    pub others: Vec<Workflow>,
}

/// One other variant of a batched node: its key, the constants that differ from the run's,
/// and the per-image inputs linked to other upstream results (another prompt's encode).
struct BatchVariant {
    key: CacheKey,
    constants: Vec<(usize, crate::value::Constant)>,
    /// (input index, step in `plan`, output index) of each per-image link that differs.
    links: Vec<(usize, usize, usize)>,
    /// The variant's own plan, to find (or compute) what its differing links point at.
    plan: Plan,
}

struct HashedFile {
    modified: Option<SystemTime>,
    len: u64,
    hash: [u8; 32],
}

pub struct Executor {
    registry: Arc<Registry>,
    cache: Cache,
    config: ExecutorConfig,
    file_hashes: HashMap<PathBuf, HashedFile>,
    /// Each node id's key parts in the last run that planned it (for "why did it re-run").
    last_parts: HashMap<String, KeyParts>,
    /// The files each cached node wrote when it ran, so that a run the cache serves still
    /// reports its outputs (a cached SaveImage names the images it saved before).
    written_by_key: HashMap<CacheKey, Vec<PathBuf>>,
    next_run: u64,
    preview_every: u32,
}

impl Executor {
    pub fn new(registry: Arc<Registry>, config: ExecutorConfig) -> Self {
        let mut cache = Cache::new(config.cache_budget);
        cache.set_disk(config.disk_cache.clone());
        Self {
            registry,
            cache,
            config,
            file_hashes: HashMap::new(),
            last_parts: HashMap::new(),
            written_by_key: HashMap::new(),
            next_run: 1,
            preview_every: 0,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    pub fn set_cache_budget(&mut self, bytes: u64) {
        self.config.cache_budget = bytes;
        self.cache.set_budget(bytes);
    }

    /// Asks long nodes for a preview with their progress every `steps` steps (0: never).
    pub fn set_preview_every(&mut self, steps: u32) {
        self.preview_every = steps;
    }

    /// Changes where output nodes write; returns the previous folder.
    pub fn set_output_dir(&mut self, dir: PathBuf) -> PathBuf {
        std::mem::replace(&mut self.config.output_dir, dir)
    }

    /// The device this executor runs nodes on.
    pub fn device(&self) -> Device {
        self.config.device
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Empties the in-memory cache (models and every other output); the disk tier stays.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Entries and bytes of the disk tier, when it is on.
    pub fn disk_cache_stats(&self) -> Option<DiskCacheStats> {
        self.cache.disk_stats()
    }

    /// See [`Cache::largest_keys`].
    pub fn cache_largest_keys(&self, min_bytes: u64, limit: usize) -> Vec<CacheKey> {
        self.cache.largest_keys(min_bytes, limit)
    }

    /// Cached outputs of a node key (for tests and previews).
    pub fn cached(&mut self, key: &CacheKey) -> Option<Rc<Vec<Value>>> {
        self.cache.get(key)
    }

    /// Validates and plans without running (used by `validate` and for keys).
    pub fn plan(
        &mut self,
        workflow: &Workflow,
        target: Option<&str>,
    ) -> Result<Plan, Vec<Diagnostic>> {
        let mut errors = validate(workflow, &self.registry, target);
        if !errors.is_empty() {
            attribute_files(workflow, &mut errors);
            return Err(errors);
        }
        let file_hashes = &mut self.file_hashes;
        let files = &self.config.files;
        let cache = &self.cache;
        plan(
            workflow,
            &self.registry,
            target,
            &self.config.models,
            &mut |path: &Path| hash_file(file_hashes, cache, files, path),
        )
        .map_err(|mut errors| {
            attribute_files(workflow, &mut errors);
            errors
        })
    }

    pub fn run(
        &mut self,
        request: RunRequest,
        cancel: &CancelToken,
        on_event: &mut dyn FnMut(&Event),
    ) -> RunReport {
        let started = Instant::now();
        let run = request.run.unwrap_or(self.next_run);
        self.next_run = self.next_run.max(run) + 1;
        let mut report = RunReport::new(run);
        let plan = match self.plan(request.workflow, request.target) {
            Ok(p) => p,
            Err(errors) => {
                on_event(&Event::Invalid {
                    run,
                    errors: errors.clone(),
                });
                report.status = RunStatus::Invalid;
                report.errors = errors;
                return finish(report, started, on_event);
            }
        };
        let registry = Arc::clone(&self.registry);
        let batch = request
            .batch
            .and_then(|batch| self.batch_variants(&plan, batch));
        let served = self.serve_from_caches(&plan, run, on_event);
        let nodes: Vec<String> = plan
            .steps
            .iter()
            .zip(&served)
            .filter(|(_, s)| !matches!(s, Serve::Skip))
            .map(|(step, _)| step.id.clone())
            .collect();
        let planned = nodes.len();
        on_event(&Event::RunStarted {
            run,
            planned,
            nodes,
        });
        report.nodes.reserve(planned);
        // Every node the cache serves is announced before the first node runs (ComfyUI's
        // `execution_cached` lists them all up front). The outputs are held from here on, so
        // a node announced as cached stays cached even if running nodes evict its entry.
        for (step, serve) in plan.steps.iter().zip(&served) {
            let (from_disk, value) = match serve {
                Serve::Hit { from_disk, outputs } => (
                    *from_disk,
                    shown_value(&registry.by_index(step.type_index).spec, outputs),
                ),
                Serve::OnDisk => (true, None),
                Serve::Run | Serve::Skip => continue,
            };
            on_event(&Event::NodeCached {
                run,
                node: step.id.clone(),
                from_disk,
                value,
            });
        }
        let mut slots: Vec<Option<Rc<Vec<Value>>>> = Vec::with_capacity(plan.steps.len());
        for (step, serve) in plan.steps.iter().zip(served) {
            let spec = &registry.by_index(step.type_index).spec;
            let (hit, from_disk) = match serve {
                Serve::Hit { outputs, from_disk } => (Some(outputs), from_disk),
                Serve::Run => (None, false),
                Serve::OnDisk => {
                    // Kept on disk and consumed only by cached nodes: not loaded.
                    self.remember_parts(step);
                    report.nodes.push(NodeReport {
                        id: step.id.clone(),
                        type_name: spec.type_name,
                        cached: true,
                        from_disk: true,
                        micros: 0,
                        key: step.key,
                        why: Vec::new(),
                    });
                    slots.push(None);
                    continue;
                }
                Serve::Skip => {
                    // Consumed only by cached nodes and cached nowhere: not run.
                    slots.push(None);
                    continue;
                }
            };
            let announced = hit.is_some();
            // A node whose key an earlier node of this run just computed (identical nodes)
            // is a late hit, announced when it is reached.
            if let Some(outputs) = hit.or_else(|| self.cache.get(&step.key)) {
                self.remember_parts(step);
                if !announced {
                    on_event(&Event::NodeCached {
                        run,
                        node: step.id.clone(),
                        from_disk: false,
                        value: shown_value(spec, &outputs),
                    });
                }
                self.announce_written(run, step, &mut report, on_event);
                report.nodes.push(NodeReport {
                    id: step.id.clone(),
                    type_name: spec.type_name,
                    cached: true,
                    from_disk,
                    micros: 0,
                    key: step.key,
                    why: Vec::new(),
                });
                slots.push(Some(outputs));
                continue;
            }
            if cancel.is_cancelled() {
                report.status = RunStatus::Cancelled;
                break;
            }
            let why = why_not_cached(step, &plan, &spec.inputs, self.last_parts.get(&step.id));
            self.remember_parts(step);
            let context = StepContext {
                run,
                workflow: request.workflow,
                cancel,
            };
            let variants = match &batch {
                Some((index, variants)) if *index == slots.len() => variants.as_slice(),
                _ => &[],
            };
            match self.execute_step(step, &slots, &context, why, variants, &mut report, on_event) {
                Some(outputs) => slots.push(Some(outputs)),
                None => break,
            }
        }
        if report.status == RunStatus::Cancelled {
            on_event(&Event::Error {
                run,
                node: None,
                message: "run cancelled".into(),
                cancelled: true,
            });
        }
        finish(report, started, on_event)
    }

    /// Keeps a node's key parts, so its next miss can say what changed since this run.
    fn remember_parts(&mut self, step: &Step) {
        match self.last_parts.get_mut(&step.id) {
            Some(parts) => parts.clone_from(&step.parts),
            None => {
                self.last_parts.insert(step.id.clone(), step.parts.clone());
            }
        }
    }

    /// The step of `batch.node` in `plan` and the other variants that can join its batch:
    /// those whose plan has the node with the same upstream keys and the same constants except
    /// per-image inputs, and whose key is not cached already. `None` when there are none (or
    /// the node type is not batched).
    fn batch_variants(&mut self, plan: &Plan, batch: &Batch) -> Option<(usize, Vec<BatchVariant>)> {
        let index = plan.step_index(&batch.node)?;
        let step = &plan.steps[index];
        let registry = Arc::clone(&self.registry);
        let registered = registry.by_index(step.type_index);
        let per_image = registered.node.per_image_inputs();
        if per_image.is_empty() {
            return None;
        }
        let specs = &registered.spec.inputs;
        let mut variants: Vec<BatchVariant> = Vec::new();
        for other in &batch.others {
            let Ok(other_plan) = self.plan(other, None) else {
                continue;
            };
            let Some(other_step) = other_plan
                .step_index(&batch.node)
                .map(|i| &other_plan.steps[i])
            else {
                continue;
            };
            if other_step.type_index != step.type_index
                || other_step.key == step.key
                || self.cache.contains(&other_step.key)
                || variants.iter().any(|v| v.key == other_step.key)
            {
                continue;
            }
            let mut constants = Vec::new();
            let mut links = Vec::new();
            let fits = step
                .inputs
                .iter()
                .zip(&other_step.inputs)
                .zip(specs)
                .enumerate()
                .all(|(i, ((mine, theirs), spec))| match (mine, theirs) {
                    (
                        PlannedInput::Link { step: a, output: x },
                        PlannedInput::Link { step: b, output: y },
                    ) if plan.steps[*a].output_keys[*x] == other_plan.steps[*b].output_keys[*y] => {
                        true
                    }
                    (PlannedInput::Link { .. }, PlannedInput::Link { step: b, output: y })
                        if per_image.contains(&spec.name) =>
                    {
                        links.push((i, *b, *y));
                        true
                    }
                    (PlannedInput::Constant(a), PlannedInput::Constant(b)) if a == b => true,
                    (PlannedInput::Constant(_), PlannedInput::Constant(b))
                        if per_image.contains(&spec.name) =>
                    {
                        constants.push((i, b.clone()));
                        true
                    }
                    (PlannedInput::Absent, PlannedInput::Absent) => true,
                    _ => false,
                });
            if fits && step.parts.files == other_step.parts.files {
                let key = other_step.key;
                variants.push(BatchVariant {
                    key,
                    constants,
                    links,
                    plan: other_plan,
                });
            }
        }
        (!variants.is_empty()).then_some((index, variants))
    }

    /// Runs one node that missed the cache: its events, its report line, the cache insert.
    /// With `variants`, the node runs as one batch of this run's inputs and theirs, and their
    /// outputs join the cache under their keys. `None` when the run must stop (the node
    /// failed, panicked or was cancelled).
    #[allow(clippy::too_many_arguments)]
    fn execute_step(
        &mut self,
        step: &Step,
        slots: &[Option<Rc<Vec<Value>>>],
        context: &StepContext,
        why: Vec<String>,
        variants: &[BatchVariant],
        report: &mut RunReport,
        on_event: &mut dyn FnMut(&Event),
    ) -> Option<Rc<Vec<Value>>> {
        let run = context.run;
        let registry = Arc::clone(&self.registry);
        let registered = registry.by_index(step.type_index);
        let spec = &registered.spec;
        let values: Vec<Option<Value>> = step
            .inputs
            .iter()
            .zip(&spec.inputs)
            .map(|(planned, input)| match planned {
                PlannedInput::Constant(c) => Some(Value::from_constant(c, input.ty)),
                PlannedInput::Link { step, output } => {
                    slots[*step].as_ref().and_then(|o| o.get(*output).cloned())
                }
                PlannedInput::Absent => None,
            })
            .collect();
        let mut notices = Vec::new();
        // A variant whose linked per-image values cannot be had is left to its own run.
        let mut joined: Vec<&BatchVariant> = Vec::new();
        let mut batch_inputs: Vec<Inputs> = Vec::new();
        for variant in variants {
            let mut values = values.clone();
            for (i, constant) in &variant.constants {
                values[*i] = Some(Value::from_constant(constant, spec.inputs[*i].ty));
            }
            let mut linked = true;
            for &(i, upstream, output) in &variant.links {
                match self.variant_result(&variant.plan, upstream, context, &mut notices) {
                    Ok(outputs) => values[i] = outputs.get(output).cloned(),
                    Err(why) => {
                        notices.push(format!(
                            "a sweep cell's '{}' left out of the batch ({why}); its own run samples it",
                            spec.inputs[i].name
                        ));
                        linked = false;
                        break;
                    }
                }
            }
            if linked {
                joined.push(variant);
                batch_inputs.push(Inputs::new(&spec.inputs, values));
            }
        }
        let inputs = Inputs::new(&spec.inputs, values);
        on_event(&Event::NodeStarted {
            run,
            node: step.id.clone(),
            type_name: spec.type_name.to_string(),
            why: why.clone(),
        });
        let node_started = Instant::now();
        let mut written = Vec::new();
        // The other variants' outputs when the node ran as a batch.
        let mut batch_outputs: Vec<Vec<Value>> = Vec::new();
        let result = {
            let id = step.id.as_str();
            let mut on_progress = |p: crate::node::Progress| {
                on_event(&Event::Progress {
                    run,
                    node: id.to_string(),
                    step: p.step,
                    total: p.total,
                    preview: p.preview,
                })
            };
            let mut on_output = |path: PathBuf| written.push(path);
            let mut ctx = NodeContext {
                node_id: id,
                device: self.config.device,
                output_dir: &self.config.output_dir,
                models: &self.config.models,
                files: &self.config.files,
                workflow: context.workflow,
                cancel: context.cancel,
                on_progress: &mut on_progress,
                on_output: &mut on_output,
                notices: &mut notices,
                preview_every: self.preview_every,
            };
            catch_unwind(AssertUnwindSafe(|| {
                let _guard = tch::no_grad_guard();
                if batch_inputs.is_empty() {
                    return registered.node.run(&inputs, &mut ctx);
                }
                batch_inputs.insert(0, inputs);
                let mut outputs = registered.node.run_batch(&batch_inputs, &mut ctx)?;
                if outputs.len() != batch_inputs.len() {
                    return Err(NodeError::msg(format!(
                        "a batch of {} variants gave {} results",
                        batch_inputs.len(),
                        outputs.len()
                    )));
                }
                let mine = outputs.remove(0);
                batch_outputs = outputs;
                Ok(mine)
            }))
        };
        let elapsed = node_started.elapsed();
        for message in notices {
            on_event(&Event::Notice {
                run,
                node: step.id.clone(),
                message,
            });
        }
        for path in &written {
            on_event(&Event::Output {
                run,
                node: step.id.clone(),
                path: path.clone(),
                cached: false,
            });
            report.outputs.push(path.clone());
        }
        let outcome = match result {
            Ok(Ok(outputs)) if outputs.len() == spec.outputs.len() => Ok(outputs),
            Ok(Ok(outputs)) => Err(format!(
                "node returned {} outputs, its type declares {}",
                outputs.len(),
                spec.outputs.len()
            )),
            Ok(Err(NodeError::Cancelled)) => {
                report.status = RunStatus::Cancelled;
                return None;
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(panic) => Err(format!("node panicked: {}", panic_message(&panic))),
        };
        match outcome {
            Ok(outputs) => {
                let micros = elapsed.as_micros() as u64;
                on_event(&Event::NodeFinished {
                    run,
                    node: step.id.clone(),
                    micros,
                    value: shown_value(spec, &outputs),
                });
                if spec.output_node {
                    report
                        .results
                        .push((step.id.clone(), describe_first(&outputs)));
                }
                if let Err(e) = self.cache.keep_on_disk(
                    &step.key,
                    &outputs,
                    &written,
                    elapsed,
                    spec.output_node,
                ) {
                    on_event(&Event::Notice {
                        run,
                        node: step.id.clone(),
                        message: format!("could not keep the result in the disk cache ({e})"),
                    });
                }
                if !batch_outputs.is_empty() {
                    on_event(&Event::Notice {
                        run,
                        node: step.id.clone(),
                        message: format!(
                            "ran as one batch with {} other sweep cell(s); their results are cached for their runs",
                            batch_outputs.len()
                        ),
                    });
                }
                // Each variant's share of the time stands for its cost (what evicting it
                // would cost to recompute, about).
                let share = elapsed / (batch_outputs.len() as u32 + 1);
                for (variant, outputs) in joined.iter().zip(batch_outputs) {
                    if outputs.len() != spec.outputs.len() {
                        continue;
                    }
                    if let Err(e) = self.cache.keep_on_disk(
                        &variant.key,
                        &outputs,
                        &[],
                        share,
                        spec.output_node,
                    ) {
                        on_event(&Event::Notice {
                            run,
                            node: step.id.clone(),
                            message: format!(
                                "could not keep a batch result in the disk cache ({e})"
                            ),
                        });
                    }
                    self.cache.insert(variant.key, Rc::new(outputs), share);
                }
                let outputs = Rc::new(outputs);
                self.cache.insert(step.key, Rc::clone(&outputs), elapsed);
                remember_written(&mut self.written_by_key, &self.cache, step.key, written);
                report.nodes.push(NodeReport {
                    id: step.id.clone(),
                    type_name: spec.type_name,
                    cached: false,
                    from_disk: false,
                    micros,
                    key: step.key,
                    why,
                });
                Some(outputs)
            }
            Err(message) => {
                let pos = context.workflow.nodes.get(&step.id).and_then(|n| n.pos);
                let message = format!("{} failed: {message}", spec.type_name);
                on_event(&Event::Error {
                    run,
                    node: Some(step.id.clone()),
                    message: message.clone(),
                    cancelled: false,
                });
                report
                    .errors
                    .push(Diagnostic::at_opt(pos, message).node(&step.id));
                report.status = RunStatus::Failed;
                None
            }
        }
    }
}

impl Executor {
    /// Step `index` of another sweep cell's `plan`, for a batch this run computes: from the
    /// memory or disk tier, else run here (with what it needs, recursively) and cached under
    /// its key, so that cell's own run finds it. Output nodes are not run this way (their
    /// files belong to their own run). `Err` says why the value cannot be had.
    fn variant_result(
        &mut self,
        plan: &Plan,
        index: usize,
        context: &StepContext,
        notices: &mut Vec<String>,
    ) -> Result<Rc<Vec<Value>>, String> {
        let step = &plan.steps[index];
        if let Some(outputs) = self.cache.get(&step.key) {
            return Ok(outputs);
        }
        if let DiskLookup::Hit { outputs, .. } =
            self.cache.load_from_disk(&step.key, self.config.device)
        {
            return Ok(outputs);
        }
        let registry = Arc::clone(&self.registry);
        let registered = registry.by_index(step.type_index);
        let spec = &registered.spec;
        if spec.output_node {
            return Err(format!("'{}' is an output node", step.id));
        }
        let mut values = Vec::with_capacity(step.inputs.len());
        for (planned, input) in step.inputs.iter().zip(&spec.inputs) {
            values.push(match planned {
                PlannedInput::Constant(c) => Some(Value::from_constant(c, input.ty)),
                PlannedInput::Link { step, output } => self
                    .variant_result(plan, *step, context, notices)?
                    .get(*output)
                    .cloned(),
                PlannedInput::Absent => None,
            });
        }
        let inputs = Inputs::new(&spec.inputs, values);
        let started = Instant::now();
        let mut wrote_files = false;
        let mut node_notices = Vec::new();
        let result = {
            let mut on_progress = |_: crate::node::Progress| {};
            let mut on_output = |_: PathBuf| wrote_files = true;
            let mut ctx = NodeContext {
                node_id: &step.id,
                device: self.config.device,
                output_dir: &self.config.output_dir,
                models: &self.config.models,
                files: &self.config.files,
                workflow: context.workflow,
                cancel: context.cancel,
                on_progress: &mut on_progress,
                on_output: &mut on_output,
                notices: &mut node_notices,
                preview_every: 0,
            };
            catch_unwind(AssertUnwindSafe(|| {
                let _guard = tch::no_grad_guard();
                registered.node.run(&inputs, &mut ctx)
            }))
        };
        let elapsed = started.elapsed();
        let outputs = match result {
            Ok(Ok(outputs)) if outputs.len() == spec.outputs.len() && !wrote_files => outputs,
            Ok(Ok(_)) => return Err(format!("'{}' gave unexpected outputs", step.id)),
            Ok(Err(e)) => return Err(format!("'{}' failed: {e}", step.id)),
            Err(panic) => return Err(format!("'{}' panicked: {}", step.id, panic_message(&panic))),
        };
        notices.push(format!(
            "ran another sweep cell's '{}' ({}) for this batch; its run finds it cached",
            step.id, spec.type_name
        ));
        if let Err(e) = self
            .cache
            .keep_on_disk(&step.key, &outputs, &[], elapsed, false)
        {
            notices.push(format!(
                "could not keep a batch result in the disk cache ({e})"
            ));
        }
        let outputs = Rc::new(outputs);
        self.cache.insert(step.key, Rc::clone(&outputs), elapsed);
        Ok(outputs)
    }
}

/// Keeps the files a node wrote under its key while its outputs may be cached. Entries whose
/// values the cache has since evicted are dropped once the table grows large.
fn remember_written(
    table: &mut HashMap<CacheKey, Vec<PathBuf>>,
    cache: &Cache,
    key: CacheKey,
    written: Vec<PathBuf>,
) {
    if written.is_empty() {
        table.remove(&key);
        return;
    }
    table.insert(key, written);
    if table.len() > WRITTEN_TABLE_PRUNE_AT {
        table.retain(|key, _| cache.contains(key));
    }
}

/// How a planned step is served in a run.
enum Serve {
    /// From the memory tier, or from the disk tier (loaded into memory).
    Hit {
        outputs: Rc<Vec<Value>>,
        from_disk: bool,
    },
    /// Kept on disk, consumed only by cached nodes: announced as cached, not loaded.
    OnDisk,
    /// Needed and cached nowhere.
    Run,
    /// Consumed only by cached nodes and cached nowhere: neither run nor announced.
    Skip,
}

impl Executor {
    /// How each step of the plan is served, decided from the outputs back: an output node (or
    /// a node nothing in the plan consumes) is needed; a needed node that the memory or the
    /// disk tier serves needs nothing upstream of it, so a full hit on disk loads no model.
    /// Memory hits are served (and announced) whether needed or not; a disk entry is loaded
    /// only when needed. A disk entry that cannot be read is reported (a notice) and the node
    /// runs.
    fn serve_from_caches(
        &mut self,
        plan: &Plan,
        run: u64,
        on_event: &mut dyn FnMut(&Event),
    ) -> Vec<Serve> {
        let n = plan.steps.len();
        let mut consumed = vec![false; n];
        for step in &plan.steps {
            for input in &step.inputs {
                if let PlannedInput::Link { step, .. } = input {
                    consumed[*step] = true;
                }
            }
        }
        let mut needed = vec![false; n];
        let mut served: Vec<Serve> = Vec::with_capacity(n);
        for i in (0..n).rev() {
            let step = &plan.steps[i];
            let output_node = self.registry.by_index(step.type_index).spec.output_node;
            needed[i] |= output_node || !consumed[i];
            let serve = if let Some(outputs) = self.cache.get(&step.key) {
                Serve::Hit {
                    outputs,
                    from_disk: false,
                }
            } else if needed[i] {
                match self.read_disk(step, run, on_event) {
                    Some(outputs) => Serve::Hit {
                        outputs,
                        from_disk: true,
                    },
                    None => {
                        for input in &step.inputs {
                            if let PlannedInput::Link { step, .. } = input {
                                needed[*step] = true;
                            }
                        }
                        Serve::Run
                    }
                }
            } else if self.cache.on_disk(&step.key) {
                Serve::OnDisk
            } else {
                Serve::Skip
            };
            served.push(serve);
        }
        served.reverse();
        served
    }

    /// `step`'s outputs from the cache's disk tier (which puts them in memory too). A node that
    /// wrote files is served only while those files are still there (as the memory tier serves
    /// a cached SaveImage: the run names the images saved before).
    fn read_disk(
        &mut self,
        step: &Step,
        run: u64,
        on_event: &mut dyn FnMut(&Event),
    ) -> Option<Rc<Vec<Value>>> {
        match self.cache.load_from_disk(&step.key, self.config.device) {
            DiskLookup::Miss => None,
            DiskLookup::Unusable(why) => {
                on_event(&Event::Notice {
                    run,
                    node: step.id.clone(),
                    message: format!("disk cache entry unusable, running the node: {why}"),
                });
                None
            }
            DiskLookup::Hit { outputs, written } => {
                remember_written(&mut self.written_by_key, &self.cache, step.key, written);
                Some(outputs)
            }
        }
    }

    /// A cached node's files, announced as outputs of this run (marked `cached`) and listed in
    /// the report's `kept` (`outputs` lists the files this run wrote): those still on disk.
    fn announce_written(
        &self,
        run: u64,
        step: &Step,
        report: &mut RunReport,
        on_event: &mut dyn FnMut(&Event),
    ) {
        let Some(files) = self.written_by_key.get(&step.key) else {
            return;
        };
        for path in files.iter().filter(|p| p.is_file()) {
            on_event(&Event::Output {
                run,
                node: step.id.clone(),
                path: path.clone(),
                cached: true,
            });
            report.kept.push(path.clone());
        }
    }
}

/// Above this many nodes with files, the table of written files forgets evicted entries.
const WRITTEN_TABLE_PRUNE_AT: usize = 4096;

/// What every node of one run shares.
struct StepContext<'a> {
    run: u64,
    workflow: &'a Workflow,
    cancel: &'a CancelToken,
}

/// Stamps the run's time on its report and sends `run_finished`.
fn finish(mut report: RunReport, started: Instant, on_event: &mut dyn FnMut(&Event)) -> RunReport {
    report.micros = started.elapsed().as_micros() as u64;
    on_event(&Event::RunFinished {
        run: report.run,
        status: report.status,
        ran: report.ran(),
        cached: report.cached(),
        micros: report.micros,
    });
    report
}

/// What an output node shows in the editor: its first output when that is a number, text or
/// flag (texts cut at 10,000 characters); `None` for tensors, models and other nodes.
fn shown_value(spec: &crate::node::NodeSpec, outputs: &[Value]) -> Option<serde_json::Value> {
    if !spec.output_node {
        return None;
    }
    Some(match outputs.first()? {
        Value::Int(i) => serde_json::json!(i),
        Value::Float(f) => serde_json::json!(f),
        Value::Bool(b) => serde_json::json!(b),
        Value::String(s) => serde_json::json!(s.chars().take(10_000).collect::<String>()),
        _ => return None,
    })
}

fn describe_first(outputs: &[Value]) -> String {
    outputs.first().map(Value::describe).unwrap_or_default()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// The blake3 content hash of a file, opened under the run's rule (so a file that may not be read is
/// not read to hash it either); remembered while its size and modification time stay, in this
/// process and, with the disk tier on, for later processes (a 2 GB checkpoint hashes in ~0.6 s).
fn hash_file(
    known: &mut HashMap<PathBuf, HashedFile>,
    cache: &Cache,
    files: &FileAccess,
    path: &Path,
) -> std::io::Result<[u8; 32]> {
    let file = files.open(path)?;
    let meta = file.metadata()?;
    let modified = meta.modified().ok();
    if let Some(h) = known.get(path) {
        if h.len == meta.len() && h.modified == modified && modified.is_some() {
            return Ok(h.hash);
        }
    }
    let remembered = cache.remembered_file_hash(path, &meta);
    let hash = match remembered {
        Some(hash) => hash,
        None => {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(&file)?;
            let hash = *hasher.finalize().as_bytes();
            cache.remember_file_hash(path, &meta, hash);
            hash
        }
    };
    known.insert(
        path.to_path_buf(),
        HashedFile {
            modified,
            len: meta.len(),
            hash,
        },
    );
    Ok(hash)
}
