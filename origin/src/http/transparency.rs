//! Each drop's public log, as C2SP `tlog-tiles` serves one (issue #31), and the buyer's
//! receipt with its inclusion proof.
//!
//! Public (no token, cacheable; the edge forwards them and keeps the immutable ones):
//! `GET /transparency/{productId}/metadata.json`, `…/checkpoint` (cached a second),
//! `…/tile/<L>/<N>[.p/<W>]` and `…/tile/entries/<N>[.p/<W>]` (immutable). A tile or bundle
//! is served only once the newest signed checkpoint covers all of it.
//! Behind the edge signature: `GET /receipts/{productId}`, the buyer's newest entry with
//! its inclusion proof against the newest checkpoint.

use crate::error::{ApiError, ApiResult};
use crate::http::edge_auth::EdgeContext;
use crate::http::parse_id;
use crate::pg;
use crate::state::AppState;
use crate::transparency::Transparency;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use flashgate_tlog::paths::TileRef;
use flashgate_tlog::tree::{self, Tree};
use flashgate_tlog::verify::{Metadata, Receipt};
use flashgate_tlog::{Hash, TILE_HEIGHT};
use std::sync::Arc;
use uuid::Uuid;

/// The log's files, for anyone.
pub fn public_router() -> Router<AppState> {
    Router::new()
        .route("/transparency/{product_id}/metadata.json", get(metadata))
        .route("/transparency/{product_id}/checkpoint", get(checkpoint))
        .route("/transparency/{product_id}/tile/{*path}", get(tile))
}

/// A buyer's receipt (behind the edge signature).
pub fn buyer_router() -> Router<AppState> {
    Router::new().route("/receipts/{product_id}", get(receipt))
}

const MUTABLE: &str = "public, max-age=1";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn log_of(state: &AppState) -> ApiResult<&Arc<Transparency>> {
    state
        .transparency
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this origin keeps no public logs".into()))
}

