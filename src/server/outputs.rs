//! Where runs' output files live, behind one seam: the outputs folder (`<data>/outputs`, the
//! default and the only store of a lone `weft serve`) or an S3-compatible bucket through the
//! `object_store` crate (`--outputs s3://bucket/prefix` on a fleet's workers and API servers,
//! docs/scaling.md). Files are named by a key relative to the outputs root, `<run>/<file>`
//! (a SaveImage prefix may add folders) or `sweeps/<id>/grid.png`; every part is a plain name.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

use super::events::{Broadcast, ServerEvent};
use super::queue::Claims;
use super::store::{Finished, RunRecord, RunState, StoreResult};

/// Why an output could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("no output '{0}'")]
    NotFound(String),
    /// A symlink in the outputs folder leads out of its run's folder.
    #[error("the output '{0}' points outside its folder")]
    Outside(String),
    #[error("'{0}' is not an output's name (plain names joined by '/', none hidden)")]
    BadKey(String),
    #[error("{doing} in {place}: {cause}")]
    Storage {
        doing: String,
        place: String,
        cause: String,
    },
}

pub type OutputResult<T> = Result<T, OutputError>;

/// A run's files, wherever the fleet keeps them. Writes are atomic from a reader's view: a
/// reader sees a whole file or none (a folder's file is written aside and renamed; an object
/// is one PUT).
pub trait OutputStore: Send + Sync {
    /// Where the files live, for logs: a folder or `s3://bucket/prefix`.
    fn place(&self) -> String;
    /// The local folder that is the store, where a run's images are written directly; `None`
    /// for an object store, to which a worker copies each run's files when it finishes.
    fn folder(&self) -> Option<&Path>;
    /// Stores `bytes` as `key` (`<run>/<file>`), replacing what was there.
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, OutputResult<()>>;
    /// The bytes stored as `key`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, OutputResult<Bytes>>;
    /// The keys stored under the run's folder `run` (e.g. `"17"`), sorted.
    fn list<'a>(&'a self, run: &'a str) -> BoxFuture<'a, OutputResult<Vec<String>>>;
    /// Removes every file of the run's folder `run` (nothing there is not an error).
    fn delete_run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, OutputResult<()>>;
}

/// The plain parts of `key`, or why it is not an output's name.
fn key_parts(key: &str) -> OutputResult<Vec<&str>> {
    let parts: Vec<&str> = key.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty() && p.len() <= 255 && !p.starts_with('.') && !p.contains(['\\', '\0'])
    };
    if parts.iter().all(plain) {
        Ok(parts)
    } else {
        Err(OutputError::BadKey(key.to_string()))
    }
}

/// The outputs folder, shared by every machine when it is a network folder: today's layout,
/// `<root>/<run>/<file>`.
pub struct FolderOutputs {
    root: PathBuf,
}

/// Makes the temporary names of concurrent writes distinct within a process.
static WRITES: AtomicU64 = AtomicU64::new(0);

