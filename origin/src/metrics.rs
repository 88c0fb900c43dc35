//! Prometheus metrics, one registry per application (tests run several apps per process).
//!
//! Recording costs no allocation on the request path: label values are `&'static str`,
//! either constants or interned ([`Interner`]: routes, edge ids), and the interners are
//! bounded, so no input can grow a label set without limit. Names follow Prometheus'
//! conventions: the unit in the name (`_seconds`, `_units`), counters end in `_total`.
//!
//! Some series are read at scrape time rather than recorded ([`endpoint`]): the outbox lag
//! (the age of the oldest undelivered entry of any product), each product's remaining
//! units, the oversell invariant and whether each dependency answers. A scrape therefore
//! tells the truth even when the worker that would have recorded it is stuck.

use crate::state::AppState;
use crate::store::keys::ProductKeys;
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
use redis::FromRedisValue;
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

/// Latency buckets for requests and calls: 0.25 ms to about 4 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(latency_histogram)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptLabels {
    /// The script's file name (`acquire.lua`, `expire.lua`, …) under `lua/`.
    pub script: &'static str,
}

/// Latency of each Lua script call, process-wide: recorded where every call goes through
/// (`store::scripts::Call`), which knows no application; each application's registry
/// exposes it (in tests, several origins in one process share it).
pub static SCRIPT_DURATION: std::sync::LazyLock<Histograms<ScriptLabels>> =
    std::sync::LazyLock::new(histograms);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    /// `charge`, `refund` or `charge_status`.
    pub operation: &'static str,
    /// `ok`, `declined` (the processor refused the request), `error` (it failed or timed out).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// `postgres` or `kafka`.
    pub sink: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProductLabels {
    pub product: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    /// `redis`, `postgresql` or `kafka` (only when configured).
    pub dependency: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcquireLabels {
    pub outcome: &'static str,
}

/// The `event` values of `flashgate_payments_total`: requests (`created`, `replayed`,
/// `refused`) and settlements (the rest).
pub const PAYMENT_EVENTS: [&str; 7] =
    ["created", "replayed", "refused", "completed", "failed", "refund_required", "already_settled"];

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

/// The `outcome` values of `flashgate_replica_commit_duration_seconds`: `acked` (the replicas
/// asked for acknowledged the commit), `short` (fewer did within the timeout) and `failed`
/// (the commit did not run, or the master lacked a write it covers). A commit that is not
/// `acked` answers each of its grants 503.
pub const COMMIT_OUTCOMES: [&str; 3] = ["acked", "short", "failed"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    /// One of [`COMMIT_OUTCOMES`].
    pub outcome: &'static str,
}

/// The group commits of replica acknowledgements (`store::commit`): by outcome, how long
/// each took, and how many writes each covered. Unregistered until an application's
/// registry takes it; cheap to clone (the series are shared).
#[derive(Clone)]
pub struct ReplicaCommits {
    pub commits: Histograms<CommitLabels>,
    pub writes: Histogram,
}

impl Default for ReplicaCommits {
    fn default() -> Self {
        let commits = histograms::<CommitLabels>();
        // Every outcome exported from the start: an alert on a rate sees zero, not nothing.
        for outcome in COMMIT_OUTCOMES {
            drop(commits.get_or_create(&CommitLabels { outcome }));
        }
        Self { commits, writes: Histogram::new(exponential_buckets(1.0, 2.0, 12)) }
    }
}

impl ReplicaCommits {
    /// One commit of `writes` writes that took `seconds`, ending as `outcome`.
    pub fn observe(&self, outcome: &'static str, writes: usize, seconds: f64) {
        self.commits.get_or_create(&CommitLabels { outcome }).observe(seconds);
        self.writes.observe(writes as f64);
    }
}

/// How many products get their own `product_remaining_units` series (the first this many
/// by id); the rest are still counted by `products` and checked by the invariant gauge.
pub const MAX_PRODUCT_SERIES: usize = 1_000;

/// The origin's metrics: a handle, cloned per request for nothing but a reference count.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Registered>);

impl std::ops::Deref for Metrics {
    type Target = Registered;

    fn deref(&self) -> &Registered {
        &self.0
    }
}

/// Every series of the origin's registry.
pub struct Registered {
    registry: Registry,
    /// Requests by method, route and status, with their latency.
    pub http_requests: Histograms<HttpLabels>,
    pub acquisitions: Family<AcquireLabels, Counter>,
    /// Gateway calls by operation and outcome, with their latency.
    pub gateway: Histograms<GatewayLabels>,
    /// Outbox events the relay delivered, by sink.
    pub relayed: Family<SinkLabels, Counter>,
    /// Events the persister applied to PostgreSQL (each once).
    pub persisted: Counter,
    /// Age of the oldest event of the latest batch the persister applied, when it applied it.
    pub persister_lag_seconds: Gauge<f64, AtomicU64>,
    /// When the persister last applied a batch (Unix seconds).
    pub persister_last_applied: Gauge<f64, AtomicU64>,
    /// Slots reclaimed by the expiration worker (lazy expiries are in the events).
    pub expired: Counter,
    /// `slot-expiring-soon` reminders emitted.
    pub reminded: Counter,
    /// Buyers admitted from waiting rooms (given a queue pass).
    pub queue_admitted: Counter,
    /// Read at scrape time ([`endpoint`]).
    pub outbox_lag_seconds: Gauge<f64, AtomicU64>,
    pub remaining: Family<ProductLabels, Gauge>,
    pub products: Gauge,
    /// Active (unpaid, unexpired) slots of every product.
    pub active_holds: Gauge,
    pub oversold_products: Gauge,
    pub dependency_up: Family<DependencyLabels, Gauge>,
    pub payments: Family<PaymentLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    /// The fairness window in force (`crate::store::fairness`).
    pub fairness_window_ms: Gauge<f64, AtomicU64>,
    /// Acquisitions held for the fairness window.
    pub fairness_held: Counter,
    /// Acquisitions whose stamp was older than the window on arrival, per edge.
    pub fairness_late: Family<EdgeLabels, Counter>,
    /// Stamp-to-decision delays of acquisitions by edge and leg.
    pub stamp_delay: Histograms<DelayLabels>,
    /// Group commits of replica acknowledgements (given to the inventory at start-up).
    pub replica_commits: ReplicaCommits,
    routes: Arc<Interner>,
    edges: Arc<Interner>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Registered {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flashgate");
        let http_requests = histograms::<HttpLabels>();
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests answered by the origin (except /metrics) and how long they took",
            http_requests.clone(),
        );
        registry.register(
            "redis_script_duration_seconds",
            "Lua script calls (EVALSHA) and how long each took, by script",
            SCRIPT_DURATION.clone(),
        );
        let gateway = histograms::<GatewayLabels>();
        registry.register(
            "payment_gateway_duration_seconds",
            "Payment gateway calls by operation and outcome, and how long each took",
            gateway.clone(),
        );
        let relayed = Family::<SinkLabels, Counter>::default();
        registry.register(
            "outbox_relayed",
            "Outbox events delivered by the relay",
            relayed.clone(),
        );
        let persisted = Counter::default();
        registry.register(
            "persister_applied",
            "Events applied to PostgreSQL by the persister",
            persisted.clone(),
        );
        let persister_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "persister_lag_seconds",
            "Age of the oldest event of the latest applied batch, when it was applied",
            persister_lag_seconds.clone(),
        );
        let persister_last_applied = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "persister_last_applied_timestamp_seconds",
            "When the persister last applied a batch (Unix time)",
            persister_last_applied.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "slots_expired",
            "Unpaid slots reclaimed by the expiration worker",
            expired.clone(),
        );
        let reminded = Counter::default();
        registry.register("slot_reminders", "Expiring-soon reminders emitted", reminded.clone());
        let queue_admitted = Counter::default();
        registry.register(
            "queue_admitted",
            "Buyers admitted from waiting rooms (given a queue pass)",
            queue_admitted.clone(),
        );
        let outbox_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "outbox_lag_seconds",
            "Age of the oldest undelivered outbox entry of any product (0: none), read at scrape",
            outbox_lag_seconds.clone(),
        );
        let remaining = Family::<ProductLabels, Gauge>::default();
        registry.register(
            "product_remaining_units",
            "Units a product has left to grant, read from Redis at scrape",
            remaining.clone(),
        );
        let products = Gauge::default();
        registry.register("products", "Products with sale state in Redis", products.clone());
        let active_holds = Gauge::default();
        registry.register(
            "active_holds",
            "Slots held and not yet paid or expired, every product, read at scrape",
            active_holds.clone(),
        );
        let oversold_products = Gauge::default();
        registry.register(
            "invariant_oversold_products",
            "Products holding more live slots than units, or fewer than 0 left (must stay 0)",
            oversold_products.clone(),
        );
        let dependency_up = Family::<DependencyLabels, Gauge>::default();
        registry.register(
            "dependency_up",
            "Whether a dependency answered the scrape's probe (1) or not (0)",
            dependency_up.clone(),
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
        let stamp_delay = histograms::<DelayLabels>();
        registry.register(
            "stamp_delay_seconds",
            "Time from an acquisition's edge stamp to the edge forwarding it (leg=edge), to \
             the origin receiving it (leg=origin) and to its decision (leg=decided)",
            stamp_delay.clone(),
        );
        let replica_commits = ReplicaCommits::default();
        registry.register(
            "replica_commit_duration_seconds",
            "Group commits of grants to the Redis replicas (WAIT), by outcome, and how long \
             each took; a commit not acked answers each of its grants 503",
            replica_commits.commits.clone(),
        );
        registry.register(
            "replica_commit_writes",
            "How many writes (grants, relay batches) each group commit covered",
            replica_commits.writes.clone(),
        );
        // Every known label value starts at 0, so a rate over a series that has not moved
        // yet reads 0 rather than nothing, and dashboards and alerts find every series.
        for outcome in ["granted", "holding", "sold_out", "not_on_sale", "ended", "unknown"] {
            drop(acquisitions.get_or_create(&AcquireLabels { outcome }));
        }
        for event in PAYMENT_EVENTS {
            drop(payments.get_or_create(&PaymentLabels { event }));
        }
        for source in ["relay", "kafka"] {
            drop(dead_letters.get_or_create(&DeadLetterLabels { source }));
        }
        for sink in ["postgres", "kafka"] {
            drop(relayed.get_or_create(&SinkLabels { sink }));
        }
        for operation in ["charge", "refund", "charge_status"] {
            for outcome in ["ok", "declined", "error"] {
                drop(gateway.get_or_create(&GatewayLabels { operation, outcome }));
            }
        }
        Self {
            registry,
            http_requests,
            acquisitions,
            gateway,
            relayed,
            persisted,
            persister_lag_seconds,
            persister_last_applied,
            expired,
            reminded,
            queue_admitted,
            outbox_lag_seconds,
            remaining,
            products,
            active_holds,
            oversold_products,
            dependency_up,
            payments,
            dead_letters,
            fairness_window_ms,
            fairness_held,
            fairness_late,
            stamp_delay,
            replica_commits,
            routes: Arc::new(Interner::new(MAX_ROUTES)),
            edges: Arc::new(Interner::new(MAX_EDGES)),
        }
    }
}

