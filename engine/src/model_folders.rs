//! The folders models are found in: one or more whole models folders (laid out like weft's
//! `models/`) and folders of one kind (`checkpoints`) shared with other tools, read from
//! `--models` flags and from a model-paths file in the format of ComfyUI's
//! `extra_model_paths.yaml`. A name is looked up in each folder in order; the first wins.
use std::path::{Path, PathBuf};

use crate::yaml::{self, Yaml};

/// One folder models are looked up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFolder {
    pub dir: PathBuf,
    /// `None`: a whole models folder, where a name such as `checkpoints/x.safetensors` is a
    /// path below `dir`. `Some("checkpoints")`: `dir` holds what such names find under
    /// `checkpoints/` (the layout of ComfyUI's `models/checkpoints`).
    pub kind: Option<String>,
}

impl ModelFolder {
    pub fn whole(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            kind: None,
        }
    }

    pub fn of_kind(kind: &str, dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            kind: Some(kind.to_string()),
        }
    }

    /// Where `name` would be in this folder, if this folder can hold it at all.
    pub fn candidate(&self, name: &str) -> Option<PathBuf> {
        match &self.kind {
            None => Some(self.dir.join(name)),
            Some(kind) => name
                .strip_prefix(kind.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|rest| !rest.is_empty())
                .map(|rest| self.dir.join(rest)),
        }
    }
}

impl std::fmt::Display for ModelFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            None => write!(f, "{}", self.dir.display()),
            Some(kind) => write!(f, "{} (as {kind}/)", self.dir.display()),
        }
    }
}

/// The model folders in lookup order (never empty once built by `new` or `single`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFolders {
    folders: Vec<ModelFolder>,
}

impl ModelFolders {
    /// `folders` in order; with none, the `models` folder of the working folder.
    pub fn new(folders: Vec<ModelFolder>) -> Self {
        if folders.is_empty() {
            return Self::single("models");
        }
        Self { folders }
    }

    pub fn single(dir: impl Into<PathBuf>) -> Self {
        Self {
            folders: vec![ModelFolder::whole(dir)],
        }
    }

    /// Whole models folders from `--models` flags, then those a model-paths file names.
    pub fn from_flags(dirs: &[PathBuf], model_paths: Option<&Path>) -> Result<Self, String> {
        let mut folders: Vec<ModelFolder> = dirs.iter().cloned().map(ModelFolder::whole).collect();
        if let Some(file) = model_paths {
            folders.extend(read_model_paths(file)?);
        }
        Ok(Self::new(folders))
    }

    pub fn folders(&self) -> &[ModelFolder] {
        &self.folders
    }

    /// The first whole models folder: where set-up's converted weights are looked for first
    /// and what messages name when nothing is found.
    pub fn primary(&self) -> &Path {
        self.whole_folders()
            .next()
            .unwrap_or_else(|| &self.folders[0].dir)
    }

    pub fn whole_folders(&self) -> impl Iterator<Item = &Path> {
        self.folders
            .iter()
            .filter(|f| f.kind.is_none())
            .map(|f| f.dir.as_path())
    }

    /// Every place `name` may be, in lookup order.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        self.folders
            .iter()
            .filter_map(|f| f.candidate(name))
            .collect()
    }

    /// The first of `candidates(name)` that exists.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.candidates(name).into_iter().find(|p| p.exists())
    }

    /// `relative` in the first whole folder that has it, else in the primary one (so that a
    /// "missing" message names where set-up puts it).
    pub fn whole_folder_file(&self, relative: &str) -> PathBuf {
        self.whole_folders()
            .map(|dir| dir.join(relative))
            .find(|p| p.exists())
            .unwrap_or_else(|| self.primary().join(relative))
    }
}

impl std::fmt::Display for ModelFolders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, folder) in self.folders.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{folder}")?;
        }
        Ok(())
    }
}

