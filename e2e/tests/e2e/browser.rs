//! The people-facing parts in a real browser (issue #17): Debian's chromium, driven headless
//! by playwright-core (`e2e/browser/drop.mjs`), against the real stack. Buyer A waits in the
//! queue, is admitted, acquires, sees the hold count down and pays; buyer B sees sold out;
//! the operator console shows the grant within a second and its invariant check passes; a
//! product named like an attack (review, issue #30) is shown as text and runs nothing.
//! Screenshots of both pages land in `target/screenshots/` (`FLASHGATE_SCREENSHOTS=docs`
//! refreshes the ones in `docs/`).

use flashgate_e2e::{Stack, free_port, repo_root};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
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
    // Opens in an hour, so the page counts down and the buyer lines up before the sale; the
    // test opens it when drop.mjs says the buyer stands in line (no race with the countdown).
    let opens = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let product = s.origin.create_product_starting(&s.id, 1, opens).await.unwrap();
    s.origin
        .configure_queue(&s.id, product, json!({"mode": "always", "admitPerSecond": 5}))
        .await
        .unwrap();
    // A product named like an attack: markup, an inline script, a direction override.
    let injected_name =
        "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>\u{202E}gpj.exe";
    let mut body = flashgate_e2e::product_body(1, time::OffsetDateTime::now_utc()).unwrap();
    body["name"] = json!(injected_name);
    let created = s
        .http
        .post(s.origin.url("/products"))
        .bearer_auth(s.id.admin())
        .json(&body)
        .send()
        .await
        .unwrap();
    let injected = flashgate_e2e::json_of(created, 201).await["productId"].clone();
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
        "injected": injected,
        "buyerA": s.id.buyer(Uuid::new_v4()),
        "buyerB": s.id.buyer(Uuid::new_v4()),
        "admin": s.id.admin(),
        "docs": docs,
    });
    let mut node = tokio::process::Command::new("node")
        .arg(browser_dir.join("drop.mjs"))
        .arg(config.to_string())
        .current_dir(&browser_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut stderr = node.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        stderr.read_to_string(&mut text).await.map(|_| text)
    });
    let (mut stdout, mut opened) = (Vec::new(), false);
    let finished = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if !opened && line.contains(r#""event":"queued""#) {
                // The operator opens the sale now (the start is not locked: nothing granted).
                s.origin
                    .set_sale_start(&s.id, product, 1, time::OffsetDateTime::now_utc())
                    .await
                    .unwrap();
                opened = true;
            }
            stdout.push(line);
        }
        node.wait().await.unwrap()
    })
    .await
    .expect("the browser run ends (a stuck run is stopped after 10 minutes)");
    let stdout = stdout.join("\n");
    assert!(
        finished.success(),
        "drop.mjs failed: {}\n{stdout}",
        errors.await.unwrap().unwrap_or_default()
    );
    assert!(opened, "drop.mjs never said the buyer stood in line: {stdout}");
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
    // The buyer's receipt, checked in the page against the drop's signed log.
    let receipt = seen["receipt"].as_str().unwrap();
    assert!(
        receipt.starts_with("Request #")
            && receipt.contains("decided (granted)")
            && receipt.ends_with("verified against the drop's signed log."),
        "{seen}"
    );
    assert!(seen["paid"].as_str().unwrap().starts_with("Paid."), "{seen}");
    assert!(seen["soldOut"].as_str().unwrap().starts_with("Sold out"), "{seen}");
    assert_eq!(seen["buyHidden"], true);
    // Shown without a reload; the time it took is a figure, not a pass mark (it polls at 2 Hz).
    let latency = seen["consoleLatencyMs"].as_u64().unwrap();
    println!("the console showed the grant {latency} ms after the buyer's page did");
    assert!(seen["check"].as_str().unwrap().starts_with("All invariants hold"), "{seen}");
    // The attack's name is text: shown as sent, no element made of it, nothing run.
    assert_eq!(seen["injectedName"], injected_name, "{seen}");
    assert!(seen["injectedTitle"].as_str().unwrap().starts_with(injected_name), "{seen}");
    assert_eq!(seen["injectedElements"], 0, "{seen}");
    assert_eq!(seen["pwned"], Value::Null, "{seen}");
    for shot in ["buyer-page.png", "buyer-queue.png", "console.png"] {
        let len = std::fs::metadata(docs.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{shot} is {len} bytes");
    }
}
