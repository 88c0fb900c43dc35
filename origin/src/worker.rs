//! The loop every background worker runs: one step per interval until cancelled. A step in
//! progress always finishes; the caller bounds how long it waits for that.

use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub async fn every<F, Fut>(
    name: &'static str,
    interval: Duration,
    cancel: CancellationToken,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        step().await;
    }
    tracing::info!(worker = name, "stopped");
}
