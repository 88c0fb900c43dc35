//! The payments worker: finishes what a request could not.
//!
//! - a charge whose submission the gateway did not confirm (it was down, or the origin died
//!   between creating the payment and submitting) is submitted again after
//!   `resubmit_after`, with the same reference, so the gateway charges it once;
//! - a submitted charge whose webhook has not come by the deadline (`reconcile_after`), or
//!   whose slot reached its deadline with the payment in flight (`lua/expire.lua` queues it
//!   at once), is reconciled: the processor is asked for the charge's status by reference
//!   and its answer is applied as a webhook would be, at the time the processor decided
//!   (a success before the slot's deadline completes it; a later one is refunded). A charge
//!   the processor never received is submitted again; one still processing is asked again
//!   after another `reconcile_after`;
//! - a success that came too late (`REFUND_REQUIRED`) is refunded, once, and recorded.
//!
//! So every payment reaches a final state whatever was lost on the way (a webhook, the
//! origin that submitted the charge). [`PaymentsWorker::step`] is one pass over every
//! product of its work partitions (all of them, unless several origins share them:
//! [`crate::store::leases`]); tests call it directly.

use crate::clock::Clock;
use crate::gateway::{ChargeRequest, ChargeStatus, GatewayError, Outcome};
use crate::payments::Payments;
use crate::status::PaymentStatus;
use crate::store::inventory::Inventory;
use crate::store::leases::Partitions;
use crate::store::payments::status_of;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BATCH: usize = 200;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PaymentsReport {
    pub resubmitted: u64,
    /// Payments settled by asking the processor.
    pub reconciled: u64,
    pub refunded: u64,
}

pub struct PaymentsWorker {
    inventory: Inventory,
    payments: Payments,
    clock: Arc<dyn Clock>,
    resubmit_after: Duration,
    partitions: Partitions,
}

impl PaymentsWorker {
    pub fn new(
        inventory: Inventory,
        payments: Payments,
        clock: Arc<dyn Clock>,
        resubmit_after: Duration,
    ) -> Self {
        Self { inventory, payments, clock, resubmit_after, partitions: Partitions::All }
    }

    /// Works only these partitions' products (this origin's leased share).
    pub fn sharing(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    pub async fn step(&self) -> anyhow::Result<PaymentsReport> {
        let now = self.clock.now_ms();
        let mut report = PaymentsReport::default();
        let store = &self.payments.store;
        for product in self.inventory.products_in(&self.partitions.current()).await? {
            let cutoff = now - self.resubmit_after.as_millis() as i64;
            for payment_id in store.unsubmitted(product, cutoff, BATCH).await? {
                if self.resubmit(product, payment_id).await? {
                    report.resubmitted += 1;
                }
            }
            for payment_id in store.due_for_reconciliation(product, now, BATCH).await? {
                match self.reconcile(product, payment_id).await {
                    Ok(true) => report.reconciled += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(%payment_id, error = %e, "reconciliation failed; retrying")
                    }
                }
            }
            for payment_id in store.awaiting_refund(product, BATCH).await? {
                match self.payments.refund_one(product, payment_id, now).await {
                    Ok(true) => report.refunded += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%payment_id, error = %e, "refund failed; retrying"),
                }
            }
        }
        Ok(report)
    }

    async fn resubmit(&self, product: Uuid, payment_id: Uuid) -> anyhow::Result<bool> {
        let store = &self.payments.store;
        let fields = store.payment(product, payment_id).await?;
        let Some(fields) = fields.filter(|f| status_of(f) == Some(PaymentStatus::Pending)) else {
            store.unqueue(product, payment_id).await?;
            return Ok(false);
        };
        let request = ChargeRequest {
            reference: payment_id,
            amount: fields.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0),
            currency: fields.get("currency").cloned().unwrap_or_default(),
            method: fields.get("method").cloned().unwrap_or_default(),
        };
        let charged = tokio::time::timeout(
            self.payments.gateway_timeout,
            self.payments.gateway.charge(request),
        )
        .await;
        match charged {
            Ok(Ok(())) => store.charge_submitted(product, payment_id, self.reconcile_at()).await?,
            Ok(Err(GatewayError::Declined(reason))) => {
                store.settle(product, payment_id, Some(&reason), self.clock.now_ms()).await?;
            }
            Ok(Err(e)) => {
                tracing::warn!(%payment_id, error = %e, "charge resubmission failed");
                return Ok(false);
            }
            Err(_) => return Ok(false),
        }
        Ok(true)
    }

    fn reconcile_at(&self) -> i64 {
        self.clock.now_ms() + self.payments.reconcile_after.as_millis() as i64
    }

    /// Asks the processor how `payment_id`'s charge went and applies the answer; `true` if
    /// that settled the payment.
    async fn reconcile(&self, product: Uuid, payment_id: Uuid) -> anyhow::Result<bool> {
        let store = &self.payments.store;
        let pending =
            store.payment_status(product, payment_id).await? == Some(PaymentStatus::Pending);
        if !pending {
            store.unqueue(product, payment_id).await?;
            return Ok(false);
        }
        let asked = tokio::time::timeout(
            self.payments.gateway_timeout,
            self.payments.gateway.charge_status(payment_id),
        )
        .await;
        let status = match asked {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                tracing::warn!(%payment_id, error = %e, "the processor did not answer; asking again later");
                let retry_at = self.clock.now_ms() + self.resubmit_after.as_millis() as i64;
                store.reconcile_at(product, payment_id, retry_at).await?;
                return Ok(false);
            }
            Err(_) => {
                let retry_at = self.clock.now_ms() + self.resubmit_after.as_millis() as i64;
                store.reconcile_at(product, payment_id, retry_at).await?;
                return Ok(false);
            }
        };
        match status {
            ChargeStatus::Decided { outcome, at_ms } => {
                let failure = match &outcome {
                    Outcome::Succeeded => None,
                    Outcome::Failed { reason } => Some(reason.as_str()),
                };
                // Decided when the processor decided, not when we asked: a buyer who paid
                // before the deadline keeps the unit although the webhook never came.
                let at = at_ms.min(self.clock.now_ms());
                let settled = store.settle(product, payment_id, failure, at).await?;
                tracing::info!(%payment_id, ?settled, "payment reconciled with the processor");
                Ok(true)
            }
            ChargeStatus::Processing => {
                store.reconcile_at(product, payment_id, self.reconcile_at()).await?;
                Ok(false)
            }
            ChargeStatus::NotFound => {
                // The charge never reached the processor: submit it (same reference).
                tracing::warn!(%payment_id, "the processor has no such charge; submitting it again");
                self.resubmit(product, payment_id).await?;
                Ok(false)
            }
        }
    }

    /// Steps every `interval` until cancelled.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        crate::clock::every("payments", interval, cancel, || async {
            let r = self.step().await?;
            if r.resubmitted + r.reconciled + r.refunded > 0 {
                tracing::info!(
                    resubmitted = r.resubmitted,
                    reconciled = r.reconciled,
                    refunded = r.refunded,
                    "payments"
                );
            }
            anyhow::Ok(())
        })
        .await
    }
}
