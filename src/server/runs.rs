//! Runs: enqueue (a workflow name or an inline document, with overrides and a target), list
//! (newest first, paged), detail, cancel, delete or move a queued one. Everything a run may read is
//! checked here, before it is queued: it must validate and every file it names must resolve
//! into the models, inputs, workflows or outputs folder.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use weft_engine::{Diagnostic, Workflow};

use super::checking;
use super::error::{ApiError, ApiResult};
use super::store::{ComfyPrompt, QueuePlace, RunRecord, RunState, StoreResult};
use super::workflows::{self, JsonBody};
use super::{now_ms, AppState};

#[derive(Deserialize)]
pub struct CreateBody {
    workflow: Json_,
    #[serde(default)]
    set: IndexMap<String, Json_>,
    #[serde(default)]
    target: Option<String>,
    /// `{"mode"?: "grid"|"zip", "axes": {"node.input": [values] | "range"}}`: one run per cell.
    #[serde(default)]
    sweep: Option<Json_>,
    /// Allows a sweep of more than 10,000 cells.
    #[serde(default)]
    max_cells: Option<usize>,
    /// Samples up to this many sweep cells that differ only in a sampler's seed as one batch
    /// (default 4; 1: every cell alone). Each cell is still its own run.
    #[serde(default)]
    batch: Option<usize>,
    /// Queued ahead of every waiting run (a sweep's runs all of them, in their order).
    #[serde(default)]
    front: bool,
}

