//! flashgate's benchmark tools, driven by `scripts/bench.sh`: an HTTP/1.1 load generator
//! that speaks both sides of flashgate (bearer tokens for the edge, the signed edge envelope
//! for the origin) and reports throughput and latency percentiles; a bare hyper server that
//! answers fixed bytes, the baseline the edge is measured against; and a proxy that delays
//! each edge→origin request by a random amount, for the fairness rows (and the tests).
//!
//! The load generator runs on one thread and keeps one keep-alive connection per simulated
//! client. Closed loop (`rate` unset) measures capacity; open loop (`rate` set) measures
//! latency at a given arrival rate, counted from each request's scheduled time, so a slow
//! server cannot hide its queueing (no coordinated omission).
//!
//! [`slowloris`] holds half-sent requests open from one address while the load runs.
//!
//! [`faults`] holds the fault suite's buyers (`scripts/faults.sh`): a retrying storm and
//! the outside checks that follow it.

pub mod bare;
pub mod faults;
pub mod load;
pub mod proxy;
pub mod slowloris;
pub mod workload;
