//! Group commit of replica acknowledgements: many grants' `WAIT` as one.
//!
//! Redis blocks the connection a `WAIT` is sent on until the replicas answer, and the
//! origin sends every request for a master over one multiplexed connection: a `WAIT` per
//! grant on it held up every request behind it. Instead, a grant whose script has answered
//! joins its product's group and waits for the group's next commit:
//! - on connections of their own ([`COMMIT_CONNECTIONS`], never the requests' one; a
//!   product always uses the same one),
//! - a write of its own, `fg:{<productId>}:commit` (expiring after [`COMMIT_KEY_TTL`]),
//! - then `WAIT` for that write ([`Redis::write_and_wait`]).
//!
//! The commit's write is sent after every grant in the group was answered by the master,
//! and replication is one ordered stream per master: once a replica has the commit's write,
//! it has every grant before it. One commit per product is in flight at a time; grants that
//! join meanwhile go in the next one, so a hot product pays one `WAIT` per replica round
//! trip, not one per grant. Commits of different products run side by side on different
//! connections, and Redis answers every `WAIT` blocked on a master with one round of
//! acknowledgements from its replicas.

use crate::store::keys::ProductKeys;
use crate::store::redis::{Redis, RedisTarget, ReplicaAcks};
use redis::RedisResult;
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

/// Groups grants per product and commits each group with one `WAIT`; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    /// The commits' own connections: a `WAIT` blocks only commits behind it on its own.
    conns: Vec<Redis>,
    acks: ReplicaAcks,
    /// A product is here while its commits run: the grants waiting for the next one.
    waiting: Mutex<HashMap<Uuid, Vec<oneshot::Sender<Outcome>>>>,
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
        Ok(Self { inner: Arc::new(Inner { conns, acks, waiting: Mutex::new(HashMap::new()) }) })
    }

    /// The same connections, waiting as `acks` says.
    pub fn with_acks(&self, acks: ReplicaAcks) -> Self {
        let conns = self.inner.conns.clone();
        Self { inner: Arc::new(Inner { conns, acks, waiting: Mutex::new(HashMap::new()) }) }
    }

    pub fn acks(&self) -> ReplicaAcks {
        self.inner.acks
    }

    /// Returns once every write the master of `product` answered before this call is on
    /// the replicas [`ReplicaAcks`] asks for; an error (answered 503) when they are not
    /// within its timeout. Nothing to wait for without replicas.
    pub async fn replicated(&self, product: Uuid) -> RedisResult<()> {
        let wanted = self.inner.acks.replicas;
        if wanted == 0 {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let lead = match self.inner.waiting.lock().expect("commit lock").entry(product) {
            Entry::Occupied(mut group) => {
                group.get_mut().push(tx);
                false
            }
            Entry::Vacant(group) => {
                group.insert(vec![tx]);
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
            let outcome = self.commit(product).await.map_err(|e| e.to_string());
            for grant in group {
                let _ = grant.send(outcome.clone());
            }
        }
    }

    /// One commit: a write of its own, then `WAIT` for it, as one pipeline to the
    /// product's master ([`Redis::write_and_wait`]).
    async fn commit(&self, product: Uuid) -> RedisResult<u32> {
        let key = ProductKeys::new(product).commit();
        let conns = &self.inner.conns;
        let conn = &conns[(product.as_u128() % conns.len() as u128) as usize];
        conn.write_and_wait(&key, COMMIT_KEY_TTL, self.inner.acks).await
    }
}