/// Applies `"node.input": value` overrides; a value is read exactly as in a document
/// (`"$node.output"` is a link).
fn apply_sets(
    workflow: &mut Workflow,
    sets: &IndexMap<String, Json_>,
) -> Result<(), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    for (path, value) in sets {
        let Some((node_id, input)) = path.split_once('.') else {
            errors.push(Diagnostic::new(format!(
                "set '{path}': expected \"node.input\""
            )));
            continue;
        };
        let Some(node) = workflow.nodes.get_mut(node_id) else {
            errors.push(
                Diagnostic::new(format!("set '{path}': no node '{node_id}' in the workflow"))
                    .node(node_id),
            );
            continue;
        };
        let one = json!({"weft": 1, "nodes": {"n": {"type": "T", "v": value}}});
        match workflows::from_doc(&one) {
            Ok(parsed) => {
                if let Some(entry) = parsed.nodes["n"].inputs.get("v") {
                    let entry = weft_engine::workflow::InputEntry {
                        pos: None,
                        ..entry.clone()
                    };
                    node.inputs.insert(input.to_string(), entry);
                }
            }
            Err(mut e) => {
                // The value was read as input `v` of a stand-in node `n`: name the real ones.
                for d in &mut e {
                    d.pos = None;
                    d.node = Some(node_id.to_string());
                    d.input = Some(input.to_string());
                    d.message = format!("set '{path}': {}", d.message);
                }
                errors.extend(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Every check a run passes before it is queued, from either API: it validates (for
/// `target`), then every file it names resolves into the server's folders.
pub(super) fn check(
    state: &AppState,
    workflow: &Workflow,
    target: Option<&str>,
) -> Vec<Diagnostic> {
    let diagnostics = weft_engine::validate(workflow, &state.registry, target);
    if !diagnostics.is_empty() {
        return diagnostics;
    }
    check_files(state, workflow, target)
}

/// Where a checked run comes from.
pub(super) enum Origin<'a> {
    /// weft's `POST /api/runs`: the workflow's file name (when it is one) and the target.
    Api {
        name: Option<&'a str>,
        target: Option<&'a str>,
    },
    /// ComfyUI's `POST /prompt`: the prompt, stored with the run in one transaction.
    Comfy(&'a ComfyPrompt),
}

/// The one way a checked run enters the queue, from either API: stored, announced
/// (`run_queued`), handed to the scheduler already parsed, and the scheduler woken.
/// Queues a checked workflow; `front`: ahead of every run waiting (ComfyUI's "queue front").
pub(super) fn submit(
    state: &AppState,
    workflow: Workflow,
    origin: Origin,
    front: bool,
) -> StoreResult<u64> {
    let text = workflow.to_json().to_string();
    let id = match origin {
        Origin::Api { name, target } => state.store.enqueue(name, &text, target, now_ms())?,
        Origin::Comfy(prompt) => state.store.enqueue_prompt(&text, now_ms(), prompt)?,
    };
    // Before the scheduler is woken, so that it takes this run next. Two steps, not one
    // transaction: a scheduler already awake may take the run first, which is what the
    // front of the queue asked for anyway.
    if front {
        state.store.move_queued(id, QueuePlace::Front)?;
    }
    state
        .hub
        .send(super::events::ServerEvent::RunQueued { run: id });
    state.queue.hand_over(id, workflow);
    state.queue.changed();
    state.queue.wake();
    Ok(id)
}

/// Files named by the workflow (checkpoints, images) must resolve into the server's folders.
fn check_files(state: &AppState, workflow: &Workflow, target: Option<&str>) -> Vec<Diagnostic> {
    let planned = weft_engine::plan::plan(
        workflow,
        &state.registry,
        target,
        &state.roots.models,
        // The same check a run makes when it opens the file (no hashing here).
        &mut |path: &std::path::Path| state.roots.files.check(path).map(|()| [0; 32]),
    );
    let mut errors = match planned {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    };
    // A model name may be a path; wherever it resolves must be inside the folders too (a
    // folder that merely exists outside lists no model files above, so check it here).
    for (id, node) in &workflow.nodes {
        let Some(registered) = state.registry.get(&node.type_name) else {
            continue;
        };
        if registered.spec.category != "loaders" {
            continue;
        }
        for (name, entry) in &node.inputs {
            let is_model_name = registered
                .spec
                .input(name)
                .is_some_and(|(_, i)| i.ty == weft_engine::ValueType::String);
            let weft_engine::InputValue::Constant(weft_engine::Constant::String(text)) =
                &entry.value
            else {
                continue;
            };
            if !is_model_name {
                continue;
            }
            let inside = weft_nodes::model_files::resolve_model(text, &state.roots.models)
                .is_ok_and(|p| state.roots.files.check(&p).is_ok());
            if !inside {
                errors.push(
                    Diagnostic::at_opt(
                        entry.pos,
                        format!(
                            "'{text}' is not a model in the model folders ({})",
                            state.roots.models
                        ),
                    )
                    .node(id)
                    .input(name)
                    .code(weft_engine::DiagnosticCode::FileNotFound),
                );
            }
        }
    }
    errors
}

/// A named workflow's parse, reused while the file's bytes stay the same (reruns of one file
/// are the common case and parsing is most of a cached run's cost on the server).
fn parse_named(state: &AppState, name: &str, bytes: Vec<u8>) -> Result<Workflow, Vec<Diagnostic>> {
    if let Ok(cache) = state.parsed.lock() {
        if let Some((known, workflow)) = cache.get(name) {
            if *known == bytes {
                return Ok(workflow.clone());
            }
        }
    }
    let workflow = Workflow::parse(&bytes)?;
    if let Ok(mut cache) = state.parsed.lock() {
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(name.to_string(), (bytes, workflow.clone()));
    }
    Ok(workflow)
}

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    let target = body.target.clone();
    let front = body.front;
    let checking_state = state.clone();
    let checked = checking::off_runtime(&state, "validating the workflow", move || {
        checked_workflow(&checking_state, body)
    })
    .await??;
    let (name, workflow) = match checked {
        Checked::Run(name, workflow) => (name, *workflow),
        Checked::Sweep(queued) => return Ok(queued),
    };
    let origin = Origin::Api {
        name: name.as_deref(),
        target: target.as_deref(),
    };
    let id = submit(&state, workflow, origin, front)
        .map_err(|e| ApiError::internal("queueing a run", e))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id}))).into_response())
}

/// Why a subgraph's file (one declaring `inputs:` / `outputs:`) is not queued: its `$inputs`
/// have values only where a workflow uses it as a node, and its outputs go to that workflow.
fn library_subgraph_refusal(name: Option<&str>) -> Diagnostic {
    let used_as = match name.and_then(|n| n.strip_prefix("lib/")) {
        Some(stem) => format!("`type: {stem}`"),
        None => "a node (`type: NAME` for lib/NAME.yaml)".to_string(),
    };
    Diagnostic::new(
        "this file declares `inputs:` and `outputs:`: it is a subgraph, which runs only as a \
         node of a workflow that gives its inputs values",
    )
    .hint(format!(
        "queue a workflow that uses it as {used_as}, or open that workflow and queue it there"
    ))
}

