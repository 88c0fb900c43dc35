//! The operator console's API (issue #17): a drop's live figures and the invariant check,
//! admin token required.

use flashgate_e2e::{DrivenOrigin, problem};
use flashgate_origin::clock::Clock;
use serde_json::Value;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_counts_grants_and_refusals_and_the_check_runs_from_the_console() {
    let t = DrivenOrigin::start().await.unwrap();
    let product = t.origin.create_product(&t.id, 1).await.unwrap();
    let now = t.clock.now_us() as u64;
    let statuses: Vec<u16> = futures::future::join_all(
        (0..3).map(|_| t.origin.acquire_signed(&t.id, Uuid::new_v4(), product, now)),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap().status().as_u16())
    .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    // Each origin adds its refusals to Redis once a second (the worker, driven here).
    let state = &t.origin.state;
    state.refusals.flush(&state.inventory.connection()).await.unwrap();

    let http = reqwest::Client::new();
    let live = t.origin.url(&format!("/admin/products/{product}/live"));
    problem(http.get(&live).send().await.unwrap(), 401, "unauthorized").await;
    let r = http.get(&live).bearer_auth(t.id.admin()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["granted"].as_i64(), v["refused"].as_i64()), (Some(1), Some(2)), "{v}");
    assert_eq!(v["product"]["remaining"], 0);
    assert_eq!(v["activeHolds"], 1);
    assert_eq!(v["queue"]["mode"], "off");
    assert!(v["edge"].is_null(), "no edge metrics URL configured");

    let drops: Value = http
        .get(t.origin.url("/admin/drops"))
        .bearer_auth(t.id.admin())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(drops[0]["productId"], product.to_string());

    let r = http.post(t.origin.url("/admin/check")).bearer_auth(t.id.admin()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["products"], 1);
    let buyer = http.post(t.origin.url("/admin/check")).bearer_auth(t.id.buyer(Uuid::new_v4()));
    problem(buyer.send().await.unwrap(), 403, "forbidden").await;
    // The page itself loads without a token (it asks for one).
    let page = http.get(t.origin.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'")
    );
    assert!(page.text().await.unwrap().contains("/console/console.js"));
}
