//! What every layer may read of the configuration: the one source of defaults
//! ([`defaults`], which `crate::settings` parses flags over) and the type secrets are kept
//! in ([`Secret`]). Below the stores and the gateway, so their own `Default`s read it
//! without reaching up into the settings that wire them.

/// Every default of the origin, once.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8081";
    pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/flashgate";
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
    pub const JWT_ISSUER: &str = "flashgate-dev";
    pub const JWT_AUDIENCE: &str = "flashgate";
    pub const JWT_LEEWAY_SECS: u64 = 30;
    pub const MAX_STAMP_SKEW_MS: u64 = 5_000;
    pub const SLOT_HOLD_SECS: u64 = 30 * 60;
    pub const REMIND_BEFORE_SECS: u64 = 5 * 60;
    pub const EXPIRED_TTL_SECS: u64 = 24 * 3600;
    pub const SETTLE_GRACE_SECS: u64 = 120;
    pub const EXPIRY_INTERVAL_MS: u64 = 1_000;
    pub const RELAY_INTERVAL_MS: u64 = 100;
    pub const ADMISSION_INTERVAL_MS: u64 = 100;
    pub const QUEUE_MAX_LENGTH: u64 = 1_000_000;
    /// How long a waiting room's pass admits its buyer (the edge checks it).
    pub const QUEUE_PASS_TTL_SECS: u64 = flashgate_core::queue::PASS_TTL_MS / 1000;
    pub const RELAY_CLAIM_IDLE_MS: u64 = 5_000;
    pub const GATEWAY_SUCCESS_RATE: f64 = 0.95;
    pub const GATEWAY_LATENCY_MS: u64 = 200;
    pub const GATEWAY_TIMEOUT_SECS: u64 = 5;
    pub const PAYMENT_RESUBMIT_AFTER_SECS: u64 = 10;
    pub const PAYMENT_WORKER_INTERVAL_MS: u64 = 1_000;
    pub const PAYMENT_RECONCILE_AFTER_SECS: u64 = 30;
    pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;
    /// The adaptive fairness window's bound (a fixed window is set explicitly instead).
    pub const FAIRNESS_MAX_WINDOW_MS: u64 = 250;
    pub const GRANT_LEASE: i64 = 256;
    pub const TRANSPARENCY_INTERVAL_MS: u64 = 250;
    pub const TRANSPARENCY_STAMP_SKEW_MS: u64 = 0;
    pub const DRAIN_SECS: u64 = 10;
    pub const REDIS_TIMEOUT_MS: u64 = 500;
    /// Replicas a grant must reach before `201` on a Redis Cluster (none on one server,
    /// whose append-only file is the durability).
    pub const CLUSTER_REPLICA_ACKS: u32 = 1;
    pub const REPLICA_ACK_TIMEOUT_MS: u64 = 250;
    /// How long an origin's claim on a work partition lasts unless renewed: a dead origin's
    /// partitions are taken over within it.
    pub const WORK_LEASE_MS: u64 = 5_000;
    pub const DATABASE_MAX_CONNECTIONS: u32 = 10;
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// From hex, as configuration gives it (surrounding whitespace ignored).
    pub fn from_hex(hex_text: &str) -> Result<Self, hex::FromHexError> {
        hex::decode(hex_text.trim()).map(Self)
    }

    /// A fresh random secret of 32 bytes.
    pub fn random() -> Self {
        Self(rand::random::<[u8; 32]>().to_vec())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}
