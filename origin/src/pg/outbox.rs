//! The persister's own tables: `slot_audit_log` (every applied event, once: its id is what
//! makes it applied), `persister_parked` (events waiting for another to apply first) and
//! `dead_letters` (events that can never apply). Payloads are the events as JSON; this
//! module does not look inside them.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgExecutor;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

/// Whether the event was applied before.
pub async fn applied(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM slot_audit_log WHERE event_id = $1) AS "seen!""#,
        event_id,
    )
    .fetch_one(db)
    .await
}

/// Which of `event_ids` were applied before (one statement for a whole batch).
pub async fn applied_of(db: impl PgExecutor<'_>, event_ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!("SELECT event_id FROM slot_audit_log WHERE event_id = ANY($1)", event_ids,)
        .fetch_all(db)
        .await
}

/// One applied event, as the audit log keeps it.
#[derive(Debug, Clone, Copy)]
pub struct AuditEntry<'a> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub payment_id: Option<Uuid>,
    pub from_status: Option<&'a str>,
    pub to_status: Option<&'a str>,
    pub trace_id: &'a str,
    pub occurred_at: OffsetDateTime,
}

pub async fn log<T: Serialize + Sync>(
    db: impl PgExecutor<'_>,
    e: AuditEntry<'_>,
    payload: &T,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO slot_audit_log (event_id, event_type, slot_id, product_id, from_status, \
         to_status, trace_id, occurred_at, payload, payment_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        e.event_id,
        e.event_type,
        e.slot_id,
        e.product_id,
        e.from_status,
        e.to_status,
        e.trace_id,
        e.occurred_at,
        Json(payload) as _,
        e.payment_id,
    )
    .execute(db)
    .await
    .map(drop)
}

/// Records many applied events in one statement; `payloads[i]` is `entries[i]`'s event as
/// JSON.
pub async fn log_many(
    db: impl PgExecutor<'_>,
    entries: &[AuditEntry<'_>],
    payloads: &[String],
) -> sqlx::Result<()> {
    let from: Vec<Option<&str>> = entries.iter().map(|e| e.from_status).collect();
    let to: Vec<Option<&str>> = entries.iter().map(|e| e.to_status).collect();
    let ids: Vec<Uuid> = entries.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = entries.iter().map(|e| e.event_type).collect();
    let slots: Vec<Uuid> = entries.iter().map(|e| e.slot_id).collect();
    let products: Vec<Uuid> = entries.iter().map(|e| e.product_id).collect();
    let payments: Vec<Option<Uuid>> = entries.iter().map(|e| e.payment_id).collect();
    let traces: Vec<&str> = entries.iter().map(|e| e.trace_id).collect();
    let occurred: Vec<OffsetDateTime> = entries.iter().map(|e| e.occurred_at).collect();
    sqlx::query!(
        "INSERT INTO slot_audit_log (event_id, event_type, slot_id, product_id, from_status, \
         to_status, trace_id, occurred_at, payload, payment_id) \
         SELECT e, t, s, p, f, o, tr, at, pl::jsonb, pay FROM UNNEST($1::uuid[], $2::text[], \
         $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], \
         $9::text[], $10::uuid[]) AS b(e, t, s, p, f, o, tr, at, pl, pay)",
        &ids,
        &types as &[&str],
        &slots,
        &products,
        &from as &[Option<&str>],
        &to as &[Option<&str>],
        &traces as &[&str],
        &occurred,
        payloads,
        &payments as &[Option<Uuid>],
    )
    .execute(db)
    .await
    .map(drop)
}

/// Parks an event until the slot `waits_for` changes (once: a replay changes nothing).
pub async fn park<T: Serialize + Sync>(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    waits_for: Uuid,
    payload: &T,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO persister_parked (event_id, waits_for, payload) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id) DO NOTHING",
        event_id,
        waits_for,
        Json(payload) as _,
    )
    .execute(db)
    .await
    .map(drop)
}

/// Takes every event parked for any of `slots`.
pub async fn unpark_many<T: DeserializeOwned + Send + Unpin + 'static>(
    db: impl PgExecutor<'_>,
    slots: &[Uuid],
) -> sqlx::Result<Vec<T>> {
    let rows = sqlx::query_scalar!(
        r#"DELETE FROM persister_parked WHERE waits_for = ANY($1) RETURNING payload AS "payload: Json<T>""#,
        slots,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|p| p.0).collect())
}

/// Takes the event of type `event_type` parked for `slot`, if there is one.
pub async fn take_parked<T: DeserializeOwned + Send + Unpin + 'static>(
    db: impl PgExecutor<'_>,
    slot: Uuid,
    event_type: &str,
) -> sqlx::Result<Option<T>> {
    let row = sqlx::query_scalar!(
        r#"DELETE FROM persister_parked WHERE event_id = (SELECT event_id FROM persister_parked
           WHERE waits_for = $1 AND payload->>'type' = $2 LIMIT 1)
           RETURNING payload AS "payload: Json<T>""#,
        slot,
        event_type,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|p| p.0))
}

/// Records an event that can never apply (or a payload that is not an event at all).
pub async fn dead_letter(
    db: impl PgExecutor<'_>,
    event_id: Option<Uuid>,
    product_id: Option<Uuid>,
    source: &str,
    payload: &str,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO dead_letters (event_id, product_id, source, payload, reason) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        event_id,
        product_id,
        source,
        payload,
        reason,
    )
    .execute(db)
    .await
    .map(drop)
}

/// Filters of an audit-trail read; every one optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub product_id: Option<Uuid>,
    pub buyer_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// Entries after this `(occurred_at, event_id)` only (the previous page's last).
    pub after: Option<(OffsetDateTime, Uuid)>,
}

/// One audit-trail entry, with the buyer of its slot (when PostgreSQL has the slot).
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub event_id: Uuid,
    pub event_type: String,
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub buyer_id: Option<Uuid>,
    pub payment_id: Option<Uuid>,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub trace_id: String,
    pub occurred_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
}

/// Up to `limit` entries matching `f`, oldest first.
pub async fn audit_trail(
    db: impl PgExecutor<'_>,
    f: &AuditFilter,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    let (after_at, after_id) = f.after.unzip();
    sqlx::query_as!(
        AuditRow,
        r#"SELECT a.event_id, a.event_type, a.slot_id, a.product_id, s.user_id AS "buyer_id?",
                  a.payment_id, a.from_status, a.to_status, a.trace_id, a.occurred_at,
                  a.recorded_at
           FROM slot_audit_log a LEFT JOIN purchase_slots s ON s.slot_id = a.slot_id
           WHERE ($1::uuid IS NULL OR a.product_id = $1)
             AND ($2::uuid IS NULL OR s.user_id = $2)
             AND ($3::text IS NULL OR a.event_type = $3)
             AND ($4::timestamptz IS NULL OR a.occurred_at >= $4)
             AND ($5::timestamptz IS NULL OR a.occurred_at < $5)
             AND ($6::timestamptz IS NULL OR (a.occurred_at, a.event_id) > ($6, $7::uuid))
           ORDER BY a.occurred_at, a.event_id
           LIMIT $8"#,
        f.product_id,
        f.buyer_id,
        f.event_type,
        f.from,
        f.to,
        after_at,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await
}
