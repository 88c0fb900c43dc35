//! What `flashgate verify` checks, from the files a drop's log publishes alone:
//!
//! 1. the checkpoint's signature, by a key the verifier trusts (pinned with `--key`, else the
//!    one the log's `metadata.json` names — trust on first use), and its origin line;
//! 2. every entry bundle: the entries they hold hash (RFC 6962) to the checkpoint's root;
//! 3. every hash tile: each is what the entries give;
//! 4. append-only: an earlier checkpoint the verifier kept is the root of a prefix of this
//!    log (the log was not rewritten or forked since);
//! 5. the drop's promises, recomputed from the entries ([`flashgate_core::transparency::Audit`]);
//! 6. with a receipt: the buyer's entry is in the log at its index, its inclusion proof
//!    holds, and (given the buyer id) the pseudonym is theirs.

use crate::Hash;
use crate::checkpoint::{self, Opened};
use crate::paths;
use crate::tree::{self, Tree};
use anyhow::{Context, anyhow};
use base64::Engine;
use flashgate_core::transparency::{self, Audit, Entry};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// Where a log's files are read from: relative paths such as `checkpoint` or
/// `tile/entries/000.p/3`; `Ok(None)` when there is no such file.
pub trait Source {
    fn get(&self, path: &str) -> impl Future<Output = anyhow::Result<Option<Vec<u8>>>> + Send;
}

/// A drop's `metadata.json`: what the log is about and who signs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub product_id: String,
    pub name: String,
    /// The checkpoints' origin line.
    pub origin: String,
    /// Verifier keys (`<name>+<id>+<base64>`) that sign the checkpoints.
    pub keys: Vec<String>,
    pub stock: i64,
    pub sale_starts_at_ms: i64,
    pub sale_ends_at_ms: Option<i64>,
    /// How far apart edge clocks may be (µs); the fairness check allows it.
    pub stamp_skew_us: i64,
    /// Where the entry format is defined.
    pub entry_format: String,
}

/// What a buyer keeps: their entry, its index, their pseudonym key, and (once a checkpoint
/// covers it) that checkpoint and the inclusion proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub product_id: String,
    pub index: u64,
    /// The entry's exact bytes (one line of JSON).
    pub entry: String,
    /// Hex; with the buyer id it recomputes the entry's `buyer`.
    pub pseudonym_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Base64 hashes, RFC 6962 audit path order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Vec<String>>,
}

impl Receipt {
    /// Whether `buyer_id` is the buyer this receipt's entry names.
    pub fn names(&self, buyer_id: &str) -> anyhow::Result<bool> {
        let key: [u8; 32] = hex::decode(&self.pseudonym_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .context("the receipt's pseudonymKey is not 32 bytes of hex")?;
        let entry = Entry::from_bytes(self.entry.as_bytes())
            .map_err(|e| anyhow!("the receipt's entry: {e}"))?;
        let buyer = match entry.body {
            transparency::Body::Decision { buyer, .. }
            | transparency::Body::Returned { buyer, .. } => buyer,
            _ => return Ok(false),
        };
        Ok(transparency::pseudonym(&key, buyer_id) == buyer)
    }
}

/// What the verifier is given besides the log.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Verifier keys to trust; empty: those `metadata.json` names.
    pub keys: Vec<String>,
    /// A checkpoint kept from an earlier run: this log must extend it.
    pub previous: Option<Vec<u8>>,
    pub receipt: Option<Receipt>,
    /// The buyer id the receipt should name.
    pub buyer: Option<String>,
}

