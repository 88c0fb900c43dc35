//! Recovery: when Redis has lost a product's sale state (a restart without persistence, a
//! flush), it is rebuilt from PostgreSQL before the product is sold again:
//! `remaining = total − ACTIVE − COMPLETED`, with holders, slot records and schedules, and
//! the payments still in progress (PENDING ones, so their webhooks still apply;
//! REFUND_REQUIRED ones, so they are still refunded).
//!
//! Until then the product answers 503 with `Retry-After`. The first request that finds the
//! state missing starts the rebuild in the background (once per product at a time);
//! operators trigger the same rebuild with `POST /admin/products/{id}/rebuild` or, for
//! every product, `POST /admin/rebuild`.
//!
//! What PostgreSQL cannot give back: grants whose outbox entries had not been relayed when
//! Redis lost them. The origin runs only on a Redis that fsyncs every write before it
//! answers (`crate::durability`), so this takes a lost AOF; each rebuild is recorded in
//! `redis_losses` and reported by `flashgate check` as a possible loss of grants.

use crate::admin_auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::inventory::{LiveSlot, RebuiltCounts};
use crate::products::{self, parse_id};
use crate::state::AppState;
use crate::status::{PaymentStatus, SlotStatus};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/admin/products/{id}/rebuild", post(rebuild_one))
        .route("/admin/rebuild", post(rebuild_all))
        .route("/admin/products/{id}/in-doubt/release", post(release_in_doubt))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Rebuild {
    Rebuilt {
        #[serde(rename = "restoredSlots")]
        restored_slots: i64,
        /// Grants the lease allowed that PostgreSQL never heard of: at most this many grants
        /// answered 201 were lost.
        #[serde(rename = "unseenGrants")]
        unseen_grants: i64,
        /// Units withheld from sale for them.
        #[serde(rename = "inDoubt")]
        in_doubt: i64,
    },
    AlreadyLive,
    NotFound,
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A trace context continuing a stored trace id (the original span is not kept).
fn restored_traceparent(trace_id: &str) -> String {
    format!("00-{trace_id:0>32}-{}-01", &Uuid::new_v4().simple().to_string()[..16])
}

/// Rebuilds one product's sale state from PostgreSQL, unless Redis already has it.
pub async fn rebuild(state: &AppState, product_id: Uuid) -> ApiResult<Rebuild> {
    let Some(product) = products::find(state, product_id).await? else {
        return Ok(Rebuild::NotFound);
    };
    let rows: Vec<(
        Uuid,
        Uuid,
        SlotStatus,
        OffsetDateTime,
        OffsetDateTime,
        OffsetDateTime,
        String,
    )> = sqlx::query_as(
        "SELECT slot_id, user_id, status, expires_at, arrival_at, acquired_at, trace_id \
             FROM purchase_slots WHERE product_id = $1 AND status IN ('ACTIVE', 'COMPLETED')",
    )
    .bind(product_id)
    .fetch_all(&state.db)
    .await?;
    let granted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM purchase_slots WHERE product_id = $1")
            .bind(product_id)
            .fetch_one(&state.db)
            .await?;
    let leased: i64 = sqlx::query_scalar(
        "SELECT coalesce((SELECT leased FROM grant_leases WHERE product_id = $1), 0)",
    )
    .bind(product_id)
    .fetch_one(&state.db)
    .await?;
    let (counted, withheld): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(unseen_grants), 0)::bigint, \
         coalesce(sum(in_doubt) FILTER (WHERE released_at IS NULL), 0)::bigint \
         FROM redis_losses WHERE product_id = $1",
    )
    .bind(product_id)
    .fetch_one(&state.db)
    .await?;
    let slots: Vec<LiveSlot> = rows
        .into_iter()
        .map(|(slot_id, user_id, status, expires, arrival, acquired, trace_id)| LiveSlot {
            slot_id,
            user_id,
            status,
            expires_ms: ms(expires),
            arrival_us: (arrival.unix_timestamp_nanos() / 1000) as i64,
            acquired_ms: ms(acquired),
            traceparent: restored_traceparent(&trace_id),
        })
        .collect();
    // Payments still in progress on live slots: the gateway will still report on them.
    type PaymentRow =
        (Uuid, Uuid, Uuid, PaymentStatus, String, i64, String, String, OffsetDateTime, String);
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT p.payment_id, p.slot_id, p.user_id, p.status, p.method, p.amount, \
         p.currency::text, p.idempotency_key, p.created_at, p.trace_id FROM purchases p \
         WHERE p.product_id = $1 AND p.status IN ('PENDING', 'REFUND_REQUIRED')",
    )
    .bind(product_id)
    .fetch_all(&state.db)
    .await?;
    let payments: Vec<Value> = payments
        .into_iter()
        .map(
            |(
                payment_id,
                slot_id,
                user_id,
                status,
                method,
                amount,
                currency,
                key,
                created,
                trace,
            )| {
                json!({
                    "paymentId": payment_id, "slotId": slot_id, "userId": user_id, "status": status,
                    "method": method, "amount": amount.to_string(), "currency": currency,
                "idempotencyKey": key,
                    "createdMs": ms(created).to_string(), "traceparent": restored_traceparent(&trace),
                })
            },
        )
        .collect();
    let stock = i64::from(product.stock);
    let accounting = account(stock, slots.len() as i64, granted, leased, counted, withheld);
    // The loss is recorded in a transaction committed only if the rebuild ran: one that
    // found live state leaves no record behind.
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO redis_losses (product_id, restored_slots, unseen_grants, in_doubt) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(product_id)
    .bind(slots.len() as i64)
    .bind(accounting.unseen)
    .bind(accounting.withheld_now)
    .execute(&mut *tx)
    .await?;
    let restored = state
        .inventory
        .rebuild_product(
            product_id,
            stock,
            ms(product.sale_starts_at),
            product.sale_ends_at.map(ms),
            accounting.counts,
            state.clock.now_ms(),
            &slots,
            &Value::Array(payments).to_string(),
        )
        .await?;
    Ok(match restored {
        Some(n) => {
            tracing::warn!(
                %product_id, restored_slots = n, unseen_grants = accounting.unseen,
                in_doubt = accounting.withheld_now, leased, granted,
                "rebuilt sale state from PostgreSQL; units lost grants may hold are withheld"
            );
            if let Err(e) = tx.commit().await {
                // Redis is rebuilt and withholds the units; only the record is missing, and
                // the checker reports Redis's `inDoubt` against it.
                tracing::error!(%product_id, error = %e, "the rebuild's loss record was not written");
                return Err(e.into());
            }
            Rebuild::Rebuilt {
                restored_slots: n,
                unseen_grants: accounting.unseen,
                in_doubt: accounting.withheld_now,
            }
        }
        None => Rebuild::AlreadyLive,
    })
}

