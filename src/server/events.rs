//! The server's events: one typed enum for every message the hub carries to /ws clients, the
//! ComfyUI translator and (in a fleet) the other machines. Each event is serialised once, when
//! it is sent; that JSON text is what /ws clients receive, what the ring counts, and what crosses
//! machines, where it is parsed back into the enum. The editor's TypeScript types are generated
//! from these declarations (`weft event-types`, web-ui/src/generated/events.ts).
use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_engine::{Diagnostic, Event};

use super::store::RunState;

/// Every message on weft's /ws, tagged by `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerEvent {
    /// What runs now and what waits (the first message a client gets, then on changes).
    Queue {
        running: Option<u64>,
        /// The first queued runs, oldest first.
        queued: Vec<u64>,
        /// All queued runs.
        queued_total: u64,
    },
    RunQueued {
        run: u64,
    },
    RunStarted {
        run: u64,
        /// Nodes the outputs need.
        planned: usize,
        /// Their ids, in the order they run or are served: a subgraph's node in the editor
        /// is done only when every one of its inner nodes listed here is.
        nodes: Vec<String>,
    },
    Invalid {
        run: u64,
        errors: Vec<Diagnostic>,
    },
    NodeCached {
        run: u64,
        node: String,
        /// Read from the disk tier of the cache (written by an earlier process).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        from_disk: bool,
        /// An output node's value when it is a number, text or flag (what ShowInt shows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<NodeValue>,
    },
    NodeStarted {
        run: u64,
        node: String,
        #[serde(rename = "type")]
        type_name: String,
        /// Why it was not taken from the cache: which inputs or upstream nodes changed since
        /// the last run that planned it, or "first run".
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        why: Vec<String>,
    },
    Progress {
        run: u64,
        node: String,
        step: u32,
        total: u32,
        /// `data:image/png;base64,...` every few steps when previews are asked for (only on
        /// the hub's lossy preview ring).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
    },
    Output {
        run: u64,
        node: String,
        /// Relative to the outputs folder (`RUN/FILE.png`).
        path: String,
        /// Written by an earlier run whose result the cache served for this one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cached: bool,
        /// Where the API serves it.
        url: String,
    },
    /// A node's news that is not a failure (e.g. an image the safety filter flagged).
    Notice {
        run: u64,
        node: String,
        message: String,
    },
    NodeFinished {
        run: u64,
        node: String,
        micros: u64,
        /// An output node's value when it is a number, text or flag (what ShowInt shows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<NodeValue>,
    },
    Error {
        run: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        message: String,
        /// The error that ends a cancelled run (no node failed).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cancelled: bool,
    },
    RunFinished {
        run: u64,
        status: RunState,
        ran: usize,
        cached: usize,
        micros: u64,
    },
    SweepFinished {
        sweep: u64,
        /// The sweep's status, as `/api/sweeps/{id}` says it.
        status: String,
        /// The grid image's URL, once composed.
        grid: Option<String>,
    },
    /// A workflow file changed on disk and is valid.
    WorkflowChanged {
        name: String,
        revision: String,
        /// The subgraph files whose change this is (the workflow's own text did not change).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        because: Option<Vec<String>>,
    },
    /// A workflow file changed on disk and does not validate.
    WorkflowInvalid {
        name: String,
        revision: String,
        diagnostics: Vec<Diagnostic>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        because: Option<Vec<String>>,
    },
    WorkflowDeleted {
        name: String,
    },
    /// A message too large to send whose parts could not be cut down; `omitted` says how large.
    Omitted,
    /// A worker's marker in its own hub: every event sent before it has been forwarded to the
    /// API servers once the forwarder reaches it. Never leaves the process.
    #[schemars(skip)]
    FleetFlush {
        upto: u64,
    },
}

/// An output node's value (what ShowInt and ShowText show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum NodeValue {
    Flag(bool),
    Number(serde_json::Number),
    Text(String),
}

