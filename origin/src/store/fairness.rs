//! The fairness window (invariant 6): an acquisition waits until its edge stamp is W old,
//! and the acquisitions of a product are then decided in stamp order. A request that
//! travelled up to W longer from its edge than a later-stamped one still goes first.
//!
//! W is adaptive by default ([`Fairness::Adaptive`]): every acquisition's stamp age on
//! arrival (its edge-to-origin delay) feeds a per-edge quantile
//! ([`flashgate_core::fairness::DelayTracker`]), and W is the largest edge's high quantile,
//! bounded. An operator can fix W instead ([`Fairness::Fixed`]; 0 turns the window off).
//!
//! A request whose stamp is already older than W when it arrives — than the smallest W in
//! force since its stamp, since a later-stamped request may have been decided under that one
//! ([`WindowHistory`]) — is late: it is decided at once (ahead of every held request, its
//! stamp being the oldest), counted per edge in
//! `/metrics`, and marked late for `flashgate check`, which tells its inversions (network)
//! apart from inversions within the window (a defect).
//!
//! Off the hot path when nobody could be overtaken: a product sold out, or whose last known
//! stock is more than twice what is held, what is being decided and what could arrive within
//! W at the busiest rate of the last third of a second, is decided at once
//! (every request stamped earlier, held or still on its way, will find a unit too).
//! Otherwise one task per product holds the waiting requests in a heap ordered by stamp and
//! runs `acquire.lua` (under the grant lease, [`crate::store::grants`]) for each due one in
//! turn.

use crate::clock::Clock;
use crate::error::{ApiError, ApiResult};
use crate::metrics::{EdgeLabels, Metrics};
use crate::store::grants::Grants;
use crate::store::scripts::acquire::{AcquireArgs, Acquisition, Decided};
use flashgate_core::fairness::{DelayTracker, WindowHistory, WindowPolicy};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// How long acquisitions are held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fairness {
    /// Always this long (0: no window, decide at once).
    Fixed(Duration),
    /// As long as the edges' delays call for (see the module docs), within the policy.
    Adaptive(WindowPolicy),
}

/// The window is recomputed from the delays at most this often.
const RECOMPUTE_US: i64 = 50_000;
/// A product's arrivals are counted in buckets this long...
const RATE_BUCKET_US: i64 = 10_000;
/// ...over this many of the latest buckets, and the busiest one sets the rate (arrivals come
/// in bursts when a machine on the way stalls, and a burst is what could take the units
/// an earlier-stamped request still on its way should have).
const RATE_BUCKETS: usize = 32;

struct Waiting {
    args: AcquireArgs,
    due: Instant,
    seq: u64,
    reply: oneshot::Sender<ApiResult<Decided>>,
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

/// Arrivals of one product, in the latest [`RATE_BUCKETS`] buckets of [`RATE_BUCKET_US`].
#[derive(Debug, Default)]
struct Arrivals {
    /// The bucket `counts[bucket % RATE_BUCKETS]` counts (`bucket` = time / bucket length).
    latest: i64,
    counts: [u32; RATE_BUCKETS],
}

impl Arrivals {
    fn count(&mut self, now_us: i64) {
        let bucket = now_us.div_euclid(RATE_BUCKET_US);
        if bucket > self.latest {
            // Buckets skipped since the last arrival are empty.
            let skipped = (bucket - self.latest).min(RATE_BUCKETS as i64);
            for b in 0..skipped {
                self.counts[(bucket - b).rem_euclid(RATE_BUCKETS as i64) as usize] = 0;
            }
            self.latest = bucket;
        }
        let slot = self.latest.rem_euclid(RATE_BUCKETS as i64) as usize;
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    /// How many arrivals `window_us` could hold at the busiest recent rate.
    fn within(&self, window_us: i64, now_us: i64) -> i64 {
        let quiet = now_us.div_euclid(RATE_BUCKET_US) - self.latest >= RATE_BUCKETS as i64;
        let peak = if quiet { 0 } else { self.counts.iter().copied().max().unwrap_or(0) as i64 };
        (peak * window_us + RATE_BUCKET_US - 1) / RATE_BUCKET_US
    }
}

/// What the window knows of one product.
struct Product {
    queue: mpsc::UnboundedSender<Waiting>,
    /// Requests in the queue, not decided yet.
    held: Arc<AtomicUsize>,
    /// Requests being decided at once, outside the queue.
    deciding: AtomicI64,
    /// Units left at the last decision (-1: not known yet).
    remaining: Arc<AtomicI64>,
    arrivals: Mutex<Arrivals>,
}

impl Product {
    /// Whether a request could overtake one stamped earlier (held here or still on its
    /// way) and take a unit it would have had: the stock is not known yet, or it is not sold
    /// out but fewer units are left than twice what is held and what could arrive within the
    /// window. Sold out, nobody can (every request is refused in any order); with stock to
    /// spare, nobody can either, whatever is held. Counts this request's arrival too (one
    /// lock for both).
    fn arrive_contended(&self, window_us: i64, now_us: i64) -> bool {
        let mut arrivals = self.arrivals.lock().expect("arrivals lock");
        arrivals.count(now_us);
        match self.remaining.load(Atomic::Relaxed) {
            i64::MIN..=-1 => true,
            0 => false,
            left => {
                let held = self.held.load(Atomic::Relaxed) as i64;
                let deciding = self.deciding.load(Atomic::Relaxed);
                left <= 2 * (held + deciding + arrivals.within(window_us, now_us)) + 1
            }
        }
    }
}

/// One request being decided at once, counted in its product's `deciding` while it lives.
struct Deciding<'a>(&'a AtomicI64);

impl<'a> Deciding<'a> {
    fn count(deciding: &'a AtomicI64) -> Self {
        deciding.fetch_add(1, Atomic::Relaxed);
        Self(deciding)
    }
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Atomic::Relaxed);
    }
}

