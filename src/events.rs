//! Security events: the one versioned schema (`docs/events.md`) and the one small interface every part
//! of the gateway emits through.
//!
//! A stage notes what it saw on its [`Exchange`](crate::exchange::Exchange) (`ex.event(...)`); the
//! pipeline completes the note with the request's context (time, request id, principal, client, route)
//! and hands it to the [`Emitter`]. Parts that run outside a request (reloads, bans, health checks, TLS
//! handshakes, key and admin commands) hold an [`Emitter`] and call [`Emitter::emit`] themselves.
//! Nobody that emits knows which exporters are configured: the emitter is a handle to whatever
//! `observe::events` built from the config (stdout, syslog, HTTP collectors, the audit trail), or to
//! nothing.
//!
//! Like `exchange`, this module imports nothing of the gateway: stages may use it.
//!
//! An event never carries a secret: no header value, no credential, no query string, no body value.
//! Reason codes and rule ids are the gateway's own words.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The schema's version, written in every event as `"v"`. Adding an optional field keeps it; removing
/// or renaming a field, or changing a type, raises it.
pub const SCHEMA_VERSION: u32 = 1;

/// What happened. The string forms (`authn.failure`, ...) are the schema's `type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A credential was missing, malformed, expired, revoked or wrong (401).
    AuthnFailure,
    /// Authorization refused an authenticated (or anonymous) principal (403).
    AuthzDenied,
    /// A rate limit or concurrency limit refused the request (429).
    RateLimited,
    /// A daily or monthly quota was used up (429).
    QuotaExceeded,
    /// Inspection matched an attack rule (blocked, or only detected in `detect` mode).
    InspectDetection,
    /// The request broke its route's shape limits, content rules or OpenAPI document (400/413/415/422),
    /// or the protocol rules every request is held to (head limits, framing, path spellings).
    ValidationFailed,
    /// The client address is on a deny list (or off an allow list), or banned (403); or its bot score
    /// reached the route's `bot.refuse_at` (403, or noted only in `monitor` mode).
    GuardBlocked,
    /// A ban was set (by `auto_ban`, a command, or the admin API).
    BanSet,
    /// A ban ran out or was lifted.
    BanExpired,
    /// The configuration was reloaded.
    ConfigReload,
    /// A reload was refused; the old configuration keeps serving.
    ConfigReloadFailed,
    /// An API key was created, rotated, revoked or changed.
    KeyLifecycle,
    /// An administrative action (a command or an admin API call that changes state).
    AdminAction,
    /// An upstream target went in or out of rotation.
    UpstreamHealth,
    /// A TLS handshake failed (counted always; sampled into events).
    TlsHandshakeFailure,
    /// The anomaly detector raised an alert, with its explanation (detector, feature, baseline,
    /// observed value, score, window).
    AnomalyAlert,
    /// An anomaly response (throttle, ban, challenge) was put in force, expired or was lifted.
    AnomalyAction,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::AuthnFailure,
        Kind::AuthzDenied,
        Kind::RateLimited,
        Kind::QuotaExceeded,
        Kind::InspectDetection,
        Kind::ValidationFailed,
        Kind::GuardBlocked,
        Kind::BanSet,
        Kind::BanExpired,
        Kind::ConfigReload,
        Kind::ConfigReloadFailed,
        Kind::KeyLifecycle,
        Kind::AdminAction,
        Kind::UpstreamHealth,
        Kind::TlsHandshakeFailure,
        Kind::AnomalyAlert,
        Kind::AnomalyAction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthnFailure => "authn.failure",
            Kind::AuthzDenied => "authz.denied",
            Kind::RateLimited => "ratelimit.exceeded",
            Kind::QuotaExceeded => "quota.exceeded",
            Kind::InspectDetection => "inspect.detection",
            Kind::ValidationFailed => "validation.failed",
            Kind::GuardBlocked => "guard.blocked",
            Kind::BanSet => "ban.set",
            Kind::BanExpired => "ban.expired",
            Kind::ConfigReload => "config.reload",
            Kind::ConfigReloadFailed => "config.reload_failed",
            Kind::KeyLifecycle => "key.lifecycle",
            Kind::AdminAction => "admin.action",
            Kind::UpstreamHealth => "upstream.health",
            Kind::TlsHandshakeFailure => "tls.handshake_failure",
            Kind::AnomalyAlert => "anomaly.alert",
            Kind::AnomalyAction => "anomaly.action",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The severity an event of this kind has unless its emitter says otherwise.
    pub fn default_severity(self) -> Severity {
        match self {
            Kind::InspectDetection | Kind::BanSet => Severity::High,
            Kind::AnomalyAlert | Kind::AnomalyAction => Severity::Medium,
            Kind::AuthzDenied | Kind::GuardBlocked | Kind::ConfigReloadFailed | Kind::UpstreamHealth => {
                Severity::Medium
            }
            Kind::AuthnFailure | Kind::RateLimited | Kind::QuotaExceeded | Kind::ValidationFailed => Severity::Low,
            Kind::TlsHandshakeFailure => Severity::Low,
            Kind::BanExpired | Kind::ConfigReload | Kind::KeyLifecycle | Kind::AdminAction => Severity::Info,
        }
    }

    /// Events of these kinds go to the audit trail always (the others when `audit.security_events`).
    pub fn is_audited(self) -> bool {
        matches!(
            self,
            Kind::BanSet
                | Kind::BanExpired
                | Kind::ConfigReload
                | Kind::ConfigReloadFailed
                | Kind::KeyLifecycle
                | Kind::AdminAction
                | Kind::AnomalyAction
        )
    }
}

