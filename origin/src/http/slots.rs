//! Slots: acquisition (one Lua script call per request).

use crate::clock::{at_ms, ms_of, rfc3339_ms, rfc3339_us, us_of};
use crate::error::{ApiError, ApiResult};
use crate::http::edge_auth::EdgeContext;
use crate::http::pagination::{Page, PageRequest};
use crate::http::parse_id;
use crate::http::queue;
use crate::http::trace::RequestTrace;
use crate::metrics::AcquireLabels;
use crate::pg;
use crate::pg::slots::SlotRow;
use crate::recovery;
use crate::state::AppState;
use crate::status::SlotStatus;
use crate::store::scripts::acquire::{AcquireArgs, Acquisition};
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flashgate_core::queue::HEADER_QUEUE_PASS;
use flashgate_core::shield::HEADER_REMAINING;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

/// Buyer routes (mounted behind the edge signature).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/slots/acquire", post(acquire))
        .route("/slots/my-slots", get(my_slots))
        .route("/slots/{id}", get(read))
        .route("/internal/availability", get(availability))
}

/// The body of `POST /slots/acquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireRequest {
    pub product_id: Uuid,
}

impl AcquireRequest {
    pub fn parse(body: &[u8]) -> ApiResult<Self> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::validation("body", format!("is not valid JSON: {e}")))?;
        let raw = v
            .get("productId")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::validation("productId", "is required and must be a string"))?;
        let product_id = flashgate_core::routes::parse_id(raw).ok_or_else(|| {
            ApiError::validation("productId", "must be a UUID (36 characters with hyphens)")
        })?;
        Ok(Self { product_id })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub status: SlotStatus,
    pub arrival_at: String,
    pub acquired_at: String,
    pub expires_at: String,
    pub remaining_seconds: i64,
    pub trace_id: String,
    /// The grant's entry in the drop's public log (`docs/transparency.md`); only in the
    /// answer to the acquisition, and only when the origin keeps logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub receipt: Option<flashgate_tlog::verify::Receipt>,
}

