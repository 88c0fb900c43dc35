//! The subset of Spin's application manifest (`spin_manifest_version = 2`) that the host
//! serves: HTTP routes, component sources, application and component variables,
//! key-value store labels and allowed outbound hosts. Templates (`{{ name }}`) resolve as in
//! `spin up`: `--variable name=value`, then `SPIN_VARIABLE_NAME`, then the default.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Debug, Deserialize)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    #[allow(dead_code)]
    secret: bool,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// A route pattern: `/exact/path` or `/prefix/...` (Spin's wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Exact(String),
    Prefix(String),
}

impl Route {
    fn parse(route: &str) -> Self {
        match route.strip_suffix("/...") {
            Some(prefix) => Route::Prefix(prefix.to_owned()),
            None if route == "..." => Route::Prefix(String::new()),
            None => Route::Exact(route.trim_end_matches('/').to_owned()),
        }
    }

    /// Length of the match, for most-specific-wins; `None` if it does not match.
    pub fn matches(&self, path: &str) -> Option<usize> {
        let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        match self {
            Route::Exact(p) => (p == path || (p.is_empty() && path == "/")).then_some(p.len() + 1),
            Route::Prefix(p) => {
                let rest = path.strip_prefix(p.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some(p.len())
            }
        }
    }
}

/// One outbound-host rule: `scheme://host[:port]`, where host may be `*` or `*.suffix` and
/// port may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl OutboundRule {
    pub fn parse(rule: &str) -> Result<Self> {
        let (scheme, rest) = rule.split_once("://").with_context(|| {
            format!("allowed outbound host `{rule}` must be scheme://host[:port]")
        })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, "*")) => (h, None),
            Some((h, p)) => {
                (h, Some(p.parse().with_context(|| format!("bad port in outbound host `{rule}`"))?))
            }
            None => (rest, Some(if scheme == "https" { 443 } else { 80 })),
        };
        if host.is_empty() {
            bail!("allowed outbound host `{rule}` has no host");
        }
        Ok(Self { scheme: scheme.to_ascii_lowercase(), host: host.to_ascii_lowercase(), port })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != "*" && !self.scheme.eq_ignore_ascii_case(scheme) {
            return false;
        }
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => self.host == host,
        }
    }
}

/// A component ready to serve: its wasm file and its resolved settings.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    pub id: String,
    pub source: PathBuf,
    pub variables: HashMap<String, String>,
    pub key_value_stores: Vec<String>,
    pub allowed_outbound: Vec<OutboundRule>,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub routes: Vec<(Route, String)>,
    pub components: BTreeMap<String, ComponentSpec>,
}

impl Manifest {
    /// Reads and resolves a manifest; `overrides` win over the environment.
    pub fn load(path: &Path, overrides: &HashMap<String, String>) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, overrides, |name| {
            std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())).ok()
        })
        .with_context(|| format!("in manifest {}", path.display()))
    }

    pub fn parse(
        text: &str,
        base: &Path,
        overrides: &HashMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        let mut app_vars = HashMap::new();
        for (name, var) in &raw.variables {
            let value = overrides.get(name).cloned().or_else(|| env(name)).or(var.default.clone());
            match value {
                Some(v) => {
                    app_vars.insert(name.clone(), v);
                }
                None if var.required => bail!(
                    "variable `{name}` is required: set SPIN_VARIABLE_{} or --variable {name}=…",
                    name.to_ascii_uppercase()
                ),
                None => {}
            }
        }
        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let mut variables = HashMap::new();
            for (name, template) in &c.variables {
                let value = render(template, &app_vars)
                    .with_context(|| format!("component `{id}` variable `{name}`"))?;
                variables.insert(name.clone(), value);
            }
            let allowed_outbound = c
                .allowed_outbound_hosts
                .iter()
                .map(|rule| render(rule, &app_vars).and_then(|r| OutboundRule::parse(&r)))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("component `{id}` allowed_outbound_hosts"))?;
            let spec = ComponentSpec {
                id: id.clone(),
                source: base.join(&c.source),
                variables,
                key_value_stores: c.key_value_stores,
                allowed_outbound,
            };
            components.insert(id, spec);
        }
        let mut routes = Vec::new();
        for t in raw.trigger.http {
            if !components.contains_key(&t.component) {
                bail!("route `{}` names unknown component `{}`", t.route, t.component);
            }
            routes.push((Route::parse(&t.route), t.component));
        }
        if routes.is_empty() {
            bail!("the manifest has no [[trigger.http]] routes");
        }
        Ok(Self { routes, components })
    }

    /// The component serving `path`: the most specific matching route.
    pub fn route(&self, path: &str) -> Option<&ComponentSpec> {
        self.routes
            .iter()
            .filter_map(|(route, id)| route.matches(path).map(|len| (len, id)))
            .max_by_key(|(len, _)| *len)
            .and_then(|(_, id)| self.components.get(id))
    }
}

