//! The leaf types every stage shares: one request's [`Exchange`], who made it ([`Principal`]), what is
//! known of its connection ([`ConnInfo`]), and the one order in which stages run ([`Place`]).
//!
//! This module imports nothing of the gateway. Stages (`authn`, later `authz`, `ratelimit`, `inspect`,
//! ...) depend on it and never on each other; `pipeline` runs them in [`Place`] order.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use rustls_pki_types::CertificateDer;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a stage runs. The order is fixed for every route: the request side top to bottom, the
/// proxy, then the response side. A stage may be global or per route, but never changes its place;
/// each later stage takes the place its issue names. `portcullis check` prints each route's chain in
/// this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place {
    /// IP allow and deny lists, bans, connection limits (at accept).
    ConnectionGuards,
    /// Head size limits and framing (400/414/431), before any route is known.
    HeadLimits,
    /// Host, path and method (404/405); the route's CORS answer and its declared body size (413).
    RouteMatch,
    /// Limits before credentials are checked: per client IP, per login field.
    PreAuthLimits,
    /// Credentials to a [`Principal`] (401), with proof-of-possession and revocation checks.
    Authentication,
    /// Roles, scopes, object- and property-level rules (403).
    Authorization,
    /// Per-principal rate limits and quotas (429).
    PrincipalLimits,
    /// Shape limits, content types, OpenAPI and JSON Schema (400/413/415/422).
    Validation,
    /// Injection and malicious-payload detection (403).
    Inspection,
    /// Rewrites of the request before it leaves (tokenization).
    RequestTransforms,
    /// Header hygiene and forwarding to the upstream (502/503/504).
    Proxy,
    /// Ownership checks on what the upstream answered.
    ResponseAuthorization,
    Detokenization,
    ResponseSchema,
    DataLossMasking,
    ErrorScrubbing,
    /// HSTS, CORS response headers, request id.
    SecurityHeaders,
    /// Access log, metrics, security events, audit, anomaly feed.
    Record,
}

impl Place {
    pub fn as_str(self) -> &'static str {
        match self {
            Place::ConnectionGuards => "connection-guards",
            Place::HeadLimits => "head-limits",
            Place::RouteMatch => "route-match",
            Place::PreAuthLimits => "pre-auth-limits",
            Place::Authentication => "authentication",
            Place::Authorization => "authorization",
            Place::PrincipalLimits => "principal-limits",
            Place::Validation => "validation",
            Place::Inspection => "inspection",
            Place::RequestTransforms => "request-transforms",
            Place::Proxy => "proxy",
            Place::ResponseAuthorization => "response-authorization",
            Place::Detokenization => "detokenization",
            Place::ResponseSchema => "response-schema",
            Place::DataLossMasking => "data-loss-masking",
            Place::ErrorScrubbing => "error-scrubbing",
            Place::SecurityHeaders => "security-headers",
            Place::Record => "record",
        }
    }
}

mod params;
pub use params::Params;

/// The request body as the stages see it.
pub enum RequestBody {
    /// Not read: streamed to the upstream with its limit enforced.
    Streaming(Incoming),
    /// Read whole (within the route's limit) because a stage of the chain needs it.
    Buffered(Bytes),
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi rate-limit headers draft), and `Retry-After` when a
/// limit refused the request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LimitHeaders {
    pub policy: String,
    pub state: String,
    pub retry_after: Option<u64>,
}

impl LimitHeaders {
    /// Adds one limit: its policy item and its state now (`"name";r=remaining;t=seconds to full`).
    pub fn add(&mut self, policy: &str, name: &str, remaining: u32, reset: u64) {
        use std::fmt::Write as _;
        if !self.policy.is_empty() {
            self.policy.push_str(", ");
            self.state.push_str(", ");
        }
        self.policy.push_str(policy);
        let _ = write!(self.state, "{name};r={remaining};t={reset}");
    }
}

/// An authorization decision and the rule that made it (for the access log and metrics).
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Arc<str>,
}

