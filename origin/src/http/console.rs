//! The operator console (issue #17): one screen for a live drop, served by the origin under
//! `/console` (plain HTML, CSS and JavaScript compiled in, no framework, no CDN) over the
//! admin API it calls with the operator's admin token:
//!
//! - `GET /admin/drops`: every live product, newest sale first;
//! - `GET /admin/products/{id}/live`: one drop's live figures, read from Redis (remaining,
//!   grants and refusals so far, holds, the waiting room, the outbox) and PostgreSQL (slots
//!   and payments by status), plus the edges' decisions when their metrics URLs are
//!   configured. The page polls it twice a second and turns the running totals into rates;
//! - `POST /admin/check`: the invariant checker ([`crate::check`]), as `flashgate check` runs it.
//!
//! Creating and editing drops and their waiting rooms uses the product and queue routes.

use crate::check::{self, Violation};
use crate::clock::at_ms;
use crate::error::{ApiError, ApiResult};
use crate::http::admin_auth::Admin;
use crate::http::parse_id;
use crate::http::products::ProductView;
use crate::pg;
use crate::pg::products::Window;
use crate::recovery;
use crate::state::AppState;
use crate::store::keys::ProductKeys;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const INDEX: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/console.js");
const APP_CSS: &str = include_str!("../../console/console.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Most drops the console lists.
const MAX_DROPS: i64 = 200;

/// The console's page and assets (no token needed to load them).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(page))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
}

#[utoipa::path(get, path = "/console", tag = "operators",
    responses((status = 200, description = "The operator console (it asks for an admin token)", content_type = "text/html")))]
pub(crate) async fn page() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

#[utoipa::path(get, path = "/console/console.js", tag = "operators",
    responses((status = 200, description = "The console's script", content_type = "text/javascript")))]
pub(crate) async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

#[utoipa::path(get, path = "/console/console.css", tag = "operators",
    responses((status = 200, description = "The console's style sheet", content_type = "text/css")))]
pub(crate) async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// The admin routes the console reads (admin JWT checked per handler).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/admin/drops", get(drops))
        .route("/admin/products/{id}/live", get(live))
        .route("/admin/check", post(run_check))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/admin/drops",
    tag = "operators",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Every live product, newest sale first (at most 200)", body = Vec<ProductView>),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn drops(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<ProductView>>> {
    let now_ms = state.clock.now_ms();
    let rows =
        pg::products::list(&state.db, Window::Any, at_ms(now_ms), Some((MAX_DROPS, 0))).await?;
    Ok(Json(crate::http::products::views_of(&state, rows, now_ms).await?))
}

/// One drop, live: running totals (the console turns them into rates) and current levels.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveView {
    pub product: ProductView,
    /// When these figures were read (ms since the epoch).
    pub at_ms: i64,
    /// Slots granted so far (Redis).
    pub granted: i64,
    /// Acquisitions the origins refused so far (sold out, not on sale, ended, holding; added
    /// to Redis once a second by each origin).
    pub refused: i64,
    /// Slots held and not yet paid (or expired).
    pub active_holds: i64,
    /// Slots in PostgreSQL by status (`ACTIVE`, `COMPLETED`, `EXPIRED`).
    pub slots: BTreeMap<String, i64>,
    /// Payments in PostgreSQL by status.
    pub payments: BTreeMap<String, i64>,
    pub queue: QueueLive,
    /// Outbox entries not yet relayed, and the age of the oldest (s).
    pub outbox_undelivered: u64,
    pub outbox_lag_seconds: f64,
    /// Sold-out refusals stamped before a grant (each a possible fairness inversion), and how
    /// many of them arrived later than the fairness window (the network's).
    pub refused_before_grant: u64,
    pub refused_before_grant_late: u64,
    /// The fairness window in force (ms).
    pub fairness_window_ms: f64,
    /// Every configured edge's requests so far by decision (`forwarded`, `sold-out`, …), all
    /// products together; absent when no edge metrics URL is configured.
    pub edge: Option<BTreeMap<String, f64>>,
}

/// A drop's waiting room, live.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueLive {
    /// `off`, `always` or `auto`.
    pub mode: String,
    pub on: bool,
    pub waiting: u64,
    /// Buyers admitted so far.
    pub admitted: u64,
    /// Passes out (admitted, not yet holding, not expired).
    pub passes_out: u64,
    /// Admissions a second in force.
    pub admit_per_second: u32,
    /// Joins that arrived after someone behind them had been admitted.
    pub late_joins: u64,
}

