//! Recovery: when Redis has lost a product's sale state (a restart without persistence, a
//! flush), it is rebuilt from PostgreSQL before the product is sold again:
//! `remaining = total − ACTIVE − COMPLETED`, with holders, slot records and schedules, and
//! the payments still in progress (PENDING ones, so their webhooks still apply;
//! REFUND_REQUIRED ones, so they are still refunded).
//!
//! Until then the product answers 503 with `Retry-After`. The first request that finds the
//! state missing starts the rebuild in the background (once per product at a time);
//! operators trigger the same rebuild with `POST /admin/products/{id}/rebuild` or, for
//! every product, `POST /admin/rebuild`.
//!
//! What PostgreSQL cannot give back: grants whose outbox entries had not been relayed when
//! Redis lost them. The origin runs only on a Redis that fsyncs every write before it
//! answers (`crate::store::durability`), so this takes a lost AOF; each rebuild is recorded in
//! `redis_losses` and reported by `flashgate check` as a possible loss of grants.

use crate::clock::{ms_of, us_of};
use crate::error::{ApiError, ApiResult};
use crate::pg;
use crate::state::AppState;
use crate::store::scripts::rebuild::{LiveSlot, RebuiltCounts};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Rebuild {
    Rebuilt {
        #[serde(rename = "restoredSlots")]
        restored_slots: i64,
        /// Grants the lease allowed that PostgreSQL never heard of: at most this many grants
        /// answered 201 were lost.
        #[serde(rename = "unseenGrants")]
        unseen_grants: i64,
        /// Units withheld from sale for them.
        #[serde(rename = "inDoubt")]
        in_doubt: i64,
    },
    AlreadyLive,
    NotFound,
}

/// A trace context continuing a stored trace id (the original span is not kept).
fn restored_traceparent(trace_id: &str) -> String {
    format!("00-{trace_id:0>32}-{}-01", &Uuid::new_v4().simple().to_string()[..16])
}

/// Rebuilds one product's sale state from PostgreSQL, unless Redis already has it.
pub async fn rebuild(state: &AppState, product_id: Uuid) -> ApiResult<Rebuild> {
    let Some(product) = pg::products::find(&state.db, product_id).await? else {
        return Ok(Rebuild::NotFound);
    };
    let slots: Vec<LiveSlot> = pg::slots::live(&state.db, product_id)
        .await?
        .into_iter()
        .map(|s| LiveSlot {
            slot_id: s.slot_id,
            user_id: s.user_id,
            status: s.status,
            expires_ms: ms_of(s.expires_at),
            arrival_us: us_of(s.arrival_at),
            acquired_ms: ms_of(s.acquired_at),
            traceparent: restored_traceparent(&s.trace_id),
        })
        .collect();
    let granted = pg::slots::granted(&state.db, product_id).await?;
    let leased = pg::leases::leased(&state.db, product_id).await?;
    let losses = pg::leases::losses(&state.db, product_id).await?;
    // Payments still in progress on live slots: the gateway will still report on them.
    let payments: Vec<Value> = pg::purchases::in_progress(&state.db, product_id)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "paymentId": p.payment_id, "slotId": p.slot_id, "userId": p.user_id,
                "status": p.status, "method": p.method, "amount": p.amount.to_string(),
                "currency": p.currency, "idempotencyKey": p.idempotency_key,
                "createdMs": ms_of(p.created_at).to_string(),
                "traceparent": restored_traceparent(&p.trace_id),
            })
        })
        .collect();
    let stock = i64::from(product.stock);
    let accounting =
        account(stock, slots.len() as i64, granted, leased, losses.unseen, losses.withheld);
    // The loss is recorded in a transaction committed only if the rebuild ran: one that
    // found live state leaves no record behind.
    let mut tx = state.db.begin().await?;
    pg::leases::record_loss(
        &mut *tx,
        product_id,
        slots.len() as i64,
        accounting.unseen,
        accounting.withheld_now,
    )
    .await?;
    let restored = state
        .inventory
        .rebuild_product(
            product_id,
            stock,
            ms_of(product.sale_starts_at),
            product.sale_ends_at.map(ms_of),
            accounting.counts,
            state.clock.now_ms(),
            &slots,
            &Value::Array(payments).to_string(),
        )
        .await?;
    Ok(match restored {
        Some(n) => {
            tracing::warn!(
                %product_id, restored_slots = n, unseen_grants = accounting.unseen,
                in_doubt = accounting.withheld_now, leased, granted,
                "rebuilt sale state from PostgreSQL; units lost grants may hold are withheld"
            );
            if let Err(e) = tx.commit().await {
                // Redis is rebuilt and withholds the units; only the record is missing, and
                // the checker reports Redis's `inDoubt` against it.
                tracing::error!(%product_id, error = %e, "the rebuild's loss record was not written");
                return Err(e.into());
            }
            Rebuild::Rebuilt {
                restored_slots: n,
                unseen_grants: accounting.unseen,
                in_doubt: accounting.withheld_now,
            }
        }
        None => Rebuild::AlreadyLive,
    })
}

