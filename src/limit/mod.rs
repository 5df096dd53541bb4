//! Rate limits (issue 12): named GCRA limits (`rate_limits:`) that routes apply (`route.rate_limits`),
//! keyed by the client IP (IPv6 by prefix), the route, a header, the principal or one of its claims, or
//! a combination. Several may apply to one route; each keeps its own state, shared by every route that
//! names it and kept across reloads.
//!
//! Where a limit runs follows from its key: one that needs no principal (client IP, route, header) runs
//! before authentication, so a flood of bad credentials is cut off before any signature or token work
//! is done for it; one keyed by the principal or a claim, or with per-role tiers, runs after
//! authorization. A refused request is 429 `too-many-requests` with `Retry-After`; every answer on a
//! limited route carries `RateLimit-Policy` and `RateLimit` (IETF httpapi rate-limit headers draft).
//!
//! A limit's state lives in this node's memory (`store: local`, the default) or, for a fleet, in Redis
//! (`store: redis`, see [`shared`]), where every node shares one budget per key. A `store: redis` limit
//! says what happens when Redis cannot answer within `redis.command_timeout`: `on_store_failure:
//! fail_open` decides on this node's own copy of the limit, `fail_closed` refuses with 503; both are
//! logged and counted, and shared limiting resumes by itself when Redis is back.

pub mod body;
pub mod concurrency;
pub mod gcra;
pub mod quota;
pub mod shared;

use crate::exchange::{Exchange, Place, Principal, Reject};
use crate::fleet::{Fleet, OnFailure};
use crate::observe::metrics::Metrics;
use gcra::{Backoff, Clock, LocalStore, Outcome, Rate};
use http::HeaderName;
use prometheus_client::metrics::counter::Counter;
use serde::{de, Deserialize, Deserializer};
use shared::SharedStore;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// `rate_limits.NAME`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// `10/s`, `600/m`, `1000/h`, `20000/d`.
    pub rate: RateSpec,
    /// Requests allowed at once; default: the rate's count (`10/s`: 10).
    #[serde(default)]
    pub burst: Option<u32>,
    /// What one bucket is: `client_ip` (default), `route`, `principal`, `header:NAME`, `claim:NAME`;
    /// several make one key together.
    #[serde(default = "default_key")]
    pub key: Vec<KeyPart>,
    /// IPv6 clients are counted by this prefix (default 64): one host's addresses are one client.
    #[serde(default)]
    pub ipv6_prefix: Option<u8>,
    /// Per role: another rate (the most generous of the principal's roles applies).
    #[serde(default)]
    pub tiers: BTreeMap<String, TierConfig>,
    /// Escalating refusals: each refusal in a row doubles `Retry-After`, up to `max`.
    #[serde(default)]
    pub backoff: Option<BackoffConfig>,
    /// The most keys kept in memory (default 1,000,000); idle keys are dropped first.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Where the state lives: `local` (default: this node's memory) or `redis` (shared by the fleet;
    /// needs the top-level `redis:` section).
    #[serde(default)]
    pub store: Store,
    /// Required with `store: redis`: `fail_open` (decide locally) or `fail_closed` (503) when Redis
    /// cannot answer in time.
    #[serde(default)]
    pub on_store_failure: Option<OnFailure>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    #[default]
    Local,
    Redis,
}

fn default_key() -> Vec<KeyPart> {
    vec![KeyPart::ClientIp]
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub rate: RateSpec,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    pub max: crate::units::Dur,
}

/// `N/s`, `N/m`, `N/h`, `N/d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u64,
    pub per_secs: u64,
}

