//! `GET /queue`, `POST /queue` (clear, delete) and `POST /interrupt`.
use super::*;

pub(super) fn queue_item(state: &AppState, run: u64) -> Json_ {
    match state.comfy.prompt_of_run(run) {
        Some(p) => p.queue_item(),
        // A run queued through weft's own API: it holds the device too.
        None => json!([run, format!("weft-run-{run}"), {}, {}, []]),
    }
}

pub(super) async fn get_queue(State(state): State<AppState>) -> Json<Json_> {
    let running: Vec<Json_> = state
        .queue
        .running()
        .map(|r| queue_item(&state, r))
        .into_iter()
        .collect();
    let pending: Vec<Json_> = state
        .store
        .queued(MAXIMUM_HISTORY_SIZE)
        .map(|(ids, _)| ids)
        .unwrap_or_default()
        .into_iter()
        .map(|r| queue_item(&state, r))
        .collect();
    Json(json!({"queue_running": running, "queue_pending": pending}))
}

/// `{"clear": true}` drops the queued prompts posted here; `{"delete": [prompt_id, ...]}`
/// drops those.
pub(super) async fn post_queue(State(state): State<AppState>, body: Bytes) -> StatusCode {
    let body: Json_ = serde_json::from_slice(&body).unwrap_or(Json_::Null);
    let mut runs = Vec::new();
    if body.get("clear").and_then(Json_::as_bool) == Some(true) {
        let queued = state.store.queued(MAXIMUM_HISTORY_SIZE).map(|(ids, _)| ids);
        for run in queued.unwrap_or_default() {
            if state.comfy.prompt_of_run(run).is_some() {
                runs.push(run);
            }
        }
    }
    for id in body
        .get("delete")
        .and_then(Json_::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = id.as_str().and_then(|i| state.comfy.prompt_by_id(i)) {
            runs.push(p.run);
        }
    }
    let mut changed = false;
    for run in runs {
        if state.store.delete_queued(run).unwrap_or(false) {
            state.queue.forget(run);
            if let Ok(mut live) = state.comfy.live.lock() {
                live.remove(&run);
            }
            changed = true;
        }
    }
    if changed {
        state.queue.changed();
    }
    StatusCode::OK
}

/// Stops the running prompt (any run on the device, as ComfyUI's global interrupt), or only
/// `{"prompt_id": ...}` when that one is running. On a fleet's API server, whose runs execute
/// on workers, the oldest running run (or that prompt's), through the cross-machine cancel.
pub(super) async fn post_interrupt(State(state): State<AppState>, body: Bytes) -> StatusCode {
    let body: Json_ = serde_json::from_slice(&body).unwrap_or(Json_::Null);
    let prompt_id = body.get("prompt_id").and_then(Json_::as_str);
    if let Some(running) = run_to_interrupt(&state, prompt_id) {
        state.queue.cancel_running(running);
    }
    StatusCode::OK
}

/// The run `/interrupt` stops, if any runs.
fn run_to_interrupt(state: &AppState, prompt_id: Option<&str>) -> Option<u64> {
    if let Some(prompt_id) = prompt_id {
        let run = state.store.prompt_by_id(prompt_id).ok()??.run;
        let record = state.store.get(run).ok()??;
        return (record.status == RunState::Running).then_some(run);
    }
    if let Some(running) = state.queue.running() {
        return Some(running);
    }
    // Nothing runs in this process: on a fleet's API server the runs are the workers', and
    // the store knows which run (a partial index on running runs), however many runs are old.
    state.store.running(1).ok()?.first().copied()
}
