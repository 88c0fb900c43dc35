//! The outbox relay: moves events from each product's Redis stream to their destination,
//! acknowledging (and deleting) a stream entry only after the destination confirmed it.
//!
//! Each stream has the consumer group `relay`. A fetch first re-reads this relay's own
//! pending entries (a delivery that failed: the sink was down), then claims entries another
//! relay left pending for longer than `claim_idle` (it died between delivery and ack), then
//! reads new ones. A failed step is retried with backoff capped at
//! [`crate::clock::MAX_BACKOFF`], so the
//! outbox moves again within a second of its destination coming back. Delivery is
//! at-least-once; the persister applies each event id once.
//! [`Relay::step`] is one pass over every product of its work partitions (several origins
//! divide them: [`crate::store::leases`]); [`Relay::fetch`], [`Relay::deliver`] and
//! [`Relay::ack`] are its parts, so tests can stop between them as a crash would.
//!
//! On a Redis Cluster a batch is delivered only once a replica has the entries (and
//! everything the master wrote before reading them, `WAIT`): an event the destination has
//! is never one a failover takes back.
//!
//! Destination today: [`Sink::Postgres`], the persister's writer called directly (the local
//! default without a broker). The Kafka producer (issue #3) is the other sink.

use crate::metrics::{Metrics, SinkLabels};
use crate::outbox::events::OutboxEvent;
use crate::outbox::kafka::EventProducer;
use crate::outbox::persister::PgWriter;
use crate::store::commit::Witness;
use crate::store::inventory::Inventory;
use crate::store::keys::ProductKeys;
use crate::store::leases::Partitions;
use crate::store::redis::Redis;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const GROUP: &str = "relay";

/// Where events go.
#[derive(Clone)]
pub enum Sink {
    /// Straight into PostgreSQL through the persister's writer.
    Postgres(PgWriter),
    /// To Kafka; the persister consumes it from there.
    Kafka(EventProducer),
}

/// Entries read from one product's outbox.
#[derive(Debug, Default)]
pub struct Batch {
    pub stream: String,
    pub events: Vec<OutboxEvent>,
    /// Entries that do not parse: moved to the dead-letter stream, never retried.
    pub poison: Vec<(StreamId, String)>,
}

impl Batch {
    fn entry_ids(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e.entry_id.clone())
            .chain(self.poison.iter().map(|(e, _)| e.id.clone()))
            .collect()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayReport {
    pub delivered: u64,
    pub dead: u64,
}

/// One span per event delivered (`outbox.relay`), continuing the event's trace; the event
/// carries the span on (to the Kafka record's headers, to the persister) when spans are
/// exported. The spans end when the returned guards are dropped, after the batch is acked.
fn trace_deliveries(events: &mut [OutboxEvent]) -> Vec<tracing::Span> {
    events
        .iter_mut()
        .map(|event| {
            let span = tracing::info_span!(
                "outbox.relay",
                event = event.kind.topic(),
                product_id = %event.product_id,
            );
            crate::telemetry::continue_from(&span, &event.traceparent);
            if let Some(traceparent) = crate::telemetry::traceparent_of(&span) {
                event.traceparent = traceparent;
            }
            span
        })
        .collect()
}

pub struct Relay {
    inventory: Inventory,
    conn: Redis,
    sink: Sink,
    consumer: String,
    batch: usize,
    claim_idle: Duration,
    groups: Mutex<HashSet<Uuid>>,
    metrics: Option<Metrics>,
    partitions: Partitions,
}

impl Relay {
    pub fn new(inventory: Inventory, sink: Sink, consumer: String, claim_idle: Duration) -> Self {
        let conn = inventory.connection();
        Self {
            inventory,
            conn,
            sink,
            consumer,
            batch: 500,
            claim_idle,
            groups: Mutex::default(),
            metrics: None,
            partitions: Partitions::All,
        }
    }

    /// Relays only these partitions' products (this origin's leased share).
    pub fn sharing(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    /// Counts what it delivers in the origin's `/metrics`.
    pub fn counting(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn ensure_group(&self, product: Uuid, stream: &str) -> redis::RedisResult<()> {
        if self.groups.lock().expect("groups lock").contains(&product) {
            return Ok(());
        }
        let created: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.groups.lock().expect("groups lock").insert(product);
        Ok(())
    }

    /// Reads a batch of one product's outbox: first entries abandoned by a dead relay, then
    /// new ones. A consumer group that vanished (Redis lost its data) is created again.
    pub async fn fetch(&self, product: Uuid) -> redis::RedisResult<Batch> {
        match self.fetch_once(product).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.groups.lock().expect("groups lock").remove(&product);
                self.fetch_once(product).await
            }
            other => other,
        }
    }

