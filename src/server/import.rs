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
    // Longest path from a node without links, in one topological pass (Kahn's): linear, where
    // relaxing every link once per node was quadratic on a long chain listed backwards. Nodes
    // on a cycle (the importer makes none) keep the depth their other inputs gave them.
    let count = workflow.nodes.len();
    let mut waiting = vec![0usize; count];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (index, node) in workflow.nodes.values().enumerate() {
        for input in node.inputs.values() {
            if let InputValue::Link(l) = &input.value {
                if let Some(upstream) = workflow.nodes.get_index_of(&l.node) {
                    waiting[index] += 1;
                    downstream[upstream].push(index);
                }
            }
        }
    }
    let mut depth = vec![0usize; count];
    let mut ready: Vec<usize> = (0..count).filter(|&i| waiting[i] == 0).collect();
    while let Some(upstream) = ready.pop() {
        for &index in &downstream[upstream] {
            depth[index] = depth[index].max(depth[upstream] + 1);
            waiting[index] -= 1;
            if waiting[index] == 0 {
                ready.push(index);
            }
        }
    }
    let mut next_y: Vec<f64> = Vec::new();
    let mut placed = Vec::new();
    for ((id, node), &column) in workflow.nodes.iter().zip(&depth) {
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
    let mut boxes: Vec<(f64, f64, f64)> = workflow
        .layout
        .iter()
        .filter_map(|(id, [x, y])| {
            let node = workflow.nodes.get(id)?;
            Some((*x, *y, BODY + BODY_ROW * rows(node) as f64))
        })
        .collect();
    // By x, so each box meets only the boxes less than a node width to its right; pairs are
    // counted, so a crowd of boxes in one narrow band cannot make this quadratic (past the
    // budget the scale found so far stands: it is only how far apart nodes are drawn).
    boxes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut pairs_left = SPREAD_PAIRS;
    let mut scale: f64 = 1.0;
    'boxes: for (i, &(ax, ay, ah)) in boxes.iter().enumerate() {
        for &(bx, by, bh) in &boxes[i + 1..] {
            let dx = bx - ax;
            if dx >= WIDTH {
                break;
            }
            if pairs_left == 0 || scale >= MAX_SPREAD {
                break 'boxes;
            }
            pairs_left -= 1;
            let side_by_side = ay < by + bh && by < ay + ah;
            if side_by_side && dx >= 40.0 {
                scale = scale.max(WIDTH / dx);
            }
        }
    }
    let scale = scale.min(MAX_SPREAD);
    if scale > 1.0 {
        for [x, _] in workflow.layout.values_mut() {
            *x = (*x * scale).round();
        }
        // Groups stretch with the nodes they hold.
        for g in &mut workflow.groups {
            g.bounds[0] = (g.bounds[0] * scale).round();
            g.bounds[2] = (g.bounds[2] * scale).round();
        }
        // And reroute points with the links they bend.
        for point in workflow.reroutes.values_mut() {
            point.at[0] = (point.at[0] * scale).round();
        }
    }
}

