//! Origin settings: a plain struct that tests fill directly and the binary gets from
//! [`OriginArgs`] (flags and environment), parsed once. Every default has one home,
//! [`defaults`]: `--help` shows it and [`Settings::new`] starts from it.

pub use crate::config::{Secret, defaults};
use crate::gateway::SimulatedSettings;
use crate::outbox::kafka::KafkaSettings;
use crate::store::fairness::Fairness;
use crate::store::inventory::Lifecycle;
use crate::store::redis::{RedisTarget, ReplicaAcks};
use anyhow::Context;
use flashgate_core::fairness::WindowPolicy;
use flashgate_core::signing::EdgeSecret;
use flashgate_core::token::{KeySet, TokenPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    pub database_url: String,
    /// One Redis server (unless `redis_cluster_nodes` are given).
    pub redis_url: String,
    /// A Redis Cluster's seed nodes; when given, the origin runs on the cluster.
    pub redis_cluster_nodes: Vec<String>,
    /// Replicas a grant must reach (`WAIT`) before it is answered `201`; `None`: one on a
    /// cluster, none on one server.
    pub redis_replica_acks: Option<u32>,
    /// How long a grant waits for its replicas before it is answered 503 instead.
    pub redis_replica_ack_timeout: Duration,
    /// How long an origin's claim on a work partition lasts unless renewed
    /// ([`crate::store::leases`]).
    pub work_lease: Duration,
    /// This origin's name among the origins sharing Redis: the owner of its work leases and
    /// its relay's consumer. `None`: a fresh one each start. Kept across restarts (a pod's
    /// stable name, say), a restarted origin takes its partitions and its relay's unacked
    /// entries back at once instead of after the lease runs out. Two live origins must never
    /// share one.
    pub instance_id: Option<String>,
    /// Shared with the edge; verifies the edge's HMAC signatures.
    pub edge_secret: EdgeSecret,
    /// The identity provider's public keys (or where to fetch them) and claim rules (admin
    /// tokens).
    pub jwt_keys: JwtKeys,
    pub jwt_policy: TokenPolicy,
    /// How far an edge arrival stamp may be from the origin's clock, either way.
    pub max_stamp_skew: Duration,
    /// Hold time, reminder lead and expired-record TTL of slots.
    pub lifecycle: Lifecycle,
    /// How often the expiration worker sweeps; `None` runs no worker (tests drive
    /// [`crate::workers::expiry::ExpiryWorker::step`] themselves).
    pub expiry_interval: Option<Duration>,
    /// How often the outbox relay steps; `None` runs no relay (tests drive it).
    pub relay_interval: Option<Duration>,
    /// How often the waiting rooms admit buyers; `None` runs no admission worker (tests
    /// drive [`crate::workers::admission::AdmissionWorker::step`]).
    pub admission_interval: Option<Duration>,
    /// Most buyers one product's waiting-room line holds.
    pub queue_max_length: u64,
    /// How long a waiting room's pass admits its buyer.
    pub queue_pass_ttl: Duration,
    /// The edge hosts' metrics URLs (their admin listeners' `/metrics`), whose decisions the
    /// operator console shows.
    pub edge_metrics_urls: Vec<String>,
    /// Who may read `/metrics` ([`crate::metrics::ScrapeAccess`]): with a token, whoever
    /// presents it; without, loopback and private networks only.
    pub metrics_token: Option<Secret>,
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
    /// What the listener lets clients hold: connections in all and per address, the deadline
    /// and size of a request's head ([`flashgate_net`]).
    pub connections: flashgate_net::ConnectionLimits,
    /// Serve TLS (`--tls-cert`, `--tls-key`): edges across networks reach the origin over
    /// `https://` (their `--origin-ca` trusts a private CA).
    pub tls: Option<flashgate_net::TlsFiles>,
    /// Deadline for each Redis command; past it the request is answered 503.
    pub redis_timeout: Duration,
    pub database_max_connections: u32,
    /// Apply `migrations/` at start-up.
    pub migrate: bool,
    pub payments: PaymentSettings,
    /// How long each acquisition is held so that a product's acquisitions are decided in
    /// edge-stamp order: adaptive by default, or fixed ([`crate::store::fairness`]).
    pub fairness: Fairness,
    /// The most grants one extension of a product's grant lease covers ([`crate::store::grants`]):
    /// larger waits on PostgreSQL less often, smaller withholds fewer units after Redis
    /// loses its data.
    pub grant_lease: i64,
    /// Each drop's public log (issue #31): who signs it, the pseudonyms' secret; `None`: no
    /// logs kept.
    pub transparency: Option<crate::transparency::TransparencySettings>,
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
            idempotency_ttl: Duration::from_secs(defaults::IDEMPOTENCY_TTL_SECS),
            gateway_timeout: Duration::from_secs(defaults::GATEWAY_TIMEOUT_SECS),
            resubmit_after: Duration::from_secs(defaults::PAYMENT_RESUBMIT_AFTER_SECS),
            worker_interval: Some(Duration::from_millis(defaults::PAYMENT_WORKER_INTERVAL_MS)),
            reconcile_after: Duration::from_secs(defaults::PAYMENT_RECONCILE_AFTER_SECS),
            simulated: SimulatedSettings::new(Secret::random(), store_url),
        }
    }
}

