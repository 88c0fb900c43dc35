//! Payments: `POST /payments` (idempotent by the buyer's `Idempotency-Key`),
//! `GET /payments/{id}`, and the gateway's `POST /payments/webhook`.
//!
//! Creating a payment is two steps, each atomic:
//! 1. the key is claimed (`SET NX GET`, scoped to the buyer) and bound to the body's
//!    fingerprint and a fresh payment id — or, if it was claimed before, the request adopts
//!    the bound payment id (another body → 422);
//! 2. `lua/pay.lua` creates the payment with that id at most once, under the slot's product
//!    hash tag, checking the slot (owner, deadline, status, payment in flight).
//!
//! Every request with one key therefore names one payment id, and only the request whose
//! script call created it submits the charge: concurrent requests and replays create one
//! payment and one charge, and a creator that died between the steps is finished by the
//! next replay. The answer to a key is the payment as created (202, `PENDING`), the same
//! every time; `GET /payments/{id}` tells how it went.
//!
//! The outcome comes by webhook ([`gateway`]); `lua/settle.lua` applies it once. A payment
//! whose webhook has not come by the deadline (`reconcile_after`) is reconciled by the
//! payments worker, which asks the processor for the charge's status ([`worker`]). Payment
//! records live in Redis under the product's hash tag while they matter, and in PostgreSQL
//! (`purchases`, via the outbox) for good; reads fall back to PostgreSQL.

use crate::clock::{ms_of, rfc3339_ms};
use crate::error::{ApiError, ApiResult};
use crate::gateway::{ChargeRequest, GatewayError, Outcome};
use crate::http::edge_auth::EdgeContext;
use crate::http::parse_id;
use crate::metrics::PaymentLabels;
use crate::pg;
use crate::recovery;
use crate::state::AppState;
use crate::status::{PaymentStatus, SlotStatus};
use crate::store::payments::Claim;
use crate::store::scripts::pay::{Creation, NewPayment};
use crate::store::scripts::settle::Settlement;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flashgate_core::trace::TraceContext;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tracing::Instrument;
use uuid::Uuid;

/// Buyer routes (behind the edge signature).
pub fn router() -> Router<AppState> {
    Router::new().route("/payments", post(create)).route("/payments/{id}", get(read))
}

