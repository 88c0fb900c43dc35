//! Grants under a durable lease: no grant answered `201` is resold, whatever Redis loses.
//!
//! Redis is the authority on who holds what, and it fsyncs every grant before the buyer
//! hears of it (`crate::store::durability`). If its data is lost anyway (a disk, an operator's
//! `FLUSHALL`, a failover to a replica that was behind), PostgreSQL has every grant the relay
//! delivered and none it had not. The lease closes that gap: `acquire.lua` grants only while
//! the product's `granted < leased`, and the origin raises `leased` in PostgreSQL
//! (`grant_leases`) before it raises it in Redis. So after a loss, `leased` − the slots
//! PostgreSQL holds bounds the grants nobody can see any more; the rebuild
//! ([`crate::recovery`]) withholds that many units instead of selling them again, and
//! `flashgate check` reports them until an operator releases them.
//!
//! A lease extension covers up to [`Grants::lease_size`] grants (default 256; never more
//! than the units left, so the bound stays tight at the end of a drop). It is requested in
//! the background when a grant finds less than half an extension left, so acquisitions wait
//! on PostgreSQL only when it is slower than the sale; one that finds the lease used up
//! extends it itself, doubling the extension each round so a burst cannot starve it. With
//! PostgreSQL down, at most one lease's worth of grants are made before acquisitions answer
//! 503.

use crate::error::{ApiError, ApiResult};
use crate::store::inventory::Inventory;
use crate::store::scripts::acquire::{AcquireArgs, Attempt, Decided};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Extensions of different products run concurrently; of one product, one at a time (the
/// others find it done). Striped so the locks stay bounded however many products there are.
const STRIPES: usize = 64;

/// Rounds of extension one acquisition may need before it is decided (each doubles).
const ROUNDS: u32 = 24;

/// After a failed extension, how long the acquisitions that find the lease used up answer
/// 503 at once rather than each trying PostgreSQL again.
const FAIL_FAST: Duration = Duration::from_millis(500);

/// Acquisitions under the grant lease; cheap to clone.
#[derive(Clone)]
pub struct Grants {
    inventory: Inventory,
    db: PgPool,
    lease_size: i64,
    /// Each holds when an extension under it last failed: those waiting behind a failed
    /// extension answer 503 at once instead of each waiting on PostgreSQL in turn.
    stripes: Arc<[tokio::sync::Mutex<Option<Instant>>; STRIPES]>,
    tasks: TaskTracker,
}

impl Grants {
    /// `lease_size` ≥ 1: the most grants one extension covers. `tasks` tracks background
    /// extensions, so shutdown waits for them.
    pub fn new(inventory: Inventory, db: PgPool, lease_size: i64, tasks: TaskTracker) -> Self {
        Self {
            inventory,
            db,
            lease_size: lease_size.max(1),
            stripes: Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(None))),
            tasks,
        }
    }

    /// Decides one acquisition (`acquire.lua`), extending the lease first when it is used up.
    pub async fn acquire(&self, args: &AcquireArgs) -> ApiResult<Decided> {
        // A used-up lease means the background extension fell behind the sale: each round
        // asks for twice as much as the last, so a burst of concurrent acquisitions that
        // takes an extension before this one gets its grant cannot starve it. The rounds end
        // when the product sells out (decided without a lease) or PostgreSQL fails.
        for round in 0..ROUNDS {
            match self.inventory.acquire(args, self.lease_size).await? {
                Attempt::Decided { acquisition, lease_low, logged } => {
                    if lease_low {
                        self.extend_in_background(args.product_id);
                    }
                    return Ok(Decided { acquisition, logged });
                }
                Attempt::LeaseUsedUp { .. } => {
                    let size = self.lease_size.saturating_mul(1 << round.min(16));
                    let mut failed_at = self.stripe(args.product_id).lock().await;
                    if failed_at.is_some_and(|t| t.elapsed() < FAIL_FAST) {
                        return Err(ApiError::Unavailable {
                            component: "postgresql",
                            detail: "the grant lease cannot be extended right now".into(),
                        });
                    }
                    let extended = self.extend_locked(args.product_id, size).await;
                    *failed_at = extended.is_err().then(Instant::now);
                    extended?;
                }
            }
        }
        Err(ApiError::Internal(anyhow::anyhow!(
            "the grant lease of {} did not keep up after {ROUNDS} doubling extensions",
            args.product_id
        )))
    }

    /// Raises the product's lease to cover `min(size, remaining)` grants past those made so
    /// far: PostgreSQL first (durable), then Redis. A no-op when the lease already covers
    /// that, when nothing is left to sell, or when Redis does not know the product. The caller
    /// holds the product's stripe.
    async fn extend_locked(&self, product_id: Uuid, size: i64) -> ApiResult<()> {
        let Some(state) = self.inventory.lease_state(product_id).await? else {
            return Ok(());
        };
        let target = state.granted + state.remaining.min(size.max(1));
        if state.remaining <= 0 || state.leased >= target {
            return Ok(());
        }
        let leased = crate::pg::leases::raise(&self.db, product_id, target).await?;
        self.inventory.raise_lease(product_id, leased).await?;
        tracing::debug!(%product_id, leased, "grant lease extended");
        Ok(())
    }

    /// Extends ahead of need, unless an extension of this product (or one sharing its
    /// stripe) is already running; a failure only logs: the next grant asks again.
    fn extend_in_background(&self, product_id: Uuid) {
        let grants = self.clone();
        self.tasks.spawn(async move {
            let Ok(mut failed_at) = grants.stripe(product_id).try_lock() else {
                return;
            };
            let result = grants.extend_locked(product_id, grants.lease_size).await;
            *failed_at = result.is_err().then(Instant::now);
            if let Err(e) = result {
                tracing::warn!(%product_id, error = %e, "grant lease not extended ahead of need");
            }
        });
    }

    fn stripe(&self, product_id: Uuid) -> &tokio::sync::Mutex<Option<Instant>> {
        // Product ids end in random bits (v4 and v7 alike).
        &self.stripes[(product_id.as_u128() % STRIPES as u128) as usize]
    }
}
