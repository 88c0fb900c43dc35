//! The API as a contract: an OpenAPI 3.1 document generated (utoipa) from the handlers'
//! own annotations and answer types, served at `GET /openapi.json`. Request bodies are
//! parsed by hand at the boundary (so a bad one is named field by field); their shapes are
//! described here ([`AcquireBody`], [`ProductBody`], [`PaymentBody`]). Every error is
//! [`ProblemDoc`] (`application/problem+json`). A test reads every `.route(` of
//! `origin/src/http/` and fails when the document lacks one; schemathesis checks the live
//! origin and edge against it (`e2e/tests/e2e/contract.rs`).

use crate::http::audit::{AuditEntryView, AuditPage};
use crate::http::console::{CheckView, LiveView, QueueLive, ViolationView};
use crate::http::pagination::Page;
use crate::http::payments::{PaymentView, WebhookAnswer};
use crate::http::products::{Price, ProductStatus, ProductView};
use crate::http::queue::{QueueSettingsView, QueueView};
use crate::http::slots::SlotView;
use crate::status::{PaymentStatus, SlotStatus};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// An RFC 9457 problem: every error answer. Problem-specific members (`field`,
/// `productId`, `slotId`, `component`, `saleStartsAt`, …) come beside these.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = Problem,
    example = json!({
        "type": "/problems/sold-out",
        "title": "Sold out",
        "status": 409,
        "detail": "every unit of this product is held or sold",
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "productId": "01939f4e-6a55-7c2b-a3f0-9a3a1c8e2b11"
    })
)]
pub struct ProblemDoc {
    /// `/problems/<slug>`: `validation`, `unauthorized`, `forbidden`, `not-found`,
    /// `sold-out`, `already-holding`, `not-on-sale`, `sale-ended`, `rate-limited`,
    /// `unavailable`, `internal`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(rename = "traceId")]
    pub trace_id: Option<String>,
    /// The request field that is wrong (`validation` problems).
    pub field: Option<String>,
    /// An acquisition the origin decided and refused: the buyer's entry in the drop's public
    /// log (`docs/transparency.md`).
    #[schema(value_type = Option<Object>)]
    pub receipt: Option<serde_json::Value>,
}

/// The body of `POST /slots/acquire`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"productId": "01939f4e-6a55-7c2b-a3f0-9a3a1c8e2b11"}))]
pub struct AcquireBody {
    pub product_id: Uuid,
}

/// The body of `POST /payments`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"slotId": "01939f4e-7b10-7e41-9c2d-5f1a2b3c4d5e", "method": "card"}))]
pub struct PaymentBody {
    pub slot_id: Uuid,
    /// A payment method name: `card`, … (a-z, 0-9, `_`; at most 32). `test_decline` is
    /// always declined by the simulated processor.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub method: String,
}

/// The body of `POST /products` and `PUT /products/{id}` (a whole product; stock may only
/// grow, the sale start is locked once a slot was granted).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "name": "Limited sneaker",
    "price": {"amount": 12900, "currency": "EUR"},
    "stock": 500,
    "saleStartsAt": "2026-12-05T10:00:00Z",
    "saleEndsAt": "2026-12-05T12:00:00Z"
}))]
pub struct ProductBody {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub price: PriceBody,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub stock: i64,
    #[schema(format = DateTime)]
    pub sale_starts_at: String,
    #[schema(format = DateTime)]
    pub sale_ends_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceBody {
    /// Minor units (cents).
    #[schema(minimum = 0)]
    pub amount: i64,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// The body of `PUT /products/{id}/queue`: the product's waiting room.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"mode": "always", "order": "fifo", "admitPerSecond": 50}))]
pub struct QueueBody {
    /// `off`, `always`, or `auto` (on once `autoThreshold` acquisitions arrive in one second).
    #[schema(pattern = "^(off|always|auto)$")]
    pub mode: String,
    /// `fifo` (by arrival; the default) or `lottery` (a random draw among those who arrived
    /// before the sale opened).
    #[schema(pattern = "^(fifo|lottery)$")]
    pub order: Option<String>,
    /// Admissions a second; absent: derived from stock and hold time.
    #[schema(minimum = 1, maximum = 100_000)]
    pub admit_per_second: Option<i64>,
    /// Acquisitions in one second that turn an `auto` room on (default 1,000).
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub auto_threshold: Option<i64>,
}

/// `GET /internal/availability`: what the edges' hints are refreshed from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AvailabilityDoc {
    /// What to pass as `since` next time.
    pub as_of_ms: i64,
    /// Whether this is every product (no `since`) or only those that changed.
    pub full: bool,
    pub products: Vec<ProductAvailabilityDoc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductAvailabilityDoc {
    pub product_id: Uuid,
    pub remaining: i64,
    pub sale_starts_at_ms: i64,
    pub sale_starts_at: String,
    pub sale_ends_at_ms: Option<i64>,
    pub sale_ends_at: Option<String>,
}

/// `POST /admin/products/{id}/rebuild`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildDoc {
    pub product_id: Uuid,
    /// `rebuilt` or `already-live`.
    pub status: String,
    pub restored_slots: Option<i64>,
    /// Grants the lease allowed that PostgreSQL never heard of.
    pub unseen_grants: Option<i64>,
    /// Units withheld from sale for them.
    pub in_doubt: Option<i64>,
}

/// `POST /admin/rebuild`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildAllDoc {
    pub rebuilt: u64,
    pub already_live: u64,
}

