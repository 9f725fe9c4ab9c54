//! Sweeps over HTTP: `POST /api/runs` with a `sweep` (or a document with a `sweep:` section)
//! queues one run per cell in cell order; `GET /api/sweeps/{id}` tells where the cells stand;
//! `POST /api/sweeps/{id}/cancel` cancels every cell still to finish. When the last cell
//! finishes, the contact sheet is composed from the outputs' storage into it (`sweeps/{id}/grid.png`)
//! and `sweep_finished` goes out on /ws. `GET /api/sweeps?workflow=NAME` finds the newest
//! sweep of a workflow file, so a reloaded editor re-attaches its grid viewer.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use weft_engine::sweep::{AxisValues, SweepPlan};
use weft_engine::{Diagnostic, Workflow};

use super::error::{ApiError, ApiResult};
use super::hub::Hub;
use super::outputs::{BlockingOutputs, OutputError};
use super::store::{NewSweep, QueuePlace, RunStore, StoreResult, SweepRecord};
use super::{now_ms, AppState};

/// Reads the `sweep` of a request (`{"mode"?, "axes": {...}}`) into the workflow's sweep
/// section: its axes add to (or replace) the document's, its mode replaces the document's.
pub fn apply_request_sweep(workflow: &mut Workflow, sweep: &Json_) -> Result<(), Vec<Diagnostic>> {
    // Read by the same reader as a document's section, so both accept the same values.
    let doc = json!({"weft": 1, "nodes": {}, "sweep": sweep});
    let parsed = super::workflows::from_doc(&doc).map_err(|mut errors| {
        // Positions would point into the stand-in document, not the request.
        for d in &mut errors {
            d.pos = None;
            d.message = format!("sweep: {}", d.message);
        }
        errors
    })?;
    let Some(mut requested) = parsed.sweep else {
        return Ok(());
    };
    // Positions would point into the stand-in document: a request's values have none.
    for axis in requested.axes.values_mut() {
        axis.pos = None;
        match &mut axis.values {
            AxisValues::List(items) => items.iter_mut().for_each(|(_, pos)| *pos = None),
            AxisValues::Range(_, pos) => *pos = None,
        }
    }
    requested.pos = None;
    match &mut workflow.sweep {
        Some(section) => {
            if sweep.get("mode").is_some() {
                section.mode = requested.mode;
            }
            section.axes.extend(requested.axes);
        }
        None => workflow.sweep = Some(requested),
    }
    Ok(())
}

fn values_json(plan: &SweepPlan, cell: usize) -> Json_ {
    let map: serde_json::Map<String, Json_> = plan
        .values(cell)
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Json_::Null)))
        .collect();
    Json_::Object(map)
}

/// How many cells that differ only in a sampler's seed are sampled as one batch by default.
pub const DEFAULT_BATCH: usize = 4;

