//! The running configuration: what `config::compile` builds from the file and the pipeline and server
//! read. Immutable; a reload builds a new one beside it and swaps it in.

use super::Route;
use crate::authn::Authenticators;
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
}

pub struct ListenerRt {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub http2: bool,
    pub redirect_https_port: Option<u16>,
    pub hsts: Option<HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    pub request: Limits,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_concurrent_streams: u32,
    pub shutdown_timeout: Duration,
}

pub struct AdminRt {
    pub address: SocketAddr,
    pub token: Option<crate::secret::Secret>,
}
