//! `lua/release_in_doubt.lua`: the units a rebuild withheld go back on sale.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("release_in_doubt");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
}

impl Args {
    /// How many units were released; `None` if Redis does not know the product.
    pub async fn run(&self, conn: &Redis) -> RedisResult<Option<i64>> {
        let released: i64 = SCRIPT
            .call()
            .key("product", ProductKeys::new(self.product_id).product())
            .invoke(conn)
            .await?;
        Ok((released >= 0).then_some(released))
    }
}