impl FolderOutputs {
    /// `root` as `paths::Roots` made it (absolute, symlinks resolved).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn storage(&self, doing: &str, e: std::io::Error) -> OutputError {
        OutputError::Storage {
            doing: doing.to_string(),
            place: self.root.display().to_string(),
            cause: e.to_string(),
        }
    }

    fn put_now(&self, key: &str, bytes: &[u8]) -> OutputResult<()> {
        let parts = key_parts(key)?;
        let path = parts.iter().fold(self.root.clone(), |p, part| p.join(part));
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| self.storage("creating a run's folder", e))?;
        // Hidden (a leading dot), so neither `list` nor a reader by name ever sees it half
        // written.
        let aside = dir.join(format!(
            ".{}.{}-{}.part",
            parts[parts.len() - 1],
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&aside, bytes).and_then(|()| std::fs::rename(&aside, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&aside);
            return Err(self.storage(&format!("writing {key}"), e));
        }
        Ok(())
    }

    /// The file `key` names, symlinks followed: it must be a file and stay inside its run's
    /// folder (the outputs folder for a key of one part).
    fn get_now(&self, key: &str) -> OutputResult<Bytes> {
        let parts = key_parts(key)?;
        let inside = if parts.len() > 1 {
            self.root.join(parts[0])
        } else {
            self.root.clone()
        };
        let path = parts.iter().fold(self.root.clone(), |p, part| p.join(part));
        let real = match path.canonicalize() {
            Ok(real) if real.is_file() => real,
            Ok(_) => return Err(OutputError::NotFound(key.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OutputError::NotFound(key.to_string()))
            }
            Err(e) => return Err(self.storage(&format!("resolving {key}"), e)),
        };
        if !real.starts_with(&inside) {
            return Err(OutputError::Outside(key.to_string()));
        }
        std::fs::read(&real)
            .map(Bytes::from)
            .map_err(|e| self.storage(&format!("reading {key}"), e))
    }

    fn list_now(&self, run: &str) -> OutputResult<Vec<String>> {
        key_parts(run)?;
        fn walk(dir: &Path, key: &str, keys: &mut Vec<String>) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let kind = entry.file_type()?;
                let child = format!("{key}/{name}");
                if kind.is_dir() {
                    walk(&entry.path(), &child, keys)?;
                } else {
                    keys.push(child);
                }
            }
            Ok(())
        }
        let mut keys = Vec::new();
        match walk(&self.root.join(run), run, &mut keys) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.storage(&format!("listing run folder {run}"), e)),
        }
        keys.sort();
        Ok(keys)
    }

    fn delete_now(&self, run: &str) -> OutputResult<()> {
        key_parts(run)?;
        match std::fs::remove_dir_all(self.root.join(run)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.storage(&format!("emptying run folder {run}"), e)),
        }
    }
}

impl OutputStore for FolderOutputs {
    fn place(&self) -> String {
        self.root.display().to_string()
    }
    fn folder(&self) -> Option<&Path> {
        Some(&self.root)
    }
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, OutputResult<()>> {
        Box::pin(async move { self.put_now(key, &bytes) })
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, OutputResult<Bytes>> {
        Box::pin(async move { self.get_now(key) })
    }
    fn list<'a>(&'a self, run: &'a str) -> BoxFuture<'a, OutputResult<Vec<String>>> {
        Box::pin(async move { self.list_now(run) })
    }
    fn delete_run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, OutputResult<()>> {
        Box::pin(async move { self.delete_now(run) })
    }
}

/// Outputs as objects `<prefix>/<run>/<file>` in any `object_store` backend: S3 and
/// S3-compatible servers in use, the in-memory one in tests.
pub struct ObjectOutputs {
    store: Arc<dyn ObjectStore>,
    prefix: Vec<String>,
    place: String,
}

impl ObjectOutputs {
    /// `prefix` is the folder inside the bucket (empty: its top); `place` names it in logs.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, place: String) -> Self {
        let prefix = prefix
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        Self {
            store,
            prefix,
            place,
        }
    }

    fn location(&self, key: &str) -> OutputResult<ObjectPath> {
        let parts = key_parts(key)?;
        let all: Vec<&str> = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(parts)
            .collect();
        ObjectPath::parse(all.join("/")).map_err(|_| OutputError::BadKey(key.to_string()))
    }

    fn storage(&self, doing: String, e: object_store::Error) -> OutputError {
        OutputError::Storage {
            doing,
            place: self.place.clone(),
            cause: e.to_string(),
        }
    }

    /// The key of an object below the prefix.
    fn key_of(&self, location: &ObjectPath) -> String {
        location
            .parts()
            .skip(self.prefix.len())
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/")
    }

