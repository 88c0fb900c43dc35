//! The keys tokens are verified with: the configuration's own (`jwt_jwks`), or the identity
//! provider's, fetched from `jwt_jwks_url` through the allowed outbound hosts and cached by
//! the rules of [`flashgate_core::jwks`] — in the instance's memory, and in the key-value
//! store under [`STORE_KEY`] so that every instance (and, under `spin up`, every request)
//! shares one fetch. When the provider is down the last good keys stay in use; with none at
//! all the request is answered 503 with `Retry-After`.

use crate::config::EdgeConfig;
use crate::entry::send;
use crate::http::Request;
use crate::platform::Store;
use flashgate_core::edge_config::{KeySource, Keys};
use flashgate_core::jwks::{self, FetchedJwks};
use flashgate_core::kv::KeyValue;
use flashgate_core::problem::Problem;
use flashgate_core::token::TokenPolicy;
use std::cell::RefCell;
use std::sync::Arc;

/// The key-value entry holding the fetched JWKS (one key, replaced on every fetch).
pub const STORE_KEY: &str = "jwks:fetched";

thread_local! {
    /// The instance's copy: the record and the keys parsed from it.
    static LOCAL: RefCell<Option<(FetchedJwks, Option<Arc<Keys>>)>> = const { RefCell::new(None) };
}

/// The keys to verify with at `now_s`; `unknown_kid`: a token named a key the current ones
/// lack, so a fetch may be due (at most once a minute).
pub async fn current(
    config: &EdgeConfig,
    store: &Store,
    now_s: u64,
    unknown_kid: bool,
) -> Result<Arc<Keys>, Problem> {
    let (url, allow_hs256, policy) = match &config.keys {
        KeySource::Inline(keys) => return Ok(keys.clone()),
        KeySource::Url { url, allow_hs256, policy } => (url, *allow_hs256, policy),
    };
    let local = LOCAL.with_borrow(|l| l.clone());
    if let Some((record, Some(keys))) = &local
        && !jwks::should_fetch(Some(record), now_s, unknown_kid)
    {
        return Ok(keys.clone());
    }
    // Another instance may have fetched meanwhile.
    let shared = store
        .get(STORE_KEY)
        .and_then(|bytes| serde_json::from_slice::<FetchedJwks>(&bytes).ok())
        .filter(|s| local.as_ref().is_none_or(|(l, _)| s.attempted_s > l.attempted_s));
    let mut best = match shared {
        Some(record) => Some(adopt(record, allow_hs256, policy)),
        None => local,
    };
    let record = best.as_ref().map(|(r, _)| r);
    if jwks::should_fetch(record, now_s, unknown_kid) {
        let fetched = fetch(url, record.cloned(), now_s).await;
        store.set(STORE_KEY, &serde_json::to_vec(&fetched).unwrap_or_default());
        let adopted = adopt(fetched, allow_hs256, policy);
        // A failed fetch keeps the keys already parsed.
        if adopted.1.is_some() || best.is_none() {
            best = Some(adopted);
        } else if let Some((record, _)) = &mut best {
            record.attempted_s = now_s;
        }
    }
    LOCAL.set(best.clone());
    best.and_then(|(_, keys)| keys).ok_or_else(|| {
        Problem::unavailable("the identity provider's keys could not be fetched yet", 1)
    })
}

/// A record and the keys parsed from it (`None` if it holds none that parse).
fn adopt(
    record: FetchedJwks,
    allow_hs256: bool,
    policy: &TokenPolicy,
) -> (FetchedJwks, Option<Arc<Keys>>) {
    let keys = record
        .has_keys()
        .then(|| Keys::from_jwks_json(&record.json, allow_hs256, policy.clone()).ok())
        .flatten()
        .map(Arc::new);
    (record, keys)
}

/// Fetches the provider's JWKS; a failure keeps `previous`'s keys.
async fn fetch(url: &str, previous: Option<FetchedJwks>, now_s: u64) -> FetchedJwks {
    let request = Request {
        method: "GET".to_owned(),
        uri: url.to_owned(),
        headers: vec![("accept".to_owned(), "application/json".to_owned())],
        body: Vec::new(),
    };
    let answer = match send(request).await {
        Ok(answer) if answer.status == 200 => answer,
        Ok(answer) => {
            eprintln!(
                "flashgate-edge: {url} answered {}; keeping the last good keys",
                answer.status
            );
            return FetchedJwks::failed(previous, now_s);
        }
        Err(e) => {
            eprintln!("flashgate-edge: fetching {url} failed ({e}); keeping the last good keys");
            return FetchedJwks::failed(previous, now_s);
        }
    };
    let json = String::from_utf8_lossy(&answer.body).into_owned();
    // Something that is not a key set does not replace good keys.
    if flashgate_core::token::KeySet::from_jwks_json_allowing_hs256(&json).is_err() {
        eprintln!("flashgate-edge: {url} did not answer a JWKS; keeping the last good keys");
        return FetchedJwks::failed(previous, now_s);
    }
    FetchedJwks::fetched(json, answer.header("cache-control"), now_s)
}
