//! Beyond one machine, on loopback: a Redis Cluster of real `redis-server` processes
//! ([`RedisCluster`]) and origins as processes of their own ([`OriginProcess`]), so a test
//! can `kill -9` a master or an origin.

use crate::{Identity, TestDatabase};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A port `p` free for a cluster node, whose bus port `p + 10000` is free too.
fn free_node_port() -> Result<u16> {
    for _ in 0..1_000 {
        let port = 12_000 + rand_below(40_000 - 12_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return Ok(port);
        }
    }
    bail!("no free port pair for a cluster node")
}

fn rand_below(n: u16) -> u16 {
    (Uuid::new_v4().as_u128() % u128::from(n)) as u16
}

/// One node of a [`RedisCluster`].
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            // Failure detection in a second: the test's failover takes a few.
            .args(["--cluster-node-timeout", "1000"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/setup.sh installs it)")?;
        self.child = Some(child);
        Ok(())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster on loopback: `masters` masters with one replica each, every node
/// persisting as flashgate ships (AOF, `appendfsync always`), in `/dev/shm` where there is
/// one. Nodes are killed and their folders removed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    base: PathBuf,
}

impl RedisCluster {
    pub async fn start(masters: usize) -> Result<Self> {
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
        let base = root.join(format!("fg-cluster-{}", Uuid::new_v4().simple()));
        let mut cluster = Self { nodes: Vec::new(), base };
        for i in 0..masters * 2 {
            let dir = cluster.base.join(format!("node-{i}"));
            std::fs::create_dir_all(&dir)?;
            let mut node = Node { port: free_node_port()?, dir, child: None };
            node.spawn()?;
            cluster.nodes.push(node);
        }
        for node in &cluster.nodes {
            wait_for_ping(&node.url()).await?;
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("redis-cli --cluster create")?;
        if !created.status.success() {
            bail!("redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stderr));
        }
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        cluster.wait_replicated(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Waits until every live master has a replica online (its first sync done), so a write
    /// can be acknowledged by one.
    pub async fn wait_replicated(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut replicated = true;
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let info: String = ask(&node.url(), redis::cmd("INFO").arg("replication"))
                    .await
                    .unwrap_or_default();
                if info.contains("role:master") {
                    replicated &= info
                        .lines()
                        .any(|l| l.starts_with("slave0:") && l.contains("state=online"));
                }
            }
            if replicated {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the masters have no replica online after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's URL (what the origin is given).
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// A node's URL.
    pub fn url(&self, node: usize) -> String {
        self.nodes[node].url()
    }

    /// A connection to the cluster.
    pub async fn connection(&self) -> Result<redis::cluster_async::ClusterConnection> {
        Ok(redis::cluster::ClusterClient::new(self.nodes())?.get_async_connection().await?)
    }

    /// The node serving `key` as master, asked of every live node until one answers.
    pub async fn master_of(&self, key: &str) -> Result<usize> {
        let slot: i64 = self.ask_any(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await?;
        let slots: redis::Value = self.ask_any(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        let redis::Value::Array(ranges) = slots else { bail!("CLUSTER SLOTS: {slots:?}") };
        for range in ranges {
            let redis::Value::Array(parts) = range else { continue };
            let (Some(from), Some(to), Some(master)) = (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            let from: i64 = redis::from_redis_value_ref(from)?;
            let to: i64 = redis::from_redis_value_ref(to)?;
            if (from..=to).contains(&slot) {
                let redis::Value::Array(address) = master else { continue };
                let port: i64 = redis::from_redis_value_ref(&address[1])?;
                return self
                    .nodes
                    .iter()
                    .position(|n| i64::from(n.port) == port)
                    .context("a master that is not one of ours");
            }
        }
        bail!("no master serves slot {slot}")
    }

    async fn ask_any<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut last = None;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            match ask(&node.url(), cmd).await {
                Ok(answer) => return Ok(answer),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no live node")))
    }

    /// `kill -9` of one node.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Starts a killed node again on its port and folder: it rejoins (as a replica of whoever
    /// took over its slots).
    pub async fn restart(&mut self, node: usize) -> Result<()> {
        self.nodes[node].spawn()?;
        wait_for_ping(&self.nodes[node].url()).await
    }

    /// Waits until every live node sees the cluster `ok` (every slot served).
    pub async fn wait_healthy(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut healthy = true;
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let info: String =
                    ask(&node.url(), redis::cmd("CLUSTER").arg("INFO")).await.unwrap_or_default();
                healthy &= info.contains("cluster_state:ok");
            }
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster is not healthy after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The live replica of `master` (`ROLE` of every other node).
    pub async fn replica_of(&self, master: usize) -> Result<usize> {
        let port = i64::from(self.nodes[master].port);
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.child.is_some()) {
            let role: Vec<redis::Value> =
                ask(&node.url(), &redis::cmd("ROLE")).await.unwrap_or_default();
            if let [redis::Value::BulkString(kind), _, master_port, ..] = role.as_slice()
                && kind == b"slave"
                && redis::from_redis_value_ref::<i64>(master_port).ok() == Some(port)
            {
                return Ok(i);
            }
        }
        bail!("node {master} has no replica")
    }

    /// How many times `node` has run `command` (`INFO commandstats`).
    pub async fn calls(&self, node: usize, command: &str) -> Result<u64> {
        let stats: String =
            ask(&self.nodes[node].url(), redis::cmd("INFO").arg("commandstats")).await?;
        let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
        Ok(stats
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(Ok(0), str::parse)?)
    }

    /// Whether `node` is a replica now (`ROLE`).
    pub async fn is_replica(&self, node: usize) -> bool {
        let role: redis::RedisResult<Vec<redis::Value>> = async {
            let client = redis::Client::open(self.nodes[node].url())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("ROLE").query_async(&mut conn).await
        }
        .await;
        matches!(role.ok().and_then(|r| r.into_iter().next()), Some(redis::Value::BulkString(b)) if b == b"slave")
    }
}

async fn ask<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> Result<T> {
    let client = redis::Client::open(url)?;
    let mut conn =
        tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection())
            .await??;
    Ok(tokio::time::timeout(Duration::from_secs(1), cmd.query_async(&mut conn)).await??)
}

async fn wait_for_ping(url: &str) -> Result<()> {
    for _ in 0..500 {
        if ask::<String>(url, &redis::cmd("PING")).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("redis-server did not come up at {url}")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// An origin running as a process of its own (`e2e/src/bin/origin.rs`, which is the
/// `flashgate-origin` binary's code), configured by flags, killed by `kill -9`.
pub struct OriginProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    jwks: PathBuf,
}

impl OriginProcess {
    /// Starts `binary` (a test's `env!("CARGO_BIN_EXE_origin")`) against `redis_url` and
    /// `db`, with `args` added, and waits until it answers `/health`.
    pub async fn spawn(
        binary: &str,
        redis_url: &str,
        db: &TestDatabase,
        id: &Identity,
        args: &[&str],
    ) -> Result<Self> {
        let port = crate::free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let jwks = std::env::temp_dir().join(format!("fg-jwks-{}.json", Uuid::new_v4().simple()));
        std::fs::write(&jwks, &id.jwks)?;
        let log = std::env::var_os("TEST_LOG").is_some();
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,sqlx=warn")
            .args(["--listen", &addr.to_string()])
            .args(["--database-url", &db.url])
            .args(["--redis-url", redis_url])
            .args(["--edge-secret", &id.secret_hex])
            .arg("--jwt-jwks-file")
            .arg(&jwks)
            .args(["--jwt-issuer", flashgate_cli::DEV_ISSUER])
            .args(["--jwt-audience", flashgate_cli::DEV_AUDIENCE])
            .args(["--gateway-success-rate", "1", "--gateway-latency-ms", "20"])
            .args(args)
            .stdout(if log { Stdio::inherit() } else { Stdio::null() })
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let mut origin = Self { child: Some(child), addr, jwks };
        origin.wait_ready().await?;
        Ok(origin)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the origin exited at start: {status}");
            }
            if client.get(self.url("/health")).send().await.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the origin at {} did not become healthy", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `kill -9`: no drain, no last relay flush, leases not given back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.jwks);
    }
}
