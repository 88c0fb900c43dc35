//! The edge's storm shield, as pure decisions over what the edge has learned.
//!
//! The edge keeps hints in its key-value store and answers from them whenever they settle
//! the outcome, so the origin sees only requests that can still change it:
//! - [`Hint`]: a product's availability (sold out, not yet on sale, ended, on sale) and when
//!   it was last checked. A refusing hint older than the refresh interval is re-checked
//!   against the origin by one request at a time per interval; the others keep answering
//!   from it. It is only a hint: a stale "sold out" can delay a sale by one interval, never
//!   cause an oversell, because the origin decides every acquisition it sees.
//! - [`Holding`]: the buyer already holds a slot of this product (until its deadline).
//! - [`BuyerHint::InDoubt`]: the buyer's last attempt ended without an answer that says what
//!   happened (a 5xx, or none): it may have been granted, so their next attempts skip the
//!   refusing hints and reach the origin, which knows. A buyer whose `201` was lost on the
//!   way is told `already-holding`, never `sold-out`.
//! - [`Bucket`]: a token bucket per user and per client address.
//!
//! Encodings are short text, stable across edge versions that share a store.

use crate::problem::Problem;

/// Header on the origin's acquisition answers: units left after this request.
pub const HEADER_REMAINING: &str = "x-flashgate-remaining";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    OnSale,
    SoldOut,
    NotOnSale { starts_ms: i64, starts_at: String },
    Ended { ends_at: String },
}

/// What the edge knows of a product, and when it learned it (µs since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub availability: Availability,
    pub checked_us: u64,
}

/// What to do with an acquisition, given the product's hint.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Send it to the origin.
    Forward,
    /// Answer this refusal; the hint is fresh.
    Refuse(Problem),
    /// The hint would refuse but is due for a re-check: whoever claims the refresh asks
    /// the origin; everyone else answers the refusal.
    Stale(Problem),
}

impl Hint {
    pub fn new(availability: Availability, checked_us: u64) -> Self {
        Self { availability, checked_us }
    }

