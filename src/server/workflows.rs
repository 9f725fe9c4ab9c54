//! The workflows folder over HTTP: list, get, put (revision-checked, atomic, canonical YAML
//! keeping the file's comments),
//! create, rename, delete, and validation of a posted workflow. The files stay the source of
//! truth; the watcher tells clients when they change on disk.
use std::collections::HashSet;
use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use weft_engine::workflow::carry_comments;
use weft_engine::{Diagnostic, Registry, Workflow};

use super::checking;
use super::error::{ApiError, ApiResult};
use super::paths::{check_name, existing_under, write_atomic, write_new};
use super::AppState;

pub const EXTENSION: &str = "yaml";

/// blake3 hex of the file bytes.
pub fn revision(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Reads a request body as JSON into `T`, with our error shapes (413 for too large, 400 for
/// malformed JSON or a wrong shape).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge("the request body is too large".into())
                } else {
                    ApiError::BadRequest("the request body could not be read".into())
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("the body is not the expected JSON: {e}")))
    }
}

/// A workflow document (JSON) read by the workflow reader: structural errors come back as
/// diagnostics.
pub fn from_doc(doc: &Json_) -> Result<Workflow, Vec<Diagnostic>> {
    if !doc.is_object() {
        return Err(vec![Diagnostic::new(
            "a workflow is an object {\"weft\": 1, \"nodes\": {...}}",
        )]);
    }
    let text = serde_json::to_string_pretty(doc).unwrap_or_default();
    Workflow::parse_str(&text)
}

/// Validation diagnostics of a parsed workflow; `name`: the file it is (or will be), whose
/// folder its path types are relative to (a canvas with no file: the workflows folder).
pub fn check(state: &AppState, name: Option<&str>, workflow: &Workflow) -> Vec<Diagnostic> {
    let root = &state.roots.workflows;
    let folder = name.map_or_else(|| root.clone(), |n| folder_of(root, n));
    validate_expanded(&state.registry, root, &folder, workflow)
}

/// The folder a workflow file's path types (`./x.yaml`) are relative to: the file's own,
/// `lib/` for `lib/NAME`, as the engine resolves them where the file is used as a node.
pub fn folder_of(root: &FsPath, name: &str) -> PathBuf {
    if name.starts_with("lib/") {
        root.join("lib")
    } else {
        root.to_path_buf()
    }
}

/// Validation diagnostics after inlining subgraphs (what a run would see); `folder`: where
/// the workflow's file is (see `folder_of`).
pub fn validate_expanded(
    registry: &Registry,
    root: &FsPath,
    folder: &FsPath,
    workflow: &Workflow,
) -> Vec<Diagnostic> {
    // A sweep's axis values first (located in its section, on the workflow as written, where
    // an axis may name a subgraph node or a bypassed one); then its first cell stands for the
    // rest.
    let limit = weft_engine::sweep::DEFAULT_MAX_CELLS;
    let first_cell;
    let workflow = match weft_engine::sweep::plan(workflow, registry, limit) {
        Err(d) => return d,
        Ok(Some(plan)) => {
            first_cell = plan.workflow(0);
            &first_cell
        }
        Ok(None) => workflow,
    };
    match expand_in(registry, root, folder, workflow) {
        Ok(expanded) => {
            // A library subgraph's file is checked as the node it is used as, against its own
            // `inputs:` and `outputs:` (it links `$inputs` and has no output node of its own).
            // The expanded interface: an output from a nested subgraph node follows it inside.
            let mut d = match &expanded.interface {
                Some(interface) => weft_engine::validate_subgraph(&expanded, registry, interface),
                None => weft_engine::validate(&expanded, registry, None),
            };
            weft_engine::subgraph::attribute_files(&expanded, &mut d);
            relative_files(root, &mut d);
            d
        }
        Err(d) => d,
    }
}

/// Subgraph files named in diagnostics, relative to the workflows folder (no server paths).
fn relative_files(root: &FsPath, diagnostics: &mut [Diagnostic]) {
    let prefix = format!("{}/", root.display());
    for d in diagnostics {
        if d.message.contains(&prefix) {
            d.message = d.message.replace(&prefix, "");
        }
        if let Some(file) = &d.file {
            if let Ok(relative) = FsPath::new(file.as_ref()).strip_prefix(root) {
                d.file = Some(relative.to_string_lossy().into());
            }
        }
    }
}

