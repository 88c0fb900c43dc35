//! How the edge host forwards an admitted request, so the edge adds no unfairness of its
//! own: over kept-alive pooled connections, stamped by the host when it accepted the request
//! (a client cannot choose its stamp), shed when it waited in the edge past its bound, and
//! reporting its own share of the stamp-to-decision delay to the origin's metrics.

use flashgate_core::arrival::HEADER_HOST_ACCEPTED;
use flashgate_e2e::{Stack, TestEdge, now_us, problem};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Forwards TCP connections to `target`, counting them.
async fn counting_forwarder(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = opened.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, opened)
}

#[tokio::test]
async fn forwarded_requests_reuse_kept_alive_origin_connections() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let (forwarder, opened) = counting_forwarder(s.origin.addr).await;
    let edge = TestEdge::spawn(forwarder, &s.id).await.unwrap();
    let mut statuses = Vec::new();
    // One after another: each finds the previous one's connection idle in the pool.
    for _ in 0..20 {
        let r = s
            .http
            .post(edge.url("/slots/acquire"))
            .bearer_auth(s.id.buyer(Uuid::new_v4()))
            .json(&serde_json::json!({ "productId": product }))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "{statuses:?}");
    assert!(statuses.iter().all(|s| [201, 409].contains(s)), "{statuses:?}");
    let forwarded = s.origin.route_count("/slots/acquire").await.unwrap();
    assert!(forwarded >= 5, "{forwarded} acquisitions reached the origin");
    assert_eq!(opened.load(Ordering::SeqCst), 1, "one origin connection for every request");
}

#[tokio::test]
async fn a_client_cannot_choose_its_arrival_stamp() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let before = now_us() as i64;
    // A client claims to have arrived 10 s ago, in the header flashgate's host stamps.
    let claimed = now_us() - 10_000_000;
    let r = s
        .http
        .post(s.edge.url("/slots/acquire"))
        .bearer_auth(s.id.buyer(Uuid::new_v4()))
        .header(HEADER_HOST_ACCEPTED, claimed.to_string())
        .json(&serde_json::json!({ "productId": product }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let slot: serde_json::Value = r.json().await.unwrap();
    let arrival = OffsetDateTime::parse(slot["arrivalAt"].as_str().unwrap(), &Rfc3339).unwrap();
    let arrival_us = (arrival.unix_timestamp_nanos() / 1000) as i64;
    assert!(arrival_us >= before, "stamped {arrival_us}, before the request was sent ({before})");
}

#[tokio::test]
async fn a_request_that_waited_in_the_edge_past_its_bound_is_shed_not_forwarded() {
    // 1 µs: every admitted request has waited longer by the time it would be forwarded.
    let s = Stack::start_configured(
        |_| {},
        |h| {
            h.variables.insert("max_edge_wait_ms".into(), "0.001".into());
        },
    )
    .await
    .unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    let r = s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap();
    assert_eq!(r.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"), "{r:?}");
    let body = problem(r, 503, "unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("overloaded"), "{body}");
    assert_eq!(s.origin.route_count("/slots/acquire").await.unwrap(), 0, "nothing forwarded");
}

#[tokio::test]
async fn the_origin_reports_where_the_stamp_to_decision_time_went() {
    let s = Stack::start().await.unwrap();
    let product = s.origin.create_product(&s.id, 5).await.unwrap();
    for _ in 0..3 {
        let r = s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let text = reqwest::get(s.origin.url("/metrics")).await.unwrap().text().await.unwrap();
    for leg in ["edge", "origin", "decided"] {
        let series =
            format!("flashgate_stamp_delay_seconds_count{{edge=\"edge-test\",leg=\"{leg}\"}} 3");
        assert!(text.lines().any(|l| l == series), "no `{series}` in\n{text}");
    }
}
