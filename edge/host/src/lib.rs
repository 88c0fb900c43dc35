//! flashgate-edge-host: serves the edge component the way `spin up` would, on wasmtime.
//!
//! It reads `spin.toml` ([`manifest`]) for routes, component sources, variables, key-value
//! stores and allowed outbound hosts; compiles and pre-instantiates each component once;
//! and runs every request in a fresh `Store` (or, with `--reuse-instances`, a warm instance
//! that answered cleanly before) under the pooling allocator, with an epoch deadline and a
//! wall-clock deadline ([`server`]). Components see `wasi:http`, `wasi:config`
//! (their resolved variables, [`bindings`]) and `wasi:keyvalue` ([`kv`]: bounded stores
//! shared across requests).

pub mod bindings;
pub mod kv;
pub mod manifest;
pub mod server;
pub mod settings;
mod state;

pub use server::{EdgeHost, HostSettings, HostStats};
