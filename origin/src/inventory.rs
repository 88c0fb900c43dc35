//! Redis: the authoritative, live state of every sale, changed only by the Lua scripts
//! under `lua/` (see `lua/README.md` for the key layout).

use crate::script::Reply;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The keys of one product; all carry the product's hash tag.
#[derive(Debug, Clone)]
pub struct ProductKeys {
    tag: String,
}

impl ProductKeys {
    pub fn new(product_id: Uuid) -> Self {
        Self { tag: format!("fg:{{{product_id}}}") }
    }
    pub fn product(&self) -> String {
        format!("{}:product", self.tag)
    }
    pub fn holders(&self) -> String {
        format!("{}:holders", self.tag)
    }
    pub fn slot(&self, slot_id: Uuid) -> String {
        format!("{}:slot:{slot_id}", self.tag)
    }
    pub fn expiry(&self) -> String {
        format!("{}:expiry", self.tag)
    }
    pub fn reminders(&self) -> String {
        format!("{}:reminders", self.tag)
    }
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }
    pub fn payment(&self, payment_id: Uuid) -> String {
        format!("{}:payment:{payment_id}", self.tag)
    }
    /// Payments whose charge submission is not yet confirmed by the gateway.
    pub fn charges(&self) -> String {
        format!("{}:charges", self.tag)
    }
    /// PENDING payments whose charge the processor has, scored by when to ask it for the
    /// outcome if no webhook came (reconciliation).
    pub fn settling(&self) -> String {
        format!("{}:settling", self.tag)
    }
    /// Payments that succeeded too late and await their refund.
    pub fn refunds(&self) -> String {
        format!("{}:refunds", self.tag)
    }
    /// Sold-out refusals stamped before a granted request (possible fairness inversions).
    pub fn refused(&self) -> String {
        format!("{}:refused", self.tag)
    }
}

/// Where a slot or payment id lives: `fg:loc:<id>` → its product id. Written by the origin
/// right after the grant or the payment's creation (single-key commands, outside any
/// script), with a TTL; when it is missing PostgreSQL answers.
pub fn locator(id: Uuid) -> String {
    format!("fg:loc:{id}")
}

/// The set of every product id with sale state in Redis: what the workers sweep.
pub const PRODUCT_INDEX: &str = "fg:products";

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
        use crate::settings::defaults;
        Self {
            hold: Duration::from_secs(defaults::SLOT_HOLD_SECS),
            remind_before: Duration::from_secs(defaults::REMIND_BEFORE_SECS),
            expired_ttl: Duration::from_secs(defaults::EXPIRED_TTL_SECS),
            settle_grace: Duration::from_secs(defaults::SETTLE_GRACE_SECS),
        }
    }
}

/// What `expire.lua` did with one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    Expired,
    NotDue,
    Skipped,
    /// Due, but its payment is in flight: queued for reconciliation, expired later.
    Paying,
}

/// What `update_product.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductUpdate {
    Updated {
        remaining: i64,
        total: i64,
    },
    /// The sale start cannot move: this many slots were already granted.
    StartsLocked {
        granted: i64,
    },
    Unknown,
}

/// What `delete_product.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductDeletion {
    Deleted,
    Active { slots: i64 },
    Unknown,
}

/// A live (ACTIVE or COMPLETED) slot as PostgreSQL knows it, for a rebuild.
#[derive(Debug, Clone)]
pub struct LiveSlot {
    pub slot_id: Uuid,
    pub user_id: Uuid,
    pub status: crate::status::SlotStatus,
    pub expires_ms: i64,
    pub arrival_us: i64,
    pub acquired_ms: i64,
    pub traceparent: String,
}

/// A product's grant counters, as a lease extension reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    pub remaining: i64,
    pub granted: i64,
    pub leased: i64,
}

/// The counters a rebuild restores besides the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuiltCounts {
    /// Grants ever made, those PostgreSQL never heard of (in doubt) included.
    pub granted: i64,
    /// The durable grant lease.
    pub leased: i64,
    /// Units withheld for grants PostgreSQL never heard of.
    pub in_doubt: i64,
}

/// One acquisition attempt, as the edge stamped it.
#[derive(Debug, Clone)]
pub struct AcquireArgs {
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub slot_id: Uuid,
    pub event_id: Uuid,
    pub arrival_us: i64,
    pub now_ms: i64,
    pub traceparent: String,
}

