//! ComfyUI's HTTP and WebSocket API on `weft serve`, next to weft's own (docs/comfyui.md, "The
//! ComfyUI API"): `POST /prompt` imports an API-format prompt with `comfy::import`, validates it
//! like `POST /api/runs` and queues it on the same run store, scheduler, device worker and
//! cache; `/history`, `/view`, `/queue`, `/interrupt`, `/upload/image`, `/object_info`,
//! `/system_stats` answer in ComfyUI's shapes (each also under `/api/`, as ComfyUI does); a
//! `/ws?clientId=` socket gets ComfyUI's messages. One translator thread reads weft's events
//! from the hub once and turns the events of prompts posted here into ComfyUI's messages, with
//! the node ids of the prompt (ComfyUI's `3`, not weft's `ksampler_3`).
use std::collections::{HashMap, HashSet};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value as Json_};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use weft_engine::Diagnostic;

use super::hub::{Hub, Ring, Subscriber, Weight};
use super::queue::Queue;
use super::store::{execute, RunRecord, RunStore};
use super::ws::{client_left, close_too_slow, deliver, Delivery};
use super::{now_ms, AppState};
use crate::comfy::import::{import, ImportOptions};
use crate::comfy::object_info::{describe, object_info, FileLists};
use crate::comfy::{comfy_type, Issue, Widget, CHECKPOINT_DIR, TYPES, VALUE_TYPES};

/// ComfyUI keeps this many prompts in its history.
const MAXIMUM_HISTORY_SIZE: usize = 10_000;

/// A prompt posted to `POST /prompt`, as kept next to its run (table `comfy_prompts` in the
/// run database).
#[derive(Debug)]
pub struct Prompt {
    pub run: u64,
    pub prompt_id: String,
    pub client_id: Option<String>,
    /// The API-format prompt as posted.
    pub prompt: Json_,
    pub extra_data: Json_,
    /// ComfyUI node id -> weft node id.
    pub ids: Vec<(String, String)>,
    /// The output nodes (SaveImage, PreviewImage), ComfyUI ids.
    pub outputs: Vec<String>,
}

impl Prompt {
    fn comfy_id<'a>(&'a self, weft: &'a str) -> &'a str {
        self.ids
            .iter()
            .find(|(_, w)| w == weft)
            .map_or(weft, |(c, _)| c.as_str())
    }

    fn class(&self, comfy: &str) -> Option<&str> {
        self.prompt
            .get(comfy)
            .and_then(|n| n.get("class_type"))
            .and_then(Json_::as_str)
    }

    /// ComfyUI sends latent previews only when asked: started with `--preview-method`, or
    /// per prompt with `extra_data.preview_method`. weft has no such start option, so the
    /// prompt asks (auto, latent2rgb, taesd).
    fn wants_previews(&self) -> bool {
        matches!(
            self.extra_data["preview_method"].as_str(),
            Some("auto" | "latent2rgb" | "taesd")
        )
    }

    /// ComfyUI's queue item: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    fn queue_item(&self) -> Json_ {
        json!([
            self.run,
            self.prompt_id,
            self.prompt,
            self.extra_data,
            self.outputs
        ])
    }
}