    async fn list_now(&self, run: &str) -> OutputResult<Vec<String>> {
        // object_store matches a prefix by whole parts: run 1 does not list run 10's files.
        let folder = self.location(run)?;
        let found: Vec<_> = self
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| self.storage(format!("listing run folder {run}"), e))?;
        let mut keys: Vec<String> = found.iter().map(|o| self.key_of(&o.location)).collect();
        keys.sort();
        Ok(keys)
    }

    /// Fails when the bucket cannot be listed (wrong endpoint, credentials, bucket name), so
    /// a process says so at start rather than at its first image.
    pub async fn check(&self) -> OutputResult<()> {
        let top = ObjectPath::from_iter(self.prefix.iter().map(String::as_str));
        self.store
            .list_with_delimiter(Some(&top))
            .await
            .map(|_| ())
            .map_err(|e| self.storage("listing the bucket".into(), e))
    }
}

impl OutputStore for ObjectOutputs {
    fn place(&self) -> String {
        self.place.clone()
    }
    fn folder(&self) -> Option<&Path> {
        None
    }
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, OutputResult<()>> {
        Box::pin(async move {
            let location = self.location(key)?;
            self.store
                .put(&location, PutPayload::from_bytes(bytes))
                .await
                .map(|_| ())
                .map_err(|e| self.storage(format!("storing {key}"), e))
        })
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, OutputResult<Bytes>> {
        Box::pin(async move {
            let location = self.location(key)?;
            let read = async { self.store.get(&location).await?.bytes().await };
            match read.await {
                Ok(bytes) => Ok(bytes),
                Err(object_store::Error::NotFound { .. }) => {
                    Err(OutputError::NotFound(key.to_string()))
                }
                Err(e) => Err(self.storage(format!("reading {key}"), e)),
            }
        })
    }
    fn list<'a>(&'a self, run: &'a str) -> BoxFuture<'a, OutputResult<Vec<String>>> {
        Box::pin(self.list_now(run))
    }
    fn delete_run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, OutputResult<()>> {
        Box::pin(async move {
            for key in self.list_now(run).await? {
                let location = self.location(&key)?;
                match self.store.delete(&location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.storage(format!("deleting {key}"), e)),
                }
            }
            Ok(())
        })
    }
}

/// `--outputs`: an S3 bucket and the folder in it, `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputsSetting {
    bucket: String,
    prefix: String,
}

