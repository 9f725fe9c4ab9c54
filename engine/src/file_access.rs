//! Opening the files a run reads, with the server's folder rule checked on the file actually
//! opened (not on a path looked at earlier): a file may have been swapped for a symbolic link
//! between queueing and running. The models folders are the operator's and trusted, so their
//! links are followed (a models folder shared with ComfyUI is usually linked in); anywhere
//! else the last component must not be a link and the opened file's real path must be inside
//! one of the allowed folders. The CLI opens files without limits.
use std::fs::File;
use std::io::{Error, ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::model_folders::ModelFolders;

/// Who may open what; cheap to clone (the limits are shared).
#[derive(Debug, Clone, Default)]
pub struct FileAccess {
    limits: Option<Arc<Limits>>,
}

#[derive(Debug)]
struct Limits {
    /// Model folders as given (made absolute) and canonicalised: a path lexically below one
    /// is opened with its links followed.
    trusted: Vec<PathBuf>,
    /// Canonical folders the real path of an opened file must be inside.
    allowed: Vec<PathBuf>,
    /// How messages name the allowed folders.
    description: String,
}

impl FileAccess {
    /// No limits: `weft run` and `weft watch` read whatever the workflow names.
    pub fn anywhere() -> Self {
        Self::default()
    }

    /// Files inside the model folders (links followed) or, as plain files, inside `others`
    /// (the workflows, inputs and outputs folders); `description` names them in messages.
    pub fn within(models: &ModelFolders, others: &[PathBuf], description: &str) -> Self {
        let mut trusted = Vec::new();
        for folder in models.folders() {
            if let Ok(absolute) = std::path::absolute(&folder.dir) {
                trusted.push(absolute);
            }
            if let Ok(real) = folder.dir.canonicalize() {
                trusted.push(real);
            }
        }
        let mut allowed: Vec<PathBuf> = others
            .iter()
            .filter_map(|dir| dir.canonicalize().ok())
            .collect();
        allowed.extend(trusted.iter().cloned());
        Self {
            limits: Some(Arc::new(Limits {
                trusted,
                allowed,
                description: description.to_string(),
            })),
        }
    }

    pub fn is_limited(&self) -> bool {
        self.limits.is_some()
    }

    /// Opens a regular file for reading, refused unless the rule above allows it. The checks
    /// are made on the opened descriptor, so what is read is what was checked.
    pub fn open(&self, path: &Path) -> std::io::Result<File> {
        let file = self.open_checked(path)?;
        if !file.metadata()?.is_file() {
            return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(file)
    }

    /// The whole content of a regular file (see `open`).
    pub fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// `read` as UTF-8 text.
    pub fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        String::from_utf8(self.read(path)?)
            .map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))
    }

    /// Ok when a run may read `path`, a regular file or a folder (a diffusers model): the check
    /// made when a run is queued. Each file is checked again when it is opened.
    pub fn check(&self, path: &Path) -> std::io::Result<()> {
        let meta = self.open_checked(path)?.metadata()?;
        if meta.is_file() || meta.is_dir() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                "not a regular file or a folder",
            ))
        }
    }

    fn open_checked(&self, path: &Path) -> std::io::Result<File> {
        // Non-blocking, so that a FIFO put in a file's place cannot hang the device worker;
        // reads of regular files and folders ignore the flag.
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        let Some(limits) = &self.limits else {
            return options.custom_flags(libc::O_NONBLOCK).open(path);
        };
        if limits.is_trusted(path) {
            return options.custom_flags(libc::O_NONBLOCK).open(path);
        }
        let file = options
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    Error::new(
                        ErrorKind::PermissionDenied,
                        "it is a symbolic link; outside the model folders a run reads only \
                         plain files, so put the file itself there instead of a link",
                    )
                } else {
                    e
                }
            })?;
        let real = real_path(&file, path)?;
        if limits.allowed.iter().any(|root| real.starts_with(root)) {
            Ok(file)
        } else {
            Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "it is really {}, outside {}, the only folders a run may read",
                    real.display(),
                    limits.description
                ),
            ))
        }
    }
}

