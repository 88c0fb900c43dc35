//! The API as a contract, checked from outside: schemathesis (PyPI, installed by
//! scripts/setup.sh) reads the origin's `/openapi.json` and sends generated requests — valid
//! and invalid — to the live origin (operator, processor and operations routes, with an
//! admin token) and to the live edge (buyer routes, with a buyer token, as buyers call
//! them). Every answer must be no server error, and must match the document: a status it
//! lists, its content type, its schema.

use flashgate_e2e::Stack;
use std::time::Duration;
use uuid::Uuid;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";

/// Test cases per operation: 25, or `FLASHGATE_CONTRACT_EXAMPLES` for a longer hunt.
fn examples() -> String {
    std::env::var("FLASHGATE_CONTRACT_EXAMPLES").unwrap_or_else(|_| "25".to_owned())
}

/// One worker: hypothesis describes strategies through a cache that concurrent workers
/// corrupt ("AST constructor recursion depth mismatch", seen with two).
async fn schemathesis(schema: &str, base: &str, token: &str, tags: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new("st");
    command
        .args(["run", schema, "--url", base, "--checks", CHECKS])
        .args(["--max-examples", &examples(), "--seed", "4242", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
        .args(["--request-timeout", "10", "--generation-database", "none"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
    for tag in tags {
        command.args(["--include-tag", tag]);
    }
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("running schemathesis (scripts/setup.sh --test-tools installs it)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_origin_and_edge_answer_as_the_document_says() {
    let s = Stack::start().await.unwrap();
    // Something for the generated requests to find.
    s.origin.create_product(&s.id, 50).await.unwrap();
    let schema = s.origin.url("/openapi.json");

    let (ok, report) = schemathesis(
        &schema,
        &s.origin.url(""),
        &s.id.admin(),
        &["operators", "processor", "operations", "internal"],
    )
    .await;
    assert!(ok, "origin routes break the contract:\n{report}");

    let buyer = s.id.buyer(Uuid::new_v4());
    let edge = format!("http://{}", s.edge.addr);
    let (ok, report) = schemathesis(&schema, &edge, &buyer, &["buyers"]).await;
    assert!(ok, "buyer routes through the edge break the contract:\n{report}");
}
