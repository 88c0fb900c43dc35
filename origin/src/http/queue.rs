//! The waiting room (issue #17): a buyer's place in a product's line and, once admitted, their
//! queue pass (`GET /queue/{productId}`); joining the line (`POST /queue/{productId}`, and
//! an acquisition without a valid pass while the room is on); an operator's settings
//! (`PUT /products/{id}/queue`).

use crate::clock::rfc3339_ms;
use crate::error::{ApiError, ApiResult};
use crate::http::admin_auth::Admin;
use crate::http::edge_auth::EdgeContext;
use crate::http::parse_id;
use crate::http::products::read_json;
use crate::pg;
use crate::pg::queues::QueueRow;
use crate::state::AppState;
use crate::store::queue::Room;
use crate::store::scripts::queue::Place;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use flashgate_core::queue::{
    self as rules, HEADER_QUEUE_MODE, QueueMode, QueueOrder, estimated_wait_secs,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// How often a waiting buyer is asked to look again: every 2 s near the head of the line,
/// up to every 30 s far back (a quarter of the estimated wait).
const MIN_POLL_SECS: u64 = 2;
const MAX_POLL_SECS: u64 = 30;

/// Buyer routes (mounted behind the edge signature).
pub fn router() -> Router<AppState> {
    Router::new().route("/queue/{id}", get(look).post(join))
}

/// Admin routes (admin JWT checked per handler).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/products/{id}/queue", put(configure))
}

/// Where a buyer stands in a product's line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub product_id: Uuid,
    /// `OPEN` (no waiting room: acquire directly), `WAITING`, `ADMITTED` (acquire with
    /// `pass` in the `X-Queue-Pass` header before `passExpiresAt`) or `HOLDING` (the buyer
    /// holds a slot of it: `slotId`).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admit_per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<Uuid>,
    /// When to look again (seconds), while waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_after_seconds: Option<u64>,
}

impl QueueView {
    fn new(product_id: Uuid, status: &'static str) -> Self {
        Self {
            product_id,
            status,
            position: None,
            queue_length: None,
            estimated_wait_seconds: None,
            admit_per_second: None,
            pass: None,
            pass_expires_at: None,
            slot_id: None,
            poll_after_seconds: None,
        }
    }
}

/// A product's waiting-room settings, as operators set them and buyers see them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettingsView {
    /// `off`, `always` or `auto`.
    pub mode: &'static str,
    /// `fifo` or `lottery`.
    pub order: &'static str,
    /// Admissions a second in force (the operator's, or derived from stock and hold time).
    pub admit_per_second: u32,
    /// What the operator set (`null`: derived).
    pub admit_per_second_set: Option<i32>,
    /// Acquisitions in one second that turn an `auto` room on.
    pub auto_threshold: u64,
    /// Whether acquisitions need a queue pass now.
    pub on: bool,
}

/// The waiting-room settings of `product_id` (of `stock` units), if it has any.
pub(crate) async fn settings_view(
    state: &AppState,
    product_id: Uuid,
    stock: i64,
) -> ApiResult<Option<QueueSettingsView>> {
    let Some(row) = pg::queues::find(&state.db, product_id).await? else { return Ok(None) };
    let (mode, order) = parse_row(&row)?;
    let settings = crate::store::queue::settings_of(
        mode,
        order,
        row.admit_per_second,
        row.auto_threshold,
        stock,
        0,
        state.inventory.lifecycle().hold,
    );
    Ok(Some(QueueSettingsView {
        mode: mode.as_str(),
        order: order.as_str(),
        admit_per_second: settings.rate,
        admit_per_second_set: row.admit_per_second,
        auto_threshold: settings.auto_threshold,
        on: state.rooms.room(product_id).is_some_and(|r| r.is_on()),
    }))
}

fn parse_row(row: &QueueRow) -> ApiResult<(QueueMode, QueueOrder)> {
    let mode = QueueMode::parse(&row.mode)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("stored queue mode {:?}", row.mode)))?;
    let order = QueueOrder::parse(&row.line_order).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("stored queue order {:?}", row.line_order))
    })?;
    Ok((mode, order))
}

