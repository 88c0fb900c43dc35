//! Wiring: settings → connections → router → a bound listener.

use crate::clock::{Clock, SystemClock};
use crate::error::ApiError;
use crate::expiry::ExpiryWorker;
use crate::inventory::Inventory;
use crate::kafka::{EventProducer, KafkaPersister, KafkaSettings};
use crate::metrics::Metrics;
use crate::payments::gateway::{PaymentGateway, SimulatedGateway};
use crate::payments::store::PaymentStore;
use crate::payments::worker::PaymentsWorker;
use crate::payments::{self, Payments};
use crate::persister::PgWriter;
use crate::relay::{Relay, Sink};
use crate::settings::Settings;
use crate::state::{AppState, EdgeTrust, Shared};
use crate::{MIGRATOR, edge_auth, health, kafka, metrics, products, recovery, slots, trace};
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use flashgate_core::token::TokenVerifier;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A built origin: connected, migrated and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    expiry_interval: Option<Duration>,
    relay_interval: Option<Duration>,
    relay_claim_idle: Duration,
    kafka_settings: Option<KafkaSettings>,
    payments_interval: Option<Duration>,
    resubmit_after: Duration,
}

/// How long workers may take to finish their current step after shutdown.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock the tests drive. The gateway is the
    /// simulated processor, delivering its webhooks to this origin.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let gateway = SimulatedGateway::new(settings.payments.simulated.clone(), clock.clone());
        let app = Self::build_with_gateway(settings, clock, Arc::new(gateway.clone())).await?;
        let mut addr = app.local_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        gateway.deliver_to(format!("http://{addr}/payments/webhook"));
        Ok(app)
    }

    /// As [`Application::build_with_clock`], with any payment gateway.
    pub async fn build_with_gateway(
        settings: Settings,
        clock: Arc<dyn Clock>,
        gateway: Arc<dyn PaymentGateway>,
    ) -> anyhow::Result<Self> {
        let db = PgPoolOptions::new()
            .max_connections(settings.database_max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&settings.database_url)
            .context("parsing the database URL")?;
        if settings.migrate {
            MIGRATOR.run(&db).await.context("applying migrations")?;
        }
        let inventory =
            Inventory::connect(&settings.redis_url, settings.redis_timeout, settings.lifecycle)
                .context("parsing the Redis URL")?;
        let kafka = match &settings.kafka {
            Some(k) => {
                kafka::ensure_topics(k).await?;
                Some(EventProducer::new(k)?)
            }
            None => None,
        };
        let payments = Payments {
            store: PaymentStore::new(&inventory),
            gateway,
            idempotency_ttl: settings.payments.idempotency_ttl,
            gateway_timeout: settings.payments.gateway_timeout,
        };
        let fairness = crate::fairness::FairnessWindow::new(
            settings.fairness_window,
            inventory.clone(),
            clock.clone(),
        );
        let state = AppState::new(Shared {
            fairness,
            payments,
            db,
            inventory,
            metrics: Metrics::default(),
            edge: EdgeTrust {
                secret: settings.edge_secret.clone(),
                max_skew: settings.max_stamp_skew,
                clock: clock.clone(),
            },
            admin_tokens: Arc::new(TokenVerifier::new(
                settings.jwt_keys.clone(),
                settings.jwt_policy.clone(),
            )),
            clock,
            rebuilds: Arc::default(),
            kafka: kafka.clone(),
        });
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        Ok(Self {
            router: router(state.clone()),
            listener,
            state,
            expiry_interval: settings.expiry_interval,
            relay_interval: settings.relay_interval,
            relay_claim_idle: settings.relay_claim_idle,
            kafka_settings: settings.kafka.clone().filter(|_| settings.kafka_persister),
            payments_interval: settings.payments.worker_interval,
            resubmit_after: settings.payments.resubmit_after,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves (and runs the workers) until `shutdown` resolves, then lets in-flight
    /// requests finish and gives the workers [`DRAIN_LIMIT`] to finish their step.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let mut workers = tokio::task::JoinSet::new();
        if let Some(interval) = self.expiry_interval {
            let worker = ExpiryWorker::new(self.state.inventory.clone(), self.state.clock.clone());
            workers.spawn(worker.run(interval, cancel.clone()));
        }
        if let Some(interval) = self.payments_interval {
            let worker = PaymentsWorker::new(
                self.state.inventory.clone(),
                self.state.payments.clone(),
                self.state.clock.clone(),
                self.resubmit_after,
            );
            workers.spawn(worker.run(interval, cancel.clone()));
        }
        let writer = PgWriter::new(self.state.db.clone());
        if let Some(interval) = self.relay_interval {
            let sink = match &self.state.kafka {
                Some(producer) => Sink::Kafka(producer.clone()),
                None => Sink::Postgres(writer.clone()),
            };
            let consumer = format!("origin-{}", Uuid::new_v4().simple());
            let relay =
                Relay::new(self.state.inventory.clone(), sink, consumer, self.relay_claim_idle);
            workers.spawn(relay.run(interval, cancel.clone()));
        }
        if let Some(k) = &self.kafka_settings {
            let persister = KafkaPersister::new(k, kafka::PERSISTER_GROUP, writer)?;
            workers.spawn(persister.run(cancel.clone()));
        }
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving");
        cancel.cancel();
        if tokio::time::timeout(DRAIN_LIMIT, workers.join_all()).await.is_err() {
            tracing::warn!("workers did not stop within {DRAIN_LIMIT:?}");
        }
        served
    }
}

fn router(state: AppState) -> Router {
    let buyer = Router::new()
        .merge(slots::router())
        .merge(products::buyer_router())
        .merge(payments::router())
        .route_layer(from_fn_with_state(state.clone(), edge_auth::require_edge_signature));
    Router::new()
        .merge(buyer)
        .merge(products::admin_router())
        .merge(recovery::admin_router())
        .merge(payments::webhook_router())
        .route("/health", get(health::check))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .route("/metrics", get(metrics::endpoint))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(from_fn(trace::layer))
        .with_state(state)
}
