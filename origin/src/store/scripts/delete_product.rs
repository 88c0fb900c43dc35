//! `lua/delete_product.lua`: removes a product's sale state unless slots are ACTIVE.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("delete_product");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
}

/// What `delete_product.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductDeletion {
    Deleted,
    Active { slots: i64 },
    Unknown,
}

impl Args {
    pub async fn run(&self, conn: &Redis) -> RedisResult<ProductDeletion> {
        let keys = ProductKeys::new(self.product_id);
        let reply = SCRIPT
            .call()
            .key("product", keys.product())
            .key("holders", keys.holders())
            .key("expiry", keys.expiry())
            .key("reminders", keys.reminders())
            .reply(conn)
            .await?;
        Ok(match reply.tag() {
            "deleted" => ProductDeletion::Deleted,
            "active" => ProductDeletion::Active { slots: reply.int(0)? },
            "unknown" => ProductDeletion::Unknown,
            _ => return Err(reply.unknown_outcome()),
        })
    }
}
