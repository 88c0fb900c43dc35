//! Tracing set-up shared by the binary and the tests.

use tracing_subscriber::EnvFilter;

/// Installs a fmt subscriber (JSON when `json`), filtered by `RUST_LOG` or `default_filter`.
/// Later calls are no-ops, so tests may call it freely.
pub fn init(default_filter: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
