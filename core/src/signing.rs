//! The edge→origin trust envelope.
//!
//! The edge forwards an admitted request with the buyer's id, its arrival stamp (µs since the
//! epoch, taken when the request reached the edge), the W3C `traceparent`, its edge id and an
//! HMAC-SHA256 over those, the method, the path, the `Idempotency-Key` and the body, keyed by a secret that only the
//! edge and the origin hold. The origin recomputes the MAC and checks the stamp against its
//! own clock; anything else is answered 401.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// The buyer's user id (the JWT `sub`).
pub const HEADER_USER: &str = "x-flashgate-user";
/// The edge arrival stamp, µs since the Unix epoch.
pub const HEADER_ARRIVAL: &str = "x-flashgate-arrival-us";
/// The id of the edge instance that admitted the request.
pub const HEADER_EDGE: &str = "x-flashgate-edge";
/// `v1=<hex HMAC-SHA256>`.
pub const HEADER_SIGNATURE: &str = "x-flashgate-signature";
/// W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The trace id answered on every response.
pub const HEADER_TRACE_ID: &str = "x-trace-id";

const VERSION: &str = "v1";
/// Shortest accepted secret: 32 bytes, the HMAC-SHA256 block-size recommendation.
pub const MIN_SECRET_LEN: usize = 32;

/// The shared edge↔origin secret, kept as the HMAC state already keyed with it: signing or
/// checking a request clones that state (two SHA-256 compressions of key setup saved per
/// request). Debug output never shows it.
#[derive(Clone)]
pub struct EdgeSecret(Hmac<Sha256>);

impl fmt::Debug for EdgeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EdgeSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the edge secret must be hex-encoded")]
    NotHex,
    #[error("the edge secret must be at least {MIN_SECRET_LEN} bytes ({} hex digits)", MIN_SECRET_LEN * 2)]
    TooShort,
}

impl EdgeSecret {
    /// Parses a hex-encoded secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn from_hex(hex_secret: &str) -> Result<Self, SecretError> {
        let bytes = hex::decode(hex_secret.trim()).map_err(|_| SecretError::NotHex)?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort);
        }
        // HMAC accepts keys of any length.
        Ok(Self(Hmac::<Sha256>::new_from_slice(&bytes).expect("HMAC takes keys of any length")))
    }

    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

/// What the edge vouches for, besides the method, path and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeStamp<'a> {
    pub user_id: &'a str,
    pub arrival_us: u64,
    pub traceparent: &'a str,
    pub edge_id: &'a str,
    /// The buyer's `Idempotency-Key` header as forwarded (`""` when absent): signed so that
    /// nobody between edge and origin can turn one payment request into another.
    pub idempotency_key: &'a str,
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request carries no edge signature")]
    Missing,
    #[error("the edge signature header is malformed")]
    Malformed,
    #[error("the edge signature does not match the request")]
    Mismatch,
    #[error(
        "the arrival stamp is {skew_ms} ms away from the origin's clock (at most {max_ms} ms allowed)"
    )]
    Stale { skew_ms: u64, max_ms: u64 },
}

fn canonical_mac(
    secret: &EdgeSecret,
    method: &str,
    path_and_query: &str,
    stamp: &EdgeStamp<'_>,
    body: &[u8],
) -> Hmac<Sha256> {
    let mut mac = secret.mac();
    // Formatted on the stack: the canonical form costs no allocation.
    let mut arrival = itoa::Buffer::new();
    let arrival = arrival.format(stamp.arrival_us).as_bytes();
    let mut body_hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(body), &mut body_hex)
        .expect("a SHA-256 digest is 32 bytes, 64 hex digits");
    // Every field is length-prefixed, so no choice of values can make two different
    // requests share a canonical form.
    for field in [
        VERSION.as_bytes(),
        method.as_bytes(),
        path_and_query.as_bytes(),
        stamp.user_id.as_bytes(),
        arrival,
        stamp.traceparent.as_bytes(),
        stamp.edge_id.as_bytes(),
        stamp.idempotency_key.as_bytes(),
        &body_hex,
    ] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    mac
}

/// The value of [`HEADER_SIGNATURE`] for a request.
pub fn sign(
    secret: &EdgeSecret,
    method: &str,
    path_and_query: &str,
    stamp: &EdgeStamp<'_>,
    body: &[u8],
) -> String {
    let tag = canonical_mac(secret, method, path_and_query, stamp, body).finalize();
    format!("{VERSION}={}", hex::encode(tag.into_bytes()))
}