/// Queues the cells of `plan` (each already validated) and answers 202 with the sweep's id,
/// its runs and cells, and the grid's rows and columns. Cells that differ only in a sampler's
/// seed are grouped by `batch` (see [`SweepPlan::batches`]): the first cell's run samples the
/// group as one batch, the others' runs find their samples cached; each cell keeps its own
/// run record, images and sweep-free workflow.
pub fn enqueue(
    state: &AppState,
    name: Option<&str>,
    target: Option<&str>,
    plan: &SweepPlan,
    cells: Vec<Workflow>,
    batch: usize,
    front: bool,
) -> ApiResult<Response> {
    let axes: serde_json::Map<String, Json_> = plan
        .axes
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::to_value(v).unwrap_or(Json_::Null)))
        .collect();
    let layout = serde_json::to_value(crate::grid::layout(plan)).unwrap_or(Json_::Null);
    let new = NewSweep {
        mode: plan.mode.name().to_string(),
        axes: Json_::Object(axes),
        rows: json!(plan.rows()),
        columns: json!(plan.columns()),
        layout,
        cells: cells
            .iter()
            .enumerate()
            .map(|(i, wf)| (values_json(plan, i), wf.to_json().to_string()))
            .collect(),
    };
    let (sweep, runs) = state
        .store
        .enqueue_sweep(name, target, &new, now_ms())
        .map_err(|e| ApiError::internal("queueing a sweep", e))?;
    if front {
        to_front(state, &runs).map_err(|e| ApiError::internal("queueing a sweep in front", e))?;
    }
    for group in plan.batches(&state.registry, batch) {
        if let [first, others @ ..] = group.cells.as_slice() {
            if let (false, Some(run)) = (others.is_empty(), runs.get(*first)) {
                let others = others
                    .iter()
                    .filter_map(|&cell| cells.get(cell).cloned())
                    .collect();
                state.queue.hand_over_batch(
                    *run,
                    weft_engine::Batch {
                        node: group.node.clone(),
                        others,
                    },
                );
            }
        }
    }
    for (run, workflow) in runs.iter().zip(cells) {
        state
            .hub
            .send(super::events::ServerEvent::RunQueued { run: *run });
        state.queue.hand_over(*run, workflow);
    }
    state.queue.changed();
    state.queue.wake();
    let cells: Vec<Json_> = runs
        .iter()
        .zip(&new.cells)
        .map(|(run, (values, _))| json!({"run": run, "values": values}))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "sweep": sweep,
            "runs": runs,
            "cells": cells,
            "rows": new.rows,
            "columns": new.columns,
        })),
    )
        .into_response())
}

/// Puts a sweep's runs (queued last, in cell order) ahead of the runs that were waiting,
/// keeping their order. Before the scheduler is woken, as `runs::submit` does for one run; a
/// run claimed or cancelled meanwhile is simply no longer moved. Whichever side is shorter
/// moves: the waiting runs each to the back, or the sweep's runs, last first, each to the front
/// (every move rewrites the keys of the runs it passes).
fn to_front(state: &AppState, runs: &[u64]) -> StoreResult<()> {
    let ours: std::collections::HashSet<u64> = runs.iter().copied().collect();
    let (queue, _) = state.store.queued(runs.len() + MOVED_AHEAD_AT_MOST)?;
    let waiting: Vec<u64> = queue.into_iter().filter(|id| !ours.contains(id)).collect();
    if waiting.len() < runs.len() && waiting.len() < MOVED_AHEAD_AT_MOST {
        for &id in &waiting {
            state.store.move_queued(id, QueuePlace::Back)?;
        }
    } else {
        for &id in runs.iter().rev() {
            state.store.move_queued(id, QueuePlace::Front)?;
        }
    }
    Ok(())
}

/// How many waiting runs `to_front` reads to decide which side to move.
const MOVED_AHEAD_AT_MOST: usize = 10_000;

/// A sweep's status from its cells': running while any runs or waits (queued if none has
/// started), then failed if any failed, cancelled if any was cancelled, else succeeded.
fn sweep_status(record: &SweepRecord) -> &'static str {
    let has = |s: &str| record.cells.iter().any(|c| c.status == s);
    if has("running") {
        "running"
    } else if has("queued") {
        if record.cells.iter().all(|c| c.status == "queued") {
            "queued"
        } else {
            "running"
        }
    } else if record
        .cells
        .iter()
        .any(|c| matches!(c.status.as_str(), "failed" | "invalid" | "interrupted"))
    {
        "failed"
    } else if record
        .cells
        .iter()
        .any(|c| matches!(c.status.as_str(), "cancelled" | "deleted"))
    {
        "cancelled"
    } else {
        "succeeded"
    }
}

fn is_done(record: &SweepRecord) -> bool {
    !record
        .cells
        .iter()
        .any(|c| matches!(c.status.as_str(), "queued" | "running"))
}

/// The URL of a cell's first image.
fn first_image(outputs: &Json_) -> Option<String> {
    outputs
        .as_array()?
        .iter()
        .filter_map(|o| o["url"].as_str())
        .find(|u| u.to_ascii_lowercase().ends_with(".png"))
        .map(str::to_string)
}

