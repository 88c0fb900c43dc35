//! `GET /health`: 200 when Redis, PostgreSQL and (if configured) Kafka answer, else 503
//! naming what is down. Redis also counts as down while it does not persist every write
//! before answering (unless `--allow-volatile-redis`): see [`crate::store::durability`].
//! PostgreSQL counts as `migrating` while a degraded start waits to migrate its schema, and
//! [`require_schema`] answers every other route 503 until it is done.

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::durability::Persistence;
use axum::Json;
use axum::extract::Request;
use axum::extract::State;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flashgate_core::problem::Problem;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What each dependency's probe found: `up`, `down`, or for Redis `not-durable`, for
/// PostgreSQL `migrating`, for Kafka `not-configured`.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub redis: &'static str,
    pub postgresql: &'static str,
    pub kafka: &'static str,
}

impl Probe {
    pub fn statuses(&self) -> [(&'static str, &'static str); 3] {
        [("redis", self.redis), ("postgresql", self.postgresql), ("kafka", self.kafka)]
    }
}

/// Probes every dependency at once, each within [`PROBE_TIMEOUT`].
pub async fn probe(state: &AppState) -> Probe {
    let redis = tokio::time::timeout(PROBE_TIMEOUT, async {
        state.inventory.ping().await?;
        let persistence = Persistence::of(&state.inventory).await?;
        state.durability.record(&persistence);
        Ok::<_, redis::RedisError>(persistence)
    });
    let pg = tokio::time::timeout(PROBE_TIMEOUT, crate::pg::ping(&state.db));
    let kafka = async {
        match &state.kafka {
            Some(producer) => Some(producer.ping().await),
            None => None,
        }
    };
    let (redis, pg, kafka) = tokio::join!(redis, pg, kafka);
    let redis = match &redis {
        Ok(Ok(Persistence::Volatile(_))) if !state.durability.allows_volatile() => "not-durable",
        Ok(Ok(_)) => "up",
        _ => "down",
    };
    let migrated = state.schema_ready.load(Ordering::Acquire);
    let postgresql = match pg {
        Ok(Ok(_)) if migrated => "up",
        Ok(Ok(_)) => "migrating",
        _ => "down",
    };
    let kafka = match kafka {
        None => "not-configured",
        Some(true) => "up",
        Some(false) => "down",
    };
    Probe { redis, postgresql, kafka }
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = crate::http::openapi::HealthDoc),
        (status = 503, description = "Down: `components` names what", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn check(State(state): State<AppState>) -> Response {
    let statuses = probe(&state).await.statuses();
    let components: serde_json::Map<String, serde_json::Value> =
        statuses.iter().map(|(name, status)| (name.to_string(), json!(status))).collect();
    // Every status but these two means the component cannot serve; the summary says why.
    let down: Vec<String> = statuses
        .iter()
        .filter(|(_, status)| !matches!(*status, "up" | "not-configured"))
        .map(|(name, status)| match *status {
            "not-durable" => format!("{name} (does not persist every write)"),
            "migrating" => format!("{name} (schema not migrated yet)"),
            _ => name.to_string(),
        })
        .collect();
    if down.is_empty() {
        return Json(json!({"status": "ok", "components": components})).into_response();
    }
    crate::error::respond(
        Problem::unavailable(format!("down: {}", down.join(", ")), 5)
            .with("components", components),
    )
}

/// Answers 503 while PostgreSQL's schema is not migrated yet (a degraded start).
pub async fn require_schema(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.schema_ready.load(Ordering::Acquire) {
        return next.run(request).await;
    }
    ApiError::Unavailable {
        component: "postgresql",
        detail: "the schema is not migrated yet".into(),
    }
    .into_response()
}
