//! The log builder: moves each product's log stream (`fg:{p}:log`, written by the scripts
//! in the step that decides) into PostgreSQL, grows its Merkle tree and signs a checkpoint.
//!
//! One [`Builder::build`] per product: in one transaction it locks the log's head, reads
//! the tree's right edge (the hashes appending needs), appends the stream's entries in index
//! order, and commits; only then are the stream entries deleted, so a crash between the two
//! leaves entries the next step skips (their index is below the head). An index above the
//! head means the stream lost entries (Redis lost its data before they were built): the
//! gap is published as `lost` entries, one per missing index, never hidden. A checkpoint
//! is signed in the same transaction whenever the log grew, so a drop's newest decision is
//! in a signed checkpoint within one step (`--transparency-interval-ms`, 250 ms by
//! default), and the last one of a drop is signed once its last entry is built. Neither
//! PostgreSQL nor signing is on the grant path.

use super::Transparency;
use crate::pg;
use crate::store::inventory::Inventory;
use crate::store::keys::ProductKeys;
use crate::store::leases::Partitions;
use crate::store::redis::Redis;
use anyhow::{Context, anyhow};
use flashgate_core::transparency::{Body, Entry, Outcome, ReturnReason};
use flashgate_tlog::Hash;
use flashgate_tlog::tree::{Tree, frontier_indexes};
use redis::streams::{StreamId, StreamRangeReply};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Stream entries one build reads.
const BATCH: usize = 2_000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BuildReport {
    /// Entries appended to logs.
    pub appended: u64,
    /// Checkpoints signed.
    pub signed: u64,
    /// Entries the streams had lost (published as `lost`).
    pub lost: u64,
}

pub struct Builder {
    inventory: Inventory,
    conn: Redis,
    db: PgPool,
    log: Arc<Transparency>,
    partitions: Partitions,
}

fn field(entry: &StreamId, name: &str) -> anyhow::Result<String> {
    entry
        .get::<String>(name)
        .with_context(|| format!("log stream entry {} has no {name}", entry.id))
}

fn int(entry: &StreamId, name: &str) -> anyhow::Result<i64> {
    let text = field(entry, name)?;
    text.parse().with_context(|| format!("log stream entry {}: {name} is {text:?}", entry.id))
}

/// A stream entry as the log entry it is.
pub fn parse(entry: &StreamId) -> anyhow::Result<Entry> {
    let index = u64::try_from(int(entry, "index")?).context("a negative log index")?;
    let kind = field(entry, "kind")?;
    let body = match kind.as_str() {
        "decision" => Body::Decision {
            arrival_us: int(entry, "arrivalUs")?,
            edge: field(entry, "edge")?,
            buyer: field(entry, "buyer")?,
            outcome: Outcome::parse(&field(entry, "outcome")?)
                .with_context(|| format!("log stream entry {}: unknown outcome", entry.id))?,
            at_ms: int(entry, "atMs")?,
            late: field(entry, "late")? == "1",
            window_us: int(entry, "windowUs")?,
        },
        "returned" => Body::Returned {
            buyer: field(entry, "buyer")?,
            reason: match field(entry, "reason")?.as_str() {
                "expired" => ReturnReason::Expired,
                other => {
                    return Err(anyhow!("log stream entry {}: return reason {other:?}", entry.id));
                }
            },
            at_ms: int(entry, "atMs")?,
        },
        "stock" => Body::Stock {
            total: int(entry, "total")?,
            starts_at_ms: int(entry, "startsAtMs")?,
            ends_at_ms: Some(field(entry, "endsAtMs")?)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse())
                .transpose()
                .context("endsAtMs")?,
            at_ms: int(entry, "atMs")?,
        },
        "admitted" => Body::Admitted {
            buyer: field(entry, "buyer")?,
            place: int(entry, "place")?,
            seq: int(entry, "seq")?,
            joined_at_ms: int(entry, "joinedAtMs")?,
            at_ms: int(entry, "atMs")?,
        },
        other => return Err(anyhow!("log stream entry {}: unknown kind {other:?}", entry.id)),
    };
    Ok(Entry { index, body })
}

fn buyer_of(entry: &Entry) -> Option<String> {
    match &entry.body {
        Body::Decision { buyer, .. }
        | Body::Returned { buyer, .. }
        | Body::Admitted { buyer, .. } => Some(buyer.clone()),
        Body::Stock { .. } | Body::Lost { .. } => None,
    }
}

