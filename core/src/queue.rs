//! The waiting room's pure rules: the queue pass, where a buyer stands in line, how long
//! they wait, and the default admission rate.
//!
//! A product in queue mode sells only to buyers holding a **queue pass**: a short-lived token
//! the origin signs when it admits a buyer from the line, bound to that buyer and that
//! product. The edge checks passes itself (the origin signs them with the secret both
//! already share, under its own domain prefix, so a pass can never pass for a request
//! signature or the other way round) and forwards acquisitions of a queued product only
//! with a valid one; everyone else is put in line.
//!
//! Where a buyer stands is their **score**: the edge's arrival stamp of the request that put
//! them in line (first come, first served, the same stamp acquisitions are judged by), or,
//! in lottery order, a random draw below the sale's opening for everyone who arrived before
//! it (so the pre-sale crowd is shuffled, and everyone after it queues behind them in
//! arrival order).

use crate::signing::EdgeSecret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;

/// The request header an acquisition carries its queue pass in.
pub const HEADER_QUEUE_PASS: &str = "x-queue-pass";
/// The answer header by which the origin tells the edge whether a product is in queue mode
/// (`1`) or not (`0`); the edge remembers it for [`QUEUE_HINT_US`].
pub const HEADER_QUEUE_MODE: &str = "x-flashgate-queue";
/// How long an edge trusts what it was told of a product's queue mode.
pub const QUEUE_HINT_US: u64 = 30_000_000;
/// How long a queue pass is valid after the origin admits its buyer.
pub const PASS_TTL_MS: u64 = 5 * 60 * 1000;
/// Domain prefix of what a pass's MAC covers.
const PASS_DOMAIN: &[u8] = b"flashgate-queue-pass/v1\n";

/// How a product's line is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOrder {
    /// By the edge's arrival stamp.
    Fifo,
    /// A random draw among everyone who arrived before the sale opened; arrival order after.
    Lottery,
}

impl QueueOrder {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fifo" => Some(Self::Fifo),
            "lottery" => Some(Self::Lottery),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Lottery => "lottery",
        }
    }
}

/// When a product's waiting room is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMode {
    Off,
    /// From the moment it is configured.
    Always,
    /// Once the acquisitions the origin sees for it in one second reach a threshold; it then
    /// stays on until the sale ends.
    Auto,
}

impl QueueMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "always" => Some(Self::Always),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Always => "always",
            Self::Auto => "auto",
        }
    }
}

/// Where a buyer who joined with `arrival_us` stands: lower goes first. `draw` is a uniform
/// random number, used only in lottery order for an arrival before `sale_starts_us`.
pub fn score(order: QueueOrder, arrival_us: u64, sale_starts_us: u64, draw: u64) -> u64 {
    match order {
        QueueOrder::Lottery if arrival_us < sale_starts_us => draw % sale_starts_us.max(1),
        _ => arrival_us,
    }
}

/// Seconds a buyer at 1-based `position` can expect to wait at `rate_per_sec` admissions a
/// second (rounded up; 0 for the head of the line).
pub fn estimated_wait_secs(position: u64, rate_per_sec: u32) -> u64 {
    let rate = u64::from(rate_per_sec.max(1));
    position.saturating_sub(1).div_ceil(rate)
}

/// The admission rate when the operator sets none: the product's stock over at most one
/// minute (so a drop's whole stock can be offered within a minute), and at least a stock's
/// worth per hold time (so units that come back when holds expire find buyers). Never below
/// one a second.
pub fn default_admit_rate(stock: u64, hold_secs: u64) -> u32 {
    let over = hold_secs.clamp(1, 60);
    u32::try_from(stock.div_ceil(over)).unwrap_or(u32::MAX).max(1)
}

/// Why a pass was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("the queue pass is malformed")]
    Malformed,
    #[error("the queue pass is not for this buyer and product")]
    NotYours,
    #[error("the queue pass has expired; join the queue again")]
    Expired,
    #[error("the queue pass is not signed by flashgate")]
    BadSignature,
}