impl Registered {
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

    /// Records a batch the persister applied: how many, and how old its oldest event was.
    pub fn persisted_batch(&self, applied: u64, oldest_at_ms: Option<i64>, now_ms: i64) {
        self.persisted.inc_by(applied);
        if let Some(at) = oldest_at_ms {
            self.persister_lag_seconds.set((now_ms - at).max(0) as f64 / 1000.0);
        }
        self.persister_last_applied.set(now_ms as f64 / 1000.0);
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

/// Records every request's latency by method, matched route and status.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| metrics.routes.get(p.as_str()));
    let response = next.run(req).await;
    metrics
        .http_requests
        .get_or_create(&HttpLabels { method, route, status: response.status().as_u16() })
        .observe(started.elapsed().as_secs_f64());
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

/// Who may read `/metrics`, and how often a scrape reads Redis (security review, finding 4:
/// it was open on the port the payment processor reaches, listing every product's stock,
/// each scrape a Redis pipeline over every product).
pub struct ScrapeAccess {
    /// SHA-256 of the token, compared whole (no early exit on the first differing byte).
    token: Option<[u8; 32]>,
    last_read: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl ScrapeAccess {
    /// Redis is read for the scraped series at most this often; scrapes in between answer
    /// the last values.
    pub const READ_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn new(token: Option<crate::config::Secret>) -> Self {
        use sha2::Digest;
        let token = token.map(|t| sha2::Sha256::digest(t.expose()).into());
        Self { token, last_read: tokio::sync::Mutex::new(None) }
    }

    /// Whether a scrape from `peer` with `authorization` (the header's value) is answered.
    pub fn allows(&self, peer: Option<std::net::IpAddr>, authorization: Option<&str>) -> bool {
        use sha2::Digest;
        match &self.token {
            Some(token) => {
                authorization.and_then(|h| h.strip_prefix("Bearer ")).is_some_and(|given| {
                    let given: [u8; 32] = sha2::Sha256::digest(given.trim().as_bytes()).into();
                    given.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
                })
            }
            None => peer.is_some_and(is_private),
        }
    }
}

/// Loopback, RFC 1918, shared (100.64/10), link-local and unique-local addresses.
fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(std::net::IpAddr::V4(v4)))
        }
    }
}