/// The workflow with its subgraph nodes inlined, as the CLI does: path types are relative
/// to the workflows folder, library names are files in its `lib/`. Every subgraph file, at
/// any depth, must be inside the workflows folder (a client can write workflow files, so a
/// file it wrote could otherwise include one from anywhere).
pub fn expand(
    registry: &Registry,
    root: &FsPath,
    workflow: &Workflow,
) -> Result<Workflow, Vec<Diagnostic>> {
    expand_in(registry, root, root, workflow)
}

/// `expand` for a workflow whose file is in `folder` (its path types are relative to it).
fn expand_in(
    registry: &Registry,
    root: &FsPath,
    folder: &FsPath,
    workflow: &Workflow,
) -> Result<Workflow, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    check_subgraph_files(registry, root, workflow, folder, 0, &mut seen, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let library = [root.join("lib")];
    let paths = weft_engine::subgraph::SubgraphPaths {
        base_dir: folder,
        library: &library,
    };
    match weft_engine::subgraph::expand_subgraphs(workflow, registry, &paths) {
        Ok(Some(expanded)) => Ok(expanded),
        Ok(None) => Ok(workflow.clone()),
        Err(mut errors) => {
            relative_files(root, &mut errors);
            Err(errors)
        }
    }
}

fn check_subgraph_files(
    registry: &Registry,
    root: &FsPath,
    workflow: &Workflow,
    base_dir: &FsPath,
    depth: usize,
    seen: &mut HashSet<PathBuf>,
    errors: &mut Vec<Diagnostic>,
) {
    let library = [root.join("lib")];
    let paths = weft_engine::subgraph::SubgraphPaths {
        base_dir,
        library: &library,
    };
    for (id, node) in &workflow.nodes {
        let Some(file) = weft_engine::subgraph::subgraph_file(&node.type_name, registry, &paths)
        else {
            continue;
        };
        let Ok(real) = file.canonicalize() else {
            // Missing: the expansion reports it.
            continue;
        };
        if !real.starts_with(root) {
            errors.push(
                Diagnostic::at_opt(
                    node.type_pos,
                    format!(
                        "subgraph '{}' is outside the workflows folder",
                        node.type_name
                    ),
                )
                .node(id),
            );
            continue;
        }
        if depth < 16 && seen.insert(real.clone()) {
            let inner = std::fs::read(&real)
                .ok()
                .and_then(|b| Workflow::parse(&b).ok());
            if let (Some(inner), Some(dir)) = (inner, real.parent()) {
                check_subgraph_files(registry, root, &inner, dir, depth + 1, seen, errors);
            }
        }
    }
}

/// Where named subgraph types are found: `lib/` in the workflows folder.
pub fn library(state: &AppState) -> [PathBuf; 1] {
    [state.roots.workflows.join("lib")]
}

/// The file of a workflow name (which may not exist yet), refusing anything but a plain name.
fn file_of(state: &AppState, name: &str) -> ApiResult<PathBuf> {
    check_name(name, "workflow name")?;
    Ok(state.roots.workflows.join(format!("{name}.{EXTENSION}")))
}

/// The folder and plain name of a workflow name: `NAME` in the workflows folder, or `lib/NAME`
/// for a library subgraph's file in its `lib/` (one level; the part after `lib/` is a plain
/// name, so `lib/../x` and `lib/a/b` are refused like any path).
fn folder_and_stem<'a>(state: &AppState, name: &'a str) -> ApiResult<(PathBuf, &'a str)> {
    match name.strip_prefix("lib/") {
        Some(stem) => {
            check_name(stem, "library subgraph name (after lib/)")?;
            Ok((state.roots.workflows.join("lib"), stem))
        }
        None => {
            check_name(name, "workflow name")?;
            Ok((state.roots.workflows.clone(), name))
        }
    }
}

/// Reads an existing workflow file (or a library subgraph's, `lib/NAME`), refusing one that
/// resolves outside its folder.
pub fn read(state: &AppState, name: &str) -> ApiResult<(PathBuf, Vec<u8>)> {
    let (folder, stem) = folder_and_stem(state, name)?;
    let path = existing_under(&folder, &format!("{stem}.{EXTENSION}"), "workflow")?;
    let bytes = std::fs::read(&path).map_err(|e| ApiError::internal("reading a workflow", e))?;
    Ok((path, bytes))
}

/// Parse + validate diagnostics of file bytes, and the workflow when it parses.
fn inspect(state: &AppState, name: &str, bytes: &[u8]) -> (Option<Workflow>, Vec<Diagnostic>) {
    match Workflow::parse(bytes) {
        Ok(w) => {
            let d = check(state, Some(name), &w);
            (Some(w), d)
        }
        Err(d) => (None, d),
    }
}

