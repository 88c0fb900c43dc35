//! `lua/expire.lua`: one due slot expires and gives its unit back, once.

use super::{LuaScript, ms};
use crate::store::inventory::Lifecycle;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("expire");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
    pub slot_id: Uuid,
    pub now_ms: i64,
    pub lifecycle: Lifecycle,
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

impl Args {
    pub async fn run(&self, conn: &Redis) -> RedisResult<Expiry> {
        let keys = ProductKeys::new(self.product_id);
        let reply = SCRIPT
            .call()
            .slot_keys(&keys, self.slot_id)
            .key("settling", keys.settling())
            .arg("productId", self.product_id.to_string())
            .arg("slotId", self.slot_id.to_string())
            .arg("eventId", Uuid::now_v7().to_string())
            .arg("nowMs", self.now_ms)
            .arg("expiredTtlMs", ms(self.lifecycle.expired_ttl))
            .arg("settleGraceMs", ms(self.lifecycle.settle_grace))
            .reply(conn)
            .await?;
        Ok(match reply.tag() {
            "expired" => Expiry::Expired,
            "not_due" => Expiry::NotDue,
            "paying" => Expiry::Paying,
            "skipped" => Expiry::Skipped,
            _ => return Err(reply.unknown_outcome()),
        })
    }
}