/// A queue pass: `v1.<productId>.<userId>.<expiresMs>.<mac>` (the MAC base64url, over the
/// domain prefix and the first four parts).
pub fn sign_pass(secret: &EdgeSecret, product_id: &str, user_id: &str, expires_ms: u64) -> String {
    let body = format!("v1.{product_id}.{user_id}.{expires_ms}");
    let tag = pass_mac(secret, &body);
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks that `pass` admits `user_id` to `product_id` at `now_ms`; answers its expiry.
pub fn verify_pass(
    secret: &EdgeSecret,
    pass: &str,
    product_id: &str,
    user_id: &str,
    now_ms: u64,
) -> Result<u64, PassError> {
    let (body, tag) = pass.rsplit_once('.').ok_or(PassError::Malformed)?;
    let mut parts = body.split('.');
    let (Some("v1"), Some(product), Some(user), Some(expires), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PassError::Malformed);
    };
    let expires_ms: u64 = expires.parse().map_err(|_| PassError::Malformed)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| PassError::Malformed)?;
    let mut mac = secret.mac();
    mac.update(PASS_DOMAIN);
    mac.update(body.as_bytes());
    mac.verify_slice(&tag).map_err(|_| PassError::BadSignature)?;
    if !product.eq_ignore_ascii_case(product_id) || !user.eq_ignore_ascii_case(user_id) {
        return Err(PassError::NotYours);
    }
    if now_ms >= expires_ms {
        return Err(PassError::Expired);
    }
    Ok(expires_ms)
}

fn pass_mac(secret: &EdgeSecret, body: &str) -> Vec<u8> {
    let mut mac = secret.mac();
    mac.update(PASS_DOMAIN);
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "0192e5a4-7b1c-7cde-8f00-0123456789ab";
    const U: &str = "0192e5a4-7b1c-7cde-8f00-0000000000aa";

    fn secret(byte: u8) -> EdgeSecret {
        EdgeSecret::from_bytes(vec![byte; 32]).unwrap()
    }

    #[test]
    fn a_pass_admits_its_buyer_to_its_product_until_it_expires() {
        let pass = sign_pass(&secret(1), P, U, 10_000);
        assert_eq!(verify_pass(&secret(1), &pass, P, U, 9_999), Ok(10_000));
        assert_eq!(verify_pass(&secret(1), &pass, &P.to_uppercase(), U, 0), Ok(10_000));
        assert_eq!(verify_pass(&secret(1), &pass, P, U, 10_000), Err(PassError::Expired));
        let other = "0192e5a4-7b1c-7cde-8f00-0000000000bb";
        assert_eq!(verify_pass(&secret(1), &pass, P, other, 0), Err(PassError::NotYours));
        assert_eq!(verify_pass(&secret(1), &pass, other, U, 0), Err(PassError::NotYours));
    }

    #[test]
    fn a_forged_or_mangled_pass_is_refused() {
        let pass = sign_pass(&secret(1), P, U, 10_000);
        assert_eq!(verify_pass(&secret(2), &pass, P, U, 0), Err(PassError::BadSignature));
        let longer = pass.replace(".10000.", ".99999.");
        assert_eq!(verify_pass(&secret(1), &longer, P, U, 0), Err(PassError::BadSignature));
        for bad in ["", "v1", "v1.a.b.c", "v2.a.b.1.x", "v1.a.b.notanumber.xx", "v1.a.b.1.c.d"] {
            assert_eq!(verify_pass(&secret(1), bad, P, U, 0), Err(PassError::Malformed), "{bad}");
        }
        let no_b64 = format!("{}.!!!", pass.rsplit_once('.').unwrap().0);
        assert_eq!(verify_pass(&secret(1), &no_b64, P, U, 0), Err(PassError::Malformed));
    }

    #[test]
    fn lottery_shuffles_only_the_crowd_before_the_opening() {
        let opens = 1_000_000;
        assert_eq!(score(QueueOrder::Fifo, 5, opens, 777), 5);
        let drawn = score(QueueOrder::Lottery, 5, opens, 123_456_789);
        assert!(drawn < opens);
        assert_eq!(drawn, 123_456_789 % opens);
        assert_eq!(score(QueueOrder::Lottery, opens + 7, opens, 1), opens + 7);
        assert_eq!(score(QueueOrder::Lottery, 5, 0, 9), 5);
    }

    #[test]
    fn waits_and_default_rates() {
        assert_eq!(estimated_wait_secs(1, 10), 0);
        assert_eq!(estimated_wait_secs(11, 10), 1);
        assert_eq!(estimated_wait_secs(12, 10), 2);
        assert_eq!(estimated_wait_secs(5, 0), 4);
        assert_eq!(default_admit_rate(100, 1800), 2);
        assert_eq!(default_admit_rate(6_000, 1800), 100);
        assert_eq!(default_admit_rate(100, 10), 10);
        assert_eq!(default_admit_rate(0, 0), 1);
    }

    #[test]
    fn modes_and_orders_read_back_what_they_write() {
        for m in [QueueMode::Off, QueueMode::Always, QueueMode::Auto] {
            assert_eq!(QueueMode::parse(m.as_str()), Some(m));
        }
        for o in [QueueOrder::Fifo, QueueOrder::Lottery] {
            assert_eq!(QueueOrder::parse(o.as_str()), Some(o));
        }
        assert_eq!(QueueMode::parse("on"), None);
    }
}
