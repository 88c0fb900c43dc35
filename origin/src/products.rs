//! Products: operators create them (admin JWT); buyers read them through the edge.

use crate::admin_auth::Admin;
use crate::clock::rfc3339_ms;
use crate::edge_auth::EdgeContext;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;
const MAX_STOCK: i64 = 10_000_000;

/// Admin routes (admin JWT checked per handler).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/products", post(create))
}

/// Buyer routes (mounted behind the edge signature).
pub fn buyer_router() -> Router<AppState> {
    Router::new().route("/products/{id}", get(read))
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
            Some(Value::String(s)) if !s.trim().is_empty() && s.trim().chars().count() <= 200 => {
                s.trim().to_owned()
            }
            Some(Value::String(_)) => {
                return Err(ApiError::validation("name", "must be 1 to 200 characters"));
            }
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
}

#[derive(Debug, Clone, FromRow)]
pub struct ProductRow {
    pub product_id: Uuid,
    pub name: String,
    pub price_amount: i64,
    pub price_currency: String,
    pub stock: i32,
    pub sale_starts_at: OffsetDateTime,
    pub sale_ends_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct Price {
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Serialize)]
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
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

impl ProductView {
    fn new(row: ProductRow, remaining: i64, now_ms: i64) -> Self {
        let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self {
            status: ProductStatus::at(now, &row, remaining),
            product_id: row.product_id,
            price: Price { amount: row.price_amount, currency: row.price_currency },
            stock: i64::from(row.stock),
            remaining,
            sale_starts_at: rfc3339_ms(ms(row.sale_starts_at)),
            sale_ends_at: row.sale_ends_at.map(|t| rfc3339_ms(ms(t))),
            name: row.name,
        }
    }
}

pub(crate) async fn read_json(body: Body, limit: usize) -> ApiResult<Value> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::validation("body", format!("is not valid JSON: {e}")))
}

pub(crate) fn parse_id(raw: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(raw)
        .map_err(|_| ApiError::NotFound(format!("`{raw}` is not a {what} id (ids are UUIDs)")))
}

async fn create(State(state): State<AppState>, _admin: Admin, body: Body) -> ApiResult<Response> {
    let new = NewProduct::parse(&read_json(body, MAX_ADMIN_BODY).await?)?;
    let product_id = Uuid::now_v7();
    let row: ProductRow = sqlx::query_as(
        "INSERT INTO products (product_id, name, price_amount, price_currency, stock, \
         sale_starts_at, sale_ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING product_id, name, price_amount, price_currency, stock, sale_starts_at, sale_ends_at",
    )
    .bind(product_id)
    .bind(&new.name)
    .bind(new.price_amount)
    .bind(&new.price_currency)
    .bind(new.stock as i32)
    .bind(new.sale_starts_at)
    .bind(new.sale_ends_at)
    .fetch_one(&state.db)
    .await?;
    // PostgreSQL first: if Redis fails now, the product exists and the rebuild path loads it.
    state
        .inventory
        .load_product(product_id, new.stock, ms(new.sale_starts_at), new.sale_ends_at.map(ms))
        .await?;
    tracing::info!(%product_id, stock = new.stock, "product created");
    let view = ProductView::new(row, new.stock, state.clock.now_ms());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/products/{product_id}"))],
        axum::Json(view),
    )
        .into_response())
}

pub(crate) async fn find(state: &AppState, product_id: Uuid) -> ApiResult<Option<ProductRow>> {
    Ok(sqlx::query_as(
        "SELECT product_id, name, price_amount, price_currency, stock, sale_starts_at, sale_ends_at \
         FROM products WHERE product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(&state.db)
    .await?)
}

async fn read(
    State(state): State<AppState>,
    _caller: EdgeContext,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ProductView>> {
    let product_id = parse_id(&id, "product")?;
    let row = find(&state, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    let remaining = state.inventory.remaining(product_id).await?.ok_or(ApiError::Unavailable {
        component: "redis",
        detail: format!("product {product_id} is not loaded in Redis"),
    })?;
    Ok(axum::Json(ProductView::new(row, remaining, state.clock.now_ms())))
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
