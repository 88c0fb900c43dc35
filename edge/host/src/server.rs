//! The HTTP server: routes each request to its component and runs it in an instance from a
//! pre-instantiated `ProxyPre`, under the pooling allocator and an epoch deadline.
//!
//! By default every request gets a fresh `Store` and instance, as `spin up` does. With
//! [`HostSettings::reuse_instances`] above 1, an instance that answered cleanly (no trap, no
//! resource left in its table) goes back to a small pool of warm instances and serves up to
//! that many requests: the per-request instantiation and memory reset are what dominate the
//! edge's cost (see `docs/benchmark-notes.md`).

use crate::kv::KvStores;
use crate::manifest::{ComponentSpec, Manifest};
use crate::state::{Outbound, RequestState};
use anyhow::{Context, Result};
use bytes::Bytes;
use flashgate_core::arrival::HEADER_HOST_ACCEPTED;
use flashgate_core::edge_config::EdgeConfig;
use flashgate_core::problem::{CONTENT_TYPE, Problem};
use flashgate_core::signing::{HEADER_TRACE_ID, HEADER_TRACEPARENT};
use flashgate_core::trace::TraceContext;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How often the epoch advances; per-request wasm deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct HostSettings {
    pub manifest: PathBuf,
    pub listen: SocketAddr,
    /// `--variable name=value` overrides (beat `SPIN_VARIABLE_*` and defaults).
    pub variables: HashMap<String, String>,
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
    /// Requests one instance may serve before it is dropped. 1 (the default) is a fresh
    /// instance per request, as `spin up` does. Above 1, the component's memory outlives a
    /// request, so only components that keep nothing of one request for the next (flashgate's
    /// own keeps all its state in the key-value store) should be served this way.
    pub reuse_instances: u32,
    /// Idle warm instances kept per component when instances are reused.
    pub warm_instances: usize,
}

impl HostSettings {
    pub fn new(manifest: PathBuf, listen: SocketAddr) -> Self {
        use crate::settings::defaults;
        Self {
            manifest,
            listen,
            variables: HashMap::new(),
            request_timeout: Duration::from_millis(defaults::REQUEST_TIMEOUT_MS),
            outbound_connect_timeout: Duration::from_millis(defaults::OUTBOUND_CONNECT_TIMEOUT_MS),
            outbound_first_byte_timeout: Duration::from_millis(
                defaults::OUTBOUND_FIRST_BYTE_TIMEOUT_MS,
            ),
            kv_capacity_bytes: defaults::KV_MIB * 1024 * 1024,
            max_instances: defaults::MAX_INSTANCES,
            max_request_body: defaults::MAX_REQUEST_BODY,
            reuse_instances: defaults::REUSE_INSTANCES,
            warm_instances: defaults::WARM_INSTANCES,
        }
    }
}

struct Served {
    pre: ProxyPre<RequestState>,
    spec: Arc<ComponentSpec>,
    outbound: Outbound,
    warm: Arc<WarmPool>,
}

/// An instantiated component with its store, kept for the next request.
struct Warm {
    store: Store<RequestState>,
    proxy: Proxy,
    served: u32,
}

/// Idle instances of one component. A request takes one (or instantiates a new one) and
/// puts it back when it answered cleanly and may serve again.
struct WarmPool {
    idle: Mutex<Vec<Warm>>,
    reuse: u32,
    capacity: usize,
}

impl WarmPool {
    fn new(reuse: u32, capacity: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), reuse, capacity }
    }

    fn take(&self) -> Option<Warm> {
        if self.reuse <= 1 {
            return None;
        }
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    /// Keeps `warm` if it may serve again: under its request budget, its resource table
    /// empty (the guest dropped every handle of the last request) and the pool not full.
    fn put(&self, warm: Warm) {
        if warm.served >= self.reuse || !warm.store.data().table.is_empty() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.capacity {
            idle.push(warm);
        }
    }

    /// Drops every idle instance, giving its pooling-allocator slot back.
    fn clear(&self) -> usize {
        let drained: Vec<Warm> =
            self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..).collect();
        drained.len()
    }
}