fn grid_url(path: &str) -> String {
    format!("/api/outputs/{path}")
}

fn sweep_json(record: &SweepRecord) -> Json_ {
    let cells: Vec<Json_> = record
        .cells
        .iter()
        .map(|c| {
            json!({"run": c.run, "values": c.values, "status": c.status, "image": first_image(&c.outputs)})
        })
        .collect();
    json!({
        "id": record.id,
        "status": sweep_status(record),
        "mode": record.mode,
        "axes": record.axes,
        "rows": record.rows,
        "columns": record.columns,
        "cells": cells,
        "grid": record.grid.as_deref().map(grid_url),
    })
}

fn sweep_id(text: &str) -> ApiResult<u64> {
    text.parse()
        .map_err(|_| ApiError::BadRequest("a sweep id is a positive integer".into()))
}

fn find(state: &AppState, id: u64) -> ApiResult<SweepRecord> {
    state
        .store
        .get_sweep(id)
        .map_err(|e| ApiError::internal("reading a sweep", e))?
        .ok_or_else(|| ApiError::NotFound(format!("no sweep {id}")))
}

/// How many of the newest runs `GET /api/sweeps` looks through for a cell of a sweep.
const LATEST_SCAN: usize = 2_000;

#[derive(serde::Deserialize)]
pub struct LatestQuery {
    workflow: Option<String>,
}

/// `GET /api/sweeps?workflow=NAME`: the newest sweep queued from that workflow file (from any
/// workflow without the parameter), in flight or finished, as `GET /api/sweeps/{id}` gives
/// it, under `"sweep"`; `{"sweep": null}` when none of the newest runs is a cell of one.
pub async fn latest(
    State(state): State<AppState>,
    Query(query): Query<LatestQuery>,
) -> ApiResult<Json<Json_>> {
    let found =
        tokio::task::spawn_blocking(move || latest_sweep(&state, query.workflow.as_deref()))
            .await
            .map_err(|e| ApiError::internal("finding the newest sweep", e))??;
    Ok(Json(json!({"sweep": found.as_ref().map(sweep_json)})))
}

/// The newest sweep with a cell among the newest [`LATEST_SCAN`] runs (of `workflow` when
/// given). Blocking work.
fn latest_sweep(state: &AppState, workflow: Option<&str>) -> ApiResult<Option<SweepRecord>> {
    let mut before = None;
    let mut seen = 0;
    while seen < LATEST_SCAN {
        let page = state
            .store
            .list(before, 200)
            .map_err(|e| ApiError::internal("listing runs", e))?;
        let Some(last) = page.last() else {
            break;
        };
        before = Some(last.id);
        for run in &page {
            seen += 1;
            if workflow.is_some_and(|name| run.workflow_name.as_deref() != Some(name)) {
                continue;
            }
            let sweep = state
                .store
                .sweep_of_run(run.id)
                .map_err(|e| ApiError::internal("reading a run's sweep", e))?;
            if let Some((id, _, _)) = sweep {
                return state
                    .store
                    .get_sweep(id)
                    .map_err(|e| ApiError::internal("reading a sweep", e));
            }
        }
    }
    Ok(None)
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Json_>> {
    let id = sweep_id(&id)?;
    Ok(Json(sweep_json(&find(&state, id)?)))
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = sweep_id(&id)?;
    let record = find(&state, id)?;
    let mut cancelled = Vec::new();
    let mut cancelling = Vec::new();
    // Queued cells first, so the scheduler does not start the next one meanwhile.
    for cell in &record.cells {
        if cell.status == "queued"
            && state
                .store
                .cancel_queued(cell.run, now_ms())
                .map_err(|e| ApiError::internal("cancelling a sweep's run", e))?
        {
            state.queue.forget(cell.run);
            cancelled.push(cell.run);
        }
    }
    for cell in &record.cells {
        if !cancelled.contains(&cell.run) && state.queue.cancel_running(cell.run) {
            cancelling.push(cell.run);
        }
    }
    state.queue.changed();
    if cancelled.is_empty() && cancelling.is_empty() {
        return Err(ApiError::Conflict(
            format!("sweep {id} is {}", sweep_status(&record)),
            None,
        ));
    }
    if cancelling.is_empty() {
        // No cell is left to finish on the scheduler, which would otherwise compose the grid.
        let (store, hub, outputs) = (
            state.store.clone(),
            state.hub.clone(),
            state.blocking_outputs.clone(),
        );
        let _ =
            tokio::task::spawn_blocking(move || finish_if_done(&*store, &hub, &outputs, id)).await;
    }
    let status = if cancelling.is_empty() {
        "cancelled"
    } else {
        "cancelling"
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": status, "cancelled": cancelled, "cancelling": cancelling})),
    )
        .into_response())
}

