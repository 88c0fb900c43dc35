//! The drop's public log (issue #31): what one entry says, the buyer's pseudonym in it, and
//! what anyone can recompute from the entries alone.
//!
//! An entry is one line of JSON, the bytes a log leaf hashes (RFC 6962, `tlog-tiles`): an
//! object whose first member is `index` (its place in the log), then `kind` and the kind's
//! members in the order [`Entry`] declares them, no whitespace. The origin writes the same
//! bytes into the buyer's receipt and into the log (both through [`Entry::to_bytes`]), so a
//! receipt is the entry itself. `docs/transparency.md` is the format's reference for
//! verifiers written elsewhere.
//!
//! Pseudonyms: each drop has its own key, derived from the operator's log secret and the
//! product id ([`drop_key`]); each buyer of that drop has a key derived from it
//! ([`buyer_key`], the "pseudonym key" their receipt carries), and their pseudonym is the
//! HMAC of their buyer id under that key ([`pseudonym`]). A buyer recomputes their own
//! pseudonym from their receipt; nobody without the buyer's key can test whether a given
//! buyer id took part; the same buyer's pseudonyms in two drops are unrelated.
//!
//! [`Audit`] is the verifier's arithmetic: grants never exceed stock (with units returned
//! and stock changes), at most one live grant per pseudonym, no sold-out refusal that
//! reached the origin in time while a later-stamped request was granted before it.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashSet;
use std::fmt;

/// Bytes in a pseudonym (hex-encoded twice as long).
pub const PSEUDONYM_BYTES: usize = 16;

/// What the origin decided about one acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Granted,
    SoldOut,
    NotOnSale,
    Ended,
    Holding,
    PassSpent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::SoldOut => "sold_out",
            Self::NotOnSale => "not_on_sale",
            Self::Ended => "ended",
            Self::Holding => "holding",
            Self::PassSpent => "pass_spent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "granted" => Self::Granted,
            "sold_out" => Self::SoldOut,
            "not_on_sale" => Self::NotOnSale,
            "ended" => Self::Ended,
            "holding" => Self::Holding,
            "pass_spent" => Self::PassSpent,
            _ => return None,
        })
    }
}

/// Why a unit went back on sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnReason {
    /// The hold ran out unpaid.
    Expired,
}

/// One entry of a drop's log. Serialized as `{"index":…,"kind":"…",…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub body: Body,
}

/// What an entry records (its `kind` and members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// An acquisition decided: the edge's arrival stamp (µs since the epoch) and the edge's
    /// id, the buyer's pseudonym, the outcome, when it was decided (ms), whether the request
    /// reached the origin later than the fairness window, and the window in force (µs).
    #[serde(rename_all = "camelCase")]
    Decision {
        arrival_us: i64,
        edge: String,
        buyer: String,
        outcome: Outcome,
        at_ms: i64,
        late: bool,
        window_us: i64,
    },
    /// A granted unit went back on sale; `buyer` is the grant's pseudonym.
    #[serde(rename_all = "camelCase")]
    Returned { buyer: String, reason: ReturnReason, at_ms: i64 },
    /// The drop's stock and sale window as the operator set them (created or changed).
    #[serde(rename_all = "camelCase")]
    Stock { total: i64, starts_at_ms: i64, ends_at_ms: Option<i64>, at_ms: i64 },
    /// A waiting room let a buyer in: their place in line (their arrival stamp, or their
    /// lottery draw), the admission's number, and when they joined (ms), so an admission
    /// out of line order can be told from a join that came after it.
    #[serde(rename_all = "camelCase")]
    Admitted { buyer: String, place: i64, seq: i64, joined_at_ms: i64, at_ms: i64 },
    /// Entries the origin decided but the log never received (its Redis lost them before
    /// they were built in): a gap, published as such rather than hidden.
    #[serde(rename_all = "camelCase")]
    Lost { count: u64 },
}

#[derive(Serialize)]
struct Wire<'a> {
    index: u64,
    #[serde(flatten)]
    body: &'a Body,
}

#[derive(Deserialize)]
struct WireOwned {
    index: u64,
    #[serde(flatten)]
    body: Body,
}

