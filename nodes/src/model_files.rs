//! Finding models on disk: resolving a model name to its files, and listing what the models
//! folder holds (for "not found" messages, the JSON Schema and the editor's dropdowns).
use std::path::{Path, PathBuf};

use weft_engine::{ModelFolder, ModelFolders};

/// The choice source of inputs that name a diffusion checkpoint.
pub const CHECKPOINTS: &str = "checkpoints";

/// Folders under the models folder that hold other things than checkpoints.
const NOT_CHECKPOINTS: [&str; 3] = ["converted", "cache", "loras"];

/// A model name that names nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "model '{name}' not found (looked for {}); {}{}",
    looked_in(direct, tried),
    found_sentence(found, folders),
    where_to_get(name)
)]
pub struct ModelNotFound {
    pub name: String,
    pub direct: PathBuf,
    /// Where the name would be in each model folder, in lookup order.
    pub tried: Vec<PathBuf>,
    /// The model folders, as a sentence names them.
    pub folders: String,
    /// What the model folders do hold.
    pub found: Vec<String>,
}

fn looked_in(direct: &Path, tried: &[PathBuf]) -> String {
    std::iter::once(direct)
        .chain(tried.iter().map(PathBuf::as_path))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Well-known checkpoints the example workflows name, and where a user gets each (weft
/// downloads nothing itself).
const WELL_KNOWN: [(&str, &str); 2] = [
    (
        "sd_xl_base_1.0.safetensors",
        "SDXL base 1.0 (6.9 GB): download sd_xl_base_1.0.safetensors from \
         https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0 and put it in the models \
         folder (or, to try weft without it, write a random-weight file of the same layout: \
         cargo run --release --example write_sdxl_checkpoint -- models/sd_xl_base_1.0.safetensors)",
    ),
    (
        "sd_xl_refiner_1.0.safetensors",
        "the SDXL refiner 1.0 (6.1 GB): download sd_xl_refiner_1.0.safetensors from \
         https://huggingface.co/stabilityai/stable-diffusion-xl-refiner-1.0 and put it in the \
         models folder (or, to try weft without it, write a random-weight file of the same \
         layout: cargo run --release --example write_sdxl_checkpoint -- --refiner \
         models/sd_xl_refiner_1.0.safetensors)",
    ),
];

fn where_to_get(name: &str) -> String {
    let file = Path::new(name)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(name);
    WELL_KNOWN
        .iter()
        .find(|(known, _)| *known == file)
        .map(|(_, how)| format!(". This is {how}"))
        .unwrap_or_default()
}

fn found_sentence(found: &[String], folders: &str) -> String {
    if found.is_empty() {
        format!(
            "{folders} holds no checkpoint: put a checkpoint (.safetensors) or a diffusers folder there"
        )
    } else {
        format!("models found under {folders}: {}", found.join(", "))
    }
}

/// A weights file that set-up converts is not there.
#[derive(Debug, thiserror::Error)]
#[error("{} is missing; run the set-up (make setup) to convert {what}", path.display())]
pub struct MissingConverted {
    pub path: PathBuf,
    pub what: &'static str,
}

/// `relative` (a file set-up converts; `what` names it in the error) in the first whole model
/// folder that has it.
pub fn converted_file(
    models: &ModelFolders,
    relative: &str,
    what: &'static str,
) -> Result<PathBuf, MissingConverted> {
    let path = models.whole_folder_file(relative);
    if path.exists() {
        Ok(path)
    } else {
        Err(MissingConverted { path, what })
    }
}

/// Resolves a model name: an existing path as given, else the first model folder that has it.
pub fn resolve_model(name: &str, models: &ModelFolders) -> Result<PathBuf, ModelNotFound> {
    let direct = PathBuf::from(name);
    if !name.is_empty() && direct.exists() {
        return Ok(direct);
    }
    if !name.is_empty() {
        if let Some(found) = models.find(name) {
            return Ok(found);
        }
    }
    Err(ModelNotFound {
        name: name.to_string(),
        direct,
        tried: models.candidates(name),
        folders: models.to_string(),
        found: find_checkpoints(models),
    })
}

/// The checkpoints in all model folders, as names `resolve_model` takes, sorted, each once
/// (the first folder that has a name is the one it loads from; see `shadowed_checkpoints`).
pub fn find_checkpoints(models: &ModelFolders) -> Vec<String> {
    let mut found: Vec<String> = checkpoints_by_folder(models)
        .into_iter()
        .flat_map(|(_, names)| names)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Checkpoint names found in more than one folder: a sentence for each, naming the folder
/// that wins (the first) and those it hides.
pub fn shadowed_checkpoints(models: &ModelFolders) -> Vec<String> {
    let mut first_seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (folder, names) in checkpoints_by_folder(models) {
        for name in names {
            first_seen.entry(name).or_default().push(folder.to_string());
        }
    }
    first_seen
        .into_iter()
        .filter(|(_, folders)| folders.len() > 1)
        .map(|(name, folders)| {
            format!(
                "model '{name}' is in several model folders; {} is used (the first), {} not",
                folders[0],
                folders[1..].join(", ")
            )
        })
        .collect()
}

/// Each model folder with the checkpoint names it holds: for a whole folder, single-file
/// `.safetensors` checkpoints (at the top or one folder down, e.g. `checkpoints/x.safetensors`)
/// and diffusers folders (a folder with `model_index.json` or a `unet/` folder); for a folder
/// of checkpoints, what is in it, named `checkpoints/...`.
fn checkpoints_by_folder(models: &ModelFolders) -> Vec<(&ModelFolder, Vec<String>)> {
    models
        .folders()
        .iter()
        .filter_map(|folder| match folder.kind.as_deref() {
            None => Some((folder, checkpoints_in_whole_folder(&folder.dir))),
            Some(CHECKPOINTS) => {
                let names = checkpoints_directly_in(&folder.dir)
                    .into_iter()
                    .map(|name| format!("{CHECKPOINTS}/{name}"))
                    .collect();
                Some((folder, names))
            }
            Some(_) => None,
        })
        .collect()
}

fn checkpoints_in_whole_folder(models_dir: &Path) -> Vec<String> {
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
            for inner in checkpoints_directly_in(&path) {
                found.push(format!("{name}/{inner}"));
            }
        } else if is_safetensors(&path) {
            found.push(name);
        }
    }
    found
}

/// Single-file checkpoints and diffusers folders directly in `dir`.
fn checkpoints_directly_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| is_safetensors(&e.path()) || is_diffusers_folder(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect()
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
        std::fs::create_dir_all(dir.join("loras")).unwrap();
        std::fs::write(dir.join("loras/style.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("checkpoints/sd15.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("dreamy.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        assert_eq!(
            find_checkpoints(&ModelFolders::single(&dir)),
            ["checkpoints/sd15.safetensors", "dreamy.safetensors", "tiny"]
        );
        let error = resolve_model("sd15", &ModelFolders::single(&dir)).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("models found under")
                && message.contains("checkpoints/sd15.safetensors, dreamy.safetensors, tiny"),
            "{message}"
        );
        assert!(resolve_model("checkpoints/sd15.safetensors", &ModelFolders::single(&dir)).is_ok());
        let empty =
            resolve_model("x", &ModelFolders::single(dir.join("nothing-here"))).unwrap_err();
        assert!(empty.to_string().contains("holds no checkpoint"), "{empty}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shared_and_linked_model_folders_are_listed_and_resolved_first_folder_first() {
        let dir = std::env::temp_dir().join(format!("weft-shared-models-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // ComfyUI's checkpoints, linked into weft's models folder as people do.
        std::fs::create_dir_all(dir.join("comfy/checkpoints")).unwrap();
        std::fs::write(dir.join("comfy/checkpoints/linked.safetensors"), b"x").unwrap();
        std::fs::create_dir_all(dir.join("weft")).unwrap();
        std::os::unix::fs::symlink(dir.join("comfy/checkpoints"), dir.join("weft/checkpoints"))
            .unwrap();
        // A second whole folder, and a folder of checkpoints only (extra_model_paths.yaml).
        std::fs::create_dir_all(dir.join("second/checkpoints")).unwrap();
        std::fs::write(dir.join("second/checkpoints/linked.safetensors"), b"y").unwrap();
        std::fs::write(dir.join("second/checkpoints/only2.safetensors"), b"y").unwrap();
        std::fs::create_dir_all(dir.join("a1111")).unwrap();
        std::fs::write(dir.join("a1111/sd.safetensors"), b"z").unwrap();
        let models = ModelFolders::new(vec![
            ModelFolder::whole(dir.join("weft")),
            ModelFolder::whole(dir.join("second")),
            ModelFolder::of_kind(CHECKPOINTS, dir.join("a1111")),
        ]);
        assert_eq!(
            find_checkpoints(&models),
            [
                "checkpoints/linked.safetensors",
                "checkpoints/only2.safetensors",
                "checkpoints/sd.safetensors"
            ]
        );
        assert_eq!(
            resolve_model("checkpoints/linked.safetensors", &models).unwrap(),
            dir.join("weft/checkpoints/linked.safetensors")
        );
        assert_eq!(
            resolve_model("checkpoints/only2.safetensors", &models).unwrap(),
            dir.join("second/checkpoints/only2.safetensors")
        );
        assert_eq!(
            resolve_model("checkpoints/sd.safetensors", &models).unwrap(),
            dir.join("a1111/sd.safetensors")
        );
        let shadowed = shadowed_checkpoints(&models);
        assert_eq!(shadowed.len(), 1, "{shadowed:?}");
        assert!(
            shadowed[0].contains("checkpoints/linked.safetensors")
                && shadowed[0].contains(&format!("{} is used", dir.join("weft").display())),
            "{shadowed:?}"
        );
        let missing = resolve_model("checkpoints/none.safetensors", &models).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains(&dir.join("a1111/none.safetensors").display().to_string()),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
