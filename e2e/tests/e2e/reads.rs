//! Buyers read their slots through the edge, from PostgreSQL; a deadline alone ends a slot.

use flashgate_e2e::{DrivenOrigin, Stack, problem};
use flashgate_origin::clock::{Clock, ManualClock};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

async fn get(s: &Stack, token: &str, path: &str) -> reqwest::Response {
    s.http.get(s.edge.url(path)).bearer_auth(token).send().await.unwrap()
}

/// The persister runs every 100 ms: wait for a slot to appear, at most 5 s.
async fn persisted(s: &Stack, token: &str, slot: &str) -> Value {
    for _ in 0..100 {
        let r = get(s, token, &format!("/slots/{slot}")).await;
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        assert_eq!(r.status(), 404);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("slot {slot} was not persisted within 5 s");
}

#[tokio::test]
async fn a_buyer_reads_their_slot_and_no_one_else_can() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let token = s.id.buyer(Uuid::new_v4());
    let granted: Value = s.acquire(&token, product).await.unwrap().json().await.unwrap();
    let slot_id = granted["slotId"].as_str().unwrap();
    let read = persisted(&s, &token, slot_id).await;
    for field in ["slotId", "productId", "userId", "status", "arrivalAt", "expiresAt", "traceId"] {
        assert_eq!(read[field], granted[field], "{field}");
    }
    assert!(read["remainingSeconds"].as_i64().unwrap() > 1700);

    let stranger = s.id.buyer(Uuid::new_v4());
    problem(get(&s, &stranger, &format!("/slots/{slot_id}")).await, 403, "forbidden").await;
    problem(get(&s, &token, &format!("/slots/{}", Uuid::new_v4())).await, 404, "not-found").await;
    problem(get(&s, &token, "/slots/nope").await, 404, "not-found").await;
}

#[tokio::test]
async fn my_slots_pages_and_filters_a_buyers_own_slots() {
    let s = Stack::start().await.unwrap();
    let token = s.id.buyer(Uuid::new_v4());
    let mut slots = Vec::new();
    for _ in 0..3 {
        let product = s.origin.create_product(&s.id, 5).await.unwrap();
        let granted: Value = s.acquire(&token, product).await.unwrap().json().await.unwrap();
        slots.push(granted["slotId"].as_str().unwrap().to_owned());
    }
    // Each product has its own outbox: wait until every slot reached PostgreSQL.
    for slot in &slots {
        persisted(&s, &token, slot).await;
    }
    let last = slots.last().unwrap().clone();
    let all: Value = get(&s, &token, "/slots/my-slots").await.json().await.unwrap();
    assert_eq!(all["total"], 3);
    assert_eq!(all["items"][0]["slotId"], last, "newest first");
    let page: Value = get(&s, &token, "/slots/my-slots?size=2&page=2").await.json().await.unwrap();
    assert_eq!((page["total"].as_u64(), page["items"].as_array().unwrap().len()), (Some(3), 1));
    let active: Value =
        get(&s, &token, "/slots/my-slots?status=ACTIVE").await.json().await.unwrap();
    assert_eq!(active["total"], 3);
    let expired: Value =
        get(&s, &token, "/slots/my-slots?status=EXPIRED").await.json().await.unwrap();
    assert_eq!(expired["total"], 0);
    let other: Value =
        get(&s, &s.id.buyer(Uuid::new_v4()), "/slots/my-slots").await.json().await.unwrap();
    assert_eq!(other["total"], 0, "only one's own slots");
    let bad =
        problem(get(&s, &token, "/slots/my-slots?status=LOST").await, 422, "validation").await;
    assert_eq!(bad["field"], "status");
}

#[tokio::test]
async fn a_slot_past_its_deadline_reads_as_expired_before_any_sweep() {
    let t = DrivenOrigin::start().await.unwrap();
    let (origin, id, clock) = (&t.origin, &t.id, &t.clock);
    let product = origin.create_product(id, 5).await.unwrap();
    let buyer = Uuid::new_v4();
    let granted: Value = origin
        .acquire_signed(id, buyer, product, clock.now_us() as u64)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let relay = t.relay(Duration::from_secs(30));
    relay.step().await.unwrap();
    let path = format!("/slots/{}", granted["slotId"].as_str().unwrap());
    let read = |clock: ManualClock| {
        let path = path.clone();
        async move {
            let r = origin.get_signed(id, buyer, &path, clock.now_us() as u64).await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(read(clock.clone()).await["status"], "ACTIVE");
    clock.advance(Duration::from_secs(30 * 60));
    let lapsed = read(clock.clone()).await;
    assert_eq!(
        (lapsed["status"].as_str(), lapsed["remainingSeconds"].as_i64()),
        (Some("EXPIRED"), Some(0))
    );
    let listed = origin
        .get_signed(id, buyer, "/slots/my-slots?status=EXPIRED", clock.now_us() as u64)
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1);
}