    pub fn encode(&self) -> String {
        let t = self.checked_us;
        match &self.availability {
            Availability::OnSale => format!("on|{t}"),
            Availability::SoldOut => format!("so|{t}"),
            Availability::NotOnSale { starts_ms, starts_at } => {
                format!("ns|{t}|{starts_ms}|{starts_at}")
            }
            Availability::Ended { ends_at } => format!("en|{t}|{ends_at}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '|');
        let kind = parts.next()?;
        let checked_us = parts.next()?.parse().ok()?;
        let rest = parts.next();
        let availability = match kind {
            "on" => Availability::OnSale,
            "so" => Availability::SoldOut,
            "ns" => {
                let (ms, at) = rest?.split_once('|')?;
                Availability::NotOnSale { starts_ms: ms.parse().ok()?, starts_at: at.to_owned() }
            }
            "en" => Availability::Ended { ends_at: rest?.to_owned() },
            _ => return None,
        };
        Some(Self { availability, checked_us })
    }

    /// The refusal this hint implies at `now_us`, if any.
    pub fn refusal(&self, product_id: &str, now_us: u64) -> Option<Problem> {
        match &self.availability {
            Availability::OnSale => None,
            Availability::SoldOut => Some(Problem::sold_out(product_id)),
            Availability::NotOnSale { starts_ms, starts_at } => {
                let opens_us = u64::try_from(*starts_ms).unwrap_or(0).saturating_mul(1000);
                (now_us < opens_us).then(|| Problem::not_on_sale(starts_at, *starts_ms))
            }
            Availability::Ended { ends_at } => Some(Problem::sale_ended(ends_at)),
        }
    }
}

/// Decides an acquisition of `product_id` at `now_us` from its hint.
pub fn judge(
    product_id: &str,
    hint: Option<&Hint>,
    now_us: u64,
    refresh_every_us: u64,
) -> Judgement {
    let Some(hint) = hint else { return Judgement::Forward };
    match hint.refusal(product_id, now_us) {
        None => Judgement::Forward,
        Some(p) if now_us.saturating_sub(hint.checked_us) < refresh_every_us => {
            Judgement::Refuse(p)
        }
        Some(p) => Judgement::Stale(p),
    }
}

/// The refresh window `now_us` falls in: one refresh per edge per window.
pub fn refresh_window(now_us: u64, refresh_every_us: u64) -> u64 {
    now_us / refresh_every_us.max(1)
}

/// What an origin answer to an acquisition teaches about the product.
pub fn learn(
    status: u16,
    remaining: Option<i64>,
    problem: Option<&serde_json::Value>,
) -> Option<Availability> {
    let text = |k: &str| problem.and_then(|p| p.get(k)).and_then(|v| v.as_str()).map(str::to_owned);
    match status {
        201 if remaining == Some(0) => Some(Availability::SoldOut),
        201 => Some(Availability::OnSale),
        409 => match text("type")?.rsplit('/').next()? {
            "sold-out" => Some(Availability::SoldOut),
            "not-on-sale" => Some(Availability::NotOnSale {
                starts_ms: problem?.get("saleStartsAtMs")?.as_i64()?,
                starts_at: text("saleStartsAt")?,
            }),
            "sale-ended" => Some(Availability::Ended { ends_at: text("saleEndsAt")? }),
            _ => None,
        },
        _ => None,
    }
}

/// One product's entry in the origin's availability answer, read at `now_ms`.
pub fn from_availability(answer: &serde_json::Value, now_ms: i64) -> Option<Availability> {
    let remaining = answer.get("remaining")?.as_i64()?;
    let starts_ms = answer.get("saleStartsAtMs")?.as_i64()?;
    let text = |k: &str| answer.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if now_ms < starts_ms {
        return Some(Availability::NotOnSale { starts_ms, starts_at: text("saleStartsAt")? });
    }
    if let Some(ends_ms) = answer.get("saleEndsAtMs").and_then(|v| v.as_i64())
        && now_ms >= ends_ms
    {
        return Some(Availability::Ended { ends_at: text("saleEndsAt")? });
    }
    Some(if remaining > 0 { Availability::OnSale } else { Availability::SoldOut })
}

/// The origin's answer for every product (`GET /internal/availability`) at `now_ms`:
/// `(productId, availability)` per product it could read; malformed entries are skipped.
pub fn from_snapshot(answer: &serde_json::Value, now_ms: i64) -> Vec<(String, Availability)> {
    let Some(products) = answer.get("products").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    products
        .iter()
        .filter_map(|entry| {
            let id = entry.get("productId")?.as_str()?.to_owned();
            Some((id, from_availability(entry, now_ms)?))
        })
        .collect()
}

/// A buyer's slot of a product, known to the edge until `until_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub slot_id: String,
    pub until_us: u64,
}

impl Holding {
    pub fn encode(&self) -> String {
        format!("{}|{}", self.until_us, self.slot_id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (until, slot) = s.split_once('|')?;
        Some(Self { slot_id: slot.to_owned(), until_us: until.parse().ok()? })
    }

    pub fn refusal(&self, now_us: u64) -> Option<Problem> {
        (now_us < self.until_us).then(|| Problem::already_holding(&self.slot_id))
    }
}

/// What the edge knows of one buyer and one product, under one key-value entry (read on
/// every acquisition, so doubt costs no extra read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyerHint {
    Holding(Holding),
    /// Until `until_us`, this buyer's attempts go to the origin whatever the product's hint.
    InDoubt {
        until_us: u64,
    },
}

impl BuyerHint {
    pub fn encode(&self) -> String {
        match self {
            Self::Holding(h) => h.encode(),
            Self::InDoubt { until_us } => format!("?{until_us}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        match s.strip_prefix('?') {
            Some(until) => Some(Self::InDoubt { until_us: until.parse().ok()? }),
            None => Holding::decode(s).map(Self::Holding),
        }
    }

    /// Whether the product's refusing hints are to be skipped at `now_us`.
    pub fn in_doubt(&self, now_us: u64) -> bool {
        matches!(self, Self::InDoubt { until_us } if now_us < *until_us)
    }

    /// Whether an acquisition's answer (`None`: none came) leaves its outcome unknown.
    pub fn leaves_doubt(status: Option<u16>) -> bool {
        status.is_none_or(|s| s >= 500)
    }
}

/// A token-bucket rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_sec: f64,
    pub burst: u32,
}

/// A token bucket's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub updated_us: u64,
}

