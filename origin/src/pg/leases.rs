//! `grant_leases` and `redis_losses`: how many grants Redis may make for a product, and
//! every time Redis lost a product's state (see `crate::recovery`).

use sqlx::PgExecutor;
use uuid::Uuid;

/// Raises a product's lease to at least `target` (never lowers it, so several origins only
/// ever raise it); the lease as it now stands.
pub async fn raise(db: impl PgExecutor<'_>, product_id: Uuid, target: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO grant_leases (product_id, leased) VALUES ($1, $2) \
         ON CONFLICT (product_id) DO UPDATE \
         SET leased = GREATEST(grant_leases.leased, EXCLUDED.leased), updated_at = now() \
         RETURNING leased",
        product_id,
        target,
    )
    .fetch_one(db)
    .await
}

/// A product's lease (0 before its first grant).
pub async fn leased(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT coalesce((SELECT leased FROM grant_leases WHERE product_id = $1), 0) AS "leased!""#,
        product_id,
    )
    .fetch_one(db)
    .await
}

/// What earlier losses of a product's state account for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Losses {
    /// Grants they counted as possibly answered 201 and lost.
    pub unseen: i64,
    /// Units they withhold from sale, not released by an operator yet.
    pub withheld: i64,
}

pub async fn losses(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<Losses> {
    let row = sqlx::query!(
        r#"SELECT coalesce(sum(unseen_grants), 0)::bigint AS "unseen!",
           coalesce(sum(in_doubt) FILTER (WHERE released_at IS NULL), 0)::bigint AS "withheld!"
           FROM redis_losses WHERE product_id = $1"#,
        product_id,
    )
    .fetch_one(db)
    .await?;
    Ok(Losses { unseen: row.unseen, withheld: row.withheld })
}

/// Records one loss found by a rebuild.
pub async fn record_loss(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    restored_slots: i64,
    unseen_grants: i64,
    in_doubt: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO redis_losses (product_id, restored_slots, unseen_grants, in_doubt) \
         VALUES ($1, $2, $3, $4)",
        product_id,
        restored_slots,
        unseen_grants,
        in_doubt,
    )
    .execute(db)
    .await
    .map(drop)
}

/// Marks a product's withheld units released (the operator settled with their buyers).
pub async fn release(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE redis_losses SET released_at = now() \
         WHERE product_id = $1 AND released_at IS NULL AND in_doubt > 0",
        product_id,
    )
    .execute(db)
    .await
    .map(drop)
}
