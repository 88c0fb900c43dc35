//! The request pipeline: stamp → trace → route → rate-limit the address → authenticate →
//! rate-limit the buyer → (acquisitions: dedup, availability hint) → sign → forward →
//! learn from the answer → relay; after the answer is sent, the availability re-check the
//! request may have claimed ([`AfterAnswer`]).

use crate::config::{self, EdgeConfig};
use crate::entry::send;
use crate::http::{Request, Response};
use crate::keys;
use crate::platform::Store;
use flashgate_core::arrival;
use flashgate_core::kv::KeyValue;
use flashgate_core::problem::{CONTENT_TYPE, Problem};
use flashgate_core::queue::{self, HEADER_QUEUE_MODE, HEADER_QUEUE_PASS};
use flashgate_core::routes::{self, BuyerRoute, MAX_BUYER_BODY};
use flashgate_core::shield::{self, Admission, HEADER_REMAINING, Limit, Shield};
use flashgate_core::signing::{self, EdgeStamp};
use flashgate_core::token::{TokenError, TokenVerifier, VerifiedToken};
use flashgate_core::trace::TraceContext;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Request headers the origin needs besides the ones the edge adds.
const FORWARDED_HEADERS: [&str; 3] = ["content-type", "idempotency-key", HEADER_QUEUE_PASS];
/// Response headers that belong to one hop and are not relayed.
const HOP_BY_HOP: [&str; 6] =
    ["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"];

/// Work a request leaves for after its answer is sent: nobody waits for it.
pub struct AfterAnswer {
    config: Rc<EdgeConfig>,
    trace: TraceContext,
}

impl AfterAnswer {
    /// Re-checks availability with the origin: what changed since the last re-check (or
    /// everything, see [`Shield::refresh_since`]), recorded for every later request.
    pub async fn run(self) {
        let store = Store::open();
        let shield = Shield::new(&store, self.config.shield_timings());
        let sent_us = now_us();
        let since = shield.refresh_since(sent_us);
        if let Some(snapshot) = refresh(&self.config, &self.trace, since).await {
            shield.record_refresh(sent_us, since, snapshot);
        }
    }
}

pub async fn handle(req: Request) -> (Response, Option<AfterAnswer>) {
    // The clock is read before anything else: fairness is judged by the arrival stamp
    // (the host's, when it stamps, see `flashgate_core::arrival`).
    let first_us = now_us();
    let incoming = req.header(signing::HEADER_TRACEPARENT);
    let trace = TraceContext::continue_or_start(incoming, random24(first_us));
    let trace_id = trace.trace_id_hex();
    let mut after = None;
    let (mut response, decision) = match admit_and_forward(&req, first_us, &trace, &mut after).await
    {
        Ok((response, decision)) => (response, decision.to_owned()),
        Err(refusal) => {
            let decision = refusal.problem.slug().to_owned();
            let problem = refusal.problem.with_trace_id(trace_id.clone());
            (problem_response(problem, refusal.headers), decision)
        }
    };
    response.set_header(signing::HEADER_TRACE_ID, trace_id);
    // For the host's metrics (flashgate's host counts it and takes it off the answer).
    response.set_header(routes::HEADER_EDGE_DECISION, decision);
    (response, after)
}

