//! Fairness (invariant 6): a request stamped earlier at the edge but delayed on its way to
//! the origin loses to a later-stamped one without a fairness window — the checker counts
//! that inversion — and wins with a window longer than the delay, fixed or learned from the
//! edges' delays. A request that arrives later than the window is counted late, and its
//! inversion is the network's, not the window's.

use flashgate_cli::check::{Report, check};
use flashgate_e2e::DrivenOrigin;
use flashgate_origin::clock::Clock;
use flashgate_origin::store::fairness::Fairness;
use std::time::Duration;
use uuid::Uuid;

/// Two buyers race for one unit: `early` is stamped 20 ms before `late` but reaches the
/// origin after it: once the origin has decided `late` (no window) or holds it (a window).
/// Waiting for that state, not for a number of milliseconds, keeps the order the same on a
/// loaded machine. Returns (early's status, late's status, inversions counted).
async fn race(window: Duration) -> (u16, u16, u64) {
    let t = DrivenOrigin::start_with(|s| s.fairness = Fairness::Fixed(window)).await.unwrap();
    race_on(&t).await
}

async fn race_on(t: &DrivenOrigin) -> (u16, u16, u64) {
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let stamp = t.clock.now_us() as u64;
    let (early, late) = (Uuid::new_v4(), Uuid::new_v4());
    let held_before = held(t).await;
    let late_answered = std::sync::atomic::AtomicBool::new(false);
    let late_request = async {
        let answer = t.origin.acquire_signed(&t.id, late, product, stamp + 20_000).await;
        late_answered.store(true, std::sync::atomic::Ordering::SeqCst);
        answer
    };
    let early_request = async {
        while !late_answered.load(std::sync::atomic::Ordering::SeqCst)
            && held(t).await <= held_before
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        t.origin.acquire_signed(&t.id, early, product, stamp).await
    };
    let (late_answer, early_answer) = tokio::join!(late_request, early_request);
    let statuses =
        (early_answer.unwrap().status().as_u16(), late_answer.unwrap().status().as_u16());
    let report = checked(t).await;
    assert!(report.violations.iter().all(|v| v.invariant == 6), "{:?}", report.violations);
    (statuses.0, statuses.1, report.inversions)
}

/// Acquisitions the fairness window has held so far.
async fn held(t: &DrivenOrigin) -> f64 {
    t.origin.metric("flashgate_fairness_held_total").await.unwrap_or(0.0)
}

async fn checked(t: &DrivenOrigin) -> Report {
    t.relay(Duration::from_secs(30)).step().await.unwrap();
    check(&t.origin.state.db, &t.origin.state.inventory.connection(), Duration::ZERO).await.unwrap()
}

/// Sends `n` acquisitions of `product` (each by a new buyer) whose stamps are `age` old on
/// the origin's clock, then moves the clock past the window's recomputation and sends one
/// more, so the window in force reflects them.
async fn teach(t: &DrivenOrigin, product: Uuid, n: usize, age: Duration) {
    for _ in 0..=n {
        let stamp = (t.clock.now_us() - age.as_micros() as i64) as u64;
        let answer = t.origin.acquire_signed(&t.id, Uuid::new_v4(), product, stamp).await.unwrap();
        assert_eq!(answer.status(), 201);
    }
    t.clock.advance(Duration::from_millis(100));
    let stamp = (t.clock.now_us() - age.as_micros() as i64) as u64;
    t.origin.acquire_signed(&t.id, Uuid::new_v4(), product, stamp).await.unwrap();
}

async fn window_ms(t: &DrivenOrigin) -> f64 {
    t.origin.metric("flashgate_fairness_window_ms").await.unwrap()
}

#[tokio::test]
async fn without_a_window_the_delayed_earlier_request_loses_and_the_inversion_is_counted() {
    assert_eq!(race(Duration::ZERO).await, (409, 201, 1));
}

#[tokio::test]
async fn a_window_longer_than_the_delay_decides_in_stamp_order() {
    assert_eq!(race(Duration::from_millis(300)).await, (201, 409, 0));
}

#[tokio::test]
async fn the_default_window_grows_with_the_edges_delay_and_shrinks_back_when_it_goes() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 1_000).await.unwrap();
    assert_eq!(window_ms(&t).await, 0.0, "nothing learned yet");
    teach(&t, product, 40, Duration::from_millis(60)).await;
    let stormy = window_ms(&t).await;
    assert!((60.0..=80.0).contains(&stormy), "{stormy}");
    // Two periods later only the short delays of now on are remembered.
    t.clock.advance(Duration::from_secs(11));
    teach(&t, product, 40, Duration::from_millis(1)).await;
    let calm = window_ms(&t).await;
    assert!(calm <= 2.0, "{calm}");
}

#[tokio::test]
async fn the_learned_window_decides_a_delayed_earlier_request_first() {
    let t = DrivenOrigin::start().await.unwrap();
    let other = t.origin.create_product(&t.id, 1_000).await.unwrap();
    // Delays of 200 ms teach a window of about as much: the time the race below has to send
    // its second request once the first is held, however loaded the machine.
    teach(&t, other, 40, Duration::from_millis(200)).await;
    assert!(window_ms(&t).await >= 200.0);
    assert_eq!(race_on(&t).await, (201, 409, 0));
    assert!(t.origin.metric("flashgate_fairness_held_total").await.unwrap() >= 2.0);
}

#[tokio::test]
async fn a_request_later_than_the_window_is_counted_late_and_its_inversion_is_not_a_violation() {
    let window = Duration::from_millis(30);
    let t = DrivenOrigin::start_with(|s| s.fairness = Fairness::Fixed(window)).await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let now = t.clock.now_us() as u64;
    let on_time = t.origin.acquire_signed(&t.id, Uuid::new_v4(), product, now).await.unwrap();
    assert_eq!(on_time.status(), 201);
    // Stamped 100 ms before the grant, arriving after it: three windows late.
    let late =
        t.origin.acquire_signed(&t.id, Uuid::new_v4(), product, now - 100_000).await.unwrap();
    assert_eq!(late.status(), 409);
    assert_eq!(t.origin.metric("flashgate_fairness_late_total").await.unwrap(), 1.0);
    let report = checked(&t).await;
    assert_eq!((report.inversions, report.late_inversions), (0, 1), "{report:?}");
    assert_eq!(report.max_late_inversion_gap_us, 100_000);
    assert!(report.ok(), "{:?}", report.violations);
}
