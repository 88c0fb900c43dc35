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

use crate::clock::{at_ms, at_us, ms_of};
use crate::metrics::{DeadLetterLabels, Metrics};
use crate::outbox::events::{EventKind, OutboxEvent};
use crate::pg;
use crate::pg::outbox::AuditEntry;
use crate::pg::purchases::NewPurchase;
use crate::pg::slots::NewSlot;
use crate::status::{PaymentStatus, SlotStatus};
use anyhow::{Context, bail};
use sqlx::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

#[derive(Clone)]
pub struct PgWriter {
    db: PgPool,
    metrics: Option<Metrics>,
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
        Self { db, metrics: None }
    }

    /// Records what it applies and sets aside in the origin's `/metrics`.
    pub fn counting(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
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
        // One span per event written (`persister.write`), continuing the event's trace.
        let spans: Vec<tracing::Span> = events
            .iter()
            .map(|event| {
                let span = tracing::info_span!(
                    "persister.write",
                    event = event.kind.topic(),
                    product_id = %event.product_id,
                    source,
                );
                crate::telemetry::continue_from(&span, &event.traceparent);
                span
            })
            .collect();
        let delivery = self.apply_or_set_aside(events, source).await;
        drop(spans);
        let delivery = delivery?;
        if let Some(metrics) = &self.metrics {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let oldest = events.iter().map(|e| e.at_ms).min();
            metrics.persisted_batch(delivery.applied, oldest, now_ms);
        }
        Ok(delivery)
    }

    async fn apply_or_set_aside(
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
        let (event_id, product_id) = (event.map(|e| e.event_id), event.map(|e| e.product_id));
        pg::outbox::dead_letter(&self.db, event_id, product_id, source, payload, reason)
            .await
            .context("recording a dead letter")?;
        if let Some(metrics) = &self.metrics {
            metrics.dead_letters.get_or_create(&DeadLetterLabels { source }).inc();
        }
        Ok(())
    }

    /// Applies a batch; returns how many events were applied (parked ones count once they
    /// are applied, in this batch or a later one).
    ///
    /// The common case costs a few statements per batch, not per event: one lookup of which
    /// events were applied before, and for the grants that nothing in PostgreSQL or in the
    /// batch can conflict with ([`Batch::plan`]), one lookup of their buyers' live slots and
    /// one multi-row insert into each table. Every other event is applied one at a time, in
    /// the batch's order, as before.
    pub async fn apply(&self, events: &[OutboxEvent]) -> anyhow::Result<u64> {
        let mut tx = self.db.begin().await.context("beginning the persister transaction")?;
        let plan = Batch::plan(&mut tx, events).await?;
        let mut applied = 0;
        if !plan.grants.is_empty() {
            insert_grants(&mut tx, &plan.grants).await?;
            applied += plan.grants.len() as u64;
            let slots = plan.grants.iter().map(|e| e.slot_id).collect();
            applied += wake(&mut tx, slots).await?;
        }
        for event in plan.rest {
            if let Applied::Done { slot } = apply_one(&mut tx, event).await? {
                applied += 1;
                applied += wake(&mut tx, vec![slot]).await?;
            }
        }
        tx.commit().await.context("committing the persister transaction")?;
        Ok(applied)
    }
}

/// A batch split into grants that go in together and the events applied one by one.
#[derive(Debug, Default)]
struct Batch<'a> {
    /// New grants whose buyer holds no other live slot of the product, in PostgreSQL or
    /// in this batch.
    grants: Vec<&'a OutboxEvent>,
    /// The other events not applied before, in the batch's order.
    rest: Vec<&'a OutboxEvent>,
}

