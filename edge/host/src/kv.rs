//! The edge's key-value stores, shared by every request of every component.
//!
//! Edge state is made of hints (verified tokens, sold-out flags, dedup markers, rate-limit
//! buckets): losing an entry costs work, never correctness, because the origin decides. So a
//! store is a bounded concurrent cache: it holds at most `capacity_bytes` of keys and values
//! and evicts the least useful entries beyond that, which keeps memory flat under any storm.

use bytes::Bytes;
use moka::ops::compute::Op;
use moka::sync::Cache;
use std::collections::HashMap;
use std::sync::Arc;

/// One labelled store (`default`, …).
#[derive(Clone)]
pub struct KvStore {
    cache: Cache<String, Bytes>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore").field("entries", &self.cache.entry_count()).finish()
    }
}

impl KvStore {
    pub fn new(capacity_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &String, v: &Bytes| {
                u32::try_from(k.len() + v.len() + 64).unwrap_or(u32::MAX)
            })
            .build();
        Self { cache }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.cache.get(key)
    }

    pub fn set(&self, key: &str, value: Bytes) {
        self.cache.insert(key.to_owned(), value);
    }

    pub fn delete(&self, key: &str) {
        self.cache.invalidate(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.cache.contains_key(key)
    }

    pub fn keys(&self) -> Vec<String> {
        self.cache.iter().map(|(k, _)| k.as_ref().clone()).collect()
    }

    /// Atomically adds `delta` to a decimal counter (absent = 0) and returns the new value.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        let mut result = Ok(0);
        self.cache.entry(key.to_owned()).and_compute_with(|current| {
            let now = match current.map(|e| parse_counter(e.value())) {
                None => Ok(0),
                Some(parsed) => parsed,
            };
            match now.and_then(|n| n.checked_add(delta).ok_or_else(|| "counter overflow".into())) {
                Ok(next) => {
                    result = Ok(next);
                    Op::Put(Bytes::from(next.to_string()))
                }
                Err(e) => {
                    result = Err(e);
                    Op::Nop
                }
            }
        });
        result
    }

    /// Sets `key` to `value` only if it still holds `expected`; `false` if it changed.
    pub fn compare_and_swap(&self, key: &str, expected: Option<&Bytes>, value: Bytes) -> bool {
        let mut swapped = false;
        self.cache.entry(key.to_owned()).and_compute_with(|current| {
            if current.as_ref().map(|e| e.value()) == expected {
                swapped = true;
                Op::Put(value)
            } else {
                Op::Nop
            }
        });
        swapped
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

fn parse_counter(bytes: &Bytes) -> Result<i64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "the value is not a counter".to_owned())
}

/// All stores of the application, by label.
#[derive(Debug, Clone)]
pub struct KvStores {
    stores: Arc<HashMap<String, KvStore>>,
}

impl KvStores {
    pub fn new<'a>(labels: impl IntoIterator<Item = &'a str>, capacity_bytes: u64) -> Self {
        let stores =
            labels.into_iter().map(|l| (l.to_owned(), KvStore::new(capacity_bytes))).collect();
        Self { stores: Arc::new(stores) }
    }

    pub fn get(&self, label: &str) -> Option<&KvStore> {
        self.stores.get(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_are_atomic_across_threads() {
        let store = KvStore::new(1 << 20);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        store.increment("n", 1).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.get("n").unwrap(), Bytes::from("4000"));
        assert!(store.increment("n", i64::MAX).is_err());
        store.set("x", Bytes::from_static(b"nope"));
        assert!(store.increment("x", 1).is_err());
    }

    #[test]
    fn compare_and_swap_refuses_stale_expectations() {
        let store = KvStore::new(1 << 20);
        assert!(store.compare_and_swap("k", None, Bytes::from("a")));
        assert!(!store.compare_and_swap("k", None, Bytes::from("b")));
        assert!(store.compare_and_swap("k", Some(&Bytes::from("a")), Bytes::from("c")));
        assert_eq!(store.get("k").unwrap(), Bytes::from("c"));
    }

    #[test]
    fn memory_is_bounded() {
        let store = KvStore::new(64 * 1024);
        for i in 0..10_000 {
            store.set(&format!("key-{i}"), Bytes::from(vec![0u8; 100]));
        }
        // Each entry weighs ~170 bytes, so at most ~385 fit.
        assert!(store.entry_count() < 500, "{}", store.entry_count());
    }
}