/// `GET /metrics`: reads the scrape-time series, then renders the registry.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text"),
        (status = 403, description = "Not from the private network and without the metrics token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn endpoint(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let ip = peer.map(|p| p.0.0.ip());
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !state.scrapes.allows(ip, authorization) {
        return crate::error::ApiError::Forbidden(
            "/metrics answers the private network, or a scrape with the metrics token".into(),
        )
        .into_response();
    }
    let metrics = &state.metrics;
    let health = crate::http::health::probe(&state).await;
    for (dependency, status) in health.statuses() {
        if status != "not-configured" {
            let up = i64::from(status == "up");
            metrics.dependency_up.get_or_create(&DependencyLabels { dependency }).set(up);
        }
    }
    // One read of Redis at a time, at most every READ_EVERY; other scrapes answer the last.
    if let Ok(mut last) = state.scrapes.last_read.try_lock()
        && last.is_none_or(|at| at.elapsed() >= ScrapeAccess::READ_EVERY)
    {
        match tokio::time::timeout(SCRAPE_TIMEOUT, scrape_redis(&state)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "scrape: Redis did not answer"),
            Err(_) => tracing::debug!("scrape: Redis did not answer in time"),
        }
        *last = Some(std::time::Instant::now());
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.render(),
    )
        .into_response()
}

