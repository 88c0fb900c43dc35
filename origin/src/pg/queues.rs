//! `product_queues`: each product's waiting-room settings (the line itself lives in Redis).

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// A product's waiting-room settings as PostgreSQL holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub product_id: Uuid,
    pub mode: String,
    pub line_order: String,
    pub admit_per_second: Option<i32>,
    pub auto_threshold: Option<i32>,
}

/// A queue that is not off, with what admission needs of its product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveQueue {
    pub product_id: Uuid,
    pub mode: String,
    pub line_order: String,
    pub admit_per_second: Option<i32>,
    pub auto_threshold: Option<i32>,
    pub stock: i32,
    pub sale_starts_at: OffsetDateTime,
}

pub async fn upsert(db: impl PgExecutor<'_>, row: &QueueRow) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO product_queues (product_id, mode, line_order, admit_per_second, \
         auto_threshold) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (product_id) DO UPDATE SET \
         mode = EXCLUDED.mode, line_order = EXCLUDED.line_order, \
         admit_per_second = EXCLUDED.admit_per_second, \
         auto_threshold = EXCLUDED.auto_threshold, updated_at = now()",
        row.product_id,
        row.mode,
        row.line_order,
        row.admit_per_second,
        row.auto_threshold,
    )
    .execute(db)
    .await
    .map(drop)
}

pub async fn find(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<Option<QueueRow>> {
    sqlx::query_as!(
        QueueRow,
        "SELECT product_id, mode, line_order, admit_per_second, auto_threshold \
         FROM product_queues WHERE product_id = $1",
        product_id,
    )
    .fetch_optional(db)
    .await
}

/// Every queue that is not off, of a live product whose sale has not ended at `now`.
pub async fn active(
    db: impl PgExecutor<'_>,
    now: OffsetDateTime,
) -> sqlx::Result<Vec<ActiveQueue>> {
    sqlx::query_as!(
        ActiveQueue,
        "SELECT q.product_id, q.mode, q.line_order, q.admit_per_second, q.auto_threshold, \
         p.stock, p.sale_starts_at FROM product_queues q JOIN products p USING (product_id) \
         WHERE q.mode <> 'off' AND p.deleted_at IS NULL \
         AND (p.sale_ends_at IS NULL OR p.sale_ends_at > $1)",
        now,
    )
    .fetch_all(db)
    .await
}
