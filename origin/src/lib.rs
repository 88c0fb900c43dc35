//! flashgate-origin: the authoritative side of a drop.
//!
//! An axum service behind the edge. Buyer requests arrive signed by the edge
//! ([`edge_auth`]); operators call admin endpoints with an admin JWT ([`admin_auth`]).
//! Acquisition is one Redis Lua script per request ([`inventory`], scripts under `lua/`);
//! products live in PostgreSQL ([`products`]); payments are idempotent and settled by the
//! gateway's webhook ([`payments`]). [`startup::Application`] wires it together
//! and binds; the binary in `main.rs` only parses settings and waits for a signal.

/// A script under `lua/`, loaded after the library every script shares (`lua/lib.lua`), as
/// one `redis::Script` (EVALSHA).
macro_rules! lua_script {
    ($name:literal) => {
        std::sync::Arc::new(redis::Script::new(concat!(
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../lua/lib.lua")),
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../lua/", $name, ".lua"))
        )))
    };
}

pub mod admin_auth;
pub mod clock;
pub mod durability;
pub mod edge_auth;
pub mod error;
pub mod events;
pub mod expiry;
pub mod fairness;
pub mod grants;
pub mod health;
pub mod invariants;
pub mod inventory;
pub mod kafka;
pub mod metrics;
pub mod pagination;
pub mod payments;
pub mod persister;
pub mod products;
pub mod recovery;
pub mod relay;
pub mod script;
pub mod settings;
pub mod slots;
pub mod startup;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod trace;
pub mod worker;

/// The schema, embedded: applied at start-up and by the tests on their own databases.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
