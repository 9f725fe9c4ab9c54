//! `POST /prompt` (import, validate, queue on weft's run store) and `GET /prompt`.
use super::*;

/// `--comfy-model` for the checkpoints of this prompt: exact names, then `*` for names that
/// are not under the models folder (`checkpoints/NAME`, or NAME itself).
pub(super) fn model_options(
    state: &AppState,
    prompt: &Map<String, Json_>,
) -> Vec<(String, String)> {
    let models = &state.comfy.models;
    let mut out: Vec<(String, String)> = models.iter().filter(|(c, _)| c != "*").cloned().collect();
    let Some((_, fallback)) = models.iter().find(|(c, _)| c == "*") else {
        return out;
    };
    for node in prompt.values() {
        if node.get("class_type").and_then(Json_::as_str) != Some("CheckpointLoaderSimple") {
            continue;
        }
        let Some(name) = node["inputs"].get("ckpt_name").and_then(Json_::as_str) else {
            continue;
        };
        if out.iter().any(|(c, _)| c == name) {
            continue;
        }
        let models = &state.roots.models;
        let present = models.find(&format!("{CHECKPOINT_DIR}{name}")).is_some()
            || models.find(name).is_some();
        if !present {
            out.push((name.to_string(), fallback.clone()));
        }
    }
    out
}

pub(super) async fn post_prompt(
    State(state): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // axum's own refusal (a body over the limit) is plain text; ComfyUI's clients read JSON.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let details = format!(
                "{}; the largest prompt this server takes is {} bytes",
                rejection.body_text(),
                state.config.body_limit
            );
            let (kind, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                ("prompt_too_large", "Prompt too large")
            } else {
                ("invalid_prompt", "Invalid prompt")
            };
            let mut response = refused(error_obj(kind, message, &details, json!({})), json!({}));
            *response.status_mut() = status;
            return response;
        }
    };
    let body: Json_ = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            let m = format!("the body is not JSON: {e}");
            return refused(
                error_obj("invalid_prompt", "Invalid prompt", &m, json!({})),
                json!({}),
            );
        }
    };
    let Some(prompt) = body.get("prompt").and_then(Json_::as_object) else {
        return refused(
            error_obj(
                "no_prompt",
                "No prompt provided",
                "No prompt provided",
                json!({}),
            ),
            json!({}),
        );
    };
    // Importing and validating the prompt is CPU work: off the async threads, with a deadline.
    let (submitting, prompt) = (state.clone(), prompt.clone());
    let submitted =
        crate::server::checking::off_runtime_gated(&state, "validating the prompt", move |gate| {
            submit(&submitting, &prompt, &body, gate)
        })
        .await;
    match submitted {
        Ok(response) => response,
        Err(crate::server::error::ApiError::DeadlineExceeded(why)) => refused(
            error_obj(
                "deadline_exceeded",
                "Prompt took too long to check",
                &why,
                json!({}),
            ),
            json!({}),
        ),
        Err(e) => internal(&format!("checking a prompt: {e:?}")),
    }
}

