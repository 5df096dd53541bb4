//! Authentication: turns a request's credentials into a [`Principal`].
//!
//! Methods are declared once, by name, under the top-level `authenticators:` section (so their caches,
//! such as JWKS or key stores, are shared by every route using them) and each route says which it
//! accepts:
//!
//! ```yaml
//! auth: none                      # a public route (deny by default: `auth` is required)
//! auth: partner-keys              # one method
//! auth: { any_of: [keys, sso] }   # the first method whose credentials are present decides
//! auth: { all_of: [mtls, sso] }   # every method must pass (e.g. client certificate and JWT)
//! ```
//!
//! A method that finds no credentials of its kind says [`Verdict::Absent`]; one that finds bad
//! credentials says [`Verdict::Invalid`] with a reason code for logs and metrics. The client only ever
//! sees a 401 with `WWW-Authenticate` challenges (RFC 6750 `error="invalid_token"` when a bearer token
//! was refused), never which check failed; or a 429 when its share of introspection calls is spent.
//!
//! Methods judge the request's head only ([`Authn::authenticate`]); a signature whose `Content-Digest`
//! must be held against the body says so in [`Accepted`], and the pipeline reads the body only then.
//! Before forwarding, every credential the route's methods read is removed ([`strip`]), except an
//! accepted one whose method is configured to forward it.

pub mod api_key;
pub mod dpop;
pub mod introspection;
pub mod jwt;
pub mod mtls;
pub mod signature;
pub mod strip;

use crate::events::{Kind, Noted};
use crate::exchange::Reject;
use crate::exchange::{ConnInfo, Exchange};
use crate::observe::metrics::Metrics;
use http::header::{HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// One named entry of `authenticators:`: exactly one method.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorConfig {
    #[serde(default)]
    pub api_key: Option<api_key::ApiKeyConfig>,
    #[serde(default)]
    pub jwt: Option<jwt::JwtConfig>,
    #[serde(default)]
    pub introspection: Option<introspection::IntrospectionConfig>,
    #[serde(default)]
    pub mtls: Option<mtls::MtlsConfig>,
    #[serde(default)]
    pub signature: Option<signature::SignatureConfig>,
}

