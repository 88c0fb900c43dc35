//! The deployment files are parsed and checked against what the code expects.

use flashgate_e2e::repo_root;
use flashgate_edge_host::manifest::Manifest;
use std::collections::HashMap;

/// Every configuration key the edge component reads (`edge/component/src/config.rs`).
const COMPONENT_CONFIG: &[&str] = &[
    "origin_url",
    "edge_secret",
    "jwt_jwks",
    "jwt_issuer",
    "jwt_audience",
    "jwt_leeway_secs",
    "jwt_allow_hs256",
    "edge_id",
    "availability_refresh_ms",
    "max_edge_wait_ms",
    "rate_user_per_sec",
    "rate_user_burst",
    "rate_address_per_sec",
    "rate_address_burst",
];

/// The interfaces a built component imports (its top-level import names).
fn component_imports(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!("{}: {e} (scripts/build-edge.sh --platform all)", path.display())
    });
    let mut names = Vec::new();
    // Nested modules and components (the adapters inside) have imports of their own.
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.unwrap() {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    names.push(import.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

#[test]
fn each_platform_build_imports_only_what_its_platform_provides() {
    // WASI 0.2 interfaces every platform provides, at any released 0.2.x.
    let everywhere = [
        "wasi:http/types",
        "wasi:http/outgoing-handler",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:cli/",
        "wasi:filesystem/",
    ];
    let target = repo_root().join("edge/component/target");
    let build =
        |p: &str| target.join(format!("platforms/{p}/wasm32-wasip2/release/flashgate_edge.wasm"));
    let platforms = [
        (
            "spin",
            flashgate_e2e::component_path(),
            vec![
                "wasi:keyvalue/store@0.2.0-draft2",
                "wasi:keyvalue/atomics@0.2.0-draft2",
                "wasi:config/store@0.2.0-draft-2024-09-27",
            ],
        ),
        (
            "wasmcloud1",
            build("wasmcloud1"),
            vec!["wasi:keyvalue/store@0.2.0-draft", "wasi:config/store@0.2.0-draft"],
        ),
        (
            "wasmcloud2",
            build("wasmcloud2"),
            vec!["wasi:keyvalue/store@0.2.0-draft", "wasi:config/store@0.2.0-rc.1"],
        ),
    ];
    for (platform, path, specific) in platforms {
        let imports = component_imports(&path);
        for import in &imports {
            let (interface, version) = import.split_once('@').unwrap_or((import, ""));
            let wasi_0_2 = everywhere.iter().any(|p| interface.starts_with(p))
                && version.starts_with("0.2.")
                && !version.contains('-');
            assert!(
                wasi_0_2 || specific.contains(&import.as_str()),
                "{platform}: `{import}` is not provided there; imports: {imports:?}"
            );
        }
        for needed in specific {
            assert!(imports.iter().any(|i| i == needed), "{platform} build lacks {needed}");
        }
        assert!(imports.iter().any(|i| i.starts_with("wasi:http/outgoing-handler@0.2.")));
    }
}

#[test]
fn the_wasmcloud_manifest_runs_the_wasmcloud_build_with_the_same_configuration() {
    let text = std::fs::read_to_string(repo_root().join("wadm.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["kind"], "Application");
    let components = doc["spec"]["components"].as_sequence().unwrap();
    let edge = components.iter().find(|c| c["name"] == "edge").unwrap();
    let image = edge["properties"]["image"].as_str().unwrap();
    assert!(image.ends_with("platforms/wasmcloud1/wasm32-wasip2/release/flashgate_edge.wasm"));
    let mut keys: Vec<String> = Vec::new();
    for config in edge["properties"]["config"].as_sequence().unwrap() {
        if let Some(props) = config["properties"].as_mapping() {
            keys.extend(props.keys().map(|k| k.as_str().unwrap().to_owned()));
        }
    }
    // The secrets come from a named config created out of band (see wadm.yaml).
    for key in COMPONENT_CONFIG.iter().filter(|k| !matches!(**k, "edge_secret" | "jwt_jwks")) {
        assert!(keys.iter().any(|k| k == key), "wadm.yaml lacks {key}");
    }
    let links: Vec<String> =
        serde_yaml::to_string(edge).unwrap().lines().map(str::to_owned).collect();
    for interface in ["keyvalue", "outgoing-handler"] {
        assert!(links.iter().any(|l| l.contains(interface)), "wadm.yaml links no {interface}");
    }
}

#[test]
fn compose_defines_a_durable_redis_and_postgres_on_the_stack_ports() {
    let text = std::fs::read_to_string(repo_root().join("compose.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().unwrap();
    let ports = |name: &str| format!("{:?}", services[name]["ports"]);
    // Redis where scripts/dev.sh runs its own, persisting every write before it answers.
    assert!(ports("redis").contains("6380:6379"));
    let command: Vec<&str> = services["redis"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(serde_yaml::Value::as_str)
        .collect();
    let command = command.join(" ");
    for flag in ["--appendonly yes", "--appendfsync always"] {
        assert!(command.contains(flag), "`{command}` lacks {flag}");
    }
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
    for key in COMPONENT_CONFIG {
        assert!(edge.variables.contains_key(*key), "component variable {key}");
    }
    assert!(parse(&HashMap::new()).is_err(), "edge_secret is required");
}
