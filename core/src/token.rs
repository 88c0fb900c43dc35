//! Bearer-token verification: EdDSA (Ed25519) and ES256 (P-256) JWTs checked against a
//! JWKS; HS256 (a shared secret, `kty: oct`) only when explicitly allowed.
//!
//! Rules on top of the signature: `exp` is required, `nbf`/`iat` may not lie in the future
//! beyond the leeway, `iss` and `aud` must match the configuration, `sub` must be a UUID
//! (flashgate's ids are UUIDs) and `role` is `buyer` (the default when absent) or `admin`.
//! A key is chosen by the header's `kid` and `alg` when present; without a `kid` every key
//! of the token's algorithm is tried. Publishing the new key next to the old one, then
//! removing the old one, rotates keys without downtime.
//!
//! EdDSA signatures are checked with ed25519-dalek, whose field arithmetic uses 32-bit limbs
//! on 32-bit targets: in the wasm32 edge component a first-time token costs about half what
//! it did with jwt-simple's ed25519-compact (64-bit limbs, multiplied into 128-bit products
//! that wasm32 lacks; measured in `docs/benchmark-notes.md`). jwt-simple parses every token and checks ES256 and HS256 signatures; the claims
//! rules above have one home, [`check_claims`], applied to every algorithm.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::JWTError;
use jwt_simple::prelude::*;
use serde::{Deserialize as De, Serialize as Ser};
use std::sync::OnceLock;
use std::time::Duration as StdDuration;
use uuid::Uuid;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// One JSON Web Key, as published in a JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Ser, De)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// A symmetric key (`kty: oct`), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The JWK of an Ed25519 public key (32 raw bytes).
    pub fn ed25519(kid: &str, public_key: &[u8]) -> Self {
        Self {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(public_key)),
            y: None,
            k: None,
            kid: Some(kid.into()),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }

    /// The JWK of a P-256 public key, from its uncompressed SEC1 form (`04 ‖ x ‖ y`).
    pub fn p256(kid: &str, uncompressed: &[u8]) -> Self {
        let coord = |range: std::ops::Range<usize>| {
            uncompressed.get(range).map(|c| URL_SAFE_NO_PAD.encode(c))
        };
        Self {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: coord(1..33),
            y: coord(33..65),
            k: None,
            kid: Some(kid.into()),
            alg: Some("ES256".into()),
            use_: Some("sig".into()),
        }
    }

    /// The JWK of an HS256 shared secret.
    pub fn hs256(kid: &str, secret: &[u8]) -> Self {
        Self {
            kty: "oct".into(),
            crv: None,
            x: None,
            y: None,
            k: Some(URL_SAFE_NO_PAD.encode(secret)),
            kid: Some(kid.into()),
            alg: Some("HS256".into()),
            use_: Some("sig".into()),
        }
    }
}

/// A JWKS document: `{"keys": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Ser, De)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set is not a JWKS document: {0}")]
    NotJwks(String),
    #[error("key {index} ({kid}) is not a valid {kind} key")]
    BadKey { index: usize, kid: String, kind: &'static str },
    #[error("the key set holds no usable key (EdDSA or ES256; HS256 only when allowed)")]
    Empty,
}

/// An Ed25519 public key as published, decompressed (a square root: tens of µs in wasm) the
/// first time a token needs it, not when the key set is read — the edge reads its
/// configuration on every request when each request gets a fresh instance.
#[derive(Clone)]
struct Ed25519Key {
    raw: [u8; 32],
    parsed: OnceLock<Option<ed25519_dalek::VerifyingKey>>,
}

impl Ed25519Key {
    /// The key, or `None` if the bytes are not a point or a small-order (weak) one.
    fn get(&self) -> Option<&ed25519_dalek::VerifyingKey> {
        self.parsed
            .get_or_init(|| {
                ed25519_dalek::VerifyingKey::from_bytes(&self.raw).ok().filter(|k| !k.is_weak())
            })
            .as_ref()
    }
}

