//! The running configuration: what `config::compile` builds from the file and the pipeline and server
//! read. Immutable; a reload builds a new one beside it and swaps it in.

use super::Route;
use crate::authn::Authenticators;
use crate::authn::Kept;
use crate::observe::metrics::{Metrics, RouteMetrics};
use crate::proxy::upstream::Upstream;
use crate::route::RouteTable;
use crate::validate::Limits;
use http::header::HeaderValue;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct Runtime {
    pub listeners: Vec<ListenerRt>,
    pub limits: ServerLimits,
    pub trusted_proxies: Vec<IpNet>,
    /// The header trusted proxies write the client chain into.
    pub client_ip_header: crate::proxy::client_ip::ChainHeader,
    pub routes: RouteTable<Arc<Route>>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub authenticators: Authenticators,
    pub access_log: bool,
    pub log_level: String,
    pub unmatched: Arc<RouteMetrics>,
    pub metrics: Arc<Metrics>,
    pub admin: Option<AdminRt>,
    pub demo_upstream: Option<SocketAddr>,
    pub workers: Option<usize>,
    /// The global IP lists, the node's bans and automatic bans.
    pub guard: Arc<crate::guard::Guard>,
    /// The top-level `respond.security_headers`: on answers no route's own settings cover.
    pub security_headers: crate::respond::protect::SecurityHeaders,
    /// Where security events go (`events:`, `audit:`); the pipeline emits what stages noted.
    pub events: crate::events::Emitter,
    /// Puts this configuration's event outputs in force (at `Runtime::start`).
    pub events_activation: crate::observe::events::Activation,
    /// `logging.client_ip` and the log key.
    pub privacy: Arc<crate::observe::privacy::Privacy>,
    /// `traces:`: OpenTelemetry spans and W3C trace context; `None` when off.
    pub tracer: Option<Arc<crate::observe::trace::Tracer>>,
    /// `anomaly:`: the detector's policy and the slot its stage and the records reach it through.
    pub anomaly: Option<crate::anomaly::runtime::AnomalyRt>,
}

pub struct ListenerRt {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub http2: bool,
    /// Set when the listener redirects plain HTTP to HTTPS on this port.
    pub redirect_https_port: Option<u16>,
    /// `plain_http: refuse`: every request gets 403 `insecure-transport`.
    pub refuse_plain: bool,
    /// Credential carriers: a redirecting listener refuses a request carrying one instead of
    /// redirecting it (the credential already crossed the network in clear; a redirect would teach the
    /// client to keep doing it), and a header name with `_` that folds onto one is never forwarded.
    pub credentials: Credentials,
    pub underscores_in_headers: bool,
    pub hsts: Option<HeaderValue>,
}

/// Where requests carry credentials: header names and query parameter names.
#[derive(Default)]
pub struct Credentials {
    pub headers: Vec<http::HeaderName>,
    pub query_params: Vec<String>,
}

impl Credentials {
    /// True when `parts` carries any of these credentials.
    pub fn present(&self, parts: &http::request::Parts) -> bool {
        self.headers.iter().any(|h| parts.headers.contains_key(h))
            || parts.uri.query().is_some_and(|q| {
                q.split('&').any(|kv| {
                    let k = kv.split('=').next().unwrap_or("");
                    self.query_params.iter().any(|p| p == k)
                })
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    pub request: Limits,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted per prefix of this length for `max_connections_per_ip`.
    pub connection_ipv6_prefix: u8,
    pub max_concurrent_streams: u32,
    pub shutdown_timeout: Duration,
}

pub struct AdminRt {
    pub address: SocketAddr,
    pub token: Option<crate::secret::Secret>,
    /// The config's `store:` (where admin tokens live).
    pub store: Option<crate::store::StoreConfig>,
    /// `store.postgres`, when set: admin tokens live there instead, shared by the fleet.
    pub postgres: Option<Arc<crate::store::Postgres>>,
    /// TLS on the admin listener (HTTP/1.1 only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Client certificate identities and the admin role each has (`viewer`, `operator`, `admin`).
    pub certificates: Option<(Arc<crate::authn::mtls::MtlsAuth>, BTreeMap<String, String>)>,
}

/// State that must outlive a reload, owned once by the process and handed to every compile (never in a
/// static): the metrics registry, and what stages keep by name across reloads. Reloads also adopt
/// unchanged upstreams (pools, health) and authenticators (caches) from the running [`Runtime`].
#[derive(Default)]
pub struct Lasting {
    pub metrics: Arc<Metrics>,
    pub authn: Kept,
    pub limits: crate::limit::Kept,
    pub guard: crate::guard::Kept,
    pub fleet: crate::fleet::Kept,
    /// `store.postgres`: the pool and change watcher, kept while the section is unchanged.
    pub postgres: crate::store::postgres::Kept,
    pub self_signed: crate::tls::server::SelfSignedCache,
    pub events: crate::observe::events::Kept,
    /// TLS handshake failures are counted always and sampled into events (one a second).
    pub tls_sampler: crate::observe::events::Sampler,
    pub log_key: crate::observe::privacy::ProcessKey,
    pub audit: crate::observe::audit::Kept,
    pub traces: crate::observe::trace::Kept,
    /// The token vault of format-preserving fields.
    pub tokenize: crate::tokenize::Kept,
    /// The dashboard's live statistics (`observe::live`), fed by every request's completion.
    pub live: Arc<crate::observe::live::Live>,
    /// The anomaly detector (engine, recent alerts, actions in force), once configured.
    pub anomaly: crate::anomaly::runtime::Kept,
}
