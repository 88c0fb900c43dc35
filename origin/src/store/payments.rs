//! Payments in Redis: idempotency keys, locators, and the payment scripts (`lua/pay.lua`,
//! `lua/settle.lua`, `lua/refunded.lua`).

use crate::status::PaymentStatus;
use crate::store::availability;
use crate::store::inventory::{Inventory, Lifecycle, due};
use crate::store::keys::{ProductKeys, locator};
use crate::store::redis::Redis;
use crate::store::scripts::pay::{Creation, NewPayment};
use crate::store::scripts::settle::{self, Settlement};
use crate::store::scripts::{ms, refunded};
use redis::RedisResult;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: this request's payment id is now bound to it.
    Claimed,
    /// The key was used before, for this body fingerprint and payment id.
    Existing { fingerprint: String, payment_id: Uuid },
}

#[derive(Clone)]
pub struct PaymentStore {
    conn: Redis,
    lifecycle: Lifecycle,
}

impl PaymentStore {
    pub fn new(inventory: &Inventory) -> Self {
        Self { conn: inventory.connection(), lifecycle: inventory.lifecycle() }
    }

    fn idempotency_key(user_id: Uuid, key: &str) -> String {
        format!("fg:idem:{user_id}:{key}")
    }

    /// Frees `key` if it is still bound to `fingerprint` and `payment_id` (this request's own
    /// claim): a request refused before it created anything leaves no key behind, and a
    /// retry with the same key is decided afresh (security review, finding 4: refused
    /// attempts kept their keys for 24 h).
    pub async fn release_key(
        &self,
        user_id: Uuid,
        key: &str,
        fingerprint: &str,
        payment_id: Uuid,
    ) -> RedisResult<()> {
        static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            )
        });
        let _: i64 = RELEASE
            .key(Self::idempotency_key(user_id, key))
            .arg(format!("{fingerprint} {payment_id}"))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Binds `key` (scoped to the buyer) to `fingerprint` and `payment_id` unless it is bound
    /// already (one `SET NX GET`: of concurrent requests exactly one claims).
    pub async fn claim_key(
        &self,
        user_id: Uuid,
        key: &str,
        fingerprint: &str,
        payment_id: Uuid,
        ttl: Duration,
    ) -> RedisResult<Claim> {
        let previous: Option<String> = redis::cmd("SET")
            .arg(Self::idempotency_key(user_id, key))
            .arg(format!("{fingerprint} {payment_id}"))
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ms(ttl).max(1))
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(previous) = previous else { return Ok(Claim::Claimed) };
        let parsed = previous
            .split_once(' ')
            .and_then(|(f, p)| Some((f.to_owned(), Uuid::try_parse(p).ok()?)));
        match parsed {
            Some((fingerprint, payment_id)) => Ok(Claim::Existing { fingerprint, payment_id }),
            None => Err((redis::ErrorKind::Parse, "unreadable idempotency record").into()),
        }
    }

    /// The product a slot or payment belongs to, if its locator is still there.
    pub async fn locate(&self, id: Uuid) -> RedisResult<Option<Uuid>> {
        let product: Option<String> =
            redis::cmd("GET").arg(locator(id)).query_async(&mut self.conn.clone()).await?;
        Ok(product.and_then(|p| Uuid::try_parse(&p).ok()))
    }

    /// Records where `id` lives, for as long as its records stay in Redis.
    pub async fn set_locator(&self, id: Uuid, product_id: Uuid) -> RedisResult<()> {
        let ttl = ms(self.lifecycle.hold + self.lifecycle.expired_ttl);
        redis::cmd("SET")
            .arg(locator(id))
            .arg(product_id.to_string())
            .arg("PX")
            .arg(ttl)
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    pub async fn create(&self, p: &NewPayment<'_>) -> RedisResult<Creation> {
        p.run(&self.conn).await
    }

    /// A payment's status in Redis (`None` when Redis no longer has it).
    pub async fn payment_status(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
    ) -> RedisResult<Option<PaymentStatus>> {
        let status: Option<String> = redis::cmd("HGET")
            .arg(ProductKeys::new(product_id).payment(payment_id))
            .arg("status")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(status.and_then(|s| s.parse().ok()))
    }

    /// A payment's fields, or `None` when Redis no longer has it.
    pub async fn payment(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
    ) -> RedisResult<Option<HashMap<String, String>>> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(ProductKeys::new(product_id).payment(payment_id))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok((!fields.is_empty()).then_some(fields))
    }

    /// Applies the gateway's outcome (`failure`: `None` for success).
    pub async fn settle(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
        failure: Option<&str>,
        now_ms: i64,
    ) -> RedisResult<Settlement> {
        let keys = ProductKeys::new(product_id);
        // The slot key must be declared (cluster-safe scripts), so it is read first.
        let slot: Option<String> = redis::cmd("HGET")
            .arg(keys.payment(payment_id))
            .arg("slotId")
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(slot_id) = slot.and_then(|s| Uuid::try_parse(&s).ok()) else {
            return Ok(Settlement::Unknown);
        };
        let lifecycle = self.lifecycle;
        let settlement =
            settle::Args { product_id, payment_id, slot_id, failure, now_ms, lifecycle }
                .run(&self.conn)
                .await?;
        if settlement == Settlement::RefundRequired {
            // A success too late: its slot may have been reclaimed here, a unit back on sale.
            availability::note(&self.conn, product_id, now_ms).await;
        }
        Ok(settlement)
    }

    /// Records a confirmed refund; `true` if it was awaited.
    pub async fn refunded(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
        now_ms: i64,
    ) -> RedisResult<bool> {
        refunded::Args { product_id, payment_id, now_ms, lifecycle: self.lifecycle }
            .run(&self.conn)
            .await
    }

    /// The gateway confirmed it received the charge: no longer resubmitted; reconciled at
    /// `reconcile_at_ms` unless its webhook settles it first.
    pub async fn charge_submitted(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
        reconcile_at_ms: i64,
    ) -> RedisResult<()> {
        let keys = ProductKeys::new(product_id);
        self.requeue(payment_id, &[keys.charges()], Some((keys.settling(), reconcile_at_ms))).await
    }

    /// Atomically takes `payment_id` out of the `leave` queues and, when given, into a queue
    /// at a score.
    async fn requeue(
        &self,
        payment_id: Uuid,
        leave: &[String],
        enter: Option<(String, i64)>,
    ) -> RedisResult<()> {
        let id = payment_id.to_string();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for queue in leave {
            pipe.zrem(queue, &id).ignore();
        }
        if let Some((queue, score)) = enter {
            pipe.zadd(queue, &id, score).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    /// Asks for `payment_id` to be reconciled again at `at_ms`.
    pub async fn reconcile_at(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
        at_ms: i64,
    ) -> RedisResult<()> {
        redis::cmd("ZADD")
            .arg(ProductKeys::new(product_id).settling())
            .arg(at_ms)
            .arg(payment_id.to_string())
            .query_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
    }

    /// Drops a payment that is no longer PENDING from the submission and reconciliation
    /// queues.
    pub async fn unqueue(&self, product_id: Uuid, payment_id: Uuid) -> RedisResult<()> {
        let keys = ProductKeys::new(product_id);
        self.requeue(payment_id, &[keys.charges(), keys.settling()], None).await
    }

    /// Submitted payments whose reconciliation is due at `now_ms`.
    pub async fn due_for_reconciliation(
        &self,
        product_id: Uuid,
        now_ms: i64,
        limit: usize,
    ) -> RedisResult<Vec<Uuid>> {
        due(&self.conn, ProductKeys::new(product_id).settling(), now_ms, limit).await
    }

    /// Payments created at or before `until_ms` whose charge submission is unconfirmed.
    pub async fn unsubmitted(
        &self,
        product_id: Uuid,
        until_ms: i64,
        limit: usize,
    ) -> RedisResult<Vec<Uuid>> {
        due(&self.conn, ProductKeys::new(product_id).charges(), until_ms, limit).await
    }

    /// Payments awaiting their refund.
    pub async fn awaiting_refund(&self, product_id: Uuid, limit: usize) -> RedisResult<Vec<Uuid>> {
        due(&self.conn, ProductKeys::new(product_id).refunds(), i64::MAX, limit).await
    }
}

/// A payment's status from its Redis fields.
pub fn status_of(fields: &HashMap<String, String>) -> Option<PaymentStatus> {
    fields.get("status").and_then(|s| s.parse().ok())
}