fn cached(mut response: Response, policy: &'static str, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

#[utoipa::path(
    get,
    path = "/transparency/{product_id}/metadata.json",
    tag = "transparency",
    params(("product_id" = String, Path, description = "The drop")),
    responses(
        (status = 200, description = "What the drop's log is about: stock, sale window, the checkpoints' origin line and the keys that sign them", content_type = "application/json"),
        (status = 404, description = "No such drop, no signed log yet, or this origin keeps no logs", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn metadata(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
) -> ApiResult<Response> {
    let log = log_of(&state)?;
    let product_id = parse_id(&product_id, "product")?;
    let product = pg::products::find(&state.db, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    let metadata = Metadata {
        product_id: product_id.to_string(),
        name: log.signer.name().to_owned(),
        origin: log.signer.origin(&product_id.to_string()),
        keys: log.signer.verifier_keys().to_vec(),
        stock: i64::from(product.stock),
        sale_starts_at_ms: crate::clock::ms_of(product.sale_starts_at),
        sale_ends_at_ms: product.sale_ends_at.map(crate::clock::ms_of),
        stamp_skew_us: log.stamp_skew.as_micros() as i64,
        entry_format:
            "https://github.com/flashgate/flashgate/blob/main/docs/transparency.md#entries"
                .to_owned(),
    };
    Ok(cached(Json(metadata).into_response(), MUTABLE, "application/json"))
}

/// The newest signed checkpoint: its size and note (404 before the first).
async fn newest(state: &AppState, product_id: Uuid) -> ApiResult<(u64, String)> {
    let (size, note) = pg::transparency::checkpoint(&state.db, product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("drop {product_id} has no signed log yet")))?;
    Ok((size as u64, note))
}

#[utoipa::path(
    get,
    path = "/transparency/{product_id}/checkpoint",
    tag = "transparency",
    params(("product_id" = String, Path, description = "The drop")),
    responses(
        (status = 200, description = "The newest signed checkpoint (C2SP tlog-checkpoint as a signed note)", content_type = "text/plain"),
        (status = 404, description = "No such drop, no signed log yet, or this origin keeps no logs", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
) -> ApiResult<Response> {
    log_of(&state)?;
    let product_id = parse_id(&product_id, "product")?;
    let (_, note) = newest(&state, product_id).await?;
    Ok(cached(note.into_response(), MUTABLE, "text/plain; charset=utf-8"))
}

/// The hashes a tree needs, read from PostgreSQL, as a [`Tree`] of `size`.
async fn tree_with(
    state: &AppState,
    product_id: Uuid,
    size: u64,
    indexes: &[u64],
) -> ApiResult<Tree> {
    let wanted: Vec<i64> = indexes.iter().map(|i| *i as i64).collect();
    let rows = pg::transparency::hashes(&state.db, product_id, &wanted).await?;
    let hashes = rows.into_iter().filter_map(|(i, h)| Some((i as u64, Hash(h.try_into().ok()?))));
    Ok(Tree::with_hashes(size, hashes))
}

#[utoipa::path(
    get,
    path = "/transparency/{product_id}/tile/{path}",
    tag = "transparency",
    params(
        ("product_id" = String, Path, description = "The drop"),
        ("path" = String, Path, description = "`<L>/<N>[.p/<W>]` (a hash tile) or `entries/<N>[.p/<W>]` (an entry bundle), C2SP tlog-tiles; it contains slashes"),
    ),
    responses(
        (status = 200, description = "The tile or entry bundle (immutable)", content_type = "application/octet-stream"),
        (status = 422, description = "Not a tlog-tiles path", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such drop, no signed log yet, or this origin keeps no logs", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn tile(
    State(state): State<AppState>,
    Path((product_id, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    log_of(&state)?;
    let product_id = parse_id(&product_id, "product")?;
    let path = format!("tile/{path}");
    let tile = TileRef::parse(&path).ok_or_else(|| {
        ApiError::validation(
            "path",
            "is not a tlog-tiles path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>])",
        )
    })?;
    let (signed, _) = newest(&state, product_id).await?;
    // The last entry the tile covers, and whether the newest checkpoint has it.
    let level = u32::from(tile.level.unwrap_or(0)) * u32::from(TILE_HEIGHT);
    let end = (tile.n << TILE_HEIGHT)
        .checked_add(tile.width)
        .and_then(|e| e.checked_mul(1u64.checked_shl(level)?))
        .filter(|end| *end <= signed)
        .ok_or_else(|| ApiError::NotFound(format!("{path} is not in the newest checkpoint")))?;
    if tile.is_bundle() {
        let start = tile.start() as i64;
        let entries = pg::transparency::entries(&state.db, product_id, start, end as i64).await?;
        let bundle = flashgate_tlog::paths::encode_bundle(entries.iter().map(Vec::as_slice))
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a log entry over 64 KiB")))?;
        // Served as stored: a log missing entries shows it to every verifier.
        return Ok(cached(bundle.into_response(), IMMUTABLE, "application/octet-stream"));
    }
    let tree = tree_with(&state, product_id, signed, &tree::tile_indexes(&tile)).await?;
    let bytes = tree.tile(&tile).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!("{path}: the log is missing hashes: {e}"))
    })?;
    Ok(cached(bytes.into_response(), IMMUTABLE, "application/octet-stream"))
}

#[utoipa::path(
    get,
    path = "/receipts/{product_id}",
    tag = "buyers",
    security(("edge" = [])),
    params(
        ("product_id" = String, Path, description = "The drop"),
        ("index" = Option<u64>, Query, description = "One of the buyer's entries (the index an acquisition's answer gave); default: their newest"),
    ),
    responses(
        (status = 200, description = "The buyer's entry in the drop's public log, with its inclusion proof against the newest signed checkpoint (`docs/transparency.md`)"),
        (status = 404, description = "No entry of this buyer is in a signed checkpoint yet (retry after a second), or the origin keeps no logs", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Not signed by the edge (or the signature is stale)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn receipt(
    State(state): State<AppState>,
    edge: EdgeContext,
    Path(product_id): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Receipt>> {
    let log = log_of(&state)?.clone();
    let product_id = parse_id(&product_id, "product")?;
    let wanted = query
        .get("index")
        .map(|i| {
            i.parse::<i64>()
                .ok()
                .filter(|i| *i >= 0)
                .ok_or_else(|| ApiError::validation("index", "must be a log index (0 or more)"))
        })
        .transpose()?;
    let (signed, note) = newest(&state, product_id).await?;
    let buyer = log.pseudonym(product_id, edge.user_id);
    let found = match wanted {
        Some(idx) => {
            pg::transparency::entry_of(&state.db, product_id, &buyer, idx, signed as i64).await?
        }
        None => pg::transparency::newest_of(&state.db, product_id, &buyer, signed as i64).await?,
    };
    let (index, entry) = found.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no entry of yours in drop {product_id}'s signed log yet; ask again in a second"
        ))
    })?;
    let index = index as u64;
    let tree = tree_with(&state, product_id, signed, &tree::proof_indexes(signed, index)).await?;
    let proof = tree.prove(signed, index).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!("inclusion proof of entry {index}: {e}"))
    })?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(Receipt {
        product_id: product_id.to_string(),
        index,
        entry: String::from_utf8_lossy(&entry).into_owned(),
        pseudonym_key: hex::encode(log.buyer_key(product_id, edge.user_id)),
        checkpoint: Some(note),
        proof: Some(proof.iter().map(|h| b64.encode(h.0)).collect()),
    }))
}