    async fn fetch_once(&self, product: Uuid) -> redis::RedisResult<Batch> {
        let stream = ProductKeys::new(product).outbox();
        self.ensure_group(product, &stream).await?;
        // Our own entries whose delivery failed: read again at once, not after an idle time.
        let mut entries = self.read_group(&stream, "0").await?;
        if entries.is_empty() {
            let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.claim_idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.batch)
                .query_async(&mut self.conn.clone())
                .await?;
            entries = claimed.claimed;
        }
        if entries.is_empty() {
            entries = self.read_group(&stream, ">").await?;
        }
        if let Some(last) = entries.last() {
            // A group commit sent after the reads covers the entries they read: an event
            // PostgreSQL has is on a replica. Replication is ordered: the last read is on
            // the master, so all are.
            self.inventory.replicated(product, Witness::Entry(last.id.clone())).await?;
        }
        let mut batch = Batch { stream, ..Batch::default() };
        for entry in entries {
            match OutboxEvent::from_entry(&entry) {
                Ok(event) => batch.events.push(event),
                Err(reason) => batch.poison.push((entry, reason)),
            }
        }
        Ok(batch)
    }

    /// `XREADGROUP` from `id`: `0` re-reads this consumer's pending entries, `>` new ones.
    async fn read_group(&self, stream: &str, id: &str) -> redis::RedisResult<Vec<StreamId>> {
        let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.batch)
            .arg("STREAMS")
            .arg(stream)
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await?;
        // A pending entry deleted meanwhile comes back without fields: nothing to deliver.
        Ok(read
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter(|e| !e.map.is_empty())
            .collect())
    }

    /// Hands the events to the sink; returns once the sink has them durably (PostgreSQL
    /// having set poison events aside in `dead_letters`: their number is returned).
    pub async fn deliver(&self, batch: &Batch) -> anyhow::Result<u64> {
        if batch.events.is_empty() {
            return Ok(0);
        }
        match &self.sink {
            Sink::Postgres(writer) => {
                writer.deliver(&batch.events, "relay").await.map(|d| d.dead.len() as u64)
            }
            Sink::Kafka(producer) => producer.publish(&batch.events).await.map(|()| 0),
        }
    }

    /// Acknowledges and deletes delivered entries (keeping the stream bounded); poison
    /// entries go to `<stream>:dead` first.
    pub async fn ack(&self, batch: &Batch) -> redis::RedisResult<()> {
        let ids = batch.entry_ids();
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (entry, reason) in &batch.poison {
            tracing::error!(stream = %batch.stream, id = %entry.id, %reason, "undeliverable outbox entry moved to dead letters");
            // Bounded like every key: the newest 10,000 dead entries are kept.
            let cmd = pipe
                .cmd("XADD")
                .arg(format!("{}:dead", batch.stream))
                .arg("MAXLEN")
                .arg("~")
                .arg(10_000)
                .arg("*");
            cmd.arg("entry").arg(&entry.id).arg("reason").arg(reason);
        }
        pipe.cmd("XACK").arg(&batch.stream).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(&batch.stream).arg(&ids).ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    /// One pass over every product's outbox, draining each (a hot product's backlog moves
    /// in one pass, batch by batch).
    pub async fn step(&self) -> anyhow::Result<RelayReport> {
        self.step_in(&self.partitions.current()).await
    }

    /// As [`Relay::step`], over the given partitions' products (a stopping origin's last
    /// flush covers what it held before giving its leases back).
    pub async fn step_in(&self, partitions: &[u16]) -> anyhow::Result<RelayReport> {
        let mut report = RelayReport::default();
        for product in self.inventory.products_in(partitions).await? {
            loop {
                let mut batch = self.fetch(product).await?;
                let spans = trace_deliveries(&mut batch.events);
                let dead = self.deliver(&batch).await?;
                batch.events.iter().for_each(crate::business::log_outbox_event);
                self.ack(&batch).await?;
                let size = batch.events.len() + batch.poison.len();
                if let Some(metrics) = &self.metrics {
                    let sink = match self.sink {
                        Sink::Postgres(_) => "postgres",
                        Sink::Kafka(_) => "kafka",
                    };
                    let delivered = batch.events.len() as u64 - dead;
                    metrics.relayed.get_or_create(&SinkLabels { sink }).inc_by(delivered);
                }
                report.delivered += batch.events.len() as u64 - dead;
                report.dead += batch.poison.len() as u64 + dead;
                drop(spans);
                if size < self.batch {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Steps every `interval` until cancelled (backing off after a failed step, see
    /// [`crate::clock::every`]); a step in progress finishes first.
    pub async fn run(&self, interval: Duration, cancel: CancellationToken) {
        crate::clock::every("relay", interval, cancel, || async { self.step().await.map(drop) })
            .await
    }
}
