//! The `upstreams:` section of the config file: targets, balancing, timeouts, retries, pools, health
//! checks and TLS to the upstream. Parsed here (serde, unknown keys refused); compiled by
//! [`super::upstream::Upstream::new`].

use crate::units::Dur;
use serde::Deserialize;

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
