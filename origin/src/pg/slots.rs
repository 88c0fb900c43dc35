//! `purchase_slots`: every grant, as the persister recorded it from the outbox.

use crate::status::SlotStatus;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// A slot as PostgreSQL holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub status: SlotStatus,
    pub arrival_at: OffsetDateTime,
    pub acquired_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub trace_id: String,
}

pub async fn find(db: impl PgExecutor<'_>, slot_id: Uuid) -> sqlx::Result<Option<SlotRow>> {
    sqlx::query_as!(
        SlotRow,
        r#"SELECT slot_id, product_id, user_id, status AS "status: SlotStatus", arrival_at,
           acquired_at, expires_at, trace_id FROM purchase_slots WHERE slot_id = $1"#,
        slot_id,
    )
    .fetch_optional(db)
    .await
}

/// The product a slot belongs to.
pub async fn product_of(db: impl PgExecutor<'_>, slot_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("SELECT product_id FROM purchase_slots WHERE slot_id = $1", slot_id)
        .fetch_optional(db)
        .await
}

/// A page of a buyer's slots, newest first, and how many match in all. `status` filters as
/// the buyer sees it at `now` (an ACTIVE slot past its deadline is EXPIRED whether or not
/// it was swept); `None` lists every slot.
pub async fn of_buyer(
    db: impl PgExecutor<'_> + Copy,
    user_id: Uuid,
    status: Option<SlotStatus>,
    now: OffsetDateTime,
    (limit, offset): (i64, i64),
) -> sqlx::Result<(Vec<SlotRow>, i64)> {
    let status = status.map(SlotStatus::as_str);
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM purchase_slots WHERE user_id = $1 AND (
             $2::text IS NULL
             OR ($2 = 'ACTIVE' AND status = 'ACTIVE' AND expires_at > $3)
             OR ($2 = 'COMPLETED' AND status = 'COMPLETED')
             OR ($2 = 'EXPIRED' AND (status = 'EXPIRED' OR (status = 'ACTIVE' AND expires_at <= $3))))"#,
        user_id,
        status,
        now,
    )
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as!(
        SlotRow,
        r#"SELECT slot_id, product_id, user_id, status AS "status: SlotStatus", arrival_at,
           acquired_at, expires_at, trace_id FROM purchase_slots WHERE user_id = $1 AND (
             $2::text IS NULL
             OR ($2 = 'ACTIVE' AND status = 'ACTIVE' AND expires_at > $3)
             OR ($2 = 'COMPLETED' AND status = 'COMPLETED')
             OR ($2 = 'EXPIRED' AND (status = 'EXPIRED' OR (status = 'ACTIVE' AND expires_at <= $3))))
           ORDER BY acquired_at DESC, slot_id LIMIT $4 OFFSET $5"#,
        user_id,
        status,
        now,
        limit,
        offset,
    )
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}

/// A product's ACTIVE and COMPLETED slots: what a rebuild restores.
pub async fn live(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<Vec<SlotRow>> {
    sqlx::query_as!(
        SlotRow,
        r#"SELECT slot_id, product_id, user_id, status AS "status: SlotStatus", arrival_at,
           acquired_at, expires_at, trace_id FROM purchase_slots
           WHERE product_id = $1 AND status IN ('ACTIVE', 'COMPLETED')"#,
        product_id,
    )
    .fetch_all(db)
    .await
}

/// How many slots a product ever granted (as far as PostgreSQL heard).
pub async fn granted(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM purchase_slots WHERE product_id = $1"#,
        product_id,
    )
    .fetch_one(db)
    .await
}

/// The buyer's other ACTIVE or COMPLETED slot of the product, if any: its id and grant time.
pub async fn other_live(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    user_id: Uuid,
    slot_id: Uuid,
) -> sqlx::Result<Option<(Uuid, OffsetDateTime)>> {
    let row = sqlx::query!(
        "SELECT slot_id, acquired_at FROM purchase_slots WHERE product_id = $1 \
         AND user_id = $2 AND status IN ('ACTIVE', 'COMPLETED') AND slot_id <> $3",
        product_id,
        user_id,
        slot_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.slot_id, r.acquired_at)))
}

/// Of the buyers `(products[i], users[i])`, those with an ACTIVE or COMPLETED slot of the
/// product: `(product, user, slot)` (one statement for a whole batch).
pub async fn live_of(
    db: impl PgExecutor<'_>,
    products: &[Uuid],
    users: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, Uuid, Uuid)>> {
    let rows = sqlx::query!(
        "SELECT s.product_id, s.user_id, s.slot_id FROM purchase_slots s \
         JOIN UNNEST($1::uuid[], $2::uuid[]) AS b(p, u) ON s.product_id = b.p AND s.user_id = b.u \
         WHERE s.status IN ('ACTIVE', 'COMPLETED')",
        products,
        users,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.product_id, r.user_id, r.slot_id)).collect())
}

