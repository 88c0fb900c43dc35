//! Slots expire and give their unit back exactly once (invariants 1 and 4), driven by a
//! controlled clock through the worker's single step.

use flashgate_e2e::DrivenOrigin;
use flashgate_origin::workers::expiry::{ExpiryWorker, Sweep};
use futures::StreamExt;
use std::time::Duration;
use uuid::Uuid;

const MIN: Duration = Duration::from_secs(60);

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

#[tokio::test]
async fn due_slots_are_reminded_then_reclaimed_once() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 3).await.unwrap();
    for _ in 0..3 {
        assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    }
    assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 409);
    let worker = t.worker();

    t.clock.advance(24 * MIN);
    assert_eq!(worker.step().await.unwrap(), Sweep::default(), "nothing due yet");
    t.clock.advance(2 * MIN);
    assert_eq!(worker.step().await.unwrap(), Sweep { reminded: 3, ..Sweep::default() });
    assert_eq!(worker.step().await.unwrap(), Sweep::default(), "reminders are sent once");

    t.clock.advance(5 * MIN);
    assert_eq!(worker.step().await.unwrap(), Sweep { expired: 3, ..Sweep::default() });
    assert_eq!(worker.step().await.unwrap(), Sweep::default(), "reclaimed once");
    let counts = t.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!((counts.remaining, counts.held, counts.scheduled), (3, 0, 0));

    let types = t.redis.outbox_types(product).await.unwrap();
    assert_eq!(count(&types, "slot-acquired"), 3);
    assert_eq!(count(&types, "slot-expiring-soon"), 3);
    assert_eq!(count(&types, "slot-expired"), 3);

    // The units are on sale again.
    for _ in 0..3 {
        assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    }
    t.redis.counts(product).await.unwrap().assert_conserved();
}

#[tokio::test]
async fn racing_workers_reclaim_every_unit_exactly_once() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 60).await.unwrap();
    for _ in 0..60 {
        assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    }
    t.clock.advance(31 * MIN);
    let workers: Vec<ExpiryWorker> = (0..3).map(|_| t.worker()).collect();
    let sweeps = futures::future::join_all(workers.iter().map(|w| w.step())).await;
    let expired: u64 = sweeps.into_iter().map(|s| s.unwrap().expired).sum();
    assert_eq!(expired, 60, "each slot reclaimed by exactly one worker");
    let counts = t.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!(counts.remaining, 60);
    let types = t.redis.outbox_types(product).await.unwrap();
    assert_eq!(count(&types, "slot-expired"), 60, "one event per reclaim");
    assert_eq!(
        count(&types, "slot-expiring-soon"),
        60,
        "one reminder per slot, however many workers"
    );
}

#[tokio::test]
async fn a_lapsed_slot_is_expired_lazily_when_its_buyer_comes_back() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let buyer = Uuid::new_v4();
    assert_eq!(t.acquire(buyer, product).await.unwrap().status(), 201);
    assert_eq!(
        t.acquire(buyer, product).await.unwrap().status(),
        409,
        "holding while the slot is live"
    );
    t.clock.advance(31 * MIN);
    // No sweep has run: the deadline alone makes the slot expired.
    assert_eq!(
        t.acquire(buyer, product).await.unwrap().status(),
        201,
        "the lapsed slot no longer counts"
    );
    let counts = t.redis.counts(product).await.unwrap();
    counts.assert_conserved();
    assert_eq!((counts.remaining, counts.held, counts.scheduled), (0, 1, 1));
    let types = t.redis.outbox_types(product).await.unwrap();
    assert_eq!(types, ["slot-acquired", "slot-expired", "slot-acquired"]);
    // The worker finds nothing left to reclaim for the old slot.
    assert_eq!(t.worker().step().await.unwrap().expired, 0);
}

#[tokio::test]
async fn a_thousand_acquisitions_over_five_products_conserve_stock_in_redis_and_postgres() {
    // What this test counts is decisions, not speed: a loaded machine must not turn a slow
    // Redis reply into a 503 (the production deadline is for buyers, who retry), so the
    // deadline is generous and a wave runs 32 attempts at a time.
    let t = DrivenOrigin::start_with(|s| s.redis_timeout = Duration::from_secs(30)).await.unwrap();
    let mut products = Vec::new();
    for _ in 0..5 {
        products.push(t.origin.create_product(&t.id, 200).await.unwrap());
    }
    // Attempt i of a wave goes to product (start + i) mod 5, so waves continue the rotation.
    let wave = |start: usize, n: usize| {
        let t = &t;
        let products = &products;
        async move {
            let answers: Vec<u16> = futures::stream::iter(0..n)
                .map(|i| async move {
                    let product = products[(start + i) % products.len()];
                    t.acquire(Uuid::new_v4(), product).await.unwrap().status().as_u16()
                })
                .buffer_unordered(32)
                .collect()
                .await;
            let odd: Vec<&u16> = answers.iter().filter(|s| ![201, 409].contains(*s)).collect();
            assert!(odd.is_empty(), "answers other than 201 and 409: {odd:?}");
            answers.iter().filter(|s| **s == 201).count()
        }
    };
    let check = || async {
        for p in &products {
            t.redis.counts(*p).await.unwrap().assert_conserved();
        }
    };
    // 1,000 acquisitions in three waves; only the first wave (a third) lapses.
    assert_eq!(wave(0, 334).await, 334);
    t.clock.advance(20 * MIN);
    assert_eq!(wave(334, 333).await, 333);
    assert_eq!(wave(667, 333).await, 333);
    check().await;
    assert_eq!(wave(0, 5).await, 0, "sold out");
    t.clock.advance(11 * MIN);
    assert_eq!(t.worker().step().await.unwrap().expired, 334);
    check().await;
    // The freed units (the first wave's, product by product) sell again, and no more.
    assert_eq!(wave(0, 334).await, 334);
    assert_eq!(wave(0, 5).await, 0);
    check().await;

    // Everything reaches PostgreSQL, where invariant 1 holds too.
    t.relay(Duration::from_secs(30)).step().await.unwrap();
    for p in &products {
        let counts = t.redis.counts(*p).await.unwrap();
        assert_eq!((counts.remaining, counts.held), (0, 200));
        assert_eq!(
            counts.remaining + t.pg_live(*p).await,
            counts.total,
            "invariant 1 in PostgreSQL"
        );
    }
    assert_eq!(t.pg_count("SELECT count(*) FROM purchase_slots").await, 1334, "every grant once");
    assert_eq!(
        t.pg_count("SELECT count(*) FROM purchase_slots WHERE status = 'EXPIRED'").await,
        334
    );
}
