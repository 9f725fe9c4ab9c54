//! The disk tier of the cache: node outputs that are small and costly to remake (conditioning,
//! latents, images, masks, numbers, text; never a loaded model) kept under a folder as
//! safetensors files named by the node's Merkle key, so a new process (a second `weft run`,
//! a restarted server) finds them. Several processes may share one folder: each entry is
//! written to a temporary file and renamed into place, carries a blake3 checksum of its data
//! that is checked on every read (a corrupt or truncated entry is a miss, never a crash), and
//! the folder is held to a byte budget by evicting the least recently used entries.
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value as Json};
use tch::{Device, Kind, Tensor};

use crate::plan::CacheKey;
use crate::value::{Value, ValueType};

/// Bumped whenever the layout of an entry changes; entries of another version are ignored
/// (they live in another sub-folder and age out).
pub const FORMAT_VERSION: u32 = 1;

/// The largest entry written, in bytes of tensor data: bigger values are cheaper to recompute
/// than to keep on disk (and would crowd out many small ones).
pub const MAX_ENTRY_BYTES: u64 = 256 << 20;

/// When the folder outgrows its budget, eviction brings it down to this share of the budget,
/// so that a busy writer does not rescan the folder on every write.
const EVICT_TO_PERCENT: u64 = 90;

/// Where the disk tier lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCacheConfig {
    pub dir: PathBuf,
    /// Bytes on disk; 0 turns the tier off.
    pub budget: u64,
}

/// What a read found.
pub enum DiskRead {
    Miss,
    Hit(DiskEntry),
    /// The entry exists but cannot be used (checksum, truncation, unknown layout); it has been
    /// removed, and the node runs again.
    Corrupt(String),
}

/// A node's outputs read back from disk, and the files it wrote when it ran.
pub struct DiskEntry {
    pub outputs: Vec<Value>,
    pub written: Vec<PathBuf>,
    /// How long the node took when it ran (the memory cache weighs eviction by it).
    pub cost: Duration,
}

/// Entries and bytes in the folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskCacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub budget: u64,
}

pub struct DiskCache {
    config: DiskCacheConfig,
    /// This format's sub-folder of `config.dir`.
    root: PathBuf,
    /// Bytes in the folder as last counted plus what this process wrote since; other
    /// processes' writes are seen at the next count.
    approx_bytes: Option<u64>,
}

impl DiskCache {
    pub fn new(config: DiskCacheConfig) -> Self {
        let root = config.dir.join(format!("v{FORMAT_VERSION}"));
        Self {
            config,
            root,
            approx_bytes: None,
        }
    }

    pub fn config(&self) -> &DiskCacheConfig {
        &self.config
    }

    fn path_of(&self, key: &CacheKey) -> PathBuf {
        let hex = key_hex(key);
        self.root.join(&hex[..2]).join(format!("{hex}.safetensors"))
    }

    /// The content hash remembered for the file at `path` while its identity (device, inode),
    /// size and modification time are those of `meta`, so a later process need not read a
    /// large model file again to key it.
    pub fn file_hash(&self, path: &Path, meta: &fs::Metadata) -> Option<[u8; 32]> {
        let text = fs::read_to_string(self.file_hash_path(path)).ok()?;
        let record: Json = serde_json::from_str(&text).ok()?;
        if record["path"] != json!(path.to_string_lossy()) || record["identity"] != identity(meta)?
        {
            return None;
        }
        let hex = record["hash"].as_str()?;
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(hash)
    }

    /// Remembers a file's content hash for `file_hash` (best effort: a failed write is a
    /// later re-hash, nothing worse).
    pub fn remember_file_hash(&self, path: &Path, meta: &fs::Metadata, hash: [u8; 32]) {
        let Some(identity) = identity(meta) else {
            return;
        };
        let record = json!({
            "path": path.to_string_lossy(),
            "identity": identity,
            "hash": hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        });
        let target = self.file_hash_path(path);
        let Some(dir) = target.parent() else {
            return;
        };
        let temp = dir.join(format!(".tmp-{}", std::process::id()));
        if fs::create_dir_all(dir).is_ok() && fs::write(&temp, record.to_string()).is_ok() {
            let _ = fs::rename(&temp, &target);
        }
    }

    fn file_hash_path(&self, path: &Path) -> PathBuf {
        let name = blake3::hash(path.as_os_str().as_encoded_bytes()).to_hex();
        self.root.join("files").join(format!("{name}.json"))
    }

