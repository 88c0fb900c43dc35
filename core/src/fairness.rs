//! The adaptive fairness window (invariant 6): how long the origin holds an acquisition so
//! that acquisitions are decided in the order the edges stamped them.
//!
//! A buyer stamped earlier loses to one stamped later only when its request took longer from
//! its edge to the origin than the other's by more than the time the origin waits before
//! deciding. So the origin measures that delay (the stamp's age when the request arrives),
//! per edge, and waits for a high quantile of it: [`DelayTracker`] keeps, for every edge, a
//! log-scale histogram of the delays of the last one to two periods, and the window is the
//! largest of the edges' quantiles, bounded. A slow edge with few requests counts as much as
//! a fast one with many; an edge that stops sending is forgotten after two periods.
//!
//! Pure: the caller passes the time in, so it is unit-tested natively.

use std::collections::{HashMap, VecDeque};

/// Histogram buckets: bucket `i` holds delays up to `FIRST_BOUND_US × RATIO^i` (0.25 ms,
/// 0.31 ms, … about 9 s); one more holds everything beyond.
const BUCKETS: usize = 48;
const FIRST_BOUND_US: f64 = 250.0;
const RATIO: f64 = 1.25;
/// How many edges are tracked at most (edges are the operator's, so a handful).
const MAX_EDGES: usize = 256;

/// How the tracker turns delays into a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowPolicy {
    /// The quantile of each edge's delays the window covers (0.999: all but one in 1,000).
    pub quantile: f64,
    /// The longest window, whatever the delays (a hold is latency every buyer pays).
    pub max_us: i64,
    /// Delays are remembered for one to two periods.
    pub period_us: i64,
    /// An edge counts once it sent this many requests in that time (one stray request does
    /// not set the window).
    pub min_samples: u64,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        Self { quantile: 0.999, max_us: 250_000, period_us: 5_000_000, min_samples: 20 }
    }
}

#[derive(Debug, Clone)]
struct Histogram {
    counts: [u64; BUCKETS + 1],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: [0; BUCKETS + 1], total: 0 }
    }
}

fn bucket(delay_us: i64) -> usize {
    if delay_us as f64 <= FIRST_BOUND_US {
        return 0;
    }
    let i = ((delay_us as f64 / FIRST_BOUND_US).ln() / RATIO.ln()).ceil() as usize;
    i.min(BUCKETS)
}

/// The upper bound of bucket `i` (what a quantile falling in it reads as: never less).
fn bound_us(i: usize) -> i64 {
    if i >= BUCKETS { i64::MAX } else { (FIRST_BOUND_US * RATIO.powi(i as i32)).ceil() as i64 }
}

#[derive(Debug, Clone, Default)]
struct EdgeDelays {
    current: Histogram,
    previous: Histogram,
    started_us: i64,
}

impl EdgeDelays {
    fn rotate(&mut self, now_us: i64, period_us: i64) {
        let elapsed = now_us - self.started_us;
        if elapsed >= 2 * period_us {
            self.previous = Histogram::default();
            self.current = Histogram::default();
            self.started_us = now_us;
        } else if elapsed >= period_us {
            self.previous = std::mem::take(&mut self.current);
            self.started_us = now_us;
        }
    }

    fn total(&self) -> u64 {
        self.current.total + self.previous.total
    }

    fn quantile_us(&self, q: f64) -> i64 {
        let total = self.total();
        // The rank of the quantile, counted from the top: the bucket holding it bounds it.
        let beyond = ((1.0 - q) * total as f64).floor() as u64;
        let mut seen = 0;
        for i in (0..=BUCKETS).rev() {
            seen += self.current.counts[i] + self.previous.counts[i];
            if seen > beyond {
                return bound_us(i);
            }
        }
        0
    }
}

/// Every edge's recent stamp-to-arrival delays, and the window they call for.
#[derive(Debug, Clone)]
pub struct DelayTracker {
    policy: WindowPolicy,
    edges: HashMap<String, EdgeDelays>,
}

impl DelayTracker {
    pub fn new(policy: WindowPolicy) -> Self {
        Self { policy, edges: HashMap::new() }
    }

    pub fn policy(&self) -> WindowPolicy {
        self.policy
    }

