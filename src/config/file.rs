//! The config file's schema: serde types only, `deny_unknown_fields` everywhere, no logic.
//! [`super::compile`] turns these into the typed runtime structures the stages use.

use super::secret::Secret;
use super::units::{Bytes, Dur};
use crate::authn::AuthConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Runtime worker threads; default: the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub limits: Limits,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Named authentication methods that routes refer to in `auth:`.
    #[serde(default)]
    pub authenticators: BTreeMap<String, crate::authn::AuthenticatorConfig>,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub logging: Logging,
    #[serde(default)]
    pub admin: Option<Admin>,
    /// A built-in echo JSON API on loopback, for the quickstart and demos.
    #[serde(default)]
    pub demo_upstream: Option<DemoUpstream>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `IP:port`; port 0 picks a free port (reported in the `listening` log line).
    pub address: String,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// HTTP/2: via ALPN on TLS listeners (default on), h2c prior knowledge on plain ones (default off).
    #[serde(default)]
    pub http2: Option<bool>,
    /// Plain listeners only: answer every request with a 308 redirect to HTTPS on this port.
    #[serde(default)]
    pub redirect_https_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    #[serde(default = "default_true")]
    pub hsts: bool,
    #[serde(default = "default_hsts_max_age")]
    pub hsts_max_age: Dur,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM chain, leaf first.
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[serde(default)]
    pub key: Option<String>,
    /// Generate a self-signed certificate for these names at start (quickstart, tests).
    #[serde(default)]
    pub self_signed: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM file of the CA certificates that client certificates must chain to.
    pub ca: String,
    pub mode: ClientAuthMode,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    Required,
    Optional,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_header_bytes: Bytes,
    pub max_headers: usize,
    pub max_url_bytes: Bytes,
    pub max_body_bytes: Bytes,
    pub header_read_timeout: Dur,
    pub idle_timeout: Dur,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted by this prefix for `max_connections_per_ip` (one host usually owns a /64).
    pub connection_ipv6_prefix: u8,
    pub max_concurrent_streams: u32,
    pub shutdown_timeout: Dur,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: Bytes(16 * 1024),
            max_headers: 100,
            max_url_bytes: Bytes(8 * 1024),
            max_body_bytes: Bytes(10 * 1024 * 1024),
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            connection_ipv6_prefix: 64,
            max_concurrent_streams: 100,
            shutdown_timeout: Dur::secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub targets: Vec<Target>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    /// Extra attempts on another target, for idempotent requests whose connection failed.
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_max_idle")]
    pub max_idle_per_target: usize,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout: Dur,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub passive: Passive,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Passive {
    /// Consecutive connection failures that eject a target; 0 turns passive ejection off.
    pub consecutive_failures: u32,
    pub ejection_time: Dur,
}

impl Default for Passive {
    fn default() -> Self {
        Passive { consecutive_failures: 3, ejection_time: Dur::secs(30) }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the only CAs trusted for this upstream (pinning; the system store is never used).
    pub ca: String,
    /// Name checked against the upstream certificate; default: the target's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate and key for mutual TLS to the upstream.
    #[serde(default)]
    pub client_cert: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub upstream: String,
    /// Required: how callers authenticate. A public route says `auth: none`.
    pub auth: AuthConfig,
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Overrides `limits.max_body_bytes` for this route.
    #[serde(default)]
    pub max_body_bytes: Option<Bytes>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Exact names or `*.example.com`; empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path: PathMatch,
    /// Empty means the standard methods (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS).
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Exactly one of `exact`, `prefix` or `template`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub max_age: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// tracing filter, e.g. `info` or `portcullis=debug`.
    pub level: String,
    pub access_log: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Logging { level: "info".into(), access_log: true }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Bearer token required for `/metrics` (recommended with `${env:NAME}`); `/healthz` stays open.
    #[serde(default)]
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoUpstream {
    pub address: String,
}

fn default_true() -> bool {
    true
}
fn default_hsts_max_age() -> Dur {
    Dur::secs(365 * 86_400)
}
fn default_connect_timeout() -> Dur {
    Dur::secs(2)
}
fn default_response_timeout() -> Dur {
    Dur::secs(30)
}
fn default_retries() -> u32 {
    1
}
fn default_max_idle() -> usize {
    64
}
fn default_pool_idle() -> Dur {
    Dur::secs(60)
}
fn default_weight() -> u32 {
    1
}
fn default_hc_interval() -> Dur {
    Dur::secs(5)
}
fn default_hc_timeout() -> Dur {
    Dur::secs(2)
}
fn default_healthy() -> u32 {
    2
}
fn default_unhealthy() -> u32 {
    3
}
fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}
