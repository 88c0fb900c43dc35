//! The boundary to the scripts under `lua/`, in the manner of mini-redis's one file per
//! command: one module per script, each with its named arguments (`Args`), its answer (an
//! enum) and that answer's parser. This module is what they share:
//!
//! - [`LuaScript`]: a script, loaded after the library every script shares (`lua/lib.lua`)
//!   as one `redis::Script` (EVALSHA), with the names of its `KEYS` and `ARGV` read from
//!   the script's own header (`-- KEYS[1] product hash`, `-- ARGV[1] productId`, …). A
//!   [`Call`] names every key and argument it passes; one passed in another position than
//!   the script's header says fails the call (and the tests) instead of being misread.
//! - [`Reply`]: every script answers an array whose first item names the outcome
//!   (`{'granted', …}`, `{'sold_out'}`, …) followed by that outcome's values; a reply that
//!   does not read names the script and what was wrong.

pub mod acquire;
pub mod admit;
pub mod delete_product;
pub mod expire;
pub mod lease;
pub mod load_product;
pub mod pay;
pub mod queue;
pub mod rebuild;
pub mod refunded;
pub mod release_in_doubt;
pub mod remind;
pub mod settle;
pub mod update_product;
pub mod work_lease;

use crate::store::keys::ProductKeys;
use crate::store::redis::Redis;
use redis::{
    FromRedisValue, RedisError, RedisResult, Script, ScriptInvocation, ToRedisArgs, Value,
};
use uuid::Uuid;

/// A script under `lua/` and the names its header gives its `KEYS` and `ARGV`.
pub struct LuaScript {
    name: &'static str,
    script: Script,
    keys: Vec<String>,
    argv: Vec<String>,
}

