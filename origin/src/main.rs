//! `flashgate-origin`: parses settings, starts the [`Application`], waits for a signal.
//!
//! [`Application`]: flashgate_origin::startup::Application

use clap::Parser;
use flashgate_origin::settings::OriginArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flashgate_origin::startup::serve(OriginArgs::parse()).await
}