impl RateSpec {
    fn parse(text: &str) -> Result<RateSpec, String> {
        let bad = || format!("`{text}` is not a rate: write for example 10/s, 600/m, 1000/h or 20000/d");
        let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        let per_secs = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        if count == 0 || count > 1_000_000_000 {
            return Err(format!("`{text}`: the count must be between 1 and 1,000,000,000"));
        }
        Ok(RateSpec { count, per_secs })
    }
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RateSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rate such as 10/s, 600/m or 1000/h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateSpec, E> {
                RateSpec::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    ClientIp,
    Route,
    Principal,
    Header(HeaderName),
    Claim(String),
    /// A field of the request body by JSON pointer (`body:/username`): a JSON body, or a form body
    /// (`/name` is the form field `name`).
    Body(String),
}

impl KeyPart {
    fn needs_principal(&self) -> bool {
        matches!(self, KeyPart::Principal | KeyPart::Claim(_))
    }
}

impl<'de> Deserialize<'de> for KeyPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let part = match s.as_str() {
            "client_ip" => KeyPart::ClientIp,
            "route" => KeyPart::Route,
            "principal" => KeyPart::Principal,
            _ => match s.split_once(':') {
                Some(("header", name)) => KeyPart::Header(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| de::Error::custom(format!("`{name}` is not a header name")))?,
                ),
                Some(("claim", name)) if !name.is_empty() => KeyPart::Claim(name.to_owned()),
                Some(("body", pointer)) if pointer.starts_with('/') && pointer.len() > 1 => {
                    KeyPart::Body(pointer.to_owned())
                }
                _ => {
                    return Err(de::Error::custom(format!(
                        "`{s}` is not a key part: use client_ip, route, principal, header:NAME, claim:NAME or body:/POINTER"
                    )))
                }
            },
        };
        Ok(part)
    }
}

/// What outlives a reload: the state of every named limit (by name) and the clock they read.
pub struct Kept {
    pub stores: crate::exchange::Registry<LocalStore>,
    pub clock: Arc<dyn Clock>,
    pub quotas: quota::Kept,
}

impl Default for Kept {
    fn default() -> Self {
        Kept { stores: Default::default(), clock: Arc::new(gcra::Monotonic::default()), quotas: Default::default() }
    }
}

