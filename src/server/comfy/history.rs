//! `GET /history` and `/history/{prompt_id}`: weft's run records in ComfyUI's shape, and the
//! identity of an output node by which a cached one finds the images it saved before.
use super::*;

/// JSON with object keys sorted, so equal graphs give equal text.
pub(super) fn canonical(v: &Json_) -> String {
    match v {
        Json_::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Json_::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Json_::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// What an output node's images depend on: the node and everything upstream of it (class
/// types and inputs). weft does not run an output node again when it is cached, so its
/// images are those an earlier prompt with the same identity saved (ComfyUI, too, answers a
/// cached output node with the files it saved before).
pub(super) fn identity(prompt: &Json_, output: &str) -> String {
    let mut nodes = Map::new();
    let mut stack = vec![output.to_string()];
    while let Some(id) = stack.pop() {
        if nodes.contains_key(&id) {
            continue;
        }
        let Some(node) = prompt.get(&id) else {
            continue;
        };
        for v in node["inputs"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            if let Some([from, _]) = v.as_array().map(Vec::as_slice) {
                match from {
                    Json_::String(s) => stack.push(s.clone()),
                    Json_::Number(n) => stack.push(n.to_string()),
                    _ => {}
                }
            }
        }
        nodes.insert(
            id,
            json!({"class_type": node["class_type"], "inputs": node["inputs"]}),
        );
    }
    let text = canonical(&Json_::Object(nodes)) + output;
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// An output file of a run as ComfyUI names it: `subfolder` is the run's folder under the
/// outputs (plus a SaveImage prefix's folders), `type` is `output`.
pub(super) fn image_ref(path_in_outputs: &str) -> Json_ {
    let (dir, file) = path_in_outputs
        .rsplit_once('/')
        .unwrap_or(("", path_in_outputs));
    json!({"filename": file, "subfolder": dir, "type": "output"})
}

pub(super) fn history_entry(comfy: &Comfy, p: &Prompt, run: &RunRecord) -> Option<Json_> {
    if !run.status.is_finished() {
        return None;
    }
    let mut outputs = Map::new();
    let mut meta = Map::new();
    for o in run.outputs.as_array().into_iter().flatten() {
        let (Some(node), Some(url)) = (o["node"].as_str(), o["url"].as_str()) else {
            continue;
        };
        let Some(path) = url.strip_prefix("/api/outputs/") else {
            continue;
        };
        let id = p.comfy_id(node).to_string();
        let entry = outputs
            .entry(id.clone())
            .or_insert_with(|| json!({"images": []}));
        if let Some(images) = entry["images"].as_array_mut() {
            images.push(image_ref(path));
        }
        meta.insert(
            id.clone(),
            json!({"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id}),
        );
    }
    if run.status == RunState::Succeeded {
        for out in &p.outputs {
            if outputs.contains_key(out) {
                continue;
            }
            if let Some(images) = comfy.recall_images(&identity(&p.prompt, out)) {
                outputs.insert(out.clone(), json!({"images": images}));
                meta.insert(
                    out.clone(),
                    json!({"node_id": out, "display_node": out, "parent_node": null, "real_node_id": out}),
                );
            }
        }
    }
    let started = run.started_at.unwrap_or(run.queued_at);
    let finished = run.finished_at.unwrap_or(started);
    let cached: Vec<&str> = run
        .nodes
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v["state"] == "cached")
        .map(|(k, _)| p.comfy_id(k))
        .collect();
    let executed: Vec<&str> = run
        .nodes
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v["state"] == "ran")
        .map(|(k, _)| p.comfy_id(k))
        .collect();
    let mut messages = vec![
        json!(["execution_start", {"prompt_id": p.prompt_id, "timestamp": started}]),
        json!(["execution_cached", {"nodes": cached, "prompt_id": p.prompt_id, "timestamp": started}]),
    ];
    let success = run.status == RunState::Succeeded;
    let error_node = run
        .error
        .as_ref()
        .and_then(|e| e["node"].as_str())
        .map(|n| p.comfy_id(n).to_string());
    let node_type = error_node.as_deref().and_then(|n| p.class(n));
    match run.status {
        RunState::Succeeded => messages
            .push(json!(["execution_success", {"prompt_id": p.prompt_id, "timestamp": finished}])),
        RunState::Cancelled | RunState::Interrupted => {
            messages.push(json!(["execution_interrupted", {
            "prompt_id": p.prompt_id, "node_id": error_node, "node_type": node_type,
            "executed": executed, "timestamp": finished}]))
        }
        _ => {
            let message = run
                .error
                .as_ref()
                .map(error_text)
                .unwrap_or_else(|| format!("the run is {}", run.status));
            messages.push(json!(["execution_error", {
                "prompt_id": p.prompt_id, "node_id": error_node, "node_type": node_type,
                "executed": executed, "exception_message": message,
                "exception_type": format!("weft.{}", run.status), "traceback": [],
                "current_inputs": {}, "current_outputs": cached, "timestamp": finished}]))
        }
    }
    Some(json!({
        "prompt": p.queue_item(),
        "outputs": outputs,
        "status": {"status_str": if success { "success" } else { "error" }, "completed": success, "messages": messages},
        "meta": meta,
    }))
}

/// A run's recorded error as one message.
pub(super) fn error_text(error: &Json_) -> String {
    let mut text = error["message"].as_str().unwrap_or("").to_string();
    for d in error["diagnostics"].as_array().into_iter().flatten() {
        if let Some(m) = d["message"].as_str() {
            text.push('\n');
            text.push_str(m);
        }
    }
    text
}

pub(super) async fn history(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Json_> {
    let limit = q
        .get("max_items")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(MAXIMUM_HISTORY_SIZE)
        .min(MAXIMUM_HISTORY_SIZE);
    let mut out = Map::new();
    for p in state.comfy.newest(limit) {
        if let Ok(Some(run)) = state.store.get(p.run) {
            if let Some(entry) = history_entry(&state.comfy, &p, &run) {
                out.insert(p.prompt_id.clone(), entry);
            }
        }
    }
    Json(Json_::Object(out))
}

pub(super) async fn history_one(
    State(state): State<AppState>,
    Path(prompt_id): Path<String>,
) -> Json<Json_> {
    let mut out = Map::new();
    if let Some(p) = state.comfy.prompt_by_id(&prompt_id) {
        if let Ok(Some(run)) = state.store.get(p.run) {
            if let Some(entry) = history_entry(&state.comfy, &p, &run) {
                out.insert(prompt_id, entry);
            }
        }
    }
    Json(Json_::Object(out))
}

// ---------------------------------------------------------------------------------------------
// GET /jobs, /jobs/{id}: the frontend's queue and assets panels (ComfyUI's jobs API).

/// ComfyUI's job status for a weft run status.
fn job_status(run_status: RunState) -> &'static str {
    match run_status {
        RunState::Queued => "pending",
        RunState::Running => "in_progress",
        RunState::Succeeded => "completed",
        RunState::Cancelled | RunState::Interrupted => "cancelled",
        RunState::Failed | RunState::Invalid => "failed",
    }
}

/// A prompt's job: its status, times, first image and counts; with `detail`, its prompt and
/// every output too.
fn job(comfy: &Comfy, p: &Prompt, run: &RunRecord, detail: bool) -> Json_ {
    let status = job_status(run.status);
    let entry = history_entry(comfy, p, run);
    let outputs = entry
        .as_ref()
        .map(|e| e["outputs"].clone())
        .unwrap_or_else(|| json!({}));
    let mut count = 0;
    let mut preview = Json_::Null;
    for (node, out) in outputs.as_object().into_iter().flatten() {
        for image in out["images"].as_array().into_iter().flatten() {
            count += 1;
            if preview.is_null() {
                preview = json!({
                    "filename": image["filename"], "subfolder": image["subfolder"],
                    "type": image["type"], "nodeId": node, "mediaType": "images",
                });
            }
        }
    }
    let error = (status == "failed").then(|| {
        let node = run
            .error
            .as_ref()
            .and_then(|e| e["node"].as_str())
            .map(|n| p.comfy_id(n).to_string())
            .unwrap_or_default();
        let class = p.class(&node).unwrap_or("").to_string();
        json!({
            "prompt_id": p.prompt_id, "node_id": node, "node_type": class,
            "exception_message": run.error.as_ref().map(error_text).unwrap_or_default(),
            "exception_type": format!("weft.{}", run.status), "traceback": [],
        })
    });
    let mut job = json!({
        "id": p.prompt_id,
        "status": status,
        "create_time": run.queued_at,
        "execution_start_time": run.started_at,
        "execution_end_time": run.finished_at,
        "preview_output": preview,
        "outputs_count": count,
        "previewable_outputs_count": count,
        "execution_error": error,
        "workflow_id": p.extra_data.pointer("/extra_pnginfo/workflow/id"),
        "priority": p.run,
    });
    if detail {
        job["workflow"] = json!({"prompt": p.prompt, "extra_data": p.extra_data});
        job["outputs"] = outputs;
        job["update_time"] = json!(run.finished_at.or(run.started_at).unwrap_or(run.queued_at));
    }
    job
}

/// `GET /jobs?status=a,b&limit=&offset=`: the prompts posted here, newest first.
pub(super) async fn jobs(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Json_> {
    let wanted: Vec<&str> = q
        .get("status")
        .map(|s| s.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(200)
        .min(MAXIMUM_HISTORY_SIZE);
    let offset = q
        .get("offset")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let mut all = Vec::new();
    let prompts = state.comfy.newest(MAXIMUM_HISTORY_SIZE);
    for p in prompts.iter().rev() {
        let Ok(Some(run)) = state.store.get(p.run) else {
            continue;
        };
        if wanted.is_empty() || wanted.contains(&job_status(run.status)) {
            all.push((p, run));
        }
    }
    let total = all.len();
    let page: Vec<Json_> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(p, run)| job(&state.comfy, p, run, false))
        .collect();
    let has_more = offset + page.len() < total;
    Json(json!({
        "jobs": page,
        "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": has_more},
    }))
}

/// `GET /jobs/{id}`.
pub(super) async fn job_one(
    State(state): State<AppState>,
    Path(prompt_id): Path<String>,
) -> Response {
    let Some(p) = state.comfy.prompt_by_id(&prompt_id) else {
        return (StatusCode::NOT_FOUND, "no such job").into_response();
    };
    match state.store.get(p.run) {
        Ok(Some(run)) => Json(job(&state.comfy, &p, &run, true)).into_response(),
        _ => (StatusCode::NOT_FOUND, "no such job").into_response(),
    }
}

/// `POST /jobs/{id}/cancel`: a queued prompt leaves the queue, a running one is stopped.
pub(super) async fn job_cancel(
    State(state): State<AppState>,
    Path(prompt_id): Path<String>,
) -> StatusCode {
    let Some(p) = state.comfy.prompt_by_id(&prompt_id) else {
        return StatusCode::NOT_FOUND;
    };
    if state.queue.running() == Some(p.run) {
        state.queue.cancel_running(p.run);
    } else if state.store.delete_queued(p.run).unwrap_or(false) {
        state.queue.forget(p.run);
        if let Ok(mut live) = state.comfy.live.lock() {
            live.remove(&p.run);
        }
        state.queue.changed();
    }
    StatusCode::OK
}
