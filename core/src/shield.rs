//! The edge's storm shield, as pure decisions over what the edge has learned.
//!
//! The edge keeps hints in its key-value store and answers from them whenever they settle
//! the outcome, so the origin sees only requests that can still change it:
//! - [`Hint`]: a product's availability (sold out, not yet on sale, ended, on sale) and when
//!   it was last checked. A refusing hint older than the refresh interval is re-checked
//!   against the origin by one request at a time per interval; the others keep answering
//!   from it. It is only a hint: a stale "sold out" can delay a sale by one interval, never
//!   cause an oversell, because the origin decides every acquisition it sees.
//! - [`Refreshed`]: the edge's last re-check. A re-check asks the origin only for the
//!   products that changed since the previous one ([`Shield::refresh_since`]), so its cost
//!   follows the changes, not the catalogue; every hint it does not list is confirmed as of
//!   that re-check. Every [`FULL_REFRESH_EVERY_US`] one re-check reads everything, which
//!   bounds how long a change the origin failed to note can mislead the edge. The request
//!   that triggers a re-check is answered first, from the hint; the re-check runs after.
//! - [`Holding`]: the buyer already holds a slot of this product (until its deadline).
//! - [`BuyerHint::InDoubt`]: the buyer's last attempt ended without an answer that says what
//!   happened (a 5xx, or none): it may have been granted, so their next attempts skip the
//!   refusing hints and reach the origin, which knows. A buyer whose `201` was lost on the
//!   way is told `already-holding`, never `sold-out`.
//! - [`Bucket`]: a token bucket per user and per client address.
//!
//! Encodings are short text, stable across edge versions that share a store.
//!
//! [`Shield`] runs these decisions over the edge's key-value store ([`crate::kv::KeyValue`]):
//! admission (holding, doubt, hint, the edge-wide re-check window, one acquisition in flight
//! per buyer), learning from the origin's answer, and token buckets. The component only
//! does the I/O around it, so all of it is unit-tested natively.

use crate::kv::KeyValue;
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
    /// Sold out: the drop's public-log entry at which the origin said so (its answer's
    /// receipt), which the edge's own sold-out answers name (`docs/transparency.md`).
    pub sold_out_at: Option<u64>,
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
        Self { availability, checked_us, sold_out_at: None }
    }

    /// The same hint, naming the log entry at which the product was sold out.
    pub fn sold_out_at(mut self, entry: Option<u64>) -> Self {
        if self.availability == Availability::SoldOut {
            self.sold_out_at = entry;
        }
        self
    }

    pub fn encode(&self) -> String {
        let t = self.checked_us;
        match &self.availability {
            Availability::OnSale => format!("on|{t}"),
            Availability::SoldOut => match self.sold_out_at {
                Some(entry) => format!("so|{t}|{entry}"),
                None => format!("so|{t}"),
            },
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
        let mut sold_out_at = None;
        let availability = match kind {
            "on" => Availability::OnSale,
            "so" => {
                sold_out_at = rest.and_then(|r| r.parse().ok());
                Availability::SoldOut
            }
            "ns" => {
                let (ms, at) = rest?.split_once('|')?;
                Availability::NotOnSale { starts_ms: ms.parse().ok()?, starts_at: at.to_owned() }
            }
            "en" => Availability::Ended { ends_at: rest?.to_owned() },
            _ => return None,
        };
        Some(Self { availability, checked_us, sold_out_at })
    }

    /// The refusal this hint implies at `now_us`, if any.
    pub fn refusal(&self, product_id: &str, now_us: u64) -> Option<Problem> {
        match &self.availability {
            Availability::OnSale => None,
            Availability::SoldOut => Some(match self.sold_out_at {
                // Which entry of the drop's public log showed it sold out: any checkpoint
                // past it proves the refusal.
                Some(entry) => Problem::sold_out(product_id)
                    .with("soldOutAtEntry", entry)
                    .with("log", format!("/transparency/{product_id}/checkpoint")),
                None => Problem::sold_out(product_id),
            }),
            Availability::NotOnSale { starts_ms, starts_at } => {
                let opens_us = u64::try_from(*starts_ms).unwrap_or(0).saturating_mul(1000);
                (now_us < opens_us).then(|| Problem::not_on_sale(starts_at, *starts_ms))
            }
            Availability::Ended { ends_at } => Some(Problem::sale_ended(ends_at)),
        }
    }
}