/// `POST /admin/products/{id}/in-doubt/release`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedDoc {
    pub product_id: Uuid,
    pub released: i64,
}

/// `GET /health`, when every dependency answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDoc {
    /// `ok`.
    pub status: String,
    /// `redis`, `postgresql`, `kafka`: `up` or `not-configured`.
    pub components: std::collections::BTreeMap<String, String>,
}

/// The security schemes the paths name.
struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An identity provider's JWT with `role: admin`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "edge",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-flashgate-signature",
                "Buyer routes are called by the edge, which verifies the buyer's JWT and signs \
                 the request (x-flashgate-user, -arrival-us, -edge, traceparent) with the \
                 edge↔origin secret; buyers call the same paths on the edge with \
                 `Authorization: Bearer <JWT>`",
            ))),
        );
        components.add_security_scheme(
            "gateway",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::gateway::SIGNATURE_HEADER,
                "The payment processor's webhook signature: t=<unix seconds>,v1=<hex HMAC-SHA256>",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flashgate origin",
        description = "First-come-first-served flash sales: buyer routes (called through the \
                       edge), operator routes (admin JWT), the payment processor's webhook, \
                       health and metrics. Errors are RFC 9457 problems.",
    ),
    paths(
        crate::http::slots::acquire,
        crate::http::slots::my_slots,
        crate::http::slots::read,
        crate::http::slots::availability,
        crate::http::products::list,
        crate::http::products::read,
        crate::http::products::create,
        crate::http::products::update,
        crate::http::products::remove,
        crate::http::payments::create,
        crate::http::payments::read,
        crate::http::queue::look,
        crate::http::queue::join,
        crate::http::queue::configure,
        crate::http::console::page,
        crate::http::console::script,
        crate::http::console::style,
        crate::http::console::drops,
        crate::http::console::live,
        crate::http::console::run_check,
        crate::http::payments::webhook,
        crate::http::recovery::rebuild_one,
        crate::http::recovery::rebuild_all,
        crate::http::recovery::release_in_doubt,
        crate::http::audit::list,
        crate::http::transparency::metadata,
        crate::http::transparency::checkpoint,
        crate::http::transparency::tile,
        crate::http::transparency::receipt,
        crate::http::health::check,
        crate::metrics::endpoint,
        document,
    ),
    components(schemas(
        ProblemDoc, SlotStatus, PaymentStatus, ProductStatus, Price, ProductView, SlotView,
        PaymentView, AuditEntryView, AuditPage, Page<SlotView>, Page<ProductView>,
        WebhookAnswer, QueueView, QueueSettingsView, LiveView, QueueLive, CheckView, ViolationView,
    )),
    modifiers(&Security),
    tags(
        (name = "buyers", description = "Called through the edge, which signs them"),
        (name = "internal", description = "Called by the edge itself"),
        (name = "operators", description = "Admin JWT"),
        (name = "processor", description = "The payment processor's webhook"),
        (name = "transparency", description = "Each drop's public, signed log (C2SP tlog-tiles), for anyone"),
        (name = "operations", description = "Health, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")),
)]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every `(method, path)` the routers declare, read off `origin/src/http/` (`{id}` as
    /// OpenAPI spells it too).
    fn declared_routes() -> BTreeSet<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut routes = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for chunk in text.split(".route(\"").skip(1) {
                let (path, rest) = chunk.split_once('"').unwrap();
                // A catch-all (`{*path}`) is one parameter, with slashes, to OpenAPI.
                let path = path.replace("{*", "{");
                let path = path.as_str();
                // `get(list)`, `put(update).delete(remove)`: every method on the route's line.
                let line = rest.lines().next().unwrap_or_default();
                for method in ["get", "post", "put", "delete", "patch"] {
                    if line.contains(&format!(" {method}("))
                        || line.contains(&format!(".{method}("))
                    {
                        routes.insert((method.to_owned(), path.to_owned()));
                    }
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_is_in_the_document_and_nothing_else() {
        let doc = ApiDoc::openapi();
        let mut documented = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            let methods = [
                ("get", item.get.is_some()),
                ("post", item.post.is_some()),
                ("put", item.put.is_some()),
                ("delete", item.delete.is_some()),
                ("patch", item.patch.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    documented.insert((method.to_owned(), path.clone()));
                }
            }
        }
        let declared = declared_routes();
        assert!(declared.len() >= 19, "{declared:?}");
        let missing: Vec<_> = declared.difference(&documented).collect();
        assert!(missing.is_empty(), "routes missing from /openapi.json: {missing:?}");
        let extra: Vec<_> = documented.difference(&declared).collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_problem_answers() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let acquire = &json["paths"]["/slots/acquire"]["post"]["responses"];
        assert!(acquire["201"]["content"]["application/json"].is_object(), "{acquire}");
        assert!(acquire["409"]["content"]["application/problem+json"].is_object(), "{acquire}");
    }
}
