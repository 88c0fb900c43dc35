//! What the origin reads of the edge hosts: their decisions, from the `/metrics` of their
//! admin listeners (`FLASHGATE_EDGE_METRICS_URLS`), for the operator console.

use std::collections::BTreeMap;
use std::time::Duration;

/// The edge hosts whose decisions the console shows.
#[derive(Clone, Default)]
pub struct EdgeMetrics {
    urls: Vec<String>,
    client: reqwest::Client,
}

impl EdgeMetrics {
    pub fn new(urls: Vec<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("a client with a timeout builds");
        Self { urls, client }
    }

    /// Every configured edge host's requests so far by decision
    /// (`flashgate_edge_request_duration_seconds_count`), summed; `None` without edge metrics
    /// URLs. An edge that does not answer within a second is left out (the console shows
    /// what it could read).
    pub async fn decisions(&self) -> Option<BTreeMap<String, f64>> {
        if self.urls.is_empty() {
            return None;
        }
        let mut totals = BTreeMap::new();
        for url in &self.urls {
            let text = match self.client.get(url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => {
                    tracing::debug!(url, error = %e, "edge metrics not read");
                    continue;
                }
            };
            for (decision, count) in decisions_in(&text) {
                *totals.entry(decision).or_insert(0.0) += count;
            }
        }
        Some(totals)
    }
}

/// `(decision, count)` of every `flashgate_edge_request_duration_seconds_count` sample.
fn decisions_in(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with("flashgate_edge_request_duration_seconds_count{"))
        .filter_map(|l| {
            let labels = l.split_once('{')?.1.split_once('}')?.0;
            let decision = labels
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("decision=\""))?
                .trim_end_matches('"');
            Some((decision.to_owned(), l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_decisions_are_read_from_the_hosts_metrics() {
        let text = "# TYPE x histogram\n\
            flashgate_edge_request_duration_seconds_count{component=\"edge\",status=\"409\",decision=\"sold-out\"} 12\n\
            flashgate_edge_request_duration_seconds_count{component=\"edge\",status=\"201\",decision=\"forwarded\"} 3\n\
            flashgate_edge_request_duration_seconds_sum{component=\"edge\",status=\"201\",decision=\"forwarded\"} 0.5\n";
        assert_eq!(
            decisions_in(text),
            vec![("sold-out".to_owned(), 12.0), ("forwarded".to_owned(), 3.0)]
        );
    }
}
