//! The edge's key-value store, as the shield needs it: a small trait that the component
//! implements over `wasi:keyvalue` (Spin, wasmCloud) and [`MemoryStore`] implements for
//! native tests and tools.

use std::cell::RefCell;
use std::collections::HashMap;

/// A key-value store shared by the edge's instances. Every operation may fail quietly (the
/// shield only holds hints; the origin decides), which `update` reports as `None`.
pub trait KeyValue {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: &[u8]);
    fn delete(&self, key: &str);
    /// Atomically replaces `key`'s value with what `next` makes of the current one (`None`:
    /// leave it). `Some(true)` if this caller wrote it — of racing callers one wins, the
    /// others see `Some(false)` — and `None` when the store is unusable.
    fn update(
        &self,
        key: &str,
        next: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Option<bool>;
}

/// An in-memory [`KeyValue`] for one thread: the shield's unit tests, and tools.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, Vec<u8>>>,
}

impl MemoryStore {
    pub fn text(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| String::from_utf8(v).ok())
    }
}

impl KeyValue for MemoryStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8]) {
        self.entries.borrow_mut().insert(key.to_owned(), value.to_vec());
    }

    fn delete(&self, key: &str) {
        self.entries.borrow_mut().remove(key);
    }

    fn update(
        &self,
        key: &str,
        next: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Option<bool> {
        let current = self.get(key);
        Some(match next(current.as_deref()) {
            Some(value) => {
                self.set(key, &value);
                true
            }
            None => false,
        })
    }
}