/// After run `run` finished: if it is the last cell of its sweep to finish, composes the grid.
pub fn run_finished(store: &dyn RunStore, hub: &Hub, outputs: &BlockingOutputs, run: u64) {
    match store.sweep_of_run(run) {
        Ok(Some((sweep, _, _))) => finish_if_done(store, hub, outputs, sweep),
        Ok(None) => {}
        Err(e) => eprintln!("weft serve: {e}"),
    }
}

/// Composes sweep `id`'s grid once every cell has finished, records it and says so on /ws.
/// The cells' images are read from the outputs' storage, where every machine's finished runs
/// are (a fleet's cells ran on several workers), and the grid is stored there, so any API
/// server serves it. Whoever records the last cell composes: a fleet's worker just after its
/// run's record (its files are stored before it), an API server when a cancel ends a sweep.
pub fn finish_if_done(store: &dyn RunStore, hub: &Hub, outputs: &BlockingOutputs, id: u64) {
    let record = match store.get_sweep(id) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            eprintln!("weft serve: {e}");
            return;
        }
    };
    if record.grid.is_some() || !is_done(&record) {
        return;
    }
    let images: Vec<Option<image::RgbImage>> = record
        .cells
        .iter()
        .map(|c| {
            let url = first_image(&c.outputs)?;
            let key = url.strip_prefix("/api/outputs/")?;
            match outputs.get(key) {
                Ok(bytes) => match image::load_from_memory(&bytes) {
                    Ok(image) => Some(image.to_rgb8()),
                    Err(e) => {
                        eprintln!("weft serve: sweep {id}: reading cell image {key}: {e}");
                        None
                    }
                },
                // A cell whose image is gone is drawn as a grey box, as one that made none.
                Err(OutputError::NotFound(_)) => None,
                Err(e) => {
                    eprintln!("weft serve: sweep {id}: {e}");
                    None
                }
            }
        })
        .collect();
    let relative = format!("sweeps/{id}/grid.png");
    let composed = serde_json::from_value::<crate::grid::GridLayout>(record.layout.clone())
        .map_err(|e| anyhow::anyhow!("the stored layout of sweep {id} does not read: {e}"))
        .and_then(|layout| crate::grid::png(&layout, &images))
        .and_then(|png| {
            outputs
                .put(&relative, png.into())
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
    let grid = match composed {
        Ok(()) => match store.set_sweep_grid(id, &relative) {
            Ok(true) => Some(grid_url(&relative)),
            // Another caller recorded it (and said so) first.
            Ok(false) => return,
            Err(e) => {
                eprintln!("weft serve: {e}");
                None
            }
        },
        Err(e) => {
            eprintln!("weft serve: composing the grid of sweep {id}: {e:#}");
            None
        }
    };
    hub.send(super::events::ServerEvent::SweepFinished {
        sweep: id,
        status: sweep_status(&record).to_string(),
        grid,
    });
}

/// `"sweep"` of a run's detail: the sweep it is a cell of, which cell, and its values.
pub fn run_sweep_json(state: &AppState, run: u64) -> Option<Json_> {
    let (id, cell, values) = state.store.sweep_of_run(run).ok()??;
    Some(json!({"id": id, "cell": cell, "values": values}))
}