/// One request's home while it moves through the stages: everything a stage may read or decide.
pub struct Exchange<'a> {
    pub request_id: &'a str,
    /// The client as the trusted-proxy rules decided (the peer unless a trusted proxy forwarded it).
    pub client_ip: IpAddr,
    pub conn: &'a ConnInfo,
    /// The request head as the parser of record read it. Stages may remove or add fields.
    pub parts: http::request::Parts,
    /// The normalised path, when it differs from the target's (see [`Exchange::path`]).
    normalized: Option<String>,
    /// The matched route's name.
    pub route: Option<Arc<str>>,
    pub params: Params,
    /// `None` until authentication establishes one (and on public routes).
    pub principal: Option<Arc<Principal>>,
    pub body: RequestBody,
    /// The body decoded from its `Content-Encoding` (gzip, deflate), when validation decoded one: what
    /// inspection should read. `None` when the body had no coding (read `body`) or was not decoded.
    /// The upstream always receives the original bytes.
    pub decoded_body: Option<Bytes>,
    /// The OpenAPI operation validation matched (an index into the route's document, for response
    /// schema filtering: `validate::openapi::Document::filter_response`).
    pub operation: Option<usize>,
    /// The route's body limit, and how long reading a body whole may take (the route's upstream
    /// response timeout).
    pub body_limit: u64,
    pub body_timeout: Duration,
    /// Request body bytes: counted by the body as it is read or streamed (shared with it), so only
    /// allocated for a request that has one.
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// The place of the stage that refused the request, if one did (logs and events).
    pub refused_at: Option<Place>,
    /// Refused by a response in force against its verified principal (a principal ban; an anomaly
    /// ban, throttle or challenge; set by the chain for those stages): its anomaly record leaves the
    /// principal out.
    pub refused_in_force: bool,
    /// The public id of the API key authentication refused (`pcs_<id>_...`): the identity it claimed.
    pub claimed: Option<Arc<str>>,
    /// The authorization decision and the rule that made it (access log).
    pub authz: Option<Decision>,
    /// The rate-limit headers of the route's limits, for the answer (whatever it is).
    pub limit_headers: Option<Box<LimitHeaders>>,
    /// What a stage holds until the answer has been sent (a concurrency limit's place).
    pub held: Vec<Box<dyn std::any::Any + Send + Sync>>,
    pub started: Instant,
    /// Time to the upstream's response head.
    pub upstream_duration: Option<Duration>,
    /// Security events stages noted (`Exchange::event`); the pipeline adds the request's context and
    /// emits them when the request is recorded. Empty (unallocated) for most requests.
    pub events: Vec<crate::events::Noted>,
    /// The request's trace (`traces:`); `None` when tracing is off, so it costs nothing then.
    pub trace: Option<Box<dyn Trace>>,
}

impl<'a> Exchange<'a> {
    pub fn new(
        request_id: &'a str,
        client_ip: IpAddr,
        conn: &'a ConnInfo,
        parts: http::request::Parts,
        body: Incoming,
        started: Instant,
    ) -> Exchange<'a> {
        Exchange {
            request_id,
            client_ip,
            conn,
            parts,
            normalized: None,
            route: None,
            params: Params::new(),
            principal: None,
            body: RequestBody::Streaming(body),
            decoded_body: None,
            operation: None,
            body_limit: 0,
            body_timeout: Duration::ZERO,
            bytes_in: None,
            refused_at: None,
            refused_in_force: false,
            claimed: None,
            authz: None,
            limit_headers: None,
            held: Vec::new(),
            events: Vec::new(),
            trace: None,
            started,
            upstream_duration: None,
        }
    }

    /// Notes a security event about this request: what kind, why, which rule. The one interface stages
    /// emit through; the pipeline completes and sends it (see `crate::events`).
    pub fn event(&mut self, noted: crate::events::Noted) {
        self.events.push(noted);
    }

    /// The normalised path: what routes matched and what the upstream receives.
    pub fn path(&self) -> &str {
        self.normalized.as_deref().unwrap_or_else(|| self.parts.uri.path())
    }

    /// Records the normalised path; `None` means the target's own path is already normal.
    pub fn set_normalized(&mut self, path: Option<String>) {
        self.normalized = path;
    }
}

