//! The edge component's configuration: which variables it reads, their defaults, and how
//! each is checked. One parser for the component (which reads the variables through
//! `wasi:config` at request time) and for flashgate's host (which checks them before it
//! serves anything, so a misconfigured edge refuses to start instead of failing every
//! request). Platforms that start a component without checking its variables (`spin up`)
//! reach the component with the same error, which it answers as a 503 naming the variable.

use crate::shield::Limit;
use crate::signing::EdgeSecret;
pub use crate::token::KeySetError;
use crate::token::{KeySet, TokenPolicy, TokenVerifier};
use std::fmt;
use std::time::Duration;

/// A variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name, as the manifest's component section spells it.
    pub variable: String,
    pub detail: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "edge variable `{}`: {}", self.variable, self.detail)
    }
}

impl std::error::Error for ConfigError {}

fn error(variable: &str, detail: impl Into<String>) -> ConfigError {
    ConfigError { variable: variable.to_owned(), detail: detail.into() }
}

/// Token verification keys and the fingerprint cached verdicts are filed under (so they die
/// with a key rotation).
#[derive(Debug)]
pub struct Keys {
    pub verifier: TokenVerifier,
    pub fingerprint: String,
}

impl Keys {
    pub fn new(verifier: TokenVerifier) -> Self {
        let fingerprint = verifier.fingerprint();
        Self { verifier, fingerprint }
    }

    /// Keys from a JWKS document, under `policy` (HS256 keys only if `allow_hs256`).
    pub fn from_jwks_json(
        json: &str,
        allow_hs256: bool,
        policy: TokenPolicy,
    ) -> Result<Self, crate::token::KeySetError> {
        let keys = if allow_hs256 {
            KeySet::from_jwks_json_allowing_hs256(json)
        } else {
            KeySet::from_jwks_json(json)
        }?;
        Ok(Self::new(TokenVerifier::new(keys, policy)))
    }
}

/// Where the edge's token keys come from.
#[derive(Debug)]
pub enum KeySource {
    /// `jwt_jwks`: the JWKS document itself (development, or a provider without a URL).
    Inline(std::sync::Arc<Keys>),
    /// `jwt_jwks_url`: fetched through the allowed outbound hosts and cached
    /// ([`crate::jwks`]).
    Url { url: String, allow_hs256: bool, policy: TokenPolicy },
}

/// Everything one request needs to know about its deployment.
pub struct EdgeConfig {
    /// Base URL of the origin, without a trailing slash (`http://127.0.0.1:8081`).
    pub origin_url: String,
    pub edge_id: String,
    pub secret: EdgeSecret,
    pub keys: KeySource,
    /// How often the edge re-checks its refusing availability hints at the origin (one call
    /// for every product).
    pub refresh_every_us: u64,
    /// Token buckets per buyer and per client address (`None`: no limit).
    pub user_limit: Option<Limit>,
    pub address_limit: Option<Limit>,
    /// After this long an in-flight acquisition marker is taken to be abandoned.
    pub in_flight_us: u64,
    /// How long an `already-holding` answer is replayed from the store.
    pub holding_us: u64,
    /// Whether the host stamps arrivals ([`crate::arrival`]): only flashgate's host does.
    pub host_stamps: bool,
    /// The longest an admitted request may wait inside the edge before it is forwarded
    /// (`max_edge_wait_ms`; 0: no bound).
    pub max_wait_us: u64,
}

/// Reads variables through `get` (`Err`: the platform could not read it).
struct Reader<F> {
    get: F,
}

