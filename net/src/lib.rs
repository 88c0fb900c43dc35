//! The accept loop both of flashgate's HTTP servers run: the edge host's buyer port and the
//! origin.
//!
//! An outside review (issue #30, finding 1) held ~20,000 half-sent requests open from one
//! client and stopped the edge: no deadline for a request's head, no cap on connections,
//! and an accept loop that spun on "too many open files". Here every connection gets
//!
//! - a deadline for each request's head, counted from when the connection starts waiting
//!   for it, so a kept-alive connection idling before its next request is closed too
//!   ([`ConnectionLimits::header_read_timeout`]);
//! - a bound on the head's size ([`ConnectionLimits::max_header_bytes`]; hyper answers 431);
//! - a place under two caps: open connections in all ([`ConnectionLimits::max_connections`]:
//!   at the cap the loop stops accepting and the kernel's backlog holds new ones until a
//!   place frees) and per client address ([`ConnectionLimits::max_per_address`]: past it a
//!   new connection from that address is closed at once, so one client cannot take the
//!   places of all the others);
//!
//! and a failed accept (out of descriptors, say) backs off from 5 ms to 1 s instead of
//! spinning, logging at most once a second. A body refused part-way (413) is read on and
//! thrown away for a bounded while ([`discard_rest`]), so the client that is still sending
//! it reads the answer instead of a reset. With [`Server::with_tls`] connections are
//! TLS ([`tls`]), the handshake held to the head's deadline. HTTP/1.1 only: neither server
//! is reached over HTTP/2 (the edge host's clients and the edge's forwards to the origin speak HTTP/1.1).

pub mod tls;

pub use tls::{TlsError, TlsFiles};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How much of a refused body [`discard_rest`] reads on before it gives up: a client
/// sending more than this, or for longer, gets its connection closed instead.
pub const DISCARD_BYTES: usize = 64 << 20;
/// See [`DISCARD_BYTES`].
pub const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads what is left of a request's body and drops it, in the background, up to
/// [`DISCARD_BYTES`] and [`DISCARD_TIME`]: hand it the body of a request answered before
/// its body was read (a 413, say). Closing with unread bytes in the socket makes the kernel
/// send a reset, and a client still writing its body then sees "broken pipe" or "connection
/// reset" rather than the answer ("lingering close", as nginx and Apache do it).
pub fn discard_rest(body: Incoming) {
    use hyper::body::Body as _;
    tokio::spawn(async move {
        let mut body = std::pin::pin!(body);
        let mut read = 0usize;
        let drain = std::future::poll_fn(|cx| {
            loop {
                match body.as_mut().poll_frame(cx) {
                    std::task::Poll::Ready(Some(Ok(frame))) => {
                        read += frame.data_ref().map_or(0, |d| d.len());
                        if read > DISCARD_BYTES {
                            return std::task::Poll::Ready(());
                        }
                    }
                    std::task::Poll::Ready(_) => return std::task::Poll::Ready(()),
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                }
            }
        });
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
}

/// The defaults of [`ConnectionLimits`] (and of the servers' flags).
pub mod defaults {
    /// Open connections, from all clients together.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Open connections from one client address.
    pub const MAX_PER_ADDRESS: usize = 512;
    /// How long a request's head may take to arrive (ms).
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    /// The largest request head (request line and headers), in bytes.
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
}

/// What one server lets its clients hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_address: usize,
    pub header_read_timeout: Duration,
    /// At least 8 KiB (hyper's smallest read buffer).
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: defaults::MAX_CONNECTIONS,
            max_per_address: defaults::MAX_PER_ADDRESS,
            header_read_timeout: Duration::from_millis(defaults::HEADER_READ_TIMEOUT_MS),
            max_header_bytes: defaults::MAX_HEADER_BYTES,
        }
    }
}

