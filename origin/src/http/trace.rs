//! Per-request trace context and the one place errors become problem+json.
//!
//! The edge sends a W3C `traceparent`; requests that reach the origin directly (admins,
//! health checks) get one started here. Every response carries `X-Trace-ID`; a handler's
//! [`Problem`] (placed in the response extensions by [`crate::error::ApiError`]) is
//! rendered here with its `traceId`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use flashgate_core::problem::{CONTENT_TYPE, Problem};
use flashgate_core::signing::{HEADER_EDGE, HEADER_TRACE_ID, HEADER_TRACEPARENT};
use flashgate_core::trace::TraceContext;

/// The request's trace context, available to handlers as an extension.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace(pub TraceContext);

impl RequestTrace {
    pub fn trace_id(&self) -> String {
        self.0.trace_id_hex()
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name)?.to_str().ok().map(str::to_owned)
}

pub async fn layer(mut req: Request, next: Next) -> Response {
    let incoming = header(&req, HEADER_TRACEPARENT);
    let edge = header(&req, HEADER_EDGE).unwrap_or_default();
    let ctx = match incoming.as_deref().and_then(TraceContext::parse) {
        Some(ctx) => ctx,
        None => TraceContext::start(rand::random()),
    };
    let trace_id = ctx.trace_id_hex();
    req.extensions_mut().insert(RequestTrace(ctx));
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        method = %req.method(),
        path = %req.uri().path(),
        edge = %edge,
        status = tracing::field::Empty,
    );
    // Exported spans continue the edge's trace (its span is the remote parent).
    if let Some(incoming) = &incoming {
        crate::telemetry::continue_from(&span, incoming);
    }
    let mut response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("status", response.status().as_u16());
    if let Some(problem) = response.extensions_mut().remove::<Problem>() {
        let body = problem.with_trace_id(trace_id.clone()).to_json();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response.headers_mut().remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(body);
    }
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(HEADER_TRACE_ID, v);
    }
    response
}
