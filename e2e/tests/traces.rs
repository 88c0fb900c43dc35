//! One trace per acquisition and per payment, edge to PostgreSQL: spans exported through the
//! OpenTelemetry SDK's in-memory exporter, installed here as `OTEL_EXPORTER_OTLP_*` would
//! install the OTLP one, and read back parent by parent — the edge's span (remote) → the
//! origin's request → the handler → the Lua call and the outbox entry → the relay → the
//! persister's write; for a payment, its creation → its webhook and its events.

use flashgate_e2e::{KafkaBroker, Stack};
use flashgate_origin::outbox::kafka::KafkaSettings;
use flashgate_origin::store::fairness::Fairness;
use opentelemetry::Value;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use std::sync::LazyLock;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// The process's exporter: installed once, before any stack starts.
static EXPORTER: LazyLock<InMemorySpanExporter> = LazyLock::new(|| {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry()
        .with(flashgate_origin::telemetry::otel_layer(&provider))
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    // Kept alive for the whole process.
    std::mem::forget(provider);
    exporter
});

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| match &kv.value {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    })
}

/// The spans of trace `trace_id` (hex) finished so far.
fn spans_of(trace_id: &str) -> Vec<SpanData> {
    EXPORTER
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace_id)
        .collect()
}

/// Waits until trace `trace_id` has a span named `name` with `event` (when given).
async fn wait_for(trace_id: &str, name: &str, event: Option<&str>) -> Vec<SpanData> {
    for _ in 0..100 {
        let spans = spans_of(trace_id);
        if spans
            .iter()
            .any(|s| s.name == name && (event.is_none() || attr(s, "event").as_deref() == event))
        {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("trace {trace_id} never got a {name} span ({event:?}): {:#?}", spans_of(trace_id));
}

fn one<'a>(spans: &'a [SpanData], name: &str, event: Option<&str>) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && (event.is_none() || attr(s, "event").as_deref() == event))
        .collect();
    assert_eq!(found.len(), 1, "{name} {event:?}: {found:#?}");
    found[0]
}

fn id(span: &SpanData) -> SpanId {
    span.span_context.span_id()
}

/// No span carries a token, a signature or a secret.
fn assert_no_secrets(spans: &[SpanData], secrets: &[&str]) {
    for span in spans {
        for kv in &span.attributes {
            let value = kv.value.to_string();
            for secret in secrets {
                assert!(!value.contains(secret), "{} carries a secret in {}", span.name, kv.key);
            }
            assert!(!value.starts_with("eyJ"), "{} carries a JWT in {}", span.name, kv.key);
        }
    }
}

async fn stack() -> Stack {
    LazyLock::force(&EXPORTER);
    // Decided at once: the Lua call runs in the handler's own task.
    Stack::start_configured(|o| o.fairness = Fairness::Fixed(Duration::ZERO), |_| {}).await.unwrap()
}

#[tokio::test]
async fn a_grant_is_one_trace_from_the_edge_to_postgresql() {
    let s = stack().await;
    let product = s.origin.create_product(&s.id, 3).await.unwrap();
    let token = s.id.buyer(Uuid::new_v4());
    let r = s.acquire(&token, product).await.unwrap();
    assert_eq!(r.status(), 201);
    let trace_id = r.headers()["x-trace-id"].to_str().unwrap().to_owned();

    let spans = wait_for(&trace_id, "persister.write", Some("slot-acquired")).await;
    let request = spans
        .iter()
        .find(|s| s.name == "request" && attr(s, "path").as_deref() == Some("/slots/acquire"))
        .expect("the origin's request span");
    assert!(request.parent_span_is_remote, "the request continues the edge's span");
    assert_ne!(request.parent_span_id, SpanId::INVALID);
    assert_eq!(attr(request, "edge").as_deref(), Some("edge-test"));
    let acquire = one(&spans, "acquire", None);
    assert_eq!(acquire.parent_span_id, id(request));
    assert_eq!(attr(acquire, "product_id"), Some(product.to_string()));
    assert_eq!(attr(acquire, "outcome").as_deref(), Some("granted"));
    let lua = spans
        .iter()
        .find(|s| s.name == "redis.script" && attr(s, "script").as_deref() == Some("acquire.lua"))
        .expect("the Lua call's span");
    assert_eq!(lua.parent_span_id, id(acquire));
    let relay = one(&spans, "outbox.relay", Some("slot-acquired"));
    assert_eq!(relay.parent_span_id, id(acquire), "the outbox entry continues the handler");
    let write = one(&spans, "persister.write", Some("slot-acquired"));
    assert_eq!(write.parent_span_id, id(relay));
    assert_no_secrets(&spans, &[&token, &s.id.secret_hex]);
}

