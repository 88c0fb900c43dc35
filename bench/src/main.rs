//! `flashgate-bench`: the load generator, the bare baseline server and the jitter proxy that
//! `scripts/bench.sh` drives (logic in the library).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flashgate_bench::faults;
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
    /// Holds `--connections` half-sent requests to `--target` from `--from` until killed,
    /// reconnecting each one the server closes (the security review's slow client).
    Hold {
        #[arg(long)]
        target: SocketAddr,
        /// The client address to connect from (127.0.0.0/8 is all local).
        #[arg(long, default_value = "127.0.0.2")]
        from: std::net::IpAddr,
        #[arg(long, default_value_t = 3000)]
        connections: usize,
    },
    /// Answers every request with the captured answer of `load --capture`.
    Bare {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        answer: PathBuf,
    },
    /// The fault suite's storm: `--buyers` distinct buyers acquire `--product` through the
    /// edge, each retrying failures with its token until answered; writes a JSON report.
    Storm {
        /// The edge, `http://host:port`.
        #[arg(long)]
        edge: String,
        #[arg(long)]
        product: Uuid,
        #[arg(long, default_value_t = 600)]
        buyers: usize,
        #[arg(long, default_value_t = 1)]
        buyer_seed: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 120)]
        deadline_secs: u64,
        #[arg(long, default_value = ".flashgate/dev")]
        dev_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// After a storm: checks through the edge that every buyer answered 201 holds that slot;
    /// with `--pay`, then pays for every slot (and again: replays with the same keys) and
    /// waits for every payment to end. Prints one JSON line.
    Verify {
        #[arg(long)]
        edge: String,
        #[arg(long)]
        storm: PathBuf,
        /// Pay for the slots (`pay`: once; `replay`: the payments file again, same keys).
        #[arg(long)]
        pay: Option<String>,
        /// Where the payments go (`--pay pay`) or come from (`--pay replay`).
        #[arg(long)]
        payments: Option<PathBuf>,
        #[arg(long, default_value_t = 90)]
        deadline_secs: u64,
    },
    /// Forwards TCP connections to `upstream`, each after a random delay up to `max-ms`.
    JitterProxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        /// Each request is held for a uniform random time in [min-ms, max-ms].
        #[arg(long, default_value_t = 0)]
        min_ms: u64,
        #[arg(long)]
        max_ms: u64,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Storm {
            edge,
            product,
            buyers,
            buyer_seed,
            concurrency,
            deadline_secs,
            dev_dir,
            out,
        } => {
            let users = workload::buyers(buyer_seed, buyers);
            let tokens = workload::mint_tokens(&dev_dir, &users, Duration::from_secs(3600))?;
            let report = runtime()?.block_on(faults::storm(
                &edge,
                product,
                &users,
                &tokens,
                concurrency,
                Duration::from_secs(deadline_secs),
            ));
            std::fs::write(&out, serde_json::to_vec(&report)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}",
                json!({"requests": report.requests, "granted": report.granted(), "failures": report.failures})
            );
        }
        Command::Verify { edge, storm, pay, payments, deadline_secs } => {
            let report: faults::StormReport = serde_json::from_slice(
                &std::fs::read(&storm).with_context(|| format!("reading {}", storm.display()))?,
            )?;
            let rt = runtime()?;
            let verdict = rt.block_on(faults::verify(&edge, &report))?;
            let deadline = Duration::from_secs(deadline_secs);
            let not_final = match (pay.as_deref(), payments) {
                (None, _) => None,
                (Some("pay"), Some(file)) => {
                    let paid = rt.block_on(faults::pay(&edge, &report, deadline))?;
                    std::fs::write(&file, serde_json::to_vec(&paid)?)?;
                    None
                }
                (Some("replay"), Some(file)) => {
                    let before: Vec<(Uuid, String, String)> =
                        serde_json::from_slice(&std::fs::read(&file)?)?;
                    let again = rt.block_on(faults::pay(&edge, &report, deadline))?;
                    let first: std::collections::HashMap<Uuid, &String> =
                        before.iter().map(|(u, _, p)| (*u, p)).collect();
                    let changed = again
                        .iter()
                        .filter(|(u, _, p)| first.get(u).is_some_and(|q| *q != p))
                        .count();
                    anyhow::ensure!(changed == 0, "{changed} replays answered another payment id");
                    let all: Vec<_> = again.into_iter().chain(before).collect();
                    Some(rt.block_on(faults::settle_wait(&edge, &all, deadline))?)
                }
                _ => anyhow::bail!("--pay takes pay or replay, with --payments"),
            };
            println!(
                "{}",
                json!({"granted": verdict.granted, "holding": verdict.holding,
                       "distinctSlots": verdict.distinct_slots,
                       "lost": verdict.lost, "unanswered": verdict.unanswered,
                       "paymentsNotFinal": not_final})
            );
        }
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
                    // One write of the whole line: runs in parallel share the file.
                    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                    f.write_all(format!("{line}\n").as_bytes())?;
                }
                None => println!("{line}"),
            }
        }
        Command::Hold { target, from, connections } => {
            let held = std::sync::Arc::new(flashgate_bench::slowloris::Held::default());
            tokio::runtime::Runtime::new()?.block_on(flashgate_bench::slowloris::hold(
                target,
                from,
                connections,
                held,
            ));
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
        Command::JitterProxy { listen, upstream, min_ms, max_ms } => {
            let delay = flashgate_bench::proxy::Delay {
                min: Duration::from_millis(min_ms),
                max: Duration::from_millis(max_ms.max(min_ms)),
            };
            tokio::runtime::Runtime::new()?.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                flashgate_bench::proxy::serve(listener, upstream, delay).await
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

/// A multi-threaded runtime for the fault suite's clients.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}
