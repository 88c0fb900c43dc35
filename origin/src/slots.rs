//! Slots: acquisition (one Lua script call per request).

use crate::clock::{rfc3339_ms, rfc3339_us};
use crate::edge_auth::EdgeContext;
use crate::error::{ApiError, ApiResult};
use crate::inventory::{AcquireArgs, Acquisition};
use crate::metrics::AcquireLabels;
use crate::products;
use crate::state::AppState;
use crate::trace::RequestTrace;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Buyer routes (mounted behind the edge signature).
pub fn router() -> Router<AppState> {
    Router::new().route("/slots/acquire", post(acquire))
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
        let product_id = Uuid::try_parse(raw)
            .map_err(|_| ApiError::validation("productId", "must be a UUID"))?;
        Ok(Self { product_id })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub status: &'static str,
    pub arrival_at: String,
    pub acquired_at: String,
    pub expires_at: String,
    pub remaining_seconds: i64,
    pub trace_id: String,
}

async fn acquire(
    State(state): State<AppState>,
    edge: EdgeContext,
    Extension(trace): Extension<RequestTrace>,
    body: Bytes,
) -> ApiResult<Response> {
    let AcquireRequest { product_id } = AcquireRequest::parse(&body)?;
    let now_ms = state.clock.now_ms();
    let slot_id = Uuid::now_v7();
    let outcome = state
        .inventory
        .acquire(&AcquireArgs {
            product_id,
            user_id: edge.user_id,
            slot_id,
            event_id: Uuid::now_v7(),
            arrival_us: edge.arrival_us,
            now_ms,
            traceparent: &edge.traceparent,
        })
        .await?;
    state.metrics.acquisitions.get_or_create(&AcquireLabels { outcome: outcome.outcome() }).inc();
    match outcome {
        Acquisition::Granted { expires_ms, .. } => {
            let view = SlotView {
                slot_id,
                product_id,
                user_id: edge.user_id,
                status: "ACTIVE",
                arrival_at: rfc3339_us(edge.arrival_us),
                acquired_at: rfc3339_ms(now_ms),
                expires_at: rfc3339_ms(expires_ms),
                remaining_seconds: (expires_ms - now_ms).max(0) / 1000,
                trace_id: trace.trace_id(),
            };
            tracing::info!(%slot_id, %product_id, user_id = %edge.user_id, "slot granted");
            Ok((StatusCode::CREATED, [(header::LOCATION, format!("/slots/{slot_id}"))], Json(view))
                .into_response())
        }
        Acquisition::Holding { slot_id } => Err(ApiError::AlreadyHolding { slot_id }),
        Acquisition::SoldOut => Err(ApiError::SoldOut { product_id }),
        Acquisition::NotOnSale { starts_ms } => {
            Err(ApiError::NotOnSale { sale_starts_at: rfc3339_ms(starts_ms) })
        }
        Acquisition::Ended { ends_ms } => {
            Err(ApiError::SaleEnded { sale_ended_at: rfc3339_ms(ends_ms) })
        }
        Acquisition::Unknown => match products::find(&state, product_id).await? {
            // Known to PostgreSQL but not to Redis: its sale state must be rebuilt first.
            Some(_) => Err(products::not_loaded(product_id)),
            None => Err(ApiError::NotFound(format!("no product {product_id}"))),
        },
    }
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
