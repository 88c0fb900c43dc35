//! Bindings to the `flashgate:edge` world (`wit/world.wit`): key-value state and
//! configuration through portable WASI interfaces.
//!
//! The edge's key-value store holds hints only (verified tokens today; sold-out flags, dedup
//! and rate-limit buckets later): a missing or failing store costs work, never correctness,
//! so every accessor here turns store errors into a miss.

#[allow(clippy::all, unsafe_code, dead_code, rust_2018_idioms)]
mod bindings {
    wit_bindgen::generate!({
        world: "edge-spin",
        path: "../../wit",
        generate_all,
    });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::store as kv;

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

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.bucket.as_ref()?.get(key).ok().flatten()
    }

    pub fn set(&self, key: &str, value: &[u8]) {
        if let Some(bucket) = &self.bucket {
            let _ = bucket.set(key, value);
        }
    }
}
