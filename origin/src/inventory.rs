//! Redis: the authoritative, live state of every sale, changed only by the Lua scripts
//! under `lua/` (see `lua/README.md` for the key layout).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The keys of one product; all carry the product's hash tag.
#[derive(Debug, Clone)]
pub struct ProductKeys {
    tag: String,
}

impl ProductKeys {
    pub fn new(product_id: Uuid) -> Self {
        Self { tag: format!("fg:{{{product_id}}}") }
    }
    pub fn product(&self) -> String {
        format!("{}:product", self.tag)
    }
    pub fn holders(&self) -> String {
        format!("{}:holders", self.tag)
    }
    pub fn slot(&self, slot_id: Uuid) -> String {
        format!("{}:slot:{slot_id}", self.tag)
    }
    pub fn expiry(&self) -> String {
        format!("{}:expiry", self.tag)
    }
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }
}

/// One acquisition attempt, as the edge stamped it.
#[derive(Debug, Clone)]
pub struct AcquireArgs<'a> {
    pub product_id: Uuid,
    pub user_id: Uuid,
    pub slot_id: Uuid,
    pub event_id: Uuid,
    pub arrival_us: i64,
    pub now_ms: i64,
    pub hold_ms: i64,
    pub traceparent: &'a str,
}

/// What `acquire.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    Granted { remaining: i64, expires_ms: i64 },
    Holding { slot_id: Uuid },
    SoldOut,
    NotOnSale { starts_ms: i64 },
    Ended { ends_ms: i64 },
    Unknown,
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
        }
    }

    fn parse(value: Value) -> RedisResult<Self> {
        let bad = |what: &str| -> RedisError {
            (redis::ErrorKind::Parse, "acquire.lua answered unexpectedly", what.to_owned()).into()
        };
        let items: Vec<Value> = redis::from_redis_value(value)?;
        let text = |i: usize| -> RedisResult<String> {
            let item = items.get(i).cloned().ok_or_else(|| bad("too short"))?;
            Ok(redis::from_redis_value::<String>(item)?)
        };
        let int =
            |i: usize| -> RedisResult<i64> { text(i)?.parse().map_err(|_| bad("not a number")) };
        Ok(match text(0)?.as_str() {
            "granted" => Self::Granted { remaining: int(1)?, expires_ms: int(2)? },
            "holding" => {
                Self::Holding { slot_id: Uuid::try_parse(&text(1)?).map_err(|_| bad("slot id"))? }
            }
            "sold_out" => Self::SoldOut,
            "not_on_sale" => Self::NotOnSale { starts_ms: int(1)? },
            "ended" => Self::Ended { ends_ms: int(1)? },
            "unknown" => Self::Unknown,
            other => return Err(bad(other)),
        })
    }
}

/// Handle on Redis and the loaded scripts; cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    conn: ConnectionManager,
    acquire: Arc<Script>,
    load_product: Arc<Script>,
}

impl Inventory {
    /// Connects lazily: the origin starts even while Redis is down, and answers 503 until it
    /// is back. Every command has `timeout` as its deadline.
    pub fn connect(url: &str, timeout: Duration) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            acquire: Arc::new(Script::new(include_str!("../../lua/acquire.lua"))),
            load_product: Arc::new(Script::new(include_str!("../../lua/load_product.lua"))),
        })
    }

    pub async fn acquire(&self, a: &AcquireArgs<'_>) -> RedisResult<Acquisition> {
        let keys = ProductKeys::new(a.product_id);
        let value: Value = self
            .acquire
            .key(keys.product())
            .key(keys.holders())
            .key(keys.slot(a.slot_id))
            .key(keys.expiry())
            .key(keys.outbox())
            .arg(a.product_id.to_string())
            .arg(a.user_id.to_string())
            .arg(a.slot_id.to_string())
            .arg(a.event_id.to_string())
            .arg(a.arrival_us)
            .arg(a.now_ms)
            .arg(a.hold_ms)
            .arg(a.traceparent)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Acquisition::parse(value)
    }

    /// Puts a product's sale state in Redis unless it is already there; `true` if loaded.
    pub async fn load_product(
        &self,
        product_id: Uuid,
        total: i64,
        starts_ms: i64,
        ends_ms: Option<i64>,
    ) -> RedisResult<bool> {
        let loaded: i64 = self
            .load_product
            .key(ProductKeys::new(product_id).product())
            .arg(total)
            .arg(starts_ms)
            .arg(ends_ms.map(|e| e.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(loaded == 1)
    }

    /// Units still on sale, or `None` when Redis does not know the product.
    pub async fn remaining(&self, product_id: Uuid) -> RedisResult<Option<i64>> {
        redis::cmd("HGET")
            .arg(ProductKeys::new(product_id).product())
            .arg("remaining")
            .query_async(&mut self.conn.clone())
            .await
    }

    pub async fn ping(&self) -> RedisResult<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map(drop)
    }

    /// A connection for operators' tools and tests.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_every_answer() {
        let id = Uuid::now_v7();
        let cases = [
            (
                vec![bulk("granted"), Value::Int(2), Value::Int(99)],
                Acquisition::Granted { remaining: 2, expires_ms: 99 },
            ),
            (vec![bulk("holding"), bulk(&id.to_string())], Acquisition::Holding { slot_id: id }),
            (vec![bulk("sold_out")], Acquisition::SoldOut),
            (vec![bulk("not_on_sale"), bulk("5")], Acquisition::NotOnSale { starts_ms: 5 }),
            (vec![bulk("ended"), bulk("7")], Acquisition::Ended { ends_ms: 7 }),
            (vec![bulk("unknown")], Acquisition::Unknown),
        ];
        for (value, expected) in cases {
            assert_eq!(Acquisition::parse(Value::Array(value)).unwrap(), expected);
        }
        assert!(Acquisition::parse(Value::Array(vec![bulk("what")])).is_err());
        assert!(Acquisition::parse(Value::Array(vec![bulk("granted")])).is_err());
    }

    #[test]
    fn keys_share_the_product_hash_tag() {
        let p = Uuid::nil();
        let k = ProductKeys::new(p);
        for key in [k.product(), k.holders(), k.slot(p), k.expiry(), k.outbox()] {
            assert!(key.starts_with("fg:{00000000-0000-0000-0000-000000000000}:"), "{key}");
        }
    }
}