/// What the verifier found.
#[derive(Debug, Clone)]
pub struct Report {
    pub metadata: Metadata,
    pub checkpoint: Opened,
    /// The checkpoint's bytes (to keep for the next run's `--previous`).
    pub checkpoint_note: Vec<u8>,
    pub audit: Audit,
    /// What holds, one line each.
    pub passed: Vec<String>,
    /// What does not; empty when the log verifies.
    pub failed: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

async fn required(source: &impl Source, path: &str) -> anyhow::Result<Vec<u8>> {
    source.get(path).await?.with_context(|| format!("the log has no {path}"))
}

fn hash_b64(hash: &Hash) -> String {
    base64::engine::general_purpose::STANDARD.encode(hash.0)
}

/// Verifies the log `source` serves. `Err` when the log cannot be read or its checkpoint
/// does not open; otherwise a [`Report`] listing what holds and what does not.
pub async fn verify(source: &impl Source, options: &Options) -> anyhow::Result<Report> {
    let metadata: Metadata = serde_json::from_slice(&required(source, "metadata.json").await?)
        .context("metadata.json")?;
    let keys = if options.keys.is_empty() { metadata.keys.clone() } else { options.keys.clone() };
    let note = required(source, "checkpoint").await?;
    let opened = checkpoint::open(&note, &keys)?;
    let mut passed = vec![format!(
        "checkpoint of {} entries signed by {}",
        opened.size,
        opened.signed_by.join(", ")
    )];
    let mut failed = Vec::new();
    if opened.origin != metadata.origin {
        failed.push(format!(
            "the checkpoint is for {:?}, not this drop's log {:?}",
            opened.origin, metadata.origin
        ));
    }

    // Entries, and the tree they make.
    let mut tree = Tree::default();
    let mut audit = Audit::new(metadata.stamp_skew_us);
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(opened.size as usize);
    for bundle in paths::bundles(opened.size) {
        let path = bundle.path();
        let bytes = required(source, &path).await?;
        let records = paths::decode_bundle(&bytes)
            .with_context(|| format!("{path} is not an entry bundle"))?;
        if records.len() as u64 != bundle.width {
            failed.push(format!("{path} holds {} entries, not {}", records.len(), bundle.width));
        }
        for record in records.into_iter().take(bundle.width as usize) {
            tree.append(&record).map_err(|e| anyhow!("hashing {path}: {e}"))?;
            audit.push(&record);
            entries.push(record);
        }
    }
    if tree.size() == opened.size {
        let root = tree.root().map_err(|e| anyhow!("{e}"))?;
        if root == opened.root {
            passed.push(format!("the {} entries hash to the checkpoint's root", opened.size));
        } else {
            failed.push(format!(
                "the entries hash to {}, not to the checkpoint's root {}: the log's entries were \
                 changed, removed, added or reordered after it was signed",
                hash_b64(&root),
                hash_b64(&opened.root)
            ));
        }
        // Every hash tile the tree has, against the entries.
        let mut tiles = 0;
        for tile in paths::tiles(opened.size).into_iter().filter(|t| !t.is_bundle()) {
            let path = tile.path();
            let served = required(source, &path).await?;
            let expected = tree.tile(&tile).map_err(|e| anyhow!("{e}"))?;
            if served != expected {
                failed.push(format!("{path} is not the hashes of the entries it covers"));
            }
            tiles += 1;
        }
        passed.push(format!("{tiles} hash tiles checked"));
    }

    // Append-only.
    if let Some(previous) = &options.previous {
        match checkpoint::open(previous, &keys) {
            Err(e) => failed.push(format!("the earlier checkpoint: {e}")),
            Ok(earlier) if earlier.origin != opened.origin => failed
                .push(format!("the earlier checkpoint is of another log ({:?})", earlier.origin)),
            Ok(earlier) if earlier.size > tree.size() => failed.push(format!(
                "the log shrank: an earlier checkpoint had {} entries, this one {}",
                earlier.size,
                tree.size()
            )),
            Ok(earlier) => match tree.root_at(earlier.size) {
                Ok(root) if root == earlier.root => passed.push(format!(
                    "consistent with the earlier checkpoint of {} entries (append-only)",
                    earlier.size
                )),
                _ => failed.push(format!(
                    "not consistent with the earlier checkpoint of {} entries: the log was \
                     rewritten (forked) after it",
                    earlier.size
                )),
            },
        }
    }

    // The drop's promises.
    for finding in &audit.findings {
        failed.push(finding.to_string());
    }
    passed.push(format!(
        "{} decisions: {} granted, {} returned, {} refused as sold out; stock {}; {} refusals \
         overtaken by late requests (the network's, reported); {} admissions from the waiting \
         room, {} of them behind a later place whose buyer joined after it (reported); {} \
         entries lost",
        audit.decisions,
        audit.grants,
        audit.returned,
        audit.refused_sold_out,
        audit.total.map_or_else(|| "unset".to_owned(), |t| t.to_string()),
        audit.late_inversions,
        audit.admissions,
        audit.late_joins,
        audit.lost
    ));

    if let Some(receipt) = &options.receipt {
        check_receipt(
            receipt,
            options,
            &keys,
            &tree,
            &entries,
            &metadata,
            &mut passed,
            &mut failed,
        );
    }

    Ok(Report { metadata, checkpoint: opened, checkpoint_note: note, audit, passed, failed })
}

#[allow(clippy::too_many_arguments)]
fn check_receipt(
    receipt: &Receipt,
    options: &Options,
    keys: &[String],
    tree: &Tree,
    entries: &[Vec<u8>],
    metadata: &Metadata,
    passed: &mut Vec<String>,
    failed: &mut Vec<String>,
) {
    let index = receipt.index;
    if receipt.product_id != metadata.product_id {
        failed.push(format!(
            "the receipt is for drop {}, not {}",
            receipt.product_id, metadata.product_id
        ));
    }
    match entries.get(index as usize) {
        None => failed.push(format!("the log has no entry {index} (the receipt's)")),
        Some(entry) if entry.as_slice() != receipt.entry.as_bytes() => {
            failed.push(format!("entry {index} is not the receipt's entry"))
        }
        Some(_) => passed.push(format!("the receipt's entry is entry {index} of the log")),
    }
    if let (Some(note), Some(proof)) = (&receipt.checkpoint, &receipt.proof) {
        let checked = checkpoint::open(note.as_bytes(), keys).and_then(|cp| {
            let proof: Vec<Hash> = proof
                .iter()
                .map(|h| {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(h)?;
                    Ok(Hash(bytes.try_into().map_err(|_| anyhow!("a proof hash is not 32 bytes"))?))
                })
                .collect::<anyhow::Result<_>>()?;
            tree::check_inclusion(&proof, cp.size, cp.root, index, receipt.entry.as_bytes())
                .map_err(|e| anyhow!("the inclusion proof does not hold: {e}"))?;
            let root = tree.root_at(cp.size.min(tree.size())).map_err(|e| anyhow!("{e}"))?;
            if cp.size > tree.size() || root != cp.root {
                anyhow::bail!("the receipt's checkpoint is not a prefix of this log (a fork)");
            }
            Ok(cp.size)
        });
        match checked {
            Ok(size) => passed.push(format!(
                "the receipt's inclusion proof holds in the checkpoint of {size} entries"
            )),
            Err(e) => failed.push(format!("receipt: {e}")),
        }
    }
    if let Some(buyer) = &options.buyer {
        match receipt.names(buyer) {
            Ok(true) => passed.push("the receipt's pseudonym is this buyer's".to_owned()),
            Ok(false) => failed.push("the receipt's pseudonym is not this buyer's".to_owned()),
            Err(e) => failed.push(format!("receipt: {e}")),
        }
    }
}

/// A log folder (what `flashgate transparency export` writes).
#[derive(Debug, Clone)]
pub struct Folder(pub std::path::PathBuf);

impl Source for Folder {
    async fn get(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.join(path)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("{}: {e}", self.0.join(path).display())),
        }
    }
}

