//! Behavioural anomaly detection (issue 16).
//!
//! The data path pays one thing: building a compact [`Record`] of a finished request and offering it to
//! a bounded queue (`runtime`). Everything else happens on the detector thread: per-entity online
//! features, baselines (EWMA mean and variance, streaming quantiles, half-space trees), the detectors
//! ([`Detector`]), and the [`Alert`]s they raise, each with its explanation. The `runtime` module turns
//! alerts into the configured responses (log, alert, throttle, ban, challenge).
//!
//! This file holds the contract every part codes against: the record, the signals, the alert.

pub mod runtime;

use std::net::IpAddr;
use std::sync::Arc;

pub use crate::activity::{Record, Signals, NO_ROUTE};

/// The detectors, each with a stable id (config key, event field, metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// One IP, many failing principals or keys.
    CredentialStuffing,
    /// One principal or key, failing from many IPs (password spraying, distributed stuffing).
    PasswordSpraying,
    /// High 403/404 rates with sequential ids (OWASP API1, object-level probing).
    Enumeration,
    /// Request rate far above the entity's own baseline (scraping, volumetric abuse).
    Volumetric,
    /// One principal or token from many networks or user agents at once.
    TokenSharing,
    /// Response bytes drifting far above the baseline (slow exfiltration).
    Exfiltration,
    /// Activity at hours the entity is never active.
    UnusualHours,
    /// Automation: header order and consistency against the claimed agent, missing browser headers,
    /// timing regularity, scanner signatures.
    Automation,
    /// The online multivariate model (half-space trees) scored as its own detector.
    Model,
}

impl Detector {
    pub const ALL: [Detector; 9] = [
        Detector::CredentialStuffing,
        Detector::PasswordSpraying,
        Detector::Enumeration,
        Detector::Volumetric,
        Detector::TokenSharing,
        Detector::Exfiltration,
        Detector::UnusualHours,
        Detector::Automation,
        Detector::Model,
    ];

    /// The id used in config (`anomaly.detectors.<id>`), events and metrics.
    pub fn id(self) -> &'static str {
        match self {
            Detector::CredentialStuffing => "credential_stuffing",
            Detector::PasswordSpraying => "password_spraying",
            Detector::Enumeration => "enumeration",
            Detector::Volumetric => "volumetric",
            Detector::TokenSharing => "token_sharing",
            Detector::Exfiltration => "exfiltration",
            Detector::UnusualHours => "unusual_hours",
            Detector::Automation => "automation",
            Detector::Model => "model",
        }
    }

    pub fn from_id(id: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.id() == id)
    }
}

/// What kind of thing an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Principal,
    ApiKey,
    /// A client address; IPv6 addresses by their prefix.
    Ip,
    Route,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Principal => "principal",
            EntityKind::ApiKey => "api_key",
            EntityKind::Ip => "ip",
            EntityKind::Route => "route",
        }
    }
}

/// The entity an alert is about, readable: an address or prefix (`203.0.113.7`, `2001:db8:1:2::/64`),
/// a principal id, a key id, a route index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    pub kind: EntityKind,
    pub label: Arc<str>,
}

/// One alert with its explanation: which detector, on which feature, against what baseline, what was
/// observed, how anomalous (score) and over which window. Never "anomalous" alone.
#[derive(Debug, Clone)]
pub struct Alert {
    pub detector: Detector,
    pub entity: Entity,
    /// The client address the alert can act on (a ban), when the entity is or has one.
    pub ip: Option<IpAddr>,
    /// The principal the alert names (its label: ids over 32 bytes are cut), when the entity is an
    /// authenticated principal or key. An identity a refused credential only claimed is not one.
    pub principal: Option<Arc<str>>,
    /// What a throttle, challenge or ban on that principal matches: the exact credential.
    pub target: Option<PrincipalTarget>,
    /// The feature that crossed its threshold, e.g. `distinct_failing_identities`.
    pub feature: &'static str,
    /// The baseline the observation was compared with (the entity's own, or its peers' while cold).
    pub baseline: f64,
    /// What was observed in the window.
    pub observed: f64,
    /// How anomalous, 0.0 to 1.0; the detector fires at or above its threshold for the sensitivity.
    pub score: f64,
    /// The window the observation covers, in seconds.
    pub window_s: u32,
    /// Record time of the observation that raised it.
    pub at_ms: u64,
    /// One sentence a person reads in the event and the dashboard.
    pub explanation: String,
}

/// The exact principal an alert can act on. Labels are cut at 32 bytes and do not carry the login
/// method, so actions match this instead: two ids that share their first 32 bytes, or the same id
/// under two methods (a JWT `sub` and an API key's principal), are two targets.
#[derive(Debug, Clone, PartialEq)]
pub struct PrincipalTarget {
    /// The engine's key of the principal: its method and whole id, hashed with the engine's seed
    /// ([`Engine::principal_key`]).
    pub key: u64,
    /// The login method (`api_key`, `jwt`, `introspection`, `mtls`, `signature`).
    pub method: &'static str,
    /// True when the alert's label is the whole id: a ban shared with the fleet names it
    /// (`<method>:<id>`); a cut id is banned on this node only, by key.
    pub whole: bool,
    /// The principal itself, when the alert was raised on one of its own requests (most are; those
    /// raised when a quiet entity's window closes are not): its whole id and issuer, by which the
    /// fleet's other nodes, each with its own seed, key it.
    pub principal: Option<Arc<crate::exchange::Principal>>,
}

mod detectors;
mod engine;
mod fleet;
mod hst;
mod signals;
mod sketch;
mod state;
mod table;
#[cfg(test)]
mod tests;

pub use engine::{Engine, Settings, Suggestion};
pub use signals::signals;
