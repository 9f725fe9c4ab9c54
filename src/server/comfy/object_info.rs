//! `GET /object_info` (with the file lists of the models and inputs folders) and
//! `GET /system_stats`.
use super::*;

pub(super) fn file_names(dir: &FsPath, extensions: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| {
            let l = n.to_ascii_lowercase();
            extensions.iter().any(|x| l.ends_with(x))
        })
        .collect();
    names.sort();
    names
}

pub(super) fn file_lists(state: &AppState) -> FileLists {
    // ComfyUI names a checkpoint relative to its checkpoints folder: list each model folder's
    // (a folder of checkpoints is one itself), each name once, the first folder's winning.
    let mut checkpoints: Vec<String> = Vec::new();
    for folder in state.roots.models.folders() {
        let dir = match folder.kind.as_deref() {
            None => folder.dir.join(CHECKPOINT_DIR),
            Some(kind) if kind == CHECKPOINT_DIR.trim_end_matches('/') => folder.dir.clone(),
            Some(_) => continue,
        };
        for name in file_names(
            &dir,
            &[".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"],
        ) {
            if !checkpoints.contains(&name) {
                checkpoints.push(name);
            }
        }
    }
    checkpoints.sort();
    for name in state.comfy.checkpoint_names() {
        if !checkpoints.contains(&name) {
            checkpoints.push(name);
        }
    }
    let mut upscale_models: Vec<String> = crate::comfy::UPSCALER_FILES
        .iter()
        .map(|(f, _)| f.to_string())
        .collect();
    upscale_models.extend(weft_nodes::upscale::UPSCALERS.iter().map(|s| s.to_string()));
    FileLists {
        checkpoints,
        images: file_names(&state.roots.inputs, &[".png", ".jpg", ".jpeg"]),
        upscale_models,
        loras: weft_nodes::diffusion::find_loras(&state.roots.models)
            .into_iter()
            .map(|n| {
                n.strip_prefix(crate::comfy::LORA_DIR)
                    .unwrap_or(&n)
                    .to_string()
            })
            .collect(),
    }
}

pub(super) async fn get_object_info(State(state): State<AppState>) -> Json<Json_> {
    Json(object_info(&state.registry, &file_lists(&state)))
}

pub(super) async fn get_object_info_one(
    State(state): State<AppState>,
    Path(class): Path<String>,
) -> Json<Json_> {
    let mut out = Map::new();
    if let Some(ty) = TYPES.iter().find(|t| t.class == class) {
        out.insert(class, describe(ty, &state.registry, &file_lists(&state)));
    }
    Json(Json_::Object(out))
}

/// `MemTotal` and `MemAvailable` of /proc/meminfo, in bytes.
pub(super) fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub(super) async fn system_stats(State(state): State<AppState>) -> Json<Json_> {
    let (ram_total, ram_free) = memory();
    let device = state.comfy.device.as_str();
    let (kind, index) = match device.split_once(':') {
        Some((k, i)) => (k, i.parse::<u32>().ok()),
        None => (device, None),
    };
    // ComfyUI's vram fields: the driver's total and free, and torch's reserved memory with the
    // part of it no tensor uses. Read now from the allocator; zeros on the CPU.
    let cuda = match kind {
        "cuda" => weft_engine::device_memory::device_memory(tch::Device::Cuda(
            index.unwrap_or(0) as usize
        )),
        _ => None,
    };
    let (vram_total, vram_free, torch_total, torch_free) = cuda.map_or((0, 0, 0, 0), |m| {
        (
            m.total,
            m.free,
            m.reserved,
            m.reserved.saturating_sub(m.allocated),
        )
    });
    let argv = crate::server::shown_args(std::env::args());
    Json(json!({
        "system": {
            "os": std::env::consts::FAMILY,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": format!("weft {}", env!("CARGO_PKG_VERSION")),
            "python_version": "",
            "pytorch_version": "",
            "embedded_python": false,
            "argv": argv,
        },
        "devices": [{
            "name": device,
            "type": kind,
            "index": index,
            "vram_total": vram_total,
            "vram_free": vram_free,
            "torch_vram_total": torch_total,
            "torch_vram_free": torch_free,
        }],
        // weft's own: the cache's accounting and the device's figures when the last run ended.
        "weft": {
            "last_run_memory": state.queue.last_memory(),
            "device_memory_now": cuda,
        },
    }))
}
