//! `lua/settle.lua`: applies the processor's outcome to a payment, once.

use super::{LuaScript, ms};
use crate::status::PaymentStatus;
use crate::store::inventory::Lifecycle;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("settle");

#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    pub product_id: Uuid,
    pub payment_id: Uuid,
    /// The payment's slot (declared as a key, so read from the payment first).
    pub slot_id: Uuid,
    /// `None` for success, else the processor's reason.
    pub failure: Option<&'a str>,
    pub now_ms: i64,
    pub lifecycle: Lifecycle,
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

impl Args<'_> {
    pub async fn run(&self, conn: &Redis) -> RedisResult<Settlement> {
        let keys = ProductKeys::new(self.product_id);
        let reply = SCRIPT
            .call()
            .slot_keys(&keys, self.slot_id)
            .key("payment", keys.payment(self.payment_id))
            .key("refunds", keys.refunds())
            .key("charges", keys.charges())
            .key("settling", keys.settling())
            .arg("paymentId", self.payment_id.to_string())
            .arg("outcome", if self.failure.is_some() { "failed" } else { "succeeded" })
            .arg("nowMs", self.now_ms)
            .arg("eventId", Uuid::now_v7().to_string())
            .arg("expiryEventId", Uuid::now_v7().to_string())
            .arg("settledTtlMs", ms(self.lifecycle.expired_ttl))
            .arg("reason", self.failure.unwrap_or(""))
            .reply(conn)
            .await?;
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
}