impl<F> Reader<F>
where
    F: Fn(&str) -> Result<Option<String>, String>,
{
    fn value(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let value = (self.get)(key).map_err(|e| error(key, format!("cannot be read: {e}")))?;
        Ok(value.filter(|v| !v.trim().is_empty()))
    }

    fn required(&self, key: &str) -> Result<String, ConfigError> {
        self.value(key)?.ok_or_else(|| error(key, "is required and missing"))
    }

    fn optional(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.value(key)?.unwrap_or_else(|| default.to_owned()))
    }

    fn number(&self, key: &str, default: &str) -> Result<f64, ConfigError> {
        let raw = self.optional(key, default)?;
        raw.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| error(key, format!("must be a non-negative number, not `{raw}`")))
    }

    /// A rate `<key>_per_sec` with burst `<key>_burst`; a rate of 0 turns the limit off.
    fn limit(&self, key: &str, per_sec: &str, burst: &str) -> Result<Option<Limit>, ConfigError> {
        let per_sec = self.number(&format!("{key}_per_sec"), per_sec)?;
        let burst = self.number(&format!("{key}_burst"), burst)?.max(1.0) as u32;
        Ok((per_sec > 0.0).then_some(Limit { per_sec, burst }))
    }
}

impl EdgeConfig {
    /// The timings the shield decides with.
    pub fn shield_timings(&self) -> crate::shield::Timings {
        crate::shield::Timings {
            refresh_every_us: self.refresh_every_us,
            in_flight_us: self.in_flight_us,
            holding_us: self.holding_us,
        }
    }

