//! The origin as a process of its own, for the tests that `kill -9` one: exactly what the
//! `flashgate-origin` binary runs ([`flashgate_origin::startup::serve`]), built with the
//! tests so that `CARGO_BIN_EXE_origin` names it.

use clap::Parser;
use flashgate_origin::settings::OriginArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flashgate_origin::startup::serve(OriginArgs::parse()).await
}
