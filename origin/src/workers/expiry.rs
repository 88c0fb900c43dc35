//! The expiration worker: reclaims slots past their deadline (`lua/expire.lua`) and emits
//! `slot-expiring-soon` reminders (`lua/remind.lua`).
//!
//! [`ExpiryWorker::step`] does one sweep at the clock's current time, so tests drive it
//! deterministically; [`ExpiryWorker::run`] repeats it until cancelled. Several origins
//! divide the products by work partition ([`crate::store::leases`]); any number of workers
//! may still run at once: the scripts make each reclaim and each reminder happen once.

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::inventory::Inventory;
use crate::store::leases::Partitions;
use crate::store::scripts::expire::Expiry;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub expired: u64,
    pub reminded: u64,
    /// Slots another worker (or a lazy check) had already handled.
    pub skipped: u64,
    /// Due slots whose payment is in flight: left for reconciliation to settle first.
    pub paying: u64,
}

#[derive(Clone)]
pub struct ExpiryWorker {
    inventory: Inventory,
    clock: Arc<dyn Clock>,
    /// Slots handled per product and schedule in one sweep.
    batch: usize,
    metrics: Option<Metrics>,
    partitions: Partitions,
}

impl ExpiryWorker {
    pub fn new(inventory: Inventory, clock: Arc<dyn Clock>) -> Self {
        Self { inventory, clock, batch: 500, metrics: None, partitions: Partitions::All }
    }

    /// Sweeps only these partitions' products (this origin's leased share).
    pub fn sharing(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    /// Counts expiries and reminders in the origin's `/metrics`.
    pub fn counting(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One sweep over every product of its partitions, at the clock's current time.
    pub async fn step(&self) -> redis::RedisResult<Sweep> {
        let now_ms = self.clock.now_ms();
        let mut sweep = Sweep::default();
        for product in self.inventory.products_in(&self.partitions.current()).await? {
            for slot in self.inventory.due_reminders(product, now_ms, self.batch).await? {
                if self.inventory.remind(product, slot, now_ms).await? {
                    sweep.reminded += 1;
                }
            }
            for slot in self.inventory.due_expiries(product, now_ms, self.batch).await? {
                match self.inventory.expire(product, slot, now_ms).await? {
                    Expiry::Expired => sweep.expired += 1,
                    Expiry::Skipped => sweep.skipped += 1,
                    Expiry::Paying => sweep.paying += 1,
                    Expiry::NotDue => {}
                }
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.expired.inc_by(sweep.expired);
            metrics.reminded.inc_by(sweep.reminded);
        }
        Ok(sweep)
    }

    /// Sweeps every `interval` until `cancel` fires; a sweep in progress finishes first.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        crate::clock::every("expiry", interval, cancel, || async {
            let s = self.step().await?;
            if s.expired + s.reminded > 0 {
                tracing::info!(expired = s.expired, reminded = s.reminded, "expiry sweep");
            }
            Ok::<_, redis::RedisError>(())
        })
        .await
    }
}
