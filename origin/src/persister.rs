//! The persister's writer: applies outbox events to PostgreSQL, idempotently by event id and
//! in whatever order they arrive.
//!
//! A batch is one transaction. An event whose id is already in `slot_audit_log` was applied
//! before and is skipped, so delivery may repeat freely. Kafka keeps order within one
//! topic's partition only, so an event may arrive before the one it depends on (a
//! `slot-expired` before its `slot-acquired`, a grant before the expiry that freed the
//! buyer's previous slot): such an event is parked in `persister_parked` under the slot it
//! waits for, and applied, in the same transaction, as soon as that slot changes. Nothing
//! blocks the stream and nothing is dropped.
//!
//! A poison event (one PostgreSQL refuses for good: a constraint, malformed data) would fail
//! its whole batch again and again and stop every event behind it. So a batch that fails
//! for a reason that is not transient is applied again one event at a time; an event that
//! still fails after [`POISON_TRIES`] tries goes to `dead_letters` with the reason
//! ([`PgWriter::deliver`]), is counted in `flashgate_dead_letters_total`, is reported by
//! `flashgate check`, and the stream moves on. PostgreSQL being unreachable is transient:
//! the batch is retried whole, nothing is set aside.
//!
//! The relay calls this directly when no broker is configured; the Kafka persister calls
//! the same writer. Slots go to `purchase_slots`, payments to `purchases`, every event to
//! `slot_audit_log`.

use crate::events::{EventKind, OutboxEvent};
use crate::metrics::DeadLetterLabels;
use crate::status::{PaymentStatus, SlotStatus};
use anyhow::{Context, bail};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone)]
pub struct PgWriter {
    db: PgPool,
    dead_letters: Option<Family<DeadLetterLabels, Counter>>,
}

/// How many times an event that fails on its own is tried before it is dead-lettered.
pub const POISON_TRIES: u32 = 3;

/// What [`PgWriter::deliver`] did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub applied: u64,
    /// Events set aside in `dead_letters`: (event id, reason).
    pub dead: Vec<(Uuid, String)>,
}

/// Whether PostgreSQL failed for a reason that passes (unreachable, overloaded, a
/// serialization conflict) rather than because of the event.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| match cause.downcast_ref::<sqlx::Error>() {
        Some(
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_),
        ) => true,
        Some(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
            ["08", "40", "53", "57", "58"].iter().any(|class| c.starts_with(class))
        }),
        _ => false,
    })
}

fn at_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Changed state (and was logged); events waiting for `slot` may now apply.
    Done { slot: Uuid },
    /// Applied before.
    Duplicate,
    /// Waits for another change of `slot`.
    Parked,
}

/// The audit log's `from_status`/`to_status`: the slot's for slot-* events, the payment's for
/// payment-* events.
fn transition(kind: EventKind) -> (Option<&'static str>, Option<&'static str>) {
    use PaymentStatus as P;
    use SlotStatus as S;
    let slot = |from: Option<S>, to: Option<S>| (from.map(S::as_str), to.map(S::as_str));
    let payment = |from: Option<P>, to: Option<P>| (from.map(P::as_str), to.map(P::as_str));
    match kind {
        EventKind::SlotAcquired => slot(None, Some(S::Active)),
        EventKind::SlotExpired => slot(Some(S::Active), Some(S::Expired)),
        EventKind::SlotExpiringSoon => slot(Some(S::Active), None),
        EventKind::PaymentCreated => payment(None, Some(P::Pending)),
        EventKind::PaymentCompleted => payment(Some(P::Pending), Some(P::Completed)),
        EventKind::PaymentFailed => payment(Some(P::Pending), Some(P::Failed)),
        EventKind::PaymentRefundRequired => payment(Some(P::Pending), Some(P::RefundRequired)),
        EventKind::PaymentRefunded => payment(Some(P::RefundRequired), Some(P::Refunded)),
    }
}

impl PgWriter {
    pub fn new(db: PgPool) -> Self {
        Self { db, dead_letters: None }
    }

    /// Counts dead letters in `family` (the origin's `/metrics`).
    pub fn counting(mut self, family: Family<DeadLetterLabels, Counter>) -> Self {
        self.dead_letters = Some(family);
        self
    }

