//! The payment gateway seam, and the simulated card processor flashgate ships with.
//!
//! [`PaymentGateway`] is what a real processor's adapter implements: submit a charge
//! (idempotent by `reference`, the payment id, so a resubmission never charges twice),
//! submit a refund (idempotent likewise), ask for a charge's status by reference (what
//! reconciliation uses when a webhook never comes), and verify and parse the processor's
//! webhook. Outcomes arrive asynchronously, as real processors report them: a signed
//! webhook to `POST /payments/webhook`, possibly more than once, possibly never.
//!
//! [`SimulatedGateway`] accepts every charge at once and decides its outcome then: success
//! with a configurable probability drawn from a seeded generator, so a test's sequence of
//! outcomes is the same on every run. Like real processors' test cards, the method
//! [`DECLINING_METHOD`] is always declined. It keeps its charges and refunds in a store of
//! its own, not in the origin's memory (keys `gw:charge:<reference>` and
//! `gw:refund:<reference>` in a Redis it is given, for a day), so an origin killed mid-way
//! loses no charge and [`PaymentGateway::charge_status`] answers after a restart. Its
//! webhooks follow after a latency, signed `t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">` in [`SIGNATURE_HEADER`], Stripe's scheme; deliveries still waiting when
//! the origin stops are dropped, as a real processor's would fail against a stopped origin,
//! and reconciliation settles those payments. In `manual` mode it holds webhooks until a
//! test releases them.

use crate::clock::Clock;
use crate::config::{Secret, defaults};
use anyhow::Context;
use axum::http::HeaderMap;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// The webhook signature header of the simulated processor.
pub const SIGNATURE_HEADER: &str = "flashgate-gateway-signature";
/// A payment method the simulated processor always declines (as processors' test cards do).
pub const DECLINING_METHOD: &str = "test_decline";
/// How old a webhook's signature timestamp may be (either way) before it is refused.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The payment id: the processor's idempotency reference.
    pub reference: Uuid,
    pub amount: i64,
    pub currency: String,
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub reference: Uuid,
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Not reachable or not answering: try again later with the same reference.
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
    /// Refused outright (an unsupported method, say): final.
    #[error("the payment gateway declined: {0}")]
    Declined(String),
}

/// How a charge ended, as the processor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed { reason: String },
}

/// What the processor knows of a charge, asked by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    /// It never received the charge (or forgot it): submit it again.
    NotFound,
    /// Received and not decided yet.
    Processing,
    /// Decided at `at_ms` (the processor's clock, ms since the epoch).
    Decided { outcome: Outcome, at_ms: i64 },
}

/// A verified webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEvent {
    pub reference: Uuid,
    pub outcome: Outcome,
}

impl GatewayEvent {
    /// The simulated processor's webhook body for this event; `id` names the delivery.
    pub fn to_webhook_body(&self, id: Uuid) -> Vec<u8> {
        let (kind, failure_reason) = match &self.outcome {
            Outcome::Succeeded => ("charge.succeeded", None),
            Outcome::Failed { reason } => ("charge.failed", Some(reason.clone())),
        };
        let body = WebhookBody { id, kind: kind.into(), reference: self.reference, failure_reason };
        serde_json::to_vec(&body).expect("a webhook body serializes")
    }

    /// Reads a webhook body (its signature checked already); the error says what is wrong.
    pub fn from_webhook_body(body: &[u8]) -> Result<Self, WebhookError> {
        let parsed: WebhookBody =
            serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let outcome = match parsed.kind.as_str() {
            "charge.succeeded" => Outcome::Succeeded,
            "charge.failed" => Outcome::Failed {
                reason: parsed.failure_reason.unwrap_or_else(|| "declined".into()),
            },
            other => return Err(WebhookError::Malformed(format!("unknown type `{other}`"))),
        };
        Ok(GatewayEvent { reference: parsed.reference, outcome })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook signature: {0}")]
    Signature(String),
    #[error("webhook body: {0}")]
    Malformed(String),
}

/// A payment processor, as flashgate uses it.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Submits a charge; the outcome comes later by webhook. Submitting the same reference
    /// again must not charge again.
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<(), GatewayError>>;
    /// Refunds a successful charge; the same reference twice refunds once.
    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<(), GatewayError>>;
    /// The charge's status by our reference (every processor offers this query).
    fn charge_status(&self, reference: Uuid) -> BoxFuture<'_, Result<ChargeStatus, GatewayError>>;
    /// Shutdown: ends the adapter's own background work (deliveries, connections). The
    /// origin bounds how long it waits.
    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Verifies a webhook's authenticity and freshness (`now_secs`: the origin's clock)
    /// and parses it.
    fn parse_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<GatewayEvent, WebhookError>;
}

