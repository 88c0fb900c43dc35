//! The HTTP server: routes each request to its component and runs it through wasmtime's
//! `ProxyHandler`, which keeps instances as workers and feeds them requests, under the
//! pooling allocator and a wall-clock deadline.
//!
//! How long an instance lives is the component's WASI generation's to say, as in
//! `wasmtime serve`: a WASI 0.3 component (`wasi:http/handler@0.3`, flashgate's default
//! build) is reused — up to [`defaults::WASIP3_REUSE`] requests per instance,
//! [`defaults::WASIP3_CONCURRENCY`] at a time — while a WASI 0.2 one
//! (`wasi:http/incoming-handler@0.2`) gets a fresh instance per request, as `spin up` gives
//! it. [`HostSettings::reuse_instances`] and [`HostSettings::instance_concurrency`] override
//! that. Reuse takes instantiation, which dominated a fresh instance's cost, off the request
//! path (`docs/benchmark-notes.md`).
//!
//! [`defaults::WASIP3_REUSE`]: crate::settings::defaults::WASIP3_REUSE
//! [`defaults::WASIP3_CONCURRENCY`]: crate::settings::defaults::WASIP3_CONCURRENCY

use crate::kv::KvStores;
use crate::manifest::{ComponentSpec, Manifest};
use crate::metrics::{HostStats, RequestLabels};
use crate::settings::defaults;
use crate::state::{Outbound, RequestState};
use crate::upstream::OriginPool;
use anyhow::{Context, Result};
use bytes::Bytes;
use flashgate_core::arrival::HEADER_HOST_ACCEPTED;
use flashgate_core::edge_config::{EdgeConfig, KeySource};
use flashgate_core::problem::{CONTENT_TYPE, Problem};
use flashgate_core::routes::{HEADER_EDGE_DECISION, decision_label};
use flashgate_core::signing::{HEADER_TRACE_ID, HEADER_TRACEPARENT};
use flashgate_core::trace::TraceContext;
use flashgate_net::ConnectionLimits;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime::component::{Component, GuestTaskId, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreContextMut,
};
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, ProxyHandler, ProxyPre,
    ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};

/// How often the epoch advances; a running guest yields to the host at each tick, which is
/// when the handler can drop a worker past its deadline ([`Expiration`]).
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct HostSettings {
    pub manifest: PathBuf,
    pub listen: SocketAddr,
    /// Where `/metrics` and `/health` are served (never on the buyers' port); `None`: not
    /// served.
    pub admin_listen: Option<SocketAddr>,
    /// `--variable name=value` overrides (beat `SPIN_VARIABLE_*` and defaults).
    pub variables: HashMap<String, String>,
    /// Origins (`host:port`) the component's `origin_url` stands for, served in turn
    /// ([`crate::upstream`]); empty: `origin_url` alone.
    pub origins: Vec<String>,
    /// Deadline of a whole request, guest execution and outbound waits included.
    pub request_timeout: Duration,
    pub outbound_connect_timeout: Duration,
    pub outbound_first_byte_timeout: Duration,
    /// Memory bound of each key-value store (keys + values).
    pub kv_capacity_bytes: u64,
    /// Concurrent instances the pooling allocator reserves.
    pub max_instances: u32,
    /// Largest declared request body (`Content-Length`) the host lets through; components
    /// buffer bodies in their own memory.
    pub max_request_body: u64,
    /// Requests one instance may serve before it is dropped. `None`: the component's WASI
    /// generation decides (WASI 0.3: [`defaults::WASIP3_REUSE`]; WASI 0.2: 1, a fresh
    /// instance per request). Reusing a WASI 0.2 instance is for components that keep
    /// nothing of one request for the next in their own memory (flashgate's keeps none).
    pub reuse_instances: Option<u32>,
    /// Requests one WASI 0.3 instance may serve at once. `None`:
    /// [`defaults::WASIP3_CONCURRENCY`]. A WASI 0.2 instance serves one at a time.
    pub instance_concurrency: Option<u32>,
    /// An instance with nothing to do is dropped after this long.
    pub idle_instance_timeout: Duration,
    /// What the buyers' listener lets clients hold: connections in all and per address, the
    /// deadline and size of a request's head ([`flashgate_net`]).
    pub connections: ConnectionLimits,
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Extra certificates to trust for outbound `https://` (`--origin-ca`).
    pub origin_ca: Option<PathBuf>,
    /// Serve buyers over TLS (`--tls-cert`, `--tls-key`); usually the platform's job.
    pub tls: Option<flashgate_net::TlsFiles>,
}