/// Checks and queues a prompt; `gate` says whether its client still waits for the queueing.
pub(super) fn submit(
    state: &AppState,
    prompt: &Map<String, Json_>,
    body: &Json_,
    gate: &crate::server::checking::Gate,
) -> Response {
    // Node types first, as ComfyUI: one it does not know refuses the prompt.
    let mut missing = Map::new();
    let mut first = None;
    for (id, node) in prompt {
        let title = node
            .get("_meta")
            .and_then(|m| m.get("title"))
            .and_then(Json_::as_str);
        let Some(class) = node.get("class_type").and_then(Json_::as_str) else {
            let e = error_obj(
                "missing_node_type",
                &format!(
                    "Node '{}' has no class_type. The workflow may be corrupted or a custom node is missing.",
                    title.map_or_else(|| format!("ID #{id}"), str::to_string)
                ),
                &format!("Node ID '#{id}'"),
                json!({"node_id": id, "class_type": null, "node_title": title}),
            );
            return refused(e, json!({}));
        };
        if comfy_type(class).is_none() && !VALUE_TYPES.contains(&class) {
            let e = error_obj(
                "missing_node_type",
                &format!(
                    "Node '{}' not found. weft does not import the ComfyUI node type {class}.",
                    title.unwrap_or(class)
                ),
                &format!("Node ID '#{id}'"),
                json!({"node_id": id, "class_type": class, "node_title": title.unwrap_or(class)}),
            );
            missing.insert(
                id.clone(),
                json!({"errors": [e.clone()], "dependent_outputs": [], "class_type": class}),
            );
            first.get_or_insert(e);
        }
    }
    if let Some(e) = first {
        return refused(e, Json_::Object(missing));
    }
    let outputs: Vec<String> = prompt
        .iter()
        .filter(|(_, n)| {
            comfy_type(n["class_type"].as_str().unwrap_or("")).is_some_and(|t| t.output_node)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if outputs.is_empty() {
        return refused(
            error_obj("prompt_no_outputs", "Prompt has no outputs", "", json!({})),
            json!({}),
        );
    }
    let mut errors = NodeErrors::new(prompt, &outputs);
    let options = ImportOptions {
        models: model_options(state, prompt),
        inputs_dir: state.inputs_ref.to_string_lossy().into_owned(),
        ..ImportOptions::default()
    };
    let imported = match import(&Json_::Object(prompt.clone()), &options) {
        Ok(i) => i,
        Err(issues) => {
            for issue in &issues {
                errors.issue(issue);
            }
            return errors.refuse();
        }
    };
    let comfy_of: HashMap<&str, &str> = imported
        .ids
        .iter()
        .map(|(c, w)| (w.as_str(), c.as_str()))
        .collect();
    let diagnostics = crate::server::runs::check(state, &imported.workflow, None);
    if !diagnostics.is_empty() {
        for d in &diagnostics {
            errors.diagnostic(d, &comfy_of);
        }
        return errors.refuse();
    }
    let client_id = body
        .get("client_id")
        .and_then(Json_::as_str)
        .map(str::to_string);
    let mut extra_data = body
        .get("extra_data")
        .filter(|e| e.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(c) = &client_id {
        extra_data["client_id"] = json!(c);
    }
    let prompt_id = match body.get("prompt_id").and_then(Json_::as_str) {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => uuid4(),
    };
    let comfy = &state.comfy;
    // The translator looks prompts up under this lock: it cannot see the run start before the
    // prompt is in `live`.
    let Ok(mut live) = comfy.live.lock() else {
        return internal("the prompt table lock is poisoned");
    };
    let used = |prompt_id: &str| {
        refused(
            error_obj(
                "invalid_prompt",
                "Invalid prompt",
                &format!("prompt_id '{prompt_id}' is already used"),
                json!({}),
            ),
            json!({}),
        )
    };
    if comfy.prompt_by_id(&prompt_id).is_some() {
        return used(&prompt_id);
    }
    // Its client was told the check ran out of time: nothing may be queued now.
    if !gate.commit() {
        return internal("a prompt checked past its deadline was not queued");
    }
    let mut record = Prompt {
        run: 0,
        prompt_id: prompt_id.clone(),
        client_id,
        prompt: Json_::Object(prompt.clone()),
        extra_data,
        ids: imported.ids,
        outputs,
    };
    let origin = crate::server::runs::Origin::Comfy(&record);
    // ComfyUI's "Queue Front" (Ctrl+Shift+Enter) posts `front: true`.
    let front = body.get("front").and_then(Json_::as_bool).unwrap_or(false);
    let run = match crate::server::runs::submit(state, imported.workflow, origin, front) {
        Ok(run) => run,
        // Posted meanwhile by another server on the same store.
        Err(StoreError::DuplicatePromptId(_)) => return used(&prompt_id),
        Err(e) => return internal(&e.to_string()),
    };
    record.run = run;
    live.insert(run, Arc::new(record));
    drop(live);
    Json(json!({"prompt_id": prompt_id, "number": run, "node_errors": {}})).into_response()
}

pub(super) fn queue_remaining(store: &dyn RunStore, queue: &Queue) -> usize {
    store.queued(0).map_or(0, |(_, n)| n) + usize::from(queue.running().is_some())
}

pub(super) fn exec_info(state: &AppState) -> Json_ {
    json!({"exec_info": {"queue_remaining": queue_remaining(&*state.store, &state.queue)}})
}

pub(super) async fn get_prompt(State(state): State<AppState>) -> Json<Json_> {
    Json(exec_info(&state))
}