impl NodeValue {
    /// The engine's value, when it is one a node shows (a number, text or flag).
    fn from_json(value: Value) -> Option<Self> {
        match value {
            Value::Bool(flag) => Some(Self::Flag(flag)),
            Value::Number(n) => Some(Self::Number(n)),
            Value::String(text) => Some(Self::Text(text)),
            _ => None,
        }
    }
}

/// Said beside a message that was cut short: how large it was and where the API returns it
/// whole (`/api/runs/{run}` for a run's event, `/api/workflows/{name}` for a workflow's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Omitted {
    pub bytes: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A message as it goes on the wire: the event, and `omitted` when it was cut short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WireEvent {
    #[serde(flatten)]
    pub event: ServerEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted: Option<Omitted>,
}

/// One event on the hub, with its JSON text made once when it was sent.
#[derive(Debug)]
pub struct Broadcast {
    wire: WireEvent,
    json: Arc<str>,
}

/// The largest message broadcast as it is; a larger one is cut short.
pub const INLINE_BYTES: usize = 64 << 10;
/// Items kept of a list in a message that was cut short.
const KEPT_ITEMS: usize = 3;
/// Characters kept of any one text in a message that was cut short.
const KEPT_CHARS: usize = 512;

impl Broadcast {
    /// `event` ready to broadcast: as it is when its JSON is at most [`INLINE_BYTES`], else cut
    /// short (see [`Broadcast::fitting`]).
    pub fn new(event: ServerEvent) -> Arc<Self> {
        Arc::new(Self::fitting(event, None, INLINE_BYTES))
    }

    /// A message from another machine (a fleet's NOTIFY payload), checked against the enum.
    pub fn parse(text: &str) -> Result<Arc<Self>, serde_json::Error> {
        let wire: WireEvent = serde_json::from_str(text)?;
        if matches!(wire.event, ServerEvent::FleetFlush { .. }) {
            return Err(serde::de::Error::custom(
                "a worker's flush marker never crosses machines",
            ));
        }
        let json = to_json(&wire);
        Ok(Arc::new(Self { wire, json }))
    }

    /// `event` as it is when its JSON is at most `max_bytes`; else cut short: the first few
    /// items of its lists, every long text cut, and `omitted` saying how large it was and
    /// where the API returns it whole; when even that is too large, an `omitted` event only.
    pub fn fitting(event: ServerEvent, omitted: Option<Omitted>, max_bytes: usize) -> Self {
        let wire = WireEvent { event, omitted };
        let json = to_json(&wire);
        if json.len() <= max_bytes {
            return Self { wire, json };
        }
        let said = Omitted {
            // What it was first, when it was cut short on an earlier machine.
            bytes: wire.omitted.as_ref().map_or(json.len(), |o| o.bytes),
            url: wire.event.whole_url(),
        };
        for (items, chars) in [(KEPT_ITEMS, KEPT_CHARS), (1, 64)] {
            let mut event = wire.event.clone();
            event.cut(items, chars);
            let cut = WireEvent {
                event,
                omitted: Some(said.clone()),
            };
            let json = to_json(&cut);
            if json.len() <= max_bytes {
                return Self { wire: cut, json };
            }
        }
        let only = WireEvent {
            event: ServerEvent::Omitted,
            omitted: Some(said),
        };
        let json = to_json(&only);
        Self { wire: only, json }
    }

    pub fn event(&self) -> &ServerEvent {
        &self.wire.event
    }

    /// Whether it was cut short, and how.
    pub fn omitted(&self) -> Option<&Omitted> {
        self.wire.omitted.as_ref()
    }

    /// weft's /ws JSON text of it.
    pub fn json(&self) -> &Arc<str> {
        &self.json
    }

    /// This message cut to at most `max_bytes` of JSON (a NOTIFY payload's limit).
    pub fn fit(&self, max_bytes: usize) -> Arc<str> {
        if self.json.len() <= max_bytes {
            return self.json.clone();
        }
        Self::fitting(
            self.wire.event.clone(),
            self.wire.omitted.clone(),
            max_bytes,
        )
        .json
    }
}