impl HostSettings {
    pub fn new(manifest: PathBuf, listen: SocketAddr) -> Self {
        Self {
            manifest,
            listen,
            admin_listen: defaults::ADMIN_LISTEN.parse().ok(),
            variables: HashMap::new(),
            origins: Vec::new(),
            request_timeout: Duration::from_millis(defaults::REQUEST_TIMEOUT_MS),
            outbound_connect_timeout: Duration::from_millis(defaults::OUTBOUND_CONNECT_TIMEOUT_MS),
            outbound_first_byte_timeout: Duration::from_millis(
                defaults::OUTBOUND_FIRST_BYTE_TIMEOUT_MS,
            ),
            kv_capacity_bytes: defaults::KV_MIB * 1024 * 1024,
            max_instances: defaults::MAX_INSTANCES,
            max_request_body: defaults::MAX_REQUEST_BODY,
            reuse_instances: None,
            instance_concurrency: None,
            idle_instance_timeout: Duration::from_millis(defaults::IDLE_INSTANCE_TIMEOUT_MS),
            connections: ConnectionLimits::default(),
            origin_ca: None,
            tls: None,
            trusted_proxies: Vec::new(),
        }
    }

    /// The most requests one instance serves at once, whatever its generation.
    fn max_concurrency(&self) -> u32 {
        self.instance_concurrency.unwrap_or(defaults::WASIP3_CONCURRENCY).max(1)
    }
}

/// The WASI generation of a component, read off its export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasiGeneration {
    /// Exports `wasi:http/incoming-handler@0.2.x`.
    P2,
    /// Exports `wasi:http/handler@0.3.x`.
    P3,
}

/// One component: its pre-instance and how its instances are used.
struct Workers {
    pre: ProxyPre<RequestState>,
    engine: Engine,
    spec: Arc<ComponentSpec>,
    kv: KvStores,
    outbound: Outbound,
    stats: Arc<HostStats>,
    reuse: usize,
    concurrency: usize,
    idle_timeout: Duration,
    request_timeout: Duration,
}

impl HandlerState for Workers {
    type StoreData = RequestState;
    type WorkerExpiration = Expiration;
    type WorkerState = WorkerLimits;

    async fn instantiate(
        &self,
    ) -> wasmtime::Result<Instance<RequestState, Expiration, WorkerLimits>> {
        let state = RequestState::new(self.spec.clone(), self.kv.clone(), self.outbound.clone());
        let mut store = Store::new(&self.engine, state);
        // The guest yields at every epoch tick: the handler then checks the worker's
        // deadline ([`Expiration`]) and drops an instance that overran it.
        store.epoch_deadline_async_yield_and_update(1);
        // Instantiation runs guest start code: it counts against the request's deadline.
        let proxy =
            tokio::time::timeout(self.request_timeout, self.pre.instantiate_async(&mut store))
                .await
                .map_err(|_| wasmtime::format_err!("instantiation timed out"))??;
        self.stats.instantiations.inc();
        Ok(Instance {
            store,
            proxy,
            view: wasmtime_wasi_http::WasiHttpView::http,
            expiration: Expiration {
                idle_timeout: self.idle_timeout,
                request_timeout: self.request_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
            },
            state: WorkerLimits {
                reuse: self.reuse,
                concurrency: self.concurrency,
                request_timeout: self.request_timeout,
                stats: self.stats.clone(),
                started: AtomicUsize::new(0),
            },
        })
    }
}

