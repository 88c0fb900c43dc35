//! RFC 9457 problem details (`application/problem+json`).

use serde::Serialize;
use serde_json::{Map, Value};

/// The media type of every error answer.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem-details document. `kind` is a relative URI (`/problems/<slug>`), so clients can
/// match on the slug; problem-specific members go in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(rename = "traceId", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            trace_id: None,
            extra: Map::new(),
        }
    }

    /// Adds a problem-specific member (`slotId`, `saleStartsAt`, …).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// The slug of `kind` (`sold-out` for `/problems/sold-out`).
    pub fn slug(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or(&self.kind)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and a JSON map always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// 409: every unit is held or sold (edge and origin answer alike).
    pub fn sold_out(product_id: &str) -> Self {
        Self::new(409, "sold-out", "Sold out", "every unit of this product is held or sold")
            .with("productId", product_id)
    }

    /// 409: the sale opens at `sale_starts_at` (RFC 3339; `starts_ms` for machines).
    pub fn not_on_sale(sale_starts_at: &str, starts_ms: i64) -> Self {
        Self::new(
            409,
            "not-on-sale",
            "Not on sale yet",
            format!("the sale opens at {sale_starts_at}"),
        )
        .with("saleStartsAt", sale_starts_at)
        .with("saleStartsAtMs", starts_ms)
    }

    /// 409: the sale closed at `sale_ends_at`.
    pub fn sale_ended(sale_ends_at: &str) -> Self {
        Self::new(409, "sale-ended", "Sale ended", format!("the sale closed at {sale_ends_at}"))
            .with("saleEndsAt", sale_ends_at)
    }

    /// 409: the buyer holds `slot_id` for this product already.
    pub fn already_holding(slot_id: &str) -> Self {
        Self::new(
            409,
            "already-holding",
            "Already holding a slot",
            "you already hold a slot for this product",
        )
        .with("slotId", slot_id)
    }

    /// 409: the buyer's earlier request for this product is still being decided.
    pub fn in_progress() -> Self {
        Self::new(
            409,
            "in-progress",
            "Request in progress",
            "your earlier request for this product is still being decided; retry shortly",
        )
    }

    /// 429: over the rate limit; retry after `retry_after_secs`.
    pub fn too_many_requests(scope: &str, retry_after_secs: u64) -> Self {
        Self::new(
            429,
            "rate-limited",
            "Too many requests",
            format!("too many requests from this {scope}; retry in {retry_after_secs} s"),
        )
        .with("retryAfter", retry_after_secs)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", "Unauthorized", detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(422, "validation", "Unprocessable request", detail)
    }

    /// The headers every answer carrying this problem has besides its content type, however
    /// it is rendered (edge, host, origin): `Retry-After` when it says when to retry (503,
    /// 429; 1 s for a 503 that does not say), and `WWW-Authenticate` when a bearer token
    /// was refused.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        let retry_after = self.extra.get("retryAfter").and_then(|v| v.as_u64());
        match (self.status, retry_after) {
            (_, Some(secs)) => headers.push(("retry-after", secs.to_string())),
            (503, None) => headers.push(("retry-after", "1".to_owned())),
            _ => {}
        }
        if self.status == 401 && self.kind == "/problems/unauthorized" {
            headers.push(("www-authenticate", "Bearer error=\"invalid_token\"".to_owned()));
        }
        headers
    }

    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u32) -> Self {
        Self::new(503, "unavailable", "Service unavailable", detail)
            .with("retryAfter", retry_after_secs)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "not-found", "Not found", detail)
    }

    pub fn internal() -> Self {
        Self::new(500, "internal", "Internal error", "an internal error occurred")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_rfc9457_members_and_extras() {
        let p = Problem::new(409, "already-holding", "Already holding", "you hold a slot")
            .with("slotId", "abc")
            .with_trace_id("0af7651916cd43dd8448eb211c80319c");
        let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["type"], "/problems/already-holding");
        assert_eq!(v["status"], 409);
        assert_eq!(v["slotId"], "abc");
        assert_eq!(v["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(p.slug(), "already-holding");
    }

    #[test]
    fn omits_absent_trace_id() {
        let v: Value = serde_json::from_slice(&Problem::internal().to_json()).unwrap();
        assert!(v.get("traceId").is_none());
        assert_eq!(v["status"], 500);
    }

    #[test]
    fn every_rendering_gets_the_same_headers() {
        let h = |p: Problem| p.headers();
        assert_eq!(h(Problem::unavailable("x", 5)), [("retry-after", "5".to_owned())]);
        assert_eq!(
            h(Problem::new(503, "unavailable", "U", "x")),
            [("retry-after", "1".to_owned())]
        );
        assert_eq!(h(Problem::too_many_requests("buyer", 3)), [("retry-after", "3".to_owned())]);
        assert_eq!(
            h(Problem::unauthorized("expired")),
            [("www-authenticate", "Bearer error=\"invalid_token\"".to_owned())]
        );
        // A webhook's signature is not a bearer token: no challenge.
        assert!(h(Problem::new(401, "webhook-signature", "W", "x")).is_empty());
        assert!(h(Problem::sold_out("p")).is_empty());
    }
}
