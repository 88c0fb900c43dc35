//! Operators' tokens and the keys they are verified with: a JWKS read at start-up, or the
//! identity provider's JWKS URL, fetched and cached by the rules of
//! [`flashgate_core::jwks`] (the edge follows the same): kept for the provider's
//! `Cache-Control` max-age, fetched again at most once a minute for an unknown `kid`, the
//! last good keys kept while the provider is down. With no keys at all, admin requests are
//! answered 503 with `Retry-After`. One fetch at a time: concurrent requests wait for it.

use crate::error::{ApiError, ApiResult};
use crate::settings::JwtKeys;
use flashgate_core::jwks::{self, FetchedJwks};
use flashgate_core::token::{KeySet, TokenError, TokenPolicy, TokenVerifier, VerifiedToken};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long one fetch of the provider's keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

pub struct AdminTokens {
    source: Source,
}

enum Source {
    Fixed(TokenVerifier),
    Url { url: String, policy: TokenPolicy, client: reqwest::Client, cached: Mutex<Cached> },
}

#[derive(Default)]
struct Cached {
    record: Option<FetchedJwks>,
    verifier: Option<Arc<TokenVerifier>>,
}

impl AdminTokens {
    pub fn new(keys: &JwtKeys, policy: TokenPolicy) -> Self {
        let source = match keys {
            JwtKeys::Inline(keys) => Source::Fixed(TokenVerifier::new(keys.clone(), policy)),
            JwtKeys::Url(url) => {
                if !url.starts_with("https://") {
                    tracing::warn!(%url, "the JWKS URL is not HTTPS: use HTTPS in production");
                }
                Source::Url {
                    url: url.clone(),
                    policy,
                    client: reqwest::Client::builder()
                        .timeout(FETCH_TIMEOUT)
                        .build()
                        .unwrap_or_default(),
                    cached: Mutex::default(),
                }
            }
        };
        Self { source }
    }

    /// Verifies `token` at `now_s` (Unix seconds).
    pub async fn verify(&self, token: &str, now_s: u64) -> ApiResult<VerifiedToken> {
        let (url, policy, client, cached) = match &self.source {
            Source::Fixed(verifier) => return Ok(verifier.verify(token, now_s)?),
            Source::Url { url, policy, client, cached } => (url, policy, client, cached),
        };
        let mut cached = cached.lock().await;
        if jwks::should_fetch(cached.record.as_ref(), now_s, false) {
            refresh(&mut cached, url, policy, client, now_s).await;
        }
        let Some(verifier) = cached.verifier.clone() else {
            return Err(ApiError::Unavailable {
                component: "identity provider",
                detail: format!("no keys could be fetched from {url} yet"),
            });
        };
        match verifier.verify(token, now_s) {
            Err(TokenError::UnknownKey)
                if jwks::should_fetch(cached.record.as_ref(), now_s, true) =>
            {
                // A key published since the last fetch (a rotation).
                refresh(&mut cached, url, policy, client, now_s).await;
                let verifier = cached.verifier.clone().unwrap_or(verifier);
                Ok(verifier.verify(token, now_s)?)
            }
            other => Ok(other?),
        }
    }
}

/// Fetches the provider's keys; a failure keeps the last good ones.
async fn refresh(
    cached: &mut Cached,
    url: &str,
    policy: &TokenPolicy,
    client: &reqwest::Client,
    now_s: u64,
) {
    let fetched = async {
        let answer = client.get(url).header("accept", "application/json").send().await?;
        let answer = answer.error_for_status()?;
        let cache_control =
            answer.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let json = answer.text().await?;
        let keys = KeySet::from_jwks_json(&json)?;
        keys.check()?;
        Ok::<_, anyhow::Error>((FetchedJwks::fetched(json, cache_control.as_deref(), now_s), keys))
    }
    .await;
    match fetched {
        Ok((record, keys)) => {
            cached.record = Some(record);
            cached.verifier = Some(Arc::new(TokenVerifier::new(keys, policy.clone())));
        }
        Err(e) => {
            tracing::warn!(%url, error = %format!("{e:#}"), "fetching the JWKS failed; keeping the last good keys");
            cached.record = Some(FetchedJwks::failed(cached.record.take(), now_s));
        }
    }
}