impl<'a> Batch<'a> {
    async fn plan(tx: &mut PgConnection, events: &'a [OutboxEvent]) -> anyhow::Result<Self> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let seen: HashSet<Uuid> = pg::outbox::applied_of(&mut *tx, &ids)
            .await
            .context("looking up the batch's events")?
            .into_iter()
            .collect();
        let mut per_buyer: HashMap<(Uuid, Uuid), usize> = HashMap::new();
        for e in events.iter().filter(|e| e.kind == EventKind::SlotAcquired) {
            *per_buyer.entry((e.product_id, e.user_id)).or_default() += 1;
        }
        let mut once = HashSet::new();
        let (mut candidates, mut rest) = (Vec::new(), Vec::new());
        for event in events {
            if seen.contains(&event.event_id) {
                continue;
            }
            let simple = event.kind == EventKind::SlotAcquired
                && event.arrival_us.is_some()
                && event.expires_ms.is_some()
                && per_buyer.get(&(event.product_id, event.user_id)) == Some(&1)
                && once.insert(event.event_id);
            if simple { candidates.push(event) } else { rest.push(event) }
        }
        if candidates.is_empty() {
            return Ok(Self { grants: Vec::new(), rest });
        }
        let products: Vec<Uuid> = candidates.iter().map(|e| e.product_id).collect();
        let users: Vec<Uuid> = candidates.iter().map(|e| e.user_id).collect();
        let live: HashMap<(Uuid, Uuid), Uuid> = pg::slots::live_of(&mut *tx, &products, &users)
            .await
            .context("looking up the batch's buyers")?
            .into_iter()
            .map(|(product, user, slot)| ((product, user), slot))
            .collect();
        let (grants, blocked): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|e| {
            live.get(&(e.product_id, e.user_id)).is_none_or(|slot| *slot == e.slot_id)
        });
        if !blocked.is_empty() {
            // Their order against the other events matters: back into the batch's order.
            rest.extend(blocked);
            let position: HashMap<Uuid, usize> =
                events.iter().enumerate().map(|(i, e)| (e.event_id, i)).collect();
            rest.sort_by_key(|e| position[&e.event_id]);
        }
        Ok(Self { grants, rest })
    }
}

/// Applies what was parked for `woken` slots, and transitively for the slots that changes.
async fn wake(tx: &mut PgConnection, mut woken: Vec<Uuid>) -> anyhow::Result<u64> {
    let mut applied = 0;
    while !woken.is_empty() {
        let mut parked: Vec<OutboxEvent> =
            pg::outbox::unpark_many(&mut *tx, &woken).await.context("unparking events")?;
        woken.clear();
        parked.sort_by_key(|e| e.at_ms);
        for event in &parked {
            if let Applied::Done { slot } = apply_one(tx, event).await? {
                applied += 1;
                woken.push(slot);
            }
        }
    }
    Ok(applied)
}

/// Records new grants and their audit entries, one statement per table.
async fn insert_grants(tx: &mut PgConnection, grants: &[&OutboxEvent]) -> anyhow::Result<()> {
    let traces: Vec<String> = grants.iter().map(|e| e.trace_id()).collect();
    let mut slots = Vec::with_capacity(grants.len());
    let mut entries = Vec::with_capacity(grants.len());
    let mut payloads = Vec::with_capacity(grants.len());
    for (event, trace_id) in grants.iter().zip(&traces) {
        slots.push(new_slot(event, None, trace_id)?);
        entries.push(audit_entry(event, trace_id));
        payloads.push(serde_json::to_string(event)?);
    }
    pg::slots::insert_active(&mut *tx, &slots).await.context("inserting a batch of grants")?;
    pg::outbox::log_many(&mut *tx, &entries, &payloads)
        .await
        .context("recording a batch of grants")?;
    Ok(())
}

async fn park(
    tx: &mut PgConnection,
    event: &OutboxEvent,
    waits_for: Uuid,
) -> anyhow::Result<Applied> {
    pg::outbox::park(&mut *tx, event.event_id, waits_for, event)
        .await
        .with_context(|| format!("parking event {}", event.event_id))?;
    tracing::debug!(event_id = %event.event_id, %waits_for, "event parked");
    Ok(Applied::Parked)
}

