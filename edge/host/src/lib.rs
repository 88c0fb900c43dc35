//! flashgate-edge-host: serves the edge component the way `spin up` would, on wasmtime.
//!
//! It reads `spin.toml` ([`manifest`]) for routes, component sources, variables, key-value
//! stores and allowed outbound hosts; compiles and pre-instantiates each component once;
//! and hands requests to wasmtime's `ProxyHandler`, which runs them in instances it keeps as
//! workers: reused, many requests at once, for a WASI 0.3 component (flashgate's default
//! build), a fresh instance per request for a WASI 0.2 one, as `spin up` does — under the
//! pooling allocator, with epoch yields and a wall-clock deadline ([`server`]). Components see `wasi:http`, `wasi:config`
//! (their resolved variables, [`bindings`]) and `wasi:keyvalue` ([`kv`]: bounded stores
//! shared across requests). Several origins behind one `origin_url`: [`upstream`].

pub mod bindings;
pub mod forwarded;
pub mod kv;
pub mod manifest;
pub mod metrics;
pub mod server;
pub mod settings;
mod state;
pub mod upstream;

pub use metrics::HostStats;
pub use server::{EdgeHost, HostSettings, WasiGeneration};
