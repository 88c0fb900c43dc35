//! The waiting rooms' admission worker: reads which products queue their buyers from
//! PostgreSQL ([`refresh`]) and admits each room's next buyers (`lua/admit.lua`).
//!
//! [`AdmissionWorker::step`] does one pass at the clock's current time, so tests drive it
//! deterministically; [`AdmissionWorker::run`] repeats it until cancelled. Any number of
//! origins may run it at once: each step is one script per room, and admission is paced by
//! the room's own clock in Redis (`carry`, `lastMs`), not by how many workers step it.
//!
//! The cutoff: a step admits only buyers scored at or below the origin's clock less the
//! fairness window ([`crate::store::fairness`]), so a buyer whose join is still on its way
//! from an edge (within the window) is not overtaken by one who arrived after them.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::scripts::admit::Step;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Admissions {
    /// Rooms stepped.
    pub rooms: u64,
    /// Buyers admitted (given a pass).
    pub admitted: u64,
    /// Buyers still waiting, over every room.
    pub waiting: u64,
}

/// Reads the rooms that are not off from PostgreSQL into the origin's directory
/// ([`crate::store::queue::WaitingRoom::refresh`]).
pub async fn refresh(state: &AppState) -> ApiResult<()> {
    let now = crate::clock::at_ms(state.clock.now_ms());
    let hold = state.inventory.lifecycle().hold;
    Ok(state.rooms.refresh(&state.db, now, hold).await?)
}

#[derive(Clone)]
pub struct AdmissionWorker {
    state: AppState,
    pass_ttl_ms: u64,
}

impl AdmissionWorker {
    /// A worker giving passes of the default lifetime
    /// ([`flashgate_core::queue::PASS_TTL_MS`]).
    pub fn new(state: AppState) -> Self {
        Self { state, pass_ttl_ms: flashgate_core::queue::PASS_TTL_MS }
    }

    /// Passes admit their buyer this long (`--queue-pass-ttl-secs`).
    pub fn pass_ttl(mut self, ttl: Duration) -> Self {
        self.pass_ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self
    }

    /// One pass: refresh the directory, then one admission step per room.
    pub async fn step(&self) -> ApiResult<Admissions> {
        refresh(&self.state).await?;
        let now_us = self.state.clock.now_us();
        let window_us = i64::try_from(self.state.fairness.window().as_micros()).unwrap_or(0);
        let cutoff = u64::try_from(now_us - window_us).unwrap_or(0);
        let mut pass = Admissions::default();
        for (product_id, room) in self.state.rooms.rooms() {
            let step = self
                .state
                .rooms
                .admit(product_id, &room, now_us.div_euclid(1000), cutoff, self.pass_ttl_ms)
                .await?;
            pass.rooms += 1;
            match step {
                Step::Admitted { admitted, waiting, .. } => {
                    pass.admitted += admitted;
                    pass.waiting += waiting;
                    self.state.metrics.queue_admitted.inc_by(admitted);
                }
                Step::Idle { waiting } | Step::NotOpen { waiting } | Step::SoldOut { waiting } => {
                    pass.waiting += waiting
                }
                Step::Unknown | Step::Ended => {}
            }
        }
        Ok(pass)
    }

    /// Steps every `interval` until `cancel` fires; a step in progress finishes first.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        crate::clock::every("admission", interval, cancel, || async {
            let pass = self.step().await?;
            if pass.admitted > 0 {
                tracing::debug!(admitted = pass.admitted, waiting = pass.waiting, "admission");
            }
            Ok::<_, ApiError>(())
        })
        .await
    }
}
