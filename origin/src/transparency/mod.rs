//! Each drop's public, verifiable log (issue #31).
//!
//! The decisions are logged where they are made: `acquire.lua` (and the scripts that return
//! units or change stock) append each entry to the product's log stream in the same atomic
//! step, numbered there (`lua/lib.lua`, `log_entry`), so nothing is decided without an
//! entry and no entry was not decided, and the buyer's answer carries the entry and its
//! index. Off the grant path, the [`builder`] moves the stream into PostgreSQL
//! (`transparency_*`), grows the Merkle tree and signs a checkpoint; the log's routes
//! ([`crate::http::transparency`]) serve it as C2SP `tlog-tiles` through the edge.
//! The entry format and the verifier live in `flashgate_core::transparency` and
//! `flashgate_tlog`; `docs/transparency.md` says what it proves.

pub mod builder;

use crate::config::Secret;
use crate::store::scripts::acquire::{LogArgs, Logged};
use flashgate_core::transparency as entry;
use flashgate_tlog::checkpoint::LogSigner;
use flashgate_tlog::verify::Receipt;
use std::time::Duration;
use uuid::Uuid;

/// How the origin keeps the logs: who signs them, the secret pseudonyms derive from.
#[derive(Debug, Clone)]
pub struct TransparencySettings {
    /// Note signer keys (`PRIVATE+KEY+<name>+<id>+<base64>`), all of the log's one name;
    /// every one signs every checkpoint (rotation: add the new key, later drop the old).
    pub signing_keys: Vec<String>,
    /// Each drop's pseudonym key derives from this and the product id.
    pub pseudonym_secret: Secret,
    /// How far apart edge clocks may be; published, and allowed by the fairness check.
    pub stamp_skew: Duration,
    /// How often the builder steps; `None` runs none (tests drive it).
    pub build_interval: Option<Duration>,
}

/// The origin's log keys, ready to use.
#[derive(Debug, Clone)]
pub struct Transparency {
    pub signer: LogSigner,
    secret: Secret,
    pub stamp_skew: Duration,
}

impl Transparency {
    pub fn new(settings: &TransparencySettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.pseudonym_secret.expose().len() >= 16,
            "the transparency pseudonym secret must be at least 16 bytes"
        );
        Ok(Self {
            signer: LogSigner::new(&settings.signing_keys)?,
            secret: settings.pseudonym_secret.clone(),
            stamp_skew: settings.stamp_skew,
        })
    }

    /// The buyer's key in this drop's log.
    pub fn buyer_key(&self, product_id: Uuid, user_id: Uuid) -> [u8; 32] {
        let drop = entry::drop_key(self.secret.expose(), &product_id.to_string());
        entry::buyer_key(&drop, &user_id.to_string())
    }

    /// The buyer's pseudonym in this drop's log.
    pub fn pseudonym(&self, product_id: Uuid, user_id: Uuid) -> String {
        entry::pseudonym(&self.buyer_key(product_id, user_id), &user_id.to_string())
    }

    /// What an acquisition's entry says besides the attempt (the window is set when it is
    /// decided).
    pub fn log_args(&self, product_id: Uuid, user_id: Uuid, edge: &str) -> LogArgs {
        let buyer_key = self.buyer_key(product_id, user_id);
        LogArgs {
            buyer: entry::pseudonym(&buyer_key, &user_id.to_string()),
            buyer_key,
            edge: edge.to_owned(),
            window_us: 0,
        }
    }
}

/// The receipt an acquisition's answer carries (no checkpoint covers it yet:
/// `GET /receipts/{productId}` adds one and the inclusion proof).
pub fn receipt(product_id: Uuid, logged: &Logged) -> Receipt {
    Receipt {
        product_id: product_id.to_string(),
        index: logged.index,
        entry: String::from_utf8_lossy(&logged.entry).into_owned(),
        pseudonym_key: hex::encode(logged.buyer_key),
        checkpoint: None,
        proof: None,
    }
}