    /// Whether `key` has an entry (not checked until it is read).
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.path_of(key).is_file()
    }

    /// Reads `key`'s entry, placing its tensors on `device`. A hit marks the entry as used.
    pub fn read(&self, key: &CacheKey, device: Device) -> DiskRead {
        let path = self.path_of(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return DiskRead::Miss,
            Err(e) => return DiskRead::Corrupt(format!("{}: {e}", path.display())),
        };
        match decode(&bytes, key, device) {
            Ok(entry) => {
                // The modification time is the entry's last use, for eviction.
                if let Ok(file) = fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                DiskRead::Hit(entry)
            }
            Err(why) => {
                let _ = fs::remove_file(&path);
                DiskRead::Corrupt(format!("{}: {why}", path.display()))
            }
        }
    }

    /// Whether `outputs` can be kept on disk: every value is a number, text, flag or tensor,
    /// and the tensors are not too large.
    pub fn can_store(outputs: &[Value]) -> bool {
        let mut bytes = 0u64;
        for v in outputs {
            match v {
                Value::Object { .. } => return false,
                Value::Tensor(_, t) => {
                    if dtype_of(t.kind()).is_none() {
                        return false;
                    }
                    bytes += v.bytes();
                }
                Value::Tensors(_, named) => {
                    if named.iter().any(|(_, t)| dtype_of(t.kind()).is_none()) {
                        return false;
                    }
                    bytes += v.bytes();
                }
                _ => {}
            }
        }
        bytes <= MAX_ENTRY_BYTES
    }

    /// Writes `key`'s entry (atomically: a temporary file renamed into place), then evicts the
    /// least recently used entries if the folder is over its budget.
    pub fn write(
        &mut self,
        key: &CacheKey,
        outputs: &[Value],
        written: &[PathBuf],
        cost: Duration,
    ) -> io::Result<()> {
        let bytes = encode(key, outputs, written, cost)?;
        let path = self.path_of(key);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        let temp = dir.join(format!(".tmp-{}-{}", std::process::id(), key_hex(key)));
        let result = (|| {
            // No fsync: an entry a crash leaves half-written fails its checksum and is a miss.
            let mut file = fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            fs::rename(&temp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result?;
        let total = match self.approx_bytes {
            Some(b) => b + bytes.len() as u64,
            None => self.count().bytes,
        };
        self.approx_bytes = Some(total);
        if total > self.config.budget {
            self.evict();
        }
        Ok(())
    }

    /// Entries and bytes now in the folder (this format's entries).
    pub fn count(&self) -> DiskCacheStats {
        let mut stats = DiskCacheStats {
            budget: self.config.budget,
            ..DiskCacheStats::default()
        };
        for (_, size, _) in entries(&self.root) {
            stats.entries += 1;
            stats.bytes += size;
        }
        stats
    }

    /// Removes the least recently used entries until the folder holds at most 90% of its
    /// budget. Another process evicting at the same time only makes some removals fail.
    pub fn evict(&mut self) {
        let mut all = entries(&self.root);
        let mut total: u64 = all.iter().map(|(_, size, _)| size).sum();
        let goal = self.config.budget / 100 * EVICT_TO_PERCENT;
        all.sort_by_key(|(_, _, used)| *used);
        for (path, size, _) in all {
            if total <= goal {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
        self.approx_bytes = Some(total);
    }

    /// Removes every entry (of every format version) and the temporary files of interrupted
    /// writes; returns what was removed.
    pub fn clear(&mut self) -> io::Result<DiskCacheStats> {
        let before = self.count();
        match fs::remove_dir_all(&self.config.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.approx_bytes = Some(0);
        Ok(before)
    }
}

/// What identifies a file's content without reading it: device, inode, size and modification
/// time (nanoseconds); `None` where the modification time is unknown.
fn identity(meta: &fs::Metadata) -> Option<Json> {
    use std::os::unix::fs::MetadataExt;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    Some(json!([
        meta.dev(),
        meta.ino(),
        meta.len(),
        modified.as_nanos().to_string()
    ]))
}

/// The entry files under `root`: path, size, last use.
fn entries(root: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let Ok(shards) = fs::read_dir(root) else {
        return out;
    };
    for shard in shards.flatten() {
        let Ok(files) = fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            if let Ok(meta) = file.metadata() {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((path, meta.len(), used));
            }
        }
    }
    out
}

pub fn key_hex(key: &CacheKey) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// The safetensors bytes of an entry. Tensors are `output.N`; the metadata describes every
/// output in order (a tensor's value type and the device it came from, or a scalar's value),
/// the files the node wrote, the key, and the blake3 of the data section.
fn encode(
    key: &CacheKey,
    outputs: &[Value],
    written: &[PathBuf],
    cost: Duration,
) -> io::Result<Vec<u8>> {
    let mut described = Vec::with_capacity(outputs.len());
    let mut host: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = Vec::new();
    for (i, v) in outputs.iter().enumerate() {
        described.push(match v {
            Value::Int(x) => json!({"int": x}),
            Value::Float(x) => json!({"float": x}),
            Value::String(s) => json!({"string": s}),
            Value::Bool(b) => json!({"bool": b}),
            Value::Tensor(ty, t) => {
                host.push(host_tensor(format!("output.{i}"), t)?);
                json!({"tensor": ty.name(), "device": format!("{:?}", t.device())})
            }
            // Part `j` is stored as `output.i.j`; the names ride in the metadata, in order.
            Value::Tensors(ty, named) => {
                let mut names = Vec::with_capacity(named.len());
                for (j, (name, t)) in named.iter().enumerate() {
                    host.push(host_tensor(format!("output.{i}.{j}"), t)?);
                    names.push(name.clone());
                }
                let device = named.first().map(|(_, t)| format!("{:?}", t.device()));
                json!({"tensors": ty.name(), "names": names, "device": device})
            }
            Value::Object { ty, .. } => {
                return Err(io::Error::other(format!(
                    "output {i}: a {ty} cannot be kept on disk"
                )))
            }
        });
    }
    let views = host
        .iter()
        .map(|(name, data, dtype, shape)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| io::Error::other(format!("{name}: {e}")))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let meta = |checksum: &str| -> Option<std::collections::HashMap<String, String>> {
        let mut m = std::collections::HashMap::new();
        m.insert("weft_cache".into(), FORMAT_VERSION.to_string());
        m.insert("key".into(), key_hex(key));
        m.insert("outputs".into(), Json::Array(described.clone()).to_string());
        m.insert(
            "written".into(),
            json!(written
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>())
            .to_string(),
        );
        m.insert("micros".into(), cost.as_micros().to_string());
        m.insert("checksum".into(), checksum.to_string());
        Some(m)
    };
    // The data section does not depend on the metadata, so its checksum is computed from a
    // first serialisation and written into the second.
    let draft = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), meta(""))
        .map_err(|e| io::Error::other(e.to_string()))?;
    let checksum = blake3::hash(data_section(&draft).unwrap_or_default()).to_hex();
    safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), meta(&checksum))
        .map_err(|e| io::Error::other(e.to_string()))
}

