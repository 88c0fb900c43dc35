//! Kafka: the relay's producer and the persister's consumer group.
//!
//! Topics are DESIGN.md's (`slot-acquired`, `slot-expired`, `slot-expiring-soon`), keyed by
//! product id, with the event id and W3C `traceparent` in headers and the event as JSON
//! (`schemaVersion` 1, schemas under `events/`). The producer is idempotent and waits for
//! every broker acknowledgement before the relay acknowledges the Redis entry. The
//! persister applies a batch through [`PgWriter`] and commits its offsets only after the
//! database commit; redelivery after a crash is harmless because the writer is idempotent
//! by event id.

use crate::outbox::events::OutboxEvent;
use crate::outbox::persister::PgWriter;
use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const TOPICS: [&str; 8] = [
    "slot-acquired",
    "slot-expired",
    "slot-expiring-soon",
    "payment-created",
    "payment-completed",
    "payment-failed",
    "payment-refund-required",
    "payment-refunded",
];
pub const PERSISTER_GROUP: &str = "flashgate-persister";
/// Where the persister puts what it cannot apply (poison events, unreadable messages), with
/// the reason and the original topic in headers. Created with the others.
pub const DEAD_LETTER_TOPIC: &str = "flashgate-dead-letter";

/// Where the broker is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Partitions for topics flashgate creates.
    pub partitions: i32,
    /// How long a publish may wait for the broker's acknowledgement.
    pub delivery_timeout: Duration,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), partitions: 3, delivery_timeout: Duration::from_secs(5) }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("socket.timeout.ms", "5000");
        c
    }
}

/// Creates flashgate's topics unless they exist.
pub async fn ensure_topics(settings: &KafkaSettings) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        settings.client().create().context("creating the Kafka admin client")?;
    let topics: Vec<NewTopic<'_>> = TOPICS
        .iter()
        .chain(std::iter::once(&DEAD_LETTER_TOPIC))
        .map(|t| NewTopic::new(t, settings.partitions, TopicReplication::Fixed(1)))
        .collect();
    let options =
        AdminOptions::new().operation_timeout(Some(Timeout::After(settings.delivery_timeout)));
    for result in admin.create_topics(&topics, &options).await.context("creating topics")? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// The relay's idempotent producer. An idempotent producer that the broker fences (after a
/// broker pause, say) is dead for good in librdkafka (a fatal error): the relay's next
/// publish then replaces it with a new one, so delivery resumes instead of failing until
/// the origin restarts. Nothing is lost meanwhile: undelivered events stay in the outbox.
#[derive(Clone)]
pub struct EventProducer {
    producer: Arc<RwLock<FutureProducer>>,
    settings: KafkaSettings,
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let producer = Self::create(settings)?;
        Ok(Self { producer: Arc::new(RwLock::new(producer)), settings: settings.clone() })
    }

    fn create(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
        settings
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", settings.delivery_timeout.as_millis().to_string())
            .create()
            .context("creating the Kafka producer")
    }

    fn current(&self) -> FutureProducer {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces the producer if it has died of a fatal error.
    fn renew_if_dead(&self) -> anyhow::Result<()> {
        let mut producer = self.producer.write().expect("producer lock");
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::warn!(%code, reason, "the Kafka producer died of a fatal error; replacing it");
            *producer = Self::create(&self.settings)?;
        }
        Ok(())
    }

    /// Publishes every event and returns once the broker has acknowledged all of them.
    pub async fn publish(&self, events: &[OutboxEvent]) -> anyhow::Result<()> {
        let producer = self.current();
        let timeout = self.settings.delivery_timeout;
        let sends = events.iter().map(|event| {
            let producer = &producer;
            async move {
                let payload = serde_json::to_vec(event)?;
                let key = event.product_id.to_string();
                let event_id = event.event_id.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header { key: "eventId", value: Some(event_id.as_str()) })
                    .insert(Header { key: "traceparent", value: Some(event.traceparent.as_str()) });
                let record = FutureRecord::to(event.kind.topic())
                    .key(&key)
                    .payload(&payload)
                    .headers(headers);
                producer.send(record, Timeout::After(timeout)).await.map(drop).map_err(|(e, _)| {
                    anyhow::Error::new(e).context(format!("publishing {event_id}"))
                })
            }
        });
        let results = futures::future::join_all(sends).await;
        if results.iter().any(Result::is_err) {
            self.renew_if_dead()?;
        }
        results.into_iter().collect()
    }

    /// Whether the broker answers (for `/health`).
    pub async fn ping(&self) -> bool {
        let producer = self.current();
        tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, Timeout::After(Duration::from_secs(1))).is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

/// The persister: a consumer in [`PERSISTER_GROUP`] feeding [`PgWriter`].
pub struct KafkaPersister {
    consumer: StreamConsumer,
    writer: PgWriter,
    dead_letters: FutureProducer,
    timeout: Duration,
    max_batch: usize,
    /// The first offset fetched but not committed, per topic partition: where to go back
    /// to when a batch could not be applied.
    uncommitted: std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>,
}

