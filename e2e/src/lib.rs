//! flashgate-e2e: the harness for flashgate's end-to-end tests.
//!
//! Each test gets its own `redis-server` (on a Unix socket, killed on drop), its own
//! PostgreSQL database (dropped afterwards), an origin [`Application`] on port 0 and the real
//! edge component served by [`EdgeHost`] from the repository's `spin.toml`. Nothing is
//! mocked. Tracing output appears only when `TEST_LOG` is set.

pub mod cluster;

use anyhow::{Context, Result, bail};
pub use flashgate_bench::proxy::Delay;
use flashgate_cli::{DevIdentity, TokenSpec};
use flashgate_core::signing::{self, EdgeSecret, EdgeStamp};
use flashgate_core::token::{KeySet, TokenPolicy};
use flashgate_edge_host::{EdgeHost, HostSettings};
use flashgate_origin::clock::{Clock, ManualClock, SystemClock};
use flashgate_origin::gateway::SimulatedGateway;
use flashgate_origin::outbox::persister::PgWriter;
use flashgate_origin::outbox::relay::{Relay, Sink};
use flashgate_origin::settings::Settings;
use flashgate_origin::startup::Application;
use flashgate_origin::state::AppState;
use flashgate_origin::transparency::TransparencySettings;
use flashgate_origin::workers::expiry::ExpiryWorker;
use flashgate_origin::workers::payments::PaymentsWorker;
use jwt_simple::prelude::Ed25519KeyPair;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ sits in the repo").to_owned()
}

fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        flashgate_origin::telemetry::init("info,flashgate=debug,sqlx=warn", false);
    }
}

