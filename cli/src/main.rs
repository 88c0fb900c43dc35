//! `flashgate`: development identity, token minting, `check`, the invariant checker (its
//! logic is `flashgate_cli::check`), and `verify`, anyone's check of a drop's public log
//! (`flashgate_cli::transparency`, `flashgate_tlog::verify`).

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use flashgate_cli::check::Limits;
use flashgate_cli::{DevIdentity, TokenSpec, mint};
use flashgate_origin::store::redis::{Redis, RedisTarget};
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(version, about = "flashgate developer commands")]
struct Args {
    /// Where the development identity lives.
    #[arg(long, env = "FLASHGATE_DEV_DIR", default_value = ".flashgate/dev", global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Buyer,
    Admin,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the issuer key pair, its JWKS and the edge secret (kept if present).
    DevKeys,
    /// Check a drop's invariants (exactly N, one per buyer, nothing lost, exactly-once
    /// payment, fairness) in Redis and PostgreSQL; exits 1 on any violation.
    Check {
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/flashgate"
        )]
        database_url: String,
        #[arg(long, env = "FLASHGATE_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        /// A Redis Cluster's nodes (`redis://host:port`, comma-separated), instead of one
        /// Redis at `--redis-url`.
        #[arg(
            long = "redis-cluster-node",
            env = "FLASHGATE_REDIS_CLUSTER_NODES",
            value_delimiter = ','
        )]
        redis_cluster_nodes: Vec<String>,
        /// A refusal stamped before a grant counts as a fairness inversion only when the
        /// grant's stamp is later by more than this (clock skew between edges).
        #[arg(long, default_value_t = 0)]
        skew_ms: u64,
        /// A payment still PENDING or REFUND_REQUIRED after this long is reported as not
        /// final.
        #[arg(long, default_value_t = 300)]
        payment_deadline_secs: u64,
    },
    /// Verify a drop's public log: its checkpoint's signature, every tile and bundle, that
    /// it extends an earlier checkpoint, and the drop's promises recomputed from its entries
    /// (docs/transparency.md); exits 1 if anything does not hold.
    Verify {
        /// The log: its URL prefix (`https://<edge>/transparency/<productId>`) or a folder
        /// (`flashgate transparency export`).
        log: String,
        /// A verifier key to trust (`<name>+<id>+<base64>`; repeatable). Default: the keys
        /// the log's metadata.json names (trust on first use).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// A checkpoint saved by an earlier run: the log must extend it (append-only).
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Save the verified checkpoint here (for the next run's `--previous`).
        #[arg(long)]
        save_checkpoint: Option<PathBuf>,
        /// A buyer's receipt (the JSON `GET /receipts/<productId>` answers): check its
        /// entry and inclusion proof.
        #[arg(long)]
        receipt: Option<PathBuf>,
        /// The buyer id the receipt should name (recomputes its pseudonym).
        #[arg(long, requires = "receipt")]
        buyer: Option<String>,
    },
    /// Public logs: signing keys, and copies any static host can serve.
    #[command(subcommand)]
    Transparency(TransparencyCommand),
    /// Print a JSON array of `count` buyer tokens for distinct new buyers (load tests mint
    /// them up front, not in the load loop).
    Tokens {
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print a signed JWT.
    Token {
        #[arg(long, value_enum, default_value = "buyer")]
        role: RoleArg,
        /// The user id (`sub`); a new UUID if omitted.
        #[arg(long)]
        sub: Option<Uuid>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TransparencyCommand {
    /// Print a new signing key for the logs named `name` (FLASHGATE_TRANSPARENCY_KEYS) and,
    /// on stderr, the verifier key to publish.
    Keygen {
        /// The logs' name: their checkpoints' origin lines begin with it (e.g.
        /// `drops.example.com/transparency`).
        name: String,
    },
    /// Write a drop's log (metadata.json, checkpoint, tiles, entry bundles) to a folder.
    Export {
        product_id: Uuid,
        dir: PathBuf,
        /// The edge (or origin) serving the log.
        #[arg(long, env = "FLASHGATE_EDGE_URL", default_value = "http://127.0.0.1:3000")]
        from: String,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Command::DevKeys => {
            let (id, created) = DevIdentity::ensure(&args.dir)?;
            let verb = if created { "created" } else { "kept" };
            println!("{verb} {} and {}", id.jwks_path().display(), id.secret_path().display());
        }
        Command::Token { role, sub, ttl } => {
            let (id, _) = DevIdentity::ensure(&args.dir)?;
            let subject = sub.unwrap_or_else(Uuid::new_v4);
            let mut spec = match role {
                RoleArg::Buyer => TokenSpec::buyer(subject),
                RoleArg::Admin => TokenSpec::admin(subject),
            };
            spec.valid_for = std::time::Duration::from_secs(ttl);
            println!("{}", mint(&id.key_pair()?, &spec)?);
        }
        Command::Tokens { count, ttl } => {
            let (id, _) = DevIdentity::ensure(&args.dir)?;
            let pair = id.key_pair()?;
            let mut tokens = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let mut spec = TokenSpec::buyer(Uuid::new_v4());
                spec.valid_for = std::time::Duration::from_secs(ttl);
                tokens.push(mint(&pair, &spec)?);
            }
            println!("{}", serde_json::to_string(&tokens)?);
        }
        Command::Verify { log, keys, previous, save_checkpoint, receipt, buyer } => {
            let options = flashgate_tlog::verify::Options {
                keys,
                previous: previous.map(std::fs::read).transpose()?,
                receipt: receipt
                    .map(|p| -> Result<_> { Ok(serde_json::from_slice(&std::fs::read(p)?)?) })
                    .transpose()?,
                buyer,
            };
            let location = flashgate_cli::transparency::Location::parse(&log)?;
            let report = tokio::runtime::Runtime::new()?.block_on(location.verify(&options))?;
            for line in &report.passed {
                println!("ok    {line}");
            }
            for line in &report.failed {
                println!("FAIL  {line}");
            }
            if let Some(path) = save_checkpoint {
                std::fs::write(path, &report.checkpoint_note)?;
            }
            if !report.ok() {
                std::process::exit(1);
            }
            println!("verified: {} ({} entries)", report.checkpoint.origin, report.checkpoint.size);
        }
        Command::Transparency(TransparencyCommand::Keygen { name }) => {
            let (skey, vkey) =
                flashgate_tlog::checkpoint::key_from_seed(&name, &rand::random::<[u8; 32]>())?;
            println!("{skey}");
            eprintln!("verifier key (publish it): {vkey}");
        }
        Command::Transparency(TransparencyCommand::Export { product_id, dir, from }) => {
            let prefix = format!("{}/transparency/{product_id}", from.trim_end_matches('/'));
            let size = tokio::runtime::Runtime::new()?
                .block_on(flashgate_cli::transparency::export(&prefix, &dir))?;
            println!("exported {size} entries of {prefix} to {}", dir.display());
        }
        Command::Check {
            database_url,
            redis_url,
            redis_cluster_nodes,
            skew_ms,
            payment_deadline_secs,
        } => {
            let mut limits = Limits::new(std::time::Duration::from_millis(skew_ms));
            limits.payment_deadline = std::time::Duration::from_secs(payment_deadline_secs);
            let redis = RedisTarget::new(&redis_url, &redis_cluster_nodes);
            let report =
                tokio::runtime::Runtime::new()?.block_on(check(&database_url, &redis, limits))?;
            for v in &report.violations {
                println!("VIOLATION {v}");
            }
            let [i1, i2, i3, _, i5, i6] = report.counts();
            println!(
                "checked {} products, {} slots in PostgreSQL, {} holders in Redis, {} outbox \
                 entries undelivered; {} fairness inversions beyond {skew_ms} ms within the \
                 window (stamps up to {:.1} ms apart) and {} of late requests (up to {:.1} ms); \
                 violations: invariant 1: {i1}, 2: {i2}, 3: {i3}, 5: {i5}, 6: {i6}",
                report.products,
                report.slots_in_postgres,
                report.holders_in_redis,
                report.undelivered,
                report.inversions,
                report.max_inversion_gap_us as f64 / 1000.0,
                report.late_inversions,
                report.max_late_inversion_gap_us as f64 / 1000.0,
            );
            if !report.ok() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

async fn check(
    database_url: &str,
    redis: &RedisTarget,
    limits: Limits,
) -> Result<flashgate_cli::check::Report> {
    let db = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(database_url).await?;
    let redis = Redis::connect(redis, std::time::Duration::from_secs(5))?;
    flashgate_cli::check::check_within(&db, &redis, limits).await
}
