//! flashgate-edge: the WebAssembly edge component (wasm32-wasip2, spin-sdk 5.x).
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

mod config;
mod edge;
mod platform;

/// The component's export. `#[http_component]` expands to the `unsafe` canonical-ABI glue,
/// which is the only unsafe code allowed here.
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::conversions::TryFromIncomingRequest;
    use spin_sdk::http::{
        IncomingRequest, IntoResponse, OutgoingResponse, Request, Response, ResponseOutparam,
    };
    use spin_sdk::http_component;

    /// Answers, then does what the request left for after its answer (an availability
    /// re-check), so nobody waits for that.
    #[http_component]
    async fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let req = match Request::try_from_incoming_request(req).await {
            Ok(req) => req,
            Err(e) => return send(out, e.into_response()).await,
        };
        let (response, after) = crate::edge::handle(req).await;
        send(out, response).await;
        if let Some(after) = after {
            after.run().await;
        }
    }

    /// Sends the whole answer; the body is finished when this returns.
    async fn send(out: ResponseOutparam, mut response: Response) {
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
}
