//! `lua/rebuild.lua`: restores a product's sale state from what PostgreSQL holds.

use super::{LuaScript, ms};
use crate::store::inventory::Lifecycle;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("rebuild");

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

#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    pub product_id: Uuid,
    pub total: i64,
    pub starts_ms: i64,
    pub ends_ms: Option<i64>,
    pub counts: RebuiltCounts,
    pub now_ms: i64,
    pub lifecycle: Lifecycle,
    pub slots: &'a [LiveSlot],
    /// The payments in progress, as the JSON array `rebuild.lua` documents.
    pub payments_json: &'a str,
}

impl Args<'_> {
    /// How many live slots were restored; `None` if Redis already had the product.
    pub async fn run(&self, conn: &Redis) -> RedisResult<Option<i64>> {
        let keys = ProductKeys::new(self.product_id);
        let mut call = SCRIPT
            .call()
            .key("product", keys.product())
            .key("holders", keys.holders())
            .key("expiry", keys.expiry())
            .key("reminders", keys.reminders())
            .key("charges", keys.charges())
            .key("refunds", keys.refunds())
            .arg("total", self.total)
            .arg("startsAtMs", self.starts_ms)
            .arg("endsAtMs", self.ends_ms.map(|e| e.to_string()).unwrap_or_default())
            .arg("granted", self.counts.granted)
            .arg("nowMs", self.now_ms)
            .arg("remindBeforeMs", ms(self.lifecycle.remind_before))
            .arg("productId", self.product_id.to_string())
            .arg("payments", self.payments_json)
            .arg("leased", self.counts.leased)
            .arg("inDoubt", self.counts.in_doubt);
        for s in self.slots {
            call = call
                .rest(s.slot_id.to_string())
                .rest(s.user_id.to_string())
                .rest(s.status.as_str())
                .rest(s.expires_ms)
                .rest(s.arrival_us)
                .rest(s.acquired_ms)
                .rest(&s.traceparent);
        }
        let restored: i64 = call.invoke(conn).await?;
        Ok((restored >= 0).then_some(restored))
    }
}
