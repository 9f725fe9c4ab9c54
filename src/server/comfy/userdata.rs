//! ComfyUI's user files (`/userdata`, `/v2/userdata`) for its frontend: one user, whose files
//! live in the data folder (`data/comfyui/user/`), except its `workflows/` folder, which is
//! weft's workflows folder. A workflow the frontend saves (`workflows/NAME.json`, UI format)
//! is imported and written as `NAME.yaml`; opening one exports the YAML back to UI format. The
//! UI file saved is kept beside (in the user folder) with the revision of the YAML it became,
//! and is given back as it was while that YAML is unchanged: groups, notes, colours and widget
//! states survive the round trip unless the YAML was edited since.
use std::path::{Path as FsPath, PathBuf};
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use std::collections::HashMap;

use super::files::plain_part;
use crate::comfy::import::{import, ImportOptions};
use crate::server::workflows::{revision, EXTENSION};
use crate::server::AppState;

/// The frontend's workflows folder in its user folder.
const WORKFLOWS: &str = "workflows";

/// The user folder (ComfyUI's `user/default`).
pub(super) fn user_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("comfyui").join("user")
}

/// Writes a file whole (creating its folder), replacing any before it.
pub(super) fn write_atomic(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::server::paths::write_atomic(path, bytes)
}

fn refuse(code: StatusCode, why: &str) -> Response {
    (code, why.to_string()).into_response()
}

/// A user path from a client (`a/b.json`), as plain parts; `None` for anything else.
fn parts(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    (!parts.is_empty() && parts.iter().all(|p| plain_part(p))).then_some(parts)
}

/// A workflow file of the frontend (`workflows/NAME.json`): NAME, when it is one weft keeps as
/// YAML (a plain name directly in the folder).
fn workflow_name(parts: &[&str]) -> Option<String> {
    match parts {
        [WORKFLOWS, file] => file
            .strip_suffix(".json")
            .filter(|n| crate::server::paths::check_name(n, "workflow name").is_ok())
            .map(str::to_string),
        _ => None,
    }
}

fn yaml_path(state: &AppState, name: &str) -> PathBuf {
    state.roots.workflows.join(format!("{name}.{EXTENSION}"))
}

/// The UI file saved beside a YAML workflow, with the YAML's revision when it was written.
fn kept_path(state: &AppState, name: &str) -> PathBuf {
    user_dir(state).join(WORKFLOWS).join(format!("{name}.json"))
}

fn kept_revision_path(state: &AppState, name: &str) -> PathBuf {
    user_dir(state)
        .join(WORKFLOWS)
        .join(format!(".{name}.json.revision"))
}

fn modified_secs(path: &FsPath) -> f64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn info(rel: &str, path: &FsPath) -> Json_ {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    json!({"path": rel, "size": size, "modified": modified_secs(path)})
}

/// Files under `dir` (relative paths with `/`), recursing when asked; hidden ones left out.
fn walk(dir: &FsPath, recurse: bool) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                if recurse {
                    stack.push((path, format!("{prefix}{name}/")));
                }
            } else {
                out.push((format!("{prefix}{name}"), path));
            }
        }
    }
    out.sort();
    out
}

/// Whether a YAML workflow has a UI form (its node types all have ComfyUI classes).
fn has_ui_form(state: &AppState, path: &FsPath) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let Ok(workflow) = weft_engine::Workflow::parse(&bytes) else {
        return false;
    };
    let inputs = state.inputs_ref.to_string_lossy().into_owned();
    crate::comfy::ui::export_ui(&workflow, &state.registry, &inputs).is_ok()
}

/// The frontend's workflows: each YAML workflow with a UI form as NAME.json, and UI files
/// kept that have no YAML (ones the importer refused).
fn workflow_files(state: &AppState) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (rel, path) in walk(&state.roots.workflows, false) {
        if let Some(name) = rel.strip_suffix(&format!(".{EXTENSION}")) {
            if has_ui_form(state, &path) {
                out.push((format!("{name}.json"), path));
            }
        }
    }
    for (rel, path) in walk(&user_dir(state).join(WORKFLOWS), true) {
        if rel.ends_with(".json") && !out.iter().any(|(r, _)| r == &rel) {
            out.push((rel, path));
        }
    }
    out.sort();
    out
}

/// `GET /userdata?dir=D&recurse=&full_info=&split=`: the files of a user folder, relative to it.
pub(super) async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(dir) = q.get("dir").and_then(|d| parts(d)) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "dir must be a folder of the user's",
        );
    };
    let recurse = q.get("recurse").is_some_and(|v| v == "true");
    let full_info = q.get("full_info").is_some_and(|v| v == "true");
    let split = q.get("split").is_some_and(|v| v == "true");
    let files = if dir == [WORKFLOWS] {
        workflow_files(&state)
    } else {
        let folder = dir.iter().fold(user_dir(&state), |p, part| p.join(part));
        if !folder.is_dir() {
            return refuse(StatusCode::NOT_FOUND, "no such folder");
        }
        walk(&folder, recurse)
    };
    let listed: Vec<Json_> = files
        .iter()
        .map(|(rel, path)| {
            if full_info {
                info(rel, path)
            } else if split {
                let mut v = vec![json!(rel)];
                v.extend(rel.split('/').map(|p| json!(p)));
                json!(v)
            } else {
                json!(rel)
            }
        })
        .collect();
    Json(json!(listed)).into_response()
}

