//! `flashgate-edge`: the edge host binary.

use anyhow::{Context, Result};
use clap::Parser;
use flashgate_edge_host::{EdgeHost, HostSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Serve flashgate's edge component from a Spin manifest.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The Spin manifest.
    #[arg(long, short = 'f', env = "FLASHGATE_EDGE_MANIFEST", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "FLASHGATE_EDGE_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Set an application variable (`name=value`); beats `SPIN_VARIABLE_*`.
    #[arg(long = "variable", value_parser = parse_variable)]
    variables: Vec<(String, String)>,
    /// Whole-request deadline in milliseconds.
    #[arg(long, env = "FLASHGATE_EDGE_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Memory bound of each key-value store, in MiB.
    #[arg(long, env = "FLASHGATE_EDGE_KV_MIB", default_value_t = 256)]
    kv_mib: u64,
    /// Requests one instance may serve before it is dropped; 1 is a fresh instance per
    /// request, as `spin up` does. Only for components that keep nothing of one request for
    /// the next in their own memory (flashgate's edge component keeps none).
    #[arg(long, env = "FLASHGATE_EDGE_REUSE_INSTANCES", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    reuse_instances: u32,
    /// Idle instances kept warm per component when instances are reused.
    #[arg(long, env = "FLASHGATE_EDGE_WARM_INSTANCES", default_value_t = 64)]
    warm_instances: usize,
}

fn parse_variable(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not name=value"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    let args = Args::parse();
    let mut settings = HostSettings::new(args.manifest, args.listen);
    settings.variables = args.variables.into_iter().collect();
    settings.request_timeout = Duration::from_millis(args.request_timeout_ms);
    settings.kv_capacity_bytes = args.kv_mib * 1024 * 1024;
    settings.reuse_instances = args.reuse_instances;
    settings.warm_instances = args.warm_instances;
    let host = EdgeHost::build(settings).await.context("starting the edge host")?;
    tracing::info!(addr = %host.local_addr(), "edge listening");
    host.run_until_stopped(flashgate_core::signal::stop()).await
}
