//! Redis: the authoritative, live state of every sale, changed only by the Lua scripts
//! under `lua/` (see `lua/README.md` for the key layout).

use crate::clock::{Clock, SystemClock};
use crate::store::availability;
use crate::store::commit::{GroupCommit, Witness};
use crate::store::keys::{PARTITIONS, PartitionKeys, ProductKeys};
use crate::store::redis::{Redis, RedisTarget, ReplicaAcks};
use crate::store::scripts::acquire::{self, AcquireArgs, Acquisition, Attempt};
use crate::store::scripts::delete_product::{self, ProductDeletion};
use crate::store::scripts::expire::{self, Expiry};
use crate::store::scripts::rebuild::{self, LiveSlot, RebuiltCounts};
use crate::store::scripts::update_product::{self, ProductUpdate};
use crate::store::scripts::{lease, load_product, ms, release_in_doubt, remind};
use redis::RedisResult;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Timing rules of the slot lifecycle, passed to the scripts.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// How long a granted slot is held for payment.
    pub hold: Duration,
    /// How long before its deadline a slot's `slot-expiring-soon` event is due.
    pub remind_before: Duration,
    /// How long an EXPIRED slot's record stays in Redis for reads.
    pub expired_ttl: Duration,
    /// How long past its deadline a slot with a payment in flight waits for that payment
    /// to be settled (by webhook or reconciliation) before it expires anyway.
    pub settle_grace: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        use crate::config::defaults;
        Self {
            hold: Duration::from_secs(defaults::SLOT_HOLD_SECS),
            remind_before: Duration::from_secs(defaults::REMIND_BEFORE_SECS),
            expired_ttl: Duration::from_secs(defaults::EXPIRED_TTL_SECS),
            settle_grace: Duration::from_secs(defaults::SETTLE_GRACE_SECS),
        }
    }
}

/// A product's grant counters, as a lease extension reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    pub remaining: i64,
    pub granted: i64,
    pub leased: i64,
}

/// Handle on Redis and the loaded scripts; cheap to clone. Every change of a product's
/// availability made through it is noted in the change log ([`availability`]).
#[derive(Clone)]
pub struct Inventory {
    conn: Redis,
    lifecycle: Lifecycle,
    clock: Arc<dyn Clock>,
    /// Waits for the replicas a grant must reach before it is answered (a cluster's
    /// masters' replicas), many grants at once.
    commits: GroupCommit,
}

impl Inventory {
    /// Connects lazily: the origin starts even while Redis is down, and answers 503 until it
    /// is back. Every command has `timeout` as its deadline.
    pub fn connect(
        target: &RedisTarget,
        timeout: Duration,
        lifecycle: Lifecycle,
    ) -> RedisResult<Self> {
        let conn = Redis::connect(target, timeout)?;
        let commits = GroupCommit::connect(target, timeout, ReplicaAcks::NONE)?;
        Ok(Self { conn, lifecycle, clock: Arc::new(SystemClock), commits })
    }

    /// Answers a grant only once `acks.replicas` replicas have it (`WAIT`), else 503.
    pub fn with_replica_acks(mut self, acks: ReplicaAcks) -> Self {
        self.commits = self.commits.with_acks(acks);
        self
    }

    /// Records the replica commits in `metrics` (the application's registry).
    pub fn with_commit_metrics(mut self, metrics: crate::metrics::ReplicaCommits) -> Self {
        self.commits = self.commits.with_metrics(metrics);
        self
    }

    pub fn replica_acks(&self) -> ReplicaAcks {
        self.commits.acks()
    }

    /// Returns once every write `product_id`'s master answered before the call, `witness`
    /// among them, is on the replicas [`ReplicaAcks`] asks for; an error (answered 503) when
    /// they are not within its timeout or the master lacks `witness`. Nothing to wait for
    /// without replicas. Concurrent calls share one `WAIT` ([`GroupCommit`]).
    pub async fn replicated(&self, product_id: Uuid, witness: Witness) -> RedisResult<()> {
        self.commits.replicated(product_id, witness).await
    }

