//! Redis loses everything mid-sale: the origin answers 503 until the product is rebuilt
//! from PostgreSQL, then the sale continues with invariant 1 intact, and no grant answered
//! 201 is sold again: the grant lease bounds the grants PostgreSQL never heard of, and the
//! rebuild withholds as many units until an operator releases them.

use flashgate_cli::check::Report;
use flashgate_e2e::{DrivenOrigin, problem};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// An origin whose lease extensions cover 64 grants, so the figures below are exact.
async fn lease_of_64() -> DrivenOrigin {
    DrivenOrigin::start_with(|s| s.grant_lease = 64).await.unwrap()
}

async fn flush(t: &DrivenOrigin) {
    let mut c = t.redis.connection().await.unwrap();
    let _: String = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
}

#[tokio::test]
async fn a_flushed_product_answers_503_until_rebuilt_then_sells_on() {
    let t = lease_of_64().await;
    let relay = t.relay(Duration::from_secs(30));
    // 100 units: the first grant leased 64 of them, 3 were used.
    let product = t.origin.create_product(&t.id, 100).await.unwrap();
    let holder = Uuid::new_v4();
    let held: Value = t.acquire(holder, product).await.unwrap().json().await.unwrap();
    for _ in 0..2 {
        assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    }
    relay.step().await.unwrap();
    flush(&t).await;

    let refused = t.acquire(Uuid::new_v4(), product).await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = problem(refused, 503, "unavailable").await;
    assert_eq!(body["component"], "redis");

    // The refusal started a rebuild; the sale resumes within moments.
    let mut status = 503;
    for _ in 0..100 {
        status = t.acquire(Uuid::new_v4(), product).await.unwrap().status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 201);
    let counts = t.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    // The 61 leased grants PostgreSQL never saw may have been answered 201: withheld.
    assert_eq!((counts.total, counts.held, counts.in_doubt, counts.remaining), (100, 4, 61, 35));
    // The old holder is still holding the same slot.
    let again = problem(t.acquire(holder, product).await.unwrap(), 409, "already-holding").await;
    assert_eq!(again["slotId"], held["slotId"]);
    // ... and it still expires, once, through the rebuilt schedule.
    relay.step().await.unwrap();
    t.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(t.worker().step().await.unwrap().expired, 4);
    relay.step().await.unwrap();
    let counts = t.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!(counts.remaining, 39);
    assert_eq!(t.pg_live(product).await, 0, "PostgreSQL followed the expiries");
    // And the checker says Redis lost the product once, with up to 61 grants it cannot see.
    let report = check(&t).await;
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert_eq!(report.violations[0].invariant, 3);
    let detail = &report.violations[0].detail;
    assert!(detail.contains("lost this product's sale state 1 time"), "{detail}");
    assert!(detail.contains("up to 61 grants answered 201"), "{detail}");
}

async fn check(t: &DrivenOrigin) -> Report {
    let state = &t.origin.state;
    flashgate_cli::check::check(&state.db, &state.inventory.connection(), Duration::ZERO)
        .await
        .unwrap()
}

async fn admin_post(t: &DrivenOrigin, path: &str) -> Value {
    let http = reqwest::Client::new();
    let answer = http.post(t.origin.url(path)).bearer_auth(t.id.admin()).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{path}");
    answer.json().await.unwrap()
}

/// The clause the grant lease exists for: grants answered 201 but never relayed are lost
/// with Redis, and their units are not sold to anyone else.
#[tokio::test]
async fn grants_lost_with_redis_are_withheld_not_resold() {
    let t = DrivenOrigin::start().await.unwrap();
    let relay = t.relay(Duration::from_secs(30));
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    for _ in 0..3 {
        t.grant(product).await.unwrap();
    }
    relay.step().await.unwrap();
    // Two more buyers hear 201; Redis loses everything before the relay runs again.
    let lost = [t.grant(product).await.unwrap(), t.grant(product).await.unwrap()];
    flush(&t).await;

    let rebuilt = admin_post(&t, &format!("/admin/products/{product}/rebuild")).await;
    assert_eq!(rebuilt["status"], "rebuilt");
    assert_eq!(
        (
            rebuilt["restoredSlots"].as_i64(),
            rebuilt["unseenGrants"].as_i64(),
            rebuilt["inDoubt"].as_i64()
        ),
        (Some(3), Some(2), Some(2))
    );
    // Without the lease the next two buyers would get the lost buyers' units.
    let next = t.acquire(Uuid::new_v4(), product).await.unwrap();
    problem(next, 409, "sold-out").await;
    let counts = t.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!((counts.held, counts.in_doubt, counts.remaining), (3, 2, 0));

    let report = check(&t).await;
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    let v = &report.violations[0];
    assert_eq!((v.invariant, v.product_id), (3, product));
    assert!(
        v.detail.contains("up to 2 grants answered 201 never reached PostgreSQL"),
        "{}",
        v.detail
    );
    assert!(v.detail.contains("2 units are withheld from sale until released"), "{}", v.detail);
    // The lost buyers' slots are gone: the loss is real, the checker's report is the record.
    for (user, slot) in lost {
        let read = t.origin.get_signed(&t.id, user, &format!("/slots/{slot}"), t.now()).await;
        assert_eq!(read.unwrap().status(), 404);
    }

    // The operator settles with those buyers, then releases the units: on sale again, once.
    let http = reqwest::Client::new();
    let url = t.origin.url(&format!("/admin/products/{product}/in-doubt/release"));
    let buyer = http.post(&url).bearer_auth(t.id.buyer(Uuid::new_v4())).send().await.unwrap();
    problem(buyer, 403, "forbidden").await;
    let released = admin_post(&t, &format!("/admin/products/{product}/in-doubt/release")).await;
    assert_eq!(released["released"], 2);
    let again = admin_post(&t, &format!("/admin/products/{product}/in-doubt/release")).await;
    assert_eq!(again["released"], 0);
    for _ in 0..2 {
        assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    }
    problem(t.acquire(Uuid::new_v4(), product).await.unwrap(), 409, "sold-out").await;
    relay.step().await.unwrap();
    t.redis.counts(product).await.unwrap().assert_conserved();
    let report = check(&t).await;
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert!(report.violations[0].detail.contains("released at"), "{:?}", report.violations);
}