impl Entry {
    /// The entry's bytes: what its leaf hashes and what a receipt carries.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Wire { index: self.index, body: &self.body })
            .expect("an entry always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let wire: WireOwned = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Self { index: wire.index, body: wire.body })
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A drop's own key: from the operator's log secret and the product id.
pub fn drop_key(secret: &[u8], product_id: &str) -> [u8; 32] {
    hmac(secret, &[b"flashgate/transparency/drop/v1\n", product_id.as_bytes()])
}

/// A buyer's pseudonym key in one drop (what their receipt carries).
pub fn buyer_key(drop_key: &[u8; 32], buyer_id: &str) -> [u8; 32] {
    hmac(drop_key, &[b"flashgate/transparency/buyer/v1\n", buyer_id.as_bytes()])
}

/// A buyer's pseudonym: the HMAC-SHA-256 of their buyer id under their pseudonym key,
/// its first [`PSEUDONYM_BYTES`] bytes in lowercase hex.
pub fn pseudonym(buyer_key: &[u8; 32], buyer_id: &str) -> String {
    hex::encode(&hmac(buyer_key, &[buyer_id.as_bytes()])[..PSEUDONYM_BYTES])
}

/// One thing the public log shows that the drop's promises rule out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The entry at which it shows.
    pub index: u64,
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}: {}", self.index, self.what)
    }
}

/// What the log adds up to, entry by entry ([`Audit::push`]).
#[derive(Debug, Default, Clone)]
pub struct Audit {
    /// Entries read so far (the next one's index).
    pub entries: u64,
    pub decisions: u64,
    pub grants: u64,
    pub returned: u64,
    pub refused_sold_out: u64,
    /// Sold-out refusals overtaken by a later-stamped grant whose request reached the
    /// origin late (the network's doing, not the window's): reported, not a finding.
    pub late_inversions: u64,
    /// Entries the log marks as lost.
    pub lost: u64,
    pub admissions: u64,
    /// Admissions behind someone admitted before them whose join came after that
    /// admission (the network's doing): reported, not a finding.
    pub late_joins: u64,
    /// The stock as last set (`None` before the first stock entry).
    pub total: Option<i64>,
    /// Clock skew between edges the fairness check allows (µs).
    pub skew_us: i64,
    live: HashSet<String>,
    latest_grant_stamp: Option<i64>,
    /// The highest place admitted so far, and when it was admitted.
    highest_admitted: Option<(i64, i64)>,
    pub findings: Vec<Finding>,
}

impl Audit {
    pub fn new(skew_us: i64) -> Self {
        Self { skew_us, ..Self::default() }
    }

    /// Units held or sold now: grants less the units returned.
    pub fn outstanding(&self) -> i64 {
        self.grants as i64 - self.returned as i64
    }

    fn find(&mut self, what: String) {
        self.findings.push(Finding { index: self.entries, what });
    }

