//! The client's address behind trusted proxies (security review, finding 4: behind a load
//! balancer every buyer shared the balancer's address, and so one per-address rate limit).
//!
//! The host tells the component who the client is in `spin-client-addr`, as Spin does. That
//! is the TCP peer, unless the peer is one of the proxies the operator trusts
//! (`--trusted-proxy`, CIDRs): then `X-Forwarded-For` is read from its right end, each
//! trusted hop skipped, and the first address not trusted is the client. A client can put
//! anything at the left of that header; only what the trusted proxies appended counts, so
//! nobody outside them can choose the address their requests are limited under.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The address to report for a request from `peer` carrying `forwarded_for` (every
/// `X-Forwarded-For` value, in order), given the trusted proxies.
pub fn client_addr<'a>(
    peer: SocketAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> SocketAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer.ip()) {
        return peer;
    }
    // Right to left over every hop of every header line.
    let hops = forwarded_for.rev().flat_map(|line| line.rsplit(',')).map(str::trim);
    for hop in hops {
        let Some(ip) = parse_hop(hop) else {
            // Not an address: what lies left of it cannot be trusted either.
            return peer;
        };
        if !is_trusted(&ip) {
            return SocketAddr::new(ip, 0);
        }
    }
    peer
}

/// One hop: an IPv4 or IPv6 address, possibly with a port (`[v6]:port`, `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let got = client_addr(peer("203.0.113.9"), ["198.51.100.1"].into_iter(), &nets(&[]));
        assert_eq!(got, peer("203.0.113.9"));
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_addr(peer("203.0.113.9"), ["198.51.100.1"].into_iter(), &trusted);
        assert_eq!(got, peer("203.0.113.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        // The client forged a left entry; the balancer appended the real address.
        let got = client_addr(
            peer("10.1.2.3"),
            ["6.6.6.6, 198.51.100.7", "10.9.9.9"].into_iter(),
            &trusted,
        );
        assert_eq!(got.ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        let v6 = client_addr(peer("fd00::1"), ["[2001:db8::5]:443"].into_iter(), &trusted);
        assert_eq!(v6.ip(), "2001:db8::5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_missing_or_garbled_header_leaves_the_proxys_own_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_addr(peer("10.1.2.3"), std::iter::empty(), &trusted), peer("10.1.2.3"));
        let garbled = client_addr(peer("10.1.2.3"), ["1.2.3.4, nonsense"].into_iter(), &trusted);
        assert_eq!(garbled, peer("10.1.2.3"));
        // Every hop trusted: the proxy itself.
        let all = client_addr(peer("10.1.2.3"), ["10.0.0.1"].into_iter(), &trusted);
        assert_eq!(all, peer("10.1.2.3"));
    }
}
