//! Payments: idempotent creation, one charge per key, webhooks applied once, and a payment
//! racing its slot's expiry never sells a unit twice (invariants 1 and 5).

use flashgate_e2e::{DrivenOrigin, Stack, json_of, problem};
use flashgate_origin::clock::Clock;
use flashgate_origin::gateway::{DECLINING_METHOD, SIGNATURE_HEADER, SimulatedGateway};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const MIN: Duration = Duration::from_secs(60);

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

fn payment_id(body: &Value) -> Uuid {
    Uuid::parse_str(body["paymentId"].as_str().unwrap()).unwrap()
}

async fn get_payment(t: &DrivenOrigin, user: Uuid, payment: Uuid) -> reqwest::Response {
    let now = t.clock.now_us() as u64;
    t.origin.get_signed(&t.id, user, &format!("/payments/{payment}"), now).await.unwrap()
}

#[tokio::test]
async fn a_replay_gets_the_first_answer_and_the_gateway_charges_once() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 2).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();

    let first = t.pay(user, slot, "order-1").await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first = json_of(first, 202).await;
    assert_eq!(first["status"], "PENDING");
    assert_eq!(first["slotId"], slot.to_string());
    assert_eq!((first["amount"].as_i64(), first["currency"].as_str()), (Some(12900), Some("EUR")));
    assert_eq!(location, format!("/payments/{}", first["paymentId"].as_str().unwrap()));

    let replay = t.pay(user, slot, "order-1").await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(replay, 202).await, first, "a replay answers what the first request did");
    assert_eq!(t.origin.gateway.charges(), 1);

    // Settled: the payment reads COMPLETED, and a replay still answers the first answer.
    t.origin.gateway.release_all().await.unwrap();
    let read = json_of(get_payment(&t, user, payment_id(&first)).await, 200).await;
    assert_eq!(read["status"], "COMPLETED");
    assert!(read["settledAt"].is_string());
    assert_eq!(json_of(t.pay(user, slot, "order-1").await.unwrap(), 202).await, first);
    assert_eq!(t.origin.gateway.charges(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_with_one_key_make_one_payment_and_one_charge() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    let answers = futures::future::join_all((0..20).map(|_| t.pay(user, slot, "same-key"))).await;
    let mut ids = std::collections::HashSet::new();
    for answer in answers {
        ids.insert(payment_id(&json_of(answer.unwrap(), 202).await));
    }
    assert_eq!(ids.len(), 1, "one payment: {ids:?}");
    assert_eq!(t.origin.gateway.charges(), 1);
    let types = t.redis.outbox_types(product).await.unwrap();
    assert_eq!(count(&types, "payment-created"), 1);
}

#[tokio::test]
async fn a_webhook_delivered_three_times_completes_once_and_reaches_postgres() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 2).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    let payment = payment_id(&json_of(t.pay(user, slot, "k").await.unwrap(), 202).await);
    for _ in 0..3 {
        assert_eq!(t.origin.gateway.release(payment).await.unwrap(), 200);
    }
    let types = t.redis.outbox_types(product).await.unwrap();
    assert_eq!(count(&types, "payment-completed"), 1, "{types:?}");
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("COMPLETED"));
    let counts = t.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!((counts.remaining, counts.held, counts.scheduled), (1, 1, 0));

    // A completed slot no longer expires.
    t.clock.advance(31 * MIN);
    assert_eq!(t.worker().step().await.unwrap().expired, 0);
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("COMPLETED"));

    t.relay(Duration::from_secs(30)).step().await.unwrap();
    let q = |sql: &str| sql.replace("$P", &payment.to_string()).replace("$S", &slot.to_string());
    assert_eq!(
        t.pg_count(&q(
            "SELECT count(*) FROM purchases WHERE payment_id = '$P' AND status = 'COMPLETED'"
        ))
        .await,
        1
    );
    assert_eq!(
        t.pg_count(&q(
            "SELECT count(*) FROM purchase_slots WHERE slot_id = '$S' AND status = 'COMPLETED'"
        ))
        .await,
        1
    );
    assert_eq!(
        t.pg_count(&q("SELECT count(*) FROM slot_audit_log WHERE payment_id = '$P'")).await,
        2,
        "payment-created and payment-completed, each once"
    );
    // Once Redis forgot it, the payment reads from PostgreSQL.
    let mut c = t.redis.connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let read = json_of(get_payment(&t, user, payment).await, 200).await;
    assert_eq!(
        (read["status"].as_str(), read["slotId"].as_str()),
        (Some("COMPLETED"), Some(&*slot.to_string()))
    );
}

