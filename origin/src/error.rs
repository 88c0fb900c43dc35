//! The origin's one error type, mapped once to problem+json.
//!
//! Internal causes are logged with their chain and answered with an opaque 500; a dependency
//! that is down is a fast 503 with `Retry-After`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flashgate_core::problem::Problem;
use flashgate_core::signing::SignatureError;
use flashgate_core::token::TokenError;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("edge signature: {0}")]
    EdgeSignature(#[from] SignatureError),
    #[error("edge headers: {0}")]
    EdgeHeaders(String),
    #[error("token: {0}")]
    Token(#[from] TokenError),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("invalid {field}: {detail}")]
    Validation { field: String, detail: String },
    #[error("body too large")]
    PayloadTooLarge,
    #[error("sold out")]
    SoldOut { product_id: Uuid },
    #[error("already holding {slot_id}")]
    AlreadyHolding { slot_id: Uuid },
    #[error("not on sale until {sale_starts_at}")]
    NotOnSale { sale_starts_at: String, starts_ms: i64 },
    #[error("sale ended at {sale_ended_at}")]
    SaleEnded { sale_ended_at: String },
    #[error("sale start locked: {granted} slots granted")]
    SaleStartLocked { granted: i64 },
    #[error("{slots} active slots")]
    HasActiveSlots { slots: i64 },
    #[error("slot {slot_id} expired")]
    SlotExpired { slot_id: Uuid },
    #[error("slot {slot_id} is not active")]
    SlotNotActive { slot_id: Uuid, payment_id: Option<Uuid> },
    #[error("edge-signed request replayed")]
    Replayed,
    #[error("busy: {0}")]
    Busy(String),
    #[error("idempotency key reused with another body")]
    IdempotencyKeyReused,
    #[error("not in the queue of {product_id}")]
    NotInQueue { product_id: Uuid },
    #[error("the queue of {product_id} is full")]
    QueueFull { product_id: Uuid },
    #[error("{0}")]
    Webhook(#[from] crate::gateway::WebhookError),
    #[error("{component} unavailable")]
    Unavailable { component: &'static str, detail: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn validation(field: &str, detail: impl Into<String>) -> Self {
        Self::Validation { field: field.to_owned(), detail: detail.into() }
    }

    pub(crate) fn problem(&self) -> Problem {
        match self {
            Self::EdgeSignature(e) => Problem::unauthorized(e.to_string()),
            Self::EdgeHeaders(detail) => Problem::unauthorized(detail.clone()),
            Self::Token(e) => Problem::unauthorized(e.to_string()),
            Self::Forbidden(detail) => Problem::new(403, "forbidden", "Forbidden", detail.clone()),
            Self::NotFound(detail) => Problem::not_found(detail.clone()),
            Self::MethodNotAllowed => Problem::new(
                405,
                "method-not-allowed",
                "Method not allowed",
                "this method is not allowed on this path",
            ),
            Self::Validation { field, detail } => {
                Problem::unprocessable(format!("{field}: {detail}")).with("field", field.clone())
            }
            Self::PayloadTooLarge => Problem::new(
                413,
                "body-too-large",
                "Request body too large",
                "the request body is too large",
            ),
            Self::SoldOut { product_id } => Problem::sold_out(&product_id.to_string()),
            Self::AlreadyHolding { slot_id } => Problem::already_holding(&slot_id.to_string()),
            Self::NotOnSale { sale_starts_at, starts_ms } => {
                Problem::not_on_sale(sale_starts_at, *starts_ms)
            }
            Self::SaleEnded { sale_ended_at } => Problem::sale_ended(sale_ended_at),
            Self::SaleStartLocked { granted } => Problem::new(
                409,
                "sale-start-locked",
                "Sale start is locked",
                "saleStartsAt cannot change once slots have been granted",
            )
            .with("grantedSlots", *granted),
            Self::HasActiveSlots { slots } => Problem::new(
                409,
                "has-active-slots",
                "Product has active slots",
                format!("{slots} slots are still active; delete once they are paid or expired"),
            )
            .with("activeSlots", *slots),
            Self::SlotExpired { slot_id } => Problem::new(
                409,
                "slot-expired",
                "Slot expired",
                "the slot passed its payment deadline; its unit went back on sale",
            )
            .with("slotId", slot_id.to_string()),
            Self::SlotNotActive { slot_id, payment_id } => {
                let problem = Problem::new(
                    409,
                    "slot-not-active",
                    "Slot not payable",
                    match payment_id {
                        Some(_) => "a payment for this slot is already in flight",
                        None => "this slot is already paid",
                    },
                )
                .with("slotId", slot_id.to_string());
                match payment_id {
                    Some(p) => problem.with("paymentId", p.to_string()),
                    None => problem,
                }
            }
            Self::Busy(detail) => {
                Problem::new(429, "busy", "Too many requests", detail.clone()).with("retryAfter", 1)
            }
            Self::Replayed => Problem::new(
                409,
                "replayed",
                "Request replayed",
                "this edge-signed request was answered before; a new attempt goes through the edge",
            ),
            Self::IdempotencyKeyReused => Problem::new(
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was used with another body; use a new key for a new request",
            )
            .with("field", "Idempotency-Key"),
            Self::NotInQueue { product_id } => Problem::new(
                404,
                "not-in-queue",
                "Not in the queue",
                "you are not in this product's queue: join it with POST /queue/{productId}",
            )
            .with("productId", product_id.to_string()),
            Self::QueueFull { product_id } => Problem::new(
                503,
                "queue-full",
                "Queue full",
                "this product's queue is full; try again later",
            )
            .with("productId", product_id.to_string())
            .with("retryAfter", 30),
            Self::Webhook(e) => match e {
                crate::gateway::WebhookError::Signature(d) => {
                    Problem::new(401, "webhook-signature", "Webhook not authentic", d.clone())
                }
                crate::gateway::WebhookError::Malformed(d) => {
                    Problem::new(400, "webhook-malformed", "Webhook not understood", d.clone())
                }
            },
            Self::Unavailable { component, .. } => {
                Problem::unavailable(format!("{component} is unavailable; retry shortly"), 1)
                    .with("component", *component)
            }
            Self::Internal(_) => Problem::internal(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(e) => tracing::error!(error = ?e, "internal error"),
            Self::Unavailable { component, detail } => {
                tracing::warn!(component, detail, "dependency unavailable")
            }
            _ => tracing::debug!(error = %self, "request refused"),
        }
        respond(self.problem())
    }
}

/// The origin's one rendering of a problem: its status and headers ([`Problem::headers`],
/// as the edge and its host render them) here, its body with the request's trace id by
/// `trace::layer`.
pub fn respond(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = status.into_response();
    for (name, value) in problem.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response.extensions_mut().insert(problem);
    response
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        // LOADING: Redis is replaying its AOF after a restart; the others: a cluster or a
        // replica that cannot serve this key right now. All pass by themselves.
        let transient = matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN")
        );
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_connection_refusal()
            || transient
        {
            Self::Unavailable { component: "redis", detail: e.to_string() }
        } else {
            Self::Internal(anyhow::Error::new(e).context("redis"))
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                Self::Unavailable { component: "postgresql", detail: e.to_string() }
            }
            other => Self::Internal(anyhow::Error::new(other).context("postgresql")),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
