//! The buyer API the edge serves: which method and path go to the origin, and as what.

/// Largest request body a buyer route accepts (edge and origin alike); the buyer API's
/// bodies are a few hundred bytes.
pub const MAX_BUYER_BODY: usize = 16 * 1024;

/// The answer header by which the edge component tells its host what it decided: the
/// problem slug of an answer it gave itself (`sold-out` from the availability hint,
/// `rate-limited`, `unauthorized`, …) or [`DECISION_FORWARDED`]. flashgate's host counts
/// it (`flashgate_edge_request_duration_seconds{decision}`) and takes it off the answer;
/// on other platforms it reaches the buyer, and says nothing a buyer does not know.
pub const HEADER_EDGE_DECISION: &str = "x-flashgate-edge-decision";
/// The decision of a request the edge forwarded to the origin (whatever the origin said).
pub const DECISION_FORWARDED: &str = "forwarded";

/// The decision of an acquisition of a queued product without a valid pass, which the edge
/// turned into joining the line (forwarded as `POST /queue/{productId}`).
pub const DECISION_QUEUED: &str = "queued";
/// The decision of a request for the buyer page, which the edge serves itself.
pub const DECISION_PAGE: &str = "page";

/// The decisions a host counts under their own label; anything else is `other`, so no
/// answer can grow the label set.
pub const DECISIONS: [&str; 18] = [
    DECISION_FORWARDED,
    DECISION_CACHED,
    DECISION_QUEUED,
    DECISION_PAGE,
    "queue-pass",
    "sold-out",
    "sale-ended",
    "not-on-sale",
    "already-holding",
    "in-progress",
    "rate-limited",
    "unauthorized",
    "validation",
    "not-found",
    "method-not-allowed",
    "body-too-large",
    "unavailable",
    "internal",
];

/// `value`'s label among [`DECISIONS`], or `other`.
pub fn decision_label(value: &str) -> &'static str {
    DECISIONS.iter().find(|d| **d == value).copied().unwrap_or("other")
}

/// A buyer route. Everything else is answered 404 by the edge without reaching the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerRoute {
    Acquire,
    MySlots,
    Slot,
    CreatePayment,
    Payment,
    Products,
    Product,
    /// `GET` a buyer's place in a product's line (and their pass once admitted); `POST`
    /// joins it.
    Queue,
    /// The buyer page and its assets, served by the edge itself (no token needed).
    Page(&'static str),
    /// `GET /receipts/{productId}`: the buyer's entry in the drop's public log.
    Receipt,
    /// `GET /transparency/{productId}/…`: a drop's public log, for anyone (no token); the
    /// edge keeps what the origin says may be kept ([`public_cache_ms`]).
    Transparency,
}

/// The decision of a public-log file the edge answered from what it kept.
pub const DECISION_CACHED: &str = "cached";

/// A kept public answer as the edge's store holds it: its expiry (ms since the epoch), its
/// content type, its body.
pub fn encode_kept(expires_ms: u64, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + content_type.len() + body.len());
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(&(content_type.len().min(255) as u8).to_be_bytes());
    out.extend_from_slice(&content_type.as_bytes()[..content_type.len().min(255)]);
    out.extend_from_slice(body);
    out
}

