//! Tracing set-up shared by the binary and the tests: the logs (text, or JSON with
//! `--log-json`, filtered by `RUST_LOG`) and, always as JSON lines, the business events
//! ([`crate::business`]).

use tracing::Level;
use tracing::Subscriber;
use tracing_subscriber::filter::{Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the subscriber: logs filtered by `RUST_LOG` or `default_filter` (JSON when
/// `json`), and business events as JSON lines. Later calls are no-ops, so tests may call it
/// freely.
pub fn init(default_filter: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let not_business = filter_fn(|meta| meta.target() != crate::business::TARGET);
    let logs = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter).with_filter(not_business))
        .with(business_layer(std::io::stdout))
        .try_init();
}

/// The business events' layer: one flat JSON object per line (`timestamp`, `level`,
/// `target`, then the event's own fields), written to `writer`.
pub fn business_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .with_filter(Targets::new().with_target(crate::business::TARGET, Level::INFO))
}
