//! The people-facing parts in a real browser (issue #17): Debian's chromium, driven headless
//! by playwright-core (`e2e/browser/drop.mjs`), against the real stack. Buyer A waits in the
//! queue, is admitted, acquires, sees the hold count down and pays; buyer B sees sold out;
//! the operator console shows the grant within a second and its invariant check passes.
//! Screenshots of both pages land in `target/screenshots/` (`FLASHGATE_SCREENSHOTS=docs`
//! refreshes the ones in `docs/`).

use flashgate_e2e::{Stack, free_port, repo_root};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

fn chromium() -> String {
    std::env::var("FLASHGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_queues_buys_and_pays_in_chromium_while_the_console_shows_the_grant() {
    let browser_dir = repo_root().join("e2e/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: scripts/setup.sh --browser"
    );
    let edge_admin = free_port().unwrap();
    let s = Stack::start_configured(
        |o| o.edge_metrics_urls = vec![format!("http://127.0.0.1:{edge_admin}/metrics")],
        |e| {
            e.admin_listen = Some(format!("127.0.0.1:{edge_admin}").parse().unwrap());
            for (k, v) in [("rate_user_per_sec", "0"), ("rate_address_per_sec", "0")] {
                e.variables.insert(k.to_owned(), v.to_owned());
            }
        },
    )
    .await
    .unwrap();
    // Opens shortly, so the page counts down first and the buyer lines up before the sale.
    let opens = time::OffsetDateTime::now_utc() + time::Duration::seconds(8);
    let product = s.origin.create_product_starting(&s.id, 1, opens).await.unwrap();
    s.origin
        .configure_queue(&s.id, product, json!({"mode": "always", "admitPerSecond": 5}))
        .await
        .unwrap();
    // Screenshots go to target/screenshots, so a test run leaves the tree clean;
    // `FLASHGATE_SCREENSHOTS=docs` refreshes the ones docs/ shows.
    let docs = match std::env::var("FLASHGATE_SCREENSHOTS") {
        Ok(dir) => repo_root().join(dir),
        Err(_) => repo_root().join("target/screenshots"),
    };
    std::fs::create_dir_all(&docs).unwrap();
    let config = json!({
        "chromium": chromium(),
        "edge": s.edge.url(""),
        "origin": s.origin.url(""),
        "product": product,
        "buyerA": s.id.buyer(Uuid::new_v4()),
        "buyerB": s.id.buyer(Uuid::new_v4()),
        "admin": s.id.admin(),
        "docs": docs,
    });
    let run = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(browser_dir.join("drop.mjs"))
            .arg(config.to_string())
            .current_dir(&browser_dir)
            .output(),
    )
    .await
    .expect("the browser run finishes within 3 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "drop.mjs failed: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    println!("the browser saw: {seen}");

    assert!(seen["countdown"].as_str().is_some_and(|c| c.contains(':')), "{seen}");
    assert_eq!(seen["position"], "1");
    let hold = seen["holdLeft"].as_array().unwrap();
    assert!(
        hold[0].as_str().unwrap().starts_with("29:") || hold[0].as_str().unwrap() == "30:00",
        "{seen}"
    );
    assert_ne!(hold[0], hold[1], "the hold counts down");
    assert!(seen["paid"].as_str().unwrap().starts_with("Paid."), "{seen}");
    assert!(seen["soldOut"].as_str().unwrap().starts_with("Sold out"), "{seen}");
    assert_eq!(seen["buyHidden"], true);
    let latency = seen["consoleLatencyMs"].as_u64().unwrap();
    assert!(latency <= 1_000, "the console showed the grant after {latency} ms");
    assert!(seen["check"].as_str().unwrap().starts_with("All invariants hold"), "{seen}");
    for shot in ["buyer-page.png", "buyer-queue.png", "console.png"] {
        let len = std::fs::metadata(docs.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{shot} is {len} bytes");
    }
}
