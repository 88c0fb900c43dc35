//! A buyer acquires a slot through the Wasm edge: the whole path, real parts only.

use flashgate_e2e::{Stack, TestEdge, delay_proxy, now_us, problem};
use flashgate_origin::store::keys::ProductKeys;
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

fn us(rfc3339: &Value) -> i64 {
    let t = OffsetDateTime::parse(rfc3339.as_str().unwrap(), &Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1000) as i64
}

#[tokio::test]
async fn a_buyer_gets_a_slot_stamped_with_the_edge_arrival_time() {
    // No relay: it would deliver (and delete) the grant event this test looks for.
    let stack = Stack::start_configured(|s| s.relay_interval = None, |_| {}).await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    // 300 ms between edge and origin: the slot must carry the time the edge saw, not the
    // time the origin did.
    let delay = Duration::from_millis(300);
    let proxy = delay_proxy(stack.origin.addr, delay).await.unwrap();
    let edge = TestEdge::spawn(proxy, &stack.id).await.unwrap();
    let user = Uuid::new_v4();
    let before = now_us() as i64;
    let response = stack
        .http
        .post(edge.url("/slots/acquire"))
        .bearer_auth(stack.id.buyer(user))
        .json(&serde_json::json!({ "productId": product }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let trace_header = response.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let slot: Value = response.json().await.unwrap();

    let slot_id = Uuid::parse_str(slot["slotId"].as_str().unwrap()).unwrap();
    assert_eq!(location, format!("/slots/{slot_id}"));
    assert_eq!(slot["productId"], product.to_string());
    assert_eq!(slot["userId"], user.to_string());
    assert_eq!(slot["status"], "ACTIVE");
    assert_eq!(slot["traceId"], trace_header);
    let arrival = us(&slot["arrivalAt"]);
    let acquired = us(&slot["acquiredAt"]);
    assert!(arrival >= before, "stamped after the request was sent");
    assert!(
        acquired - arrival >= delay.as_micros() as i64 - 1000,
        "arrivalAt {arrival} must predate the edge→origin delay (acquiredAt {acquired})"
    );
    assert_eq!(us(&slot["expiresAt"]) - acquired, 30 * 60 * 1_000_000);
    assert!((1790..=1800).contains(&slot["remainingSeconds"].as_i64().unwrap()));

    // Redis holds the same stamp and the edge's trace context.
    let mut redis = stack.redis.connection().await.unwrap();
    let keys = ProductKeys::new(product);
    let (stored_arrival, traceparent): (i64, String) = redis::cmd("HMGET")
        .arg(keys.slot(slot_id))
        .arg("arrivalUs")
        .arg("traceparent")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored_arrival, arrival);
    assert!(traceparent.contains(&trace_header), "{traceparent} continues trace {trace_header}");
    let outbox: i64 = redis::cmd("XLEN").arg(keys.outbox()).query_async(&mut redis).await.unwrap();
    assert_eq!(outbox, 1, "the grant event is in the outbox");
}

#[tokio::test]
async fn the_same_buyer_again_is_already_holding_the_same_slot() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    let token = stack.id.buyer(Uuid::new_v4());
    let first: Value = stack.acquire(&token, product).await.unwrap().json().await.unwrap();
    let again = stack.acquire(&token, product).await.unwrap();
    let body = problem(again, 409, "already-holding").await;
    assert_eq!(body["slotId"], first["slotId"]);
}

#[tokio::test]
async fn fifty_buyers_race_for_three_units() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 3).await.unwrap();
    let tokens: Vec<String> = (0..50).map(|_| stack.id.buyer(Uuid::new_v4())).collect();
    let answers = futures::future::join_all(tokens.iter().map(|t| stack.acquire(t, product))).await;
    let mut granted = 0;
    let mut sold_out = 0;
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status().as_u16() {
            201 => granted += 1,
            409 => {
                problem(answer, 409, "sold-out").await;
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {}", answer.text().await.unwrap()),
        }
    }
    assert_eq!((granted, sold_out), (3, 47));

    let mut redis = stack.redis.connection().await.unwrap();
    let keys = ProductKeys::new(product);
    let remaining: i64 = redis::cmd("HGET")
        .arg(keys.product())
        .arg("remaining")
        .query_async(&mut redis)
        .await
        .unwrap();
    let active: i64 = redis::cmd("HLEN").arg(keys.holders()).query_async(&mut redis).await.unwrap();
    assert_eq!(remaining + active, 3, "invariant 1: redis stock + ACTIVE = total");
    assert_eq!(remaining, 0);
}

#[tokio::test]
async fn an_unknown_product_is_404_and_a_bad_body_is_422() {
    let stack = Stack::start().await.unwrap();
    let token = stack.id.buyer(Uuid::new_v4());
    problem(stack.acquire(&token, Uuid::new_v4()).await.unwrap(), 404, "not-found").await;
    let bad = stack
        .http
        .post(stack.edge.url("/slots/acquire"))
        .bearer_auth(&token)
        .body(r#"{"productId":"not-a-uuid"}"#)
        .send()
        .await
        .unwrap();
    let body = problem(bad, 422, "validation").await;
    assert_eq!(body["field"], "productId");
}

#[tokio::test]
async fn before_the_sale_opens_the_answer_is_not_on_sale() {
    let stack = Stack::start().await.unwrap();
    let opens = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let product = stack.origin.create_product_starting(&stack.id, 5, opens).await.unwrap();
    let answer = stack.acquire(&stack.id.buyer(Uuid::new_v4()), product).await.unwrap();
    let body = problem(answer, 409, "not-on-sale").await;
    assert_eq!(us(&body["saleStartsAt"]) / 1_000_000, opens.unix_timestamp());
}

#[tokio::test]
async fn the_edge_answers_unknown_routes_itself() {
    let stack = Stack::start().await.unwrap();
    let before = stack.origin.request_count().await.unwrap();
    let token = stack.id.buyer(Uuid::new_v4());
    let r =
        stack.http.get(stack.edge.url("/admin/secrets")).bearer_auth(&token).send().await.unwrap();
    problem(r, 404, "not-found").await;
    let r =
        stack.http.get(stack.edge.url("/slots/acquire")).bearer_auth(&token).send().await.unwrap();
    problem(r, 405, "method-not-allowed").await;
    assert_eq!(stack.origin.request_count().await.unwrap(), before);
}

#[tokio::test]
async fn verified_tokens_are_cached_in_the_shared_key_value_store() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    let token = stack.id.buyer(Uuid::new_v4());
    let store = stack.edge.host_kv.get("default").unwrap();
    let cached = || store.keys().into_iter().filter(|k| k.starts_with("jwt:")).count();
    assert_eq!(cached(), 0);
    assert_eq!(stack.acquire(&token, product).await.unwrap().status(), 201);
    assert_eq!(cached(), 1, "one verdict, written by one request's instance");
    // A later request (a fresh instance) finds it and is still admitted.
    assert_eq!(stack.acquire(&token, product).await.unwrap().status(), 409);
    assert_eq!(cached(), 1);
}