/// JSON with object keys sorted, so equal graphs give equal text.
fn canonical(v: &Json_) -> String {
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
fn identity(prompt: &Json_, output: &str) -> String {
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

/// A WebSocket frame for ComfyUI clients: to one client id, or to all (`status`).
pub struct Outgoing {
    to: Option<String>,
    frame: Frame,
}

enum Frame {
    Text(Arc<str>),
    Binary(Bytes),
}

impl Weight for Arc<Outgoing> {
    fn bytes(&self) -> usize {
        match &self.frame {
            Frame::Text(text) => text.len(),
            Frame::Binary(bytes) => bytes.len(),
        }
    }
}

/// The ComfyUI side of the server: its table, the prompts in flight, the channel to `/ws`
/// clients that gave a clientId, and the model-name mapping of `--comfy-model`.
pub struct Comfy {
    db: Mutex<Connection>,
    /// Prompts queued or running, by run id (the rest are read from the table).
    live: Mutex<HashMap<u64, Arc<Prompt>>>,
    out: Ring<Arc<Outgoing>>,
    /// ComfyUI checkpoint name -> weft model name; `*` maps every name the models folder
    /// lacks.
    models: Vec<(String, String)>,
    device: String,
    /// The ComfyUI node now executing, for a client that reconnects: (client, prompt, node).
    executing: Mutex<Option<(String, String, String)>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS comfy_prompts (
    run INTEGER PRIMARY KEY,
    prompt_id TEXT NOT NULL UNIQUE,
    client_id TEXT,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    ids TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS comfy_outputs (
    identity TEXT PRIMARY KEY,
    images TEXT NOT NULL
);
";

fn db_err(e: rusqlite::Error) -> String {
    format!("comfy prompts: {e}")
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<Prompt> {
    let json = |t: String| serde_json::from_str(&t).unwrap_or(Json_::Null);
    let ids: Vec<(String, String)> =
        serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default();
    let outputs: Vec<String> = serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default();
    Ok(Prompt {
        run: r.get::<_, i64>(0)? as u64,
        prompt_id: r.get(1)?,
        client_id: r.get(2)?,
        prompt: json(r.get(3)?),
        extra_data: json(r.get(4)?),
        ids,
        outputs,
    })
}

const COLUMNS: &str = "run, prompt_id, client_id, prompt, extra_data, ids, outputs";

impl Comfy {
    /// Opens the table in the run database and starts the translator thread on the hub.
    pub fn start(
        data_dir: &FsPath,
        models: Vec<(String, String)>,
        device: String,
        capacity: usize,
        store: Arc<dyn RunStore>,
        hub: &Hub,
        queue: Arc<Queue>,
    ) -> Result<Arc<Self>, String> {
        let conn = Connection::open(data_dir.join("runs.sqlite")).map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        let out = Ring::new(capacity);
        let comfy = Arc::new(Self {
            db: Mutex::new(conn),
            live: Mutex::new(HashMap::new()),
            out,
            models,
            device,
            executing: Mutex::new(None),
        });
        let events = hub.subscribe();
        let previews = hub.subscribe_previews();
        let translator = comfy.clone();
        std::thread::Builder::new()
            .name("weft-comfy-ws".into())
            .spawn(move || translate_loop(translator, events, store, queue))
            .map_err(|e| format!("starting the ComfyUI translator: {e}"))?;
        let previewer = comfy.clone();
        std::thread::Builder::new()
            .name("weft-comfy-previews".into())
            .spawn(move || preview_loop(previewer, previews))
            .map_err(|e| format!("starting the ComfyUI preview sender: {e}"))?;
        Ok(comfy)
    }

    fn with_db<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        let conn = self.db.lock().map_err(|_| "comfy prompts: lock poisoned")?;
        f(&conn).map_err(db_err)
    }

    /// The prompt of run `run`, if it was posted here.
    fn prompt_of_run(&self, run: u64) -> Option<Arc<Prompt>> {
        if let Some(p) = self.live.lock().ok()?.get(&run) {
            return Some(p.clone());
        }
        self.with_db(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM comfy_prompts WHERE run = ?1"
            ))?
            .query_row(params![run as i64], row)
            .optional()
        })
        .ok()
        .flatten()
        .map(Arc::new)
    }

    fn prompt_by_id(&self, prompt_id: &str) -> Option<Prompt> {
        self.with_db(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM comfy_prompts WHERE prompt_id = ?1"
            ))?
            .query_row(params![prompt_id], row)
            .optional()
        })
        .ok()
        .flatten()
    }

    /// The newest `limit` prompts, oldest first (ComfyUI's history order).
    fn newest(&self, limit: usize) -> Vec<Prompt> {
        let mut rows = self
            .with_db(|c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM comfy_prompts ORDER BY run DESC LIMIT ?1"
                ))?;
                let rows = stmt.query_map(params![limit as i64], row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap_or_default();
        rows.reverse();
        rows
    }

    fn remember_images(&self, identity: &str, images: &[Json_]) {
        let text = Json_::Array(images.to_vec()).to_string();
        let _ = self.with_db(|c| {
            c.prepare_cached(
                "INSERT INTO comfy_outputs (identity, images) VALUES (?1, ?2) \
                 ON CONFLICT (identity) DO UPDATE SET images = excluded.images",
            )?
            .execute(params![identity, text])
        });
    }

    fn recall_images(&self, identity: &str) -> Option<Vec<Json_>> {
        let text: Option<String> = self
            .with_db(|c| {
                c.prepare_cached("SELECT images FROM comfy_outputs WHERE identity = ?1")?
                    .query_row(params![identity], |r| r.get(0))
                    .optional()
            })
            .ok()
            .flatten();
        serde_json::from_str(&text?).ok()
    }

    fn send(&self, to: Option<&str>, kind: &str, data: Json_) {
        let text = json!({"type": kind, "data": data}).to_string();
        self.out.send(Arc::new(Outgoing {
            to: to.map(str::to_string),
            frame: Frame::Text(text.into()),
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// POST /prompt

/// ComfyUI's error object.
fn error_obj(kind: &str, message: &str, details: &str, extra: Json_) -> Json_ {
    json!({"type": kind, "message": message, "details": details, "extra_info": extra})
}

fn refused(error: Json_, node_errors: Json_) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "node_errors": node_errors})),
    )
        .into_response()
}

/// ComfyUI's error type and message for a weft problem, by what it says.
fn classify(message: &str) -> (&'static str, &'static str) {
    let m = message.to_ascii_lowercase();
    if m.starts_with("missing input") || m.contains("is required") {
        ("required_input_missing", "Required input is missing")
    } else if m.contains("is not in weft")
        || m.contains("not a model")
        || m.contains("not found")
        || m.contains("has no upscale model")
        || m.contains("no such file")
    {
        ("value_not_in_list", "Value not in list")
    } else if m.contains("but output") || m.contains("expected a link") {
        (
            "return_type_mismatch",
            "Return type mismatch between linked nodes",
        )
    } else {
        (
            "custom_validation_failed",
            "Custom validation failed for node",
        )
    }
}

/// One located weft problem as a ComfyUI validation error.
fn located_error(input: Option<&str>, message: &str, hint: Option<&str>) -> Json_ {
    let (kind, title) = classify(message);
    let mut details = match input {
        Some(i) => format!("{i} - {message}"),
        None => message.to_string(),
    };
    if let Some(h) = hint {
        details.push_str(&format!(" (hint: {h})"));
    }
    let extra = match input {
        Some(i) => json!({"input_name": i}),
        None => json!({}),
    };
    error_obj(kind, title, &details, extra)
}