/// The simulated processor's webhook body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    reference: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SimulatedSettings {
    /// Probability that a charge succeeds.
    pub success_rate: f64,
    /// Delay between a charge and its webhook.
    pub latency: Duration,
    /// Seed of the outcome generator; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Shared with the origin: signs webhooks.
    pub webhook_secret: Secret,
    /// How many times each webhook is delivered (processors deliver at least once).
    pub deliveries: u32,
    /// Hold webhooks until [`SimulatedGateway::release`] (tests).
    pub manual: bool,
    /// The processor's own store: a Redis URL (its keys start `gw:`).
    pub store_url: String,
}

impl SimulatedSettings {
    pub fn new(webhook_secret: Secret, store_url: String) -> Self {
        Self {
            success_rate: defaults::GATEWAY_SUCCESS_RATE,
            latency: Duration::from_millis(defaults::GATEWAY_LATENCY_MS),
            seed: None,
            webhook_secret,
            deliveries: 1,
            manual: false,
            store_url,
        }
    }
}

/// How long the processor remembers a charge or a refund.
const REMEMBERED_FOR: Duration = Duration::from_secs(24 * 3600);

fn charge_key(reference: Uuid) -> String {
    format!("gw:charge:{reference}")
}

fn refund_key(reference: Uuid) -> String {
    format!("gw:refund:{reference}")
}

/// A decided charge as stored: `succeeded <atMs>` or `failed <atMs> <reason>`.
fn encode(outcome: &Outcome, at_ms: i64) -> String {
    match outcome {
        Outcome::Succeeded => format!("succeeded {at_ms}"),
        Outcome::Failed { reason } => format!("failed {at_ms} {reason}"),
    }
}

fn decode(record: &str) -> Option<(Outcome, i64)> {
    let mut parts = record.splitn(3, ' ');
    let kind = parts.next()?;
    let at_ms = parts.next()?.parse().ok()?;
    let outcome = match kind {
        "succeeded" => Outcome::Succeeded,
        "failed" => Outcome::Failed { reason: parts.next().unwrap_or("declined").to_owned() },
        _ => return None,
    };
    Some((outcome, at_ms))
}

/// A card processor simulated beside the origin: see the module docs. Clones share one
/// processor.
#[derive(Clone)]
pub struct SimulatedGateway(Arc<Simulated>);

pub struct Simulated {
    settings: SimulatedSettings,
    clock: Arc<dyn Clock>,
    rng: Mutex<StdRng>,
    target: RwLock<Option<String>>,
    http: reqwest::Client,
    store: ConnectionManager,
    charged: AtomicUsize,
    refunded: AtomicUsize,
    held: Mutex<Vec<Uuid>>,
    deliveries: TaskTracker,
    stopping: CancellationToken,
}

fn unavailable(e: redis::RedisError) -> GatewayError {
    GatewayError::Unavailable(format!("the processor's store: {e}"))
}

