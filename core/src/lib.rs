//! flashgate-core: the pure decision logic shared by the edge component (wasm32-wasip2) and
//! the origin (native).
//!
//! - [`arrival`]: the edge's arrival stamp (the host's, when it is trusted) and its wait bound;
//! - [`signing`]: the edge→origin HMAC envelope (headers, canonical message, freshness);
//! - [`trace`]: W3C trace context (`traceparent`) parsing and propagation;
//! - [`token`]: JWT verification against a JWKS, with flashgate's claim rules;
//! - [`jwks`]: when to fetch an identity provider's keys from its URL, and how long to trust them;
//! - [`problem`]: RFC 9457 problem details, the one error shape of every answer;
//! - [`routes`]: the buyer API the edge forwards;
//! - [`queue`]: the waiting room: queue passes, places in line, waits, admission rates;
//! - [`shield`]: the edge's storm shield: availability hints, dedup, token buckets;
//! - [`edge_config`]: the edge's variables, parsed and checked once for component and host;
//! - [`fairness`]: the adaptive fairness window the origin holds acquisitions for;
//! - [`transparency`]: a drop's public log entries, buyer pseudonyms, and what the log adds up to.
//!
//! Nothing here does I/O, reads a clock or draws randomness: callers pass those in, so all
//! of it is unit-tested natively and behaves identically inside the component. The one
//! exception, behind the `native` feature, is [`signal`]: how the native processes learn
//! they should stop.

pub mod arrival;
pub mod edge_config;
pub mod fairness;
pub mod jwks;
pub mod kv;
pub mod problem;
pub mod queue;
pub mod routes;
pub mod shield;
#[cfg(feature = "native")]
pub mod signal;
pub mod signing;
pub mod token;
pub mod trace;
pub mod transparency;