impl KafkaPersister {
    pub fn new(settings: &KafkaSettings, group: &str, writer: PgWriter) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = settings
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // Kafka's own default is 45 s; with 6 s a broker away for a few seconds dropped the
            // member, and tansu then never gave it partitions back (scripts/faults.sh,
            // broker-stop). A dead persister's partitions move after this long.
            .set("session.timeout.ms", "30000")
            .create()
            .context("creating the Kafka consumer")?;
        consumer.subscribe(&TOPICS).context("subscribing")?;
        let dead_letters = settings
            .client()
            .set("acks", "all")
            .set("message.timeout.ms", settings.delivery_timeout.as_millis().to_string())
            .create()
            .context("creating the dead-letter producer")?;
        Ok(Self {
            consumer,
            writer,
            dead_letters,
            timeout: settings.delivery_timeout,
            max_batch: 500,
            uncommitted: Default::default(),
        })
    }

    /// Publishes what could not be applied to [`DEAD_LETTER_TOPIC`], keyed like the
    /// original, with the reason and the original topic in headers.
    async fn publish_dead(
        &self,
        key: &str,
        payload: &[u8],
        topic: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "reason", value: Some(reason) })
            .insert(Header { key: "topic", value: Some(topic) });
        let record = FutureRecord::to(DEAD_LETTER_TOPIC).key(key).payload(payload).headers(headers);
        self.dead_letters
            .send(record, Timeout::After(self.timeout))
            .await
            .map(drop)
            .map_err(|(e, _)| anyhow::Error::new(e).context("publishing a dead letter"))
    }

    /// The topic partitions the group gave this persister (several persisters in one group
    /// share the partitions; a product's events stay in one partition of each topic).
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer
            .assignment()
            .map(|list| {
                list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
            })
            .unwrap_or_default()
    }

    /// Receives up to a batch of events, waiting at most `wait` for the first one.
    pub async fn fetch(&self, wait: Duration) -> anyhow::Result<Vec<OutboxEvent>> {
        let mut events = Vec::new();
        let mut deadline = wait;
        while events.len() < self.max_batch {
            let message = match tokio::time::timeout(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(m) => m.context("receiving from Kafka")?,
            };
            self.uncommitted
                .lock()
                .expect("uncommitted lock")
                .entry((message.topic().to_owned(), message.partition()))
                .or_insert(message.offset());
            match message.payload().map(serde_json::from_slice::<OutboxEvent>) {
                Some(Ok(event)) => events.push(event),
                other => {
                    // Not an event at all: set aside at once (no retry can fix its bytes).
                    let reason = match other {
                        Some(Err(e)) => format!("unreadable event: {e}"),
                        _ => "a message without a payload".to_owned(),
                    };
                    let payload = message.payload().unwrap_or_default();
                    let key =
                        String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                    self.publish_dead(&key, payload, message.topic(), &reason).await?;
                    self.writer
                        .dead_letter(None, &String::from_utf8_lossy(payload), &reason, "kafka")
                        .await?;
                }
            }
            // After the first message, take only what is already here.
            deadline = Duration::from_millis(20);
        }
        Ok(events)
    }

    /// Commits the offsets of everything fetched so far.
    pub fn commit(&self) -> anyhow::Result<()> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {
                self.uncommitted.lock().expect("uncommitted lock").clear();
                Ok(())
            }
            // Nothing consumed since the last commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(e).context("committing offsets"),
        }
    }

    /// Goes back to the first uncommitted offset of every partition, so what was fetched
    /// since the last commit is fetched again (after a batch failed to apply).
    pub fn rewind(&self) -> anyhow::Result<()> {
        let positions = std::mem::take(&mut *self.uncommitted.lock().expect("uncommitted lock"));
        for ((topic, partition), offset) in positions {
            self.consumer
                .seek(&topic, partition, rdkafka::Offset::Offset(offset), Duration::from_secs(5))
                .with_context(|| format!("rewinding {topic}/{partition} to {offset}"))?;
        }
        Ok(())
    }

    /// Fetch, apply, then commit: one deterministic step for tests and the worker loop. A
    /// batch that fails to apply is rewound and fetched again by the next step.
    pub async fn step(&self, wait: Duration) -> anyhow::Result<u64> {
        let events = match self.fetch(wait).await {
            Ok(events) => events,
            Err(e) => {
                // Whatever was fetched comes again: nothing is skipped unrecorded.
                if let Err(rewind) = self.rewind() {
                    tracing::error!(error = ?rewind, "rewinding after a failed fetch");
                }
                return Err(e);
            }
        };
        let applied = if events.is_empty() {
            0
        } else {
            match self.writer.deliver(&events, "kafka").await {
                Ok(delivery) => {
                    for (event_id, reason) in &delivery.dead {
                        if let Some(event) = events.iter().find(|e| e.event_id == *event_id) {
                            let payload = serde_json::to_vec(event)?;
                            let key = event.product_id.to_string();
                            self.publish_dead(&key, &payload, event.kind.topic(), reason).await?;
                        }
                    }
                    delivery.applied
                }
                Err(e) => {
                    if let Err(rewind) = self.rewind() {
                        tracing::error!(error = ?rewind, "rewinding after a failed batch");
                    }
                    return Err(e);
                }
            }
        };
        if !events.is_empty() {
            self.commit()?;
        }
        Ok(applied)
    }

    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                result = self.step(Duration::from_millis(500)) => {
                    if let Err(e) = result {
                        tracing::warn!(error = ?e, "persister step failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        tracing::info!("persister stopped");
    }
}
