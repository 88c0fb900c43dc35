//! Nothing lost (invariant 3): every grant and transition goes from the Redis outbox to
//! PostgreSQL exactly once in effect, across relay crashes.

use flashgate_e2e::DrivenOrigin;
use flashgate_origin::store::keys::ProductKeys;
use std::time::Duration;
use uuid::Uuid;

async fn pg_status_counts(t: &DrivenOrigin, product: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'ACTIVE'), \
                count(*) FILTER (WHERE status = 'COMPLETED'), \
                count(*) FILTER (WHERE status = 'EXPIRED') \
         FROM purchase_slots WHERE product_id = $1",
    )
    .bind(product)
    .fetch_one(&t.origin.state.db)
    .await
    .unwrap()
}

async fn outbox_len(t: &DrivenOrigin, product: Uuid) -> i64 {
    let mut c = t.redis.connection().await.unwrap();
    redis::cmd("XLEN").arg(ProductKeys::new(product).outbox()).query_async(&mut c).await.unwrap()
}

async fn grant(t: &DrivenOrigin, product: Uuid) -> u16 {
    t.acquire(Uuid::new_v4(), product).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn grants_and_expiries_reach_postgres_with_their_trace_and_the_outbox_drains() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 3).await.unwrap();
    for _ in 0..3 {
        assert_eq!(grant(&t, product).await, 201);
    }
    let relay = t.relay(Duration::from_secs(30));
    assert_eq!(relay.step().await.unwrap().delivered, 3);
    assert_eq!(pg_status_counts(&t, product).await, (3, 0, 0));
    assert_eq!(outbox_len(&t, product).await, 0, "delivered entries are deleted");
    let traces: Vec<String> = sqlx::query_scalar("SELECT trace_id FROM purchase_slots")
        .fetch_all(&t.origin.state.db)
        .await
        .unwrap();
    assert!(traces.iter().all(|id| id.len() == 32), "{traces:?}");

    t.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(t.worker().step().await.unwrap().expired, 3);
    assert_eq!(relay.step().await.unwrap().delivered, 6, "3 reminders and 3 expiries");
    assert_eq!(pg_status_counts(&t, product).await, (0, 0, 3));
    assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, 9);
    // Invariant 1 in PostgreSQL: Redis stock + ACTIVE + COMPLETED = total.
    let counts = t.redis.counts(product).await.unwrap();
    let (active, completed, _) = pg_status_counts(&t, product).await;
    assert_eq!(counts.remaining + active + completed, counts.total);
    assert_eq!(relay.step().await.unwrap().delivered, 0);
}

#[tokio::test]
async fn a_relay_killed_between_delivery_and_ack_is_redelivered_and_applied_once() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    for _ in 0..5 {
        assert_eq!(grant(&t, product).await, 201);
    }
    // The first relay delivers and dies before acknowledging.
    let doomed = t.relay(Duration::from_secs(30));
    let batch = doomed.fetch(product).await.unwrap();
    assert_eq!(batch.events.len(), 5);
    doomed.deliver(&batch).await.unwrap();
    drop(doomed);
    assert_eq!(pg_status_counts(&t, product).await, (5, 0, 0));
    assert_eq!(outbox_len(&t, product).await, 5, "unacknowledged entries stay");

    // A healthy relay that waits for abandonment leaves them alone at first ...
    let patient = t.relay(Duration::from_secs(3600));
    assert_eq!(patient.step().await.unwrap().delivered, 0);
    // ... and one whose claim window has passed takes them over and delivers again.
    let survivor = t.relay(Duration::ZERO);
    assert_eq!(survivor.step().await.unwrap().delivered, 5);
    assert_eq!(pg_status_counts(&t, product).await, (5, 0, 0), "applied once");
    assert_eq!(
        t.pg_count("SELECT count(*) FROM slot_audit_log").await,
        5,
        "one audit row per event"
    );
    assert_eq!(outbox_len(&t, product).await, 0);
}

#[tokio::test]
async fn an_undeliverable_entry_goes_to_dead_letters_and_does_not_block_the_rest() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    let mut c = t.redis.connection().await.unwrap();
    let stream = ProductKeys::new(product).outbox();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("type")
        .arg("slot-stolen")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(grant(&t, product).await, 201);
    let report = t.relay(Duration::from_secs(30)).step().await.unwrap();
    assert_eq!((report.delivered, report.dead), (1, 1));
    assert_eq!(pg_status_counts(&t, product).await, (1, 0, 0));
    let dead: i64 =
        redis::cmd("XLEN").arg(format!("{stream}:dead")).query_async(&mut c).await.unwrap();
    assert_eq!(dead, 1);
    assert_eq!(outbox_len(&t, product).await, 0);
}