impl OutputsSetting {
    /// `s3://bucket[/prefix]`, or why not.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text.strip_prefix("s3://").ok_or_else(|| {
            format!(
                "--outputs '{text}': give s3://BUCKET/PREFIX (an S3-compatible bucket); without \
                 --outputs the outputs stay in <data>/outputs"
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("--outputs '{text}': the bucket's name is missing"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() && key_parts(&prefix).is_err() {
            return Err(format!(
                "--outputs '{text}': the prefix must be plain names joined by '/'"
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The bucket's store, configured from the AWS_* environment (credentials, region,
    /// `AWS_ENDPOINT` for an S3-compatible server, `AWS_ALLOW_HTTP=true` for plain HTTP).
    pub fn open(&self) -> anyhow::Result<ObjectOutputs> {
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .build()
            .map_err(|e| anyhow::anyhow!("--outputs s3://{}: {e}", self.bucket))?;
        let place = if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        };
        Ok(ObjectOutputs::new(Arc::new(s3), &self.prefix, place))
    }
}

/// An output store for plain threads (the scheduler composing a sweep's grid, ComfyUI's
/// translator reading a SaveImageWebsocket image, a worker storing its runs' files): each
/// request runs to its end on a small runtime of its own.
pub struct BlockingOutputs {
    store: Arc<dyn OutputStore>,
    runtime: tokio::runtime::Runtime,
}

impl BlockingOutputs {
    pub fn new(store: Arc<dyn OutputStore>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-outputs")
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("starting the outputs' runtime: {e}"))?;
        Ok(Self { store, runtime })
    }

    /// The store for async callers.
    pub fn store(&self) -> &Arc<dyn OutputStore> {
        &self.store
    }

    /// Runs one of the store's requests to its end. Not from inside an async task (a plain
    /// thread or `spawn_blocking`).
    pub fn wait<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(request)
    }

    pub fn get(&self, key: &str) -> OutputResult<Bytes> {
        self.wait(self.store.get(key))
    }

    pub fn put(&self, key: &str, bytes: Bytes) -> OutputResult<()> {
        self.wait(self.store.put(key, bytes))
    }
}

/// The local files of run folder `run` under `root`, as keys (`<run>/<file>`) and paths.
pub fn local_files(root: &Path, run: &str) -> OutputResult<Vec<(String, PathBuf)>> {
    let local = FolderOutputs::new(root.to_path_buf());
    let keys = local.list_now(run)?;
    Ok(keys
        .into_iter()
        .map(|key| {
            let path = key
                .split('/')
                .fold(root.to_path_buf(), |p, part| p.join(part));
            (key, path)
        })
        .collect())
}

/// What a fleet worker stored of its runs' files ahead of their end, so the end stores them
/// once: each run's `output` files, stored before the event goes out (a SaveImageWebsocket
/// image is read from the bucket by the API server that relays the event).
#[derive(Default)]
struct StoredEarly(Mutex<HashSet<String>>);

impl StoredEarly {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fleet worker's claims when its outputs go to an object store: the worker renders into
/// its own outputs folder as always, and a run's files are stored when it finishes, before its
/// record and its `run_finished` (so a client told it finished finds its images). A re-claimed
/// run's stored files are deleted first, so what a dead worker stored never shows up beside
/// the new run's files (runs are deterministic: the new files have the same names and bytes).
struct PublishingClaims {
    inner: Arc<dyn Claims>,
    /// The worker's own outputs folder, where its runs write.
    local: PathBuf,
    bucket: Arc<BlockingOutputs>,
    early: Arc<StoredEarly>,
}

/// Reads the file `key` of the worker's outputs folder `local`.
fn read_local(local: &Path, key: &str) -> OutputResult<Bytes> {
    let path = key_parts(key)?
        .iter()
        .fold(local.to_path_buf(), |p, part| p.join(part));
    std::fs::read(&path)
        .map(Bytes::from)
        .map_err(|e| OutputError::Storage {
            doing: format!("reading {}", path.display()),
            place: local.display().to_string(),
            cause: e.to_string(),
        })
}

impl PublishingClaims {
    /// Stores every file of the run's local folder not stored yet; how many.
    fn publish(&self, id: u64) -> OutputResult<usize> {
        let files = local_files(&self.local, &id.to_string())?;
        let early = std::mem::take(&mut *self.early.lock());
        let mut stored = 0;
        for (key, _) in &files {
            if !early.contains(key) {
                self.bucket.put(key, read_local(&self.local, key)?)?;
                stored += 1;
            }
        }
        Ok(stored)
    }
}

impl Claims for PublishingClaims {
    fn claim(&self) -> StoreResult<Option<RunRecord>> {
        let run = self.inner.claim()?;
        if let Some(run) = &run {
            self.early.lock().clear();
            let folder = run.id.to_string();
            if let Err(e) = self.bucket.wait(self.bucket.store().delete_run(&folder)) {
                eprintln!(
                    "weft worker: run {}: cannot delete what an earlier try stored: {e}",
                    run.id
                );
            }
        }
        Ok(run)
    }

    fn finish(&self, id: u64, finished: &Finished, announce: &Broadcast) -> StoreResult<bool> {
        match self.publish(id) {
            Ok(_) => self.inner.finish(id, finished, announce),
            Err(e) => {
                // Recorded as failed: its images exist only on this worker, where no API server
                // can serve them.
                eprintln!("weft worker: run {id}: {e}");
                let message = format!("the run's images could not be stored: {e}");
                let failed = Finished {
                    status: weft_engine::RunStatus::Failed,
                    error: Some(serde_json::json!({ "message": message })),
                    ..finished.clone()
                };
                let (ran, cached, micros) = match announce.event() {
                    ServerEvent::RunFinished {
                        ran,
                        cached,
                        micros,
                        ..
                    } => (*ran, *cached, *micros),
                    _ => (0, 0, 0),
                };
                let announce = Broadcast::new(ServerEvent::RunFinished {
                    run: id,
                    status: RunState::from(failed.status),
                    ran,
                    cached,
                    micros,
                });
                self.inner.finish(id, &failed, &announce)
            }
        }
    }
}

/// A fleet worker's outputs: the storage every machine reads (the shared folder, which is the
/// worker's own, or with `--outputs s3://…` a bucket its runs' files are copied to).
pub struct WorkerOutputs {
    /// Where every machine's finished runs are: sweeps' grids are composed from it.
    pub shared: Arc<BlockingOutputs>,
    /// The bucket, with `--outputs`.
    bucket: Option<Arc<BlockingOutputs>>,
    /// The worker's outputs folder, where its runs render.
    local: PathBuf,
    early: Arc<StoredEarly>,
    /// For the worker's log.
    pub place: String,
}

impl WorkerOutputs {
    /// With `--outputs s3://…` (`setting`), the bucket, checked reachable now; without, the
    /// worker's outputs folder `local`.
    pub fn open(setting: Option<&str>, local: &Path) -> anyhow::Result<Self> {
        let early = Arc::new(StoredEarly::default());
        let Some(text) = setting.filter(|t| !t.trim().is_empty()) else {
            let folder = Arc::new(FolderOutputs::new(local.to_path_buf()));
            return Ok(Self {
                shared: Arc::new(BlockingOutputs::new(folder)?),
                bucket: None,
                local: local.to_path_buf(),
                early,
                place: local.display().to_string(),
            });
        };
        let setting = OutputsSetting::parse(text).map_err(anyhow::Error::msg)?;
        let opened = Arc::new(setting.open()?);
        let bucket = Arc::new(BlockingOutputs::new(opened.clone())?);
        bucket.wait(opened.check())?;
        Ok(Self {
            shared: bucket.clone(),
            bucket: Some(bucket),
            local: local.to_path_buf(),
            early,
            place: format!("{} (rendered in {})", opened.place(), local.display()),
        })
    }

    /// What the worker's scheduler claims through: with a bucket, the lease claims wrapped to
    /// store each run's files in it; without, the lease claims themselves.
    pub fn claims(&self, leases: Arc<dyn Claims>) -> Arc<dyn Claims> {
        match &self.bucket {
            Some(bucket) => Arc::new(PublishingClaims {
                inner: leases,
                local: self.local.clone(),
                bucket: bucket.clone(),
                early: self.early.clone(),
            }),
            None => leases,
        }
    }

    /// Called with each event before it goes to the API servers: a run's new output file is
    /// stored in the bucket first, so an API server that reads it on the event (ComfyUI's
    /// SaveImageWebsocket frame) finds it. Images travel through the storage, not NOTIFY.
    pub fn before_sending(&self, event: &ServerEvent) {
        let Some(bucket) = &self.bucket else {
            // A shared folder: the file is there already.
            return;
        };
        let ServerEvent::Output {
            run,
            path,
            cached: false,
            ..
        } = event
        else {
            return;
        };
        // A cached node's file is an earlier run's, stored when that run finished.
        if !path.starts_with(&format!("{run}/")) {
            return;
        }
        match read_local(&self.local, path).and_then(|bytes| bucket.put(path, bytes)) {
            Ok(()) => {
                self.early.lock().insert(path.clone());
            }
            // Stored at the run's end instead (or the run fails saying why).
            Err(e) => eprintln!("weft worker: run {run}: storing {path} early: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The contract every store keeps; run against each implementation.
    async fn keeps_the_contract(store: &dyn OutputStore) {
        store
            .put("7/a.png", Bytes::from_static(b"first"))
            .await
            .unwrap();
        store
            .put("7/sub/b.png", Bytes::from_static(b"b"))
            .await
            .unwrap();
        store
            .put("70/c.png", Bytes::from_static(b"c"))
            .await
            .unwrap();
        store
            .put("7/a.png", Bytes::from_static(b"second"))
            .await
            .unwrap();
        assert_eq!(&store.get("7/a.png").await.unwrap()[..], b"second");
        assert_eq!(&store.get("7/sub/b.png").await.unwrap()[..], b"b");
        // Run 7's folder is not a prefix of run 70's.
        assert_eq!(store.list("7").await.unwrap(), ["7/a.png", "7/sub/b.png"]);
        assert_eq!(store.list("70").await.unwrap(), ["70/c.png"]);
        assert!(store.list("8").await.unwrap().is_empty());
        assert!(matches!(
            store.get("7/missing.png").await,
            Err(OutputError::NotFound(_))
        ));
        for bad in ["7/../70/c.png", "7//a.png", "7/.hidden", "", "7\\a.png"] {
            assert!(
                matches!(store.get(bad).await, Err(OutputError::BadKey(_))),
                "{bad:?} is refused"
            );
            assert!(store.put(bad, Bytes::new()).await.is_err(), "{bad:?} put");
        }
        store.delete_run("7").await.unwrap();
        assert!(store.list("7").await.unwrap().is_empty());
        assert!(matches!(
            store.get("7/a.png").await,
            Err(OutputError::NotFound(_))
        ));
        assert_eq!(&store.get("70/c.png").await.unwrap()[..], b"c");
        store.delete_run("7").await.unwrap();
    }

    #[test]
    fn the_outputs_folder_keeps_the_contract_and_todays_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let store = FolderOutputs::new(root.clone());
        block(keeps_the_contract(&store));
        // Byte-identical paths: <root>/<run>/<file>, and no temporary file left beside it.
        block(store.put("9/x.png", Bytes::from_static(b"x"))).unwrap();
        assert_eq!(std::fs::read(root.join("9/x.png")).unwrap(), b"x");
        let names: Vec<_> = std::fs::read_dir(root.join("9"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.png"]);
        assert_eq!(store.folder(), Some(root.as_path()));
    }

    #[test]
    fn a_half_written_file_is_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("3")).unwrap();
        std::fs::write(root.join("3/.a.png.1-0.part"), b"half").unwrap();
        std::fs::write(root.join("3/a.png"), b"whole").unwrap();
        let keys: Vec<String> = local_files(&root, "3")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["3/a.png"]);
    }

    #[test]
    fn a_symlink_out_of_a_run_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("4")).unwrap();
        std::fs::write(root.join("secret.txt"), b"s").unwrap();
        std::os::unix::fs::symlink(root.join("secret.txt"), root.join("4/leak.png")).unwrap();
        let store = FolderOutputs::new(root);
        assert!(matches!(
            block(store.get("4/leak.png")),
            Err(OutputError::Outside(_))
        ));
    }

    #[test]
    fn object_stores_keep_the_contract_below_their_prefix() {
        let memory = Arc::new(object_store::memory::InMemory::new());
        let store = ObjectOutputs::new(memory.clone(), "team/outputs", "memory".into());
        block(keeps_the_contract(&store));
        block(store.check()).unwrap();
        assert_eq!(store.folder(), None);
        // Stored under the prefix, nothing beside it.
        let all: Vec<String> = block(memory.list(None).try_collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        assert_eq!(all, ["team/outputs/70/c.png"]);
        let top = ObjectOutputs::new(memory, "", "memory".into());
        assert_eq!(block(top.list("team")).unwrap(), ["team/outputs/70/c.png"]);
    }

    #[test]
    fn the_outputs_setting_names_a_bucket_and_a_prefix() {
        let s = OutputsSetting::parse("s3://renders/weft/out/").unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("renders", "weft/out")
        );
        let s = OutputsSetting::parse("s3://renders").unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("renders", ""));
        for bad in ["/mnt/outputs", "s3:///x", "s3://b/../x", "gs://b/x"] {
            let e = OutputsSetting::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
