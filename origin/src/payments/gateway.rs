//! The payment gateway seam, and the simulated card processor flashgate ships with.
//!
//! [`PaymentGateway`] is what a real processor's adapter implements: submit a charge
//! (idempotent by `reference`, the payment id, so a resubmission never charges twice),
//! submit a refund (idempotent likewise), and verify and parse the processor's webhook.
//! Outcomes arrive asynchronously, as real processors report them: a signed webhook to
//! `POST /payments/webhook`, possibly more than once.
//!
//! [`SimulatedGateway`] accepts every charge at once and reports the outcome after a
//! latency: success with a configurable probability drawn from a seeded generator, so a
//! test's sequence of outcomes is the same on every run. Like real processors' test cards,
//! the method [`DECLINING_METHOD`] is always declined. Its webhooks are signed
//! `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` in
//! [`SIGNATURE_HEADER`], Stripe's scheme. In `manual` mode it holds webhooks until a test
//! releases them.

use crate::clock::Clock;
use axum::http::HeaderMap;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
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

/// A verified webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEvent {
    pub reference: Uuid,
    pub outcome: Outcome,
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
    pub webhook_secret: Vec<u8>,
    /// How many times each webhook is delivered (processors deliver at least once).
    pub deliveries: u32,
    /// Hold webhooks until [`SimulatedGateway::release`] (tests).
    pub manual: bool,
}

impl SimulatedSettings {
    pub fn new(webhook_secret: Vec<u8>) -> Self {
        Self {
            success_rate: 0.95,
            latency: Duration::from_millis(200),
            seed: None,
            webhook_secret,
            deliveries: 1,
            manual: false,
        }
    }
}

/// References seen, forgotten after a day so a long run stays bounded.
struct Seen<V> {
    map: HashMap<Uuid, V>,
    order: VecDeque<(i64, Uuid)>,
}

impl<V> Default for Seen<V> {
    fn default() -> Self {
        Self { map: HashMap::new(), order: VecDeque::new() }
    }
}

const SEEN_FOR_SECS: i64 = 24 * 3600;

impl<V> Seen<V> {
    fn prune(&mut self, now_secs: i64) {
        while let Some(&(at, id)) = self.order.front() {
            if at > now_secs - SEEN_FOR_SECS {
                break;
            }
            self.order.pop_front();
            self.map.remove(&id);
        }
    }
    fn insert(&mut self, id: Uuid, value: V, now_secs: i64) {
        self.prune(now_secs);
        self.order.push_back((now_secs, id));
        self.map.insert(id, value);
    }
}

/// A card processor in-process: see the module docs. Clones share one processor.
#[derive(Clone)]
pub struct SimulatedGateway(Arc<Simulated>);

pub struct Simulated {
    settings: SimulatedSettings,
    clock: Arc<dyn Clock>,
    rng: Mutex<StdRng>,
    target: RwLock<Option<String>>,
    http: reqwest::Client,
    charges: Mutex<Seen<Outcome>>,
    refunds: Mutex<Seen<()>>,
    charged: AtomicUsize,
    refunded: AtomicUsize,
    held: Mutex<Vec<Uuid>>,
}

impl SimulatedGateway {
    pub fn new(settings: SimulatedSettings, clock: Arc<dyn Clock>) -> Self {
        let rng = match settings.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self(Arc::new(Simulated {
            settings,
            clock,
            rng: Mutex::new(rng),
            target: RwLock::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a plain HTTP client builds"),
            charges: Mutex::default(),
            refunds: Mutex::default(),
            charged: AtomicUsize::new(0),
            refunded: AtomicUsize::new(0),
            held: Mutex::default(),
        }))
    }

    /// Where webhooks go: the origin's `POST /payments/webhook` (known once it is bound).
    pub fn deliver_to(&self, webhook_url: String) {
        *self.target.write().expect("target lock") = Some(webhook_url);
    }