/// [`ConnectionLimits`] as command-line flags (each with its environment variable), for a
/// server's arguments to `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Open connections at most, from all clients; at the cap new ones wait in the kernel's
    /// backlog until a place frees.
    #[arg(long, env = "FLASHGATE_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Open connections at most from one client address; past it a new one is closed at once.
    #[arg(
        long,
        env = "FLASHGATE_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = defaults::MAX_PER_ADDRESS
    )]
    pub max_connections_per_address: usize,
    /// How long a request's head may take to arrive, from when the connection waits for it
    /// (an idle kept-alive connection is closed after this long too: clients' connection
    /// pools should idle less, as the edge host's towards the origin does).
    #[arg(long, env = "FLASHGATE_HEADER_READ_TIMEOUT_MS", default_value_t = defaults::HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,
    /// The largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, env = "FLASHGATE_MAX_HEADER_BYTES", default_value_t = defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Serve TLS with this certificate chain (PEM; with `--tls-key`). Unset: plain HTTP, for a
    /// listener behind a TLS-terminating proxy or on a private network.
    #[arg(long, env = "FLASHGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "FLASHGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ConnectionArgs {
    /// The TLS files asked for, if any.
    pub fn tls(&self) -> Option<TlsFiles> {
        Some(TlsFiles { cert: self.tls_cert.clone()?, key: self.tls_key.clone()? })
    }
}

impl From<&ConnectionArgs> for ConnectionLimits {
    fn from(a: &ConnectionArgs) -> Self {
        Self {
            max_connections: a.max_connections.max(1),
            max_per_address: a.max_connections_per_address.max(1),
            header_read_timeout: Duration::from_millis(a.header_read_timeout_ms.max(1)),
            max_header_bytes: a.max_header_bytes,
        }
    }
}

/// What the loop did, for the servers' metrics.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once: their address already had its share.
    pub refused: AtomicU64,
    /// Failed accepts (each followed by a back-off).
    pub accept_errors: AtomicU64,
}

/// Open connections per client address.
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One connection's place: returned (per address and in all) when the connection ends.
struct Place {
    addresses: Arc<PerAddress>,
    ip: IpAddr,
    stats: Arc<ConnectionStats>,
    _permit: OwnedSemaphorePermit,
}

impl PerAddress {
    fn enter(
        self: &Arc<Self>,
        ip: IpAddr,
        permit: OwnedSemaphorePermit,
        stats: &Arc<ConnectionStats>,
    ) -> Option<Place> {
        let mut open = self.open.lock().expect("per-address lock");
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Place { addresses: self.clone(), ip, stats: stats.clone(), _permit: permit })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.addresses.open.lock().expect("per-address lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The back-off after a failed accept: 5 ms doubling to 1 s, reset by a success; one log
/// line a second at most, saying how many it left out.
#[derive(Debug, Default)]
struct AcceptBackoff {
    delay: Duration,
    logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// The wait after one more failure, and whether to log it (at `now`).
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.delay =
            if self.delay.is_zero() { Self::FIRST } else { (self.delay * 2).min(Self::MAX) };
        let log = self.logged.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if log {
            self.logged = Some(now);
            let left_out = std::mem::take(&mut self.unlogged);
            (self.delay, Some(left_out))
        } else {
            self.unlogged += 1;
            (self.delay, None)
        }
    }

    fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }
}

