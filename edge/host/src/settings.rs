//! The host's settings from flags and environment, parsed once ([`HostArgs`]); every
//! default has one home, [`defaults`]: `--help` shows it and [`HostSettings::new`] starts
//! from it.

use crate::server::HostSettings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every default of the edge host, once.
pub mod defaults {
    pub const MANIFEST: &str = "spin.toml";
    pub const LISTEN: &str = "127.0.0.1:3000";
    /// `/metrics` and `/health`: an admin listener of their own, off the buyers' port.
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9101";
    pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
    pub const OUTBOUND_CONNECT_TIMEOUT_MS: u64 = 1_000;
    pub const OUTBOUND_FIRST_BYTE_TIMEOUT_MS: u64 = 5_000;
    pub const KV_MIB: u64 = 256;
    pub const MAX_INSTANCES: u32 = 1_000;
    pub const MAX_REQUEST_BODY: u64 = 1024 * 1024;
    /// Requests a WASI 0.3 instance serves before it is dropped (`wasmtime serve`'s).
    pub const WASIP3_REUSE: u32 = 128;
    /// Requests a WASI 0.3 instance serves at once (`wasmtime serve`'s).
    pub const WASIP3_CONCURRENCY: u32 = 16;
    pub const IDLE_INSTANCE_TIMEOUT_MS: u64 = 10_000;
}

/// Serve flashgate's edge component from a Spin manifest.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct HostArgs {
    /// The Spin manifest.
    #[arg(long, short = 'f', env = "FLASHGATE_EDGE_MANIFEST", default_value = defaults::MANIFEST)]
    pub manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "FLASHGATE_EDGE_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/health`); `off` serves neither.
    #[arg(long, env = "FLASHGATE_EDGE_ADMIN_LISTEN", default_value = defaults::ADMIN_LISTEN,
          value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,
    /// Set an application variable (`name=value`); beats `SPIN_VARIABLE_*`.
    #[arg(long = "variable", value_parser = parse_variable)]
    pub variables: Vec<(String, String)>,
    /// Several origins (`host:port`, comma-separated or repeated): the component's requests
    /// to its `origin_url` go to them in turn, skipping those down (`GET /health` every
    /// second); a read refused a connection is tried on the next. Unset: `origin_url` alone.
    #[arg(long = "origin", env = "FLASHGATE_EDGE_ORIGINS", value_delimiter = ',')]
    pub origins: Vec<String>,
    /// Proxies (CIDRs, comma-separated or repeated) whose `X-Forwarded-For` names the client:
    /// behind a load balancer, its address range. The component's per-address limit then
    /// counts each buyer's own address instead of the balancer's. Unset: the TCP peer.
    #[arg(long = "trusted-proxy", env = "FLASHGATE_EDGE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Certificates (PEM) to trust for `https://` requests besides the public roots: the
    /// origin's own CA, or a self-signed origin's certificate.
    #[arg(long, env = "FLASHGATE_EDGE_ORIGIN_CA")]
    pub origin_ca: Option<PathBuf>,
    /// Whole-request deadline in milliseconds.
    #[arg(long, env = "FLASHGATE_EDGE_REQUEST_TIMEOUT_MS", default_value_t = defaults::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Memory bound of each key-value store, in MiB.
    #[arg(long, env = "FLASHGATE_EDGE_KV_MIB", default_value_t = defaults::KV_MIB)]
    pub kv_mib: u64,
    /// Requests one instance may serve before it is dropped. Unset, the component's WASI
    /// generation decides, as in `wasmtime serve`: a WASI 0.3 component is reused (128
    /// requests), a WASI 0.2 one gets a fresh instance per request (as `spin up` does).
    /// 1 forces a fresh instance per request; N > 1 on a WASI 0.2 component is only for
    /// components that keep nothing of one request for the next in their own memory
    /// (flashgate's edge component keeps none).
    #[arg(long, env = "FLASHGATE_EDGE_REUSE_INSTANCES",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub reuse_instances: Option<u32>,
    /// Requests one WASI 0.3 instance serves at once (default 16); WASI 0.2 instances serve
    /// one at a time.
    #[arg(long, env = "FLASHGATE_EDGE_INSTANCE_CONCURRENCY",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub instance_concurrency: Option<u32>,
    /// An instance with nothing to do is dropped after this many milliseconds.
    #[arg(long, env = "FLASHGATE_EDGE_IDLE_INSTANCE_TIMEOUT_MS",
          default_value_t = defaults::IDLE_INSTANCE_TIMEOUT_MS)]
    pub idle_instance_timeout_ms: u64,
    #[command(flatten)]
    pub connections: flashgate_net::ConnectionArgs,
}