/// A request's trace (OpenTelemetry, `observe::trace`) as the pipeline reports to it. A trait here so
/// this leaf names nothing of the gateway; the exchange holds one only when tracing is on.
pub trait Trace: Send + Sync {
    /// True when the request's spans are recorded (callers read the clock for them only then).
    fn recording(&self) -> bool;
    /// A stage of the route's chain ran from `began` to now; `refused` when it ended the request.
    fn stage(&mut self, place: Place, began: Instant, refused: bool);
    /// The upstream call begins; `headers` are the outgoing request's (trace context is set in them).
    fn upstream_start(&mut self, headers: &mut http::HeaderMap);
    /// The upstream call ended: the upstream's name, the target that answered (`host:port`, when
    /// known), and its status or why the call failed.
    fn upstream_end(&mut self, upstream: &Arc<str>, address: Option<&str>, outcome: Result<u16, &'static str>);
    /// The answer is known: its status, and the refusal's slug if the gateway refused the request.
    fn finish(self: Box<Self>, ex: &Exchange<'_>, status: u16, problem: Option<&'static str>);
}

/// What the gateway knows about the client connection.
pub struct ConnInfo {
    pub listener: usize,
    pub peer: SocketAddr,
    pub tls: Option<TlsInfo>,
    /// The peer as forwarding headers name it, worked out once per connection.
    pub forwarded_peer: Peer,
}

impl ConnInfo {
    pub fn new(listener: usize, peer: SocketAddr, tls: Option<TlsInfo>) -> ConnInfo {
        ConnInfo { listener, peer, tls, forwarded_peer: Peer::new(peer.ip()) }
    }
}

pub struct TlsInfo {
    pub version: Option<&'static str>,
    pub sni: Option<String>,
    /// The verified client certificate chain, leaf first, when one was presented.
    pub client_chain: Option<Vec<CertificateDer<'static>>>,
}

/// The peer of a client connection as forwarding headers name it, worked out once per connection.
pub struct Peer {
    pub ip: IpAddr,
    /// `X-Forwarded-For` element: `192.0.2.1`, `2001:db8::1`.
    pub xff: HeaderValue,
    /// `Forwarded` node (RFC 7239): `192.0.2.1`, `"[2001:db8::1]"`.
    pub node: HeaderValue,
}

impl Peer {
    pub fn new(ip: IpAddr) -> Peer {
        let text = ip.to_string();
        let node = if ip.is_ipv6() { format!("\"[{text}]\"") } else { text.clone() };
        // An IP address in text is always a valid header value.
        let unknown = || HeaderValue::from_static("unknown");
        let xff = HeaderValue::from_str(&text).unwrap_or_else(|_| unknown());
        let node = HeaderValue::try_from(node).unwrap_or_else(|_| unknown());
        Peer { ip, xff, node }
    }
}

/// Who made the request, as established by authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Verified claims (JWT, introspection), for authorization rules and logs.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    pub tenant: Option<String>,
    /// The `X-Portcullis-*` headers telling the upstream who this is, built on first use: principals
    /// are cached per key and per verified token, so each is built once, not per request.
    pub identity: IdentityHeaders,
}