#[utoipa::path(
    post,
    path = "/slots/acquire",
    tag = "buyers",
    security(("edge" = [])),
    request_body(content = crate::http::openapi::AcquireBody, description = "The product to buy one unit of"),
    responses(
        (status = 202, description = "The product's waiting room is on and no valid queue pass came (`X-Queue-Pass`): the buyer is in line", body = crate::http::queue::QueueView),
        (status = 201, description = "A slot: one unit held for the buyer until `expiresAt`", body = SlotView,
         headers(("location" = String, description = "/slots/{slotId}"), ("x-flashgate-remaining" = i64, description = "Units left after this grant"))),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Sold out, already holding a slot of it (`slotId`), not on sale yet (`saleStartsAt`) or ended", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn acquire(
    State(state): State<AppState>,
    edge: EdgeContext,
    Extension(trace): Extension<RequestTrace>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let AcquireRequest { product_id } = AcquireRequest::parse(&body)?;
    let mut pass_expires_ms = None;
    if state.rooms.admits_by_pass(product_id) {
        let pass = headers.get(HEADER_QUEUE_PASS).and_then(|v| v.to_str().ok());
        pass_expires_ms = queue::valid_pass(&state, pass, product_id, edge.user_id);
        if pass_expires_ms.is_none() {
            // The waiting room is on: no pass, no acquisition; the buyer joins the line.
            return queue::place(&state, &edge, product_id, true).await;
        }
    }
    if let Err(why) = state.durability.check(&state.inventory).await? {
        // A grant now could be lost and resold after a Redis restart: refuse it.
        return Err(ApiError::Unavailable {
            component: "redis",
            detail: format!("Redis does not persist grants: {why}"),
        });
    }
    let received_us = state.clock.now_us();
    let now_ms = received_us.div_euclid(1000);
    let trace_id = trace.trace_id();
    state.acquisition_log.requested(now_ms, &trace_id, product_id, edge.user_id);
    let slot_id = Uuid::now_v7();
    let span = tracing::info_span!(
        "acquire",
        %product_id,
        edge = %edge.edge_id,
        outcome = tracing::field::Empty,
    );
    // The outbox entry continues this span (when spans are exported), else the edge's.
    let traceparent =
        crate::telemetry::traceparent_of(&span).unwrap_or_else(|| edge.traceparent.clone());
    let args = AcquireArgs {
        product_id,
        user_id: edge.user_id,
        slot_id,
        event_id: Uuid::now_v7(),
        arrival_us: edge.arrival_us,
        now_ms,
        traceparent,
        late: false,
        replay: edge.replay.clone(),
        pass_expires_ms,
        log: state
            .transparency
            .as_ref()
            .map(|t| t.log_args(product_id, edge.user_id, &edge.edge_id)),
    };
    let decided = state.fairness.acquire(args, &edge.edge_id).instrument(span.clone()).await?;
    let outcome = decided.acquisition;
    // The buyer's receipt: their decision's entry in the drop's public log.
    let receipt = decided.logged.as_ref().map(|l| crate::transparency::receipt(product_id, l));
    let refuse = |e: ApiError| -> ApiResult<Response> {
        match &receipt {
            Some(r) => Ok(crate::error::respond(e.problem().with("receipt", serde_json::json!(r)))),
            None => Err(e),
        }
    };
    span.record("outcome", outcome.outcome());
    state.metrics.stamp_delays(
        &edge.edge_id,
        edge.edge_elapsed_us,
        received_us - edge.arrival_us,
        state.clock.now_us() - edge.arrival_us,
    );
    state.metrics.acquisitions.get_or_create(&AcquireLabels { outcome: outcome.outcome() }).inc();
    if !matches!(
        outcome,
        Acquisition::Granted { .. } | Acquisition::Replayed | Acquisition::PassSpent
    ) {
        let reason = outcome.outcome();
        state.acquisition_log.refused(now_ms, &trace_id, product_id, edge.user_id, reason);
        state.refusals.note(product_id);
    }
    match outcome {
        Acquisition::Granted { expires_ms, remaining } => {
            // Lets `POST /payments` find the slot's product before PostgreSQL has the slot.
            // Not fatal: the grant stands, and PostgreSQL answers once the relay ran.
            if let Err(e) = state.payments.store.set_locator(slot_id, product_id).await {
                tracing::warn!(%slot_id, error = %e, "slot locator not written");
            }
            let view = SlotView {
                slot_id,
                product_id,
                user_id: edge.user_id,
                status: SlotStatus::Active,
                arrival_at: rfc3339_us(edge.arrival_us),
                acquired_at: rfc3339_ms(now_ms),
                expires_at: rfc3339_ms(expires_ms),
                remaining_seconds: (expires_ms - now_ms).max(0) / 1000,
                trace_id,
                receipt,
            };
            let headers = [
                (header::LOCATION, format!("/slots/{slot_id}")),
                // Lets the edge learn the product sold out without another request.
                (HeaderName::from_static(HEADER_REMAINING), remaining.to_string()),
            ];
            Ok((StatusCode::CREATED, headers, Json(view)).into_response())
        }
        Acquisition::Holding { slot_id } => refuse(ApiError::AlreadyHolding { slot_id }),
        Acquisition::SoldOut => refuse(ApiError::SoldOut { product_id }),
        Acquisition::NotOnSale { starts_ms } => {
            refuse(ApiError::NotOnSale { sale_starts_at: rfc3339_ms(starts_ms), starts_ms })
        }
        Acquisition::Ended { ends_ms } => {
            refuse(ApiError::SaleEnded { sale_ended_at: rfc3339_ms(ends_ms) })
        }
        Acquisition::Replayed => Err(ApiError::Replayed),
        // The pass bought once already: the buyer lines up again, as without a pass.
        Acquisition::PassSpent => queue::place(&state, &edge, product_id, true).await,
        Acquisition::Unknown => match pg::products::find(&state.db, product_id).await? {
            // Known to PostgreSQL but not to Redis: its sale state must be rebuilt first.
            Some(_) => Err(recovery::not_loaded(&state, product_id)),
            None => Err(ApiError::NotFound(format!("no product {product_id}"))),
        },
    }
}

