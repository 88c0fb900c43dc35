//! The persister's writer: applies outbox events to PostgreSQL, idempotently by event id.
//!
//! A batch is one transaction. Each event first claims its row in `slot_audit_log` (primary
//! key = event id); an event already there was applied before and is skipped, so delivery
//! may repeat freely. The relay calls this directly when no broker is configured; the Kafka
//! consumer (issue #3) calls the same writer.

use crate::events::{EventKind, OutboxEvent};
use anyhow::{Context, bail};
use sqlx::PgPool;
use time::OffsetDateTime;

#[derive(Clone)]
pub struct PgWriter {
    db: PgPool,
}

fn at_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl PgWriter {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Applies a batch in order; returns how many events were new.
    pub async fn apply(&self, events: &[OutboxEvent]) -> anyhow::Result<u64> {
        let mut tx = self.db.begin().await.context("beginning the persister transaction")?;
        let mut applied = 0;
        for event in events {
            let (from, to) = match event.kind {
                EventKind::SlotAcquired => (None, Some("ACTIVE")),
                EventKind::SlotExpired => (Some("ACTIVE"), Some("EXPIRED")),
                EventKind::SlotExpiringSoon => (Some("ACTIVE"), None),
            };
            let claimed = sqlx::query(
                "INSERT INTO slot_audit_log (event_id, event_type, slot_id, product_id, \
                 from_status, to_status, trace_id, occurred_at, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event.event_id)
            .bind(event.kind.topic())
            .bind(event.slot_id)
            .bind(event.product_id)
            .bind(from)
            .bind(to)
            .bind(event.trace_id())
            .bind(at_ms(event.at_ms))
            .bind(sqlx::types::Json(event))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("recording event {}", event.event_id))?
            .rows_affected();
            if claimed == 0 {
                continue;
            }
            applied += 1;
            match event.kind {
                EventKind::SlotAcquired => {
                    let (Some(arrival_us), Some(expires_ms)) = (event.arrival_us, event.expires_ms)
                    else {
                        bail!("slot-acquired {} lacks arrivalUs or expiresMs", event.event_id);
                    };
                    sqlx::query(
                        "INSERT INTO purchase_slots (slot_id, product_id, user_id, status, \
                         arrival_at, acquired_at, expires_at, trace_id) \
                         VALUES ($1, $2, $3, 'ACTIVE', $4, $5, $6, $7) \
                         ON CONFLICT (slot_id) DO NOTHING",
                    )
                    .bind(event.slot_id)
                    .bind(event.product_id)
                    .bind(event.user_id)
                    .bind(at_ms(0) + time::Duration::microseconds(arrival_us))
                    .bind(at_ms(event.at_ms))
                    .bind(at_ms(expires_ms))
                    .bind(event.trace_id())
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("inserting slot {}", event.slot_id))?;
                }
                EventKind::SlotExpired => {
                    let updated = sqlx::query(
                        "UPDATE purchase_slots SET status = 'EXPIRED', expired_at = $2, \
                         updated_at = now() WHERE slot_id = $1 AND status = 'ACTIVE'",
                    )
                    .bind(event.slot_id)
                    .bind(at_ms(event.at_ms))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if updated == 0 {
                        // Its grant has not been applied yet (another relay holds it):
                        // fail the batch so it is retried after the grant.
                        bail!("slot {} is not ACTIVE in PostgreSQL yet", event.slot_id);
                    }
                }
                EventKind::SlotExpiringSoon => {}
            }
        }
        tx.commit().await.context("committing the persister transaction")?;
        Ok(applied)
    }
}
