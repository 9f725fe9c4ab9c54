//! The output cache: node outputs by cache key, kept where they were made (on the device),
//! under a byte budget. Eviction prefers values that are large, cheap to recompute and
//! least recently used. Behind the memory tier, optionally, the disk tier (`disk_cache`):
//! the executor asks this cache for both, never the disk directly.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use tch::Device;

use crate::disk_cache::{DiskCache, DiskCacheConfig, DiskCacheStats, DiskRead};
use crate::plan::CacheKey;
use crate::value::Value;

struct Entry {
    outputs: Rc<Vec<Value>>,
    bytes: u64,
    cost: Duration,
    last_used: u64,
}

pub struct Cache {
    entries: HashMap<CacheKey, Entry>,
    budget: u64,
    used: u64,
    clock: u64,
    evictions: u64,
    /// The disk tier, when on.
    disk: Option<DiskCache>,
}

/// What the disk tier had for a key.
pub enum DiskLookup {
    Miss,
    /// Loaded (and now in memory too), with the files the node wrote when it ran.
    Hit {
        outputs: Rc<Vec<Value>>,
        written: Vec<PathBuf>,
    },
    /// The entry could not be used (it has been removed): why.
    Unusable(String),
}

/// Nodes quicker than this are not written to the disk tier (unless they are outputs or wrote
/// files): reading them back would cost about as much as running them.
pub const DISK_MIN_COST: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: u64,
    pub budget: u64,
    pub evictions: u64,
}

impl Cache {
    pub fn new(budget: u64) -> Self {
        Self {
            entries: HashMap::new(),
            budget,
            used: 0,
            clock: 0,
            evictions: 0,
            disk: None,
        }
    }

    /// Turns the disk tier on (a config with a non-zero budget) or off.
    pub fn set_disk(&mut self, config: Option<DiskCacheConfig>) {
        self.disk = config.filter(|c| c.budget > 0).map(DiskCache::new);
    }

    /// Whether the disk tier has an entry for `key` (not read).
    pub fn on_disk(&self, key: &CacheKey) -> bool {
        self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// `key`'s outputs from the disk tier, placed on `device` and put in memory. An entry of a
    /// node that wrote files is a hit only while those files are still there.
    pub fn load_from_disk(&mut self, key: &CacheKey, device: Device) -> DiskLookup {
        let Some(disk) = self.disk.as_mut() else {
            return DiskLookup::Miss;
        };
        let entry = match disk.read(key, device) {
            DiskRead::Miss => return DiskLookup::Miss,
            DiskRead::Corrupt(why) => return DiskLookup::Unusable(why),
            DiskRead::Hit(entry) => entry,
        };
        if !entry.written.iter().all(|p| p.is_file()) {
            return DiskLookup::Miss;
        }
        let outputs = Rc::new(entry.outputs);
        self.insert(*key, Rc::clone(&outputs), entry.cost);
        DiskLookup::Hit {
            outputs,
            written: entry.written,
        }
    }

    /// Writes a node's outputs to the disk tier when they are worth keeping there (costly, an
    /// output node's, or with files; no models; not huge). `Err` says why a write failed.
    pub fn keep_on_disk(
        &mut self,
        key: &CacheKey,
        outputs: &[Value],
        written: &[PathBuf],
        cost: Duration,
        output_node: bool,
    ) -> Result<(), String> {
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        let worth_keeping = cost >= DISK_MIN_COST || output_node || !written.is_empty();
        if !worth_keeping || !DiskCache::can_store(outputs) {
            return Ok(());
        }
        disk.write(key, outputs, written, cost)
            .map_err(|e| format!("{}: {e}", disk.config().dir.display()))
    }

    /// Entries and bytes of the disk tier, when it is on.
    pub fn disk_stats(&self) -> Option<DiskCacheStats> {
        self.disk.as_ref().map(DiskCache::count)
    }

    /// A model file's content hash remembered by the disk tier (see `DiskCache::file_hash`).
    pub fn remembered_file_hash(&self, path: &Path, meta: &std::fs::Metadata) -> Option<[u8; 32]> {
        self.disk.as_ref()?.file_hash(path, meta)
    }

    /// Remembers a file's content hash in the disk tier, when it is on.
    pub fn remember_file_hash(&self, path: &Path, meta: &std::fs::Metadata, hash: [u8; 32]) {
        if let Some(disk) = &self.disk {
            disk.remember_file_hash(path, meta, hash);
        }
    }

    pub fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
        self.evict_to(budget, None);
    }

