//! What `weft watch` and `weft serve`'s watcher share about watched files: reading a file once
//! its save has settled, and the form of a path that file events report.
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file's bytes once two reads a moment apart agree: an editor that truncates and then
/// writes in place can wake a watcher between the two, and an empty file is not what was
/// saved. `None` when the file is gone.
pub fn read_settled(file: &Path) -> Option<Vec<u8>> {
    let mut previous = std::fs::read(file).ok();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        let current = std::fs::read(file).ok();
        if current == previous {
            return current;
        }
        previous = current;
    }
    previous
}

/// A path as a watcher of its (canonical) folder reports it: the folder canonical, the name as
/// is; the path itself where the folder is gone.
pub fn watch_key(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| path.to_path_buf(), |d| d.join(name)),
        _ => path.to_path_buf(),
    }
}
