//! Durable before `201` (invariant 3): a grant is answered only once Redis has it on disk.
//!
//! flashgate ships with Redis' append-only file at `appendfsync always`: Redis writes and
//! fsyncs the AOF before it sends the replies of an event-loop turn, so every grant of that
//! turn is on disk (one fsync for all of them) before the origin hears of it, and a Redis
//! killed at any moment restarts with every grant it answered. The origin checks this at
//! start-up and refuses to run on a Redis that would forget grants, unless the operator says
//! `--allow-volatile-redis` (development, throwaway benchmarks).
//!
//! On a Redis Cluster every master and replica must be so, and a grant also waits for a
//! replica to have it (`WAIT`, [`crate::store::redis::ReplicaAcks`], in
//! [`Inventory::replicated`]) before it is answered: a failover promotes a replica, and
//! what the old master's disk holds no longer counts.
//!
//! The check repeats on every `/health` probe, so a Redis restarted with another
//! configuration is noticed; while Redis is known to be volatile (and that is not allowed),
//! acquisitions are answered 503 instead of grants that a restart would resell.

use crate::store::inventory::Inventory;
use redis::RedisResult;
use std::sync::atomic::{AtomicU8, Ordering};

/// What Redis promises about a write it has answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// AOF with `appendfsync always`: on disk before the reply.
    Durable,
    /// Anything less, and why.
    Volatile(String),
}

impl Persistence {
    /// Reads Redis' persistence settings (`CONFIG GET`), from every server of a cluster: all
    /// must be durable, since any replica may be promoted. A Redis that refuses `CONFIG`
    /// (managed services rename it) cannot be shown durable and counts as volatile.
    pub async fn of(inventory: &Inventory) -> RedisResult<Self> {
        let conn = inventory.connection();
        let appendonly = match conn.config_get("appendonly").await {
            Ok(v) => v,
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() => {
                return Err(e);
            }
            Err(e) => {
                return Ok(Self::Volatile(format!(
                    "CONFIG GET is refused ({e}), so persistence cannot be checked"
                )));
            }
        };
        let appendfsync = conn.config_get("appendfsync").await?;
        for (server, aof) in &appendonly {
            let fsync = appendfsync.iter().find(|(s, _)| s == server).map_or("", |(_, f)| f);
            if let Self::Volatile(why) = Self::judge(aof, fsync) {
                return Ok(Self::Volatile(if server.is_empty() {
                    why
                } else {
                    format!("{server}: {why}")
                }));
            }
        }
        Ok(Self::Durable)
    }

    /// The decision, from the two settings.
    pub fn judge(appendonly: &str, appendfsync: &str) -> Self {
        match (appendonly, appendfsync) {
            ("yes", "always") => Self::Durable,
            ("yes", other) => Self::Volatile(format!(
                "appendfsync is `{other}`: up to a second of answered grants is lost with the host"
            )),
            _ => Self::Volatile("appendonly is off: a restart loses every grant".into()),
        }
    }
}

const UNKNOWN: u8 = 0;
const DURABLE: u8 = 1;
const VOLATILE: u8 = 2;

/// The last thing learnt about Redis' persistence, shared by every request.
#[derive(Debug)]
pub struct DurabilityGuard {
    allow_volatile: bool,
    known: AtomicU8,
}

impl DurabilityGuard {
    pub fn new(allow_volatile: bool) -> Self {
        Self { allow_volatile, known: AtomicU8::new(UNKNOWN) }
    }

    pub fn allows_volatile(&self) -> bool {
        self.allow_volatile
    }

    pub fn record(&self, persistence: &Persistence) {
        let v = if *persistence == Persistence::Durable { DURABLE } else { VOLATILE };
        self.known.store(v, Ordering::Relaxed);
    }

    /// `Ok` when grants may be made: Redis is durable, or volatility is allowed. Learns
    /// Redis' settings on first use (the origin may have started while Redis was down).
    pub async fn check(&self, inventory: &Inventory) -> RedisResult<Result<(), String>> {
        if self.allow_volatile {
            return Ok(Ok(()));
        }
        match self.known.load(Ordering::Relaxed) {
            DURABLE => Ok(Ok(())),
            _ => {
                let persistence = Persistence::of(inventory).await?;
                self.record(&persistence);
                Ok(match persistence {
                    Persistence::Durable => Ok(()),
                    Persistence::Volatile(why) => Err(why),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_aof_fsynced_always_is_durable() {
        assert_eq!(Persistence::judge("yes", "always"), Persistence::Durable);
        for (aof, fsync) in [("yes", "everysec"), ("yes", "no"), ("no", "always"), ("", "")] {
            assert!(matches!(Persistence::judge(aof, fsync), Persistence::Volatile(_)));
        }
    }
}