#[derive(Clone)]
enum Key {
    Ed25519(Ed25519Key),
    Es256(ES256PublicKey),
    Hs256(HS256Key),
}

impl Key {
    fn algorithm(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "EdDSA",
            Self::Es256(_) => "ES256",
            Self::Hs256(_) => "HS256",
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(k) => k.raw.to_vec(),
            Self::Es256(k) => k.to_bytes(),
            Self::Hs256(k) => k.to_bytes(),
        }
    }

    /// Checks the signature (and, through jwt-simple, the claims' times) and returns the
    /// claims; [`check_claims`] applies flashgate's rules after.
    fn verify(
        &self,
        token: &str,
        meta: &TokenMetadata,
        options: VerificationOptions,
    ) -> Result<JWTClaims<FlashgateClaims>, TokenError> {
        match self {
            Self::Ed25519(k) => verify_eddsa(k.get().ok_or(TokenError::BadSignature)?, token, meta),
            Self::Es256(k) => k.verify_token(token, Some(options)).map_err(|e| map_error(&e)),
            Self::Hs256(k) => k.verify_token(token, Some(options)).map_err(|e| map_error(&e)),
        }
    }
}

#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    key: Key,
}

/// The issuer's public keys.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document of Ed25519 (`OKP`) and P-256 (`EC`) keys. Keys of types
    /// flashgate does not verify (RSA, …) and shared secrets (`oct`) are skipped; a
    /// malformed key is an error, and so is a set with no usable key.
    pub fn from_jwks_json(json: &str) -> Result<Self, KeySetError> {
        Self::parse(json, false)
    }

    /// As [`KeySet::from_jwks_json`], also accepting HS256 shared secrets (`oct` keys).
    /// Anyone holding such a secret can mint tokens: allow it only on purpose.
    pub fn from_jwks_json_allowing_hs256(json: &str) -> Result<Self, KeySetError> {
        Self::parse(json, true)
    }

    fn parse(json: &str, hs256: bool) -> Result<Self, KeySetError> {
        let jwks: Jwks =
            serde_json::from_str(json).map_err(|e| KeySetError::NotJwks(e.to_string()))?;
        Self::from_jwks_with(&jwks, hs256)
    }

    pub fn from_jwks(jwks: &Jwks) -> Result<Self, KeySetError> {
        Self::from_jwks_with(jwks, false)
    }

    fn from_jwks_with(jwks: &Jwks, hs256: bool) -> Result<Self, KeySetError> {
        let mut keys = Vec::new();
        for (index, jwk) in jwks.keys.iter().enumerate() {
            let b64 =
                |v: &Option<String>| v.as_deref().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
            let bad = |kind: &'static str| KeySetError::BadKey {
                index,
                kid: jwk.kid.clone().unwrap_or_else(|| "no kid".into()),
                kind,
            };
            let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
                ("OKP", Some("Ed25519")) => {
                    let raw: [u8; 32] = b64(&jwk.x)
                        .and_then(|raw| raw.try_into().ok())
                        .ok_or_else(|| bad("Ed25519"))?;
                    Key::Ed25519(Ed25519Key { raw, parsed: OnceLock::new() })
                }
                ("EC", Some("P-256")) => {
                    let (x, y) = (b64(&jwk.x), b64(&jwk.y));
                    let (Some(x), Some(y)) = (x, y) else { return Err(bad("P-256")) };
                    if x.len() != 32 || y.len() != 32 {
                        return Err(bad("P-256"));
                    }
                    let sec1 = [&[4u8][..], &x, &y].concat();
                    Key::Es256(ES256PublicKey::from_bytes(&sec1).map_err(|_| bad("P-256"))?)
                }
                ("oct", _) if hs256 => {
                    let raw = b64(&jwk.k).filter(|k| k.len() >= 32).ok_or_else(|| bad("HS256"))?;
                    Key::Hs256(HS256Key::from_bytes(&raw))
                }
                _ => continue,
            };
            keys.push(VerifyingKey { kid: jwk.kid.clone(), key });
        }
        if keys.is_empty() {
            return Err(KeySetError::Empty);
        }
        Ok(Self { keys })
    }

    /// Checks every key fully (an Ed25519 key is a valid, not small-order point), which
    /// reading the set leaves to the first token that needs the key: processes that start
    /// once (the origin, the edge host) call this to refuse a bad key at start-up.
    pub fn check(&self) -> Result<(), KeySetError> {
        for (index, k) in self.keys.iter().enumerate() {
            if let Key::Ed25519(key) = &k.key
                && key.get().is_none()
            {
                let kid = k.kid.clone().unwrap_or_else(|| "no kid".into());
                return Err(KeySetError::BadKey { index, kid, kind: "Ed25519" });
            }
        }
        Ok(())
    }
}