/// See [`Principal::identity_headers`]. Never part of a principal's equality.
#[derive(Default, Clone)]
pub struct IdentityHeaders(std::sync::OnceLock<Box<[(&'static str, http::HeaderValue)]>>);

impl PartialEq for IdentityHeaders {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for IdentityHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityHeaders")
    }
}

impl Principal {
    /// `X-Portcullis-Principal`, `-Auth-Method`, `-Roles` (comma separated), `-Scopes` (space separated),
    /// `-Tenant`. A value that is not a valid field value (a control character) is left out, never
    /// sent raw.
    pub fn identity_headers(&self) -> &[(&'static str, http::HeaderValue)] {
        self.identity.0.get_or_init(|| {
            let mut out = Vec::with_capacity(5);
            let mut set = |name: &'static str, value: &str| {
                if let Ok(v) = http::HeaderValue::from_str(value) {
                    out.push((name, v));
                }
            };
            set("x-portcullis-principal", &self.id);
            set("x-portcullis-auth-method", self.kind.as_str());
            if !self.roles.is_empty() {
                set("x-portcullis-roles", &self.roles.join(","));
            }
            if !self.scopes.is_empty() {
                set("x-portcullis-scopes", &self.scopes.join(" "));
            }
            if let Some(t) = &self.tenant {
                set("x-portcullis-tenant", t);
            }
            out.into_boxed_slice()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    ApiKey,
    Jwt,
    Introspection,
    ClientCertificate,
    Signature,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::Jwt => "jwt",
            PrincipalKind::Introspection => "introspection",
            PrincipalKind::ClientCertificate => "mtls",
            PrincipalKind::Signature => "signature",
        }
    }
}

/// State that outlives a reload, kept by name: a reload's compile gets back the entry the running config
/// uses (while anything still holds it) instead of starting empty. It lives on the process's lasting
/// state, handed to every compile, never in a static.
pub struct Registry<T> {
    entries: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry { entries: Default::default() }
    }
}

impl<T> Registry<T> {
    /// The live entry named `name`, adjusted by `adopt`, or a new one from `make`.
    pub fn get_or_insert(&self, name: &str, adopt: impl FnOnce(&T), make: impl FnOnce() -> T) -> Arc<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, w| w.strong_count() > 0);
        if let Some(live) = entries.get(name).and_then(std::sync::Weak::upgrade) {
            adopt(&live);
            return live;
        }
        let new = Arc::new(make());
        entries.insert(name.to_owned(), Arc::downgrade(&new));
        new
    }

    /// Every live entry.
    pub fn live(&self) -> Vec<Arc<T>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().filter_map(std::sync::Weak::upgrade).collect()
    }
}

