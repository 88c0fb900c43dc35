//! The request pipeline: stamp → trace → route → authenticate → sign → forward → relay.

use crate::config::EdgeConfig;
use crate::platform::Store;
use flashgate_core::problem::{CONTENT_TYPE, Problem};
use flashgate_core::routes::{self, MAX_BUYER_BODY};
use flashgate_core::signing::{self, EdgeStamp};
use flashgate_core::token::{TokenError, TokenVerifier, VerifiedToken};
use flashgate_core::trace::TraceContext;
use spin_sdk::http::{Method, Request, Response};
use std::time::{SystemTime, UNIX_EPOCH};

/// Request headers the origin needs besides the ones the edge adds.
const FORWARDED_HEADERS: [&str; 2] = ["content-type", "idempotency-key"];
/// Response headers that belong to one hop and are not relayed.
const HOP_BY_HOP: [&str; 6] =
    ["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"];

pub async fn handle(req: Request) -> Response {
    // The arrival stamp is taken before anything else: fairness is judged by it.
    let arrival_us = now_us();
    let incoming = req.header(signing::HEADER_TRACEPARENT).and_then(|v| v.as_str());
    let trace = TraceContext::continue_or_start(incoming, random24(arrival_us));
    let trace_id = trace.trace_id_hex();
    let mut response = match admit_and_forward(&req, arrival_us, &trace).await {
        Ok(response) => response,
        Err(problem) => problem_response(problem.with_trace_id(trace_id.clone())),
    };
    response.set_header(signing::HEADER_TRACE_ID, trace_id);
    response
}

async fn admit_and_forward(
    req: &Request,
    arrival_us: u64,
    trace: &TraceContext,
) -> Result<Response, Problem> {
    let method = method_str(req.method());
    routes::classify(method, req.path()).map_err(|wrong_method| {
        if wrong_method {
            Problem::new(
                405,
                "method-not-allowed",
                "Method not allowed",
                format!("{method} is not allowed on {}", req.path()),
            )
        } else {
            Problem::not_found(format!("no route for {}", req.path()))
        }
    })?;
    let config = EdgeConfig::load().map_err(|e| {
        eprintln!("flashgate-edge: configuration error: {e}");
        Problem::internal()
    })?;
    let store = Store::open();
    let token = authenticate(req, &config, &store, arrival_us / 1_000_000)?;
    if req.body().len() > MAX_BUYER_BODY {
        return Err(Problem::new(
            413,
            "body-too-large",
            "Request body too large",
            format!("the body may be at most {MAX_BUYER_BODY} bytes"),
        ));
    }
    forward(req, method, &config, &token, arrival_us, trace).await
}

/// The bearer token's verdict, from the key-value cache when this token was seen before.
fn authenticate(
    req: &Request,
    config: &EdgeConfig,
    store: &Store,
    now_secs: u64,
) -> Result<VerifiedToken, Problem> {
    let header = req.header("authorization").and_then(|v| v.as_str());
    let token = TokenVerifier::bearer(header).map_err(unauthorized)?;
    let key = VerifiedToken::cache_key(&config.verifier_fingerprint, token);
    let cached = store
        .get(&key)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| VerifiedToken::decode(&s))
        .filter(|hit| hit.usable_at(now_secs, config.verifier.leeway()));
    if let Some(hit) = cached {
        return Ok(hit);
    }
    let verified = config.verifier.verify(token, now_secs).map_err(unauthorized)?;
    store.set(&key, verified.encode().as_bytes());
    Ok(verified)
}

async fn forward(
    req: &Request,
    method: &str,
    config: &EdgeConfig,
    token: &VerifiedToken,
    arrival_us: u64,
    trace: &TraceContext,
) -> Result<Response, Problem> {
    let path = req.path_and_query().unwrap_or_else(|| req.path());
    let user_id = token.user_id.to_string();
    let traceparent = trace.to_string();
    let stamp = EdgeStamp {
        user_id: &user_id,
        arrival_us,
        traceparent: &traceparent,
        edge_id: &config.edge_id,
    };
    let signature = signing::sign(&config.secret, method, path, &stamp, req.body());
    let mut builder = Request::builder();
    builder
        .method(req.method().clone())
        .uri(format!("{}{path}", config.origin_url))
        .header(signing::HEADER_USER, user_id.as_str())
        .header(signing::HEADER_ARRIVAL, arrival_us.to_string())
        .header(signing::HEADER_TRACEPARENT, traceparent.as_str())
        .header(signing::HEADER_EDGE, config.edge_id.as_str())
        .header(signing::HEADER_SIGNATURE, signature);
    for name in FORWARDED_HEADERS {
        if let Some(value) = req.header(name).and_then(|v| v.as_str()) {
            builder.header(name, value);
        }
    }
    let outbound = builder.body(req.body().to_vec()).build();
    let answer: Response = spin_sdk::http::send(outbound).await.map_err(|e| {
        eprintln!("flashgate-edge: origin unreachable: {e}");
        Problem::unavailable("the origin is unreachable; try again shortly", 1)
    })?;
    let mut relayed = Response::builder();
    relayed.status(*answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            relayed.header(name, String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    Ok(relayed.body(answer.into_body()).build())
}

fn unauthorized(e: TokenError) -> Problem {
    Problem::unauthorized(e.to_string())
}

fn problem_response(problem: Problem) -> Response {
    let mut builder = Response::builder();
    builder.status(problem.status).header("content-type", CONTENT_TYPE);
    match problem.status {
        401 => {
            builder.header("www-authenticate", "Bearer error=\"invalid_token\"");
        }
        503 => {
            builder.header("retry-after", "1");
        }
        _ => {}
    }
    builder.body(problem.to_json()).build()
}

fn method_str(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other.as_str(),
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// 24 random bytes for trace and span ids; falls back to the clock if the host has no
/// randomness (ids stay unique enough for tracing, and nothing else depends on them).
fn random24(seed: u64) -> [u8; 24] {
    let mut buf = [0u8; 24];
    if getrandom::fill(&mut buf).is_err() {
        buf[..8].copy_from_slice(&seed.to_le_bytes());
        buf[16..].copy_from_slice(&seed.rotate_left(17).to_le_bytes());
    }
    buf
}
