//! `lua/load_product.lua`: a product's sale state, unless Redis has it already.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("load_product");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
    pub total: i64,
    pub starts_ms: i64,
    /// `None`: open-ended.
    pub ends_ms: Option<i64>,
}

impl Args {
    /// `true` if loaded now.
    pub async fn run(&self, conn: &Redis) -> RedisResult<bool> {
        let loaded: i64 = SCRIPT
            .call()
            .key("product", ProductKeys::new(self.product_id).product())
            .arg("total", self.total)
            .arg("startsAtMs", self.starts_ms)
            .arg("endsAtMs", self.ends_ms.map(|e| e.to_string()).unwrap_or_default())
            .invoke(conn)
            .await?;
        Ok(loaded == 1)
    }
}
