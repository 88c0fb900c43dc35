//! Wiring: settings → connections → router → a bound listener.

use crate::MIGRATOR;
use crate::clock::{Clock, SystemClock};
use crate::gateway::{PaymentGateway, SimulatedGateway};
use crate::metrics::Metrics;
use crate::outbox::kafka;
use crate::outbox::kafka::{EventProducer, KafkaPersister, KafkaSettings};
use crate::outbox::persister::PgWriter;
use crate::outbox::relay::{Relay, Sink};
use crate::payments::Payments;
use crate::settings::Settings;
use crate::state::{AppState, EdgeTrust, Shared};
use crate::store::durability::{DurabilityGuard, Persistence};
use crate::store::inventory::Inventory;
use crate::store::leases::{Partitions, WorkLeases};
use crate::store::payments::PaymentStore;
use crate::workers::admission::AdmissionWorker;
use crate::workers::expiry::ExpiryWorker;
use crate::workers::payments::PaymentsWorker;
use anyhow::Context;
use axum::Router;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// A built origin: connected, migrated and bound, not yet serving.
pub struct Application {
    listener: flashgate_net::Server,
    /// This origin's share of the workers' partitions, among the origins alive.
    leases: Arc<WorkLeases>,
    router: Router,
    state: AppState,
    expiry_interval: Option<Duration>,
    relay_interval: Option<Duration>,
    relay_claim_idle: Duration,
    kafka_settings: Option<KafkaSettings>,
    payments_interval: Option<Duration>,
    admission_interval: Option<Duration>,
    transparency_interval: Option<Duration>,
    queue_pass_ttl: Duration,
    resubmit_after: Duration,
    drain_limit: Duration,
}

/// Whether a migration failed because PostgreSQL could not be reached (rather than a
/// broken migration, which must stop the start).
fn is_unreachable(e: &sqlx::migrate::MigrateError) -> bool {
    matches!(
        e,
        sqlx::migrate::MigrateError::Execute(
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        )
    )
}