#[utoipa::path(
    get,
    path = "/queue/{id}",
    tag = "buyers",
    security(("edge" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    responses(
        (status = 200, description = "Where the buyer stands: waiting (position, estimated wait, when to look again), admitted (a queue pass), holding, or open (no waiting room)", body = QueueView),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product, or the buyer is not in its line (`not-in-queue`)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Sold out (nobody waiting is admitted any more) or the sale ended", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn look(
    State(state): State<AppState>,
    edge: EdgeContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let product_id = parse_id(&id, "product")?;
    place(&state, &edge, product_id, false).await
}

#[utoipa::path(
    post,
    path = "/queue/{id}",
    tag = "buyers",
    security(("edge" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    responses(
        (status = 202, description = "In line (joined now or before): position and estimated wait", body = QueueView, headers(("location" = String, description = "/queue/{productId}"))),
        (status = 200, description = "Admitted (a queue pass), holding, or open (no waiting room)", body = QueueView),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Sold out or the sale ended", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The line is full, or a dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn join(
    State(state): State<AppState>,
    edge: EdgeContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let product_id = parse_id(&id, "product")?;
    place(&state, &edge, product_id, true).await
}

/// Where the buyer stands in `product_id`'s line (joining it when `join`), as an answer that
/// tells the edge whether the product is queued.
pub(crate) async fn place(
    state: &AppState,
    edge: &EdgeContext,
    product_id: Uuid,
    join: bool,
) -> ApiResult<Response> {
    let Some(room) = state.rooms.room(product_id).filter(|r| r.is_on()) else {
        if state.inventory.remaining(product_id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no product {product_id}")));
        }
        return Ok(with_mode(Json(QueueView::new(product_id, "OPEN")).into_response(), false));
    };
    let now_ms = state.clock.now_ms();
    let arrival_us = u64::try_from(edge.arrival_us).unwrap_or(0);
    let pseudonym = state.transparency.as_ref().map(|t| t.pseudonym(product_id, edge.user_id));
    let answer = state
        .rooms
        .place(product_id, &room, edge.user_id, arrival_us, now_ms, join, pseudonym)
        .await?;
    // Refusals too say the room is on (a buyer's first look is usually `not-in-queue`).
    let response = answer_of(state, &room, product_id, edge.user_id, join, answer)
        .unwrap_or_else(IntoResponse::into_response);
    Ok(with_mode(response, true))
}

fn answer_of(
    state: &AppState,
    room: &Room,
    product_id: Uuid,
    user_id: Uuid,
    join: bool,
    place: Place,
) -> ApiResult<Response> {
    let rate = room.settings.rate;
    Ok(match place {
        // A room exists only for a product PostgreSQL has: Redis lost its sale state.
        Place::Unknown => return Err(crate::recovery::not_loaded(state, product_id)),
        Place::Ended { ends_ms } => {
            return Err(ApiError::SaleEnded { sale_ended_at: rfc3339_ms(ends_ms) });
        }
        Place::SoldOut => return Err(ApiError::SoldOut { product_id }),
        Place::Absent { .. } => return Err(ApiError::NotInQueue { product_id }),
        Place::Full { .. } => return Err(ApiError::QueueFull { product_id }),
        Place::Holding { slot_id } => {
            let mut view = QueueView::new(product_id, "HOLDING");
            view.slot_id = Some(slot_id);
            Json(view).into_response()
        }
        Place::Admitted { pass_expires_ms, waiting } => {
            let expires = u64::try_from(pass_expires_ms).unwrap_or(0);
            let mut view = QueueView::new(product_id, "ADMITTED");
            view.pass = Some(rules::sign_pass(
                &state.edge.secret,
                &product_id.to_string(),
                &user_id.to_string(),
                expires,
            ));
            view.pass_expires_at = Some(rfc3339_ms(pass_expires_ms));
            view.queue_length = Some(waiting);
            Json(view).into_response()
        }
        Place::Waiting { position, waiting, joined } => {
            let mut view = QueueView::new(product_id, "WAITING");
            view.position = Some(position);
            view.queue_length = Some(waiting);
            let wait = estimated_wait_secs(position, rate);
            view.estimated_wait_seconds = Some(wait);
            view.admit_per_second = Some(rate);
            // Far back in line, looking often only loads the edge and the origin.
            view.poll_after_seconds = Some((wait / 4).clamp(MIN_POLL_SECS, MAX_POLL_SECS));
            if joined {
                tracing::debug!(%product_id, %user_id, position, "joined the queue");
            }
            if !join {
                return Ok(Json(view).into_response());
            }
            let location = (header::LOCATION, format!("/queue/{product_id}"));
            (StatusCode::ACCEPTED, [location], Json(view)).into_response()
        }
    })
}

/// Tells the edge whether `product`'s acquisitions need a pass ([`HEADER_QUEUE_MODE`]).
pub(crate) fn with_mode(mut response: Response, queued: bool) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static(HEADER_QUEUE_MODE),
        HeaderValue::from_static(if queued { "1" } else { "0" }),
    );
    response
}

/// The expiry (ms) of the pass an acquisition carries, if it is signed for this buyer and
/// product and live now. (Whether it is still unspent, `acquire.lua` decides with the grant.)
pub(crate) fn valid_pass(
    state: &AppState,
    pass: Option<&str>,
    product_id: Uuid,
    user_id: Uuid,
) -> Option<u64> {
    let now_ms = u64::try_from(state.clock.now_ms()).unwrap_or(0);
    rules::verify_pass(
        &state.edge.secret,
        pass?,
        &product_id.to_string(),
        &user_id.to_string(),
        now_ms,
    )
    .ok()
}

/// An operator's waiting-room settings for a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub mode: QueueMode,
    pub order: QueueOrder,
    pub admit_per_second: Option<i32>,
    pub auto_threshold: Option<i32>,
}

impl QueueSettings {
    /// Validates `{mode, order?, admitPerSecond?, autoThreshold?}`, naming the first wrong
    /// field.
    pub fn parse(v: &Value) -> ApiResult<Self> {
        if !v.is_object() {
            return Err(ApiError::validation("body", "must be a JSON object"));
        }
        let mode = v
            .get("mode")
            .and_then(Value::as_str)
            .and_then(QueueMode::parse)
            .ok_or_else(|| ApiError::validation("mode", "must be one of off, always, auto"))?;
        let order = match v.get("order").filter(|o| !o.is_null()) {
            None => QueueOrder::Fifo,
            Some(o) => o
                .as_str()
                .and_then(QueueOrder::parse)
                .ok_or_else(|| ApiError::validation("order", "must be fifo or lottery"))?,
        };
        let bounded = |name: &str, max: i64| -> ApiResult<Option<i32>> {
            match v.get(name).filter(|x| !x.is_null()) {
                None => Ok(None),
                Some(x) => x
                    .as_i64()
                    .filter(|n| (1..=max).contains(n))
                    .map(|n| Some(n as i32))
                    .ok_or_else(|| {
                        ApiError::validation(name, format!("must be an integer from 1 to {max}"))
                    }),
            }
        };
        Ok(Self {
            mode,
            order,
            admit_per_second: bounded("admitPerSecond", 100_000)?,
            auto_threshold: bounded("autoThreshold", 10_000_000)?,
        })
    }
}

#[utoipa::path(
    put,
    path = "/products/{id}/queue",
    tag = "operators",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    request_body(content = crate::http::openapi::QueueBody),
    responses(
        (status = 200, description = "The settings in force (admission follows within a second)", body = QueueSettingsView),
        (status = 413, description = "The body is too large", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn configure(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<QueueSettingsView>> {
    let product_id = parse_id(&id, "product")?;
    let settings = QueueSettings::parse(&read_json(body, 4096).await?)?;
    let product = pg::products::find(&state.db, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    let row = QueueRow {
        product_id,
        mode: settings.mode.as_str().to_owned(),
        line_order: settings.order.as_str().to_owned(),
        admit_per_second: settings.admit_per_second,
        auto_threshold: settings.auto_threshold,
    };
    pg::queues::upsert(&state.db, &row).await?;
    // This origin follows at once; the others at their next admission step.
    crate::workers::admission::refresh(&state).await?;
    tracing::info!(%product_id, admin = %admin.user_id, mode = row.mode, order = row.line_order, "queue configured");
    settings_view(&state, product_id, i64::from(product.stock))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(v: Value) -> String {
        match QueueSettings::parse(&v).unwrap_err() {
            ApiError::Validation { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_are_validated_field_by_field() {
        let ok = QueueSettings::parse(&json!({"mode": "always"})).unwrap();
        assert_eq!(
            (ok.mode, ok.order, ok.admit_per_second),
            (QueueMode::Always, QueueOrder::Fifo, None)
        );
        let lottery =
            QueueSettings::parse(&json!({"mode": "auto", "order": "lottery", "admitPerSecond": 50, "autoThreshold": 200}))
                .unwrap();
        assert_eq!(lottery.order, QueueOrder::Lottery);
        assert_eq!((lottery.admit_per_second, lottery.auto_threshold), (Some(50), Some(200)));
        assert_eq!(field_of(json!([])), "body");
        assert_eq!(field_of(json!({"mode": "on"})), "mode");
        assert_eq!(field_of(json!({"mode": "always", "order": "random"})), "order");
        assert_eq!(field_of(json!({"mode": "always", "admitPerSecond": 0})), "admitPerSecond");
        assert_eq!(field_of(json!({"mode": "always", "autoThreshold": "x"})), "autoThreshold");
    }
}