/// Counters of the host's own work, for operators and tests.
#[derive(Debug, Default)]
pub struct HostStats {
    instantiated: AtomicU64,
}

impl HostStats {
    /// Component instances created so far (one per request unless instances are reused).
    pub fn instantiated(&self) -> u64 {
        self.instantiated.load(Ordering::Relaxed)
    }
}

struct Shared {
    manifest: Manifest,
    stats: Arc<HostStats>,
    served: HashMap<String, Arc<Served>>,
    kv: KvStores,
    engine: Engine,
    request_timeout: Duration,
    max_request_body: u64,
}

/// A running edge host: bound, compiled, ready to serve.
pub struct EdgeHost {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl EdgeHost {
    /// Loads the manifest, compiles and pre-instantiates every component, and binds.
    pub async fn build(settings: HostSettings) -> Result<Self> {
        let manifest = Manifest::load(&settings.manifest, &settings.variables)?;
        let engine = engine(settings.max_instances)?;
        let mut linker = Linker::<RequestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::bindings::EdgeSpin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let labels: Vec<&str> = manifest
            .components
            .values()
            .flat_map(|c| c.key_value_stores.iter().map(String::as_str))
            .collect();
        let kv = KvStores::new(labels, settings.kv_capacity_bytes);

        let mut served = HashMap::new();
        for (id, spec) in &manifest.components {
            // flashgate's edge (the component that takes `edge_secret`) is checked before
            // anything is served: a missing or malformed variable stops the start, named.
            if spec.variables.contains_key("edge_secret") {
                let config = EdgeConfig::parse(|k| Ok(spec.variables.get(k).cloned()))
                    .with_context(|| format!("component `{id}` is misconfigured"))?;
                config
                    .verifier
                    .check_keys()
                    .with_context(|| format!("component `{id}`: jwt_jwks holds a bad key"))?;
            }
            let started = std::time::Instant::now();
            let component = Component::from_file(&engine, &spec.source)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "component `{id}`: cannot load {} (build it with scripts/build-edge.sh)",
                        spec.source.display()
                    )
                })?;
            let pre = ProxyPre::new(linker.instantiate_pre(&component)?)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component `{id}` is not a wasi:http proxy"))?;
            tracing::info!(component = %id, elapsed_ms = started.elapsed().as_millis() as u64, "component ready");
            let outbound = Outbound::new(
                spec.allowed_outbound.clone().into(),
                settings.outbound_connect_timeout,
                settings.outbound_first_byte_timeout,
            );
            let warm = Arc::new(WarmPool::new(settings.reuse_instances, settings.warm_instances));
            let served_one = Served { pre, spec: Arc::new(spec.clone()), outbound, warm };
            served.insert(id.clone(), Arc::new(served_one));
        }

        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        spawn_epoch_ticker(&engine);
        let shared = Arc::new(Shared {
            manifest,
            stats: Arc::default(),
            served,
            kv,
            engine,
            request_timeout: settings.request_timeout,
            max_request_body: settings.max_request_body,
        });
        Ok(Self { listener, shared })
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
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(shared, peer, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(10)) => {
                tracing::warn!("connections still open after 10 s; closing");
            }
        }
        Ok(())
    }
}

