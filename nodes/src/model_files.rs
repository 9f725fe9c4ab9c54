//! Finding models on disk: resolving a model name to its files, and listing what the models
//! folder holds (for "not found" messages, the JSON Schema and the editor's dropdowns).
use std::path::{Path, PathBuf};

/// The choice source of inputs that name a diffusion checkpoint.
pub const CHECKPOINTS: &str = "checkpoints";

/// Folders under the models folder that hold other things than checkpoints.
const NOT_CHECKPOINTS: [&str; 2] = ["converted", "cache"];

/// A model name that names nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "model '{name}' not found (looked for {} and {}); {}",
    direct.display(),
    under.display(),
    found_sentence(found, models_dir)
)]
pub struct ModelNotFound {
    pub name: String,
    pub direct: PathBuf,
    pub under: PathBuf,
    pub models_dir: PathBuf,
    /// What the models folder does hold.
    pub found: Vec<String>,
}

fn found_sentence(found: &[String], models_dir: &Path) -> String {
    if found.is_empty() {
        format!(
            "{} holds no checkpoint: put a checkpoint (.safetensors) or a diffusers folder there",
            models_dir.display()
        )
    } else {
        format!(
            "models found under {}: {}",
            models_dir.display(),
            found.join(", ")
        )
    }
}

/// A weights file that set-up converts is not there.
#[derive(Debug, thiserror::Error)]
#[error("{} is missing; run the set-up (make setup) to convert {what}", path.display())]
pub struct MissingConverted {
    pub path: PathBuf,
    pub what: &'static str,
}

/// `models_dir/relative`, which set-up converts (`what` names it in the error).
pub fn converted_file(
    models_dir: &Path,
    relative: &str,
    what: &'static str,
) -> Result<PathBuf, MissingConverted> {
    let path = models_dir.join(relative);
    if path.exists() {
        Ok(path)
    } else {
        Err(MissingConverted { path, what })
    }
}

/// Resolves a model name: an existing path as given, else a file or folder under `models_dir`.
pub fn resolve_model(name: &str, models_dir: &Path) -> Result<PathBuf, ModelNotFound> {
    let direct = PathBuf::from(name);
    if !name.is_empty() && direct.exists() {
        return Ok(direct);
    }
    let under = models_dir.join(name);
    if !name.is_empty() && under.exists() {
        return Ok(under);
    }
    Err(ModelNotFound {
        name: name.to_string(),
        direct,
        under,
        models_dir: models_dir.to_path_buf(),
        found: find_checkpoints(models_dir),
    })
}

/// The checkpoints under `models_dir`, as names `resolve_model` takes, sorted: single-file
/// `.safetensors` checkpoints (at the top or one folder down, e.g. `checkpoints/x.safetensors`)
/// and diffusers folders (a folder with `model_index.json` or a `unet/` folder).
pub fn find_checkpoints(models_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(models_dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || NOT_CHECKPOINTS.contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            if is_diffusers_folder(&path) {
                found.push(name);
                continue;
            }
            let Ok(inner) = std::fs::read_dir(&path) else {
                continue;
            };
            for file in inner.flatten() {
                let inner_path = file.path();
                if is_safetensors(&inner_path) || is_diffusers_folder(&inner_path) {
                    found.push(format!("{name}/{}", file.file_name().to_string_lossy()));
                }
            }
        } else if is_safetensors(&path) {
            found.push(name);
        }
    }
    found.sort();
    found
}

fn is_safetensors(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "safetensors")
}

fn is_diffusers_folder(path: &Path) -> bool {
    path.join("model_index.json").is_file() || path.join("unet").is_dir()
}

/// The files a model is read from: the file itself, or a diffusers folder's weights and configs.
pub fn model_files(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for sub in ["", "unet", "vae", "text_encoder", "scheduler"] {
        let Ok(entries) = std::fs::read_dir(path.join(sub)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e == "safetensors" || e == "json")
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_name_lists_the_models_that_are_there() {
        let dir = std::env::temp_dir().join(format!("weft-models-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tiny/unet")).unwrap();
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        std::fs::create_dir_all(dir.join("converted/minilm")).unwrap();
        std::fs::write(dir.join("checkpoints/sd15.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("dreamy.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        assert_eq!(
            find_checkpoints(&dir),
            ["checkpoints/sd15.safetensors", "dreamy.safetensors", "tiny"]
        );
        let error = resolve_model("sd15", &dir).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("models found under")
                && message.contains("checkpoints/sd15.safetensors, dreamy.safetensors, tiny"),
            "{message}"
        );
        assert!(resolve_model("checkpoints/sd15.safetensors", &dir).is_ok());
        let empty = resolve_model("x", &dir.join("nothing-here")).unwrap_err();
        assert!(empty.to_string().contains("holds no checkpoint"), "{empty}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
