//! Property tests of the origin's parsers of untrusted input (issue #30): request bodies
//! (acquisition, payment, product, waiting-room settings), query strings (the audit trail),
//! the `Idempotency-Key` header, the processor's webhooks (signature and body), and the
//! outbox's events (Redis stream entries in, JSON on Kafka out and back). Arbitrary and
//! near-valid inputs never panic; a refusal is a validation error naming a field the API
//! has (never a 500); a webhook signature verifies and any change to it is refused; a
//! webhook body and an event read back as they were written.

use super::audit::AuditQuery;
use super::payments::{IdempotencyKey, PaymentRequest};
use super::products::NewProduct;
use super::queue::QueueSettings;
use super::slots::AcquireRequest;
use crate::error::ApiError;
use crate::gateway::{GatewayEvent, Outcome, SimulatedGateway, WebhookError, verify_signature};
use crate::outbox::events::{EventKind, OutboxEvent};
use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The field a refusal names; anything but a validation error fails the property.
fn named(e: ApiError) -> Result<String, TestCaseError> {
    match e {
        ApiError::Validation { field, .. } => Ok(field),
        other => Err(TestCaseError::fail(format!("not a validation error: {other:?}"))),
    }
}

/// JSON values of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[0-9a-f-]{36}".prop_map(Value::from),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::hash_map(
                prop_oneof![
                    Just("productId".to_owned()),
                    Just("slotId".to_owned()),
                    Just("method".to_owned()),
                    Just("name".to_owned()),
                    Just("price".to_owned()),
                    Just("amount".to_owned()),
                    Just("currency".to_owned()),
                    Just("stock".to_owned()),
                    Just("saleStartsAt".to_owned()),
                    Just("saleEndsAt".to_owned()),
                    Just("mode".to_owned()),
                    Just("order".to_owned()),
                    Just("admitPerSecond".to_owned()),
                    any::<String>(),
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event of any kind with any field values.
fn any_event() -> impl Strategy<Value = OutboxEvent> {
    let ids = (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>());
    let optional = (
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<u128>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
    );
    (0..EventKind::ALL.len(), ids, any::<i64>(), optional, any::<String>()).prop_map(
        |(kind, (e, p, s, u), at_ms, (arr, exp, pay, amount, cur, method, key, reason), tp)| {
            OutboxEvent {
                entry_id: String::new(),
                kind: EventKind::ALL[kind],
                schema_version: 1,
                event_id: uuid::Uuid::from_u128(e),
                product_id: uuid::Uuid::from_u128(p),
                slot_id: uuid::Uuid::from_u128(s),
                user_id: uuid::Uuid::from_u128(u),
                at_ms,
                arrival_us: arr,
                expires_ms: exp,
                payment_id: pay.map(uuid::Uuid::from_u128),
                amount,
                currency: cur,
                method,
                idempotency_key: key,
                reason,
                traceparent: tp,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_acquisition_body_is_read_or_refused_by_field(body in proptest::collection::vec(any::<u8>(), 0..300), v in any_json()) {
        for bytes in [body, serde_json::to_vec(&v).unwrap()] {
            if let Err(e) = AcquireRequest::parse(&bytes) {
                let field = named(e)?;
                prop_assert!(["body", "productId"].contains(&field.as_str()), "{field}");
            }
        }
    }

    #[test]
    fn any_payment_body_is_read_or_refused_by_field(v in any_json()) {
        if let Err(e) = PaymentRequest::parse(&serde_json::to_vec(&v).unwrap()) {
            let field = named(e)?;
            prop_assert!(["body", "slotId", "method"].contains(&field.as_str()), "{field}");
        }
    }

    #[test]
    fn any_product_body_is_read_or_refused_by_field(v in any_json(), name in any::<String>()) {
        let mut near = json!({"name": name, "price": {"amount": 100, "currency": "EUR"},
                              "stock": 3, "saleStartsAt": "2026-01-01T10:00:00Z"});
        for value in [v, near.take()] {
            match NewProduct::parse(&value) {
                Ok(p) => {
                    prop_assert!(!p.name.is_empty() && p.name.chars().count() <= 200);
                    prop_assert!(!p.name.chars().any(char::is_control), "a control character kept");
                }
                Err(e) => {
                    let field = named(e)?;
                    let known = ["body", "name", "price", "price.amount", "price.currency",
                                 "stock", "saleStartsAt", "saleEndsAt"];
                    prop_assert!(known.contains(&field.as_str()), "{field}");
                }
            }
        }
    }

    #[test]
    fn any_waiting_room_settings_are_read_or_refused_by_field(v in any_json()) {
        if let Err(e) = QueueSettings::parse(&v) {
            let field = named(e)?;
            let known = ["body", "mode", "order", "admitPerSecond", "autoThreshold"];
            prop_assert!(known.contains(&field.as_str()), "{field}");
        }
    }

    #[test]
    fn any_audit_query_is_read_or_refused_by_field(
        pairs in proptest::collection::hash_map(
            prop_oneof![Just("productId"), Just("buyerId"), Just("action"), Just("from"),
                        Just("to"), Just("cursor"), Just("limit"), Just("sort")]
                .prop_map(str::to_owned),
            prop_oneof![any::<String>(), "[0-9]{1,40}-[0-9a-f]{32}", "[0-9]{1,4}"],
            0..5,
        )
    ) {
        let q: HashMap<String, String> = pairs;
        if let Err(e) = AuditQuery::parse(&q) {
            let field = named(e)?;
            prop_assert!(q.contains_key(&field), "{field} is not a parameter given");
        }
    }

    #[test]
    fn any_idempotency_key_header_is_read_or_refused_by_field(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut h = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&raw) {
            h.insert("idempotency-key", value);
            match IdempotencyKey::from_headers(&h) {
                Ok(key) => prop_assert!(!key.as_str().is_empty() && key.as_str().len() < 256),
                Err(e) => prop_assert_eq!(named(e)?, "Idempotency-Key"),
            }
        }
    }

    #[test]
    fn a_webhook_signature_verifies_and_any_change_is_refused(
        t in -1_000_000_000i64..4_000_000_000,
        body in proptest::collection::vec(any::<u8>(), 0..200),
        flip in any::<prop::sample::Index>(),
    ) {
        let secret = [9u8; 32];
        let header = SimulatedGateway::sign(&secret, t, &body);
        prop_assert!(verify_signature(&secret, &header, &body, t).is_ok());
        let mut bytes = header.into_bytes();
        let i = flip.index(bytes.len());
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(verify_signature(&secret, &mutated, &body, t).is_err(), "{mutated}");
    }

    #[test]
    fn any_webhook_signature_header_is_refused_without_a_panic(header in any::<String>(), now in any::<i64>()) {
        prop_assert!(verify_signature(&[9u8; 32], &header, b"x", now).is_err());
    }

    #[test]
    fn an_event_reads_back_from_the_json_it_is_delivered_as(event in any_event()) {
        let json = serde_json::to_vec(&event).unwrap();
        prop_assert_eq!(serde_json::from_slice::<OutboxEvent>(&json).unwrap(), event);
    }

    #[test]
    fn any_kafka_payload_is_an_event_or_refused_without_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        v in any_json(),
    ) {
        let _ = serde_json::from_slice::<OutboxEvent>(&bytes);
        let _ = serde_json::from_value::<OutboxEvent>(v);
    }

    #[test]
    fn any_stream_entry_is_an_event_or_refused_naming_a_field(
        fields in proptest::collection::hash_map(
            prop_oneof![
                Just("type".to_owned()), Just("v".to_owned()), Just("eventId".to_owned()),
                Just("productId".to_owned()), Just("slotId".to_owned()), Just("userId".to_owned()),
                Just("atMs".to_owned()), Just("paymentId".to_owned()), Just("amount".to_owned()),
                Just("traceparent".to_owned()), any::<String>(),
            ],
            prop_oneof![
                any::<String>(), "[0-9]{1,5}", Just("1".to_owned()),
                Just("slot-acquired".to_owned()), "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            ],
            0..12,
        ),
    ) {
        let entry = redis::streams::StreamId {
            id: "1-0".into(),
            map: fields
                .into_iter()
                .map(|(k, v)| (k, redis::Value::BulkString(v.into_bytes())))
                .collect(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        };
        if let Err(why) = OutboxEvent::from_entry(&entry) {
            prop_assert!(why.contains('`') || why.contains("schema version"), "{}", why);
        }
    }

    #[test]
    fn a_webhook_body_reads_back_as_written(
        reference in any::<u128>(),
        failed in proptest::option::of(any::<String>()),
        id in any::<u128>(),
    ) {
        let event = GatewayEvent {
            reference: uuid::Uuid::from_u128(reference),
            outcome: match failed {
                Some(reason) => Outcome::Failed { reason },
                None => Outcome::Succeeded,
            },
        };
        let body = event.to_webhook_body(uuid::Uuid::from_u128(id));
        prop_assert_eq!(GatewayEvent::from_webhook_body(&body).unwrap(), event);
    }

    #[test]
    fn any_webhook_body_is_read_or_refused_as_malformed(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        v in any_json(),
    ) {
        for body in [bytes, serde_json::to_vec(&v).unwrap()] {
            if let Err(e) = GatewayEvent::from_webhook_body(&body) {
                prop_assert!(matches!(e, WebhookError::Malformed(_)), "{:?}", e);
            }
        }
    }
}
