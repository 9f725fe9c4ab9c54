//! Events of a run: one node's news each, so traffic grows with the nodes that run.
use std::path::PathBuf;

use serde::Serialize;

use crate::diagnostic::Diagnostic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Cancelled,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
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
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        from_disk: bool,
        /// An output node's value when it is a number, text or flag (what ShowInt shows).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
    },
    NodeStarted {
        run: u64,
        node: String,
        #[serde(rename = "type")]
        type_name: String,
        /// Why it was not taken from the cache: which inputs or upstream nodes changed since
        /// the last run that planned it, or "first run".
        #[serde(skip_serializing_if = "Vec::is_empty")]
        why: Vec<String>,
    },
    Progress {
        run: u64,
        node: String,
        step: u32,
        total: u32,
        /// `data:image/png;base64,...` every few steps when the executor is asked for previews.
        #[serde(skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
    },
    Output {
        run: u64,
        node: String,
        path: PathBuf,
        /// Written by an earlier run whose result the cache served for this one.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cached: bool,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
    },
    Error {
        run: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        message: String,
        /// The run was cancelled (the error that ends a cancelled run): a client tells a
        /// cancellation from a failure by this, not by the message.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cancelled: bool,
    },
    RunFinished {
        run: u64,
        status: RunStatus,
        ran: usize,
        cached: usize,
        micros: u64,
    },
}
