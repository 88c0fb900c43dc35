//! `products`: what operators put on sale (soft-deleted, never removed).

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// A product as PostgreSQL holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub product_id: Uuid,
    pub name: String,
    pub price_amount: i64,
    pub price_currency: String,
    pub stock: i32,
    pub sale_starts_at: OffsetDateTime,
    pub sale_ends_at: Option<OffsetDateTime>,
}

/// The fields an operator sets.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub name: &'a str,
    pub price_amount: i64,
    pub price_currency: &'a str,
    pub stock: i32,
    pub sale_starts_at: OffsetDateTime,
    pub sale_ends_at: Option<OffsetDateTime>,
}

/// Which products a listing wants, by their sale window at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Any,
    /// Not started yet.
    Upcoming,
    /// Started and not ended.
    Open,
    Ended,
}

impl Window {
    fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Upcoming => "upcoming",
            Self::Open => "open",
            Self::Ended => "ended",
        }
    }
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    f: Fields<'_>,
) -> sqlx::Result<ProductRow> {
    sqlx::query_as!(
        ProductRow,
        "INSERT INTO products (product_id, name, price_amount, price_currency, stock, \
         sale_starts_at, sale_ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING product_id, name, price_amount, price_currency, stock, sale_starts_at, \
         sale_ends_at",
        product_id,
        f.name,
        f.price_amount,
        f.price_currency,
        f.stock,
        f.sale_starts_at,
        f.sale_ends_at,
    )
    .fetch_one(db)
    .await
}

/// A live (not deleted) product.
pub async fn find(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<Option<ProductRow>> {
    sqlx::query_as!(
        ProductRow,
        "SELECT product_id, name, price_amount, price_currency, stock, sale_starts_at, \
         sale_ends_at FROM products WHERE product_id = $1 AND deleted_at IS NULL",
        product_id,
    )
    .fetch_optional(db)
    .await
}

/// A live product, locked until the transaction ends.
pub async fn lock(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<Option<ProductRow>> {
    sqlx::query_as!(
        ProductRow,
        "SELECT product_id, name, price_amount, price_currency, stock, sale_starts_at, \
         sale_ends_at FROM products WHERE product_id = $1 AND deleted_at IS NULL FOR UPDATE",
        product_id,
    )
    .fetch_optional(db)
    .await
}

pub async fn update(
    db: impl PgExecutor<'_>,
    product_id: Uuid,
    f: Fields<'_>,
) -> sqlx::Result<ProductRow> {
    sqlx::query_as!(
        ProductRow,
        "UPDATE products SET name = $2, price_amount = $3, price_currency = $4, stock = $5, \
         sale_starts_at = $6, sale_ends_at = $7, updated_at = now() WHERE product_id = $1 \
         RETURNING product_id, name, price_amount, price_currency, stock, sale_starts_at, \
         sale_ends_at",
        product_id,
        f.name,
        f.price_amount,
        f.price_currency,
        f.stock,
        f.sale_starts_at,
        f.sale_ends_at,
    )
    .fetch_one(db)
    .await
}

pub async fn soft_delete(db: impl PgExecutor<'_>, product_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE products SET deleted_at = now(), updated_at = now() WHERE product_id = $1",
        product_id,
    )
    .execute(db)
    .await
    .map(drop)
}

/// Live products in `window` at `now`, newest sale first; `page` is (limit, offset), or
/// every match.
pub async fn list(
    db: impl PgExecutor<'_>,
    window: Window,
    now: OffsetDateTime,
    page: Option<(i64, i64)>,
) -> sqlx::Result<Vec<ProductRow>> {
    let (limit, offset) = page.map_or((None, 0), |(l, o)| (Some(l), o));
    sqlx::query_as!(
        ProductRow,
        "SELECT product_id, name, price_amount, price_currency, stock, sale_starts_at, \
         sale_ends_at FROM products WHERE deleted_at IS NULL AND ( \
           $1 = 'any' \
           OR ($1 = 'upcoming' AND sale_starts_at > $2) \
           OR ($1 = 'ended' AND sale_ends_at <= $2) \
           OR ($1 = 'open' AND sale_starts_at <= $2 AND (sale_ends_at IS NULL OR sale_ends_at > $2))) \
         ORDER BY sale_starts_at DESC, product_id LIMIT $3 OFFSET $4",
        window.as_str(),
        now,
        limit,
        offset,
    )
    .fetch_all(db)
    .await
}

/// How many live products are in `window` at `now`.
pub async fn count(
    db: impl PgExecutor<'_>,
    window: Window,
    now: OffsetDateTime,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "SELECT count(*) AS \"count!\" FROM products WHERE deleted_at IS NULL AND ( \
           $1 = 'any' \
           OR ($1 = 'upcoming' AND sale_starts_at > $2) \
           OR ($1 = 'ended' AND sale_ends_at <= $2) \
           OR ($1 = 'open' AND sale_starts_at <= $2 AND (sale_ends_at IS NULL OR sale_ends_at > $2)))",
        window.as_str(),
        now,
    )
    .fetch_one(db)
    .await
}

/// Every live product's id.
pub async fn live_ids(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!("SELECT product_id FROM products WHERE deleted_at IS NULL")
        .fetch_all(db)
        .await
}