/// What a rebuild restores and what it found lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    pub counts: RebuiltCounts,
    /// Grants the lease allowed that neither PostgreSQL nor an earlier loss accounts for:
    /// at most this many grants answered 201 were lost with Redis.
    pub unseen: i64,
    /// Units this rebuild withholds for them (on top of earlier losses' unreleased ones).
    pub withheld_now: i64,
}

/// Accounts for a rebuilt product. PostgreSQL holds `granted` slots, `live` of them ACTIVE
/// or COMPLETED; earlier losses counted `counted` unseen grants and still withhold
/// `withheld` units. Grants the lease allowed beyond those may have been answered 201: as
/// many units are withheld, but never more than the units not live nor withheld (a lost
/// grant held one of those, if it held any). `granted` restarts past every grant the lease
/// allowed, so later losses never count the same grant twice.
pub fn account(
    stock: i64,
    live: i64,
    granted: i64,
    leased: i64,
    counted: i64,
    withheld: i64,
) -> Accounting {
    let unseen = (leased - granted - counted).max(0);
    let withheld_now = unseen.min((stock - live - withheld).max(0));
    Accounting {
        counts: RebuiltCounts {
            granted: granted + counted + unseen,
            leased,
            in_doubt: withheld + withheld_now,
        },
        unseen,
        withheld_now,
    }
}

/// Starts a background rebuild of `product_id` unless one is already running.
pub fn trigger(state: &AppState, product_id: Uuid) {
    if !state.rebuilds.lock().expect("rebuilds lock").insert(product_id) {
        return;
    }
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let state = task_state;
        if let Err(e) = rebuild(&state, product_id).await {
            tracing::error!(%product_id, error = %e, "automatic rebuild failed; the next request retries");
        }
        state.rebuilds.lock().expect("rebuilds lock").remove(&product_id);
    });
}

