//! `lua/acquire.lua`: the authoritative acquisition of one unit of one product.

use super::{LuaScript, Reply, ms};
use crate::store::inventory::Lifecycle;
use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use flashgate_core::transparency::{Body, Entry, Outcome};
use redis::RedisResult;
use std::sync::LazyLock;
use uuid::Uuid;

static SCRIPT: LazyLock<LuaScript> = lua_script!("acquire");

/// One acquisition attempt, as the edge stamped it.
#[derive(Debug, Clone)]
pub struct AcquireArgs {
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub slot_id: Uuid,
    pub event_id: Uuid,
    pub arrival_us: i64,
    pub now_ms: i64,
    pub traceparent: String,
    /// The stamp was older than the fairness window when the request arrived: a refusal
    /// is recorded as late (network), not as a defect of the window.
    pub late: bool,
    /// The edge-signed request this attempt answers, decided once (`None`: not signed).
    pub replay: Option<crate::http::edge_auth::ReplayGuard>,
    /// The expiry (ms) of the queue pass the acquisition carries; it admits one grant.
    pub pass_expires_ms: Option<u64>,
    /// How the decision goes into the product's public log (`None`: the origin keeps none).
    pub log: Option<LogArgs>,
}

/// What an acquisition's log entry says beyond the attempt itself.
#[derive(Debug, Clone)]
pub struct LogArgs {
    /// The buyer's pseudonym in this drop's log.
    pub buyer: String,
    /// The key it derives from (the receipt's `pseudonymKey`).
    pub buyer_key: [u8; 32],
    /// The edge that stamped the request.
    pub edge: String,
    /// The fairness window in force (µs), set when the acquisition is decided.
    pub window_us: i64,
}

/// A decision's entry in the product's public log: the buyer's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub index: u64,
    /// The entry's bytes, as the log holds them.
    pub entry: Vec<u8>,
    pub buyer_key: [u8; 32],
}

/// The script's arguments: the attempt, the slot lifecycle and the lease's extension size.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    pub attempt: &'a AcquireArgs,
    pub lifecycle: Lifecycle,
    /// The most grants one lease extension covers (how low "low" is).
    pub lease_size: i64,
}

/// What `acquire.lua` decided. `Replayed`: this edge-signed request was decided before;
/// sent again, it changes nothing. `PassSpent`: the queue pass no longer admits (it bought
/// already, or its buyer is no longer admitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    Granted { remaining: i64, expires_ms: i64 },
    Holding { slot_id: Uuid },
    SoldOut,
    NotOnSale { starts_ms: i64 },
    Ended { ends_ms: i64 },
    Unknown,
    Replayed,
    PassSpent,
}

impl Acquisition {
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Granted { .. } => "granted",
            Self::Holding { .. } => "holding",
            Self::SoldOut => "sold_out",
            Self::NotOnSale { .. } => "not_on_sale",
            Self::Ended { .. } => "ended",
            Self::Unknown => "unknown",
            Self::Replayed => "replayed",
            Self::PassSpent => "pass_spent",
        }
    }
}

/// A decided acquisition and, when the origin keeps the public log, its entry there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub acquisition: Acquisition,
    pub logged: Option<Logged>,
}

/// What one run of `acquire.lua` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Decided. `lease_low`: the grant lease covers less than half an extension; extend it
    /// in the background before it runs out. `logged`: its entry in the public log.
    Decided { acquisition: Acquisition, lease_low: bool, logged: Option<Logged> },
    /// Nothing decided: the grant lease is used up at `granted` grants. Extend it (durably,
    /// in PostgreSQL first) and ask again.
    LeaseUsedUp { granted: i64, remaining: i64 },
}

impl Attempt {
    /// Reads the script's answer; `log`: the decision went into the product's log, whose
    /// index ends the answer.
    pub fn parse(reply: &Reply) -> RedisResult<Self> {
        let decided = |acquisition| Self::Decided { acquisition, lease_low: false, logged: None };
        Ok(match reply.tag() {
            "granted" => Self::Decided {
                acquisition: Acquisition::Granted {
                    remaining: reply.int(0)?,
                    expires_ms: reply.int(1)?,
                },
                lease_low: reply.int(2)? == 1,
                logged: None,
            },
            "holding" => decided(Acquisition::Holding { slot_id: reply.uuid(0)? }),
            "sold_out" => decided(Acquisition::SoldOut),
            "not_on_sale" => decided(Acquisition::NotOnSale { starts_ms: reply.int(0)? }),
            "ended" => decided(Acquisition::Ended { ends_ms: reply.int(0)? }),
            "unknown" => decided(Acquisition::Unknown),
            "replayed" => decided(Acquisition::Replayed),
            "pass_spent" => decided(Acquisition::PassSpent),
            "lease" => Self::LeaseUsedUp { granted: reply.int(0)?, remaining: reply.int(1)? },
            _ => return Err(reply.unknown_outcome()),
        })
    }
}