fn to_json(wire: &WireEvent) -> Arc<str> {
    // Serialising plain data to a string has no way to fail.
    serde_json::to_string(wire)
        .unwrap_or_else(|e| format!("{{\"event\":\"omitted\",\"error\":\"{e}\"}}"))
        .into()
}

impl ServerEvent {
    /// The run the event is about.
    pub fn run(&self) -> Option<u64> {
        match self {
            Self::RunQueued { run }
            | Self::RunStarted { run, .. }
            | Self::Invalid { run, .. }
            | Self::NodeCached { run, .. }
            | Self::NodeStarted { run, .. }
            | Self::Progress { run, .. }
            | Self::Output { run, .. }
            | Self::Notice { run, .. }
            | Self::NodeFinished { run, .. }
            | Self::Error { run, .. }
            | Self::RunFinished { run, .. } => Some(*run),
            Self::Queue { .. }
            | Self::SweepFinished { .. }
            | Self::WorkflowChanged { .. }
            | Self::WorkflowInvalid { .. }
            | Self::WorkflowDeleted { .. }
            | Self::Omitted
            | Self::FleetFlush { .. } => None,
        }
    }

    /// The node the event is about.
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::NodeCached { node, .. }
            | Self::NodeStarted { node, .. }
            | Self::Progress { node, .. }
            | Self::Output { node, .. }
            | Self::Notice { node, .. }
            | Self::NodeFinished { node, .. } => Some(node),
            Self::Error { node, .. } => node.as_deref(),
            _ => None,
        }
    }

    /// Where the API returns what this event is about whole.
    fn whole_url(&self) -> Option<String> {
        match self {
            Self::WorkflowChanged { name, .. }
            | Self::WorkflowInvalid { name, .. }
            | Self::WorkflowDeleted { name } => Some(format!("/api/workflows/{name}")),
            Self::SweepFinished { sweep, .. } => Some(format!("/api/sweeps/{sweep}")),
            _ => self.run().map(|run| format!("/api/runs/{run}")),
        }
    }

    /// Keeps `items` of each list and `chars` of each text (ids are short; messages and
    /// diagnostics are what grow).
    fn cut(&mut self, items: usize, chars: usize) {
        match self {
            Self::Queue { queued, .. } => queued.truncate(items),
            Self::RunStarted { nodes, .. } => {
                nodes.truncate(items);
                nodes.iter_mut().for_each(|n| cut_text(n, chars));
            }
            Self::Invalid { errors, .. } => cut_diagnostics(errors, items, chars),
            Self::NodeCached { node, value, .. } | Self::NodeFinished { node, value, .. } => {
                cut_text(node, chars);
                if let Some(NodeValue::Text(text)) = value {
                    cut_text(text, chars);
                }
            }
            Self::NodeStarted {
                node,
                type_name,
                why,
                ..
            } => {
                cut_text(node, chars);
                cut_text(type_name, chars);
                why.truncate(items);
                why.iter_mut().for_each(|w| cut_text(w, chars));
            }
            Self::Progress { node, preview, .. } => {
                cut_text(node, chars);
                *preview = None;
            }
            Self::Output {
                node, path, url, ..
            } => {
                cut_text(node, chars);
                cut_text(path, chars);
                cut_text(url, chars);
            }
            Self::Notice { node, message, .. } => {
                cut_text(node, chars);
                cut_text(message, chars);
            }
            Self::Error { node, message, .. } => {
                if let Some(node) = node {
                    cut_text(node, chars);
                }
                cut_text(message, chars);
            }
            Self::SweepFinished { grid, .. } => {
                if let Some(grid) = grid {
                    cut_text(grid, chars);
                }
            }
            Self::WorkflowChanged { because, .. } => cut_because(because, items, chars),
            Self::WorkflowInvalid {
                diagnostics,
                because,
                ..
            } => {
                cut_diagnostics(diagnostics, items, chars);
                cut_because(because, items, chars);
            }
            Self::RunQueued { .. }
            | Self::RunFinished { .. }
            | Self::WorkflowDeleted { .. }
            | Self::Omitted
            | Self::FleetFlush { .. } => {}
        }
    }

    /// A run's event from the engine as clients see it: `output_path` makes an output's
    /// server path the path under the outputs folder and its URL.
    pub fn from_engine(event: &Event, output_path: impl Fn(&Path) -> String) -> Self {
        match event.clone() {
            Event::RunQueued { run } => Self::RunQueued { run },
            Event::RunStarted {
                run,
                planned,
                nodes,
            } => Self::RunStarted {
                run,
                planned,
                nodes,
            },
            Event::Invalid { run, errors } => Self::Invalid { run, errors },
            Event::NodeCached {
                run,
                node,
                from_disk,
                value,
            } => Self::NodeCached {
                run,
                node,
                from_disk,
                value: value.and_then(NodeValue::from_json),
            },
            Event::NodeStarted {
                run,
                node,
                type_name,
                why,
            } => Self::NodeStarted {
                run,
                node,
                type_name,
                why,
            },
            Event::Progress {
                run,
                node,
                step,
                total,
                preview,
            } => Self::Progress {
                run,
                node,
                step,
                total,
                preview,
            },
            Event::Output {
                run,
                node,
                path,
                cached,
            } => {
                let path = output_path(&path);
                Self::Output {
                    run,
                    node,
                    url: format!("/api/outputs/{path}"),
                    path,
                    cached,
                }
            }
            Event::Notice { run, node, message } => Self::Notice { run, node, message },
            Event::NodeFinished {
                run,
                node,
                micros,
                value,
            } => Self::NodeFinished {
                run,
                node,
                micros,
                value: value.and_then(NodeValue::from_json),
            },
            Event::Error {
                run,
                node,
                message,
                cancelled,
            } => Self::Error {
                run,
                node,
                message,
                cancelled,
            },
            Event::RunFinished {
                run,
                status,
                ran,
                cached,
                micros,
            } => Self::RunFinished {
                run,
                status: status.into(),
                ran,
                cached,
                micros,
            },
        }
    }
}

