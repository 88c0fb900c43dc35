//! Nothing lost (invariant 3): every grant and transition goes from the Redis outbox to
//! PostgreSQL exactly once in effect, across relay crashes.

use flashgate_e2e::DrivenOrigin;
use flashgate_origin::inventory::ProductKeys;
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
