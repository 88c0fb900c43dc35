//! `lua/update_product.lua`: an operator's change to stock and sale window.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("update_product");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
    /// Units added to the stock (never negative).
    pub growth: i64,
    /// A new sale start, or `None` to leave it.
    pub starts_ms: Option<i64>,
    /// A new sale end (`Some(None)`: open-ended), or `None` to leave it.
    pub ends_ms: Option<Option<i64>>,
    /// The change's time in the product's public log.
    pub now_ms: i64,
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

impl Args {
    pub async fn run(&self, conn: &Redis) -> RedisResult<ProductUpdate> {
        let reply = SCRIPT
            .call()
            .key("product", ProductKeys::new(self.product_id).product())
            .arg("growth", self.growth)
            .arg("startsAtMs", self.starts_ms.map(|v| v.to_string()).unwrap_or_default())
            .arg(
                "endsAtMs",
                match self.ends_ms {
                    None => String::new(),
                    Some(None) => "none".to_owned(),
                    Some(Some(v)) => v.to_string(),
                },
            )
            .arg("nowMs", self.now_ms)
            .reply(conn)
            .await?;
        Ok(match reply.tag() {
            "ok" => ProductUpdate::Updated { remaining: reply.int(0)?, total: reply.int(1)? },
            "starts_locked" => ProductUpdate::StartsLocked { granted: reply.int(0)? },
            "unknown" => ProductUpdate::Unknown,
            _ => return Err(reply.unknown_outcome()),
        })
    }
}