    /// Records that a request stamped by `edge` arrived `delay_us` after its stamp.
    pub fn record(&mut self, edge: &str, delay_us: i64, now_us: i64) {
        let period = self.policy.period_us;
        if !self.edges.contains_key(edge) {
            if self.edges.len() >= MAX_EDGES {
                self.forget_idle(now_us);
                if self.edges.len() >= MAX_EDGES {
                    return;
                }
            }
            let fresh = EdgeDelays { started_us: now_us, ..EdgeDelays::default() };
            self.edges.insert(edge.to_owned(), fresh);
        }
        let Some(delays) = self.edges.get_mut(edge) else { return };
        delays.rotate(now_us, period);
        let h = &mut delays.current;
        h.counts[bucket(delay_us.max(0))] += 1;
        h.total += 1;
    }

    /// The window in force at `now_us`: the largest quantile among the edges heard from
    /// often enough lately, at most `max_us`. While no edge has been heard from often enough
    /// to know its delays (a drop's first burst, or the first after a quiet spell), the
    /// window is `max_us`: a delay nobody measured yet is taken to be the longest allowed,
    /// so the first requests of a storm are decided in stamp order too. Once one edge is
    /// known, the few requests of edges not known yet do not hold everyone for `max_us`.
    pub fn window_us(&mut self, now_us: i64) -> i64 {
        let WindowPolicy { quantile, max_us, period_us, min_samples } = self.policy;
        let mut window = None;
        for delays in self.edges.values_mut() {
            delays.rotate(now_us, period_us);
            if delays.total() >= min_samples {
                window = Some(window.unwrap_or(0).max(delays.quantile_us(quantile)));
            }
        }
        window.unwrap_or(max_us).clamp(0, max_us.max(0))
    }

    /// Drops the edges not heard from for two periods.
    fn forget_idle(&mut self, now_us: i64) {
        let period = self.policy.period_us;
        self.edges.retain(|_, d| {
            d.rotate(now_us, period);
            d.total() > 0
        });
    }

    /// How many edges are tracked.
    pub fn edges(&self) -> usize {
        self.edges.len()
    }
}

/// The windows in force lately. A request is late when its stamp's age on arrival exceeds
/// the smallest window in force at any time since its stamp: a request stamped after it may
/// have been decided under that window before it arrived. Judged against the window in
/// force on arrival alone, a window that grew meanwhile would count such a loss as the
/// window's fault rather than the network's.
#[derive(Debug, Clone, Default)]
pub struct WindowHistory {
    /// `(from_us, window_us)`, oldest first; each in force until the next one's `from_us`.
    changes: VecDeque<(i64, i64)>,
}

impl WindowHistory {
    /// A history that starts with `window_us` in force.
    pub fn new(window_us: i64) -> Self {
        Self { changes: VecDeque::from([(i64::MIN, window_us)]) }
    }

    /// `window_us` is in force from `now_us`. Changes older than `horizon_us` are forgotten
    /// (a request older than the longest window is late whatever the window was).
    pub fn set(&mut self, now_us: i64, window_us: i64, horizon_us: i64) {
        if self.changes.back().is_none_or(|&(_, w)| w != window_us) {
            self.changes.push_back((now_us, window_us));
        }
        while self.changes.len() > 1 && self.changes[1].0 <= now_us.saturating_sub(horizon_us) {
            self.changes.pop_front();
        }
    }