/// Every workflow with its revision and validity. Validity is remembered by content hash
/// (checking::validity), so a big invalid file costs one validation, not one per listing.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Json_>> {
    let listing = state.clone();
    let (workflows, library) =
        checking::off_runtime(&state, "listing the workflows", move || summaries(&listing))
            .await??;
    Ok(Json(json!({ "workflows": workflows, "library": library })))
}

/// The plain names of the `.yaml` files directly in `folder`, sorted (none if it is missing).
fn stems_in(folder: &FsPath) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(folder)?
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let stem = file.strip_suffix(&format!(".{EXTENSION}"))?.to_string();
            check_name(&stem, "").ok().map(|_| stem)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The workflows, then the library subgraphs' files (named `lib/NAME`), each with its
/// revision and validity (a library file checked as a subgraph).
fn summaries(state: &AppState) -> ApiResult<(Vec<Json_>, Vec<Json_>)> {
    let mut names =
        stems_in(&state.roots.workflows).map_err(|e| ApiError::internal("listing workflows", e))?;
    // No lib/ is no library; one that cannot be read is not worth failing the listing for.
    let library = stems_in(&state.roots.workflows.join("lib")).unwrap_or_default();
    names.extend(library.into_iter().map(|stem| format!("lib/{stem}")));
    let read_named = |name: &str| read(state, name).ok().map(|(_, bytes)| bytes);
    // One call for both: the validity it remembers is that of the names it was last given.
    let (library, workflows): (Vec<Json_>, Vec<Json_>) = checking::validity(
        state, &names, read_named,
    )
    .into_iter()
    .map(|(name, revision, valid)| json!({"name": name, "revision": revision, "valid": valid}))
    .partition(|entry| {
        entry["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("lib/"))
    });
    Ok((workflows, library))
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
    let reading = state.clone();
    let found = checking::off_runtime(&state, "validating the workflow", move || {
        let (_, bytes) = read(&reading, &name)?;
        let (workflow, diagnostics) = inspect(&reading, &name, &bytes);
        Ok::<_, ApiError>(json!({
            "name": name,
            "revision": revision(&bytes),
            "workflow": workflow.map(|w| w.to_json()),
            "text": String::from_utf8_lossy(&bytes),
            "diagnostics": diagnostics,
        }))
    })
    .await??;
    Ok(Json(found))
}

/// The canonical YAML of a posted document and its diagnostics located in that YAML (what the
/// file will hold), or the structural errors that keep it from being written at all.
fn canonical(
    state: &AppState,
    name: Option<&str>,
    doc: &Json_,
) -> ApiResult<(String, Vec<Diagnostic>)> {
    let yaml = canonical_yaml(doc)?;
    let diagnostics = diagnose(state, name, &yaml);
    Ok((yaml, diagnostics))
}

/// The canonical YAML of a posted document, or the structural errors that keep it from being
/// written at all.
fn canonical_yaml(doc: &Json_) -> ApiResult<String> {
    let workflow = from_doc(doc)
        .map_err(|d| ApiError::InvalidWorkflow("the workflow does not parse".into(), d))?;
    Ok(workflow.to_yaml())
}

/// The diagnostics of a workflow text, located in it.
fn diagnose(state: &AppState, name: Option<&str>, yaml: &str) -> Vec<Diagnostic> {
    match Workflow::parse_str(yaml) {
        Ok(reread) => check(state, name, &reread),
        Err(d) => d,
    }
}

#[derive(Deserialize)]
pub struct PutBody {
    workflow: Json_,
    revision: String,
}

pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutBody>,
) -> ApiResult<Json<Json_>> {
    let document = body.workflow;
    let yaml = checking::off_runtime(&state, "reading the workflow", move || {
        canonical_yaml(&document)
    })
    .await??;
    let writing = state
        .write_lock
        .lock()
        .map_err(|_| ApiError::internal("write lock", "poisoned"))?;
    let (path, current) = read(&state, &name)?;
    let current_revision = revision(&current);
    if current_revision != body.revision {
        return Err(ApiError::Conflict(
            "the workflow changed since that revision; reload it and apply the edit again".into(),
            Some(current_revision),
        ));
    }
    // What people wrote beside their nodes stays: the editor's document has no comments.
    let text = carry_comments(&String::from_utf8_lossy(&current), &yaml);
    write_atomic(&path, text.as_bytes())
        .map_err(|e| ApiError::internal("writing a workflow", e))?;
    drop(writing);
    let written_revision = revision(text.as_bytes());
    // Located in the text as written (comments included), validated once, outside the lock.
    // The file is written by now, so a validation past the deadline is said as a diagnostic,
    // not as a failed save.
    let checking_state = state.clone();
    let checked_name = name.clone();
    let diagnostics =
        match checking::off_runtime(&state, "validating the saved workflow", move || {
            diagnose(&checking_state, Some(&checked_name), &text)
        })
        .await
        {
            Ok(diagnostics) => diagnostics,
            Err(ApiError::DeadlineExceeded(why)) => {
                vec![
                    Diagnostic::new(format!("the workflow was saved, but {why}"))
                        .hint("open it again to see its diagnostics"),
                ]
            }
            Err(e) => return Err(e),
        };
    Ok(Json(json!({
        "name": name,
        "revision": written_revision,
        "diagnostics": diagnostics,
    })))
}

