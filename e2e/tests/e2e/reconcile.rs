//! Every payment ends (invariant 5): a webhook that never comes, an origin that died with the
//! processor's deliveries, a slot whose deadline arrives with its payment in flight — the
//! payments worker asks the processor and settles each, and the checker reports any that
//! stays unfinished.

use flashgate_cli::check::{Limits, check_within};
use flashgate_e2e::{DrivenOrigin, TestOrigin};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn paid(t: &DrivenOrigin, product: Uuid) -> (Uuid, Uuid, Uuid) {
    let (user, slot) = t.grant(product).await.unwrap();
    let response = t.pay(user, slot, "order").await.unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    (user, slot, Uuid::parse_str(body["paymentId"].as_str().unwrap()).unwrap())
}

async fn status_of(t: &DrivenOrigin, product: Uuid, payment: Uuid) -> String {
    let fields = t.origin.state.payments.store.payment(product, payment).await.unwrap().unwrap();
    fields["status"].clone()
}

#[tokio::test]
async fn a_lost_webhook_is_reconciled_after_the_deadline() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 2).await.unwrap();
    let (_, slot, payment) = paid(&t, product).await;
    assert_eq!(t.origin.gateway.lose_held(), [payment], "the webhook is lost on the way");
    let worker = t.payments_worker();
    assert_eq!(worker.step().await.unwrap().reconciled, 0, "not before the webhook deadline");
    assert_eq!(status_of(&t, product, payment).await, "PENDING");

    t.clock.advance(Duration::from_secs(31));
    assert_eq!(worker.step().await.unwrap().reconciled, 1);
    assert_eq!(status_of(&t, product, payment).await, "COMPLETED");
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("COMPLETED"));
    assert_eq!(worker.step().await.unwrap().reconciled, 0, "settled once");
    assert_eq!(t.origin.gateway.charges(), 1);
}

#[tokio::test]
async fn an_origin_killed_with_its_deliveries_loses_no_charge() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 3).await.unwrap();
    let (_, _, first) = paid(&t, product).await;
    let (_, _, second) = paid(&t, product).await;
    // The origin dies with its webhooks still queued: only the processor's store remembers.
    t.origin.gateway.lose_held();
    let clock = Arc::new(t.clock.clone());
    let processor = t.origin.processor_url.clone();
    let next = TestOrigin::spawn_with(&t.redis, &t.db, &t.id, clock.clone(), |s| {
        s.payments.simulated.store_url = processor;
        s.expiry_interval = None;
        s.relay_interval = None;
        s.payments.worker_interval = None;
        s.payments.simulated.manual = true;
    })
    .await
    .unwrap();
    let worker = flashgate_origin::workers::payments::PaymentsWorker::new(
        next.state.inventory.clone(),
        next.state.payments.clone(),
        clock,
        Duration::from_secs(10),
    );
    t.clock.advance(Duration::from_secs(31));
    assert_eq!(worker.step().await.unwrap().reconciled, 2);
    for payment in [first, second] {
        assert_eq!(status_of(&t, product, payment).await, "COMPLETED");
    }
    assert_eq!(next.gateway.charges(), 0, "nothing charged twice");
}

#[tokio::test]
async fn a_slot_reaching_its_deadline_with_a_payment_in_flight_is_settled_first() {
    // The webhook deadline is longer than the hold: only the slot's deadline prompts
    // reconciliation here.
    let t = DrivenOrigin::start_with(|s| s.payments.reconcile_after = Duration::from_secs(3600))
        .await
        .unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let (user, slot, payment) = paid(&t, product).await;
    t.origin.gateway.lose_held();
    t.clock.advance(Duration::from_secs(30 * 60 + 1));
    // The buyer cannot lose the slot to a lazy expiry either.
    let again = t.acquire(user, product).await.unwrap();
    assert_eq!(again.status(), 409);

    let sweep = t.worker().step().await.unwrap();
    assert_eq!((sweep.expired, sweep.paying), (0, 1), "not expired under a payment in flight");
    assert_eq!(t.payments_worker().step().await.unwrap().reconciled, 1);
    // Paid before the deadline (the processor decided at once): the buyer keeps the unit.
    assert_eq!(status_of(&t, product, payment).await, "COMPLETED");
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("COMPLETED"));
    let sweep = t.worker().step().await.unwrap();
    assert_eq!((sweep.expired, sweep.paying), (0, 0));
    t.redis.counts(product).await.unwrap().assert_conserved();
}

#[tokio::test]
async fn a_slot_past_the_settle_grace_expires_and_its_late_payment_is_refunded() {
    let t = DrivenOrigin::start_with(|s| s.payments.reconcile_after = Duration::from_secs(3600))
        .await
        .unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let (_, slot, payment) = paid(&t, product).await;
    t.origin.gateway.lose_held();
    // Nobody reconciled within the grace (the workers were down): the slot expires anyway.
    t.clock.advance(Duration::from_secs(30 * 60 + 121));
    assert_eq!(t.worker().step().await.unwrap().expired, 1);
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("EXPIRED"));
    // Its payment was queued at once: the processor says it succeeded, the unit is gone:
    // refunded.
    let report = t.payments_worker().step().await.unwrap();
    assert_eq!((report.reconciled, report.refunded), (1, 1));
    assert_eq!(status_of(&t, product, payment).await, "REFUNDED");
    assert_eq!(t.origin.gateway.refunds(), 1);
    t.redis.counts(product).await.unwrap().assert_conserved();
}

#[tokio::test]
async fn the_checker_reports_a_payment_that_never_ends() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 2).await.unwrap();
    let (_, _, payment) = paid(&t, product).await;
    t.origin.gateway.lose_held();
    let relay = t.relay(Duration::from_secs(30));
    relay.step().await.unwrap();
    let state = &t.origin.state;
    let mut limits = Limits::new(Duration::ZERO);
    limits.payment_deadline = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = check_within(&state.db, &state.inventory.connection(), limits).await.unwrap();
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert_eq!(report.violations[0].invariant, 5);
    assert!(report.violations[0].detail.contains(&payment.to_string()));

    t.clock.advance(Duration::from_secs(31));
    assert_eq!(t.payments_worker().step().await.unwrap().reconciled, 1);
    relay.step().await.unwrap();
    let report = check_within(&state.db, &state.inventory.connection(), limits).await.unwrap();
    assert!(report.ok(), "{:?}", report.violations);
}
