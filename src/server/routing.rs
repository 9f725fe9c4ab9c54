//! Cache-aware routing's knowledge of a run: the Merkle keys of its costly nodes, computed on
//! the API server when the run is queued by planning it exactly as a worker will (same
//! registry, same model files, so the same keys), and the text form of keys the database
//! compares with what each worker's cache holds.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use weft_engine::{CacheKey, FileAccess, ModelFolders, Registry, Workflow};

use super::store::HeavyKeys;

/// Node types whose outputs are loaded weights: a worker holding one counts most.
const MODEL_NODES: &[&str] = &[
    "LoadCheckpoint",
    "LoadLora",
    "LoadLoraModelOnly",
    "LoadUpscaleModel",
    "LoadSafetyModel",
];

/// Node types whose outputs cost a model pass or more to compute again.
const HEAVY_NODES: &[&str] = &[
    "PromptEncode",
    "PromptEncodeSdxl",
    "PromptEncodeSdxlRefiner",
    "Sampler",
    "SamplerAdvanced",
    "VaeEncode",
    "VaeEncodeForInpaint",
    "InpaintModelConditioning",
];

/// A key as the database stores it: all 32 bytes in hex.
pub fn key_text(key: &CacheKey) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's content hash, remembered while its size and modification time stay the same (a
/// model file is hashed once, not on every queued run).
struct Hashed {
    len: u64,
    modified: Option<SystemTime>,
    hash: [u8; 32],
}

/// A workflow planned lately: its keys hold while the files it read keep their size and
/// modification time (a rerun is not parsed, validated and planned again on enqueue).
struct Planned {
    workflow: String,
    target: Option<String>,
    files: Vec<(PathBuf, u64, Option<SystemTime>)>,
    keys: HeavyKeys,
}

/// How many planned workflows `KeyPlanner` remembers.
const PLANNED_KEPT: usize = 16;

/// Plans queued runs for their heavy keys.
pub struct KeyPlanner {
    registry: Arc<Registry>,
    models: ModelFolders,
    files: FileAccess,
    hashed: Mutex<HashMap<PathBuf, Hashed>>,
    planned: Mutex<std::collections::VecDeque<Planned>>,
}

/// A file's size and modification time now (None when it cannot be read).
fn stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

impl KeyPlanner {
    pub fn new(registry: Arc<Registry>, models: ModelFolders, files: FileAccess) -> Self {
        Self {
            registry,
            models,
            files,
            hashed: Mutex::new(HashMap::new()),
            planned: Mutex::new(Default::default()),
        }
    }

    /// The heavy keys of `workflow` run for `target`; empty when it does not validate or plan
    /// here (a file this server lacks): such a run is claimed by model names only.
    pub fn heavy_keys(&self, workflow: &str, target: Option<&str>) -> HeavyKeys {
        let mut planned = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        let known = planned.iter().position(|p| {
            p.workflow == workflow
                && p.target.as_deref() == target
                && p.files.iter().all(|(path, len, modified)| {
                    stamp(path).is_some_and(|now| now == (*len, *modified) && modified.is_some())
                })
        });
        if let Some(known) = known {
            return planned[known].keys.clone();
        }
        let mut files = Vec::new();
        let keys = self.plan_keys(workflow, target, &mut files);
        if planned.len() >= PLANNED_KEPT {
            planned.pop_front();
        }
        planned.push_back(Planned {
            workflow: workflow.to_string(),
            target: target.map(str::to_string),
            files,
            keys: keys.clone(),
        });
        keys
    }

    /// `heavy_keys` without the memory; `files`: the files it read, with their stamps.
    fn plan_keys(
        &self,
        workflow: &str,
        target: Option<&str>,
        files: &mut Vec<(PathBuf, u64, Option<SystemTime>)>,
    ) -> HeavyKeys {
        let Ok(parsed) = Workflow::parse(workflow.as_bytes()) else {
            return HeavyKeys::default();
        };
        if !weft_engine::validate(&parsed, &self.registry, target).is_empty() {
            return HeavyKeys::default();
        }
        let mut hashed = self.hashed.lock().unwrap_or_else(|e| e.into_inner());
        let planned = weft_engine::plan::plan(
            &parsed,
            &self.registry,
            target,
            &self.models,
            &mut |path: &Path| {
                let hash = self.hash_file(&mut hashed, path)?;
                if let Some((len, modified)) = stamp(path) {
                    files.push((path.to_path_buf(), len, modified));
                }
                Ok(hash)
            },
        );
        let Ok(plan) = planned else {
            return HeavyKeys::default();
        };
        let mut keys = HeavyKeys::default();
        for step in &plan.steps {
            let type_name = self.registry.by_index(step.type_index).spec.type_name;
            if MODEL_NODES.contains(&type_name) {
                keys.models.push(key_text(&step.key));
            } else if HEAVY_NODES.contains(&type_name) {
                keys.others.push(key_text(&step.key));
            }
        }
        for list in [&mut keys.models, &mut keys.others] {
            list.sort_unstable();
            list.dedup();
        }
        keys
    }

    fn hash_file(
        &self,
        hashed: &mut HashMap<PathBuf, Hashed>,
        path: &Path,
    ) -> std::io::Result<[u8; 32]> {
        let file = self.files.open(path)?;
        let meta = file.metadata()?;
        let modified = meta.modified().ok();
        if let Some(known) = hashed.get(path) {
            if known.len == meta.len() && known.modified == modified && modified.is_some() {
                return Ok(known.hash);
            }
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(&file)?;
        let hash = *hasher.finalize().as_bytes();
        hashed.insert(
            path.to_path_buf(),
            Hashed {
                len: meta.len(),
                modified,
                hash,
            },
        );
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner() -> KeyPlanner {
        let repo_models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let models = ModelFolders::new(vec![weft_engine::ModelFolder::whole(&repo_models)]);
        KeyPlanner::new(
            Arc::new(weft_nodes::registry()),
            models,
            FileAccess::anywhere(),
        )
    }

    #[test]
    fn a_run_s_heavy_keys_are_its_loads_encodes_and_sampler() {
        let txt2img = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/txt2img.yaml"),
        )
        .unwrap();
        let planner = planner();
        let keys = planner.heavy_keys(&txt2img, None);
        assert_eq!(keys.models.len(), 1, "one checkpoint: {keys:?}");
        assert_eq!(
            keys.others.len(),
            3,
            "two prompt encodes and a sampler: {keys:?}"
        );
        assert!(
            keys.models[0].len() == 64 && keys.models[0].chars().all(|c| c.is_ascii_hexdigit())
        );
        assert_eq!(planner.heavy_keys(&txt2img, None), keys, "stable");
        let reseeded = planner.heavy_keys(&txt2img.replace("seed: 42", "seed: 43"), None);
        assert_eq!(reseeded.models, keys.models, "the same model load");
        assert_eq!(
            reseeded
                .others
                .iter()
                .filter(|k| keys.others.contains(k))
                .count(),
            2,
            "the same encodes, another sampler"
        );
        assert_eq!(
            planner.heavy_keys("not: [a workflow", None),
            HeavyKeys::default()
        );
    }
}
