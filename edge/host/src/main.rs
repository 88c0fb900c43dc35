//! `flashgate-edge`: the edge host binary.

use anyhow::{Context, Result};
use clap::Parser;
use flashgate_edge_host::EdgeHost;
use flashgate_edge_host::settings::HostArgs;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    let settings = HostArgs::parse().into_settings();
    let host = EdgeHost::build(settings).await.context("starting the edge host")?;
    tracing::info!(addr = %host.local_addr(), admin = ?host.admin_addr(), "edge listening");
    host.run_until_stopped(flashgate_core::signal::stop()).await
}