impl LuaScript {
    /// `source` is the script's own text; it runs after `lib` (`lua/lib.lua`).
    pub fn new(name: &'static str, lib: &str, source: &str) -> Self {
        Self {
            name,
            script: Script::new(&format!("{lib}{source}")),
            keys: header_names(source, "KEYS"),
            argv: header_names(source, "ARGV"),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The names of `KEYS` (`"KEYS"`) or `ARGV` (`"ARGV"`), in order.
    pub fn names(&self, what: &str) -> &[String] {
        if what == "KEYS" { &self.keys } else { &self.argv }
    }

    /// A call, to be given every key and argument by name, in the header's order.
    pub fn call(&self) -> Call<'_> {
        Call {
            script: self,
            invocation: self.script.prepare_invoke(),
            keys: 0,
            args: 0,
            wrong: None,
        }
    }
}

/// The names a script's header comment gives `KEYS[i]` or `ARGV[i]`: the word after each
/// `-- … KEYS[i] ` (so `KEYS[1] product hash` names KEYS[1] `product`).
fn header_names(source: &str, what: &str) -> Vec<String> {
    let mut names = Vec::new();
    let marker = format!("{what}[");
    for line in source.lines().take_while(|l| l.starts_with("--") || l.trim().is_empty()) {
        let mut rest = line;
        while let Some(at) = rest.find(&marker) {
            rest = &rest[at + marker.len()..];
            let Some((index, tail)) = rest.split_once("] ") else { continue };
            let (Ok(index), Some(name)) = (index.parse::<usize>(), tail.split_whitespace().next())
            else {
                continue;
            };
            if index == names.len() + 1 {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// One call of a script, its keys and arguments given by name.
pub struct Call<'a> {
    script: &'a LuaScript,
    invocation: ScriptInvocation<'a>,
    keys: usize,
    args: usize,
    /// The first name given out of place.
    wrong: Option<String>,
}

impl Call<'_> {
    fn check(&mut self, what: &str, position: usize, name: &str) {
        let expected = self.script.names(what).get(position);
        if self.wrong.is_none() && expected.is_none_or(|e| e != name) {
            self.wrong = Some(format!(
                "{what}[{}] is {:?} in its header, but the caller passed {name:?}",
                position + 1,
                expected.map_or("nothing", String::as_str),
            ));
        }
    }

    pub fn key(mut self, name: &str, key: impl ToRedisArgs) -> Self {
        self.check("KEYS", self.keys, name);
        self.keys += 1;
        self.invocation.key(key);
        self
    }

    pub fn arg(mut self, name: &str, arg: impl ToRedisArgs) -> Self {
        self.check("ARGV", self.args, name);
        self.args += 1;
        self.invocation.arg(arg);
        self
    }

    /// The keys every script that may reclaim a slot (`lib.lua`'s `reclaim`) declares first:
    /// product, holders, the slot, expiry, reminders, outbox.
    pub fn slot_keys(self, keys: &ProductKeys, slot_id: Uuid) -> Self {
        self.key("product", keys.product())
            .key("holders", keys.holders())
            .key("slot", keys.slot(slot_id))
            .key("expiry", keys.expiry())
            .key("reminders", keys.reminders())
            .key("outbox", keys.outbox())
    }

    /// The keys both waiting-room scripts declare first: product, holders, the room's hash,
    /// its waiting and admitted sets.
    pub fn queue_keys(self, keys: &ProductKeys) -> Self {
        self.key("product", keys.product())
            .key("holders", keys.holders())
            .key("queue", keys.queue())
            .key("waiting", keys.queue_waiting())
            .key("admitted", keys.queue_admitted())
    }

    /// Arguments past the named ones (a variable-length tail, such as rebuild's slots).
    pub fn rest(mut self, arg: impl ToRedisArgs) -> Self {
        if self.wrong.is_none() && self.args < self.script.argv.len() {
            self.wrong = Some(format!("a tail argument at ARGV[{}], a named one", self.args + 1));
        }
        self.args += 1;
        self.invocation.arg(arg);
        self
    }

    /// Runs the call and reads its answer as `T`.
    pub async fn invoke<T: FromRedisValue>(self, conn: &Redis) -> RedisResult<T> {
        let missing = (self.keys, self.args.min(self.script.argv.len()));
        if let Some(wrong) = self.wrong.or_else(|| {
            (missing != (self.script.keys.len(), self.script.argv.len())).then(|| {
                format!(
                    "the caller passed {} KEYS and {} ARGV of {} and {}",
                    missing.0,
                    missing.1,
                    self.script.keys.len(),
                    self.script.argv.len()
                )
            })
        }) {
            return Err(unexpected_call(self.script.name, &wrong));
        }
        let started = std::time::Instant::now();
        let span = tracing::info_span!("redis.script", script = self.script.name);
        let answer =
            tracing::Instrument::instrument(self.invocation.invoke_async(&mut conn.clone()), span)
                .await;
        let labels = crate::metrics::ScriptLabels { script: self.script.name };
        crate::metrics::SCRIPT_DURATION
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    /// Runs the call and reads its `{outcome, values…}` answer.
    pub async fn reply(self, conn: &Redis) -> RedisResult<Reply> {
        let name = self.script.name;
        Reply::read(name, self.invoke(conn).await?)
    }
}

/// A duration as the scripts take it: whole milliseconds.
pub fn ms(d: std::time::Duration) -> i64 {
    d.as_millis() as i64
}

fn unexpected_call(script: &'static str, what: &str) -> RedisError {
    (
        redis::ErrorKind::Client,
        "a script was called with misplaced arguments",
        format!("{script}: {what}"),
    )
        .into()
}

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

    /// Every script under `lua/` but the library.
    const SCRIPTS: [(&str, &str); 15] = [
        ("acquire", include_str!("../../../../lua/acquire.lua")),
        ("admit", include_str!("../../../../lua/admit.lua")),
        ("queue", include_str!("../../../../lua/queue.lua")),
        ("delete_product", include_str!("../../../../lua/delete_product.lua")),
        ("expire", include_str!("../../../../lua/expire.lua")),
        ("lease", include_str!("../../../../lua/lease.lua")),
        ("load_product", include_str!("../../../../lua/load_product.lua")),
        ("pay", include_str!("../../../../lua/pay.lua")),
        ("rebuild", include_str!("../../../../lua/rebuild.lua")),
        ("refunded", include_str!("../../../../lua/refunded.lua")),
        ("release_in_doubt", include_str!("../../../../lua/release_in_doubt.lua")),
        ("remind", include_str!("../../../../lua/remind.lua")),
        ("settle", include_str!("../../../../lua/settle.lua")),
        ("update_product", include_str!("../../../../lua/update_product.lua")),
        ("work_lease", include_str!("../../../../lua/work_lease.lua")),
    ];

    /// The highest `KEYS[i]` or `ARGV[i]` the script's code (not its header) uses.
    fn highest_used(source: &str, what: &str) -> usize {
        let marker = format!("{what}[");
        let code = source.lines().filter(|l| !l.trim_start().starts_with("--"));
        code.flat_map(|l| l.split(marker.as_str()).skip(1))
            .filter_map(|rest| rest.split(']').next()?.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn every_header_names_each_key_and_argument_the_code_uses_once() {
        for (name, source) in SCRIPTS {
            for what in ["KEYS", "ARGV"] {
                let names = header_names(source, what);
                assert!(
                    names.len() >= highest_used(source, what),
                    "{name}.lua uses {what}[{}] but its header names {names:?}",
                    highest_used(source, what)
                );
                let mut unique = names.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), names.len(), "{name}.lua names twice: {names:?}");
            }
        }
        let acquire = header_names(SCRIPTS[0].1, "ARGV");
        assert_eq!(acquire[..2], ["productId".to_owned(), "userId".to_owned()]);
        assert_eq!(acquire.len(), 18);
    }

    #[test]
    fn a_call_out_of_the_header_order_is_refused_before_it_runs() {
        let script = LuaScript::new(
            "t.lua",
            "",
            "-- KEYS[1] product  KEYS[2] holders\n-- ARGV[1] nowMs\nreturn 1\n",
        );
        assert_eq!(script.names("KEYS"), ["product", "holders"]);
        let mut call = script.call().key("holders", "a");
        assert!(call.wrong.as_deref().is_some_and(|w| w.contains("KEYS[1] is \"product\"")));
        call = script.call().key("product", "a").key("holders", "b").arg("nowMs", 1);
        assert!(call.wrong.is_none());
        call = call.arg("extra", 2);
        assert!(call.wrong.as_deref().is_some_and(|w| w.contains("ARGV[2] is \"nothing\"")));
    }

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
