//! What sweeps on a clock: the expiry worker ([`expiry`]) and the payments worker
//! ([`payments`]); each exposes `step` (one pass, what tests drive) and `run` (steps on an
//! interval until cancelled, with [`crate::clock::every`]). The relay and the persister
//! loops live with the outbox they drain.

pub mod expiry;
pub mod payments;
