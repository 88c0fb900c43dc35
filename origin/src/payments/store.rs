//! Payments in Redis: idempotency keys, locators, and the payment scripts (`lua/pay.lua`,
//! `lua/settle.lua`, `lua/refunded.lua`).

use crate::inventory::{Inventory, Lifecycle, ProductKeys, due, locator};
use crate::script::Reply;
use crate::status::PaymentStatus;
use redis::aio::ConnectionManager;
use redis::{RedisResult, Script, Value};
use std::collections::HashMap;
use std::sync::Arc;
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

/// What `pay.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    Created,
    Existing,
    Unknown,
    Forbidden,
    Expired,
    Completed,
    InFlight { payment_id: Option<Uuid> },
}

/// What `settle.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Completed,
    Failed,
    RefundRequired,
    /// Settled before (a repeated webhook): nothing changed.
    AlreadySettled {
        status: Option<PaymentStatus>,
    },
    Unknown,
}

/// A payment to create.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub payment_id: Uuid,
    pub product_id: Uuid,
    pub slot_id: Uuid,
    pub user_id: Uuid,
    pub method: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub idempotency_key: &'a str,
    pub traceparent: &'a str,
    pub now_ms: i64,
}

#[derive(Clone)]
pub struct PaymentStore {
    conn: ConnectionManager,
    pay: Arc<Script>,
    settle: Arc<Script>,
    refunded: Arc<Script>,
    lifecycle: Lifecycle,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl PaymentStore {
    pub fn new(inventory: &Inventory) -> Self {
        Self {
            conn: inventory.connection(),
            pay: lua_script!("pay"),
            settle: lua_script!("settle"),
            refunded: lua_script!("refunded"),
            lifecycle: inventory.lifecycle(),
        }
    }

    fn idempotency_key(user_id: Uuid, key: &str) -> String {
        format!("fg:idem:{user_id}:{key}")
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
        let keys = ProductKeys::new(p.product_id);
        let value: Value = self
            .pay
            .key(keys.slot(p.slot_id))
            .key(keys.payment(p.payment_id))
            .key(keys.charges())
            .key(keys.outbox())
            .arg(p.payment_id.to_string())
            .arg(p.user_id.to_string())
            .arg(p.slot_id.to_string())
            .arg(p.product_id.to_string())
            .arg(p.now_ms)
            .arg(p.method)
            .arg(p.amount)
            .arg(p.currency)
            .arg(p.idempotency_key)
            .arg(p.traceparent)
            .arg(Uuid::now_v7().to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let reply = Reply::read("pay.lua", value)?;
        Ok(match reply.tag() {
            "created" => Creation::Created,
            "existing" => Creation::Existing,
            "unknown" => Creation::Unknown,
            "forbidden" => Creation::Forbidden,
            "expired" => Creation::Expired,
            "completed" => Creation::Completed,
            "in_flight" => Creation::InFlight { payment_id: reply.uuid(0).ok() },
            _ => return Err(reply.unknown_outcome()),
        })
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
        let value: Value = self
            .settle
            .key(keys.product())
            .key(keys.holders())
            .key(keys.slot(slot_id))
            .key(keys.expiry())
            .key(keys.reminders())
            .key(keys.outbox())
            .key(keys.payment(payment_id))
            .key(keys.refunds())
            .key(keys.charges())
            .key(keys.settling())
            .arg(payment_id.to_string())
            .arg(if failure.is_some() { "failed" } else { "succeeded" })
            .arg(now_ms)
            .arg(Uuid::now_v7().to_string())
            .arg(Uuid::now_v7().to_string())
            .arg(ms(self.lifecycle.expired_ttl))
            .arg(failure.unwrap_or(""))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let reply = Reply::read("settle.lua", value)?;
        Ok(match reply.tag() {
            "completed" => Settlement::Completed,
            "failed" => Settlement::Failed,
            "refund_required" => Settlement::RefundRequired,
            "settled" => Settlement::AlreadySettled {
                status: reply.opt_text(0).and_then(|d| d.parse().ok()),
            },
            "unknown" => Settlement::Unknown,
            _ => return Err(reply.unknown_outcome()),
        })
    }

    /// Records a confirmed refund; `true` if it was awaited.
    pub async fn refunded(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
        now_ms: i64,
    ) -> RedisResult<bool> {
        let keys = ProductKeys::new(product_id);
        let recorded: i64 = self
            .refunded
            .key(keys.payment(payment_id))
            .key(keys.refunds())
            .key(keys.outbox())
            .arg(payment_id.to_string())
            .arg(now_ms)
            .arg(Uuid::now_v7().to_string())
            .arg(ms(self.lifecycle.expired_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(recorded == 1)
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