/// The processor's route (authenticated by the webhook signature, not by the edge).
pub fn webhook_router() -> Router<AppState> {
    Router::new().route("/payments/webhook", post(webhook))
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        let field = "Idempotency-Key";
        let raw = headers
            .get("idempotency-key")
            .ok_or_else(|| ApiError::validation(field, "header is required"))?;
        let text = raw.to_str().ok().filter(|t| {
            !t.is_empty() && t.len() <= Self::MAX_LEN && t.bytes().all(|b| b.is_ascii_graphic())
        });
        match text {
            Some(t) => Ok(Self(t.to_owned())),
            None => Err(ApiError::validation(
                field,
                format!("must be 1 to {} visible ASCII characters", Self::MAX_LEN),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of `POST /payments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub slot_id: Uuid,
    pub method: String,
}

impl PaymentRequest {
    pub fn parse(body: &[u8]) -> ApiResult<Self> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::validation("body", format!("is not valid JSON: {e}")))?;
        let slot = v
            .get("slotId")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::validation("slotId", "is required and must be a string"))?;
        let slot_id = flashgate_core::routes::parse_id(slot).ok_or_else(|| {
            ApiError::validation("slotId", "must be a UUID (36 characters with hyphens)")
        })?;
        let method = v
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::validation("method", "is required and must be a string"))?;
        let well_formed = (1..=32).contains(&method.len())
            && method.starts_with(|c: char| c.is_ascii_lowercase())
            && method.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(ApiError::validation(
                "method",
                "must be a payment method name like `card` (a-z, 0-9, _; at most 32)",
            ));
        }
        Ok(Self { slot_id, method: method.to_owned() })
    }

    /// What "the same body" means for a replay: the same slot and method, however the JSON
    /// was spelled.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(format!("v1\n{}\n{}", self.slot_id, self.method));
        hex::encode(&digest[..16])
    }
}

/// A payment as buyers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub status: PaymentStatus,
    pub method: String,
    pub amount: i64,
    pub currency: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub trace_id: String,
}

/// A payment record, from Redis or PostgreSQL.
#[derive(Debug, Clone)]
struct Record {
    view: PaymentView,
    user_id: Uuid,
}

impl Record {
    fn from_redis(f: &HashMap<String, String>) -> Option<Self> {
        let uuid = |k: &str| f.get(k).and_then(|v| Uuid::try_parse(v).ok());
        let int = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
        let text = |k: &str| f.get(k).cloned();
        Some(Self {
            user_id: uuid("userId")?,
            view: PaymentView {
                payment_id: uuid("paymentId")?,
                slot_id: uuid("slotId")?,
                product_id: uuid("productId")?,
                status: text("status")?.parse().ok()?,
                method: text("method")?,
                amount: int("amount")?,
                currency: text("currency")?,
                created_at: rfc3339_ms(int("createdMs")?),
                settled_at: int("settledMs").map(rfc3339_ms),
                failure_reason: text("reason").filter(|r| !r.is_empty()),
                trace_id: trace_id(f.get("traceparent").map(String::as_str).unwrap_or("")),
            },
        })
    }

    /// The answer to `POST /payments`: the payment as it was created.
    fn as_created(&self) -> PaymentView {
        PaymentView {
            status: PaymentStatus::Pending,
            settled_at: None,
            failure_reason: None,
            ..self.view.clone()
        }
    }
}

fn trace_id(traceparent: &str) -> String {
    TraceContext::parse(traceparent).map(|t| t.trace_id_hex()).unwrap_or_default()
}

/// A payment by id: Redis while it is there, PostgreSQL after.
async fn load(state: &AppState, payment_id: Uuid) -> ApiResult<Option<Record>> {
    if let Some(product_id) = payment_product(state, payment_id).await?
        && let Some(fields) = state.payments.store.payment(product_id, payment_id).await?
    {
        return Ok(Record::from_redis(&fields));
    }
    let row = pg::purchases::find(&state.db, payment_id).await?;
    Ok(row.map(|r| Record {
        user_id: r.user_id,
        view: PaymentView {
            payment_id: r.payment_id,
            slot_id: r.slot_id,
            product_id: r.product_id,
            status: r.status,
            method: r.method,
            amount: r.amount,
            currency: r.currency,
            created_at: rfc3339_ms(ms_of(r.created_at)),
            settled_at: r.settled_at.map(|t| rfc3339_ms(ms_of(t))),
            failure_reason: r.failure_reason,
            trace_id: r.trace_id,
        },
    }))
}

/// The product a payment belongs to: its locator, else PostgreSQL.
async fn payment_product(state: &AppState, payment_id: Uuid) -> ApiResult<Option<Uuid>> {
    if let Some(product) = state.payments.store.locate(payment_id).await? {
        return Ok(Some(product));
    }
    Ok(pg::purchases::product_of(&state.db, payment_id).await?)
}

/// The product a slot belongs to: its locator, else PostgreSQL.
async fn slot_product(state: &AppState, slot_id: Uuid) -> ApiResult<Option<Uuid>> {
    if let Some(product) = state.payments.store.locate(slot_id).await? {
        return Ok(Some(product));
    }
    Ok(pg::slots::product_of(&state.db, slot_id).await?)
}

fn accepted(view: PaymentView, replayed: bool) -> Response {
    let location = format!("/payments/{}", view.payment_id);
    let mut response =
        (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(view)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[utoipa::path(
    post,
    path = "/payments",
    tag = "buyers",
    security(("edge" = [])),
    params(("idempotency-key" = String, Header, description = "The buyer's key for this payment: a retry with the same key and body answers the same payment")),
    request_body(content = crate::http::openapi::PaymentBody),
    responses(
        (status = 202, description = "Created (or replayed): the processor settles it by webhook", body = PaymentView, headers(("location" = String, description = "/payments/{paymentId}"))),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The slot is another buyer's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such slot (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The slot expired, is paid, is being paid, or the key was used with another body", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    edge: EdgeContext,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let request = PaymentRequest::parse(&body)?;
    let payments = &state.payments;
    let fingerprint = request.fingerprint();
    let candidate = Uuid::now_v7();
    // The slot first: a slot nobody holds is a 404 that claims no key.
    let slot_id = request.slot_id;
    let product_id = slot_product(&state, slot_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no slot {slot_id}")))?;
    let claim = payments
        .store
        .claim_key(edge.user_id, key.as_str(), &fingerprint, candidate, payments.idempotency_ttl)
        .await?;
    let claimed = matches!(claim, Claim::Claimed);
    let payment_id = match claim {
        Claim::Claimed => candidate,
        Claim::Existing { fingerprint: bound, payment_id } if bound == fingerprint => {
            // A replay: the first answer, if the payment was created.
            if let Some(record) = load(&state, payment_id).await? {
                if record.user_id != edge.user_id {
                    return Err(ApiError::Forbidden(
                        "this payment belongs to another buyer".into(),
                    ));
                }
                return Ok(accepted(record.as_created(), true));
            }
            payment_id
        }
        Claim::Existing { .. } => return Err(ApiError::IdempotencyKeyReused),
    };
    let answer = create_claimed(&state, &edge, &key, &request, product_id, payment_id).await;
    let refused = match &answer {
        Ok(response) => !response.status().is_success(),
        Err(e) => !matches!(e, ApiError::Unavailable { .. } | ApiError::Internal(_)),
    };
    if claimed && refused {
        // Nothing was created under the key: free it. (Not after a failure of ours: what
        // happened is unknown, and the buyer's retry must find the key.)
        let released =
            payments.store.release_key(edge.user_id, key.as_str(), &fingerprint, payment_id);
        if let Err(e) = released.await {
            tracing::warn!(error = %e, "idempotency key not released");
        }
    }
    answer
}

/// [`create`] once the key is bound to `payment_id`.
async fn create_claimed(
    state: &AppState,
    edge: &EdgeContext,
    key: &IdempotencyKey,
    request: &PaymentRequest,
    product_id: Uuid,
    payment_id: Uuid,
) -> ApiResult<Response> {
    let payments = &state.payments;
    let slot_id = request.slot_id;
    let product = pg::products::find(&state.db, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    payments.store.set_locator(payment_id, product_id).await?;
    let now_ms = state.clock.now_ms();
    let span = tracing::info_span!("payment.create", %product_id, %payment_id, outcome = tracing::field::Empty);
    // The payment's events and its webhook continue this span (when spans are exported).
    let traceparent =
        crate::telemetry::traceparent_of(&span).unwrap_or_else(|| edge.traceparent.clone());
    let new = NewPayment {
        payment_id,
        product_id,
        slot_id,
        user_id: edge.user_id,
        method: &request.method,
        amount: product.price_amount,
        currency: &product.price_currency,
        idempotency_key: key.as_str(),
        traceparent: &traceparent,
        now_ms,
    };
    let created = payments.store.create(&new).instrument(span.clone()).await?;
    let label = match &created {
        Creation::Created => "created",
        Creation::Existing => "replayed",
        _ => "refused",
    };
    state.metrics.payments.get_or_create(&PaymentLabels { event: label }).inc();
    span.record("outcome", label);
    match created {
        Creation::Created => {
            let view = PaymentView {
                payment_id,
                slot_id,
                product_id,
                status: PaymentStatus::Pending,
                method: request.method.clone(),
                amount: product.price_amount,
                currency: product.price_currency.clone(),
                created_at: rfc3339_ms(now_ms),
                settled_at: None,
                failure_reason: None,
                trace_id: trace_id(&edge.traceparent),
            };
            tracing::info!(%payment_id, %slot_id, user_id = %edge.user_id, "payment created");
            submit_charge(state, product_id, payment_id, &view).await;
            Ok(accepted(view, false))
        }
        Creation::Existing => {
            let record = load(state, payment_id).await?.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("payment {payment_id} vanished after creation"))
            })?;
            Ok(accepted(record.as_created(), true))
        }
        Creation::Forbidden => {
            Err(ApiError::Forbidden("this slot belongs to another buyer".into()))
        }
        Creation::Expired => Err(ApiError::SlotExpired { slot_id }),
        Creation::Completed => Err(ApiError::SlotNotActive { slot_id, payment_id: None }),
        Creation::InFlight { payment_id } => Err(ApiError::SlotNotActive { slot_id, payment_id }),
        Creation::Unknown => unknown_slot(state, product_id, slot_id, edge.user_id).await,
    }
}

/// Redis has no record of the slot: PostgreSQL tells whether it ended or Redis lost it.
async fn unknown_slot(
    state: &AppState,
    product_id: Uuid,
    slot_id: Uuid,
    user_id: Uuid,
) -> ApiResult<Response> {
    let row = pg::slots::find(&state.db, slot_id).await?;
    let now_ms = state.clock.now_ms();
    match row {
        None => Err(ApiError::NotFound(format!("no slot {slot_id}"))),
        Some(slot) if slot.user_id != user_id => {
            Err(ApiError::Forbidden("this slot belongs to another buyer".into()))
        }
        Some(slot) => {
            match slot.status.at(ms_of(slot.expires_at), now_ms) {
                SlotStatus::Expired => Err(ApiError::SlotExpired { slot_id }),
                SlotStatus::Completed => Err(ApiError::SlotNotActive { slot_id, payment_id: None }),
                // Live in PostgreSQL but unknown to Redis: Redis lost the product's state.
                SlotStatus::Active => Err(recovery::not_loaded(state, product_id)),
            }
        }
    }
}

/// Submits the charge of a payment this request created. A gateway that is unavailable
/// leaves it queued for the payments worker; one that declines fails the payment.
async fn submit_charge(state: &AppState, product_id: Uuid, payment_id: Uuid, view: &PaymentView) {
    let payments = &state.payments;
    let request = ChargeRequest {
        reference: payment_id,
        amount: view.amount,
        currency: view.currency.clone(),
        method: view.method.clone(),
    };
    let submitted =
        tokio::time::timeout(payments.gateway_timeout, payments.gateway.charge(request)).await;
    let result = match submitted {
        Ok(Ok(())) => {
            let reconcile_at = state.clock.now_ms() + payments.reconcile_after.as_millis() as i64;
            payments.store.charge_submitted(product_id, payment_id, reconcile_at).await
        }
        Ok(Err(GatewayError::Declined(reason))) => {
            let now = state.clock.now_ms();
            payments.store.settle(product_id, payment_id, Some(&reason), now).await.map(drop)
        }
        Ok(Err(e @ GatewayError::Unavailable(_))) => {
            tracing::warn!(%payment_id, error = %e, "charge not submitted; the worker retries");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(%payment_id, "charge submission timed out; the worker retries");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::warn!(%payment_id, error = %e, "recording the charge submission failed");
    }
}

#[utoipa::path(
    get,
    path = "/payments/{id}",
    tag = "buyers",
    security(("edge" = [])),
    params(("id" = String, Path, description = "The payment id (a UUID)")),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The payment is another buyer's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such payment (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    edge: EdgeContext,
    Path(id): Path<String>,
) -> ApiResult<Json<PaymentView>> {
    let payment_id = parse_id(&id, "payment")?;
    let record = load(&state, payment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no payment {payment_id}")))?;
    if record.user_id != edge.user_id {
        return Err(ApiError::Forbidden("this payment belongs to another buyer".into()));
    }
    Ok(Json(record.view))
}

/// What the webhook answers: where the payment ended up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookAnswer {
    payment_id: Uuid,
    /// `completed`, `failed`, `refund_required` or `already_settled`.
    #[schema(value_type = String)]
    outcome: &'static str,
}

#[utoipa::path(
    post,
    path = "/payments/webhook",
    tag = "processor",
    security(("gateway" = [])),
    request_body(content = String, description = "The processor's event, signed", content_type = "application/json"),
    responses(
        (status = 200, description = "Applied (or applied before)", body = WebhookAnswer),
        (status = 401, description = "The signature is missing, wrong or stale", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such pending payment (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAnswer>> {
    let now_ms = state.clock.now_ms();
    let event = state
        .payments
        .gateway
        .parse_webhook(&headers, &body, now_ms.div_euclid(1000))
        .map_err(ApiError::from)?;
    let payment_id = event.reference;
    let product_id = payment_product(&state, payment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no payment {payment_id}")))?;
    let failure = match &event.outcome {
        Outcome::Succeeded => None,
        Outcome::Failed { reason } => Some(reason.as_str()),
    };
    // The webhook belongs to the payment's trace (the processor knows nothing of it).
    let span = tracing::info_span!("payment.webhook", %product_id, %payment_id, outcome = tracing::field::Empty);
    if let Some(fields) = state.payments.store.payment(product_id, payment_id).await?
        && let Some(traceparent) = fields.get("traceparent")
    {
        crate::telemetry::continue_from(&span, traceparent);
    }
    // Read before settling: a rebuild that finishes between the two must not turn "Redis
    // lost it" (503, the processor retries) into "unknown" (404, it gives up).
    let loaded = state.inventory.remaining(product_id).await?.is_some();
    let settled = state
        .payments
        .store
        .settle(product_id, payment_id, failure, now_ms)
        .instrument(span.clone())
        .await?;
    let outcome = match settled {
        Settlement::Completed => "completed",
        Settlement::Failed => "failed",
        Settlement::RefundRequired => {
            refund(&state, product_id, payment_id).await;
            "refund_required"
        }
        Settlement::AlreadySettled { .. } => "already_settled",
        Settlement::Unknown => {
            return match pg::products::find(&state.db, product_id).await? {
                // PostgreSQL has the payment but Redis had lost the product: rebuild first
                // (a no-op if a rebuild finished meanwhile).
                Some(_) if !loaded => Err(recovery::not_loaded(&state, product_id)),
                _ => Err(ApiError::NotFound(format!("no pending payment {payment_id}"))),
            };
        }
    };
    state.metrics.payments.get_or_create(&PaymentLabels { event: outcome }).inc();
    span.record("outcome", outcome);
    tracing::info!(%payment_id, outcome, "payment settled");
    Ok(Json(WebhookAnswer { payment_id, outcome }))
}

/// Refunds a payment that succeeded too late; on failure the payments worker retries.
async fn refund(state: &AppState, product_id: Uuid, payment_id: Uuid) -> bool {
    match state.payments.refund_one(product_id, payment_id, state.clock.now_ms()).await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(%payment_id, error = %e, "refund not made yet; the worker retries");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Validation { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_bodies_and_names_the_bad_field() {
        let id = Uuid::now_v7();
        let ok =
            PaymentRequest::parse(format!(r#"{{"slotId":"{id}","method":"card"}}"#).as_bytes())
                .unwrap();
        assert_eq!((ok.slot_id, ok.method.as_str()), (id, "card"));
        let cases = [
            (String::from("nope"), "body"),
            (r#"{"method":"card"}"#.into(), "slotId"),
            (r#"{"slotId":"x","method":"card"}"#.into(), "slotId"),
            (format!(r#"{{"slotId":"{id}"}}"#), "method"),
            (format!(r#"{{"slotId":"{id}","method":"Card!"}}"#), "method"),
            (format!(r#"{{"slotId":"{id}","method":""}}"#), "method"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(PaymentRequest::parse(body.as_bytes()).unwrap_err()), field);
        }
    }

    #[test]
    fn the_fingerprint_ignores_spelling_but_not_content() {
        let id = Uuid::now_v7();
        let a = PaymentRequest::parse(format!(r#"{{"slotId":"{id}","method":"card"}}"#).as_bytes())
            .unwrap();
        let b = PaymentRequest::parse(
            format!(r#"{{ "method": "card", "slotId": "{id}" }}"#).as_bytes(),
        )
        .unwrap();
        let c = PaymentRequest { method: "paypal".into(), ..a.clone() };
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(field_of(IdempotencyKey::from_headers(&h).unwrap_err()), "Idempotency-Key");
        for bad in ["", "has space", &"k".repeat(256)] {
            h.insert("idempotency-key", HeaderValue::from_str(bad).unwrap());
            assert_eq!(field_of(IdempotencyKey::from_headers(&h).unwrap_err()), "Idempotency-Key");
        }
        h.insert("idempotency-key", HeaderValue::from_static("order-42_retry.1"));
        assert_eq!(IdempotencyKey::from_headers(&h).unwrap().as_str(), "order-42_retry.1");
    }
}