/// Every file of a log holding `entries`, as a log publishes them: `metadata.json`, the
/// `checkpoint` signed by `signer`, every hash tile and entry bundle. (What tests build logs
/// with, honest or forged; the origin serves the same files from PostgreSQL.)
pub fn publish(
    entries: &[Vec<u8>],
    signer: &checkpoint::LogSigner,
    metadata: &Metadata,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut tree = Tree::default();
    for entry in entries {
        tree.append(entry).map_err(|e| anyhow!("{e}"))?;
    }
    let size = tree.size();
    let root = tree.root().map_err(|e| anyhow!("{e}"))?;
    let mut files = vec![
        ("metadata.json".to_owned(), serde_json::to_vec_pretty(metadata)?),
        ("checkpoint".to_owned(), signer.sign(&metadata.origin, size, root)?.into_bytes()),
    ];
    for tile in paths::tiles(size) {
        let bytes = if tile.is_bundle() {
            let start = tile.start() as usize;
            let slice = &entries[start..start + tile.width as usize];
            paths::encode_bundle(slice.iter().map(Vec::as_slice)).context("an entry over 64 KiB")?
        } else {
            tree.tile(&tile).map_err(|e| anyhow!("{e}"))?
        };
        files.push((tile.path(), bytes));
    }
    Ok(files)
}

