//! What sweeps on a clock: the expiry worker ([`expiry`]), the payments worker
//! ([`payments`]) and the waiting rooms' admission ([`admission`]); each exposes `step` (one pass, what tests drive) and `run` (steps on an
//! interval until cancelled, with [`crate::clock::every`]). The relay and the persister
//! loops live with the outbox they drain.

pub mod admission;
pub mod expiry;
pub mod payments;
