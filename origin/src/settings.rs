//! Origin settings: a plain struct the binary fills from flags and environment, and tests
//! fill directly.

use crate::inventory::Lifecycle;
use crate::kafka::KafkaSettings;
use crate::payments::gateway::SimulatedSettings;
use flashgate_core::signing::EdgeSecret;
use flashgate_core::token::{KeySet, TokenPolicy};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    pub database_url: String,
    pub redis_url: String,
    /// Shared with the edge; verifies the edge's HMAC signatures.
    pub edge_secret: EdgeSecret,
    /// The identity provider's public keys and claim rules (admin tokens).
    pub jwt_keys: KeySet,
    pub jwt_policy: TokenPolicy,
    /// How far an edge arrival stamp may be from the origin's clock, either way.
    pub max_stamp_skew: Duration,
    /// Hold time, reminder lead and expired-record TTL of slots.
    pub lifecycle: Lifecycle,
    /// How often the expiration worker sweeps; `None` runs no worker (tests drive
    /// [`crate::expiry::ExpiryWorker::step`] themselves).
    pub expiry_interval: Option<Duration>,
    /// How often the outbox relay steps; `None` runs no relay (tests drive it).
    pub relay_interval: Option<Duration>,
    /// How long an entry may sit unacknowledged with another relay before this one claims it.
    pub relay_claim_idle: Duration,
    /// The broker, if any. Without one the relay writes to PostgreSQL directly (the local
    /// default); with one it publishes to Kafka and a persister consumes from there.
    pub kafka: Option<KafkaSettings>,
    /// With a broker: run the Kafka persister in this process (tests drive their own).
    pub kafka_persister: bool,
    /// Run on a Redis that does not fsync every write before answering (AOF with
    /// `appendfsync always`): grants answered `201` may then be lost with Redis.
    pub allow_volatile_redis: bool,
    /// How long in-flight requests, worker steps and the last relay flush may take after
    /// shutdown is asked for.
    pub drain_limit: Duration,
    /// Deadline for each Redis command; past it the request is answered 503.
    pub redis_timeout: Duration,
    pub database_max_connections: u32,
    /// Apply `migrations/` at start-up.
    pub migrate: bool,
    pub payments: PaymentSettings,
    /// Hold each acquisition until its edge stamp is this old, then decide a product's
    /// acquisitions in stamp order (0: decide at once).
    pub fairness_window: Duration,
    /// The most grants one extension of a product's grant lease covers ([`crate::grants`]):
    /// larger waits on PostgreSQL less often, smaller withholds fewer units after Redis
    /// loses its data.
    pub grant_lease: i64,
}

#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// How long an `Idempotency-Key` and its answer are remembered.
    pub idempotency_ttl: Duration,
    /// Deadline of one call to the gateway.
    pub gateway_timeout: Duration,
    /// After this long unconfirmed, a charge submission is retried by the worker.
    pub resubmit_after: Duration,
    /// How often the payments worker steps; `None` runs none (tests drive it).
    pub worker_interval: Option<Duration>,
    /// The webhook deadline: a submitted charge still PENDING this long is reconciled by
    /// asking the processor for its status.
    pub reconcile_after: Duration,
    /// The simulated processor (the only gateway shipped). Its webhook secret is random
    /// per process unless set, which serves because it runs inside the origin; its store
    /// is the origin's Redis unless set.
    pub simulated: SimulatedSettings,
}

impl PaymentSettings {
    /// The defaults, with the simulated processor keeping its records in `store_url`.
    pub fn new(store_url: String) -> Self {
        Self {
            idempotency_ttl: Duration::from_secs(24 * 3600),
            gateway_timeout: Duration::from_secs(5),
            resubmit_after: Duration::from_secs(10),
            worker_interval: Some(Duration::from_secs(1)),
            reconcile_after: Duration::from_secs(30),
            simulated: SimulatedSettings::new(rand::random::<[u8; 32]>().to_vec(), store_url),
        }
    }
}

impl Settings {
    pub fn new(
        listen: SocketAddr,
        database_url: String,
        redis_url: String,
        edge_secret: EdgeSecret,
        jwt_keys: KeySet,
        jwt_policy: TokenPolicy,
    ) -> Self {
        Self {
            payments: PaymentSettings::new(redis_url.clone()),
            listen,
            database_url,
            redis_url,
            edge_secret,
            jwt_keys,
            jwt_policy,
            max_stamp_skew: Duration::from_secs(5),
            lifecycle: Lifecycle::default(),
            expiry_interval: Some(Duration::from_secs(1)),
            relay_interval: Some(Duration::from_millis(100)),
            relay_claim_idle: Duration::from_secs(5),
            kafka: None,
            kafka_persister: true,
            allow_volatile_redis: false,
            drain_limit: Duration::from_secs(10),
            redis_timeout: Duration::from_millis(500),
            database_max_connections: 10,
            migrate: true,
            fairness_window: Duration::ZERO,
            grant_lease: 64,
        }
    }
}
