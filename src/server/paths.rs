//! The folders the server may touch and the checks that keep every route inside them: names
//! (never paths) from clients, resolved under one root, then canonicalised (symlinks followed)
//! and refused unless the result is still under that root. What runs read is checked by
//! `FileAccess` on the opened file, when queued and again when run.
use std::path::{Path, PathBuf};

use weft_engine::{FileAccess, ModelFolder, ModelFolders};

use super::error::{ApiError, ApiResult};

/// Canonical (absolute, symlink-free) roots; created at start-up.
#[derive(Debug, Clone)]
pub struct Roots {
    pub workflows: PathBuf,
    pub inputs: PathBuf,
    pub outputs: PathBuf,
    /// The model folders in lookup order; the first is created at start-up, the others are
    /// the operator's and used as they are.
    pub models: ModelFolders,
    /// What runs may read: files in the model folders (links followed) and plain files in the
    /// workflows, inputs and outputs folders.
    pub files: FileAccess,
}

impl Roots {
    pub fn new(
        workflows: &Path,
        inputs: &Path,
        outputs: &Path,
        models: &ModelFolders,
    ) -> std::io::Result<Self> {
        let make = |p: &Path| -> std::io::Result<PathBuf> {
            std::fs::create_dir_all(p)?;
            p.canonicalize()
        };
        let workflows = make(workflows)?;
        let inputs = make(inputs)?;
        let outputs = make(outputs)?;
        let mut folders = Vec::new();
        for (i, folder) in models.folders().iter().enumerate() {
            let dir = if i == 0 {
                make(&folder.dir)?
            } else {
                folder
                    .dir
                    .canonicalize()
                    .or_else(|_| std::path::absolute(&folder.dir))?
            };
            folders.push(ModelFolder {
                dir,
                kind: folder.kind.clone(),
            });
        }
        let models = ModelFolders::new(folders);
        let files = FileAccess::within(
            &models,
            &[workflows.clone(), inputs.clone(), outputs.clone()],
            "the models, inputs, workflows and outputs folders",
        );
        Ok(Self {
            workflows,
            inputs,
            outputs,
            models,
            files,
        })
    }
}

/// A client-given file or workflow name: `[A-Za-z0-9_.-]+`, not starting with a dot, short.
pub fn check_name(name: &str, what: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} must be a plain name of letters, digits, '_', '.', '-' (not starting with '.'), no paths"
        )))
    }
}

/// `root/name` for an existing file whose real location is inside `root`.
pub fn existing_under(root: &Path, name: &str, what: &str) -> ApiResult<PathBuf> {
    check_name(name, what)?;
    let path = root.join(name);
    let real = match path.canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound(format!("no {what} '{name}'")))
        }
        Err(e) => return Err(ApiError::internal("resolving a file", e)),
    };
    if !real.starts_with(root) {
        return Err(ApiError::Forbidden(format!(
            "{what} '{name}' points outside its folder"
        )));
    }
    if !real.is_file() {
        return Err(ApiError::NotFound(format!("no {what} '{name}'")));
    }
    Ok(real)
}

/// Writes `bytes` to a temporary file next to `target` (same folder, hidden name) and renames it
/// into place, so readers see the old or the new file, never half of one.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_beside(target);
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, target).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Like `write_atomic` but fails with `AlreadyExists` instead of replacing a file.
pub fn write_new(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_beside(target);
    write_synced(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, target);
    let _ = std::fs::remove_file(&tmp);
    linked
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn temp_beside(target: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_or_dots_first_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            ".hidden",
            "a\\b",
            "a%2fb",
            "a b",
        ] {
            assert!(check_name(bad, "file").is_err(), "{bad:?} accepted");
        }
        for good in ["txt2img", "a.b-c_d", "run1.png"] {
            assert!(check_name(good, "file").is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn symlink_out_of_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link.txt")).unwrap();
        let root = root.canonicalize().unwrap();
        assert!(matches!(
            existing_under(&root, "link.txt", "file"),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.yaml");
        write_new(&target, b"one").unwrap();
        assert!(write_new(&target, b"two").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        write_atomic(&target, b"three").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