/// An answer the edge gives itself: a problem and any headers that go with it.
struct Refusal {
    problem: Problem,
    headers: Vec<(&'static str, String)>,
}

impl From<Problem> for Refusal {
    fn from(problem: Problem) -> Self {
        Self { problem, headers: Vec::new() }
    }
}

/// The answer and what the edge decided (`forwarded`, `queued`, `page`).
async fn admit_and_forward(
    req: &Request,
    first_us: u64,
    trace: &TraceContext,
    after: &mut Option<AfterAnswer>,
) -> Result<(Response, &'static str), Refusal> {
    let method = req.method.as_str();
    let route = routes::classify(method, req.path()).map_err(|wrong_method| {
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
    if let BuyerRoute::Page(name) = route {
        return Ok((crate::page::serve(name), routes::DECISION_PAGE));
    }
    let config = config::current(first_us).map_err(|e| {
        // A platform that started the component without checking its variables: say which
        // one is wrong, as a retryable 503 (an operator fixes it; nothing is lost).
        eprintln!("flashgate-edge: configuration error: {e}");
        Problem::unavailable(format!("the edge is misconfigured: {e}"), 1)
            .with("variable", e.variable.clone())
    })?;
    let host_accepted = req.header(arrival::HEADER_HOST_ACCEPTED);
    let arrival_us = arrival::stamp(host_accepted, config.host_stamps, first_us);
    let store = Store::open();
    let shield = Shield::new(&store, config.shield_timings());
    // Platforms that do not report the client's address (wasmCloud's HTTP provider) get no
    // address limit rather than one bucket shared by every buyer.
    if let (Some(limit), Some(address)) = (config.address_limit, client_address(req)) {
        rate_limit(&shield, &format!("rl:a:{address}"), limit, arrival_us, "client address")?;
    }
    if route == BuyerRoute::Transparency {
        // A drop's public log: for anyone, no token; kept here as long as the origin says,
        // so a storm of verifiers is answered by the edges.
        return public_log(req, &config, &store).await;
    }
    let token = authenticate(req, &config, &store, arrival_us / 1_000_000).await?;
    if let Some(limit) = config.user_limit {
        let key = format!("rl:u:{}", token.user_id);
        rate_limit(&shield, &key, limit, arrival_us, "buyer")?;
    }
    if req.body.len() > MAX_BUYER_BODY {
        return Err(Problem::new(
            413,
            "body-too-large",
            "Request body too large",
            format!("the body may be at most {MAX_BUYER_BODY} bytes"),
        )
        .into());
    }
    let forwarded = routes::DECISION_FORWARDED;
    if route == BuyerRoute::Queue
        && let Some(product) = routes::queued_product(req.path())
    {
        return Ok((
            waiting_room(req, method, &config, &shield, &product, &token, arrival_us, trace)
                .await?,
            forwarded,
        ));
    }
    if route == BuyerRoute::Acquire
        && let Some(product) = routes::acquired_product(&req.body)
    {
        let admission = shield.admit(&product, &token.user_id.to_string(), arrival_us);
        let ticket = match admission {
            Admission::Forward(ticket) => ticket,
            Admission::Refuse(problem) => return Err(problem.into()),
            Admission::Refresh { pending } => {
                // Answered from the hint now; the re-check runs once the answer is sent.
                *after = Some(AfterAnswer { config: config.clone(), trace: *trace });
                return Err(pending.into());
            }
        };
        // Checked only for what the shield would forward, so a storm the hints answer costs
        // no extra read.
        if shield.queued(&product, arrival_us) && !has_pass(req, &config, &product, &token) {
            // The product's waiting room is on and this buyer has no valid pass: they join
            // the line instead (their place fixed by this arrival stamp), and the
            // acquisition they had in flight is over.
            shield.after_answer(ticket, Some(202), None, None, now_us());
            let join = Request {
                method: "POST".to_owned(),
                uri: format!("/queue/{product}"),
                headers: req.headers.clone(),
                body: Vec::new(),
            };
            let answer =
                waiting_room(&join, "POST", &config, &shield, &product, &token, arrival_us, trace)
                    .await?;
            return Ok((answer, routes::DECISION_QUEUED));
        }
        let answer =
            acquire(req, method, &config, &shield, ticket, &product, &token, arrival_us, trace)
                .await?;
        return Ok((answer, forwarded));
    }
    Ok((relay(forward(req, method, &config, &token, arrival_us, trace).await?), forwarded))
}

/// A public-log file: from the store while it is fresh, else from the origin (unsigned:
/// the origin's public routes need no edge signature), kept when the origin allows.
async fn public_log(
    req: &Request,
    config: &EdgeConfig,
    store: &Store,
) -> Result<(Response, &'static str), Refusal> {
    let path = req.path();
    let key = format!("tl:{path}");
    let now_ms = now_us() / 1000;
    if let Some((content_type, body)) =
        store.get(&key).and_then(|k| routes::decode_kept(&k, now_ms))
    {
        let mut answer = Response::new(200);
        answer.headers.push(("content-type".to_owned(), content_type));
        answer.headers.push(("cache-control".to_owned(), "public, max-age=1".to_owned()));
        answer.headers.push(("access-control-allow-origin".to_owned(), "*".to_owned()));
        answer.body = body;
        return Ok((answer, routes::DECISION_CACHED));
    }
    let outbound = Request {
        method: "GET".to_owned(),
        uri: format!("{}{path}", config.origin_url),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let answer = send(outbound).await.map_err(|e| {
        eprintln!("flashgate-edge: origin unreachable: {e}");
        Problem::unavailable("the origin is unreachable; try again shortly", 1)
    })?;
    let answer = relay(answer);
    if answer.status == 200
        && let Some(keep_ms) = routes::public_cache_ms(answer.header("cache-control"))
    {
        let content_type = answer.header("content-type").unwrap_or("application/octet-stream");
        store.set(&key, &routes::encode_kept(now_ms + keep_ms, content_type, &answer.body));
    }
    Ok((answer, routes::DECISION_FORWARDED))
}

/// Whether the request carries a queue pass that admits this buyer to `product` now.
fn has_pass(req: &Request, config: &EdgeConfig, product: &str, token: &VerifiedToken) -> bool {
    let now_ms = now_us() / 1000;
    req.header(HEADER_QUEUE_PASS).is_some_and(|pass| {
        let user = token.user_id.to_string();
        queue::verify_pass(&config.secret, pass, product, &user, now_ms).is_ok()
    })
}

/// A look at (or a join of) `product`'s line: answered here when the product is known to be
/// sold out or ended, else forwarded; the answer teaches the product's queue mode.
#[allow(clippy::too_many_arguments)]
async fn waiting_room(
    req: &Request,
    method: &str,
    config: &EdgeConfig,
    shield: &Shield<'_, Store>,
    product: &str,
    token: &VerifiedToken,
    arrival_us: u64,
    trace: &TraceContext,
) -> Result<Response, Refusal> {
    if let Some(problem) = shield.queue_refusal(product, arrival_us) {
        return Err(problem.into());
    }
    let answer = forward(req, method, config, token, arrival_us, trace).await?;
    let body: Option<serde_json::Value> =
        (answer.status == 409).then(|| serde_json::from_slice(&answer.body).ok()).flatten();
    shield.learn_queue(
        product,
        answer.header(HEADER_QUEUE_MODE),
        answer.status,
        body.as_ref(),
        now_us(),
    );
    Ok(relay(answer))
}

/// The client's address as the platform reports it (`spin-client-addr`), without the port.
fn client_address(req: &Request) -> Option<String> {
    let addr = req.header("spin-client-addr")?;
    Some(match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => addr.to_owned(),
    })
}

/// Takes a token from the bucket at `key` ([`Shield::take_token`]); over the limit → 429
/// with `Retry-After` and `RateLimit-*`.
fn rate_limit(
    shield: &Shield<'_, Store>,
    key: &str,
    limit: Limit,
    now_us: u64,
    scope: &str,
) -> Result<(), Refusal> {
    shield.take_token(key, limit, now_us).map_err(|limited| Refusal {
        problem: Problem::too_many_requests(scope, limited.retry_after_secs),
        headers: vec![
            ("ratelimit-limit", limit.burst.to_string()),
            ("ratelimit-remaining", "0".to_owned()),
            ("ratelimit-reset", limited.reset_secs.to_string()),
        ],
    })
}

/// An acquisition the shield admitted ([`Shield::admit`]): forwarded, and the answer teaches
/// the store ([`Shield::after_answer`]).
#[allow(clippy::too_many_arguments)]
async fn acquire(
    req: &Request,
    method: &str,
    config: &EdgeConfig,
    shield: &Shield<'_, Store>,
    ticket: shield::Ticket,
    product: &str,
    token: &VerifiedToken,
    arrival_us: u64,
    trace: &TraceContext,
) -> Result<Response, Refusal> {
    let answer = forward(req, method, config, token, arrival_us, trace).await;
    let status = answer.as_ref().ok().map(|a| a.status);
    let remaining = answer
        .as_ref()
        .ok()
        .and_then(|a| a.header(HEADER_REMAINING))
        .and_then(|v| v.parse::<i64>().ok());
    let body: Option<serde_json::Value> =
        answer.as_ref().ok().and_then(|a| serde_json::from_slice(&a.body).ok());
    if let Ok(a) = &answer {
        // An acquisition of a queued product the edge did not know was queued: the origin
        // put the buyer in line (202) and says so.
        shield.learn_queue(product, a.header(HEADER_QUEUE_MODE), a.status, None, now_us());
    }
    shield.after_answer(ticket, status, remaining, body.as_ref(), now_us());
    Ok(relay(answer?))
}

/// Asks the origin for the availability of the products changed since `since` (every
/// product when `None`), signed as the edge itself.
async fn refresh(
    config: &EdgeConfig,
    trace: &TraceContext,
    since: Option<i64>,
) -> Option<shield::Snapshot> {
    let path = match since {
        Some(ms) => format!("{AVAILABILITY_PATH}?since={ms}"),
        None => AVAILABILITY_PATH.to_owned(),
    };
    let path = path.as_str();
    let traceparent = trace.to_string();
    let arrival_us = now_us();
    let stamp = EdgeStamp {
        user_id: EDGE_USER,
        arrival_us,
        traceparent: &traceparent,
        edge_id: &config.edge_id,
        idempotency_key: "",
    };
    let headers = signing::signed_headers(&config.secret, "GET", path, &stamp, b"")
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    let outbound = Request {
        method: "GET".to_owned(),
        uri: format!("{}{path}", config.origin_url),
        headers,
        body: Vec::new(),
    };
    let answer = send(outbound).await.ok()?;
    if answer.status != 200 {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    shield::from_snapshot(&body, (now_us() / 1000) as i64)
}

const AVAILABILITY_PATH: &str = "/internal/availability";

/// The user id the edge signs its own requests with.
const EDGE_USER: &str = "00000000-0000-0000-0000-000000000000";

/// The bearer token's verdict, from the key-value cache when this token was seen before.
async fn authenticate(
    req: &Request,
    config: &EdgeConfig,
    store: &Store,
    now_secs: u64,
) -> Result<VerifiedToken, Problem> {
    let header = req.header("authorization");
    let token = TokenVerifier::bearer(header).map_err(unauthorized)?;
    let keys = keys::current(config, store, now_secs, false).await?;
    let key = VerifiedToken::cache_key(&keys.fingerprint, token);
    let cached = store
        .get(&key)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| VerifiedToken::decode(&s))
        .filter(|hit| hit.usable_at(now_secs, keys.verifier.leeway()));
    if let Some(hit) = cached {
        return Ok(hit);
    }
    let verified = match keys.verifier.verify(token, now_secs) {
        // A key the provider published since the keys were fetched (a rotation).
        Err(TokenError::UnknownKey) => {
            let fresh = keys::current(config, store, now_secs, true).await?;
            fresh.verifier.verify(token, now_secs)
        }
        other => other,
    }
    .map_err(unauthorized)?;
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
    let path = req.path_and_query();
    let user_id = token.user_id.to_string();
    let traceparent = trace.to_string();
    // Forwarded below exactly as read here, so the origin verifies the same value.
    let idempotency_key = req.header("idempotency-key").unwrap_or("");
    let stamp = EdgeStamp {
        user_id: &user_id,
        arrival_us,
        traceparent: &traceparent,
        edge_id: &config.edge_id,
        idempotency_key,
    };
    let mut headers: Vec<(String, String)> =
        signing::signed_headers(&config.secret, method, path, &stamp, &req.body)
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
    for name in FORWARDED_HEADERS {
        if let Some(value) = req.header(name) {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    // An admitted request that waited too long here is shed, not forwarded (see
    // `flashgate_core::arrival::overdue`).
    let now = now_us();
    if arrival::overdue(arrival_us, now, config.max_wait_us) {
        return Err(Problem::unavailable("the edge is overloaded; try again shortly", 1));
    }
    headers.push((
        arrival::HEADER_EDGE_ELAPSED.to_owned(),
        now.saturating_sub(arrival_us).to_string(),
    ));
    let outbound = Request {
        method: method.to_owned(),
        uri: format!("{}{path}", config.origin_url),
        headers,
        body: req.body.clone(),
    };
    send(outbound).await.map_err(|e| {
        eprintln!("flashgate-edge: origin unreachable: {e}");
        Problem::unavailable("the origin is unreachable; try again shortly", 1)
    })
}

/// The origin's answer as the buyer gets it: without hop-by-hop and edge-only headers.
fn relay(mut answer: Response) -> Response {
    answer.headers.retain(|(name, _)| {
        !HOP_BY_HOP.contains(&name.as_str())
            && name.as_str() != HEADER_REMAINING
            && name.as_str() != HEADER_QUEUE_MODE
    });
    answer
}

fn unauthorized(e: TokenError) -> Problem {
    Problem::unauthorized(e.to_string())
}

/// A problem+json answer with the problem's own headers and `headers`.
pub(crate) fn problem_response(problem: Problem, headers: Vec<(&'static str, String)>) -> Response {
    let mut response = Response::new(problem.status);
    response.headers.push(("content-type".to_owned(), CONTENT_TYPE.to_owned()));
    // As the origin's answers: read as what it says it is, kept by no cache on the way.
    response.headers.push(("x-content-type-options".to_owned(), "nosniff".to_owned()));
    response.headers.push(("cache-control".to_owned(), "no-store".to_owned()));
    for (name, value) in problem.headers().into_iter().chain(headers) {
        response.headers.push((name.to_owned(), value));
    }
    response.body = problem.to_json();
    response
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
