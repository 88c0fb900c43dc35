//! flashgate-origin: the authoritative side of a drop.
//!
//! An axum service behind the edge. Buyer requests arrive signed by the edge
//! ([`http::edge_auth`]); operators call admin endpoints with an admin JWT
//! ([`http::admin_auth`], its keys from a JWKS file or URL: [`identity`]). Acquisition is one Redis Lua script per request
//! ([`store::scripts::acquire`], scripts under `lua/`); every event reaches PostgreSQL through
//! the [`outbox`]; products live in PostgreSQL ([`pg`]); payments are idempotent and settled
//! by the gateway's webhook ([`http::payments`]). [`startup::Application`] wires it together
//! and binds; the binary in `main.rs` only parses settings and waits for a signal.
//! Operators watch it through [`metrics`] (`/metrics`), the business events of [`business`]
//! (JSON lines) and the audit trail ([`http::audit`]).

/// A script under `lua/` as a [`store::scripts::LuaScript`] (loaded after the library every
/// script shares, `lua/lib.lua`; run by EVALSHA), for a `static` `LazyLock`.
macro_rules! lua_script {
    ($name:literal) => {
        std::sync::LazyLock::new(|| {
            $crate::store::scripts::LuaScript::new(
                concat!($name, ".lua"),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../lua/lib.lua")),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../lua/", $name, ".lua")),
            )
        })
    };
}

// Layers, each using only those below it: `startup` and `settings` wire everything; `http`
// answers requests and `workers` sweep on a clock; `state` (what handlers hold), `recovery`
// and `payments` (the steps both need) sit below them; `store` (Redis), `outbox` (events to
// PostgreSQL), `gateway` (the processor) and `pg` (PostgreSQL) own one system each; `clock`,
// `config`, `edges`, `error`, `metrics`, `business`, `identity` and `status` are shared by all; `check`
// (the invariant checker) reads `store` and `pg` and is run by operators, not on requests. ARCHITECTURE.md at the root draws the map.
pub mod business;
pub mod check;
pub mod clock;
pub mod config;
pub mod edges;
pub mod error;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod outbox;
pub mod payments;
pub mod pg;
pub mod recovery;
pub mod settings;
pub mod startup;
pub mod state;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod transparency;
pub mod workers;

/// The schema, embedded: applied at start-up and by the tests on their own databases.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