const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The series read from Redis at scrape time, for every product in one pipeline (one per
/// shard on a cluster): its
/// remaining units, its live slots (the oversell invariant) and its oldest outbox entry.
async fn scrape_redis(state: &AppState) -> redis::RedisResult<()> {
    let metrics = &state.metrics;
    let mut products = state.inventory.products().await?;
    products.sort_unstable();
    let mut reads = Vec::with_capacity(products.len() * 4);
    for p in &products {
        let keys = ProductKeys::new(*p);
        let mut fields = redis::cmd("HMGET");
        fields.arg(keys.product()).arg("remaining").arg("total");
        let mut holders = redis::cmd("HLEN");
        holders.arg(keys.holders());
        let mut active = redis::cmd("ZCARD");
        active.arg(keys.expiry());
        let mut oldest = redis::cmd("XRANGE");
        oldest.arg(keys.outbox()).arg("-").arg("+").arg("COUNT").arg(1);
        reads.extend([fields, holders, active, oldest]);
    }
    let replies: Vec<redis::Value> = state.inventory.connection().query_all(reads).await?;
    let now_ms = state.clock.now_ms();
    let (mut oversold, mut holds, mut oldest_ms) = (0, 0, None::<i64>);
    metrics.remaining.clear();
    for (i, (product, reply)) in products.iter().zip(replies.chunks(4)).enumerate() {
        let [fields, holders, active, outbox] = reply else { continue };
        holds += i64::from_redis_value_ref(active).unwrap_or(0);
        let (remaining, total): (Option<i64>, Option<i64>) =
            FromRedisValue::from_redis_value_ref(fields).unwrap_or((None, None));
        let holders: i64 = FromRedisValue::from_redis_value_ref(holders).unwrap_or(0);
        if remaining.is_some_and(|r| r < 0) || total.is_some_and(|t| holders > t) {
            oversold += 1;
        }
        if let (Some(remaining), true) = (remaining, i < MAX_PRODUCT_SERIES) {
            let labels = ProductLabels { product: product.to_string() };
            metrics.remaining.get_or_create(&labels).set(remaining);
        }
        let first: redis::streams::StreamRangeReply =
            FromRedisValue::from_redis_value_ref(outbox).unwrap_or_default();
        if let Some(ms) =
            first.ids.first().and_then(|e| e.id.split('-').next()?.parse::<i64>().ok())
        {
            oldest_ms = Some(oldest_ms.map_or(ms, |o| o.min(ms)));
        }
    }
    metrics.products.set(products.len() as i64);
    metrics.oversold_products.set(oversold);
    metrics.active_holds.set(holds);
    let lag_ms = oldest_ms.map_or(0, |ms| (now_ms - ms).max(0));
    metrics.outbox_lag_seconds.set(lag_ms as f64 / 1000.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_answer_loopback_and_the_private_network_or_the_token() {
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        let open = ScrapeAccess::new(None);
        for private in ["127.0.0.1", "10.1.2.3", "172.20.0.5", "192.168.1.1", "fd00::1", "::1"] {
            assert!(open.allows(ip(private), None), "{private}");
        }
        for public in ["203.0.113.7", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!open.allows(ip(public), None), "{public}");
        }
        assert!(!open.allows(None, None));
        let token = ScrapeAccess::new(Some(crate::config::Secret::new(b"s3cret".to_vec())));
        assert!(!token.allows(ip("127.0.0.1"), None), "with a token, every scrape shows it");
        assert!(!token.allows(ip("10.1.2.3"), None));
        assert!(token.allows(ip("203.0.113.7"), Some("Bearer s3cret")));
        assert!(!token.allows(ip("203.0.113.7"), Some("Bearer s3cre")));
        assert!(!token.allows(ip("203.0.113.7"), Some("s3cret")));
    }

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
