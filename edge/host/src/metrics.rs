//! The host's Prometheus metrics, served with `/health` on the admin listener
//! ([`crate::server::EdgeHost::admin_addr`]), never on the buyers' port.
//!
//! - `flashgate_edge_request_duration_seconds{component,status,decision}`: every answer and
//!   how long it took; `decision` is what the component decided (`forwarded`, `sold-out`
//!   from the availability hint, `rate-limited`, …, as [`HEADER_EDGE_DECISION`] said) or,
//!   for an answer the host made itself (no route, at capacity, timed out), `host`;
//! - `flashgate_edge_instantiations_total`, `flashgate_edge_instance_reuses_total`
//!   (requests served by an instance that had served before) and
//!   `flashgate_edge_instance_wait_seconds` (how long a request waited for an instance, a
//!   new one's instantiation included).
//!
//! Label values are `&'static str` from fixed sets (component ids come from the manifest),
//! so no request can grow a label set.
//!
//! [`HEADER_EDGE_DECISION`]: flashgate_core::routes::HEADER_EDGE_DECISION

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub component: &'static str,
    pub status: u16,
    pub decision: &'static str,
}

/// 50 µs to about 1.6 s: the edge answers most requests in well under a millisecond.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The host's counters and histograms (they keep counting while it serves).
pub struct HostStats {
    registry: Registry,
    pub requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub instantiations: Counter,
    pub reuses: Counter,
    pub instance_wait: Histogram,
}

impl std::fmt::Debug for HostStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostStats").field("instantiations", &self.instantiations.get()).finish()
    }
}

impl Default for HostStats {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flashgate_edge");
        let requests = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Requests answered by the edge host, by component, status and the edge's decision",
            requests.clone(),
        );
        let instantiations = Counter::default();
        registry.register("instantiations", "Component instances created", instantiations.clone());
        let reuses = Counter::default();
        registry.register(
            "instance_reuses",
            "Requests served by an instance that had served a request before",
            reuses.clone(),
        );
        let instance_wait = latency_histogram();
        registry.register(
            "instance_wait_seconds",
            "How long a request waited for an instance (a new one's instantiation included)",
            instance_wait.clone(),
        );
        Self { registry, requests, instantiations, reuses, instance_wait }
    }
}

impl HostStats {
    /// Component instances created so far (one per request unless instances are reused).
    pub fn instantiated(&self) -> u64 {
        self.instantiations.get()
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
