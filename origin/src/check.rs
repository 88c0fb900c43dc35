//! The invariant checker: what an operator runs on a finished drop (`flashgate check`) and
//! what every load test runs after itself. It reads Redis and PostgreSQL and reports, per
//! product, every violation of DESIGN.md's invariants it can see from stored state:
//!
//! 1. exactly N: `remaining + holders + inDoubt = total` in Redis, `remaining ≥ 0`; in
//!    PostgreSQL the live slots (ACTIVE + COMPLETED) never exceed the stock and, once the
//!    outbox is drained, `stock − live − inDoubt = remaining` (`inDoubt`: units a rebuild
//!    withheld for grants lost with Redis, as PostgreSQL's `redis_losses` records them);
//! 2. one per buyer: at most one live slot per buyer and product in PostgreSQL; every Redis
//!    holder points at a live slot of that buyer;
//! 3. nothing lost: once the outbox is drained, every slot Redis granted is in PostgreSQL
//!    (`granted` = slots in PostgreSQL + grants lost with Redis) with the status Redis has,
//!    and no event has waited in `persister_parked` longer than [`PARKED_GRACE`] for a slot
//!    that never arrived; a loss of Redis whose grant lease allowed grants PostgreSQL never
//!    saw is reported (each may have been answered 201);
//! 5. exactly-once payment: a slot has at most one COMPLETED payment, a COMPLETED slot has
//!    exactly one, an EXPIRED slot none; every payment reaches a final state (COMPLETED,
//!    FAILED, REFUNDED): none is PENDING or REFUND_REQUIRED longer than the payment
//!    deadline, and none is PENDING on a slot that already EXPIRED (reconciliation settles
//!    a payment before its slot may expire).
//!
//! 6. fairness: a sold-out refusal stamped before a grant that was decided before it is an
//!    inversion, when the grant's stamp is later by more than the stated skew. An inversion
//!    whose refused request reached the origin within the fairness window is a violation;
//!    one whose request arrived later than the window (the origin marks it late) is the
//!    network's and only reported. `acquire.lua`
//!    keeps the refusals that can be inversions (stamped before the latest grant) in
//!    `fg:{p}:refused`; the grants come from PostgreSQL.
//!
//!    The waiting room's line (issue #17) is held to the same rule: buyers are admitted in
//!    the order of their places (`fg:{p}:queue:log`), and nobody still waiting stands ahead
//!    of someone admitted. A buyer whose join reached the origin after someone behind them
//!    had been admitted (a join later than the fairness window; `lua/queue.lua` counts them
//!    as `late`) is the network's, reported, not a violation.
//!
//! It lives in the origin's library so the operator console can run it
//! (`POST /admin/check`); `flashgate check` runs the same function.
//!
//! Undelivered outbox entries are reported, not counted as violations: a running relay
//! delivers them; the cross-store checks wait for a drained outbox.

use crate::pg::{self, leases::Losses};
use crate::status::{PaymentStatus, SlotStatus};
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use sqlx::PgPool;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: u8,
    pub product_id: Uuid,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {} · product {} · {}", self.invariant, self.product_id, self.detail)
    }
}

/// What the checker saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub products: u64,
    pub slots_in_postgres: u64,
    pub holders_in_redis: u64,
    /// Outbox entries not yet relayed, summed over products (cross-store checks of a
    /// product with entries left are skipped).
    pub undelivered: u64,
    /// Fairness inversions beyond the skew whose refused request reached the origin within
    /// the fairness window: the window's defect (each also a violation of invariant 6).
    pub inversions: u64,
    /// Inversions beyond the skew whose refused request reached the origin later than the
    /// window (its stamp already older than W): the network's, reported, not a violation.
    pub late_inversions: u64,
    /// The largest distance between the stamps of an inversion's two requests, µs: within
    /// the window, and late.
    pub max_inversion_gap_us: i64,
    pub max_late_inversion_gap_us: i64,
    /// Buyers admitted from waiting rooms (as far as the admission logs reach).
    pub queue_admissions: u64,
    /// Admissions out of line order, and buyers still waiting ahead of an admitted one.
    pub queue_inversions: u64,
    /// Of those, joins that reached the origin late (the network's): not violations.
    pub queue_late_joins: u64,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Violations per invariant, for the summary line.
    pub fn counts(&self) -> [u64; 6] {
        let mut counts = [0; 6];
        for v in &self.violations {
            if let Some(c) = counts.get_mut(usize::from(v.invariant.saturating_sub(1))) {
                *c += 1;
            }
        }
        counts
    }
}

