//! `GET /api/nodes`: the node catalogue straight from the Rust declarations (as `weft schema`
//! reads them), with model and image choices listed at request time, and an ETag.
use std::path::Path;

use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

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

/// A library subgraph's entry names its file (`subgraph`, and its doc) relative to the
/// workflows folder, `lib/NAME.yaml`, as the editor and the workflow files do: the server's
/// own folders are not the client's business.
fn name_files_as_the_user_does(entry: &mut serde_json::Value, workflows: &Path) {
    let Some(file) = entry["subgraph"].as_str().map(std::path::PathBuf::from) else {
        return;
    };
    let Ok(relative) = file.strip_prefix(workflows) else {
        return;
    };
    let relative = relative.to_string_lossy().replace('\\', "/");
    entry["subgraph"] = json!(relative);
    if let Some(doc) = entry["doc"].as_str() {
        entry["doc"] = json!(doc.replace(&file.display().to_string(), &relative));
    }
}

/// The catalogue as JSON text (so the ETag is the hash of exactly what is sent): the
/// engine's catalogue (as `weft nodes --json` prints it, model names listed from the models
/// folder now), with LoadImage's path offering the images in the inputs folder.
pub fn catalogue(state: &AppState) -> String {
    let mut catalogue =
        weft_engine::catalogue::node_catalogue(&state.registry, Some(&state.roots.models));
    let images = image_choices(&state.roots.inputs, &state.inputs_ref);
    if let Some(nodes) = catalogue["nodes"].as_array_mut() {
        // Library subgraphs (workflows/lib/NAME.yaml) are node types like the others.
        let mut library = weft_engine::catalogue::subgraph_catalogue(
            &state.registry,
            &super::workflows::library(state),
        );
        for subgraph in &mut library {
            name_files_as_the_user_does(subgraph, &state.roots.workflows);
        }
        nodes.extend(library);
        for node in nodes.iter_mut().filter(|n| n["type"] == "LoadImage") {
            if let Some(inputs) = node["inputs"].as_array_mut() {
                for input in inputs.iter_mut().filter(|i| i["name"] == "path") {
                    if input.get("choices").is_none() {
                        input["choices"] = json!(images);
                        input["choices_from"] = json!("inputs");
                    }
                }
            }
        }
    }
    catalogue.to_string()
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