impl Builder {
    pub fn new(inventory: Inventory, db: PgPool, log: Arc<Transparency>) -> Self {
        let conn = inventory.connection();
        Self { inventory, conn, db, log, partitions: Partitions::All }
    }

    /// Builds only these partitions' products (this origin's leased share).
    pub fn sharing(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    /// One pass over every product of this origin's partitions.
    pub async fn step(&self) -> anyhow::Result<BuildReport> {
        let mut report = BuildReport::default();
        for product in self.inventory.products_in(&self.partitions.current()).await? {
            loop {
                let one = self.build(product).await?;
                report.appended += one.appended;
                report.signed += one.signed;
                report.lost += one.lost;
                if one.appended < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Builds what one product's stream holds into its log, and signs the result.
    pub async fn build(&self, product: Uuid) -> anyhow::Result<BuildReport> {
        let stream = ProductKeys::new(product).log();
        let read: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut report = BuildReport::default();
        if read.ids.is_empty() {
            // Every build that appends also signs, so an empty stream leaves nothing to do.
            return Ok(report);
        }
        let mut tx = self.db.begin().await?;
        let head = pg::transparency::lock_head(&mut tx, product).await?;
        let size = u64::try_from(head.size).context("log size")?;
        let frontier: Vec<i64> = frontier_indexes(size).into_iter().map(|i| i as i64).collect();
        let known = pg::transparency::hashes(&mut *tx, product, &frontier).await?;
        let mut tree = Tree::with_hashes(
            size,
            known.into_iter().map(|(i, h)| {
                let hash: [u8; 32] = h.try_into().unwrap_or([0; 32]);
                (i as u64, Hash(hash))
            }),
        );
        let mut entries = Vec::new();
        let mut hashes = Vec::new();
        let mut done = Vec::new();
        for raw in &read.ids {
            done.push(raw.id.clone());
            let entry = match parse(raw) {
                Ok(entry) => entry,
                Err(e) => {
                    // Written by our own scripts: a malformed one is a defect, kept in the
                    // stream (not deleted) and reported, and the log stops here.
                    done.pop();
                    tracing::error!(%product, error = ?e, "log stream entry not understood");
                    break;
                }
            };
            if entry.index < tree.size() {
                continue; // built before a crash kept it from being deleted
            }
            while entry.index > tree.size() {
                let lost = Entry { index: tree.size(), body: Body::Lost { count: 1 } };
                report.lost += 1;
                self.push(&mut tree, &lost, &mut entries, &mut hashes)?;
            }
            self.push(&mut tree, &entry, &mut entries, &mut hashes)?;
        }
        if !entries.is_empty() {
            report.appended = entries.len() as u64;
            pg::transparency::append(&mut tx, product, &entries, &hashes, tree.size() as i64)
                .await?;
        }
        if tree.size() > head.signed_size as u64 {
            let root = tree.root().map_err(|e| anyhow!("the log's root: {e}"))?;
            let note = self.log.signer.sign(
                &self.log.signer.origin(&product.to_string()),
                tree.size(),
                root,
            )?;
            pg::transparency::record_checkpoint(&mut tx, product, tree.size() as i64, &note)
                .await?;
            report.signed = 1;
        }
        tx.commit().await?;
        if !done.is_empty() {
            redis::cmd("XDEL")
                .arg(&stream)
                .arg(&done)
                .query_async::<()>(&mut self.conn.clone())
                .await?;
        }
        if report.lost > 0 {
            tracing::error!(%product, lost = report.lost, "log entries lost with Redis, published as lost");
        }
        Ok(report)
    }

    fn push(
        &self,
        tree: &mut Tree,
        entry: &Entry,
        entries: &mut Vec<pg::transparency::EntryRow>,
        hashes: &mut Vec<(i64, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let bytes = entry.to_bytes();
        let added = tree.append(&bytes).map_err(|e| anyhow!("growing the log's tree: {e}"))?;
        hashes.extend(added.into_iter().map(|(i, h)| (i as i64, h.0.to_vec())));
        entries.push((entry.index as i64, bytes, buyer_of(entry)));
        Ok(())
    }

    /// Steps every `interval` until cancelled; a step in progress finishes first.
    pub async fn run(&self, interval: Duration, cancel: CancellationToken) {
        crate::clock::every("transparency", interval, cancel, || async {
            self.step().await.map(drop)
        })
        .await
    }
}