/// The headers that carry a signed request to the origin: the stamp's fields and the
/// signature over them, the method, the path and the body. The one builder of signed
/// requests: the edge's forwarded requests and re-checks, the load generator, the tests.
/// (The `Idempotency-Key` header, part of the stamp, travels as the request's own.)
pub fn signed_headers(
    secret: &EdgeSecret,
    method: &str,
    path_and_query: &str,
    stamp: &EdgeStamp<'_>,
    body: &[u8],
) -> [(&'static str, String); 5] {
    [
        (HEADER_USER, stamp.user_id.to_owned()),
        (HEADER_ARRIVAL, stamp.arrival_us.to_string()),
        (HEADER_TRACEPARENT, stamp.traceparent.to_owned()),
        (HEADER_EDGE, stamp.edge_id.to_owned()),
        (HEADER_SIGNATURE, sign(secret, method, path_and_query, stamp, body)),
    ]
}

/// Checks a [`HEADER_SIGNATURE`] value in constant time.
pub fn verify(
    secret: &EdgeSecret,
    method: &str,
    path_and_query: &str,
    stamp: &EdgeStamp<'_>,
    body: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    let hex_tag = signature
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(SignatureError::Malformed)?;
    let mut tag = [0u8; 32];
    hex::decode_to_slice(hex_tag, &mut tag).map_err(|_| SignatureError::Malformed)?;
    canonical_mac(secret, method, path_and_query, stamp, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks that an arrival stamp is within `max_skew_us` of the origin's clock, either way.
pub fn check_fresh(arrival_us: u64, now_us: u64, max_skew_us: u64) -> Result<(), SignatureError> {
    let skew = arrival_us.abs_diff(now_us);
    if skew > max_skew_us {
        return Err(SignatureError::Stale { skew_ms: skew / 1000, max_ms: max_skew_us / 1000 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> EdgeSecret {
        EdgeSecret::from_hex(&"ab".repeat(32)).unwrap()
    }

    fn stamp() -> EdgeStamp<'static> {
        EdgeStamp {
            user_id: "5f0c3c1e-6a57-4a4c-9b8e-0d6f3e7a9b10",
            arrival_us: 1_700_000_000_000_000,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            edge_id: "edge-1",
            idempotency_key: "",
        }
    }

    #[test]
    fn the_canonical_form_is_stable() {
        // Pinned: edges and origins of different builds must agree on every byte signed.
        let sig = sign(&secret(), "POST", "/slots/acquire", &stamp(), b"{}");
        assert_eq!(sig, PINNED);
        let mut mac = Hmac::<Sha256>::new_from_slice(&[0xab; 32]).unwrap();
        let arrival = stamp().arrival_us.to_string();
        let body = hex::encode(Sha256::digest(b"{}"));
        let st = stamp();
        for f in [
            "v1",
            "POST",
            "/slots/acquire",
            st.user_id,
            &arrival,
            st.traceparent,
            st.edge_id,
            "",
            &body,
        ] {
            mac.update(&(f.len() as u64).to_be_bytes());
            mac.update(f.as_bytes());
        }
        assert_eq!(sig, format!("v1={}", hex::encode(mac.finalize().into_bytes())));
    }

    const PINNED: &str = "v1=4333f44c30ccda7ddd3ebc1eea2e7e0c85570e3a3fba897c02f75b3af9962fea";

    #[test]
    fn a_signature_verifies() {
        let sig = sign(&secret(), "POST", "/slots/acquire", &stamp(), b"{}");
        assert!(sig.starts_with("v1="));
        verify(&secret(), "POST", "/slots/acquire", &stamp(), b"{}", &sig).unwrap();
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let sig = sign(&secret(), "POST", "/slots/acquire", &stamp(), b"{}");
        let other_user = EdgeStamp { user_id: "someone-else", ..stamp() };
        let later = EdgeStamp { arrival_us: stamp().arrival_us + 1, ..stamp() };
        let other_edge = EdgeStamp { edge_id: "edge-2", ..stamp() };
        let other_trace = EdgeStamp {
            traceparent: "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ..stamp()
        };
        let other_key = EdgeStamp { idempotency_key: "k-2", ..stamp() };
        let cases: [(&str, &str, EdgeStamp<'_>, &[u8]); 8] = [
            ("POST", "/slots/acquire", other_key, b"{}"),
            ("GET", "/slots/acquire", stamp(), b"{}"),
            ("POST", "/payments", stamp(), b"{}"),
            ("POST", "/slots/acquire", stamp(), b"{ }"),
            ("POST", "/slots/acquire", other_user, b"{}"),
            ("POST", "/slots/acquire", later, b"{}"),
            ("POST", "/slots/acquire", other_edge, b"{}"),
            ("POST", "/slots/acquire", other_trace, b"{}"),
        ];
        for (method, path, st, body) in cases {
            assert_eq!(
                verify(&secret(), method, path, &st, body, &sig),
                Err(SignatureError::Mismatch),
                "{method} {path} {st:?}"
            );
        }
    }

    #[test]
    fn another_secret_does_not_verify() {
        let sig = sign(&secret(), "POST", "/x", &stamp(), b"");
        let other = EdgeSecret::from_hex(&"cd".repeat(32)).unwrap();
        assert_eq!(
            verify(&other, "POST", "/x", &stamp(), b"", &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_signatures_are_named() {
        for bad in ["", "v2=00", "v1=zz", "v1", "deadbeef"] {
            assert_eq!(
                verify(&secret(), "POST", "/x", &stamp(), b"", bad),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        // "ab" + "c" and "a" + "bc" must not collide.
        let a = EdgeStamp { user_id: "ab", edge_id: "c", ..stamp() };
        let b = EdgeStamp { user_id: "a", edge_id: "bc", ..stamp() };
        assert_ne!(sign(&secret(), "P", "/", &a, b""), sign(&secret(), "P", "/", &b, b""));
    }

    #[test]
    fn short_or_non_hex_secrets_are_refused() {
        assert_eq!(EdgeSecret::from_hex("abcd").unwrap_err(), SecretError::TooShort);
        assert_eq!(EdgeSecret::from_hex("xyz").unwrap_err(), SecretError::NotHex);
    }

    #[test]
    fn freshness_is_symmetric() {
        check_fresh(10_000_000, 10_500_000, 1_000_000).unwrap();
        check_fresh(10_500_000, 10_000_000, 1_000_000).unwrap();
        assert_eq!(
            check_fresh(10_000_000, 12_000_001, 1_000_000),
            Err(SignatureError::Stale { skew_ms: 2000, max_ms: 1000 })
        );
    }
}
