//! The edge's configuration, read through `wasi:config` at the start of each request, or
//! taken from the instance's own copy when the host reuses instances and that copy is at
//! most [`CACHE_FOR_US`] old.

use crate::platform::config_get;
use flashgate_core::shield::Limit;
use flashgate_core::signing::EdgeSecret;
use flashgate_core::token::{KeySet, TokenPolicy, TokenVerifier};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// How long an instance that serves several requests keeps its parsed configuration before
/// reading it again (a platform may change variables at run time, keys rotate). Under a
/// host that instantiates per request (`spin up`) every request reads it.
pub const CACHE_FOR_US: u64 = 1_000_000;

thread_local! {
    /// The parsed configuration and when it was read (µs). The component is
    /// single-threaded; this lives as long as its instance.
    static CACHED: RefCell<Option<(u64, Rc<EdgeConfig>)>> = const { RefCell::new(None) };
}

/// Everything one request needs to know about its deployment.
pub struct EdgeConfig {
    /// Base URL of the origin, without a trailing slash (`http://127.0.0.1:8081`).
    pub origin_url: String,
    pub edge_id: String,
    pub secret: EdgeSecret,
    pub verifier: TokenVerifier,
    /// Fingerprint of the key set and policy, so cached verdicts die with a key rotation.
    pub verifier_fingerprint: String,
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
}

fn number(key: &str, default: &str) -> Result<f64, String> {
    let raw = optional(key, default)?;
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{key} must be a non-negative number, not `{raw}`"))
}

/// A rate `<key>_per_sec` with burst `<key>_burst`; a rate of 0 turns the limit off.
fn limit(key: &str, per_sec: &str, burst: &str) -> Result<Option<Limit>, String> {
    let per_sec = number(&format!("{key}_per_sec"), per_sec)?;
    let burst = number(&format!("{key}_burst"), burst)?.max(1.0) as u32;
    Ok((per_sec > 0.0).then_some(Limit { per_sec, burst }))
}

fn required(key: &str) -> Result<String, String> {
    match config_get(key)? {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("configuration value `{key}` is missing")),
    }
}

fn optional(key: &str, default: &str) -> Result<String, String> {
    Ok(config_get(key)?.filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned()))
}

impl EdgeConfig {
    /// The configuration at `now_us`: the instance's copy when it is fresh enough, else read
    /// and parsed again (a failed read is never cached).
    pub fn current(now_us: u64) -> Result<Rc<Self>, String> {
        let cached = CACHED.with_borrow(|c| {
            c.as_ref()
                .filter(|(read, _)| now_us.checked_sub(*read).is_some_and(|age| age < CACHE_FOR_US))
                .map(|(_, config)| config.clone())
        });
        if let Some(config) = cached {
            return Ok(config);
        }
        let config = Rc::new(Self::load()?);
        CACHED.set(Some((now_us, config.clone())));
        Ok(config)
    }

    pub fn load() -> Result<Self, String> {
        let origin_url = required("origin_url")?.trim().trim_end_matches('/').to_owned();
        let edge_id = optional("edge_id", "edge")?;
        let secret = EdgeSecret::from_hex(&required("edge_secret")?)
            .map_err(|e| format!("edge_secret: {e}"))?;
        let jwks = required("jwt_jwks")?;
        // HS256 (shared secrets) only when the deployment says so explicitly.
        let keys = match optional("jwt_allow_hs256", "false")?.trim() {
            "true" => KeySet::from_jwks_json_allowing_hs256(&jwks),
            "false" => KeySet::from_jwks_json(&jwks),
            other => return Err(format!("jwt_allow_hs256 must be true or false, not `{other}`")),
        }
        .map_err(|e| format!("jwt_jwks: {e}"))?;
        let issuer = optional("jwt_issuer", "flashgate-dev")?;
        let audience = optional("jwt_audience", "flashgate")?;
        let leeway: u64 = optional("jwt_leeway_secs", "30")?
            .trim()
            .parse()
            .map_err(|_| "jwt_leeway_secs must be a whole number of seconds".to_owned())?;
        let policy = TokenPolicy { issuer, audience, leeway: Duration::from_secs(leeway) };
        let verifier = TokenVerifier::new(keys, policy);
        let verifier_fingerprint = verifier.fingerprint();
        Ok(Self {
            origin_url,
            edge_id,
            secret,
            verifier,
            verifier_fingerprint,
            refresh_every_us: (number("availability_refresh_ms", "250")?.max(1.0) * 1000.0) as u64,
            user_limit: limit("rate_user", "5", "10")?,
            address_limit: limit("rate_address", "100", "200")?,
            in_flight_us: 10_000_000,
            holding_us: 5_000_000,
        })
    }
}
