//! The Kafka path: relay → broker → persister → PostgreSQL, with crashes on both sides.
//! Events on the wire match the schemas under `events/`.

use flashgate_e2e::{DrivenOrigin, KafkaBroker, repo_root};
use flashgate_origin::clock::Clock;
use flashgate_origin::gateway::DECLINING_METHOD;
use flashgate_origin::outbox::kafka::{
    EventProducer, KafkaPersister, KafkaSettings, PERSISTER_GROUP,
};
use flashgate_origin::outbox::persister::PgWriter;
use flashgate_origin::outbox::relay::{Relay, Sink};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

struct Sale {
    driven: DrivenOrigin,
    kafka: KafkaBroker,
}

impl std::ops::Deref for Sale {
    type Target = DrivenOrigin;
    fn deref(&self) -> &DrivenOrigin {
        &self.driven
    }
}

impl Sale {
    async fn start() -> Self {
        let kafka = KafkaBroker::start().await.unwrap();
        let brokers = kafka.brokers.clone();
        let driven = DrivenOrigin::start_with(|s| s.kafka = Some(KafkaSettings::new(brokers)))
            .await
            .unwrap();
        Self { driven, kafka }
    }

    fn settings(&self) -> KafkaSettings {
        KafkaSettings::new(self.kafka.brokers.clone())
    }

    fn relay(&self, claim_idle: Duration) -> Relay {
        let producer = EventProducer::new(&self.settings()).unwrap();
        Relay::new(
            self.origin.state.inventory.clone(),
            Sink::Kafka(producer),
            format!("relay-{}", Uuid::new_v4().simple()),
            claim_idle,
        )
    }

    fn persister(&self) -> KafkaPersister {
        let writer = PgWriter::new(self.origin.state.db.clone());
        KafkaPersister::new(&self.settings(), PERSISTER_GROUP, writer).unwrap()
    }

    async fn grant(&self, product: Uuid) {
        assert_eq!(self.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    }

    /// Steps `persister` until PostgreSQL holds `slots` slots (at most ~20 s: joining a
    /// consumer group takes a few seconds).
    async fn persist_until(&self, persister: &KafkaPersister, slots: i64) {
        for _ in 0..40 {
            persister.step(Duration::from_millis(500)).await.unwrap();
            if self.pg_count("SELECT count(*) FROM purchase_slots").await >= slots {
                return;
            }
        }
        panic!("PostgreSQL did not reach {slots} slots");
    }
}

#[tokio::test]
async fn events_go_through_kafka_to_postgres_and_match_their_schemas() {
    let t = Sale::start().await;
    let product = t.origin.create_product(&t.id, 10).await.unwrap();
    for _ in 0..3 {
        t.grant(product).await;
    }
    assert_eq!(t.relay(Duration::from_secs(30)).step().await.unwrap().delivered, 3);
    let persister = t.persister();
    t.persist_until(&persister, 3).await;
    assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, 3);