/// Files in memory (tests).
#[derive(Debug, Clone, Default)]
pub struct Memory(pub std::collections::HashMap<String, Vec<u8>>);

impl Source for Memory {
    async fn get(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.get(path).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgate_core::transparency::{Body, Outcome, ReturnReason};

    fn entry(index: u64, body: Body) -> Vec<u8> {
        Entry { index, body }.to_bytes()
    }

    fn decision(index: u64, buyer: &str, outcome: Outcome, arrival_us: i64) -> Vec<u8> {
        entry(
            index,
            Body::Decision {
                arrival_us,
                edge: "e".into(),
                buyer: buyer.into(),
                outcome,
                at_ms: 5,
                late: false,
                window_us: 0,
            },
        )
    }

    fn honest(n: u64) -> Vec<Vec<u8>> {
        let mut entries =
            vec![entry(0, Body::Stock { total: 3, starts_at_ms: 0, ends_at_ms: None, at_ms: 0 })];
        for i in 1..n {
            let outcome = if i <= 3 { Outcome::Granted } else { Outcome::SoldOut };
            entries.push(decision(i, &format!("b{i}"), outcome, i as i64 * 10));
        }
        entries
    }

    fn signer() -> (checkpoint::LogSigner, Metadata) {
        let (skey, vkey) = checkpoint::key_from_seed("log.test", &[9; 32]).unwrap();
        let signer = checkpoint::LogSigner::new(&[skey]).unwrap();
        let metadata = Metadata {
            product_id: "p".into(),
            name: "log.test".into(),
            origin: signer.origin("p"),
            keys: vec![vkey],
            stock: 3,
            sale_starts_at_ms: 0,
            sale_ends_at_ms: None,
            stamp_skew_us: 0,
            entry_format: "docs/transparency.md".into(),
        };
        (signer, metadata)
    }

    fn source(entries: &[Vec<u8>]) -> Memory {
        let (signer, metadata) = signer();
        Memory(publish(entries, &signer, &metadata).unwrap().into_iter().collect())
    }

    async fn run(source: &Memory, options: &Options) -> Report {
        verify(source, options).await.unwrap()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        // The sources here never wait: one poll finishes them.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("a memory source waited"),
        }
    }

    #[test]
    fn an_honest_log_of_several_tiles_verifies_and_extends_its_earlier_checkpoint() {
        let entries = honest(600);
        let earlier = source(&entries[..300]);
        let later = source(&entries);
        let first = block_on(run(&earlier, &Options::default()));
        assert!(first.ok(), "{:?}", first.failed);
        let options =
            Options { previous: Some(first.checkpoint_note.clone()), ..Options::default() };
        let second = block_on(run(&later, &options));
        assert!(second.ok(), "{:?}", second.failed);
        assert_eq!((second.checkpoint.size, second.audit.grants), (600, 3));
        assert!(second.passed.iter().any(|p| p.contains("append-only")), "{:?}", second.passed);
    }