/// A loss the lease proves complete (every grant it allowed reached PostgreSQL) lost no
/// grant: nothing is withheld and the checker passes.
#[tokio::test]
async fn a_loss_after_everything_was_relayed_withholds_nothing() {
    let t = DrivenOrigin::start().await.unwrap();
    let relay = t.relay(Duration::from_secs(30));
    let product = t.origin.create_product(&t.id, 3).await.unwrap();
    for _ in 0..3 {
        t.grant(product).await.unwrap();
    }
    relay.step().await.unwrap();
    flush(&t).await;
    let rebuilt = admin_post(&t, &format!("/admin/products/{product}/rebuild")).await;
    assert_eq!((rebuilt["unseenGrants"].as_i64(), rebuilt["inDoubt"].as_i64()), (Some(0), Some(0)));
    let report = check(&t).await;
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(t.redis.counts(product).await.unwrap().held, 3);
}

#[tokio::test]
async fn operators_rebuild_on_demand_and_a_rebuild_never_overwrites_live_state() {
    let t = lease_of_64().await;
    let relay = t.relay(Duration::from_secs(30));
    // 100 units: the lease (64) leaves units on sale after the rebuild withholds its rest.
    let product = t.origin.create_product(&t.id, 100).await.unwrap();
    let other = t.origin.create_product(&t.id, 7).await.unwrap();
    assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    relay.step().await.unwrap();
    let http = reqwest::Client::new();
    let url = t.origin.url(&format!("/admin/products/{product}/rebuild"));

    let path = format!("/admin/products/{product}/rebuild");
    let live = admin_post(&t, &path).await;
    assert_eq!(live["status"], "already-live");

    flush(&t).await;
    let rebuilt = admin_post(&t, &path).await;
    assert_eq!(
        (rebuilt["status"].as_str(), rebuilt["restoredSlots"].as_i64()),
        (Some("rebuilt"), Some(1))
    );
    assert_eq!(rebuilt["inDoubt"], 63, "the lease's 64 grants less the one PostgreSQL has");
    assert_eq!(
        t.acquire(Uuid::new_v4(), product).await.unwrap().status(),
        201,
        "no 503 after a rebuild"
    );
    let all = admin_post(&t, "/admin/rebuild").await;
    assert_eq!((all["rebuilt"].as_i64(), all["alreadyLive"].as_i64()), (Some(1), Some(1)));
    let counts = t.redis.counts(other).await.unwrap();
    assert_eq!((counts.total, counts.remaining), (7, 7));
    t.redis.counts(product).await.unwrap().assert_conserved();

    let buyer = http.post(&url).bearer_auth(t.id.buyer(Uuid::new_v4())).send().await.unwrap();
    problem(buyer, 403, "forbidden").await;
    let unknown = t.origin.url(&format!("/admin/products/{}/rebuild", Uuid::new_v4()));
    problem(http.post(unknown).bearer_auth(t.id.admin()).send().await.unwrap(), 404, "not-found")
        .await;
}

/// A payment in flight survives the loss of Redis: after the rebuild its webhook still
/// completes the slot, a second payment is still refused, and its charge is not repeated.
#[tokio::test]
async fn a_payment_in_flight_survives_a_rebuild() {
    let t = DrivenOrigin::start().await.unwrap();
    let relay = t.relay(Duration::from_secs(30));
    let product = t.origin.create_product(&t.id, 2).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    let paid: Value = t.pay(user, slot, "k").await.unwrap().json().await.unwrap();
    let payment = Uuid::parse_str(paid["paymentId"].as_str().unwrap()).unwrap();
    relay.step().await.unwrap();
    flush(&t).await;

    // The webhook finds the product gone: 503 (the processor retries) and a rebuild starts.
    assert_eq!(t.origin.gateway.release(payment).await.unwrap(), 503);
    let mut status = 503;
    for _ in 0..100 {
        status = t.origin.gateway.release(payment).await.unwrap();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    let read = t.origin.get_signed(&t.id, user, &format!("/payments/{payment}"), t.now()).await;
    let read: Value = read.unwrap().json().await.unwrap();
    assert_eq!(read["status"], "COMPLETED");
    problem(t.pay(user, slot, "k2").await.unwrap(), 409, "slot-not-active").await;
    t.redis.counts(product).await.unwrap().assert_conserved();
    assert_eq!(t.payments_worker().step().await.unwrap().resubmitted, 0);
    t.clock.advance(Duration::from_secs(11));
    t.payments_worker().step().await.unwrap();
    assert_eq!(t.origin.gateway.charges(), 1, "the rebuilt queue resubmits, the gateway dedupes");
    relay.step().await.unwrap();
    assert_eq!(t.pg_count("SELECT count(*) FROM purchases WHERE status = 'COMPLETED'").await, 1);
}
