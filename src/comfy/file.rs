//! A ComfyUI file as bytes, whatever it is: JSON of either form, or a PNG ComfyUI saved (text
//! chunks `workflow`, UI format with positions, and `prompt`, the API format that ran). Sniffs
//! which, then hands the JSON to `import`; `weft import` and `POST /api/import` both come here.
use serde_json::Value as Json;

use super::import::{import, ImportOptions, Imported};
use super::Issue;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Why a file was not imported.
#[derive(Debug)]
pub enum FileError {
    /// Neither a PNG nor JSON (the parser's reason).
    NotJson(String),
    /// A PNG signature, but the file does not decode as one (the decoder's reason).
    NotPng(String),
    /// A PNG without ComfyUI's text chunks: a plain image.
    NoWorkflowInPng,
    /// ComfyUI JSON the importer refused: every problem, located.
    Issues(Vec<Issue>),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::NotJson(e) => write!(f, "not JSON (nor a PNG): {e}"),
            FileError::NotPng(e) => write!(f, "not a PNG: {e}"),
            FileError::NoWorkflowInPng => f.write_str(
                "no ComfyUI workflow in this PNG (no \"workflow\" or \"prompt\" text chunk)",
            ),
            FileError::Issues(issues) => {
                let lines: Vec<String> = issues.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

/// Whether the bytes start with the PNG signature.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(PNG_SIGNATURE)
}

/// The workflows a ComfyUI PNG carries, `workflow` first, then `prompt`; chunks that are not
/// JSON are skipped.
pub fn png_workflows(bytes: &[u8]) -> Result<Vec<Json>, FileError> {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .map_err(|e| FileError::NotPng(e.to_string()))?;
    let info = reader.info();
    let mut texts: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.compressed_latin1_text {
        if let Ok(t) = c.get_text() {
            texts.push((c.keyword.clone(), t));
        }
    }
    for c in &info.utf8_text {
        if let Ok(t) = c.get_text() {
            texts.push((c.keyword.clone(), t));
        }
    }
    let found: Vec<Json> = ["workflow", "prompt"]
        .iter()
        .filter_map(|key| texts.iter().find(|(k, _)| k == key))
        .filter_map(|(_, text)| serde_json::from_str(text).ok())
        .collect();
    if found.is_empty() {
        return Err(FileError::NoWorkflowInPng);
    }
    Ok(found)
}

/// Imports a file's bytes: a PNG's UI workflow, else the API prompt that made it (the first
/// one's problems are reported when neither imports); anything else is read as JSON.
pub fn import_bytes(bytes: &[u8], options: &ImportOptions) -> Result<Imported, FileError> {
    let candidates = if is_png(bytes) {
        png_workflows(bytes)?
    } else {
        vec![serde_json::from_slice(bytes).map_err(|e| FileError::NotJson(e.to_string()))?]
    };
    let mut first_issues = None;
    for root in &candidates {
        match import(root, options) {
            Ok(imported) => return Ok(imported),
            Err(issues) => {
                first_issues.get_or_insert(issues);
            }
        }
    }
    Err(FileError::Issues(first_issues.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_with(chunks: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        for (k, v) in chunks {
            encoder
                .add_text_chunk((*k).to_string(), (*v).to_string())
                .unwrap();
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0, 0, 0]).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_plain_png_is_not_a_workflow() {
        let png = png_with(&[("Software", "paint")]);
        assert!(matches!(
            import_bytes(&png, &ImportOptions::default()),
            Err(FileError::NoWorkflowInPng)
        ));
    }

    #[test]
    fn a_truncated_png_and_text_are_told_apart() {
        let png = png_with(&[]);
        assert!(matches!(
            import_bytes(&png[..20], &ImportOptions::default()),
            Err(FileError::NotPng(_))
        ));
        assert!(matches!(
            import_bytes(b"hello", &ImportOptions::default()),
            Err(FileError::NotJson(_))
        ));
    }

    #[test]
    fn a_png_prompt_that_is_not_json_is_skipped_for_the_next() {
        let prompt = r#"{"1": {"class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1}}}"#;
        let png = png_with(&[("workflow", "{not json"), ("prompt", prompt)]);
        let imported = import_bytes(&png, &ImportOptions::default()).unwrap();
        assert_eq!(imported.workflow.nodes.len(), 1);
    }
}