/// A private `redis-server` listening on a Unix socket in a temporary directory, persisting
/// as flashgate ships it: an append-only file fsynced before every reply (`appendfsync
/// always`), so [`RedisServer::crash`] and [`RedisServer::restart`] lose nothing answered.
/// Its folder is in `/dev/shm` where there is one: a `kill -9` loses nothing written to the
/// page cache either way, and there an fsync costs microseconds instead of this machine's
/// ~4 ms per event-loop turn, which the whole suite would otherwise pay on every write.
pub struct RedisServer {
    child: Child,
    dir: PathBuf,
    volatile: bool,
    pub url: String,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// A Redis that keeps nothing (no AOF, no snapshots): what the origin refuses to run
    /// on unless told `--allow-volatile-redis`.
    pub fn start_volatile() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(volatile: bool) -> Result<Self> {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
        let dir = base.join(format!("fg-redis-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("redis.sock");
        let url = format!("redis+unix://{}", socket.display());
        let child = Self::spawn(&dir, volatile)?;
        let server = Self { child, dir, volatile, url };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(dir: &Path, volatile: bool) -> Result<Child> {
        let persistence: &[&str] = if volatile {
            &["--appendonly", "no"]
        } else {
            &["--appendonly", "yes", "--appendfsync", "always"]
        };
        Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--unixsocketperm", "700"])
            .args(persistence)
            .arg("--unixsocket")
            .arg(dir.join("redis.sock"))
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed? scripts/setup.sh installs it)")
    }

    fn wait_ready(&self) -> Result<()> {
        let client = redis::Client::open(self.url.as_str())?;
        for _ in 0..500 {
            if let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("redis-server did not come up at {}", self.url)
    }

    /// `kill -9`: Redis dies at once, with whatever it had not written.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts Redis again on the same socket and data folder (it replays its AOF).
    pub fn restart(&mut self) -> Result<()> {
        self.crash();
        let _ = std::fs::remove_file(self.dir.join("redis.sock"));
        self.child = Self::spawn(&self.dir, self.volatile)?;
        self.wait_ready()
    }

    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url.as_str())?.get_multiplexed_async_connection().await?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Kafka-protocol broker (tansu, memory engine) on a free port.
pub struct KafkaBroker {
    child: Child,
    pub brokers: String,
}

impl KafkaBroker {
    /// The tansu binary: `FLASHGATE_TANSU`, else where `scripts/setup.sh` installs it.
    pub fn binary() -> PathBuf {
        std::env::var_os("FLASHGATE_TANSU").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            home.join(".cache/flashgate/tools/bin/tansu")
        })
    }

    pub async fn start() -> Result<Self> {
        Self::start_on(free_port()?).await
    }

    /// A broker on `port` (one the test handed to an origin before the broker was up).
    pub async fn start_on(port: u16) -> Result<Self> {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(Self::binary())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {} (scripts/setup.sh installs it)", Self::binary().display())
            })?;
        let broker = Self { child, brokers: format!("127.0.0.1:{port}") };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(broker);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("tansu did not listen on {port}")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh PostgreSQL database, dropped with this value.
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> Result<Self> {
        let base = std::env::var("FLASHGATE_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let admin_url = format!("{base}/postgres");
        let name = format!("fg_test_{}", Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .context("connecting to PostgreSQL (scripts/setup.sh starts it)")?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
        Ok(Self { url: format!("{base}/{name}"), name, admin_url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee: use a private one on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut c =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// The identity provider and the edge↔origin secret, generated per test.
pub struct Identity {
    dev: DevIdentity,
    pair: Ed25519KeyPair,
    pub jwks: String,
    pub secret_hex: String,
    /// The public logs' signing key (a note signer key) and pseudonym secret (hex).
    pub transparency_key: String,
    pub transparency_secret: String,
}

impl Identity {
    pub fn generate() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("fg-id-{}", Uuid::new_v4().simple()));
        let (dev, _) = DevIdentity::ensure(&dir)?;
        let pair = dev.key_pair()?;
        let jwks = dev.jwks()?;
        let secret_hex = dev.edge_secret()?;
        let transparency_key = dev.transparency_key()?;
        let transparency_secret = dev.transparency_secret()?;
        Ok(Self { dev, pair, jwks, secret_hex, transparency_key, transparency_secret })
    }

    /// The origin's public-log settings for this identity (the builder stepping every
    /// `interval`; `None`: tests drive it).
    pub fn transparency(&self, interval: Option<Duration>) -> TransparencySettings {
        TransparencySettings {
            signing_keys: vec![self.transparency_key.clone()],
            pseudonym_secret: flashgate_origin::config::Secret::from_hex(&self.transparency_secret)
                .expect("generated secrets are hex"),
            stamp_skew: Duration::ZERO,
            build_interval: interval,
        }
    }

    /// The verifier key of the logs' signing key.
    pub fn transparency_vkey(&self) -> String {
        flashgate_tlog::checkpoint::verifier_key(&self.transparency_key).expect("a signer key")
    }

    pub fn secret(&self) -> EdgeSecret {
        EdgeSecret::from_hex(&self.secret_hex).expect("generated secrets are valid")
    }

    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    pub fn token(&self, spec: &TokenSpec) -> String {
        flashgate_cli::mint(&self.pair, spec).expect("minting")
    }

    pub fn buyer(&self, user: Uuid) -> String {
        self.token(&TokenSpec::buyer(user))
    }

    pub fn admin(&self) -> String {
        self.token(&TokenSpec::admin(Uuid::new_v4()))
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dev.dir);
    }
}

/// The admin API's body for the test product of `create_product_starting`.
pub fn product_body(stock: i64, starts: time::OffsetDateTime) -> Result<Value> {
    Ok(json!({
        "name": "Limited sneaker",
        "price": {"amount": 12900, "currency": "EUR"},
        "stock": stock,
        "saleStartsAt": starts.format(&time::format_description::well_known::Rfc3339)?,
    }))
}

/// The buyers' HTTP client: pooled connections idle at most 4 s, less than the servers'
/// head deadline (10 s; `flashgate_net`), after which they close an idle kept-alive
/// connection, so no request is sent on a connection the server is closing (a client's pool
/// must idle less than its server does, as the edge host's does towards the origin).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .expect("a reqwest client")
}

/// A running origin on port 0.
pub struct TestOrigin {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The simulated processor this origin pays through (webhooks go to this origin).
    pub gateway: SimulatedGateway,
    /// Where the processor keeps its charges: a Redis of its own (an external system's
    /// store, untouched when the origin's Redis loses its data), unless the test gave one.
    pub processor_url: String,
    _processor: Option<RedisServer>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestOrigin {
    pub async fn spawn(
        redis: &RedisServer,
        db: &TestDatabase,
        id: &Identity,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        Self::spawn_with(redis, db, id, clock, |_| {}).await
    }

    /// As [`TestOrigin::spawn`], with the settings adjusted by `configure`.
    pub async fn spawn_with(
        redis: &RedisServer,
        db: &TestDatabase,
        id: &Identity,
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut Settings),
    ) -> Result<Self> {
        init_tracing();
        let mut settings = Settings::new(
            "127.0.0.1:0".parse()?,
            db.url.clone(),
            redis.url.clone(),
            id.secret(),
            KeySet::from_jwks_json(&id.jwks)?,
            TokenPolicy {
                issuer: flashgate_cli::DEV_ISSUER.into(),
                audience: flashgate_cli::DEV_AUDIENCE.into(),
                leeway: Duration::from_secs(30),
            },
        );
        // Quick webhooks, so tests through the whole stack see payments settle.
        settings.payments.simulated.latency = Duration::from_millis(20);
        // Every charge succeeds unless its method is the declining test method.
        settings.payments.simulated.success_rate = 1.0;
        settings.payments.simulated.seed = Some(7);
        // Every drop's decisions go into its public log, as `scripts/dev.sh` runs it.
        settings.transparency = Some(id.transparency(Some(Duration::from_millis(100))));
        configure(&mut settings);
        let processor = if settings.payments.simulated.store_url == redis.url {
            let own = RedisServer::start()?;
            settings.payments.simulated.store_url = own.url.clone();
            Some(own)
        } else {
            None
        };
        let processor_url = settings.payments.simulated.store_url.clone();
        let gateway = SimulatedGateway::new(settings.payments.simulated.clone(), clock.clone())?;
        let app =
            Application::build_with_gateway(settings, clock, Arc::new(gateway.clone())).await?;
        let addr = app.local_addr();
        gateway.deliver_to(format!("http://{addr}/payments/webhook"));
        let state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            state,
            gateway,
            processor_url,
            _processor: processor,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Dies at once, as `kill -9` would: no drain, no flush, requests in flight dropped.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // Only now: dropping the sender would start a graceful stop.
        self.stop.take();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests the origin has answered, `/metrics` excepted.
    pub async fn request_count(&self) -> Result<u64> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("flashgate_http_request_duration_seconds_count{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// The sum of every sample of the metric `name` (`flashgate_…`, with or without labels).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        self.metric_with(name, "").await
    }

    /// The sum of the samples of the metric `name` that carry `label` (`key="value"`; empty:
    /// every sample).
    pub async fn metric_with(&self, name: &str, label: &str) -> Result<f64> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Requests the origin has answered on one route (its axum path, e.g. `/slots/acquire`).
    pub async fn route_count(&self, route: &str) -> Result<u64> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        let needle = format!("route=\"{route}\"");
        Ok(text
            .lines()
            .filter(|l| {
                l.starts_with("flashgate_http_request_duration_seconds_count{")
                    && l.contains(&needle)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// Creates a product through the admin API; returns its id.
    pub async fn create_product(&self, id: &Identity, stock: i64) -> Result<Uuid> {
        let starts = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        self.create_product_starting(id, stock, starts).await
    }

    pub async fn create_product_starting(
        &self,
        id: &Identity,
        stock: i64,
        starts: time::OffsetDateTime,
    ) -> Result<Uuid> {
        let body = product_body(stock, starts)?;
        let response = reqwest::Client::new()
            .post(self.url("/products"))
            .bearer_auth(id.admin())
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != 201 {
            bail!("creating a product: {status} {body}");
        }
        Ok(Uuid::parse_str(body["productId"].as_str().context("productId")?)?)
    }

    /// Moves the sale start of a product made by `create_product_starting` (`PUT
    /// /products/{id}`, as an operator would): a test opens a sale when it is ready for it,
    /// instead of racing a start time against a slow machine.
    pub async fn set_sale_start(
        &self,
        id: &Identity,
        product: Uuid,
        stock: i64,
        starts: time::OffsetDateTime,
    ) -> Result<()> {
        let body = product_body(stock, starts)?;
        let response = reqwest::Client::new()
            .put(self.url(&format!("/products/{product}")))
            .bearer_auth(id.admin())
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        if status != 200 {
            bail!("moving the sale start: {status} {}", response.text().await?);
        }
        Ok(())
    }
}

impl TestOrigin {
    /// `POST /slots/acquire` straight to the origin, signed as the edge would at `arrival_us`.
    pub async fn acquire_signed(
        &self,
        id: &Identity,
        user: Uuid,
        product: Uuid,
        arrival_us: u64,
    ) -> Result<reqwest::Response> {
        let body = json!({ "productId": product }).to_string();
        let headers =
            edge_headers(&id.secret(), "POST", "/slots/acquire", user, arrival_us, body.as_bytes());
        let mut request = reqwest::Client::new()
            .post(self.url("/slots/acquire"))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        Ok(request.send().await?)
    }
}

impl TestOrigin {
    /// `POST /payments` straight to the origin, signed as the edge would for `user` at
    /// `arrival_us`, with `Idempotency-Key: key` (`None`: no header).
    pub async fn pay_signed(
        &self,
        id: &Identity,
        user: Uuid,
        body: &str,
        key: Option<&str>,
        arrival_us: u64,
    ) -> Result<reqwest::Response> {
        let headers = edge_headers_keyed(
            &id.secret(),
            "POST",
            "/payments",
            user,
            arrival_us,
            body.as_bytes(),
            key.unwrap_or(""),
        );
        let mut request = reqwest::Client::new()
            .post(self.url("/payments"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        for (k, v) in headers {
            request = request.header(k, v);
        }
        Ok(request.send().await?)
    }

    /// `GET path` straight to the origin, signed as the edge would for `user` at `arrival_us`.
    pub async fn get_signed(
        &self,
        id: &Identity,
        user: Uuid,
        path: &str,
        arrival_us: u64,
    ) -> Result<reqwest::Response> {
        let mut request = reqwest::Client::new().get(self.url(path));
        for (k, v) in edge_headers(&id.secret(), "GET", path, user, arrival_us, b"") {
            request = request.header(k, v);
        }
        Ok(request.send().await?)
    }
}

impl TestOrigin {
    /// `(method, path)` with `body` straight to the origin, signed as the edge would for
    /// `user` at `arrival_us`, with `extra` headers (a queue pass, say).
    pub async fn send_signed(
        &self,
        id: &Identity,
        (method, path): (&str, &str),
        user: Uuid,
        arrival_us: u64,
        body: &str,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let headers =
            edge_headers(&id.secret(), method.as_str(), path, user, arrival_us, body.as_bytes());
        let mut request = reqwest::Client::new()
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        Ok(request.send().await?)
    }

    /// Sets `product`'s waiting room (`PUT /products/{id}/queue`) to `settings`.
    pub async fn configure_queue(
        &self,
        id: &Identity,
        product: Uuid,
        settings: Value,
    ) -> Result<Value> {
        let response = reqwest::Client::new()
            .put(self.url(&format!("/products/{product}/queue")))
            .bearer_auth(id.admin())
            .json(&settings)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != 200 {
            bail!("configuring the queue: {status} {body}");
        }
        Ok(body)
    }
}

/// Redis-side counts of one product, for invariant checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductCounts {
    pub remaining: i64,
    pub total: i64,
    /// Holders: buyers with an ACTIVE or COMPLETED slot.
    pub held: i64,
    /// Slots scheduled to expire (ACTIVE).
    pub scheduled: i64,
    /// Units a rebuild withheld for grants lost with Redis.
    pub in_doubt: i64,
}

impl RedisServer {
    /// Runs one command (tests that look at or change a key directly).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut c = self.connection().await?;
        Ok(cmd.query_async(&mut c).await?)
    }

    pub async fn counts(&self, product: Uuid) -> Result<ProductCounts> {
        use flashgate_origin::store::keys::ProductKeys;
        let mut c = self.connection().await?;
        let k = ProductKeys::new(product);
        let (remaining, total, in_doubt): (i64, i64, Option<i64>) = redis::cmd("HMGET")
            .arg(k.product())
            .arg("remaining")
            .arg("total")
            .arg("inDoubt")
            .query_async(&mut c)
            .await?;
        let held: i64 = redis::cmd("HLEN").arg(k.holders()).query_async(&mut c).await?;
        let scheduled: i64 = redis::cmd("ZCARD").arg(k.expiry()).query_async(&mut c).await?;
        Ok(ProductCounts { remaining, total, held, scheduled, in_doubt: in_doubt.unwrap_or(0) })
    }

    /// A slot's status in Redis (`None` once its record is gone).
    pub async fn slot_status(&self, product: Uuid, slot: Uuid) -> Result<Option<String>> {
        use flashgate_origin::store::keys::ProductKeys;
        let mut c = self.connection().await?;
        Ok(redis::cmd("HGET")
            .arg(ProductKeys::new(product).slot(slot))
            .arg("status")
            .query_async(&mut c)
            .await?)
    }

    /// Appends a poison event to `product`'s outbox: a well-formed `payment-created` for
    /// `slot` that PostgreSQL refuses for good (a negative amount breaks a CHECK). Returns
    /// its event id.
    pub async fn add_poison_event(&self, product: Uuid, slot: Uuid, user: Uuid) -> Result<Uuid> {
        use flashgate_origin::store::keys::ProductKeys;
        let event_id = Uuid::now_v7();
        let mut c = self.connection().await?;
        let _: String = redis::cmd("XADD")
            .arg(ProductKeys::new(product).outbox())
            .arg("*")
            .arg(&[
                ("type", "payment-created".to_owned()),
                ("v", "1".to_owned()),
                ("eventId", event_id.to_string()),
                ("productId", product.to_string()),
                ("slotId", slot.to_string()),
                ("userId", user.to_string()),
                ("paymentId", Uuid::now_v7().to_string()),
                ("amount", "-5".to_owned()),
                ("currency", "EUR".to_owned()),
                ("method", "card".to_owned()),
                ("idempotencyKey", "poison".to_owned()),
                ("atMs", now_us().div_euclid(1000).to_string()),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
                ),
            ])
            .query_async(&mut c)
            .await?;
        Ok(event_id)
    }

    /// Event types in a product's outbox, in order.
    pub async fn outbox_types(&self, product: Uuid) -> Result<Vec<String>> {
        use flashgate_origin::store::keys::ProductKeys;
        let mut c = self.connection().await?;
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(ProductKeys::new(product).outbox())
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await?;
        Ok(entries.ids.iter().filter_map(|e| e.get::<String>("type")).collect())
    }
}

impl ProductCounts {
    /// Invariant 1 in Redis: stock + ACTIVE + COMPLETED + withheld in doubt = total, and
    /// never negative.
    pub fn assert_conserved(&self) {
        assert!(self.remaining >= 0, "{self:?}");
        assert_eq!(self.remaining + self.held + self.in_doubt, self.total, "invariant 1: {self:?}");
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The path of the built edge component, from `spin.toml` (the default build: WASI 0.3).
pub fn component_path() -> PathBuf {
    repo_root().join("edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm")
}

/// The path of a platform build of the edge component (`scripts/build-edge.sh --platform
/// <platform>`: `spin-wasip2`, `wasmcloud1`, `wasmcloud2`).
pub fn platform_component_path(platform: &str) -> PathBuf {
    repo_root().join(format!(
        "edge/component/target/platforms/{platform}/wasm32-wasip2/release/flashgate_edge.wasm"
    ))
}

/// A copy of the repository's `spin.toml` whose edge component is the build at `component`
/// (everything else as in the repository), for serving another build in the host.
pub fn manifest_serving(component: &std::path::Path) -> Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let text = std::fs::read_to_string(repo_root().join("spin.toml"))?;
    let default = "edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm";
    if !text.contains(default) {
        bail!("spin.toml does not name {default}");
    }
    if !component.exists() {
        bail!("{} is missing: run scripts/build-edge.sh --platform all", component.display());
    }
    let text = text.replace(default, &component.display().to_string());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("flashgate-spin-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The real edge component in flashgate's host, on port 0.
pub struct TestEdge {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/health`).
    pub admin: Option<SocketAddr>,
    pub host_kv: flashgate_edge_host::kv::KvStores,
    pub stats: Arc<flashgate_edge_host::HostStats>,
    /// The WASI generation of the edge component served (`[component.edge]`).
    pub generation: Option<flashgate_edge_host::WasiGeneration>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestEdge {
    /// Serves the repository's `spin.toml`, pointed at `origin` (any `host:port`).
    pub async fn spawn(origin: SocketAddr, id: &Identity) -> Result<Self> {
        Self::spawn_manifest(repo_root().join("spin.toml"), origin, id).await
    }

    pub async fn spawn_manifest(
        manifest: PathBuf,
        origin: SocketAddr,
        id: &Identity,
    ) -> Result<Self> {
        Self::spawn_configured(manifest, origin, id, |_| {}).await
    }

    /// As [`TestEdge::spawn_manifest`], with the host settings adjusted by `configure`.
    pub async fn spawn_configured(
        manifest: PathBuf,
        origin: SocketAddr,
        id: &Identity,
        configure: impl FnOnce(&mut HostSettings),
    ) -> Result<Self> {
        init_tracing();
        if !component_path().exists() {
            bail!("{} is missing: run scripts/build-edge.sh first", component_path().display());
        }
        let mut settings = HostSettings::new(manifest, "127.0.0.1:0".parse()?);
        settings.admin_listen = Some("127.0.0.1:0".parse()?);
        settings.max_instances = 64;
        settings.kv_capacity_bytes = 16 << 20;
        settings.request_timeout = Duration::from_secs(5);
        for (k, v) in [
            ("origin_host", origin.to_string()),
            ("edge_secret", id.secret_hex.clone()),
            ("jwt_jwks", id.jwks.clone()),
            ("edge_id", "edge-test".to_owned()),
            // Tests drive one buyer and one address hard; the shield tests set limits.
            ("rate_user_per_sec", "0".to_owned()),
            ("rate_address_per_sec", "0".to_owned()),
            // Tests run a debug build of the host on shared CI cores, where a burst of new
            // buyers can wait past the production bound (250 ms) and be shed with 503: a
            // test of what the origin decides must not hinge on the machine's speed.
            // `forwarding.rs` tests the shed itself with its own bound.
            ("max_edge_wait_ms", "3000".to_owned()),
        ] {
            settings.variables.insert(k.to_owned(), v);
        }
        configure(&mut settings);
        let host = EdgeHost::build(settings).await?;
        let addr = host.local_addr();
        let admin = host.admin_addr();
        let host_kv = host.kv();
        let stats = host.stats();
        let generation = host.generation("edge");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(host.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, admin, host_kv, stats, generation, stop: Some(stop) })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HTTP proxy that holds each request for `delay` before passing it on to `target`: an
/// edge→origin network delay (`flashgate_bench::proxy`).
pub async fn delay_proxy(target: SocketAddr, delay: Duration) -> Result<SocketAddr> {
    jitter_proxy(target, Delay::fixed(delay)).await
}

/// As [`delay_proxy`], each request held for its own random time in `delay`'s range.
pub async fn jitter_proxy(target: SocketAddr, delay: Delay) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(flashgate_bench::proxy::serve(listener, target, delay));
    Ok(addr)
}

/// A free loopback port, for a service that will listen there later.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Forwards connections to `127.0.0.1:port` on to `target`, from now on: a dependency that
/// "comes up" on an address the origin was given while it was down. [`Forwarding::cut`]
/// takes it down again, open connections included.
pub async fn forward_on(port: u16, target: SocketAddr) -> Result<Forwarding> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let cut = tokio_util::sync::CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            let Ok((mut inbound, _)) = accepted else { return };
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = stop.cancelled() => {}
                    }
                }
            });
        }
    });
    Ok(Forwarding { cut })
}

/// A running [`forward_on`]; dropping it leaves it running.
pub struct Forwarding {
    cut: tokio_util::sync::CancellationToken,
}

impl Forwarding {
    /// Stops listening and drops every forwarded connection: the dependency is gone.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

/// Everything one end-to-end test needs, started together.
pub struct Stack {
    pub redis: RedisServer,
    pub db: TestDatabase,
    pub id: Identity,
    pub origin: TestOrigin,
    pub edge: TestEdge,
    pub http: reqwest::Client,
}

impl Stack {
    /// A second edge host (the repository's `spin.toml`) in front of this stack's origin,
    /// every forwarded request held `delay` on the way (an origin that far away), with the
    /// host settings adjusted by `configure`.
    pub async fn edge_behind_delay(
        &self,
        delay: Duration,
        configure: impl FnOnce(&mut HostSettings),
    ) -> Result<TestEdge> {
        let slow = delay_proxy(self.origin.addr, delay).await?;
        TestEdge::spawn_configured(repo_root().join("spin.toml"), slow, &self.id, configure).await
    }

    pub async fn start() -> Result<Self> {
        Self::start_configured(|_| {}, |_| {}).await
    }

    /// As [`Stack::start`], with the origin's settings and the edge host's settings (its
    /// `variables`, say) adjusted.
    pub async fn start_configured(
        origin: impl FnOnce(&mut Settings),
        edge: impl FnOnce(&mut HostSettings),
    ) -> Result<Self> {
        let redis = RedisServer::start()?;
        let db = TestDatabase::create().await?;
        let id = Identity::generate()?;
        let origin =
            TestOrigin::spawn_with(&redis, &db, &id, Arc::new(SystemClock), origin).await?;
        let edge =
            TestEdge::spawn_configured(repo_root().join("spin.toml"), origin.addr, &id, edge)
                .await?;
        Ok(Self { redis, db, id, origin, edge, http: http_client() })
    }

    /// `POST /slots/acquire` through the edge.
    pub async fn acquire(&self, token: &str, product: Uuid) -> Result<reqwest::Response> {
        self.acquire_with_pass(token, product, None).await
    }

    /// `POST /slots/acquire` through the edge, carrying the queue pass `pass` if given.
    pub async fn acquire_with_pass(
        &self,
        token: &str,
        product: Uuid,
        pass: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .post(self.edge.url("/slots/acquire"))
            .bearer_auth(token)
            .json(&json!({ "productId": product }));
        if let Some(pass) = pass {
            request = request.header(flashgate_core::queue::HEADER_QUEUE_PASS, pass);
        }
        Ok(request.send().await?)
    }
}

/// An origin on a controlled clock with no background workers (expiry, relay, Kafka
/// persister): tests drive each one step at a time.
pub struct DrivenOrigin {
    pub redis: RedisServer,
    pub db: TestDatabase,
    pub id: Identity,
    pub origin: TestOrigin,
    pub clock: ManualClock,
}

impl DrivenOrigin {
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// As [`DrivenOrigin::start`], with further settings (a broker, …).
    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Result<Self> {
        let redis = RedisServer::start()?;
        let db = TestDatabase::create().await?;
        let id = Identity::generate()?;
        let clock = ManualClock::starting_now();
        let origin = TestOrigin::spawn_with(&redis, &db, &id, Arc::new(clock.clone()), |s| {
            s.expiry_interval = None;
            s.relay_interval = None;
            s.admission_interval = None;
            s.kafka_persister = false;
            if let Some(t) = &mut s.transparency {
                t.build_interval = None;
            }
            // Payments settle only when the test releases the processor's webhooks.
            s.payments.worker_interval = None;
            s.payments.simulated.manual = true;
            configure(s);
        })
        .await?;
        Ok(Self { redis, db, id, origin, clock })
    }

    pub fn worker(&self) -> ExpiryWorker {
        ExpiryWorker::new(self.origin.state.inventory.clone(), Arc::new(self.clock.clone()))
    }

    pub fn payments_worker(&self) -> PaymentsWorker {
        PaymentsWorker::new(
            self.origin.state.inventory.clone(),
            self.origin.state.payments.clone(),
            Arc::new(self.clock.clone()),
            Duration::from_secs(10),
        )
    }

    /// The controlled clock, as an edge arrival stamp.
    pub fn now(&self) -> u64 {
        self.clock.now_us() as u64
    }

    /// A slot for a new buyer: `(buyer, slot id)`.
    pub async fn grant(&self, product: Uuid) -> Result<(Uuid, Uuid)> {
        let user = Uuid::new_v4();
        let response = self.acquire(user, product).await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != 201 {
            bail!("acquiring: {status} {body}");
        }
        Ok((user, Uuid::parse_str(body["slotId"].as_str().context("slotId")?)?))
    }

    /// `POST /payments` for `slot` by `user` with `key`, at the controlled clock's time.
    pub async fn pay(&self, user: Uuid, slot: Uuid, key: &str) -> Result<reqwest::Response> {
        let body = json!({ "slotId": slot, "method": "card" }).to_string();
        let now = self.clock.now_us() as u64;
        self.origin.pay_signed(&self.id, user, &body, Some(key), now).await
    }

    /// A relay writing straight to PostgreSQL.
    pub fn relay(&self, claim_idle: Duration) -> Relay {
        Relay::new(
            self.origin.state.inventory.clone(),
            Sink::Postgres(PgWriter::new(self.origin.state.db.clone())),
            format!("test-{}", Uuid::new_v4().simple()),
            claim_idle,
        )
    }

    /// `POST /slots/acquire` signed at the controlled clock's time.
    pub async fn acquire(&self, user: Uuid, product: Uuid) -> Result<reqwest::Response> {
        let now = self.clock.now_us() as u64;
        self.origin.acquire_signed(&self.id, user, product, now).await
    }

    pub async fn pg_count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.origin.state.db).await.expect("a count query")
    }

    /// ACTIVE and COMPLETED slots of `product` in PostgreSQL.
    pub async fn pg_live(&self, product: Uuid) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM purchase_slots \
             WHERE product_id = $1 AND status IN ('ACTIVE', 'COMPLETED')",
        )
        .bind(product)
        .fetch_one(&self.origin.state.db)
        .await
        .expect("counting live slots")
    }
}

/// Signs a request the way the edge does, for tests that talk to the origin directly.
pub fn edge_headers(
    secret: &EdgeSecret,
    method: &str,
    path: &str,
    user: Uuid,
    arrival_us: u64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    edge_headers_keyed(secret, method, path, user, arrival_us, body, "")
}

/// As [`edge_headers`], for a request carrying `Idempotency-Key: idempotency_key` (not
/// added here; `""` = no header).
pub fn edge_headers_keyed(
    secret: &EdgeSecret,
    method: &str,
    path: &str,
    user: Uuid,
    arrival_us: u64,
    body: &[u8],
    idempotency_key: &str,
) -> Vec<(&'static str, String)> {
    let user = user.to_string();
    // A new span id for each request, as the edge gives each forward: the origin decides a
    // signed write once (the replay guard).
    let traceparent = format!(
        "00-0af7651916cd43dd8448eb211c80319c-{:016x}-01",
        Uuid::new_v4().as_u64_pair().0 | 1
    );
    let stamp = EdgeStamp {
        user_id: &user,
        arrival_us,
        traceparent: &traceparent,
        edge_id: "edge-test",
        idempotency_key,
    };
    signing::signed_headers(secret, method, path, &stamp, body).to_vec()
}

pub fn now_us() -> u64 {
    SystemClock.now_us() as u64
}

/// Asserts a problem+json answer and returns its body.
/// The JSON body of an answer that must have `status` (the body is shown if it has not).
pub async fn json_of(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

pub async fn problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {slug}");
    let ct = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/problem+json"), "content type for {slug}");
    let header_trace = response
        .headers()
        .get("x-trace-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("every answer carries X-Trace-ID");
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["traceId"], header_trace, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}

/// The checker's report once the outbox is relayed and PostgreSQL holds `slots` slots (or
/// after `limit`), with fairness (invariant 6) left out: a storm at W = 0 inverts by design.
/// A check that fails (a loaded machine, Redis just restarted or failed over) is tried again.
pub async fn checked_when_drained(
    state: &AppState,
    slots: u64,
    limit: Duration,
) -> flashgate_cli::check::Report {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let checked =
            flashgate_cli::check::check(&state.db, &state.inventory.connection(), Duration::ZERO)
                .await;
        let mut report = match checked {
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("check failed, trying again: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            other => other.expect("the checker runs"),
        };
        if (report.undelivered == 0 && report.slots_in_postgres == slots)
            || std::time::Instant::now() > deadline
        {
            report.violations.retain(|v| v.invariant != 6);
            return report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