/// Where the origin's token keys come from.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// A JWKS document read at start-up (`--jwt-jwks-file`).
    Inline(KeySet),
    /// The identity provider's JWKS URL (`--jwt-jwks-url`), fetched and cached
    /// ([`crate::identity`]).
    Url(String),
}

impl From<KeySet> for JwtKeys {
    fn from(keys: KeySet) -> Self {
        Self::Inline(keys)
    }
}

impl Settings {
    /// Where Redis is: the cluster when its nodes are given, else the one server.
    pub fn redis_target(&self) -> RedisTarget {
        RedisTarget::new(&self.redis_url, &self.redis_cluster_nodes)
    }

    /// What a grant waits for before `201`.
    pub fn replica_acks(&self) -> ReplicaAcks {
        let cluster = !self.redis_cluster_nodes.is_empty();
        let default = if cluster { defaults::CLUSTER_REPLICA_ACKS } else { 0 };
        ReplicaAcks {
            replicas: self.redis_replica_acks.unwrap_or(default),
            timeout: self.redis_replica_ack_timeout,
        }
    }

    pub fn new(
        listen: SocketAddr,
        database_url: String,
        redis_url: String,
        edge_secret: EdgeSecret,
        jwt_keys: impl Into<JwtKeys>,
        jwt_policy: TokenPolicy,
    ) -> Self {
        let jwt_keys = jwt_keys.into();
        Self {
            payments: PaymentSettings::new(redis_url.clone()),
            listen,
            database_url,
            redis_url,
            redis_cluster_nodes: Vec::new(),
            redis_replica_acks: None,
            redis_replica_ack_timeout: Duration::from_millis(defaults::REPLICA_ACK_TIMEOUT_MS),
            work_lease: Duration::from_millis(defaults::WORK_LEASE_MS),
            instance_id: None,
            edge_secret,
            jwt_keys,
            jwt_policy,
            max_stamp_skew: Duration::from_millis(defaults::MAX_STAMP_SKEW_MS),
            lifecycle: Lifecycle::default(),
            expiry_interval: Some(Duration::from_millis(defaults::EXPIRY_INTERVAL_MS)),
            relay_interval: Some(Duration::from_millis(defaults::RELAY_INTERVAL_MS)),
            admission_interval: Some(Duration::from_millis(defaults::ADMISSION_INTERVAL_MS)),
            queue_max_length: defaults::QUEUE_MAX_LENGTH,
            queue_pass_ttl: Duration::from_secs(defaults::QUEUE_PASS_TTL_SECS),
            edge_metrics_urls: Vec::new(),
            metrics_token: None,
            relay_claim_idle: Duration::from_millis(defaults::RELAY_CLAIM_IDLE_MS),
            kafka: None,
            kafka_persister: true,
            allow_volatile_redis: false,
            drain_limit: Duration::from_secs(defaults::DRAIN_SECS),
            connections: flashgate_net::ConnectionLimits::default(),
            tls: None,
            redis_timeout: Duration::from_millis(defaults::REDIS_TIMEOUT_MS),
            database_max_connections: defaults::DATABASE_MAX_CONNECTIONS,
            migrate: true,
            fairness: Fairness::Adaptive(WindowPolicy {
                max_us: defaults::FAIRNESS_MAX_WINDOW_MS as i64 * 1000,
                ..WindowPolicy::default()
            }),
            grant_lease: defaults::GRANT_LEASE,
            transparency: None,
        }
    }
}

