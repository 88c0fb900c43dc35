//! The waiting room (issue #17): which products queue their buyers, and each buyer's place.
//!
//! PostgreSQL holds each product's settings (`product_queues`); the admission worker
//! ([`crate::workers::admission`]) reads the rooms that are not off into this directory every
//! step, so the acquisition handler asks memory, not Redis or PostgreSQL, whether a product
//! is queued. The line itself is Redis's (`lua/queue.lua`, `lua/admit.lua`), shared by every
//! origin. In auto mode each origin counts the acquisitions it sees per product and the
//! admission step adds them to the product's count for the current second in Redis; the
//! room turns on for every origin once a second's count reaches the threshold.

use crate::store::inventory::Inventory;
use crate::store::scripts::admit::{self, Step};
use crate::store::scripts::queue::{self, Place};
use flashgate_core::queue::{QueueMode, QueueOrder, default_admit_rate, score};
use redis::RedisResult;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use uuid::Uuid;

/// How long a product's line outlives its last join or admission step.
pub const QUEUE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A room's settings, as the worker last read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    pub mode: QueueMode,
    pub order: QueueOrder,
    /// Admissions a second (the operator's, or derived from stock and hold time).
    pub rate: u32,
    pub auto_threshold: u64,
    pub sale_starts_us: u64,
}

/// One product's room: its settings and what this origin counted.
#[derive(Debug)]
pub struct Room {
    pub settings: RoomSettings,
    /// On: `always`, or `auto` once demand turned it on.
    on: AtomicBool,
    /// Acquisitions seen since the last admission step (auto mode).
    demand: AtomicU64,
}

impl Room {
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }
}

/// The rooms of every product whose queue is not off; cheap to clone.
#[derive(Clone)]
pub struct WaitingRoom {
    inventory: Inventory,
    rooms: Arc<RwLock<HashMap<Uuid, Arc<Room>>>>,
    /// Most buyers one product's line holds.
    pub max_length: u64,
}

impl WaitingRoom {
    pub fn new(inventory: Inventory, max_length: u64) -> Self {
        Self { inventory, rooms: Arc::default(), max_length }
    }

    /// The room of `product_id`, if its queue is not off.
    pub fn room(&self, product_id: Uuid) -> Option<Arc<Room>> {
        self.rooms.read().expect("rooms lock").get(&product_id).cloned()
    }

    /// Whether acquisitions of `product_id` need a pass now; counts one acquisition towards
    /// auto mode's demand when the room is not on yet.
    pub fn admits_by_pass(&self, product_id: Uuid) -> bool {
        let Some(room) = self.room(product_id) else { return false };
        if room.is_on() {
            return true;
        }
        room.demand.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Replaces the directory with `settings`, keeping what was counted for rooms that stay.
    pub fn replace(&self, settings: Vec<(Uuid, RoomSettings)>) {
        let mut rooms = self.rooms.write().expect("rooms lock");
        let mut next = HashMap::with_capacity(settings.len());
        for (product_id, s) in settings {
            let room = match rooms.remove(&product_id) {
                Some(old) if old.settings == s => old,
                old => Arc::new(Room {
                    settings: s,
                    on: AtomicBool::new(
                        s.mode == QueueMode::Always || old.as_ref().is_some_and(|r| r.is_on()),
                    ),
                    demand: AtomicU64::new(0),
                }),
            };
            next.insert(product_id, room);
        }
        *rooms = next;
    }

    /// Reads the rooms that are not off (of live products whose sale has not ended at `now`)
    /// from PostgreSQL into the directory; `hold` derives the default admission rates.
    pub async fn refresh(
        &self,
        db: &sqlx::PgPool,
        now: time::OffsetDateTime,
        hold: Duration,
    ) -> sqlx::Result<()> {
        let mut rooms = Vec::new();
        for row in crate::pg::queues::active(db, now).await? {
            let (Some(mode), Some(order)) =
                (QueueMode::parse(&row.mode), QueueOrder::parse(&row.line_order))
            else {
                // The table's CHECKs rule this out; a row from a newer version is skipped.
                tracing::warn!(product_id = %row.product_id, "unknown queue setting: skipped");
                continue;
            };
            let starts_us = u64::try_from(crate::clock::us_of(row.sale_starts_at)).unwrap_or(0);
            let settings = settings_of(
                mode,
                order,
                row.admit_per_second,
                row.auto_threshold,
                i64::from(row.stock),
                starts_us,
                hold,
            );
            rooms.push((row.product_id, settings));
        }
        self.replace(rooms);
        Ok(())
    }

    /// Every room, for one admission step.
    pub fn rooms(&self) -> Vec<(Uuid, Arc<Room>)> {
        self.rooms.read().expect("rooms lock").iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Where `user_id` stands in `product_id`'s line, joining it (at the place their arrival
    /// stamp gives them) when `join`; `pseudonym` is kept with the join for the public log.
    #[allow(clippy::too_many_arguments)] // each is one of queue.lua's named arguments
    pub async fn place(
        &self,
        product_id: Uuid,
        room: &Room,
        user_id: Uuid,
        arrival_us: u64,
        now_ms: i64,
        join: bool,
        pseudonym: Option<String>,
    ) -> RedisResult<Place> {
        let draw = u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"));
        let args = queue::Args {
            product_id,
            user_id,
            pseudonym,
            score: score(room.settings.order, arrival_us, room.settings.sale_starts_us, draw),
            now_ms,
            join,
            max_length: self.max_length,
            ttl_ms: QUEUE_TTL.as_millis() as i64,
        };
        args.run(&self.inventory.connection()).await
    }

    /// One admission step of `product_id`'s room at `now_ms`, admitting only buyers scored
    /// at most `cutoff_us`.
    pub async fn admit(
        &self,
        product_id: Uuid,
        room: &Room,
        now_ms: i64,
        cutoff_us: u64,
        pass_ttl_ms: u64,
    ) -> RedisResult<Step> {
        let auto = room.settings.mode == QueueMode::Auto;
        let demand = room.demand.swap(0, Ordering::Relaxed);
        let args = admit::Args {
            product_id,
            now_ms,
            rate: room.settings.rate,
            cutoff: cutoff_us,
            pass_ttl_ms,
            auto_threshold: auto.then_some(room.settings.auto_threshold),
            demand,
            ttl_ms: QUEUE_TTL.as_millis() as i64,
        };
        let step = args.run(&self.inventory.connection()).await;
        match &step {
            // Redis's word is the room's state, for every origin alike (a room switched from
            // always to auto starts over).
            Ok(Step::Idle { .. }) => room.on.store(false, Ordering::Release),
            Ok(_) => room.on.store(true, Ordering::Release),
            // Not counted: give it back for the next step.
            Err(_) => {
                room.demand.fetch_add(demand, Ordering::Relaxed);
            }
        }
        step
    }
}

/// A room's settings from its row, its product's stock and the hold time.
pub fn settings_of(
    mode: QueueMode,
    order: QueueOrder,
    admit_per_second: Option<i32>,
    auto_threshold: Option<i32>,
    stock: i64,
    sale_starts_us: u64,
    hold: Duration,
) -> RoomSettings {
    let derived = default_admit_rate(stock.max(0) as u64, hold.as_secs());
    RoomSettings {
        mode,
        order,
        rate: admit_per_second.and_then(|r| u32::try_from(r).ok()).unwrap_or(derived),
        auto_threshold: auto_threshold.and_then(|t| u64::try_from(t).ok()).unwrap_or(1_000),
        sale_starts_us,
    }
}