/// A bound listener with its limits, not yet serving.
pub struct Server {
    listener: TcpListener,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Self { listener, limits, stats: Arc::default(), tls: None }
    }

    /// Serves TLS with `config` (plain HTTP when `None`).
    pub fn with_tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = config.map(tokio_rustls::TlsAcceptor::from);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The loop's counters (they keep counting while it serves).
    pub fn stats(&self) -> Arc<ConnectionStats> {
        self.stats.clone()
    }

    /// Serves each connection with the service `make_service` gives for its peer, until
    /// `shutdown` resolves; then stops accepting and lets open connections finish their
    /// requests for up to `drain` (kept-alive ones are closed after their current request).
    pub async fn serve<F, S, B>(
        self,
        make_service: F,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) where
        F: Fn(SocketAddr) -> S,
        S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Self { listener, limits, stats, tls } = self;
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let places = Arc::new(Semaphore::new(limits.max_connections));
        let addresses =
            Arc::new(PerAddress { open: Mutex::default(), max: limits.max_per_address });
        let graceful = GracefulShutdown::new();
        let mut backoff = AcceptBackoff::default();
        tokio::pin!(shutdown);
        loop {
            // A place first: at the cap the listener is not read, and the kernel's backlog
            // (not this process's descriptors) holds whoever comes next.
            let permit = tokio::select! {
                permit = places.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff.succeeded();
                        accepted
                    }
                    Err(e) => {
                        stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        let (wait, log) = backoff.failed(Instant::now());
                        if let Some(left_out) = log {
                            tracing::warn!(error = %e, retry_in = ?wait, left_out, "accept failed");
                        }
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Some(place) = addresses.enter(peer.ip(), permit, &stats) else {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "connection refused: its address has its share open");
                drop(stream);
                continue;
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let service = make_service(peer);
            let Some(acceptor) = tls.clone() else {
                let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _place = place;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
                continue;
            };
            // The handshake is part of the head: it gets the head's deadline.
            let (http1, watcher) = (http1.clone(), graceful.watcher());
            let deadline = limits.header_read_timeout;
            tokio::spawn(async move {
                let _place = place;
                let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake past the head's deadline");
                        return;
                    }
                };
                let conn = watcher.watch(http1.serve_connection(TokioIo::new(stream), service));
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(drain) => {
                tracing::warn!(limit = ?drain, "connections still open after the drain limit; closing");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    /// A server answering "ok" to everything, with `limits`; stops when the test ends.
    async fn serving(limits: ConnectionLimits) -> (SocketAddr, Arc<ConnectionStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::new(listener, limits);
        let stats = server.stats();
        (answering_ok(server), stats)
    }

    /// Serves "ok" to everything on `server`; its address.
    fn answering_ok(server: Server) -> SocketAddr {
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.serve(
            |_| {
                hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                })
            },
            std::future::pending(),
            Duration::from_secs(1),
        ));
        addr
    }

    /// A connection to `addr` from the loopback address `from` (127.0.0.0/8 is all local).
    async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket.connect(addr).await.unwrap()
    }

    async fn get(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads until the server closes the connection (0) or `within` passes (None).
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<usize> {
        let mut buf = vec![0; 1024];
        let mut total = 0;
        let read = tokio::time::timeout(within, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        read.await.ok()
    }

    #[tokio::test]
    async fn a_head_that_never_finishes_is_closed_at_the_deadline() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        let (addr, _) = serving(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
        assert!(closed_within(&mut slow, Duration::from_secs(10)).await.is_some());
        // An idle kept-alive connection too, after its first answer.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut idle).await.starts_with("HTTP/1.1 200"));
        assert!(closed_within(&mut idle, Duration::from_secs(10)).await.is_some());
    }

    #[tokio::test]
    async fn a_head_over_the_bound_is_refused() {
        let (addr, _) = serving(ConnectionLimits::default()).await;
        let mut big = TcpStream::connect(addr).await.unwrap();
        let header = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(200_000));
        let _ = big.write_all(header.as_bytes()).await;
        let mut buf = vec![0; 1024];
        let n = big.read(&mut buf).await.unwrap_or(0);
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"), "{n} bytes");
    }

    #[tokio::test]
    async fn one_address_gets_its_share_and_the_others_are_still_served() {
        let limits = ConnectionLimits { max_per_address: 3, ..ConnectionLimits::default() };
        let (addr, stats) = serving(limits).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = connect_from([127, 0, 0, 2], addr).await;
            c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            held.push(c);
        }
        // The fourth from that address is closed at once, without an answer.
        let mut over = connect_from([127, 0, 0, 2], addr).await;
        assert_eq!(closed_within(&mut over, Duration::from_secs(10)).await, Some(0));
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        // Another address is served meanwhile.
        let mut other = connect_from([127, 0, 0, 3], addr).await;
        assert!(get(&mut other).await.starts_with("HTTP/1.1 200"));
        // A place freed is a place again.
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut again = connect_from([127, 0, 0, 2], addr).await;
            let _ = again.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = vec![0; 64];
            if matches!(again.read(&mut buf).await, Ok(n) if n > 0) {
                break;
            }
            assert!(Instant::now() < deadline, "the freed place was not given back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_waits_for_a_place() {
        let limits = ConnectionLimits { max_connections: 2, ..ConnectionLimits::default() };
        let (addr, stats) = serving(limits).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let second = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut first).await.starts_with("HTTP/1.1 200"));
        // The third is in the backlog: not answered while both places are taken.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await.is_err()
        );
        assert_eq!(stats.open.load(Ordering::Relaxed), 2);
        drop(second);
        let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
            .await
            .expect("served once a place freed")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }

    /// A server that answers 413 after the first KiB of a body, discarding the rest (or,
    /// with `discard` false, dropping it as hyper would).
    async fn refusing(discard: bool) -> SocketAddr {
        use http_body_util::BodyExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::new(listener, ConnectionLimits::default());
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.serve(
            move |_| {
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| async move {
                    let mut body = req.into_body();
                    let mut read = 0;
                    while read < 1024 {
                        match body.frame().await {
                            Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                            _ => break,
                        }
                    }
                    if discard {
                        discard_rest(body);
                    }
                    let mut answer = hyper::Response::new(Full::new(Bytes::from_static(b"no")));
                    *answer.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
                    Ok::<_, Infallible>(answer)
                })
            },
            std::future::pending(),
            Duration::from_secs(1),
        ));
        addr
    }

    /// Sends a 16 MiB body and reads the answer: Ok(head) or the error writing or reading hit.
    async fn send_big(addr: SocketAddr) -> std::io::Result<String> {
        let mut c = TcpStream::connect(addr).await?;
        let n = 16 << 20;
        c.write_all(
            format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {n}\r\n\r\n").as_bytes(),
        )
        .await?;
        let chunk = vec![b' '; 65_536];
        for _ in 0..n / chunk.len() {
            c.write_all(&chunk).await?;
        }
        let mut buf = vec![0; 256];
        let got = c.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..got]).into_owned())
    }

    #[tokio::test]
    async fn a_client_still_sending_a_refused_body_reads_the_answer() {
        let addr = refusing(true).await;
        for _ in 0..3 {
            let head = send_big(addr).await.expect("the whole body was taken");
            assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        }
        // Without the discard the same client is cut off mid-body: the test can fail.
        let addr = refusing(false).await;
        assert!(send_big(addr).await.is_err(), "a body never read would be taken whole");
    }

    /// A self-signed certificate for 127.0.0.1 written to a new directory: (cert, key).
    fn self_signed() -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("flashgate-net-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
        files
    }

    #[tokio::test]
    async fn a_tls_listener_answers_a_client_that_trusts_its_certificate_and_nobody_else() {
        let files = self_signed();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::new(listener, ConnectionLimits::default())
            .with_tls(Some(files.server_config().unwrap()));
        let addr = answering_ok(server);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        // Trusting the certificate: answered.
        let trusting =
            tokio_rustls::TlsConnector::from(tls::client_config(Some(&files.cert)).unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = trusting.connect(name.clone(), tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0; 256];
        let n = tls.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Trusting only the public roots: the handshake fails.
        let public = tokio_rustls::TlsConnector::from(tls::client_config(None).unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        assert!(public.connect(name, tcp).await.is_err());
        // Plain HTTP: no answer, the connection closed.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let answer = closed_within(&mut plain, Duration::from_secs(10)).await;
        assert!(answer.is_some(), "closed");
        // A key that is not a key is named with its file.
        let broken = TlsFiles { cert: files.cert.clone(), key: files.cert.clone() };
        let e = broken.server_config().unwrap_err().to_string();
        assert!(e.contains("cert.pem"), "{e}");
    }

    #[test]
    fn accept_failures_back_off_and_log_once_a_second() {
        let mut b = AcceptBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.failed(t0), (Duration::from_millis(5), Some(0)));
        assert_eq!(b.failed(t0), (Duration::from_millis(10), None));
        for _ in 0..20 {
            b.failed(t0 + Duration::from_millis(500));
        }
        assert_eq!(b.delay, Duration::from_secs(1));
        assert_eq!(b.failed(t0 + Duration::from_secs(1)), (Duration::from_secs(1), Some(21)));
        b.succeeded();
        assert_eq!(b.failed(t0 + Duration::from_secs(3)).0, Duration::from_millis(5));
    }
}
