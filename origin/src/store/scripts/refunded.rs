//! `lua/refunded.lua`: records that the processor refunded a REFUND_REQUIRED payment, once.

use super::{LuaScript, ms};
use crate::store::inventory::Lifecycle;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("refunded");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
    pub payment_id: Uuid,
    pub now_ms: i64,
    pub lifecycle: Lifecycle,
}

impl Args {
    /// `true` if recorded now (`false`: it was not awaiting a refund).
    pub async fn run(&self, conn: &Redis) -> RedisResult<bool> {
        let keys = ProductKeys::new(self.product_id);
        let recorded: i64 = SCRIPT
            .call()
            .key("payment", keys.payment(self.payment_id))
            .key("refunds", keys.refunds())
            .key("outbox", keys.outbox())
            .arg("paymentId", self.payment_id.to_string())
            .arg("nowMs", self.now_ms)
            .arg("eventId", Uuid::now_v7().to_string())
            .arg("settledTtlMs", ms(self.lifecycle.expired_ttl))
            .invoke(conn)
            .await?;
        Ok(recorded == 1)
    }
}
