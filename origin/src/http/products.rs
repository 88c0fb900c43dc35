//! Products: operators create them (admin JWT); buyers read them through the edge.

use crate::clock::{at_ms, ms_of, rfc3339_ms};
use crate::error::{ApiError, ApiResult};
use crate::http::admin_auth::Admin;
use crate::http::edge_auth::EdgeContext;
use crate::http::pagination::{Page, PageRequest};
use crate::http::parse_id;
use crate::pg;
use crate::pg::products::{Fields, ProductRow, Window};
use crate::recovery;
use crate::state::AppState;
use crate::store::scripts::delete_product::ProductDeletion;
use crate::store::scripts::update_product::ProductUpdate;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;
const MAX_STOCK: i64 = 10_000_000;

/// Admin routes (admin JWT checked per handler).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/products", post(create))
        .route("/products/{id}", put(update).delete(remove))
}

/// Buyer routes (mounted behind the edge signature).
pub fn buyer_router() -> Router<AppState> {
    Router::new().route("/products", get(list)).route("/products/{id}", get(read))
}

/// A validated request to create a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub price_amount: i64,
    pub price_currency: String,
    pub stock: i64,
    pub sale_starts_at: OffsetDateTime,
    pub sale_ends_at: Option<OffsetDateTime>,
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|x| !x.is_null())
}

fn timestamp(v: &Value, name: &str) -> ApiResult<Option<OffsetDateTime>> {
    match field(v, name) {
        None => Ok(None),
        Some(Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339)
            .map(Some)
            .map_err(|_| ApiError::validation(name, "must be an RFC 3339 timestamp")),
        Some(_) => Err(ApiError::validation(name, "must be an RFC 3339 timestamp string")),
    }
}

impl NewProduct {
    /// Validates a creation body, naming the first offending field.
    pub fn parse(v: &Value) -> ApiResult<Self> {
        if !v.is_object() {
            return Err(ApiError::validation("body", "must be a JSON object"));
        }
        let name = match field(v, "name") {
            Some(Value::String(s)) => product_name(s)?,
            _ => return Err(ApiError::validation("name", "is required and must be a string")),
        };
        let price = field(v, "price")
            .filter(|p| p.is_object())
            .ok_or_else(|| ApiError::validation("price", "is required: {amount, currency}"))?;
        let price_amount = field(price, "amount")
            .and_then(Value::as_i64)
            .filter(|a| *a >= 0)
            .ok_or_else(|| {
                ApiError::validation("price.amount", "must be a non-negative integer (minor units)")
            })?;
        let price_currency = field(price, "currency")
            .and_then(Value::as_str)
            .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
            .ok_or_else(|| {
                ApiError::validation("price.currency", "must be an ISO 4217 code like EUR")
            })?
            .to_owned();
        let stock = field(v, "stock")
            .and_then(Value::as_i64)
            .filter(|s| (1..=MAX_STOCK).contains(s))
            .ok_or_else(|| {
                ApiError::validation("stock", format!("must be an integer from 1 to {MAX_STOCK}"))
            })?;
        let sale_starts_at = timestamp(v, "saleStartsAt")?
            .ok_or_else(|| ApiError::validation("saleStartsAt", "is required"))?;
        let sale_ends_at = timestamp(v, "saleEndsAt")?;
        if sale_ends_at.is_some_and(|end| end <= sale_starts_at) {
            return Err(ApiError::validation("saleEndsAt", "must be after saleStartsAt"));
        }
        Ok(Self { name, price_amount, price_currency, stock, sale_starts_at, sale_ends_at })
    }