#[tokio::test]
async fn a_payment_and_its_webhook_are_one_trace_to_postgresql() {
    let s = stack().await;
    let product = s.origin.create_product(&s.id, 3).await.unwrap();
    let token = s.id.buyer(Uuid::new_v4());
    let granted: serde_json::Value =
        s.acquire(&token, product).await.unwrap().json().await.unwrap();
    let paid = s
        .http
        .post(s.edge.url("/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "trace-1")
        .json(&json!({ "slotId": granted["slotId"], "method": "card" }))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 202);
    let trace_id = paid.headers()["x-trace-id"].to_str().unwrap().to_owned();

    // The processor answers by webhook; its settlement reaches PostgreSQL in the same trace.
    let spans = wait_for(&trace_id, "persister.write", Some("payment-completed")).await;
    let request = spans
        .iter()
        .find(|s| s.name == "request" && attr(s, "path").as_deref() == Some("/payments"))
        .expect("the origin's request span");
    assert!(request.parent_span_is_remote);
    let create = one(&spans, "payment.create", None);
    assert_eq!(create.parent_span_id, id(request));
    assert_eq!(attr(create, "outcome").as_deref(), Some("created"));
    let webhook = one(&spans, "payment.webhook", None);
    assert_eq!(webhook.parent_span_id, id(create), "the webhook continues the payment");
    assert_eq!(attr(webhook, "outcome").as_deref(), Some("completed"));
    for event in ["payment-created", "payment-completed"] {
        let relay = one(&spans, "outbox.relay", Some(event));
        assert_eq!(relay.parent_span_id, id(create), "{event}");
        let write = one(&spans, "persister.write", Some(event));
        assert_eq!(write.parent_span_id, id(relay), "{event}");
    }
    assert_no_secrets(&spans, &[&token, &s.id.secret_hex]);
}

#[tokio::test]
async fn through_kafka_the_record_carries_the_trace_to_the_persister() {
    LazyLock::force(&EXPORTER);
    let kafka = KafkaBroker::start().await.unwrap();
    let brokers = kafka.brokers.clone();
    let s = Stack::start_configured(
        |o| {
            o.fairness = Fairness::Fixed(Duration::ZERO);
            o.kafka = Some(KafkaSettings::new(brokers));
        },
        |_| {},
    )
    .await
    .unwrap();
    let product = s.origin.create_product(&s.id, 3).await.unwrap();
    let r = s.acquire(&s.id.buyer(Uuid::new_v4()), product).await.unwrap();
    assert_eq!(r.status(), 201);
    let trace_id = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let spans = wait_for(&trace_id, "persister.write", Some("slot-acquired")).await;
    let acquire = one(&spans, "acquire", None);
    let relay = one(&spans, "outbox.relay", Some("slot-acquired"));
    assert_eq!(relay.parent_span_id, id(acquire));
    // The persister read the record from Kafka: its write continues the relay's span.
    let write = one(&spans, "persister.write", Some("slot-acquired"));
    assert_eq!(attr(write, "source").as_deref(), Some("kafka"));
    assert_eq!(write.parent_span_id, id(relay));
}