fn cut_text(text: &mut String, chars: usize) {
    if text.len() <= chars {
        return;
    }
    let total = text.chars().count();
    if total <= chars {
        return;
    }
    let kept: String = text.chars().take(chars).collect();
    *text = format!("{kept}... ({total} characters)");
}

fn cut_diagnostics(diagnostics: &mut Vec<Diagnostic>, items: usize, chars: usize) {
    diagnostics.truncate(items);
    for d in diagnostics {
        cut_text(&mut d.message, chars);
        for text in [&mut d.node, &mut d.input, &mut d.hint]
            .into_iter()
            .flatten()
        {
            cut_text(text, chars);
        }
        if let Some(file) = &mut d.file {
            let mut text = file.to_string();
            cut_text(&mut text, chars);
            *file = text.into();
        }
    }
}

fn cut_because(because: &mut Option<Vec<String>>, items: usize, chars: usize) {
    if let Some(files) = because {
        files.truncate(items);
        files.iter_mut().for_each(|f| cut_text(f, chars));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_megabyte_diagnostic_is_broadcast_by_reference() {
        let errors: Vec<Diagnostic> = (0..2000)
            .map(|i| Diagnostic::new("x".repeat(500)).node(&format!("n{i}")))
            .collect();
        let whole = WireEvent {
            event: ServerEvent::Invalid { run: 7, errors },
            omitted: None,
        };
        let whole_bytes = serde_json::to_string(&whole).unwrap().len();
        assert!(whole_bytes > 1 << 20);
        let sent = Broadcast::new(whole.event);
        assert!(sent.json().len() < 4 << 10, "{} bytes", sent.json().len());
        let v: Value = serde_json::from_str(sent.json()).unwrap();
        assert_eq!(v["event"], "invalid");
        assert_eq!(v["errors"].as_array().unwrap().len(), KEPT_ITEMS);
        assert_eq!(v["errors"][0]["node"], "n0");
        assert_eq!(v["omitted"]["url"], "/api/runs/7");
        assert_eq!(v["omitted"]["bytes"], whole_bytes);
        let ServerEvent::Invalid { errors, .. } = sent.event() else {
            panic!("still the invalid event: {:?}", sent.event())
        };
        assert_eq!(errors.len(), KEPT_ITEMS);

        let one_huge = ServerEvent::WorkflowInvalid {
            name: "w".into(),
            revision: "r".into(),
            diagnostics: vec![Diagnostic::new("y".repeat(1 << 20))],
            because: None,
        };
        let v: Value = serde_json::from_str(Broadcast::new(one_huge).json()).unwrap();
        assert_eq!(v["omitted"]["url"], "/api/workflows/w");
        assert!(v["diagnostics"][0]["message"].as_str().unwrap().len() < 1024);

        let small = Broadcast::new(ServerEvent::RunQueued { run: 1 });
        assert_eq!(&**small.json(), r#"{"event":"run_queued","run":1}"#);
        assert!(small.omitted().is_none(), "small ones pass as they are");
    }

    #[test]
    fn events_keep_the_wire_format_the_editor_reads() {
        let cases = [
            (
                ServerEvent::Queue {
                    running: None,
                    queued: vec![3, 4],
                    queued_total: 2,
                },
                json!({"event": "queue", "running": null, "queued": [3, 4], "queued_total": 2}),
            ),
            (
                ServerEvent::NodeStarted {
                    run: 1,
                    node: "k".into(),
                    type_name: "KSampler".into(),
                    why: vec![],
                },
                json!({"event": "node_started", "run": 1, "node": "k", "type": "KSampler"}),
            ),
            (
                ServerEvent::Output {
                    run: 2,
                    node: "save".into(),
                    path: "2/a.png".into(),
                    cached: false,
                    url: "/api/outputs/2/a.png".into(),
                },
                json!({"event": "output", "run": 2, "node": "save", "path": "2/a.png", "url": "/api/outputs/2/a.png"}),
            ),
            (
                ServerEvent::RunFinished {
                    run: 2,
                    status: RunState::Cancelled,
                    ran: 1,
                    cached: 0,
                    micros: 5,
                },
                json!({"event": "run_finished", "run": 2, "status": "cancelled", "ran": 1, "cached": 0, "micros": 5}),
            ),
            (
                ServerEvent::NodeFinished {
                    run: 2,
                    node: "show".into(),
                    micros: 9,
                    value: Some(NodeValue::Number(42.into())),
                },
                json!({"event": "node_finished", "run": 2, "node": "show", "micros": 9, "value": 42}),
            ),
        ];
        for (event, expected) in cases {
            let sent = Broadcast::new(event.clone());
            let v: Value = serde_json::from_str(sent.json()).unwrap();
            assert_eq!(v, expected);
            let back = Broadcast::parse(sent.json()).unwrap();
            assert_eq!(back.event(), &event, "parsed back from {}", sent.json());
        }
    }

    #[test]
    fn an_event_cut_for_notify_still_parses_as_its_event() {
        let sent = Broadcast::new(ServerEvent::Error {
            run: 7,
            node: Some("save".into()),
            message: "z".repeat(20_000),
            cancelled: false,
        });
        let payload = sent.fit(8000);
        assert!(payload.len() <= 8000);
        let back = Broadcast::parse(&payload).unwrap();
        let ServerEvent::Error { node, message, .. } = back.event() else {
            panic!("an error still: {payload}")
        };
        assert_eq!(node.as_deref(), Some("save"));
        assert!(message.starts_with("zzz") && message.len() < 1024);
        assert_eq!(back.omitted().unwrap().url.as_deref(), Some("/api/runs/7"));
        assert!(back.omitted().unwrap().bytes > 20_000);
        assert!(
            Broadcast::parse(r#"{"event":"fleet_flush","upto":3}"#).is_err(),
            "markers stay in their process"
        );
        assert!(Broadcast::parse(r#"{"event":"node_finished","run":1}"#).is_err());
    }
}