impl SimulatedGateway {
    /// A processor keeping its records in the Redis at `settings.store_url` (connected
    /// lazily: a store that is down makes the processor unavailable, not the origin).
    pub fn new(settings: SimulatedSettings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let rng = match settings.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let client = redis::Client::open(settings.store_url.as_str())
            .context("the simulated processor's store URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let store = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self(Arc::new(Simulated {
            settings,
            clock,
            rng: Mutex::new(rng),
            target: RwLock::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a plain HTTP client builds"),
            store,
            charged: AtomicUsize::new(0),
            refunded: AtomicUsize::new(0),
            held: Mutex::default(),
            deliveries: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })))
    }

    /// Where webhooks go: the origin's `POST /payments/webhook` (known once it is bound).
    pub fn deliver_to(&self, webhook_url: String) {
        *self.target.write().expect("target lock") = Some(webhook_url);
    }

    /// Distinct charges this processor accepted (resubmissions not counted).
    pub fn charges(&self) -> usize {
        self.charged.load(Ordering::SeqCst)
    }

    /// Distinct refunds this processor made.
    pub fn refunds(&self) -> usize {
        self.refunded.load(Ordering::SeqCst)
    }

    /// The outcome decided for a charge, if it was submitted (and is remembered).
    pub async fn outcome(&self, reference: Uuid) -> anyhow::Result<Option<Outcome>> {
        let record: Option<String> =
            self.store.clone().get(charge_key(reference)).await.context("the processor's store")?;
        Ok(record.as_deref().and_then(decode).map(|(outcome, _)| outcome))
    }

    /// Charges whose webhooks are held (manual mode).
    pub fn held(&self) -> Vec<Uuid> {
        self.held.lock().expect("held lock").clone()
    }

    /// Forgets the held webhooks without delivering them: webhooks lost on the way.
    pub fn lose_held(&self) -> Vec<Uuid> {
        std::mem::take(&mut *self.held.lock().expect("held lock"))
    }

    fn now_secs(&self) -> i64 {
        self.clock.now_us().div_euclid(1_000_000)
    }

    /// The signature header value for `body` at `t` (seconds).
    pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        format!("t={t},v1={}", hex::encode(webhook_mac(secret, t, body).finalize().into_bytes()))
    }

    /// The signed webhook reporting `reference`'s outcome: `(signature header, body)`.
    pub async fn webhook(&self, reference: Uuid) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        let Some(outcome) = self.outcome(reference).await? else {
            return Ok(None);
        };
        let body = GatewayEvent { reference, outcome }.to_webhook_body(Uuid::now_v7());
        Ok(Some((Self::sign(self.settings.webhook_secret.expose(), self.now_secs(), &body), body)))
    }

    /// Delivers `reference`'s webhook once (held or not); the origin's HTTP status.
    pub async fn release(&self, reference: Uuid) -> anyhow::Result<u16> {
        let target = self.target.read().expect("target lock").clone();
        let target = target.ok_or_else(|| anyhow::anyhow!("no webhook target set"))?;
        let (signature, body) = self
            .webhook(reference)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no charge with reference {reference}"))?;
        let response = self
            .http
            .post(target)
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Delivers every held webhook `deliveries` times and stops holding them.
    pub async fn release_all(&self) -> anyhow::Result<()> {
        for reference in self.lose_held() {
            for _ in 0..self.settings.deliveries.max(1) {
                self.release(reference).await?;
            }
        }
        Ok(())
    }

    /// Delivers like a processor: after the latency, `deliveries` times, each retried with
    /// backoff until the origin answers 2xx (at most 6 attempts); given up on shutdown.
    async fn deliver(self, reference: Uuid) {
        let stopping = self.stopping.clone();
        tokio::select! {
            () = stopping.cancelled() => {}
            () = self.deliver_with_retries(reference) => {}
        }
    }

    async fn deliver_with_retries(&self, reference: Uuid) {
        tokio::time::sleep(self.settings.latency).await;
        for _ in 0..self.settings.deliveries.max(1) {
            let mut backoff = Duration::from_millis(100);
            for attempt in 1..=6 {
                match self.release(reference).await {
                    Ok(status) if (200..300).contains(&status) => break,
                    outcome => {
                        tracing::warn!(%reference, attempt, ?outcome, "webhook not accepted");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
    }
}

impl std::ops::Deref for SimulatedGateway {
    type Target = Simulated;
    fn deref(&self) -> &Simulated {
        &self.0
    }
}

fn webhook_mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verifies `t=…,v1=…` over `body` with `secret`, `t` within the tolerance of `now_secs`.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), WebhookError> {
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => tags.push(v),
            _ => {}
        }
    }
    let t = t.ok_or_else(|| WebhookError::Signature("no timestamp `t=`".into()))?;
    // Saturating: `t` is the sender's input, and i64::MIN - now must not overflow.
    if now_secs.saturating_sub(t).saturating_abs() > WEBHOOK_TOLERANCE_SECS {
        return Err(WebhookError::Signature(format!(
            "timestamp {t} is more than {WEBHOOK_TOLERANCE_SECS} s from now"
        )));
    }
    let valid = tags.iter().any(|tag| {
        hex::decode(tag).is_ok_and(|tag| webhook_mac(secret, t, body).verify_slice(&tag).is_ok())
    });
    if valid { Ok(()) } else { Err(WebhookError::Signature("no valid `v1=` signature".into())) }
}

impl PaymentGateway for SimulatedGateway {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async move {
            if request.amount < 0 {
                return Err(GatewayError::Declined("negative amount".into()));
            }
            let roll: f64 = self.rng.lock().expect("rng lock").random();
            let outcome = if roll < self.settings.success_rate && request.method != DECLINING_METHOD
            {
                Outcome::Succeeded
            } else {
                Outcome::Failed { reason: "card_declined".into() }
            };
            // Recorded once per reference: a resubmission finds the first record.
            let fresh: Option<String> = redis::cmd("SET")
                .arg(charge_key(request.reference))
                .arg(encode(&outcome, self.clock.now_ms()))
                .arg("NX")
                .arg("PX")
                .arg(REMEMBERED_FOR.as_millis() as u64)
                .query_async(&mut self.store.clone())
                .await
                .map_err(unavailable)?;
            if fresh.is_none() {
                return Ok(()); // a resubmission: charged once already
            }
            self.charged.fetch_add(1, Ordering::SeqCst);
            if self.settings.manual {
                self.held.lock().expect("held lock").push(request.reference);
            } else {
                self.deliveries.spawn(self.clone().deliver(request.reference));
            }
            Ok(())
        })
    }

    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async move {
            let mut store = self.store.clone();
            // A charge forgotten after a day is taken to have succeeded.
            let charge: Option<String> =
                store.get(charge_key(request.reference)).await.map_err(unavailable)?;
            if let Some((Outcome::Failed { .. }, _)) = charge.as_deref().and_then(decode) {
                return Err(GatewayError::Declined(format!(
                    "charge {} failed; there is nothing to refund",
                    request.reference
                )));
            }
            let fresh: Option<String> = redis::cmd("SET")
                .arg(refund_key(request.reference))
                .arg(self.clock.now_ms())
                .arg("NX")
                .arg("PX")
                .arg(REMEMBERED_FOR.as_millis() as u64)
                .query_async(&mut store)
                .await
                .map_err(unavailable)?;
            if fresh.is_some() {
                self.refunded.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    }

    fn charge_status(&self, reference: Uuid) -> BoxFuture<'_, Result<ChargeStatus, GatewayError>> {
        Box::pin(async move {
            let record: Option<String> =
                self.store.clone().get(charge_key(reference)).await.map_err(unavailable)?;
            Ok(match record.as_deref().and_then(decode) {
                None => ChargeStatus::NotFound,
                Some((outcome, at_ms)) => ChargeStatus::Decided { outcome, at_ms },
            })
        })
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stopping.cancel();
            self.deliveries.close();
            self.deliveries.wait().await;
        })
    }

    fn parse_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<GatewayEvent, WebhookError> {
        let header = headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| WebhookError::Signature(format!("header {SIGNATURE_HEADER} missing")))?
            .to_str()
            .map_err(|_| WebhookError::Signature("the signature header is not ASCII".into()))?;
        verify_signature(self.settings.webhook_secret.expose(), header, body, now_secs)?;
        GatewayEvent::from_webhook_body(body)
    }
}

