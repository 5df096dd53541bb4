//! Threat inspection (place 9, `Place::Inspection`): normalises every target of a request and runs the
//! detectors on it; scores add up to the route's anomaly threshold; `block` answers 403
//! `request-blocked`, `detect` only logs. See `detect` for the rule contract.
//!
//! Config: a top-level `inspect:` section is the default of every route; a route's own `inspect:`
//! section replaces it whole (keys it leaves out take their defaults, not the top-level values), and
//! `inspect: off` turns inspection off on that route. A route without either is not inspected.
//!
//! [`Engine`] is usable on its own (benches, the corpus tool): `Engine::compile(&cfg)?.inspect(&parts,
//! Some(body))` returns a [`Report`].

pub mod detect;
pub mod normalize;
pub mod targets;

use crate::content::Decoding;
use crate::events::{Kind, Noted, Severity};
use crate::exchange::{Exchange, Reject};
use crate::observe::redact::Redactor;
use detect::{Category, Hits, Rule, TargetKind, View};
use prometheus_client::metrics::{counter::Counter, family::Family};
use serde::{Deserialize, Deserializer};
use std::sync::Arc;

/// `block` refuses a request whose score reaches the threshold; `detect` only logs and counts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Block,
    Detect,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Detect => "detect",
        }
    }
}

/// The `inspect:` section (top level or per route).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InspectConfig {
    #[serde(default)]
    pub mode: Mode,
    /// 1 (default) to 4: rules of a higher level than this do not run.
    #[serde(default = "default_paranoia")]
    pub paranoia: u8,
    /// The anomaly score at which `block` refuses (default 5: one critical rule).
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// Headers inspected besides `User-Agent` and `Referer`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Rules or categories turned off for one target.
    #[serde(default)]
    pub exclusions: Vec<ExclusionConfig>,
}

fn default_paranoia() -> u8 {
    1
}
fn default_threshold() -> u32 {
    5
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig { mode: Mode::Block, paranoia: 1, threshold: 5, headers: Vec::new(), exclusions: Vec::new() }
    }
}

/// `{ rule: 1002, target: "query:q" }` or `{ category: xss, target: "json:/comment" }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExclusionConfig {
    #[serde(default)]
    pub rule: Option<u32>,
    #[serde(default)]
    pub category: Option<String>,
    /// `path`, `query:NAME`, `query-name`, `form:NAME`, `form-name`, `json:/POINTER`, `json-key:/POINTER`,
    /// `header:NAME`, `cookie:NAME`, `filename:NAME`, `xml:/PATH`; a kind alone (`query`) is every
    /// target of that kind.
    pub target: String,
}

/// A route's `inspect:`: `off`, or a section.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteInspect {
    Off,
    On(InspectConfig),
}

impl<'de> Deserialize<'de> for RouteInspect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RouteInspect;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`off` or an inspect section")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RouteInspect, E> {
                if v == "off" {
                    Ok(RouteInspect::Off)
                } else {
                    Err(E::custom(format!("`{v}`: expected `off` or an inspect section")))
                }
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RouteInspect, E> {
                if v {
                    Ok(RouteInspect::On(InspectConfig::default()))
                } else {
                    Ok(RouteInspect::Off)
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RouteInspect, A::Error> {
                InspectConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RouteInspect::On)
            }
        }
        d.deserialize_any(V)
    }
}

/// The config a route runs with: its own section, `off`, or the top-level default.
pub fn effective<'a>(route: Option<&'a RouteInspect>, top: Option<&'a InspectConfig>) -> Option<&'a InspectConfig> {
    match route {
        Some(RouteInspect::Off) => None,
        Some(RouteInspect::On(c)) => Some(c),
        None => top,
    }
}

enum What {
    Rule(u32),
    Category(Category),
}

struct Exclusion {
    what: What,
    /// `kind` or `kind:name`.
    target: String,
}

const CATEGORIES: [Category; 12] = [
    Category::Sqli,
    Category::Xss,
    Category::Cmdi,
    Category::Traversal,
    Category::Ssrf,
    Category::Template,
    Category::Nosql,
    Category::Xpath,
    Category::Ldap,
    Category::Deserialization,
    Category::Xxe,
    Category::Scanner,
];

const TARGET_KINDS: [&str; 11] =
    ["path", "query", "query-name", "form", "form-name", "json", "json-key", "header", "cookie", "filename", "xml"];

/// One compiled `inspect` section.
pub struct Engine {
    mode: Mode,
    paranoia: u8,
    threshold: u32,
    headers: Vec<http::HeaderName>,
    exclusions: Vec<Exclusion>,
    decoding: Decoding,
}

