//! `lua/queue.lua`: a buyer's place in a product's waiting room, joining when asked.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("queue");

/// A look at (or a join of) a product's line.
#[derive(Debug, Clone)]
pub struct Args {
    pub product_id: Uuid,
    pub user_id: Uuid,
    /// The buyer's pseudonym in the product's public log, kept with a join for its
    /// admission's entry (`None`: the origin keeps no log).
    pub pseudonym: Option<String>,
    /// Where the buyer stands if they join now ([`flashgate_core::queue::score`]).
    pub score: u64,
    pub now_ms: i64,
    pub join: bool,
    pub max_length: u64,
    pub ttl_ms: i64,
}

/// Where a buyer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Unknown,
    Ended { ends_ms: i64 },
    Holding { slot_id: Uuid },
    Admitted { pass_expires_ms: i64, waiting: u64 },
    Waiting { position: u64, waiting: u64, joined: bool },
    SoldOut,
    Absent { waiting: u64 },
    Full { waiting: u64 },
}

impl Args {
    pub async fn run(&self, conn: &Redis) -> RedisResult<Place> {
        let keys = ProductKeys::new(self.product_id);
        let reply = SCRIPT
            .call()
            .queue_keys(&keys)
            .key("buyers", keys.queue_buyers())
            .arg("userId", self.user_id.to_string())
            .arg("score", self.score)
            .arg("nowMs", self.now_ms)
            .arg("join", i32::from(self.join))
            .arg("maxLength", self.max_length)
            .arg("ttlMs", self.ttl_ms)
            .arg("pseudonym", self.pseudonym.as_deref().unwrap_or(""))
            .reply(conn)
            .await?;
        let count = |i| reply.int(i).map(|n| n.max(0) as u64);
        Ok(match reply.tag() {
            "unknown" => Place::Unknown,
            "ended" => Place::Ended { ends_ms: reply.int(0)? },
            "holding" => Place::Holding { slot_id: reply.uuid(0)? },
            "admitted" => Place::Admitted { pass_expires_ms: reply.int(0)?, waiting: count(1)? },
            "waiting" => Place::Waiting {
                position: count(0)?,
                waiting: count(1)?,
                joined: reply.int(2)? == 1,
            },
            "sold_out" => Place::SoldOut,
            "absent" => Place::Absent { waiting: count(0)? },
            "full" => Place::Full { waiting: count(0)? },
            _ => return Err(reply.unknown_outcome()),
        })
    }
}
