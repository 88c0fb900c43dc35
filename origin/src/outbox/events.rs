//! Outbox events: what the Lua scripts append to `fg:{p}:outbox`, parsed into one typed form
//! that the relay delivers and the persister applies. Schemas: `events/` (JSON Schema, v1).

use flashgate_core::trace::TraceContext;
use redis::streams::StreamId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    SlotAcquired,
    SlotExpired,
    SlotExpiringSoon,
    PaymentCreated,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefundRequired,
    PaymentRefunded,
}

impl EventKind {
    /// The Kafka topic of this kind (DESIGN.md, Events).
    pub fn topic(self) -> &'static str {
        match self {
            Self::SlotAcquired => "slot-acquired",
            Self::SlotExpired => "slot-expired",
            Self::SlotExpiringSoon => "slot-expiring-soon",
            Self::PaymentCreated => "payment-created",
            Self::PaymentCompleted => "payment-completed",
            Self::PaymentFailed => "payment-failed",
            Self::PaymentRefundRequired => "payment-refund-required",
            Self::PaymentRefunded => "payment-refunded",
        }
    }

    /// Every kind, in the order of [`crate::outbox::kafka::TOPICS`].
    pub const ALL: [Self; 8] = [
        Self::SlotAcquired,
        Self::SlotExpired,
        Self::SlotExpiringSoon,
        Self::PaymentCreated,
        Self::PaymentCompleted,
        Self::PaymentFailed,
        Self::PaymentRefundRequired,
        Self::PaymentRefunded,
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.topic() == s)
    }
}

/// One event, as delivered (JSON, camelCase, `schemaVersion` 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEvent {
    /// The Redis stream entry id (not part of the event).
    #[serde(skip, default)]
    pub entry_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub schema_version: u32,
    pub event_id: Uuid,
    pub product_id: Uuid,
    pub slot_id: Uuid,
    pub user_id: Uuid,
    /// When the change happened (ms since the epoch, the origin's clock).
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Payment events: the payment, and what it charges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// `payment-failed`: why the gateway declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub traceparent: String,
}

impl OutboxEvent {
    /// Parses a stream entry; the error names the first bad field.
    pub fn from_entry(entry: &StreamId) -> Result<Self, String> {
        let text = |f: &str| -> Result<String, String> {
            entry.get::<String>(f).ok_or_else(|| format!("missing field `{f}`"))
        };
        let uuid = |f: &str| -> Result<Uuid, String> {
            Uuid::try_parse(&text(f)?).map_err(|_| format!("field `{f}` is not a UUID"))
        };
        let int = |f: &str| -> Result<Option<i64>, String> {
            entry
                .get::<String>(f)
                .map(|v| v.parse().map_err(|_| format!("field `{f}` is not an integer")))
                .transpose()
        };
        let opt_text = |f: &str| entry.get::<String>(f);
        let opt_uuid = |f: &str| -> Result<Option<Uuid>, String> {
            opt_text(f)
                .map(|v| Uuid::try_parse(&v).map_err(|_| format!("field `{f}` is not a UUID")))
                .transpose()
        };
        let kind_text = text("type")?;
        let kind =
            EventKind::parse(&kind_text).ok_or_else(|| format!("unknown type `{kind_text}`"))?;
        let schema_version = int("v")?.ok_or("missing field `v`")? as u32;
        if schema_version != 1 {
            return Err(format!("unsupported schema version {schema_version}"));
        }
        let is_payment = !matches!(
            kind,
            EventKind::SlotAcquired | EventKind::SlotExpired | EventKind::SlotExpiringSoon
        );
        if is_payment && opt_text("paymentId").is_none() {
            return Err("missing field `paymentId`".into());
        }
        Ok(Self {
            entry_id: entry.id.clone(),
            kind,
            schema_version,
            event_id: uuid("eventId")?,
            product_id: uuid("productId")?,
            slot_id: uuid("slotId")?,
            user_id: uuid("userId")?,
            at_ms: int("atMs")?.ok_or("missing field `atMs`")?,
            arrival_us: int("arrivalUs")?,
            expires_ms: int("expiresMs")?,
            payment_id: opt_uuid("paymentId")?,
            amount: int("amount")?,
            currency: opt_text("currency"),
            method: opt_text("method"),
            idempotency_key: opt_text("idempotencyKey"),
            reason: opt_text("reason"),
            traceparent: text("traceparent")?,
        })
    }

    /// The trace id of the request that caused the change.
    pub fn trace_id(&self) -> String {
        TraceContext::parse(&self.traceparent).map(|t| t.trace_id_hex()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;
    use std::collections::HashMap;

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        let map: HashMap<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
            .collect();
        StreamId {
            id: "1-0".into(),
            map,
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn acquired() -> Vec<(&'static str, String)> {
        let id = Uuid::nil().to_string();
        vec![
            ("type", "slot-acquired".into()),
            ("v", "1".into()),
            ("eventId", id.clone()),
            ("productId", id.clone()),
            ("slotId", id.clone()),
            ("userId", id),
            ("arrivalUs", "1700000000000001".into()),
            ("atMs", "1700000000002".into()),
            ("expiresMs", "1700001800002".into()),
            ("traceparent", TP.into()),
        ]
    }

    fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        v.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn every_kind_has_its_topic_and_parses_back() {
        let topics: Vec<&str> = EventKind::ALL.iter().map(|k| k.topic()).collect();
        assert_eq!(topics, crate::outbox::kafka::TOPICS);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.topic()), Some(kind));
        }
    }

    #[test]
    fn a_payment_event_needs_its_payment_id() {
        let mut fields = acquired();
        fields[0].1 = "payment-completed".into();
        let err = OutboxEvent::from_entry(&entry(&as_refs(&fields))).unwrap_err();
        assert!(err.contains("paymentId"), "{err}");
        fields.push(("paymentId", Uuid::nil().to_string()));
        fields.push(("amount", "12900".into()));
        let e = OutboxEvent::from_entry(&entry(&as_refs(&fields))).unwrap();
        assert_eq!(
            (e.kind, e.payment_id, e.amount),
            (EventKind::PaymentCompleted, Some(Uuid::nil()), Some(12900))
        );
    }

    #[test]
    fn parses_a_grant() {
        let e = OutboxEvent::from_entry(&entry(&as_refs(&acquired()))).unwrap();
        assert_eq!(e.kind, EventKind::SlotAcquired);
        assert_eq!(e.arrival_us, Some(1_700_000_000_000_001));
        assert_eq!(e.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(e.kind.topic(), "slot-acquired");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "slot-acquired");
        assert_eq!(json["schemaVersion"], 1);
        assert!(json.get("entryId").is_none());
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            ("slotId", "nope", "slotId"),
            ("type", "slot-stolen", "slot-stolen"),
            ("v", "2", "version"),
            ("atMs", "x", "atMs"),
        ];
        for (field, value, says) in cases {
            let mut fields = acquired();
            fields.iter_mut().find(|(k, _)| *k == field).unwrap().1 = value.into();
            let err = OutboxEvent::from_entry(&entry(&as_refs(&fields))).unwrap_err();
            assert!(err.contains(says), "{field}: {err}");
        }
        let missing: Vec<_> = acquired().into_iter().filter(|(k, _)| *k != "eventId").collect();
        assert!(
            OutboxEvent::from_entry(&entry(&as_refs(&missing))).unwrap_err().contains("eventId")
        );
    }
}