/// Substitutes `{{ name }}` with application variables.
fn render(template: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").context("unclosed `{{` in template")?;
        let name = after[..end].trim();
        let value = vars.get(name).with_context(|| format!("variable `{name}` has no value"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
origin_host = { default = "127.0.0.1:8081" }
secret = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "edge"
[[trigger.http]]
route = "/special"
component = "other"
[component.edge]
source = "edge.wasm"
allowed_outbound_hosts = ["http://{{ origin_host }}"]
key_value_stores = ["default"]
[component.edge.variables]
origin_url = "http://{{ origin_host }}"
edge_secret = "{{ secret }}"
[component.other]
source = "other.wasm"
"#;

    fn parse(overrides: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Manifest> {
        let overrides = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env: HashMap<String, String> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Manifest::parse(MANIFEST, Path::new("/app"), &overrides, |n| env.get(n).cloned())
    }

    #[test]
    fn resolves_variables_routes_and_sources() {
        let m = parse(&[("secret", "s3")], &[]).unwrap();
        let edge = m.route("/slots/acquire").unwrap();
        assert_eq!(edge.id, "edge");
        assert_eq!(edge.source, PathBuf::from("/app/edge.wasm"));
        assert_eq!(edge.variables["origin_url"], "http://127.0.0.1:8081");
        assert_eq!(edge.variables["edge_secret"], "s3");
        assert_eq!(edge.key_value_stores, vec!["default"]);
        assert!(edge.allowed_outbound[0].allows("http", "127.0.0.1", 8081));
        assert!(!edge.allowed_outbound[0].allows("http", "127.0.0.1", 8082));
        assert!(!edge.allowed_outbound[0].allows("https", "127.0.0.1", 8081));
        assert_eq!(m.route("/special").unwrap().id, "other");
        assert_eq!(m.route("/special/x").unwrap().id, "edge");
    }

    #[test]
    fn overrides_beat_environment_beats_default() {
        let m = parse(&[("secret", "a")], &[("origin_host", "10.0.0.1:1")]).unwrap();
        assert_eq!(m.route("/").unwrap().variables["origin_url"], "http://10.0.0.1:1");
        let m =
            parse(&[("secret", "a"), ("origin_host", "h:2")], &[("origin_host", "x:1")]).unwrap();
        assert_eq!(m.route("/").unwrap().variables["origin_url"], "http://h:2");
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let err = parse(&[], &[]).unwrap_err().to_string();
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn outbound_rules_support_wildcards() {
        let any_port = OutboundRule::parse("http://localhost:*").unwrap();
        assert!(any_port.allows("http", "localhost", 1));
        let sub = OutboundRule::parse("https://*.example.com").unwrap();
        assert!(sub.allows("https", "api.example.com", 443));
        assert!(!sub.allows("https", "example.com", 443));
        assert!(!sub.allows("https", "api.example.com", 8443));
        assert!(OutboundRule::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn routes_match_most_specific_first() {
        assert_eq!(Route::parse("/a/...").matches("/a/b"), Some(2));
        assert_eq!(Route::parse("/a/...").matches("/ab"), None);
        assert_eq!(Route::parse("/a").matches("/a/"), Some(3));
        assert_eq!(Route::parse("/...").matches("/"), Some(0));
    }
}