/// The outcome of taking one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Allowed { remaining: u32 },
    Limited { retry_after_secs: u64 },
}

impl Bucket {
    pub fn encode(&self) -> String {
        format!("{:.4}|{}", self.tokens, self.updated_us)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (tokens, at) = s.split_once('|')?;
        Some(Self { tokens: tokens.parse().ok()?, updated_us: at.parse().ok()? })
    }

    /// Takes a token at `now_us` from `bucket` (a missing bucket is full).
    pub fn take(bucket: Option<Self>, limit: Limit, now_us: u64) -> (Self, Take) {
        let burst = f64::from(limit.burst.max(1));
        let mut b = bucket.unwrap_or(Self { tokens: burst, updated_us: now_us });
        let elapsed = now_us.saturating_sub(b.updated_us) as f64 / 1e6;
        b.tokens = (b.tokens + elapsed * limit.per_sec).min(burst);
        b.updated_us = now_us.max(b.updated_us);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            (b, Take::Allowed { remaining: b.tokens.floor() as u32 })
        } else {
            let wait = (1.0 - b.tokens) / limit.per_sec.max(1e-9);
            (b, Take::Limited { retry_after_secs: wait.ceil().max(1.0) as u64 })
        }
    }

    /// Seconds until the bucket is full again (the `RateLimit-Reset` header).
    pub fn reset_secs(&self, limit: Limit) -> u64 {
        let missing = f64::from(limit.burst.max(1)) - self.tokens;
        (missing / limit.per_sec.max(1e-9)).ceil().max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: u64 = 1_000_000;

    #[test]
    fn hints_round_trip() {
        for availability in [
            Availability::OnSale,
            Availability::SoldOut,
            Availability::NotOnSale { starts_ms: 5, starts_at: "2030-01-01T00:00:00Z".into() },
            Availability::Ended { ends_at: "2020-01-01T00:00:00|Z".into() },
        ] {
            let h = Hint::new(availability, 42);
            assert_eq!(Hint::decode(&h.encode()), Some(h));
        }
        assert_eq!(Hint::decode("zz|1"), None);
        assert_eq!(Hint::decode("so|x"), None);
    }

    #[test]
    fn a_fresh_refusing_hint_refuses_and_a_stale_one_asks_for_a_refresh() {
        let sold = Hint::new(Availability::SoldOut, 10 * S);
        let at = |now| judge("p", Some(&sold), now, S / 4);
        assert!(matches!(at(10 * S + 1), Judgement::Refuse(p) if p.slug() == "sold-out"));
        assert!(matches!(at(10 * S + S / 4), Judgement::Stale(p) if p.slug() == "sold-out"));
        assert_eq!(judge("p", None, 0, S), Judgement::Forward);
        let on = Hint::new(Availability::OnSale, 0);
        assert_eq!(judge("p", Some(&on), 99 * S, S), Judgement::Forward);
    }

    #[test]
    fn not_on_sale_ends_when_the_sale_opens() {
        let h =
            Hint::new(Availability::NotOnSale { starts_ms: 20_000, starts_at: "then".into() }, 0);
        assert!(matches!(judge("p", Some(&h), 1, 100 * S), Judgement::Refuse(p)
            if p.slug() == "not-on-sale" && p.extra["saleStartsAt"] == "then"));
        assert_eq!(judge("p", Some(&h), 20 * S, 100 * S), Judgement::Forward);
    }

    #[test]
    fn answers_teach_availability() {
        assert_eq!(learn(201, Some(0), None), Some(Availability::SoldOut));
        assert_eq!(learn(201, Some(3), None), Some(Availability::OnSale));
        let sold = json!({"type": "/problems/sold-out"});
        assert_eq!(learn(409, None, Some(&sold)), Some(Availability::SoldOut));
        let later = serde_json::to_value(Problem::not_on_sale("T", 7)).unwrap();
        assert_eq!(
            learn(409, None, Some(&later)),
            Some(Availability::NotOnSale { starts_ms: 7, starts_at: "T".into() })
        );
        let holding = json!({"type": "/problems/already-holding"});
        assert_eq!(learn(409, None, Some(&holding)), None);
        assert_eq!(learn(503, None, None), None);
    }

    #[test]
    fn the_origin_availability_answer_is_read_at_the_edge_clock() {
        let a = json!({"remaining": 0, "saleStartsAtMs": 100, "saleStartsAt": "S",
                       "saleEndsAtMs": 200, "saleEndsAt": "E"});
        assert!(matches!(from_availability(&a, 50), Some(Availability::NotOnSale { .. })));
        assert_eq!(from_availability(&a, 150), Some(Availability::SoldOut));
        assert_eq!(from_availability(&a, 250), Some(Availability::Ended { ends_at: "E".into() }));
        let b = json!({"remaining": 2, "saleStartsAtMs": 0, "saleEndsAtMs": null});
        assert_eq!(from_availability(&b, 5), Some(Availability::OnSale));
    }

    #[test]
    fn a_snapshot_reads_every_well_formed_product() {
        let answer = json!({"products": [
            {"productId": "a", "remaining": 0, "saleStartsAtMs": 0},
            {"productId": "b", "remaining": 3, "saleStartsAtMs": 0},
            {"productId": "c"},
            {"remaining": 1, "saleStartsAtMs": 0},
        ]});
        assert_eq!(
            from_snapshot(&answer, 10),
            [("a".to_owned(), Availability::SoldOut), ("b".to_owned(), Availability::OnSale)]
        );
        assert_eq!(from_snapshot(&json!({"products": 3}), 10), []);
    }

    #[test]
    fn holdings_refuse_until_their_deadline() {
        let h = Holding { slot_id: "s-1".into(), until_us: 10 };
        assert_eq!(Holding::decode(&h.encode()), Some(h.clone()));
        let held = BuyerHint::Holding(h.clone());
        assert_eq!(BuyerHint::decode(&held.encode()), Some(held));
        let doubt = BuyerHint::InDoubt { until_us: 20 };
        assert_eq!(BuyerHint::decode(&doubt.encode()), Some(doubt));
        assert_eq!(BuyerHint::decode("?x"), None);
        assert_eq!(h.refusal(9).unwrap().extra["slotId"], "s-1");
        assert_eq!(h.refusal(10), None);
    }

    #[test]
    fn buckets_allow_a_burst_then_refill_at_their_rate() {
        let limit = Limit { per_sec: 2.0, burst: 3 };
        let mut b = None;
        for expected in [2, 1, 0] {
            let (next, take) = Bucket::take(b, limit, 0);
            assert_eq!(take, Take::Allowed { remaining: expected });
            b = Some(next);
        }
        let (next, take) = Bucket::take(b, limit, 100_000);
        assert_eq!(take, Take::Limited { retry_after_secs: 1 });
        assert_eq!(Bucket::decode(&next.encode()).unwrap().updated_us, 100_000);
        let (_, take) = Bucket::take(Some(next), limit, 600_000);
        assert_eq!(take, Take::Allowed { remaining: 0 }, "refilled at 2/s");
        let slow = Limit { per_sec: 0.1, burst: 1 };
        let (empty, _) = Bucket::take(None, slow, 0);
        assert_eq!(Bucket::take(Some(empty), slow, 0).1, Take::Limited { retry_after_secs: 10 });
        assert_eq!(empty.reset_secs(slow), 10);
    }

    #[test]
    fn a_buyer_in_doubt_skips_the_refusing_hints_until_the_doubt_ends() {
        let doubt = BuyerHint::InDoubt { until_us: 100 };
        assert!(doubt.in_doubt(99));
        assert!(!doubt.in_doubt(100));
        let held = BuyerHint::Holding(Holding { slot_id: "s".into(), until_us: 100 });
        assert!(!held.in_doubt(0), "a holder is answered from the hint");
        // No answer, or a 5xx: the grant may have happened. Anything else says what did.
        assert!(BuyerHint::leaves_doubt(None));
        assert!(BuyerHint::leaves_doubt(Some(503)));
        assert!(BuyerHint::leaves_doubt(Some(500)));
        for settled in [201, 409, 404, 422, 429] {
            assert!(!BuyerHint::leaves_doubt(Some(settled)), "{settled}");
        }
    }
}