/// What a rebuild restores and what it found lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    pub counts: RebuiltCounts,
    /// Grants the lease allowed that neither PostgreSQL nor an earlier loss accounts for:
    /// at most this many grants answered 201 were lost with Redis.
    pub unseen: i64,
    /// Units this rebuild withholds for them (on top of earlier losses' unreleased ones).
    pub withheld_now: i64,
}

/// Accounts for a rebuilt product. PostgreSQL holds `granted` slots, `live` of them ACTIVE
/// or COMPLETED; earlier losses counted `counted` unseen grants and still withhold
/// `withheld` units. Grants the lease allowed beyond those may have been answered 201: as
/// many units are withheld, but never more than the units not live nor withheld (a lost
/// grant held one of those, if it held any). `granted` restarts past every grant the lease
/// allowed, so later losses never count the same grant twice.
pub fn account(
    stock: i64,
    live: i64,
    granted: i64,
    leased: i64,
    counted: i64,
    withheld: i64,
) -> Accounting {
    let unseen = (leased - granted - counted).max(0);
    let withheld_now = unseen.min((stock - live - withheld).max(0));
    Accounting {
        counts: RebuiltCounts {
            granted: granted + counted + unseen,
            leased,
            in_doubt: withheld + withheld_now,
        },
        unseen,
        withheld_now,
    }
}

/// The product exists but Redis has no sale state for it: start a rebuild, answer 503.
pub fn not_loaded(state: &AppState, product_id: Uuid) -> ApiError {
    trigger(state, product_id);
    ApiError::Unavailable {
        component: "redis",
        detail: format!("product {product_id} has no sale state in Redis"),
    }
}

/// Starts a background rebuild of `product_id` unless one is already running.
pub fn trigger(state: &AppState, product_id: Uuid) {
    if !state.rebuilds.lock().expect("rebuilds lock").insert(product_id) {
        return;
    }
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let state = task_state;
        if let Err(e) = rebuild(&state, product_id).await {
            tracing::error!(%product_id, error = %e, "automatic rebuild failed; the next request retries");
        }
        state.rebuilds.lock().expect("rebuilds lock").remove(&product_id);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_with_everything_relayed_and_the_lease_used_up_loses_nothing() {
        let a = account(10, 4, 6, 6, 0, 0);
        assert_eq!((a.unseen, a.withheld_now), (0, 0));
        assert_eq!(a.counts, RebuiltCounts { granted: 6, leased: 6, in_doubt: 0 });
    }

    #[test]
    fn grants_the_lease_allowed_beyond_postgresql_are_withheld_not_resold() {
        // 100 units, 30 slots relayed (20 live), lease at 45: up to 15 grants unseen.
        let a = account(100, 20, 30, 45, 0, 0);
        assert_eq!((a.unseen, a.withheld_now), (15, 15));
        assert_eq!(a.counts, RebuiltCounts { granted: 45, leased: 45, in_doubt: 15 });
        // remaining = 100 − 20 − 15: no lost grant's unit is on sale.
    }

    #[test]
    fn never_withholds_more_than_the_units_not_live() {
        // 10 units, 8 live in PostgreSQL, lease 20 ahead: at most 2 units can be held by
        // lost grants.
        let a = account(10, 8, 8, 28, 0, 0);
        assert_eq!((a.unseen, a.withheld_now), (20, 2));
        assert_eq!(a.counts.in_doubt, 2);
        assert_eq!(a.counts.granted, 28, "lease numbers are never reused");
    }

    #[test]
    fn a_second_loss_counts_only_grants_the_first_did_not() {
        let first = account(100, 20, 30, 45, 0, 0);
        // After the rebuild, 10 more grants relayed (PostgreSQL: 40 slots, 30 live), lease
        // raised to 70, then Redis lost again, the first 15 units still withheld.
        let second = account(100, 30, 40, 70, first.unseen, first.counts.in_doubt);
        assert_eq!(second.unseen, 70 - 40 - 15);
        assert_eq!(second.counts.in_doubt, 15 + 15);
        assert_eq!(second.counts.granted, 70);
    }

    #[test]
    fn a_lease_postgresql_already_covers_is_no_loss() {
        let a = account(5, 5, 9, 7, 0, 0);
        assert_eq!((a.unseen, a.withheld_now, a.counts.granted), (0, 0, 9));
    }
}
