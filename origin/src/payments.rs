//! The payment service both the handlers (`http::payments`) and the payments worker
//! (`workers::payments`) drive: the Redis store, the processor behind its trait, and the
//! deadlines; [`Payments::refund_one`] is the one step both need.

use crate::gateway::{PaymentGateway, RefundRequest};
use crate::status::PaymentStatus;
use crate::store::payments::{PaymentStore, status_of};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Everything the payment handlers and worker share.
#[derive(Clone)]
pub struct Payments {
    pub store: PaymentStore,
    pub gateway: Arc<dyn PaymentGateway>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Deadline of one gateway call.
    pub gateway_timeout: Duration,
    /// The webhook deadline: past it a submitted charge is reconciled with the processor.
    pub reconcile_after: Duration,
}

impl Payments {
    /// Refunds one REFUND_REQUIRED payment through the gateway and records it; `true` if
    /// recorded now.
    pub async fn refund_one(
        &self,
        product_id: Uuid,
        payment_id: Uuid,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let Some(fields) = self.store.payment(product_id, payment_id).await? else {
            return Ok(false);
        };
        if status_of(&fields) != Some(PaymentStatus::RefundRequired) {
            // Not awaiting a refund (any more): drop it from the queue.
            return Ok(self.store.refunded(product_id, payment_id, now_ms).await?);
        }
        let request = RefundRequest {
            reference: payment_id,
            amount: fields.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0),
            currency: fields.get("currency").cloned().unwrap_or_default(),
        };
        tokio::time::timeout(self.gateway_timeout, self.gateway.refund(request))
            .await
            .context("the refund timed out")??;
        Ok(self.store.refunded(product_id, payment_id, now_ms).await?)
    }
}