/// Reads a model-paths file in the format of ComfyUI's `extra_model_paths.yaml`:
///
/// ```yaml
/// comfyui:                      # any name per section
///   base_path: /srv/ComfyUI     # relative paths below are relative to this
///   checkpoints: models/checkpoints
///   models: extra/weft-models   # weft's own key: a whole models folder
/// ```
///
/// A value may list several folders, one a line (`|` block). A relative `base_path` is
/// relative to the file's folder. `is_default` is accepted and ignored (order decides).
pub fn read_model_paths(file: &Path) -> Result<Vec<ModelFolder>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the model-paths file {}: {e}", file.display()))?;
    let at = |pos: yaml::Pos, message: String| format!("{}:{pos}: {message}", file.display());
    let tree = yaml::parse_str(&text).map_err(|e| at(e.pos, e.message))?;
    let Some(tree) = tree else {
        return Ok(Vec::new());
    };
    let Yaml::Map { entries, .. } = tree else {
        return Err(at(
            tree.pos(),
            format!(
                "expected a mapping of sections (name: {{base_path: ..., checkpoints: ...}}), found {}",
                tree.kind_name()
            ),
        ));
    };
    let file_dir = file.parent().unwrap_or(Path::new("."));
    let mut folders = Vec::new();
    for (section, body) in &entries {
        let Yaml::Map { entries: keys, .. } = body else {
            return Err(at(
                body.pos(),
                format!(
                    "section '{}' must be a mapping (base_path: ..., checkpoints: ...), found {}",
                    section.text,
                    body.kind_name()
                ),
            ));
        };
        let scalar = |value: &Yaml, key: &str| match value {
            Yaml::Scalar { text, .. } => Ok(text.clone()),
            other => Err(at(
                other.pos(),
                format!(
                    "'{key}' in section '{}' must be a path (or paths, one a line), found {}",
                    section.text,
                    other.kind_name()
                ),
            )),
        };
        let mut base = file_dir.to_path_buf();
        if let Some((_, value)) = keys.iter().find(|(k, _)| k.text == "base_path") {
            base = file_dir.join(expand_home(scalar(value, "base_path")?.trim()));
        }
        for (key, value) in keys {
            if matches!(key.text.as_str(), "base_path" | "is_default") {
                continue;
            }
            let kind = (key.text != "models").then_some(key.text.as_str());
            for line in scalar(value, &key.text)?.lines() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let dir = base.join(expand_home(line));
                folders.push(match kind {
                    None => ModelFolder::whole(dir),
                    Some(kind) => ModelFolder::of_kind(kind, dir),
                });
            }
        }
    }
    Ok(folders)
}

/// `~/x` as `$HOME/x`, as ComfyUI reads these files.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_paths_file_in_comfyuis_format_gives_folders_in_order() {
        let dir = tempfile_dir("paths");
        let file = dir.join("extra_model_paths.yaml");
        std::fs::write(
            &file,
            "comfyui:\n  base_path: /srv/ComfyUI/\n  is_default: true\n  checkpoints: models/checkpoints/\n  loras: |\n    models/loras\n    models/LyCORIS\nmine:\n  models: weft-models\n",
        )
        .unwrap();
        let folders = read_model_paths(&file).unwrap();
        assert_eq!(
            folders,
            [
                ModelFolder::of_kind("checkpoints", "/srv/ComfyUI/models/checkpoints/"),
                ModelFolder::of_kind("loras", "/srv/ComfyUI/models/loras"),
                ModelFolder::of_kind("loras", "/srv/ComfyUI/models/LyCORIS"),
                ModelFolder::whole(dir.join("weft-models")),
            ]
        );
        std::fs::write(&file, "comfyui:\n  - checkpoints\n").unwrap();
        let error = read_model_paths(&file).unwrap_err();
        assert!(
            error.contains(":2:") && error.contains("must be a mapping"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_name_is_looked_up_in_every_folder_and_the_first_wins() {
        let folders = ModelFolders::new(vec![
            ModelFolder::whole("a"),
            ModelFolder::of_kind("checkpoints", "shared"),
            ModelFolder::whole("b"),
        ]);
        assert_eq!(
            folders.candidates("checkpoints/x.safetensors"),
            [
                PathBuf::from("a/checkpoints/x.safetensors"),
                PathBuf::from("shared/x.safetensors"),
                PathBuf::from("b/checkpoints/x.safetensors"),
            ]
        );
        // A folder of one kind holds only names of that kind.
        assert_eq!(
            folders.candidates("tiny-shapes"),
            [
                PathBuf::from("a/tiny-shapes"),
                PathBuf::from("b/tiny-shapes")
            ]
        );
        assert_eq!(folders.primary(), Path::new("a"));
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