    /// Applies a batch, setting poison events aside (see the module docs); `source` names
    /// the path (`relay` or `kafka`). Fails only for transient reasons, when the whole
    /// batch should be tried again.
    pub async fn deliver(
        &self,
        events: &[OutboxEvent],
        source: &'static str,
    ) -> anyhow::Result<Delivery> {
        let first = match self.apply(events).await {
            Ok(applied) => return Ok(Delivery { applied, dead: Vec::new() }),
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(error = ?first, events = events.len(), "a batch was refused; applying its events one by one");
        let mut delivery = Delivery::default();
        for event in events {
            let mut tries = 0;
            loop {
                tries += 1;
                match self.apply(std::slice::from_ref(event)).await {
                    Ok(n) => {
                        delivery.applied += n;
                        break;
                    }
                    Err(e) if is_transient(&e) => return Err(e),
                    Err(e) if tries < POISON_TRIES => {
                        tracing::debug!(event_id = %event.event_id, error = ?e, "retrying an event");
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        self.dead_letter(
                            Some(event),
                            &serde_json::to_string(event)?,
                            &reason,
                            source,
                        )
                        .await?;
                        delivery.dead.push((event.event_id, reason));
                        break;
                    }
                }
            }
        }
        Ok(delivery)
    }

    /// Records a poison event (or a payload that is not an event at all) in `dead_letters`.
    pub async fn dead_letter(
        &self,
        event: Option<&OutboxEvent>,
        payload: &str,
        reason: &str,
        source: &'static str,
    ) -> anyhow::Result<()> {
        tracing::error!(event_id = ?event.map(|e| e.event_id), source, reason, "event dead-lettered");
        sqlx::query(
            "INSERT INTO dead_letters (event_id, product_id, source, payload, reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.map(|e| e.event_id))
        .bind(event.map(|e| e.product_id))
        .bind(source)
        .bind(payload)
        .bind(reason)
        .execute(&self.db)
        .await
        .context("recording a dead letter")?;
        if let Some(family) = &self.dead_letters {
            family.get_or_create(&DeadLetterLabels { source }).inc();
        }
        Ok(())
    }

    /// Applies a batch; returns how many events were applied (parked ones count once they
    /// are applied, in this batch or a later one).
    pub async fn apply(&self, events: &[OutboxEvent]) -> anyhow::Result<u64> {
        let mut tx = self.db.begin().await.context("beginning the persister transaction")?;
        let mut applied = 0;
        for event in events {
            let mut woken = match apply_one(&mut tx, event).await? {
                Applied::Done { slot } => {
                    applied += 1;
                    vec![slot]
                }
                Applied::Duplicate | Applied::Parked => continue,
            };
            // Whatever waited for a changed slot gets another chance, transitively.
            while let Some(slot) = woken.pop() {
                let parked: Vec<(Uuid, sqlx::types::Json<OutboxEvent>)> = sqlx::query_as(
                    "DELETE FROM persister_parked WHERE waits_for = $1 RETURNING event_id, payload",
                )
                .bind(slot)
                .fetch_all(&mut *tx)
                .await
                .context("unparking events")?;
                let mut parked: Vec<OutboxEvent> = parked.into_iter().map(|(_, e)| e.0).collect();
                parked.sort_by_key(|e| e.at_ms);
                for event in &parked {
                    if let Applied::Done { slot } = apply_one(&mut tx, event).await? {
                        applied += 1;
                        woken.push(slot);
                    }
                }
            }
        }
        tx.commit().await.context("committing the persister transaction")?;
        Ok(applied)
    }
}

async fn park(
    tx: &mut PgConnection,
    event: &OutboxEvent,
    waits_for: Uuid,
) -> anyhow::Result<Applied> {
    sqlx::query(
        "INSERT INTO persister_parked (event_id, waits_for, payload) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.event_id)
    .bind(waits_for)
    .bind(sqlx::types::Json(event))
    .execute(&mut *tx)
    .await
    .with_context(|| format!("parking event {}", event.event_id))?;
    tracing::debug!(event_id = %event.event_id, %waits_for, "event parked");
    Ok(Applied::Parked)
}

async fn apply_one(tx: &mut PgConnection, event: &OutboxEvent) -> anyhow::Result<Applied> {
    let seen: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM slot_audit_log WHERE event_id = $1)")
            .bind(event.event_id)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("looking up event {}", event.event_id))?;
    if seen {
        return Ok(Applied::Duplicate);
    }
    let slot = event.slot_id;
    match event.kind {
        EventKind::SlotAcquired => {
            if event.arrival_us.is_none() || event.expires_ms.is_none() {
                bail!("slot-acquired {} lacks arrivalUs or expiresMs", event.event_id);
            }
            // Another live slot of this buyer: if older, its end has not arrived yet; if
            // newer, this one has ended (the buyer could not buy again otherwise) and waits
            // for its own expiry event.
            let blocking: Option<(Uuid, OffsetDateTime)> = sqlx::query_as(
                "SELECT slot_id, acquired_at FROM purchase_slots WHERE product_id = $1 \
                 AND user_id = $2 AND status IN ('ACTIVE', 'COMPLETED') AND slot_id <> $3",
            )
            .bind(event.product_id)
            .bind(event.user_id)
            .bind(slot)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((other, other_at)) = blocking {
                let other_ms = (other_at.unix_timestamp_nanos() / 1_000_000) as i64;
                if (other_ms, other) < (event.at_ms, slot) {
                    return park(tx, event, other).await;
                }
                let expiry = take_parked(tx, slot, EventKind::SlotExpired).await?;
                let Some(expiry) = expiry else { return park(tx, event, slot).await };
                insert_slot(tx, event, Some(expiry.at_ms)).await?;
                log(tx, &expiry).await?;
            } else {
                insert_slot(tx, event, None).await?;
            }
        }
        EventKind::SlotExpired | EventKind::SlotExpiringSoon => {
            let status: Option<SlotStatus> =
                sqlx::query_scalar("SELECT status FROM purchase_slots WHERE slot_id = $1")
                    .bind(slot)
                    .fetch_optional(&mut *tx)
                    .await?;
            match (event.kind, status) {
                (EventKind::SlotExpired, None) => {
                    // Its grant may be parked behind the buyer's newer slot: then both
                    // apply now, the slot recorded as it ended.
                    let grant = take_parked(tx, slot, EventKind::SlotAcquired).await?;
                    let Some(grant) = grant else { return park(tx, event, slot).await };
                    insert_slot(tx, &grant, Some(event.at_ms)).await?;
                    log(tx, &grant).await?;
                }
                (_, None) => return park(tx, event, slot).await,
                (EventKind::SlotExpired, Some(SlotStatus::Active)) => {
                    sqlx::query(
                        "UPDATE purchase_slots SET status = 'EXPIRED', expired_at = $2, \
                         updated_at = now() WHERE slot_id = $1",
                    )
                    .bind(slot)
                    .bind(at_ms(event.at_ms))
                    .execute(&mut *tx)
                    .await?;
                }
                (EventKind::SlotExpired, Some(other)) => {
                    // Recorded, not applied: blocking the stream on it would lose more.
                    tracing::error!(%slot, status = %other, event_id = %event.event_id,
                        "an expiry for a slot that is no longer ACTIVE; logged only");
                }
                _ => {} // a reminder only needs its slot to exist
            }
        }
        EventKind::PaymentCreated => {
            let (Some(payment_id), Some(amount), Some(currency), Some(method), Some(key)) = (
                event.payment_id,
                event.amount,
                event.currency.as_deref(),
                event.method.as_deref(),
                event.idempotency_key.as_deref(),
            ) else {
                bail!("payment-created {} lacks a payment field", event.event_id);
            };
            let slot_known: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM purchase_slots WHERE slot_id = $1)",
            )
            .bind(slot)
            .fetch_one(&mut *tx)
            .await?;
            if !slot_known {
                return park(tx, event, slot).await;
            }
            sqlx::query(
                "INSERT INTO purchases (payment_id, slot_id, product_id, user_id, amount, \
                 currency, method, status, idempotency_key, trace_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8, $9, $10) \
                 ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(payment_id)
            .bind(slot)
            .bind(event.product_id)
            .bind(event.user_id)
            .bind(amount)
            .bind(currency)
            .bind(method)
            .bind(key)
            .bind(event.trace_id())
            .bind(at_ms(event.at_ms))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("inserting payment {payment_id}"))?;
        }
        EventKind::PaymentCompleted
        | EventKind::PaymentFailed
        | EventKind::PaymentRefundRequired
        | EventKind::PaymentRefunded => {
            let Some(payment_id) = event.payment_id else {
                bail!("{} {} lacks paymentId", event.kind.topic(), event.event_id);
            };
            let (from, to) = transition(event.kind);
            let (from, to) = (from.unwrap_or_default(), to.unwrap_or_default());
            if event.kind == EventKind::PaymentCompleted {
                let updated = sqlx::query(
                    "UPDATE purchase_slots SET status = 'COMPLETED', completed_at = $2, \
                     updated_at = now() WHERE slot_id = $1 AND status = 'ACTIVE' \
                     AND EXISTS (SELECT 1 FROM purchases WHERE payment_id = $3 AND status = $4)",
                )
                .bind(slot)
                .bind(at_ms(event.at_ms))
                .bind(payment_id)
                .bind(from)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return park(tx, event, slot).await;
                }
            }
            let updated = sqlx::query(
                "UPDATE purchases SET status = $3, failure_reason = coalesce($4, failure_reason), \
                 settled_at = coalesce(settled_at, $5), updated_at = now() \
                 WHERE payment_id = $1 AND status = $2",
            )
            .bind(payment_id)
            .bind(from)
            .bind(to)
            .bind(event.reason.as_deref())
            .bind(at_ms(event.at_ms))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                if event.kind == EventKind::PaymentCompleted {
                    bail!("payment {payment_id} changed under the slot's completion");
                }
                return park(tx, event, slot).await;
            }
        }
    }
    log(tx, event).await?;
    Ok(Applied::Done { slot })
}

