//! ComfyUI's own frontend on weft, at `/comfy/`: the static files of PyPI's
//! `comfyui-frontend-package` (found at start-up, never vendored), and the routes it calls
//! beyond the API scripts use (settings and users, user files, i18n, templates, the model
//! library, embeddings, features, jobs, `/free`, `/view_metadata`, `/upload/mask`). The
//! frontend takes its API base from its own path, so it calls `/comfy/api/...` and opens
//! `/comfy/ws`: weft's own `/api` and `/ws` stay as they are beside it.
use std::path::{Path as FsPath, PathBuf};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, X_CONTENT_TYPE_OPTIONS};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Map, Value as Json_};
use std::collections::HashMap;

use super::errors::internal;
use super::files::plain_part;
use super::userdata;
use crate::server::AppState;

/// Where the frontend package puts its static files, below a Python environment.
const PACKAGE_STATIC: &str = "comfyui_frontend_package/static";

/// The frontend's static folder: `explicit` (`--comfy-frontend`), else `WEFT_COMFY_FRONTEND`,
/// else the package in a `.venv` (set-up's) in the working folder or above the executable
/// (target/release/weft finds the repository's). `None` when none holds an index.html.
pub fn locate(explicit: Option<&FsPath>) -> Result<Option<PathBuf>, String> {
    let has_index = |dir: &FsPath| dir.join("index.html").is_file();
    if let Some(dir) = explicit {
        return if has_index(dir) {
            Ok(Some(dir.to_path_buf()))
        } else {
            Err(format!(
                "--comfy-frontend {}: no index.html there (give the package's static folder, \
                 .../site-packages/{PACKAGE_STATIC})",
                dir.display()
            ))
        };
    }
    if let Some(dir) = std::env::var_os("WEFT_COMFY_FRONTEND") {
        let dir = PathBuf::from(dir);
        return if has_index(&dir) {
            Ok(Some(dir))
        } else {
            Err(format!(
                "WEFT_COMFY_FRONTEND={}: no index.html there",
                dir.display()
            ))
        };
    }
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        bases.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(exe.ancestors().skip(1).map(FsPath::to_path_buf));
    }
    for base in bases {
        let lib = base.join(".venv").join("lib");
        let Ok(pythons) = std::fs::read_dir(&lib) else {
            continue;
        };
        let mut found: Vec<PathBuf> = pythons
            .flatten()
            .map(|p| p.path().join("site-packages").join(PACKAGE_STATIC))
            .filter(|d| has_index(d))
            .collect();
        found.sort();
        if let Some(dir) = found.pop() {
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, why.to_string()).into_response()
}

/// `/comfy` itself: the frontend computes its API base from the path, so it must end in `/`.
pub(super) async fn redirect() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/comfy/")]).into_response()
}

/// A static file of the package (index.html for `/comfy/`).
pub(super) async fn asset(State(state): State<AppState>, uri: Uri) -> Response {
    let Some(root) = state.config.comfy_frontend.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            "ComfyUI's frontend is not installed: run scripts/setup.sh (it installs PyPI's \
             comfyui-frontend-package into .venv), or start weft serve with --comfy-frontend \
             DIR (the package's static folder)",
        )
            .into_response();
    };
    let rest = uri.path().strip_prefix("/comfy/").unwrap_or("");
    let rest = if rest.is_empty() { "index.html" } else { rest };
    // The stylesheet ComfyUI serves from its user folder when one was saved: none here.
    if rest == "user.css" {
        return ([(CONTENT_TYPE, "text/css; charset=utf-8")], "").into_response();
    }
    let mut path = root.clone();
    for part in rest.split('/') {
        if !plain_part(part) {
            return not_found("no such file");
        }
        path.push(part);
    }
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(_) => return not_found("no such file"),
    };
    // Hashed assets never change; index.html and the rest are checked again.
    let cache = if rest.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (CONTENT_TYPE, mime(rest)),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response()
}

/// weft's own extension: the open workflow follows its YAML edited on disk (follow_yaml.js).
pub(super) const FOLLOW_YAML_EXTENSION: &str = "/extensions/weft/follow_yaml.js";

/// `/comfy/extensions/weft/follow_yaml.js`, compiled into weft.
pub(super) async fn follow_yaml_extension() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (CACHE_CONTROL, "no-cache"),
        ],
        include_str!("follow_yaml.js"),
    )
        .into_response()
}

