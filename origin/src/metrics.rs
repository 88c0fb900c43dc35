//! Prometheus metrics, one registry per application (tests run several apps per process).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

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
    /// The edge's id, as it signs requests.
    pub edge: String,
}

/// Where the time between an edge's stamp and the origin's decision went.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DelayLabels {
    pub edge: String,
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
        }
    }
}

impl Metrics {
    /// Records where one acquisition's stamp-to-decision time went (µs; `edge_us` as the
    /// edge reported it, if it did).
    pub fn stamp_delays(&self, edge: &str, edge_us: Option<i64>, origin_us: i64, decided_us: i64) {
        let legs = [("edge", edge_us), ("origin", Some(origin_us)), ("decided", Some(decided_us))];
        // One label set, its leg changed in place: one allocation per acquisition, not three.
        let mut labels = DelayLabels { edge: edge.to_owned(), leg: "edge" };
        for (leg, us) in legs {
            if let Some(us) = us {
                labels.leg = leg;
                self.stamp_delay.get_or_create(&labels).observe(us.max(0) as f64 / 1e6);
            }
        }
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
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    metrics
        .http_requests
        .get_or_create(&HttpLabels { method, route, status: response.status().as_u16() })
        .inc();
    response
}

pub async fn endpoint(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.render(),
    )
}
