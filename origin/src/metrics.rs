//! Prometheus metrics, one registry per application (tests run several apps per process).
//!
//! Recording costs no allocation on the request path: label values are `&'static str`,
//! either constants or interned ([`Interner`]: routes, edge ids), and the interners are
//! bounded, so no input can grow a label set without limit.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// A standard method's name, or `OTHER`.
    pub method: &'static str,
    /// The matched route's template, or `unmatched`.
    pub route: &'static str,
    pub status: u16,
}

/// Label values seen at run time (routes, edge ids), each leaked once and then shared: a
/// lookup allocates nothing. At most `cap` values; any further one is counted as
/// [`Interner::OVERFLOW`], so the memory it holds has a bound.
#[derive(Debug)]
pub struct Interner {
    values: RwLock<HashSet<&'static str>>,
    cap: usize,
}

impl Interner {
    pub const OVERFLOW: &'static str = "other";

    pub fn new(cap: usize) -> Self {
        Self { values: RwLock::default(), cap }
    }

    pub fn get(&self, value: &str) -> &'static str {
        let read = self.values.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = read.get(value) {
            return known;
        }
        drop(read);
        let mut write = self.values.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = write.get(value) {
            return known;
        }
        if write.len() >= self.cap {
            return Self::OVERFLOW;
        }
        let leaked: &'static str = Box::leak(value.into());
        write.insert(leaked);
        leaked
    }
}

/// How many distinct routes and edge ids get their own label value.
const MAX_ROUTES: usize = 256;
const MAX_EDGES: usize = 1024;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcquireLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PaymentLabels {
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// `relay` (straight to PostgreSQL) or `kafka` (the persister).
    pub source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EdgeLabels {
    /// The edge's id, as it signs requests ([`Metrics::edge_label`]).
    pub edge: &'static str,
}

/// Where the time between an edge's stamp and the origin's decision went.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DelayLabels {
    pub edge: &'static str,
    /// `edge` (stamp → forwarded, as the edge reports it), `origin` (stamp → the origin's
    /// handler) or `decided` (stamp → decision, the fairness hold included).
    pub leg: &'static str,
}

type DelayHistograms = Family<DelayLabels, Histogram, fn() -> Histogram>;

fn delay_histogram() -> Histogram {
    // 0.25 ms to about 4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub acquisitions: Family<AcquireLabels, Counter>,
    pub payments: Family<PaymentLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    /// The fairness window in force (`crate::store::fairness`).
    pub fairness_window_ms: Gauge<f64, AtomicU64>,
    /// Acquisitions held for the fairness window.
    pub fairness_held: Counter,
    /// Acquisitions whose stamp was older than the window on arrival, per edge.
    pub fairness_late: Family<EdgeLabels, Counter>,
    /// Stamp-to-decision delays of acquisitions by edge and leg.
    pub stamp_delay: DelayHistograms,
    routes: Arc<Interner>,
    edges: Arc<Interner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flashgate");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered by the origin (except /metrics)",
            http_requests.clone(),
        );
        let acquisitions = Family::<AcquireLabels, Counter>::default();
        registry.register("acquisitions", "Acquisition decisions by outcome", acquisitions.clone());
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Events set aside as poison after bounded tries (see the dead_letters table)",
            dead_letters.clone(),
        );
        let payments = Family::<PaymentLabels, Counter>::default();
        registry.register(
            "payments",
            "Payment requests and settlements by what happened",
            payments.clone(),
        );
        let fairness_window_ms = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "fairness_window_ms",
            "How long acquisitions are held so that they are decided in edge-stamp order",
            fairness_window_ms.clone(),
        );
        let fairness_held = Counter::default();
        registry.register(
            "fairness_held",
            "Acquisitions held for the fairness window (a product nobody could overtake on is not)",
            fairness_held.clone(),
        );
        let fairness_late = Family::<EdgeLabels, Counter>::default();
        registry.register(
            "fairness_late",
            "Acquisitions whose edge stamp was older than the fairness window on arrival",
            fairness_late.clone(),
        );
        let stamp_delay = DelayHistograms::new_with_constructor(delay_histogram);
        registry.register(
            "stamp_delay_seconds",
            "Time from an acquisition's edge stamp to the edge forwarding it (leg=edge), to \
             the origin receiving it (leg=origin) and to its decision (leg=decided)",
            stamp_delay.clone(),
        );
        Self {
            registry: Arc::new(registry),
            http_requests,
            acquisitions,
            payments,
            dead_letters,
            fairness_window_ms,
            fairness_held,
            fairness_late,
            stamp_delay,
            routes: Arc::new(Interner::new(MAX_ROUTES)),
            edges: Arc::new(Interner::new(MAX_EDGES)),
        }
    }
}

impl Metrics {
    /// Records where one acquisition's stamp-to-decision time went (µs; `edge_us` as the
    /// edge reported it, if it did).
    pub fn stamp_delays(&self, edge: &str, edge_us: Option<i64>, origin_us: i64, decided_us: i64) {
        let legs = [("edge", edge_us), ("origin", Some(origin_us)), ("decided", Some(decided_us))];
        let edge = self.edge_label(edge);
        for (leg, us) in legs {
            if let Some(us) = us {
                let labels = DelayLabels { edge, leg };
                self.stamp_delay.get_or_create(&labels).observe(us.max(0) as f64 / 1e6);
            }
        }
    }

    /// An edge id as a label value (edge ids come from signed requests: only edges that hold
    /// the secret name one; past [`MAX_EDGES`] they share `other`).
    pub fn edge_label(&self, edge: &str) -> &'static str {
        self.edges.get(edge)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts every request by method, matched route and status.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| metrics.routes.get(p.as_str()));
    let response = next.run(req).await;
    metrics
        .http_requests
        .get_or_create(&HttpLabels { method, route, status: response.status().as_u16() })
        .inc();
    response
}

/// A standard method's name; any other method (a client may send anything) is `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

pub async fn endpoint(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_values_are_shared_and_bounded() {
        let interner = Interner::new(2);
        let a = interner.get("/slots/acquire");
        assert!(std::ptr::eq(a, interner.get(&String::from("/slots/acquire"))));
        assert_eq!(interner.get("/payments"), "/payments");
        assert_eq!(interner.get("/third"), Interner::OVERFLOW);
        assert_eq!(interner.get("/slots/acquire"), "/slots/acquire");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