/// Decides an acquisition of `product_id` at `now_us` from its hint, confirmed by the edge's
/// last re-check at `confirmed_us` when that came later and did not change it.
pub fn judge(
    product_id: &str,
    hint: Option<&Hint>,
    confirmed_us: u64,
    now_us: u64,
    refresh_every_us: u64,
) -> Judgement {
    let Some(hint) = hint else { return Judgement::Forward };
    let checked_us = hint.checked_us.max(confirmed_us);
    match hint.refusal(product_id, now_us) {
        None => Judgement::Forward,
        Some(p) if now_us.saturating_sub(checked_us) < refresh_every_us => Judgement::Refuse(p),
        Some(p) => Judgement::Stale(p),
    }
}

/// How often an edge's re-check reads every product, however few changes it was told of.
pub const FULL_REFRESH_EVERY_US: u64 = 60_000_000;

/// The edge's last re-check: the origin's `asOfMs` to ask from next, when it was sent (every
/// hint it did not change is confirmed as of then), and when the last full one was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    pub as_of_ms: i64,
    pub confirmed_us: u64,
    pub full_us: u64,
}

impl Refreshed {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.as_of_ms, self.confirmed_us, self.full_us)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let refreshed = Self {
            as_of_ms: parts.next()?.parse().ok()?,
            confirmed_us: parts.next()?.parse().ok()?,
            full_us: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(refreshed)
    }
}

/// The origin's answer to a re-check (`GET /internal/availability[?since=]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The origin's time the answer is as of: what the next re-check asks from.
    pub as_of_ms: i64,
    /// Every product (not only the changed ones).
    pub full: bool,
    pub products: Vec<(String, Availability)>,
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

/// The public-log entry at which an origin's answer showed the product sold out: the
/// receipt of the grant that took the last unit, or of a sold-out refusal.
pub fn sold_out_entry(
    status: u16,
    remaining: Option<i64>,
    body: Option<&serde_json::Value>,
) -> Option<u64> {
    let sold_out = match status {
        201 => remaining == Some(0),
        409 => body?.get("type")?.as_str()? == "/problems/sold-out",
        _ => false,
    };
    if !sold_out {
        return None;
    }
    body?.get("receipt")?.get("index")?.as_u64()
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

/// The origin's re-check answer (`GET /internal/availability`) read at `now_ms`, or `None`
/// when it is not one; malformed product entries are skipped.
pub fn from_snapshot(answer: &serde_json::Value, now_ms: i64) -> Option<Snapshot> {
    let as_of_ms = answer.get("asOfMs")?.as_i64()?;
    let full = answer.get("full")?.as_bool()?;
    let products = answer
        .get("products")?
        .as_array()?
        .iter()
        .filter_map(|entry| {
            let id = entry.get("productId")?.as_str()?.to_owned();
            Some((id, from_availability(entry, now_ms)?))
        })
        .collect();
    Some(Snapshot { as_of_ms, full, products })
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

/// The key-value key of a product's [`Hint`].
pub fn hint_key(product_id: &str) -> String {
    format!("av:{product_id}")
}

/// The key-value key of a buyer's [`BuyerHint`] for a product.
pub fn buyer_key(product_id: &str, user_id: &str) -> String {
    format!("hd:{product_id}:{user_id}")
}

/// The key-value key of a product's queue mode: until when the edge treats it as queued.
fn queue_key(product_id: &str) -> String {
    format!("qm:{product_id}")
}

/// The key-value key of a buyer's acquisition in flight for a product.
fn flight_key(product_id: &str, user_id: &str) -> String {
    format!("if:{product_id}:{user_id}")
}

/// The key-value key of the edge-wide re-check window.
pub const REFRESH_KEY: &str = "rf:*";

/// The key-value key of the edge's last re-check ([`Refreshed`]).
pub const REFRESHED_KEY: &str = "av:*";

/// The timings the shield decides with (from the edge's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How old a refusing hint may be before one request re-checks it with the origin.
    pub refresh_every_us: u64,
    /// How long an acquisition in flight blocks the buyer's others (and how long a buyer's
    /// failed attempt leaves them in doubt).
    pub in_flight_us: u64,
    /// How long an `already-holding` answer is remembered.
    pub holding_us: u64,
}

/// What to do with an acquisition before it may reach the origin.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Answer this; the origin is not asked.
    Refuse(Problem),
    /// The product's refusing hint is due for a re-check and this request holds the edge's
    /// re-check window: answer `pending` (the hint's refusal) first, then ask the origin
    /// for what changed ([`Shield::refresh_since`]) and [`Shield::record_refresh`].
    Refresh { pending: Problem },
    /// Forward it, then report the answer with [`Shield::after_answer`].
    Forward(Ticket),
}