/// The JavaScript files ComfyUI lists for the frontend to load: those under the package's
/// `extensions/` (ComfyUI lists its web root's the same way), and weft's own.
pub(super) async fn extensions(State(state): State<AppState>) -> Json<Json_> {
    let mut found = vec![FOLLOW_YAML_EXTENSION.to_string()];
    if let Some(root) = &state.config.comfy_frontend {
        let mut stack = vec![root.join("extensions")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "js") {
                    if let Ok(rel) = path.strip_prefix(root) {
                        found.push(format!("/{}", rel.to_string_lossy()));
                    }
                }
            }
        }
    }
    found.sort();
    Json(json!(found))
}

// ---------------------------------------------------------------------------------------------
// Settings and users: one user, its settings in the data folder.

fn settings_path(state: &AppState) -> PathBuf {
    userdata::user_dir(state).join("comfy.settings.json")
}

fn read_settings(state: &AppState) -> Map<String, Json_> {
    std::fs::read(settings_path(state))
        .ok()
        .and_then(|b| serde_json::from_slice::<Json_>(&b).ok())
        .and_then(|v| match v {
            Json_::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

fn write_settings(state: &AppState, settings: &Map<String, Json_>) -> Response {
    let path = settings_path(state);
    let text = serde_json::to_vec_pretty(settings).unwrap_or_default();
    match userdata::write_atomic(&path, &text) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => super::errors::internal(&format!("writing {}: {e}", path.display())),
    }
}

/// ComfyUI in single-user mode: settings kept on the server, nothing to migrate.
pub(super) async fn users() -> Json<Json_> {
    Json(json!({"storage": "server", "migrated": true}))
}

pub(super) async fn get_settings(State(state): State<AppState>) -> Json<Json_> {
    Json(Json_::Object(read_settings(&state)))
}

/// Merges the posted settings into the stored ones.
pub(super) async fn post_settings(State(state): State<AppState>, body: Bytes) -> Response {
    let Ok(Json_::Object(posted)) = serde_json::from_slice::<Json_>(&body) else {
        return (StatusCode::BAD_REQUEST, "settings are a JSON object").into_response();
    };
    let _lock = state.comfy.settings_lock.lock().await;
    let mut settings = read_settings(&state);
    settings.extend(posted);
    write_settings(&state, &settings)
}

pub(super) async fn get_setting(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Json<Json_> {
    Json(read_settings(&state).remove(&id).unwrap_or(Json_::Null))
}

pub(super) async fn post_setting(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(value) = serde_json::from_slice::<Json_>(&body) else {
        return (StatusCode::BAD_REQUEST, "a setting's value is JSON").into_response();
    };
    let _lock = state.comfy.settings_lock.lock().await;
    let mut settings = read_settings(&state);
    settings.insert(id, value);
    write_settings(&state, &settings)
}

// ---------------------------------------------------------------------------------------------
// What weft has none of, answered as ComfyUI answers when it has none.

/// Translations of node names: the frontend's own English is all there is.
pub(super) async fn i18n() -> Json<Json_> {
    Json(json!({}))
}

pub(super) async fn empty_object() -> Json<Json_> {
    Json(json!({}))
}

pub(super) async fn empty_list() -> Json<Json_> {
    Json(json!([]))
}

/// The server's feature flags, as ComfyUI sends them (also on the socket).
pub(super) fn feature_flags(state: &AppState) -> Json_ {
    json!({
        "supports_preview_metadata": false,
        "max_upload_size": state.config.upload_limit,
    })
}

pub(super) async fn features(State(state): State<AppState>) -> Json<Json_> {
    Json(feature_flags(&state))
}

/// ComfyUI's "unload models" / "free memory": either empties the device worker's in-memory
/// cache (the loaded models with the rest; the disk tier stays) once the run in progress ends,
/// so the next run loads its models again. A body asking for neither does nothing, as in
/// ComfyUI; a body that is not JSON is read as asking for neither.
pub(super) async fn free(State(state): State<AppState>, body: Bytes) -> StatusCode {
    let asked: Json_ = serde_json::from_slice(&body).unwrap_or(Json_::Null);
    let wants = |key: &str| asked.get(key).and_then(Json_::as_bool).unwrap_or(false);
    if (wants("unload_models") || wants("free_memory")) && !state.queue.free_memory() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

/// A model file's safetensors metadata (`__metadata__`), for the model library's details.
pub(super) async fn view_metadata(
    State(state): State<AppState>,
    Path(folder): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = q.get("filename") else {
        return not_found("no filename");
    };
    if !name.ends_with(".safetensors") || name.split('/').any(|p| !plain_part(p)) {
        return not_found("not a safetensors file");
    }
    let Some(path) = models_in(&state, &folder)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p)
    else {
        return not_found("no such model");
    };
    let header = tokio::task::spawn_blocking(move || safetensors_metadata(&path)).await;
    match header {
        Ok(Some(meta)) => Json(meta).into_response(),
        _ => not_found("no metadata"),
    }
}

/// The `__metadata__` of a safetensors header (the header is read, not the tensors).
fn safetensors_metadata(path: &FsPath) -> Option<Json_> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).ok()?;
    let header: Json_ = serde_json::from_slice(&header).ok()?;
    header.get("__metadata__").cloned()
}

// ---------------------------------------------------------------------------------------------
// The model library: weft's models folders as ComfyUI's folder kinds.

/// The ComfyUI folder kinds the library lists, and the extensions of their files.
const MODEL_FOLDERS: [&str; 3] = ["checkpoints", "upscale_models", "loras"];
const MODEL_EXTENSIONS: [&str; 6] = [".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"];

/// The model files of ComfyUI folder kind `kind` (name relative to it, path), each name once,
/// the first models folder winning; checkpoints also list the `--comfy-model` names.
pub(super) fn models_in(state: &AppState, kind: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for folder in state.roots.models.folders() {
        let dir = match folder.kind.as_deref() {
            None => folder.dir.join(kind),
            Some(k) if k == kind => folder.dir.clone(),
            Some(_) => continue,
        };
        let mut stack = vec![(dir.clone(), String::new())];
        while let Some((d, prefix)) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let rel = format!("{prefix}{name}");
                if path.is_dir() {
                    stack.push((path, format!("{rel}/")));
                } else if MODEL_EXTENSIONS
                    .iter()
                    .any(|x| name.to_ascii_lowercase().ends_with(x))
                    && !out.iter().any(|(n, _)| n == &rel)
                {
                    out.push((rel, path));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `GET /models`: the folder kinds.
pub(super) async fn model_kinds() -> Json<Json_> {
    Json(json!(MODEL_FOLDERS))
}

/// `GET /models/{folder}`: the file names (with the `--comfy-model` names for checkpoints).
pub(super) async fn model_names(
    State(state): State<AppState>,
    Path(folder): Path<String>,
) -> Response {
    if !MODEL_FOLDERS.contains(&folder.as_str()) {
        return not_found("no such model folder");
    }
    let mut names: Vec<String> = models_in(&state, &folder)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if folder == "checkpoints" {
        for name in state.comfy.checkpoint_names() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Json(json!(names)).into_response()
}

/// The folders a ComfyUI folder kind is read from, in lookup order.
fn folders_of(state: &AppState, kind: &str) -> Vec<String> {
    state
        .roots
        .models
        .folders()
        .iter()
        .filter_map(|f| match f.kind.as_deref() {
            None => Some(f.dir.join(kind)),
            Some(k) if k == kind => Some(f.dir.clone()),
            Some(_) => None,
        })
        .map(|d| d.to_string_lossy().into_owned())
        .collect()
}

/// `GET /experiment/models`: the folder kinds with the folders they are read from.
pub(super) async fn experiment_models(State(state): State<AppState>) -> Json<Json_> {
    let folders: Vec<Json_> = MODEL_FOLDERS
        .iter()
        .map(|kind| json!({"name": kind, "folders": folders_of(&state, kind)}))
        .collect();
    Json(json!(folders))
}

/// `GET /experiment/models/{folder}`: `[{name, pathIndex}]`.
pub(super) async fn experiment_model_files(
    State(state): State<AppState>,
    Path(folder): Path<String>,
) -> Response {
    if !MODEL_FOLDERS.contains(&folder.as_str()) {
        return not_found("no such model folder");
    }
    let files: Vec<Json_> = models_in(&state, &folder)
        .into_iter()
        .map(|(name, _)| json!({"name": name, "pathIndex": 0}))
        .collect();
    Json(json!(files)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Templates: weft's workflows that have a ComfyUI form.

/// The workflows folder's YAML workflows that export to ComfyUI's UI format, by name.
fn templates(state: &AppState) -> Vec<(String, Json_)> {
    let mut names: Vec<String> = std::fs::read_dir(&state.roots.workflows)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|n| n.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    let inputs = state.inputs_ref.to_string_lossy().into_owned();
    names
        .into_iter()
        .filter_map(|name| {
            let bytes = std::fs::read(state.roots.workflows.join(format!("{name}.yaml"))).ok()?;
            let wf = weft_engine::Workflow::parse(&bytes).ok()?;
            let ui = crate::comfy::ui::export_ui(&wf, &state.registry, &inputs).ok()?;
            Some((name, ui))
        })
        .collect()
}

/// `/templates/index.json` (the workflow-templates package's index): one category, weft's.
pub(super) async fn templates_index(State(state): State<AppState>) -> Json<Json_> {
    let list: Vec<Json_> = templates(&state)
        .into_iter()
        .map(|(name, _)| {
            json!({
                "name": name, "title": name, "description": format!("weft's workflows/{name}.yaml"),
                "mediaType": "image", "mediaSubtype": "webp",
            })
        })
        .collect();
    Json(json!([{
        "moduleName": "default", "title": "weft", "category": "weft", "type": "image",
        "templates": list,
    }]))
}

/// `/templates/NAME.json`: that workflow in UI format.
pub(super) async fn template(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    // The logos of template providers: weft has none.
    if file == "index_logo.json" {
        return Json(json!({})).into_response();
    }
    let Some(name) = file.strip_suffix(".json") else {
        return not_found("no such template");
    };
    match templates(&state).into_iter().find(|(n, _)| n == name) {
        Some((_, ui)) => Json(ui).into_response(),
        None => not_found("no such template"),
    }
}

/// `/internal/folder_paths`: each folder kind with the folders it is read from.
pub(super) async fn folder_paths(State(state): State<AppState>) -> Json<Json_> {
    let mut out = Map::new();
    for kind in MODEL_FOLDERS {
        out.insert(kind.to_string(), json!(folders_of(&state, kind)));
    }
    out.insert(
        "input".into(),
        json!([state.roots.inputs.to_string_lossy()]),
    );
    out.insert(
        "output".into(),
        json!([state.roots.outputs.to_string_lossy()]),
    );
    Json(Json_::Object(out))
}

/// Runs whose files `/internal/files/output` lists, newest first.
const RUNS_LISTED: usize = 100;

/// `/internal/files/{input|output}`: the file names there, newest first (as ComfyUI). weft's
/// outputs are in one folder per run, so the output names are `RUN/FILE` (the newest
/// `RUNS_LISTED` runs, newest first), read from the outputs' storage: the folder, or a
/// fleet's bucket, whose runs an API server's own folder never holds.
pub(super) async fn internal_files(
    State(state): State<AppState>,
    Path(kind): Path<String>,
) -> Response {
    let dir = match kind.as_str() {
        "input" => &state.roots.inputs,
        "output" => return output_files(&state).await,
        _ => return not_found("no such folder"),
    };
    let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            (!name.starts_with('.')).then_some((modified, name))
        })
        .collect();
    files.sort_by(|a, b| b.cmp(a));
    Json(json!(files.into_iter().map(|(_, n)| n).collect::<Vec<_>>())).into_response()
}

async fn output_files(state: &AppState) -> Response {
    let store = state.store.clone();
    let runs = match tokio::task::spawn_blocking(move || store.list(None, RUNS_LISTED)).await {
        Ok(Ok(runs)) => runs,
        Ok(Err(e)) => return internal(&e.to_string()),
        Err(e) => return internal(&e.to_string()),
    };
    // A few listings at a time: each is a request to a bucket.
    let folders: Vec<String> = runs.iter().map(|run| run.id.to_string()).collect();
    let listed: Vec<_> = futures_util::stream::iter(folders.into_iter().map(|folder| {
        let outputs = state.outputs.clone();
        async move { outputs.list(&folder).await }
    }))
    .buffered(8)
    .collect()
    .await;
    let mut names = Vec::new();
    for keys in listed {
        match keys {
            Ok(keys) => names.extend(keys),
            Err(e) => return internal(&e.to_string()),
        }
    }
    Json(json!(names)).into_response()
}
