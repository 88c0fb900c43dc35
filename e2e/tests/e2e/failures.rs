//! Dependencies fail: answers stay fast, explicit and retryable; nothing hangs.

use flashgate_e2e::{Identity, Stack, TestEdge, problem, repo_root};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A new buyer's acquisition of an unknown product, through `edge`.
async fn acquire_through(edge: &TestEdge, id: &Identity) -> reqwest::Response {
    reqwest::Client::new()
        .post(edge.url("/slots/acquire"))
        .bearer_auth(id.buyer(Uuid::new_v4()))
        .json(&serde_json::json!({ "productId": Uuid::new_v4() }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_down_is_a_fast_503_with_retry_after() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    let token = stack.id.buyer(Uuid::new_v4());
    let Stack { redis, origin, edge, http, id, db } = stack;
    drop(redis);
    let started = Instant::now();
    let response = http
        .post(edge.url("/slots/acquire"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "productId": product }))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    let body = problem(response, 503, "unavailable").await;
    assert_eq!(body["component"], "redis");
    // Generous bound: the Redis deadline is 500 ms; what matters is that it does not hang.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    drop((origin, id, db));
}

#[tokio::test]
async fn an_unreachable_origin_is_a_503_from_the_edge() {
    let id = Identity::generate().unwrap();
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let edge = TestEdge::spawn(closed, &id).await.unwrap();
    let response = acquire_through(&edge, &id).await;
    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, 503, "unavailable").await;
}

#[tokio::test]
async fn a_slow_origin_is_a_503_within_the_edge_deadline_not_a_hang() {
    let id = Identity::generate().unwrap();
    // Accepts connections and says nothing for 30 s.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let edge = TestEdge::spawn_configured(repo_root().join("spin.toml"), addr, &id, |h| {
        h.outbound_first_byte_timeout = Duration::from_millis(500);
    })
    .await
    .unwrap();
    let started = Instant::now();
    let response = acquire_through(&edge, &id).await;
    let waited = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, 503, "unavailable").await;
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_they_reach_anything() {
    let stack = Stack::start().await.unwrap();
    let token = stack.id.buyer(Uuid::new_v4());
    let before = stack.origin.request_count().await.unwrap();
    for size in [20 * 1024, 2 * 1024 * 1024] {
        let r = stack
            .http
            .post(stack.edge.url("/slots/acquire"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(vec![b' '; size])
            .send()
            .await
            .unwrap();
        problem(r, 413, "body-too-large").await;
    }
    assert_eq!(stack.origin.request_count().await.unwrap(), before);
}

#[tokio::test]
async fn an_edge_out_of_instances_answers_503_not_500() {
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 5).await.unwrap();
    // One instance slot serving one request at a time, and an origin 500 ms away: a second
    // concurrent request finds none (`reuse.rs` shows the default sharing that instance).
    let edge = stack
        .edge_behind_delay(Duration::from_millis(500), |s| {
            s.max_instances = 1;
            s.instance_concurrency = Some(1);
        })
        .await
        .unwrap();
    let send = || {
        stack
            .http
            .post(edge.url("/slots/acquire"))
            .bearer_auth(stack.id.buyer(Uuid::new_v4()))
            .json(&serde_json::json!({ "productId": product }))
            .send()
    };
    let (first, second) = tokio::join!(send(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send().await
    });
    assert_eq!(first.unwrap().status(), 201);
    let second = second.unwrap();
    assert_eq!(second.headers()["retry-after"], "1");
    let body = problem(second, 503, "unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("capacity"), "{body}");
}

#[tokio::test]
async fn the_edge_host_refuses_to_start_with_a_missing_or_malformed_variable_naming_it() {
    let id = Identity::generate().unwrap();
    let origin: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (variable, value) in [
        ("edge_secret", "not-hex"),
        ("edge_secret", "abcd"),
        ("jwt_jwks", "{\"keys\": [{\"kty\": \"nope\"}]"),
        ("rate_user_per_sec", "fast"),
    ] {
        let started = TestEdge::spawn_configured(repo_root().join("spin.toml"), origin, &id, |h| {
            h.variables.insert(variable.to_owned(), value.to_owned());
        })
        .await;
        let message = format!("{:#}", started.err().expect("a misconfigured edge does not start"));
        assert!(message.contains(variable), "{variable}={value}: {message}");
    }
}

/// Where a platform starts the component without checking its variables (`spin up` does
/// not), a missing one is a 503 problem naming it, never a bare 500.
#[tokio::test]
async fn an_unchecked_platform_gets_a_503_naming_the_missing_variable() {
    let id = Identity::generate().unwrap();
    let manifest = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    // The component section without its secret: our host no longer recognises flashgate's
    // edge to check it, as a platform that checks nothing.
    let unchecked: String = manifest
        .lines()
        .filter(|l| !l.starts_with("edge_secret = \"{{ edge_secret }}\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(unchecked, manifest);
    let dir = std::env::temp_dir().join(format!("fg-manifest-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spin.toml");
    std::fs::write(
        &path,
        unchecked
            .replace("source = \"edge/", &format!("source = \"{}/edge/", repo_root().display())),
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let edge = TestEdge::spawn_manifest(path, closed, &id).await.unwrap();
    let response = acquire_through(&edge, &id).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let body = problem(response, 503, "unavailable").await;
    assert_eq!(body["variable"], "edge_secret", "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