/// A forwarded acquisition, for reporting its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    product_id: String,
    user_id: String,
    in_doubt: bool,
    owns_flight: bool,
    /// When it was admitted: what its answer teaches is at least this recent.
    admitted_us: u64,
}

/// A token bucket said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
    pub reset_secs: u64,
}

/// The edge's decisions on acquisitions and rate limits, over its key-value store: what
/// `edge/component` runs for every request, and what the unit tests below drive natively.
pub struct Shield<'s, S: KeyValue> {
    store: &'s S,
    timings: Timings,
}

impl<'s, S: KeyValue> Shield<'s, S> {
    pub fn new(store: &'s S, timings: Timings) -> Self {
        Self { store, timings }
    }

    fn text(&self, key: &str) -> Option<String> {
        self.store.get(key).and_then(|v| String::from_utf8(v).ok())
    }

    /// Takes a token from the bucket at `key`. Without a usable store (or under heavy
    /// contention) the request passes: a limit protects the origin, it never decides a sale.
    pub fn take_token(&self, key: &str, limit: Limit, now_us: u64) -> Result<(), Limited> {
        for _ in 0..3 {
            let mut outcome = None;
            let wrote = self.store.update(key, |current| {
                let bucket =
                    current.and_then(|b| std::str::from_utf8(b).ok()).and_then(Bucket::decode);
                let (next, take) = Bucket::take(bucket, limit, now_us);
                outcome = Some((next, take));
                Some(next.encode().into_bytes())
            });
            match (wrote, outcome) {
                (None, _) => return Ok(()),
                (Some(true), Some((bucket, Take::Limited { retry_after_secs }))) => {
                    return Err(Limited { retry_after_secs, reset_secs: bucket.reset_secs(limit) });
                }
                (Some(true), _) => return Ok(()),
                (Some(false), _) => continue,
            }
        }
        Ok(())
    }

    /// Decides an acquisition of `product_id` by `user_id` stamped `now_us`: answered here
    /// when the buyer holds a slot, has one in flight, or the product cannot be sold (fresh
    /// hint); a buyer in doubt skips the product's hint.
    pub fn admit(&self, product_id: &str, user_id: &str, now_us: u64) -> Admission {
        let buyer = self.text(&buyer_key(product_id, user_id)).and_then(|s| BuyerHint::decode(&s));
        if let Some(BuyerHint::Holding(holding)) = &buyer
            && let Some(problem) = holding.refusal(now_us)
        {
            return Admission::Refuse(problem);
        }
        // The buyer's last attempt may have been granted without their hearing it: the
        // origin decides, whatever the product's hint says.
        let in_doubt = buyer.as_ref().is_some_and(|b| b.in_doubt(now_us));
        if !in_doubt {
            let hint = self.text(&hint_key(product_id)).and_then(|s| Hint::decode(&s));
            let every = self.timings.refresh_every_us;
            let mut judgement = judge(product_id, hint.as_ref(), 0, now_us, every);
            if matches!(judgement, Judgement::Stale(_)) {
                // Stale by itself; the edge's last re-check may have confirmed it since.
                let confirmed = self.refreshed().map_or(0, |r| r.confirmed_us);
                judgement = judge(product_id, hint.as_ref(), confirmed, now_us, every);
            }
            match judgement {
                Judgement::Forward => {}
                Judgement::Refuse(problem) => return Admission::Refuse(problem),
                Judgement::Stale(problem) => {
                    // One re-check per window for the whole edge, covering every product:
                    // its cost does not grow with the number of products the edge refuses.
                    let window = refresh_window(now_us, self.timings.refresh_every_us);
                    let claimed = self.store.update(REFRESH_KEY, |last| {
                        let last =
                            last.and_then(|l| std::str::from_utf8(l).ok()?.parse::<u64>().ok());
                        (last.unwrap_or(0) < window).then(|| window.to_string().into_bytes())
                    });
                    if claimed != Some(true) {
                        return Admission::Refuse(problem);
                    }
                    return Admission::Refresh { pending: problem };
                }
            }
        }
        self.claim_flight(product_id, user_id, now_us, in_doubt)
    }