/// What a token must say besides being signed by a known key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    /// Tolerated clock skew for `exp`, `nbf` and `iat`.
    pub leeway: StdDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Ser, De)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Buyer,
    Admin,
}

#[derive(Debug, Default, Clone, Ser, De)]
struct FlashgateClaims {
    #[serde(default)]
    role: Option<Role>,
}

/// A verified token: who, in what role, until when (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    pub role: Role,
    pub expires_at: u64,
}

impl VerifiedToken {
    /// The cache key of a verified token: a hash of the token under the fingerprint of the
    /// verifier's configuration, so a key rotation or policy change starts a fresh cache.
    pub fn cache_key(verifier_fingerprint: &str, token: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(token.as_bytes());
        format!("jwt:{verifier_fingerprint}:{}", hex::encode(&digest[..16]))
    }

    /// Compact form for a key-value store: `<uuid> <role> <exp>`.
    pub fn encode(&self) -> String {
        let role = match self.role {
            Role::Buyer => "buyer",
            Role::Admin => "admin",
        };
        format!("{} {role} {}", self.user_id, self.expires_at)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let user_id = Uuid::try_parse(parts.next()?).ok()?;
        let role = match parts.next()? {
            "buyer" => Role::Buyer,
            "admin" => Role::Admin,
            _ => return None,
        };
        let expires_at = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self { user_id, role, expires_at })
    }

    /// Whether a cached verdict may still be used at `now_secs`, with the same leeway the
    /// verifier grants.
    pub fn usable_at(&self, now_secs: u64, leeway: StdDuration) -> bool {
        now_secs <= self.expires_at.saturating_add(leeway.as_secs())
    }
}

/// Why a token was refused; the `Display` text is what the 401 `detail` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the Authorization header must be `Bearer <JWT>`")]
    MissingBearer,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token algorithm `{0}` is not accepted")]
    Algorithm(String),
    #[error("the token's key id is not one of the issuer's keys")]
    UnknownKey,
    #[error("the token signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token issuer is not accepted")]
    Issuer,
    #[error("the token audience is not accepted")]
    Audience,
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token subject must be a UUID")]
    Subject,
    #[error("the token role is not `buyer` or `admin`")]
    Role,
}

/// Verifies bearer tokens against a key set and a policy.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: KeySet,
    policy: TokenPolicy,
}

impl TokenVerifier {
    pub fn new(keys: KeySet, policy: TokenPolicy) -> Self {
        Self { keys, policy }
    }

    pub fn leeway(&self) -> StdDuration {
        self.policy.leeway
    }

    /// See [`KeySet::check`].
    pub fn check_keys(&self) -> Result<(), KeySetError> {
        self.keys.check()
    }