/// The most `spread_for_editor` scales a layout by.
const MAX_SPREAD: f64 = 2.5;
/// Pairs of nearby boxes `spread_for_editor` compares at most (far more than any real
/// workflow has; a fraction of a second).
const SPREAD_PAIRS: usize = 20_000_000;

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
            .map(|(_, weft)| (weft.clone(), state.roots.models.primary().to_path_buf())),
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
    // Layout, YAML and validation are CPU work on a workflow of any size: off the async
    // threads, under the deadline. Diagnostics are located in the YAML a save would write, as
    // GET /api/workflows/{name} locates them.
    let checking_state = state.clone();
    let (imported, text, diagnostics) =
        super::checking::off_runtime(&state, "laying out and validating the import", move || {
            let rows = |node: &NodeEntry| {
                checking_state
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
            let diagnostics = match Workflow::parse_str(&text) {
                Ok(reread) => super::workflows::check(&checking_state, None, &reread),
                Err(d) => d,
            };
            (imported, text, diagnostics)
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Far above what linear work takes, far below what quadratic work on 100k nodes takes.
    const GENEROUS: Duration = Duration::from_secs(10);

    /// n0 -> n1 -> ... -> n{count-1}, listed last first.
    fn backwards_chain(count: usize) -> Workflow {
        let mut wf = Workflow::new();
        for i in (0..count).rev() {
            let node = if i == 0 {
                NodeEntry::new("Int").with("value", 1i64)
            } else {
                NodeEntry::new("AddInt")
                    .link("a", &format!("n{}", i - 1), "sum")
                    .with("b", 1i64)
            };
            wf.add(&format!("n{i}"), node);
        }
        wf
    }

    #[test]
    fn layered_layout_of_a_backwards_100k_chain_is_linear() {
        let mut wf = backwards_chain(100_000);
        let started = Instant::now();
        layered_layout(&mut wf, |_| 2);
        let took = started.elapsed();
        assert!(took < GENEROUS, "took {took:?}");
        assert_eq!(wf.layout["n0"], [0.0, 0.0]);
        assert_eq!(wf.layout["n3"], [3.0 * COLUMN, 0.0]);
        assert_eq!(wf.layout["n99999"], [99_999.0 * COLUMN, 0.0]);
    }

    #[test]
    fn layered_layout_puts_a_node_right_of_its_deepest_input() {
        // a -> b -> c, and a -> c: c sits in column 2, under nothing else there.
        let mut wf = Workflow::new();
        wf.add(
            "c",
            NodeEntry::new("AddInt")
                .link("a", "b", "sum")
                .link("b", "a", "value"),
        );
        wf.add("a", NodeEntry::new("Int").with("value", 1i64));
        wf.add(
            "b",
            NodeEntry::new("AddInt")
                .link("a", "a", "value")
                .with("b", 1i64),
        );
        wf.add("d", NodeEntry::new("Int").with("value", 2i64));
        layered_layout(&mut wf, |_| 1);
        assert_eq!(wf.layout["a"], [0.0, 0.0]);
        assert_eq!(wf.layout["d"], [0.0, HEADER + ROW]);
        assert_eq!(wf.layout["b"], [COLUMN, 0.0]);
        assert_eq!(wf.layout["c"], [2.0 * COLUMN, 0.0]);
    }

    /// Int nodes at the given positions.
    fn placed(positions: impl Iterator<Item = (f64, f64)>) -> Workflow {
        let mut wf = Workflow::new();
        for (i, (x, y)) in positions.enumerate() {
            let id = format!("n{i}");
            wf.add(&id, NodeEntry::new("Int").with("value", 1i64));
            wf.layout.insert(id, [x, y]);
        }
        wf
    }

    #[test]
    fn spreading_a_row_of_200k_crowded_nodes_is_linear() {
        // Comparing every pair was 2 * 10^10 comparisons.
        let mut wf = placed((0..200_000).map(|i| (i as f64 * 200.0, 0.0)));
        let started = Instant::now();
        spread_for_editor(&mut wf, |_| 1);
        let took = started.elapsed();
        assert!(took < GENEROUS, "took {took:?}");
        // 200 apart where the editor's nodes need 300: everything is spread by 1.5.
        assert_eq!(wf.layout["n1"], [300.0, 0.0]);
        assert_eq!(wf.layout["n199999"], [199_999.0 * 300.0, 0.0]);
    }

    #[test]
    fn spreading_200k_nodes_in_one_narrow_band_stays_bounded() {
        // Two columns 100 apart, every node at its own height: each box has 100k others
        // within a node width and none beside it, the worst case of the sweep.
        let mut wf = placed((0..200_000).map(|i| ((i % 2) as f64 * 100.0, i as f64 * 1000.0)));
        let started = Instant::now();
        spread_for_editor(&mut wf, |_| 1);
        let took = started.elapsed();
        assert!(took < GENEROUS, "took {took:?}");
        assert_eq!(wf.layout["n1"], [100.0, 1000.0]);
    }

    #[test]
    fn nodes_side_by_side_spread_apart_as_before() {
        let mut wf = placed([(0.0, 0.0), (150.0, 10.0), (1000.0, 0.0)].into_iter());
        spread_for_editor(&mut wf, |_| 1);
        assert_eq!(wf.layout["n1"], [300.0, 10.0]);
        assert_eq!(wf.layout["n2"], [2000.0, 0.0]);
    }
}
