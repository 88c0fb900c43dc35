//! The edge's configuration ([`EdgeConfig`], parsed in flashgate-core), read through
//! `wasi:config` at the start of each request, or taken from the instance's own copy when
//! the host reuses instances and that copy is at most [`CACHE_FOR_US`] old.

use crate::platform::config_get;
pub use flashgate_core::edge_config::{ConfigError, EdgeConfig};
use std::cell::RefCell;
use std::rc::Rc;

/// How long an instance that serves several requests keeps its parsed configuration before
/// reading it again (a platform may change variables at run time, keys rotate). Under a
/// host that instantiates per request (`spin up`) every request reads it.
pub const CACHE_FOR_US: u64 = 1_000_000;

thread_local! {
    /// The parsed configuration and when it was read (µs). The component is
    /// single-threaded; this lives as long as its instance.
    static CACHED: RefCell<Option<(u64, Rc<EdgeConfig>)>> = const { RefCell::new(None) };
}

/// The configuration at `now_us`: the instance's copy when it is fresh enough, else read
/// and parsed again (a failed read is never cached).
pub fn current(now_us: u64) -> Result<Rc<EdgeConfig>, ConfigError> {
    let cached = CACHED.with_borrow(|c| {
        c.as_ref()
            .filter(|(read, _)| now_us.checked_sub(*read).is_some_and(|age| age < CACHE_FOR_US))
            .map(|(_, config)| config.clone())
    });
    if let Some(config) = cached {
        return Ok(config);
    }
    let config = Rc::new(EdgeConfig::parse(config_get)?);
    CACHED.set(Some((now_us, config.clone())));
    Ok(config)
}