    fn refreshed(&self) -> Option<Refreshed> {
        self.text(REFRESHED_KEY).and_then(|s| Refreshed::decode(&s))
    }

    /// What a re-check at `now_us` asks the origin for: the changes since `Some(asOfMs)` of
    /// the last one, or everything (`None`: never re-checked, or the last full re-check is
    /// [`FULL_REFRESH_EVERY_US`] old).
    pub fn refresh_since(&self, now_us: u64) -> Option<i64> {
        let last = self.refreshed()?;
        (now_us.saturating_sub(last.full_us) < FULL_REFRESH_EVERY_US).then_some(last.as_of_ms)
    }

    /// Records a re-check sent at `sent_us` that asked for the changes `since` and got
    /// `snapshot`: each product it lists, unless the edge learned something newer meanwhile;
    /// then the re-check itself, which confirms every other hint as of `sent_us`. A re-check
    /// older than the one recorded changes nothing but the hints it is newer for.
    pub fn record_refresh(&self, sent_us: u64, since: Option<i64>, snapshot: Snapshot) {
        for (id, availability) in snapshot.products {
            self.learn_hint(&id, Hint::new(availability, sent_us));
        }
        let full = since.is_none() || snapshot.full;
        self.store.update(REFRESHED_KEY, |current| {
            let current = current.and_then(|c| Refreshed::decode(std::str::from_utf8(c).ok()?));
            if current.is_some_and(|c| c.confirmed_us > sent_us) {
                return None;
            }
            let last_full = current.map_or(0, |c| c.full_us);
            let full_us = if full { sent_us } else { last_full };
            Some(
                Refreshed { as_of_ms: snapshot.as_of_ms, confirmed_us: sent_us, full_us }
                    .encode()
                    .into_bytes(),
            )
        });
    }

