//! Bindings to the edge's world — `wit/world.wit` for Spin and flashgate's host,
//! `wit/wasmcloud{1,2}/` for wasmCloud, picked by a cargo feature — key-value state and
//! configuration through portable WASI interfaces.
//!
//! The edge's key-value store holds hints only (verified tokens, availability hints, dedup
//! markers, rate-limit buckets): a missing or failing store costs work, never correctness,
//! so every accessor here turns store errors into a miss.

#[cfg(any(
    all(feature = "spin", any(feature = "wasmcloud1", feature = "wasmcloud2")),
    all(feature = "wasmcloud1", feature = "wasmcloud2"),
    not(any(feature = "spin", feature = "wasmcloud1", feature = "wasmcloud2")),
))]
compile_error!("enable exactly one platform feature: spin (default), wasmcloud1 or wasmcloud2");

#[allow(clippy::all, unsafe_code, dead_code, rust_2018_idioms)]
mod bindings {
    #[cfg(feature = "spin")]
    wit_bindgen::generate!({ world: "edge-spin", path: "../../wit", generate_all });
    #[cfg(all(feature = "wasmcloud1", not(feature = "spin")))]
    wit_bindgen::generate!({ world: "edge", path: "../../wit/wasmcloud1", generate_all });
    #[cfg(all(feature = "wasmcloud2", not(any(feature = "spin", feature = "wasmcloud1"))))]
    wit_bindgen::generate!({ world: "edge", path: "../../wit/wasmcloud2", generate_all });
}

use bindings::wasi::config::store as config;
#[cfg(feature = "spin")]
use bindings::wasi::keyvalue::atomics;
use bindings::wasi::keyvalue::store as kv;
use flashgate_core::kv::KeyValue;

/// The label of the store the component opens (`key_value_stores = ["default"]`).
pub const STORE: &str = "default";

/// Reads a configuration value (a Spin variable, a wasmCloud config key).
pub fn config_get(key: &str) -> Result<Option<String>, String> {
    config::get(key).map_err(|e| match e {
        config::Error::Upstream(m) | config::Error::Io(m) => m,
    })
}

/// The edge's key-value store, opened once per request.
pub struct Store {
    bucket: Option<kv::Bucket>,
}

impl Store {
    pub fn open() -> Self {
        Self { bucket: kv::open(STORE).ok() }
    }
}

impl KeyValue for Store {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.bucket.as_ref()?.get(key).ok().flatten()
    }

    fn set(&self, key: &str, value: &[u8]) {
        if let Some(bucket) = &self.bucket {
            let _ = bucket.set(key, value);
        }
    }

    fn delete(&self, key: &str) {
        if let Some(bucket) = &self.bucket {
            let _ = bucket.delete(key);
        }
    }

    /// Spin's `wasi:keyvalue/atomics` compare-and-swap.
    #[cfg(feature = "spin")]
    fn update(
        &self,
        key: &str,
        next: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Option<bool> {
        let bucket = self.bucket.as_ref()?;
        let cas = atomics::Cas::new(bucket, key).ok()?;
        let current = cas.current().ok()?;
        match next(current.as_deref()) {
            None => Some(false),
            Some(value) => match atomics::swap(cas, &value) {
                Ok(()) => Some(true),
                Err(atomics::CasError::CasFailed(_)) => Some(false),
                Err(atomics::CasError::StoreError(_)) => None,
            },
        }
    }

    /// As the Spin build's `update`, but read-then-write: wasmCloud's key-value draft has no
    /// compare-and-swap, so racing callers may both win. Everything built on it is a hint
    /// (the origin decides), so this costs origin requests, never correctness.
    #[cfg(not(feature = "spin"))]
    fn update(
        &self,
        key: &str,
        next: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Option<bool> {
        let bucket = self.bucket.as_ref()?;
        let current = bucket.get(key).ok()?;
        match next(current.as_deref()) {
            None => Some(false),
            Some(value) => Some(bucket.set(key, &value).is_ok()),
        }
    }
}