/// One round: a slot granted and paid, then its deadline reached (or not) while the
/// success webhook and the expiration worker race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_racing_expiry_ends_completed_or_expired_and_refunded_never_both() {
    let t = DrivenOrigin::start().await.unwrap();
    let rounds = 200;
    let product = t.origin.create_product(&t.id, rounds as i64).await.unwrap();
    let hold_ms = 30 * 60 * 1000;
    let inventory = t.origin.state.inventory.clone();
    let mut completed = 0;
    for round in 0..rounds {
        let (user, slot) = t.grant(product).await.unwrap();
        let payment = payment_id(&json_of(t.pay(user, slot, "k").await.unwrap(), 202).await);
        let granted_ms = t.clock.now_ms();
        // Before the deadline, exactly at it, just after, long after.
        let offset_ms = [-1_000, 0, 1, 5 * 60 * 1000][round % 4];
        t.clock.set_us((granted_ms + hold_ms + offset_ms) * 1000);
        let now = t.clock.now_ms();
        let expire = inventory.expire(product, slot, now);
        let webhook = t.origin.gateway.release(payment);
        match round % 3 {
            0 => {
                let (e, w) = tokio::join!(expire, webhook);
                e.unwrap();
                assert_eq!(w.unwrap(), 200);
            }
            1 => {
                assert_eq!(webhook.await.unwrap(), 200);
                expire.await.unwrap();
            }
            _ => {
                expire.await.unwrap();
                assert_eq!(webhook.await.unwrap(), 200);
            }
        }
        let slot_now = t.redis.slot_status(product, slot).await.unwrap().unwrap();
        let paid = json_of(get_payment(&t, user, payment).await, 200).await;
        if offset_ms < 0 {
            assert_eq!(slot_now, "COMPLETED", "round {round}");
            assert_eq!(paid["status"], "COMPLETED", "round {round}");
            completed += 1;
        } else {
            assert_eq!(slot_now, "EXPIRED", "round {round}");
            assert_eq!(paid["status"], "REFUNDED", "round {round}: refunded at once");
        }
        t.redis.counts(product).await.unwrap().assert_conserved();
    }
    assert_eq!(t.payments_worker().step().await.unwrap().refunded, 0, "nothing left to refund");
    let types = t.redis.outbox_types(product).await.unwrap();
    let expired = rounds - completed;
    assert_eq!(count(&types, "payment-completed"), completed);
    assert_eq!(count(&types, "slot-expired"), expired, "each expired slot once, none completed");
    assert_eq!(count(&types, "payment-refund-required"), expired);
    assert_eq!(count(&types, "payment-refunded"), expired);
    assert_eq!(t.origin.gateway.refunds(), expired);
    assert_eq!(t.origin.gateway.charges(), rounds);
    let counts = t.redis.counts(product).await.unwrap();
    assert_eq!(
        (counts.held, counts.remaining, counts.total),
        (completed as i64, (rounds - completed) as i64, rounds as i64)
    );

    // And PostgreSQL agrees: never both outcomes for one slot.
    t.relay(Duration::from_secs(30)).step().await.unwrap();
    assert_eq!(t.pg_live(product).await, completed as i64);
    assert_eq!(
        t.pg_count("SELECT count(*) FROM purchases WHERE status = 'REFUNDED'").await,
        expired as i64
    );
    assert_eq!(
        t.pg_count(
            "SELECT count(*) FROM purchase_slots s JOIN purchases p USING (slot_id) \
             WHERE (s.status = 'COMPLETED') = (p.status = 'REFUNDED')"
        )
        .await,
        0,
        "a completed slot's payment is COMPLETED, an expired slot's is REFUNDED"
    );
}

