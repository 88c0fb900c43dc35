//! `flashgate`: development identity and token minting.

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use flashgate_cli::{DevIdentity, TokenSpec, mint};
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
    }
    Ok(())
}
