//! The connection to Redis: one server, or a Redis Cluster (redis-rs `cluster-async`).
//!
//! Everything the origin does in Redis goes through [`Redis`]. It is a `ConnectionLike`, so
//! scripts (`EVALSHA`, routed by their first key, the product's hash tag) and single-key
//! commands run unchanged on either. What differs is said here once:
//! - commands over several products (keys in different cluster slots) go through
//!   [`Redis::query_all`]: one pipeline on a single server, concurrent single commands on a
//!   cluster;
//! - [`Redis::config_get`] reads a setting from every master and replica;
//! - a cluster connection that fails for want of a node (refused, timed out, dropped, or
//!   `CLUSTERDOWN`) is replaced, at most once a second, by a fresh one that reads the slots
//!   anew ([`Cluster`]). redis-rs 1.8 refreshes its slot map on `MOVED`, but a master that
//!   died only ever gets reconnection attempts, so without this the origin would keep
//!   sending the dead master's slots to it after its replica took over.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Where Redis is: one server's URL, or a cluster's seed nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The cluster's nodes when any are given, else the single URL.
    pub fn new(url: &str, cluster_nodes: &[String]) -> Self {
        if cluster_nodes.is_empty() {
            Self::Single(url.to_owned())
        } else {
            Self::Cluster(cluster_nodes.to_vec())
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(url) => f.write_str(url),
            Self::Cluster(nodes) => write!(f, "the cluster of {}", nodes.join(",")),
        }
    }
}

/// How many replicas must have a write before its answer is given (`WAIT`), and for how
/// long to wait for them. `replicas: 0` waits for none: the master's append-only file is the
/// durability (a single server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAcks {
    pub replicas: u32,
    pub timeout: Duration,
}

impl ReplicaAcks {
    pub const NONE: Self = Self { replicas: 0, timeout: Duration::ZERO };
}

/// A connection to one Redis server or to a cluster; cheap to clone (both multiplex).
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// A cluster connection, replaced by a fresh one when a node it relies on is gone.
pub struct Cluster {
    client: ClusterClient,
    config: ClusterConfig,
    conn: RwLock<ClusterConnection>,
    replaced: Mutex<Instant>,
}

/// How often at most a failing cluster connection is replaced.
const REPLACE_EVERY: Duration = Duration::from_secs(1);

impl Cluster {
    fn current(&self) -> ClusterConnection {
        self.conn.read().expect("cluster lock").clone()
    }

    /// Notes a failed command: one that points at a node that is gone replaces the
    /// connection (at most once every [`REPLACE_EVERY`]), so the next command routes by the
    /// cluster's slot map as it is now.
    fn failed(&self, e: &RedisError) {
        let gone = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.code() == Some("CLUSTERDOWN");
        if !gone {
            return;
        }
        let mut replaced = self.replaced.lock().expect("cluster lock");
        if replaced.elapsed() < REPLACE_EVERY {
            return;
        }
        *replaced = Instant::now();
        let fresh = self.client.get_pending_async_connection_with_config(self.config.clone());
        *self.conn.write().expect("cluster lock") = fresh;
        tracing::warn!(error = %e, "a Redis Cluster node is unreachable: reading the slots anew");
    }

    async fn route(&self, cmd: Cmd, routing: RoutingInfo) -> RedisResult<Value> {
        let answer = self.current().route_command(cmd, routing).await;
        if let Err(e) = &answer {
            self.failed(e);
        }
        answer
    }
}

impl Redis {
    /// Connects lazily: the origin starts while Redis is down and answers 503 until it is
    /// back. Every command has `timeout` as its deadline.
    pub fn connect(target: &RedisTarget, timeout: Duration) -> RedisResult<Self> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(client, config)?))
            }
            RedisTarget::Cluster(nodes) => {
                // Retries cover a failover: MOVED and connection errors refresh the slot map
                // and retry, for at most `retries` attempts spaced up to 500 ms apart.
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                let conn = client.get_pending_async_connection_with_config(config.clone());
                Ok(Self::Cluster(Arc::new(Cluster {
                    client,
                    config,
                    conn: RwLock::new(conn),
                    replaced: Mutex::new(Instant::now() - REPLACE_EVERY),
                })))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        !matches!(self, Self::Single(_))
    }

    /// Runs `cmds`, whose keys may live on different shards, and reads each answer as `T`:
    /// one pipeline (one round trip) on a single server; on a cluster, every command on its
    /// own, all at once (the cluster connection pipelines them per node).
    pub async fn query_all<T: FromRedisValue>(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<T>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(&mut conn.clone()).await
            }
            Self::Cluster(_) => {
                futures::future::try_join_all(cmds.into_iter().map(|cmd| {
                    let mut conn = self.clone();
                    async move { cmd.query_async::<T>(&mut conn).await }
                }))
                .await
            }
        }
    }

    /// A configuration setting as every server answers it: `(server, value)`. One pair
    /// (`server` empty) on a single server; one per master and replica on a cluster.
    pub async fn config_get(&self, name: &str) -> RedisResult<Vec<(String, String)>> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let value_of = |pair: Value| -> RedisResult<String> {
            let pair: Vec<String> = redis::from_redis_value(pair)?;
            Ok(pair.get(1).cloned().unwrap_or_default())
        };
        match self {
            Self::Single(conn) => {
                let pair: Value = cmd.query_async(&mut conn.clone()).await?;
                Ok(vec![(String::new(), value_of(pair)?)])
            }
            Self::Cluster(cluster) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
                let Value::Map(answers) = cluster.route(cmd, routing).await? else {
                    return Err(
                        (redis::ErrorKind::Parse, "CONFIG GET: not one answer per node").into()
                    );
                };
                answers
                    .into_iter()
                    .map(|(node, pair)| {
                        if let Value::ServerError(e) = pair {
                            return Err(e.into());
                        }
                        Ok((redis::from_redis_value(node)?, value_of(pair)?))
                    })
                    .collect()
            }
        }
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(cluster) => Box::pin(async move {
                let answer = cluster.current().req_packed_command(cmd).await;
                if let Err(e) = &answer {
                    cluster.failed(e);
                }
                answer
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => Box::pin(async move {
                let answer = cluster.current().req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &answer {
                    cluster.failed(e);
                }
                answer
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