/// What the adaptive window learned: the edges' delays and the windows lately in force.
struct Learned {
    delays: DelayTracker,
    history: WindowHistory,
}

/// Decides acquisitions in stamp order within the window; cheap to clone.
#[derive(Clone)]
pub struct FairnessWindow {
    mode: Fairness,
    learned: Arc<Mutex<Learned>>,
    /// The window in force, µs, and when it was computed.
    window_us: Arc<AtomicI64>,
    computed_us: Arc<AtomicI64>,
    logged_us: Arc<AtomicI64>,
    grants: Grants,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    products: Arc<Mutex<HashMap<Uuid, Arc<Product>>>>,
    seq: Arc<AtomicU64>,
    tasks: TaskTracker,
}

impl FairnessWindow {
    /// `tasks` tracks the per-product queues, so shutdown can wait for them.
    pub fn new(
        mode: Fairness,
        grants: Grants,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        tasks: TaskTracker,
    ) -> Self {
        let (policy, fixed_us) = match mode {
            Fairness::Fixed(w) => (WindowPolicy::default(), w.as_micros() as i64),
            Fairness::Adaptive(policy) => (policy, 0),
        };
        metrics.fairness_window_ms.set(fixed_us as f64 / 1000.0);
        Self {
            mode,
            learned: Arc::new(Mutex::new(Learned {
                delays: DelayTracker::new(policy),
                history: WindowHistory::new(fixed_us),
            })),
            window_us: Arc::new(AtomicI64::new(fixed_us)),
            computed_us: Arc::new(AtomicI64::new(i64::MIN)),
            logged_us: Arc::new(AtomicI64::new(fixed_us)),
            grants,
            clock,
            metrics,
            products: Arc::default(),
            seq: Arc::default(),
            tasks,
        }
    }