struct SlotRow {
    slot_id: Uuid,
    user_id: Uuid,
    status: SlotStatus,
    completed_payments: i64,
}

/// What the checker tolerates.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A fairness inversion counts when the later stamp leads by more than this.
    pub fairness_skew: Duration,
    /// A payment not final after this long is reported (the webhook deadline, the
    /// reconciliation that follows it and the settle grace fit well inside the default).
    pub payment_deadline: Duration,
}

impl Limits {
    pub fn new(fairness_skew: Duration) -> Self {
        Self { fairness_skew, payment_deadline: Duration::from_secs(5 * 60) }
    }
}

/// Checks every product PostgreSQL knows (deleted ones included: their slots still count);
/// fairness inversions count when the later stamp leads by more than `fairness_skew`.
pub async fn check(db: &PgPool, redis: &Redis, fairness_skew: Duration) -> anyhow::Result<Report> {
    check_within(db, redis, Limits::new(fairness_skew)).await
}

/// As [`check`], with every limit given.
pub async fn check_within(db: &PgPool, redis: &Redis, limits: Limits) -> anyhow::Result<Report> {
    let fairness_skew = limits.fairness_skew;
    let mut report = Report::default();
    let products = sqlx::query!(
        r#"SELECT product_id, stock, deleted_at IS NOT NULL AS "deleted!" FROM products"#
    )
    .fetch_all(db)
    .await?;
    for p in products {
        let (product_id, stock, deleted) = (p.product_id, p.stock, p.deleted);
        report.products += 1;
        check_product(db, redis, product_id, i64::from(stock), deleted, &mut report).await?;
        let skew_us = fairness_skew.as_micros() as i64;
        check_fairness(db, redis, product_id, skew_us, &mut report).await?;
        check_queue(redis, product_id, &mut report).await?;
    }
    check_parked(db, &mut report).await?;
    check_dead_letters(db, &mut report).await?;
    check_redis_losses(db, &mut report).await?;
    check_payments_final(db, limits.payment_deadline, &mut report).await?;
    Ok(report)
}

/// Invariant 3: a rebuild after Redis lost a product's state cannot restore the grants that
/// had not been relayed yet. The grant lease bounds how many there may have been; each loss
/// with grants it cannot account for is reported (with the units withheld for them, so none
/// was resold). A loss the lease proves complete (every grant it allowed is in PostgreSQL)
/// lost nothing and is not a violation.
async fn check_redis_losses(db: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let losses = sqlx::query!(
        r#"SELECT product_id, count(*) AS "count!", max(rebuilt_at)::text AS "last!",
           sum(unseen_grants)::bigint AS "unseen!", sum(in_doubt)::bigint AS "withheld!",
           max(released_at)::text AS released FROM redis_losses GROUP BY 1
           HAVING sum(unseen_grants) > 0"#,
    )
    .fetch_all(db)
    .await?;
    for loss in losses {
        let (product_id, count, last) = (loss.product_id, loss.count, loss.last);
        let (unseen, withheld, released) = (loss.unseen, loss.withheld, loss.released);
        let units = match released {
            Some(at) => format!("{withheld} units were withheld from sale (released at {at})"),
            None => format!(
                "{withheld} units are withheld from sale until released \
                 (POST /admin/products/{product_id}/in-doubt/release)"
            ),
        };
        report.violations.push(Violation {
            invariant: 3,
            product_id,
            detail: format!(
                "Redis lost this product's sale state {count} time(s) (last rebuilt at {last}): \
                 up to {unseen} grants answered 201 never reached PostgreSQL; {units}"
            ),
        });
    }
    Ok(())
}