/// One rule matched on one target.
#[derive(Debug, Clone)]
pub struct Detection {
    pub rule: &'static Rule,
    /// `query:q`, `json:/a/b` ... (attacker-chosen names are truncated and escaped).
    pub target: String,
    /// A redacted, truncated fragment of the value (never the whole value).
    pub fragment: String,
}

/// What inspecting one request found.
#[derive(Debug, Default)]
pub struct Report {
    pub score: u32,
    pub detections: Vec<Detection>,
    /// Bytes looked at by normalisation, targets and detectors.
    pub work: u64,
    /// The body could not be read as its declared type (block mode refuses with this).
    pub malformed: Option<Reject>,
}

impl Report {
    /// True if a rule that refuses whatever the threshold (a DTD in XML) matched.
    pub fn must_refuse(&self) -> bool {
        self.detections.iter().any(|d| d.rule.category == Category::Xxe)
    }
}

/// Detections kept per request (the score counts them all).
const MAX_DETECTIONS: usize = 32;

impl Engine {
    pub fn compile(c: &InspectConfig) -> Result<Engine, String> {
        if !(1..=4).contains(&c.paranoia) {
            return Err(format!("paranoia {} is not between 1 and 4", c.paranoia));
        }
        if c.threshold == 0 {
            return Err("threshold must be at least 1".into());
        }
        let headers = c
            .headers
            .iter()
            .map(|h| http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("`{h}` is not a header name")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut exclusions = Vec::new();
        for e in &c.exclusions {
            let what = match (&e.rule, &e.category) {
                (Some(r), None) => What::Rule(*r),
                (None, Some(cat)) => What::Category(
                    CATEGORIES
                        .iter()
                        .copied()
                        .find(|c| c.as_str() == cat)
                        .ok_or_else(|| format!("exclusion: `{cat}` is not a category"))?,
                ),
                _ => return Err("an exclusion names exactly one of `rule` or `category`".into()),
            };
            let kind = e.target.split_once(':').map_or(e.target.as_str(), |(k, _)| k);
            if !TARGET_KINDS.contains(&kind) {
                return Err(format!(
                    "exclusion target `{}`: expected one of {} (optionally `:NAME`)",
                    e.target,
                    TARGET_KINDS.join(", ")
                ));
            }
            let target = match e.target.split_once(':') {
                Some(("header", name)) => format!("header:{}", name.to_ascii_lowercase()),
                _ => e.target.clone(),
            };
            exclusions.push(Exclusion { what, target });
        }
        Ok(Engine {
            mode: c.mode,
            paranoia: c.paranoia,
            threshold: c.threshold,
            headers,
            exclusions,
            decoding: Decoding::default(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn describe(&self) -> String {
        format!("inspection ({}, paranoia {}, threshold {})", self.mode.as_str(), self.paranoia, self.threshold)
    }

    /// Inspects a request head and, if given, its body (as received: `Content-Encoding` is decoded
    /// here under the bound of [`Decoding`]).
    pub fn inspect(&self, parts: &http::request::Parts, body: Option<&[u8]>) -> Report {
        self.inspect_body(parts, body.map(Body::Received))
    }

    fn inspect_body(&self, parts: &http::request::Parts, body: Option<Body<'_>>) -> Report {
        let mut w = Walker::new(self);
        self.walk(&mut w, parts, body);
        w.report.work += w.hits.work;
        w.report
    }

    fn walk(&self, w: &mut Walker<'_>, parts: &http::request::Parts, body: Option<Body<'_>>) {
        if targets::path(w, parts.uri.path()) {
            return;
        }
        if let Some(q) = parts.uri.query() {
            if targets::pairs(w, q.as_bytes(), TargetKind::QueryName, TargetKind::QueryValue, "query") {
                return;
            }
        }
        for c in parts.headers.get_all(http::header::COOKIE) {
            if targets::cookies(w, c.as_bytes()) {
                return;
            }
        }
        let fixed = [http::header::USER_AGENT, http::header::REFERER];
        for name in fixed.iter().chain(self.headers.iter()) {
            for v in parts.headers.get_all(name) {
                let v = String::from_utf8_lossy(v.as_bytes());
                if w.value(TargetKind::Header, "header", name.as_str(), &v) {
                    return;
                }
            }
        }
        let body = match body {
            None => return,
            Some(Body::Received(b) | Body::Decoded(b)) if b.is_empty() => return,
            // Validation decoded it already (under its own bound): not decoded twice.
            Some(Body::Decoded(b)) => std::borrow::Cow::Borrowed(b),
            Some(Body::Received(b)) => match crate::content::decode_body(&parts.headers, b, &self.decoding) {
                Ok(b) => b,
                Err(r) => {
                    w.report.malformed = Some(r);
                    return;
                }
            },
        };
        // The one parser of record for Content-Type (the validation stage reads it the same way): two
        // fields, or one that does not parse, are refused rather than guessed at.
        let media = match crate::content::request_media_type(&parts.headers) {
            Ok(m) => m,
            Err(r) => {
                w.report.malformed = Some(r);
                return;
            }
        };
        // A charset the detectors cannot read (UTF-16, UTF-7, EBCDIC ...) would hide a payload from them
        // and not from an upstream that decodes it: refused (415), as ModSecurity's CRS restricts them.
        let readable = |c: &str| matches!(c, "utf-8" | "utf8" | "us-ascii" | "ascii" | "iso-8859-1" | "latin1");
        if media.as_ref().and_then(|m| m.charset.as_deref()).is_some_and(|c| !readable(c)) {
            w.report.malformed = Some(Reject::UnsupportedMediaType);
            return;
        }
        let boundary = media.as_ref().and_then(|m| m.boundary.as_deref());
        let essence = media.as_ref().map_or("", |m| &*m.essence);
        let result = match targets::body_kind(essence, &body) {
            targets::BodyKind::Json => targets::json(w, &body),
            targets::BodyKind::Xml => targets::xml(w, &body),
            targets::BodyKind::Form => {
                targets::pairs(w, &body, TargetKind::FormName, TargetKind::FormValue, "form");
                Ok(())
            }
            targets::BodyKind::Multipart => targets::multipart(w, &body, boundary),
            targets::BodyKind::Text => {
                let text = String::from_utf8_lossy(&body);
                w.value(TargetKind::FormValue, "body", "", &text);
                Ok(())
            }
            targets::BodyKind::Opaque => {
                // A declared binary type whose bytes are text anyway (JSON sent as octet-stream to an
                // upstream that parses it regardless) is read as text; real binary is not.
                if let Ok(text) = std::str::from_utf8(&body) {
                    w.value(TargetKind::FormValue, "body", "", text);
                }
                Ok(())
            }
        };
        if let Err(r) = result {
            w.report.malformed = Some(r);
        }
    }
}

/// The state of one request's inspection: reusable buffers, hits and the report so far.
pub struct Walker<'e> {
    engine: &'e Engine,
    scratch: normalize::Scratch,
    hits: Hits,
    report: Report,
    /// Block mode reached its threshold: the remaining targets are not read.
    stopped: bool,
}

impl<'e> Walker<'e> {
    fn new(engine: &'e Engine) -> Walker<'e> {
        Walker {
            engine,
            scratch: normalize::Scratch::default(),
            hits: Hits::default(),
            report: Report::default(),
            stopped: false,
        }
    }

    /// Inspects one value; true when inspection should stop (block mode reached its threshold).
    pub fn value(&mut self, kind: TargetKind, prefix: &'static str, name: &str, raw: &str) -> bool {
        if self.stopped {
            return true;
        }
        let flags = self.scratch.normalize(raw);
        self.hits.work += flags.work;
        let before = self.hits.matched.len();
        {
            let view = View {
                raw,
                decoded: &self.scratch.decoded,
                folded: &self.scratch.folded,
                kind,
                paranoia: self.engine.paranoia,
            };
            if flags.nul {
                self.hits.hit(&detect::protocol::NUL, &view);
            }
            if flags.overlong {
                self.hits.hit(&detect::protocol::OVERLONG_UTF8, &view);
            }
            detect::sqli::scan(&view, &mut self.hits);
            detect::xss::scan(&view, &mut self.hits);
            detect::others::scan(&view, &mut self.hits);
        }
        if self.hits.matched.len() > before {
            let label = label(prefix, name);
            let new: Vec<&'static Rule> = self.hits.matched[before..].iter().map(|(r, _)| *r).collect();
            self.hits.matched.truncate(before);
            let mut seen: Vec<u32> = Vec::new();
            for rule in new {
                if seen.contains(&rule.id) || self.excluded(rule, &label) {
                    continue;
                }
                seen.push(rule.id);
                self.record(rule, &label, kind, &self.scratch.decoded.clone());
            }
        }
        self.stopped = self.engine.mode == Mode::Block && self.report.score >= self.engine.threshold;
        self.stopped
    }

    fn excluded(&self, rule: &Rule, label: &str) -> bool {
        self.engine.exclusions.iter().any(|e| {
            let what = match e.what {
                What::Rule(id) => id == rule.id,
                What::Category(c) => c == rule.category,
            };
            what && (e.target == label || label.split_once(':').map_or(label, |(k, _)| k) == e.target)
        })
    }

    fn record(&mut self, rule: &'static Rule, label: &str, kind: TargetKind, value: &str) {
        self.report.score += u32::from(rule.score);
        if self.report.detections.len() < MAX_DETECTIONS {
            let fragment = fragment(value, kind);
            self.report.detections.push(Detection { rule, target: label.to_owned(), fragment });
        }
    }

    /// A rule raised by parsing itself (a DTD in XML).
    pub fn protocol(&mut self, rule: &'static Rule, prefix: &'static str, name: &str) {
        let label = label(prefix, name);
        if !self.excluded(rule, &label) {
            self.record(rule, &label, TargetKind::XmlText, "<!DOCTYPE");
        }
        self.stopped = self.engine.mode == Mode::Block;
    }
}

/// `prefix:name`, the name truncated to 64 bytes and stripped of control characters.
fn label(prefix: &str, name: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 1 + name.len().min(64));
    s.push_str(prefix);
    if !name.is_empty() {
        s.push(':');
        for c in name.chars().take(64) {
            s.push(if c.is_control() { '?' } else { c });
        }
    }
    s
}

/// At most 24 characters of the value (12 of a cookie or header, which may carry credentials),
/// control characters as `?`, and `…` when cut.
fn fragment(value: &str, kind: TargetKind) -> String {
    let max = if matches!(kind, TargetKind::Cookie | TargetKind::Header) { 12 } else { 24 };
    let mut out: String = value.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if value.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl Inspection {
    /// The fragment a log may quote: withheld under a secret name, in a header or a cookie; card
    /// numbers masked.
    fn fragment<'d>(&self, d: &'d Detection) -> std::borrow::Cow<'d, str> {
        let (kind, name) = d.target.split_once(':').unwrap_or((d.target.as_str(), ""));
        if matches!(kind, "header" | "cookie") || self.redactor.is_secret(name) {
            return std::borrow::Cow::Borrowed("[redacted]");
        }
        crate::observe::redact::mask_cards(&d.fragment)
    }
}

/// A request body as inspection gets it.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// As received: its `Content-Encoding` is still to be decoded.
    Received(&'a [u8]),
    /// Already decoded from its `Content-Encoding` (by the validation stage).
    Decoded(&'a [u8]),
}

/// The compiled stage: an engine and its counters.
pub struct Inspection {
    engine: Engine,
    /// `portcullis_inspect_detections_total{category,action}`.
    detections: Family<Vec<(String, String)>, Counter>,
    /// Which targets' fragments the logs withhold.
    redactor: Arc<Redactor>,
}

impl Inspection {
    pub fn new(
        engine: Engine,
        detections: Family<Vec<(String, String)>, Counter>,
        redactor: Arc<Redactor>,
    ) -> Inspection {
        Inspection { engine, detections, redactor }
    }

    pub fn describe(&self) -> String {
        self.engine.describe()
    }

    /// Inspects the exchange's head and `body` (read by the chain when the request has one).
    pub fn check(&self, ex: &mut Exchange<'_>, body: Option<&[u8]>) -> Result<(), Reject> {
        let body = match (&ex.decoded_body, body) {
            (Some(decoded), Some(_)) => Some(Body::Decoded(decoded)),
            (_, body) => body.map(Body::Received),
        };
        let report = self.engine.inspect_body(&ex.parts, body);
        let block = self.engine.mode == Mode::Block && (report.score >= self.engine.threshold || report.must_refuse());
        for d in &report.detections {
            let action = if d.rule.score == 0 {
                "log"
            } else if block {
                "block"
            } else {
                "detect"
            };
            tracing::warn!(
                target: "security",
                request_id = ex.request_id,
                route = ex.route.as_deref().unwrap_or("-"),
                rule = d.rule.id,
                category = d.rule.category.as_str(),
                target_name = d.target.as_str(),
                fragment = &*self.fragment(d),
                action,
                score = report.score,
                "inspection: {}",
                d.rule.name
            );
            self.detections
                .get_or_create(&vec![
                    ("category".into(), d.rule.category.as_str().into()),
                    ("action".into(), action.into()),
                ])
                .inc();
        }
        if let Some(top) = report.detections.iter().filter(|d| d.rule.score > 0).max_by_key(|d| d.rule.score) {
            let rules: Vec<String> = report.detections.iter().map(|d| d.rule.id.to_string()).collect();
            ex.event(
                Noted::new(Kind::InspectDetection, top.rule.category.as_str())
                    .rule(top.rule.id.to_string())
                    .severity(if block { Severity::High } else { Severity::Medium })
                    .attr("category", top.rule.category.as_str())
                    .attr("action", if block { "block" } else { "detect" })
                    .attr("score", u64::from(report.score))
                    .attr("target", top.target.clone())
                    .attr("rules", rules.join(",")),
            );
        }
        if block {
            return Err(Reject::RequestBlocked);
        }
        if let Some(r) = report.malformed {
            tracing::warn!(target: "security", request_id = ex.request_id, mode = self.engine.mode.as_str(), "inspection: body does not parse as its declared type: {r:?}");
            if self.engine.mode == Mode::Block {
                return Err(r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