/// Kafka orders events within a topic only: whatever order they arrive in (reversed, or
/// shuffled in batches), PostgreSQL ends in the same state, each event applied once,
/// nothing left waiting.
#[tokio::test]
async fn events_applied_in_any_order_reach_the_same_state() {
    use flashgate_origin::outbox::persister::PgWriter;
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 3).await.unwrap();
    // A buyer whose slot expires and who buys again; a buyer who pays; one late payer.
    let again = Uuid::new_v4();
    assert_eq!(t.acquire(again, product).await.unwrap().status(), 201);
    let (payer, paid) = t.grant(product).await.unwrap();
    assert_eq!(t.pay(payer, paid, "k").await.unwrap().status(), 202);
    t.origin.gateway.release_all().await.unwrap();
    let (late_payer, late) = t.grant(product).await.unwrap();
    assert_eq!(t.pay(late_payer, late, "k").await.unwrap().status(), 202);
    t.clock.advance(Duration::from_secs(31 * 60));
    t.worker().step().await.unwrap();
    t.origin.gateway.release_all().await.unwrap();
    assert_eq!(t.acquire(again, product).await.unwrap().status(), 201);

    let batch = t.relay(Duration::from_secs(30)).fetch(product).await.unwrap();
    let total = batch.events.len();
    assert!(total >= 12, "{total} events");
    let writer = PgWriter::new(t.origin.state.db.clone());
    // Reversed one by one, then 30 shuffles in batches of random sizes (a whole batch goes
    // through the persister's multi-row path for the grants nothing conflicts with).
    let mut orders = vec![batch.events.iter().rev().cloned().collect::<Vec<_>>()];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize % n
    };
    for _ in 0..30 {
        let mut order = batch.events.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, next(i + 1));
        }
        orders.push(order);
    }
    for (n, order) in orders.iter().enumerate() {
        sqlx::query("TRUNCATE purchases, purchase_slots, slot_audit_log, persister_parked")
            .execute(&t.origin.state.db)
            .await
            .unwrap();
        let mut rest = order.as_slice();
        while !rest.is_empty() {
            // One at a time, the whole shuffle as one batch (every third), or 1–4 at a time.
            let size = match n {
                0 => 1,
                n if n % 3 == 0 => rest.len(),
                _ => 1 + next(4).min(rest.len() - 1),
            };
            writer.apply(&rest[..size]).await.unwrap();
            rest = &rest[size..];
        }
        // Delivered again, in order this time: nothing changes.
        assert_eq!(writer.apply(&batch.events).await.unwrap(), 0, "order {n}");
        assert_eq!(t.pg_count("SELECT count(*) FROM persister_parked").await, 0, "order {n}");
        assert_eq!(t.pg_count("SELECT count(*) FROM slot_audit_log").await, total as i64);
        // again: EXPIRED + ACTIVE; payer: COMPLETED; late payer: EXPIRED (refunded).
        assert_eq!(pg_status_counts(&t, product).await, (1, 1, 2), "order {n}");
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM purchases ORDER BY status")
                .fetch_all(&t.origin.state.db)
                .await
                .unwrap();
        assert_eq!(statuses, ["COMPLETED", "REFUNDED"], "order {n}");
    }
}

#[tokio::test]
async fn a_relay_retries_its_own_failed_delivery_at_once_not_after_the_claim_idle() {
    use flashgate_origin::outbox::persister::PgWriter;
    use flashgate_origin::outbox::relay::{Relay, Sink};
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    for _ in 0..3 {
        assert_eq!(grant(&t, product).await, 201);
    }
    // PostgreSQL is unreachable for this relay's first step: the entries stay pending with it.
    let down = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy("postgres://postgres@127.0.0.1:1/flashgate")
        .unwrap();
    let inventory = t.origin.state.inventory.clone();
    let failing =
        Relay::new(inventory.clone(), Sink::Postgres(PgWriter::new(down)), "r1".into(), MINUTE);
    assert!(failing.step().await.is_err());
    assert_eq!(pg_status_counts(&t, product).await, (0, 0, 0));
    // The same relay once PostgreSQL is back: its pending entries go at once, although
    // another relay would wait a minute (the claim idle) to take them over.
    let writer = PgWriter::new(t.origin.state.db.clone());
    let other = Relay::new(inventory.clone(), Sink::Postgres(writer.clone()), "r2".into(), MINUTE);
    assert_eq!(other.step().await.unwrap().delivered, 0, "not another relay's yet");
    let back = Relay::new(inventory, Sink::Postgres(writer), "r1".into(), MINUTE);
    assert_eq!(back.step().await.unwrap().delivered, 3);
    assert_eq!(pg_status_counts(&t, product).await, (3, 0, 0));
    assert_eq!(outbox_len(&t, product).await, 0);
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_poison_event_is_dead_lettered_with_its_reason_and_the_rest_flows_on() {
    use flashgate_cli::check::check;
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 5).await.unwrap();
    let (user, slot) = t.grant(product).await.unwrap();
    let poison = t.redis.add_poison_event(product, slot, user).await.unwrap();
    assert_eq!(grant(&t, product).await, 201);
    let relay = t.relay(Duration::from_secs(30));
    let report = relay.step().await.unwrap();
    assert_eq!((report.delivered, report.dead), (2, 1), "both grants applied, the poison aside");
    assert_eq!(pg_status_counts(&t, product).await, (2, 0, 0));
    assert_eq!(outbox_len(&t, product).await, 0, "the stream moved on");
    let (event_id, reason): (Uuid, String) =
        sqlx::query_as("SELECT event_id, reason FROM dead_letters WHERE source = 'relay'")
            .fetch_one(&t.origin.state.db)
            .await
            .unwrap();
    assert_eq!(event_id, poison);
    assert!(reason.contains("check"), "the reason names the refusal: {reason}");
    let state = &t.origin.state;
    let checked = check(&state.db, &state.inventory.connection(), Duration::ZERO).await.unwrap();
    assert_eq!(checked.violations.len(), 1, "{:?}", checked.violations);
    assert_eq!(checked.violations[0].invariant, 3);
}
