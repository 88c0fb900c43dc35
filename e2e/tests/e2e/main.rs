//! flashgate's end-to-end tests, one module per concern, built as one test binary.
//!
//! Every test starts its own stack: the real edge component in flashgate's wasmtime host,
//! the real origin on port 0, a private `redis-server`, a database of its own on the
//! machine's PostgreSQL, and a Kafka-protocol broker or a Redis Cluster where it needs one.
//! Nothing is shared between tests but the machine, so they run in parallel like unit tests.
//!
//! One binary, not one per file: each test binary links wasmtime, the origin and the host,
//! so 31 of them took 31 links and several GB of disk on every clean build. `traces.rs`
//! stays a binary of its own, because it installs the process's global tracing subscriber.
//!
//! Run one module: `cargo test -p flashgate-e2e --test e2e queue::`.

mod acquire;
mod audit;
mod browser;
mod cluster;
mod console;
mod contract;
mod degraded;
mod durability;
mod events;
mod expiry;
mod failures;
mod fairness;
mod forwarding;
mod identity;
mod invariants;
mod kafka;
mod lease;
mod manifests;
mod observability;
mod origins;
mod outbox;
mod payments;
mod products;
mod queue;
mod reads;
mod reconcile;
mod recovery;
mod reuse;
mod scale_out;
mod security;
mod shield;
mod transparency;
mod trust;
