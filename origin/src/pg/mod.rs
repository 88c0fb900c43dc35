//! PostgreSQL, the durable record: one module per table family, each statement written
//! once and compile-checked against the migrations (`query!`, `query_as!`). The checked
//! statements are kept in `.sqlx/` at the workspace root, so a build needs no database;
//! `scripts/sqlx-prepare.sh` refreshes them after a statement or a migration changes, and
//! `scripts/test.sh` fails when they are stale.
//!
//! Functions take any executor (a pool, a connection, a transaction), so callers decide
//! what runs in one transaction; none of them decides anything. Statements are literals
//! (what the macros check), so two statements that return the same columns each list them.

pub mod leases;
pub mod outbox;
pub mod products;
pub mod purchases;
pub mod queues;
pub mod slots;
pub mod transparency;

use sqlx::PgPool;

/// One round trip: what `/health` reports for PostgreSQL.
pub async fn ping(db: &PgPool) -> sqlx::Result<()> {
    sqlx::query!("SELECT 1 AS one").fetch_one(db).await.map(drop)
}
