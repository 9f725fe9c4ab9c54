//! The output cache: node outputs by cache key, kept where they were made (on the device),
//! under a byte budget. Eviction prefers values that are large, cheap to recompute and
//! least recently used.
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

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
}

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