async fn apply_one(tx: &mut PgConnection, event: &OutboxEvent) -> anyhow::Result<Applied> {
    let seen = pg::outbox::applied(&mut *tx, event.event_id)
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
            let blocking =
                pg::slots::other_live(&mut *tx, event.product_id, event.user_id, slot).await?;
            if let Some((other, other_at)) = blocking {
                if (ms_of(other_at), other) < (event.at_ms, slot) {
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
            let status = pg::slots::status(&mut *tx, slot).await?;
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
                    pg::slots::expire(&mut *tx, slot, at_ms(event.at_ms)).await?;
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
            if !pg::slots::exists(&mut *tx, slot).await? {
                return park(tx, event, slot).await;
            }
            let purchase = NewPurchase {
                payment_id,
                slot_id: slot,
                product_id: event.product_id,
                user_id: event.user_id,
                amount,
                currency,
                method,
                idempotency_key: key,
                trace_id: &event.trace_id(),
                created_at: at_ms(event.at_ms),
            };
            pg::purchases::insert(&mut *tx, purchase)
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
                let at = at_ms(event.at_ms);
                if !pg::slots::complete(&mut *tx, slot, at, payment_id, from).await? {
                    return park(tx, event, slot).await;
                }
            }
            let (reason, at) = (event.reason.as_deref(), at_ms(event.at_ms));
            if !pg::purchases::transition(&mut *tx, payment_id, from, to, reason, at).await? {
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
    let trace_id = event.trace_id();
    pg::outbox::log(&mut *tx, audit_entry(event, &trace_id), event)
        .await
        .with_context(|| format!("recording event {}", event.event_id))?;
    Ok(())
}

fn audit_entry<'a>(event: &'a OutboxEvent, trace_id: &'a str) -> AuditEntry<'a> {
    let (from, to) = transition(event.kind);
    AuditEntry {
        event_id: event.event_id,
        event_type: event.kind.topic(),
        slot_id: event.slot_id,
        product_id: event.product_id,
        payment_id: event.payment_id,
        from_status: from,
        to_status: to,
        trace_id,
        occurred_at: at_ms(event.at_ms),
    }
}

/// Inserts a granted slot: ACTIVE, or EXPIRED at `expired_ms` when its end is known.
async fn insert_slot(
    tx: &mut PgConnection,
    event: &OutboxEvent,
    expired_ms: Option<i64>,
) -> anyhow::Result<()> {
    let trace_id = event.trace_id();
    let slot = new_slot(event, expired_ms, &trace_id)?;
    pg::slots::insert(&mut *tx, slot)
        .await
        .with_context(|| format!("inserting slot {}", event.slot_id))?;
    Ok(())
}

/// The row a `slot-acquired` event records: ACTIVE, or EXPIRED at `expired_ms`.
fn new_slot<'a>(
    event: &OutboxEvent,
    expired_ms: Option<i64>,
    trace_id: &'a str,
) -> anyhow::Result<NewSlot<'a>> {
    let (Some(arrival_us), Some(expires_ms)) = (event.arrival_us, event.expires_ms) else {
        bail!("slot-acquired {} lacks arrivalUs or expiresMs", event.event_id);
    };
    Ok(NewSlot {
        slot_id: event.slot_id,
        product_id: event.product_id,
        user_id: event.user_id,
        arrival_at: at_us(arrival_us),
        acquired_at: at_ms(event.at_ms),
        expires_at: at_ms(expires_ms),
        expired_at: expired_ms.map(at_ms),
        trace_id,
    })
}

/// Removes and returns the parked event of `kind` waiting for `slot`, if there is one.
async fn take_parked(
    tx: &mut PgConnection,
    slot: Uuid,
    kind: EventKind,
) -> anyhow::Result<Option<OutboxEvent>> {
    pg::outbox::take_parked(&mut *tx, slot, kind.topic()).await.context("taking a parked event")
}