/// `GET /v2/userdata?path=D`: the entries of one folder, with their kinds.
pub(super) async fn list_v2(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = q.get("path").map_or("", String::as_str);
    let dir: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if dir.iter().any(|p| !plain_part(p)) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "path must be a folder of the user's",
        );
    }
    let entry = |name: &str, full: &FsPath, is_dir: bool| {
        let rel = if path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", dir.join("/"))
        };
        let mut e =
            json!({"name": name, "path": rel, "type": if is_dir { "directory" } else { "file" }});
        if !is_dir {
            e["size"] = json!(std::fs::metadata(full).map_or(0, |m| m.len()));
            e["modified"] = json!(modified_secs(full));
        }
        e
    };
    let mut out = Vec::new();
    if dir == [WORKFLOWS] {
        for (rel, full) in workflow_files(&state) {
            out.push(entry(&rel, &full, false));
        }
    } else {
        let folder = dir.iter().fold(user_dir(&state), |p, part| p.join(part));
        for e in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !name.starts_with('.') {
                let full = e.path();
                out.push(entry(&name, &full, full.is_dir()));
            }
        }
        if dir.is_empty() && !out.iter().any(|e| e["name"] == WORKFLOWS) {
            out.push(json!({"name": WORKFLOWS, "path": WORKFLOWS, "type": "directory"}));
        }
    }
    Json(json!(out)).into_response()
}

/// The UI-format JSON of YAML workflow `name`: the UI file kept for it while the YAML is the
/// one it became, else the YAML exported to UI format.
fn workflow_json(state: &AppState, name: &str) -> Result<Vec<u8>, Response> {
    // The YAML and the revision of the UI file kept for it are read as one: a save writes both
    // under this lock, and a read between the two writes would export the new YAML instead of
    // giving back the file just saved (the frontend would see its own save as an edit).
    let (yaml, kept_for) = {
        let _guard = state.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let yaml = std::fs::read(yaml_path(state, name));
        let kept_for = std::fs::read_to_string(kept_revision_path(state, name));
        (yaml, kept_for.unwrap_or_default())
    };
    let yaml = match yaml {
        Ok(bytes) => bytes,
        Err(_) => {
            return std::fs::read(kept_path(state, name))
                .map_err(|_| refuse(StatusCode::NOT_FOUND, "no such workflow"))
        }
    };
    if kept_for.trim() == revision(&yaml) {
        if let Ok(kept) = std::fs::read(kept_path(state, name)) {
            return Ok(kept);
        }
    }
    let workflow = weft_engine::Workflow::parse(&yaml).map_err(|d| {
        let text: Vec<String> = d
            .iter()
            .map(|d| d.render(&format!("{name}.yaml")))
            .collect();
        refuse(StatusCode::UNPROCESSABLE_ENTITY, &text.join("\n"))
    })?;
    let inputs = state.inputs_ref.to_string_lossy().into_owned();
    match crate::comfy::ui::export_ui(&workflow, &state.registry, &inputs) {
        Ok(ui) => Ok(serde_json::to_vec(&ui).unwrap_or_default()),
        Err(issues) => {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "{name}.yaml has no ComfyUI form: {}; open it in weft's editor",
                    text.join("; ")
                ),
            ))
        }
    }
}

/// `GET /userdata/{file}`.
pub(super) async fn get(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let Some(parts) = parts(&file) else {
        return refuse(StatusCode::BAD_REQUEST, "not a user file name");
    };
    let bytes = if let Some(name) = workflow_name(&parts) {
        match workflow_json(&state, &name) {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        let path = parts.iter().fold(user_dir(&state), |p, part| p.join(part));
        match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) => return refuse(StatusCode::NOT_FOUND, "no such file"),
        }
    };
    let ty = if file.ends_with(".json") {
        "application/json"
    } else if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    ([(CONTENT_TYPE, ty)], bytes).into_response()
}