    // Payments: one paid, one declined, one that succeeds after its slot expired.
    let t = &t;
    let pay = |user: Uuid, slot: Uuid, method: &'static str| async move {
        let body = json!({"slotId": slot, "method": method}).to_string();
        let now = t.clock.now_us() as u64;
        let r = t.origin.pay_signed(&t.id, user, &body, Some("k"), now).await.unwrap();
        assert_eq!(r.status(), 202);
    };
    let (paid_user, paid) = t.driven.grant(product).await.unwrap();
    let (declined_user, declined) = t.driven.grant(product).await.unwrap();
    let (late_user, late) = t.driven.grant(product).await.unwrap();
    pay(paid_user, paid, "card").await;
    pay(declined_user, declined, DECLINING_METHOD).await;
    t.origin.gateway.release_all().await.unwrap();
    pay(late_user, late, "card").await;

    // Let the unpaid ones remind and expire, then the late payment's success arrive.
    t.clock.advance(Duration::from_secs(31 * 60));
    let sweep = t.worker().step().await.unwrap();
    // The late payer's slot waits for its payment in flight (settled first, issue #12); its
    // success then arrives after the deadline and expires it, refunded.
    assert_eq!((sweep.reminded, sweep.expired, sweep.paying), (5, 4, 1));
    t.origin.gateway.release_all().await.unwrap();
    let expected: HashMap<&str, usize> = [
        ("slot-acquired", 6),
        ("slot-expiring-soon", 5),
        ("slot-expired", 5),
        ("payment-created", 3),
        ("payment-completed", 1),
        ("payment-failed", 1),
        ("payment-refund-required", 1),
        ("payment-refunded", 1),
    ]
    .into_iter()
    .collect();
    let total: usize = expected.values().sum();
    assert_eq!(
        t.relay(Duration::from_secs(30)).step().await.unwrap().delivered as usize,
        total - 3
    );

    // An independent consumer sees what went over the wire.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &t.kafka.brokers)
        .set("group.id", format!("audit-{}", Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&flashgate_origin::outbox::kafka::TOPICS).unwrap();
    let mut per_topic = HashMap::<String, usize>::new();
    for _ in 0..total {
        let m =
            tokio::time::timeout(Duration::from_secs(20), reader.recv()).await.unwrap().unwrap();
        let topic = m.topic().to_owned();
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(repo_root().join(format!("events/{topic}.v1.json"))).unwrap(),
        )
        .unwrap();
        let event: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&event).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{event} violates {topic}.v1: {errors:?}");
        assert_eq!(event["type"], topic.as_str());
        assert_eq!(m.key().unwrap(), product.to_string().as_bytes(), "keyed by product");
        let headers = m.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("eventId").as_deref(), event["eventId"].as_str());
        assert_eq!(header("traceparent").as_deref(), event["traceparent"].as_str());
        *per_topic.entry(topic).or_default() += 1;
    }
    for topic in flashgate_origin::outbox::kafka::TOPICS {
        assert_eq!(per_topic.get(topic), expected.get(topic), "{topic}: {per_topic:?}");
    }

    // The persister carries the payments to PostgreSQL.
    for _ in 0..40 {
        persister.step(Duration::from_millis(500)).await.unwrap();
        if t.pg_count("SELECT count(*) FROM slot_audit_log").await == total as i64 {
            break;
        }
    }
    assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, total as i64);
    for (status, n) in [("COMPLETED", 1), ("FAILED", 1), ("REFUNDED", 1)] {
        let sql = format!("SELECT count(*) FROM purchases WHERE status = '{status}'");
        assert_eq!(t.pg_count(&sql).await, n, "{status}");
    }
    assert_eq!(t.pg_live(product).await, 1, "only the paid slot is live");
}

#[tokio::test]
async fn a_relay_killed_after_publishing_republishes_and_postgres_holds_each_event_once() {
    let t = Sale::start().await;
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    for _ in 0..3 {
        t.grant(product).await;
    }
    let doomed = t.relay(Duration::from_secs(30));
    let batch = doomed.fetch(product).await.unwrap();
    doomed.deliver(&batch).await.unwrap();
    drop(doomed); // published, never acknowledged
    assert_eq!(t.relay(Duration::ZERO).step().await.unwrap().delivered, 3, "sent again");

    let persister = t.persister();
    t.persist_until(&persister, 3).await;
    // Drain the duplicates too, then check nothing was applied twice.
    for _ in 0..4 {
        persister.step(Duration::from_millis(300)).await.unwrap();
    }
    assert_eq!(t.pg_count("SELECT count(*) FROM purchase_slots").await, 3);
    assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, 3);
}

#[tokio::test]
async fn a_persister_restarted_mid_batch_loses_and_duplicates_nothing() {
    let t = Sale::start().await;
    let product = t.origin.create_product(&t.id, 10).await.unwrap();
    for _ in 0..4 {
        t.grant(product).await;
    }
    assert_eq!(t.relay(Duration::from_secs(30)).step().await.unwrap().delivered, 4);

    // Dies after reading, before writing: nothing committed, so nothing is lost.
    let first = t.persister();
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.extend(first.fetch(Duration::from_millis(500)).await.unwrap());
        if seen.len() >= 4 {
            break;
        }
    }
    assert_eq!(seen.len(), 4);
    drop(first);

    // Dies after writing, before committing offsets: the next one gets the batch again.
    let second = t.persister();
    let mut again = Vec::new();
    for _ in 0..40 {
        again.extend(second.fetch(Duration::from_millis(500)).await.unwrap());
        if again.len() >= 4 {
            break;
        }
    }
    assert_eq!(again.len(), 4, "uncommitted events are delivered again");
    PgWriter::new(t.origin.state.db.clone()).apply(&again).await.unwrap();
    drop(second);

    let third = t.persister();
    let mut replayed = 0;
    for _ in 0..40 {
        let events = third.fetch(Duration::from_millis(500)).await.unwrap();
        replayed += events.len();
        assert_eq!(
            PgWriter::new(t.origin.state.db.clone()).apply(&events).await.unwrap(),
            0,
            "already applied"
        );
        third.commit().unwrap();
        if replayed >= 4 {
            break;
        }
    }
    assert_eq!(replayed, 4);
    assert_eq!(t.pg_count("SELECT count(*) FROM purchase_slots").await, 4);
    assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, 4);
    drop(third);

    // Committed: a fresh member has nothing left to do.
    let fourth = t.persister();
    assert!(fourth.fetch(Duration::from_secs(8)).await.unwrap().is_empty());
}

