//! Group commit of replica acknowledgements: many grants' `WAIT` as one.
//!
//! Redis blocks the connection a `WAIT` is sent on until the replicas answer, and the
//! origin sends every request for a master over one multiplexed connection: a `WAIT` per
//! grant on it held up every request behind it. Instead, a grant whose script has answered
//! joins its product's group and waits for the group's next commit:
//! - on connections of their own ([`COMMIT_CONNECTIONS`], never the requests' one; a
//!   product always uses the same one),
//! - a check that the master has every write the group waits for ([`Witness`]: each
//!   grant's slot record, the last outbox entry a relay read),
//! - a write of its own, `fg:{<productId>}:commit` (expiring after [`COMMIT_KEY_TTL`]),
//! - then `WAIT` for that write.
//!
//! The commit's write is sent after every grant in the group was answered by the master,
//! and replication is one ordered stream per master: once a replica has the commit's write,
//! it has every grant before it.
//!
//! The check, the write and the `WAIT` go as one pipeline, so they reach one node over one
//! connection: `WAIT` counts only the writes of the connection it is sent on, and answers
//! for whichever node it reaches. A cluster client whose connection to a master broke
//! sends a command elsewhere (redis-rs falls back to the shard's replica, then to any node)
//! and, once a replica is promoted, to it: a node that never had a grant would then
//! acknowledge it. Only the product's master accepts the `SET`, and the check fails on a
//! promoted replica that lacks a write the group covers, so a grant is answered 201 only
//! once the node that has it has it on its replicas; otherwise the whole group hears 503
//! and asks again. One commit per product is in flight at a time; grants that
//! join meanwhile go in the next one, so a hot product pays one `WAIT` per replica round
//! trip, not one per grant. Commits of different products run side by side on different
//! connections, and Redis answers every `WAIT` blocked on a master with one round of
//! acknowledgements from its replicas.

use crate::metrics::ReplicaCommits;
use crate::store::keys::ProductKeys;
use crate::store::redis::{Redis, RedisTarget, ReplicaAcks};
use redis::{RedisResult, Value};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Connections commits are spread over (by product): as many `WAIT`s at once per master.
pub const COMMIT_CONNECTIONS: usize = 16;

/// How long a product's commit key outlives its last commit.
pub const COMMIT_KEY_TTL: Duration = Duration::from_secs(60);

/// What one commit tells its group: how many replicas acknowledged it, or why it failed.
type Outcome = Result<u32, String>;

/// A write waiting for the next commit, and where to tell it the outcome.
type Waiter = (Witness, oneshot::Sender<Outcome>);

/// A write a commit must find on the master before it waits for the master's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// A grant: its slot's record.
    Slot(Uuid),
    /// What a relay read: the last entry id of its batch from the product's outbox.
    Entry(String),
}

/// Groups grants per product and commits each group with one `WAIT`; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    /// The commits' own connections: a `WAIT` blocks only commits behind it on its own.
    conns: Vec<Redis>,
    acks: ReplicaAcks,
    metrics: ReplicaCommits,
    /// A product is here while its commits run: the writes waiting for the next one.
    waiting: Mutex<HashMap<Uuid, Vec<Waiter>>>,
}

impl GroupCommit {
    /// Commits over [`COMMIT_CONNECTIONS`] connections of their own to `target`, waiting
    /// as `acks` says. They connect lazily: without replicas to wait for, never.
    pub fn connect(
        target: &RedisTarget,
        timeout: Duration,
        acks: ReplicaAcks,
    ) -> RedisResult<Self> {
        let conns = (0..COMMIT_CONNECTIONS)
            .map(|_| Redis::connect(target, timeout))
            .collect::<RedisResult<_>>()?;
        Ok(Self::over(conns, acks, ReplicaCommits::default()))
    }

    fn over(conns: Vec<Redis>, acks: ReplicaAcks, metrics: ReplicaCommits) -> Self {
        let waiting = Mutex::new(HashMap::new());
        Self { inner: Arc::new(Inner { conns, acks, metrics, waiting }) }
    }

    /// The same connections, waiting as `acks` says.
    pub fn with_acks(&self, acks: ReplicaAcks) -> Self {
        Self::over(self.inner.conns.clone(), acks, self.inner.metrics.clone())
    }

    /// The same, recording each commit in `metrics` (an application's registry).
    pub fn with_metrics(&self, metrics: ReplicaCommits) -> Self {
        Self::over(self.inner.conns.clone(), self.inner.acks, metrics)
    }

    pub fn acks(&self) -> ReplicaAcks {
        self.inner.acks
    }