/// When a worker's instance is dropped: idle for [`HostSettings::idle_instance_timeout`],
/// or busy past the request deadline since its latest request started (the guest is
/// stuck; every request it holds has already been answered by the host's own deadline).
struct Expiration {
    idle_timeout: Duration,
    request_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let timeout = match status {
            WorkerStatus::Idle => self.idle_timeout,
            WorkerStatus::Requests | WorkerStatus::PostReturn => self.request_timeout,
        };
        let Some(deadline) = start.checked_add(timeout) else { return Poll::Pending };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// How many requests a worker takes, in all and at once; counts its reuses.
struct WorkerLimits {
    reuse: usize,
    concurrency: usize,
    request_timeout: Duration,
    stats: Arc<HostStats>,
    /// Requests this worker's instance has started.
    started: AtomicUsize,
}

impl WorkerState for WorkerLimits {
    type StoreData = RequestState;
    /// When the request was handed to the handler (how long it waited for an instance).
    type RequestData = Instant;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse {
            ShouldAccept::Never
        } else if concurrent >= self.concurrency {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, RequestState>,
        handed: Instant,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        self.stats.instance_wait.observe(handed.elapsed().as_secs_f64());
        if self.started.fetch_add(1, Ordering::Relaxed) > 0 {
            self.stats.reuses.inc();
        }
        Box::pin(tokio::time::sleep(self.request_timeout))
    }

    fn drop(&self, store: Store<RequestState>, result: wasmtime::Result<()>) {
        match result {
            Ok(()) => {}
            // wasmtime-wasi-http (48, `handler.rs`, `Dropper`) reports a worker whose future
            // was dropped unfinished with this error: what every worker still running gets
            // when the runtime shuts down. A real panic has been reported by the panic hook.
            Err(e) if e.to_string() == "worker panicked" => {
                tracing::debug!("instance dropped unfinished (the host is stopping)");
            }
            Err(e) => tracing::warn!(error = ?e, "instance dropped after a failure"),
        }
        drop(store);
    }
}

struct Shared {
    manifest: Manifest,
    stats: Arc<HostStats>,
    /// Each component's id as a metrics label (ids come from the manifest: a fixed set).
    labels: HashMap<String, &'static str>,
    /// Set when shutdown begins: `/health` answers 503 from then on.
    draining: std::sync::atomic::AtomicBool,
    /// Each component's workers, by component id.
    served: HashMap<String, ProxyHandler<Workers>>,
    generations: HashMap<String, WasiGeneration>,
    kv: KvStores,
    request_timeout: Duration,
    max_request_body: u64,
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// A running edge host: bound, compiled, ready to serve.
pub struct EdgeHost {
    listener: flashgate_net::Server,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
}

/// The origins component `id`'s `origin_url` stands for, if the host was given any.
fn origin_pool(
    id: &str,
    spec: &ComponentSpec,
    origins: &[String],
) -> Result<Option<Arc<OriginPool>>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let Some(url) = spec.variables.get("origin_url") else { return Ok(None) };
    let name = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().cloned())
        .with_context(|| format!("component `{id}`: origin_url `{url}` has no host"))?;
    let members = origins
        .iter()
        .map(|o| {
            let o = o
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            o.parse().with_context(|| format!("--origin `{o}` is not host:port"))
        })
        .collect::<Result<Vec<_>>>()?;
    tracing::info!(component = %id, origin_url = %url, origins = ?origins, "origins served in turn");
    let scheme = url.split_once("://").map_or("http", |(s, _)| s).to_ascii_lowercase();
    Ok(Some(OriginPool::new(scheme, name, members)))
}

