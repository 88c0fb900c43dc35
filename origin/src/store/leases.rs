//! Dividing the workers' work between origins: the products are split into
//! [`PARTITIONS`] work partitions ([`crate::store::keys::partition_of`]), and each origin's
//! expiry, payments, relay and admission workers sweep only the partitions it holds a lease
//! on (`lua/work_lease.lua`, one key per partition, `fg:{wNN}:owner`, with a TTL).
//!
//! Each [`WorkLeases::step`] (every third of the lease) an origin:
//! 1. beats its heart in `fg:{workers}:alive` and counts the origins alive there;
//! 2. renews its leases;
//! 3. gives back what it holds beyond its fair share (⌈partitions / origins⌉);
//! 4. takes free partitions up to that share.
//!
//! An origin killed stops renewing: its leases run out within a lease period and the others
//! take them at their next step. At a graceful stop it gives them back at once. The lease
//! divides the work; it does not make it correct. The scripts do that: a slot is reclaimed
//! once and an event applied once however many workers try, so two origins briefly sweeping
//! one partition (a paused one whose lease ran out) cost a little work, nothing else.

use crate::store::inventory::Inventory;
use crate::store::keys::{PARTITIONS, WORKERS};
use crate::store::redis::Redis;
use crate::store::scripts::work_lease;
use redis::RedisResult;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Which partitions a worker sweeps.
#[derive(Clone, Default)]
pub enum Partitions {
    /// Every partition (one origin alone; tests driving a worker step by step).
    #[default]
    All,
    /// Those this origin holds a lease on.
    Leased(Arc<WorkLeases>),
}

impl Partitions {
    pub fn current(&self) -> Vec<u16> {
        match self {
            Self::All => (0..PARTITIONS).collect(),
            Self::Leased(leases) => leases.owned(),
        }
    }
}

/// This origin's leases on work partitions.
pub struct WorkLeases {
    redis: Redis,
    me: String,
    lease: Duration,
    owned: RwLock<Vec<u16>>,
}

/// What one step left this origin with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Origins alive, this one included.
    pub origins: usize,
    pub owned: Vec<u16>,
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl WorkLeases {
    /// `me` names this origin among the others (unique per process).
    pub fn new(inventory: &Inventory, me: String, lease: Duration) -> Self {
        Self { redis: inventory.connection(), me, lease, owned: RwLock::default() }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The partitions held after the last step.
    pub fn owned(&self) -> Vec<u16> {
        self.owned.read().expect("leases lock").clone()
    }

    async fn lease(&self, partition: u16, want: bool) -> RedisResult<bool> {
        work_lease::Args { partition, me: &self.me, ttl: self.lease, want }.run(&self.redis).await
    }

    /// Beats the heart, renews, gives back beyond the fair share and takes up to it.
    pub async fn step(&self) -> RedisResult<Share> {
        let now = wall_ms();
        let (_, _, origins): (i64, i64, usize) = redis::pipe()
            .cmd("ZADD")
            .arg(WORKERS)
            .arg(now)
            .arg(&self.me)
            .cmd("ZREMRANGEBYSCORE")
            .arg(WORKERS)
            .arg("-inf")
            .arg(now - self.lease.as_millis() as i64)
            .cmd("ZCARD")
            .arg(WORKERS)
            .query_async(&mut self.redis.clone())
            .await?;
        let share = usize::from(PARTITIONS).div_ceil(origins.max(1));
        let mut owned = Vec::new();
        for partition in self.owned() {
            if self.lease(partition, true).await? {
                owned.push(partition);
            }
        }
        while owned.len() > share {
            let extra = owned.pop().expect("more than the share");
            self.lease(extra, false).await?;
        }
        // Each origin starts looking at its own place, so origins starting together do not
        // all race for partition 0.
        let start = self.me.bytes().map(u16::from).sum::<u16>() % PARTITIONS;
        for partition in (0..PARTITIONS).map(|i| (start + i) % PARTITIONS) {
            if owned.len() >= share {
                break;
            }
            if !owned.contains(&partition) && self.lease(partition, true).await? {
                owned.push(partition);
            }
        }
        owned.sort_unstable();
        *self.owned.write().expect("leases lock") = owned.clone();
        Ok(Share { origins, owned })
    }

    /// Gives every lease back and leaves the origins alive (a graceful stop): the others
    /// take the partitions at their next step instead of after the lease runs out.
    pub async fn release(&self) -> RedisResult<()> {
        let owned = std::mem::take(&mut *self.owned.write().expect("leases lock"));
        for partition in owned {
            self.lease(partition, false).await?;
        }
        redis::cmd("ZREM")
            .arg(WORKERS)
            .arg(&self.me)
            .query_async::<i64>(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Steps every third of the lease until cancelled, then gives the leases back. A failed
    /// step (Redis down) keeps what was held: its leases run out by themselves.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let interval = self.lease / 3;
        crate::clock::every("work leases", interval, cancel, || async {
            let before = self.owned();
            let share = self.step().await?;
            if share.owned != before {
                tracing::info!(origins = share.origins, owned = ?share.owned, "work partitions");
            }
            Ok::<_, redis::RedisError>(())
        })
        .await;
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "work leases not given back: they run out by themselves");
        }
    }
}