    /// Returns once every write the master of `product` answered before this call, `witness`
    /// among them, is on the replicas [`ReplicaAcks`] asks for; an error (answered 503) when
    /// they are not within its timeout, or the master no longer has `witness`. Nothing to
    /// wait for without replicas.
    pub async fn replicated(&self, product: Uuid, witness: Witness) -> RedisResult<()> {
        let wanted = self.inner.acks.replicas;
        if wanted == 0 {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let lead = match self.inner.waiting.lock().expect("commit lock").entry(product) {
            Entry::Occupied(mut group) => {
                group.get_mut().push((witness, tx));
                false
            }
            Entry::Vacant(group) => {
                group.insert(vec![(witness, tx)]);
                true
            }
        };
        if lead {
            // Its own task: a buyer who hangs up must not stop the commits of the others.
            tokio::spawn(self.clone().lead(product));
        }
        let acked = match rx.await {
            Ok(Ok(acked)) => acked,
            Ok(Err(failure)) => return Err(std::io::Error::other(failure).into()),
            Err(_) => return Err(std::io::Error::other("the group commit ended").into()),
        };
        if acked >= wanted {
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the write reached {acked} of {wanted} replicas within {:?}",
                self.inner.acks.timeout
            ),
        )
        .into())
    }

    /// Commits `product`'s group again and again while grants join it.
    async fn lead(self, product: Uuid) {
        loop {
            let group = {
                let mut waiting = self.inner.waiting.lock().expect("commit lock");
                let Some(group) = waiting.get_mut(&product) else { return };
                if group.is_empty() {
                    waiting.remove(&product);
                    return;
                }
                std::mem::take(group)
            };
            let witnesses: Vec<&Witness> = group.iter().map(|(w, _)| w).collect();
            let started = std::time::Instant::now();
            let outcome = self.commit(product, &witnesses).await.map_err(|e| e.to_string());
            let label = match &outcome {
                Ok(acked) if *acked >= self.inner.acks.replicas => "acked",
                Ok(_) => "short",
                Err(_) => "failed",
            };
            self.inner.metrics.observe(label, group.len(), started.elapsed().as_secs_f64());
            for (_, waiter) in group {
                let _ = waiter.send(outcome.clone());
            }
        }
    }

    /// One commit, as one pipeline to the product's master: the witnesses checked, a write
    /// of its own, then `WAIT` for it; how many replicas acknowledged.
    async fn commit(&self, product: Uuid, witnesses: &[&Witness]) -> RedisResult<u32> {
        let keys = ProductKeys::new(product);
        let mut pipe = redis::pipe();
        // Every key carries the product's hash tag: one slot, one node.
        pipe.cmd("SET").arg(keys.commit()).arg(1).arg("PX").arg(COMMIT_KEY_TTL.as_millis() as u64);
        let slots: Vec<String> = witnesses
            .iter()
            .filter_map(|w| match w {
                Witness::Slot(slot) => Some(keys.slot(*slot)),
                Witness::Entry(_) => None,
            })
            .collect();
        let entries: Vec<&str> = witnesses
            .iter()
            .filter_map(|w| match w {
                Witness::Entry(id) => Some(id.as_str()),
                Witness::Slot(_) => None,
            })
            .collect();
        if !slots.is_empty() {
            pipe.cmd("EXISTS").arg(&slots);
        }
        for id in &entries {
            pipe.cmd("XRANGE").arg(keys.outbox()).arg(*id).arg(*id);
        }
        let acks = self.inner.acks;
        pipe.cmd("WAIT").arg(acks.replicas).arg((acks.timeout.as_millis() as u64).max(1));
        let conns = &self.inner.conns;
        let conn = &conns[(product.as_u128() % conns.len() as u128) as usize];
        let mut answers: Vec<Value> = pipe.query_async(&mut conn.clone()).await?;
        let acked: i64 = redis::from_redis_value(answers.pop().unwrap_or(Value::Nil))?;
        let mut answers = answers.into_iter();
        let written: String = redis::from_redis_value(answers.next().unwrap_or(Value::Nil))?;
        let found = if slots.is_empty() {
            true
        } else {
            let present: usize = redis::from_redis_value(answers.next().unwrap_or(Value::Nil))?;
            present == slots.len()
        };
        let found = found
            && answers.all(|range| matches!(range, Value::Array(entries) if !entries.is_empty()));
        if written != "OK" || !found {
            return Err(std::io::Error::other(
                "the master lacks a write this commit covers (a failover took it back)",
            )
            .into());
        }
        Ok(acked.max(0) as u32)
    }
}
