//! The fault suite's buyers (`scripts/faults.sh`): a storm of distinct buyers through the
//! edge that retries every failed request with the same token until it is answered, then
//! the checks from outside — every buyer answered `201` still holds that slot, every
//! payment ends — and a record of how the system answered while a fault lasted.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// How one buyer's acquisition ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Buyer {
    pub user: Uuid,
    pub token: String,
    /// `granted` (answered 201), `holding` (answered 409 already-holding: a retry after an
    /// answer that was lost), `refused` (409 sold out and the like), `unanswered`.
    pub outcome: String,
    pub slot_id: Option<String>,
    pub attempts: u32,
}

/// Answers that were not a decision (the fault showing), by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Failures {
    /// 503 problem+json with `Retry-After`: what a dependency that is down must answer.
    pub fast_503: u64,
    /// Anything else: other statuses, 503s without `Retry-After` or a problem body,
    /// connections refused or reset (the process itself down), timeouts.
    pub other: u64,
    pub connection_errors: u64,
    /// The slowest failed answer, in ms.
    pub slowest_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StormReport {
    pub requests: u64,
    pub buyers: Vec<Buyer>,
    pub failures: Failures,
}

impl StormReport {
    /// Distinct buyers answered 201.
    pub fn granted(&self) -> usize {
        self.buyers.iter().filter(|b| b.outcome == "granted").count()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds")
}

/// Classifies a failed answer into `failures`.
fn record_failure(failures: &Mutex<Failures>, status: Option<u16>, good_503: bool, took: Duration) {
    let mut f = failures.lock().expect("failures lock");
    match status {
        Some(503) if good_503 => f.fast_503 += 1,
        Some(_) => f.other += 1,
        None => {
            f.other += 1;
            f.connection_errors += 1;
        }
    }
    f.slowest_ms = f.slowest_ms.max(took.as_millis() as u64);
}

/// Whether a 503 is the problem+json with `Retry-After` the API promises.
fn is_good_503(response: &reqwest::Response) -> bool {
    response.headers().contains_key("retry-after")
        && response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
}

/// Every buyer acquires `product` through the edge at `edge` (`http://host:port`), at most
/// `concurrency` at once, retrying with backoff until answered or `deadline` passes.
pub async fn storm(
    edge: &str,
    product: Uuid,
    users: &[Uuid],
    tokens: &[String],
    concurrency: usize,
    deadline: Duration,
) -> StormReport {
    let http = client();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let until = Instant::now() + deadline;
    let url = format!("{edge}/slots/acquire");
    let body = json!({ "productId": product }).to_string();
    let tasks: Vec<_> = users
        .iter()
        .zip(tokens)
        .map(|(user, token)| {
            let (http, gate, failures, requests) =
                (http.clone(), gate.clone(), failures.clone(), requests.clone());
            let (url, body, token, user) = (url.clone(), body.clone(), token.clone(), *user);
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("the gate stays open");
                let mut buyer = Buyer {
                    user,
                    token: token.clone(),
                    outcome: "unanswered".into(),
                    slot_id: None,
                    attempts: 0,
                };
                let mut backoff = Duration::from_millis(50);
                while Instant::now() < until {
                    buyer.attempts += 1;
                    requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let sent = Instant::now();
                    let answer = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status() == 201 || r.status() == 409 => {
                            let status = r.status().as_u16();
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            let slug = v["type"].as_str().unwrap_or("").to_owned();
                            (buyer.outcome, buyer.slot_id) = match (status, slug.as_str()) {
                                (201, _) => {
                                    ("granted".into(), v["slotId"].as_str().map(str::to_owned))
                                }
                                (_, "/problems/already-holding") => {
                                    ("holding".into(), v["slotId"].as_str().map(str::to_owned))
                                }
                                _ => ("refused".into(), None),
                            };
                            return buyer;
                        }
                        Ok(r) if r.status() == 429 => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        Ok(r) => {
                            let good = is_good_503(&r);
                            record_failure(
                                &failures,
                                Some(r.status().as_u16()),
                                good,
                                sent.elapsed(),
                            );
                        }
                        Err(_) => record_failure(&failures, None, false, sent.elapsed()),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                buyer
            })
        })
        .collect();
    let mut buyers = Vec::with_capacity(tasks.len());
    for task in tasks {
        buyers.push(task.await.expect("a buyer task panicked"));
    }
    let failures = failures.lock().expect("failures lock").clone();
    StormReport { requests: requests.load(std::sync::atomic::Ordering::Relaxed), buyers, failures }
}

