//! No secret, token or pass leaves the process it was given to (issue #30, item 5): a storm
//! through the edge and the origin — acquisitions, sold-out answers, payments and their
//! webhooks, a waiting room's passes, forged tokens, passes, signatures and webhooks, admin
//! calls — with every log line captured (JSON, flashgate's crates at TRACE), every span
//! exported (the OpenTelemetry SDK's in-memory exporter), both `/metrics` and every answer
//! kept; then each is searched for the development secrets, the tokens and the passes.

use flashgate_e2e::Stack;
use flashgate_origin::config::Secret;
use flashgate_origin::gateway::{SIGNATURE_HEADER, SimulatedGateway};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::{Value, json};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// Every log line the process writes, as it would reach a log shipper.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static SINKS: LazyLock<(Captured, InMemorySpanExporter)> = LazyLock::new(|| {
    let logs = Captured::default();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let writer = logs.clone();
    let filter = tracing_subscriber::EnvFilter::new(
        "info,flashgate_origin=trace,flashgate_edge_host=trace,flashgate_net=trace,\
         flashgate_core=trace,tower_http=trace",
    );
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(flashgate_origin::telemetry::otel_layer(&provider))
        .with(tracing_subscriber::fmt::layer().json().with_writer(move || writer.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    std::mem::forget(provider);
    (logs, exporter)
});