fn engine(max_instances: u32) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 4)
        .total_memories(max_instances * 4)
        .total_tables(max_instances * 4)
        .total_stacks(max_instances)
        .max_memory_size(64 << 20);
    let mut config = Config::new();
    config.epoch_interruption(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut req: hyper::Request<Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    // The arrival stamp the component takes (`flashgate_core::arrival`): before the request
    // waits for an instance. Whatever a client sent under this name is replaced.
    let accepted_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    req.headers_mut().insert(HEADER_HOST_ACCEPTED, http::HeaderValue::from(accepted_us));
    let Some(spec) = shared.manifest.route(req.uri().path()) else {
        return host_problem(&req, Problem::not_found("no route for this path"));
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > shared.max_request_body) {
        let detail = format!("the body may be at most {} bytes", shared.max_request_body);
        return host_problem(
            &req,
            Problem::new(413, "body-too-large", "Request body too large", detail),
        );
    }
    let served = &shared.served[&spec.id];
    // What Spin tells components about the client.
    if let Ok(addr) = http::HeaderValue::from_str(&peer.to_string()) {
        req.headers_mut().insert("spin-client-addr", addr);
    }
    // Kept for answers the host must make itself, when the component could not.
    let traceparent = req.headers().get(HEADER_TRACEPARENT).cloned();
    match tokio::time::timeout(shared.request_timeout, serve(&shared, served, req)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if e.downcast_ref::<AtCapacity>().is_some() => {
            tracing::warn!(component = %spec.id, error = ?e, "at capacity");
            problem_response(
                traceparent.as_ref(),
                Problem::unavailable("the edge is at capacity", 1),
            )
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

async fn serve(
    shared: &Arc<Shared>,
    served: &Arc<Served>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>> {
    let ticks = (shared.request_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let served = served.clone();
    let shared = shared.clone();
    // The guest may keep running (streaming a body) after it has sent the head.
    let task = tokio::spawn(async move {
        let mut warm = match served.warm.take() {
            Some(warm) => warm,
            None => instantiate(&shared, &served, ticks).await?,
        };
        let store = &mut warm.store;
        store.set_epoch_deadline(ticks);
        let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let handled = warm
            .proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut warm.store, incoming, out)
            .await;
        warm.served += 1;
        match handled {
            Ok(()) => {
                served.warm.put(warm);
                Ok(())
            }
            // A trapped instance is never used again.
            Err(e) => Err(anyhow::Error::from(e)),
        }
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(anyhow::anyhow!("guest answered with an error code: {code:?}")),
        Err(_) => match task.await {
            Ok(Ok(())) => Err(anyhow::anyhow!("guest never set a response")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.into()),
        },
    }
}

/// A new instance in a new store. When the pooling allocator has no slot left, idle warm
/// instances (of any component) give theirs back and the instantiation is tried once more;
/// failing that, it is a capacity problem, not a bug.
async fn instantiate(shared: &Shared, served: &Served, ticks: u64) -> Result<Warm> {
    let mut retried = false;
    loop {
        let state =
            RequestState::new(served.spec.clone(), shared.kv.clone(), served.outbound.clone());
        let mut store = Store::new(&shared.engine, state);
        store.epoch_deadline_trap();
        // Instantiation runs guest start code: it counts against the request's deadline.
        store.set_epoch_deadline(ticks);
        match served.pre.instantiate_async(&mut store).await {
            Ok(proxy) => {
                shared.stats.instantiated.fetch_add(1, Ordering::Relaxed);
                return Ok(Warm { store, proxy, served: 0 });
            }
            Err(e) => {
                let freed: usize = shared.served.values().map(|s| s.warm.clear()).sum();
                if retried || freed == 0 {
                    return Err(anyhow::Error::from(e).context(AtCapacity));
                }
                retried = true;
            }
        }
    }
}

/// Marks an error as "no instance could be had" (see [`handle`]).
#[derive(Debug, Clone, Copy)]
struct AtCapacity;

impl std::fmt::Display for AtCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no instance slot is free")
    }
}

fn host_problem(
    req: &hyper::Request<Incoming>,
    problem: Problem,
) -> hyper::Response<HyperOutgoingBody> {
    problem_response(req.headers().get(HEADER_TRACEPARENT), problem)
}

/// A problem+json answer made by the host itself, with a trace id like every answer.
fn problem_response(
    traceparent: Option<&http::HeaderValue>,
    problem: Problem,
) -> hyper::Response<HyperOutgoingBody> {
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
