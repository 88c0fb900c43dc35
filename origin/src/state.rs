//! Application state shared by every handler.

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::outbox::kafka::EventProducer;
use crate::payments::Payments;
use crate::store::inventory::Inventory;
use axum::extract::FromRef;
use flashgate_core::signing::EdgeSecret;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// The origin's shared state. Handlers and middleware clone it on every request (axum's
/// `State`), so it is one `Arc`: cloning it is a single reference-count increment, however
/// many parts it holds.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub db: PgPool,
    pub inventory: Inventory,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// The sampled business events of acquisitions ([`crate::business`]).
    pub acquisition_log: crate::business::AcquisitionLog,
    pub edge: EdgeTrust,
    pub admin_tokens: Arc<crate::identity::AdminTokens>,
    /// Products whose automatic rebuild is running (see [`crate::recovery`]).
    pub rebuilds: Arc<std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>>,
    /// The relay's producer when a broker is configured (also probed by `/health`).
    pub kafka: Option<EventProducer>,
    pub payments: Payments,
    /// Decides acquisitions in stamp order within the fairness window (a pass-through at 0).
    pub fairness: crate::store::fairness::FairnessWindow,
    /// The edge hosts whose metrics the console reads (the operator console).
    pub edge_metrics: crate::edges::EdgeMetrics,
    /// Refused acquisitions per product, flushed to Redis once a second (the console's).
    pub refusals: Arc<crate::store::tally::RefusalTally>,
    /// The waiting rooms of queued products ([`crate::store::queue`]).
    pub rooms: crate::store::queue::WaitingRoom,
    /// Whether Redis keeps what it answered (see [`crate::store::durability`]).
    pub durability: crate::store::durability::DurabilityGuard,
    /// Every task the origin spawns besides the workers (rebuilds, fairness queues): drained
    /// at shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// Who may read `/metrics`, and when it last read Redis for it.
    pub scrapes: crate::metrics::ScrapeAccess,
    /// One invariant check at a time (`POST /admin/check`): each reads every product.
    pub checks: Arc<tokio::sync::Semaphore>,
    /// The open products' views, shared by buyers' lists for a second
    /// ([`crate::http::products::OpenProducts`]).
    pub open_products: crate::http::products::OpenProducts,
    /// Whether PostgreSQL's schema is migrated (false only while a degraded start waits to
    /// migrate it): until then requests answer 503.
    pub schema_ready: Arc<std::sync::atomic::AtomicBool>,
    /// The drops' public logs' keys (`None`: this origin keeps no logs,
    /// [`crate::transparency`]).
    pub transparency: Option<Arc<crate::transparency::Transparency>>,
}

/// What the origin needs to check an edge signature.
#[derive(Clone)]
pub struct EdgeTrust {
    pub secret: EdgeSecret,
    pub max_skew: Duration,
    pub clock: Arc<dyn Clock>,
}

impl FromRef<AppState> for Metrics {
    fn from_ref(s: &AppState) -> Self {
        s.metrics.clone()
    }
}