/// What a checked run request comes to.
enum Checked {
    /// One run of this workflow (named when it is a file), to be queued.
    Run(Option<String>, Box<Workflow>),
    /// A sweep, its cells already queued: the reply.
    Sweep(Response),
}

/// The run's workflow (its name when it is a file) parsed, overridden, expanded and checked,
/// or why it may not run; a sweep's cells are each checked and queued together. Blocking work.
fn checked_workflow(state: &AppState, body: CreateBody) -> ApiResult<Checked> {
    let (name, parsed) = match &body.workflow {
        Json_::String(name) => {
            let (_, bytes) = workflows::read(state, name)?;
            (Some(name.clone()), parse_named(state, name, bytes))
        }
        doc => (None, workflows::from_doc(doc)),
    };
    let invalid = |d: Vec<Diagnostic>| {
        ApiError::InvalidWorkflow("the workflow is not valid; nothing was queued".into(), d)
    };
    let mut workflow = parsed.map_err(&invalid)?;
    if workflow.interface.is_some() {
        return Err(ApiError::InvalidWorkflow(
            "a library subgraph does not run on its own; nothing was queued".into(),
            vec![library_subgraph_refusal(name.as_deref())],
        ));
    }
    apply_sets(&mut workflow, &body.set).map_err(&invalid)?;
    if let Some(sweep) = &body.sweep {
        super::sweeps::apply_request_sweep(&mut workflow, sweep).map_err(&invalid)?;
    }
    let target = body.target.as_deref();
    let max_cells = body
        .max_cells
        .unwrap_or(weft_engine::sweep::DEFAULT_MAX_CELLS);
    // The sweep is made into cells before subgraphs are inlined and node modes applied (an
    // axis may name a subgraph node's exposed input or a bypassed node); each cell is expanded.
    let plan = weft_engine::sweep::plan(&workflow, &state.registry, max_cells).map_err(&invalid)?;
    if let Some(plan) = plan {
        let mut cells = Vec::with_capacity(plan.len());
        for cell in 0..plan.len() {
            let expanded = workflows::expand(
                &state.registry,
                &state.roots.workflows,
                &plan.workflow(cell),
            );
            let (workflow, mut diagnostics) = match expanded {
                Ok(workflow) => {
                    let diagnostics = check(state, &workflow, target);
                    (workflow, diagnostics)
                }
                Err(diagnostics) => (plan.workflow(cell), diagnostics),
            };
            if !diagnostics.is_empty() {
                // One cell's errors say what is wrong; the others would repeat them.
                for d in &mut diagnostics {
                    d.message = format!("sweep cell {cell}: {}", d.message);
                }
                return Err(invalid(diagnostics));
            }
            cells.push(workflow);
        }
        let batch = body.batch.unwrap_or(super::sweeps::DEFAULT_BATCH);
        let front = body.front;
        return super::sweeps::enqueue(state, name.as_deref(), target, &plan, cells, batch, front)
            .map(Checked::Sweep);
    }
    let workflow =
        workflows::expand(&state.registry, &state.roots.workflows, &workflow).map_err(&invalid)?;
    let diagnostics = check(state, &workflow, target);
    if !diagnostics.is_empty() {
        return Err(invalid(diagnostics));
    }
    Ok(Checked::Run(name, Box::new(workflow)))
}

fn summary(r: &RunRecord) -> Json_ {
    serde_json::to_value(r).unwrap_or_default()
}

fn detail(r: &RunRecord) -> Json_ {
    let mut v = summary(r);
    v["nodes"] = r.nodes.clone();
    v["outputs"] = r.outputs.clone();
    // The document as it ran (overrides applied, subgraphs inlined): the editor opens a past run
    // from it. Only in the detail, as listings would carry every run's whole workflow.
    v["workflow"] = serde_json::from_str(&r.workflow).unwrap_or(Json_::Null);
    v
}

#[derive(Deserialize)]
pub struct ListQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Json_>> {
    // `limit=0` asks for no runs (a client counting on the header fields alone), not for one.
    let limit = q.limit.unwrap_or(50).min(500);
    if limit == 0 {
        return Ok(Json(json!({"runs": []})));
    }
    let runs = state
        .store
        .list(q.before, limit)
        .map_err(|e| ApiError::internal("listing runs", e))?;
    Ok(Json(
        json!({"runs": runs.iter().map(summary).collect::<Vec<_>>()}),
    ))
}

