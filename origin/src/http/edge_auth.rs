//! Edge→origin trust: every buyer route requires the edge's HMAC signature and a fresh
//! arrival stamp. The verified envelope reaches handlers as [`EdgeContext`].

use crate::error::ApiError;
use crate::state::{AppState, EdgeTrust};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flashgate_core::arrival;
use flashgate_core::signing::{self, EdgeStamp, SignatureError};
use uuid::Uuid;

use flashgate_core::routes::MAX_BUYER_BODY;

/// What the edge vouched for.
#[derive(Debug, Clone)]
pub struct EdgeContext {
    pub user_id: Uuid,
    /// µs since the epoch, when the request reached the edge.
    pub arrival_us: i64,
    pub traceparent: String,
    pub edge_id: String,
    /// How long the edge held the request before forwarding it, as it reports it
    /// (unsigned: it only feeds `/metrics`).
    pub edge_elapsed_us: Option<i64>,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Result<Option<&'a str>, ApiError> {
    match parts.headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::EdgeHeaders(format!("header {name} is not ASCII"))),
    }
}

/// Middleware for the buyer routes.
pub async fn require_edge_signature(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match verify(&state.edge, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn verify(trust: &EdgeTrust, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let signature = header(&parts, signing::HEADER_SIGNATURE)?.ok_or(SignatureError::Missing)?;
    let missing = |name: &str| ApiError::EdgeHeaders(format!("header {name} is missing"));
    let user =
        header(&parts, signing::HEADER_USER)?.ok_or_else(|| missing(signing::HEADER_USER))?;
    let arrival =
        header(&parts, signing::HEADER_ARRIVAL)?.ok_or_else(|| missing(signing::HEADER_ARRIVAL))?;
    let traceparent = header(&parts, signing::HEADER_TRACEPARENT)?
        .ok_or_else(|| missing(signing::HEADER_TRACEPARENT))?;
    let edge_id =
        header(&parts, signing::HEADER_EDGE)?.ok_or_else(|| missing(signing::HEADER_EDGE))?;
    let arrival_us: u64 = arrival.parse().map_err(|_| {
        ApiError::EdgeHeaders(format!("header {} is not a µs timestamp", signing::HEADER_ARRIVAL))
    })?;
    let body: Bytes =
        axum::body::to_bytes(body, MAX_BUYER_BODY).await.map_err(|_| ApiError::PayloadTooLarge)?;
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let idempotency_key = header(&parts, "idempotency-key")?.unwrap_or("");
    let stamp = EdgeStamp { user_id: user, arrival_us, traceparent, edge_id, idempotency_key };
    signing::verify(&trust.secret, parts.method.as_str(), path, &stamp, &body, signature)?;
    let now_us = u64::try_from(trust.clock.now_us()).unwrap_or(0);
    signing::check_fresh(arrival_us, now_us, trust.max_skew.as_micros() as u64)?;
    // Signed by the edge, so well-formed unless the edge is broken; still checked.
    let user_id = Uuid::try_parse(user)
        .map_err(|_| ApiError::EdgeHeaders("the edge-vouched user id is not a UUID".into()))?;
    let ctx = EdgeContext {
        user_id,
        arrival_us: arrival_us as i64,
        traceparent: traceparent.to_owned(),
        edge_id: edge_id.to_owned(),
        edge_elapsed_us: parts
            .headers
            .get(arrival::HEADER_EDGE_ELAPSED)
            .and_then(|v| v.to_str().ok()?.parse::<i64>().ok()),
    };
    parts.extensions.insert(ctx);
    Ok(Request::from_parts(parts, Body::from(body)))
}

impl<S: Send + Sync> FromRequestParts<S> for EdgeContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<EdgeContext>()
            .cloned()
            .ok_or(ApiError::EdgeSignature(SignatureError::Missing))
    }
}
