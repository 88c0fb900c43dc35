//! The deployment files are parsed and checked against what the code expects.

use flashgate_e2e::repo_root;
use flashgate_edge_host::manifest::Manifest;
use std::collections::HashMap;

#[test]
fn compose_defines_redis_and_postgres_on_the_default_ports() {
    let text = std::fs::read_to_string(repo_root().join("compose.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().unwrap();
    let ports = |name: &str| format!("{:?}", services[name]["ports"]);
    assert!(ports("redis").contains("6379:6379"));
    assert!(ports("postgres").contains("5432:5432"));
    assert_eq!(services["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"], "trust");
}

#[test]
fn spin_toml_routes_everything_to_the_built_component() {
    let vars: HashMap<String, String> = [("edge_secret", "00"), ("jwt_jwks", "{}")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    // No environment: the test must not depend on the caller's SPIN_VARIABLE_*.
    let parse =
        |vars: &HashMap<String, String>| Manifest::parse(&text, &repo_root(), vars, |_| None);
    let manifest = parse(&vars).unwrap();
    let edge = manifest.route("/slots/acquire").unwrap();
    assert_eq!(edge.source, flashgate_e2e::component_path());
    assert_eq!(manifest.route("/anything/else").unwrap().id, edge.id);
    assert_eq!(edge.key_value_stores, vec!["default"]);
    for key in ["origin_url", "edge_secret", "jwt_jwks", "jwt_issuer", "jwt_audience", "edge_id"] {
        assert!(edge.variables.contains_key(key), "component variable {key}");
    }
    assert!(parse(&HashMap::new()).is_err(), "edge_secret is required");
}
