//! The edge's configuration, read through `wasi:config` at the start of each request.

use crate::platform::config_get;
use flashgate_core::signing::EdgeSecret;
use flashgate_core::token::{KeySet, TokenPolicy, TokenVerifier};
use std::time::Duration;

/// Everything one request needs to know about its deployment.
pub struct EdgeConfig {
    /// Base URL of the origin, without a trailing slash (`http://127.0.0.1:8081`).
    pub origin_url: String,
    pub edge_id: String,
    pub secret: EdgeSecret,
    pub verifier: TokenVerifier,
    /// Fingerprint of the key set and policy, so cached verdicts die with a key rotation.
    pub verifier_fingerprint: String,
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
    pub fn load() -> Result<Self, String> {
        let origin_url = required("origin_url")?.trim().trim_end_matches('/').to_owned();
        let edge_id = optional("edge_id", "edge")?;
        let secret = EdgeSecret::from_hex(&required("edge_secret")?)
            .map_err(|e| format!("edge_secret: {e}"))?;
        let jwks = required("jwt_jwks")?;
        let keys = KeySet::from_jwks_json(&jwks).map_err(|e| format!("jwt_jwks: {e}"))?;
        let issuer = optional("jwt_issuer", "flashgate-dev")?;
        let audience = optional("jwt_audience", "flashgate")?;
        let leeway: u64 = optional("jwt_leeway_secs", "30")?
            .trim()
            .parse()
            .map_err(|_| "jwt_leeway_secs must be a whole number of seconds".to_owned())?;
        let policy = TokenPolicy { issuer, audience, leeway: Duration::from_secs(leeway) };
        let verifier = TokenVerifier::new(keys, policy);
        let verifier_fingerprint = verifier.fingerprint();
        Ok(Self { origin_url, edge_id, secret, verifier, verifier_fingerprint })
    }
}