/// The `auth:` of a route.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthConfig {
    /// A public route: no credentials asked for, the principal is anonymous.
    None,
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Combination {
    #[serde(default)]
    any_of: Option<Vec<String>>,
    #[serde(default)]
    all_of: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = AuthConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`none`, an authenticator name, or { any_of: [names] } / { all_of: [names] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AuthConfig, E> {
                match v {
                    "none" => Ok(AuthConfig::None),
                    "" => Err(E::custom("auth cannot be empty; write `none` for a public route")),
                    name => Ok(AuthConfig::AnyOf(vec![name.to_owned()])),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<AuthConfig, A::Error> {
                let c = Combination::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (c.any_of, c.all_of) {
                    (Some(names), None) if !names.is_empty() => Ok(AuthConfig::AnyOf(names)),
                    (None, Some(names)) if !names.is_empty() => Ok(AuthConfig::AllOf(names)),
                    _ => Err(de::Error::custom("auth needs exactly one non-empty `any_of` or `all_of` list")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

pub use crate::exchange::{IdentityHeaders, Principal, PrincipalKind};

/// What one method concluded about a request.
#[derive(Debug)]
pub enum Verdict {
    /// No credentials of this kind in the request.
    Absent,
    Valid(Arc<Principal>),
    /// Credentials present but refused; the reason code goes to logs and metrics only.
    Invalid(&'static str),
    /// Credentials present but not judged now: the client's share of a bounded resource (introspection
    /// calls) is spent. Refused with 429; the reason code goes to logs and metrics.
    Busy(&'static str),
    /// Credentials that cannot be judged now: shared state (the fleet's replay store) did not answer
    /// and fails closed. Refused with 503; the reason code goes to logs and metrics.
    Unavailable(&'static str),
}

/// What a method may look at.
pub struct AuthRequest<'a> {
    pub parts: &'a http::request::Parts,
    pub conn: &'a ConnInfo,
    pub client_ip: IpAddr,
}

/// RFC 8705 thumbprint of the verified client certificate: base64url(SHA-256(DER)), no padding.
pub fn cert_thumbprint(conn: &ConnInfo) -> Option<String> {
    use base64::Engine;
    let leaf = conn.tls.as_ref()?.client_chain.as_ref()?.first()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// A compiled authentication method.
pub enum Method {
    // Boxed: the HMAC key state is large and the enum is matched per request.
    ApiKey(Box<api_key::ApiKeyAuth>),
    Jwt(jwt::JwtAuth),
    Introspection(introspection::IntrospectionAuth),
    Mtls(mtls::MtlsAuth),
    Signature(signature::SignatureAuth),
}

impl Method {
    fn compile(name: &str, cfg: &AuthenticatorConfig, cx: &Context<'_>) -> Result<Method, String> {
        let metrics = cx.metrics;
        let c = cfg;
        let set =
            [c.api_key.is_some(), c.jwt.is_some(), c.introspection.is_some(), c.mtls.is_some(), c.signature.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(format!(
                "authenticator `{name}` needs exactly one of api_key, jwt, introspection, mtls, signature"
            ));
        }
        if let Some(m) = &c.api_key {
            return api_key::ApiKeyAuth::with_store(name, m, cx.postgres)
                .map(|a| a.lifecycle(cx.events.clone(), metrics.api_keys_nearing_max_age(name)))
                .map(|a| Method::ApiKey(Box::new(a)));
        }
        let dpop = |d: &Option<dpop::DpopConfig>| d.as_ref().map(|d| dpop::Dpop::compile(name, d, cx)).transpose();
        if let Some(m) = &c.jwt {
            let d = dpop(&m.dpop)?;
            return jwt::JwtAuth::with_metrics(name, m, Some(metrics))
                .map(|a| Method::Jwt(a.with_dpop(d).revocations(cx.revoked.clone())));
        }
        if let Some(m) = &c.introspection {
            let d = dpop(&m.dpop)?;
            return introspection::IntrospectionAuth::new(name, m).map(|a| Method::Introspection(a.with_dpop(d)));
        }
        if let Some(m) = &c.mtls {
            return mtls::MtlsAuth::new(name, m).map(Method::Mtls);
        }
        match &c.signature {
            Some(m) => signature::SignatureAuth::new(name, m, &cx.kept.replay, cx.fleet.map(|f| (f, metrics)))
                .map(Method::Signature),
            None => Err(format!("authenticator `{name}` has no method")),
        }
    }

    /// The verdict on the request's head, and what remains to check of its body (signed requests).
    async fn check(&self, req: &AuthRequest<'_>) -> (Verdict, Option<signature::BodyDue>) {
        match self {
            Method::ApiKey(m) => (m.check(req), None),
            Method::Jwt(m) => (m.check(req).await, None),
            Method::Introspection(m) => (m.check(req).await, None),
            Method::Mtls(m) => (m.check(req).await, None),
            Method::Signature(m) => m.check(req).await,
        }
    }

    /// Where this method reads credentials from (see [`strip`]), and whether an accepted one is forwarded.
    fn sources(&self) -> Sources {
        use strip::Credential;
        let bearer = Credential::scheme("Bearer");
        let token = |cookie: Option<&str>, forward| match cookie {
            // A cookie method does not read `Authorization: Bearer`, but a bearer token sent to it is
            // still a credential of its kind: removed, never forwarded.
            Some(name) => {
                Sources { read: Box::new([Credential::Cookie(name.into())]), also: Some(bearer.clone()), forward }
            }
            None => Sources { read: Box::new([bearer.clone()]), also: None, forward },
        };
        // DPoP: the token under its own scheme, and the proof beside it.
        let dpop = |s: Sources, on: bool| {
            if !on {
                return s;
            }
            let mut read = s.read.into_vec();
            read.extend([Credential::scheme("DPoP"), Credential::Header(dpop::DPOP)]);
            Sources { read: read.into_boxed_slice(), ..s }
        };
        match self {
            Method::ApiKey(m) => {
                let (header, scheme) = m.sources();
                let read = Box::new([Credential::Header(header.clone()), Credential::scheme(scheme)]);
                Sources { read, also: None, forward: false }
            }
            Method::Jwt(m) => dpop(token(m.cookie(), m.forward_credential), m.dpop.is_some()),
            Method::Introspection(m) => dpop(token(m.cookie(), m.forward_credential), m.dpop.is_some()),
            Method::Mtls(_) => Sources { read: Box::new([]), also: None, forward: false },
            Method::Signature(m) => {
                let fields = ["signature", "signature-input"].map(|n| Credential::Header(HeaderName::from_static(n)));
                Sources { read: Box::new(fields), also: None, forward: m.forward_credential }
            }
        }
    }

    /// Label for metrics and logs.
    fn kind(&self) -> &'static str {
        match self {
            Method::ApiKey(_) => "api_key",
            Method::Jwt(_) => "jwt",
            Method::Introspection(_) => "introspection",
            Method::Mtls(_) => "mtls",
            Method::Signature(_) => "signature",
        }
    }

    /// The `WWW-Authenticate` challenge for this method; `reason` (this method refused the credential)
    /// adds RFC 6750's (or RFC 9449's) error code.
    fn challenge(&self, reason: Option<&str>) -> String {
        let invalid = reason.is_some();
        match self {
            Method::ApiKey(m) => m.challenge(invalid),
            Method::Jwt(m) => m.challenge(reason),
            Method::Introspection(m) => m.challenge(reason),
            Method::Mtls(m) => m.challenge(invalid),
            Method::Signature(m) => m.challenge(invalid),
        }
    }

    /// The method's DPoP section, when it has one.
    fn dpop(&self) -> Option<&dpop::Dpop> {
        match self {
            Method::Jwt(m) => m.dpop.as_ref(),
            Method::Introspection(m) => m.dpop.as_ref(),
            _ => None,
        }
    }

    /// Starts background work (store refresh, JWKS refresh). Needs a tokio runtime.
    fn start(self: &Arc<Self>) {
        match &**self {
            Method::ApiKey(m) => m.start(),
            Method::Jwt(m) => m.start(),
            Method::Introspection(m) => m.start(),
            Method::Mtls(m) => m.start(),
            Method::Signature(m) => m.start(),
        }
    }
}

/// Authentication state that must outlive a reload, kept on the process's lasting state (handed to every
/// compile; never a static): the replay caches of signature authenticators, by name.
#[derive(Default)]
pub struct Kept {
    pub replay: crate::exchange::Registry<signature::replay::ReplayStore>,
    /// The node's revoked JWT ids, by where they live.
    pub revoked: jwt::revoked::Kept,
}

/// What compiling the methods needs besides their section.
pub struct Context<'a> {
    pub kept: &'a Kept,
    /// The `redis:` section's connection: signature replay stores are then shared through it.
    pub fleet: Option<&'a Arc<crate::fleet::Fleet>>,
    pub metrics: &'a Metrics,
    /// The path normalisation routing applies (DPoP compares a proof's `htu` path through it).
    pub normalize_path: dpop::NormalizePath,
    /// The node's revoked JWT ids (from `kept.revoked`, for the config's `redis:` or `store:`).
    pub revoked: Option<Arc<jwt::revoked::Revoked>>,
    /// Where events outside a request go (API keys nearing their `max_age`).
    pub events: crate::events::Emitter,
    /// `store.postgres`: where API keys with `store: postgres` live.
    pub postgres: Option<&'a Arc<crate::store::Postgres>>,
}

/// The named methods of a runtime, compiled once and reused by a reload when unchanged.
pub struct Authenticators {
    methods: BTreeMap<String, (AuthenticatorConfig, Arc<Method>)>,
    /// The fleet they were compiled with (a method is reused only with the same one).
    fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The deny list they were compiled with (likewise).
    revoked: Option<Arc<jwt::revoked::Revoked>>,
    /// The PostgreSQL store they were compiled with (likewise).
    postgres: Option<Arc<crate::store::Postgres>>,
}

impl Authenticators {
    pub fn compile(
        cfg: &BTreeMap<String, AuthenticatorConfig>,
        previous: Option<&Authenticators>,
        cx: &Context<'_>,
    ) -> Result<Authenticators, (String, String)> {
        let same_fleet = |p: &&Authenticators| {
            let fleet = match (&p.fleet, cx.fleet) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            let revoked = match (&p.revoked, &cx.revoked) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            let postgres = match (&p.postgres, cx.postgres) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            fleet && revoked && postgres
        };
        let previous = previous.filter(same_fleet);
        let mut methods = BTreeMap::new();
        for (name, c) in cfg {
            let reused = previous.and_then(|p| p.methods.get(name)).filter(|(old, _)| old == c);
            let method = match reused {
                Some((_, m)) => m.clone(),
                None => Arc::new(Method::compile(name, c, cx).map_err(|e| (name.clone(), e))?),
            };
            methods.insert(name.clone(), (c.clone(), method));
        }
        Ok(Authenticators {
            methods,
            fleet: cx.fleet.cloned(),
            revoked: cx.revoked.clone(),
            postgres: cx.postgres.cloned(),
        })
    }

    pub fn start(&self) {
        for (_, m) in self.methods.values() {
            m.start();
        }
    }

    /// Per API key authenticator with `max_age`: its stored keys nearing it (the admin API's
    /// `GET /keys/nearing-max-age`).
    pub fn keys_nearing_max_age(&self) -> BTreeMap<String, Vec<api_key::lifecycle::Nearing>> {
        self.methods
            .iter()
            .filter_map(|(name, (c, m))| match (&**m, c.api_key.as_ref().and_then(|k| k.max_age)) {
                (Method::ApiKey(k), Some(_)) => Some((name.clone(), k.nearing_max_age())),
                _ => None,
            })
            .collect()
    }

    /// The `api_key` authenticators by name, for the admin API's key management.
    pub fn api_key_authenticators(&self) -> Vec<(&str, &api_key::ApiKeyAuth)> {
        self.methods
            .iter()
            .filter_map(|(n, (_, m))| match &**m {
                Method::ApiKey(k) => Some((n.as_str(), &**k)),
                _ => None,
            })
            .collect()
    }

    fn get(&self, name: &str) -> Option<Arc<Method>> {
        self.methods.get(name).map(|(_, m)| m.clone())
    }
}

/// The compiled authentication stage of a route.
pub struct Authn {
    mode: Mode,
    /// Per method of `mode`, in order: where it reads credentials, and whether it forwards an accepted one.
    sources: Vec<Sources>,
    failures: Family<Vec<(String, String)>, Counter>,
}

/// Where one method of a route reads its credentials.
struct Sources {
    read: Box<[strip::Credential]>,
    /// Also removed, never forwarded: a credential of the method's kind it does not read.
    also: Option<strip::Credential>,
    /// `forward_credential`: an accepted credential (of `read`) goes upstream.
    forward: bool,
}

impl Sources {
    fn all(&self) -> impl Iterator<Item = &strip::Credential> {
        self.read.iter().chain(&self.also)
    }
}

/// Most methods one route may list (they are numbered in a bit set).
const MAX_METHODS: usize = 64;

/// What authentication decided besides the principal: whose credentials may go upstream, and the checks
/// still due on the body.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Bit `i`: method `i` of the route accepted the request and forwards its credential.
    forward: u64,
    body: Vec<(usize, signature::BodyDue)>,
}

impl Accepted {
    /// True when the body must be read (within the route's limit) and given to [`Authn::check_body`]
    /// before anything is forwarded: only after a signature over the request's head has verified.
    pub fn needs_body(&self) -> bool {
        !self.body.is_empty()
    }

    fn forwards(&self, i: usize) -> bool {
        self.forward & (1 << i) != 0
    }
}

enum Mode {
    None,
    AnyOf(Vec<(String, Arc<Method>)>),
    AllOf(Vec<(String, Arc<Method>)>),
}

impl Authn {
    pub fn compile(config: &AuthConfig, all: &Authenticators, metrics: &Metrics) -> Result<Authn, String> {
        let resolve = |names: &[String]| {
            names
                .iter()
                .map(|n| {
                    all.get(n).map(|m| (n.clone(), m)).ok_or_else(|| format!("authenticator `{n}` is not defined"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mode = match config {
            AuthConfig::None => Mode::None,
            AuthConfig::AnyOf(names) => Mode::AnyOf(resolve(names)?),
            AuthConfig::AllOf(names) => Mode::AllOf(resolve(names)?),
        };
        let sources = match &mode {
            Mode::None => Vec::new(),
            Mode::AnyOf(m) | Mode::AllOf(m) if m.len() > MAX_METHODS => {
                return Err(format!("a route lists at most {MAX_METHODS} authenticators"))
            }
            Mode::AnyOf(m) | Mode::AllOf(m) => m.iter().map(|(_, m)| m.sources()).collect(),
        };
        Ok(Authn { mode, sources, failures: metrics.authn_failures.clone() })
    }

    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::None => "none".into(),
            Mode::AnyOf(m) if m.len() == 1 => m[0].0.clone(),
            Mode::AnyOf(m) => format!("any_of({})", m.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(",")),
            Mode::AllOf(m) => format!("all_of({})", m.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(",")),
        }
    }

    /// Removes from the headers going upstream every credential a method of this route reads, except
    /// the credential of a method that accepted the request and is configured to forward it (see
    /// [`strip`]). API keys are never forwarded: a key is the caller's secret for the gateway.
    pub fn strip_credentials(&self, headers: &mut http::HeaderMap, accepted: &Accepted) {
        for c in self.sources.iter().flat_map(Sources::all) {
            if !self.kept(c, accepted) {
                c.remove(headers);
            }
        }
        strip::remove_folded(headers, |name| {
            let c = strip::Credential::Header(name.clone());
            self.sources.iter().any(|s| s.all().any(|x| *x == c)) && !self.kept(&c, accepted)
        });
        // `Authorization` under a scheme none of the methods reads (`Basic`, or `Bearer` on an API key
        // route) was judged by nobody: it goes only where an accepted method forwards its own scheme.
        let mut forwarded: [&str; 4] = [""; 4];
        let mut n = 0;
        for (i, s) in self.sources.iter().enumerate() {
            for c in s.read.iter() {
                if let (true, strip::Credential::Scheme(scheme), true) = (accepted.forwards(i), c, n < forwarded.len())
                {
                    forwarded[n] = scheme;
                    n += 1;
                }
            }
        }
        strip::keep_only_schemes(headers, &forwarded[..n]);
    }

    /// True when `c` is where a method that accepted the request, and forwards it, read its credential.
    fn kept(&self, c: &strip::Credential, accepted: &Accepted) -> bool {
        self.sources.iter().enumerate().any(|(i, s)| accepted.forwards(i) && s.read.contains(c))
    }

    /// The query string to send upstream: without the parameters this route reads API keys from (only
    /// when `query_param` is configured). `None` when there is nothing to remove.
    pub fn strip_query(&self, query: &str) -> Option<String> {
        let methods = match &self.mode {
            Mode::None => return None,
            Mode::AnyOf(m) | Mode::AllOf(m) => m,
        };
        let params: Vec<&str> = methods
            .iter()
            .filter_map(|(_, m)| match &**m {
                Method::ApiKey(k) => k.query_param(),
                _ => None,
            })
            .collect();
        if params.is_empty() {
            return None;
        }
        // A percent-encoded name (`api%5Fkey`) is the same parameter to an upstream that decodes names.
        let is_key = |pair: &str| {
            let name = pair.split('=').next().unwrap_or(pair);
            let decoded = || percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            params.iter().any(|p| name == *p || (name.contains('%') && decoded() == *p))
        };
        if !query.split('&').any(is_key) {
            return None;
        }
        Some(query.split('&').filter(|pair| !is_key(pair)).collect::<Vec<_>>().join("&"))
    }

    /// True for a public route (`auth: none`): nothing to check, no stage in the chain.
    /// True if a caller could get in with an API key and nothing else: one of `any_of` is an API key,
    /// or every one of `all_of` is.
    pub fn api_key_alone(&self) -> bool {
        let key = |m: &Arc<Method>| matches!(**m, Method::ApiKey(_));
        match &self.mode {
            Mode::None => false,
            Mode::AnyOf(m) => m.iter().any(|(_, m)| key(m)),
            Mode::AllOf(m) => m.iter().all(|(_, m)| key(m)),
        }
    }

    pub fn is_public(&self) -> bool {
        matches!(self.mode, Mode::None)
    }

    /// True if a method of this route may have to read the body (a signature covering
    /// `Content-Digest`); it is read only once the head has been accepted ([`Accepted::needs_body`]).
    pub fn may_read_body(&self) -> bool {
        match &self.mode {
            Mode::None => false,
            Mode::AnyOf(m) | Mode::AllOf(m) => m.iter().any(|(_, m)| matches!(**m, Method::Signature(_))),
        }
    }

    /// Establishes the principal from the request's head, or refuses with 401. The body is not read
    /// here: when a signature still has to be checked against it, [`Accepted::needs_body`] says so.
    pub async fn authenticate(&self, ex: &mut Exchange<'_>) -> Result<Accepted, Reject> {
        let methods = match &self.mode {
            // Public route: the principal stays `None` (anonymous); nothing to allocate.
            Mode::None => return Ok(Accepted::default()),
            Mode::AnyOf(m) | Mode::AllOf(m) => m,
        };
        let req = AuthRequest { parts: &ex.parts, conn: ex.conn, client_ip: ex.client_ip };
        let all = matches!(self.mode, Mode::AllOf(_));
        let mut merged: Option<Arc<Principal>> = None;
        let mut accepted = Accepted::default();
        // `any_of`: a token of another issuer is not this method's to judge (two JWT issuers on one
        // route); it goes on to the next method and is reported only if none accepts. Any other refusal
        // of a presented credential is final, so a valid credential never covers for guessed or
        // tampered ones, and a token one party refused is not shown to another's endpoint.
        let mut refused: Option<(&str, &Method, &'static str)> = None;
        for (i, (name, method)) in methods.iter().enumerate() {
            let (verdict, due) = method.check(&req).await;
            if let (Verdict::Valid(_), Some(due)) = (&verdict, due) {
                accepted.body.push((i, due));
            }
            if matches!(verdict, Verdict::Valid(_)) && self.sources[i].forward {
                accepted.forward |= 1 << i;
            }
            match verdict {
                Verdict::Valid(p) if !all => {
                    ex.principal = Some(p);
                    return Ok(accepted);
                }
                Verdict::Valid(p) => merged = Some(merge(merged, p)),
                Verdict::Absent if !all => continue,
                Verdict::Absent => return Err(self.refuse(ex, name, method, "missing_credentials", false)),
                Verdict::Invalid(reason @ NOT_MINE) if !all => {
                    refused.get_or_insert((name, method, reason));
                }
                Verdict::Invalid(reason) => return Err(self.refuse(ex, name, method, reason, true)),
                Verdict::Busy(reason) => {
                    self.count(ex, name, method, reason);
                    return Err(Reject::TooManyRequests);
                }
                Verdict::Unavailable(reason) => {
                    self.count(ex, name, method, reason);
                    return Err(Reject::StoreUnavailable);
                }
            }
        }
        match (merged, refused) {
            (Some(p), _) => {
                ex.principal = Some(p);
                Ok(accepted)
            }
            (None, Some((name, method, reason))) => Err(self.refuse(ex, name, method, reason, true)),
            (None, None) => {
                let (name, method) = &methods[0];
                Err(self.refuse(ex, name, method, "missing_credentials", false))
            }
        }
    }

    /// The checks [`Authn::authenticate`] left for the body (`Content-Digest`), once it has been read.
    pub async fn check_body(&self, ex: &mut Exchange<'_>, accepted: &Accepted, body: &[u8]) -> Result<(), Reject> {
        let methods = match &self.mode {
            Mode::None => return Ok(()),
            Mode::AnyOf(m) | Mode::AllOf(m) => m,
        };
        for (i, due) in &accepted.body {
            let Some((name, method)) = methods.get(*i) else { continue };
            if let Method::Signature(s) = &**method {
                if let Err(reason) = s.check_body(due, body).await {
                    ex.principal = None;
                    if reason == signature::STORE_UNAVAILABLE {
                        self.count(ex, name, method, reason);
                        return Err(Reject::StoreUnavailable);
                    }
                    return Err(self.refuse(ex, name, method, reason, true));
                }
            }
        }
        Ok(())
    }

    fn refuse(
        &self,
        ex: &mut Exchange<'_>,
        name: &str,
        method: &Method,
        reason: &'static str,
        invalid: bool,
    ) -> Reject {
        self.count(ex, name, method, reason);
        if let (true, Method::ApiKey(k)) = (invalid, method) {
            ex.claimed = k.claimed(&ex.parts);
        }
        let methods = match &self.mode {
            Mode::None => return Reject::Unauthorized { challenge: HeaderValue::from_static("none") },
            Mode::AnyOf(m) | Mode::AllOf(m) => m,
        };
        let mut challenges: Vec<String> = Vec::with_capacity(methods.len());
        for (_, m) in methods {
            let c = m.challenge((invalid && std::ptr::eq(&**m, method)).then_some(reason));
            // Two bearer methods (JWT and introspection) would otherwise repeat the same challenge;
            // keep the one that carries the error code.
            let scheme = c.split(' ').next().unwrap_or_default().to_owned();
            match challenges.iter().position(|x| x.split(' ').next() == Some(scheme.as_str())) {
                Some(i) if c.len() > challenges[i].len() => challenges[i] = c,
                Some(_) => {}
                None => challenges.push(c),
            }
        }
        let challenge = HeaderValue::try_from(challenges.join(", ")).unwrap_or(HeaderValue::from_static("Bearer"));
        // RFC 9449 §8: a proof without a (current) server nonce is answered with one to use.
        match method.dpop().filter(|_| reason == dpop::USE_NONCE).and_then(dpop::Dpop::nonce) {
            Some(nonce) => Reject::DpopNonce { challenge, nonce },
            None => Reject::Unauthorized { challenge },
        }
    }
}

impl Authn {
    /// Counts and logs a refusal (`authentication failed`, with the reason code).
    fn count(&self, ex: &mut Exchange<'_>, name: &str, method: &Method, reason: &'static str) {
        self.failures
            .get_or_create(&vec![("method".into(), method.kind().into()), ("reason".into(), reason.into())])
            .inc();
        tracing::info!(
            // The client address is in the access log line and the event, as `logging.client_ip` says.
            request_id = ex.request_id,
            authenticator = name,
            method = method.kind(),
            reason,
            "authentication failed"
        );
        ex.event(
            Noted::new(Kind::AuthnFailure, reason)
                .rule(name.to_owned())
                .attr("authenticator", name.to_owned())
                .attr("method", method.kind()),
        );
    }
}

/// The refusal that means "a credential of this kind, but for another authenticator of it".
pub const NOT_MINE: &str = "wrong_issuer";

/// `all_of`: the first method's identity, the union of roles and scopes, the first claims and tenant.
fn merge(acc: Option<Arc<Principal>>, next: Arc<Principal>) -> Arc<Principal> {
    let Some(acc) = acc else { return next };
    let mut p = (*acc).clone();
    // The merged principal's headers differ from the first method's.
    p.identity = IdentityHeaders::default();
    let next = (*next).clone();
    for r in next.roles {
        if !p.roles.contains(&r) {
            p.roles.push(r);
        }
    }
    for s in next.scopes {
        if !p.scopes.contains(&s) {
            p.scopes.push(s);
        }
    }
    p.claims = p.claims.or(next.claims);
    p.tenant = p.tenant.or(next.tenant);
    Arc::new(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct R {
        auth: AuthConfig,
    }

    fn parse(y: &str) -> Result<AuthConfig, String> {
        serde_yaml_ng::from_str::<R>(y).map(|r| r.auth).map_err(|e| e.to_string())
    }

    fn who(id: &str, kind: PrincipalKind, roles: &[&str]) -> Arc<Principal> {
        Arc::new(Principal {
            id: id.into(),
            kind,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: vec![],
            claims: None,
            tenant: None,
            identity: IdentityHeaders::default(),
        })
    }

    #[test]
    fn identity_headers_are_built_once_and_rebuilt_for_a_merged_principal() {
        let first = who("alice", PrincipalKind::ClientCertificate, &["a"]);
        let h = first.identity_headers();
        assert_eq!(h[0], ("x-portcullis-principal", http::HeaderValue::from_static("alice")));
        assert_eq!(h[1].1, "mtls");
        assert_eq!(h[2], ("x-portcullis-roles", http::HeaderValue::from_static("a")));
        assert!(std::ptr::eq(h, first.identity_headers()), "built once");
        let merged = merge(Some(first.clone()), who("bob", PrincipalKind::Jwt, &["b"]));
        assert_eq!(merged.identity_headers()[2].1, "a,b", "the merged roles, not the first method's");
        let bad = who("evil\r\nx-injected: 1", PrincipalKind::Jwt, &[]);
        assert!(bad.identity_headers().iter().all(|(n, _)| *n != "x-portcullis-principal"));
    }

    #[test]
    fn route_auth_forms() {
        assert_eq!(parse("auth: none"), Ok(AuthConfig::None));
        assert_eq!(parse("auth: keys"), Ok(AuthConfig::AnyOf(vec!["keys".into()])));
        assert_eq!(parse("auth: { any_of: [a, b] }"), Ok(AuthConfig::AnyOf(vec!["a".into(), "b".into()])));
        assert_eq!(parse("auth: { all_of: [a, b] }"), Ok(AuthConfig::AllOf(vec!["a".into(), "b".into()])));
        assert!(parse("auth: { any_of: [] }").is_err());
        assert!(parse("auth: { any_of: [a], all_of: [b] }").is_err());
        assert!(parse("auth: { one_of: [a] }").is_err());
    }
}
