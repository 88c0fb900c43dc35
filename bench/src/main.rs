//! `flashgate-bench`: the load generator, the bare baseline server and the jitter proxy that
//! `scripts/bench.sh` drives (logic in the library).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flashgate_bench::load::{self, Captured, RunSpec};
use flashgate_bench::workload::{self, Auth, Workload};
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(version, about = "flashgate benchmark tools")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthArg {
    /// Bearer tokens, as buyers send to the edge.
    Token,
    /// The signed edge envelope, as the edge sends to the origin.
    Edge,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sends `POST /slots/acquire` load and appends a JSON report line to `--out`.
    Load {
        #[arg(long)]
        label: String,
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_enum)]
        auth: AuthArg,
        /// Product ids, comma-separated, or `@file` with one per line.
        #[arg(long)]
        products: String,
        /// Distinct buyers; request i comes from buyer i mod this.
        #[arg(long, default_value_t = 1000)]
        buyers: usize,
        /// With `--auth token`, tokens are minted up front for at most this many buyers; when
        /// `--buyers` is larger the run stops after this many requests, so no buyer repeats.
        /// A run never reaches the buyers past it (minting a million tokens takes half a
        /// minute on two cores, a run at first-time-buyer rates sends under 100,000).
        #[arg(long, default_value_t = 150_000)]
        mint_limit: usize,
        /// Buyers of runs with different seeds never overlap.
        #[arg(long, default_value_t = 1)]
        buyer_seed: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds recorded.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds sent before recording starts.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Requests per second (open loop); closed loop when absent.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        max_requests: Option<u64>,
        /// Request i goes to product i (mod the products), not a random one.
        #[arg(long)]
        round_robin: bool,
        /// Writes the first answer here (for `bare --answer`).
        #[arg(long)]
        capture: Option<PathBuf>,
        #[arg(long, default_value = ".flashgate/dev")]
        dev_dir: PathBuf,
        #[arg(long, default_value = "bench")]
        edge_id: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Answers every request with the captured answer of `load --capture`.
    Bare {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        answer: PathBuf,
    },
    /// Forwards TCP connections to `upstream`, each after a random delay up to `max-ms`.
    JitterProxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long)]
        max_ms: u64,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Load {
            label,
            target,
            auth,
            products,
            buyers,
            mint_limit,
            buyer_seed,
            connections,
            duration,
            warmup,
            rate,
            max_requests,
            round_robin,
            capture,
            dev_dir,
            edge_id,
            out,
        } => {
            let products = parse_products(&products)?;
            let (auth, users, max_requests) = match auth {
                AuthArg::Token => {
                    let (minted, max_requests) =
                        workload::minted_buyers(buyers, mint_limit, max_requests);
                    let users = workload::buyers(buyer_seed, minted);
                    let tokens =
                        workload::mint_tokens(&dev_dir, &users, Duration::from_secs(3600))?;
                    (Auth::Tokens(tokens), users, max_requests)
                }
                AuthArg::Edge => {
                    let auth = Auth::Edge { secret: workload::dev_edge_secret(&dev_dir)?, edge_id };
                    (auth, workload::buyers(buyer_seed, buyers), max_requests)
                }
            };
            // Fewer buyers than asked for: tokens were minted for only the first of them.
            let minted_all = users.len() == buyers;
            let workload = Arc::new(Workload::new(auth, users, products)?);
            let spec = RunSpec {
                target,
                connections,
                duration: Duration::from_secs_f64(duration),
                warmup: Duration::from_secs_f64(warmup),
                rate,
                max_requests,
                round_robin,
            };
            // One thread: the load generator takes one core, the system under test the rest.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (report, first) = runtime.block_on(load::run(&spec, workload))?;
            eprintln!(
                "{label}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, statuses {:?}, errors {}",
                report.rps, report.p50_ms, report.p99_ms, report.statuses, report.errors
            );
            if !minted_all && report.seconds + 0.05 < duration {
                eprintln!(
                    "{label}: the {mint_limit} minted buyers ran out after {:.1} of {duration} s",
                    report.seconds
                );
            }
            if let (Some(path), Some(first)) = (capture, first) {
                std::fs::write(path, serde_json::to_vec_pretty(&first)?)?;
            }
            let line = json!({ "label": label, "target": target.to_string(), "buyers": buyers, "report": report });
            match out {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                    writeln!(f, "{line}")?;
                }
                None => println!("{line}"),
            }
        }
        Command::Bare { listen, answer } => {
            let answer: Captured = serde_json::from_slice(
                &std::fs::read(&answer).with_context(|| format!("reading {}", answer.display()))?,
            )?;
            tokio::runtime::Runtime::new()?.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                flashgate_bench::bare::serve(listener, answer).await
            })?;
        }
        Command::JitterProxy { listen, upstream, max_ms } => {
            tokio::runtime::Runtime::new()?.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                flashgate_bench::proxy::serve(listener, upstream, Duration::from_millis(max_ms))
                    .await
            })?;
        }
    }
    Ok(())
}

fn parse_products(arg: &str) -> Result<Vec<Uuid>> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.replace(',', "\n"),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| Uuid::parse_str(l).with_context(|| format!("not a product id: {l}")))
        .collect()
}
