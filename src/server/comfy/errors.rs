//! ComfyUI's error objects: a refused prompt's `error` and `node_errors`, its types mapped from
//! the codes weft's checks give (never from message text).
use super::*;

/// ComfyUI's error object.
pub(super) fn error_obj(kind: &str, message: &str, details: &str, extra: Json_) -> Json_ {
    json!({"type": kind, "message": message, "details": details, "extra_info": extra})
}

pub(super) fn refused(error: Json_, node_errors: Json_) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "node_errors": node_errors})),
    )
        .into_response()
}

/// ComfyUI's error type and title for a weft problem of kind `code` (ComfyUI's execution.py
/// `validate_inputs` names these); a problem no check named is a failed custom validation.
pub(super) fn comfy_error_type(code: Option<DiagnosticCode>) -> (&'static str, &'static str) {
    use DiagnosticCode as C;
    match code {
        Some(C::MissingInput) => ("required_input_missing", "Required input is missing"),
        Some(C::NotAChoice | C::FileNotFound) => ("value_not_in_list", "Value not in list"),
        Some(C::TypeMismatch | C::UnknownOutput) => (
            "return_type_mismatch",
            "Return type mismatch between linked nodes",
        ),
        Some(C::BelowMinimum) => ("value_smaller_than_min", "Value smaller than min"),
        Some(C::AboveMaximum) => ("value_bigger_than_max", "Value bigger than max"),
        Some(C::WrongValueType) => ("invalid_input_type", "Failed to convert an input value"),
        Some(C::UnknownNodeType) => ("missing_node_type", "Node type not found"),
        Some(C::UnknownNode) => ("bad_linked_input", "Bad linked input"),
        Some(C::Syntax) => ("invalid_prompt", "Invalid prompt"),
        Some(C::NoOutput) => ("prompt_no_outputs", "Prompt has no outputs"),
        Some(C::UnknownInput | C::NotAMultiple | C::Cycle) | None => (
            "custom_validation_failed",
            "Custom validation failed for node",
        ),
    }
}

/// One located weft problem as a ComfyUI validation error.
pub(super) fn located_error(
    code: Option<DiagnosticCode>,
    input: Option<&str>,
    message: &str,
    hint: Option<&str>,
) -> Json_ {
    let (kind, title) = comfy_error_type(code);
    let mut details = match input {
        Some(i) => format!("{i} - {message}"),
        None => message.to_string(),
    };
    if let Some(h) = hint {
        details.push_str(&format!(" (hint: {h})"));
    }
    let extra = match input {
        Some(i) => json!({"input_name": i}),
        None => json!({}),
    };
    error_obj(kind, title, &details, extra)
}

/// The ComfyUI name of a weft input of the weft node a ComfyUI `class` became.
pub(super) fn comfy_input(class: &str, weft: &str) -> String {
    if let Some(ty) = comfy_type(class) {
        for i in ty.inputs {
            if matches!(i.widget, Some(Widget::Weft(w)) if w == weft) {
                return i.name.to_string();
            }
        }
    }
    let name = match (class, weft) {
        (_, "encoder") => "clip",
        ("CheckpointLoaderSimple", "name") => "ckpt_name",
        ("UpscaleModelLoader", "name") => "model_name",
        ("LoadImage", "path") => "image",
        ("KSampler" | "KSamplerAdvanced", "latent") => "latent_image",
        ("KSamplerAdvanced", "seed") => "noise_seed",
        ("KSamplerAdvanced", "leftover_noise") => "return_with_leftover_noise",
        ("VAEDecode" | "VAEDecodeTiled" | "LatentUpscale" | "LatentUpscaleBy", "latent") => {
            "samples"
        }
        ("VAEEncode", "image") => "pixels",
        ("SaveImage" | "PreviewImage", "image") => "images",
        ("VAEDecodeTiled", "tile") => "tile_size",
        (_, "method") => "upscale_method",
        _ => weft,
    };
    name.to_string()
}

/// For each node, the output nodes downstream of it (itself included).
pub(super) fn dependent_outputs(
    prompt: &Map<String, Json_>,
    outputs: &[String],
) -> HashMap<String, Vec<String>> {
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for out in outputs {
        let mut seen = HashSet::new();
        let mut stack = vec![out.clone()];
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            deps.entry(id.clone()).or_default().push(out.clone());
            let inputs = prompt.get(&id).and_then(|n| n.get("inputs"));
            for v in inputs
                .and_then(Json_::as_object)
                .into_iter()
                .flat_map(|m| m.values())
            {
                if let Some([from, _]) = v.as_array().map(Vec::as_slice) {
                    let from = match from {
                        Json_::String(s) => s.clone(),
                        Json_::Number(n) => n.to_string(),
                        _ => continue,
                    };
                    stack.push(from);
                }
            }
        }
    }
    deps
}

