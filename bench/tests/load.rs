//! The load generator against the bare server (and through the jitter proxy): what it
//! reports is what was sent and answered.

use flashgate_bench::load::{self, Captured, RunSpec};
use flashgate_bench::proxy::Delay;
use flashgate_bench::workload::{self, Auth, Workload};
use flashgate_core::signing::EdgeSecret;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use uuid::Uuid;

async fn bare() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Captured {
        status: 409,
        headers: vec![("content-type".into(), "application/problem+json".into())],
        body: r#"{"type":"sold-out"}"#.into(),
    };
    tokio::spawn(flashgate_bench::bare::serve(listener, answer));
    addr
}

fn workload() -> Arc<Workload> {
    let secret = EdgeSecret::from_bytes(vec![1; 32]).unwrap();
    let auth = Auth::Edge { secret, edge_id: "test".into() };
    Arc::new(Workload::new(auth, workload::buyers(1, 10), vec![Uuid::new_v4()]).unwrap())
}

fn spec(target: SocketAddr, rate: Option<f64>) -> RunSpec {
    RunSpec {
        target,
        connections: 2,
        duration: Duration::from_millis(500),
        warmup: Duration::ZERO,
        rate,
        max_requests: None,
        round_robin: false,
    }
}

#[tokio::test]
async fn a_closed_loop_counts_every_answer_and_captures_the_first() {
    let target = bare().await;
    let (report, first) = load::run(&spec(target, None), workload()).await.unwrap();
    assert!(report.requests > 0);
    assert_eq!(report.errors, 0);
    assert_eq!(report.statuses.keys().copied().collect::<Vec<_>>(), [409]);
    assert_eq!(report.statuses[&409], report.requests);
    assert!(report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms);
    let first = first.unwrap();
    assert_eq!((first.status, first.body.as_str()), (409, r#"{"type":"sold-out"}"#));
    assert!(
        first.headers.iter().any(|(n, v)| n == "content-type" && v == "application/problem+json")
    );
}

#[tokio::test]
async fn an_open_loop_sends_at_the_rate_asked() {
    let target = bare().await;
    let (report, _) = load::run(&spec(target, Some(200.0)), workload()).await.unwrap();
    // 200/s for 0.5 s: 100 scheduled sends (the last few may finish after the end on a
    // busy machine and not count; none is sent early).
    assert!((85..=100).contains(&report.requests), "{} requests", report.requests);
    assert_eq!(report.errors, 0);
}

#[tokio::test]
async fn max_requests_stops_the_run() {
    let target = bare().await;
    let mut spec = spec(target, None);
    spec.max_requests = Some(7);
    let (report, _) = load::run(&spec, workload()).await.unwrap();
    assert_eq!(report.requests, 7);
}

#[tokio::test]
async fn the_jitter_proxy_delays_every_request_on_a_kept_alive_connection() {
    let target = bare().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let delay = Delay { min: Duration::from_millis(20), max: Duration::from_millis(30) };
    tokio::spawn(flashgate_bench::proxy::serve(listener, target, delay));
    let mut spec = spec(proxy, None);
    spec.max_requests = Some(20);
    let (report, _) = load::run(&spec, workload()).await.unwrap();
    assert_eq!((report.requests, report.statuses[&409], report.errors), (20, 20, 0));
    // Each request, not just each connection's first, waited its draw.
    assert!(report.p50_ms >= 19.0 && report.max_ms < 1000.0, "{report:?}");
}