#[tokio::test]
async fn health_reports_kafka() {
    let t = Sale::start().await;
    let ok: Value = reqwest::get(t.origin.url("/health")).await.unwrap().json().await.unwrap();
    assert_eq!(ok["components"]["kafka"], "up");
    let Sale { kafka, driven } = t;
    drop(kafka);
    let r = reqwest::get(driven.origin.url("/health")).await.unwrap();
    let p = flashgate_e2e::problem(r, 503, "unavailable").await;
    assert_eq!(p["components"]["kafka"], "down");
}

#[tokio::test]
async fn with_a_broker_the_running_origin_persists_through_kafka_on_its_own() {
    let kafka = KafkaBroker::start().await.unwrap();
    let redis = flashgate_e2e::RedisServer::start().unwrap();
    let db = flashgate_e2e::TestDatabase::create().await.unwrap();
    let id = flashgate_e2e::Identity::generate().unwrap();
    let brokers = kafka.brokers.clone();
    let clock = std::sync::Arc::new(flashgate_origin::clock::SystemClock);
    let origin = flashgate_e2e::TestOrigin::spawn_with(&redis, &db, &id, clock, |s| {
        s.kafka = Some(KafkaSettings::new(brokers));
    })
    .await
    .unwrap();
    let product = origin.create_product(&id, 2).await.unwrap();
    let r =
        origin.acquire_signed(&id, Uuid::new_v4(), product, flashgate_e2e::now_us()).await.unwrap();
    assert_eq!(r.status(), 201);
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM purchase_slots")
            .fetch_one(&origin.state.db)
            .await
            .unwrap();
        if n == 1 {
            // With a broker the relay only publishes: the row can only have come through Kafka.
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the grant never reached PostgreSQL through Kafka");
}

#[tokio::test]
async fn poison_and_unreadable_messages_go_to_the_dead_letter_topic_and_the_persister_moves_on() {
    use flashgate_origin::outbox::kafka::DEAD_LETTER_TOPIC;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let t = Sale::start().await;
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    let (user, slot) = t.driven.grant(product).await.unwrap();
    let poison = t.redis.add_poison_event(product, slot, user).await.unwrap();
    t.grant(product).await;
    assert_eq!(t.relay(Duration::from_secs(30)).step().await.unwrap().delivered, 3);
    // And a message that is not an event at all.
    let raw: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &t.kafka.brokers).create().unwrap();
    raw.send(
        FutureRecord::to("slot-acquired").key(&product.to_string()).payload("not json"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    // A persister counting into the origin's metrics, as the origin's own does.
    let writer = PgWriter::new(t.origin.state.db.clone()).counting(t.origin.state.metrics.clone());
    let persister = KafkaPersister::new(&t.settings(), PERSISTER_GROUP, writer).unwrap();
    t.persist_until(&persister, 2).await;
    for _ in 0..40 {
        if t.pg_count("SELECT count(*) FROM dead_letters").await >= 2 {
            break;
        }
        persister.step(Duration::from_millis(300)).await.unwrap();
    }
    let poisoned: Vec<(Option<Uuid>, String)> = sqlx::query_as(
        "SELECT event_id, reason FROM dead_letters WHERE source = 'kafka' ORDER BY id",
    )
    .fetch_all(&t.origin.state.db)
    .await
    .unwrap();
    assert_eq!(poisoned.len(), 2, "{poisoned:?}");
    assert!(poisoned.iter().any(|(id, _)| *id == Some(poison)), "{poisoned:?}");
    assert!(poisoned.iter().any(|(id, r)| id.is_none() && r.contains("unreadable")));

    // Both are on the dead-letter topic, each with its reason and original topic.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &t.kafka.brokers)
        .set("group.id", format!("dlq-{}", Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[DEAD_LETTER_TOPIC]).unwrap();
    let mut topics = Vec::new();
    while topics.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let headers = message.headers().expect("dead letters carry headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert!(header("reason").is_some_and(|r| !r.is_empty()));
        topics.push(header("topic").unwrap());
    }
    topics.sort();
    assert_eq!(topics, ["payment-created", "slot-acquired"]);
    let metrics = reqwest::get(t.origin.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "flashgate_dead_letters_total{source=\"kafka\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_origin_starts_while_the_broker_is_down_and_delivers_once_it_is_up() {
    let port = flashgate_e2e::free_port().unwrap();
    let brokers = format!("127.0.0.1:{port}");
    let t =
        DrivenOrigin::start_with(|s| s.kafka = Some(KafkaSettings::new(brokers))).await.unwrap();
    let health = reqwest::get(t.origin.url("/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["components"]["kafka"], "down", "{body}");
    // Sales do not need the broker.
    let product = t.origin.create_product(&t.id, 3).await.unwrap();
    assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);

    let kafka = KafkaBroker::start_on(port).await.unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        if reqwest::get(t.origin.url("/health")).await.unwrap().status() == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "healthy once the broker is up");
    // Its topics were created in the background: the grant goes through to PostgreSQL.
    let sale = Sale { driven: t, kafka };
    let mut delivered = 0;
    for _ in 0..50 {
        match sale.relay(Duration::from_secs(30)).step().await {
            Ok(r) => delivered += r.delivered,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        if delivered >= 1 {
            break;
        }
    }
    assert_eq!(delivered, 1);
    let persister = sale.persister();
    sale.persist_until(&persister, 1).await;
}

#[tokio::test]
async fn two_persisters_in_one_group_share_the_partitions_and_each_products_order_is_kept() {
    let t = Sale::start().await;
    let mut granted: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for _ in 0..12 {
        let product = t.origin.create_product(&t.id, 3).await.unwrap();
        for _ in 0..3 {
            let (_, slot) = t.driven.grant(product).await.unwrap();
            granted.entry(product).or_default().push(slot);
        }
    }
    assert_eq!(t.relay(Duration::from_secs(30)).step().await.unwrap().delivered, 36);

    // Two persisters of one group: the broker splits the partitions between them.
    let (one, two) = (t.persister(), t.persister());
    let mut applied = 0;
    for _ in 0..60 {
        applied += one.step(Duration::from_millis(250)).await.unwrap();
        applied += two.step(Duration::from_millis(250)).await.unwrap();
        let (a, b) = (one.assignment(), two.assignment());
        if applied >= 36 && !a.is_empty() && !b.is_empty() {
            break;
        }
    }
    let (a, b) = (one.assignment(), two.assignment());
    assert!(!a.is_empty() && !b.is_empty(), "both persisters hold partitions: {a:?} / {b:?}");
    assert!(a.iter().all(|p| !b.contains(p)), "no partition held twice: {a:?} / {b:?}");
    assert_eq!(t.pg_count("SELECT count(*) FROM purchase_slots").await, 36);
    assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, 36, "each event once");

    // Keyed by product: each product's events sit in one partition, in the order granted.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &t.kafka.brokers)
        .set("group.id", format!("order-{}", Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["slot-acquired"]).unwrap();
    let mut seen: HashMap<Uuid, Vec<(i32, Uuid)>> = HashMap::new();
    while seen.values().map(Vec::len).sum::<usize>() < 36 {
        let message = tokio::time::timeout(Duration::from_secs(20), reader.recv())
            .await
            .expect("every slot-acquired event is read back")
            .unwrap();
        let event: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let product = Uuid::parse_str(event["productId"].as_str().unwrap()).unwrap();
        let slot = Uuid::parse_str(event["slotId"].as_str().unwrap()).unwrap();
        seen.entry(product).or_default().push((message.partition(), slot));
    }
    let partitions: std::collections::HashSet<i32> =
        seen.values().flatten().map(|(p, _)| *p).collect();
    assert!(partitions.len() > 1, "products spread over the partitions: {partitions:?}");
    for (product, events) in &seen {
        assert!(events.iter().all(|(p, _)| *p == events[0].0), "{product} in one partition");
        let order: Vec<Uuid> = events.iter().map(|(_, s)| *s).collect();
        assert_eq!(&order, &granted[product], "{product}'s events in the order granted");
    }
}