/// The ComfyUI name of a weft input of the weft node a ComfyUI `class` became.
fn comfy_input(class: &str, weft: &str) -> String {
    if let Some(ty) = comfy_type(class) {
        for i in ty.inputs {
            if matches!(i.widget, Some(Widget::Weft(w)) if w == weft) {
                return i.name.to_string();
            }
        }
    }
    let name = match (class, weft) {
        (_, "encoder") => "clip",
        ("CheckpointLoaderSimple", "name") => "ckpt_name",
        ("UpscaleModelLoader", "name") => "model_name",
        ("LoadImage", "path") => "image",
        ("KSampler" | "KSamplerAdvanced", "latent") => "latent_image",
        ("VAEDecode" | "VAEDecodeTiled" | "LatentUpscale" | "LatentUpscaleBy", "latent") => {
            "samples"
        }
        ("VAEEncode", "image") => "pixels",
        ("SaveImage" | "PreviewImage", "image") => "images",
        ("VAEDecodeTiled", "tile") => "tile_size",
        (_, "method") => "upscale_method",
        _ => weft,
    };
    name.to_string()
}

/// For each node, the output nodes downstream of it (itself included).
fn dependent_outputs(
    prompt: &Map<String, Json_>,
    outputs: &[String],
) -> HashMap<String, Vec<String>> {
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for out in outputs {
        let mut seen = HashSet::new();
        let mut stack = vec![out.clone()];
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            deps.entry(id.clone()).or_default().push(out.clone());
            let inputs = prompt.get(&id).and_then(|n| n.get("inputs"));
            for v in inputs
                .and_then(Json_::as_object)
                .into_iter()
                .flat_map(|m| m.values())
            {
                if let Some([from, _]) = v.as_array().map(Vec::as_slice) {
                    let from = match from {
                        Json_::String(s) => s.clone(),
                        Json_::Number(n) => n.to_string(),
                        _ => continue,
                    };
                    stack.push(from);
                }
            }
        }
    }
    deps
}

/// Collects node errors keyed by ComfyUI node id, in ComfyUI's shape.
struct NodeErrors<'a> {
    prompt: &'a Map<String, Json_>,
    deps: HashMap<String, Vec<String>>,
    map: Map<String, Json_>,
    lines: Vec<String>,
}

impl<'a> NodeErrors<'a> {
    fn new(prompt: &'a Map<String, Json_>, outputs: &[String]) -> Self {
        Self {
            prompt,
            deps: dependent_outputs(prompt, outputs),
            map: Map::new(),
            lines: Vec::new(),
        }
    }

    fn class(&self, node: &str) -> String {
        self.prompt
            .get(node)
            .and_then(|n| n.get("class_type"))
            .and_then(Json_::as_str)
            .unwrap_or("")
            .to_string()
    }

    fn add(&mut self, node: Option<&str>, error: Json_) {
        self.lines.push(format!(
            "{}: {}",
            error["message"].as_str().unwrap_or(""),
            error["details"].as_str().unwrap_or("")
        ));
        let Some(node) = node else {
            return;
        };
        let class = self.class(node);
        let deps = self.deps.get(node).cloned().unwrap_or_default();
        let entry = self.map.entry(node.to_string()).or_insert_with(
            || json!({"errors": [], "dependent_outputs": deps, "class_type": class}),
        );
        if let Some(errors) = entry["errors"].as_array_mut() {
            errors.push(error);
        }
    }

    fn issue(&mut self, issue: &Issue) {
        let error = located_error(
            issue.input.as_deref(),
            &issue.message,
            issue.hint.as_deref(),
        );
        self.add(issue.node.as_deref(), error);
    }

    fn diagnostic(&mut self, d: &Diagnostic, comfy_of: &HashMap<&str, &str>) {
        let node = d.node.as_deref().and_then(|n| comfy_of.get(n).copied());
        let class = node.map(|n| self.class(n)).unwrap_or_default();
        let input = d.input.as_deref().map(|i| comfy_input(&class, i));
        let error = located_error(input.as_deref(), &d.message, d.hint.as_deref());
        self.add(node, error);
    }

    fn refuse(self) -> Response {
        let error = error_obj(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            &self.lines.join("\n"),
            json!({}),
        );
        refused(error, Json_::Object(self.map))
    }
}

