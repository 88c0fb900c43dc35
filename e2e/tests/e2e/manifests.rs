//! The deployment files are parsed and checked against what the code expects.

use flashgate_e2e::{platform_component_path, repo_root};
use flashgate_edge_host::manifest::Manifest;
use std::collections::HashMap;

/// Every configuration key the edge component reads (`edge/component/src/config.rs`).
const COMPONENT_CONFIG: &[&str] = &[
    "origin_url",
    "edge_secret",
    "jwt_jwks",
    "jwt_jwks_url",
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

/// The interfaces a built component imports and exports (its top-level names).
fn component_world(path: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!("{}: {e} (scripts/build-edge.sh --platform all)", path.display())
    });
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components (the adapters inside) have imports of their own.
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.unwrap() {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.unwrap().name.name.to_owned());
                }
            }
            wasmparser::Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

/// Whether `name` is `<one of prefixes>...@<version>` with a released (not draft or rc)
/// version starting `version`.
fn released(name: &str, prefixes: &[&str], version: &str) -> bool {
    let (interface, v) = name.split_once('@').unwrap_or((name, ""));
    prefixes.iter().any(|p| interface.starts_with(p)) && v.starts_with(version) && !v.contains('-')
}

#[test]
fn each_platform_build_imports_only_what_its_platform_provides() {
    // WASI 0.2 interfaces every platform provides, at any released 0.2.x.
    let wasi_0_2 = [
        "wasi:http/types",
        "wasi:http/outgoing-handler",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:cli/",
        "wasi:filesystem/",
    ];
    // WASI 0.3.0 interfaces Spin 4.1+ (`spin:up@4.1.0`'s platform world) and flashgate's
    // host (wasmtime-wasi 48's p3) provide; Rust's std still speaks WASI 0.2 beside them.
    let wasi_0_3 =
        ["wasi:http/types", "wasi:http/client", "wasi:cli/", "wasi:clocks/", "wasi:random/"];
    let spin_specific = vec![
        "wasi:keyvalue/store@0.2.0-draft2",
        "wasi:keyvalue/atomics@0.2.0-draft2",
        "wasi:config/store@0.2.0-draft-2024-09-27",
    ];
    let platforms = [
        ("spin", flashgate_e2e::component_path(), spin_specific.clone(), "0.3."),
        ("spin-wasip2", platform_component_path("spin-wasip2"), spin_specific, "0.2."),
        (
            "wasmcloud1",
            platform_component_path("wasmcloud1"),
            vec!["wasi:keyvalue/store@0.2.0-draft", "wasi:config/store@0.2.0-draft"],
            "0.2.",
        ),
        (
            "wasmcloud2",
            platform_component_path("wasmcloud2"),
            vec!["wasi:keyvalue/store@0.2.0-draft", "wasi:config/store@0.2.0-rc.1"],
            "0.2.",
        ),
    ];
    for (platform, path, specific, http) in platforms {
        let (imports, exports) = component_world(&path);
        let p3 = http == "0.3.";
        for import in &imports {
            assert!(
                released(import, &wasi_0_2, "0.2.")
                    || (p3 && released(import, &wasi_0_3, "0.3."))
                    || specific.contains(&import.as_str()),
                "{platform}: `{import}` is not provided there; imports: {imports:?}"
            );
        }
        for needed in specific {
            assert!(imports.iter().any(|i| i == needed), "{platform} build lacks {needed}");
        }
        let (client, handler) = if p3 {
            ("wasi:http/client", "wasi:http/handler")
        } else {
            ("wasi:http/outgoing-handler", "wasi:http/incoming-handler")
        };
        assert!(
            imports.iter().any(|i| released(i, &[client], http)),
            "{platform}: no {client}@{http}x import: {imports:?}"
        );
        assert!(
            exports.iter().any(|e| released(e, &[handler], http)),
            "{platform}: exports {exports:?}, not {handler}@{http}x"
        );
        assert_eq!(exports.len(), 1, "{platform}: exports {exports:?}");
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
    for key in COMPONENT_CONFIG
        .iter()
        .filter(|k| !matches!(**k, "edge_secret" | "jwt_jwks" | "jwt_jwks_url"))
    {
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
fn compose_runs_the_whole_stack_each_part_once_what_it_needs_is_healthy() {
    let text = std::fs::read_to_string(repo_root().join("compose.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().unwrap();
    for name in ["redis", "postgres", "kafka", "origin", "edge", "prometheus"] {
        let service = &services[name];
        assert!(service["healthcheck"]["test"].is_sequence(), "{name} has no healthcheck");
    }
    let needs = |name: &str| -> Vec<String> {
        let depends = services[name]["depends_on"].as_mapping().unwrap();
        for (dependency, how) in depends {
            assert_eq!(how["condition"], "service_healthy", "{name} on {dependency:?}");
        }
        depends.keys().map(|k| k.as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(needs("origin"), ["redis", "postgres", "kafka"]);
    assert_eq!(needs("edge"), ["origin"]);
    assert_eq!(needs("prometheus"), ["origin", "edge"]);
    // The images are built from this repository's Dockerfiles, each running what it built.
    for (service, binary) in [("origin", "flashgate-origin"), ("edge", "flashgate-edge")] {
        let dockerfile = services[service]["build"]["dockerfile"].as_str().unwrap();
        let text = std::fs::read_to_string(repo_root().join(dockerfile)).unwrap();
        assert!(text.contains(&format!("ENTRYPOINT [\"{binary}\"")), "{dockerfile}");
        assert!(text.contains("HEALTHCHECK"), "{dockerfile}");
        assert_eq!(text.matches("\nFROM ").count(), 2, "{dockerfile}: a build and a runtime stage");
    }
    // The edge image puts the component where spin.toml names it.
    let edge = std::fs::read_to_string(repo_root().join("deploy/docker/edge.Dockerfile")).unwrap();
    assert!(edge.contains("edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm"));
    let spin = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    assert!(
        spin.contains(
            "source = \"edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm\""
        )
    );
    // Prometheus scrapes the origin and the edge host's admin listener, with the alerts.
    let prometheus =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/prometheus.yml")).unwrap();
    for target in ["origin:8081", "edge:9101", "alerts.yaml"] {
        assert!(prometheus.contains(target), "prometheus.yml lacks {target}");
    }
}

/// docker-compose (Debian's, installed by scripts/setup.sh --test-tools) validates the file
/// against the Compose schema, without a Docker daemon.
#[test]
fn docker_compose_accepts_the_file() {
    let output = std::process::Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config", "-q"])
        .current_dir(repo_root())
        .env("FLASHGATE_EDGE_SECRET", "00".repeat(32))
        .env("FLASHGATE_JWT_JWKS", "{\"keys\":[]}")
        .output()
        .expect("running docker-compose (scripts/setup.sh --test-tools installs it)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_wasmcloud2_manifest_provides_what_the_wasmcloud2_build_imports() {
    let text = std::fs::read_to_string(repo_root().join("wasmcloud2.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["apiVersion"], "runtime.wasmcloud.dev/v1alpha1");
    assert_eq!(doc["kind"], "WorkloadDeployment");
    let spec = &doc["spec"]["template"]["spec"];
    let interfaces = spec["hostInterfaces"].as_sequence().unwrap();
    let provides = |package: &str, interface: &str, version: Option<&str>| {
        interfaces.iter().any(|h| {
            h["namespace"] == "wasi"
                && h["package"] == package
                && version.is_none_or(|v| h["version"] == v)
                && h["interfaces"].as_sequence().unwrap().iter().any(|i| i == interface)
        })
    };
    assert!(provides("http", "incoming-handler", None));
    // Every import of the wasmcloud2 world, at its version.
    let wit = std::fs::read_dir(repo_root().join("wit/wasmcloud2"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<String>();
    let mut imports = 0;
    for line in wit.lines().map(str::trim).filter(|l| l.starts_with("import wasi:")) {
        let name = line.trim_start_matches("import wasi:").trim_end_matches(';');
        let (path, version) = name.split_once('@').unwrap();
        let (package, interface) = path.split_once('/').unwrap();
        assert!(provides(package, interface, Some(version)), "wasmcloud2.yaml lacks {line}");
        imports += 1;
    }
    assert!(imports >= 2);
    let components = spec["components"].as_sequence().unwrap();
    let edge = components.iter().find(|c| c["name"] == "edge").unwrap();
    let config = edge["localResources"]["config"].as_mapping().unwrap();
    // The secrets come from a Secret, through the wasi:config host interface.
    for key in COMPONENT_CONFIG
        .iter()
        .filter(|k| !matches!(**k, "edge_secret" | "jwt_jwks" | "jwt_jwks_url"))
    {
        assert!(config.keys().any(|k| k == key), "wasmcloud2.yaml lacks {key}");
    }
    assert!(text.contains("secretFrom"));
    let allowed = edge["localResources"]["allowedHosts"].as_sequence().unwrap();
    let origin_url = config.get("origin_url").and_then(|v| v.as_str()).unwrap();
    let origin_host = origin_url.trim_start_matches("http://");
    assert!(allowed.iter().any(|h| h == origin_host), "the origin is not an allowed host");
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
