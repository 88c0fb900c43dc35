//! What an operator watches, against real parts: a real Prometheus (Debian's `prometheus`,
//! installed by scripts/setup.sh) scrapes a live origin and the edge host's admin listener,
//! loads `deploy/prometheus/alerts.yaml`, and this test reads the series back through its
//! query API: the figures of a small drop, and every query of `deploy/grafana/flashgate.json`
//! and of the alert rules, each checked to run and to name only series Prometheus has.

use anyhow::{Context, Result, bail};
use flashgate_e2e::{Stack, free_port, now_us, repo_root};
use flashgate_origin::store::fairness::Fairness;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

/// A private Prometheus scraping `origin` and `edge_admin` every second.
struct Prometheus {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    fn start(origin: SocketAddr, edge_admin: SocketAddr) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("flashgate-prometheus-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let rules = repo_root().join("deploy/prometheus/alerts.yaml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n\
             \x20 - job_name: flashgate-origin\n    static_configs:\n      - targets: ['{origin}']\n\
             \x20 - job_name: flashgate-edge\n    static_configs:\n      - targets: ['{edge_admin}']\n",
            rules = rules.display(),
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus (scripts/setup.sh installs it)")?;
        Ok(Self { child, url: format!("http://{addr}"), dir })
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let response =
            reqwest::Client::new().get(format!("{}{path}", self.url)).query(query).send().await?;
        let body: Value = response.json().await?;
        if body["status"] != "success" {
            bail!("{path} {query:?}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// An instant query's samples.
    async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of an instant query (summed), or `None` if it has no sample.
    async fn value(&self, expr: &str) -> Result<Option<f64>> {
        let samples = self.query(expr).await?;
        Ok((!samples.is_empty()).then(|| {
            samples.iter().filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok()).sum()
        }))
    }

    /// Waits until `expr` has a value satisfying `ok` (Prometheus scrapes every second).
    async fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool) -> Result<f64> {
        let mut last = None;
        for _ in 0..300 {
            if let Ok(Some(v)) = self.value(expr).await {
                if ok(v) {
                    return Ok(v);
                }
                last = Some(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("`{expr}` never got there (last {last:?})")
    }
}

/// The metric names (`flashgate_…` and `up`) an expression reads.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("flashgate_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // A histogram is exported as its _bucket, _count and _sum series.
        names.insert(expr[start..end].to_owned());
        i = end;
    }
    names
}

#[test]
fn names_are_read_off_expressions() {
    let names = names_in("sum(rate(flashgate_a_total[1m])) / max(flashgate_b_seconds_bucket)");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["flashgate_a_total", "flashgate_b_seconds_bucket"]
    );
}

fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana/flashgate.json"))?;
    let dashboard: Value = serde_json::from_str(&text)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"].as_str().context("a target without expr")?;
            queries.push((title.to_owned(), expr.to_owned()));
        }
    }
    Ok(queries)
}

