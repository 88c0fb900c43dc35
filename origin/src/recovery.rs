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
use crate::inventory::LiveSlot;
use crate::products::{self, parse_id};
use crate::state::AppState;
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Rebuild {
    Rebuilt {
        #[serde(rename = "restoredSlots")]
        restored_slots: i64,
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
    let rows: Vec<(Uuid, Uuid, String, OffsetDateTime, OffsetDateTime, OffsetDateTime, String)> =
        sqlx::query_as(
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
        (Uuid, Uuid, Uuid, String, String, i64, String, String, OffsetDateTime, String);
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
    let restored = state
        .inventory
        .rebuild_product(
            product_id,
            i64::from(product.stock),
            ms(product.sale_starts_at),
            product.sale_ends_at.map(ms),
            granted,
            state.clock.now_ms(),
            &slots,
            &Value::Array(payments).to_string(),
        )
        .await?;
    Ok(match restored {
        Some(n) => {
            tracing::warn!(%product_id, restored_slots = n, "rebuilt sale state from PostgreSQL");
            // Recorded for `flashgate check`: grants not yet relayed when Redis lost them
            // are gone, and nothing here can tell how many there were.
            sqlx::query("INSERT INTO redis_losses (product_id, restored_slots) VALUES ($1, $2)")
                .bind(product_id)
                .bind(n)
                .execute(&state.db)
                .await?;
            Rebuild::Rebuilt { restored_slots: n }
        }
        None => Rebuild::AlreadyLive,
    })
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
