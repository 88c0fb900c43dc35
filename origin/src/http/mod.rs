//! What answers a request: one module per resource with its `router()`, the edge and admin
//! extractors, tracing, paging and `/health`. Handlers parse input into domain types,
//! call `store`, `pg`, `payments` or `recovery`, and render; the one error they return is
//! rendered once (`crate::error`).

pub mod admin_auth;
pub mod audit;
pub mod console;
pub mod edge_auth;
pub mod health;
pub mod openapi;
pub mod pagination;
pub mod payments;
pub mod products;
#[cfg(test)]
mod properties;
pub mod queue;
pub mod recovery;
pub mod slots;
pub mod trace;
pub mod transparency;

use crate::error::ApiError;
use crate::metrics;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;
use uuid::Uuid;

/// Every route: buyer routes behind the edge signature, admin routes (checked per
/// handler), the processor's webhook, then `/health` and `/metrics`, which answer even while
/// the schema is migrating.
pub fn router(state: AppState) -> Router {
    // Signed writes are decided once: an acquisition in its script, the others here.
    let decided_once = Router::new()
        .merge(payments::router())
        .merge(queue::router())
        .route_layer(from_fn_with_state(state.clone(), edge_auth::decide_once));
    let buyer = Router::new()
        .merge(slots::router())
        .merge(products::buyer_router())
        .merge(transparency::buyer_router())
        .merge(decided_once)
        .route_layer(from_fn_with_state(state.clone(), edge_auth::require_edge_signature));
    let admin = Router::new()
        .merge(products::admin_router())
        .merge(queue::admin_router())
        .merge(console::admin_router())
        .merge(recovery::admin_router())
        .merge(audit::admin_router());
    // A buyer's slots, payments and place in line, and what an operator reads, are nobody
    // else's: no cache on the way keeps them (a handler that allows caching says so itself).
    let private =
        Router::new().merge(buyer).merge(admin).layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    Router::new()
        .merge(private)
        .merge(payments::webhook_router())
        .merge(transparency::public_router())
        .route_layer(from_fn_with_state(state.clone(), health::require_schema))
        .route("/health", get(health::check))
        .merge(console::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .route("/metrics", get(metrics::endpoint))
        .route("/openapi.json", get(openapi::document))
        .layer(DefaultBodyLimit::max(64 * 1024))
        // No answer is to be read as another content type than it says (problem+json, JSON).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(from_fn(trace::layer))
        .with_state(state)
}

/// An id from a path: not a UUID is a 404 naming what was asked for.
pub fn parse_id(raw: &str, what: &str) -> crate::error::ApiResult<Uuid> {
    // The one form the edge recognises too (flashgate_core::routes::parse_id): another
    // spelling of an id must not reach past the edge's shield.
    flashgate_core::routes::parse_id(raw).ok_or_else(|| {
        ApiError::NotFound(format!(
            "`{raw}` is not a {what} id (ids are UUIDs, 36 characters with hyphens)"
        ))
    })
}
