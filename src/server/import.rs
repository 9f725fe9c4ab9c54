//! `POST /api/import`: a ComfyUI file dropped on the editor (JSON of either form, or a PNG with
//! ComfyUI's text chunks; the bytes are sniffed) converted by `comfy::file::import_bytes`, the
//! importer `weft import` uses. Nothing is written: the answer is what `GET
//! /api/workflows/{name}` gives for a file (workflow, YAML text, diagnostics) plus the format and
//! the importer's notes; the editor opens it as a new, unsaved workflow.
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value as Json_};
use weft_engine::workflow::{InputValue, NodeEntry};
use weft_engine::Workflow;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::comfy::file::{import_bytes, FileError};
use crate::comfy::import::ImportOptions;
use crate::comfy::Issue;

/// Horizontal distance between the columns of a generated layout.
const COLUMN: f64 = 380.0;
/// A node's height in a generated layout: its header and a gap, and a row per socket or widget
/// (the editor draws every declared input and output).
const HEADER: f64 = 90.0;
const ROW: f64 = 34.0;

fn issue_json(issue: &Issue) -> Json_ {
    json!({
        "comfy_node": issue.node,
        "class_type": issue.class,
        "input": issue.input,
        "message": issue.message,
        "hint": issue.hint,
        "text": issue.to_string(),
    })
}

/// Positions for a workflow without any (ComfyUI's API format keeps no layout): a column per
/// link depth, loaders on the left, nodes one under the other in file order within a column,
/// each taking the height of its `rows` (sockets and widgets).
pub fn layered_layout(workflow: &mut Workflow, rows: impl Fn(&NodeEntry) -> usize) {
    let mut depth: indexmap::IndexMap<&str, usize> =
        workflow.nodes.keys().map(|id| (id.as_str(), 0)).collect();
    // Longest path from a node without links; at most one pass per node (no cycles come from
    // the importer, and a cycle only stops the passes early).
    for _ in 0..workflow.nodes.len() {
        let mut changed = false;
        for (id, node) in &workflow.nodes {
            let deepest = node
                .inputs
                .values()
                .filter_map(|i| match &i.value {
                    InputValue::Link(l) => depth.get(l.node.as_str()).map(|d| d + 1),
                    InputValue::Constant(_) => None,
                })
                .max()
                .unwrap_or(0);
            if deepest > depth[id.as_str()] {
                depth.insert(id, deepest);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut next_y: Vec<f64> = Vec::new();
    let mut placed = Vec::new();
    for (id, node) in &workflow.nodes {
        let column = depth[id.as_str()];
        if next_y.len() <= column {
            next_y.resize(column + 1, 0.0);
        }
        placed.push((id.clone(), [column as f64 * COLUMN, next_y[column]]));
        next_y[column] += HEADER + ROW * rows(node) as f64;
    }
    workflow.layout.extend(placed);
}

/// The editor's node width and a gap after it, and a node's height without the gap.
const WIDTH: f64 = 260.0 + 40.0;
const BODY: f64 = 60.0;
const BODY_ROW: f64 = 26.0;

/// ComfyUI's positions spread apart horizontally where the editor's nodes, wider than many of
/// ComfyUI's, would overlap a neighbour: every x is scaled by one factor (at most 2.5), so the
/// picture keeps its shape. Nodes ComfyUI itself has nearly on top of each other stay so.
pub fn spread_for_editor(workflow: &mut Workflow, rows: impl Fn(&NodeEntry) -> usize) {
    let boxes: Vec<(f64, f64, f64)> = workflow
        .layout
        .iter()
        .filter_map(|(id, [x, y])| {
            let node = workflow.nodes.get(id)?;
            Some((*x, *y, BODY + BODY_ROW * rows(node) as f64))
        })
        .collect();
    let mut scale: f64 = 1.0;
    for (i, &(ax, ay, ah)) in boxes.iter().enumerate() {
        for &(bx, by, bh) in &boxes[i + 1..] {
            let dx = (bx - ax).abs();
            let side_by_side = ay < by + bh && by < ay + ah;
            if side_by_side && (40.0..WIDTH).contains(&dx) {
                scale = scale.max(WIDTH / dx);
            }
        }
    }
    let scale = scale.min(2.5);
    if scale > 1.0 {
        for [x, _] in workflow.layout.values_mut() {
            *x = (*x * scale).round();
        }
    }
}

/// The file's bytes, with our error shapes for a body over the limit.
async fn body_bytes(state: &AppState, request: Request) -> ApiResult<Bytes> {
    Bytes::from_request(request, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "imported files are limited to {} bytes",
                state.config.upload_limit
            ))
        } else {
            ApiError::BadRequest("the file could not be read".into())
        }
    })
}

pub async fn import(State(state): State<AppState>, request: Request) -> ApiResult<Json<Json_>> {
    let bytes = body_bytes(&state, request).await?;
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the body is empty: send a ComfyUI workflow (JSON) or a ComfyUI PNG".into(),
        ));
    }
    let options = ImportOptions {
        models: state
            .config
            .comfy_models
            .iter()
            .filter(|(comfy, _)| comfy != "*")
            .cloned()
            .collect(),
        missing_checkpoint: state
            .config
            .comfy_models
            .iter()
            .find(|(comfy, _)| comfy == "*")
            .map(|(_, weft)| (weft.clone(), state.roots.models.clone())),
        inputs_dir: state.inputs_ref.to_string_lossy().into_owned(),
    };
    let imported = tokio::task::spawn_blocking(move || import_bytes(&bytes, &options))
        .await
        .map_err(|e| ApiError::internal("importing a ComfyUI file", e))?;
    let mut imported = match imported {
        Ok(i) => i,
        Err(FileError::Issues(issues)) => {
            let count = issues.len();
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            return Err(ApiError::BadRequest(format!(
                "{count} error{} in this ComfyUI workflow; nothing was imported:\n{}",
                if count == 1 { "" } else { "s" },
                text.join("\n")
            )));
        }
        Err(e @ FileError::NoWorkflowInPng) => {
            return Err(ApiError::BadRequest(format!(
                "{e}: it is a plain image, not a ComfyUI workflow"
            )))
        }
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "not a ComfyUI workflow: {e}; send ComfyUI JSON (API or UI format) or a PNG \
                 ComfyUI saved"
            )))
        }
    };
    let rows = |node: &NodeEntry| {
        state
            .registry
            .get(&node.type_name)
            .map_or(node.inputs.len(), |r| {
                r.spec.inputs.len() + r.spec.outputs.len()
            })
    };
    if imported.workflow.layout.is_empty() {
        layered_layout(&mut imported.workflow, rows);
    } else {
        spread_for_editor(&mut imported.workflow, rows);
    }
    let text = imported.workflow.to_yaml();
    // Located in the YAML a save would write, as GET /api/workflows/{name} locates them.
    let (checking_state, checked_text) = (state.clone(), text.clone());
    let diagnostics =
        super::checking::off_runtime(&state, "validating the imported workflow", move || {
            match Workflow::parse_str(&checked_text) {
                Ok(reread) => super::workflows::check(&checking_state, &reread),
                Err(d) => d,
            }
        })
        .await?;
    let ids: serde_json::Map<String, Json_> = imported
        .ids
        .iter()
        .map(|(comfy, weft)| (comfy.clone(), json!(weft)))
        .collect();
    Ok(Json(json!({
        "workflow": imported.workflow.to_json(),
        "text": text,
        "diagnostics": diagnostics,
        "format": imported.format.name(),
        "notes": imported.notes.iter().map(issue_json).collect::<Vec<_>>(),
        "ids": ids,
    })))
}