/// Any gateway, its calls timed and counted by operation and outcome in the origin's
/// `/metrics` (`flashgate_payment_gateway_duration_seconds`). The origin wraps whichever
/// gateway it is given, so a real processor's adapter is measured the same way.
pub struct Instrumented {
    inner: Arc<dyn PaymentGateway>,
    metrics: crate::metrics::Metrics,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn PaymentGateway>, metrics: crate::metrics::Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: BoxFuture<'_, Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        let started = std::time::Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(GatewayError::Declined(_)) => "declined",
            Err(GatewayError::Unavailable(_)) => "error",
        };
        let labels = crate::metrics::GatewayLabels { operation, outcome };
        self.metrics.gateway.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        result
    }
}

impl PaymentGateway for Instrumented {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(self.timed("charge", self.inner.charge(request)))
    }

    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(self.timed("refund", self.inner.refund(request)))
    }

    fn charge_status(&self, reference: Uuid) -> BoxFuture<'_, Result<ChargeStatus, GatewayError>> {
        Box::pin(self.timed("charge_status", self.inner.charge_status(reference)))
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        self.inner.drain()
    }

    fn parse_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<GatewayEvent, WebhookError> {
        self.inner.parse_webhook(headers, body, now_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a webhook secret of the processor";

    #[test]
    fn a_signature_within_the_tolerance_verifies_and_one_outside_it_is_refused() {
        let now = 1_800_000_000;
        let header = SimulatedGateway::sign(SECRET, now - 10, b"{}");
        assert!(verify_signature(SECRET, &header, b"{}", now).is_ok());
        assert!(verify_signature(SECRET, &header, b"{ }", now).is_err(), "another body");
        let stale = SimulatedGateway::sign(SECRET, now - WEBHOOK_TOLERANCE_SECS - 1, b"{}");
        assert!(verify_signature(SECRET, &stale, b"{}", now).is_err());
    }

    #[test]
    fn extreme_timestamps_are_refused_not_overflowed() {
        // `now - t` overflowed for these and panicked in a debug build.
        for (t, now) in [(i64::MIN, 1_800_000_000), (i64::MAX, -1), (i64::MIN, i64::MAX)] {
            let header = format!("t={t},v1=00");
            assert!(matches!(
                verify_signature(SECRET, &header, b"{}", now),
                Err(WebhookError::Signature(_))
            ));
        }
    }
}