/// What the buyers see afterwards, through the edge.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Distinct buyers answered 201.
    pub granted: usize,
    /// Buyers whose answer was lost (the process died after the grant) and whose retry was
    /// told `409 already-holding`: they hold a unit they were not told about yet.
    pub holding: usize,
    /// Distinct slot ids among those answered 201 or already-holding (fewer than the buyers
    /// if one slot was answered to two).
    pub distinct_slots: usize,
    /// Buyers answered 201 who do not hold that slot (ACTIVE or COMPLETED).
    pub lost: usize,
    /// Buyers never answered within the storm's deadline.
    pub unanswered: usize,
}

/// GETs a path through the edge as `token`, retrying 5xx and connection errors for a while.
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Result<Value> {
    let mut last = None;
    for _ in 0..50 {
        match http.get(url).bearer_auth(token).send().await {
            Ok(r) if r.status().is_success() => return Ok(r.json().await?),
            Ok(r) => last = Some(format!("status {}", r.status())),
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("GET {url}: {}", last.unwrap_or_default())
}

/// Checks every buyer answered 201 still holds that very slot (`GET /slots/my-slots`).
pub async fn verify(edge: &str, report: &StormReport) -> Result<Verdict> {
    let http = client();
    let granted: Vec<&Buyer> = report.buyers.iter().filter(|b| b.outcome == "granted").collect();
    let holding = report.buyers.iter().filter(|b| b.outcome == "holding").count();
    let distinct: HashSet<&str> =
        report.buyers.iter().filter_map(|b| b.slot_id.as_deref()).collect();
    let mut verdict = Verdict {
        granted: granted.len(),
        holding,
        distinct_slots: distinct.len(),
        unanswered: report.buyers.iter().filter(|b| b.outcome == "unanswered").count(),
        ..Verdict::default()
    };
    for buyer in granted {
        let mine =
            get_json(&http, &format!("{edge}/slots/my-slots?size=100"), &buyer.token).await?;
        let holds = mine["items"].as_array().is_some_and(|items| {
            items.iter().any(|s| {
                s["slotId"].as_str() == buyer.slot_id.as_deref()
                    && matches!(s["status"].as_str(), Some("ACTIVE" | "COMPLETED"))
            })
        });
        if !holds {
            verdict.lost += 1;
            eprintln!(
                "LOST: buyer {} was answered 201 for {:?} and holds {mine}",
                buyer.user, buyer.slot_id
            );
        }
    }
    Ok(verdict)
}

/// One payment request per buyer holding a slot, `Idempotency-Key: fault-<user>`, retried
/// until answered; returns `(user, token, payment id)` of each accepted one. Run twice, the
/// second run replays every request and must get the same payment ids.
pub async fn pay(
    edge: &str,
    report: &StormReport,
    deadline: Duration,
) -> Result<Vec<(Uuid, String, String)>> {
    let http = client();
    let until = Instant::now() + deadline;
    let holders = report.buyers.iter().filter(|b| b.slot_id.is_some());
    let tasks: Vec<_> = holders
        .map(|b| {
            let (http, edge, b) = (http.clone(), edge.to_owned(), b.clone());
            tokio::spawn(async move {
                let body = json!({ "slotId": b.slot_id, "method": "card" }).to_string();
                while Instant::now() < until {
                    let sent = http
                        .post(format!("{edge}/payments"))
                        .bearer_auth(&b.token)
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("fault-{}", b.user))
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(r) = sent {
                        if r.status() == 202 {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            return v["paymentId"]
                                .as_str()
                                .map(|p| (b.user, b.token.clone(), p.to_owned()));
                        }
                        if r.status().is_client_error() {
                            return None;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None
            })
        })
        .collect();
    let mut paid = Vec::new();
    for task in tasks {
        if let Some(p) = task.await.context("a payment task panicked")? {
            paid.push(p);
        }
    }
    Ok(paid)
}

/// Waits until every payment is final (COMPLETED, FAILED, REFUNDED) or `deadline` passes;
/// returns how many are not.
pub async fn settle_wait(
    edge: &str,
    payments: &[(Uuid, String, String)],
    deadline: Duration,
) -> Result<usize> {
    let http = client();
    let until = Instant::now() + deadline;
    let mut open: Vec<&(Uuid, String, String)> = payments.iter().collect();
    while !open.is_empty() && Instant::now() < until {
        let mut still = Vec::new();
        for p in open {
            let v = get_json(&http, &format!("{edge}/payments/{}", p.2), &p.1).await?;
            if !matches!(v["status"].as_str(), Some("COMPLETED" | "FAILED" | "REFUNDED")) {
                still.push(p);
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(open.len())
}
