//! Origin settings: a plain struct the binary fills from flags and environment, and tests
//! fill directly.

use flashgate_core::signing::EdgeSecret;
use flashgate_core::token::{KeySet, TokenPolicy};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    pub database_url: String,
    pub redis_url: String,
    /// Shared with the edge; verifies the edge's HMAC signatures.
    pub edge_secret: EdgeSecret,
    /// The identity provider's public keys and claim rules (admin tokens).
    pub jwt_keys: KeySet,
    pub jwt_policy: TokenPolicy,
    /// How far an edge arrival stamp may be from the origin's clock, either way.
    pub max_stamp_skew: Duration,
    /// How long a granted slot is held for payment.
    pub slot_hold: Duration,
    /// Deadline for each Redis command; past it the request is answered 503.
    pub redis_timeout: Duration,
    pub database_max_connections: u32,
    /// Apply `migrations/` at start-up.
    pub migrate: bool,
}

impl Settings {
    pub fn new(
        listen: SocketAddr,
        database_url: String,
        redis_url: String,
        edge_secret: EdgeSecret,
        jwt_keys: KeySet,
        jwt_policy: TokenPolicy,
    ) -> Self {
        Self {
            listen,
            database_url,
            redis_url,
            edge_secret,
            jwt_keys,
            jwt_policy,
            max_stamp_skew: Duration::from_secs(5),
            slot_hold: Duration::from_secs(30 * 60),
            redis_timeout: Duration::from_millis(500),
            database_max_connections: 10,
            migrate: true,
        }
    }
}
