//! `lua/lease.lua`: raises a product's grant lease to a count PostgreSQL already holds.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("lease");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
    /// Already committed to `grant_leases`.
    pub leased: i64,
}

impl Args {
    /// The lease after the call; `None` if Redis does not know the product.
    pub async fn run(&self, conn: &Redis) -> RedisResult<Option<i64>> {
        let now: i64 = SCRIPT
            .call()
            .key("product", ProductKeys::new(self.product_id).product())
            .arg("leased", self.leased)
            .invoke(conn)
            .await?;
        Ok((now >= 0).then_some(now))
    }
}