/// One compiled named limit.
pub struct Limiter {
    name: Arc<str>,
    key: Vec<KeyPart>,
    ipv6_prefix: u8,
    rate: Rate,
    /// Per role, its rate; the most generous of the principal's applies.
    tiers: Vec<(String, Rate)>,
    backoff: Option<Backoff>,
    store: Arc<LocalStore>,
    clock: Arc<dyn Clock>,
    /// `"name";q=..;w=..` per rate (the default first, then the tiers').
    policies: Vec<String>,
    /// `store: redis`: the fleet's Redis (the local store is then the `fail_open` fallback).
    shared: Option<SharedStore>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Limiter {
    /// `fleet`: the `redis:` section's connection, when there is one.
    pub fn compile(
        name: &str,
        c: &LimitConfig,
        kept: &Kept,
        fleet: Option<&Arc<Fleet>>,
        metrics: &Metrics,
    ) -> Result<Limiter, String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(format!("rate_limits: `{name}`: names are letters, digits, `-`, `_` and `.`"));
        }
        if c.key.is_empty() {
            return Err(format!("rate_limits.{name}.key is empty"));
        }
        let prefix = c.ipv6_prefix.unwrap_or(64);
        if !(1..=128).contains(&prefix) {
            return Err(format!("rate_limits.{name}.ipv6_prefix must be between 1 and 128"));
        }
        let rate_of = |spec: RateSpec, burst: Option<u32>, at: &str| -> Result<Rate, String> {
            let burst = burst.unwrap_or(spec.count.min(u64::from(u32::MAX)) as u32);
            if burst == 0 {
                return Err(format!("{at}.burst must be at least 1"));
            }
            Ok(Rate::new(spec.count, spec.per_secs * 1_000_000_000, burst))
        };
        let rate = rate_of(c.rate, c.burst, &format!("rate_limits.{name}"))?;
        let mut tiers = Vec::new();
        let mut policies = vec![policy_item(name, rate)];
        for (role, t) in &c.tiers {
            let r = rate_of(t.rate, t.burst, &format!("rate_limits.{name}.tiers.{role}"))?;
            tiers.push((role.clone(), r));
            policies.push(policy_item(&format!("{name}.{role}"), r));
        }
        let max_keys = c.max_keys.unwrap_or(1_000_000);
        if max_keys == 0 {
            return Err(format!("rate_limits.{name}.max_keys must be at least 1"));
        }
        let store = kept.stores.get_or_insert(name, |_| {}, || LocalStore::new(max_keys));
        let shared = shared_store(name, c, fleet, metrics)?;
        if shared.is_some() {
            let fastest = tiers.iter().map(|(_, r)| r.interval).fold(rate.interval, u64::min);
            if fastest < shared::MIN_INTERVAL_NS {
                return Err(format!(
                    "rate_limits.{name}: a store: redis limit allows at most 1000000 requests a second"
                ));
            }
        }
        Ok(Limiter {
            name: name.into(),
            key: c.key.clone(),
            ipv6_prefix: prefix,
            rate,
            tiers,
            backoff: c.backoff.as_ref().map(|b| Backoff { max: b.max.0.as_nanos() as u64 }),
            store,
            clock: kept.clock.clone(),
            policies,
            shared,
        })
    }

    /// Where the limit runs: before authentication when its key and rate need no principal.
    pub fn place(&self) -> Place {
        if self.tiers.is_empty() && !self.key.iter().any(KeyPart::needs_principal) {
            Place::PreAuthLimits
        } else {
            Place::PrincipalLimits
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The request's key in this node's store: a keyed 128-bit hash of its parts.
    fn key_of(&self, ex: &Exchange<'_>, body: Option<&body::Fields>) -> u128 {
        let mut h = SipHasher13::new_with_key(process_key());
        write_parts(&self.key, self.ipv6_prefix, ex, body, &mut h);
        h.finish128().as_u128()
    }

    /// The request's key in Redis, the same on every node: `portcullis:rl:<limit>:<hex SHA-256 of the
    /// parts>`.
    fn shared_key_of(&self, prefix: &str, ex: &Exchange<'_>, body: Option<&body::Fields>) -> String {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        write_parts(&self.key, self.ipv6_prefix, ex, body, &mut h);
        let mut key = String::with_capacity(prefix.len() + 64);
        key.push_str(prefix);
        key.push_str(&crate::fleet::hex(h.finish().as_ref()));
        key
    }

    /// The rate for this principal (index 0 the default, else 1 + the tier's): the most generous of
    /// the tiers of the roles authentication gave it (the highest rate, then the largest burst).
    fn rate_for(&self, p: Option<&Principal>) -> (usize, Rate) {
        let mut best = (0, self.rate);
        if let Some(p) = p {
            for (i, (role, r)) in self.tiers.iter().enumerate() {
                let more =
                    (r.interval, std::cmp::Reverse(r.burst)) < (best.1.interval, std::cmp::Reverse(best.1.burst));
                if more && p.roles.iter().any(|have| have == role) {
                    best = (i + 1, *r);
                }
            }
        }
        best
    }

    /// The decision of this node's store.
    fn check_local(&self, ex: &Exchange<'_>, body: Option<&body::Fields>, rate: Rate) -> Outcome {
        self.store.check(self.key_of(ex, body), self.clock.now(), rate, self.backoff)
    }

    /// The body fields its key reads.
    fn body_pointers(&self) -> impl Iterator<Item = &str> {
        self.key.iter().filter_map(|k| match k {
            KeyPart::Body(p) => Some(p.as_str()),
            _ => None,
        })
    }
}

/// `"name";q=burst;w=seconds to refill it` (the draft's quota policy for a GCRA rate).
fn policy_item(name: &str, rate: Rate) -> String {
    let window = (rate.interval.saturating_mul(u64::from(rate.burst))).div_ceil(1_000_000_000).max(1);
    format!("\"{name}\";q={};w={window}", rate.burst)
}

/// Writes a key's parts, each tagged and length-prefixed (a part the request lacks, such as a missing
/// header, claim or body field, or no principal on a public route, counts as the client's address).
fn write_parts(
    parts: &[KeyPart],
    ipv6_prefix: u8,
    ex: &Exchange<'_>,
    body: Option<&body::Fields>,
    h: &mut impl KeySink,
) {
    for part in parts {
        match part {
            KeyPart::ClientIp => write_ip(h, ex.client_ip, ipv6_prefix),
            KeyPart::Route => h.part(b'r', ex.route.as_deref().unwrap_or("").as_bytes()),
            // A header given twice counts as the client's address: the upstream may read the other one,
            // and a fresh second value per request would otherwise be a fresh bucket each time.
            KeyPart::Header(name) => match one_header(&ex.parts.headers, name) {
                Some(v) => h.part(b'h', v.as_bytes()),
                None => write_ip(h, ex.client_ip, ipv6_prefix),
            },
            KeyPart::Principal => match ex.principal.as_deref() {
                Some(p) => {
                    h.part(b'k', p.kind.as_str().as_bytes());
                    h.part(b'p', p.id.as_bytes());
                }
                None => write_ip(h, ex.client_ip, ipv6_prefix),
            },
            KeyPart::Claim(name) => match claim_of(ex.principal.as_deref(), name) {
                Some(v) => h.part(b'c', v.as_bytes()),
                None => write_ip(h, ex.client_ip, ipv6_prefix),
            },
            KeyPart::Body(pointer) => match body.and_then(|b| b.get(pointer)) {
                Some(v) => h.part(b'b', v.as_bytes()),
                None => write_ip(h, ex.client_ip, ipv6_prefix),
            },
        }
    }
}

/// The one value of header `name`; `None` when it is absent or given more than once.
fn one_header<'h>(headers: &'h http::HeaderMap, name: &HeaderName) -> Option<&'h http::HeaderValue> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