/// Collects node errors keyed by ComfyUI node id, in ComfyUI's shape.
pub(super) struct NodeErrors<'a> {
    prompt: &'a Map<String, Json_>,
    deps: HashMap<String, Vec<String>>,
    map: Map<String, Json_>,
    lines: Vec<String>,
}

impl<'a> NodeErrors<'a> {
    pub(super) fn new(prompt: &'a Map<String, Json_>, outputs: &[String]) -> Self {
        Self {
            prompt,
            deps: dependent_outputs(prompt, outputs),
            map: Map::new(),
            lines: Vec::new(),
        }
    }

    pub(super) fn class(&self, node: &str) -> String {
        self.prompt
            .get(node)
            .and_then(|n| n.get("class_type"))
            .and_then(Json_::as_str)
            .unwrap_or("")
            .to_string()
    }

    pub(super) fn add(&mut self, node: Option<&str>, error: Json_) {
        self.lines.push(format!(
            "{}: {}",
            error["message"].as_str().unwrap_or(""),
            error["details"].as_str().unwrap_or("")
        ));
        let Some(node) = node else {
            return;
        };
        let class = self.class(node);
        let deps = self.deps.get(node).cloned().unwrap_or_default();
        let entry = self.map.entry(node.to_string()).or_insert_with(
            || json!({"errors": [], "dependent_outputs": deps, "class_type": class}),
        );
        if let Some(errors) = entry["errors"].as_array_mut() {
            errors.push(error);
        }
    }

    pub(super) fn issue(&mut self, issue: &Issue) {
        let error = located_error(
            issue.code,
            issue.input.as_deref(),
            &issue.message,
            issue.hint.as_deref(),
        );
        self.add(issue.node.as_deref(), error);
    }

    pub(super) fn diagnostic(&mut self, d: &Diagnostic, comfy_of: &HashMap<&str, &str>) {
        let node = d.node.as_deref().and_then(|n| comfy_of.get(n).copied());
        let class = node.map(|n| self.class(n)).unwrap_or_default();
        let input = d.input.as_deref().map(|i| comfy_input(&class, i));
        let error = located_error(d.code, input.as_deref(), &d.message, d.hint.as_deref());
        self.add(node, error);
    }

    pub(super) fn refuse(self) -> Response {
        let error = error_obj(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            &self.lines.join("\n"),
            json!({}),
        );
        refused(error, Json_::Object(self.map))
    }
}

pub(super) fn internal(cause: &str) -> Response {
    eprintln!("weft serve: internal error: {cause}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": {"type": "internal", "message": "the server failed to handle this request; see its log", "details": "", "extra_info": {}}, "node_errors": {}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiagnosticCode as C;

    /// Every code has ComfyUI's type for it; none of them reads a message.
    #[test]
    fn each_code_maps_to_comfyuis_error_type() {
        let expected = [
            (C::MissingInput, "required_input_missing"),
            (C::NotAChoice, "value_not_in_list"),
            (C::FileNotFound, "value_not_in_list"),
            (C::TypeMismatch, "return_type_mismatch"),
            (C::UnknownOutput, "return_type_mismatch"),
            (C::BelowMinimum, "value_smaller_than_min"),
            (C::AboveMaximum, "value_bigger_than_max"),
            (C::WrongValueType, "invalid_input_type"),
            (C::UnknownNodeType, "missing_node_type"),
            (C::UnknownNode, "bad_linked_input"),
            (C::Syntax, "invalid_prompt"),
            (C::NoOutput, "prompt_no_outputs"),
            (C::UnknownInput, "custom_validation_failed"),
            (C::NotAMultiple, "custom_validation_failed"),
            (C::Cycle, "custom_validation_failed"),
        ];
        for (code, kind) in expected {
            assert_eq!(comfy_error_type(Some(code)).0, kind, "{code:?}");
        }
        assert_eq!(comfy_error_type(None).0, "custom_validation_failed");
        // The same words under another code are another type.
        let a = located_error(Some(C::MissingInput), Some("vae"), "not found", None);
        let b = located_error(Some(C::NotAChoice), Some("vae"), "not found", None);
        assert_eq!(a["type"], "required_input_missing");
        assert_eq!(b["type"], "value_not_in_list");
        assert_eq!(a["extra_info"]["input_name"], "vae");
    }
}
