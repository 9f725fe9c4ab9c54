//! `GET /api/nodes`: the node catalogue straight from the Rust declarations (as `weft schema`
//! reads them), with model and image choices listed at request time, and an ETag.
use std::path::Path;

use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};
use weft_engine::node::InputSpec;
use weft_engine::ValueType;

use super::AppState;

/// Files a checkpoint loader can name: diffusers folders (with model_index.json) and
/// single-file checkpoints, at the top of the models folder or one level down.
fn checkpoint_choices(models: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut visit = |dir: &Path, prefix: &str| -> Vec<(std::path::PathBuf, String)> {
        let mut subdirs = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return subdirs;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let shown = format!("{prefix}{name}");
            if path.is_dir() {
                if path.join("model_index.json").is_file() {
                    found.push(shown);
                } else {
                    subdirs.push((path, format!("{shown}/")));
                }
            } else if name.ends_with(".safetensors") || name.ends_with(".ckpt") {
                found.push(shown);
            }
        }
        subdirs
    };
    for (dir, prefix) in visit(models, "") {
        visit(&dir, &prefix);
    }
    found.sort();
    found
}

/// Images a LoadImage node can name: the files of the inputs folder, as that node reads them.
fn image_choices(inputs: &Path, shown_as: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(inputs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let lower = name.to_ascii_lowercase();
            let image =
                lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg");
            (image && !name.starts_with('.'))
                .then(|| shown_as.join(&name).to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    found
}

fn input_json(input: &InputSpec, choices: Option<&[String]>) -> Json {
    let mut o = json!({
        "name": input.name,
        "type": input.ty,
        "doc": input.doc,
        "optional": input.optional,
        "link_only": !input.ty.accepts_constant(),
    });
    if let Some(d) = &input.default {
        o["default"] = json!(d);
    }
    if let Some(v) = input.min {
        o["min"] = json!(v);
    }
    if let Some(v) = input.max {
        o["max"] = json!(v);
    }
    if let Some(v) = input.step {
        o["step"] = json!(v);
    }
    match choices {
        Some(list) => o["choices"] = json!(list),
        None if !input.choices.is_empty() => o["choices"] = json!(input.choices),
        None => {}
    }
    o
}

/// The catalogue as JSON text (so the ETag is the hash of exactly what is sent).
pub fn catalogue(state: &AppState) -> String {
    let checkpoints = checkpoint_choices(&state.roots.models);
    let images = image_choices(&state.roots.inputs, &state.inputs_ref);
    let nodes: Vec<Json> = state
        .registry
        .iter()
        .map(|r| {
            let s = &r.spec;
            let inputs: Vec<Json> = s
                .inputs
                .iter()
                .map(|i| {
                    let free_text = i.ty == ValueType::String && i.choices.is_empty();
                    let choices = match (s.category, s.type_name, i.name) {
                        ("loaders", _, "name") if free_text => Some(checkpoints.as_slice()),
                        (_, "LoadImage", "path") if free_text => Some(images.as_slice()),
                        _ => None,
                    };
                    input_json(i, choices)
                })
                .collect();
            json!({
                "type": s.type_name,
                "category": s.category,
                "doc": s.doc,
                "version": s.version,
                "inputs": inputs,
                "outputs": s.outputs.iter().map(|o| json!({"name": o.name, "type": o.ty, "doc": o.doc})).collect::<Vec<_>>(),
                "output_node": s.output_node,
            })
        })
        .collect();
    json!({ "nodes": nodes }).to_string()
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let body = catalogue(&state);
    let hash = blake3::hash(body.as_bytes()).to_hex();
    let etag = format!("\"{}\"", &hash[..32]);
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag_value)]).into_response();
    }
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (ETAG, etag_value),
        ],
        body,
    )
        .into_response()
}