/// The error type of every body the gateway streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A refusal: every stage ends a request with one of these, and `respond::problem` renders it (RFC 9457
/// problem+json with a fixed public title per type; the detail goes to logs only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Malformed request, with a short internal reason for the logs.
    BadRequest(&'static str),
    /// Framing that two parsers could read differently (request smuggling).
    AmbiguousFraming(&'static str),
    /// A path two parsers could read differently, with the reason for the logs.
    InvalidPath(&'static str),
    NotFound,
    MethodNotAllowed(Vec<Method>),
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    Unauthorized {
        challenge: HeaderValue,
    },
    /// 401 asking for a DPoP proof with this server nonce (RFC 9449 §8: `DPoP-Nonce`).
    DpopNonce {
        challenge: HeaderValue,
        nonce: HeaderValue,
    },
    CorsForbidden,
    /// The anomaly detector challenged this principal: a credential issued after the alert is needed
    /// (401 `reauthenticate`).
    Reauthenticate,
    /// Authorization refused the principal (which rule did is in the exchange's decision, never in the
    /// answer).
    Forbidden,
    /// The body sets a field (this JSON pointer) none of the principal's roles may set. The pointer is
    /// named in the answer; the value never is.
    ForbiddenProperty(Box<str>),
    /// A JSON body that cannot be read (or has a duplicate key): where, and why (for the logs).
    MalformedJson {
        offset: u64,
        reason: &'static str,
    },
    /// A body of a media type the route cannot judge (a route with property rules reads JSON only).
    UnsupportedMediaType,
    /// A credential (or any request, with `plain_http: refuse`) on a plain-HTTP listener.
    InsecureTransport,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    /// Upstream answered badly or could not be reached.
    BadGateway(&'static str),
    /// The upstream answered this 5xx status; its answer was replaced (`respond.scrub_errors`).
    UpstreamError(StatusCode),
    NoHealthyUpstream,
    GatewayTimeout(&'static str),
    TooManyRequests,
    /// A rate limit refused the request (its headers are on the exchange).
    RateLimited,
    /// The client address is on a deny list, or not on an allow list (`ip_filter`).
    IpDenied,
    /// The client address, its prefix or the principal is banned (`portcullis bans`, `auto_ban`).
    Banned,
    /// The anomaly detector's bot score of the client address reached the route's `bot.refuse_at`.
    Bot,
    /// Shared state (Redis) could not be reached and the limit or replay store fails closed.
    StoreUnavailable,
    /// The request breaks the route's declared shape or its OpenAPI document (400 or 422): each error
    /// names where (a JSON pointer or a parameter) and a code, never a value from the request.
    Invalid(Box<Invalid>),
    /// Inspection found an attack (the rules are in the logs, never in the answer).
    RequestBlocked,
    Internal(&'static str),
}

/// A validation refusal: its status (400 or 422), the reason for the logs, and the errors listed in
/// the problem document's `errors` extension member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub status: StatusCode,
    pub reason: &'static str,
    pub errors: Vec<FieldError>,
}

/// One error of a refused request: where (`in` is `body`, `query`, `header`, `path` or `cookie`;
/// `pointer` a JSON pointer into the body or a parameter's name; `offset` a byte offset into the
/// body) and a stable code (`type`, `required`, `pattern`, `max-depth`, ...). Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub location: &'static str,
    pub pointer: Box<str>,
    pub code: &'static str,
    pub offset: Option<u64>,
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::BadRequest(_) | Reject::AmbiguousFraming(_) | Reject::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Reject::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::UriTooLong => StatusCode::URI_TOO_LONG,
            Reject::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::Unauthorized { .. } | Reject::DpopNonce { .. } | Reject::Reauthenticate => StatusCode::UNAUTHORIZED,
            Reject::CorsForbidden
            | Reject::InsecureTransport
            | Reject::Forbidden
            | Reject::ForbiddenProperty(_)
            | Reject::IpDenied
            | Reject::Banned
            | Reject::Bot => StatusCode::FORBIDDEN,
            Reject::MalformedJson { .. } => StatusCode::BAD_REQUEST,
            Reject::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reject::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            Reject::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Reject::UpstreamError(status) => *status,
            Reject::NoHealthyUpstream | Reject::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reject::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Reject::TooManyRequests | Reject::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reject::Invalid(i) => i.status,
            Reject::RequestBlocked => StatusCode::FORBIDDEN,
            Reject::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable problem type slug (the last part of the `type` URI) and its public title.
    pub fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Reject::BadRequest(_) => ("bad-request", "The request is malformed"),
            Reject::AmbiguousFraming(_) => ("ambiguous-framing", "The request framing is ambiguous"),
            Reject::InvalidPath(_) => ("invalid-path", "The request path is not acceptable"),
            Reject::NotFound => ("not-found", "No route matches the request"),
            Reject::MethodNotAllowed(_) => ("method-not-allowed", "The method is not allowed on this route"),
            Reject::PayloadTooLarge => ("payload-too-large", "The request body is too large"),
            Reject::UriTooLong => ("uri-too-long", "The request URI is too long"),
            Reject::HeadersTooLarge => ("headers-too-large", "The request headers are too large"),
            Reject::Unauthorized { .. } | Reject::DpopNonce { .. } => ("unauthorized", "Authentication is required"),
            Reject::CorsForbidden => ("cors-forbidden", "The cross-origin request is not allowed"),
            Reject::Reauthenticate => ("reauthenticate", "Fresh credentials are required"),
            Reject::Forbidden => ("forbidden", "The request is not allowed"),
            Reject::ForbiddenProperty(_) => ("forbidden-property", "The request sets a field it may not set"),
            Reject::MalformedJson { .. } => ("malformed-json", "The request body is not valid JSON"),
            Reject::UnsupportedMediaType => ("unsupported-media-type", "The request body's media type is not accepted"),
            Reject::InsecureTransport => ("insecure-transport", "The request must use HTTPS"),
            Reject::ExpectationFailed => ("expectation-failed", "The expectation cannot be met"),
            Reject::BadGateway(_) => ("bad-gateway", "The upstream service failed"),
            Reject::UpstreamError(_) => ("upstream-error", "The upstream service failed to handle the request"),
            Reject::NoHealthyUpstream => ("no-healthy-upstream", "No upstream service is available"),
            Reject::GatewayTimeout(_) => ("gateway-timeout", "The upstream service timed out"),
            Reject::TooManyRequests | Reject::RateLimited => ("too-many-requests", "Too many requests"),
            Reject::StoreUnavailable => ("store-unavailable", "The gateway cannot reach its shared state"),
            Reject::Internal(_) => ("internal-error", "The gateway failed to handle the request"),
            Reject::IpDenied => ("ip-denied", "The client address is not allowed"),
            Reject::Banned => ("banned", "The client is banned"),
            Reject::Bot => ("bot", "The client is judged to be automated"),
            Reject::Invalid(_) => ("invalid-request", "The request does not match what the API accepts"),
            Reject::RequestBlocked => ("request-blocked", "The request was blocked by inspection"),
        }
    }

    /// The security event this refusal is, when no stage noted a more precise one: its kind and reason
    /// code. Refusals that are not security facts (404, 405, upstream failures) are none.
    pub fn event(&self) -> Option<crate::events::Noted> {
        use crate::events::{Kind, Noted};
        let kind = match self {
            Reject::Unauthorized { .. }
            | Reject::DpopNonce { .. }
            | Reject::InsecureTransport
            | Reject::Reauthenticate => Kind::AuthnFailure,
            Reject::Forbidden | Reject::ForbiddenProperty(_) | Reject::CorsForbidden => Kind::AuthzDenied,
            Reject::TooManyRequests | Reject::RateLimited => Kind::RateLimited,
            Reject::IpDenied | Reject::Banned | Reject::Bot => Kind::GuardBlocked,
            Reject::RequestBlocked => Kind::InspectDetection,
            Reject::BadRequest(_)
            | Reject::AmbiguousFraming(_)
            | Reject::InvalidPath(_)
            | Reject::PayloadTooLarge
            | Reject::UriTooLong
            | Reject::HeadersTooLarge
            | Reject::MalformedJson { .. }
            | Reject::UnsupportedMediaType
            | Reject::ExpectationFailed
            | Reject::Invalid(_) => Kind::ValidationFailed,
            Reject::NotFound
            | Reject::MethodNotAllowed(_)
            | Reject::BadGateway(_)
            | Reject::UpstreamError(_)
            | Reject::NoHealthyUpstream
            | Reject::GatewayTimeout(_)
            | Reject::StoreUnavailable
            | Reject::Internal(_) => return None,
        };
        let mut n = Noted::new(kind, self.detail());
        if matches!(self, Reject::AmbiguousFraming(_)) {
            n = n.severity(crate::events::Severity::Medium);
        }
        if let Reject::ForbiddenProperty(pointer) = self {
            n = n.attr("pointer", pointer.to_string());
        }
        if let Reject::Invalid(i) = self {
            if let Some(first) = i.errors.first() {
                n = n.attr("pointer", first.pointer.to_string()).attr("code", first.code);
            }
        }
        Some(n.attr("problem", self.kind().0))
    }

    /// The internal reason, for logs only.
    pub fn detail(&self) -> &'static str {
        match self {
            Reject::BadRequest(r)
            | Reject::AmbiguousFraming(r)
            | Reject::BadGateway(r)
            | Reject::GatewayTimeout(r)
            | Reject::InvalidPath(r)
            | Reject::Internal(r)
            | Reject::MalformedJson { reason: r, .. } => r,
            Reject::Invalid(i) => i.reason,
            _ => self.kind().0,
        }
    }
}