    /// Parses the configuration from `get`, naming the first variable that is wrong.
    pub fn parse(
        get: impl Fn(&str) -> Result<Option<String>, String>,
    ) -> Result<Self, ConfigError> {
        let r = Reader { get };
        let origin_url = r.required("origin_url")?.trim().trim_end_matches('/').to_owned();
        if !origin_url.starts_with("http://") && !origin_url.starts_with("https://") {
            return Err(error("origin_url", format!("must be an http(s) URL, not `{origin_url}`")));
        }
        let edge_id = r.optional("edge_id", "edge")?;
        let secret = EdgeSecret::from_hex(&r.required("edge_secret")?)
            .map_err(|e| error("edge_secret", e.to_string()))?;
        // HS256 (shared secrets) only when the deployment says so explicitly.
        let allow_hs256 = match r.optional("jwt_allow_hs256", "false")?.trim() {
            "true" => true,
            "false" => false,
            other => {
                return Err(error(
                    "jwt_allow_hs256",
                    format!("must be true or false, not `{other}`"),
                ));
            }
        };
        let issuer = r.optional("jwt_issuer", "flashgate-dev")?;
        let audience = r.optional("jwt_audience", "flashgate")?;
        let leeway: u64 = r
            .optional("jwt_leeway_secs", "30")?
            .trim()
            .parse()
            .map_err(|_| error("jwt_leeway_secs", "must be a whole number of seconds"))?;
        let policy = TokenPolicy { issuer, audience, leeway: Duration::from_secs(leeway) };
        let keys = match (r.value("jwt_jwks")?, r.value("jwt_jwks_url")?) {
            (Some(jwks), None) => KeySource::Inline(std::sync::Arc::new(
                Keys::from_jwks_json(&jwks, allow_hs256, policy)
                    .map_err(|e| error("jwt_jwks", e.to_string()))?,
            )),
            (None, Some(url)) => {
                let url = url.trim().to_owned();
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    return Err(error(
                        "jwt_jwks_url",
                        format!("must be an http(s) URL, not `{url}`"),
                    ));
                }
                KeySource::Url { url, allow_hs256, policy }
            }
            (Some(_), Some(_)) => {
                return Err(error("jwt_jwks_url", "set either jwt_jwks or jwt_jwks_url, not both"));
            }
            (None, None) => {
                return Err(error("jwt_jwks", "is required and missing (or set jwt_jwks_url)"));
            }
        };
        Ok(Self {
            origin_url,
            edge_id,
            secret,
            keys,
            refresh_every_us: (r.number("availability_refresh_ms", "250")?.max(1.0) * 1000.0)
                as u64,
            user_limit: r.limit("rate_user", "5", "10")?,
            address_limit: r.limit("rate_address", "100", "200")?,
            in_flight_us: 10_000_000,
            holding_us: 5_000_000,
            // Unreadable (every platform but flashgate's host) means no.
            host_stamps: (r.get)(crate::arrival::HOST_STAMPS_KEY)
                .ok()
                .flatten()
                .is_some_and(|v| v.trim() == "true"),
            max_wait_us: (r.number("max_edge_wait_ms", "250")? * 1000.0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn parse(pairs: &[(&str, &str)]) -> Result<EdgeConfig, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        EdgeConfig::parse(|k| Ok(map.get(k).cloned()))
    }

    fn valid() -> Vec<(&'static str, &'static str)> {
        vec![
            ("origin_url", "http://127.0.0.1:8081/"),
            ("edge_secret", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
            ("jwt_jwks", JWKS),
        ]
    }

    #[test]
    fn a_complete_configuration_parses_with_defaults() {
        let c = parse(&valid()).unwrap();
        assert_eq!(c.origin_url, "http://127.0.0.1:8081");
        assert_eq!(c.refresh_every_us, 250_000);
        assert_eq!(c.user_limit.map(|l| l.burst), Some(10));
        assert_eq!(c.max_wait_us, 250_000);
        assert!(!c.host_stamps);
    }

    #[test]
    fn keys_come_inline_or_from_a_url() {
        assert!(matches!(parse(&valid()).unwrap().keys, KeySource::Inline(_)));
        let mut by_url: Vec<(&str, &str)> =
            valid().into_iter().filter(|(k, _)| *k != "jwt_jwks").collect();
        by_url.push(("jwt_jwks_url", "https://idp.example/.well-known/jwks.json"));
        match parse(&by_url).unwrap().keys {
            KeySource::Url { url, allow_hs256, .. } => {
                assert_eq!(url, "https://idp.example/.well-known/jwks.json");
                assert!(!allow_hs256);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_host_that_answers_the_reserved_key_stamps_arrivals() {
        let mut pairs = valid();
        pairs.push((crate::arrival::HOST_STAMPS_KEY, "true"));
        assert!(parse(&pairs).unwrap().host_stamps);
        // Spin refuses the key's name: an error reading it is a no, not a failure.
        let map: HashMap<&str, &str> = valid().into_iter().collect();
        let spin = EdgeConfig::parse(|k| {
            if k.contains(':') {
                Err("invalid variable name".into())
            } else {
                Ok(map.get(k).map(|v| (*v).to_owned()))
            }
        })
        .unwrap();
        assert!(!spin.host_stamps);
    }

    #[test]
    fn each_missing_or_malformed_variable_is_named() {
        let cases: [(&str, Option<&str>); 8] = [
            ("origin_url", None),
            ("origin_url", Some("127.0.0.1:8081")),
            ("edge_secret", None),
            ("edge_secret", Some("abcd")),
            ("jwt_jwks", Some("{not json")),
            ("jwt_leeway_secs", Some("soon")),
            ("rate_user_per_sec", Some("-1")),
            ("max_edge_wait_ms", Some("a while")),
        ];
        for (variable, value) in cases {
            let mut pairs: Vec<(&str, &str)> =
                valid().into_iter().filter(|(k, _)| *k != variable).collect();
            if let Some(v) = value {
                pairs.push((variable, v));
            }
            let e = parse(&pairs).err().unwrap_or_else(|| panic!("{variable}={value:?} parsed"));
            assert_eq!(e.variable, variable, "{e}");
        }
        let mut both = valid();
        both.push(("jwt_jwks_url", "https://idp.example/jwks.json"));
        assert_eq!(parse(&both).err().unwrap().variable, "jwt_jwks_url");
        let mut not_a_url: Vec<(&str, &str)> =
            valid().into_iter().filter(|(k, _)| *k != "jwt_jwks").collect();
        not_a_url.push(("jwt_jwks_url", "idp.example/jwks.json"));
        assert_eq!(parse(&not_a_url).err().unwrap().variable, "jwt_jwks_url");
        let unreadable = EdgeConfig::parse(|_| Err("no config store".into())).err().unwrap();
        assert_eq!(unreadable.variable, "origin_url");
    }
}