/// How much an event (or a `portcullis scan` finding) matters. Ordered:
/// `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// RFC 5424 severity (0 emergency .. 7 debug).
    pub fn syslog(self) -> u8 {
        match self {
            Severity::Info => 6,
            Severity::Low => 5,
            Severity::Medium => 4,
            Severity::High => 3,
            Severity::Critical => 2,
        }
    }

    /// CEF severity (0..10).
    pub fn cef(self) -> u8 {
        match self {
            Severity::Info => 1,
            Severity::Low => 3,
            Severity::Medium => 5,
            Severity::High => 8,
            Severity::Critical => 10,
        }
    }

    /// OCSF `severity_id` (1 informational .. 5 critical).
    pub fn ocsf(self) -> u8 {
        self as u8 + 1
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    /// Case-insensitive, surrounding space ignored (`--fail-on High`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown severity `{s}`: one of info, low, medium, high, critical"))
    }
}

/// An attribute's value: events carry small typed facts beside the common fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Bool(bool),
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Value {
        Value::Str(Cow::Borrowed(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(Cow::Owned(s))
    }
}
impl From<&Arc<str>> for Value {
    fn from(s: &Arc<str>) -> Value {
        Value::Str(Cow::Owned(s.to_string()))
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(i64::from(n))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(v) => s.serialize_str(v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(v) => f.write_str(v),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// What a stage notes on an exchange: the kind, why (a reason code), which rule, and attributes. The
/// pipeline adds the request's context when the request is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Noted {
    pub kind: Kind,
    pub severity: Severity,
    pub reason: Cow<'static, str>,
    pub rule: Option<Cow<'static, str>>,
    pub attrs: Vec<(&'static str, Value)>,
}

impl Noted {
    pub fn new(kind: Kind, reason: impl Into<Cow<'static, str>>) -> Noted {
        Noted { kind, severity: kind.default_severity(), reason: reason.into(), rule: None, attrs: Vec::new() }
    }

    pub fn rule(mut self, rule: impl Into<Cow<'static, str>>) -> Noted {
        self.rule = Some(rule.into());
        self
    }

    pub fn severity(mut self, severity: Severity) -> Noted {
        self.severity = severity;
        self
    }

    pub fn attr(mut self, name: &'static str, value: impl Into<Value>) -> Noted {
        self.attrs.push((name, value.into()));
        self
    }
}

/// One security event, schema version [`SCHEMA_VERSION`]. Field by field in `docs/events.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: SystemTime,
    pub kind: Kind,
    pub severity: Severity,
    /// The request's id (`X-Request-Id`), for events about one request.
    pub request_id: Option<Box<str>>,
    /// The authenticated principal's id, or for admin actions the actor.
    pub principal: Option<Box<str>>,
    /// The client's address as the trusted-proxy rules decided (truncated when `logging.client_ip:
    /// truncate`; `None` and `client_ip_hash` set when `hash`).
    pub client_ip: Option<IpAddr>,
    pub client_ip_hash: Option<Box<str>>,
    pub route: Option<Arc<str>>,
    pub method: Option<Box<str>>,
    /// The request's path (normalised; never the query).
    pub path: Option<Box<str>>,
    /// The status the client was answered with.
    pub status: Option<u16>,
    /// Why: the gateway's reason code (`expired`, `bad_signature`, `ip_denied`, ...).
    pub reason: Cow<'static, str>,
    /// Which rule decided: an authorization rule, a limit's name, an inspection rule id, a ban id.
    pub rule: Option<Cow<'static, str>>,
    /// Kind-specific facts (an inspection's category, a reload's error, an upstream's target, ...).
    pub attrs: Vec<(&'static str, Value)>,
}

impl Event {
    /// An event outside any request (reloads, bans, health, handshakes, commands).
    pub fn new(kind: Kind, reason: impl Into<Cow<'static, str>>) -> Event {
        Event::from_noted(Noted::new(kind, reason))
    }

    pub fn from_noted(n: Noted) -> Event {
        Event {
            time: SystemTime::now(),
            kind: n.kind,
            severity: n.severity,
            request_id: None,
            principal: None,
            client_ip: None,
            client_ip_hash: None,
            route: None,
            method: None,
            path: None,
            status: None,
            reason: n.reason,
            rule: n.rule,
            attrs: n.attrs,
        }
    }

    pub fn rule(mut self, rule: impl Into<Cow<'static, str>>) -> Event {
        self.rule = Some(rule.into());
        self
    }

    pub fn severity(mut self, severity: Severity) -> Event {
        self.severity = severity;
        self
    }

    pub fn attr(mut self, name: &'static str, value: impl Into<Value>) -> Event {
        self.attrs.push((name, value.into()));
        self
    }

    pub fn principal(mut self, principal: impl Into<Box<str>>) -> Event {
        self.principal = Some(principal.into());
        self
    }

    pub fn client_ip(mut self, ip: IpAddr) -> Event {
        self.client_ip = Some(ip);
        self
    }

    pub fn attr_str(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| *n == name).and_then(|(_, v)| match v {
            Value::Str(s) => Some(&**s),
            _ => None,
        })
    }

    /// Milliseconds since the Unix epoch.
    pub fn time_ms(&self) -> i64 {
        self.time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// RFC 3339 UTC time with milliseconds (`2026-11-29T19:05:16.123Z`).
    pub fn time_rfc3339(&self) -> String {
        rfc3339_ms(self.time_ms())
    }

    /// The schema's JSON form: one object, no trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("v", &SCHEMA_VERSION)?;
        m.serialize_entry("time", &self.time_rfc3339())?;
        m.serialize_entry("type", self.kind.as_str())?;
        m.serialize_entry("severity", self.severity.as_str())?;
        if let Some(v) = &self.request_id {
            m.serialize_entry("request_id", v)?;
        }
        if let Some(v) = &self.principal {
            m.serialize_entry("principal", v)?;
        }
        if let Some(v) = &self.client_ip {
            m.serialize_entry("client_ip", &v.to_string())?;
        }
        if let Some(v) = &self.client_ip_hash {
            m.serialize_entry("client_ip_hash", v)?;
        }
        if let Some(v) = &self.route {
            m.serialize_entry("route", &**v)?;
        }
        if let Some(v) = &self.method {
            m.serialize_entry("method", v)?;
        }
        if let Some(v) = &self.path {
            m.serialize_entry("path", v)?;
        }
        if let Some(v) = &self.status {
            m.serialize_entry("status", v)?;
        }
        m.serialize_entry("reason", &self.reason)?;
        if let Some(v) = &self.rule {
            m.serialize_entry("rule", v)?;
        }
        if !self.attrs.is_empty() {
            m.serialize_entry("attrs", &Attrs(&self.attrs))?;
        }
        m.end()
    }
}

struct Attrs<'a>(&'a [(&'static str, Value)]);

impl Serialize for Attrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Where events go. Implemented by `observe::events` (the configured outputs); emitters only see
/// [`Emitter`].
pub trait Sink: Send + Sync + 'static {
    /// Takes one event. Must not block: a full queue drops (and counts) rather than waits.
    fn emit(&self, event: Event);

    /// False when events would go nowhere (so emitters may skip building them).
    fn enabled(&self) -> bool {
        true
    }
}

/// A cheap, cloneable handle to the configured event outputs (or to none).
#[derive(Clone, Default)]
pub struct Emitter(Option<Arc<dyn Sink>>);

impl Emitter {
    pub fn new(sink: Arc<dyn Sink>) -> Emitter {
        Emitter(Some(sink))
    }

    /// An emitter that discards everything (tests, commands without a config).
    pub fn none() -> Emitter {
        Emitter(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.enabled())
    }

    pub fn emit(&self, event: Event) {
        if let Some(sink) = &self.0 {
            sink.emit(event);
        }
    }
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Emitter(on)" } else { "Emitter(off)" })
    }
}

/// Who runs a command (the `principal` of its events): the OS user, or `cli`. Not authenticated.
pub fn actor() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "cli".to_owned())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch (proleptic Gregorian, UTC).
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_979_116_123), "2026-11-29T19:05:16.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn json_has_the_schema_fields() {
        let mut e = Event::new(Kind::AuthnFailure, "expired").rule("jwt").attr("method", "jwt");
        e.request_id = Some("abc".into());
        e.client_ip = Some("192.0.2.1".parse().unwrap());
        e.status = Some(401);
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["type"], "authn.failure");
        assert_eq!(v["severity"], "low");
        assert_eq!(v["reason"], "expired");
        assert_eq!(v["rule"], "jwt");
        assert_eq!(v["client_ip"], "192.0.2.1");
        assert_eq!(v["status"], 401);
        assert_eq!(v["attrs"]["method"], "jwt");
        assert!(v.get("principal").is_none());
    }
}