impl Limits {
    /// Lexically below a model folder, with no `..` that could climb out of it.
    fn is_trusted(&self, path: &Path) -> bool {
        let Ok(absolute) = std::path::absolute(path) else {
            return false;
        };
        !absolute
            .components()
            .any(|c| matches!(c, Component::ParentDir))
            && self.trusted.iter().any(|root| absolute.starts_with(root))
    }
}

/// Where the opened file really is: the kernel's name for the descriptor, or (without /proc)
/// the canonical path, accepted only if it is the very file that was opened.
fn real_path(file: &File, path: &Path) -> std::io::Result<PathBuf> {
    if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        return Ok(real);
    }
    let real = path.canonicalize()?;
    let (opened, named) = (file.metadata()?, std::fs::metadata(&real)?);
    if opened.dev() == named.dev() && opened.ino() == named.ino() {
        Ok(real)
    } else {
        Err(Error::new(
            ErrorKind::PermissionDenied,
            "the file was replaced while it was being opened",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_folders::ModelFolder;

    struct Dirs {
        base: PathBuf,
        inputs: PathBuf,
        models: PathBuf,
        access: FileAccess,
    }

    fn dirs(tag: &str) -> Dirs {
        let base = std::env::temp_dir().join(format!("weft-access-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (inputs, models) = (base.join("inputs"), base.join("models"));
        std::fs::create_dir_all(&inputs).unwrap();
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(base.join("secret.txt"), "outside").unwrap();
        let access = FileAccess::within(
            &ModelFolders::new(vec![ModelFolder::whole(&models)]),
            std::slice::from_ref(&inputs),
            "the test's folders",
        );
        Dirs {
            base,
            inputs,
            models,
            access,
        }
    }

    #[test]
    fn a_file_swapped_for_a_link_after_its_check_is_refused_when_opened() {
        let d = dirs("swap");
        let file = d.inputs.join("swap.txt");
        std::fs::write(&file, "inside").unwrap();
        d.access.check(&file).unwrap();
        assert_eq!(d.access.read(&file).unwrap(), b"inside");
        // The swap a second user (or a shared folder) can make between queueing and running.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(d.base.join("secret.txt"), &file).unwrap();
        let error = d.access.read(&file).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        // With no limits (the CLI) the link is followed as before.
        assert_eq!(FileAccess::anywhere().read(&file).unwrap(), b"outside");
        std::fs::remove_dir_all(&d.base).unwrap();
    }

    #[test]
    fn a_folder_link_out_of_the_allowed_folders_is_refused_on_the_opened_file() {
        let d = dirs("dirlink");
        std::fs::create_dir(d.base.join("elsewhere")).unwrap();
        std::fs::write(d.base.join("elsewhere/x.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(d.base.join("elsewhere"), d.inputs.join("sub")).unwrap();
        let error = d.access.read(&d.inputs.join("sub/x.txt")).unwrap_err();
        assert!(
            error.to_string().contains("outside the test's folders"),
            "{error}"
        );
        let climbing = d.models.join("../secret.txt");
        let error = d.access.read(&climbing).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
        std::fs::remove_dir_all(&d.base).unwrap();
    }

    #[test]
    fn links_inside_the_models_folders_are_followed() {
        let d = dirs("models");
        std::fs::create_dir(d.base.join("comfy-checkpoints")).unwrap();
        std::fs::write(d.base.join("comfy-checkpoints/x.safetensors"), "weights").unwrap();
        std::os::unix::fs::symlink(
            d.base.join("comfy-checkpoints"),
            d.models.join("checkpoints"),
        )
        .unwrap();
        std::os::unix::fs::symlink(d.base.join("secret.txt"), d.models.join("linked.txt")).unwrap();
        let through_folder = d.models.join("checkpoints/x.safetensors");
        assert_eq!(d.access.read(&through_folder).unwrap(), b"weights");
        d.access.check(&d.models.join("checkpoints")).unwrap();
        assert_eq!(
            d.access.read(&d.models.join("linked.txt")).unwrap(),
            b"outside"
        );
        std::fs::remove_dir_all(&d.base).unwrap();
    }

    #[test]
    fn a_fifo_in_a_files_place_fails_instead_of_hanging() {
        let d = dirs("fifo");
        let fifo = d.inputs.join("pipe.png");
        let name = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = d.access.read(&fifo).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(&d.base).unwrap();
    }
}
