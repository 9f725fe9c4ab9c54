//! The translator: weft's typed events from the hub become ComfyUI's messages for the prompts
//! posted here, with ComfyUI's node ids; step previews become its binary frames.
use super::*;
use crate::server::events::{Broadcast, ServerEvent};

/// What the translator knows of a prompt while it runs.
pub(super) struct Live {
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

pub(super) fn translate_loop(
    comfy: Arc<Comfy>,
    mut events: Subscriber<Arc<Broadcast>>,
    store: Arc<dyn RunStore>,
    queue: Arc<Queue>,
) {
    let mut live: HashMap<u64, Live> = HashMap::new();
    loop {
        let message = match events.blocking_recv() {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                eprintln!("weft serve: the ComfyUI translator missed {n} events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        comfy.translate(message.event(), &mut live, &*store, &queue);
    }
}

/// The message type weft's own frontend extension (frontend/follow_yaml.js) listens for on
/// ComfyUI's socket: a workflow file changed on disk. ComfyUI's clients ignore types they do
/// not know.
pub(super) const WORKFLOW_FILE_MESSAGE: &str = "weft.workflow_file";

/// The watcher's `workflow_changed`, `workflow_invalid` or `workflow_deleted` as the data of a
/// [`WORKFLOW_FILE_MESSAGE`]: the event, the workflow's name and its path among the
/// frontend's user files (`workflows/NAME.json`, what its workflow tabs are keyed by).
pub(super) fn workflow_file_message(event: &ServerEvent) -> Option<Json_> {
    let (kind, name, revision, diagnostics) = match event {
        ServerEvent::WorkflowChanged { name, revision, .. } => {
            ("workflow_changed", name, Some(revision), None)
        }
        ServerEvent::WorkflowInvalid {
            name,
            revision,
            diagnostics,
            ..
        } => ("workflow_invalid", name, Some(revision), Some(diagnostics)),
        ServerEvent::WorkflowDeleted { name } => ("workflow_deleted", name, None, None),
        _ => return None,
    };
    let mut data = json!({
        "event": kind,
        "name": name,
        "path": format!("workflows/{name}.json"),
    });
    if let Some(revision) = revision {
        data["revision"] = json!(revision);
    }
    if let Some(diagnostics) = diagnostics {
        data["diagnostics"] = json!(diagnostics);
    }
    Some(data)
}

/// ComfyUI's binary image frame: event 1 (PREVIEW_IMAGE), image type 2 (PNG), the PNG.
pub(super) fn image_frame(png: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(png.len() + 8);
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&2u32.to_be_bytes());
    frame.extend_from_slice(png);
    frame
}

/// Step previews travel in the hub's own lossy ring (a slow reader skips some): each goes to
/// the client of its prompt as ComfyUI's binary frame, when that prompt asked for previews.
pub(super) fn preview_loop(comfy: Arc<Comfy>, mut previews: broadcast::Receiver<Arc<Broadcast>>) {
    loop {
        let message = match previews.blocking_recv() {
            Ok(m) => m,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let ServerEvent::Progress {
            run,
            preview: Some(preview),
            ..
        } = message.event()
        else {
            continue;
        };
        let Some(prompt) = comfy.prompt_of_run(*run) else {
            continue;
        };
        let png = Some(preview.as_str())
            .filter(|_| prompt.wants_previews())
            .and_then(|p| p.strip_prefix("data:image/png;base64,"))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        if let Some(png) = png {
            comfy.out.send(Arc::new(Outgoing {
                to: prompt.client_id.clone(),
                frame: Frame::Binary(image_frame(&png).into()),
            }));
        }
    }
}

pub(super) fn ts() -> i64 {
    now_ms()
}

impl Comfy {
    pub(super) fn begin(&self, run: u64, live: &mut HashMap<u64, Live>) -> bool {
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
    pub(super) fn flush_cached(&self, l: &mut Live) {
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

    pub(super) fn translate(
        &self,
        event: &ServerEvent,
        live: &mut HashMap<u64, Live>,
        store: &dyn RunStore,
        queue: &Queue,
    ) {
        if let ServerEvent::Queue {
            running,
            queued_total,
            ..
        } = event
        {
            let remaining = usize::from(running.is_some()) + *queued_total as usize;
            self.send(
                None,
                "status",
                json!({"status": {"exec_info": {"queue_remaining": remaining}}}),
            );
            return;
        }
        if let Some(message) = workflow_file_message(event) {
            self.send(None, WORKFLOW_FILE_MESSAGE, message);
            return;
        }
        let Some(run) = event.run() else {
            return;
        };
        let starts = matches!(
            event,
            ServerEvent::RunStarted { .. }
                | ServerEvent::Invalid { .. }
                | ServerEvent::RunFinished { .. }
        );
        if starts && !self.begin(run, live) {
            return;
        }
        let Some(l) = live.get_mut(&run) else {
            return;
        };
        let to = l.prompt.client_id.clone();
        let to = to.as_deref();
        let pid = l.prompt.prompt_id.clone();
        let node = event.node().map(|n| l.prompt.comfy_id(n).to_string());
        match event {
            ServerEvent::NodeCached { .. } => {
                if let Some(n) = node {
                    if !l.cached_sent {
                        l.cached.push(n.clone());
                    }
                    l.all_cached.push(n);
                }
            }
            ServerEvent::NodeStarted { .. } => {
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
            ServerEvent::Progress { step, total, .. } => {
                self.flush_cached(l);
                self.send(
                    to,
                    "progress",
                    json!({"value": step, "max": total, "prompt_id": pid, "node": node}),
                );
            }
            ServerEvent::Output { path, .. } => {
                if let Some(n) = node {
                    if l.prompt.class(&n) == Some("SaveImageWebsocket") {
                        self.send_image(to, path);
                    } else {
                        l.images.entry(n).or_default().push(image_ref(path));
                    }
                }
            }
            ServerEvent::NodeFinished { .. } => {
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
            ServerEvent::Error {
                message, cancelled, ..
            } => {
                self.flush_cached(l);
                // A cancelled run's error: interrupted, below, on its `run_finished`.
                if *cancelled {
                    return;
                }
                let at = node.or_else(|| l.current.clone());
                self.error(l, at, message, "weft.NodeError");
            }
            ServerEvent::Invalid { errors, .. } => {
                self.flush_cached(l);
                let at = errors
                    .iter()
                    .find_map(|e| e.node.as_deref())
                    .map(|n| l.prompt.comfy_id(n).to_string());
                let message: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
                self.error(l, at, &message.join("\n"), "weft.InvalidWorkflow");
            }
            ServerEvent::RunFinished { status, .. } => {
                self.flush_cached(l);
                match status {
                    RunState::Succeeded => {
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
                    RunState::Cancelled => {
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
                            let message = format!("the run {}", status.as_str());
                            self.error(l, at, &message, "weft.RunFailed");
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

    /// A SaveImageWebsocket image to its client, as ComfyUI's node sends it: a binary frame
    /// while the node is the one executing. The image saved under the outputs is read back
    /// from their storage (a fleet's worker stores it before its `output` event goes out).
    pub(super) fn send_image(&self, to: Option<&str>, path: &str) {
        match self.outputs.get(path) {
            Ok(png) => self.out.send(Arc::new(Outgoing {
                to: to.map(str::to_string),
                frame: Frame::Binary(image_frame(&png).into()),
            })),
            Err(e) => eprintln!("weft serve: reading {path} for SaveImageWebsocket: {e}"),
        }
    }

    pub(super) fn error(&self, l: &mut Live, at: Option<String>, message: &str, kind: &str) {
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