    pub fn get(&mut self, key: &CacheKey) -> Option<Rc<Vec<Value>>> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.last_used = self.clock;
        Some(Rc::clone(&entry.outputs))
    }

    pub fn contains(&self, key: &CacheKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Stores a node's outputs; evicts others to stay within budget. Outputs larger than the
    /// whole budget are not kept.
    pub fn insert(&mut self, key: CacheKey, outputs: Rc<Vec<Value>>, cost: Duration) {
        let bytes: u64 = outputs.iter().map(Value::bytes).sum();
        if bytes > self.budget {
            return;
        }
        self.clock += 1;
        if let Some(old) = self.entries.remove(&key) {
            self.used -= old.bytes;
        }
        self.evict_to(self.budget - bytes, Some(&key));
        self.used += bytes;
        self.entries.insert(
            key,
            Entry {
                outputs,
                bytes,
                cost,
                last_used: self.clock,
            },
        );
    }

    fn evict_to(&mut self, limit: u64, keep: Option<&CacheKey>) {
        while self.used > limit {
            let clock = self.clock;
            let victim = self
                .entries
                .iter()
                .filter(|(k, _)| Some(*k) != keep)
                .max_by(|(_, a), (_, b)| {
                    eviction_score(a, clock).total_cmp(&eviction_score(b, clock))
                })
                .map(|(k, _)| *k);
            let Some(victim) = victim else { break };
            if let Some(e) = self.entries.remove(&victim) {
                self.used -= e.bytes;
                self.evictions += 1;
            }
        }
    }

    /// The keys of the largest entries (at least `min_bytes` each), largest first, at most
    /// `limit`: what a fleet's worker tells the others its memory holds (loaded models first).
    pub fn largest_keys(&self, min_bytes: u64, limit: usize) -> Vec<CacheKey> {
        let mut large: Vec<(&CacheKey, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.bytes >= min_bytes)
            .map(|(k, e)| (k, e.bytes))
            .collect();
        large.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        large.into_iter().take(limit).map(|(k, _)| *k).collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.len(),
            bytes: self.used,
            budget: self.budget,
            evictions: self.evictions,
        }
    }
}

/// Higher is evicted first: bytes freed per second of recompute, weighted by staleness.
fn eviction_score(e: &Entry, clock: u64) -> f64 {
    let age = (clock - e.last_used) as f64 + 1.0;
    let cost = e.cost.as_secs_f64() + 1e-4;
    (e.bytes as f64 + 1.0) * age / cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    fn tensor_value(elements: i64) -> Rc<Vec<Value>> {
        Rc::new(vec![Value::Tensor(
            crate::value::ValueType::Latent,
            tch::Tensor::zeros([elements], (tch::Kind::Float, tch::Device::Cpu)),
        )])
    }

    #[test]
    fn lists_its_largest_entries_first_within_the_limit() {
        let mut cache = Cache::new(10_000);
        cache.insert(key(1), tensor_value(10), Duration::from_secs(1)); // 40 B
        cache.insert(key(2), tensor_value(300), Duration::from_secs(1)); // 1200 B
        cache.insert(key(3), tensor_value(100), Duration::from_secs(1)); // 400 B
        assert_eq!(
            cache.largest_keys(100, 8),
            [key(2), key(3)],
            "40 B is below 100"
        );
        assert_eq!(cache.largest_keys(0, 1), [key(2)]);
        cache.clear();
        assert!(cache.largest_keys(0, 8).is_empty());
    }

    #[test]
    fn stays_within_budget_and_prefers_cheap_large_values() {
        let mut cache = Cache::new(1000);
        cache.insert(key(1), tensor_value(100), Duration::from_secs(10)); // 400 B, expensive
        cache.insert(key(2), tensor_value(100), Duration::from_millis(1)); // 400 B, cheap
        cache.insert(key(3), tensor_value(100), Duration::from_secs(1)); // needs room
        assert!(cache.stats().bytes <= 1000);
        assert!(cache.contains(&key(1)), "expensive value kept");
        assert!(!cache.contains(&key(2)), "cheap value evicted");
        assert!(cache.contains(&key(3)));
    }

    #[test]
    fn oversized_values_are_not_kept() {
        let mut cache = Cache::new(100);
        cache.insert(key(1), tensor_value(1000), Duration::from_secs(1));
        assert_eq!(cache.stats().entries, 0);
    }
}
