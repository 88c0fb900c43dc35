//! `lua/admit.lua`: one admission step of a product's waiting room.

use super::LuaScript;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("admit");

#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub product_id: Uuid,
    pub now_ms: i64,
    pub rate: u32,
    /// The highest score admitted now: the clock less the fairness window, in µs.
    pub cutoff: u64,
    pub pass_ttl_ms: u64,
    /// `Some(threshold)` in auto mode.
    pub auto_threshold: Option<u64>,
    /// Acquisitions seen since the last step (auto mode's demand).
    pub demand: u64,
    pub ttl_ms: i64,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Auto mode, and demand has not turned the room on.
    Idle {
        waiting: u64,
    },
    Unknown,
    NotOpen {
        waiting: u64,
    },
    Ended,
    SoldOut {
        waiting: u64,
    },
    Admitted {
        admitted: u64,
        waiting: u64,
        passes_out: u64,
    },
}

impl Args {
    pub async fn run(&self, conn: &Redis) -> RedisResult<Step> {
        let keys = ProductKeys::new(self.product_id);
        let reply = SCRIPT
            .call()
            .queue_keys(&keys)
            .key("log", keys.queue_log())
            .key("buyers", keys.queue_buyers())
            .arg("nowMs", self.now_ms)
            .arg("rate", self.rate)
            .arg("cutoff", self.cutoff)
            .arg("passTtlMs", self.pass_ttl_ms)
            .arg("auto", i32::from(self.auto_threshold.is_some()))
            .arg("demand", self.demand)
            .arg("threshold", self.auto_threshold.unwrap_or(0))
            .arg("ttlMs", self.ttl_ms)
            .reply(conn)
            .await?;
        let count = |i| reply.int(i).map(|n| n.max(0) as u64);
        Ok(match reply.tag() {
            "idle" => Step::Idle { waiting: count(0)? },
            "unknown" => Step::Unknown,
            "not_open" => Step::NotOpen { waiting: count(0)? },
            "ended" => Step::Ended,
            "sold_out" => Step::SoldOut { waiting: count(0)? },
            "admitted" => {
                Step::Admitted { admitted: count(0)?, waiting: count(1)?, passes_out: count(2)? }
            }
            _ => return Err(reply.unknown_outcome()),
        })
    }
}