/// flashgate's origin server.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct OriginArgs {
    #[arg(long, env = "FLASHGATE_ORIGIN_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = defaults::DATABASE_URL
    )]
    pub database_url: String,
    #[arg(long, env = "FLASHGATE_REDIS_URL", default_value = defaults::REDIS_URL)]
    pub redis_url: String,
    /// A Redis Cluster's nodes (`redis://host:port`, comma-separated): run on the cluster
    /// instead of the one Redis at `--redis-url`.
    #[arg(
        long = "redis-cluster-node",
        env = "FLASHGATE_REDIS_CLUSTER_NODES",
        value_delimiter = ','
    )]
    pub redis_cluster_nodes: Vec<String>,
    /// Replicas a grant must reach before it is answered 201 (default: 1 on a cluster, 0 on
    /// one server); past `--redis-replica-ack-timeout-ms` the buyer hears 503 instead.
    #[arg(long, env = "FLASHGATE_REDIS_REPLICA_ACKS")]
    pub redis_replica_acks: Option<u32>,
    #[arg(long, env = "FLASHGATE_REDIS_REPLICA_ACK_TIMEOUT_MS", default_value_t = defaults::REPLICA_ACK_TIMEOUT_MS)]
    pub redis_replica_ack_timeout_ms: u64,
    /// How long an origin's claim on a work partition (expiry, payments, relay, admission)
    /// lasts unless renewed: a dead origin's share is taken over within it.
    #[arg(long, env = "FLASHGATE_WORK_LEASE_MS", default_value_t = defaults::WORK_LEASE_MS,
          value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub work_lease_ms: u64,
    /// This origin's name among the origins sharing Redis (letters, digits, `.`, `_`, `-`;
    /// at most 64), kept across its restarts so a restarted origin takes its work back at
    /// once. Default: a fresh one each start. Two live origins must never share one.
    #[arg(long, env = "FLASHGATE_INSTANCE_ID", value_parser = instance_id)]
    pub instance_id: Option<String>,
    /// Hex secret shared with the edge (≥ 32 bytes).
    #[arg(long, env = "FLASHGATE_EDGE_SECRET", hide_env_values = true, value_parser = edge_secret)]
    pub edge_secret: EdgeSecret,
    /// The identity provider's JWKS document (public keys), as a file (development).
    #[arg(
        long,
        env = "FLASHGATE_JWT_JWKS_FILE",
        required_unless_present = "jwt_jwks_url",
        conflicts_with = "jwt_jwks_url"
    )]
    pub jwt_jwks_file: Option<PathBuf>,
    /// The identity provider's JWKS URL (HTTPS in production): fetched at start, kept for its
    /// Cache-Control max-age, fetched again at most once a minute for an unknown `kid`, the
    /// last good keys kept while the provider is down.
    #[arg(long, env = "FLASHGATE_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    #[arg(long, env = "FLASHGATE_JWT_ISSUER", default_value = defaults::JWT_ISSUER)]
    pub jwt_issuer: String,
    #[arg(long, env = "FLASHGATE_JWT_AUDIENCE", default_value = defaults::JWT_AUDIENCE)]
    pub jwt_audience: String,
    #[arg(long, env = "FLASHGATE_JWT_LEEWAY_SECS", default_value_t = defaults::JWT_LEEWAY_SECS)]
    pub jwt_leeway_secs: u64,
    /// How far an edge arrival stamp may be from this clock.
    #[arg(long, env = "FLASHGATE_MAX_STAMP_SKEW_MS", default_value_t = defaults::MAX_STAMP_SKEW_MS)]
    pub max_stamp_skew_ms: u64,
    /// How long a granted slot is held for payment.
    #[arg(long, env = "FLASHGATE_SLOT_HOLD_SECS", default_value_t = defaults::SLOT_HOLD_SECS)]
    pub slot_hold_secs: u64,
    /// How long before its deadline a slot's `slot-expiring-soon` event is emitted.
    #[arg(long, env = "FLASHGATE_REMIND_BEFORE_SECS", default_value_t = defaults::REMIND_BEFORE_SECS)]
    pub remind_before_secs: u64,
    /// How often the expiration worker sweeps (0: run no worker in this process).
    #[arg(long, env = "FLASHGATE_EXPIRY_INTERVAL_MS", default_value_t = defaults::EXPIRY_INTERVAL_MS)]
    pub expiry_interval_ms: u64,
    /// How often the outbox relay steps (0: run no relay in this process).
    #[arg(long, env = "FLASHGATE_RELAY_INTERVAL_MS", default_value_t = defaults::RELAY_INTERVAL_MS)]
    pub relay_interval_ms: u64,
    /// How often the waiting rooms admit buyers (0: run no admission worker here).
    #[arg(long, env = "FLASHGATE_ADMISSION_INTERVAL_MS", default_value_t = defaults::ADMISSION_INTERVAL_MS)]
    pub admission_interval_ms: u64,
    /// Most buyers one product's waiting-room line holds (past it: 503 `queue-full`).
    #[arg(long, env = "FLASHGATE_QUEUE_MAX_LENGTH", default_value_t = defaults::QUEUE_MAX_LENGTH)]
    pub queue_max_length: u64,
    /// How long a waiting room's pass admits its buyer, in seconds.
    #[arg(long, env = "FLASHGATE_QUEUE_PASS_TTL_SECS", default_value_t = defaults::QUEUE_PASS_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_pass_ttl_secs: u64,
    /// The edge hosts' metrics URLs (`http://<admin listener>/metrics`, comma-separated):
    /// the operator console shows their decisions.
    #[arg(long = "edge-metrics-url", env = "FLASHGATE_EDGE_METRICS_URLS", value_delimiter = ',')]
    pub edge_metrics_urls: Vec<String>,
    /// A bearer token for `/metrics` (Prometheus' `authorization: credentials`). Set, every
    /// scrape must present it; unset, `/metrics` answers loopback and private addresses only
    /// (never the internet, where the processor's webhooks come from).
    #[arg(long, env = "FLASHGATE_METRICS_TOKEN", hide_env_values = true,
          value_parser = |s: &str| Ok::<_, String>(Secret::new(s.as_bytes().to_vec())))]
    pub metrics_token: Option<Secret>,
    /// Keys that sign every drop's public log (note signer keys,
    /// `PRIVATE+KEY+<name>+<id>+<base64>`, from `flashgate transparency keygen`; one name
    /// for all, comma-separated: every one signs, so a new key can join before the old one
    /// leaves). Unset: no public logs are kept.
    #[arg(
        long = "transparency-key",
        env = "FLASHGATE_TRANSPARENCY_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub transparency_keys: Vec<String>,
    /// Hex secret (≥ 32 bytes) each drop's buyer pseudonyms derive from; required with
    /// `--transparency-key`, and the same on every origin.
    #[arg(long, env = "FLASHGATE_TRANSPARENCY_SECRET", hide_env_values = true, value_parser = hex_secret)]
    pub transparency_secret: Option<Secret>,
    /// How often the log builder moves decisions into the signed logs (0: never).
    #[arg(long, env = "FLASHGATE_TRANSPARENCY_INTERVAL_MS", default_value_t = defaults::TRANSPARENCY_INTERVAL_MS)]
    pub transparency_interval_ms: u64,
    /// How far apart edge clocks may be, published with each log for its fairness check.
    #[arg(long, env = "FLASHGATE_TRANSPARENCY_STAMP_SKEW_MS", default_value_t = defaults::TRANSPARENCY_STAMP_SKEW_MS)]
    pub transparency_stamp_skew_ms: u64,
    /// How long an outbox entry may sit unacknowledged with a relay (that died) before
    /// another relay takes it over.
    #[arg(long, env = "FLASHGATE_RELAY_CLAIM_IDLE_MS", default_value_t = defaults::RELAY_CLAIM_IDLE_MS)]
    pub relay_claim_idle_ms: u64,
    /// Kafka brokers (`host:port,…`); without them the relay writes to PostgreSQL directly.
    #[arg(long, env = "FLASHGATE_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Probability that a simulated charge succeeds.
    #[arg(long, env = "FLASHGATE_GATEWAY_SUCCESS_RATE", default_value_t = defaults::GATEWAY_SUCCESS_RATE)]
    pub gateway_success_rate: f64,
    /// Delay before the simulated processor reports a charge's outcome.
    #[arg(long, env = "FLASHGATE_GATEWAY_LATENCY_MS", default_value_t = defaults::GATEWAY_LATENCY_MS)]
    pub gateway_latency_ms: u64,
    /// Seed of the simulated processor's outcomes (random when unset).
    #[arg(long, env = "FLASHGATE_GATEWAY_SEED")]
    pub gateway_seed: Option<u64>,
    /// Hex secret signing the processor's webhooks (random per process when unset).
    #[arg(long, env = "FLASHGATE_GATEWAY_WEBHOOK_SECRET", hide_env_values = true,
          value_parser = hex_secret)]
    pub gateway_webhook_secret: Option<Secret>,
    /// The simulated processor's own store (a Redis URL; default: the origin's Redis).
    #[arg(long, env = "FLASHGATE_GATEWAY_STORE_URL")]
    pub gateway_store_url: Option<String>,
    /// The webhook deadline: a charge still PENDING this long is reconciled by asking the
    /// processor.
    #[arg(long, env = "FLASHGATE_PAYMENT_RECONCILE_AFTER_SECS", default_value_t = defaults::PAYMENT_RECONCILE_AFTER_SECS)]
    pub payment_reconcile_after_secs: u64,
    /// How long past its deadline a slot with a payment in flight waits for it to settle.
    #[arg(long, env = "FLASHGATE_SETTLE_GRACE_SECS", default_value_t = defaults::SETTLE_GRACE_SECS)]
    pub settle_grace_secs: u64,
    /// How long an Idempotency-Key is remembered.
    #[arg(long, env = "FLASHGATE_IDEMPOTENCY_TTL_SECS", default_value_t = defaults::IDEMPOTENCY_TTL_SECS)]
    pub idempotency_ttl_secs: u64,
    /// A fixed fairness window W: decide a product's acquisitions in edge-stamp order once
    /// the stamp is this old (0: at once). Unset (the default), W adapts to the edges' delays.
    #[arg(long, env = "FLASHGATE_FAIRNESS_WINDOW_MS")]
    pub fairness_window_ms: Option<u64>,
    /// The longest adaptive fairness window.
    #[arg(long, env = "FLASHGATE_FAIRNESS_MAX_WINDOW_MS", default_value_t = defaults::FAIRNESS_MAX_WINDOW_MS)]
    pub fairness_max_window_ms: u64,
    /// The most grants one extension of a product's grant lease covers: after Redis loses
    /// its data, at most this many units (plus the grants not yet relayed) are withheld
    /// as in doubt instead of resold.
    #[arg(long, env = "FLASHGATE_GRANT_LEASE", default_value_t = defaults::GRANT_LEASE,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub grant_lease: i64,
    /// Run on a Redis that does not fsync every write before answering (no AOF, or
    /// `appendfsync` other than `always`). Grants answered 201 may then be lost with Redis
    /// and their units sold again: for development and throwaway benchmarks only.
    #[arg(long, env = "FLASHGATE_ALLOW_VOLATILE_REDIS")]
    pub allow_volatile_redis: bool,
    /// After SIGTERM or Ctrl-C: how long in-flight requests, worker steps and the last relay
    /// flush may take.
    #[arg(long, env = "FLASHGATE_DRAIN_SECS", default_value_t = defaults::DRAIN_SECS)]
    pub drain_secs: u64,
    #[command(flatten)]
    pub connections: flashgate_net::ConnectionArgs,
    /// Log as JSON lines.
    #[arg(long, env = "FLASHGATE_LOG_JSON")]
    pub log_json: bool,
}

