//! Host side of flashgate's `wit/` world: `wasi:keyvalue` over [`crate::kv`] and
//! `wasi:config` over the component's resolved variables.

use crate::kv::KvStore;
use crate::state::RequestState;
use bytes::Bytes;
use wasmtime::component::Resource;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "flashgate:edge/edge-spin",
    with: {
        "wasi:keyvalue/store.bucket": crate::bindings::Bucket,
        "wasi:keyvalue/atomics.cas": crate::bindings::Cas,
    },
});

use wasi::config::store as config;
use wasi::keyvalue::{atomics, store};

/// An open bucket: a handle on one labelled store.
pub struct Bucket {
    store: KvStore,
}

/// A compare-and-swap handle: the key and the value it held when the handle was made.
pub struct Cas {
    store: KvStore,
    key: String,
    seen: Option<Bytes>,
}

fn other(e: impl std::fmt::Display) -> store::Error {
    store::Error::Other(e.to_string())
}

impl RequestState {
    fn bucket(&self, handle: &Resource<Bucket>) -> Result<KvStore, store::Error> {
        self.table.get(handle).map(|b| b.store.clone()).map_err(other)
    }
}

impl store::Host for RequestState {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        if !self.component.key_value_stores.contains(&identifier) {
            return Err(store::Error::AccessDenied);
        }
        let kv = self.kv.get(&identifier).ok_or(store::Error::NoSuchStore)?.clone();
        self.table.push(Bucket { store: kv }).map_err(other)
    }
}

impl store::HostBucket for RequestState {
    fn get(&mut self, b: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, store::Error> {
        Ok(self.bucket(&b)?.get(&key).map(|v| v.to_vec()))
    }

    fn set(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        self.bucket(&b)?.set(&key, Bytes::from(value));
        Ok(())
    }

    fn delete(&mut self, b: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        self.bucket(&b)?.delete(&key);
        Ok(())
    }

    fn exists(&mut self, b: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        Ok(self.bucket(&b)?.contains(&key))
    }

    fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        Ok(store::KeyResponse { keys: self.bucket(&b)?.keys(), cursor: None })
    }

    fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for RequestState {
    fn increment(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        self.bucket(&b)?.increment(&key, delta).map_err(store::Error::Other)
    }

    fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let cas = self.table.delete(cas).map_err(|e| atomics::CasError::StoreError(other(e)))?;
        if cas.store.compare_and_swap(&cas.key, cas.seen.as_ref(), Bytes::from(value)) {
            Ok(())
        } else {
            let seen = cas.seen.clone();
            let again = self
                .table
                .push(Cas { store: cas.store, key: cas.key, seen })
                .map_err(|e| atomics::CasError::StoreError(other(e)))?;
            Err(atomics::CasError::CasFailed(again))
        }
    }
}

impl atomics::HostCas for RequestState {
    fn new(&mut self, b: Resource<Bucket>, key: String) -> Result<Resource<Cas>, store::Error> {
        let store = self.bucket(&b)?;
        let seen = store.get(&key);
        self.table.push(Cas { store, key, seen }).map_err(other)
    }

    fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, store::Error> {
        let cas = self.table.get(&cas).map_err(other)?;
        Ok(cas.seen.as_ref().map(|v| v.to_vec()))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl config::Host for RequestState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        // This host stamps every request it accepts (`flashgate_core::arrival`).
        if key == flashgate_core::arrival::HOST_STAMPS_KEY {
            return Ok(Some("true".to_owned()));
        }
        Ok(self.component.variables.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self.component.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