#[tokio::test]
async fn each_refusal_names_its_reason() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    let now = || t.clock.now_us() as u64;
    let body = json!({"slotId": slot, "method": "card"}).to_string();

    // Missing key, bad key, bad bodies: 422 naming the field.
    let r = t.origin.pay_signed(&t.id, user, &body, None, now()).await.unwrap();
    assert_eq!(problem(r, 422, "validation").await["field"], "Idempotency-Key");
    let r = t.origin.pay_signed(&t.id, user, &body, Some(&"k".repeat(300)), now()).await.unwrap();
    assert_eq!(problem(r, 422, "validation").await["field"], "Idempotency-Key");
    for (bad, field) in [
        ("{", "body"),
        (r#"{"method":"card"}"#, "slotId"),
        (r#"{"slotId":"nope","method":"card"}"#, "slotId"),
        (&*format!(r#"{{"slotId":"{slot}"}}"#), "method"),
    ] {
        let r = t.origin.pay_signed(&t.id, user, bad, Some("k-bad"), now()).await.unwrap();
        assert_eq!(problem(r, 422, "validation").await["field"], field, "{bad}");
    }

    // Unknown slot → 404; another buyer's → 403.
    let r = t.pay(user, Uuid::now_v7(), "k-unknown").await.unwrap();
    problem(r, 404, "not-found").await;
    let r = t.pay(Uuid::new_v4(), slot, "k-other").await.unwrap();
    problem(r, 403, "forbidden").await;

    // A payment in flight → 409 slot-not-active naming it; the key with another body → 422.
    let first = payment_id(&json_of(t.pay(user, slot, "k1").await.unwrap(), 202).await);
    let r = t.pay(user, slot, "k2").await.unwrap();
    assert_eq!(problem(r, 409, "slot-not-active").await["paymentId"], first.to_string());
    let other = json!({"slotId": slot, "method": "paypal"}).to_string();
    let r = t.origin.pay_signed(&t.id, user, &other, Some("k1"), now()).await.unwrap();
    assert_eq!(problem(r, 422, "idempotency-key-reused").await["field"], "Idempotency-Key");

    // Paid → 409 slot-not-active.
    t.origin.gateway.release_all().await.unwrap();
    problem(t.pay(user, slot, "k3").await.unwrap(), 409, "slot-not-active").await;

    // Past its deadline, swept or not → 409 slot-expired.
    let (late_user, late_slot) = t.grant(product).await.unwrap();
    t.clock.advance(30 * MIN);
    problem(t.pay(late_user, late_slot, "k4").await.unwrap(), 409, "slot-expired").await;
    t.worker().step().await.unwrap();
    problem(t.pay(late_user, late_slot, "k5").await.unwrap(), 409, "slot-expired").await;

    // Reads: another buyer's payment → 403; unknown → 404.
    problem(get_payment(&t, Uuid::new_v4(), first).await, 403, "forbidden").await;
    problem(get_payment(&t, user, Uuid::now_v7()).await, 404, "not-found").await;
    let r = t.origin.get_signed(&t.id, user, "/payments/not-a-uuid", now()).await.unwrap();
    problem(r, 404, "not-found").await;
    assert_eq!(t.origin.gateway.charges(), 1, "no refusal reached the gateway");
}

#[tokio::test]
async fn a_declined_payment_leaves_the_slot_payable_with_a_new_key() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    let body = json!({"slotId": slot, "method": DECLINING_METHOD}).to_string();
    let now = t.clock.now_us() as u64;
    let r = t.origin.pay_signed(&t.id, user, &body, Some("try-1"), now).await.unwrap();
    let declined = payment_id(&json_of(r, 202).await);
    t.origin.gateway.release_all().await.unwrap();
    let read = json_of(get_payment(&t, user, declined).await, 200).await;
    assert_eq!(read["status"], "FAILED");
    assert_eq!(read["failureReason"], "card_declined");
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("ACTIVE"));

    let retry = payment_id(&json_of(t.pay(user, slot, "try-2").await.unwrap(), 202).await);
    assert_ne!(retry, declined);
    t.origin.gateway.release_all().await.unwrap();
    assert_eq!(json_of(get_payment(&t, user, retry).await, 200).await["status"], "COMPLETED");
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("COMPLETED"));
    let types = t.redis.outbox_types(product).await.unwrap();
    assert_eq!((count(&types, "payment-failed"), count(&types, "payment-completed")), (1, 1));
}

#[tokio::test]
async fn a_forged_or_stale_webhook_is_refused_and_changes_nothing() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    let payment = payment_id(&json_of(t.pay(user, slot, "k").await.unwrap(), 202).await);
    let (signature, body) = t.origin.gateway.webhook(payment).await.unwrap().unwrap();
    let post = |sig: String, body: Vec<u8>| {
        reqwest::Client::new()
            .post(t.origin.url("/payments/webhook"))
            .header(SIGNATURE_HEADER, sig)
            .body(body)
            .send()
    };
    let forged = SimulatedGateway::sign(b"not the secret", t.clock.now_ms() / 1000, &body);
    problem(post(forged, body.clone()).await.unwrap(), 401, "webhook-signature").await;
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    problem(post(signature.clone(), tampered).await.unwrap(), 401, "webhook-signature").await;
    t.clock.advance(10 * MIN);
    problem(post(signature, body).await.unwrap(), 401, "webhook-signature").await;
    assert_eq!(json_of(get_payment(&t, user, payment).await, 200).await["status"], "PENDING");
    let r = reqwest::Client::new().post(t.origin.url("/payments/webhook")).body("{}").send();
    problem(r.await.unwrap(), 401, "webhook-signature").await;
}