fn instance_id(text: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if text.is_empty() || text.len() > 64 || !text.chars().all(allowed) {
        return Err("1 to 64 letters, digits, `.`, `_` or `-`".to_owned());
    }
    Ok(text.to_owned())
}

fn edge_secret(text: &str) -> Result<EdgeSecret, String> {
    EdgeSecret::from_hex(text).map_err(|e| e.to_string())
}

/// The processor's webhook secret: hex, and as long as the edge's (a short HMAC key is a
/// guessable one: the webhook route is open to anyone who can reach the origin).
fn hex_secret(text: &str) -> Result<Secret, String> {
    let secret = Secret::from_hex(text).map_err(|e| format!("not hex: {e}"))?;
    if secret.expose().len() < flashgate_core::signing::MIN_SECRET_LEN {
        return Err(format!(
            "too short: at least {} bytes ({} hex digits)",
            flashgate_core::signing::MIN_SECRET_LEN,
            2 * flashgate_core::signing::MIN_SECRET_LEN
        ));
    }
    Ok(secret)
}

impl OriginArgs {
    /// The settings these arguments ask for; the error names the argument that is wrong.
    pub fn into_settings(self) -> anyhow::Result<Settings> {
        let jwt_keys = match (&self.jwt_jwks_file, &self.jwt_jwks_url) {
            (Some(file), _) => {
                let jwks = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                JwtKeys::Inline(
                    KeySet::from_jwks_json(&jwks)
                        .and_then(|keys| keys.check().map(|()| keys))
                        .context("FLASHGATE_JWT_JWKS_FILE")?,
                )
            }
            (None, Some(url)) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    anyhow::bail!("FLASHGATE_JWT_JWKS_URL must be an http(s) URL, not `{url}`");
                }
                JwtKeys::Url(url.clone())
            }
            (None, None) => anyhow::bail!("set FLASHGATE_JWT_JWKS_URL or FLASHGATE_JWT_JWKS_FILE"),
        };
        let mut settings = Settings::new(
            self.listen,
            self.database_url,
            self.redis_url,
            self.edge_secret,
            jwt_keys,
            TokenPolicy {
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
                leeway: Duration::from_secs(self.jwt_leeway_secs),
            },
        );
        settings.max_stamp_skew = Duration::from_millis(self.max_stamp_skew_ms);
        settings.lifecycle.hold = Duration::from_secs(self.slot_hold_secs);
        settings.lifecycle.remind_before = Duration::from_secs(self.remind_before_secs);
        settings.lifecycle.settle_grace = Duration::from_secs(self.settle_grace_secs);
        settings.relay_claim_idle = Duration::from_millis(self.relay_claim_idle_ms);
        settings.redis_cluster_nodes = self.redis_cluster_nodes;
        settings.redis_replica_acks = self.redis_replica_acks;
        settings.redis_replica_ack_timeout =
            Duration::from_millis(self.redis_replica_ack_timeout_ms);
        settings.work_lease = Duration::from_millis(self.work_lease_ms);
        settings.instance_id = self.instance_id;
        settings.allow_volatile_redis = self.allow_volatile_redis;
        settings.drain_limit = Duration::from_secs(self.drain_secs);
        settings.connections = (&self.connections).into();
        settings.tls = self.connections.tls();
        settings.payments.reconcile_after = Duration::from_secs(self.payment_reconcile_after_secs);
        settings.expiry_interval =
            (self.expiry_interval_ms > 0).then(|| Duration::from_millis(self.expiry_interval_ms));
        settings.relay_interval =
            (self.relay_interval_ms > 0).then(|| Duration::from_millis(self.relay_interval_ms));
        settings.admission_interval = (self.admission_interval_ms > 0)
            .then(|| Duration::from_millis(self.admission_interval_ms));
        settings.queue_max_length = self.queue_max_length;
        settings.queue_pass_ttl = Duration::from_secs(self.queue_pass_ttl_secs);
        settings.edge_metrics_urls = self.edge_metrics_urls;
        settings.metrics_token = self.metrics_token;
        settings.transparency = match (self.transparency_keys.is_empty(), self.transparency_secret)
        {
            (true, None) => None,
            (true, Some(_)) => {
                anyhow::bail!("FLASHGATE_TRANSPARENCY_SECRET without FLASHGATE_TRANSPARENCY_KEYS")
            }
            (false, None) => {
                anyhow::bail!("FLASHGATE_TRANSPARENCY_KEYS needs FLASHGATE_TRANSPARENCY_SECRET")
            }
            (false, Some(secret)) => {
                let t = crate::transparency::TransparencySettings {
                    signing_keys: self.transparency_keys,
                    pseudonym_secret: secret,
                    stamp_skew: Duration::from_millis(self.transparency_stamp_skew_ms),
                    build_interval: (self.transparency_interval_ms > 0)
                        .then(|| Duration::from_millis(self.transparency_interval_ms)),
                };
                crate::transparency::Transparency::new(&t)
                    .context("FLASHGATE_TRANSPARENCY_KEYS")?;
                Some(t)
            }
        };
        settings.kafka = self.kafka_brokers.map(KafkaSettings::new);
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.gateway_success_rate),
            "FLASHGATE_GATEWAY_SUCCESS_RATE must be between 0 and 1"
        );
        let simulated = &mut settings.payments.simulated;
        simulated.success_rate = self.gateway_success_rate;
        simulated.latency = Duration::from_millis(self.gateway_latency_ms);
        simulated.seed = self.gateway_seed;
        if let Some(url) = self.gateway_store_url {
            simulated.store_url = url;
        }
        if let Some(secret) = self.gateway_webhook_secret {
            simulated.webhook_secret = secret;
        }
        settings.payments.idempotency_ttl = Duration::from_secs(self.idempotency_ttl_secs.max(1));
        settings.fairness = match self.fairness_window_ms {
            Some(ms) => Fairness::Fixed(Duration::from_millis(ms)),
            None => Fairness::Adaptive(WindowPolicy {
                max_us: self.fairness_max_window_ms as i64 * 1000,
                ..WindowPolicy::default()
            }),
        };
        settings.grant_lease = self.grant_lease;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use flashgate_core::token::{Jwk, Jwks};

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    /// A JWKS file with one Ed25519 key, for the duration of a test.
    fn jwks_file() -> tempfile_path::TempPath {
        // The Ed25519 base point: a valid key (the origin checks every key at start-up).
        let mut base_point = [0x66; 32];
        base_point[0] = 0x58;
        let jwks = Jwks { keys: vec![Jwk::ed25519("k1", &base_point)] };
        tempfile_path::write(&serde_json::to_string(&jwks).unwrap())
    }

    /// A tiny temporary file, removed on drop (no crate needed for one file).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        pub fn write(text: &str) -> TempPath {
            let path = std::env::temp_dir().join(format!("fg-jwks-{}.json", uuid::Uuid::new_v4()));
            std::fs::write(&path, text).unwrap();
            TempPath(path)
        }
    }

    /// Parses the required flags plus `extra`; the JWKS file lives as long as the guard.
    fn parse(extra: &[&str]) -> (tempfile_path::TempPath, Result<OriginArgs, clap::Error>) {
        let jwks = jwks_file();
        let path = jwks.0.to_str().unwrap().to_owned();
        let mut argv = vec!["flashgate-origin", "--edge-secret", HEX, "--jwt-jwks-file", &path];
        argv.extend_from_slice(extra);
        let parsed = OriginArgs::try_parse_from(argv);
        (jwks, parsed)
    }

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        let (_jwks, args) = parse(&[]);
        let parsed = args.unwrap().into_settings().unwrap();
        let new = Settings::new(
            defaults::LISTEN.parse().unwrap(),
            defaults::DATABASE_URL.into(),
            defaults::REDIS_URL.into(),
            EdgeSecret::from_hex(HEX).unwrap(),
            parsed.jwt_keys.clone(),
            parsed.jwt_policy.clone(),
        );
        // Every field a flag sets, against the library's own defaults.
        assert_eq!(parsed.listen, new.listen);
        assert_eq!(parsed.max_stamp_skew, new.max_stamp_skew);
        assert_eq!(format!("{:?}", parsed.lifecycle), format!("{:?}", new.lifecycle));
        assert_eq!(parsed.expiry_interval, new.expiry_interval);
        assert_eq!(parsed.relay_interval, new.relay_interval);
        assert_eq!(parsed.relay_claim_idle, new.relay_claim_idle);
        assert_eq!(parsed.drain_limit, new.drain_limit);
        assert_eq!(parsed.fairness, new.fairness);
        assert_eq!(parsed.grant_lease, new.grant_lease);
        assert_eq!(parsed.payments.reconcile_after, new.payments.reconcile_after);
        assert_eq!(parsed.payments.idempotency_ttl, new.payments.idempotency_ttl);
        assert_eq!(parsed.payments.simulated.success_rate, new.payments.simulated.success_rate);
        assert_eq!(parsed.payments.simulated.latency, new.payments.simulated.latency);
        assert_eq!(parsed.jwt_policy.issuer, defaults::JWT_ISSUER);
        assert!(!parsed.allow_volatile_redis && parsed.kafka.is_none());
        assert_eq!(parsed.instance_id, None);
    }

    #[test]
    fn an_instance_id_is_a_short_plain_name() {
        let (_jwks, args) = parse(&["--instance-id", "origin-0.eu_1"]);
        assert_eq!(
            args.unwrap().into_settings().unwrap().instance_id.as_deref(),
            Some("origin-0.eu_1")
        );
        for bad in ["", "a b", "origin/1", &"x".repeat(65)] {
            let (_jwks, args) = parse(&["--instance-id", bad]);
            assert!(args.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn flags_set_what_they_name_and_zero_intervals_run_no_worker() {
        let (_jwks, args) = parse(&[
            "--expiry-interval-ms",
            "0",
            "--relay-interval-ms",
            "0",
            "--slot-hold-secs",
            "60",
            "--grant-lease",
            "8",
            "--kafka-brokers",
            "127.0.0.1:9092",
            "--allow-volatile-redis",
            "--gateway-webhook-secret",
            HEX,
        ]);
        let s = args.unwrap().into_settings().unwrap();
        assert_eq!((s.expiry_interval, s.relay_interval), (None, None));
        assert_eq!(s.lifecycle.hold, Duration::from_secs(60));
        assert_eq!(s.grant_lease, 8);
        assert!(s.kafka.is_some() && s.allow_volatile_redis);
        assert_eq!(s.payments.simulated.webhook_secret.expose(), hex::decode(HEX).unwrap());
    }

    #[test]
    fn the_fairness_window_adapts_unless_fixed() {
        let (_jwks, args) = parse(&["--fairness-max-window-ms", "80"]);
        match args.unwrap().into_settings().unwrap().fairness {
            Fairness::Adaptive(policy) => assert_eq!(policy.max_us, 80_000),
            fixed => panic!("{fixed:?}"),
        }
        let (_jwks, args) = parse(&["--fairness-window-ms", "0"]);
        let fixed = args.unwrap().into_settings().unwrap().fairness;
        assert_eq!(fixed, Fairness::Fixed(Duration::ZERO));
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag_and_secrets_never_print() {
        let short = OriginArgs::try_parse_from([
            "flashgate-origin",
            "--edge-secret",
            "abcd",
            "--jwt-jwks-file",
            "/nonexistent",
        ]);
        assert!(short.unwrap_err().to_string().contains("--edge-secret"));
        let lease = parse(&["--grant-lease", "0"]).1.unwrap_err().to_string();
        assert!(lease.contains("--grant-lease"), "{lease}");
        let (_jwks, rate) = parse(&["--gateway-success-rate", "1.5"]);
        let rate = rate.unwrap().into_settings().unwrap_err().to_string();
        assert!(rate.contains("FLASHGATE_GATEWAY_SUCCESS_RATE"), "{rate}");
        let webhook = parse(&["--gateway-webhook-secret", "zz"]).1.unwrap_err().to_string();
        assert!(webhook.contains("--gateway-webhook-secret"), "{webhook}");
        let short = parse(&["--gateway-webhook-secret", "abcd"]).1.unwrap_err().to_string();
        assert!(short.contains("too short"), "{short}");

        let other = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
        let (_jwks, args) = parse(&["--gateway-webhook-secret", other]);
        let args = args.unwrap();
        let shown = format!("{args:?}");
        assert!(!shown.contains(HEX) && !shown.contains(other), "{shown}");
        let shown = format!("{:?}", args.into_settings().unwrap());
        assert!(!shown.contains(HEX) && !shown.contains("255, 238"), "{shown}");
    }
}
