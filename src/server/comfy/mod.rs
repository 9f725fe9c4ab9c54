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
use serde_json::{json, Map, Value as Json_};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use weft_engine::{Diagnostic, DiagnosticCode};

use super::hub::{Hub, Ring, Subscriber, Weight};
use super::queue::Queue;
pub use super::store::ComfyPrompt as Prompt;
use super::store::{RunRecord, RunState, RunStore, StoreError};
use super::ws_send::{client_left, close_too_slow, deliver, Delivery};
use super::{now_ms, AppState};
use crate::comfy::import::{import, ImportOptions};
use crate::comfy::object_info::{describe, object_info, FileLists};
use crate::comfy::{comfy_type, Issue, Widget, CHECKPOINT_DIR, TYPES, VALUE_TYPES};

mod db;
mod errors;
mod events;
mod files;
mod frontend;
mod history;
mod object_info;
mod prompt;
mod queue;
pub mod routes;
mod socket;
mod userdata;

use errors::*;
use events::*;
pub use frontend::locate as locate_frontend;
use history::*;
use prompt::*;
pub use socket::ws_upgrade;

/// ComfyUI keeps this many prompts in its history.
pub(super) const MAXIMUM_HISTORY_SIZE: usize = 10_000;

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

/// The ComfyUI side of the server: the run store holding its prompts, the prompts in flight,
/// the channel to `/ws` clients that gave a clientId, and the model-name mapping of
/// `--comfy-model`.
pub struct Comfy {
    store: Arc<dyn RunStore>,
    /// Prompts queued or running, by run id (the rest are read from the table).
    live: Mutex<HashMap<u64, Arc<Prompt>>>,
    out: Ring<Arc<Outgoing>>,
    /// ComfyUI checkpoint name -> weft model name; `*` maps every name the models folder
    /// lacks.
    models: Vec<(String, String)>,
    device: String,
    /// The ComfyUI node now executing, for a client that reconnects: (client, prompt, node).
    executing: Mutex<Option<(String, String, String)>>,
    /// Serialises the frontend's settings writes (read, merge, write).
    settings_lock: tokio::sync::Mutex<()>,
    /// The runs' outputs (SaveImageWebsocket's images are read back from them: on a fleet's
    /// API server, from the storage the worker put them in before announcing them).
    outputs: Arc<crate::server::outputs::BlockingOutputs>,
}

impl Comfy {
    /// Starts the translator thread on the hub (`config`: the `--comfy-model` names, the
    /// socket ring's capacity); prompts are kept in `store`, next to their runs.
    pub fn start(
        config: &super::Config,
        outputs: Arc<crate::server::outputs::BlockingOutputs>,
        device: String,
        store: Arc<dyn RunStore>,
        hub: &Hub,
        queue: Arc<Queue>,
    ) -> Result<Arc<Self>, String> {
        let models = config.comfy_models.clone();
        let capacity = config.client_buffer;
        let out = Ring::new(capacity);
        let comfy = Arc::new(Self {
            store: store.clone(),
            live: Mutex::new(HashMap::new()),
            out,
            models,
            device,
            executing: Mutex::new(None),
            settings_lock: tokio::sync::Mutex::new(()),
            outputs,
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

    /// The checkpoint names `--comfy-model` adds to the files: each mapped ComfyUI name, and
    /// for `*=NAME` the weft model NAME itself (a client taking the first choice gets one
    /// that runs).
    fn checkpoint_names(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|(comfy, weft)| if comfy == "*" { weft } else { comfy })
            .cloned()
            .collect()
    }

    fn send(&self, to: Option<&str>, kind: &str, data: Json_) {
        let text = json!({"type": kind, "data": data}).to_string();
        self.out.send(Arc::new(Outgoing {
            to: to.map(str::to_string),
            frame: Frame::Text(text.into()),
        }));
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
