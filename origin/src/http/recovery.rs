//! The operator's recovery routes: rebuild one product's sale state or every product's
//! from PostgreSQL, and release the units a rebuild withheld (see [`crate::recovery`]).

use crate::error::{ApiError, ApiResult};
use crate::http::admin_auth::Admin;
use crate::http::parse_id;
use crate::pg;
use crate::recovery;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/admin/products/{id}/rebuild", post(rebuild_one))
        .route("/admin/rebuild", post(rebuild_all))
        .route("/admin/products/{id}/in-doubt/release", post(release_in_doubt))
}

#[utoipa::path(
    post,
    path = "/admin/products/{id}/rebuild",
    tag = "operators",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    responses(
        (status = 200, description = "Rebuilt from PostgreSQL, or already live", body = crate::http::openapi::RebuildDoc),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn rebuild_one(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let product_id = parse_id(&id, "product")?;
    match recovery::rebuild(&state, product_id).await? {
        recovery::Rebuild::NotFound => Err(ApiError::NotFound(format!("no product {product_id}"))),
        outcome => {
            let mut body = serde_json::to_value(outcome).map_err(anyhow::Error::from)?;
            body["productId"] = json!(product_id);
            Ok(Json(body))
        }
    }
}

/// The operator's word that the buyers of grants lost with Redis are settled with: the units
/// a rebuild withheld go back on sale. `flashgate check` keeps reporting the loss itself.
#[utoipa::path(
    post,
    path = "/admin/products/{id}/in-doubt/release",
    tag = "operators",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The product id (a UUID)")),
    responses(
        (status = 200, description = "The withheld units are back on sale", body = crate::http::openapi::ReleasedDoc),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such product (or the id is not a UUID)", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn release_in_doubt(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let product_id = parse_id(&id, "product")?;
    if pg::products::find(&state.db, product_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no product {product_id}")));
    }
    let Some(released) = state.inventory.release_in_doubt(product_id).await? else {
        return Err(recovery::not_loaded(&state, product_id));
    };
    // Redis first: a retry after a failure here finds nothing left to release and still
    // marks the record.
    pg::leases::release(&state.db, product_id).await?;
    tracing::warn!(%product_id, released, "in-doubt units released back on sale by an operator");
    Ok(Json(json!({ "productId": product_id, "released": released })))
}

#[utoipa::path(
    post,
    path = "/admin/rebuild",
    tag = "operators",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Every product rebuilt or found live", body = crate::http::openapi::RebuildAllDoc),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn rebuild_all(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Value>> {
    let ids = pg::products::live_ids(&state.db).await?;
    let (mut rebuilt, mut live) = (0, 0);
    for id in ids {
        match recovery::rebuild(&state, id).await? {
            recovery::Rebuild::Rebuilt { .. } => rebuilt += 1,
            recovery::Rebuild::AlreadyLive => live += 1,
            recovery::Rebuild::NotFound => {}
        }
    }
    Ok(Json(json!({ "rebuilt": rebuilt, "alreadyLive": live })))
}