fn run_id(text: &str) -> ApiResult<u64> {
    text.parse()
        .map_err(|_| ApiError::BadRequest("a run id is a positive integer".into()))
}

fn find(state: &AppState, id: u64) -> ApiResult<RunRecord> {
    state
        .store
        .get(id)
        .map_err(|e| ApiError::internal("reading a run", e))?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Json_>> {
    let id = run_id(&id)?;
    let mut v = detail(&find(&state, id)?);
    if let Some(sweep) = super::sweeps::run_sweep_json(&state, id) {
        v["sweep"] = sweep;
    }
    Ok(Json(v))
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = run_id(&id)?;
    if state.queue.cancel_running(id) {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "status": "cancelling"})),
        )
            .into_response());
    }
    if state
        .store
        .cancel_queued(id, now_ms())
        .map_err(|e| ApiError::internal("cancelling a run", e))?
    {
        state.queue.forget(id);
        state.queue.changed();
        return Ok(Json(json!({"id": id, "status": "cancelled"})).into_response());
    }
    let run = find(&state, id)?;
    // It may have started between the two checks.
    if run.status == RunState::Running && state.queue.cancel_running(id) {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "status": "cancelling"})),
        )
            .into_response());
    }
    Err(ApiError::Conflict(
        format!("run {id} is {}", run.status),
        None,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = run_id(&id)?;
    if state
        .store
        .delete_queued(id)
        .map_err(|e| ApiError::internal("deleting a run", e))?
    {
        state.queue.forget(id);
        state.queue.changed();
        return Ok(StatusCode::NO_CONTENT);
    }
    let run = find(&state, id)?;
    Err(ApiError::Conflict(
        format!(
            "run {id} is {}; only queued runs can be deleted",
            run.status
        ),
        None,
    ))
}

/// `POST /api/runs/{id}/move`: where a queued run goes, one of `{"to": "front"}`,
/// `{"to": "back"}`, `{"before": ID}`, `{"after": ID}` (another queued run).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
}

const MOVE_FORMS: &str =
    "say where the run goes: {\"to\": \"front\"}, {\"to\": \"back\"}, {\"before\": ID} or {\"after\": ID}";

impl MoveBody {
    fn place(&self) -> ApiResult<QueuePlace> {
        match (self.to.as_deref(), self.before, self.after) {
            (Some("front"), None, None) => Ok(QueuePlace::Front),
            (Some("back"), None, None) => Ok(QueuePlace::Back),
            (None, Some(run), None) => Ok(QueuePlace::Before(run)),
            (None, None, Some(run)) => Ok(QueuePlace::After(run)),
            (Some(other), None, None) => Err(ApiError::BadRequest(format!(
                "\"to\": \"{other}\" is not a place in the queue; {MOVE_FORMS}"
            ))),
            _ => Err(ApiError::BadRequest(format!(
                "one place at a time: {MOVE_FORMS}"
            ))),
        }
    }
}

/// Moves a queued run; the reply is the queue's new order (ids, first taken first).
pub async fn move_in_queue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<MoveBody>,
) -> ApiResult<Json<Json_>> {
    let id = run_id(&id)?;
    let place = body.place()?;
    let anchor = match place {
        QueuePlace::Before(run) | QueuePlace::After(run) => Some(run),
        QueuePlace::Front | QueuePlace::Back => None,
    };
    if anchor == Some(id) {
        return Err(ApiError::BadRequest(format!(
            "run {id} cannot be placed next to itself"
        )));
    }
    let moved = state
        .store
        .move_queued(id, place)
        .map_err(|e| ApiError::internal("moving a run in the queue", e))?;
    if !moved {
        // Which of the two is not waiting (or does not exist) says what to do.
        for run in std::iter::once(id).chain(anchor) {
            let status = find(&state, run)?.status;
            if status != RunState::Queued {
                return Err(ApiError::Conflict(
                    format!("run {run} is {status}; only queued runs have a place in the queue"),
                    None,
                ));
            }
        }
        return Err(ApiError::Conflict(
            format!("run {id} left the queue while it was being moved"),
            None,
        ));
    }
    state.queue.changed();
    let (queued, total) = state
        .store
        .queued(super::queue::QUEUE_LISTED)
        .map_err(|e| ApiError::internal("reading the queue", e))?;
    Ok(Json(json!({"id": id, "queued": queued, "total": total})))
}