    /// Distinct charges accepted so far (resubmissions not counted). A reference is
    /// remembered for a day of the gateway's clock, then forgotten (memory stays bounded).
    pub fn charges(&self) -> usize {
        self.charged.load(Ordering::SeqCst)
    }

    /// Distinct refunds made so far.
    pub fn refunds(&self) -> usize {
        self.refunded.load(Ordering::SeqCst)
    }

    /// The outcome decided for a charge, if it was submitted.
    pub fn outcome(&self, reference: Uuid) -> Option<Outcome> {
        self.charges.lock().expect("charges lock").map.get(&reference).cloned()
    }

    /// Charges whose webhooks are held (manual mode).
    pub fn held(&self) -> Vec<Uuid> {
        self.held.lock().expect("held lock").clone()
    }

    fn now_secs(&self) -> i64 {
        self.clock.now_us().div_euclid(1_000_000)
    }

    /// The signature header value for `body` at `t` (seconds).
    pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        format!("t={t},v1={}", hex::encode(webhook_mac(secret, t, body).finalize().into_bytes()))
    }

    /// The signed webhook reporting `reference`'s outcome: `(signature header, body)`.
    pub fn webhook(&self, reference: Uuid) -> Option<(String, Vec<u8>)> {
        let outcome = self.outcome(reference)?;
        let body = WebhookBody {
            id: Uuid::now_v7(),
            kind: match outcome {
                Outcome::Succeeded => "charge.succeeded".into(),
                Outcome::Failed { .. } => "charge.failed".into(),
            },
            reference,
            failure_reason: match outcome {
                Outcome::Succeeded => None,
                Outcome::Failed { reason } => Some(reason),
            },
        };
        let body = serde_json::to_vec(&body).expect("a webhook body serializes");
        Some((Self::sign(&self.settings.webhook_secret, self.now_secs(), &body), body))
    }

    /// Delivers `reference`'s webhook once (held or not); the origin's HTTP status.
    pub async fn release(&self, reference: Uuid) -> anyhow::Result<u16> {
        let target = self.target.read().expect("target lock").clone();
        let target = target.ok_or_else(|| anyhow::anyhow!("no webhook target set"))?;
        let (signature, body) = self
            .webhook(reference)
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
        let held = std::mem::take(&mut *self.held.lock().expect("held lock"));
        for reference in held {
            for _ in 0..self.settings.deliveries.max(1) {
                self.release(reference).await?;
            }
        }
        Ok(())
    }

    /// Delivers like a processor: after the latency, `deliveries` times, each retried with
    /// backoff until the origin answers 2xx (at most 6 attempts).
    async fn deliver(self, reference: Uuid) {
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
    if (now_secs - t).abs() > WEBHOOK_TOLERANCE_SECS {
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
            let now = self.now_secs();
            {
                let mut charges = self.charges.lock().expect("charges lock");
                if charges.map.contains_key(&request.reference) {
                    return Ok(()); // a resubmission: charged once already
                }
                let roll: f64 = self.rng.lock().expect("rng lock").random();
                let outcome =
                    if roll < self.settings.success_rate && request.method != DECLINING_METHOD {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed { reason: "card_declined".into() }
                    };
                charges.insert(request.reference, outcome, now);
                self.charged.fetch_add(1, Ordering::SeqCst);
            }
            if self.settings.manual {
                self.held.lock().expect("held lock").push(request.reference);
            } else {
                tokio::spawn(self.clone().deliver(request.reference));
            }
            Ok(())
        })
    }

    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async move {
            let now = self.now_secs();
            // A charge forgotten after a day is taken to have succeeded.
            let failed = matches!(
                self.charges.lock().expect("charges lock").map.get(&request.reference),
                Some(Outcome::Failed { .. })
            );
            if failed {
                return Err(GatewayError::Declined(format!(
                    "charge {} failed; there is nothing to refund",
                    request.reference
                )));
            }
            let mut refunds = self.refunds.lock().expect("refunds lock");
            if !refunds.map.contains_key(&request.reference) {
                refunds.insert(request.reference, (), now);
                self.refunded.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
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
        verify_signature(&self.settings.webhook_secret, header, body, now_secs)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn gateway(seed: u64, rate: f64) -> SimulatedGateway {
        let mut s = SimulatedSettings::new(b"secret".to_vec());
        s.seed = Some(seed);
        s.success_rate = rate;
        s.manual = true;
        SimulatedGateway::new(s, Arc::new(ManualClock::starting_now()))
    }

    fn charge(reference: Uuid) -> ChargeRequest {
        ChargeRequest { reference, amount: 100, currency: "EUR".into(), method: "card".into() }
    }

    async fn outcomes(seed: u64) -> Vec<bool> {
        let g = gateway(seed, 0.5);
        let mut out = Vec::new();
        for _ in 0..64 {
            let r = Uuid::now_v7();
            g.charge(charge(r)).await.unwrap();
            out.push(g.outcome(r) == Some(Outcome::Succeeded));
        }
        out
    }

    #[tokio::test]
    async fn a_seed_fixes_the_sequence_of_outcomes() {
        let a = outcomes(7).await;
        assert_eq!(a, outcomes(7).await);
        assert_ne!(a, outcomes(8).await);
        assert!(a.iter().any(|s| *s) && a.iter().any(|s| !*s));
    }

    #[tokio::test]
    async fn a_reference_is_charged_and_refunded_once() {
        let g = gateway(1, 1.0);
        let r = Uuid::now_v7();
        for _ in 0..3 {
            g.charge(charge(r)).await.unwrap();
        }
        assert_eq!((g.charges(), g.held().len()), (1, 1));
        let refund = RefundRequest { reference: r, amount: 100, currency: "EUR".into() };
        g.refund(refund.clone()).await.unwrap();
        g.refund(refund).await.unwrap();
        assert_eq!(g.refunds(), 1);
        let declined = Uuid::now_v7();
        let mut request = charge(declined);
        request.method = DECLINING_METHOD.into();
        g.charge(request).await.unwrap();
        let never = RefundRequest { reference: declined, amount: 100, currency: "EUR".into() };
        assert!(matches!(g.refund(never).await, Err(GatewayError::Declined(_))));
        assert_eq!((g.charges(), g.refunds()), (2, 1));
    }

    #[tokio::test]
    async fn its_webhooks_verify_and_tampering_does_not() {
        let g = gateway(1, 0.0);
        let r = Uuid::now_v7();
        g.charge(charge(r)).await.unwrap();
        let (sig, body) = g.webhook(r).unwrap();
        let now = g.now_secs();
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        let event = g.parse_webhook(&headers, &body, now).unwrap();
        assert_eq!(event.reference, r);
        assert!(matches!(event.outcome, Outcome::Failed { .. }));

        let mut tampered = body.clone();
        tampered[5] ^= 1;
        assert!(matches!(
            g.parse_webhook(&headers, &tampered, now),
            Err(WebhookError::Signature(_))
        ));
        assert!(matches!(
            g.parse_webhook(&headers, &body, now + WEBHOOK_TOLERANCE_SECS + 1),
            Err(WebhookError::Signature(_))
        ));
        assert!(matches!(
            g.parse_webhook(&HeaderMap::new(), &body, now),
            Err(WebhookError::Signature(_))
        ));
        let forged = SimulatedGateway::sign(b"other", now, &body);
        headers.insert(SIGNATURE_HEADER, forged.parse().unwrap());
        assert!(matches!(g.parse_webhook(&headers, &body, now), Err(WebhookError::Signature(_))));
        let junk = b"{}";
        headers.insert(
            SIGNATURE_HEADER,
            SimulatedGateway::sign(b"secret", now, junk).parse().unwrap(),
        );
        assert!(matches!(g.parse_webhook(&headers, junk, now), Err(WebhookError::Malformed(_))));
    }
}
