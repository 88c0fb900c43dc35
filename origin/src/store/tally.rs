//! Refused acquisitions per product, for the operator console: counted in memory by each
//! origin and added to the product's counter in Redis (`fg:{p}:refusals`) once a second, so
//! a refusal is never a Redis write of its own (with the append-only file fsynced on every
//! write, one write per refusal would cost the sold-out path most of its speed).

use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::RedisResult;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// How long a product's refusal counter outlives its last refusal.
const TTL_SECS: i64 = 7 * 24 * 3600;

/// Refusals not yet added to Redis, per product.
#[derive(Debug, Default)]
pub struct RefusalTally {
    pending: Mutex<HashMap<Uuid, u64>>,
}

impl RefusalTally {
    pub fn note(&self, product_id: Uuid) {
        *self.pending.lock().expect("tally lock").entry(product_id).or_default() += 1;
    }

    /// Adds what was counted since the last flush to Redis, in one round trip (one per shard on a cluster); on failure the
    /// counts are kept for the next flush.
    pub async fn flush(&self, conn: &Redis) -> RedisResult<()> {
        let counts = std::mem::take(&mut *self.pending.lock().expect("tally lock"));
        if counts.is_empty() {
            return Ok(());
        }
        let mut writes = Vec::with_capacity(counts.len() * 2);
        for (product_id, n) in &counts {
            let key = ProductKeys::new(*product_id).refusals();
            let mut add = redis::cmd("INCRBY");
            add.arg(&key).arg(*n);
            let mut bound = redis::cmd("EXPIRE");
            bound.arg(&key).arg(TTL_SECS);
            writes.extend([add, bound]);
        }
        let flushed: RedisResult<()> = conn.query_all::<i64>(writes).await.map(drop);
        if flushed.is_err() {
            let mut pending = self.pending.lock().expect("tally lock");
            for (product_id, n) in counts {
                *pending.entry(product_id).or_default() += n;
            }
        }
        flushed
    }
}
