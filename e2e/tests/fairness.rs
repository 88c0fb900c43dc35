//! Fairness (invariant 6): a request stamped earlier at the edge but delayed on its way to
//! the origin loses to a later-stamped one without a fairness window — the checker counts
//! that inversion — and wins with a window longer than the delay.

use flashgate_cli::check::check;
use flashgate_e2e::DrivenOrigin;
use flashgate_origin::clock::Clock;
use std::time::Duration;
use uuid::Uuid;

/// Two buyers race for one unit: `early` is stamped 20 ms before `late` but reaches the
/// origin 40 ms after it. Returns (early's status, late's status, inversions counted).
async fn race(window: Duration) -> (u16, u16, u64) {
    let t = DrivenOrigin::start_with(|s| s.fairness_window = window).await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let stamp = t.clock.now_us() as u64;
    let (early, late) = (Uuid::new_v4(), Uuid::new_v4());
    let late_request = t.origin.acquire_signed(&t.id, late, product, stamp + 20_000);
    let early_request = async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        t.origin.acquire_signed(&t.id, early, product, stamp).await
    };
    let (late_answer, early_answer) = tokio::join!(late_request, early_request);
    let statuses =
        (early_answer.unwrap().status().as_u16(), late_answer.unwrap().status().as_u16());
    t.relay(Duration::from_secs(30)).step().await.unwrap();
    let report = check(&t.origin.state.db, &t.origin.state.inventory.connection(), Duration::ZERO)
        .await
        .unwrap();
    assert!(report.violations.iter().all(|v| v.invariant == 6), "{:?}", report.violations);
    (statuses.0, statuses.1, report.inversions)
}

#[tokio::test]
async fn without_a_window_the_delayed_earlier_request_loses_and_the_inversion_is_counted() {
    assert_eq!(race(Duration::ZERO).await, (409, 201, 1));
}

#[tokio::test]
async fn a_window_longer_than_the_delay_decides_in_stamp_order() {
    assert_eq!(race(Duration::from_millis(300)).await, (201, 409, 0));
}