/// What an edge asks, at a bounded rate, to re-check all the products it cannot sell at
/// once (so its cost does not grow with the number of products it has seen): every
/// product (`full: true`), or with `?since=<asOfMs of an earlier answer>` only those whose
/// availability changed since ([`crate::store::availability`]). `asOfMs` is what to ask
/// from next.
#[utoipa::path(
    get,
    path = "/internal/availability",
    tag = "internal",
    security(("edge" = [])),
    params(("since" = Option<i64>, Query, description = "The `asOfMs` of the previous answer: only what changed since")),
    responses(
        (status = 200, description = "Every product's availability (or what changed)", body = crate::http::openapi::AvailabilityDoc),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn availability(
    State(state): State<AppState>,
    _edge: EdgeContext,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let since = query
        .get("since")
        .map(|s| s.parse::<i64>().ok().filter(|ms| *ms >= 0))
        .map(|ms| ms.ok_or_else(|| ApiError::validation("since", "must be an asOfMs value")))
        .transpose()?;
    let (as_of, rows) = state.inventory.availability_since(since).await?;
    let products: Vec<Value> = rows
        .into_iter()
        .map(|(id, remaining, starts_ms, ends_ms)| {
            availability_json(id, remaining, starts_ms, ends_ms)
        })
        .collect();
    Ok(Json(serde_json::json!({ "asOfMs": as_of, "full": since.is_none(), "products": products })))
}

fn availability_json(
    product_id: Uuid,
    remaining: i64,
    starts_ms: i64,
    ends_ms: Option<i64>,
) -> Value {
    serde_json::json!({
        "productId": product_id,
        "remaining": remaining.max(0),
        "saleStartsAtMs": starts_ms,
        "saleStartsAt": rfc3339_ms(starts_ms),
        "saleEndsAtMs": ends_ms,
        "saleEndsAt": ends_ms.map(rfc3339_ms),
    })
}

impl SlotView {
    fn from_row(row: SlotRow, now_ms: i64) -> Self {
        let expires_ms = ms_of(row.expires_at);
        // As a buyer sees it: past its deadline, expired whether or not it was swept yet.
        let status = row.status.at(expires_ms, now_ms);
        Self {
            slot_id: row.slot_id,
            product_id: row.product_id,
            user_id: row.user_id,
            status,
            arrival_at: rfc3339_us(us_of(row.arrival_at)),
            acquired_at: rfc3339_us(us_of(row.acquired_at)),
            expires_at: rfc3339_us(us_of(row.expires_at)),
            remaining_seconds: if status == SlotStatus::Active {
                (expires_ms - now_ms).max(0) / 1000
            } else {
                0
            },
            trace_id: row.trace_id,
            receipt: None,
        }
    }
}

#[utoipa::path(
    get,
    path = "/slots/{id}",
    tag = "buyers",
    security(("edge" = [])),
    params(("id" = String, Path, description = "The slot id (a UUID)")),
    responses(
        (status = 200, description = "The slot", body = SlotView),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The slot is another buyer's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such slot (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    edge: EdgeContext,
    Path(id): Path<String>,
) -> ApiResult<Json<SlotView>> {
    let slot_id = parse_id(&id, "slot")?;
    let row = pg::slots::find(&state.db, slot_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no slot {slot_id}")))?;
    if row.user_id != edge.user_id {
        return Err(ApiError::Forbidden("this slot belongs to another buyer".into()));
    }
    Ok(Json(SlotView::from_row(row, state.clock.now_ms())))
}

#[utoipa::path(
    get,
    path = "/slots/my-slots",
    tag = "buyers",
    security(("edge" = [])),
    params(("page" = Option<u32>, Query, description = "From 1"), ("size" = Option<u32>, Query, description = "1 to 100 (20)"), ("status" = Option<SlotStatus>, Query, description = "Only slots in this status")),
    responses(
        (status = 200, description = "The buyer's slots, newest first", body = Page<SlotView>),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn my_slots(
    State(state): State<AppState>,
    edge: EdgeContext,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Page<SlotView>>> {
    let paging = PageRequest::parse(&query)?;
    let status = query
        .get("status")
        .map(|s| s.parse::<SlotStatus>())
        .transpose()
        .map_err(|_| ApiError::validation("status", "must be ACTIVE, COMPLETED or EXPIRED"))?;
    let now_ms = state.clock.now_ms();
    let page = (i64::from(paging.size), paging.offset() as i64);
    let (rows, total) =
        pg::slots::of_buyer(&state.db, edge.user_id, status, at_ms(now_ms), page).await?;
    Ok(Json(Page {
        items: rows.into_iter().map(|r| SlotView::from_row(r, now_ms)).collect(),
        page: paging.page,
        size: paging.size,
        total: total as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_bodies() {
        let id = Uuid::now_v7();
        let ok = AcquireRequest::parse(format!(r#"{{"productId":"{id}"}}"#).as_bytes()).unwrap();
        assert_eq!(ok.product_id, id);
        for (body, field) in [
            (&b"nope"[..], "body"),
            (b"{}", "productId"),
            (br#"{"productId":5}"#, "productId"),
            (br#"{"productId":"abc"}"#, "productId"),
        ] {
            match AcquireRequest::parse(body).unwrap_err() {
                ApiError::Validation { field: f, .. } => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
    }
}