/// Reads an answer; an error answer is kept whole (status, headers, body) for the search.
/// (A pass reaches its owner in a 200: that is how it is handed out.)
async fn kept(errors: &Mutex<String>, r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let headers = format!("{status} {:?}\n", r.headers());
    let body = r.text().await.unwrap_or_default();
    if status >= 400 {
        let mut errors = errors.lock().unwrap();
        errors.push_str(&headers);
        errors.push_str(&body);
    }
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_leaves_no_secret_token_or_pass_in_logs_spans_metrics_or_answers() {
    let (logs, exporter) = &*SINKS;
    let webhook_secret = "7e".repeat(32);
    let hook = webhook_secret.clone();
    let s = Stack::start_configured(
        move |o| o.payments.simulated.webhook_secret = Secret::from_hex(&hook).unwrap(),
        |h| {
            for (k, v) in [("rate_user_per_sec", "0"), ("rate_address_per_sec", "0")] {
                h.variables.insert(k.into(), v.into());
            }
        },
    )
    .await
    .unwrap();
    let answers = Mutex::new(String::new());
    // The edge secret, the webhook secret, and the public logs' signing key and pseudonym
    // secret (its verifier key is public; the signing key's private part is the base64 tail).
    let log_key = s.id.transparency_key.splitn(5, '+').nth(4).unwrap().to_owned();
    let mut secrets: Vec<String> = vec![
        s.id.secret_hex.clone(),
        webhook_secret.clone(),
        s.id.transparency_key.clone(),
        log_key,
        s.id.transparency_secret.clone(),
    ];
    let admin = s.id.admin();
    secrets.push(admin.clone());

    // Acquisitions: 60 buyers for 20 units.
    let product = s.origin.create_product(&s.id, 20).await.unwrap();
    let buyers: Vec<String> = (0..60).map(|_| s.id.buyer(Uuid::new_v4())).collect();
    secrets.extend(buyers.iter().cloned());
    let mut held: Vec<(String, String)> = Vec::new();
    let stack = &s;
    for chunk in buyers.chunks(20) {
        let attempts =
            chunk.iter().map(|token| async move { (token, stack.acquire(token, product).await) });
        for (token, r) in futures::future::join_all(attempts).await {
            let (status, body) = kept(&answers, r.unwrap()).await;
            if status == 201 {
                held.push((token.clone(), body["slotId"].as_str().unwrap().to_owned()));
            }
        }
    }
    assert_eq!(held.len(), 20);

    // Ten of them pay; the processor settles each with a signed webhook.
    for (i, (token, slot)) in held.iter().take(10).enumerate() {
        let r = s
            .http
            .post(s.edge.url("/payments"))
            .bearer_auth(token)
            .header("idempotency-key", format!("pay-{i}"))
            .json(&json!({"slotId": slot, "method": "card"}))
            .send()
            .await
            .unwrap();
        assert_eq!(kept(&answers, r).await.0, 202);
    }

    // A waiting room: a buyer is admitted, gets a pass and buys with it.
    let queued = s.origin.create_product(&s.id, 5).await.unwrap();
    s.origin
        .configure_queue(&s.id, queued, json!({"mode": "always", "admitPerSecond": 1000}))
        .await
        .unwrap();
    let waiting = s.id.buyer(Uuid::new_v4());
    secrets.push(waiting.clone());
    let look = || s.http.get(s.edge.url(&format!("/queue/{queued}"))).bearer_auth(&waiting).send();
    let joined = s.http.post(s.edge.url(&format!("/queue/{queued}"))).bearer_auth(&waiting).send();
    kept(&answers, joined.await.unwrap()).await;
    let mut pass = None;
    for _ in 0..200 {
        let (_, view) = kept(&answers, look().await.unwrap()).await;
        if let Some(p) = view["pass"].as_str() {
            pass = Some(p.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pass = pass.expect("admitted within 10 s");
    secrets.push(pass.clone());
    let with_pass = s.acquire_with_pass(&waiting, queued, Some(&pass)).await.unwrap();
    assert_eq!(kept(&answers, with_pass).await.0, 201);

    // What an attacker sends: tokens, passes, signatures and webhooks forged or garbled.
    let forged_token = format!("{}x", &buyers[0][..buyers[0].len() - 1]);
    let forged_pass = format!("{}x", &pass[..pass.len() - 1]);
    secrets.extend([forged_token.clone(), forged_pass.clone()]);
    for token in [forged_token.as_str(), "not-a-token", &admin] {
        let r = s.acquire(token, product).await.unwrap();
        kept(&answers, r).await;
    }
    let other = s.id.buyer(Uuid::new_v4());
    secrets.push(other.clone());
    let r = s.acquire_with_pass(&other, queued, Some(&forged_pass)).await.unwrap();
    kept(&answers, r).await;
    let body = br#"{"type":"charge.succeeded"}"#;
    let wrong = SimulatedGateway::sign(&[9; 32], now_secs(), body);
    secrets.push(wrong.clone());
    let r = s
        .http
        .post(s.origin.url("/payments/webhook"))
        .header(SIGNATURE_HEADER, &wrong)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    kept(&answers, r).await;
    // An operator at work.
    for path in ["/admin/audit-logs", "/admin/drops"] {
        let r = s.http.get(s.origin.url(path)).bearer_auth(&admin).send().await.unwrap();
        kept(&answers, r).await;
    }
    let r = s.http.post(s.origin.url("/admin/check")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(kept(&answers, r).await.0, 200);

    // Let the webhooks land and the relay run, then read everything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut metrics =
        s.http.get(s.origin.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let edge_admin = s.edge.admin.expect("the edge's admin listener");
    metrics.push_str(
        &reqwest::get(format!("http://{edge_admin}/metrics")).await.unwrap().text().await.unwrap(),
    );
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let mut spans = String::new();
    for span in exporter.get_finished_spans().unwrap() {
        for kv in &span.attributes {
            spans.push_str(&format!("{}={}\n", kv.key, kv.value));
        }
        for event in &span.events.events {
            spans.push_str(&format!("{}\n", event.name));
            for kv in &event.attributes {
                spans.push_str(&format!("{}={}\n", kv.key, kv.value));
            }
        }
    }
    let answers = answers.into_inner().unwrap();
    assert!(answers.contains("/problems/unauthorized"), "the forged requests' answers were kept");
    // The sinks saw the storm (the search below can fail).
    assert!(logs.lines().count() > 50, "{} log lines", logs.lines().count());
    assert!(logs.contains(&product.to_string()), "the logs name the product");
    assert!(spans.contains("acquire") || spans.contains("granted"), "spans were exported");
    assert!(metrics.contains("flashgate_"));

    for (sink, text) in
        [("logs", &logs), ("spans", &spans), ("metrics", &metrics), ("error answers", &answers)]
    {
        for secret in &secrets {
            // The whole value, and its signature part alone (a log might cut a token short).
            let tail = secret.rsplit('.').next().unwrap_or(secret);
            for needle in [secret.as_str(), tail] {
                if needle.len() >= 16 {
                    assert!(!text.contains(needle), "{sink} carry a secret ({}…)", &needle[..8]);
                }
            }
        }
        assert!(!text.contains("eyJ"), "{sink} carry something JWT-shaped");
    }
}

/// Now, in seconds since the epoch (the webhook's timestamp).
fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