/// What `acquire.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    Granted { remaining: i64, expires_ms: i64 },
    Holding { slot_id: Uuid },
    SoldOut,
    NotOnSale { starts_ms: i64 },
    Ended { ends_ms: i64 },
    Unknown,
}

impl Acquisition {
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Granted { .. } => "granted",
            Self::Holding { .. } => "holding",
            Self::SoldOut => "sold_out",
            Self::NotOnSale { .. } => "not_on_sale",
            Self::Ended { .. } => "ended",
            Self::Unknown => "unknown",
        }
    }
}

/// What one run of `acquire.lua` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Decided. `lease_low`: the grant lease covers less than half an extension; extend it
    /// in the background before it runs out.
    Decided { acquisition: Acquisition, lease_low: bool },
    /// Nothing decided: the grant lease is used up at `granted` grants. Extend it (durably,
    /// in PostgreSQL first) and ask again.
    LeaseUsedUp { granted: i64, remaining: i64 },
}

impl Attempt {
    fn parse(value: Value) -> RedisResult<Self> {
        let reply = Reply::read("acquire.lua", value)?;
        let decided = |acquisition| Self::Decided { acquisition, lease_low: false };
        Ok(match reply.tag() {
            "granted" => Self::Decided {
                acquisition: Acquisition::Granted {
                    remaining: reply.int(0)?,
                    expires_ms: reply.int(1)?,
                },
                lease_low: reply.int(2)? == 1,
            },
            "holding" => decided(Acquisition::Holding { slot_id: reply.uuid(0)? }),
            "sold_out" => decided(Acquisition::SoldOut),
            "not_on_sale" => decided(Acquisition::NotOnSale { starts_ms: reply.int(0)? }),
            "ended" => decided(Acquisition::Ended { ends_ms: reply.int(0)? }),
            "unknown" => decided(Acquisition::Unknown),
            "lease" => Self::LeaseUsedUp { granted: reply.int(0)?, remaining: reply.int(1)? },
            _ => return Err(reply.unknown_outcome()),
        })
    }
}

/// Handle on Redis and the loaded scripts; cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    conn: ConnectionManager,
    acquire: Arc<Script>,
    load_product: Arc<Script>,
    expire: Arc<Script>,
    remind: Arc<Script>,
    update_product: Arc<Script>,
    delete_product: Arc<Script>,
    rebuild: Arc<Script>,
    lease: Arc<Script>,
    release_in_doubt: Arc<Script>,
    lifecycle: Lifecycle,
}