async fn check_dead_letters(db: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let dead =
        sqlx::query!(r#"SELECT product_id, count(*) AS "count!", min(reason) AS "reason!" FROM dead_letters GROUP BY 1"#)
            .fetch_all(db)
            .await?;
    for d in dead {
        let (product_id, count, reason) = (d.product_id, d.count, d.reason);
        report.violations.push(Violation {
            invariant: 3,
            product_id: product_id.unwrap_or_default(),
            detail: format!("{count} events dead-lettered (table dead_letters), e.g. {reason}"),
        });
    }
    Ok(())
}

/// Invariant 5's "every payment reaches a final state", from PostgreSQL.
async fn check_payments_final(
    db: &PgPool,
    deadline: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let stuck = sqlx::query!(
        r#"SELECT p.product_id, p.payment_id, p.status AS "status: PaymentStatus",
           s.status = 'EXPIRED' AS "slot_expired!"
           FROM purchases p JOIN purchase_slots s USING (slot_id)
           WHERE (p.status IN ('PENDING', 'REFUND_REQUIRED')
                  AND p.created_at < now() - make_interval(secs => $1))
              OR (p.status = 'PENDING' AND s.status = 'EXPIRED'
                  AND s.updated_at < now() - make_interval(secs => $2))"#,
        deadline.as_secs_f64(),
        PARKED_GRACE.as_secs_f64(),
    )
    .fetch_all(db)
    .await?;
    for p in stuck {
        let (product_id, payment_id, status) = (p.product_id, p.payment_id, p.status);
        let slot_expired = p.slot_expired;
        let detail = if slot_expired && status == PaymentStatus::Pending {
            format!("payment {payment_id} is PENDING on a slot that expired")
        } else {
            format!(
                "payment {payment_id} is still {status} after {} s: not final",
                deadline.as_secs()
            )
        };
        report.violations.push(Violation { invariant: 5, product_id, detail });
    }
    Ok(())
}

/// How long an event may wait in `persister_parked` for the event it depends on (which is
/// normally a few Kafka partitions' lag behind) before the checker calls it lost.
pub const PARKED_GRACE: Duration = Duration::from_secs(60);

/// Invariant 3 for the persister: an event parked longer than [`PARKED_GRACE`] waits for a
/// slot PostgreSQL never received, so a transition Redis made is missing there.
async fn check_parked(db: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let parked = sqlx::query!(
        r#"SELECT (payload->>'productId')::uuid AS product_id, count(*) AS "count!"
           FROM persister_parked WHERE parked_at < now() - make_interval(secs => $1) GROUP BY 1"#,
        PARKED_GRACE.as_secs_f64(),
    )
    .fetch_all(db)
    .await?;
    for p in parked {
        let (product_id, count) = (p.product_id, p.count);
        report.violations.push(Violation {
            invariant: 3,
            product_id: product_id.unwrap_or_default(),
            detail: format!(
                "{count} events parked over {} s in persister_parked, waiting for a slot \
                 PostgreSQL never received",
                PARKED_GRACE.as_secs()
            ),
        });
    }
    Ok(())
}

/// Slot hashes read per pipelined round trip to Redis.
const SLOT_READS_PER_ROUND_TRIP: usize = 1_000;

async fn check_product(
    db: &PgPool,
    redis: &Redis,
    product_id: Uuid,
    stock: i64,
    deleted: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut violation = |invariant: u8, detail: String| {
        report.violations.push(Violation { invariant, product_id, detail });
    };
    let keys = ProductKeys::new(product_id);
    let mut conn = redis.clone();
    let (remaining, total, granted, in_doubt): (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ) = redis::cmd("HMGET")
        .arg(keys.product())
        .arg("remaining")
        .arg("total")
        .arg("granted")
        .arg("inDoubt")
        .query_async(&mut conn)
        .await?;
    let in_doubt = in_doubt.unwrap_or(0);
    // What losses of Redis accounted for: grants PostgreSQL will never hold, units withheld.
    let Losses { unseen, withheld } = pg::leases::losses(db, product_id).await?;
    // (buyer, slot id) pairs.
    let holders: Vec<(String, String)> =
        redis::cmd("HGETALL").arg(keys.holders()).query_async(&mut conn).await?;
    let undelivered: u64 = redis::cmd("XLEN").arg(keys.outbox()).query_async(&mut conn).await?;
    let unreadable: u64 =
        redis::cmd("XLEN").arg(format!("{}:dead", keys.outbox())).query_async(&mut conn).await?;
    if unreadable > 0 {
        violation(
            3,
            format!("{unreadable} unreadable outbox entries set aside in {}:dead", keys.outbox()),
        );
    }

    let slots = sqlx::query_as!(
        SlotRow,
        r#"SELECT s.slot_id, s.user_id, s.status AS "status: SlotStatus",
           (SELECT count(*) FROM purchases p WHERE p.slot_id = s.slot_id
            AND p.status = 'COMPLETED') AS "completed_payments!"
           FROM purchase_slots s WHERE s.product_id = $1"#,
        product_id,
    )
    .fetch_all(db)
    .await?;
    let live_pg = slots.iter().filter(|s| s.status.is_live()).count() as i64;

    // 1: exactly N.
    if live_pg > stock {
        violation(1, format!("{live_pg} live slots in PostgreSQL for a stock of {stock}"));
    }
    let Some(remaining) = remaining else {
        // Redis has no sale state (deleted, or lost and not rebuilt yet): PostgreSQL only.
        let live_active = slots.iter().filter(|s| s.status == SlotStatus::Active).count();
        if !deleted && live_active > 0 {
            violation(
                3,
                format!(
                    "Redis has lost this product's sale state while PostgreSQL holds \
                     {live_active} ACTIVE slots: its holders are unprotected until it is \
                     rebuilt (POST /admin/products/{product_id}/rebuild), and grants answered \
                     after the last relayed event are gone"
                ),
            );
        }
        report.slots_in_postgres += slots.len() as u64;
        check_postgres(&slots, &mut violation);
        return Ok(());
    };
    let total = total.unwrap_or(0);
    if remaining < 0 {
        violation(1, format!("remaining is {remaining} in Redis"));
    }
    if remaining + holders.len() as i64 + in_doubt != total {
        violation(
            1,
            format!(
                "remaining {remaining} + holders {} + in doubt {in_doubt} ≠ total {total} in Redis",
                holders.len()
            ),
        );
    }
    if in_doubt != withheld {
        violation(
            1,
            format!(
                "Redis withholds {in_doubt} units in doubt, PostgreSQL's loss records {withheld}"
            ),
        );
    }
    if total != stock {
        violation(1, format!("Redis total {total} ≠ PostgreSQL stock {stock}"));
    }

    // 2: one per buyer, in Redis.
    let by_id: HashMap<Uuid, &SlotRow> = slots.iter().map(|s| (s.slot_id, s)).collect();
    let slot_ids: Vec<Option<Uuid>> =
        holders.iter().map(|(_, s)| Uuid::try_parse(s).ok()).collect();
    let mut slot_fields: Vec<HashMap<String, String>> = Vec::with_capacity(holders.len());
    // One round trip per chunk of holders, not per holder: after a benchmark scenario with
    // ~100k slots, waiting for the outbox plus the check took 16 s one read at a time, 5 s so.
    for chunk in slot_ids.chunks(SLOT_READS_PER_ROUND_TRIP) {
        let mut pipe = redis::pipe();
        for id in chunk.iter().flatten() {
            pipe.hgetall(keys.slot(*id));
        }
        let read: Vec<HashMap<String, String>> = if chunk.iter().any(Option::is_some) {
            pipe.query_async(&mut conn).await?
        } else {
            Vec::new()
        };
        let mut read = read.into_iter();
        // An unparsable slot id reads as a slot that does not exist.
        slot_fields.extend(chunk.iter().map(|id| id.and_then(|_| read.next()).unwrap_or_default()));
    }
    for ((user, slot), fields) in holders.iter().zip(&slot_fields) {
        let status = fields.get("status").and_then(|s| s.parse::<SlotStatus>().ok());
        if fields.get("userId") != Some(user) || !status.is_some_and(SlotStatus::is_live) {
            violation(
                2,
                format!(
                    "holder {user} points at slot {slot} ({status:?}), not a live slot of theirs"
                ),
            );
        }
        // 3: the grant and its latest transition reached PostgreSQL.
        if undelivered == 0 {
            let pg = Uuid::try_parse(slot).ok().and_then(|id| by_id.get(&id));
            match (pg, status) {
                (None, _) => violation(3, format!("slot {slot} is in Redis, not in PostgreSQL")),
                (Some(row), Some(s)) if row.status != s => violation(
                    3,
                    format!("slot {slot} is {s} in Redis, {} in PostgreSQL", row.status),
                ),
                _ => {}
            }
        }
    }
    report.holders_in_redis += holders.len() as u64;
    report.slots_in_postgres += slots.len() as u64;
    report.undelivered += undelivered;
    check_postgres(&slots, &mut violation);

    // Cross-store counts, once everything is relayed.
    if undelivered == 0 {
        if stock - live_pg - in_doubt != remaining {
            violation(
                1,
                format!(
                    "stock {stock} − live {live_pg} in PostgreSQL − in doubt {in_doubt} ≠ \
                     remaining {remaining} in Redis"
                ),
            );
        }
        if let Some(granted) = granted
            && granted != slots.len() as i64 + unseen
        {
            violation(
                3,
                format!(
                    "Redis granted {granted} slots, PostgreSQL holds {} (+ {unseen} lost with \
                     Redis)",
                    slots.len()
                ),
            );
        }
    }
    Ok(())
}

/// Invariant 6 for one product: pairs (refusal r, grant g) with g decided no later than r
/// (`acquired ≤ refused at`) and g's stamp later than r's by more than the skew.
async fn check_fairness(
    db: &PgPool,
    redis: &Redis,
    product_id: Uuid,
    skew_us: i64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let refused: Vec<String> = redis::cmd("ZRANGE")
        .arg(ProductKeys::new(product_id).refused())
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.clone())
        .await?;
    // `<stamp µs>:<refused at ms>:<user>:<late 0|1>` (no late flag: recorded before there
    // was one, counted as within the window).
    let refused: Vec<(i64, i64, bool)> = refused
        .iter()
        .filter_map(|m| {
            let mut parts = m.split(':');
            let (stamp, at) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
            Some((stamp, at, parts.nth(1) == Some("1")))
        })
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let grants: Vec<(i64, i64)> = sqlx::query!(
        r#"SELECT (extract(epoch FROM arrival_at) * 1000000)::bigint AS "stamp_us!",
           (extract(epoch FROM acquired_at) * 1000)::bigint AS "granted_ms!"
           FROM purchase_slots WHERE product_id = $1"#,
        product_id,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|g| (g.stamp_us, g.granted_ms))
    .collect();
    let (mut inversions, mut gap_us) = (0, 0);
    for &(stamp, refused_ms, late) in &refused {
        for &(g_stamp, g_ms) in &grants {
            if g_ms <= refused_ms && g_stamp > stamp + skew_us {
                if late {
                    report.late_inversions += 1;
                    report.max_late_inversion_gap_us =
                        report.max_late_inversion_gap_us.max(g_stamp - stamp);
                } else {
                    inversions += 1;
                    gap_us = gap_us.max(g_stamp - stamp);
                }
            }
        }
    }
    if inversions > 0 {
        report.inversions += inversions;
        report.max_inversion_gap_us = report.max_inversion_gap_us.max(gap_us);
        report.violations.push(Violation {
            invariant: 6,
            product_id,
            detail: format!(
                "{inversions} fairness inversions beyond {} ms within the fairness window among \
                 {} refusals (stamps up to {:.1} ms apart)",
                skew_us / 1000,
                refused.len(),
                gap_us as f64 / 1000.0
            ),
        });
    }
    Ok(())
}

