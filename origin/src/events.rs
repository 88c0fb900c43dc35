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
}

impl EventKind {
    /// The Kafka topic of this kind (DESIGN.md, Events).
    pub fn topic(self) -> &'static str {
        match self {
            Self::SlotAcquired => "slot-acquired",
            Self::SlotExpired => "slot-expired",
            Self::SlotExpiringSoon => "slot-expiring-soon",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "slot-acquired" => Self::SlotAcquired,
            "slot-expired" => Self::SlotExpired,
            "slot-expiring-soon" => Self::SlotExpiringSoon,
            _ => return None,
        })
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
        let kind_text = text("type")?;
        let kind =
            EventKind::parse(&kind_text).ok_or_else(|| format!("unknown type `{kind_text}`"))?;
        let schema_version = int("v")?.ok_or("missing field `v`")? as u32;
        if schema_version != 1 {
            return Err(format!("unsupported schema version {schema_version}"));
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
