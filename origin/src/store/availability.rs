//! The availability change log: which products' availability, as an edge caches it (on
//! sale, sold out, not yet on sale, ended), may have changed since a given time, so that an
//! edge's re-check costs what changed, not the catalogue (`GET /internal/availability?since=`).
//!
//! One sorted set per work partition, `fg:{wNN}:changes` ([`PartitionKeys::changes`]): member
//! a product id, score the origin's clock (ms) at its last change. A product appears once (a
//! new change moves its score), and entries older than [`KEEP_MS`] are trimmed on every
//! write, so a key holds at most its products changed in that time. It spans products, so it
//! cannot live inside the per-product scripts (one cluster slot each): the origin notes a
//! change right after the script that made it ([`crate::store::inventory::Inventory`] and
//! [`crate::store::payments::Payments`] are the only callers). A note is best effort: a
//! process killed between a script and its note loses that note, which is why an edge also
//! re-reads the whole catalogue now and then (`flashgate_core::shield::FULL_REFRESH_EVERY_US`)
//! — a lost note can delay a sale at the edge by that long, never oversell, since the origin
//! decides every acquisition it sees.

use crate::store::keys::{PARTITIONS, PartitionKeys};
use crate::store::redis::Redis;
use redis::RedisResult;
use uuid::Uuid;

/// How long a change is kept: longer than any edge goes between two re-checks (an edge
/// re-reads everything at least every minute).
pub const KEEP_MS: i64 = 60 * 60 * 1000;

/// How far before `since` a change is still reported: origins' clocks differ a little, and a
/// change is noted a moment after its script ran.
pub const SLACK_MS: i64 = 5_000;

/// Notes that `product_id`'s availability may have changed at `now_ms`. Failures are logged,
/// not returned: the change itself is made, and the edge's full re-read covers a lost note.
pub async fn note(conn: &Redis, product_id: Uuid, now_ms: i64) {
    let changes = PartitionKeys::of(product_id).changes();
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD").arg(&changes).arg(now_ms).arg(product_id.to_string()).ignore();
    pipe.cmd("ZREMRANGEBYSCORE").arg(&changes).arg("-inf").arg(now_ms - KEEP_MS).ignore();
    if let Err(e) = pipe.query_async::<()>(&mut conn.clone()).await {
        tracing::warn!(%product_id, error = %e, "an availability change was not noted");
    }
}

/// Products changed at or after `since_ms` (less [`SLACK_MS`]).
pub async fn changed_since(conn: &Redis, since_ms: i64) -> RedisResult<Vec<Uuid>> {
    let reads = (0..PARTITIONS)
        .map(|p| {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(PartitionKeys::new(p).changes())
                .arg(since_ms.saturating_sub(SLACK_MS))
                .arg("+inf")
                .arg("BYSCORE");
            cmd
        })
        .collect();
    let ids: Vec<Vec<String>> = conn.query_all(reads).await?;
    Ok(ids.iter().flatten().filter_map(|id| Uuid::try_parse(id).ok()).collect())
}
