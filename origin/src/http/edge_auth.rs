//! Edge→origin trust: every buyer route requires the edge's HMAC signature and a fresh
//! arrival stamp. The verified envelope reaches handlers as [`EdgeContext`].
//!
//! A signed write is decided once (security review, finding 3: one signed request sent three
//! times within its freshness window was accepted three times). Its id is the first 128 bits
//! of its signature, unique because the edge gives every forward a new random span id in the
//! signed `traceparent`; it is remembered in Redis for twice the freshness window plus a
//! second, past which the stamp is stale anyway. An acquisition marks it in `acquire.lua`,
//! with the decision (no extra round trip on the hot path); the other writes (a payment,
//! joining a line) claim it with one `SET NX` before their handler runs ([`decide_once`],
//! layered on their routers). Reads are not
//! guarded: sent again they change nothing.

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
    /// For a write: the request's id, decided once (`None` for a read).
    pub replay: Option<ReplayGuard>,
}

/// A signed write's id and how long it is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayGuard {
    /// 32 hex digits: the first half of the signature's tag.
    pub id: String,
    pub ttl: std::time::Duration,
}

impl ReplayGuard {
    /// The guard of a request signed `signature` (already verified), checked at `max_skew`.
    pub fn of(signature: &str, max_skew: std::time::Duration) -> Option<Self> {
        let tag = signature.split_once('=')?.1;
        let id = tag.get(..32)?.to_ascii_lowercase();
        Some(Self { id, ttl: max_skew * 2 + std::time::Duration::from_secs(1) })
    }
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

/// Middleware for the signed writes whose handler has no script to mark them seen in (a
/// payment, joining a line), inside [`require_edge_signature`]: claims the write's id, or
/// answers 409 `replayed`. (An acquisition is marked by `acquire.lua` with its decision.)
pub async fn decide_once(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let guard = req.extensions().get::<EdgeContext>().and_then(|c| c.replay.clone());
    if let Some(guard) = guard {
        match state.inventory.claim_request(&guard.id, guard.ttl).await {
            Ok(true) => {}
            Ok(false) => return ApiError::Replayed.into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    next.run(req).await
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
        replay: if parts.method.is_safe() {
            None
        } else {
            ReplayGuard::of(signature, trust.max_skew)
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_signature_gives_its_first_128_bits_as_the_id_kept_past_the_window() {
        let sig = format!("v1={}", "Ab".repeat(32));
        let guard = ReplayGuard::of(&sig, Duration::from_secs(5)).unwrap();
        assert_eq!(guard.id, "ab".repeat(16));
        assert_eq!(guard.ttl, Duration::from_secs(11));
        assert_eq!(ReplayGuard::of("v1=abc", Duration::from_secs(5)), None);
        assert_eq!(ReplayGuard::of("nothing", Duration::from_secs(5)), None);
    }
}
