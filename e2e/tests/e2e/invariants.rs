//! The invariant checker passes after a mixed run and names each kind of corruption.

use flashgate_cli::check::{Report, check};
use flashgate_e2e::DrivenOrigin;
use flashgate_origin::store::keys::ProductKeys;
use std::time::Duration;
use uuid::Uuid;

async fn checked(t: &DrivenOrigin) -> Report {
    check(&t.origin.state.db, &t.origin.state.inventory.connection(), Duration::ZERO).await.unwrap()
}

/// Points `user`'s holding of `product` at `slot` in Redis (a corruption to check for).
async fn set_holder(
    c: &mut impl redis::aio::ConnectionLike,
    product: Uuid,
    user: Uuid,
    slot: &str,
) {
    let _: i64 = redis::cmd("HSET")
        .arg(ProductKeys::new(product).holders())
        .arg(user.to_string())
        .arg(slot)
        .query_async(c)
        .await
        .unwrap();
}

/// Removes `user`'s holding of `product` from Redis.
async fn drop_holder(c: &mut impl redis::aio::ConnectionLike, product: Uuid, user: Uuid) {
    let _: i64 = redis::cmd("HDEL")
        .arg(ProductKeys::new(product).holders())
        .arg(user.to_string())
        .query_async(c)
        .await
        .unwrap();
}

fn invariants(report: &Report) -> Vec<u8> {
    let mut seen: Vec<u8> = report.violations.iter().map(|v| v.invariant).collect();
    seen.dedup();
    seen
}

#[tokio::test]
async fn a_mixed_run_passes_and_each_corruption_is_named() {
    let t = DrivenOrigin::start().await.unwrap();
    let a = t.origin.create_product(&t.id, 5).await.unwrap();
    let b = t.origin.create_product(&t.id, 3).await.unwrap();
    let mut slots = Vec::new();
    for product in [a, a, a, b, b] {
        slots.push((product, t.grant(product).await.unwrap()));
    }
    // One paid, one paid too late (refunded), the rest expire; then resales.
    let (_, (payer, paid)) = slots[0];
    assert_eq!(t.pay(payer, paid, "k").await.unwrap().status(), 202);
    t.origin.gateway.release_all().await.unwrap();
    let (_, (late_payer, late)) = slots[3];
    assert_eq!(t.pay(late_payer, late, "k").await.unwrap().status(), 202);
    t.clock.advance(Duration::from_secs(31 * 60));
    t.worker().step().await.unwrap();
    t.origin.gateway.release_all().await.unwrap();
    for product in [a, b, b] {
        t.grant(product).await.unwrap();
    }
    let relay = t.relay(Duration::from_secs(30));
    relay.step().await.unwrap();

    let clean = checked(&t).await;
    assert!(clean.ok(), "{:?}", clean.violations);
    assert_eq!((clean.products, clean.slots_in_postgres, clean.undelivered), (2, 8, 0));
    assert_eq!(clean.holders_in_redis, 4, "the paid slot and three resales");

    // A unit appears from nowhere: invariant 1.
    let mut c = t.redis.connection().await.unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(ProductKeys::new(a).product())
        .arg("remaining")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(invariants(&checked(&t).await), [1]);
    let _: i64 = redis::cmd("HINCRBY")
        .arg(ProductKeys::new(a).product())
        .arg("remaining")
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();

    // A holder pointing at an expired slot: invariant 2 (and 1: the unit is counted twice).
    let (_, (expired_user, expired)) = slots[1];
    assert_eq!(t.redis.slot_status(a, expired).await.unwrap().as_deref(), Some("EXPIRED"));
    set_holder(&mut c, a, expired_user, &expired.to_string()).await;
    let report = checked(&t).await;
    assert!(invariants(&report).contains(&2), "{:?}", report.violations);
    drop_holder(&mut c, a, expired_user).await;
    assert!(checked(&t).await.ok());
    // A holder whose slot id is not a slot id at all: invariant 2, the other holders still read.
    set_holder(&mut c, a, expired_user, "not-a-slot").await;
    let report = checked(&t).await;
    assert!(
        report.violations.iter().any(|v| v.invariant == 2 && v.detail.contains("not-a-slot")),
        "{:?}",
        report.violations
    );
    assert_eq!(report.violations.iter().filter(|v| v.invariant == 2).count(), 1);
    drop_holder(&mut c, a, expired_user).await;
    assert!(checked(&t).await.ok());

    // A refunded payment marked COMPLETED on an expired slot: invariant 5.
    sqlx::query("UPDATE purchases SET status = 'COMPLETED' WHERE status = 'REFUNDED'")
        .execute(&t.origin.state.db)
        .await
        .unwrap();
    assert_eq!(invariants(&checked(&t).await), [5]);
    sqlx::query("UPDATE purchases SET status = 'REFUNDED' WHERE slot_id = $1")
        .bind(late)
        .execute(&t.origin.state.db)
        .await
        .unwrap();

    // A grant PostgreSQL lost: invariant 3 (and 1: the counts no longer agree).
    for table in ["purchases", "slot_audit_log", "purchase_slots"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE slot_id = $1"))
            .bind(paid)
            .execute(&t.origin.state.db)
            .await
            .unwrap();
    }
    let lost = checked(&t).await;
    assert!(invariants(&lost).contains(&3), "{:?}", lost.violations);
    assert!(lost.violations.iter().any(|v| v.detail.contains(&paid.to_string())));
}

/// An event that waits in `persister_parked` past the grace for a slot that never reached
/// PostgreSQL is a lost transition (invariant 3); one that has just been parked is not.
#[tokio::test]
async fn an_event_parked_past_the_grace_is_reported_lost() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 2).await.unwrap();
    let park = |age_secs: f64| {
        let payload = serde_json::json!({
            "type": "slot-expired", "schemaVersion": 1, "eventId": uuid::Uuid::new_v4(),
            "productId": product, "slotId": uuid::Uuid::new_v4(), "userId": uuid::Uuid::new_v4(),
            "atMs": 0,
        });
        sqlx::query(
            "INSERT INTO persister_parked (event_id, waits_for, payload, parked_at) \
             VALUES ($1, $2, $3, now() - make_interval(secs => $4))",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(uuid::Uuid::new_v4())
        .bind(payload)
        .bind(age_secs)
        .execute(&t.origin.state.db)
    };
    park(1.0).await.unwrap();
    assert!(checked(&t).await.ok(), "a freshly parked event may still be applied");
    park(flashgate_cli::check::PARKED_GRACE.as_secs_f64() + 60.0).await.unwrap();
    let report = checked(&t).await;
    assert_eq!(invariants(&report), [3]);
    assert_eq!(report.violations[0].product_id, product);
    assert!(report.violations[0].detail.starts_with("1 events parked"), "{:?}", report.violations);
}
