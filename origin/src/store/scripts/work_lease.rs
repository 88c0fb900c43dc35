//! `lua/work_lease.lua`: an origin's claim on a work partition, renewed, taken or given back.

use super::LuaScript;
use crate::store::keys::PartitionKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use std::time::Duration;

static SCRIPT: LazyLock<LuaScript> = lua_script!("work_lease");

#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    pub partition: u16,
    pub me: &'a str,
    pub ttl: Duration,
    /// Keep or take it (`true`), or give it back.
    pub want: bool,
}

impl Args<'_> {
    /// Whether this origin owns the partition after the call.
    pub async fn run(&self, conn: &Redis) -> RedisResult<bool> {
        let owned: i64 = SCRIPT
            .call()
            .key("owner", PartitionKeys::new(self.partition).owner())
            .arg("me", self.me)
            .arg("ttlMs", super::ms(self.ttl).max(1))
            .arg("want", i64::from(self.want))
            .invoke(conn)
            .await?;
        Ok(owned == 1)
    }
}