    #[test]
    fn tampering_after_the_fact_is_named() {
        let entries = honest(40);
        let earlier = block_on(run(&source(&entries), &Options::default()));
        let previous =
            Options { previous: Some(earlier.checkpoint_note.clone()), ..Options::default() };

        // A changed decision in the served bundle, the checkpoint left as signed.
        let mut changed = source(&entries);
        let mut forged = entries.clone();
        forged[5] = decision(5, "b5", Outcome::Granted, 50);
        let bundle = paths::encode_bundle(forged.iter().map(Vec::as_slice)).unwrap();
        changed.0.insert("tile/entries/000.p/40".into(), bundle);
        let report = block_on(run(&changed, &Options::default()));
        assert!(
            report.failed.iter().any(|f| f.contains("not to the checkpoint's root")),
            "{:?}",
            report.failed
        );

        // The operator rewrites and re-signs: a dropped refusal (renumbered), two entries
        // swapped, a refusal turned into a grant. Each forks from the earlier checkpoint,
        // and each also shows in the entries themselves.
        let mut dropped: Vec<Vec<u8>> = entries.clone();
        dropped.remove(10);
        for (i, e) in dropped.iter_mut().enumerate() {
            let mut entry = Entry::from_bytes(e).unwrap();
            entry.index = i as u64;
            *e = entry.to_bytes();
        }
        let mut swapped = entries.clone();
        swapped.swap(2, 20);
        let mut oversold = entries.clone();
        oversold[12] = decision(12, "b12", Outcome::Granted, 120);
        let mut grew = entries.clone();
        grew.push(decision(40, "late", Outcome::SoldOut, 1));
        for (name, forged) in [("dropped", dropped), ("swapped", swapped), ("oversold", oversold)] {
            let report = block_on(run(&source(&forged), &previous));
            assert!(
                report
                    .failed
                    .iter()
                    .any(|f| f.contains("rewritten (forked)") || f.contains("shrank")),
                "{name}: {:?}",
                report.failed
            );
        }
        let report = block_on(run(&source(&grew), &previous));
        assert!(report.failed.iter().all(|f| !f.contains("forked")), "{:?}", report.failed);
        let mut swapped = entries.clone();
        swapped.swap(2, 20);
        let report = block_on(run(&source(&swapped), &Options::default()));
        assert!(
            report.failed.iter().any(|f| f.contains("says it is entry")),
            "{:?}",
            report.failed
        );
        let mut oversold = entries;
        oversold[12] = decision(12, "b12", Outcome::Granted, 120);
        let report = block_on(run(&source(&oversold), &Options::default()));
        assert!(
            report.failed.iter().any(|f| f.contains("exceeds the stock")),
            "{:?}",
            report.failed
        );
    }

    #[test]
    fn a_receipt_is_checked_against_the_log_and_its_buyer() {
        let drop = transparency::drop_key(b"secret", "p");
        let key = transparency::buyer_key(&drop, "alice");
        let mut entries = honest(10);
        entries[2] = decision(2, &transparency::pseudonym(&key, "alice"), Outcome::Granted, 20);
        entries.push(entry(
            10,
            Body::Returned { buyer: "b1".into(), reason: ReturnReason::Expired, at_ms: 9 },
        ));
        let served = source(&entries);
        let (signer, metadata) = signer();
        let mut tree = Tree::default();
        entries.iter().for_each(|e| drop_result(tree.append(e)));
        let note = signer.sign(&metadata.origin, 11, tree.root().unwrap()).unwrap();
        let proof = tree.prove(11, 2).unwrap().iter().map(hash_b64).collect();
        let receipt = Receipt {
            product_id: "p".into(),
            index: 2,
            entry: String::from_utf8(entries[2].clone()).unwrap(),
            pseudonym_key: hex::encode(key),
            checkpoint: Some(note),
            proof: Some(proof),
        };
        let options = Options {
            receipt: Some(receipt.clone()),
            buyer: Some("alice".into()),
            ..Options::default()
        };
        let report = block_on(run(&served, &options));
        assert!(report.ok(), "{:?}", report.failed);
        assert_eq!(
            report.passed.iter().filter(|p| p.contains("receipt")).count(),
            3,
            "{:?}",
            report.passed
        );
        let someone_else = Options { buyer: Some("mallory".into()), ..options.clone() };
        assert!(!block_on(run(&served, &someone_else)).ok());
        let moved = Options { receipt: Some(Receipt { index: 3, ..receipt }), ..options };
        assert!(!block_on(run(&served, &moved)).ok());
    }

    fn drop_result<T, E: std::fmt::Debug>(r: Result<T, E>) {
        r.unwrap();
    }
}