/// Values a decided answer carries before its log index.
fn values_before_index(acquisition: &Acquisition) -> usize {
    match acquisition {
        Acquisition::Granted { .. } => 3,
        Acquisition::Holding { .. } | Acquisition::NotOnSale { .. } | Acquisition::Ended { .. } => {
            1
        }
        _ => 0,
    }
}

impl AcquireArgs {
    /// The log entry of this attempt decided as `outcome` at `index` (what `acquire.lua`
    /// appended, field for field).
    pub fn entry(&self, log: &LogArgs, outcome: Outcome, index: u64) -> Vec<u8> {
        Entry {
            index,
            body: Body::Decision {
                arrival_us: self.arrival_us,
                edge: log.edge.clone(),
                buyer: log.buyer.clone(),
                outcome,
                at_ms: self.now_ms,
                late: self.late,
                window_us: log.window_us,
            },
        }
        .to_bytes()
    }
}

impl Args<'_> {
    pub async fn run(&self, conn: &Redis) -> RedisResult<Attempt> {
        let a = self.attempt;
        let keys = ProductKeys::new(a.product_id);
        let reply = SCRIPT
            .call()
            .slot_keys(&keys, a.slot_id)
            .key("refused", keys.refused())
            .key("seen", keys.seen(a.replay.as_ref().map_or("-", |r| r.id.as_str())))
            .key("admitted", keys.queue_admitted())
            .arg("productId", a.product_id.to_string())
            .arg("userId", a.user_id.to_string())
            .arg("slotId", a.slot_id.to_string())
            .arg("eventId", a.event_id.to_string())
            .arg("arrivalUs", a.arrival_us)
            .arg("nowMs", a.now_ms)
            .arg("holdMs", ms(self.lifecycle.hold))
            .arg("traceparent", &a.traceparent)
            .arg("remindBeforeMs", ms(self.lifecycle.remind_before))
            .arg("expiryEventId", Uuid::now_v7().to_string())
            .arg("expiredTtlMs", ms(self.lifecycle.expired_ttl))
            .arg("leaseSize", self.lease_size)
            .arg("late", u8::from(a.late))
            .arg("seenTtlMs", a.replay.as_ref().map_or(0, |r| ms(r.ttl)))
            .arg("passExpiresMs", a.pass_expires_ms.unwrap_or(0))
            .arg("pseudonym", a.log.as_ref().map_or("", |l| l.buyer.as_str()))
            .arg("edgeId", a.log.as_ref().map_or("", |l| l.edge.as_str()))
            .arg("windowUs", a.log.as_ref().map_or(0, |l| l.window_us))
            .reply(conn)
            .await?;
        let mut attempt = Attempt::parse(&reply)?;
        if let (Some(log), Attempt::Decided { acquisition, logged, .. }) = (&a.log, &mut attempt)
            && let Some(outcome) = Outcome::parse(acquisition.outcome())
        {
            let index = reply.int(values_before_index(acquisition))?;
            let index = u64::try_from(index).map_err(|_| reply.unexpected("a log index"))?;
            *logged = Some(Logged {
                index,
                entry: a.entry(log, outcome, index),
                buyer_key: log.buyer_key,
            });
        }
        Ok(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn parse(items: Vec<Value>) -> RedisResult<Attempt> {
        Attempt::parse(&Reply::read("acquire.lua", Value::Array(items))?)
    }

    #[test]
    fn parses_every_answer() {
        let id = Uuid::now_v7();
        let decided =
            |acquisition| Attempt::Decided { acquisition, lease_low: false, logged: None };
        let cases = [
            (
                vec![bulk("granted"), Value::Int(2), Value::Int(99), Value::Int(0)],
                decided(Acquisition::Granted { remaining: 2, expires_ms: 99 }),
            ),
            (
                vec![bulk("granted"), Value::Int(2), Value::Int(99), Value::Int(1)],
                Attempt::Decided {
                    acquisition: Acquisition::Granted { remaining: 2, expires_ms: 99 },
                    lease_low: true,
                    logged: None,
                },
            ),
            (
                vec![bulk("holding"), bulk(&id.to_string())],
                decided(Acquisition::Holding { slot_id: id }),
            ),
            (vec![bulk("sold_out")], decided(Acquisition::SoldOut)),
            (
                vec![bulk("not_on_sale"), bulk("5")],
                decided(Acquisition::NotOnSale { starts_ms: 5 }),
            ),
            (vec![bulk("ended"), bulk("7")], decided(Acquisition::Ended { ends_ms: 7 })),
            (vec![bulk("unknown")], decided(Acquisition::Unknown)),
            (vec![bulk("replayed")], decided(Acquisition::Replayed)),
            (vec![bulk("pass_spent")], decided(Acquisition::PassSpent)),
            (
                vec![bulk("lease"), Value::Int(64), bulk("36")],
                Attempt::LeaseUsedUp { granted: 64, remaining: 36 },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(value).unwrap(), expected);
        }
        assert!(parse(vec![bulk("what")]).is_err());
        assert!(parse(vec![bulk("granted")]).is_err());
        assert!(parse(vec![bulk("lease"), Value::Int(1)]).is_err());
    }
}