/// A kept answer's content type and body, unless it expired by `now_ms` (or is not one).
pub fn decode_kept(kept: &[u8], now_ms: u64) -> Option<(String, Vec<u8>)> {
    let (expires, rest) = kept.split_at_checked(8)?;
    if u64::from_be_bytes(expires.try_into().ok()?) <= now_ms {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (content_type, body) = rest.split_at_checked(usize::from(len))?;
    Some((String::from_utf8(content_type.to_vec()).ok()?, body.to_vec()))
}

/// How long (ms) a public answer may be kept, from its `Cache-Control`: `public` with a
/// `max-age` (at most a year); anything else (`no-store`, `private`, no header) is not kept.
pub fn public_cache_ms(cache_control: Option<&str>) -> Option<u64> {
    let value = cache_control?;
    let directives: Vec<&str> = value.split(',').map(str::trim).collect();
    if !directives.iter().any(|d| d.eq_ignore_ascii_case("public"))
        || directives
            .iter()
            .any(|d| d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private"))
    {
        return None;
    }
    let secs: u64 = directives.iter().find_map(|d| d.strip_prefix("max-age=")?.parse().ok())?;
    (secs > 0).then(|| secs.min(31_536_000) * 1000)
}

/// Classifies a request; `Err(true)` when the path exists under another method (405),
/// `Err(false)` when it does not exist (404).
pub fn classify(method: &str, path: &str) -> Result<BuyerRoute, bool> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    const GET: &[&str] = &["GET"];
    let (route, allowed) = match segments.as_slice() {
        ["slots", "acquire"] => (BuyerRoute::Acquire, &["POST"][..]),
        ["slots", "my-slots"] => (BuyerRoute::MySlots, GET),
        ["slots", id] if !id.is_empty() => (BuyerRoute::Slot, GET),
        ["payments"] => (BuyerRoute::CreatePayment, &["POST"][..]),
        ["payments", id] if !id.is_empty() => (BuyerRoute::Payment, GET),
        ["products"] => (BuyerRoute::Products, GET),
        ["products", id] if !id.is_empty() => (BuyerRoute::Product, GET),
        ["queue", id] if !id.is_empty() => (BuyerRoute::Queue, &["GET", "POST"][..]),
        ["receipts", id] if !id.is_empty() => (BuyerRoute::Receipt, GET),
        ["transparency", id, _, ..] if !id.is_empty() => (BuyerRoute::Transparency, GET),
        [""] | ["drops", _] => (BuyerRoute::Page("index.html"), GET),
        ["assets", "app.js"] => (BuyerRoute::Page("app.js"), GET),
        ["assets", "app.css"] => (BuyerRoute::Page("app.css"), GET),
        _ => return Err(false),
    };
    if allowed.contains(&method) { Ok(route) } else { Err(true) }
}

/// The product id in a `/queue/{productId}` path, if it looks like an id.
pub fn queued_product(path: &str) -> Option<String> {
    let id = path.strip_prefix("/queue/")?;
    looks_like_uuid(id).then(|| id.to_ascii_lowercase())
}

fn looks_like_uuid(id: &str) -> bool {
    parse_id(id).is_some()
}

/// An id (product, slot, payment, buyer) in the one form flashgate accepts, at the edge and
/// at the origin alike: 36 characters, hyphens at 8, 13, 18 and 23, hex digits elsewhere
/// (either case; the edge keys everything by the lower-case form). The dashless, braced and
/// `urn:uuid:` spellings of the same id are refused at both ends, so no spelling of a
/// product's id reaches the origin past the edge's shield, dedup or pass check.
pub fn parse_id(raw: &str) -> Option<uuid::Uuid> {
    let bytes = raw.as_bytes();
    let canonical = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    canonical.then(|| uuid::Uuid::try_parse(raw).ok()).flatten()
}

/// The product id of an acquisition body, if it has one that looks like an id (the origin
/// judges the rest).
pub fn acquired_product(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = v.get("productId")?.as_str()?;
    looks_like_uuid(id).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_accepted_in_one_form_only() {
        let id = "0192f3a4-5b6c-7d8e-9f00-112233445566";
        assert_eq!(parse_id(id).map(|u| u.to_string()), Some(id.to_owned()));
        assert_eq!(parse_id(&id.to_ascii_uppercase()).map(|u| u.to_string()), Some(id.into()));
        for other in [
            "0192f3a45b6c7d8e9f00112233445566",
            "{0192f3a4-5b6c-7d8e-9f00-112233445566}",
            "urn:uuid:0192f3a4-5b6c-7d8e-9f00-112233445566",
            "------------------------------------",
            "0192f3a4-5b6c-7d8e-9f00-11223344556g",
            "0192f3a45-b6c-7d8e-9f00-112233445566",
            "",
        ] {
            assert_eq!(parse_id(other), None, "{other}");
            assert_eq!(queued_product(&format!("/queue/{other}")), None, "{other}");
            let body = format!(r#"{{"productId":"{other}"}}"#);
            assert_eq!(acquired_product(body.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn decisions_outside_the_known_set_share_one_label() {
        assert_eq!(decision_label("sold-out"), "sold-out");
        assert_eq!(decision_label(DECISION_FORWARDED), "forwarded");
        assert_eq!(decision_label("anything-else"), "other");
    }

    #[test]
    fn classifies_the_buyer_api() {
        assert_eq!(classify("POST", "/slots/acquire"), Ok(BuyerRoute::Acquire));
        assert_eq!(classify("GET", "/slots/my-slots"), Ok(BuyerRoute::MySlots));
        assert_eq!(classify("GET", "/slots/abc"), Ok(BuyerRoute::Slot));
        assert_eq!(classify("POST", "/payments"), Ok(BuyerRoute::CreatePayment));
        assert_eq!(classify("GET", "/payments/abc"), Ok(BuyerRoute::Payment));
        assert_eq!(classify("GET", "/products"), Ok(BuyerRoute::Products));
        assert_eq!(classify("GET", "/products/abc"), Ok(BuyerRoute::Product));
        assert_eq!(classify("GET", "/queue/abc"), Ok(BuyerRoute::Queue));
        assert_eq!(classify("POST", "/queue/abc"), Ok(BuyerRoute::Queue));
        assert_eq!(classify("GET", "/"), Ok(BuyerRoute::Page("index.html")));
        assert_eq!(classify("GET", "/drops/abc"), Ok(BuyerRoute::Page("index.html")));
        assert_eq!(classify("GET", "/assets/app.js"), Ok(BuyerRoute::Page("app.js")));
        assert_eq!(classify("GET", "/receipts/abc"), Ok(BuyerRoute::Receipt));
        assert_eq!(classify("GET", "/transparency/abc/checkpoint"), Ok(BuyerRoute::Transparency));
        assert_eq!(
            classify("GET", "/transparency/abc/tile/entries/000.p/3"),
            Ok(BuyerRoute::Transparency)
        );
        assert_eq!(classify("POST", "/transparency/abc/checkpoint"), Err(true));
        assert_eq!(classify("GET", "/transparency/abc"), Err(false));
        assert_eq!(classify("POST", "/"), Err(true));
        assert_eq!(classify("GET", "/assets/other.js"), Err(false));
    }

    #[test]
    fn a_kept_answer_reads_back_until_it_expires() {
        let kept = encode_kept(1_000, "text/plain; charset=utf-8", b"log\n1\n");
        assert_eq!(
            decode_kept(&kept, 999),
            Some(("text/plain; charset=utf-8".into(), b"log\n1\n".to_vec()))
        );
        assert_eq!(decode_kept(&kept, 1_000), None);
        assert_eq!(decode_kept(&kept[..5], 0), None);
        assert_eq!(decode_kept(b"", 0), None);
    }

    #[test]
    fn only_public_answers_with_a_max_age_are_kept() {
        assert_eq!(public_cache_ms(Some("public, max-age=1")), Some(1000));
        assert_eq!(
            public_cache_ms(Some("public, max-age=31536000, immutable")),
            Some(31_536_000_000)
        );
        assert_eq!(public_cache_ms(Some("public, max-age=99999999999")), Some(31_536_000_000));
        for none in [
            None,
            Some("no-store"),
            Some("max-age=5"),
            Some("public"),
            Some("public, no-store, max-age=5"),
            Some("public, max-age=0"),
        ] {
            assert_eq!(public_cache_ms(none), None, "{none:?}");
        }
    }

    #[test]
    fn finds_the_product_of_an_acquisition() {
        let id = "0192e5a4-7b1c-7cde-8f00-0123456789AB";
        let body = format!(r#"{{"productId":"{id}"}}"#);
        assert_eq!(acquired_product(body.as_bytes()), Some(id.to_ascii_lowercase()));
        assert_eq!(acquired_product(br#"{"productId":"x|y"}"#), None);
        assert_eq!(acquired_product(b"nope"), None);
    }

    #[test]
    fn wrong_methods_and_unknown_paths_are_told_apart() {
        assert_eq!(classify("GET", "/slots/acquire"), Err(true));
        assert_eq!(classify("POST", "/products"), Err(true));
        assert_eq!(classify("GET", "/admin"), Err(false));
        assert_eq!(classify("GET", "/slots/"), Err(false));
        assert_eq!(classify("GET", "/slots/a/b"), Err(false));
    }
}