    /// As PostgreSQL stores them (stock is at most `MAX_STOCK`, so it fits).
    fn fields(&self) -> Fields<'_> {
        Fields {
            name: &self.name,
            price_amount: self.price_amount,
            price_currency: &self.price_currency,
            stock: self.stock as i32,
            sale_starts_at: self.sale_starts_at,
            sale_ends_at: self.sale_ends_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProductStatus {
    Upcoming,
    OnSale,
    SoldOut,
    Ended,
}

impl ProductStatus {
    pub fn at(now: OffsetDateTime, row: &ProductRow, remaining: i64) -> Self {
        if now < row.sale_starts_at {
            Self::Upcoming
        } else if row.sale_ends_at.is_some_and(|end| now >= end) {
            Self::Ended
        } else if remaining <= 0 {
            Self::SoldOut
        } else {
            Self::OnSale
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Price {
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    pub product_id: Uuid,
    pub name: String,
    pub price: Price,
    pub stock: i64,
    pub remaining: i64,
    pub sale_starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sale_ends_at: Option<String>,
    pub status: ProductStatus,
    /// The waiting room, when the product has one (single-product reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<crate::http::queue::QueueSettingsView>,
}

impl ProductView {
    pub(crate) fn new(row: ProductRow, remaining: i64, now_ms: i64) -> Self {
        let now = at_ms(now_ms);
        Self {
            status: ProductStatus::at(now, &row, remaining),
            product_id: row.product_id,
            price: Price { amount: row.price_amount, currency: row.price_currency },
            stock: i64::from(row.stock),
            remaining,
            sale_starts_at: rfc3339_ms(ms_of(row.sale_starts_at)),
            sale_ends_at: row.sale_ends_at.map(|t| rfc3339_ms(ms_of(t))),
            name: row.name,
            queue: None,
        }
    }
}

/// Views of `rows` with their remaining units from Redis (one round trip); a product Redis
/// lost answers 503 while it is rebuilt.
/// The views of every product whose sale window is open, read at most once per
/// [`OpenProducts::FRESH`] however many buyers list them; concurrent readers of a stale copy
/// wait for one refresh.
#[derive(Default)]
pub struct OpenProducts(
    tokio::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<Vec<ProductView>>)>>,
);

impl OpenProducts {
    pub const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

    /// An operator changed a product: this origin's next list reads afresh.
    pub async fn forget(&self) {
        *self.0.lock().await = None;
    }

    async fn get(
        &self,
        state: &AppState,
        now_ms: i64,
    ) -> ApiResult<std::sync::Arc<Vec<ProductView>>> {
        let mut cached = self.0.lock().await;
        if let Some((at, views)) = cached.as_ref()
            && at.elapsed() < Self::FRESH
        {
            return Ok(views.clone());
        }
        let rows = pg::products::list(&state.db, Window::Open, at_ms(now_ms), None).await?;
        let views = std::sync::Arc::new(views_of(state, rows, now_ms).await?);
        *cached = Some((std::time::Instant::now(), views.clone()));
        Ok(views)
    }
}

pub(crate) async fn views_of(
    state: &AppState,
    rows: Vec<ProductRow>,
    now_ms: i64,
) -> ApiResult<Vec<ProductView>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.product_id).collect();
    let remaining = state.inventory.remaining_many(&ids).await?;
    let mut views = Vec::with_capacity(rows.len());
    for (row, remaining) in rows.into_iter().zip(remaining) {
        let remaining = remaining.ok_or_else(|| recovery::not_loaded(state, row.product_id))?;
        views.push(ProductView::new(row, remaining, now_ms));
    }
    Ok(views)
}

pub(crate) async fn read_json(body: Body, limit: usize) -> ApiResult<Value> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::validation("body", format!("is not valid JSON: {e}")))
}

#[utoipa::path(
    post,
    path = "/products",
    tag = "operators",
    security(("admin" = [])),
    request_body(content = crate::http::openapi::ProductBody),
    responses(
        (status = 201, description = "Created, and on sale from `saleStartsAt`", body = ProductView, headers(("location" = String, description = "/products/{productId}"))),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    body: Body,
) -> ApiResult<Response> {
    let new = NewProduct::parse(&read_json(body, MAX_ADMIN_BODY).await?)?;
    let product_id = Uuid::now_v7();
    let row = pg::products::insert(&state.db, product_id, new.fields()).await?;
    // PostgreSQL first: if Redis fails now, the product exists and the rebuild path loads it.
    state
        .inventory
        .load_product(product_id, new.stock, ms_of(new.sale_starts_at), new.sale_ends_at.map(ms_of))
        .await?;
    tracing::info!(%product_id, stock = new.stock, "product created");
    state.open_products.forget().await;
    let view = ProductView::new(row, new.stock, state.clock.now_ms());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/products/{product_id}"))],
        axum::Json(view),
    )
        .into_response())
}

