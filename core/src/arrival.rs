//! When a request reached the edge, and how long it may stay there.
//!
//! Fairness is judged by the edge's arrival stamp, so the stamp should be taken as early as
//! possible. Inside a component the earliest moment is its first instruction, which comes
//! after the host has queued the request and instantiated the component: under a storm, a
//! few milliseconds that vary from request to request. flashgate's own host stamps the
//! request when it accepts it ([`HEADER_HOST_ACCEPTED`]) and says so through a configuration
//! key no Spin application can define ([`HOST_STAMPS_KEY`]); the component takes the host's
//! stamp only then, so on other platforms a client cannot choose its own arrival time.
//!
//! An admitted request that has waited inside the edge longer than the configured bound is
//! not forwarded ([`overdue`]): the origin could no longer order it fairly among the
//! requests that arrived with it, and a storm that outruns the edge is shed at the edge
//! rather than queued into the origin.

/// The request header in which flashgate's host passes the time (µs since the epoch) it
/// accepted the request. The host always sets it, replacing whatever a client sent.
pub const HEADER_HOST_ACCEPTED: &str = "x-flashgate-host-accepted-us";

/// The `wasi:config` key flashgate's host answers `true` to. The `:` makes it an invalid
/// Spin variable name, so on Spin it can never be set and reading it fails.
pub const HOST_STAMPS_KEY: &str = "flashgate:host-stamps-arrival";

/// The header the edge adds to a forwarded request: µs from its arrival stamp to the moment
/// it forwarded, the edge's own share of the stamp-to-decision delay (for the origin's
/// metrics only; it decides nothing and is not signed).
pub const HEADER_EDGE_ELAPSED: &str = "x-flashgate-edge-elapsed-us";

/// A host stamp older than this when the component reads it is not believed.
pub const PLAUSIBLE_US: u64 = 60_000_000;

/// The arrival stamp of a request the component first saw at `guest_now_us`: the host's
/// accept time when the host is trusted to set it and the value is plausible (not after
/// `guest_now_us`, not more than [`PLAUSIBLE_US`] before it), otherwise `guest_now_us`.
pub fn stamp(host_accepted: Option<&str>, host_trusted: bool, guest_now_us: u64) -> u64 {
    if !host_trusted {
        return guest_now_us;
    }
    host_accepted
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&at| at <= guest_now_us && guest_now_us - at <= PLAUSIBLE_US)
        .unwrap_or(guest_now_us)
}

/// Whether a request stamped at `arrival_us` has waited inside the edge longer than
/// `max_wait_us` by `now_us` (0 turns the bound off).
pub fn overdue(arrival_us: u64, now_us: u64, max_wait_us: u64) -> bool {
    max_wait_us > 0 && now_us.saturating_sub(arrival_us) > max_wait_us
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_stamp_is_taken_only_from_a_trusted_host() {
        assert_eq!(stamp(Some("1000"), true, 3_000), 1_000);
        // On another platform the header is whatever the client sent.
        assert_eq!(stamp(Some("1000"), false, 3_000), 3_000);
        assert_eq!(stamp(None, true, 3_000), 3_000);
    }

    #[test]
    fn an_implausible_host_stamp_is_ignored() {
        // After the guest's own clock reading, too old, or not a number.
        let now = 100_000_000;
        assert_eq!(stamp(Some("100000001"), true, now), now);
        assert_eq!(stamp(Some("1000"), true, now), now);
        assert_eq!(stamp(Some("soon"), true, now), now);
        assert_eq!(stamp(Some(" 99999999 "), true, now), 99_999_999);
    }

    #[test]
    fn a_request_is_overdue_only_past_the_bound() {
        assert!(!overdue(1_000, 251_000, 250_000));
        assert!(overdue(1_000, 251_001, 250_000));
        assert!(!overdue(1_000, 10_000_000, 0));
        // A clock that stepped back is not a wait.
        assert!(!overdue(5_000, 1_000, 250_000));
    }
}
