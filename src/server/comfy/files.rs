//! `GET /view` (outputs and inputs) and `POST /upload/image` (into the inputs folder).
use super::*;

/// A file name or folder part from a client: not empty, no separators, not `.`/`..` or hidden.
pub(super) fn plain_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 255
        && !part.starts_with('.')
        && !part.contains(['/', '\\', '\0'])
}

pub(super) fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// `filename`, `subfolder`, `type` (output or input): a file among the runs' outputs or the
/// uploads, nowhere else. ComfyUI's `name [output]` annotation is understood.
pub(super) async fn view(
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
    let subfolder = q.get("subfolder").map_or("", String::as_str);
    let mut parts: Vec<&str> = Vec::new();
    for part in subfolder.split('/').filter(|p| !p.is_empty()) {
        if !plain_part(part) {
            return status(StatusCode::FORBIDDEN);
        }
        parts.push(part);
    }
    parts.push(name);
    let bytes = if kind == "output" {
        // From the outputs' store: the shared folder, or the fleet's bucket.
        match state.outputs.get(&parts.join("/")).await {
            Ok(bytes) => bytes.to_vec(),
            Err(crate::server::outputs::OutputError::Outside(_)) => {
                return status(StatusCode::FORBIDDEN)
            }
            Err(crate::server::outputs::OutputError::Storage { .. }) => {
                return status(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Err(_) => return status(StatusCode::NOT_FOUND),
        }
    } else {
        // weft's own resolution of input files (symlinks followed, kept inside).
        let real = match crate::server::files::file_inside(root, &parts, "file") {
            Ok(real) => real,
            Err(crate::server::error::ApiError::Forbidden(_)) => {
                return status(StatusCode::FORBIDDEN)
            }
            Err(_) => return status(StatusCode::NOT_FOUND),
        };
        match tokio::fs::read(&real).await {
            Ok(b) => b,
            Err(_) => return status(StatusCode::NOT_FOUND),
        }
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

pub(super) fn upload_refused(code: StatusCode, why: &str) -> Response {
    (code, why.to_string()).into_response()
}

/// Multipart `image` (with its file name), `overwrite`, `subfolder`, `type` (input only): the
/// image is checked as weft's own uploads are, and stored in the inputs folder under its name
/// (`name_1.png` when another file has it, unless `overwrite`). Answers
/// `{"name", "subfolder", "type"}`; `name` is what LoadImage's `image` takes.
/// The fields of an upload form: the `image` file (its name and bytes), `overwrite`,
/// `subfolder`, `type`, and `original_ref` (the mask editor's).
pub(super) struct UploadForm {
    image: Option<(String, Bytes)>,
    overwrite: bool,
    subfolder: String,
    kind: String,
    original_ref: Option<Json_>,
}

pub(super) async fn read_form(state: &AppState, request: Request) -> Result<UploadForm, Response> {
    let mut multipart = match Multipart::from_request(request, state).await {
        Ok(m) => m,
        Err(_) => {
            return Err(upload_refused(
                StatusCode::BAD_REQUEST,
                "a multipart body is expected",
            ))
        }
    };
    let mut form = UploadForm {
        image: None,
        overwrite: false,
        subfolder: String::new(),
        kind: "input".to_string(),
        original_ref: None,
    };
    let too_large = || upload_refused(StatusCode::PAYLOAD_TOO_LARGE, "the upload is too large");
    let malformed = || upload_refused(StatusCode::BAD_REQUEST, "a malformed multipart body");
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(_) => return Err(malformed()),
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(_) => return Err(malformed()),
        };
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match name.as_str() {
            "image" => form.image = Some((file_name.unwrap_or_default(), bytes.clone())),
            "overwrite" => form.overwrite = matches!(text().as_str(), "true" | "1"),
            "subfolder" => form.subfolder = text(),
            "type" => form.kind = text(),
            "original_ref" => form.original_ref = serde_json::from_str(&text()).ok(),
            _ => {}
        }
    }
    Ok(form)
}

pub(super) async fn upload_image(State(state): State<AppState>, request: Request) -> Response {
    match read_form(&state, request).await {
        Ok(form) => store_form(&state, form, None).await,
        Err(refusal) => refusal,
    }
}

/// `POST /upload/mask`, the mask editor's: the `image` field holds the mask in its alpha; the
/// image stored is the original (`original_ref`: an input, or an output, which the mask editor
/// opens from a run's results and which is read from the outputs' storage, a fleet's bucket
/// included) with that alpha, as ComfyUI does.
pub(super) async fn upload_mask(State(state): State<AppState>, request: Request) -> Response {
    let form = match read_form(&state, request).await {
        Ok(form) => form,
        Err(refusal) => return refusal,
    };
    let Some(original) = form.original_ref.as_ref() else {
        return upload_refused(StatusCode::BAD_REQUEST, "no 'original_ref' field");
    };
    let name = original["filename"].as_str().unwrap_or("");
    let sub = original["subfolder"].as_str().unwrap_or("");
    let kind = original["type"].as_str().unwrap_or("input");
    let parts: Vec<&str> = sub
        .split('/')
        .filter(|p| !p.is_empty())
        .chain([name])
        .collect();
    if parts.iter().any(|p| !plain_part(p)) {
        return upload_refused(StatusCode::BAD_REQUEST, "the original needs plain names");
    }
    let no_original = || upload_refused(StatusCode::NOT_FOUND, "no such original image");
    let original = match kind {
        "input" => {
            let root = &state.roots.inputs;
            let path = parts.iter().fold(root.clone(), |p, part| p.join(part));
            match path.canonicalize() {
                Ok(real) if real.starts_with(root) && real.is_file() => {
                    match tokio::fs::read(&real).await {
                        Ok(bytes) => Bytes::from(bytes),
                        Err(_) => return no_original(),
                    }
                }
                _ => return no_original(),
            }
        }
        "output" => match state.outputs.get(&parts.join("/")).await {
            Ok(bytes) => bytes,
            Err(crate::server::outputs::OutputError::Storage { .. }) => {
                return upload_refused(
                    StatusCode::BAD_GATEWAY,
                    "the outputs' storage did not answer; try again",
                )
            }
            Err(_) => return no_original(),
        },
        _ => {
            return upload_refused(
                StatusCode::BAD_REQUEST,
                "the original must be an input or an output",
            )
        }
    };
    store_form(&state, form, Some(original)).await
}

/// The original image with the mask's alpha (the mask resized to it), as PNG bytes.
fn apply_mask(original: &[u8], mask: &[u8]) -> Result<Vec<u8>, String> {
    let base =
        image::load_from_memory(original).map_err(|e| format!("reading the original: {e}"))?;
    let mask = image::load_from_memory(mask).map_err(|e| format!("reading the mask: {e}"))?;
    let mut base = base.to_rgba8();
    let mask = mask
        .resize_exact(
            base.width(),
            base.height(),
            image::imageops::FilterType::Triangle,
        )
        .to_rgba8();
    for (pixel, m) in base.pixels_mut().zip(mask.pixels()) {
        pixel[3] = m[3];
    }
    let mut out = Vec::new();
    base.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| format!("writing the masked image: {e}"))?;
    Ok(out)
}

/// Checks and stores the form's image (masked onto `original` when given).
async fn store_form(state: &AppState, form: UploadForm, original: Option<Bytes>) -> Response {
    let UploadForm {
        image,
        overwrite,
        subfolder,
        kind,
        ..
    } = form;
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
    let bytes = match original {
        Some(original) => {
            let checked = bytes.clone();
            match tokio::task::spawn_blocking(move || {
                crate::server::files::check_image(&checked, max_pixels)
                    .map_err(|e| e.into_response())?;
                apply_mask(&original, &checked)
                    .map_err(|e| upload_refused(StatusCode::BAD_REQUEST, &e))
            })
            .await
            {
                Ok(Ok(masked)) => Bytes::from(masked),
                Ok(Err(refusal)) => return refusal,
                Err(e) => return internal(&e.to_string()),
            }
        }
        None => bytes,
    };
    let checked = bytes.clone();
    match tokio::task::spawn_blocking(move || {
        crate::server::files::check_image(&checked, max_pixels)
    })
    .await
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
pub(super) fn store_upload(
    dir: &FsPath,
    name: &str,
    bytes: &[u8],
    overwrite: bool,
) -> Result<String, String> {
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