#[derive(Deserialize)]
pub struct CreateBody {
    name: String,
    workflow: Json_,
}

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    // `lib/NAME` makes a library subgraph (the editor's "convert to subgraph"): a node type.
    let (folder, stem) = folder_and_stem(&state, &body.name)?;
    let path = folder.join(format!("{stem}.{EXTENSION}"));
    if folder != state.roots.workflows {
        std::fs::create_dir_all(&folder)
            .map_err(|e| ApiError::internal("creating the library folder", e))?;
        // A `lib` that is a link out of the workflows folder is not written through.
        let real = folder
            .canonicalize()
            .map_err(|e| ApiError::internal("resolving the library folder", e))?;
        if !real.starts_with(&state.roots.workflows) {
            return Err(ApiError::Forbidden(
                "the workflows folder's lib/ points outside it".into(),
            ));
        }
    }
    let checking_state = state.clone();
    let document = body.workflow;
    let checked_name = body.name.clone();
    let (yaml, diagnostics) = checking::off_runtime(&state, "validating the workflow", move || {
        canonical(&checking_state, Some(&checked_name), &document)
    })
    .await??;
    match write_new(&path, yaml.as_bytes()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ApiError::Conflict(
                format!("a workflow named '{}' exists", body.name),
                None,
            ))
        }
        Err(e) => return Err(ApiError::internal("creating a workflow", e)),
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": body.name,
            "revision": revision(yaml.as_bytes()),
            "diagnostics": diagnostics,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct RenameBody {
    to: String,
}

pub async fn rename(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<RenameBody>,
) -> ApiResult<Json<Json_>> {
    let target = file_of(&state, &body.to)?;
    let _writing = state
        .write_lock
        .lock()
        .map_err(|_| ApiError::internal("write lock", "poisoned"))?;
    let (source, bytes) = read(&state, &name)?;
    // Link then unlink: never replaces an existing workflow.
    match std::fs::hard_link(&source, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ApiError::Conflict(
                format!("a workflow named '{}' exists", body.to),
                None,
            ))
        }
        Err(e) => return Err(ApiError::internal("renaming a workflow", e)),
    }
    std::fs::remove_file(&source).map_err(|e| ApiError::internal("renaming a workflow", e))?;
    Ok(Json(json!({"name": body.to, "revision": revision(&bytes)})))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let _writing = state
        .write_lock
        .lock()
        .map_err(|_| ApiError::internal("write lock", "poisoned"))?;
    check_name(&name, "workflow name")?;
    // The link itself goes (even one pointing elsewhere); what it points to is never touched.
    let path = state.roots.workflows.join(format!("{name}.{EXTENSION}"));
    match std::fs::symlink_metadata(&path) {
        Ok(_) => std::fs::remove_file(&path)
            .map(|_| StatusCode::NO_CONTENT)
            .map_err(|e| ApiError::internal("deleting a workflow", e)),
        Err(_) => Err(ApiError::NotFound(format!("no workflow '{name}'"))),
    }
}

#[derive(Deserialize)]
pub struct ValidateBody {
    workflow: Json_,
    /// The file the document is (`lib/NAME` resolves its path types in `lib/`); none: a
    /// canvas with no file, in the workflows folder.
    #[serde(default)]
    name: Option<String>,
}

pub async fn validate(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ValidateBody>,
) -> ApiResult<Json<Json_>> {
    // Located in the canonical YAML, as a save would write it.
    let checking_state = state.clone();
    let validated = checking::off_runtime(&state, "validating the workflow", move || {
        canonical(&checking_state, body.name.as_deref(), &body.workflow)
    })
    .await?;
    let diagnostics = match validated {
        Ok((_, diagnostics)) => diagnostics,
        Err(ApiError::InvalidWorkflow(_, diagnostics)) => diagnostics,
        Err(e) => return Err(e),
    };
    Ok(Json(
        json!({"valid": diagnostics.is_empty(), "diagnostics": diagnostics}),
    ))
}
