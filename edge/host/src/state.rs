//! Per-request store state: WASI contexts, the resource table, and the component's view of
//! the shared key-value stores and its configuration.

use crate::kv::KvStores;
use crate::manifest::{ComponentSpec, OutboundRule};
use crate::upstream::OriginPool;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::{TimeoutBody, TimeoutError};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

pub struct RequestState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) outbound: Outbound,
    pub(crate) component: Arc<ComponentSpec>,
    pub(crate) kv: KvStores,
}

impl RequestState {
    pub fn new(component: Arc<ComponentSpec>, kv: KvStores, outbound: Outbound) -> Self {
        Self {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound,
            component,
            kv,
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

/// Outbound HTTP policy: only the component's `allowed_outbound_hosts`, with the host's
/// default timeouts where the guest sets none, so no request can hang a handler.
///
/// Requests go through one pooled keep-alive client per component, `http://` and
/// `https://` alike: a forwarded request reuses an idle connection instead of paying a TCP
/// (and TLS) handshake, and its time to the origin stops depending on how many connections
/// are being opened at that moment. TLS trusts the public roots plus `--origin-ca`
/// (`flashgate_net::tls`).
#[derive(Clone)]
pub struct Outbound {
    pub(crate) rules: Arc<[OutboundRule]>,
    pub(crate) connect_timeout: Duration,
    pub(crate) first_byte_timeout: Duration,
    pub(crate) pool: Client<HttpsConnector<HttpConnector>, WasiBody>,
    /// The origins the component's `origin_url` stands for, when the host was given several.
    pub(crate) origins: Option<Arc<OriginPool>>,
}

/// Idle connections kept per origin; enough for the concurrency one host serves.
const MAX_IDLE_PER_HOST: usize = 1024;
/// An idle pooled connection is closed after this long: well before the origin closes it
/// itself (its listener closes a connection idle for its head deadline, 10 s by default;
/// `flashgate_net`), so a forwarded request never goes out on a connection the origin is
/// closing at that moment.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

impl Outbound {
    pub fn new(
        rules: Arc<[OutboundRule]>,
        connect_timeout: Duration,
        first_byte: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        let connector = connector(tls, connect_timeout);
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(connector);
        Self { rules, connect_timeout, first_byte_timeout: first_byte, pool, origins: None }
    }

    /// Sends the component's requests to its origin over `origins` instead.
    pub fn with_origins(mut self, origins: Arc<OriginPool>) -> Self {
        self.origins = Some(origins);
        self
    }

    fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("http");
        let Some(host) = uri.host() else { return false };
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.rules.iter().any(|r| r.allows(scheme, host, port))
    }
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            tracing::warn!(uri = %request.uri(), "outbound request denied: not in allowed_outbound_hosts");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: options.connect_timeout.or(Some(self.connect_timeout)),
            first_byte_timeout: options.first_byte_timeout.or(Some(self.first_byte_timeout)),
            between_bytes_timeout: options.between_bytes_timeout.or(Some(self.first_byte_timeout)),
        };
        let pool = self.pool.clone();
        let origins = self.origins.clone().filter(|o| o.serves(request.uri()));
        Box::new(async move {
            // The pool connects (bounded by the connector's timeout) and sends: the head must
            // be back within both timeouts.
            let head_within = options.connect_timeout.unwrap_or_default()
                + options.first_byte_timeout.unwrap_or_default();
            let between = options.between_bytes_timeout.unwrap_or_default();
            let response = match origins {
                None => tokio::time::timeout(head_within, pool.request(request))
                    .await
                    .map_err(|_| HttpError::ConnectionReadTimeout)?
                    .map_err(pooled_error)?,
                Some(origins) => {
                    let send = |request| async {
                        tokio::time::timeout(head_within, pool.request(request))
                            .await
                            .map_err(|_| HttpError::ConnectionReadTimeout)?
                            .map_err(pooled_error)
                    };
                    to_origins(&origins, request, send).await?
                }
            };
            let response = response
                .map(|body| TimeoutBody::new(between, body).map_err(body_error).boxed_unsync());
            // The pool drives the connection itself.
            Ok((response, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

/// A connector for `http://` and `https://` (TLS under `tls`), with `connect_timeout`.
pub fn connector(
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// Sends `request` to the pool's origins in [`OriginPool::order`]: the first that accepts the
/// connection answers. A refused connection marks its origin down; only a read (`GET`,
/// `HEAD`, with no body) goes on to the next origin.
async fn to_origins<F, Fut>(
    origins: &OriginPool,
    request: http::Request<WasiBody>,
    send: F,
) -> Result<http::Response<hyper::body::Incoming>, HttpError>
where
    F: Fn(http::Request<WasiBody>) -> Fut,
    Fut: Future<Output = Result<http::Response<hyper::body::Incoming>, HttpError>>,
{
    let retries = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    let order = origins.order();
    let mut last = HttpError::ConnectionRefused;
    for (attempt, &i) in order.iter().enumerate() {
        let mut builder = http::Request::builder()
            .method(parts.method.clone())
            .uri(origins.target(&parts.uri, i))
            .version(parts.version);
        if let Some(headers) = builder.headers_mut() {
            *headers = parts.headers.clone();
        }
        let body = body.take().unwrap_or_else(|| {
            http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
        });
        let request =
            builder.body(body).map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
        match send(request).await {
            Err(HttpError::ConnectionRefused) => {
                origins.mark_down(i);
                last = HttpError::ConnectionRefused;
                if !retries || attempt + 1 == order.len() {
                    break;
                }
            }
            answered => return answered,
        }
    }
    Err(last)
}

fn pooled_error(e: hyper_util::client::legacy::Error) -> HttpError {
    if e.is_connect() {
        return HttpError::ConnectionRefused;
    }
    // The pool's error says what it was doing; its source (hyper's) says what went wrong.
    HttpError::InternalError(Some(match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }))
}

fn body_error(e: Box<dyn std::error::Error + Send + Sync>) -> HttpError {
    if e.is::<TimeoutError>() {
        return HttpError::ConnectionReadTimeout;
    }
    match e.downcast::<hyper::Error>() {
        Ok(e) => HttpError::from(*e),
        Err(e) => HttpError::InternalError(Some(e.to_string())),
    }
}
