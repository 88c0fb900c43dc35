//! The load loop: one keep-alive HTTP/1.1 connection per client, closed or open loop, and a
//! report of throughput, latency percentiles and answers by status.

use crate::workload::Workload;
use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One run's shape.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub target: SocketAddr,
    pub connections: usize,
    pub duration: Duration,
    /// Not recorded: the first requests warm caches and connections.
    pub warmup: Duration,
    /// Requests per second across all connections (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    /// Stop after this many requests (recorded or not); `None` for the whole duration.
    pub max_requests: Option<u64>,
    /// Request i goes to product i (mod the products) instead of a random one.
    pub round_robin: bool,
}

/// What a run measured. Latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub connections: usize,
    pub rate: Option<f64>,
    pub seconds: f64,
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
}

/// The first answer of a run, as the bare server replays it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Captured {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

struct Tally {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first: Option<Captured>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            errors: 0,
            first: None,
        }
    }
}

/// Runs `workload` against `spec.target`; also returns the first answer received.
pub async fn run(spec: &RunSpec, workload: Arc<Workload>) -> Result<(Report, Option<Captured>)> {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let record_from = start + spec.warmup;
    let end = record_from + spec.duration;
    let mut tasks = Vec::with_capacity(spec.connections);
    for c in 0..spec.connections {
        let spec = spec.clone();
        let workload = workload.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            client(c, &spec, &workload, &counter, start, record_from, end).await
        }));
    }
    let mut total = Tally::new();
    for t in tasks {
        let tally = t.await.context("a client task panicked")??;
        total.latency.add(&tally.latency).expect("same bounds");
        for (s, n) in tally.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
        total.errors += tally.errors;
        if total.first.is_none() {
            total.first = tally.first;
        }
    }
    let seconds = (Instant::now().min(end) - record_from.min(Instant::now())).as_secs_f64();
    let seconds = seconds.max(1e-3);
    let requests = total.latency.len();
    let q = |p: f64| total.latency.value_at_quantile(p) as f64 / 1000.0;
    let report = Report {
        connections: spec.connections,
        rate: spec.rate,
        seconds,
        requests,
        rps: requests as f64 / seconds,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: total.latency.max() as f64 / 1000.0,
        statuses: total.statuses,
        errors: total.errors,
    };
    Ok((report, total.first))
}

async fn connect(target: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn client(
    c: usize,
    spec: &RunSpec,
    workload: &Workload,
    counter: &AtomicU64,
    start: Instant,
    record_from: Instant,
    end: Instant,
) -> Result<Tally> {
    let mut tally = Tally::new();
    let authority = spec.target.to_string();
    // Open loop: this client's share of the rate, offset so clients do not fire together.
    let interval = spec.rate.map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    let mut next = interval.map(|i| start + i.mul_f64(c as f64 / spec.connections as f64));
    let mut pick = (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let scheduled = match (next, interval) {
            (Some(at), Some(i)) => {
                tokio::time::sleep_until(at).await;
                next = Some(at + i);
                at
            }
            _ => Instant::now(),
        };
        if scheduled >= end {
            break;
        }
        let i = counter.fetch_add(1, Ordering::Relaxed);
        if spec.max_requests.is_some_and(|m| i >= m) {
            break;
        }
        // xorshift: the product of this request, independent of its buyer.
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(spec.target).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected above");
        let request = workload.request(i, if spec.round_robin { i } else { pick }, &authority);
        let outcome = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts, body))
        }
        .await;
        let done = Instant::now();
        match outcome {
            Ok((parts, body)) => {
                if tally.first.is_none() {
                    tally.first = Some(Captured {
                        status: parts.status.as_u16(),
                        headers: parts
                            .headers
                            .iter()
                            .filter(|(n, _)| {
                                *n != http::header::DATE && *n != http::header::CONTENT_LENGTH
                            })
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                }
                if scheduled >= record_from && done <= end {
                    *tally.statuses.entry(parts.status.as_u16()).or_default() += 1;
                    let us = (done - scheduled).as_micros().max(1) as u64;
                    tally.latency.saturating_record(us);
                }
            }
            Err(_) => {
                tally.errors += 1;
                sender = None;
            }
        }
    }
    Ok(tally)
}
