//! The edge host reusing instances (`--reuse-instances`): the same answers as a fresh
//! instance per request, each buyer's own, with far fewer instantiations.

use flashgate_e2e::{Stack, problem};
use flashgate_edge_host::HostSettings;
use futures::StreamExt;
use serde_json::Value;
use uuid::Uuid;

fn reuse(n: u32, warm: usize) -> impl FnOnce(&mut HostSettings) {
    move |s| {
        s.reuse_instances = n;
        s.warm_instances = warm;
    }
}

#[tokio::test]
async fn one_reused_instance_answers_every_buyer_as_their_own() {
    let s = Stack::start_configured(|_| {}, reuse(1000, 4)).await.unwrap();
    let product = s.origin.create_product(&s.id, 3).await.unwrap();
    let buyers: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
    let mut slots = Vec::new();
    let mut sold_out = 0;
    // One at a time: every request after the first finds the same warm instance.
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
    assert_eq!(s.edge.stats.instantiated(), 1, "33 requests, one after another, one instance");
}

#[tokio::test]
async fn concurrent_buyers_through_reused_instances_get_exactly_the_stock() {
    let s = Stack::start_configured(|_| {}, reuse(1000, 8)).await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let tokens: Vec<String> = (0..200).map(|_| s.id.buyer(Uuid::new_v4())).collect();
    // 32 at a time: the test host has 64 instance slots.
    let stack = &s;
    let answers: Vec<u16> = futures::stream::iter(tokens.iter())
        .map(|t| async move { stack.acquire(t, product).await.unwrap().status().as_u16() })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut granted = 0;
    for answer in answers {
        match answer {
            201 => granted += 1,
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(granted, 5);
    let instances = s.edge.stats.instantiated();
    assert!(instances < 200, "{instances} instances for 200 requests");
}

#[tokio::test]
async fn an_instance_serves_at_most_its_budget_and_the_default_is_one_per_request() {
    let s = Stack::start_configured(|_| {}, reuse(5, 4)).await.unwrap();
    let product = s.origin.create_product(&s.id, 1).await.unwrap();
    for _ in 0..12 {
        s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap();
    }
    assert_eq!(s.edge.stats.instantiated(), 3, "12 requests at 5 per instance");

    let fresh = Stack::start().await.unwrap();
    let product = fresh.origin.create_product(&fresh.id, 1).await.unwrap();
    for _ in 0..6 {
        fresh.acquire(&fresh.id.buyer(Uuid::new_v4()), product).await.unwrap();
    }
    assert_eq!(fresh.edge.stats.instantiated(), 6, "a fresh instance per request by default");
}
