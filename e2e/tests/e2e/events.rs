//! One event shape: what the Lua scripts emit (lua/lib.lua's `emit`), what the Rust decoder
//! reads (origin/src/outbox/events.rs) and what the schemas under `events/` promise agree, for every
//! kind and every script that emits it, on the direct path (outbox → PostgreSQL). The Kafka
//! path checks the wire against the same schemas (tests/kafka.rs).

use flashgate_e2e::{DrivenOrigin, repo_root};
use flashgate_origin::clock::Clock;
use flashgate_origin::gateway::DECLINING_METHOD;
use flashgate_origin::outbox::events::OutboxEvent;
use flashgate_origin::store::keys::ProductKeys;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

fn schema(kind: &str) -> Value {
    let path = repo_root().join(format!("events/{kind}.v1.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn every_emitted_event_decodes_and_matches_its_schema_field_for_field() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 10).await.unwrap();
    let pay = |user: Uuid, slot: Uuid, method: &'static str| {
        let t = &t;
        async move {
            let body = json!({"slotId": slot, "method": method}).to_string();
            let now = t.clock.now_us() as u64;
            let r = t.origin.pay_signed(&t.id, user, &body, Some("k"), now).await.unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    let (paid_user, paid) = t.grant(product).await.unwrap();
    let (declined_user, declined) = t.grant(product).await.unwrap();
    let (late_user, late) = t.grant(product).await.unwrap();
    let (lazy_user, _) = t.grant(product).await.unwrap();
    t.grant(product).await.unwrap();
    pay(paid_user, paid, "card").await;
    pay(declined_user, declined, DECLINING_METHOD).await;
    t.origin.gateway.release_all().await.unwrap();
    pay(late_user, late, "card").await;

    // Past every deadline: acquire.lua reclaims the lazy buyer's slot on their next attempt,
    // the worker reminds and reclaims the rest (the late payer's waits for its payment), and
    // the late success reclaims nothing more and is refunded.
    t.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(t.acquire(lazy_user, product).await.unwrap().status(), 201);
    let sweep = t.worker().step().await.unwrap();
    assert_eq!((sweep.expired, sweep.paying), (2, 1), "the declined and the swept slot");
    t.origin.gateway.release_all().await.unwrap();
    t.payments_worker().step().await.unwrap();

    // The outbox as the scripts wrote it, before anything relays it.
    let mut c = t.redis.connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(ProductKeys::new(product).outbox())
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut kinds = HashMap::<String, usize>::new();
    let mut acquired_trace = HashMap::<String, String>::new();
    for entry in &entries.ids {
        let raw: HashMap<String, String> = entry
            .map
            .iter()
            .map(|(k, v)| (k.clone(), redis::from_redis_value(v.clone()).unwrap()))
            .collect();
        let kind = raw["type"].clone();
        let schema = schema(&kind);
        // The decoder reads it, and what it makes of it is what the schema promises.
        let event = OutboxEvent::from_entry(entry).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let json = serde_json::to_value(&event).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{json} violates {kind}.v1: {errors:?}");
        // Field for field: the script wrote exactly the schema's fields (`v` is
        // `schemaVersion`), each carried through unchanged.
        let written: BTreeSet<String> = raw
            .keys()
            .map(|k| if k == "v" { "schemaVersion".to_owned() } else { k.clone() })
            .collect();
        let declared: BTreeSet<String> =
            schema["properties"].as_object().unwrap().keys().cloned().collect();
        let required: BTreeSet<String> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        assert!(written.is_subset(&declared), "{kind}: wrote {written:?}, declared {declared:?}");
        assert!(required.is_subset(&written), "{kind}: wrote {written:?}, requires {required:?}");
        for (name, value) in &raw {
            let carried = if name == "v" { &json["schemaVersion"] } else { &json[name] };
            let carried = carried.as_str().map(str::to_owned).unwrap_or(carried.to_string());
            assert_eq!(&carried, value, "{kind}.{name}");
        }
        if kind == "slot-acquired" {
            acquired_trace.insert(raw["slotId"].clone(), raw["traceparent"].clone());
        }
        // Every reclaim, whichever script made it, carries the slot's own trace.
        if kind == "slot-expired" {
            assert_eq!(Some(&raw["traceparent"]), acquired_trace.get(&raw["slotId"]), "{raw:?}");
        }
        *kinds.entry(kind).or_default() += 1;
    }
    let expected: HashMap<String, usize> = [
        ("slot-acquired", 6),
        ("slot-expiring-soon", 3),
        ("slot-expired", 4),
        ("payment-created", 3),
        ("payment-completed", 1),
        ("payment-failed", 1),
        ("payment-refund-required", 1),
        ("payment-refunded", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds, expected);

    // And the direct path applies every one of them.
    let total: usize = expected.values().sum();
    let relay = t.relay(Duration::from_secs(30));
    assert_eq!(relay.step().await.unwrap().delivered as usize, total);
    assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, total as i64);
}
