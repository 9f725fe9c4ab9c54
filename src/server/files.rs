//! Files: outputs by run id and file name (never a client path), uploads for LoadImage (size
//! limit, format sniffed from the bytes, pixel limit checked from the header before decoding,
//! then a full decode under memory limits) stored by content hash in the inputs folder.
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::paths::{check_name, existing_under, write_new};
use super::AppState;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ImageKind {
    Png,
    Jpeg,
}

impl ImageKind {
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageKind::Jpeg)
        } else {
            None
        }
    }
    fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
        }
    }
    fn format(self) -> image::ImageFormat {
        match self {
            ImageKind::Png => image::ImageFormat::Png,
            ImageKind::Jpeg => image::ImageFormat::Jpeg,
        }
    }
}

fn content_type(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        "image/jpeg"
    } else {
        "application/octet-stream"
    }
}

fn serve_file(path: &std::path::Path, name: &str) -> ApiResult<Response> {
    let bytes = std::fs::read(path).map_err(|e| ApiError::internal("reading a file", e))?;
    Ok(serve_bytes(bytes.into(), name))
}

fn serve_bytes(bytes: Bytes, name: &str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type(name)),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (CACHE_CONTROL, "private, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response()
}

pub async fn output(
    State(state): State<AppState>,
    Path((run, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    // Sweeps' grids live in the outputs folder's `sweeps/` (/api/outputs/sweeps/ID/grid.png).
    let folder = if run == "sweeps" {
        run
    } else {
        run.parse::<u64>()
            .map_err(|_| ApiError::BadRequest("a run id is a positive integer".into()))?
            .to_string()
    };
    // A SaveImage prefix may name a sub-folder (a/b): each part is a plain name.
    for part in file.split('/') {
        check_name(part, "output file")?;
    }
    let bytes = state
        .outputs
        .get(&format!("{folder}/{file}"))
        .await
        .map_err(|e| output_error(e, &file))?;
    Ok(serve_bytes(bytes, &file))
}

/// An output store's refusal as the API's: `shown` is the name the client asked for.
pub fn output_error(e: super::outputs::OutputError, shown: &str) -> ApiError {
    use super::outputs::OutputError;
    match e {
        OutputError::NotFound(_) => ApiError::NotFound(format!("no output '{shown}'")),
        OutputError::Outside(_) => {
            ApiError::Forbidden("that output points outside its folder".into())
        }
        OutputError::BadKey(_) => ApiError::BadRequest(e.to_string()),
        OutputError::Storage { .. } => ApiError::internal("reading an output", e),
    }
}

/// The file `parts` (plain names, checked by the caller) name below `folder`, resolved with
/// symlinks followed: it must be a file and still inside `folder`. Every route serving a file
/// of the outputs or inputs folders resolves it here (weft's `/api/outputs`, ComfyUI's `/view`).
pub fn file_inside(
    folder: &std::path::Path,
    parts: &[&str],
    what: &str,
) -> ApiResult<std::path::PathBuf> {
    let path = parts
        .iter()
        .fold(folder.to_path_buf(), |p, part| p.join(part));
    let missing = || ApiError::NotFound(format!("no {what} '{}'", parts.join("/")));
    let real = match path.canonicalize() {
        Ok(real) if real.is_file() => real,
        Ok(_) => return Err(missing()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(ApiError::internal("resolving a file", e)),
    };
    if !real.starts_with(folder) {
        return Err(ApiError::Forbidden(format!(
            "that {what} points outside its folder"
        )));
    }
    Ok(real)
}

pub async fn upload_get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let path = existing_under(&state.roots.inputs, &name, "upload")?;
    serve_file(&path, &name)
}

/// Checks an upload is a PNG or JPEG whose declared size is within the pixel limit and which
/// decodes within memory limits; the decompression bomb (a tiny file declaring a huge image)
/// is refused from its header, before any pixel is allocated.
pub fn check_image(bytes: &[u8], max_pixels: u64) -> ApiResult<ImageKind> {
    let kind = ImageKind::sniff(bytes).ok_or_else(|| {
        ApiError::UnsupportedMediaType("uploads must be PNG or JPEG images".into())
    })?;
    let reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), kind.format());
    let (w, h) = reader
        .into_dimensions()
        .map_err(|_| ApiError::BadRequest("the image header could not be read".into()))?;
    if w as u64 * h as u64 > max_pixels || w == 0 || h == 0 {
        return Err(ApiError::PayloadTooLarge(format!(
            "the image declares {w}x{h} pixels; the limit is {max_pixels} pixels"
        )));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), kind.format());
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels * 8);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|_| ApiError::BadRequest("the image could not be decoded".into()))?;
    Ok(kind)
}

fn too_large(state: &AppState) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "uploads are limited to {} bytes",
        state.config.upload_limit
    ))
}

/// The bytes of a multipart field `image`, or of a raw image body.
async fn upload_bytes(state: &AppState, request: Request) -> ApiResult<Bytes> {
    let is_multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        return Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(state)
            } else {
                ApiError::BadRequest("the upload could not be read".into())
            }
        });
    }
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|_| ApiError::BadRequest("a malformed multipart body".into()))?;
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(state)
            } else {
                ApiError::BadRequest("a malformed multipart body".into())
            }
        })?;
        let Some(field) = field else {
            return Err(ApiError::BadRequest(
                "the multipart body has no field named 'image'".into(),
            ));
        };
        if field.name() == Some("image") {
            return field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(state)
                } else {
                    ApiError::BadRequest("the upload could not be read".into())
                }
            });
        }
    }
}

pub async fn upload(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let bytes = upload_bytes(&state, request).await?;
    if bytes.len() > state.config.upload_limit {
        return Err(too_large(&state));
    }
    let max_pixels = state.config.max_pixels;
    let checked = bytes.clone();
    let kind = tokio::task::spawn_blocking(move || check_image(&checked, max_pixels))
        .await
        .map_err(|e| ApiError::internal("checking an upload", e))??;
    // Named by content: the same image uploaded twice is one file, and no upload replaces another.
    let hash = blake3::hash(&bytes).to_hex();
    let name = format!("upload-{}.{}", &hash[..24], kind.extension());
    let path = state.roots.inputs.join(&name);
    match write_new(&path, &bytes) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ApiError::internal("storing an upload", e)),
    }
    let reference = state.inputs_ref.join(&name).to_string_lossy().into_owned();
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": reference, "file": name, "url": format!("/api/uploads/{name}")})),
    )
        .into_response())
}

pub async fn api_not_found() -> ApiError {
    ApiError::NotFound("no such API route; see docs/api.md".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let img = image::RgbImage::new(w, h);
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn small_png_passes_and_text_is_refused() {
        assert_eq!(check_image(&png(4, 3), 100).unwrap(), ImageKind::Png);
        assert!(matches!(
            check_image(b"hello, not an image", 100),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn too_many_pixels_is_refused() {
        assert!(matches!(
            check_image(&png(20, 10), 100),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }
}