    /// The window in force now.
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.window_us.load(Atomic::Relaxed).max(0) as u64)
    }

    /// Shutdown: each queue decides what it holds, then its task ends. Acquisitions after
    /// this start a new queue (the server stopped accepting before this is called).
    pub fn close(&self) {
        self.products.lock().expect("fairness products lock").clear();
    }

    /// Learns `edge`'s delay from a request stamped at `stamp_us` and returns the window in
    /// force and the smallest one in force since the stamp (see [`WindowHistory`]).
    fn learn(&self, edge: &str, stamp_us: i64, now_us: i64) -> (i64, i64) {
        if let Fairness::Fixed(w) = self.mode {
            let w = w.as_micros() as i64;
            return (w, w);
        }
        let mut learned = self.learned.lock().expect("fairness delays lock");
        learned.delays.record(edge, now_us - stamp_us, now_us);
        if now_us.saturating_sub(self.computed_us.load(Atomic::Relaxed)) < RECOMPUTE_US {
            let window = self.window_us.load(Atomic::Relaxed);
            return (window, learned.history.min_since(stamp_us));
        }
        let window = learned.delays.window_us(now_us);
        let horizon = learned.delays.policy().max_us;
        learned.history.set(now_us, window, horizon);
        let least = learned.history.min_since(stamp_us);
        drop(learned);
        self.computed_us.store(now_us, Atomic::Relaxed);
        self.window_us.store(window, Atomic::Relaxed);
        self.metrics.fairness_window_ms.set(window as f64 / 1000.0);
        // Logged when it moved by a quarter or more since it was last logged.
        let logged = self.logged_us.load(Atomic::Relaxed);
        if (window - logged).abs() * 4 > logged.max(1_000)
            && self
                .logged_us
                .compare_exchange(logged, window, Atomic::Relaxed, Atomic::Relaxed)
                .is_ok()
        {
            tracing::info!(window_ms = window as f64 / 1000.0, "fairness window changed");
        }
        (window, least)
    }

    /// Decides one acquisition stamped by `edge`, after the window when there is one.
    pub async fn acquire(&self, mut args: AcquireArgs, edge: &str) -> ApiResult<Decided> {
        let now_us = self.clock.now_us();
        let age_us = now_us - args.arrival_us;
        let (window_us, least_us) = self.learn(edge, args.arrival_us, now_us);
        if let Some(log) = &mut args.log {
            log.window_us = window_us.max(0);
        }
        if window_us <= 0 {
            return self.grants.acquire(&args).await;
        }
        if age_us > least_us {
            args.late = true;
            self.metrics
                .fairness_late
                .get_or_create(&EdgeLabels { edge: self.metrics.edge_label(edge) })
                .inc();
        }
        let product = self.product(args.product_id);
        if !product.arrive_contended(window_us, now_us) {
            let decided = {
                // Counted until decided, or until the request is dropped (its client left).
                let _deciding = Deciding::count(&product.deciding);
                self.grants.acquire(&args).await
            };
            learn_remaining(&product.remaining, &decided);
            return self.forget_unknown(args.product_id, decided);
        }
        // Due when the stamp is W old by the origin's clock (measured now, waited in real
        // time); a stamp from an edge whose clock is ahead waits W, not longer.
        let wait = (window_us - age_us.max(0)).max(0) as u64;
        let (reply, answer) = oneshot::channel();
        let waiting_product = args.product_id;
        let waiting = Waiting {
            due: Instant::now() + Duration::from_micros(wait),
            seq: self.seq.fetch_add(1, Atomic::Relaxed),
            args,
            reply,
        };
        product.held.fetch_add(1, Atomic::Relaxed);
        self.metrics.fairness_held.inc();
        product.queue.send(waiting).map_err(|_| closed())?;
        let decided = answer.await.map_err(|_| closed())?;
        self.forget_unknown(waiting_product, decided)
    }

    /// A product Redis does not know leaves no state here (ids are the buyer's input).
    fn forget_unknown(&self, id: Uuid, decided: ApiResult<Decided>) -> ApiResult<Decided> {
        if matches!(decided, Ok(Decided { acquisition: Acquisition::Unknown, .. })) {
            let mut products = self.products.lock().expect("fairness products lock");
            if products.get(&id).is_some_and(|p| p.held.load(Atomic::Relaxed) == 0) {
                products.remove(&id);
            }
        }
        decided
    }

    fn product(&self, id: Uuid) -> Arc<Product> {
        let mut products = self.products.lock().expect("fairness products lock");
        products
            .entry(id)
            .or_insert_with(|| {
                let (queue, rx) = mpsc::unbounded_channel();
                let product = Product {
                    queue,
                    held: Arc::default(),
                    deciding: AtomicI64::default(),
                    remaining: Arc::new(AtomicI64::new(-1)),
                    arrivals: Mutex::default(),
                };
                let decider = Decider {
                    grants: self.grants.clone(),
                    held: product.held.clone(),
                    remaining: product.remaining.clone(),
                };
                self.tasks.spawn(decider.run(rx));
                Arc::new(product)
            })
            .clone()
    }
}

fn learn_remaining(remaining: &AtomicI64, decided: &ApiResult<Decided>) {
    match decided.as_ref().map(|d| &d.acquisition) {
        Ok(Acquisition::Granted { remaining: r, .. }) => remaining.store(*r, Atomic::Relaxed),
        Ok(Acquisition::SoldOut) => remaining.store(0, Atomic::Relaxed),
        _ => {}
    }
}

fn closed() -> ApiError {
    // Only while shutting down: the request is answered, and retried on another origin.
    ApiError::Unavailable {
        component: "origin",
        detail: "the fairness window's queue closed".into(),
    }
}

