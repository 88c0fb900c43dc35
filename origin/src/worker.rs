//! The loop every background worker runs: one step per interval until cancelled. A step in
//! progress always finishes; the caller bounds how long it waits for that. After a failed
//! step the next waits twice as long as the last, at most [`MAX_BACKOFF`], so a worker
//! neither hammers a dependency that is down nor lags more than a second once it is back.

use std::fmt::Debug;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest pause between retries of a failing step.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

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