fn uuid4() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = now_ms() as u128 ^ (std::process::id() as u128) << 64;
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `--comfy-model` for the checkpoints of this prompt: exact names, then `*` for names that
/// are not under the models folder (`checkpoints/NAME`, or NAME itself).
fn model_options(state: &AppState, prompt: &Map<String, Json_>) -> Vec<(String, String)> {
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

pub async fn post_prompt(
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
        super::checking::off_runtime_gated(&state, "validating the prompt", move |gate| {
            submit(&submitting, &prompt, &body, gate)
        })
        .await;
    match submitted {
        Ok(response) => response,
        Err(super::error::ApiError::DeadlineExceeded(why)) => refused(
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
fn submit(
    state: &AppState,
    prompt: &Map<String, Json_>,
    body: &Json_,
    gate: &super::checking::Gate,
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
    let mut diagnostics = weft_engine::validate(&imported.workflow, &state.registry, None);
    if diagnostics.is_empty() {
        diagnostics = super::runs::check_files(state, &imported.workflow, None);
    }
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
    let text = imported.workflow.to_json().to_string();
    let comfy = &state.comfy;
    // The translator looks prompts up under this lock: it cannot see the run start before the
    // prompt is recorded.
    let Ok(mut live) = comfy.live.lock() else {
        return internal("the prompt table lock is poisoned");
    };
    if comfy.prompt_by_id(&prompt_id).is_some() {
        return refused(
            error_obj(
                "invalid_prompt",
                "Invalid prompt",
                &format!("prompt_id '{prompt_id}' is already used"),
                json!({}),
            ),
            json!({}),
        );
    }
    // Its client was told the check ran out of time: nothing may be queued now.
    if !gate.commit() {
        return internal("a prompt checked past its deadline was not queued");
    }
    let run = match state.store.enqueue(None, &text, None, now_ms()) {
        Ok(id) => id,
        Err(e) => return internal(&e),
    };
    let record = Prompt {
        run,
        prompt_id: prompt_id.clone(),
        client_id,
        prompt: Json_::Object(prompt.clone()),
        extra_data,
        ids: imported.ids,
        outputs,
    };
    let (prompt_text, extra_text) = (record.prompt.to_string(), record.extra_data.to_string());
    let ids = serde_json::to_string(&record.ids).unwrap_or_default();
    let outputs = serde_json::to_string(&record.outputs).unwrap_or_default();
    let stored = comfy.with_db(|c| {
        execute(
            c,
            "INSERT INTO comfy_prompts (run, prompt_id, client_id, prompt, extra_data, ids, outputs) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![run as i64, record.prompt_id, record.client_id, prompt_text, extra_text, ids, outputs],
        )
    });
    if let Err(e) = stored {
        let _ = state.store.delete_queued(run);
        return internal(&e);
    }
    live.insert(run, Arc::new(record));
    drop(live);
    state.hub.send(
        json!({"event": "run_queued", "run": run})
            .to_string()
            .into(),
    );
    state.queue.hand_over(run, imported.workflow);
    state.queue.changed();
    state.queue.wake();
    Json(json!({"prompt_id": prompt_id, "number": run, "node_errors": {}})).into_response()
}

fn internal(cause: &str) -> Response {
    eprintln!("weft serve: internal error: {cause}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": {"type": "internal", "message": "the server failed to handle this request; see its log", "details": "", "extra_info": {}}, "node_errors": {}})),
    )
        .into_response()
}

fn queue_remaining(store: &dyn RunStore, queue: &Queue) -> usize {
    store.queued(0).map_or(0, |(_, n)| n) + usize::from(queue.running().is_some())
}

fn exec_info(state: &AppState) -> Json_ {
    json!({"exec_info": {"queue_remaining": queue_remaining(&*state.store, &state.queue)}})
}

pub async fn get_prompt(State(state): State<AppState>) -> Json<Json_> {
    Json(exec_info(&state))
}

// ---------------------------------------------------------------------------------------------
// GET /queue, POST /queue, POST /interrupt

fn queue_item(state: &AppState, run: u64) -> Json_ {
    match state.comfy.prompt_of_run(run) {
        Some(p) => p.queue_item(),
        // A run queued through weft's own API: it holds the device too.
        None => json!([run, format!("weft-run-{run}"), {}, {}, []]),
    }
}

pub async fn get_queue(State(state): State<AppState>) -> Json<Json_> {
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
pub async fn post_queue(State(state): State<AppState>, body: Bytes) -> StatusCode {
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
/// `{"prompt_id": ...}` when that one is running.
pub async fn post_interrupt(State(state): State<AppState>, body: Bytes) -> StatusCode {
    let body: Json_ = serde_json::from_slice(&body).unwrap_or(Json_::Null);
    let Some(running) = state.queue.running() else {
        return StatusCode::OK;
    };
    if let Some(id) = body.get("prompt_id").and_then(Json_::as_str) {
        match state.comfy.prompt_of_run(running) {
            Some(p) if p.prompt_id == id => {}
            _ => return StatusCode::OK,
        }
    }
    state.queue.cancel_running(running);
    StatusCode::OK
}

// ---------------------------------------------------------------------------------------------
// GET /history

/// An output file of a run as ComfyUI names it: `subfolder` is the run's folder under the
/// outputs (plus a SaveImage prefix's folders), `type` is `output`.
fn image_ref(path_in_outputs: &str) -> Json_ {
    let (dir, file) = path_in_outputs
        .rsplit_once('/')
        .unwrap_or(("", path_in_outputs));
    json!({"filename": file, "subfolder": dir, "type": "output"})
}

fn history_entry(comfy: &Comfy, p: &Prompt, run: &RunRecord) -> Option<Json_> {
    if matches!(run.status.as_str(), "queued" | "running") {
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
    if run.status == "succeeded" {
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
    let success = run.status == "succeeded";
    let error_node = run
        .error
        .as_ref()
        .and_then(|e| e["node"].as_str())
        .map(|n| p.comfy_id(n).to_string());
    let node_type = error_node.as_deref().and_then(|n| p.class(n));
    match run.status.as_str() {
        "succeeded" => messages
            .push(json!(["execution_success", {"prompt_id": p.prompt_id, "timestamp": finished}])),
        "cancelled" | "interrupted" => messages.push(json!(["execution_interrupted", {
            "prompt_id": p.prompt_id, "node_id": error_node, "node_type": node_type,
            "executed": executed, "timestamp": finished}])),
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
fn error_text(error: &Json_) -> String {
    let mut text = error["message"].as_str().unwrap_or("").to_string();
    for d in error["diagnostics"].as_array().into_iter().flatten() {
        if let Some(m) = d["message"].as_str() {
            text.push('\n');
            text.push_str(m);
        }
    }
    text
}

pub async fn history(
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

pub async fn history_one(
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
// GET /view

/// A file name or folder part from a client: not empty, no separators, not `.`/`..` or hidden.
fn plain_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 255
        && !part.starts_with('.')
        && !part.contains(['/', '\\', '\0'])
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// `filename`, `subfolder`, `type` (output or input): a file among the runs' outputs or the
/// uploads, nowhere else. ComfyUI's `name [output]` annotation is understood.
pub async fn view(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(filename) = q.get("filename") else {
        return status(StatusCode::NOT_FOUND);
    };
    let mut kind = q.get("type").map_or("output", String::as_str);
    let mut name = filename.as_str();
    for (suffix, k) in [
        (" [output]", "output"),
        (" [input]", "input"),
        (" [temp]", "temp"),
    ] {
        if let Some(stripped) = name.strip_suffix(suffix) {
            name = stripped;
            kind = k;
        }
    }
    let root = match kind {
        "output" => &state.roots.outputs,
        "input" => &state.roots.inputs,
        // weft keeps no temporary images: PreviewImage saves into the run's folder.
        "temp" => return status(StatusCode::NOT_FOUND),
        _ => return status(StatusCode::BAD_REQUEST),
    };
    if !plain_part(name) {
        return status(StatusCode::BAD_REQUEST);
    }
    let mut path = root.clone();
    let subfolder = q.get("subfolder").map_or("", String::as_str);
    for part in subfolder.split('/').filter(|p| !p.is_empty()) {
        if !plain_part(part) {
            return status(StatusCode::FORBIDDEN);
        }
        path.push(part);
    }
    path.push(name);
    let real = match path.canonicalize() {
        Ok(real) if real.is_file() => real,
        _ => return status(StatusCode::NOT_FOUND),
    };
    if !real.starts_with(root) {
        return status(StatusCode::FORBIDDEN);
    }
    let bytes = match tokio::fs::read(&real).await {
        Ok(b) => b,
        Err(_) => return status(StatusCode::NOT_FOUND),
    };
    let lower = name.to_ascii_lowercase();
    let ty = if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        "image/jpeg"
    } else {
        "application/octet-stream"
    };
    let disposition = format!("filename=\"{}\"", name.replace(['"', '\r', '\n'], "_"));
    (
        [
            (CONTENT_TYPE, ty.to_string()),
            (X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// POST /upload/image

fn upload_refused(code: StatusCode, why: &str) -> Response {
    (code, why.to_string()).into_response()
}

/// Multipart `image` (with its file name), `overwrite`, `subfolder`, `type` (input only): the
/// image is checked as weft's own uploads are, and stored in the inputs folder under its name
/// (`name_1.png` when another file has it, unless `overwrite`). Answers
/// `{"name", "subfolder", "type"}`; `name` is what LoadImage's `image` takes.
pub async fn upload_image(State(state): State<AppState>, request: Request) -> Response {
    let mut multipart = match Multipart::from_request(request, &state).await {
        Ok(m) => m,
        Err(_) => return upload_refused(StatusCode::BAD_REQUEST, "a multipart body is expected"),
    };
    let mut image: Option<(String, Bytes)> = None;
    let mut overwrite = false;
    let mut subfolder = String::new();
    let mut kind = "input".to_string();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return upload_refused(StatusCode::PAYLOAD_TOO_LARGE, "the upload is too large")
            }
            Err(_) => return upload_refused(StatusCode::BAD_REQUEST, "a malformed multipart body"),
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return upload_refused(StatusCode::PAYLOAD_TOO_LARGE, "the upload is too large")
            }
            Err(_) => return upload_refused(StatusCode::BAD_REQUEST, "a malformed multipart body"),
        };
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match name.as_str() {
            "image" => image = Some((file_name.unwrap_or_default(), bytes.clone())),
            "overwrite" => overwrite = matches!(text().as_str(), "true" | "1"),
            "subfolder" => subfolder = text(),
            "type" => kind = text(),
            _ => {}
        }
    }
    let Some((file_name, bytes)) = image else {
        return upload_refused(StatusCode::BAD_REQUEST, "no 'image' field");
    };
    if kind != "input" {
        return upload_refused(
            StatusCode::BAD_REQUEST,
            "weft stores uploads in its inputs folder only (type 'input')",
        );
    }
    if !plain_part(&file_name) {
        return upload_refused(StatusCode::BAD_REQUEST, "the image needs a plain file name");
    }
    let mut dir = state.roots.inputs.clone();
    for part in subfolder.split('/').filter(|p| !p.is_empty()) {
        if !plain_part(part) {
            return upload_refused(StatusCode::BAD_REQUEST, "subfolder must be plain names");
        }
        dir.push(part);
    }
    let max_pixels = state.config.max_pixels;
    let checked = bytes.clone();
    match tokio::task::spawn_blocking(move || super::files::check_image(&checked, max_pixels)).await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return internal(&e.to_string()),
    }
    let stored =
        tokio::task::spawn_blocking(move || store_upload(&dir, &file_name, &bytes, overwrite))
            .await;
    match stored {
        Ok(Ok(name)) => {
            Json(json!({"name": name, "subfolder": subfolder, "type": "input"})).into_response()
        }
        Ok(Err(e)) => internal(&e),
        Err(e) => internal(&e.to_string()),
    }
}

/// Writes the upload; the same bytes under the same name are one file.
fn store_upload(dir: &FsPath, name: &str, bytes: &[u8], overwrite: bool) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    let mut candidate = name.to_string();
    let mut n = 1;
    loop {
        let path: PathBuf = dir.join(&candidate);
        let existing = std::fs::symlink_metadata(&path).ok();
        let same = existing.is_some() && std::fs::read(&path).is_ok_and(|b| b == bytes);
        if existing.is_none() || same || overwrite {
            if !same {
                // A fresh file: never writes through a link planted in the folder.
                let tmp = dir.join(format!(".upload-{}", uuid4()));
                std::fs::write(&tmp, bytes).map_err(|e| format!("storing an upload: {e}"))?;
                std::fs::rename(&tmp, &path).map_err(|e| format!("storing an upload: {e}"))?;
            }
            return Ok(candidate);
        }
        candidate = format!("{stem}_{n}{ext}");
        n += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// GET /object_info, GET /system_stats

fn file_names(dir: &FsPath, extensions: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| {
            let l = n.to_ascii_lowercase();
            extensions.iter().any(|x| l.ends_with(x))
        })
        .collect();
    names.sort();
    names
}

fn file_lists(state: &AppState) -> FileLists {
    // ComfyUI names a checkpoint relative to its checkpoints folder: list each model folder's
    // (a folder of checkpoints is one itself), each name once, the first folder's winning.
    let mut checkpoints: Vec<String> = Vec::new();
    for folder in state.roots.models.folders() {
        let dir = match folder.kind.as_deref() {
            None => folder.dir.join(CHECKPOINT_DIR),
            Some(kind) if kind == CHECKPOINT_DIR.trim_end_matches('/') => folder.dir.clone(),
            Some(_) => continue,
        };
        for name in file_names(
            &dir,
            &[".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"],
        ) {
            if !checkpoints.contains(&name) {
                checkpoints.push(name);
            }
        }
    }
    checkpoints.sort();
    for (name, _) in &state.comfy.models {
        if name != "*" && !checkpoints.contains(name) {
            checkpoints.push(name.clone());
        }
    }
    let mut upscale_models: Vec<String> = crate::comfy::UPSCALER_FILES
        .iter()
        .map(|(f, _)| f.to_string())
        .collect();
    upscale_models.extend(weft_nodes::upscale::UPSCALERS.iter().map(|s| s.to_string()));
    FileLists {
        checkpoints,
        images: file_names(&state.roots.inputs, &[".png", ".jpg", ".jpeg"]),
        upscale_models,
        loras: weft_nodes::diffusion::find_loras(&state.roots.models)
            .into_iter()
            .map(|n| {
                n.strip_prefix(crate::comfy::LORA_DIR)
                    .unwrap_or(&n)
                    .to_string()
            })
            .collect(),
    }
}

pub async fn get_object_info(State(state): State<AppState>) -> Json<Json_> {
    Json(object_info(&state.registry, &file_lists(&state)))
}

pub async fn get_object_info_one(
    State(state): State<AppState>,
    Path(class): Path<String>,
) -> Json<Json_> {
    let mut out = Map::new();
    if let Some(ty) = TYPES.iter().find(|t| t.class == class) {
        out.insert(class, describe(ty, &state.registry, &file_lists(&state)));
    }
    Json(Json_::Object(out))
}

/// `MemTotal` and `MemAvailable` of /proc/meminfo, in bytes.
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub async fn system_stats(State(state): State<AppState>) -> Json<Json_> {
    let (ram_total, ram_free) = memory();
    let device = state.comfy.device.as_str();
    let (kind, index) = match device.split_once(':') {
        Some((k, i)) => (k, i.parse::<u32>().ok()),
        None => (device, None),
    };
    // ComfyUI's vram fields: the driver's total and free, and torch's reserved memory with the
    // part of it no tensor uses. Read now from the allocator; zeros on the CPU.
    let cuda = match kind {
        "cuda" => weft_engine::device_memory::device_memory(tch::Device::Cuda(
            index.unwrap_or(0) as usize
        )),
        _ => None,
    };
    let (vram_total, vram_free, torch_total, torch_free) = cuda.map_or((0, 0, 0, 0), |m| {
        (
            m.total,
            m.free,
            m.reserved,
            m.reserved.saturating_sub(m.allocated),
        )
    });
    let argv: Vec<String> = std::env::args().collect();
    Json(json!({
        "system": {
            "os": std::env::consts::FAMILY,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": format!("weft {}", env!("CARGO_PKG_VERSION")),
            "python_version": "",
            "pytorch_version": "",
            "embedded_python": false,
            "argv": argv,
        },
        "devices": [{
            "name": device,
            "type": kind,
            "index": index,
            "vram_total": vram_total,
            "vram_free": vram_free,
            "torch_vram_total": torch_total,
            "torch_vram_free": torch_free,
        }],
        // weft's own: the cache's accounting and the device's figures when the last run ended.
        "weft": {
            "last_run_memory": state.queue.last_memory(),
            "device_memory_now": cuda,
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// /ws?clientId=

/// Subscribes before answering the upgrade, so a prompt posted right after the handshake
/// cannot start before this client hears of it.
pub fn ws_upgrade(state: AppState, ws: WebSocketUpgrade, client_id: String) -> Response {
    let messages = state.comfy.out.subscribe();
    ws.max_message_size(64 << 10)
        .on_upgrade(move |socket| ws_client(state, socket, client_id, messages))
}

async fn ws_client(
    state: AppState,
    mut socket: WebSocket,
    sid: String,
    mut messages: Subscriber<Arc<Outgoing>>,
) {
    let hello = json!({"type": "status", "data": {"status": exec_info(&state), "sid": sid}});
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let now = state.comfy.executing.lock().ok().and_then(|e| e.clone());
    if let Some((client, prompt_id, node)) = now {
        if client == sid {
            let m = json!({"type": "executing", "data": {"node": node, "display_node": node, "prompt_id": prompt_id}});
            if socket
                .send(Message::Text(m.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let bound = state.config.client_bytes as u64;
    loop {
        let frame = tokio::select! {
            message = messages.recv() => match message {
                Ok(m) => {
                    if m.to.as_deref().is_some_and(|to| to != sid) {
                        continue;
                    }
                    match &m.frame {
                        Frame::Text(t) => Message::Text(t.as_ref().into()),
                        Frame::Binary(b) => Message::Binary(b.clone()),
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    return close_too_slow(&mut socket, &format!("{missed} messages behind"), "").await;
                }
                Err(RecvError::Closed) => return,
            },
            // ComfyUI clients may announce feature flags; weft needs none of them.
            incoming = socket.recv() => {
                if client_left(incoming) {
                    return;
                }
                continue;
            }
        };
        match deliver(&mut socket, vec![frame], || messages.bytes_behind(), bound).await {
            Delivery::Sent => {}
            Delivery::Gone => return,
            Delivery::TooFarBehind(bytes) => {
                return close_too_slow(&mut socket, &format!("{bytes} bytes behind"), "").await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The translator: weft events -> ComfyUI messages

/// What the translator knows of a prompt while it runs.
struct Live {
    prompt: Arc<Prompt>,
    cached: Vec<String>,
    cached_sent: bool,
    /// Every node found in the cache, also after `execution_cached` went out.
    all_cached: Vec<String>,
    executed: Vec<String>,
    images: HashMap<String, Vec<Json_>>,
    current: Option<String>,
    error_sent: bool,
}

fn translate_loop(
    comfy: Arc<Comfy>,
    mut events: Subscriber<Arc<str>>,
    store: Arc<dyn RunStore>,
    queue: Arc<Queue>,
) {
    let mut live: HashMap<u64, Live> = HashMap::new();
    loop {
        let text = match events.blocking_recv() {
            Ok(t) => t,
            Err(RecvError::Lagged(n)) => {
                eprintln!("weft serve: the ComfyUI translator missed {n} events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Ok(event) = serde_json::from_str::<Json_>(&text) else {
            continue;
        };
        comfy.translate(&event, &mut live, &*store, &queue);
    }
}

/// Step previews travel in the hub's own lossy ring (a slow reader skips some): each goes to
/// the client of its prompt as ComfyUI's binary frame, when that prompt asked for previews.
fn preview_loop(comfy: Arc<Comfy>, mut previews: broadcast::Receiver<Arc<str>>) {
    loop {
        let text = match previews.blocking_recv() {
            Ok(t) => t,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let Ok(event) = serde_json::from_str::<Json_>(&text) else {
            continue;
        };
        let Some(prompt) = event["run"]
            .as_u64()
            .and_then(|run| comfy.prompt_of_run(run))
        else {
            continue;
        };
        let png = event["preview"]
            .as_str()
            .filter(|_| prompt.wants_previews())
            .and_then(|p| p.strip_prefix("data:image/png;base64,"))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        if let Some(png) = png {
            // ComfyUI's binary frame: event 1 (PREVIEW_IMAGE), image type 2 (PNG).
            let mut frame = Vec::with_capacity(png.len() + 8);
            frame.extend_from_slice(&1u32.to_be_bytes());
            frame.extend_from_slice(&2u32.to_be_bytes());
            frame.extend_from_slice(&png);
            comfy.out.send(Arc::new(Outgoing {
                to: prompt.client_id.clone(),
                frame: Frame::Binary(frame.into()),
            }));
        }
    }
}

fn ts() -> i64 {
    now_ms()
}

impl Comfy {
    fn begin(&self, run: u64, live: &mut HashMap<u64, Live>) -> bool {
        if live.contains_key(&run) {
            return true;
        }
        let Some(prompt) = self.prompt_of_run(run) else {
            return false;
        };
        self.send(
            prompt.client_id.as_deref(),
            "execution_start",
            json!({"prompt_id": prompt.prompt_id, "timestamp": ts()}),
        );
        live.insert(
            run,
            Live {
                prompt,
                cached: Vec::new(),
                cached_sent: false,
                all_cached: Vec::new(),
                executed: Vec::new(),
                images: HashMap::new(),
                current: None,
                error_sent: false,
            },
        );
        true
    }

    /// `execution_cached` goes out once, before the first node executes.
    fn flush_cached(&self, l: &mut Live) {
        if l.cached_sent {
            return;
        }
        l.cached_sent = true;
        self.send(
            l.prompt.client_id.as_deref(),
            "execution_cached",
            json!({"nodes": l.cached, "prompt_id": l.prompt.prompt_id, "timestamp": ts()}),
        );
    }

    fn translate(
        &self,
        event: &Json_,
        live: &mut HashMap<u64, Live>,
        store: &dyn RunStore,
        queue: &Queue,
    ) {
        let kind = event["event"].as_str().unwrap_or("");
        if kind == "queue" {
            let remaining = usize::from(!event["running"].is_null())
                + event["queued_total"].as_u64().unwrap_or(0) as usize;
            self.send(
                None,
                "status",
                json!({"status": {"exec_info": {"queue_remaining": remaining}}}),
            );
            return;
        }
        let Some(run) = event["run"].as_u64() else {
            return;
        };
        let starts = matches!(kind, "run_started" | "invalid" | "run_finished");
        if starts && !self.begin(run, live) {
            return;
        }
        let Some(l) = live.get_mut(&run) else {
            return;
        };
        let to = l.prompt.client_id.clone();
        let to = to.as_deref();
        let pid = l.prompt.prompt_id.clone();
        let node = event["node"]
            .as_str()
            .map(|n| l.prompt.comfy_id(n).to_string());
        match kind {
            "node_cached" => {
                if let Some(n) = node {
                    if !l.cached_sent {
                        l.cached.push(n.clone());
                    }
                    l.all_cached.push(n);
                }
            }
            "node_started" => {
                self.flush_cached(l);
                self.send(
                    to,
                    "executing",
                    json!({"node": node, "display_node": node, "prompt_id": pid}),
                );
                l.current = node.clone();
                if let (Ok(mut now), Some(client), Some(n)) = (self.executing.lock(), to, node) {
                    *now = Some((client.to_string(), pid.clone(), n));
                }
            }
            "progress" => {
                self.flush_cached(l);
                self.send(
                    to,
                    "progress",
                    json!({"value": event["step"], "max": event["total"], "prompt_id": pid, "node": node}),
                );
            }
            "output" => {
                if let (Some(n), Some(path)) = (node, event["path"].as_str()) {
                    l.images.entry(n).or_default().push(image_ref(path));
                }
            }
            "node_finished" => {
                if let Some(n) = node {
                    l.executed.push(n.clone());
                    if let Some(images) = l.images.remove(&n) {
                        if l.prompt.outputs.contains(&n) {
                            self.remember_images(&identity(&l.prompt.prompt, &n), &images);
                        }
                        self.send(
                            to,
                            "executed",
                            json!({"node": n, "display_node": n, "output": {"images": images}, "prompt_id": pid}),
                        );
                    }
                }
            }
            "error" => {
                self.flush_cached(l);
                // A cancelled run ends with an error without a node: interrupted, below.
                if event["node"].is_null() && event["message"] == "run cancelled" {
                    return;
                }
                let at = node.or_else(|| l.current.clone());
                let message = event["message"].as_str().unwrap_or("").to_string();
                self.error(l, at, &message, "weft.NodeError");
            }
            "invalid" => {
                self.flush_cached(l);
                let errors = event["errors"].as_array().cloned().unwrap_or_default();
                let at = errors
                    .iter()
                    .find_map(|e| e["node"].as_str())
                    .map(|n| l.prompt.comfy_id(n).to_string());
                let message: Vec<&str> = errors
                    .iter()
                    .filter_map(|e| e["message"].as_str())
                    .collect();
                self.error(l, at, &message.join("\n"), "weft.InvalidWorkflow");
            }
            "run_finished" => {
                self.flush_cached(l);
                match event["status"].as_str().unwrap_or("") {
                    "succeeded" => {
                        // Cached output nodes: the images saved when they last ran.
                        for out in &l.prompt.outputs {
                            if !l.all_cached.contains(out) {
                                continue;
                            }
                            if let Some(images) =
                                self.recall_images(&identity(&l.prompt.prompt, out))
                            {
                                self.send(
                                    to,
                                    "executed",
                                    json!({"node": out, "display_node": out, "output": {"images": images}, "prompt_id": pid}),
                                );
                            }
                        }
                        self.send(
                            to,
                            "execution_success",
                            json!({"prompt_id": pid, "timestamp": ts()}),
                        )
                    }
                    "cancelled" => {
                        let at = l.current.clone();
                        let ty = at
                            .as_deref()
                            .and_then(|n| l.prompt.class(n))
                            .map(str::to_string);
                        self.send(
                            to,
                            "execution_interrupted",
                            json!({"prompt_id": pid, "node_id": at, "node_type": ty,
                                   "executed": l.executed, "timestamp": ts()}),
                        );
                    }
                    status => {
                        if !l.error_sent {
                            let at = l.current.clone();
                            self.error(l, at, &format!("the run {status}"), "weft.RunFailed");
                        }
                    }
                }
                // As ComfyUI: the queue's status, then `executing` with no node.
                self.send(
                    None,
                    "status",
                    json!({"status": {"exec_info": {"queue_remaining": queue_remaining(store, queue)}}}),
                );
                self.send(
                    to,
                    "executing",
                    json!({"node": null, "display_node": null, "prompt_id": pid}),
                );
                if let Ok(mut now) = self.executing.lock() {
                    *now = None;
                }
                live.remove(&run);
                if let Ok(mut prompts) = self.live.lock() {
                    prompts.remove(&run);
                }
            }
            _ => {}
        }
    }

    fn error(&self, l: &mut Live, at: Option<String>, message: &str, kind: &str) {
        l.error_sent = true;
        let ty = at
            .as_deref()
            .and_then(|n| l.prompt.class(n))
            .map(str::to_string);
        let mut current_outputs = l.cached.clone();
        current_outputs.extend(l.executed.iter().cloned());
        self.send(
            l.prompt.client_id.as_deref(),
            "execution_error",
            json!({
                "prompt_id": l.prompt.prompt_id, "node_id": at, "node_type": ty,
                "executed": l.executed, "exception_message": message, "exception_type": kind,
                "traceback": [], "current_inputs": {}, "current_outputs": current_outputs,
                "timestamp": ts(),
            }),
        );
    }
}
