//! Tracing set-up shared by the binary and the tests: the logs (text, or JSON with
//! `--log-json`, filtered by `RUST_LOG`), the business events ([`crate::business`]) as JSON
//! lines, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set — spans
//! exported over OTLP/HTTP, configured by the standard `OTEL_EXPORTER_OTLP_*` variables.
//!
//! One trace per acquisition: the edge's `traceparent` is the remote parent of the request
//! span ([`continue_from`]); the handler's span is written into the outbox entry
//! ([`traceparent_of`]), the relay continues from it (and puts its own into the Kafka
//! record's headers), and the persister's write continues from that. Spans carry product,
//! outcome and edge id; never tokens or secrets.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Level;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The exporting provider, kept to flush it at exit ([`shutdown`]).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether an OpenTelemetry layer is installed ([`otel_layer`]): without one, carrying trace
/// contexts from span to span is skipped (no parsing, no allocation per request or event).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Installs the subscriber: logs filtered by `RUST_LOG` or `default_filter` (JSON when
/// `json`), business events as JSON lines, and OTLP export when configured. Later calls are
/// no-ops, so tests may call it freely.
pub fn init(default_filter: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let not_business = filter_fn(|meta| meta.target() != crate::business::TARGET);
    let logs = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let otel = otlp_provider().map(|provider| {
        let layer = otel_layer(&provider);
        let _ = PROVIDER.set(provider);
        layer
    });
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter).with_filter(not_business))
        .with(business_layer(std::io::stdout))
        .with(otel)
        .try_init();
}

/// Flushes spans not yet exported (the binary calls it before exiting).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("flashgate-origin: flushing spans: {e}");
    }
}

/// An OTLP/HTTP exporting provider when `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (the exporter reads the rest of the
/// `OTEL_EXPORTER_OTLP_*` variables itself); `None` otherwise.
fn otlp_provider() -> Option<SdkTracerProvider> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("flashgate-origin: OTLP exporter not started: {e}");
            return None;
        }
    };
    let resource =
        opentelemetry_sdk::Resource::builder().with_service_name("flashgate-origin").build();
    Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The layer that turns tracing spans into OpenTelemetry spans of `provider` (and installs
/// the W3C trace-context propagator).
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, Ordering::Release);
    tracing_opentelemetry::layer().with_tracer(provider.tracer("flashgate-origin"))
}

/// Makes `span` a child of the (remote) span `traceparent` names. Call it before the span is
/// entered; a malformed value leaves the span where it is.
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    if !EXPORTING.load(Ordering::Acquire) {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// `span`'s own trace context as a `traceparent`, when spans are exported (`None` when no
/// OpenTelemetry layer is installed: callers keep the context they had).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !EXPORTING.load(Ordering::Acquire) {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
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