/// Records an applied event in the audit log (its id is what makes it applied once).
async fn log(tx: &mut PgConnection, event: &OutboxEvent) -> anyhow::Result<()> {
    let (from, to) = transition(event.kind);
    sqlx::query(
        "INSERT INTO slot_audit_log (event_id, event_type, slot_id, product_id, from_status, \
         to_status, trace_id, occurred_at, payload, payment_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    .bind(event.payment_id)
    .execute(&mut *tx)
    .await
    .with_context(|| format!("recording event {}", event.event_id))?;
    Ok(())
}

/// Inserts a granted slot: ACTIVE, or EXPIRED at `expired_ms` when its end is known.
async fn insert_slot(
    tx: &mut PgConnection,
    event: &OutboxEvent,
    expired_ms: Option<i64>,
) -> anyhow::Result<()> {
    let (Some(arrival_us), Some(expires_ms)) = (event.arrival_us, event.expires_ms) else {
        bail!("slot-acquired {} lacks arrivalUs or expiresMs", event.event_id);
    };
    sqlx::query(
        "INSERT INTO purchase_slots (slot_id, product_id, user_id, status, arrival_at, \
         acquired_at, expires_at, expired_at, trace_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (slot_id) DO NOTHING",
    )
    .bind(event.slot_id)
    .bind(event.product_id)
    .bind(event.user_id)
    .bind(if expired_ms.is_some() { SlotStatus::Expired } else { SlotStatus::Active })
    .bind(at_ms(0) + time::Duration::microseconds(arrival_us))
    .bind(at_ms(event.at_ms))
    .bind(at_ms(expires_ms))
    .bind(expired_ms.map(at_ms))
    .bind(event.trace_id())
    .execute(&mut *tx)
    .await
    .with_context(|| format!("inserting slot {}", event.slot_id))?;
    Ok(())
}

/// Removes and returns the parked event of `kind` waiting for `slot`, if there is one.
async fn take_parked(
    tx: &mut PgConnection,
    slot: Uuid,
    kind: EventKind,
) -> anyhow::Result<Option<OutboxEvent>> {
    let parked: Option<sqlx::types::Json<OutboxEvent>> = sqlx::query_scalar(
        "DELETE FROM persister_parked WHERE event_id = (SELECT event_id FROM persister_parked \
         WHERE waits_for = $1 AND payload->>'type' = $2 LIMIT 1) RETURNING payload",
    )
    .bind(slot)
    .bind(kind.topic())
    .fetch_optional(&mut *tx)
    .await
    .context("taking a parked event")?;
    Ok(parked.map(|p| p.0))
}
