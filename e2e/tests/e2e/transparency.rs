//! Each drop's public log (issue #31), checked as a buyer or an auditor would: from what the
//! edge serves, with `flashgate verify`'s code (`flashgate_cli::transparency`), and after
//! the stored log is tampered with.

use flashgate_cli::transparency::{Location, export};
use flashgate_e2e::{DrivenOrigin, Stack};
use flashgate_origin::transparency::builder::Builder;
use flashgate_tlog::verify::{Options, Receipt, Report};
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

async fn verify(prefix: &str, options: &Options) -> Report {
    Location::parse(prefix).unwrap().verify(options).await.unwrap()
}

/// Waits until every entry the scripts numbered is in the newest signed checkpoint.
async fn settled(stack: &Stack, product: Uuid) -> u64 {
    let key = format!("fg:{{{product}}}:product");
    let url = stack.edge.url(&format!("/transparency/{product}/checkpoint"));
    for _ in 0..200 {
        let numbered: Option<u64> =
            stack.redis.query(redis::cmd("HGET").arg(&key).arg("logSize")).await.unwrap();
        let answer = stack.http.get(&url).send().await.unwrap();
        if answer.status() == 200 {
            let note = answer.bytes().await.unwrap();
            let size = flashgate_tlog::checkpoint::size_of(&note).unwrap();
            if Some(size) == numbered {
                return size;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log of {product} did not catch up with its decisions");
}

#[tokio::test]
async fn a_storm_through_the_edge_verifies_from_what_the_edge_serves_and_each_buyer_has_a_receipt()
{
    let stack = Stack::start().await.unwrap();
    let product = stack.origin.create_product(&stack.id, 20).await.unwrap();
    let buyers: Vec<Uuid> = (0..150).map(|_| Uuid::new_v4()).collect();
    let answers: Vec<(Uuid, u16, Value)> = futures::stream::iter(buyers.iter().copied())
        .map(|buyer| {
            let stack = &stack;
            async move {
                let answer = stack.acquire(&stack.id.buyer(buyer), product).await.unwrap();
                let status = answer.status().as_u16();
                (buyer, status, answer.json::<Value>().await.unwrap_or(Value::Null))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let granted: Vec<&(Uuid, u16, Value)> = answers.iter().filter(|a| a.1 == 201).collect();
    assert_eq!(granted.len(), 20, "exactly the stock is granted");
    // Every answer the origin decided carries the buyer's entry; the edge's own sold-out
    // answers (from its hint) do not.
    for (_, status, body) in &answers {
        let receipt = &body["receipt"];
        if *status == 201 {
            assert!(
                receipt["entry"].as_str().unwrap().contains(r#""outcome":"granted""#),
                "{body}"
            );
        } else if receipt.is_object() {
            assert!(
                receipt["entry"].as_str().unwrap().contains(r#""outcome":"sold_out""#),
                "{body}"
            );
        }
    }

    let size = settled(&stack, product).await;
    // The edge's own sold-out answers name the log entry that showed the sell-out: the
    // grant of the last unit or a refusal for lack of stock, both in the log.
    let named: Vec<u64> =
        answers.iter().filter_map(|(_, _, body)| body["soldOutAtEntry"].as_u64()).collect();
    println!("{} of the edge's own sold-out answers named a log entry", named.len());
    let entries = stored(&stack.origin.state.db, product).await;
    for index in named {
        let entry = String::from_utf8_lossy(&entries[index as usize]).into_owned();
        assert!(
            entry.contains(r#""outcome":"granted""#) || entry.contains(r#""outcome":"sold_out""#),
            "{entry}"
        );
    }
    let prefix = stack.edge.url(&format!("/transparency/{product}"));
    let pinned = Options { keys: vec![stack.id.transparency_vkey()], ..Options::default() };
    let report = verify(&prefix, &pinned).await;
    if !report.ok() {
        for entry in &entries {
            eprintln!("{}", String::from_utf8_lossy(entry));
        }
    }
    assert!(report.ok(), "{:?}", report.failed);
    assert_eq!(report.checkpoint.size, size);
    assert_eq!((report.audit.grants, report.audit.returned, report.audit.total), (20, 0, Some(20)));
    assert_eq!(report.audit.decisions + 1, size, "a stock entry, then one entry per decision");
    assert_eq!(report.metadata.keys, vec![stack.id.transparency_vkey()]);

    // A winner's receipt: the acquisition's answer has the entry at once; the receipt route
    // adds the checkpoint and the inclusion proof.
    let (winner, _, body) = granted[0];
    let answered: Receipt = serde_json::from_value(body["receipt"].clone()).unwrap();
    let full: Receipt = stack
        .http
        .get(stack.edge.url(&format!("/receipts/{product}")))
        .bearer_auth(stack.id.buyer(*winner))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (full.index, &full.entry, &full.pseudonym_key),
        (answered.index, &answered.entry, &answered.pseudonym_key)
    );
    let mine =
        Options { receipt: Some(full.clone()), buyer: Some(winner.to_string()), ..pinned.clone() };
    let report = verify(&prefix, &mine).await;
    assert!(report.ok(), "{:?}", report.failed);
    assert_eq!(
        report.passed.iter().filter(|p| p.contains("receipt")).count(),
        3,
        "{:?}",
        report.passed
    );
    // Somebody else's id does not open it.
    let theirs = Options { buyer: Some(buyers[149].to_string()), ..mine };
    assert!(!verify(&prefix, &theirs).await.ok());
    // Nor does the public log say who the buyers are.
    let bundle = stack
        .http
        .get(format!("{prefix}/tile/entries/000.p/{}", size.min(255)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!bundle.contains(&winner.to_string()), "a buyer id in the public log");

    // A copy in a folder verifies the same, and extends the checkpoint seen before.
    let dir = tempdir();
    assert_eq!(export(&prefix, &dir).await.unwrap(), size);
    let again = Options { previous: Some(report.checkpoint_note.clone()), ..pinned };
    let copy = verify(dir.to_str().unwrap(), &again).await;
    assert!(copy.ok(), "{:?}", copy.failed);
    assert!(copy.passed.iter().any(|p| p.contains("append-only")), "{:?}", copy.passed);
}

/// Every entry of `product`'s log as PostgreSQL stores it, in order.
async fn stored(db: &sqlx::PgPool, product: Uuid) -> Vec<Vec<u8>> {
    flashgate_origin::pg::transparency::entries(db, product, 0, i64::MAX).await.unwrap()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fg-log-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A driven origin with a drop of `stock`, `buyers` acquisitions decided and built into its
/// log: the builder, and the log's URL at the origin.
async fn built(t: &DrivenOrigin, stock: i64, buyers: usize) -> (Uuid, Builder, String) {
    let product = t.origin.create_product(&t.id, stock).await.unwrap();
    for _ in 0..buyers {
        t.acquire(Uuid::new_v4(), product).await.unwrap();
    }
    let builder = Builder::new(
        t.origin.state.inventory.clone(),
        t.origin.state.db.clone(),
        t.origin.state.transparency.clone().unwrap(),
    );
    builder.step().await.unwrap();
    (product, builder, format!("http://{}/transparency/{product}", t.origin.addr))
}

#[tokio::test]
async fn returned_units_are_logged_and_conservation_adds_up_from_the_log_alone() {
    let t = DrivenOrigin::start().await.unwrap();
    let (product, builder, prefix) = built(&t, 2, 3).await;
    t.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(t.worker().step().await.unwrap().expired, 2);
    for _ in 0..2 {
        assert_eq!(t.acquire(Uuid::new_v4(), product).await.unwrap().status(), 201);
    }
    let report = builder.step().await.unwrap();
    assert_eq!((report.appended, report.signed, report.lost), (4, 1, 0));
    let log = verify(&prefix, &Options::default()).await;
    assert!(log.ok(), "{:?}", log.failed);
    assert_eq!(
        (log.audit.grants, log.audit.returned, log.audit.refused_sold_out, log.audit.outstanding()),
        (4, 2, 1, 2)
    );
    // Nothing new: no new checkpoint either.
    assert_eq!(builder.step().await.unwrap().signed, 0);
}

#[tokio::test]
async fn a_build_cut_short_is_not_built_twice_and_entries_lost_with_redis_are_published_as_lost() {
    let t = DrivenOrigin::start().await.unwrap();
    let (product, builder, prefix) = built(&t, 5, 3).await;
    let stream = format!("fg:{{{product}}}:log");
    // Two more decisions; the first one's stream entry is lost (as with Redis's data).
    t.acquire(Uuid::new_v4(), product).await.unwrap();
    t.acquire(Uuid::new_v4(), product).await.unwrap();
    let ids: Vec<(String, Vec<(String, String)>)> =
        t.redis.query(redis::cmd("XRANGE").arg(&stream).arg("-").arg("+")).await.unwrap();
    assert_eq!(ids.len(), 2);
    let _: i64 = t.redis.query(redis::cmd("XDEL").arg(&stream).arg(&ids[0].0)).await.unwrap();
    // An entry built already and put back (a crash before its deletion) is skipped.
    let _: String = t
        .redis
        .query(
            redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("index")
                .arg(0)
                .arg("kind")
                .arg("stock")
                .arg("total")
                .arg(99)
                .arg("startsAtMs")
                .arg(0)
                .arg("endsAtMs")
                .arg("")
                .arg("atMs")
                .arg(0),
        )
        .await
        .unwrap();
    let report = builder.step().await.unwrap();
    assert_eq!((report.appended, report.lost), (2, 1), "{report:?}");
    let log = verify(&prefix, &Options::default()).await;
    assert!(log.ok(), "{:?}", log.failed);
    assert_eq!((log.audit.lost, log.audit.total, log.checkpoint.size), (1, Some(5), 6));
}

/// Runs `sql` against the stored log of `product`.
async fn tamper(t: &DrivenOrigin, sql: &str, product: Uuid) {
    sqlx::query(sql).bind(product).execute(&t.origin.state.db).await.unwrap();
}

#[tokio::test]
async fn tampering_with_the_stored_log_is_caught_and_named() {
    let t = DrivenOrigin::start().await.unwrap();
    // 3 units, 8 buyers: entries 1–3 granted, 4–8 refused as sold out.
    let (product, _builder, prefix) = built(&t, 3, 8).await;
    let honest = verify(&prefix, &Options::default()).await;
    assert!(honest.ok(), "{:?}", honest.failed);
    assert_eq!(honest.checkpoint.size, 9);
    let dir = tempdir();
    export(&prefix, &dir).await.unwrap();
    let original = stored(&t.origin.state.db, product).await;

    // A decision changed: a refusal turned into a grant.
    tamper(
        &t,
        "UPDATE transparency_entries SET entry = convert_to(replace(convert_from(entry, 'UTF8'), \
         'sold_out', 'granted'), 'UTF8') WHERE product_id = $1 AND idx = 5",
        product,
    )
    .await;
    let report = verify(&prefix, &Options::default()).await;
    assert!(
        report.failed.iter().any(|f| f.contains("not to the checkpoint's root")),
        "{:?}",
        report.failed
    );
    assert!(report.failed.iter().any(|f| f.contains("exceeds the stock")), "{:?}", report.failed);

    // Two entries swapped.
    tamper(&t, "UPDATE transparency_entries SET entry = CASE idx WHEN 2 THEN (SELECT entry FROM transparency_entries WHERE product_id = $1 AND idx = 7) ELSE (SELECT entry FROM transparency_entries WHERE product_id = $1 AND idx = 2) END WHERE product_id = $1 AND idx IN (2, 7)", product).await;
    let report = verify(&prefix, &Options::default()).await;
    assert!(report.failed.iter().any(|f| f.contains("says it is entry")), "{:?}", report.failed);

    // A refused entry dropped (the rest moved up).
    tamper(&t, "DELETE FROM transparency_entries WHERE product_id = $1 AND idx = 6", product).await;
    tamper(
        &t,
        "UPDATE transparency_entries SET idx = idx - 1 WHERE product_id = $1 AND idx > 6",
        product,
    )
    .await;
    let report = verify(&prefix, &Options::default()).await;
    assert!(!report.ok());
    assert!(
        report
            .failed
            .iter()
            .any(|f| f.contains("holds 8 entries, not 9")
                || f.contains("not to the checkpoint's root")),
        "{:?}",
        report.failed
    );

    // A fork: the operator rewrites the log and signs it again with the log's own key. Only
    // someone who kept an earlier checkpoint (a buyer's receipt, an auditor's last run)
    // can tell, and they do.
    let mut forked = original.clone();
    forked.truncate(6);
    let (signer, metadata) = (
        flashgate_tlog::checkpoint::LogSigner::new(std::slice::from_ref(&t.id.transparency_key))
            .unwrap(),
        honest.metadata.clone(),
    );
    let files = flashgate_tlog::verify::publish(&forked, &signer, &metadata).unwrap();
    let fork = tempdir();
    for (path, bytes) in files {
        let file = fork.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
    let alone = verify(fork.to_str().unwrap(), &Options::default()).await;
    assert!(alone.ok(), "a rewritten log is consistent in itself: {:?}", alone.failed);
    let kept = Options { previous: Some(honest.checkpoint_note.clone()), ..Options::default() };
    let report = verify(fork.to_str().unwrap(), &kept).await;
    assert!(report.failed.iter().any(|f| f.contains("shrank")), "{:?}", report.failed);
    let mut rewritten = original.clone();
    rewritten.swap(5, 6);
    let files = flashgate_tlog::verify::publish(&rewritten, &signer, &metadata).unwrap();
    for (path, bytes) in files {
        std::fs::write(fork.join(path), bytes).unwrap();
    }
    let report = verify(fork.to_str().unwrap(), &kept).await;
    assert!(report.failed.iter().any(|f| f.contains("rewritten (forked)")), "{:?}", report.failed);

    // The folder exported before the tampering still verifies.
    let copy = verify(dir.to_str().unwrap(), &Options::default()).await;
    assert!(copy.ok(), "{:?}", copy.failed);
}