/// The prefix length an IPv6 client is counted under (connection limits, rate limits, automatic bans,
/// the anomaly detector): `v6_prefix`, except for addresses a NAT64 translated from IPv4 (the
/// well-known prefix `64:ff9b::/96` of RFC 6052 and the local-use `64:ff9b:1::/48` of RFC 8215). There
/// one /64 holds every IPv4 client of the translator, so each address is its own client (/128): one
/// abusive client behind a NAT64 must not use up, or get banned, the share of all the others.
pub fn v6_client_bits(v6: &std::net::Ipv6Addr, v6_prefix: u8) -> u8 {
    let s = v6.segments();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && (s[2] == 1 || s[2..6] == [0, 0, 0, 0]);
    if nat64 {
        128
    } else {
        v6_prefix.min(128)
    }
}

/// The network a client is counted, limited, watched and banned as, everywhere: an IPv4 address (also
/// when written as IPv4-mapped IPv6) whole, an IPv6 address cut to its first [`v6_client_bits`].
pub fn client_net(ip: IpAddr, v6_prefix: u8) -> ipnet::IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => ipnet::IpNet::V4(v4.into()),
        IpAddr::V6(v6) => {
            // At most 128 bits, so the network always exists.
            let bits = v6_client_bits(&v6, v6_prefix);
            ipnet::IpNet::V6(ipnet::Ipv6Net::new(v6, bits).map_or(v6.into(), |n| n.trunc()))
        }
    }
}
