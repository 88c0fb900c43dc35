//! An identity provider's keys fetched from its JWKS URL (`jwt_jwks_url`): when to fetch
//! them and how long to trust them. The edge component and the origin do their own fetching
//! (outbound `wasi:http`; reqwest); the rules are here, once:
//!
//! - the keys are kept for the provider's `Cache-Control: max-age` (capped at a day;
//!   [`DEFAULT_MAX_AGE_S`] without one; `no-cache`/`no-store` count as 0);
//! - a token whose `kid` is not among them triggers a fetch (a rotation the cache has not
//!   seen), at most once every [`MIN_REFETCH_S`], however many such tokens arrive;
//! - when a fetch fails (the provider is down, or answers something that is not a key set)
//!   the last good keys stay in use, and the next attempt waits [`MIN_REFETCH_S`];
//! - with no good keys at all, attempts are spaced [`COLD_RETRY_S`] apart.

use serde::{Deserialize, Serialize};

/// How long keys are trusted when the provider does not say.
pub const DEFAULT_MAX_AGE_S: u64 = 300;
/// The longest the provider may ask keys to be trusted without a fetch.
pub const MAX_MAX_AGE_S: u64 = 86_400;
/// The shortest time between two fetches once keys are known (an unknown `kid`, a stale set
/// the provider did not answer for).
pub const MIN_REFETCH_S: u64 = 60;
/// The shortest time between two fetches while no key was ever fetched.
pub const COLD_RETRY_S: u64 = 1;

/// The keys as last fetched, and when fetching was last tried. Serialised as JSON into the
/// edge's key-value store, so every instance shares one fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedJwks {
    /// The JWKS document; empty until a fetch succeeded.
    pub json: String,
    /// When `json` was fetched (Unix seconds).
    pub fetched_s: u64,
    /// How long `json` is fresh after `fetched_s`.
    pub max_age_s: u64,
    /// When a fetch was last tried, whatever came of it.
    pub attempted_s: u64,
}

impl FetchedJwks {
    /// A successful fetch of `json` at `now_s`, its freshness read off `cache_control`.
    pub fn fetched(json: String, cache_control: Option<&str>, now_s: u64) -> Self {
        Self { json, fetched_s: now_s, max_age_s: max_age(cache_control), attempted_s: now_s }
    }

    /// A failed fetch at `now_s`: what was fetched before stays.
    pub fn failed(previous: Option<Self>, now_s: u64) -> Self {
        let mut kept = previous.unwrap_or(Self {
            json: String::new(),
            fetched_s: 0,
            max_age_s: 0,
            attempted_s: 0,
        });
        kept.attempted_s = now_s;
        kept
    }

    /// Whether a fetch ever succeeded.
    pub fn has_keys(&self) -> bool {
        !self.json.is_empty()
    }

    /// Whether the keys are within their max-age at `now_s`.
    pub fn is_fresh(&self, now_s: u64) -> bool {
        self.has_keys() && now_s < self.fetched_s.saturating_add(self.max_age_s)
    }
}

/// Whether to fetch the keys at `now_s`, given what is cached and whether a token named a
/// `kid` the cached keys lack.
pub fn should_fetch(cached: Option<&FetchedJwks>, now_s: u64, unknown_kid: bool) -> bool {
    match cached {
        None => true,
        Some(c) if !c.has_keys() => now_s >= c.attempted_s.saturating_add(COLD_RETRY_S),
        Some(c) => {
            (unknown_kid || !c.is_fresh(now_s))
                && now_s >= c.attempted_s.saturating_add(MIN_REFETCH_S)
        }
    }
}

/// The freshness a `Cache-Control` header grants, in seconds.
pub fn max_age(cache_control: Option<&str>) -> u64 {
    let Some(value) = cache_control else { return DEFAULT_MAX_AGE_S };
    let mut max_age = None;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-cache" || directive == "no-store" {
            return 0;
        }
        if let Some(secs) = directive.strip_prefix("max-age=") {
            max_age = secs.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age.map_or(DEFAULT_MAX_AGE_S, |s| s.min(MAX_MAX_AGE_S))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_sets_the_freshness() {
        assert_eq!(max_age(None), DEFAULT_MAX_AGE_S);
        assert_eq!(max_age(Some("public, max-age=3600, must-revalidate")), 3600);
        assert_eq!(max_age(Some("max-age=\"120\"")), 120);
        assert_eq!(max_age(Some("max-age=99999999")), MAX_MAX_AGE_S);
        assert_eq!(max_age(Some("no-store")), 0);
        assert_eq!(max_age(Some("private")), DEFAULT_MAX_AGE_S);
        assert_eq!(max_age(Some("max-age=soon")), DEFAULT_MAX_AGE_S);
    }

    #[test]
    fn fresh_keys_are_not_fetched_again_unless_a_kid_is_unknown_and_a_minute_passed() {
        let keys = FetchedJwks::fetched("{}".into(), Some("max-age=600"), 1_000);
        assert!(!should_fetch(Some(&keys), 1_001, false));
        // A rotation: an unknown kid fetches, but not more than once a minute.
        assert!(!should_fetch(Some(&keys), 1_030, true));
        assert!(should_fetch(Some(&keys), 1_060, true));
        // Stale after max-age.
        assert!(!should_fetch(Some(&keys), 1_599, false));
        assert!(should_fetch(Some(&keys), 1_600, false));
    }

    #[test]
    fn a_provider_outage_keeps_the_last_good_keys_and_spaces_attempts() {
        let keys = FetchedJwks::fetched("{\"keys\":[]}".into(), Some("max-age=60"), 1_000);
        let failed = FetchedJwks::failed(Some(keys.clone()), 1_060);
        assert_eq!(failed.json, keys.json, "the last good keys stay");
        assert!(!failed.is_fresh(1_060));
        assert!(!should_fetch(Some(&failed), 1_100, false), "a minute between attempts");
        assert!(should_fetch(Some(&failed), 1_120, false));
    }

    #[test]
    fn without_any_keys_attempts_are_a_second_apart() {
        assert!(should_fetch(None, 5, false));
        let never = FetchedJwks::failed(None, 5);
        assert!(!never.has_keys());
        assert!(!should_fetch(Some(&never), 5, false));
        assert!(should_fetch(Some(&never), 6, false));
    }

    #[test]
    fn a_record_round_trips_through_its_json() {
        let keys = FetchedJwks::fetched("{\"keys\":[]}".into(), None, 7);
        let text = serde_json::to_string(&keys).unwrap();
        assert_eq!(serde_json::from_str::<FetchedJwks>(&text).unwrap(), keys);
    }
}