#[tokio::test]
async fn a_charge_left_unsubmitted_by_a_dead_request_is_submitted_once_by_the_worker() {
    use flashgate_origin::store::scripts::pay::{Creation, NewPayment};
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    // What a request does before it dies: the payment is created, the charge not sent.
    let payment = Uuid::now_v7();
    let store = &t.origin.state.payments.store;
    let created = store
        .create(&NewPayment {
            payment_id: payment,
            product_id: product,
            slot_id: slot,
            user_id: user,
            method: "card",
            amount: 12900,
            currency: "EUR",
            idempotency_key: "dead",
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            now_ms: t.clock.now_ms(),
        })
        .await
        .unwrap();
    assert_eq!(created, Creation::Created);
    let worker = t.payments_worker();
    assert_eq!(worker.step().await.unwrap().resubmitted, 0, "not overdue yet");
    t.clock.advance(Duration::from_secs(11));
    assert_eq!(worker.step().await.unwrap().resubmitted, 1);
    assert_eq!(worker.step().await.unwrap().resubmitted, 0, "submitted once");
    assert_eq!(t.origin.gateway.charges(), 1);
    store.set_locator(payment, product).await.unwrap();
    t.origin.gateway.release_all().await.unwrap();
    assert_eq!(t.redis.slot_status(product, slot).await.unwrap().as_deref(), Some("COMPLETED"));
}

#[tokio::test]
async fn a_buyer_pays_through_the_edge_and_reads_the_outcome() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 1).await.unwrap();
    let user = Uuid::new_v4();
    let token = s.id.buyer(user);
    let slot = json_of(s.acquire(&token, product).await.unwrap(), 201).await;
    let pay = |key: Option<&'static str>| {
        let mut r = s
            .http
            .post(s.edge.url("/payments"))
            .bearer_auth(&token)
            .json(&json!({"slotId": slot["slotId"], "method": "card"}));
        if let Some(key) = key {
            r = r.header("idempotency-key", key);
        }
        r.send()
    };
    let missing = pay(None).await.unwrap();
    assert_eq!(problem(missing, 422, "validation").await["field"], "Idempotency-Key");
    let first = json_of(pay(Some("edge-key")).await.unwrap(), 202).await;
    assert_eq!(json_of(pay(Some("edge-key")).await.unwrap(), 202).await, first);
    let path = format!("/payments/{}", first["paymentId"].as_str().unwrap());
    let mut status = String::new();
    for _ in 0..100 {
        let read =
            json_of(s.http.get(s.edge.url(&path)).bearer_auth(&token).send().await.unwrap(), 200)
                .await;
        status = read["status"].as_str().unwrap().to_owned();
        if status != "PENDING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "COMPLETED", "the processor's webhook settled it");
    let stranger = s.id.buyer(Uuid::new_v4());
    let r = s.http.get(s.edge.url(&path)).bearer_auth(&stranger).send().await.unwrap();
    problem(r, 403, "forbidden").await;
    assert_eq!(s.origin.gateway.charges(), 1);
}

/// Review finding 4: an idempotency key was claimed before the slot was checked, so a
/// payment for a slot nobody holds, or someone else's, kept its key for 24 h (thousands of
/// keys a day from one rate-limited buyer). A slot is checked first now, and a refused
/// payment frees its key: the buyer's next payment with that key is decided afresh.
#[tokio::test]
async fn a_refused_payment_leaves_no_idempotency_key_behind() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 2).await.unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb) = (s.id.buyer(alice), s.id.buyer(bob));
    let slot_a = json_of(s.acquire(&ta, product).await.unwrap(), 201).await["slotId"].clone();
    let slot_b = json_of(s.acquire(&tb, product).await.unwrap(), 201).await["slotId"].clone();
    let pay = |token: &str, slot: &Value| {
        s.http
            .post(s.edge.url("/payments"))
            .bearer_auth(token)
            .header("idempotency-key", "alice-key-1")
            .json(&json!({"slotId": slot, "method": "card"}))
            .send()
    };
    let nobodys = json!(Uuid::new_v4());
    problem(pay(&ta, &nobodys).await.unwrap(), 404, "not-found").await;
    problem(pay(&ta, &slot_b).await.unwrap(), 403, "forbidden").await;
    let mut redis = s.redis.connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("fg:idem:{alice}:*")).query_async(&mut redis).await.unwrap();
    assert!(keys.is_empty(), "refusals left keys: {keys:?}");
    // The same key, for Alice's own slot (another body): created, not "key reused".
    let created = json_of(pay(&ta, &slot_a).await.unwrap(), 202).await;
    assert_eq!(created["slotId"], slot_a);
}
