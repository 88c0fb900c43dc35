//! `flashgate-origin`: parses settings, starts the [`Application`], waits for a signal.

use anyhow::Context;
use clap::Parser;
use flashgate_core::signing::EdgeSecret;
use flashgate_core::token::{KeySet, TokenPolicy};
use flashgate_origin::kafka::KafkaSettings;
use flashgate_origin::settings::Settings;
use flashgate_origin::startup::Application;
use flashgate_origin::telemetry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// flashgate's origin server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, env = "FLASHGATE_ORIGIN_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/flashgate"
    )]
    database_url: String,
    #[arg(long, env = "FLASHGATE_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Hex secret shared with the edge (≥ 32 bytes).
    #[arg(long, env = "FLASHGATE_EDGE_SECRET", hide_env_values = true)]
    edge_secret: String,
    /// The identity provider's JWKS document (public keys), as a file.
    #[arg(long, env = "FLASHGATE_JWT_JWKS_FILE")]
    jwt_jwks_file: PathBuf,
    #[arg(long, env = "FLASHGATE_JWT_ISSUER", default_value = "flashgate-dev")]
    jwt_issuer: String,
    #[arg(long, env = "FLASHGATE_JWT_AUDIENCE", default_value = "flashgate")]
    jwt_audience: String,
    #[arg(long, env = "FLASHGATE_JWT_LEEWAY_SECS", default_value_t = 30)]
    jwt_leeway_secs: u64,
    /// How far an edge arrival stamp may be from this clock.
    #[arg(long, env = "FLASHGATE_MAX_STAMP_SKEW_MS", default_value_t = 5000)]
    max_stamp_skew_ms: u64,
    /// How long a granted slot is held for payment.
    #[arg(long, env = "FLASHGATE_SLOT_HOLD_SECS", default_value_t = 1800)]
    slot_hold_secs: u64,
    /// How long before its deadline a slot's `slot-expiring-soon` event is emitted.
    #[arg(long, env = "FLASHGATE_REMIND_BEFORE_SECS", default_value_t = 300)]
    remind_before_secs: u64,
    /// How often the expiration worker sweeps (0: run no worker in this process).
    #[arg(long, env = "FLASHGATE_EXPIRY_INTERVAL_MS", default_value_t = 1000)]
    expiry_interval_ms: u64,
    /// How often the outbox relay steps (0: run no relay in this process).
    #[arg(long, env = "FLASHGATE_RELAY_INTERVAL_MS", default_value_t = 100)]
    relay_interval_ms: u64,
    /// How long an outbox entry may sit unacknowledged with a relay (that died) before
    /// another relay takes it over.
    #[arg(long, env = "FLASHGATE_RELAY_CLAIM_IDLE_MS", default_value_t = 5000)]
    relay_claim_idle_ms: u64,
    /// Kafka brokers (`host:port,…`); without them the relay writes to PostgreSQL directly.
    #[arg(long, env = "FLASHGATE_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Probability that a simulated charge succeeds.
    #[arg(long, env = "FLASHGATE_GATEWAY_SUCCESS_RATE", default_value_t = 0.95)]
    gateway_success_rate: f64,
    /// Delay before the simulated processor reports a charge's outcome.
    #[arg(long, env = "FLASHGATE_GATEWAY_LATENCY_MS", default_value_t = 200)]
    gateway_latency_ms: u64,
    /// Seed of the simulated processor's outcomes (random when unset).
    #[arg(long, env = "FLASHGATE_GATEWAY_SEED")]
    gateway_seed: Option<u64>,
    /// Hex secret signing the processor's webhooks (random per process when unset).
    #[arg(long, env = "FLASHGATE_GATEWAY_WEBHOOK_SECRET", hide_env_values = true)]
    gateway_webhook_secret: Option<String>,
    /// The simulated processor's own store (a Redis URL; default: the origin's Redis).
    #[arg(long, env = "FLASHGATE_GATEWAY_STORE_URL")]
    gateway_store_url: Option<String>,
    /// The webhook deadline: a charge still PENDING this long is reconciled by asking the
    /// processor.
    #[arg(long, env = "FLASHGATE_PAYMENT_RECONCILE_AFTER_SECS", default_value_t = 30)]
    payment_reconcile_after_secs: u64,
    /// How long past its deadline a slot with a payment in flight waits for it to settle.
    #[arg(long, env = "FLASHGATE_SETTLE_GRACE_SECS", default_value_t = 120)]
    settle_grace_secs: u64,
    /// How long an Idempotency-Key is remembered.
    #[arg(long, env = "FLASHGATE_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    idempotency_ttl_secs: u64,
    /// Fairness window W: decide a product's acquisitions in edge-stamp order once the stamp
    /// is this old (0: at once).
    #[arg(long, env = "FLASHGATE_FAIRNESS_WINDOW_MS", default_value_t = 0)]
    fairness_window_ms: u64,
    /// The most grants one extension of a product's grant lease covers: after Redis loses
    /// its data, at most this many units (plus the grants not yet relayed) are withheld
    /// as in doubt instead of resold.
    #[arg(long, env = "FLASHGATE_GRANT_LEASE", default_value_t = 64,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    grant_lease: i64,
    /// Run on a Redis that does not fsync every write before answering (no AOF, or
    /// `appendfsync` other than `always`). Grants answered 201 may then be lost with Redis
    /// and their units sold again: for development and throwaway benchmarks only.
    #[arg(long, env = "FLASHGATE_ALLOW_VOLATILE_REDIS")]
    allow_volatile_redis: bool,
    /// After SIGTERM or Ctrl-C: how long in-flight requests, worker steps and the last relay
    /// flush may take.
    #[arg(long, env = "FLASHGATE_DRAIN_SECS", default_value_t = 10)]
    drain_secs: u64,
    /// Log as JSON lines.
    #[arg(long, env = "FLASHGATE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info,sqlx=warn", args.log_json);
    let jwks = std::fs::read_to_string(&args.jwt_jwks_file)
        .with_context(|| format!("reading {}", args.jwt_jwks_file.display()))?;
    let mut settings = Settings::new(
        args.listen,
        args.database_url,
        args.redis_url,
        EdgeSecret::from_hex(&args.edge_secret).context("FLASHGATE_EDGE_SECRET")?,
        KeySet::from_jwks_json(&jwks).context("FLASHGATE_JWT_JWKS_FILE")?,
        TokenPolicy {
            issuer: args.jwt_issuer,
            audience: args.jwt_audience,
            leeway: Duration::from_secs(args.jwt_leeway_secs),
        },
    );
    settings.max_stamp_skew = Duration::from_millis(args.max_stamp_skew_ms);
    settings.lifecycle.hold = Duration::from_secs(args.slot_hold_secs);
    settings.lifecycle.remind_before = Duration::from_secs(args.remind_before_secs);
    settings.lifecycle.settle_grace = Duration::from_secs(args.settle_grace_secs);
    settings.relay_claim_idle = Duration::from_millis(args.relay_claim_idle_ms);
    settings.allow_volatile_redis = args.allow_volatile_redis;
    settings.drain_limit = Duration::from_secs(args.drain_secs);
    settings.payments.reconcile_after = Duration::from_secs(args.payment_reconcile_after_secs);
    settings.expiry_interval =
        (args.expiry_interval_ms > 0).then(|| Duration::from_millis(args.expiry_interval_ms));
    settings.relay_interval =
        (args.relay_interval_ms > 0).then(|| Duration::from_millis(args.relay_interval_ms));
    settings.kafka = args.kafka_brokers.map(KafkaSettings::new);
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.gateway_success_rate),
        "FLASHGATE_GATEWAY_SUCCESS_RATE must be between 0 and 1"
    );
    let simulated = &mut settings.payments.simulated;
    simulated.success_rate = args.gateway_success_rate;
    simulated.latency = Duration::from_millis(args.gateway_latency_ms);
    simulated.seed = args.gateway_seed;
    if let Some(url) = args.gateway_store_url {
        simulated.store_url = url;
    }
    if let Some(secret) = args.gateway_webhook_secret {
        simulated.webhook_secret =
            hex::decode(secret.trim()).context("FLASHGATE_GATEWAY_WEBHOOK_SECRET must be hex")?;
    }
    settings.payments.idempotency_ttl = Duration::from_secs(args.idempotency_ttl_secs.max(1));
    settings.fairness_window = Duration::from_millis(args.fairness_window_ms);
    settings.grant_lease = args.grant_lease;
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), "origin listening");
    app.run_until_stopped(flashgate_core::signal::stop()).await
}
