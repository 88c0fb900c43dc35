//! flashgate-edge: the WebAssembly edge component (wasm32-wasip2). Built for WASI 0.3 with
//! spin-sdk 7 by default (`wasip3`: Spin 4.1+, flashgate's host), or for WASI 0.2 with
//! spin-sdk 5 (`wasip2`: Spin 3.x/4.0, wasmCloud).
//!
//! Every buyer request is stamped on arrival (µs), given a W3C trace context, rate-limited
//! per client address and per buyer, checked for a valid bearer JWT, and — only if admitted
//! — forwarded to the origin with the edge's HMAC signature. Acquisitions the edge can decide
//! from what it learned (sold out, not on sale, ended, already holding, already in flight)
//! are answered here, so a storm after a sell-out never reaches the origin. The origin's
//! answer is relayed with `X-Trace-ID`. Configuration and state go
//! through the portable `wasi:config` / `wasi:keyvalue` imports of flashgate's `wit/` world
//! ([`platform`]), never through Spin-only APIs, so one component runs under `spin up`, on
//! wasmCloud and in flashgate's own wasmtime host.
//!
//! The decisions themselves (signing, token rules, trace context, the storm shield's hints
//! and buckets) live in `flashgate-core` and are unit-tested natively.

#[cfg(any(
    all(feature = "wasip2", feature = "wasip3"),
    not(any(feature = "wasip2", feature = "wasip3"))
))]
compile_error!("enable exactly one WASI generation feature: wasip3 (default) or wasip2");

// The SDK of the WASI generation built, under the name its macros expand to.
#[cfg(all(feature = "wasip2", not(feature = "wasip3")))]
extern crate spin_sdk_v5 as spin_sdk;
#[cfg(feature = "wasip3")]
extern crate spin_sdk_v7 as spin_sdk;

mod config;
mod edge;
mod http;
mod keys;
mod page;
mod platform;

/// The component's export and its outbound requests, for WASI 0.3 (spin-sdk 7's
/// `#[http_service]`, `wasi:http/handler@0.3.0`). The host may run many requests in one
/// instance, concurrently; nothing of a request outlives it but the work spawned after its
/// answer. The macro expands to the `unsafe` canonical-ABI glue, the only unsafe code here.
#[cfg(feature = "wasip3")]
#[allow(unsafe_code)]
mod entry {
    use crate::http::{Request, Response};
    use http_body_util::Full;
    use spin_sdk::http::body::IncomingBodyExt;
    use spin_sdk::http_service;

    type SpinRequest = spin_sdk::http::Request;
    type Outgoing = ::http::Response<Full<bytes::Bytes>>;

    /// Answers; what the request left for after its answer (an availability re-check) is
    /// spawned to run once the answer is returned, so nobody waits for it.
    #[http_service]
    async fn handle(req: SpinRequest) -> Outgoing {
        let (parts, body) = req.into_parts();
        let body = match body.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) => {
                eprintln!("flashgate-edge: could not read the request body: {e:?}");
                let problem = flashgate_core::problem::Problem::new(
                    400,
                    "body-unreadable",
                    "Request body unreadable",
                    "the request body could not be read",
                );
                return outgoing(crate::edge::problem_response(problem, Vec::new()));
            }
        };
        let headers = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let req = Request { method: parts.method.as_str().to_owned(), uri, headers, body };
        let (response, after) = crate::edge::handle(req).await;
        if let Some(after) = after {
            spin_sdk::wasip3::spawn(after.run());
        }
        outgoing(response)
    }

    fn outgoing(response: Response) -> Outgoing {
        let mut builder = ::http::Response::builder().status(response.status);
        for (name, value) in &response.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(response.body.into())).unwrap_or_else(|e| {
            eprintln!("flashgate-edge: could not build the answer: {e}");
            let mut answer = ::http::Response::new(Full::new(bytes::Bytes::new()));
            *answer.status_mut() = ::http::StatusCode::INTERNAL_SERVER_ERROR;
            answer
        })
    }

    /// Sends `req` (an absolute URL) and reads the whole answer.
    pub async fn send(req: Request) -> Result<Response, String> {
        let mut builder = ::http::Request::builder().method(req.method.as_str()).uri(&req.uri);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let outbound =
            builder.body(Full::new(bytes::Bytes::from(req.body))).map_err(|e| e.to_string())?;
        let answer = spin_sdk::http::send(outbound).await.map_err(|e| e.to_string())?;
        let (parts, body) = answer.into_parts();
        let body = body.bytes().await.map_err(|e| format!("{e:?}"))?.to_vec();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        Ok(Response { status: parts.status.as_u16(), headers, body })
    }
}

/// The component's export and its outbound requests, for WASI 0.2 (spin-sdk 5's
/// `#[http_component]`, `wasi:http/incoming-handler@0.2`). `#[http_component]` expands to
/// the `unsafe` canonical-ABI glue, the only unsafe code here.
#[cfg(all(feature = "wasip2", not(feature = "wasip3")))]
#[allow(unsafe_code)]
mod entry {
    use crate::http::{Request, Response};
    use spin_sdk::http::conversions::TryFromIncomingRequest;
    use spin_sdk::http::{
        IncomingRequest, IntoResponse, Method, OutgoingResponse, ResponseOutparam,
    };
    use spin_sdk::http_component;

    type SpinRequest = spin_sdk::http::Request;
    type SpinResponse = spin_sdk::http::Response;

    /// Answers, then does what the request left for after its answer (an availability
    /// re-check), so nobody waits for that.
    #[http_component]
    async fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let req = match SpinRequest::try_from_incoming_request(req).await {
            Ok(req) => req,
            Err(e) => return respond(out, e.into_response()).await,
        };
        let headers = req
            .headers()
            .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), v.as_str()?.to_owned())))
            .collect();
        let uri = req.path_and_query().unwrap_or_else(|| req.path()).to_owned();
        let method = req.method().to_string();
        let req = Request { method, uri, headers, body: req.into_body() };
        let (response, after) = crate::edge::handle(req).await;
        let mut builder = SpinResponse::builder();
        builder.status(response.status);
        for (name, value) in response.headers {
            builder.header(name, value);
        }
        respond(out, builder.body(response.body).build()).await;
        if let Some(after) = after {
            after.run().await;
        }
    }

    /// Sends the whole answer; the body is finished when this returns.
    async fn respond(out: ResponseOutparam, mut response: SpinResponse) {
        let body = std::mem::take(response.body_mut());
        match OutgoingResponse::try_from(response) {
            Ok(outgoing) => {
                if let Err(e) = out.set_with_body(outgoing, body).await {
                    eprintln!("flashgate-edge: could not send the answer: {e}");
                }
            }
            Err(e) => eprintln!("flashgate-edge: could not convert the answer: {e}"),
        }
    }

    /// Sends `req` (an absolute URL) and reads the whole answer.
    pub async fn send(req: Request) -> Result<Response, String> {
        let method = match req.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        let mut builder = SpinRequest::builder();
        builder.method(method).uri(req.uri);
        for (name, value) in req.headers {
            builder.header(name, value);
        }
        let answer: SpinResponse = spin_sdk::http::send(builder.body(req.body).build())
            .await
            .map_err(|e| e.to_string())?;
        let headers = answer
            .headers()
            .map(|(n, v)| {
                (n.to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect();
        Ok(Response { status: *answer.status(), headers, body: answer.into_body() })
    }
}
