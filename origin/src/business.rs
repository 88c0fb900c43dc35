//! Business events in the logs: one JSON line per thing a buyer or an operator would ask
//! about — `SLOT_REQUESTED`, `SLOT_ACQUIRED`, `SLOT_REFUSED` (with its reason),
//! `SLOT_EXPIRED`, `PAYMENT_CREATED`, `PAYMENT_COMPLETED`, `PAYMENT_FAILED`,
//! `PAYMENT_REFUND_REQUIRED` — each with the trace id, the product and the buyer's id (never
//! a token). They are tracing events with the target [`TARGET`], which
//! [`crate::telemetry::init`] always writes as JSON, whatever the other logs' format.
//!
//! Where they come from:
//! - a request and a refusal, from the acquisition handler, **sampled**: under a storm these
//!   are as many as the requests, so at most [`Sampler::PER_SECOND`] of each kind are
//!   written per second and the next line written says how many were left out
//!   (`suppressed`); the counters in `/metrics` keep the exact figures;
//! - every state change, from the outbox relay as it delivers the event
//!   ([`log_outbox_event`]): the one place every grant, expiry (the worker's and the lazy
//!   ones) and payment outcome (webhook or reconciliation) passes. Delivery is
//!   at-least-once, so a line can repeat after a crash; `event_id` tells repeats apart.

use crate::outbox::events::{EventKind, OutboxEvent};
use flashgate_core::trace::TraceContext;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// The tracing target of business events.
pub const TARGET: &str = "flashgate::business";

/// At most [`Sampler::PER_SECOND`] events per second; counts what it leaves out.
#[derive(Debug, Default)]
pub struct Sampler {
    second: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

impl Sampler {
    pub const PER_SECOND: u64 = 100;

    /// Whether to write an event at `now_s`; `Some(n)`: write it, noting `n` left out since
    /// the last one written.
    pub fn admit(&self, now_s: u64) -> Option<u64> {
        let second = self.second.load(Ordering::Relaxed);
        if second != now_s
            && self
                .second
                .compare_exchange(second, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < Self::PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The sampled business events of acquisitions (one per origin).
#[derive(Debug, Default)]
pub struct AcquisitionLog {
    requested: Sampler,
    refused: Sampler,
}

impl AcquisitionLog {
    pub fn requested(&self, now_ms: i64, trace_id: &str, product_id: Uuid, buyer_id: Uuid) {
        if let Some(suppressed) = self.requested.admit(now_ms.max(0) as u64 / 1000) {
            tracing::info!(
                target: TARGET,
                event = "SLOT_REQUESTED",
                trace_id,
                %product_id,
                %buyer_id,
                suppressed,
            );
        }
    }

    pub fn refused(
        &self,
        now_ms: i64,
        trace_id: &str,
        product_id: Uuid,
        buyer_id: Uuid,
        reason: &str,
    ) {
        if let Some(suppressed) = self.refused.admit(now_ms.max(0) as u64 / 1000) {
            tracing::info!(
                target: TARGET,
                event = "SLOT_REFUSED",
                reason,
                trace_id,
                %product_id,
                %buyer_id,
                suppressed,
            );
        }
    }
}

/// The business event an outbox event is, if it is one (a reminder or a confirmed refund
/// is not).
pub fn event_name(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::SlotAcquired => Some("SLOT_ACQUIRED"),
        EventKind::SlotExpired => Some("SLOT_EXPIRED"),
        EventKind::PaymentCreated => Some("PAYMENT_CREATED"),
        EventKind::PaymentCompleted => Some("PAYMENT_COMPLETED"),
        EventKind::PaymentFailed => Some("PAYMENT_FAILED"),
        EventKind::PaymentRefundRequired => Some("PAYMENT_REFUND_REQUIRED"),
        EventKind::SlotExpiringSoon | EventKind::PaymentRefunded => None,
    }
}

/// Writes the business event of a delivered outbox event (all of them: state changes are
/// bounded by the stock, so they are never sampled).
pub fn log_outbox_event(event: &OutboxEvent) {
    let Some(name) = event_name(event.kind) else { return };
    let trace_id =
        TraceContext::parse(&event.traceparent).map(|t| t.trace_id_hex()).unwrap_or_default();
    tracing::info!(
        target: TARGET,
        event = name,
        trace_id,
        product_id = %event.product_id,
        buyer_id = %event.user_id,
        slot_id = %event.slot_id,
        payment_id = event.payment_id.map(|p| p.to_string()),
        reason = event.reason.as_deref(),
        event_id = %event.event_id,
        at_ms = event.at_ms,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_writes_a_budget_per_second_and_counts_the_rest() {
        let s = Sampler::default();
        let written = (0..250).filter(|_| s.admit(7).is_some()).count() as u64;
        assert_eq!(written, Sampler::PER_SECOND);
        // The next second's first line says how many were left out.
        assert_eq!(s.admit(8), Some(250 - Sampler::PER_SECOND));
        assert_eq!(s.admit(8), Some(0));
    }

    #[test]
    fn reminders_and_refunds_are_not_business_events() {
        assert_eq!(event_name(EventKind::SlotAcquired), Some("SLOT_ACQUIRED"));
        assert_eq!(event_name(EventKind::SlotExpiringSoon), None);
        assert_eq!(event_name(EventKind::PaymentRefunded), None);
        let names: Vec<_> = EventKind::ALL.iter().filter_map(|k| event_name(*k)).collect();
        assert_eq!(names.len(), 6);
    }
}

#[cfg(test)]
mod json_lines {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects what the business layer writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn captured(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(crate::telemetry::business_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
    }

    #[test]
    fn a_delivered_grant_is_one_json_line_with_trace_product_and_buyer() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let event = OutboxEvent {
            entry_id: String::new(),
            kind: EventKind::SlotAcquired,
            schema_version: 1,
            event_id: Uuid::now_v7(),
            product_id: Uuid::now_v7(),
            slot_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            at_ms: 1_700_000_000_000,
            arrival_us: Some(1),
            expires_ms: None,
            payment_id: None,
            amount: None,
            currency: None,
            method: None,
            idempotency_key: None,
            reason: None,
            traceparent: format!("00-{trace}-00f067aa0ba902b7-01"),
        };
        let lines = captured(|| {
            log_outbox_event(&event);
            tracing::info!("an ordinary log line is not a business event");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["event"], "SLOT_ACQUIRED");
        assert_eq!(line["trace_id"], trace);
        assert_eq!(line["product_id"], event.product_id.to_string());
        assert_eq!(line["buyer_id"], event.user_id.to_string());
        assert_eq!(line["target"], TARGET);
    }

    #[test]
    fn refusals_under_a_storm_are_sampled() {
        let log = AcquisitionLog::default();
        let (product, buyer) = (Uuid::now_v7(), Uuid::now_v7());
        let lines = captured(|| {
            for _ in 0..1_000 {
                log.refused(5_000, "t", product, buyer, "sold_out");
            }
            log.refused(6_000, "t", product, buyer, "sold_out");
        });
        assert_eq!(lines.len() as u64, Sampler::PER_SECOND + 1);
        assert_eq!(lines[0]["event"], "SLOT_REFUSED");
        assert_eq!(lines[0]["reason"], "sold_out");
        let last = lines.last().unwrap();
        assert_eq!(last["suppressed"], 1_000 - Sampler::PER_SECOND);
    }
}