pub async fn status(db: impl PgExecutor<'_>, slot_id: Uuid) -> sqlx::Result<Option<SlotStatus>> {
    sqlx::query_scalar!(
        r#"SELECT status AS "status: SlotStatus" FROM purchase_slots WHERE slot_id = $1"#,
        slot_id,
    )
    .fetch_optional(db)
    .await
}

pub async fn exists(db: impl PgExecutor<'_>, slot_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM purchase_slots WHERE slot_id = $1) AS "exists!""#,
        slot_id,
    )
    .fetch_one(db)
    .await
}

/// A granted slot, as the persister first records it.
#[derive(Debug, Clone, Copy)]
pub struct NewSlot<'a> {
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub arrival_at: OffsetDateTime,
    pub acquired_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When it ended, if its expiry is known already (then it is recorded EXPIRED).
    pub expired_at: Option<OffsetDateTime>,
    pub trace_id: &'a str,
}

/// Records a grant once (a replay changes nothing).
pub async fn insert(db: impl PgExecutor<'_>, s: NewSlot<'_>) -> sqlx::Result<()> {
    let status = if s.expired_at.is_some() { SlotStatus::Expired } else { SlotStatus::Active };
    sqlx::query!(
        "INSERT INTO purchase_slots (slot_id, product_id, user_id, status, arrival_at, \
         acquired_at, expires_at, expired_at, trace_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (slot_id) DO NOTHING",
        s.slot_id,
        s.product_id,
        s.user_id,
        status.as_str(),
        s.arrival_at,
        s.acquired_at,
        s.expires_at,
        s.expired_at,
        s.trace_id,
    )
    .execute(db)
    .await
    .map(drop)
}

/// Records many ACTIVE grants in one statement, each once (a replay changes nothing).
pub async fn insert_active(db: impl PgExecutor<'_>, slots: &[NewSlot<'_>]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = slots.iter().map(|s| s.slot_id).collect();
    let products: Vec<Uuid> = slots.iter().map(|s| s.product_id).collect();
    let users: Vec<Uuid> = slots.iter().map(|s| s.user_id).collect();
    let arrivals: Vec<OffsetDateTime> = slots.iter().map(|s| s.arrival_at).collect();
    let acquired: Vec<OffsetDateTime> = slots.iter().map(|s| s.acquired_at).collect();
    let expires: Vec<OffsetDateTime> = slots.iter().map(|s| s.expires_at).collect();
    let traces: Vec<&str> = slots.iter().map(|s| s.trace_id).collect();
    sqlx::query!(
        "INSERT INTO purchase_slots (slot_id, product_id, user_id, status, arrival_at, \
         acquired_at, expires_at, trace_id) \
         SELECT s, p, u, 'ACTIVE', ar, ac, ex, tr FROM UNNEST($1::uuid[], $2::uuid[], \
         $3::uuid[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::text[]) \
         AS b(s, p, u, ar, ac, ex, tr) ON CONFLICT (slot_id) DO NOTHING",
        &ids,
        &products,
        &users,
        &arrivals,
        &acquired,
        &expires,
        &traces as &[&str],
    )
    .execute(db)
    .await
    .map(drop)
}

/// ACTIVE → EXPIRED.
pub async fn expire(
    db: impl PgExecutor<'_>,
    slot_id: Uuid,
    at: OffsetDateTime,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE purchase_slots SET status = 'EXPIRED', expired_at = $2, updated_at = now() \
         WHERE slot_id = $1",
        slot_id,
        at,
    )
    .execute(db)
    .await
    .map(drop)
}

/// ACTIVE → COMPLETED, only while its payment is `payment_status`; whether it changed.
pub async fn complete(
    db: impl PgExecutor<'_>,
    slot_id: Uuid,
    at: OffsetDateTime,
    payment_id: Uuid,
    payment_status: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE purchase_slots SET status = 'COMPLETED', completed_at = $2, updated_at = now() \
         WHERE slot_id = $1 AND status = 'ACTIVE' \
         AND EXISTS (SELECT 1 FROM purchases WHERE payment_id = $3 AND status = $4)",
        slot_id,
        at,
        payment_id,
        payment_status,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How many slots of `product_id` PostgreSQL holds in each status (the console's counts).
pub async fn counts_by_status(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT status AS "status!", count(*) AS "count!" FROM purchase_slots
           WHERE product_id = $1 GROUP BY status"#,
        product_id,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}