/// One product's queue: decides each due acquisition, earliest stamp first.
struct Decider {
    grants: Grants,
    held: Arc<AtomicUsize>,
    remaining: Arc<AtomicI64>,
}

impl Decider {
    /// Decides `due` (in stamp order): one after another while the units left could run
    /// out among them; otherwise all at once (every one of them finds a unit, so their
    /// order cannot matter, and Redis runs them back to back).
    async fn decide(&self, due: Vec<Waiting>) {
        let plenty = self.remaining.load(Atomic::Relaxed) > 2 * due.len() as i64;
        let decided: Vec<ApiResult<Decided>> = if plenty {
            futures::future::join_all(due.iter().map(|w| self.grants.acquire(&w.args))).await
        } else {
            let mut decided = Vec::with_capacity(due.len());
            for w in &due {
                let one = self.grants.acquire(&w.args).await;
                learn_remaining(&self.remaining, &one);
                decided.push(one);
            }
            decided
        };
        for (w, decided) in due.into_iter().zip(decided) {
            learn_remaining(&self.remaining, &decided);
            self.held.fetch_sub(1, Atomic::Relaxed);
            let _ = w.reply.send(decided);
        }
    }

    async fn run(self, mut incoming: mpsc::UnboundedReceiver<Waiting>) {
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
                    let due = take_due(&mut heap, &mut incoming, Instant::now());
                    self.decide(due).await;
                }
            }
        }
    }
}

/// The requests due at `now`, earliest stamp first: taken from the top of the heap while
/// the top is due, so none goes before an earlier-stamped one that is not. Everything sent
/// so far joins the heap first: a request stamped earlier than a due one may still be in the
/// channel (requests queue there while a batch is being decided), and it goes first.
fn take_due(
    heap: &mut BinaryHeap<Reverse<Waiting>>,
    incoming: &mut mpsc::UnboundedReceiver<Waiting>,
    now: Instant,
) -> Vec<Waiting> {
    while let Ok(w) = incoming.try_recv() {
        heap.push(Reverse(w));
    }
    let mut due = Vec::new();
    while heap.peek().is_some_and(|Reverse(w)| w.due <= now) {
        let Some(Reverse(w)) = heap.pop() else { break };
        due.push(w);
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(stamp_us: i64, due: Instant, seq: u64) -> Waiting {
        let args = AcquireArgs {
            product_id: Uuid::nil(),
            user_id: Uuid::new_v4(),
            slot_id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
            arrival_us: stamp_us,
            now_ms: 0,
            traceparent: String::new(),
            late: false,
            replay: None,
            pass_expires_ms: None,
            log: None,
        };
        Waiting { args, due, seq, reply: oneshot::channel().0 }
    }

    #[test]
    fn an_earlier_stamp_still_in_the_channel_goes_before_a_due_later_one() {
        let now = Instant::now();
        let mut heap = BinaryHeap::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Held and due: stamped at 2 ms.
        heap.push(Reverse(waiting(2_000, now, 0)));
        // Sent while a batch was being decided, not in the heap yet: stamped at 1 ms, due
        // later (it arrived later, within the window).
        tx.send(waiting(1_000, now + Duration::from_millis(5), 1)).unwrap();
        assert!(take_due(&mut heap, &mut rx, now).is_empty(), "the later stamp must wait");
        let later = now + Duration::from_millis(5);
        let order: Vec<i64> =
            take_due(&mut heap, &mut rx, later).iter().map(|w| w.args.arrival_us).collect();
        assert_eq!(order, [1_000, 2_000]);
    }

    #[test]
    fn arrivals_scale_the_busiest_recent_rate_to_the_window() {
        let mut a = Arrivals::default();
        // 1 per ms for 200 ms: 10 per 10 ms bucket, 20 in a 20 ms window.
        for i in 0..200 {
            a.count(i * 1_000);
        }
        assert_eq!(a.within(20_000, 200_000), 20);
        // A burst of 50 within one bucket sets the rate: 100 in the same window.
        for _ in 0..50 {
            a.count(205_000);
        }
        assert_eq!(a.within(20_000, 205_000), 100);
        // The burst is forgotten once its bucket is older than the buckets kept.
        a.count(205_000 + RATE_BUCKETS as i64 * RATE_BUCKET_US);
        assert_eq!(a.within(20_000, 205_000 + RATE_BUCKETS as i64 * RATE_BUCKET_US), 2);
        // After a quiet spell, nothing is expected.
        assert_eq!(a.within(20_000, 10_000_000), 0);
    }
}