    /// A short digest of the keys and the policy: cached verdicts are stored under it, so
    /// they die with a key rotation or a policy change.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for k in &self.keys.keys {
            h.update(k.kid.as_deref().unwrap_or("").as_bytes());
            h.update([0]);
            h.update(k.key.algorithm().as_bytes());
            h.update(k.key.bytes());
        }
        for part in [&self.policy.issuer, &self.policy.audience] {
            h.update([1]);
            h.update(part.as_bytes());
        }
        h.update(self.policy.leeway.as_secs().to_be_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// Extracts the token from an `Authorization` header value.
    pub fn bearer(header: Option<&str>) -> Result<&str, TokenError> {
        let value = header.ok_or(TokenError::MissingBearer)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::MissingBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(TokenError::MissingBearer);
        }
        Ok(token.trim())
    }

    /// Verifies `token` at `now_secs` (seconds since the epoch).
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let meta = Token::decode_metadata(token).map_err(|_| TokenError::Malformed)?;
        let alg = meta.algorithm();
        if !self.keys.keys.iter().any(|k| k.key.algorithm() == alg) {
            return Err(TokenError::Algorithm(alg.chars().take(16).collect()));
        }
        let kid = meta.key_id();
        let mut candidates = self
            .keys
            .keys
            .iter()
            .filter(|k| k.key.algorithm() == alg && (kid.is_none() || k.kid.as_deref() == kid))
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([self.policy.issuer.clone()])),
            allowed_audiences: Some(HashSet::from([self.policy.audience.clone()])),
            time_tolerance: Some(Duration::from_secs(self.policy.leeway.as_secs())),
            artificial_time: Some(Duration::from_secs(now_secs)),
            max_token_length: Some(MAX_TOKEN_LEN),
            ..Default::default()
        };
        let mut last = TokenError::BadSignature;
        for candidate in candidates {
            match candidate.key.verify(token, &meta, options.clone()) {
                Ok(claims) => {
                    check_claims(&claims, &self.policy, now_secs)?;
                    return Self::accept(claims);
                }
                Err(e) => {
                    last = e;
                    if last != TokenError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn accept(claims: JWTClaims<FlashgateClaims>) -> Result<VerifiedToken, TokenError> {
        let expires_at = claims.expires_at.ok_or(TokenError::MissingClaim("exp"))?.as_secs();
        let subject = claims.subject.ok_or(TokenError::MissingClaim("sub"))?;
        let user_id = Uuid::try_parse(&subject).map_err(|_| TokenError::Subject)?;
        Ok(VerifiedToken { user_id, role: claims.custom.role.unwrap_or(Role::Buyer), expires_at })
    }
}

/// An EdDSA token checked with ed25519-dalek: the same header rules as jwt-simple's (no
/// critical extensions, a `typ` of JWT if any), the strict signature check (canonical
/// encodings, no small-order points), then the claims as JSON.
fn verify_eddsa(
    key: &ed25519_dalek::VerifyingKey,
    token: &str,
    meta: &TokenMetadata,
) -> Result<JWTClaims<FlashgateClaims>, TokenError> {
    if meta.critical().is_some_and(|crit| !crit.is_empty()) {
        return Err(TokenError::Malformed);
    }
    if let Some(typ) = meta.signature_type() {
        let typ = typ.to_ascii_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return Err(TokenError::Malformed);
        }
    }
    let (signed, signature_b64) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let claims_b64 = signed.split_once('.').ok_or(TokenError::Malformed)?.1;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(TokenError::BadSignature)?;
    key.verify_strict(signed.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD.decode(claims_b64).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|e| claims_unreadable(&e.to_string()))
}

/// Claims that do not deserialize: an unknown role is the one such error we can name.
fn claims_unreadable(error: &str) -> TokenError {
    if error.contains("unknown variant") { TokenError::Role } else { TokenError::Malformed }
}

/// flashgate's claims rules, for every algorithm: `iat` and `nbf` not in the future and `exp`
/// not in the past beyond the leeway, `iss` and `aud` as configured.
fn check_claims(
    claims: &JWTClaims<FlashgateClaims>,
    policy: &TokenPolicy,
    now_secs: u64,
) -> Result<(), TokenError> {
    let leeway = policy.leeway.as_secs();
    if claims.issued_at.is_some_and(|iat| iat.as_secs() > now_secs.saturating_add(leeway))
        || claims.invalid_before.is_some_and(|nbf| nbf.as_secs() > now_secs.saturating_add(leeway))
    {
        return Err(TokenError::NotYetValid);
    }
    if claims.expires_at.is_some_and(|exp| now_secs.saturating_sub(leeway) > exp.as_secs()) {
        return Err(TokenError::Expired);
    }
    match &claims.issuer {
        None => return Err(TokenError::MissingClaim("iss")),
        Some(issuer) if *issuer != policy.issuer => return Err(TokenError::Issuer),
        Some(_) => {}
    }
    let audience_ok = match &claims.audiences {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Audiences::AsString(aud)) => *aud == policy.audience,
        Some(Audiences::AsSet(auds)) => auds.contains(&policy.audience),
    };
    if !audience_ok {
        return Err(TokenError::Audience);
    }
    Ok(())
}