#[utoipa::path(
    put,
    path = "/products/{id}",
    tag = "operators",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    request_body(content = crate::http::openapi::ProductBody),
    responses(
        (status = 200, description = "Updated", body = ProductView),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The sale start is locked: slots were granted", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<axum::Json<ProductView>> {
    let product_id = parse_id(&id, "product")?;
    let new = NewProduct::parse(&read_json(body, MAX_ADMIN_BODY).await?)?;
    let mut tx = state.db.begin().await?;
    let current = pg::products::lock(&mut *tx, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    let current_stock = i64::from(current.stock);
    if new.stock < current_stock {
        return Err(ApiError::validation(
            "stock",
            format!("may only grow (it is {current_stock})"),
        ));
    }
    let starts = (new.sale_starts_at != current.sale_starts_at).then(|| ms_of(new.sale_starts_at));
    // Redis decides under the row lock; PostgreSQL follows in the same transaction.
    let remaining = match state
        .inventory
        .update_product(
            product_id,
            new.stock - current_stock,
            starts,
            Some(new.sale_ends_at.map(ms_of)),
        )
        .await?
    {
        ProductUpdate::Updated { remaining, .. } => remaining,
        ProductUpdate::StartsLocked { granted } => {
            return Err(ApiError::SaleStartLocked { granted });
        }
        ProductUpdate::Unknown => return Err(recovery::not_loaded(&state, product_id)),
    };
    let row = pg::products::update(&mut *tx, product_id, new.fields()).await?;
    tx.commit().await?;
    tracing::info!(%product_id, stock = new.stock, "product updated");
    state.open_products.forget().await;
    Ok(axum::Json(ProductView::new(row, remaining, state.clock.now_ms())))
}

#[utoipa::path(
    delete,
    path = "/products/{id}",
    tag = "operators",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    responses(
        (status = 204, description = "Deleted (kept for history)"),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Slots are still active", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let product_id = parse_id(&id, "product")?;
    let mut tx = state.db.begin().await?;
    if pg::products::lock(&mut *tx, product_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no product {product_id}")));
    }
    match state.inventory.delete_product(product_id).await? {
        ProductDeletion::Active { slots } => return Err(ApiError::HasActiveSlots { slots }),
        ProductDeletion::Deleted | ProductDeletion::Unknown => {}
    }
    pg::products::soft_delete(&mut *tx, product_id).await?;
    tx.commit().await?;
    tracing::info!(%product_id, "product deleted");
    state.open_products.forget().await;
    Ok(StatusCode::NO_CONTENT)
}

impl ProductStatus {
    fn parse(raw: &str) -> ApiResult<Self> {
        match raw {
            "UPCOMING" => Ok(Self::Upcoming),
            "ON_SALE" => Ok(Self::OnSale),
            "SOLD_OUT" => Ok(Self::SoldOut),
            "ENDED" => Ok(Self::Ended),
            _ => {
                Err(ApiError::validation("status", "must be UPCOMING, ON_SALE, SOLD_OUT or ENDED"))
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/products",
    tag = "buyers",
    security(("edge" = [])),
    params(("page" = Option<u32>, Query, description = "From 1"), ("size" = Option<u32>, Query, description = "1 to 100 (20)"), ("status" = Option<ProductStatus>, Query, description = "Only products in this status")),
    responses(
        (status = 200, description = "Products", body = Page<ProductView>),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _caller: EdgeContext,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<axum::Json<Page<ProductView>>> {
    let paging = PageRequest::parse(&query)?;
    let status = query.get("status").map(|s| ProductStatus::parse(s)).transpose()?;
    let now_ms = state.clock.now_ms();
    let now = at_ms(now_ms);
    // The sale window is decided in SQL; ON_SALE and SOLD_OUT also need Redis's stock.
    let window = match status {
        None => Window::Any,
        Some(ProductStatus::Upcoming) => Window::Upcoming,
        Some(ProductStatus::Ended) => Window::Ended,
        Some(ProductStatus::OnSale | ProductStatus::SoldOut) => Window::Open,
    };
    let (items, total) = if window == Window::Open {
        // Filtered by stock (Redis): every open product is read, at most once a second
        // for all buyers together (security review, finding 4: once per request).
        let open = state.open_products.get(&state, now_ms).await?;
        let matching: Vec<&ProductView> =
            open.iter().filter(|v| Some(v.status) == status).collect();
        let total = matching.len() as u64;
        let page = matching
            .into_iter()
            .skip(paging.offset() as usize)
            .take(paging.size as usize)
            .cloned()
            .collect();
        (page, total)
    } else {
        let total = pg::products::count(&state.db, window, now).await?;
        let page = (i64::from(paging.size), paging.offset() as i64);
        let rows = pg::products::list(&state.db, window, now, Some(page)).await?;
        (views_of(&state, rows, now_ms).await?, total as u64)
    };
    Ok(axum::Json(Page { items, page: paging.page, size: paging.size, total }))
}

#[utoipa::path(
    get,
    path = "/products/{id}",
    tag = "buyers",
    security(("edge" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the edge's rate limit: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    _caller: EdgeContext,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ProductView>> {
    let product_id = parse_id(&id, "product")?;
    let row = pg::products::find(&state.db, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    let remaining = state
        .inventory
        .remaining(product_id)
        .await?
        .ok_or_else(|| recovery::not_loaded(&state, product_id))?;
    let stock = i64::from(row.stock);
    let mut view = ProductView::new(row, remaining, state.clock.now_ms());
    view.queue = crate::http::queue::settings_view(&state, product_id, stock).await?;
    Ok(axum::Json(view))
}

/// A product's name as buyers will see it: 1 to 200 characters after trimming, no control
/// characters (a NUL would not even store: PostgreSQL refuses it), and at least one that
/// shows (not only zero-width or direction marks, which render as nothing or reorder the
/// page's text around them).
fn product_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name", "must be 1 to 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::validation("name", "must not contain control characters"));
    }
    if name.chars().all(invisible) {
        return Err(ApiError::validation("name", "must contain a visible character"));
    }
    Ok(name.to_owned())
}

/// Zero-width characters and direction marks, embeddings, overrides and isolates.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{180E}' | '\u{034F}'
    ) || c.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({"name": "Sneaker", "price": {"amount": 12900, "currency": "EUR"}, "stock": 3,
               "saleStartsAt": "2026-01-01T10:00:00Z", "saleEndsAt": "2026-01-02T10:00:00Z"})
    }

    fn field_of(v: Value) -> String {
        match NewProduct::parse(&v).unwrap_err() {
            ApiError::Validation { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_name_with_marks_among_visible_characters_is_kept_as_written() {
        let mut v = valid();
        v["name"] = json!("  Air \u{202E}Max\u{202C} <script>  ");
        assert_eq!(NewProduct::parse(&v).unwrap().name, "Air \u{202E}Max\u{202C} <script>");
    }

    #[test]
    fn a_valid_product_parses() {
        let p = NewProduct::parse(&valid()).unwrap();
        assert_eq!(p.stock, 3);
        assert_eq!(p.price_currency, "EUR");
        assert!(p.sale_ends_at.is_some());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("name", json!("")),
            ("name", json!(5)),
            ("name", json!("Sneaker\u{0}")),
            ("name", json!("line\nbreak")),
            ("name", json!("\u{200B}\u{202E}\u{2066} \u{FEFF}")),
            ("name", json!("x".repeat(201))),
            ("price", json!(null)),
            ("stock", json!(0)),
            ("stock", json!(-1)),
            ("stock", json!(1.5)),
            ("saleStartsAt", json!("tomorrow")),
            ("saleEndsAt", json!("2025-01-01T00:00:00Z")),
        ];
        for (name, value) in cases {
            let mut v = valid();
            v[name] = value;
            assert_eq!(field_of(v), name);
        }
        let mut v = valid();
        v["price"]["currency"] = json!("eur");
        assert_eq!(field_of(v), "price.currency");
        let mut v = valid();
        v["price"]["amount"] = json!(-5);
        assert_eq!(field_of(v), "price.amount");
        assert_eq!(field_of(json!([1])), "body");
    }

    #[test]
    fn status_follows_the_sale_window_and_stock() {
        let start = OffsetDateTime::from_unix_timestamp(1000).unwrap();
        let row = ProductRow {
            product_id: Uuid::nil(),
            name: "x".into(),
            price_amount: 1,
            price_currency: "EUR".into(),
            stock: 1,
            sale_starts_at: start,
            sale_ends_at: Some(OffsetDateTime::from_unix_timestamp(2000).unwrap()),
        };
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        assert_eq!(ProductStatus::at(at(999), &row, 1), ProductStatus::Upcoming);
        assert_eq!(ProductStatus::at(at(1000), &row, 1), ProductStatus::OnSale);
        assert_eq!(ProductStatus::at(at(1500), &row, 0), ProductStatus::SoldOut);
        assert_eq!(ProductStatus::at(at(2000), &row, 1), ProductStatus::Ended);
    }
}