#[tokio::test]
async fn prometheus_scrapes_origin_and_edge_and_every_dashboard_and_alert_query_reads_real_series()
{
    // A fixed fairness window, so that a late arrival is one (an adaptive window with a
    // single edge holds nothing).
    let window = Fairness::Fixed(Duration::from_millis(20));
    let s = Stack::start_configured(|o| o.fairness = window, |_| {}).await.unwrap();
    let admin = s.edge.admin.expect("the test edge has an admin listener");
    let product = s.origin.create_product(&s.id, 3).await.unwrap();

    // A small drop through the edge: 3 grants, then sold-out answers (the last ones from
    // the edge's own availability hint).
    let buyers: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut granted = Vec::new();
    for buyer in &buyers {
        let r = s.acquire(&s.id.buyer(*buyer), product).await.unwrap();
        if r.status() == 201 {
            let body: Value = r.json().await.unwrap();
            granted.push((*buyer, body["slotId"].as_str().unwrap().to_owned()));
        } else {
            assert_eq!(r.status(), 409);
        }
    }
    assert_eq!(granted.len(), 3);
    // One of them pays (the simulated processor settles it by webhook).
    let (payer, slot) = &granted[0];
    let paid = s
        .http
        .post(s.edge.url("/payments"))
        .bearer_auth(s.id.buyer(*payer))
        .header("idempotency-key", "observability-1")
        .json(&json!({ "slotId": slot, "method": "card" }))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 202, "{}", paid.text().await.unwrap());
    // An acquisition that reaches the origin far later than its stamp: a late arrival.
    let late = s
        .origin
        .acquire_signed(&s.id, Uuid::new_v4(), product, now_us() - 2_000_000)
        .await
        .unwrap();
    assert_eq!(late.status(), 409);

    // The admin listener serves what the buyers' port does not.
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("flashgate_edge_request_duration_seconds"));
    let health = reqwest::get(format!("http://{admin}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let buyers_port = reqwest::get(s.edge.url("/metrics")).await.unwrap();
    assert_eq!(buyers_port.status(), 404, "/metrics is not served to buyers");

    let prometheus = Prometheus::start(s.origin.addr, admin).unwrap();
    prometheus.wait_for(r#"sum(up{job=~"flashgate-.*"})"#, |v| v == 2.0).await.unwrap();

    // The drop's figures, as Prometheus has them.
    let granted_series = r#"flashgate_acquisitions_total{outcome="granted"}"#;
    assert_eq!(prometheus.wait_for(granted_series, |v| v == 3.0).await.unwrap(), 3.0);
    prometheus.wait_for("sum(flashgate_product_remaining_units)", |v| v == 0.0).await.unwrap();
    prometheus.wait_for("max(flashgate_invariant_oversold_products)", |v| v == 0.0).await.unwrap();
    let hinted = r#"sum(flashgate_edge_request_duration_seconds_count{decision="sold-out"})"#;
    prometheus.wait_for(hinted, |v| v >= 1.0).await.unwrap();
    let forwarded = r#"sum(flashgate_edge_request_duration_seconds_count{decision="forwarded"})"#;
    prometheus.wait_for(forwarded, |v| v >= 4.0).await.unwrap();
    prometheus.wait_for("sum(flashgate_fairness_late_total)", |v| v == 1.0).await.unwrap();
    prometheus
        .wait_for(r#"flashgate_payments_total{event="completed"}"#, |v| v == 1.0)
        .await
        .unwrap();
    prometheus
        .wait_for(
            r#"sum(flashgate_payment_gateway_duration_seconds_count{operation="charge"})"#,
            |v| v >= 1.0,
        )
        .await
        .unwrap();
    // Grants, the payment's creation and its completion reach PostgreSQL.
    prometheus.wait_for("sum(flashgate_persister_applied_total)", |v| v >= 5.0).await.unwrap();
    prometheus.wait_for("max(flashgate_outbox_lag_seconds)", |v| v == 0.0).await.unwrap();
    prometheus
        .wait_for(r#"min(flashgate_dependency_up{dependency="redis"})"#, |v| v == 1.0)
        .await
        .unwrap();
    prometheus.wait_for("sum(flashgate_edge_instantiations_total)", |v| v >= 1.0).await.unwrap();

    // Every name the dashboard and the alerts read is a series Prometheus has...
    let known: BTreeSet<String> = prometheus
        .api("/api/v1/label/__name__/values", &[])
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let rules = prometheus.api("/api/v1/rules", &[]).await.unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            alerts.push((
                rule["name"].as_str().unwrap().to_owned(),
                rule["query"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(alerts.len(), 12, "every rule of alerts.yaml is loaded");
    let queries = dashboard_queries().unwrap();
    assert!(queries.len() >= 18);
    for (what, expr) in queries.iter().chain(&alerts) {
        for name in names_in(expr) {
            assert!(known.contains(&name), "`{what}` reads {name}, which Prometheus does not have");
        }
        // ...and every query runs.
        prometheus.query(expr).await.unwrap_or_else(|e| panic!("`{what}`: {e}"));
    }
    // With a healthy drop, no alert fires.
    let firing = prometheus.api("/api/v1/alerts", &[]).await.unwrap();
    let firing: Vec<&Value> =
        firing["alerts"].as_array().unwrap().iter().filter(|a| a["state"] == "firing").collect();
    assert!(firing.is_empty(), "{firing:?}");
}