/// Retries `attempt` with backoff (100 ms doubling to 5 s) until it succeeds.
async fn retry_until_done<F, Fut>(what: &'static str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(()) => {
                tracing::info!(what, "done after the dependency came back");
                return;
            }
            Err(e) => tracing::debug!(what, error = ?e, "still failing"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The `flashgate-origin` process: settings from `args`, serve until SIGTERM or Ctrl-C,
/// drain, flush the traces. The binary is this and nothing else (so the tests that
/// `kill -9` an origin run exactly it, `e2e/src/bin/origin.rs`).
pub async fn serve(args: crate::settings::OriginArgs) -> anyhow::Result<()> {
    crate::telemetry::init("info,sqlx=warn", args.log_json);
    let settings = args.into_settings()?;
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), "origin listening");
    let served = app.run_until_stopped(flashgate_core::signal::stop()).await;
    crate::telemetry::shutdown();
    served
}

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
        let gateway = SimulatedGateway::new(settings.payments.simulated.clone(), clock.clone())?;
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
        let tasks = TaskTracker::new();
        // Degraded start: a dependency that is down does not stop the origin. Migrations and
        // topic creation are retried in the background until they succeed; meanwhile
        // `/health` names what is down and requests needing it answer 503.
        // Until the schema is migrated, every route but `/health` and `/metrics` answers 503:
        // a request between two migrations would find half a schema.
        let schema_ready = Arc::new(AtomicBool::new(true));
        if settings.migrate {
            match MIGRATOR.run(&db).await {
                Ok(()) => {}
                Err(e) if is_unreachable(&e) => {
                    tracing::warn!(error = %e, "PostgreSQL is down: migrating once it answers");
                    schema_ready.store(false, Ordering::Release);
                    tasks.spawn(retry_until_done("migrations", {
                        let db = db.clone();
                        let ready = schema_ready.clone();
                        move || {
                            let db = db.clone();
                            let ready = ready.clone();
                            async move {
                                MIGRATOR.run(&db).await?;
                                ready.store(true, Ordering::Release);
                                Ok(())
                            }
                        }
                    }));
                }
                Err(e) => return Err(anyhow::Error::new(e).context("applying migrations")),
            }
        }
        let redis = settings.redis_target();
        // The response deadline must outlast a grant's wait for its replicas.
        let acks = settings.replica_acks();
        let timeout = settings.redis_timeout.max(acks.timeout + Duration::from_millis(100));
        let metrics = Metrics::default();
        let inventory = Inventory::connect(&redis, timeout, settings.lifecycle)
            .context("parsing the Redis URL")?
            .with_clock(clock.clone())
            .with_replica_acks(acks)
            .with_commit_metrics(metrics.replica_commits.clone());
        let durability = DurabilityGuard::new(settings.allow_volatile_redis);
        match Persistence::of(&inventory).await {
            Ok(p @ Persistence::Durable) => durability.record(&p),
            Ok(Persistence::Volatile(why)) if !settings.allow_volatile_redis => anyhow::bail!(
                "Redis at {redis} does not keep what it answers: {why}. Grants answered 201 \
                 would be lost and resold after a restart. Run it with `--appendonly yes \
                 --appendfsync always` (scripts/dev.sh does), or start the origin with \
                 --allow-volatile-redis to accept that"
            ),
            Ok(p @ Persistence::Volatile(_)) => {
                tracing::warn!(persistence = ?p, "Redis is volatile (allowed by --allow-volatile-redis)");
                durability.record(&p);
            }
            Err(e) => {
                tracing::warn!(error = %e, "Redis is down: its persistence is checked once it answers")
            }
        }
        let kafka = match &settings.kafka {
            Some(k) => {
                if let Err(e) = kafka::ensure_topics(k).await {
                    tracing::warn!(error = ?e, "Kafka topics not created yet: retrying in the background");
                    let k = k.clone();
                    tasks.spawn(retry_until_done("kafka topics", move || {
                        let k = k.clone();
                        async move { kafka::ensure_topics(&k).await }
                    }));
                }
                Some(EventProducer::new(k)?)
            }
            None => None,
        };
        let payments = Payments {
            store: PaymentStore::new(&inventory),
            gateway: Arc::new(crate::gateway::Instrumented::new(gateway, metrics.clone())),
            idempotency_ttl: settings.payments.idempotency_ttl,
            gateway_timeout: settings.payments.gateway_timeout,
            reconcile_after: settings.payments.reconcile_after,
        };
        let grants = crate::store::grants::Grants::new(
            inventory.clone(),
            db.clone(),
            settings.grant_lease,
            tasks.clone(),
        );
        let fairness = crate::store::fairness::FairnessWindow::new(
            settings.fairness,
            grants,
            clock.clone(),
            metrics.clone(),
            tasks.clone(),
        );
        let rooms =
            crate::store::queue::WaitingRoom::new(inventory.clone(), settings.queue_max_length);
        let transparency = match &settings.transparency {
            Some(t) => Some(Arc::new(
                crate::transparency::Transparency::new(t).context("the public logs' keys")?,
            )),
            None => {
                tracing::warn!(
                    "no --transparency-key: this origin keeps no public log of its drops' decisions"
                );
                None
            }
        };
        let state = AppState::new(Shared {
            transparency,
            edge_metrics: crate::edges::EdgeMetrics::new(settings.edge_metrics_urls.clone()),
            rooms,
            refusals: Arc::default(),
            fairness,
            payments,
            db,
            inventory,
            metrics,
            acquisition_log: crate::business::AcquisitionLog::default(),
            edge: EdgeTrust {
                secret: settings.edge_secret.clone(),
                max_skew: settings.max_stamp_skew,
                clock: clock.clone(),
            },
            admin_tokens: Arc::new(crate::identity::AdminTokens::new(
                &settings.jwt_keys,
                settings.jwt_policy.clone(),
            )),
            clock,
            rebuilds: Arc::default(),
            kafka: kafka.clone(),
            durability,
            tasks,
            schema_ready,
            checks: Arc::new(tokio::sync::Semaphore::new(1)),
            scrapes: crate::metrics::ScrapeAccess::new(settings.metrics_token.clone()),
            open_products: Default::default(),
        });
        let leases = Arc::new(WorkLeases::new(
            &state.inventory,
            settings
                .instance_id
                .clone()
                .unwrap_or_else(|| format!("origin-{}", Uuid::new_v4().simple())),
            settings.work_lease,
        ));
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let tls = match &settings.tls {
            Some(files) => Some(files.server_config().context("serving TLS (--tls-cert)")?),
            None => None,
        };
        let listener = flashgate_net::Server::new(listener, settings.connections).with_tls(tls);
        Ok(Self {
            router: crate::http::router(state.clone()),
            leases,
            listener,
            state,
            expiry_interval: settings.expiry_interval,
            relay_interval: settings.relay_interval,
            relay_claim_idle: settings.relay_claim_idle,
            kafka_settings: settings.kafka.clone().filter(|_| settings.kafka_persister),
            payments_interval: settings.payments.worker_interval,
            admission_interval: settings.admission_interval,
            transparency_interval: settings.transparency.as_ref().and_then(|t| t.build_interval),
            queue_pass_ttl: settings.queue_pass_ttl,
            resubmit_after: settings.payments.resubmit_after,
            drain_limit: settings.drain_limit,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves (and runs the workers) until `shutdown` resolves, then drains within the
    /// drain limit: the listener stops accepting, in-flight requests are answered, workers
    /// finish their current step, the relay flushes the outbox once more, and every task the
    /// origin spawned (rebuilds, fairness queues, the gateway's deliveries) ends.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let mut workers = tokio::task::JoinSet::new();
        // The first share is taken before any worker sweeps (nothing if Redis is down: the
        // next step, a third of a lease later, takes it).
        if let Err(e) = self.leases.step().await {
            tracing::warn!(error = %e, "no work partitions yet: Redis is down");
        }
        let partitions = Partitions::Leased(self.leases.clone());
        workers.spawn(self.leases.clone().run(cancel.clone()));
        if let Some(interval) = self.expiry_interval {
            let worker = ExpiryWorker::new(self.state.inventory.clone(), self.state.clock.clone())
                .counting(self.state.metrics.clone())
                .sharing(partitions.clone());
            workers.spawn(worker.run(interval, cancel.clone()));
        }
        {
            let state = self.state.clone();
            workers.spawn(crate::clock::every(
                "refusal tally",
                Duration::from_secs(1),
                cancel.clone(),
                move || {
                    let state = state.clone();
                    async move { state.refusals.flush(&state.inventory.connection()).await }
                },
            ));
        }
        if let Some(interval) = self.admission_interval {
            let worker = AdmissionWorker::new(self.state.clone()).pass_ttl(self.queue_pass_ttl);
            workers.spawn(worker.run(interval, cancel.clone()));
        }
        if let Some(interval) = self.payments_interval {
            let worker = PaymentsWorker::new(
                self.state.inventory.clone(),
                self.state.payments.clone(),
                self.state.clock.clone(),
                self.resubmit_after,
            )
            .sharing(partitions.clone());
            workers.spawn(worker.run(interval, cancel.clone()));
        }
        if let (Some(interval), Some(log)) = (self.transparency_interval, &self.state.transparency)
        {
            let builder = crate::transparency::builder::Builder::new(
                self.state.inventory.clone(),
                self.state.db.clone(),
                log.clone(),
            )
            .sharing(partitions.clone());
            let cancel = cancel.clone();
            workers.spawn(async move { builder.run(interval, cancel).await });
        }
        let writer = PgWriter::new(self.state.db.clone()).counting(self.state.metrics.clone());
        let mut flush = None;
        if let Some(interval) = self.relay_interval {
            let sink = match &self.state.kafka {
                Some(producer) => Sink::Kafka(producer.clone()),
                None => Sink::Postgres(writer.clone()),
            };
            let consumer = self.leases.me().to_owned();
            let relay = Arc::new(
                Relay::new(self.state.inventory.clone(), sink, consumer, self.relay_claim_idle)
                    .counting(self.state.metrics.clone())
                    .sharing(partitions.clone()),
            );
            flush = Some(relay.clone());
            let cancel = cancel.clone();
            workers.spawn(async move { relay.run(interval, cancel).await });
        }
        if let Some(k) = &self.kafka_settings {
            let persister = KafkaPersister::new(k, kafka::PERSISTER_GROUP, writer)?;
            workers.spawn(persister.run(cancel.clone()));
        }

        // The server is polled here, not spawned: whoever drops this future (a test that
        // kills the origin) drops the listener with it.
        // The listener's accept loop (flashgate_net): connection caps, head deadlines and
        // accept back-off; it stops accepting at shutdown and drains within the limit.
        let drain_limit = self.drain_limit;
        let stopping = async move {
            shutdown.await;
            tracing::info!(limit = ?drain_limit, "shutting down: draining");
        };
        let router = self.router;
        self.listener
            .serve(
                move |peer| {
                    // The peer, for handlers that answer by who asks (`/metrics`).
                    let service = tower::ServiceBuilder::new()
                        .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                            req
                        })
                        .service(router.clone());
                    hyper_util::service::TowerToHyperService::new(service)
                },
                stopping,
                drain_limit,
            )
            .await;
        let served: anyhow::Result<()> = Ok(());
        let deadline = tokio::time::Instant::now() + self.drain_limit;
        let state = self.state;
        state.fairness.close();
        state.tasks.close();
        let held = self.leases.owned();
        cancel.cancel();
        let drained = tokio::time::timeout_at(deadline, async {
            // Not `join_all`, which panics on a cancelled task (the runtime shutting down).
            while let Some(joined) = workers.join_next().await {
                if let Err(e) = joined {
                    tracing::warn!(error = %e, "a worker ended abnormally while draining");
                }
            }
            if let Some(relay) = flush {
                match relay.step_in(&held).await {
                    Ok(r) => tracing::info!(delivered = r.delivered, "relay flushed"),
                    Err(e) => {
                        tracing::warn!(error = ?e, "relay flush failed; the next origin delivers")
                    }
                }
            }
            state.payments.gateway.drain().await;
            state.tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(limit = ?self.drain_limit, "background work did not finish within the drain limit");
        }
        tracing::info!("stopped");
        served.context("serving")
    }
}
