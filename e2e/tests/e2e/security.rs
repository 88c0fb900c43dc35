//! Findings of the outside security review (issue #30), each tested live where it was
//! found live. (Product ids in one form: `shield.rs`; webhook timestamps and audit cursors
//! at the extremes: the origin's unit tests.)

use flashgate_e2e::Stack;
use uuid::Uuid;

/// API answers say `nosniff`, and those that carry a buyer's state `no-store`, through the
/// edge as from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_nosniff_and_a_buyers_state_is_never_stored() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let buyer = s.id.buyer(Uuid::new_v4());
    let granted = s.acquire(&buyer, product).await.unwrap();
    assert_eq!(granted.status(), 201);
    let mine = s.http.get(s.edge.url("/slots/my-slots")).bearer_auth(&buyer).send().await.unwrap();
    assert_eq!(mine.status(), 200);
    let refused = s.acquire("not-a-token", product).await.unwrap();
    assert_eq!(refused.status(), 401);
    for (what, r) in [("grant", &granted), ("my slots", &mine), ("a refusal", &refused)] {
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("x-content-type-options"), Some("nosniff"), "{what}");
        assert_eq!(header("cache-control"), Some("no-store"), "{what}");
    }
    let admin = reqwest::Client::new()
        .get(s.origin.url("/admin/audit-logs"))
        .bearer_auth(s.id.admin())
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    assert_eq!(admin.headers()["cache-control"], "no-store");
    assert_eq!(admin.headers()["x-content-type-options"], "nosniff");
}