/// A tensor's bytes on the host, for the entry named `name`.
fn host_tensor(name: String, t: &Tensor) -> io::Result<(String, Vec<u8>, Dtype, Vec<usize>)> {
    let dtype = dtype_of(t.kind()).ok_or_else(|| {
        io::Error::other(format!("{name}: no safetensors type for {:?}", t.kind()))
    })?;
    let cpu = t
        .f_to_device(Device::Cpu)
        .and_then(|c| c.f_contiguous())
        .map_err(|e| io::Error::other(format!("{name}: {e}")))?;
    let numel = cpu.numel();
    let mut data = vec![0u8; numel * cpu.kind().elt_size_in_bytes()];
    cpu.f_copy_data_u8(&mut data, numel)
        .map_err(|e| io::Error::other(format!("{name}: {e}")))?;
    let shape: Vec<usize> = cpu.size().iter().map(|&d| d as usize).collect();
    Ok((name, data, dtype, shape))
}

/// The bytes after a safetensors header.
fn data_section(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let start = 8usize.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..)
}

/// The stored tensor `name`, on `device`.
fn device_tensor(
    tensors: &safetensors::SafeTensors<'_>,
    name: &str,
    device: Device,
) -> Result<Tensor, String> {
    let view = tensors.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    let kind = kind_of(view.dtype()).ok_or_else(|| format!("{name}: dtype"))?;
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(view.data(), &shape, kind)
        .and_then(|t| t.f_to_device(device))
        .map_err(|e| format!("{name}: {e}"))
}