/// `--admin-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct AdminListen(pub Option<SocketAddr>);

fn parse_admin_listen(s: &str) -> Result<AdminListen, String> {
    if s == "off" {
        return Ok(AdminListen(None));
    }
    s.parse()
        .map(|a| AdminListen(Some(a)))
        .map_err(|e| format!("`{s}` is not an address or `off`: {e}"))
}

fn parse_variable(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not name=value"))
}

impl HostArgs {
    /// The settings these arguments ask for.
    pub fn into_settings(self) -> HostSettings {
        let mut settings = HostSettings::new(self.manifest, self.listen);
        settings.admin_listen = self.admin_listen.0;
        settings.variables = self.variables.into_iter().collect();
        settings.origins = self.origins;
        settings.origin_ca = self.origin_ca;
        settings.trusted_proxies = self.trusted_proxies;
        settings.tls = self.connections.tls();
        settings.request_timeout = Duration::from_millis(self.request_timeout_ms);
        settings.kv_capacity_bytes = self.kv_mib * 1024 * 1024;
        settings.reuse_instances = self.reuse_instances;
        settings.instance_concurrency = self.instance_concurrency;
        settings.idle_instance_timeout = Duration::from_millis(self.idle_instance_timeout_ms);
        settings.connections = (&self.connections).into();
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        let parsed = HostArgs::try_parse_from(["flashgate-edge"]).unwrap().into_settings();
        let new = HostSettings::new(defaults::MANIFEST.into(), defaults::LISTEN.parse().unwrap());
        assert_eq!(parsed.manifest, new.manifest);
        assert_eq!(parsed.listen, new.listen);
        assert_eq!(parsed.admin_listen, new.admin_listen);
        assert_eq!(parsed.request_timeout, new.request_timeout);
        assert_eq!(parsed.kv_capacity_bytes, new.kv_capacity_bytes);
        assert_eq!(parsed.reuse_instances, new.reuse_instances);
        assert_eq!(parsed.instance_concurrency, new.instance_concurrency);
        assert_eq!(parsed.idle_instance_timeout, new.idle_instance_timeout);
        assert_eq!(parsed.connections, new.connections);
        assert!(parsed.variables.is_empty() && parsed.origins.is_empty());
    }

    #[test]
    fn flags_set_what_they_name_and_bad_values_name_the_flag() {
        let s = HostArgs::try_parse_from([
            "flashgate-edge",
            "--variable",
            "origin_host=127.0.0.1:9",
            "--reuse-instances",
            "100",
            "--kv-mib",
            "8",
        ])
        .unwrap()
        .into_settings();
        assert_eq!(s.variables.get("origin_host").map(String::as_str), Some("127.0.0.1:9"));
        assert_eq!((s.reuse_instances, s.kv_capacity_bytes), (Some(100), 8 * 1024 * 1024));
        let off = HostArgs::try_parse_from(["flashgate-edge", "--admin-listen", "off"]);
        assert_eq!(off.unwrap().into_settings().admin_listen, None);
        let zero = HostArgs::try_parse_from(["flashgate-edge", "--reuse-instances", "0"]);
        assert!(zero.unwrap_err().to_string().contains("--reuse-instances"));
        let bad = HostArgs::try_parse_from(["flashgate-edge", "--variable", "novalue"]);
        assert!(bad.unwrap_err().to_string().contains("not name=value"));
    }
}