    /// Whether the edge was told, within [`crate::queue::QUEUE_HINT_US`], that acquisitions
    /// of `product_id` need a queue pass.
    pub fn queued(&self, product_id: &str, now_us: u64) -> bool {
        self.text(&queue_key(product_id))
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|until_us| now_us < until_us)
    }

    /// What a waiting room's answer for `product_id` teaches at `now_us`: its queue mode (the
    /// origin's [`crate::queue::HEADER_QUEUE_MODE`], when it said), and that the product sold
    /// out or its sale ended (a 409 problem).
    pub fn learn_queue(
        &self,
        product_id: &str,
        mode: Option<&str>,
        status: u16,
        body: Option<&serde_json::Value>,
        now_us: u64,
    ) {
        match mode {
            Some("1") => {
                let until = now_us + crate::queue::QUEUE_HINT_US;
                self.store.set(&queue_key(product_id), until.to_string().as_bytes());
            }
            Some("0") => self.store.delete(&queue_key(product_id)),
            _ => {}
        }
        if status == 409
            && let Some(availability) = learn(status, None, body)
        {
            self.learn_hint(product_id, Hint::new(availability, now_us));
        }
    }

    /// The refusal a look at (or a join of) `product_id`'s line gets from a fresh hint: sold
    /// out or ended (a sale not yet open is exactly when buyers line up).
    pub fn queue_refusal(&self, product_id: &str, now_us: u64) -> Option<Problem> {
        let hint = self.text(&hint_key(product_id)).and_then(|s| Hint::decode(&s))?;
        if now_us.saturating_sub(hint.checked_us) >= self.timings.refresh_every_us {
            return None;
        }
        match hint.availability {
            Availability::SoldOut | Availability::Ended { .. } => hint.refusal(product_id, now_us),
            _ => None,
        }
    }

    /// Writes `hint` unless the product's hint is newer (an answer or re-check that was
    /// sent later and came back first).
    fn learn_hint(&self, product_id: &str, hint: Hint) {
        self.store.update(&hint_key(product_id), |current| {
            let current = current.and_then(|c| Hint::decode(std::str::from_utf8(c).ok()?));
            if current.as_ref().is_some_and(|c| c.checked_us > hint.checked_us) {
                return None;
            }
            // Still sold out: keep the log entry that showed it (a re-check does not know it).
            let kept = current.and_then(|c| c.sold_out_at);
            let hint = match hint.sold_out_at {
                None => hint.clone().sold_out_at(kept),
                Some(_) => hint.clone(),
            };
            Some(hint.encode().into_bytes())
        });
    }

    /// One acquisition per buyer and product in flight; a marker older than the in-flight
    /// deadline was abandoned (its request died) and is taken over.
    fn claim_flight(
        &self,
        product_id: &str,
        user_id: &str,
        now_us: u64,
        in_doubt: bool,
    ) -> Admission {
        let stale_before = now_us.saturating_sub(self.timings.in_flight_us);
        let claimed = self.store.update(&flight_key(product_id, user_id), |current| {
            let started = current.and_then(|c| std::str::from_utf8(c).ok()?.parse::<u64>().ok());
            match started {
                Some(t) if t > stale_before => None,
                _ => Some(now_us.to_string().into_bytes()),
            }
        });
        if claimed == Some(false) {
            return Admission::Refuse(Problem::in_progress());
        }
        Admission::Forward(Ticket {
            product_id: product_id.to_owned(),
            user_id: user_id.to_owned(),
            in_doubt,
            owns_flight: claimed == Some(true),
            admitted_us: now_us,
        })
    }

    /// Learns from the origin's answer to a forwarded acquisition, at `now_us`: `status`
    /// (`None`: no answer came), the remaining units it reported, its JSON body.
    pub fn after_answer(
        &self,
        ticket: Ticket,
        status: Option<u16>,
        remaining: Option<i64>,
        body: Option<&serde_json::Value>,
        now_us: u64,
    ) {
        let buyer = buyer_key(&ticket.product_id, &ticket.user_id);
        if ticket.owns_flight {
            self.store.delete(&flight_key(&ticket.product_id, &ticket.user_id));
        }
        let Some(status) = status.filter(|s| !BuyerHint::leaves_doubt(Some(*s))) else {
            let doubt = BuyerHint::InDoubt { until_us: now_us + self.timings.in_flight_us };
            self.store.set(&buyer, doubt.encode().as_bytes());
            return;
        };
        if ticket.in_doubt {
            // Settled: a grant or already-holding is learned below; anything else clears it.
            self.store.delete(&buyer);
        }
        if let Some(availability) = learn(status, remaining, body) {
            let entry = sold_out_entry(status, remaining, body);
            let hint = Hint::new(availability, ticket.admitted_us).sold_out_at(entry);
            self.learn_hint(&ticket.product_id, hint);
        }
        let field = |k: &str| body.and_then(|b| b.get(k));
        let slot = field("slotId").and_then(|v| v.as_str());
        let until_us = match (status, field("type").and_then(|t| t.as_str())) {
            (201, _) => field("remainingSeconds")
                .and_then(|v| v.as_u64())
                .map(|secs| now_us + secs * 1_000_000),
            (409, Some("/problems/already-holding")) => Some(now_us + self.timings.holding_us),
            _ => None,
        };
        if let (Some(slot), Some(until_us)) = (slot, until_us) {
            let holding = BuyerHint::Holding(Holding { slot_id: slot.to_owned(), until_us });
            self.store.set(&buyer, holding.encode().as_bytes());
        }
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
        let named = Hint::new(Availability::SoldOut, 42).sold_out_at(Some(7));
        assert_eq!(named.encode(), "so|42|7");
        assert_eq!(Hint::decode("so|42|7"), Some(named.clone()));
        let p = named.refusal("p", 50).unwrap();
        assert_eq!(p.extra["soldOutAtEntry"], 7);
        assert_eq!(p.extra["log"], "/transparency/p/checkpoint");
        assert_eq!(Hint::new(Availability::OnSale, 1).sold_out_at(Some(7)).sold_out_at, None);
    }

    #[test]
    fn the_entry_that_showed_a_product_sold_out_is_read_from_the_origins_receipt() {
        let granted = json!({"slotId": "s", "receipt": {"index": 20}});
        assert_eq!(sold_out_entry(201, Some(0), Some(&granted)), Some(20));
        assert_eq!(sold_out_entry(201, Some(3), Some(&granted)), None, "not the last unit");
        let refused = json!({"type": "/problems/sold-out", "receipt": {"index": 31}});
        assert_eq!(sold_out_entry(409, None, Some(&refused)), Some(31));
        let holding = json!({"type": "/problems/already-holding", "receipt": {"index": 3}});
        assert_eq!(sold_out_entry(409, None, Some(&holding)), None);
        assert_eq!(sold_out_entry(409, None, Some(&json!({"type": "/problems/sold-out"}))), None);
    }

    #[test]
    fn a_fresh_refusing_hint_refuses_and_a_stale_one_asks_for_a_refresh() {
        let sold = Hint::new(Availability::SoldOut, 10 * S);
        let at = |now| judge("p", Some(&sold), 0, now, S / 4);
        assert!(matches!(at(10 * S + 1), Judgement::Refuse(p) if p.slug() == "sold-out"));
        assert!(matches!(at(10 * S + S / 4), Judgement::Stale(p) if p.slug() == "sold-out"));
        // A later re-check that did not change it confirms it.
        let confirmed = judge("p", Some(&sold), 10 * S + S / 8, 10 * S + S / 4, S / 4);
        assert!(matches!(confirmed, Judgement::Refuse(_)));
        assert_eq!(judge("p", None, 0, 0, S), Judgement::Forward);
        let on = Hint::new(Availability::OnSale, 0);
        assert_eq!(judge("p", Some(&on), 0, 99 * S, S), Judgement::Forward);
    }

    #[test]
    fn not_on_sale_ends_when_the_sale_opens() {
        let h =
            Hint::new(Availability::NotOnSale { starts_ms: 20_000, starts_at: "then".into() }, 0);
        assert!(matches!(judge("p", Some(&h), 0, 1, 100 * S), Judgement::Refuse(p)
            if p.slug() == "not-on-sale" && p.extra["saleStartsAt"] == "then"));
        assert_eq!(judge("p", Some(&h), 0, 20 * S, 100 * S), Judgement::Forward);
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
        let answer = json!({"asOfMs": 42, "full": false, "products": [
            {"productId": "a", "remaining": 0, "saleStartsAtMs": 0},
            {"productId": "b", "remaining": 3, "saleStartsAtMs": 0},
            {"productId": "c"},
            {"remaining": 1, "saleStartsAtMs": 0},
        ]});
        let snapshot = from_snapshot(&answer, 10).unwrap();
        assert_eq!((snapshot.as_of_ms, snapshot.full), (42, false));
        assert_eq!(
            snapshot.products,
            [("a".to_owned(), Availability::SoldOut), ("b".to_owned(), Availability::OnSale)]
        );
        assert_eq!(from_snapshot(&json!({"asOfMs": 1, "full": true, "products": 3}), 10), None);
        assert_eq!(from_snapshot(&json!({"products": []}), 10), None, "no asOfMs");
        let r = Refreshed { as_of_ms: 5, confirmed_us: 6, full_us: 7 };
        assert_eq!(Refreshed::decode(&r.encode()), Some(r));
        assert_eq!(Refreshed::decode("5 6"), None);
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

    mod pipeline {
        use super::super::*;
        use crate::kv::{KeyValue, MemoryStore};
        use serde_json::json;

        const T: Timings = Timings {
            refresh_every_us: 1_000_000,
            in_flight_us: 10_000_000,
            holding_us: 5_000_000,
        };

        fn forwarded(a: Admission) -> Ticket {
            match a {
                Admission::Forward(t) => t,
                other => panic!("expected Forward, got {other:?}"),
            }
        }

        fn refused(a: Admission) -> String {
            match a {
                Admission::Refuse(p) => p.kind.trim_start_matches("/problems/").to_owned(),
                other => panic!("expected Refuse, got {other:?}"),
            }
        }

        #[test]
        fn queue_mode_and_sell_outs_are_learned_from_waiting_room_answers() {
            let store = MemoryStore::default();
            let shield = Shield::new(&store, T);
            assert!(!shield.queued("p", 0));
            shield.learn_queue("p", Some("1"), 202, None, 10);
            assert!(shield.queued("p", 20));
            assert!(!shield.queued("p", 10 + crate::queue::QUEUE_HINT_US));
            shield.learn_queue("p", Some("0"), 200, None, 30);
            assert!(!shield.queued("p", 40));
            // Joining before the opening is what a waiting room is for: never refused.
            let opens =
                json!({"type": "/problems/not-on-sale", "saleStartsAt": "x", "saleStartsAtMs": 9});
            shield.learn_queue("p", None, 409, Some(&opens), 50);
            assert_eq!(shield.queue_refusal("p", 60), None);
            let sold = json!({"type": "/problems/sold-out"});
            shield.learn_queue("p", Some("1"), 409, Some(&sold), 70);
            let refusal = shield.queue_refusal("p", 80).expect("sold out");
            assert_eq!(refusal.slug(), "sold-out");
            // A stale hint is asked again.
            assert_eq!(shield.queue_refusal("p", 70 + T.refresh_every_us), None);
        }

        #[test]
        fn a_sell_out_is_learned_and_answered_at_the_edge_until_its_re_check() {
            let store = MemoryStore::default();
            let shield = Shield::new(&store, T);
            let ticket = forwarded(shield.admit("p", "a", 0));
            let granted =
                json!({"slotId": "s-a", "remainingSeconds": 1800, "receipt": {"index": 9}});
            shield.after_answer(ticket, Some(201), Some(0), Some(&granted), 10);
            // The winner is answered from its holding, everyone else from the hint, which
            // names the public-log entry that showed the sell-out.
            assert_eq!(refused(shield.admit("p", "a", 20)), "already-holding");
            assert_eq!(refused(shield.admit("p", "b", 20)), "sold-out");
            let Admission::Refuse(p) = shield.admit("p", "b", 21) else { panic!("refused") };
            assert_eq!(p.extra["soldOutAtEntry"], 9);
            // Past the re-check interval one request claims the window, the rest refuse.
            let due = 1_000_100;
            assert!(matches!(shield.admit("p", "b", due), Admission::Refresh { .. }));
            assert_eq!(refused(shield.admit("p", "c", due)), "sold-out");
            // The claimant was answered from the hint; the re-check (everything, the first
            // time) says a unit is back: the next buyer goes on.
            assert_eq!(shield.refresh_since(due), None);
            let snapshot = |as_of_ms, full, products: Vec<(&str, Availability)>| Snapshot {
                as_of_ms,
                full,
                products: products.into_iter().map(|(p, a)| (p.to_owned(), a)).collect(),
            };
            shield.record_refresh(due, None, snapshot(7, true, vec![("p", Availability::OnSale)]));
            forwarded(shield.admit("p", "c", due + 1));
            // The next re-check asks for what changed since the origin's asOfMs.
            assert_eq!(shield.refresh_since(due + 2), Some(7));
            // A product it does not list is confirmed as of that re-check: no re-check for
            // another interval, however old the hint.
            store.set(&hint_key("q"), Hint::new(Availability::SoldOut, 0).encode().as_bytes());
            let later = 5_000_000;
            assert!(matches!(shield.admit("q", "d", later), Admission::Refresh { .. }));
            shield.record_refresh(later, Some(7), snapshot(9, false, vec![]));
            assert_eq!(refused(shield.admit("q", "e", later + 10)), "sold-out");
            assert_eq!(shield.refresh_since(later + 10), Some(9));
            // A re-check sent earlier that comes back later changes nothing it is older for:
            // neither the edge's last re-check nor a hint learned after it was sent.
            let learned = Hint::new(Availability::SoldOut, later + 5);
            store.set(&hint_key("q"), learned.encode().as_bytes());
            let slow = snapshot(8, false, vec![("q", Availability::OnSale)]);
            shield.record_refresh(later - 5, Some(7), slow);
            assert_eq!(refused(shield.admit("q", "e", later + 20)), "sold-out");
            assert_eq!(shield.refresh_since(later + 20), Some(9));
            // A change it lists replaces the hint.
            let listed = snapshot(11, false, vec![("q", Availability::OnSale)]);
            shield.record_refresh(later + 30, Some(9), listed);
            forwarded(shield.admit("q", "e", later + 40));
            // A minute after the last full re-check, the next one reads everything again.
            assert_eq!(shield.refresh_since(due + FULL_REFRESH_EVERY_US - 1), Some(11));
            assert_eq!(shield.refresh_since(due + FULL_REFRESH_EVERY_US), None);
        }

        #[test]
        fn an_answer_sent_before_a_re_check_does_not_undo_it() {
            let store = MemoryStore::default();
            let shield = Shield::new(&store, T);
            let slow = forwarded(shield.admit("p", "a", 100));
            let snapshot = Snapshot {
                as_of_ms: 1,
                full: true,
                products: vec![("p".to_owned(), Availability::OnSale)],
            };
            shield.record_refresh(200, None, snapshot);
            // A sold-out answer decided before the re-check arrives after it.
            let sold_out = json!({"type": "/problems/sold-out"});
            shield.after_answer(slow, Some(409), None, Some(&sold_out), 300);
            forwarded(shield.admit("p", "b", 400));
        }

        #[test]
        fn one_acquisition_per_buyer_in_flight_and_an_abandoned_one_is_taken_over() {
            let store = MemoryStore::default();
            let shield = Shield::new(&store, T);
            let t0 = 1_000_000_000;
            let first = forwarded(shield.admit("p", "a", t0));
            assert!(first.owns_flight);
            assert_eq!(refused(shield.admit("p", "a", t0 + 1)), "in-progress");
            forwarded(shield.admit("p", "b", t0 + 1));
            // Its request died without an answer: past the deadline it is taken over.
            let second = forwarded(shield.admit("p", "a", t0 + T.in_flight_us + 1));
            assert!(second.owns_flight);
            shield.after_answer(second, Some(409), None, None, t0 + T.in_flight_us + 2);
            forwarded(shield.admit("p", "a", t0 + T.in_flight_us + 3));
        }

        #[test]
        fn a_buyer_whose_answer_was_lost_is_sent_to_the_origin_until_it_says() {
            let store = MemoryStore::default();
            let shield = Shield::new(&store, T);
            store.set(&hint_key("p"), Hint::new(Availability::SoldOut, 0).encode().as_bytes());
            // No answer at all: the buyer is in doubt and skips the sold-out hint.
            let ticket = Ticket {
                product_id: "p".into(),
                user_id: "a".into(),
                in_doubt: false,
                owns_flight: false,
                admitted_us: 0,
            };
            shield.after_answer(ticket, None, None, None, 10);
            let retry = forwarded(shield.admit("p", "a", 20));
            assert!(retry.in_doubt);
            assert_eq!(refused(shield.admit("p", "b", 20)), "sold-out", "others still shielded");
            // The origin says they hold the slot: remembered as holding.
            let holding = json!({"type": "/problems/already-holding", "slotId": "s-a"});
            shield.after_answer(retry, Some(409), None, Some(&holding), 30);
            assert_eq!(refused(shield.admit("p", "a", 40)), "already-holding");
            // A definitive refusal clears a doubt without leaving a holding.
            let c_ticket = Ticket {
                product_id: "p".into(),
                user_id: "c".into(),
                in_doubt: false,
                owns_flight: false,
                admitted_us: 0,
            };
            shield.after_answer(c_ticket, Some(503), None, None, 50);
            let c = forwarded(shield.admit("p", "c", 60));
            shield.after_answer(
                c,
                Some(409),
                None,
                Some(&json!({"type": "/problems/sold-out"})),
                70,
            );
            assert_eq!(store.get(&buyer_key("p", "c")), None);
            assert_eq!(refused(shield.admit("p", "c", 80)), "sold-out");
            // A doubt ends by itself.
            let d_ticket = Ticket {
                product_id: "p".into(),
                user_id: "d".into(),
                in_doubt: false,
                owns_flight: false,
                admitted_us: 0,
            };
            shield.after_answer(d_ticket, Some(502), None, None, 0);
            assert!(forwarded(shield.admit("p", "d", 1)).in_doubt);
            let fresh = Hint::new(Availability::SoldOut, T.in_flight_us);
            store.set(&hint_key("p"), fresh.encode().as_bytes());
            assert_eq!(refused(shield.admit("p", "d", T.in_flight_us + 1)), "sold-out");
        }

        #[test]
        fn a_bucket_refuses_past_its_burst_and_a_store_that_fails_lets_requests_pass() {
            let store = MemoryStore::default();
            let shield = Shield::new(&store, T);
            let limit = Limit { per_sec: 1.0, burst: 2 };
            assert_eq!(shield.take_token("rl", limit, 0), Ok(()));
            assert_eq!(shield.take_token("rl", limit, 0), Ok(()));
            let limited = shield.take_token("rl", limit, 0).unwrap_err();
            assert!(limited.retry_after_secs >= 1);
            assert_eq!(shield.take_token("rl", limit, 1_000_000), Ok(()), "refilled");

            struct Broken;
            impl KeyValue for Broken {
                fn get(&self, _: &str) -> Option<Vec<u8>> {
                    None
                }
                fn set(&self, _: &str, _: &[u8]) {}
                fn delete(&self, _: &str) {}
                fn update(
                    &self,
                    _: &str,
                    _: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
                ) -> Option<bool> {
                    None
                }
            }
            let broken = Shield::new(&Broken, T);
            for _ in 0..10 {
                assert_eq!(broken.take_token("rl", limit, 0), Ok(()));
            }
            forwarded(broken.admit("p", "a", 0));
        }
    }
}
