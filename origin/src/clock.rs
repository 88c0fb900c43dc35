//! Time as an input: the origin reads it from a [`Clock`] so tests can drive it.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub trait Clock: Send + Sync + 'static {
    /// Microseconds since the Unix epoch.
    fn now_us(&self) -> i64;

    fn now_ms(&self) -> i64 {
        self.now_us().div_euclid(1000)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn starting_now() -> Self {
        Self(Arc::new(AtomicI64::new(SystemClock.now_us())))
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }

    pub fn set_us(&self, us: i64) {
        self.0.store(us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 (UTC) of a µs timestamp, with sub-second digits only when present.
pub fn rfc3339_us(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339_us(ms.saturating_mul(1000))
}

/// The longest pause between retries of a failing step.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The loop every background worker (the relay too) runs: one step per interval until
/// cancelled. A step in progress always finishes; the caller bounds how long it waits for
/// that. After a failed step the next waits twice as long as the last, at most
/// [`MAX_BACKOFF`], so a worker neither hammers a dependency that is down nor lags more than
/// a second once it is back.
pub async fn every<F, Fut, E>(
    name: &'static str,
    interval: Duration,
    cancel: CancellationToken,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Debug,
{
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(interval.max(backoff)) => {}
        }
        match step().await {
            Ok(()) => backoff = Duration::ZERO,
            Err(e) => {
                // Never shorter than the interval; never longer than it or MAX_BACKOFF.
                backoff = (backoff * 2).min(MAX_BACKOFF).max(interval);
                tracing::warn!(worker = name, error = ?e, retry_in = ?backoff, "step failed");
            }
        }
    }
    tracing::info!(worker = name, "stopped");
}

/// µs since the epoch of a timestamp (PostgreSQL keeps µs).
pub fn us_of(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// ms since the epoch of a timestamp.
pub fn ms_of(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The timestamp `us` µs after the epoch.
pub fn at_us(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The timestamp `ms` ms after the epoch.
pub fn at_ms(ms: i64) -> OffsetDateTime {
    at_us(ms.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways() {
        let t = at_us(1_764_806_400_123_456);
        assert_eq!(us_of(t), 1_764_806_400_123_456);
        assert_eq!(ms_of(t), 1_764_806_400_123);
        assert_eq!(ms_of(at_ms(-5)), -5);
    }

    #[test]
    fn formats_microseconds() {
        assert_eq!(rfc3339_us(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339_ms(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::starting_now();
        let t = c.now_us();
        c.advance(std::time::Duration::from_millis(5));
        assert_eq!(c.now_us(), t + 5000);
        assert_eq!(c.now_ms(), (t + 5000) / 1000);
    }
}