fn decode(bytes: &[u8], key: &CacheKey, device: Device) -> Result<DiskEntry, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .ok_or("no metadata")?;
    if meta.get("weft_cache").map(String::as_str) != Some(&FORMAT_VERSION.to_string()) {
        return Err("another layout version".into());
    }
    if meta.get("key").map(String::as_str) != Some(key_hex(key).as_str()) {
        return Err("the entry is another node's".into());
    }
    let data = data_section(bytes).ok_or("truncated header")?;
    if meta.get("checksum").map(String::as_str) != Some(blake3::hash(data).to_hex().as_str()) {
        return Err("checksum mismatch (truncated or altered)".into());
    }
    let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let described: Vec<Json> = serde_json::from_str(meta.get("outputs").ok_or("no outputs")?)
        .map_err(|e| e.to_string())?;
    let mut outputs = Vec::with_capacity(described.len());
    for (i, d) in described.iter().enumerate() {
        let value = if let Some(x) = d.get("int").and_then(Json::as_i64) {
            Value::Int(x)
        } else if let Some(x) = d.get("float").and_then(Json::as_f64) {
            Value::Float(x)
        } else if let Some(s) = d.get("string").and_then(Json::as_str) {
            Value::String(s.to_string())
        } else if let Some(b) = d.get("bool").and_then(Json::as_bool) {
            Value::Bool(b)
        } else if let Some(ty) = d.get("tensor").and_then(Json::as_str) {
            let ty = ValueType::from_name(ty).ok_or_else(|| format!("output {i}: type {ty}"))?;
            Value::Tensor(ty, device_tensor(&tensors, &format!("output.{i}"), device)?)
        } else if let Some(ty) = d.get("tensors").and_then(Json::as_str) {
            let ty = ValueType::from_name(ty).ok_or_else(|| format!("output {i}: type {ty}"))?;
            let names = d
                .get("names")
                .and_then(Json::as_array)
                .ok_or_else(|| format!("output {i}: no tensor names"))?;
            let mut named = Vec::with_capacity(names.len());
            for (j, name) in names.iter().enumerate() {
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("output {i}: tensor name {name}"))?;
                let t = device_tensor(&tensors, &format!("output.{i}.{j}"), device)?;
                named.push((name.to_string(), t));
            }
            Value::Tensors(ty, named)
        } else {
            return Err(format!("output {i}: unknown description {d}"));
        };
        outputs.push(value);
    }
    let written: Vec<String> =
        serde_json::from_str(meta.get("written").map_or("[]", String::as_str))
            .map_err(|e| e.to_string())?;
    let micros = meta.get("micros").and_then(|m| m.parse().ok()).unwrap_or(0);
    Ok(DiskEntry {
        outputs,
        written: written.into_iter().map(PathBuf::from).collect(),
        cost: Duration::from_micros(micros),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn cache(dir: &Path, budget: u64) -> DiskCache {
        DiskCache::new(DiskCacheConfig {
            dir: dir.to_path_buf(),
            budget,
        })
    }

    #[test]
    fn outputs_come_back_equal_with_their_types_and_written_files() {
        let dir = tempfile_dir();
        let mut c = cache(&dir, 1 << 30);
        let latent = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]).view([1, 2, 3]);
        let half = Tensor::from_slice(&[0.5f32, 0.25]).to_kind(Kind::Half);
        let outputs = vec![
            Value::Tensor(ValueType::Latent, latent.shallow_clone()),
            Value::Int(-7),
            Value::Float(0.125),
            Value::String("a red circle".into()),
            Value::Bool(true),
            Value::Tensor(ValueType::Image, half.shallow_clone()),
        ];
        assert!(DiskCache::can_store(&outputs));
        c.write(
            &key(1),
            &outputs,
            &[PathBuf::from("out/x_00001.png")],
            Duration::from_millis(3),
        )
        .unwrap();
        let DiskRead::Hit(entry) = c.read(&key(1), Device::Cpu) else {
            panic!("miss")
        };
        assert_eq!(entry.written, [PathBuf::from("out/x_00001.png")]);
        let Value::Tensor(ValueType::Latent, t) = &entry.outputs[0] else {
            panic!("{:?}", entry.outputs[0])
        };
        assert!(t.equal(&latent));
        assert!(matches!(entry.outputs[1], Value::Int(-7)));
        assert!(matches!(entry.outputs[2], Value::Float(f) if f == 0.125));
        assert!(matches!(&entry.outputs[3], Value::String(s) if s == "a red circle"));
        assert!(matches!(entry.outputs[4], Value::Bool(true)));
        let Value::Tensor(ValueType::Image, h) = &entry.outputs[5] else {
            panic!()
        };
        assert_eq!(h.kind(), Kind::Half);
        assert!(h.equal(&half));
        assert!(matches!(c.read(&key(2), Device::Cpu), DiskRead::Miss));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_value_of_several_named_tensors_comes_back_with_its_names_in_order() {
        let dir = tempfile_dir();
        let mut disk = cache(&dir, 1 << 20);
        let context = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 2, 2]);
        let pooled = Tensor::from_slice(&[0.5f32, -0.5])
            .to_kind(Kind::Half)
            .view([1, 2]);
        let outputs = [
            Value::Int(3),
            Value::Tensors(
                ValueType::Conditioning,
                vec![
                    ("context".into(), context.shallow_clone()),
                    ("pooled".into(), pooled.shallow_clone()),
                ],
            ),
        ];
        assert!(DiskCache::can_store(&outputs));
        disk.write(&key(9), &outputs, &[], Duration::from_millis(5))
            .unwrap();
        let DiskRead::Hit(entry) = disk.read(&key(9), Device::Cpu) else {
            panic!("not read back");
        };
        let Value::Tensors(ValueType::Conditioning, named) = &entry.outputs[1] else {
            panic!("{:?}", entry.outputs[1]);
        };
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["context", "pooled"]);
        assert!(named[0].1.equal(&context));
        assert_eq!(named[1].1.kind(), Kind::Half);
        assert!(named[1].1.equal(&pooled));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_or_truncated_entry_is_a_miss_that_is_removed() {
        let dir = tempfile_dir();
        let mut c = cache(&dir, 1 << 30);
        let t = Tensor::from_slice(&[1.0f32; 64]);
        for (n, damage) in [(1u8, "flip"), (2, "truncate"), (3, "garbage")] {
            c.write(
                &key(n),
                &[Value::Tensor(ValueType::Latent, t.shallow_clone())],
                &[],
                Duration::ZERO,
            )
            .unwrap();
            let path = c.path_of(&key(n));
            let mut bytes = fs::read(&path).unwrap();
            match damage {
                "flip" => {
                    let last = bytes.len() - 3;
                    bytes[last] ^= 0x40;
                }
                "truncate" => bytes.truncate(bytes.len() - 10),
                _ => bytes = b"not a safetensors file at all".to_vec(),
            }
            fs::write(&path, bytes).unwrap();
            assert!(
                matches!(c.read(&key(n), Device::Cpu), DiskRead::Corrupt(_)),
                "{damage}"
            );
            assert!(!path.exists(), "{damage}: the bad entry stays");
            assert!(matches!(c.read(&key(n), Device::Cpu), DiskRead::Miss));
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn the_folder_stays_within_its_budget_evicting_the_least_recently_used() {
        let dir = tempfile_dir();
        // 64 KiB of floats an entry, a budget of about 5 entries.
        let t = Tensor::zeros([16384], (Kind::Float, Device::Cpu));
        let mut c = cache(&dir, 5 * 66_000);
        for n in 0..40u8 {
            c.write(
                &key(n),
                &[Value::Tensor(ValueType::Latent, t.shallow_clone())],
                &[],
                Duration::ZERO,
            )
            .unwrap();
            // Entry 0 is used after every write: it is never the least recently used.
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert!(
                matches!(c.read(&key(0), Device::Cpu), DiskRead::Hit(_)),
                "{n}"
            );
            let stats = c.count();
            assert!(stats.bytes <= 5 * 66_000, "{n}: {stats:?}");
        }
        assert!(matches!(c.read(&key(1), Device::Cpu), DiskRead::Miss));
        assert!(matches!(c.read(&key(39), Device::Cpu), DiskRead::Hit(_)));
        let removed = c.clear().unwrap();
        assert!(removed.entries >= 1);
        assert_eq!(c.count().entries, 0);
    }

    #[test]
    fn a_files_hash_is_remembered_across_instances_until_the_file_changes() {
        let dir = tempfile_dir();
        let file = dir.join("model.safetensors");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&file, b"weights").unwrap();
        let meta = fs::metadata(&file).unwrap();
        cache(&dir.join("cache"), 1 << 20).remember_file_hash(&file, &meta, [7; 32]);
        let later = cache(&dir.join("cache"), 1 << 20);
        assert_eq!(later.file_hash(&file, &meta), Some([7; 32]));
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&file, b"other weights").unwrap();
        let changed = fs::metadata(&file).unwrap();
        assert_eq!(later.file_hash(&file, &changed), None);
        assert_eq!(later.file_hash(&dir.join("elsewhere"), &meta), None);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn models_and_huge_tensors_are_not_kept() {
        let big = Tensor::zeros(
            [(MAX_ENTRY_BYTES / 4 + 1) as i64],
            (Kind::Float, Device::Cpu),
        );
        assert!(!DiskCache::can_store(&[Value::Tensor(
            ValueType::Latent,
            big
        )]));
        assert!(!DiskCache::can_store(&[Value::object(
            ValueType::Model,
            1u8,
            1
        )]));
    }

    fn tempfile_dir() -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-disk-cache-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }
}
