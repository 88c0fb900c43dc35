//! `lua/remind.lua`: a slot's `slot-expiring-soon` event, once.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("remind");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
    pub slot_id: Uuid,
    pub now_ms: i64,
}

impl Args {
    /// `true` if the event was emitted now.
    pub async fn run(&self, conn: &Redis) -> RedisResult<bool> {
        let keys = ProductKeys::new(self.product_id);
        let emitted: i64 = SCRIPT
            .call()
            .key("reminders", keys.reminders())
            .key("slot", keys.slot(self.slot_id))
            .key("outbox", keys.outbox())
            .arg("productId", self.product_id.to_string())
            .arg("slotId", self.slot_id.to_string())
            .arg("eventId", Uuid::now_v7().to_string())
            .arg("nowMs", self.now_ms)
            .invoke(conn)
            .await?;
        Ok(emitted == 1)
    }
}