/// Imports a UI-format workflow the frontend saved and writes it as `NAME.yaml`, keeping the
/// UI file beside it. A workflow the importer refuses (node types weft lacks) is kept as the
/// UI file only, as ComfyUI would keep it; the reason goes to the log.
fn save_workflow(state: &AppState, name: &str, body: &[u8]) -> Result<(), String> {
    let ui: Json_ = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let kept = kept_path(state, name);
    write_atomic(&kept, body).map_err(|e| format!("writing {}: {e}", kept.display()))?;
    let options = ImportOptions {
        models: state.comfy.models.clone(),
        inputs_dir: state.inputs_ref.to_string_lossy().into_owned(),
        ..ImportOptions::default()
    };
    let imported = match import(&ui, &options) {
        Ok(i) => i,
        Err(issues) => {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            eprintln!(
                "weft serve: ComfyUI workflow {name}.json kept as it is, not as {name}.yaml: {}",
                text.join("; ")
            );
            let _ = std::fs::remove_file(kept_revision_path(state, name));
            return Ok(());
        }
    };
    let yaml = imported.workflow.to_yaml();
    let _guard = state.write_lock.lock().map_err(|_| "write lock poisoned")?;
    let path = yaml_path(state, name);
    write_atomic(&path, yaml.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let rev = kept_revision_path(state, name);
    write_atomic(&rev, revision(yaml.as_bytes()).as_bytes())
        .map_err(|e| format!("writing {}: {e}", rev.display()))
}

/// `POST /userdata/{file}?overwrite=&full_info=`: the body is the file.
pub(super) async fn post(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(parts) = parts(&file) else {
        return refuse(StatusCode::BAD_REQUEST, "not a user file name");
    };
    let overwrite = q.get("overwrite").is_none_or(|v| v != "false");
    let full_info = q.get("full_info").is_some_and(|v| v == "true");
    let rel = parts.join("/");
    let written = if let Some(name) = workflow_name(&parts) {
        if !overwrite && (yaml_path(&state, &name).exists() || kept_path(&state, &name).exists()) {
            return refuse(StatusCode::CONFLICT, "the file exists");
        }
        let saving = state.clone();
        let saved = tokio::task::spawn_blocking(move || save_workflow(&saving, &name, &body)).await;
        match saved {
            Ok(Ok(())) => kept_path(&state, &workflow_name(&parts).unwrap_or_default()),
            Ok(Err(e)) => return refuse(StatusCode::BAD_REQUEST, &e),
            Err(e) => return super::errors::internal(&e.to_string()),
        }
    } else {
        let path = parts.iter().fold(user_dir(&state), |p, part| p.join(part));
        if !overwrite && path.exists() {
            return refuse(StatusCode::CONFLICT, "the file exists");
        }
        if let Err(e) = write_atomic(&path, &body) {
            return super::errors::internal(&format!("writing {}: {e}", path.display()));
        }
        path
    };
    let rel_in_dir = rel.clone();
    if full_info {
        let shown = rel_in_dir
            .strip_prefix(&format!("{}/", parts[0]))
            .unwrap_or(&rel_in_dir)
            .to_string();
        Json(info(&shown, &written)).into_response()
    } else {
        Json(json!(rel)).into_response()
    }
}

/// `DELETE /userdata/{file}`.
pub(super) async fn delete(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let Some(parts) = parts(&file) else {
        return refuse(StatusCode::BAD_REQUEST, "not a user file name");
    };
    if let Some(name) = workflow_name(&parts) {
        let yaml = std::fs::remove_file(yaml_path(&state, &name)).is_ok();
        let kept = std::fs::remove_file(kept_path(&state, &name)).is_ok();
        let _ = std::fs::remove_file(kept_revision_path(&state, &name));
        return if yaml || kept {
            StatusCode::NO_CONTENT.into_response()
        } else {
            refuse(StatusCode::NOT_FOUND, "no such workflow")
        };
    }
    let path = parts.iter().fold(user_dir(&state), |p, part| p.join(part));
    match std::fs::remove_file(&path) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => refuse(StatusCode::NOT_FOUND, "no such file"),
    }
}

/// `POST /userdata/{file}/move/{dest}?overwrite=`.
pub(super) async fn move_file(
    State(state): State<AppState>,
    Path((file, dest)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(from), Some(to)) = (parts(&file), parts(&dest)) else {
        return refuse(StatusCode::BAD_REQUEST, "not a user file name");
    };
    let overwrite = q.get("overwrite").is_some_and(|v| v == "true");
    let moves: Vec<(PathBuf, PathBuf)> = match (workflow_name(&from), workflow_name(&to)) {
        (Some(a), Some(b)) => vec![
            (yaml_path(&state, &a), yaml_path(&state, &b)),
            (kept_path(&state, &a), kept_path(&state, &b)),
            (
                kept_revision_path(&state, &a),
                kept_revision_path(&state, &b),
            ),
        ],
        (None, None) => vec![(
            from.iter().fold(user_dir(&state), |p, part| p.join(part)),
            to.iter().fold(user_dir(&state), |p, part| p.join(part)),
        )],
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "a workflow moves within the workflows folder",
            )
        }
    };
    if !moves[0].0.exists() && !moves.get(1).is_some_and(|m| m.0.exists()) {
        return refuse(StatusCode::NOT_FOUND, "no such file");
    }
    if !overwrite && moves.iter().take(2).any(|(_, b)| b.exists()) {
        return refuse(StatusCode::CONFLICT, "the destination exists");
    }
    for (a, b) in &moves {
        if a.exists() {
            if let Some(dir) = b.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::rename(a, b) {
                return super::errors::internal(&format!("moving {}: {e}", a.display()));
            }
        }
    }
    let path = to.join("/");
    let written = if workflow_name(&to).is_some() && !moves[0].1.exists() {
        moves[1].1.clone()
    } else {
        moves[0].1.clone()
    };
    Json(info(&path, &written)).into_response()
}