async fn rebuild_one(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let product_id = parse_id(&id, "product")?;
    match rebuild(&state, product_id).await? {
        Rebuild::NotFound => Err(ApiError::NotFound(format!("no product {product_id}"))),
        outcome => {
            let mut body = serde_json::to_value(outcome).map_err(anyhow::Error::from)?;
            body["productId"] = json!(product_id);
            Ok(Json(body))
        }
    }
}

/// The operator's word that the buyers of grants lost with Redis are settled with: the units
/// a rebuild withheld go back on sale. `flashgate check` keeps reporting the loss itself.
async fn release_in_doubt(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let product_id = parse_id(&id, "product")?;
    if products::find(&state, product_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no product {product_id}")));
    }
    let Some(released) = state.inventory.release_in_doubt(product_id).await? else {
        return Err(products::not_loaded(&state, product_id));
    };
    // Redis first: a retry after a failure here finds nothing left to release and still
    // marks the record.
    sqlx::query(
        "UPDATE redis_losses SET released_at = now() \
         WHERE product_id = $1 AND released_at IS NULL AND in_doubt > 0",
    )
    .bind(product_id)
    .execute(&state.db)
    .await?;
    tracing::warn!(%product_id, released, "in-doubt units released back on sale by an operator");
    Ok(Json(json!({ "productId": product_id, "released": released })))
}

async fn rebuild_all(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Value>> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT product_id FROM products WHERE deleted_at IS NULL")
            .fetch_all(&state.db)
            .await?;
    let (mut rebuilt, mut live) = (0, 0);
    for id in ids {
        match rebuild(&state, id).await? {
            Rebuild::Rebuilt { .. } => rebuilt += 1,
            Rebuild::AlreadyLive => live += 1,
            Rebuild::NotFound => {}
        }
    }
    Ok(Json(json!({ "rebuilt": rebuilt, "alreadyLive": live })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_with_everything_relayed_and_the_lease_used_up_loses_nothing() {
        let a = account(10, 4, 6, 6, 0, 0);
        assert_eq!((a.unseen, a.withheld_now), (0, 0));
        assert_eq!(a.counts, RebuiltCounts { granted: 6, leased: 6, in_doubt: 0 });
    }

    #[test]
    fn grants_the_lease_allowed_beyond_postgresql_are_withheld_not_resold() {
        // 100 units, 30 slots relayed (20 live), lease at 45: up to 15 grants unseen.
        let a = account(100, 20, 30, 45, 0, 0);
        assert_eq!((a.unseen, a.withheld_now), (15, 15));
        assert_eq!(a.counts, RebuiltCounts { granted: 45, leased: 45, in_doubt: 15 });
        // remaining = 100 − 20 − 15: no lost grant's unit is on sale.
    }

    #[test]
    fn never_withholds_more_than_the_units_not_live() {
        // 10 units, 8 live in PostgreSQL, lease 20 ahead: at most 2 units can be held by
        // lost grants.
        let a = account(10, 8, 8, 28, 0, 0);
        assert_eq!((a.unseen, a.withheld_now), (20, 2));
        assert_eq!(a.counts.in_doubt, 2);
        assert_eq!(a.counts.granted, 28, "lease numbers are never reused");
    }

    #[test]
    fn a_second_loss_counts_only_grants_the_first_did_not() {
        let first = account(100, 20, 30, 45, 0, 0);
        // After the rebuild, 10 more grants relayed (PostgreSQL: 40 slots, 30 live), lease
        // raised to 70, then Redis lost again, the first 15 units still withheld.
        let second = account(100, 30, 40, 70, first.unseen, first.counts.in_doubt);
        assert_eq!(second.unseen, 70 - 40 - 15);
        assert_eq!(second.counts.in_doubt, 15 + 15);
        assert_eq!(second.counts.granted, 70);
    }

    #[test]
    fn a_lease_postgresql_already_covers_is_no_loss() {
        let a = account(5, 5, 9, 7, 0, 0);
        assert_eq!((a.unseen, a.withheld_now, a.counts.granted), (0, 0, 9));
    }
}