impl EdgeHost {
    /// Loads the manifest, compiles and pre-instantiates every component, and binds.
    pub async fn build(settings: HostSettings) -> Result<Self> {
        let manifest = Manifest::load(&settings.manifest, &settings.variables)?;
        let engine = engine(settings.max_instances, settings.max_concurrency())?;
        let mut linker = Linker::<RequestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::bindings::EdgeSpin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let labels: Vec<&str> = manifest
            .components
            .values()
            .flat_map(|c| c.key_value_stores.iter().map(String::as_str))
            .collect();
        let kv = KvStores::new(labels, settings.kv_capacity_bytes);
        let stats = Arc::<HostStats>::default();
        let client_tls = flashgate_net::tls::client_config(settings.origin_ca.as_deref())
            .context("outbound TLS (--origin-ca)")?;

        let mut served = HashMap::new();
        let mut generations = HashMap::new();
        for (id, spec) in &manifest.components {
            // flashgate's edge (the component that takes `edge_secret`) is checked before
            // anything is served: a missing or malformed variable stops the start, named.
            if spec.variables.contains_key("edge_secret") {
                let config = EdgeConfig::parse(|k| Ok(spec.variables.get(k).cloned()))
                    .with_context(|| format!("component `{id}` is misconfigured"))?;
                match &config.keys {
                    KeySource::Inline(keys) => keys
                        .verifier
                        .check_keys()
                        .with_context(|| format!("component `{id}`: jwt_jwks holds a bad key"))?,
                    KeySource::Url { url, .. } => {
                        if !url.starts_with("https://") {
                            tracing::warn!(component = %id, %url, "the JWKS URL is not HTTPS: use HTTPS in production");
                        }
                        if !outbound_allows(&spec.allowed_outbound, url) {
                            anyhow::bail!(
                                "component `{id}`: jwt_jwks_url {url} is not among its \
                                 allowed_outbound_hosts (set the `jwks_origin` variable)"
                            );
                        }
                    }
                }
            }
            let started = Instant::now();
            let component = Component::from_file(&engine, &spec.source)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "component `{id}`: cannot load {} (build it with scripts/build-edge.sh)",
                        spec.source.display()
                    )
                })?;
            let instance = linker.instantiate_pre(&component)?;
            let (pre, generation) =
                match wasmtime_wasi_http::p3::bindings::ServicePre::new(instance.clone()) {
                    Ok(pre) => (ProxyPre::P3(pre), WasiGeneration::P3),
                    Err(_) => {
                        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance)
                            .map_err(anyhow::Error::from)
                            .with_context(|| {
                                format!("component `{id}` is not a wasi:http proxy")
                            })?;
                        (ProxyPre::P2(pre), WasiGeneration::P2)
                    }
                };
            let (reuse, concurrency) = match generation {
                WasiGeneration::P3 => (
                    settings.reuse_instances.unwrap_or(defaults::WASIP3_REUSE),
                    settings.max_concurrency(),
                ),
                WasiGeneration::P2 => (settings.reuse_instances.unwrap_or(1), 1),
            };
            tracing::info!(
                component = %id,
                ?generation,
                reuse,
                concurrency,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "component ready"
            );
            let mut outbound = Outbound::new(
                spec.allowed_outbound.clone().into(),
                settings.outbound_connect_timeout,
                settings.outbound_first_byte_timeout,
                client_tls.clone(),
            );
            if let Some(pool) = origin_pool(id, spec, &settings.origins)? {
                pool.check_health(client_tls.clone());
                outbound = outbound.with_origins(pool);
            }
            let spec = Arc::new(spec.clone());
            let workers = Workers {
                pre,
                engine: engine.clone(),
                spec: spec.clone(),
                kv: kv.clone(),
                outbound,
                stats: stats.clone(),
                reuse: reuse.max(1) as usize,
                concurrency: concurrency as usize,
                idle_timeout: settings.idle_instance_timeout,
                request_timeout: settings.request_timeout,
            };
            served.insert(id.clone(), ProxyHandler::new(workers));
            generations.insert(id.clone(), generation);
        }

        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let server_tls = match &settings.tls {
            Some(files) => Some(files.server_config().context("serving TLS (--tls-cert)")?),
            None => None,
        };
        let listener =
            flashgate_net::Server::new(listener, settings.connections).with_tls(server_tls);
        let admin = match settings.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener {addr}"))?,
            ),
            None => None,
        };
        spawn_epoch_ticker(&engine);
        // Leaked once per component of the manifest: label values that live as long as the
        // process, as the host does.
        let labels = served
            .keys()
            .map(|id: &String| (id.clone(), &*Box::leak(id.clone().into_boxed_str())))
            .collect();
        let shared = Arc::new(Shared {
            manifest,
            stats,
            labels,
            draining: std::sync::atomic::AtomicBool::new(false),
            served,
            generations,
            kv,
            request_timeout: settings.request_timeout,
            max_request_body: settings.max_request_body,
            trusted_proxies: settings.trusted_proxies.clone(),
        });
        Ok(Self { listener, admin, shared })
    }

    /// Where `/metrics` and `/health` are served, if they are.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The WASI generation of component `id`, as read off its export.
    pub fn generation(&self, id: &str) -> Option<WasiGeneration> {
        self.shared.generations.get(id).copied()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The application's key-value stores (for operators and tests).
    pub fn kv(&self) -> KvStores {
        self.shared.kv.clone()
    }

    /// The host's counters (they keep counting while it serves).
    pub fn stats(&self) -> Arc<HostStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` resolves, then drains open connections for up to 10 s.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let admin =
            self.admin.map(|listener| tokio::spawn(serve_admin(listener, self.shared.clone())));
        let shared = self.shared.clone();
        let draining = async {
            shutdown.await;
            shared.draining.store(true, Ordering::Release);
        };
        let shared = self.shared.clone();
        self.listener
            .serve(
                move |peer| {
                    let shared = shared.clone();
                    hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                handle_counted(shared, peer, req).await,
                            )
                        }
                    })
                },
                draining,
                Duration::from_secs(10),
            )
            .await;
        if let Some(admin) = admin {
            admin.abort();
        }
        Ok(())
    }
}

/// The engine: component-model async on (WASI 0.3), the pooling allocator sized for
/// `max_instances` instances, each running up to `concurrency` requests on its own stack.
fn engine(max_instances: u32, concurrency: u32) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 4)
        .total_memories(max_instances * 4)
        .total_tables(max_instances * 4)
        .total_stacks(max_instances.saturating_mul(concurrency + 1))
        .max_memory_size(64 << 20);
    let mut config = Config::new();
    config
        .wasm_component_model_async(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // `FLASHGATE_EDGE_PERF_MAP=1`: name the compiled guest functions for `perf`
    // (/tmp/perf-<pid>.map), so a profile shows where the component's own time goes.
    if std::env::var_os("FLASHGATE_EDGE_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Ok(Engine::new(&config)?)
}

/// One ticker per engine; it stops when the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("flashgate-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker");
}

/// Whether a component allowed to call `rules` may fetch `url`.
fn outbound_allows(rules: &[crate::manifest::OutboundRule], url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else { return false };
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    rules.iter().any(|rule| rule.allows(scheme, host, port))
}

/// Serves `/metrics` and `/health` on the admin listener until aborted.
async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let shared = shared.clone();
            async move { Ok::<_, std::convert::Infallible>(admin_answer(&shared, &req)) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// The admin listener's answers: `GET /metrics` (OpenMetrics text), `GET /health` (200 while
/// serving, 503 once draining), 404 for anything else.
fn admin_answer(shared: &Shared, req: &hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/metrics") => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.stats.render(),
        ),
        (&http::Method::GET, "/health") => {
            // Component ids are Spin manifest ids (kebab-case): nothing to escape.
            let mut components: Vec<String> =
                shared.labels.values().map(|id| format!("\"{id}\"")).collect();
            components.sort_unstable();
            if shared.draining.load(Ordering::Acquire) {
                let problem = Problem::unavailable("the edge host is shutting down", 1);
                (503, CONTENT_TYPE, String::from_utf8_lossy(&problem.to_json()).into_owned())
            } else {
                let body =
                    format!("{{\"status\":\"ok\",\"components\":[{}]}}", components.join(","));
                (200, "application/json", body)
            }
        }
        _ => {
            let problem = Problem::not_found("the admin listener serves /metrics and /health");
            (404, CONTENT_TYPE, String::from_utf8_lossy(&problem.to_json()).into_owned())
        }
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("an admin answer is valid")
}

/// Answers one request and records it: its component, status, the component's decision
/// (taken off the answer) or `host` for an answer the host made itself, and how long it took.
async fn handle_counted(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut req: hyper::Request<Incoming>,
) -> hyper::Response<WasiBody> {
    let started = Instant::now();
    // The arrival stamp the component takes (`flashgate_core::arrival`): before the request
    // waits for an instance. Whatever a client sent under this name is replaced.
    let accepted_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    req.headers_mut().insert(HEADER_HOST_ACCEPTED, http::HeaderValue::from(accepted_us));
    let spec = shared.manifest.route(req.uri().path());
    let component = spec.and_then(|s| shared.labels.get(&s.id)).copied();
    let mut response = match spec {
        Some(spec) => handle(&shared, spec, peer, req).await,
        None => host_problem(&req, Problem::not_found("no route for this path")),
    };
    let decision = match response.headers_mut().remove(HEADER_EDGE_DECISION) {
        Some(value) => decision_label(value.to_str().unwrap_or_default()),
        None => "host",
    };
    let labels = RequestLabels {
        component: component.unwrap_or("none"),
        status: response.status().as_u16(),
        decision,
    };
    shared.stats.requests.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// Runs a stamped request routed to `spec` through its component.
async fn handle(
    shared: &Shared,
    spec: &ComponentSpec,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<WasiBody> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        let detail = format!("the body may be at most {} bytes", shared.max_request_body);
        Problem::new(413, "body-too-large", "Request body too large", detail)
    };
    if declared.is_some_and(|len| len > shared.max_request_body) {
        let (parts, body) = req.into_parts();
        flashgate_net::discard_rest(body);
        return refused_body(parts.headers.get(HEADER_TRACEPARENT), too_large());
    }
    // A body without a declared length (chunked) is read here, up to the same bound and
    // within the request's deadline, so no component buffers more than a declared body may
    // be (security review, finding 4: 40 MiB chunked trapped an instance).
    let mut req = if declared.is_none()
        && req.headers().contains_key(http::header::TRANSFER_ENCODING)
    {
        let (mut parts, mut body) = req.into_parts();
        let max = shared.max_request_body as usize;
        let mut bytes = bytes::BytesMut::new();
        let read = tokio::time::timeout(shared.request_timeout, async {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    if bytes.len() + data.len() > max {
                        return Ok(false);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok::<_, hyper::Error>(true)
        })
        .await;
        match read {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                flashgate_net::discard_rest(body);
                return refused_body(parts.headers.get(HEADER_TRACEPARENT), too_large());
            }
            Ok(Err(_)) | Err(_) => {
                let problem = Problem::new(
                    400,
                    "validation",
                    "Bad request",
                    "the body did not arrive whole in time",
                )
                .with("field", "body");
                return refused_body(parts.headers.get(HEADER_TRACEPARENT), problem);
            }
        }
        let bytes = bytes.freeze();
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        parts.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
        hyper::Request::from_parts(
            parts,
            Full::new(bytes).map_err(|never| match never {}).boxed_unsync(),
        )
    } else {
        req.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync())
    };
    let workers = &shared.served[&spec.id];
    // What Spin tells components about the client: the peer, or behind trusted proxies the
    // address they forwarded for.
    let forwarded = req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let client = crate::forwarded::client_addr(peer, forwarded, &shared.trusted_proxies);
    if let Ok(addr) = http::HeaderValue::from_str(&client.to_string()) {
        req.headers_mut().insert("spin-client-addr", addr);
    }
    // Kept for answers the host must make itself, when the component could not.
    let traceparent = req.headers().get(HEADER_TRACEPARENT).cloned();
    match tokio::time::timeout(shared.request_timeout, serve(workers, req)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if e.downcast_ref::<AtCapacity>().is_some() => {
            tracing::warn!(component = %spec.id, error = ?e, "at capacity");
            problem_response(
                traceparent.as_ref(),
                Problem::unavailable("the edge is at capacity", 1),
            )
        }
        Ok(Err(e)) if e.downcast_ref::<Overran>().is_some() => {
            tracing::warn!(component = %spec.id, "the component overran the request deadline");
            problem_response(traceparent.as_ref(), Problem::unavailable("the edge timed out", 1))
        }
        Ok(Err(e)) => {
            tracing::error!(component = %spec.id, error = ?e, "component failed");
            problem_response(traceparent.as_ref(), Problem::internal())
        }
        Err(_) => {
            tracing::warn!(component = %spec.id, "request deadline exceeded");
            problem_response(traceparent.as_ref(), Problem::unavailable("the edge timed out", 1))
        }
    }
}

/// Hands the request to the component's workers (a free instance, or a new one).
async fn serve(
    workers: &ProxyHandler<Workers>,
    req: hyper::Request<RequestBody>,
) -> Result<hyper::Response<WasiBody>> {
    match workers.handle(Instant::now(), req).await {
        Ok(response) => Ok(response),
        Err(e) if e.is::<InstantiationError<Instant>>() => {
            Err(anyhow::Error::from(e).context(AtCapacity))
        }
        Err(e) if e.is::<ExpirationError>() => Err(anyhow::Error::from(e).context(Overran)),
        Err(e) => Err(anyhow::Error::from(e)),
    }
}

/// A request's body as the component's workers take it.
type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// Marks an error as "no instance could be had" (see [`handle`]).
#[derive(Debug, Clone, Copy)]
struct AtCapacity;

impl std::fmt::Display for AtCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no instance slot is free")
    }
}

/// Marks an error as "the component overran the request deadline" (see [`handle`]).
#[derive(Debug, Clone, Copy)]
struct Overran;

impl std::fmt::Display for Overran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the component overran the request deadline")
    }
}

/// A problem answered before the body was read whole: the connection closes after it (what is
/// left of the body is being discarded, not parsed as a next request).
fn refused_body(
    traceparent: Option<&http::HeaderValue>,
    problem: Problem,
) -> hyper::Response<WasiBody> {
    let mut response = problem_response(traceparent, problem);
    response
        .headers_mut()
        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

fn host_problem(req: &hyper::Request<Incoming>, problem: Problem) -> hyper::Response<WasiBody> {
    problem_response(req.headers().get(HEADER_TRACEPARENT), problem)
}

/// A problem+json answer made by the host itself, with a trace id like every answer.
fn problem_response(
    traceparent: Option<&http::HeaderValue>,
    problem: Problem,
) -> hyper::Response<WasiBody> {
    let incoming = traceparent.and_then(|v| v.to_str().ok());
    let trace_id = TraceContext::continue_or_start(incoming, rand::random()).trace_id_hex();
    let status = problem.status;
    let mut builder = hyper::Response::builder()
        .status(status)
        .header("content-type", CONTENT_TYPE)
        .header(HEADER_TRACE_ID, trace_id.clone());
    for (name, value) in problem.headers() {
        builder = builder.header(name, value);
    }
    let body = problem.with_trace_id(trace_id).to_json();
    builder
        .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync())
        .expect("a problem response is valid")
}
