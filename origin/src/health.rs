//! `GET /health`: 200 when Redis and PostgreSQL answer, else 503 naming what is down.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashgate_core::problem::Problem;
use serde_json::json;
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn check(State(state): State<AppState>) -> Response {
    let redis = tokio::time::timeout(PROBE_TIMEOUT, state.inventory.ping());
    let pg = tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&state.db));
    let (redis, pg) = tokio::join!(redis, pg);
    let redis_up = matches!(redis, Ok(Ok(())));
    let pg_up = matches!(pg, Ok(Ok(_)));
    let status = |up: bool| if up { "up" } else { "down" };
    let components = json!({"redis": status(redis_up), "postgresql": status(pg_up)});
    if redis_up && pg_up {
        return Json(json!({"status": "ok", "components": components})).into_response();
    }
    let down: Vec<&str> = [("redis", redis_up), ("postgresql", pg_up)]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect();
    let problem = Problem::unavailable(format!("down: {}", down.join(", ")), 5)
        .with("components", components);
    let mut response =
        (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")]).into_response();
    // Rendered with the trace id by `trace::layer`.
    response.extensions_mut().insert(problem);
    response
}
