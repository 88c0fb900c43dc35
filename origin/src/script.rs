//! The boundary to the scripts under `lua/`: one reader for every script's answer.
//!
//! Every script answers an array whose first item names the outcome (`{'granted', …}`,
//! `{'sold_out'}`, …) followed by that outcome's values; [`Reply`] reads it, and a reply
//! that does not read names the script and what was wrong, so a script and its Rust caller
//! that drift apart fail loudly instead of being misread.

use redis::{RedisError, RedisResult, Value};
use uuid::Uuid;

/// A script's `{tag, values…}` answer.
#[derive(Debug, Clone)]
pub struct Reply {
    script: &'static str,
    tag: String,
    items: Vec<Value>,
}

impl Reply {
    /// Reads `value` as `script`'s answer.
    pub fn read(script: &'static str, value: Value) -> RedisResult<Self> {
        let mut items: Vec<Value> = redis::from_redis_value(value)?;
        if items.is_empty() {
            return Err(unexpected(script, "an empty answer"));
        }
        let tag = redis::from_redis_value(items.remove(0))
            .map_err(|_| unexpected(script, "an outcome that is not text"))?;
        Ok(Self { script, tag, items })
    }

    /// The outcome the script named.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The `i`-th value after the tag, as text.
    pub fn text(&self, i: usize) -> RedisResult<String> {
        self.opt_text(i).ok_or_else(|| self.unexpected(&format!("no value {i} after {}", self.tag)))
    }

    /// The `i`-th value after the tag, as text, if there is one and it is not nil.
    pub fn opt_text(&self, i: usize) -> Option<String> {
        let item = self.items.get(i)?;
        redis::from_redis_value::<Option<String>>(item.clone()).ok().flatten()
    }

    /// The `i`-th value after the tag, as an integer (Lua numbers and numeric text alike).
    pub fn int(&self, i: usize) -> RedisResult<i64> {
        let text = self.text(i)?;
        text.parse().map_err(|_| self.unexpected(&format!("{text:?} is not a number")))
    }

    /// The `i`-th value after the tag, as an id.
    pub fn uuid(&self, i: usize) -> RedisResult<Uuid> {
        let text = self.text(i)?;
        Uuid::try_parse(&text).map_err(|_| self.unexpected(&format!("{text:?} is not an id")))
    }

    /// An error naming this script and what about its answer was unexpected.
    pub fn unexpected(&self, what: &str) -> RedisError {
        unexpected(self.script, what)
    }

    /// The error for an outcome the caller does not know.
    pub fn unknown_outcome(&self) -> RedisError {
        self.unexpected(&format!("the outcome {:?}", self.tag))
    }
}

fn unexpected(script: &'static str, what: &str) -> RedisError {
    (redis::ErrorKind::Parse, "a script answered unexpectedly", format!("{script}: {what}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_tags_texts_numbers_and_ids_and_names_what_is_wrong() {
        let id = Uuid::now_v7();
        let value =
            Value::Array(vec![bulk("granted"), Value::Int(3), bulk("17"), bulk(&id.to_string())]);
        let reply = Reply::read("acquire.lua", value).unwrap();
        assert_eq!(reply.tag(), "granted");
        assert_eq!((reply.int(0).unwrap(), reply.int(1).unwrap()), (3, 17));
        assert_eq!(reply.uuid(2).unwrap(), id);
        assert_eq!(reply.opt_text(3), None);
        let missing = reply.int(3).unwrap_err().to_string();
        assert!(missing.contains("acquire.lua") && missing.contains("no value 3"), "{missing}");
        assert!(reply.uuid(0).unwrap_err().to_string().contains("is not an id"));
        assert!(Reply::read("x.lua", Value::Array(vec![])).is_err());
        let nil = Reply::read("pay.lua", Value::Array(vec![bulk("existing"), Value::Nil])).unwrap();
        assert_eq!(nil.opt_text(0), None);
        assert!(nil.unknown_outcome().to_string().contains("\"existing\""));
    }
}
