//! Instance reuse in the edge host: the WASI 0.3 build (the default) is reused — serially
//! and concurrently, as the platform defines — and gives every buyer the answers a fresh
//! instance would; the WASI 0.2 build gets a fresh instance per request unless the host is
//! told otherwise.

use flashgate_e2e::{Stack, manifest_serving, platform_component_path, problem};
use flashgate_edge_host::{HostSettings, WasiGeneration};
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// The host serving the WASI 0.2 build of the edge (`--platform spin-wasip2`).
fn wasip2(s: &mut HostSettings) {
    s.manifest = manifest_serving(&platform_component_path("spin-wasip2")).unwrap();
}

#[tokio::test]
async fn by_default_wasi_0_3_instances_are_reused_and_answer_every_buyer_as_their_own() {
    let s = Stack::start().await.unwrap();
    assert_eq!(s.edge.generation, Some(WasiGeneration::P3), "the default build is WASI 0.3");
    let product = s.origin.create_product(&s.id, 3).await.unwrap();
    let buyers: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
    let mut slots = Vec::new();
    let mut sold_out = 0;
    // One at a time: every request after the first finds a warm instance.
    for buyer in &buyers {
        let r = s.acquire(&s.id.buyer(*buyer), product).await.unwrap();
        match r.status().as_u16() {
            201 => {
                let slot: Value = r.json().await.unwrap();
                assert_eq!(slot["userId"], buyer.to_string(), "the slot is this buyer's");
                slots.push((*buyer, slot["slotId"].clone()));
            }
            409 => {
                let body = problem(r, 409, "sold-out").await;
                assert_eq!(body["productId"], product.to_string());
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    assert_eq!((slots.len(), sold_out), (3, 27));
    // A winner asking again is told about their own slot, not another's.
    for (buyer, slot) in &slots {
        let again = s.acquire(&s.id.buyer(*buyer), product).await.unwrap();
        let body = problem(again, 409, "already-holding").await;
        assert_eq!(&body["slotId"], slot);
    }
    // A request that arrives while the one before is still finishing may start a second
    // instance; without reuse this would be 33.
    let instances = s.edge.stats.instantiated();
    assert!(instances <= 4, "{instances} instances for 33 requests one after another");
}

#[tokio::test]
async fn concurrent_buyers_in_shared_instances_each_get_their_own_answer() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let buyers: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    // 32 at a time. A request that finds no instance free starts one, so the first burst
    // may start one per request; after it, instances take requests as they free up.
    let stack = &s;
    let answers: Vec<(Uuid, u16, Value)> = futures::stream::iter(buyers.iter())
        .map(|buyer| async move {
            // A request the edge held past its bound is shed with 503 + Retry-After
            // (`flashgate_core::arrival::overdue`): the buyer asks again after it.
            for attempt in 0.. {
                let r = stack.acquire(&stack.id.buyer(*buyer), product).await.unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                let shed =
                    status == 503 && body["detail"] == "the edge is overloaded; try again shortly";
                if !shed || attempt == 4 {
                    return (*buyer, status, body);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            unreachable!()
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut granted = 0;
    for (buyer, status, body) in answers {
        match status {
            201 => {
                assert_eq!(body["userId"], buyer.to_string(), "the slot is this buyer's");
                granted += 1;
            }
            409 => assert!(
                matches!(body["type"].as_str(), Some(t) if t.ends_with("/sold-out")),
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(granted, 5);
    let instances = s.edge.stats.instantiated();
    // Without reuse, 200. A burst can start one per waiting request, and a request that
    // comes while an instance finishes its last one may start another.
    assert!(instances < 100, "{instances} instances for 200 requests, 32 at a time");
}

#[tokio::test]
async fn one_wasi_0_3_instance_serves_a_second_request_while_the_first_waits_for_the_origin() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    // One instance slot and an origin 500 ms away (`failures.rs` shows the same edge
    // answering 503 when its one instance serves one request at a time).
    let edge =
        stack.edge_behind_delay(Duration::from_millis(500), |s| s.max_instances = 1).await.unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let send = |buyer: Uuid| {
        stack
            .http
            .post(edge.url("/slots/acquire"))
            .bearer_auth(stack.id.buyer(buyer))
            .json(&serde_json::json!({ "productId": product }))
            .send()
    };
    let (first, second) = tokio::join!(send(a), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(b).await
    });
    for (buyer, answer) in [(a, first.unwrap()), (b, second.unwrap())] {
        assert_eq!(answer.status(), 201);
        let slot: Value = answer.json().await.unwrap();
        assert_eq!(slot["userId"], buyer.to_string(), "each buyer gets their own slot");
    }
    assert_eq!(edge.stats.instantiated(), 1, "both requests ran in the one instance");
}

#[tokio::test]
async fn an_instance_serves_at_most_its_budget_and_wasi_0_2_gets_a_fresh_one_per_request() {
    let budget = |s: &mut HostSettings| {
        s.reuse_instances = Some(5);
        s.instance_concurrency = Some(1);
    };
    let s = Stack::start_configured(|_| {}, budget).await.unwrap();
    let product = s.origin.create_product(&s.id, 1).await.unwrap();
    for _ in 0..12 {
        s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap();
    }
    let instances = s.edge.stats.instantiated();
    // At least 3 (the budget holds); a few more if a request came while an instance was
    // still finishing its last one (without reuse, 12).
    assert!((3..=6).contains(&instances), "12 requests at 5 per instance: {instances}");

    let p2 = Stack::start_configured(|_| {}, wasip2).await.unwrap();
    assert_eq!(p2.edge.generation, Some(WasiGeneration::P2));
    let product = p2.origin.create_product(&p2.id, 1).await.unwrap();
    let mut granted = 0;
    for _ in 0..6 {
        let r = p2.acquire(&p2.id.buyer(Uuid::new_v4()), product).await.unwrap();
        granted += u32::from(r.status() == 201);
    }
    assert_eq!(granted, 1, "the WASI 0.2 build sells the one unit once");
    assert_eq!(p2.edge.stats.instantiated(), 6, "WASI 0.2: a fresh instance per request");
}

#[tokio::test]
async fn a_wasi_0_2_instance_reused_when_asked_answers_each_buyer_as_their_own() {
    let reused = |s: &mut HostSettings| {
        wasip2(s);
        s.reuse_instances = Some(1000);
    };
    let s = Stack::start_configured(|_| {}, reused).await.unwrap();
    let product = s.origin.create_product(&s.id, 2).await.unwrap();
    let mut winners = Vec::new();
    for _ in 0..10 {
        let buyer = Uuid::new_v4();
        let r = s.acquire(&s.id.buyer(buyer), product).await.unwrap();
        if r.status() == 201 {
            let slot: Value = r.json().await.unwrap();
            assert_eq!(slot["userId"], buyer.to_string());
            winners.push(buyer);
        }
    }
    assert_eq!(winners.len(), 2);
    let instances = s.edge.stats.instantiated();
    assert!(instances <= 4, "{instances} instances for 10 requests one after another");
}
