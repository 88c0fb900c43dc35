//! `flashgate-origin`: parses settings, starts the [`Application`], waits for a signal.

use clap::Parser;
use flashgate_origin::settings::OriginArgs;
use flashgate_origin::startup::Application;
use flashgate_origin::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = OriginArgs::parse();
    telemetry::init("info,sqlx=warn", args.log_json);
    let settings = args.into_settings()?;
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), "origin listening");
    let served = app.run_until_stopped(flashgate_core::signal::stop()).await;
    telemetry::shutdown();
    served
}