fn map_error(e: &jwt_simple::Error) -> TokenError {
    match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature) => TokenError::BadSignature,
        Some(JWTError::TokenHasExpired) => TokenError::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => TokenError::NotYetValid,
        Some(JWTError::RequiredIssuerMismatch) => TokenError::Issuer,
        Some(JWTError::RequiredIssuerMissing) => TokenError::MissingClaim("iss"),
        Some(JWTError::RequiredAudienceMismatch) => TokenError::Audience,
        Some(JWTError::RequiredAudienceMissing) => TokenError::MissingClaim("aud"),
        Some(JWTError::AlgorithmMismatch) => TokenError::Algorithm("?".into()),
        _ => claims_unreadable(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    struct Issuer {
        pair: Ed25519KeyPair,
    }

    impl Issuer {
        fn new(kid: &str) -> Self {
            Self { pair: Ed25519KeyPair::generate().with_key_id(kid) }
        }
        fn jwk(&self) -> Jwk {
            let kid = self.pair.key_id().clone().unwrap();
            Jwk::ed25519(&kid, &self.pair.public_key().to_bytes())
        }
        fn claims(&self) -> JWTClaims<FlashgateClaims> {
            let mut c = Claims::with_custom_claims(
                FlashgateClaims { role: Some(Role::Buyer) },
                Duration::from_mins(10),
            )
            .with_issuer("iss")
            .with_audience("aud")
            .with_subject(Uuid::nil());
            c.issued_at = Some(Duration::from_secs(NOW));
            c.expires_at = Some(Duration::from_secs(NOW + 600));
            c
        }
        fn sign(&self, claims: JWTClaims<FlashgateClaims>) -> String {
            self.pair.sign(claims).unwrap()
        }
    }

    fn verifier(jwks: Vec<Jwk>) -> TokenVerifier {
        TokenVerifier::new(
            KeySet::from_jwks(&Jwks { keys: jwks }).unwrap(),
            TokenPolicy {
                issuer: "iss".into(),
                audience: "aud".into(),
                leeway: StdDuration::from_secs(30),
            },
        )
    }

    fn es256(kid: &str) -> (ES256KeyPair, Jwk) {
        let pair = ES256KeyPair::generate().with_key_id(kid);
        let jwk = Jwk::p256(kid, &pair.public_key().public_key().to_bytes_uncompressed());
        (pair, jwk)
    }

    #[test]
    fn es256_tokens_verify_next_to_eddsa_ones() {
        let ed = Issuer::new("ed");
        let (ec, ec_jwk) = es256("ec");
        let v = verifier(vec![ed.jwk(), ec_jwk]);
        let t = ec.sign(ed.claims()).unwrap();
        assert_eq!(v.verify(&t, NOW).unwrap().user_id, Uuid::nil());
        assert!(v.verify(&ed.sign(ed.claims()), NOW).is_ok());
        // Another P-256 key under the same kid does not verify.
        let (forger, _) = es256("ec");
        assert_eq!(
            v.verify(&forger.sign(ed.claims()).unwrap(), NOW),
            Err(TokenError::BadSignature)
        );
        // A P-256 JWK with a bad coordinate is refused outright.
        let mut broken = es256("x").1;
        broken.y = Some("AAAA".into());
        assert!(matches!(
            KeySet::from_jwks(&Jwks { keys: vec![broken] }),
            Err(KeySetError::BadKey { kind: "P-256", .. })
        ));
    }

    /// EdDSA (checked by ed25519-dalek) and ES256 (checked by jwt-simple) give the same
    /// verdict on the same claims: flashgate's rules have one home, whatever the algorithm.
    #[test]
    fn eddsa_and_es256_agree_on_every_claims_verdict() {
        let ed = Issuer::new("ed");
        let (ec, ec_jwk) = es256("ec");
        let v = verifier(vec![ed.jwk(), ec_jwk]);
        type Edit = fn(&mut JWTClaims<FlashgateClaims>);
        let cases: [(&str, Edit, Result<(), TokenError>); 9] = [
            ("good", |_| {}, Ok(())),
            (
                "expired",
                |c| c.expires_at = Some(Duration::from_secs(NOW - 31)),
                Err(TokenError::Expired),
            ),
            (
                "expired within leeway",
                |c| c.expires_at = Some(Duration::from_secs(NOW - 30)),
                Ok(()),
            ),
            (
                "nbf ahead",
                |c| c.invalid_before = Some(Duration::from_secs(NOW + 31)),
                Err(TokenError::NotYetValid),
            ),
            (
                "iat ahead",
                |c| c.issued_at = Some(Duration::from_secs(NOW + 31)),
                Err(TokenError::NotYetValid),
            ),
            ("issuer", |c| c.issuer = Some("other".into()), Err(TokenError::Issuer)),
            ("no issuer", |c| c.issuer = None, Err(TokenError::MissingClaim("iss"))),
            ("no audience", |c| c.audiences = None, Err(TokenError::MissingClaim("aud"))),
            ("no exp", |c| c.expires_at = None, Err(TokenError::MissingClaim("exp"))),
        ];
        for (name, edit, expected) in cases {
            let mut claims = ed.claims();
            edit(&mut claims);
            let eddsa = v.verify(&ed.sign(claims.clone()), NOW).map(drop);
            let es = v.verify(&ec.sign(claims).unwrap(), NOW).map(drop);
            assert_eq!(eddsa, expected, "EdDSA: {name}");
            assert_eq!(es, expected, "ES256: {name}");
        }
    }

    #[test]
    fn eddsa_signatures_are_checked_strictly() {
        let ed = Issuer::new("ed");
        let v = verifier(vec![ed.jwk()]);
        let t = ed.sign(ed.claims());
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[5] ^= 1;
        let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(v.verify(&tampered, NOW), Err(TokenError::BadSignature));
        // A signature of the wrong length, or another payload under this signature.
        assert_eq!(v.verify(&format!("{signed}.AAAA"), NOW), Err(TokenError::BadSignature));
        let other = ed.sign(JWTClaims { subject: Some(Uuid::max().to_string()), ..ed.claims() });
        let spliced = format!("{}.{sig}", other.rsplit_once('.').unwrap().0);
        assert_eq!(v.verify(&spliced, NOW), Err(TokenError::BadSignature));
        // A small-order (weak) public key is refused by the full check, and verifies
        // nothing if it was not run.
        let weak = KeySet::from_jwks(&Jwks { keys: vec![Jwk::ed25519("w", &[0u8; 32])] });
        let weak = weak.unwrap();
        assert!(matches!(weak.check(), Err(KeySetError::BadKey { kind: "Ed25519", .. })));
        assert!(KeySet::from_jwks(&Jwks { keys: vec![ed.jwk()] }).unwrap().check().is_ok());
    }

    #[test]
    fn hs256_is_accepted_only_when_allowed() {
        let ed = Issuer::new("ed");
        let secret = [7u8; 32];
        let jwks = serde_json::to_string(&Jwks { keys: vec![ed.jwk(), Jwk::hs256("hs", &secret)] })
            .unwrap();
        let hs = HS256Key::from_bytes(&secret).with_key_id("hs");
        let t = hs.authenticate(ed.claims()).unwrap();
        let policy = TokenPolicy {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway: StdDuration::from_secs(30),
        };
        let strict = TokenVerifier::new(KeySet::from_jwks_json(&jwks).unwrap(), policy.clone());
        assert_eq!(strict.verify(&t, NOW), Err(TokenError::Algorithm("HS256".into())));
        let allowing = KeySet::from_jwks_json_allowing_hs256(&jwks).unwrap();
        let lenient = TokenVerifier::new(allowing, policy);
        assert!(lenient.verify(&t, NOW).is_ok());
        assert_ne!(strict.fingerprint(), lenient.fingerprint());
        // Algorithm confusion: an HS256 token keyed with the Ed25519 public key is refused.
        let confused = HS256Key::from_bytes(&ed.pair.public_key().to_bytes()).with_key_id("ed");
        let t = confused.authenticate(ed.claims()).unwrap();
        assert!(lenient.verify(&t, NOW).is_err());
        assert!(strict.verify(&t, NOW).is_err());
    }

    #[test]
    fn a_good_token_verifies() {
        let issuer = Issuer::new("k1");
        let t = issuer.sign(issuer.claims());
        let v = verifier(vec![issuer.jwk()]).verify(&t, NOW).unwrap();
        assert_eq!(v.user_id, Uuid::nil());
        assert_eq!(v.role, Role::Buyer);
        assert_eq!(v.expires_at, NOW + 600);
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let issuer = Issuer::new("k1");
        let t = issuer.sign(issuer.claims());
        let v = verifier(vec![issuer.jwk()]);
        assert!(v.verify(&t, NOW + 600 + 29).is_ok());
        assert_eq!(v.verify(&t, NOW + 600 + 31), Err(TokenError::Expired));
    }

    #[test]
    fn not_yet_valid_tokens_are_refused() {
        let issuer = Issuer::new("k1");
        let mut c = issuer.claims();
        c.invalid_before = Some(Duration::from_secs(NOW + 120));
        c.issued_at = Some(Duration::from_secs(NOW + 120));
        let t = issuer.sign(c);
        assert_eq!(verifier(vec![issuer.jwk()]).verify(&t, NOW), Err(TokenError::NotYetValid));
    }

    #[test]
    fn wrong_key_issuer_audience_and_subject_are_refused() {
        let issuer = Issuer::new("k1");
        let stranger = Issuer::new("k1");
        let v = verifier(vec![issuer.jwk()]);
        assert_eq!(v.verify(&stranger.sign(stranger.claims()), NOW), Err(TokenError::BadSignature));

        let c = issuer.claims().with_issuer("other");
        assert_eq!(v.verify(&issuer.sign(c), NOW), Err(TokenError::Issuer));
        let c = issuer.claims().with_audience("other");
        assert_eq!(v.verify(&issuer.sign(c), NOW), Err(TokenError::Audience));
        let c = issuer.claims().with_subject("not-a-uuid");
        assert_eq!(v.verify(&issuer.sign(c), NOW), Err(TokenError::Subject));
        let mut c = issuer.claims();
        c.expires_at = None;
        assert_eq!(v.verify(&issuer.sign(c), NOW), Err(TokenError::MissingClaim("exp")));
    }

    #[test]
    fn alg_none_and_garbage_are_refused() {
        let v = verifier(vec![Issuer::new("k1").jwk()]);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"{}","exp":{},"iss":"iss","aud":"aud"}}"#,
            Uuid::nil(),
            NOW + 60
        ));
        assert_eq!(
            v.verify(&format!("{header}.{body}."), NOW),
            Err(TokenError::Algorithm("none".into()))
        );
        for junk in ["", "a.b", "a.b.c", "....", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(v.verify(junk, NOW), Err(TokenError::Malformed), "{junk:.20}");
        }
    }

    #[test]
    fn keys_are_chosen_by_kid_and_rotate() {
        let old = Issuer::new("old");
        let new = Issuer::new("new");
        let both = verifier(vec![old.jwk(), new.jwk()]);
        assert!(both.verify(&old.sign(old.claims()), NOW).is_ok());
        assert!(both.verify(&new.sign(new.claims()), NOW).is_ok());
        let only_new = verifier(vec![new.jwk()]);
        assert_eq!(only_new.verify(&old.sign(old.claims()), NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn roles_parse_and_unknown_roles_are_refused() {
        let issuer = Issuer::new("k1");
        let v = verifier(vec![issuer.jwk()]);
        let mut c = issuer.claims();
        c.custom.role = Some(Role::Admin);
        assert_eq!(v.verify(&issuer.sign(c), NOW).unwrap().role, Role::Admin);
        let mut c = issuer.claims();
        c.custom.role = None;
        assert_eq!(v.verify(&issuer.sign(c), NOW).unwrap().role, Role::Buyer);
    }

    #[test]
    fn cached_verdicts_round_trip_and_expire() {
        let v = VerifiedToken { user_id: Uuid::nil(), role: Role::Admin, expires_at: NOW };
        assert_eq!(VerifiedToken::decode(&v.encode()), Some(v.clone()));
        for bad in ["", "x admin 1", "00000000-0000-0000-0000-000000000000 root 1", "a b c d"] {
            assert_eq!(VerifiedToken::decode(bad), None);
        }
        let leeway = StdDuration::from_secs(30);
        assert!(v.usable_at(NOW + 30, leeway));
        assert!(!v.usable_at(NOW + 31, leeway));
        assert_ne!(VerifiedToken::cache_key("a", "t"), VerifiedToken::cache_key("b", "t"));
        assert_ne!(VerifiedToken::cache_key("a", "t"), VerifiedToken::cache_key("a", "u"));
        let (k1, k2) = (Issuer::new("k1").jwk(), Issuer::new("k2").jwk());
        assert_eq!(
            verifier(vec![k1.clone()]).fingerprint(),
            verifier(vec![k1.clone()]).fingerprint()
        );
        assert_ne!(verifier(vec![k1.clone()]).fingerprint(), verifier(vec![k1, k2]).fingerprint());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(TokenVerifier::bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(TokenVerifier::bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(TokenVerifier::bearer(None), Err(TokenError::MissingBearer));
        assert_eq!(TokenVerifier::bearer(Some("Basic abc")), Err(TokenError::MissingBearer));
        assert_eq!(TokenVerifier::bearer(Some("Bearer ")), Err(TokenError::MissingBearer));
    }

    #[test]
    fn jwks_parsing_skips_foreign_keys_and_names_bad_ones() {
        let good = Issuer::new("k1").jwk();
        let rsa = r#"{"kty":"RSA","n":"abc","e":"AQAB","kid":"r"}"#;
        let json = format!(r#"{{"keys":[{rsa},{}]}}"#, serde_json::to_string(&good).unwrap());
        assert!(KeySet::from_jwks_json(&json).is_ok());
        assert_eq!(
            KeySet::from_jwks_json(&format!(r#"{{"keys":[{rsa}]}}"#)).unwrap_err(),
            KeySetError::Empty
        );
        let bad = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"b"}]}"#;
        assert_eq!(
            KeySet::from_jwks_json(bad).unwrap_err(),
            KeySetError::BadKey { index: 0, kid: "b".into(), kind: "Ed25519" }
        );
        assert!(matches!(KeySet::from_jwks_json("nope"), Err(KeySetError::NotJwks(_))));
    }
}