    /// The smallest window in force at any time from `since_us` on (0 with no history).
    pub fn min_since(&self, since_us: i64) -> i64 {
        let mut min = None::<i64>;
        for (i, &(_, window)) in self.changes.iter().enumerate() {
            let until = self.changes.get(i + 1).map_or(i64::MAX, |&(from, _)| from);
            if until > since_us {
                min = Some(min.map_or(window, |m| m.min(window)));
            }
        }
        min.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    fn tracker() -> DelayTracker {
        DelayTracker::new(WindowPolicy { min_samples: 10, ..WindowPolicy::default() })
    }

    #[test]
    fn buckets_bound_their_delays_from_above_within_a_quarter() {
        for d in [0, 1, 249, 250, 251, 1_000, 7_777, 50_000, 250_000, 3_000_000] {
            let b = bound_us(bucket(d));
            assert!(b >= d && (b as f64) <= (d.max(250) as f64) * RATIO + 1.0, "{d} -> {b}");
        }
        assert_eq!(bucket(i64::MAX / 2), BUCKETS);
    }

    #[test]
    fn the_window_covers_the_slowest_edges_high_quantile() {
        let mut t = tracker();
        for i in 0..1_000 {
            t.record("fast", MS + i % 3 * 100, 0);
        }
        assert!((MS..=2 * MS).contains(&t.window_us(0)), "{}", t.window_us(0));
        // A slow edge with far fewer requests still sets the window.
        for _ in 0..20 {
            t.record("slow", 40 * MS, 0);
        }
        let w = t.window_us(0);
        assert!((40 * MS..=50 * MS).contains(&w), "{w}");
    }

    #[test]
    fn a_few_stragglers_beyond_the_quantile_do_not_set_it() {
        let mut t = tracker();
        for _ in 0..10_000 {
            t.record("e", 5 * MS, 0);
        }
        for _ in 0..5 {
            t.record("e", 200 * MS, 0);
        }
        let w = t.window_us(0);
        assert!((5 * MS..=7 * MS).contains(&w), "{w}");
    }

    #[test]
    fn it_grows_with_the_delay_and_shrinks_back_when_the_delay_goes() {
        let policy = WindowPolicy { period_us: 1_000 * MS, min_samples: 10, ..Default::default() };
        let mut t = DelayTracker::new(policy);
        let mut now = 0;
        for _ in 0..100 {
            t.record("e", 2 * MS, now);
        }
        let calm = t.window_us(now);
        for _ in 0..100 {
            now += 5 * MS;
            t.record("e", 60 * MS, now);
        }
        let stormy = t.window_us(now);
        assert!(stormy >= 60 * MS && stormy > calm, "{calm} then {stormy}");
        // The storm passes: within two periods only the calm delays are left.
        for _ in 0..400 {
            now += 5 * MS;
            t.record("e", 2 * MS, now);
        }
        let after = t.window_us(now);
        assert!(after <= 3 * MS, "{after}");
    }

    #[test]
    fn bounded_by_the_maximum_and_the_maximum_until_an_edge_is_heard_from_enough() {
        let mut t = tracker();
        assert_eq!(t.window_us(0), 250 * MS, "no edge known yet: the longest window");
        for _ in 0..9 {
            t.record("e", 30 * MS, 0);
        }
        assert_eq!(t.window_us(0), 250 * MS, "nine samples are not enough to know");
        for _ in 0..11 {
            t.record("e", 30 * MS, 0);
        }
        assert!(t.window_us(0) < 250 * MS, "twenty are");
        t.record("quiet edge", 200 * MS, 0);
        assert!(t.window_us(0) < 250 * MS, "a few requests of an edge not known yet hold nobody");
        for _ in 0..100 {
            t.record("e", 900 * MS, 0);
        }
        assert_eq!(t.window_us(0), 250 * MS);
        t.record("new edge", MS, 0);
        assert_eq!(t.window_us(0), 250 * MS, "a new edge does not shrink a known one's window");
    }

    #[test]
    fn edges_not_heard_from_are_forgotten_and_the_count_is_bounded() {
        let policy = WindowPolicy { period_us: 10 * MS, min_samples: 1, ..Default::default() };
        let mut t = DelayTracker::new(policy);
        for e in 0..MAX_EDGES {
            t.record(&format!("e{e}"), MS, 0);
        }
        t.record("one-too-many", MS, 0);
        assert_eq!(t.edges(), MAX_EDGES);
        // Two periods later the old edges are idle and make room.
        t.record("newcomer", 70 * MS, 25 * MS);
        assert_eq!(t.edges(), 1);
        assert!(t.window_us(25 * MS) >= 70 * MS);
    }

    #[test]
    fn lateness_is_judged_against_the_smallest_window_since_the_stamp() {
        let mut h = WindowHistory::new(0);
        h.set(100 * MS, 20 * MS, 250 * MS);
        h.set(200 * MS, 60 * MS, 250 * MS);
        // Stamped while 20 ms was in force: 20 ms is what a later stamp may have been
        // decided under, though 60 ms is in force now.
        assert_eq!(h.min_since(150 * MS), 20 * MS);
        assert_eq!(h.min_since(210 * MS), 60 * MS);
        // Before the first change, the window was 0: anything is late.
        assert_eq!(h.min_since(50 * MS), 0);
        // A shrink counts from when it happened.
        h.set(300 * MS, 10 * MS, 250 * MS);
        assert_eq!(h.min_since(210 * MS), 10 * MS);
        // Setting the same window again records nothing new; old changes are forgotten.
        h.set(600 * MS, 10 * MS, 250 * MS);
        assert_eq!(h.changes.len(), 1);
        assert_eq!(h.min_since(0), 10 * MS);
    }
}
