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
    /// How long an Idempotency-Key is remembered.
    #[arg(long, env = "FLASHGATE_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    idempotency_ttl_secs: u64,
    /// Fairness window W: decide a product's acquisitions in edge-stamp order once the stamp
    /// is this old (0: at once).
    #[arg(long, env = "FLASHGATE_FAIRNESS_WINDOW_MS", default_value_t = 0)]
    fairness_window_ms: u64,
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
    if let Some(secret) = args.gateway_webhook_secret {
        simulated.webhook_secret =
            hex::decode(secret.trim()).context("FLASHGATE_GATEWAY_WEBHOOK_SECRET must be hex")?;
    }
    settings.payments.idempotency_ttl = Duration::from_secs(args.idempotency_ttl_secs.max(1));
    settings.fairness_window = Duration::from_millis(args.fairness_window_ms);
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), "origin listening");
    app.run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await
}