/// Where a key's parts go: the local store's keyed hash, or SHA-256 for Redis.
trait KeySink {
    fn part(&mut self, tag: u8, bytes: &[u8]);
}

impl KeySink for SipHasher13 {
    fn part(&mut self, tag: u8, bytes: &[u8]) {
        self.write_u8(tag);
        self.write_usize(bytes.len());
        self.write(bytes);
    }
}

impl KeySink for aws_lc_rs::digest::Context {
    fn part(&mut self, tag: u8, bytes: &[u8]) {
        self.update(&[tag]);
        self.update(&(bytes.len() as u64).to_be_bytes());
        self.update(bytes);
    }
}

/// An IPv4 address whole (an IPv4-mapped IPv6 address is its IPv4 address); IPv6 by its prefix.
fn write_ip(h: &mut impl KeySink, ip: IpAddr, prefix: u8) {
    match crate::exchange::client_net(ip, prefix).network() {
        IpAddr::V4(v4) => h.part(b'4', &v4.octets()),
        IpAddr::V6(v6) => h.part(b'6', &v6.octets()),
    }
}

/// `store:` and `on_store_failure` of one limit.
fn shared_store(
    name: &str,
    c: &LimitConfig,
    fleet: Option<&Arc<Fleet>>,
    metrics: &Metrics,
) -> Result<Option<SharedStore>, String> {
    match (c.store, c.on_store_failure, fleet) {
        (Store::Local, None, _) => Ok(None),
        (Store::Local, Some(_), _) => {
            Err(format!("rate_limits.{name}.on_store_failure applies only with `store: redis`"))
        }
        (Store::Redis, _, None) => {
            Err(format!("rate_limits.{name}: `store: redis` needs the top-level `redis:` section"))
        }
        (Store::Redis, None, Some(_)) => Err(format!(
            "rate_limits.{name}: `store: redis` needs `on_store_failure: fail_open` (decide locally) or \
             `fail_closed` (503) for when Redis cannot answer"
        )),
        (Store::Redis, Some(on_failure), Some(fleet)) => Ok(Some(SharedStore {
            fleet: fleet.clone(),
            on_failure,
            prefix: format!("portcullis:rl:{name}:"),
            failures: metrics.rate_limit_store_failures(name, on_failure.as_str()),
        })),
    }
}

fn claim_of<'p>(p: Option<&'p Principal>, name: &str) -> Option<std::borrow::Cow<'p, str>> {
    match p?.claims.as_ref()?.get(name)? {
        serde_json::Value::String(s) => Some(s.as_str().into()),
        serde_json::Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

pub(crate) fn process_key() -> &'static [u8; 16] {
    static KEY: OnceLock<[u8; 16]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut key).is_err() {
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            key = seed.as_nanos().to_le_bytes();
        }
        key
    })
}

/// A route's limits at one place of its chain.
#[derive(Debug)]
pub struct Limits {
    limiters: Vec<Arc<Limiter>>,
    place: Place,
    /// Refusals per limit (`portcullis_rate_limited_total{route,limit}`), in `limiters` order.
    refused: Vec<Counter>,
    /// The fleet's GCRA script calls, when a limit here is `store: redis`.
    fleet: Option<Arc<crate::fleet::Batched>>,
}