impl Inventory {
    /// Connects lazily: the origin starts even while Redis is down, and answers 503 until it
    /// is back. Every command has `timeout` as its deadline.
    pub fn connect(url: &str, timeout: Duration, lifecycle: Lifecycle) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            acquire: lua_script!("acquire"),
            load_product: lua_script!("load_product"),
            expire: lua_script!("expire"),
            remind: lua_script!("remind"),
            update_product: lua_script!("update_product"),
            delete_product: lua_script!("delete_product"),
            rebuild: lua_script!("rebuild"),
            lease: lua_script!("lease"),
            release_in_doubt: lua_script!("release_in_doubt"),
            lifecycle,
        })
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    pub async fn acquire(&self, a: &AcquireArgs, lease_size: i64) -> RedisResult<Attempt> {
        let keys = ProductKeys::new(a.product_id);
        let value: Value = self
            .acquire
            .key(keys.product())
            .key(keys.holders())
            .key(keys.slot(a.slot_id))
            .key(keys.expiry())
            .key(keys.reminders())
            .key(keys.outbox())
            .key(keys.refused())
            .arg(a.product_id.to_string())
            .arg(a.user_id.to_string())
            .arg(a.slot_id.to_string())
            .arg(a.event_id.to_string())
            .arg(a.arrival_us)
            .arg(a.now_ms)
            .arg(ms(self.lifecycle.hold))
            .arg(&a.traceparent)
            .arg(ms(self.lifecycle.remind_before))
            .arg(Uuid::now_v7().to_string())
            .arg(ms(self.lifecycle.expired_ttl))
            .arg(lease_size)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Attempt::parse(value)
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
        let now: i64 = self
            .lease
            .key(ProductKeys::new(product_id).product())
            .arg(leased)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((now >= 0).then_some(now))
    }

    /// Puts the units a rebuild withheld back on sale (`release_in_doubt.lua`); how many,
    /// `None` if Redis does not know the product.
    pub async fn release_in_doubt(&self, product_id: Uuid) -> RedisResult<Option<i64>> {
        let released: i64 = self
            .release_in_doubt
            .key(ProductKeys::new(product_id).product())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((released >= 0).then_some(released))
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
        redis::cmd("SADD")
            .arg(PRODUCT_INDEX)
            .arg(product_id.to_string())
            .query_async::<i64>(&mut self.conn.clone())
            .await?;
        let loaded: i64 = self
            .load_product
            .key(ProductKeys::new(product_id).product())
            .arg(total)
            .arg(starts_ms)
            .arg(ends_ms.map(|e| e.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(loaded == 1)
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
        let value: Value = self
            .update_product
            .key(ProductKeys::new(product_id).product())
            .arg(growth)
            .arg(starts_ms.map(|v| v.to_string()).unwrap_or_default())
            .arg(match ends_ms {
                None => String::new(),
                Some(None) => "none".to_owned(),
                Some(Some(v)) => v.to_string(),
            })
            .invoke_async(&mut self.conn.clone())
            .await?;
        let reply = Reply::read("update_product.lua", value)?;
        Ok(match reply.tag() {
            "ok" => ProductUpdate::Updated { remaining: reply.int(0)?, total: reply.int(1)? },
            "starts_locked" => ProductUpdate::StartsLocked { granted: reply.int(0)? },
            "unknown" => ProductUpdate::Unknown,
            _ => return Err(reply.unknown_outcome()),
        })
    }

    /// Removes a product's sale state unless slots are ACTIVE; drops it from the index.
    pub async fn delete_product(&self, product_id: Uuid) -> RedisResult<ProductDeletion> {
        let keys = ProductKeys::new(product_id);
        let value: Value = self
            .delete_product
            .key(keys.product())
            .key(keys.holders())
            .key(keys.expiry())
            .key(keys.reminders())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let reply = Reply::read("delete_product.lua", value)?;
        let decision = match reply.tag() {
            "deleted" => ProductDeletion::Deleted,
            "active" => ProductDeletion::Active { slots: reply.int(0)? },
            "unknown" => ProductDeletion::Unknown,
            _ => return Err(reply.unknown_outcome()),
        };
        if !matches!(decision, ProductDeletion::Active { .. }) {
            redis::cmd("SREM")
                .arg(PRODUCT_INDEX)
                .arg(product_id.to_string())
                .query_async::<i64>(&mut self.conn.clone())
                .await?;
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
        redis::cmd("SADD")
            .arg(PRODUCT_INDEX)
            .arg(product_id.to_string())
            .query_async::<i64>(&mut self.conn.clone())
            .await?;
        let keys = ProductKeys::new(product_id);
        let mut call = self.rebuild.key(keys.product());
        call.key(keys.holders())
            .key(keys.expiry())
            .key(keys.reminders())
            .key(keys.charges())
            .key(keys.refunds())
            .arg(total)
            .arg(starts_ms)
            .arg(ends_ms.map(|e| e.to_string()).unwrap_or_default())
            .arg(counts.granted)
            .arg(now_ms)
            .arg(ms(self.lifecycle.remind_before))
            .arg(product_id.to_string())
            .arg(payments_json)
            .arg(counts.leased)
            .arg(counts.in_doubt);
        for s in slots {
            call.arg(s.slot_id.to_string())
                .arg(s.user_id.to_string())
                .arg(s.status.as_str())
                .arg(s.expires_ms)
                .arg(s.arrival_us)
                .arg(s.acquired_ms)
                .arg(&s.traceparent);
        }
        let restored: i64 = call.invoke_async(&mut self.conn.clone()).await?;
        Ok((restored >= 0).then_some(restored))
    }

    /// `(productId, remaining, startsAtMs, endsAtMs)` of every indexed product Redis has sale
    /// state for, in two round trips.
    pub async fn availability_all(&self) -> RedisResult<Vec<(Uuid, i64, i64, Option<i64>)>> {
        let ids: Vec<String> =
            redis::cmd("SMEMBERS").arg(PRODUCT_INDEX).query_async(&mut self.conn.clone()).await?;
        let ids: Vec<Uuid> = ids.iter().filter_map(|id| Uuid::try_parse(id).ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for p in &ids {
            pipe.cmd("HMGET")
                .arg(ProductKeys::new(*p).product())
                .arg("remaining")
                .arg("startsAtMs")
                .arg("endsAtMs");
        }
        let rows: Vec<(Option<i64>, Option<i64>, Option<String>)> =
            pipe.query_async(&mut self.conn.clone()).await?;
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
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for p in products {
            pipe.cmd("HGET").arg(ProductKeys::new(*p).product()).arg("remaining");
        }
        pipe.query_async(&mut self.conn.clone()).await
    }

    /// Every product the workers must sweep.
    pub async fn products(&self) -> RedisResult<Vec<Uuid>> {
        let ids: Vec<String> =
            redis::cmd("SMEMBERS").arg(PRODUCT_INDEX).query_async(&mut self.conn.clone()).await?;
        Ok(ids.iter().filter_map(|id| Uuid::try_parse(id).ok()).collect())
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
        let keys = ProductKeys::new(product_id);
        let value: Value = self
            .expire
            .key(keys.product())
            .key(keys.holders())
            .key(keys.slot(slot_id))
            .key(keys.expiry())
            .key(keys.reminders())
            .key(keys.outbox())
            .key(keys.settling())
            .arg(product_id.to_string())
            .arg(slot_id.to_string())
            .arg(Uuid::now_v7().to_string())
            .arg(now_ms)
            .arg(ms(self.lifecycle.expired_ttl))
            .arg(ms(self.lifecycle.settle_grace))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let reply = Reply::read("expire.lua", value)?;
        Ok(match reply.tag() {
            "expired" => Expiry::Expired,
            "not_due" => Expiry::NotDue,
            "paying" => Expiry::Paying,
            "skipped" => Expiry::Skipped,
            _ => return Err(reply.unknown_outcome()),
        })
    }

    /// Runs `remind.lua` for one slot; `true` if the event was emitted.
    pub async fn remind(&self, product_id: Uuid, slot_id: Uuid, now_ms: i64) -> RedisResult<bool> {
        let keys = ProductKeys::new(product_id);
        let emitted: i64 = self
            .remind
            .key(keys.reminders())
            .key(keys.slot(slot_id))
            .key(keys.outbox())
            .arg(product_id.to_string())
            .arg(slot_id.to_string())
            .arg(Uuid::now_v7().to_string())
            .arg(now_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(emitted == 1)
    }

    pub async fn ping(&self) -> RedisResult<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map(drop)
    }

    /// A connection for operators' tools and tests.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Up to `limit` ids of the sorted set `schedule` scored at or before `until` (the work
/// queues: expiry, reminders, charges, refunds).
pub(crate) async fn due(
    conn: &ConnectionManager,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_every_answer() {
        let id = Uuid::now_v7();
        let decided = |acquisition| Attempt::Decided { acquisition, lease_low: false };
        let cases = [
            (
                vec![bulk("granted"), Value::Int(2), Value::Int(99), Value::Int(0)],
                decided(Acquisition::Granted { remaining: 2, expires_ms: 99 }),
            ),
            (
                vec![bulk("granted"), Value::Int(2), Value::Int(99), Value::Int(1)],
                Attempt::Decided {
                    acquisition: Acquisition::Granted { remaining: 2, expires_ms: 99 },
                    lease_low: true,
                },
            ),
            (
                vec![bulk("holding"), bulk(&id.to_string())],
                decided(Acquisition::Holding { slot_id: id }),
            ),
            (vec![bulk("sold_out")], decided(Acquisition::SoldOut)),
            (
                vec![bulk("not_on_sale"), bulk("5")],
                decided(Acquisition::NotOnSale { starts_ms: 5 }),
            ),
            (vec![bulk("ended"), bulk("7")], decided(Acquisition::Ended { ends_ms: 7 })),
            (vec![bulk("unknown")], decided(Acquisition::Unknown)),
            (
                vec![bulk("lease"), Value::Int(64), bulk("36")],
                Attempt::LeaseUsedUp { granted: 64, remaining: 36 },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(Attempt::parse(Value::Array(value)).unwrap(), expected);
        }
        assert!(Attempt::parse(Value::Array(vec![bulk("what")])).is_err());
        assert!(Attempt::parse(Value::Array(vec![bulk("granted")])).is_err());
        assert!(Attempt::parse(Value::Array(vec![bulk("lease"), Value::Int(1)])).is_err());
    }

    #[test]
    fn keys_share_the_product_hash_tag() {
        let p = Uuid::nil();
        let k = ProductKeys::new(p);
        for key in [
            k.product(),
            k.holders(),
            k.slot(p),
            k.expiry(),
            k.reminders(),
            k.outbox(),
            k.payment(p),
            k.charges(),
            k.refunds(),
            k.refused(),
        ] {
            assert!(key.starts_with("fg:{00000000-0000-0000-0000-000000000000}:"), "{key}");
        }
    }
}