/// Invariant 6 for a product's waiting room: admissions in line order, nobody waiting ahead
/// of an admitted buyer, beyond the joins that came late.
async fn check_queue(redis: &Redis, product_id: Uuid, report: &mut Report) -> anyhow::Result<()> {
    let keys = ProductKeys::new(product_id);
    let mut conn = redis.clone();
    let log: Vec<String> =
        redis::cmd("LRANGE").arg(keys.queue_log()).arg(0).arg(-1).query_async(&mut conn).await?;
    if log.is_empty() {
        return Ok(());
    }
    // `<seq>:<score>:<userId>`, in admission order.
    let mut admitted: Vec<(u64, f64)> = log
        .iter()
        .filter_map(|entry| {
            let mut parts = entry.split(':');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect();
    admitted.sort_by_key(|(seq, _)| *seq);
    let (mut out_of_order, mut highest) = (0u64, f64::MIN);
    for &(_, score) in &admitted {
        if score < highest {
            out_of_order += 1;
        }
        highest = highest.max(score);
    }
    let overtaken: u64 = redis::cmd("ZCOUNT")
        .arg(keys.queue_waiting())
        .arg("-inf")
        .arg(format!("({highest}"))
        .query_async(&mut conn)
        .await?;
    let late: Option<u64> =
        redis::cmd("HGET").arg(keys.queue()).arg("late").query_async(&mut conn).await?;
    let late = late.unwrap_or(0);
    let inversions = out_of_order + overtaken;
    report.queue_admissions += admitted.len() as u64;
    report.queue_inversions += inversions;
    report.queue_late_joins += late.min(inversions);
    if inversions > late {
        report.violations.push(Violation {
            invariant: 6,
            product_id,
            detail: format!(
                "the waiting room admitted {out_of_order} of {} buyers out of line order and                  {overtaken} still wait ahead of an admitted buyer ({late} joins came late)",
                admitted.len()
            ),
        });
    }
    Ok(())
}

/// Rules PostgreSQL must satisfy on its own (2 and 5).
fn check_postgres(slots: &[SlotRow], violation: &mut impl FnMut(u8, String)) {
    let mut live_per_buyer: HashMap<Uuid, u32> = HashMap::new();
    for s in slots {
        if s.status.is_live() {
            *live_per_buyer.entry(s.user_id).or_default() += 1;
        }
        let ok = match s.status {
            SlotStatus::Completed => s.completed_payments == 1,
            _ => s.completed_payments == 0,
        };
        if !ok {
            violation(
                5,
                format!(
                    "slot {} is {} with {} completed payments",
                    s.slot_id, s.status, s.completed_payments
                ),
            );
        }
    }
    for (user, n) in live_per_buyer {
        if n > 1 {
            violation(2, format!("buyer {user} has {n} live slots"));
        }
    }
}
