//! The fairness window (invariant 6): with a window W > 0, an acquisition waits until its
//! edge stamp is W old, and the acquisitions of a product are then decided in stamp order.
//! A request that travelled up to W longer from its edge than a later-stamped one still
//! goes first; what arrives later than W is decided at once (and may be an inversion, which
//! `flashgate check` counts).
//!
//! One task per product (started on its first acquisition) holds the waiting requests in a
//! heap ordered by stamp and runs `acquire.lua` (under the grant lease, [`crate::store::grants`])
//! for each due one in turn. With W = 0 (the
//! default) requests go straight to Redis and none of this runs.

use crate::clock::Clock;
use crate::error::{ApiError, ApiResult};
use crate::store::grants::Grants;
use crate::store::scripts::acquire::{AcquireArgs, Acquisition};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

struct Waiting {
    args: AcquireArgs,
    due: Instant,
    seq: u64,
    reply: oneshot::Sender<ApiResult<Acquisition>>,
}

impl Waiting {
    fn key(&self) -> (i64, u64) {
        (self.args.arrival_us, self.seq)
    }
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Decides acquisitions in stamp order within the window; cheap to clone.
#[derive(Clone)]
pub struct FairnessWindow {
    window: Duration,
    grants: Grants,
    clock: Arc<dyn Clock>,
    queues: Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<Waiting>>>>,
    seq: Arc<std::sync::atomic::AtomicU64>,
    tasks: TaskTracker,
}

impl FairnessWindow {
    /// `tasks` tracks the per-product queues, so shutdown can wait for them.
    pub fn new(
        window: Duration,
        grants: Grants,
        clock: Arc<dyn Clock>,
        tasks: TaskTracker,
    ) -> Self {
        Self { window, grants, clock, queues: Arc::default(), seq: Arc::default(), tasks }
    }

    /// Shutdown: each queue decides what it holds, then its task ends. Acquisitions after
    /// this start a new queue (the server stopped accepting before this is called).
    pub fn close(&self) {
        self.queues.lock().expect("fairness queues lock").clear();
    }

    /// Decides one acquisition, after the window when there is one.
    pub async fn acquire(&self, args: AcquireArgs) -> ApiResult<Acquisition> {
        if self.window.is_zero() {
            return self.grants.acquire(&args).await;
        }
        // Due when the stamp is W old by the origin's clock (measured now, waited in real time).
        let age_us = self.clock.now_us() - args.arrival_us;
        let wait = (self.window.as_micros() as i64 - age_us).max(0) as u64;
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            due: Instant::now() + Duration::from_micros(wait),
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            args,
            reply,
        };
        self.queue(waiting.args.product_id).send(waiting).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    fn queue(&self, product: Uuid) -> mpsc::UnboundedSender<Waiting> {
        let mut queues = self.queues.lock().expect("fairness queues lock");
        queues
            .entry(product)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                self.tasks.spawn(decide_in_order(rx, self.grants.clone()));
                tx
            })
            .clone()
    }
}

fn closed() -> ApiError {
    // Only while shutting down: the request is answered, and retried on another origin.
    ApiError::Unavailable {
        component: "origin",
        detail: "the fairness window's queue closed".into(),
    }
}

/// Holds a product's waiting acquisitions and decides each due one, earliest stamp first.
async fn decide_in_order(mut incoming: mpsc::UnboundedReceiver<Waiting>, grants: Grants) {
    let mut heap: BinaryHeap<Reverse<Waiting>> = BinaryHeap::new();
    loop {
        let next_due = heap.peek().map(|Reverse(w)| w.due);
        tokio::select! {
            received = incoming.recv() => match received {
                Some(w) => heap.push(Reverse(w)),
                None if heap.is_empty() => return,
                None => {}
            },
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)),
                if next_due.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse(w)| w.due <= now) {
                    let Some(Reverse(w)) = heap.pop() else { break };
                    let decided = grants.acquire(&w.args).await;
                    let _ = w.reply.send(decided);
                }
            }
        }
    }
}
