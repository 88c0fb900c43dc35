//! Property tests of the edge host's parsers of outside input (issue #30, item 4): the Spin
//! manifest (an operator's file, with variables from the environment), outbound-host rules,
//! routes, and `X-Forwarded-For`. Arbitrary and mutated inputs never panic; a refused
//! manifest says why; what is parsed means what it says.

use flashgate_edge_host::forwarded::client_addr;
use flashgate_edge_host::manifest::{Manifest, OutboundRule};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

const SPIN_TOML: &str = include_str!("../../../spin.toml");

/// Parses `text` with `vars` (and the required `edge_secret`), no environment.
fn parse(text: &str, vars: &HashMap<String, String>) -> anyhow::Result<Manifest> {
    let mut vars = vars.clone();
    vars.entry("edge_secret".into()).or_insert_with(|| "ab".repeat(32));
    Manifest::parse(text, Path::new("/app"), &vars, |_| None)
}

/// The repository's manifest with one edit: bytes removed, replaced or inserted.
fn mutated() -> impl Strategy<Value = String> {
    (0..SPIN_TOML.len(), 0usize..16, proptest::collection::vec(any::<u8>(), 0..16)).prop_map(
        |(at, cut, insert)| {
            let mut bytes = SPIN_TOML.as_bytes().to_vec();
            let end = (at + cut).min(bytes.len());
            bytes.splice(at..end, insert);
            String::from_utf8_lossy(&bytes).into_owned()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_manifest_or_a_named_error(text in any::<String>()) {
        if let Err(e) = parse(&text, &HashMap::new()) {
            let message = format!("{e:#}");
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn a_mutated_manifest_is_parsed_or_refused_without_a_panic(text in mutated()) {
        if let Ok(m) = parse(&text, &HashMap::new()) {
            // Whatever survived still routes without a panic.
            let _ = m.route("/slots/acquire");
        }
    }

    #[test]
    fn a_variable_holding_template_syntax_is_taken_literally(value in any::<String>()) {
        let vars = HashMap::from([("origin_host".to_owned(), value.clone())]);
        if let Ok(m) = parse(SPIN_TOML, &vars) {
            let edge = m.route("/slots/acquire").expect("the edge serves every path");
            let expected = format!("http://{value}");
            prop_assert_eq!(&edge.variables["origin_url"], &expected);
        }
    }

    #[test]
    fn any_outbound_rule_parses_or_is_refused_and_a_parsed_one_allows_itself(
        scheme in "(http|https|\\*)",
        host in "[a-z][a-z0-9.-]{0,20}",
        port in proptest::option::of(any::<u16>()),
        junk in any::<String>(),
    ) {
        let _ = OutboundRule::parse(&junk);
        let rule = match port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        };
        let parsed = OutboundRule::parse(&rule).unwrap();
        // A rule without a port means its scheme's (80 for `*`).
        let asked = if scheme == "*" { "http" } else { scheme.as_str() };
        let default = if asked == "https" { 443 } else { 80 };
        prop_assert!(parsed.allows(asked, &host, port.unwrap_or(default)));
        let other = format!("{host}.evil");
        prop_assert!(!parsed.allows(asked, &other, port.unwrap_or(default)));
    }

    #[test]
    fn any_path_routes_without_a_panic(path in any::<String>()) {
        let m = parse(SPIN_TOML, &HashMap::new()).unwrap();
        let _ = m.route(&path);
    }

    #[test]
    fn the_client_is_the_peer_or_an_address_the_header_named(
        lines in proptest::collection::vec(any::<String>(), 0..4),
        trusted_peer in any::<bool>(),
    ) {
        let peer: SocketAddr =
            if trusted_peer { "10.0.0.1:5000" } else { "203.0.113.1:5000" }.parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let got = client_addr(peer, lines.iter().map(String::as_str), &trusted);
        if !trusted_peer {
            prop_assert_eq!(got, peer);
        } else if got != peer {
            let named: Vec<IpAddr> = lines
                .iter()
                .flat_map(|l| l.split(','))
                .filter_map(|h| {
                    let h = h.trim();
                    h.parse::<IpAddr>().ok().or_else(|| h.parse::<SocketAddr>().ok().map(|s| s.ip()))
                })
                .collect();
            prop_assert!(named.contains(&got.ip()), "{got} is not in {lines:?}");
        }
    }
}