    /// Times the change log with `clock` (the application's).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    async fn note_changed(&self, product_id: Uuid) {
        availability::note(&self.conn, product_id, self.clock.now_ms()).await;
    }

    /// `(productId, remaining, startsAtMs, endsAtMs)` of the products whose availability
    /// changed at or after `since_ms` (see [`availability`]); every product when `None`.
    /// Also the time the answer is as of, to ask from next.
    pub async fn availability_since(
        &self,
        since_ms: Option<i64>,
    ) -> RedisResult<(i64, Vec<(Uuid, i64, i64, Option<i64>)>)> {
        // Read before the products: a change noted meanwhile is reported again next time.
        let as_of = self.clock.now_ms();
        let ids = match since_ms {
            Some(since) => availability::changed_since(&self.conn, since).await?,
            None => self.products().await?,
        };
        Ok((as_of, self.availability_of(ids).await?))
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    pub async fn acquire(&self, a: &AcquireArgs, lease_size: i64) -> RedisResult<Attempt> {
        let attempt = acquire::Args { attempt: a, lifecycle: self.lifecycle, lease_size }
            .run(&self.conn)
            .await?;
        if let Attempt::Decided { acquisition: Acquisition::Granted { remaining, .. }, .. } =
            attempt
        {
            // A grant a failover could lose is not answered 201: the buyer hears 503 and
            // finds their slot (or none) when they ask again.
            self.replicated(a.product_id, Witness::Slot(a.slot_id)).await?;
            if remaining == 0 {
                self.note_changed(a.product_id).await; // sold out
            }
        }
        Ok(attempt)
    }

    /// What a lease extension needs to know of a product, in one read (`None` when Redis
    /// does not know it).
    pub async fn lease_state(&self, product_id: Uuid) -> RedisResult<Option<LeaseState>> {
        let (remaining, granted, leased): (Option<i64>, Option<i64>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(ProductKeys::new(product_id).product())
                .arg("remaining")
                .arg("granted")
                .arg("leased")
                .query_async(&mut self.conn.clone())
                .await?;
        Ok(remaining.map(|remaining| LeaseState {
            remaining,
            granted: granted.unwrap_or(0),
            leased: leased.unwrap_or(0),
        }))
    }

    /// Raises the product's grant lease to `leased`, a count PostgreSQL already holds
    /// (`lease.lua`); the lease after the call, `None` if Redis does not know the product.
    pub async fn raise_lease(&self, product_id: Uuid, leased: i64) -> RedisResult<Option<i64>> {
        lease::Args { product_id, leased }.run(&self.conn).await
    }

    /// Puts the units a rebuild withheld back on sale (`release_in_doubt.lua`); how many,
    /// `None` if Redis does not know the product.
    pub async fn release_in_doubt(&self, product_id: Uuid) -> RedisResult<Option<i64>> {
        let released = release_in_doubt::Args { product_id }.run(&self.conn).await?;
        if released.is_some_and(|n| n > 0) {
            self.note_changed(product_id).await;
        }
        Ok(released)
    }

    /// Puts a product's sale state in Redis unless it is already there, and indexes it for
    /// the workers; `true` if loaded.
    pub async fn load_product(
        &self,
        product_id: Uuid,
        total: i64,
        starts_ms: i64,
        ends_ms: Option<i64>,
    ) -> RedisResult<bool> {
        // Indexed first: a product in the index without sale state is harmless to sweep.
        self.index(product_id).await?;
        let loaded =
            load_product::Args { product_id, total, starts_ms, ends_ms }.run(&self.conn).await?;
        if loaded {
            self.note_changed(product_id).await;
        }
        Ok(loaded)
    }

    /// Units still on sale, or `None` when Redis does not know the product.
    pub async fn remaining(&self, product_id: Uuid) -> RedisResult<Option<i64>> {
        redis::cmd("HGET")
            .arg(ProductKeys::new(product_id).product())
            .arg("remaining")
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Applies an operator's change: stock growth, and sale start/end (`None` = unchanged;
    /// `Some(None)` for the end = open-ended).
    pub async fn update_product(
        &self,
        product_id: Uuid,
        growth: i64,
        starts_ms: Option<i64>,
        ends_ms: Option<Option<i64>>,
    ) -> RedisResult<ProductUpdate> {
        let update = update_product::Args {
            product_id,
            growth,
            starts_ms,
            ends_ms,
            now_ms: self.clock.now_ms(),
        }
        .run(&self.conn)
        .await?;
        self.note_changed(product_id).await;
        Ok(update)
    }

    /// Removes a product's sale state unless slots are ACTIVE; drops it from the index.
    pub async fn delete_product(&self, product_id: Uuid) -> RedisResult<ProductDeletion> {
        let decision = delete_product::Args { product_id }.run(&self.conn).await?;
        if !matches!(decision, ProductDeletion::Active { .. }) {
            redis::cmd("SREM")
                .arg(PartitionKeys::of(product_id).products())
                .arg(product_id.to_string())
                .query_async::<i64>(&mut self.conn.clone())
                .await?;
            self.note_changed(product_id).await;
        }
        Ok(decision)
    }

    /// Restores a product's sale state (`rebuild.lua`) and re-indexes it; `None` if Redis
    /// already had the product.
    #[allow(clippy::too_many_arguments)]
    pub async fn rebuild_product(
        &self,
        product_id: Uuid,
        total: i64,
        starts_ms: i64,
        ends_ms: Option<i64>,
        counts: RebuiltCounts,
        now_ms: i64,
        slots: &[LiveSlot],
        payments_json: &str,
    ) -> RedisResult<Option<i64>> {
        self.index(product_id).await?;
        let rebuilt = rebuild::Args {
            product_id,
            total,
            starts_ms,
            ends_ms,
            counts,
            now_ms,
            lifecycle: self.lifecycle,
            slots,
            payments_json,
        }
        .run(&self.conn)
        .await?;
        self.note_changed(product_id).await;
        Ok(rebuilt)
    }

    /// Adds a product to its partition's index, for the workers.
    async fn index(&self, product_id: Uuid) -> RedisResult<()> {
        redis::cmd("SADD")
            .arg(PartitionKeys::of(product_id).products())
            .arg(product_id.to_string())
            .query_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
    }

    /// `(productId, remaining, startsAtMs, endsAtMs)` of those of `ids` Redis has sale state
    /// for, in one round trip (one per shard on a cluster).
    async fn availability_of(
        &self,
        ids: Vec<Uuid>,
    ) -> RedisResult<Vec<(Uuid, i64, i64, Option<i64>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reads = ids
            .iter()
            .map(|p| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(ProductKeys::new(*p).product())
                    .arg("remaining")
                    .arg("startsAtMs")
                    .arg("endsAtMs");
                cmd
            })
            .collect();
        let rows: Vec<(Option<i64>, Option<i64>, Option<String>)> =
            self.conn.query_all(reads).await?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter_map(|(id, (remaining, starts, ends))| {
                Some((id, remaining?, starts?, ends.and_then(|e| e.parse().ok())))
            })
            .collect())
    }

    /// `remaining` of several products in one round trip (`None`: not in Redis).
    pub async fn remaining_many(&self, products: &[Uuid]) -> RedisResult<Vec<Option<i64>>> {
        let reads = products
            .iter()
            .map(|p| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(ProductKeys::new(*p).product()).arg("remaining");
                cmd
            })
            .collect();
        self.conn.query_all(reads).await
    }

    /// Every product with sale state in Redis, over every partition.
    pub async fn products(&self) -> RedisResult<Vec<Uuid>> {
        self.products_in(&(0..PARTITIONS).collect::<Vec<_>>()).await
    }

    /// The products of the given work partitions: what one origin's workers sweep.
    pub async fn products_in(&self, partitions: &[u16]) -> RedisResult<Vec<Uuid>> {
        let reads = partitions
            .iter()
            .map(|p| {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(PartitionKeys::new(*p).products());
                cmd
            })
            .collect();
        let ids: Vec<Vec<String>> = self.conn.query_all(reads).await?;
        Ok(ids.iter().flatten().filter_map(|id| Uuid::try_parse(id).ok()).collect())
    }

    /// Up to `limit` slots of `schedule` (expiry or reminders) due at `now_ms`.
    async fn due(&self, schedule: String, now_ms: i64, limit: usize) -> RedisResult<Vec<Uuid>> {
        due(&self.conn, schedule, now_ms, limit).await
    }

    pub async fn due_expiries(
        &self,
        product_id: Uuid,
        now_ms: i64,
        limit: usize,
    ) -> RedisResult<Vec<Uuid>> {
        self.due(ProductKeys::new(product_id).expiry(), now_ms, limit).await
    }

    pub async fn due_reminders(
        &self,
        product_id: Uuid,
        now_ms: i64,
        limit: usize,
    ) -> RedisResult<Vec<Uuid>> {
        self.due(ProductKeys::new(product_id).reminders(), now_ms, limit).await
    }

    /// Runs `expire.lua` for one slot.
    pub async fn expire(
        &self,
        product_id: Uuid,
        slot_id: Uuid,
        now_ms: i64,
    ) -> RedisResult<Expiry> {
        let expiry = expire::Args { product_id, slot_id, now_ms, lifecycle: self.lifecycle }
            .run(&self.conn)
            .await?;
        if expiry == Expiry::Expired {
            self.note_changed(product_id).await; // a unit back on sale
        }
        Ok(expiry)
    }

    /// Runs `remind.lua` for one slot; `true` if the event was emitted.
    pub async fn remind(&self, product_id: Uuid, slot_id: Uuid, now_ms: i64) -> RedisResult<bool> {
        remind::Args { product_id, slot_id, now_ms }.run(&self.conn).await
    }

    pub async fn ping(&self) -> RedisResult<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map(drop)
    }

    /// A connection for operators' tools and tests.
    /// Marks the edge-signed request `id` seen for `ttl`: false if it was already (a replay).
    pub async fn claim_request(&self, id: &str, ttl: Duration) -> RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("fg:seen:{id}"))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ms(ttl).max(1))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(set.is_some())
    }

    pub fn connection(&self) -> Redis {
        self.conn.clone()
    }
}

/// Up to `limit` ids of the sorted set `schedule` scored at or before `until` (the work
/// queues: expiry, reminders, charges, refunds).
pub(crate) async fn due(
    conn: &Redis,
    schedule: String,
    until: i64,
    limit: usize,
) -> RedisResult<Vec<Uuid>> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(schedule)
        .arg("-inf")
        .arg(until)
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut conn.clone())
        .await?;
    Ok(ids.iter().filter_map(|id| Uuid::try_parse(id).ok()).collect())
}