    /// Reads the next entry's bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let entry = match Entry::from_bytes(bytes) {
            Ok(entry) => entry,
            Err(e) => {
                self.find(format!("not a log entry: {e}"));
                self.entries += 1;
                return;
            }
        };
        if entry.index != self.entries {
            self.find(format!(
                "says it is entry {} (entries out of order or missing)",
                entry.index
            ));
        }
        match entry.body {
            Body::Stock { total, .. } => {
                if total < self.outstanding() {
                    self.find(format!(
                        "stock set to {total} below the {} units already granted",
                        self.outstanding()
                    ));
                }
                self.total = Some(total);
            }
            Body::Decision { arrival_us, buyer, outcome, late, .. } => {
                self.decisions += 1;
                match outcome {
                    Outcome::Granted => {
                        self.grants += 1;
                        match self.total {
                            None => self.find("a grant before the drop's stock was set".into()),
                            Some(total) if self.outstanding() > total => self.find(format!(
                                "grant number {} outstanding exceeds the stock of {total}",
                                self.outstanding()
                            )),
                            Some(_) => {}
                        }
                        if !self.live.insert(buyer.clone()) {
                            self.find(format!("a second live grant to buyer {buyer}"));
                        }
                        self.latest_grant_stamp =
                            Some(self.latest_grant_stamp.map_or(arrival_us, |s| s.max(arrival_us)));
                    }
                    Outcome::SoldOut => {
                        self.refused_sold_out += 1;
                        if let Some(stamp) = self.latest_grant_stamp
                            && stamp > arrival_us + self.skew_us
                        {
                            if late {
                                self.late_inversions += 1;
                            } else {
                                self.find(format!(
                                    "refused as sold out although a request stamped {} µs later \
                                     was granted before it, and it reached the origin within \
                                     the fairness window",
                                    stamp - arrival_us
                                ));
                            }
                        }
                    }
                    Outcome::Holding => {
                        if !self.live.contains(&buyer) {
                            self.find(format!(
                                "buyer {buyer} refused as holding without a live grant"
                            ));
                        }
                    }
                    Outcome::NotOnSale | Outcome::Ended | Outcome::PassSpent => {}
                }
            }
            Body::Returned { buyer, .. } => {
                self.returned += 1;
                if !self.live.remove(&buyer) {
                    self.find(format!("a unit returned by buyer {buyer}, who held none"));
                }
            }
            Body::Admitted { place, seq, joined_at_ms, at_ms, .. } => {
                self.admissions += 1;
                if seq != self.admissions as i64 && self.admissions == 1 {
                    // A log may begin after earlier admissions (its first entries lost).
                    self.admissions = seq as u64;
                } else if seq != self.admissions as i64 {
                    self.find(format!("admission number {seq} where {} was next", self.admissions));
                    self.admissions = seq.max(0) as u64;
                }
                match self.highest_admitted {
                    Some((highest, admitted_ms)) if place < highest => {
                        if joined_at_ms >= admitted_ms {
                            self.late_joins += 1;
                        } else {
                            self.find(format!(
                                "admitted out of line order: place {place} after place {highest}, \
                                 although it joined before that admission"
                            ));
                        }
                    }
                    _ => self.highest_admitted = Some((place, at_ms)),
                }
            }
            Body::Lost { count } => self.lost += count,
        }
        self.entries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(index: u64, buyer: &str, outcome: Outcome, arrival_us: i64, late: bool) -> Vec<u8> {
        Entry {
            index,
            body: Body::Decision {
                arrival_us,
                edge: "edge-a".into(),
                buyer: buyer.into(),
                outcome,
                at_ms: 1_000,
                late,
                window_us: 5_000,
            },
        }
        .to_bytes()
    }

    fn stock(index: u64, total: i64) -> Vec<u8> {
        Entry { index, body: Body::Stock { total, starts_at_ms: 0, ends_at_ms: None, at_ms: 0 } }
            .to_bytes()
    }

    fn returned(index: u64, buyer: &str) -> Vec<u8> {
        Entry {
            index,
            body: Body::Returned { buyer: buyer.into(), reason: ReturnReason::Expired, at_ms: 9 },
        }
        .to_bytes()
    }

    fn audit(entries: &[Vec<u8>]) -> Audit {
        let mut audit = Audit::new(0);
        entries.iter().for_each(|e| audit.push(e));
        audit
    }

    #[test]
    fn an_entry_is_one_line_of_json_with_its_index_first() {
        let bytes = decision(7, "ab", Outcome::SoldOut, 12, true);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"index":7,"kind":"decision","arrivalUs":12,"edge":"edge-a","buyer":"ab","outcome":"sold_out","atMs":1000,"late":true,"windowUs":5000}"#
        );
        let back = Entry::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(
            String::from_utf8(stock(0, 3)).unwrap(),
            r#"{"index":0,"kind":"stock","total":3,"startsAtMs":0,"endsAtMs":null,"atMs":0}"#
        );
        assert!(Entry::from_bytes(b"{\"index\":1,\"kind\":\"what\"}").is_err());
    }

    #[test]
    fn pseudonyms_differ_across_drops_and_buyers_and_are_recomputable() {
        let secret = b"operator secret";
        let (a, b) = (drop_key(secret, "p1"), drop_key(secret, "p2"));
        let alice_a = pseudonym(&buyer_key(&a, "alice"), "alice");
        assert_eq!(alice_a, pseudonym(&buyer_key(&a, "alice"), "alice"));
        assert_eq!(alice_a.len(), 2 * PSEUDONYM_BYTES);
        assert_ne!(alice_a, pseudonym(&buyer_key(&b, "alice"), "alice"));
        assert_ne!(alice_a, pseudonym(&buyer_key(&a, "bob"), "bob"));
    }

    #[test]
    fn an_honest_drop_has_no_findings() {
        let a = audit(&[
            stock(0, 2),
            decision(1, "a", Outcome::Granted, 10, false),
            decision(2, "b", Outcome::Granted, 20, false),
            decision(3, "a", Outcome::Holding, 25, false),
            decision(4, "c", Outcome::SoldOut, 30, false),
            returned(5, "b"),
            decision(6, "c", Outcome::Granted, 40, false),
        ]);
        assert!(a.findings.is_empty(), "{:?}", a.findings);
        assert_eq!((a.grants, a.returned, a.outstanding()), (3, 1, 2));
    }

    #[test]
    fn overselling_a_second_grant_and_an_inversion_are_found() {
        let a = audit(&[
            stock(0, 1),
            decision(1, "a", Outcome::Granted, 10, false),
            decision(2, "b", Outcome::Granted, 20, false),
        ]);
        assert!(a.findings[0].what.contains("exceeds the stock"), "{:?}", a.findings);
        let a = audit(&[
            stock(0, 5),
            decision(1, "a", Outcome::Granted, 10, false),
            decision(2, "a", Outcome::Granted, 20, false),
        ]);
        assert!(a.findings[0].what.contains("second live grant"), "{:?}", a.findings);
        let a = audit(&[
            stock(0, 1),
            decision(1, "a", Outcome::Granted, 50, false),
            decision(2, "b", Outcome::SoldOut, 10, false),
            decision(3, "c", Outcome::SoldOut, 20, true),
        ]);
        assert_eq!(a.findings.len(), 1, "{:?}", a.findings);
        assert_eq!(a.findings[0].index, 2);
        assert_eq!(a.late_inversions, 1);
    }

    #[test]
    fn admissions_in_line_order_pass_and_out_of_order_ones_are_found_unless_they_joined_late() {
        let admitted = |index, place, seq, joined_at_ms, at_ms| {
            Entry {
                index,
                body: Body::Admitted { buyer: format!("b{seq}"), place, seq, joined_at_ms, at_ms },
            }
            .to_bytes()
        };
        let a = audit(&[stock(0, 5), admitted(1, 10, 1, 0, 100), admitted(2, 20, 2, 0, 100)]);
        assert!(a.findings.is_empty(), "{:?}", a.findings);
        assert_eq!(a.admissions, 2);
        // Place 15 admitted after 20, but it joined (at 150) after 20 was admitted (at 100).
        let a = audit(&[stock(0, 5), admitted(1, 20, 1, 0, 100), admitted(2, 15, 2, 150, 200)]);
        assert!(a.findings.is_empty(), "{:?}", a.findings);
        assert_eq!(a.late_joins, 1);
        // It had joined before: out of order.
        let a = audit(&[stock(0, 5), admitted(1, 20, 1, 0, 100), admitted(2, 15, 2, 50, 200)]);
        assert!(a.findings[0].what.contains("out of line order"), "{:?}", a.findings);
        let a = audit(&[stock(0, 5), admitted(1, 20, 1, 0, 100), admitted(2, 30, 5, 0, 200)]);
        assert!(a.findings[0].what.contains("admission number 5"), "{:?}", a.findings);
    }

    #[test]
    fn a_missing_or_swapped_entry_shows_in_the_indexes() {
        let a = audit(&[stock(0, 1), decision(2, "a", Outcome::SoldOut, 1, false)]);
        assert!(a.findings[0].what.contains("says it is entry 2"), "{:?}", a.findings);
        let a = audit(&[stock(0, 1), returned(1, "x")]);
        assert!(a.findings[0].what.contains("who held none"), "{:?}", a.findings);
    }
}
