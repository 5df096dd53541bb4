//! The config file's schema: serde types only, `deny_unknown_fields` everywhere, no logic.
//! [`super::compile`] turns these into the typed runtime structures the stages use.

use crate::authn::AuthConfig;
pub use crate::proxy::section::{Balance, HealthCheck, Passive, Target, Upstream, UpstreamTls};
pub use crate::respond::cors::CorsConfig as Cors;
use crate::secret::Secret;
pub use crate::tls::server::{Certificate, ClientAuth, ClientAuthMode, ListenerTls};
use crate::units::{Bytes, Dur};
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
    /// The header trusted proxies write the client chain into: `x-forwarded-for` (default) or
    /// `forwarded`. Only that one is read for the client address.
    #[serde(default)]
    pub client_ip_header: ClientIpHeader,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Named authentication methods that routes refer to in `auth:`.
    #[serde(default)]
    pub authenticators: BTreeMap<String, crate::authn::AuthenticatorConfig>,
    /// Roles and what each includes (`admin: { includes: [editor] }`), for routes' `authorize`.
    #[serde(default)]
    pub roles: BTreeMap<String, crate::authz::RoleConfig>,
    /// Roles granted by config to principal ids, beside those authentication gives.
    #[serde(default)]
    pub principals: BTreeMap<String, crate::authz::PrincipalConfig>,
    /// Cedar policy sets that routes' `authorize` may require (`policy: NAME`).
    #[serde(default)]
    pub policies: BTreeMap<String, crate::authz::cedar::PolicyConfig>,
    /// Named rate limits that routes apply (`rate_limits: [name, ...]`).
    #[serde(default)]
    pub rate_limits: BTreeMap<String, crate::limit::LimitConfig>,
    /// Named quotas per calendar day or month that routes apply (`quotas: [name, ...]`).
    #[serde(default)]
    pub quotas: BTreeMap<String, crate::limit::quota::QuotaConfig>,
    /// The node's persistent state (an SQLite file): bans. Without it, bans live in memory only.
    #[serde(default)]
    pub store: Option<crate::store::StoreConfig>,
    /// The key-encryption key for `${enc:v1:...}` values and `${store:NAME}` secrets (`docs/secrets.md`).
    #[serde(default)]
    pub secrets: Option<crate::secret::vault::SecretsConfig>,
    /// IP allow and deny lists for every route (CIDRs, and list files re-read when they change).
    #[serde(default)]
    pub ip_filter: Option<crate::guard::filter::IpFilterConfig>,
    /// Automatic bans: N answers of the given statuses to one client address within a window.
    #[serde(default)]
    pub auto_ban: Option<crate::guard::auto::AutoBanConfig>,
    /// Redis for a fleet: limits with `store: redis` and the signed-request replay store are shared
    /// through it.
    #[serde(default)]
    pub redis: Option<crate::fleet::RedisConfig>,
    /// OpenAPI documents that routes validate requests against (`validate: { openapi: NAME }`).
    #[serde(default)]
    pub openapi: BTreeMap<String, crate::validate::openapi::OpenApiConfig>,
    pub routes: Vec<Route>,
    /// Response protection for every route (security headers, error scrubbing, JSON-only, masking);
    /// a route's own `respond:` overrides it key by key.
    #[serde(default)]
    pub respond: Option<crate::respond::protect::RespondConfig>,
    #[serde(default)]
    pub logging: Logging,
    /// Security events: where they go (`docs/events.md`).
    #[serde(default)]
    pub events: Option<crate::observe::events::EventsConfig>,
    /// The tamper-evident audit trail.
    #[serde(default)]
    pub audit: Option<crate::observe::audit::AuditConfig>,
    /// OpenTelemetry traces over OTLP/HTTP (cargo feature `otel`).
    #[serde(default)]
    pub traces: Option<crate::observe::trace::TracesConfig>,
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Threat inspection for every route (a route's own `inspect` replaces it, `inspect: off` removes it).
    #[serde(default)]
    pub inspect: Option<crate::inspect::InspectConfig>,
    /// Field tokenization: the key every route's `tokenize:` fields derive their keys from.
    #[serde(default)]
    pub tokenization: Option<crate::tokenize::TokenizationConfig>,
    /// A built-in echo JSON API on loopback, for the quickstart and demos.
    #[serde(default)]
    pub demo_upstream: Option<DemoUpstream>,
    /// Behavioural anomaly detection and its responses (`docs/anomaly.md`).
    #[serde(default)]
    pub anomaly: Option<crate::anomaly::runtime::AnomalyConfig>,
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
    /// Plain listeners only: answer requests with a 308 redirect to HTTPS on this port (those that
    /// carry credentials get a 403 instead). Setting it alone means `plain_http: redirect`.
    #[serde(default)]
    pub redirect_https_port: Option<u16>,
    /// Plain listeners only: `redirect` (needs `redirect_https_port`) or `refuse` (403 to every
    /// request). Unset: redirect if `redirect_https_port` is set, otherwise serve routes.
    #[serde(default)]
    pub plain_http: Option<PlainHttp>,
    /// Forward request header names containing `_` (dropped by default, as NGINX does). Names that
    /// fold onto a forwarding or `X-Portcullis-*` field are dropped regardless.
    #[serde(default)]
    pub underscores_in_headers: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlainHttp {
    Redirect,
    Refuse,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    #[default]
    XForwardedFor,
    Forwarded,
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
pub struct Route {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub upstream: String,
    /// Required: how callers authenticate. A public route says `auth: none`.
    pub auth: AuthConfig,
    /// What the authenticated principal must have: `authenticated`, or roles, scopes and per-method
    /// requirements (see `authz`).
    #[serde(default)]
    pub authorize: Option<crate::authz::AuthorizeConfig>,
    /// An API key alone is not enough for this route (`check` refuses an `auth` that allows it).
    #[serde(default)]
    pub sensitive: bool,
    /// The named rate limits (`rate_limits:`) this route applies, all of them.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// The named quotas (`quotas:`) this route applies.
    #[serde(default)]
    pub quotas: Vec<String>,
    /// At most this many requests in flight on the route, per route, client address or principal.
    #[serde(default)]
    pub concurrency: Option<crate::limit::concurrency::ConcurrencyConfig>,
    /// IP allow and deny lists for this route, in addition to the global `ip_filter`.
    #[serde(default)]
    pub ip_filter: Option<crate::guard::filter::IpFilterConfig>,
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Overrides `limits.max_body_bytes` for this route.
    #[serde(default)]
    pub max_body_bytes: Option<Bytes>,
    /// What a request may look like: shape limits, content types, an OpenAPI document.
    #[serde(default)]
    pub validate: Option<crate::validate::shape::ValidateConfig>,
    /// Response protection, over the top-level `respond:` key by key.
    #[serde(default)]
    pub respond: Option<crate::respond::protect::RespondConfig>,
    /// Threat inspection: `off`, or a section replacing the top-level `inspect` whole.
    #[serde(default)]
    pub inspect: Option<crate::inspect::RouteInspect>,
    /// Fields replaced before the request goes upstream (and turned back in answers for some roles).
    #[serde(default)]
    pub tokenize: Option<Vec<crate::tokenize::FieldConfig>>,
    /// Clients the anomaly detector judges automated: `bot: { refuse_at: 0.8 }` refuses an address
    /// whose bot score is at least that (403 `bot`). Needs `anomaly:` with `automation` enabled.
    #[serde(default)]
    pub bot: Option<crate::anomaly::runtime::BotConfig>,
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
    /// Default false: `/ADMIN` matches the `/admin` route (upstreams that ignore case see one resource).
    #[serde(default)]
    pub case_sensitive: bool,
    /// Default `ignore`: `/admin/` matches the `/admin` route; `strict` tells them apart.
    #[serde(default)]
    pub trailing_slash: TrailingSlash,
    /// Default false: a `;` (or `%3B`) in a path segment is refused with 400, since Tomcat, Jetty and
    /// Spring read `/a;x/b` as `/a/b`. True: allowed, and routes are matched without the parameters.
    #[serde(default)]
    pub matrix_params: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TrailingSlash {
    #[default]
    Ignore,
    Strict,
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
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// tracing filter, e.g. `info` or `portcullis=debug`.
    pub level: String,
    pub access_log: bool,
    /// Client addresses in the access log, events and the audit trail: `full`, `truncate` (IPv4 /24,
    /// IPv6 /48) or `hash` (keyed with `hash_key`).
    pub client_ip: crate::observe::privacy::ClientIpMode,
    /// The key of client address hashes and of the access log's body hashes (a secret reference);
    /// without one, a random key per process.
    pub hash_key: Option<crate::secret::Secret>,
    /// Query parameters and JSON fields whose values are never written anywhere (beside the built-in
    /// `password`, `secret`, `token`, `api_key` and card numbers, and every configured credential).
    pub redact: Vec<String>,
    /// Access log lines to this file instead of stdout, reopened on SIGUSR1 (logrotate); read at start.
    pub access_log_file: Option<std::path::PathBuf>,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: "info".into(),
            access_log: true,
            client_ip: crate::observe::privacy::ClientIpMode::Full,
            hash_key: None,
            redact: Vec::new(),
            access_log_file: None,
        }
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
    /// TLS on the admin listener (HTTP/1.1); required off loopback. `client_auth` asks for client
    /// certificates, which `client_certificates` maps to admin roles.
    #[serde(default)]
    pub tls: Option<crate::tls::server::ListenerTls>,
    /// Admin callers by client certificate: the identity (as `principal_from` names it) to a role
    /// (`viewer`, `operator`, `admin`). An identity not listed is no admin caller.
    #[serde(default)]
    pub client_certificates: Option<AdminCertificates>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminCertificates {
    #[serde(default = "default_admin_principal_from")]
    pub principal_from: crate::authn::mtls::PrincipalFrom,
    pub roles: BTreeMap<String, String>,
}

fn default_admin_principal_from() -> crate::authn::mtls::PrincipalFrom {
    crate::authn::mtls::PrincipalFrom::SubjectCn
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoUpstream {
    pub address: String,
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}
