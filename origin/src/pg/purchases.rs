//! `purchases`: every payment, as the persister recorded it from the outbox.

use crate::status::PaymentStatus;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// A payment as PostgreSQL holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRow {
    pub payment_id: Uuid,
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub status: PaymentStatus,
    pub method: String,
    pub amount: i64,
    pub currency: String,
    pub idempotency_key: String,
    pub created_at: OffsetDateTime,
    pub settled_at: Option<OffsetDateTime>,
    pub failure_reason: Option<String>,
    pub trace_id: String,
}

pub async fn find(db: impl PgExecutor<'_>, payment_id: Uuid) -> sqlx::Result<Option<PurchaseRow>> {
    sqlx::query_as!(
        PurchaseRow,
        r#"SELECT payment_id, slot_id, product_id, user_id, status AS "status: PaymentStatus",
           method, amount, currency::text AS "currency!", idempotency_key, created_at, settled_at,
           failure_reason, trace_id FROM purchases WHERE payment_id = $1"#,
        payment_id,
    )
    .fetch_optional(db)
    .await
}

/// The product a payment belongs to.
pub async fn product_of(db: impl PgExecutor<'_>, payment_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("SELECT product_id FROM purchases WHERE payment_id = $1", payment_id)
        .fetch_optional(db)
        .await
}

/// A product's payments still in progress (PENDING or REFUND_REQUIRED): what a rebuild
/// restores, so their webhooks still apply and their refunds are still made.
pub async fn in_progress(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
) -> sqlx::Result<Vec<PurchaseRow>> {
    sqlx::query_as!(
        PurchaseRow,
        r#"SELECT payment_id, slot_id, product_id, user_id, status AS "status: PaymentStatus",
           method, amount, currency::text AS "currency!", idempotency_key, created_at, settled_at,
           failure_reason, trace_id FROM purchases
           WHERE product_id = $1 AND status IN ('PENDING', 'REFUND_REQUIRED')"#,
        product_id,
    )
    .fetch_all(db)
    .await
}

/// A created payment, as the persister first records it (PENDING).
#[derive(Debug, Clone, Copy)]
pub struct NewPurchase<'a> {
    pub payment_id: Uuid,
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    pub method: &'a str,
    pub idempotency_key: &'a str,
    pub trace_id: &'a str,
    pub created_at: OffsetDateTime,
}

/// Records a created payment once (a replay changes nothing).
pub async fn insert(db: impl PgExecutor<'_>, p: NewPurchase<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO purchases (payment_id, slot_id, product_id, user_id, amount, currency, \
         method, status, idempotency_key, trace_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8, $9, $10) \
         ON CONFLICT (payment_id) DO NOTHING",
        p.payment_id,
        p.slot_id,
        p.product_id,
        p.user_id,
        p.amount,
        p.currency,
        p.method,
        p.idempotency_key,
        p.trace_id,
        p.created_at,
    )
    .execute(db)
    .await
    .map(drop)
}

/// `from` → `to`, keeping the first settlement time and failure reason; whether it changed.
pub async fn transition(
    db: impl PgExecutor<'_>,
    payment_id: Uuid,
    from: &str,
    to: &str,
    reason: Option<&str>,
    at: OffsetDateTime,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE purchases SET status = $3, failure_reason = coalesce($4, failure_reason), \
         settled_at = coalesce(settled_at, $5), updated_at = now() \
         WHERE payment_id = $1 AND status = $2",
        payment_id,
        from,
        to,
        reason,
        at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How many payments of `product_id` PostgreSQL holds in each status (the console's counts).
pub async fn counts_by_status(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT status AS "status!", count(*) AS "count!" FROM purchases
           WHERE product_id = $1 GROUP BY status"#,
        product_id,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}
