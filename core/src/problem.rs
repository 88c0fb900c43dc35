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

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", "Unauthorized", detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(422, "validation", "Unprocessable request", detail)
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
}
