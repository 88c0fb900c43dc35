//! `lua/pay.lua`: creates a payment on a slot, at most once.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("pay");

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

impl NewPayment<'_> {
    pub async fn run(&self, conn: &Redis) -> RedisResult<Creation> {
        let keys = ProductKeys::new(self.product_id);
        let reply = SCRIPT
            .call()
            .key("slot", keys.slot(self.slot_id))
            .key("payment", keys.payment(self.payment_id))
            .key("charges", keys.charges())
            .key("outbox", keys.outbox())
            .arg("paymentId", self.payment_id.to_string())
            .arg("userId", self.user_id.to_string())
            .arg("slotId", self.slot_id.to_string())
            .arg("productId", self.product_id.to_string())
            .arg("nowMs", self.now_ms)
            .arg("method", self.method)
            .arg("amount", self.amount)
            .arg("currency", self.currency)
            .arg("idempotencyKey", self.idempotency_key)
            .arg("traceparent", self.traceparent)
            .arg("eventId", Uuid::now_v7().to_string())
            .reply(conn)
            .await?;
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
}
