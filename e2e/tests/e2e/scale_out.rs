//! Several edges and several origins (issue #18): one edge host spreads its forwards over
//! two origins and stops sending to one killed with `kill -9` (reads retried on the other);
//! two edge hosts with their own key-value stores in front of one origin each keep their own
//! hints, doubts and rate limits, and the origin keeps the rules that span them.

use flashgate_e2e::cluster::OriginProcess;
use flashgate_e2e::{
    Identity, RedisServer, TestDatabase, TestEdge, TestOrigin, problem, repo_root,
};
use flashgate_edge_host::HostSettings;
use flashgate_origin::clock::SystemClock;
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

const ACQUIRE: &str = "/slots/acquire";

/// Requests an origin process answered on `route`, from its `/metrics`.
async fn answered(origin: &OriginProcess, route: &str) -> u64 {
    let text = reqwest::get(origin.url("/metrics")).await.unwrap().text().await.unwrap();
    let needle = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| {
            l.starts_with("flashgate_http_request_duration_seconds_count{") && l.contains(&needle)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn vars(settings: &mut HostSettings, pairs: &[(&str, &str)]) {
    for (k, v) in pairs {
        settings.variables.insert((*k).to_owned(), (*v).to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_spreads_over_two_origins_and_skips_one_killed() {
    let redis = RedisServer::start().unwrap();
    let processor = RedisServer::start().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    let binary = env!("CARGO_BIN_EXE_origin");
    let args = ["--gateway-store-url", processor.url.as_str(), "--fairness-window-ms", "0"];
    let a = OriginProcess::spawn(binary, &redis.url, &db, &id, &args).await.unwrap();
    let mut b = OriginProcess::spawn(binary, &redis.url, &db, &id, &args).await.unwrap();
    let origins = vec![a.addr.to_string(), b.addr.to_string()];
    let edge = TestEdge::spawn_configured(repo_root().join("spin.toml"), a.addr, &id, |h| {
        h.origins = origins;
    })
    .await
    .unwrap();

    let product = {
        let starts = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        let body = json!({
            "name": "Limited sneaker",
            "price": {"amount": 12900, "currency": "EUR"},
            "stock": 100,
            "saleStartsAt": starts.format(&time::format_description::well_known::Rfc3339).unwrap(),
        });
        let r = reqwest::Client::new()
            .post(a.url("/products"))
            .bearer_auth(id.admin())
            .json(&body)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        Uuid::parse_str(body["productId"].as_str().unwrap()).unwrap()
    };
    let http = reqwest::Client::new();
    let buy = |token: String| {
        let http = http.clone();
        let url = edge.url(ACQUIRE);
        async move {
            http.post(url).bearer_auth(token).json(&json!({ "productId": product })).send().await
        }
    };
    for _ in 0..20 {
        let r = buy(id.buyer(Uuid::new_v4())).await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let (on_a, on_b) = (answered(&a, ACQUIRE).await, answered(&b, ACQUIRE).await);
    assert_eq!(on_a + on_b, 20);
    assert!(on_a >= 5 && on_b >= 5, "round robin: {on_a} and {on_b}");

    // B dies. Reads through the edge are retried on A at once: none fails.
    b.kill();
    let reader = id.buyer(Uuid::new_v4());
    for _ in 0..10 {
        let r = http.get(edge.url("/slots/my-slots")).bearer_auth(&reader).send().await.unwrap();
        assert_eq!(r.status(), 200, "a read whose origin is gone is tried on the other");
    }
    // The refused connection marked B down: acquisitions go to A only.
    let before = answered(&a, ACQUIRE).await;
    for _ in 0..10 {
        let r = buy(id.buyer(Uuid::new_v4())).await.unwrap();
        assert_eq!(r.status(), 201, "acquisitions skip the origin that is down");
    }
    assert_eq!(answered(&a, ACQUIRE).await, before + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_keep_their_own_hints_and_limits_and_the_origin_keeps_the_rules() {
    let redis = RedisServer::start().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let id = Identity::generate().unwrap();
    let origin = TestOrigin::spawn(&redis, &db, &id, Arc::new(SystemClock)).await.unwrap();
    let limited = |h: &mut HostSettings| {
        vars(
            h,
            &[("rate_user_per_sec", "1"), ("rate_user_burst", "3"), ("rate_address_per_sec", "0")],
        );
    };
    let manifest = repo_root().join("spin.toml");
    let one =
        TestEdge::spawn_configured(manifest.clone(), origin.addr, &id, limited).await.unwrap();
    let two = TestEdge::spawn_configured(manifest, origin.addr, &id, limited).await.unwrap();
    let http = reqwest::Client::new();
    let product = origin.create_product(&id, 1).await.unwrap();
    let buy = |edge: &TestEdge, token: &str| {
        http.post(edge.url(ACQUIRE))
            .bearer_auth(token)
            .json(&json!({ "productId": product }))
            .send()
    };

    // The one unit, through edge one.
    let first = Uuid::new_v4();
    let first_token = id.buyer(first);
    assert_eq!(buy(&one, &first_token).await.unwrap().status(), 201);
    // One slot per buyer holds across edges: edge two never saw this buyer, and the origin
    // (not an edge's memory) tells them they hold the unit already.
    let again = buy(&two, &first_token).await.unwrap();
    let body = problem(again, 409, "already-holding").await;
    assert!(body["slotId"].is_string(), "{body}");
    // Edge one learns "sold out" from the origin's answer and answers from its hint next.
    problem(buy(&one, &id.buyer(Uuid::new_v4())).await.unwrap(), 409, "sold-out").await;
    let seen = origin.route_count(ACQUIRE).await.unwrap();
    problem(buy(&one, &id.buyer(Uuid::new_v4())).await.unwrap(), 409, "sold-out").await;
    assert_eq!(origin.route_count(ACQUIRE).await.unwrap(), seen, "edge one answered itself");
    // Edge two has its own store: it has learnt no "sold out" yet and asks the origin, which
    // refuses with the same answer.
    problem(buy(&two, &id.buyer(Uuid::new_v4())).await.unwrap(), 409, "sold-out").await;
    assert_eq!(origin.route_count(ACQUIRE).await.unwrap(), seen + 1, "edge two asked");

    // Rate limits are per edge: a buyer over the bucket at edge one is still served by edge
    // two (each edge limits what reaches it; N edges let a buyer through N times the rate).
    let busy = id.buyer(Uuid::new_v4());
    let get = |edge: &TestEdge| http.get(edge.url("/products")).bearer_auth(&busy).send();
    for _ in 0..3 {
        assert_eq!(get(&one).await.unwrap().status(), 200);
    }
    problem(get(&one).await.unwrap(), 429, "rate-limited").await;
    assert_eq!(get(&two).await.unwrap().status(), 200, "edge two has its own bucket");
}