#[utoipa::path(
    get,
    path = "/admin/products/{id}/live",
    tag = "operators",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    responses(
        (status = 200, description = "The drop's live figures", body = LiveView),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn live(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<LiveView>> {
    let product_id = parse_id(&id, "product")?;
    let row = pg::products::find(&state.db, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    let keys = ProductKeys::new(product_id);
    let mut pipe = redis::pipe();
    pipe.cmd("HMGET").arg(keys.product()).arg("remaining").arg("granted");
    pipe.cmd("GET").arg(keys.refusals());
    pipe.cmd("ZCARD").arg(keys.expiry());
    pipe.cmd("XLEN").arg(keys.outbox());
    pipe.cmd("XRANGE").arg(keys.outbox()).arg("-").arg("+").arg("COUNT").arg(1);
    pipe.cmd("ZRANGE").arg(keys.refused()).arg(0).arg(-1);
    pipe.cmd("ZCARD").arg(keys.queue_waiting());
    pipe.cmd("ZCARD").arg(keys.queue_admitted());
    pipe.cmd("HMGET").arg(keys.queue()).arg("seq").arg("late");
    #[allow(clippy::type_complexity)]
    let (
        (remaining, granted),
        refused,
        active_holds,
        undelivered,
        first,
        refused_before,
        waiting,
        passes_out,
        (admitted, late),
    ): (
        (Option<i64>, Option<i64>),
        Option<i64>,
        i64,
        u64,
        redis::streams::StreamRangeReply,
        Vec<String>,
        u64,
        u64,
        (Option<u64>, Option<u64>),
    ) = pipe.query_async(&mut state.inventory.connection()).await?;
    let remaining = remaining.ok_or_else(|| recovery::not_loaded(&state, product_id))?;
    let now_ms = state.clock.now_ms();
    let oldest_ms = first.ids.first().and_then(|e| e.id.split('-').next()?.parse::<i64>().ok());
    let late_refusals = refused_before.iter().filter(|m| m.ends_with(":1")).count() as u64;
    let settings =
        crate::http::queue::settings_view(&state, product_id, i64::from(row.stock)).await?;
    let queue = QueueLive {
        mode: settings.as_ref().map_or("off", |s| s.mode).to_owned(),
        on: settings.as_ref().is_some_and(|s| s.on),
        waiting,
        admitted: admitted.unwrap_or(0),
        passes_out,
        admit_per_second: settings.as_ref().map_or(0, |s| s.admit_per_second),
        late_joins: late.unwrap_or(0),
    };
    let slots = pg::slots::counts_by_status(&state.db, product_id).await?.into_iter().collect();
    let payments =
        pg::purchases::counts_by_status(&state.db, product_id).await?.into_iter().collect();
    let mut product = ProductView::new(row, remaining, now_ms);
    product.queue = settings;
    Ok(Json(LiveView {
        product,
        at_ms: now_ms,
        granted: granted.unwrap_or(0),
        refused: refused.unwrap_or(0),
        active_holds,
        slots,
        payments,
        queue,
        outbox_undelivered: undelivered,
        outbox_lag_seconds: oldest_ms.map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0),
        refused_before_grant: refused_before.len() as u64,
        refused_before_grant_late: late_refusals,
        fairness_window_ms: state.fairness.window().as_secs_f64() * 1000.0,
        edge: state.edge_metrics.decisions().await,
    }))
}

/// What `POST /admin/check` found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckView {
    pub ok: bool,
    pub products: u64,
    pub slots_in_postgres: u64,
    pub undelivered: u64,
    pub inversions: u64,
    pub late_inversions: u64,
    pub queue_admissions: u64,
    pub queue_inversions: u64,
    pub queue_late_joins: u64,
    /// Violations per invariant, 1 to 6.
    pub counts: [u64; 6],
    pub violations: Vec<ViolationView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationView {
    pub invariant: u8,
    pub product_id: Uuid,
    pub detail: String,
}

impl From<Violation> for ViolationView {
    fn from(v: Violation) -> Self {
        Self { invariant: v.invariant, product_id: v.product_id, detail: v.detail }
    }
}

#[utoipa::path(
    post,
    path = "/admin/check",
    tag = "operators",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Every invariant checked from stored state (`ok`: no violation)", body = CheckView),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn run_check(
    State(state): State<AppState>,
    admin: Admin,
) -> ApiResult<Json<CheckView>> {
    // One at a time: a check reads every product from Redis and PostgreSQL.
    let _running =
        state.checks.clone().try_acquire_owned().map_err(|_| {
            ApiError::Busy("an invariant check is running; retry when it ends".into())
        })?;
    let report = check::check(&state.db, &state.inventory.connection(), Duration::ZERO)
        .await
        .map_err(|e| match e.downcast::<redis::RedisError>() {
            Ok(e) => ApiError::from(e),
            Err(e) => match e.downcast::<sqlx::Error>() {
                Ok(e) => ApiError::from(e),
                Err(e) => ApiError::Internal(e),
            },
        })?;
    tracing::info!(admin = %admin.user_id, ok = report.ok(), violations = report.violations.len(), "invariant check from the console");
    Ok(Json(CheckView {
        ok: report.ok(),
        products: report.products,
        slots_in_postgres: report.slots_in_postgres,
        undelivered: report.undelivered,
        inversions: report.inversions,
        late_inversions: report.late_inversions,
        queue_admissions: report.queue_admissions,
        queue_inversions: report.queue_inversions,
        queue_late_joins: report.queue_late_joins,
        counts: report.counts(),
        violations: report.violations.into_iter().map(ViolationView::from).collect(),
    }))
}