impl Limits {
    pub fn new(limiters: Vec<Arc<Limiter>>, place: Place, refused: Vec<Counter>) -> Limits {
        let fleet =
            limiters.iter().find_map(|l| l.shared.as_ref()).map(|s| s.fleet.batched("rate_limit", shared::GCRA_LUA, 4));
        Limits { limiters, place, refused, fleet }
    }

    pub fn place(&self) -> Place {
        self.place
    }

    pub fn describe(&self) -> String {
        self.limiters.iter().map(|l| l.name().to_owned()).collect::<Vec<_>>().join(", ")
    }

    /// True if a key here reads a body field: the body is then read (under [`body::MAX_BYTES`]) first.
    pub fn needs_body(&self) -> bool {
        self.limiters.iter().any(|l| l.body_pointers().next().is_some())
    }

    /// The body fields the keys here read.
    pub fn body_fields(&self, ex: &Exchange<'_>, bytes: &[u8]) -> Result<body::Fields, Reject> {
        let ct = ex.parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if ex.parts.headers.get_all(http::header::CONTENT_TYPE).iter().count() > 1 {
            return Err(Reject::UnsupportedMediaType);
        }
        body::Fields::read(ct, bytes, self.limiters.iter().flat_map(|l| l.body_pointers()))
    }

    /// Checks every limit and writes the headers. Each limit that allows the request counts it, even
    /// when another refuses it (as Envoy's descriptors do); a refusal is 429 with the longest wait. The
    /// `store: redis` limits are decided together in one round trip; when Redis cannot answer, a
    /// `fail_closed` limit makes it 503 and a `fail_open` one decides on this node's store.
    pub async fn check(&self, ex: &mut Exchange<'_>, body: Option<&body::Fields>) -> Result<(), Reject> {
        let answer = match &self.fleet {
            None => None,
            Some(batched) => Some(self.ask_fleet(batched, ex, body).await),
        };
        let mut wait: Option<u64> = None;
        let mut h = ex.limit_headers.take().unwrap_or_default();
        let mut nth_shared = 0;
        for (i, l) in self.limiters.iter().enumerate() {
            let (which, rate) = l.rate_for(ex.principal.as_deref());
            let o = match (&l.shared, &answer) {
                (Some(s), Some(answer)) => {
                    let o = answer.as_ref().ok().and_then(|v| shared::outcome(v, nth_shared));
                    nth_shared += 1;
                    match (o, s.on_failure) {
                        (Some(o), _) => o,
                        (None, OnFailure::FailOpen) => {
                            s.failures.inc();
                            l.check_local(ex, body, rate)
                        }
                        (None, OnFailure::FailClosed) => {
                            s.failures.inc();
                            return Err(Reject::StoreUnavailable);
                        }
                    }
                }
                _ => l.check_local(ex, body, rate),
            };
            let policy = &l.policies[which];
            let name = &policy[..policy.find(';').unwrap_or(policy.len())];
            h.add(policy, name, o.remaining, secs_up(o.reset));
            if !o.allowed {
                self.refused[i].inc();
                ex.event(
                    crate::events::Noted::new(crate::events::Kind::RateLimited, "rate_limit")
                        .rule(name.trim_matches('"').to_owned()),
                );
                wait = Some(wait.unwrap_or(0).max(o.retry_after));
            }
        }
        if let Some(w) = wait {
            h.retry_after = Some(h.retry_after.unwrap_or(0).max(secs_up(w).max(1)));
        }
        ex.limit_headers = Some(h);
        match wait {
            None => Ok(()),
            Some(_) => Err(Reject::RateLimited),
        }
    }

    /// One script call for every `store: redis` limit here: four integers per limit, in order.
    /// Requests arriving together share one call (see [`crate::fleet::Batched`]).
    async fn ask_fleet(
        &self,
        batched: &Arc<crate::fleet::Batched>,
        ex: &Exchange<'_>,
        body: Option<&body::Fields>,
    ) -> Result<Vec<i64>, crate::fleet::Unavailable> {
        let mut keys = Vec::with_capacity(1);
        let mut args = Vec::with_capacity(3);
        for l in &self.limiters {
            if let Some(s) = &l.shared {
                let (_, rate) = l.rate_for(ex.principal.as_deref());
                keys.push(l.shared_key_of(&s.prefix, ex, body));
                args.extend(shared::args(rate, l.backoff));
            }
        }
        batched.eval(keys, args).await
    }
}

pub(crate) fn secs_up(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}
