//! One request's way through the gateway. [`handle`] gives the request its [`Exchange`], runs the
//! global stages (head limits, framing, route match) and the route's compiled [`Chain`] in the fixed
//! [`Place`] order, forwards what survives, then runs the response side (security headers, record).
//! Stages never call each other, and the first [`Reject`] becomes the response. See
//! `docs/pipeline.md` for the chart and how to add a stage.

pub mod chain;
pub mod runtime;

use crate::body::ResponseBody;
use crate::exchange::{Params, Place, Reject, RequestBody};
use crate::observe::metrics::RouteMetrics;
use crate::observe::Completion;
use crate::proxy::headers::{self, Forwarding, X_REQUEST_ID};
use crate::proxy::upstream::Upstream;
use crate::proxy::Outgoing;
use crate::respond::cors::Cors;
use crate::route::{Found, RouteTable};
use crate::validate::body::LimitedBody;
use crate::validate::{self, path};
use arc_swap::ArcSwap;
use chain::Chain;
use http::header::{HeaderValue, HOST, LOCATION, STRICT_TRANSPORT_SECURITY};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use runtime::{ListenerRt, Runtime};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::exchange::{ConnInfo, Exchange};

/// A compiled route: what a matched request goes through.
pub struct Route {
    pub name: Arc<str>,
    /// The route's id in the anomaly detector's records (stable across reloads).
    pub anomaly_id: u16,
    pub upstream: Arc<Upstream>,
    /// The route's own stages (authentication, and later authorization, limits, inspection).
    pub chain: Chain,
    /// Route match place: the route's CORS answer and origin check.
    pub cors: Option<Cors>,
    pub max_body_bytes: u64,
    /// `;` parameters in path segments are forwarded (otherwise 400).
    pub matrix_params: bool,
    pub metrics: Arc<RouteMetrics>,
    /// The response side: security headers, error scrubbing, JSON-only, masking (`src/respond`).
    pub protect: crate::respond::protect::Protect,
}

impl Route {
    /// The route's effective chain, as `check` prints it: every stage it runs, in order.
    pub fn describe_chain(&self, listener_hsts: bool) -> String {
        let mut out: Vec<String> = vec!["head-limits".into()];
        let mut matching = vec![];
        if self.cors.is_some() {
            matching.push("cors".to_string());
        }
        matching.push(format!("max_body {}", self.max_body_bytes));
        if self.matrix_params {
            matching.push("matrix_params".into());
        }
        out.push(format!("route-match[{}]", matching.join(", ")));
        for stage in self.chain.stages() {
            let body = if stage.may_read_body() { "; may read the body" } else { "" };
            out.push(format!("{}[{}{body}]", stage.place().as_str(), stage.describe()));
        }
        out.push(format!("proxy[{}]", self.upstream.name));
        out.extend(self.protect.describe());
        let mut security = vec!["request-id"];
        security.extend(self.protect.header_names());
        if listener_hsts {
            security.push("hsts");
        }
        if self.cors.is_some() {
            security.push("cors");
        }
        out.push(format!("{}[{}]", Place::SecurityHeaders.as_str(), security.join(", ")));
        out.push(Place::Record.as_str().into());
        out.join(" -> ")
    }
}

/// The process-wide state shared by every connection.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    /// What outlives every reload: metrics, and state stages keep by name.
    pub lasting: runtime::Lasting,
}

/// Serves one request on `conn`. Never fails: every outcome is a response.
pub async fn handle(shared: &Shared, conn: &ConnInfo, req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let rt = shared.runtime.load_full();
    let listener = &rt.listeners[conn.listener];
    let (parts, body) = req.into_parts();
    let request_id_header = match parts.headers.get(&X_REQUEST_ID) {
        Some(v) if headers::valid_request_id(v) => v.clone(),
        _ => headers::new_request_id(),
    };
    // Valid request ids are visible ASCII, so this always succeeds.
    let request_id = request_id_header.to_str().unwrap_or_default();
    let client_ip =
        crate::proxy::client_ip::client_ip(conn.peer.ip(), &parts.headers, &rt.trusted_proxies, rt.client_ip_header);
    // Only the access log needs these copies; the request's own headers go upstream without a clone.
    let (log_host, log_path): (Box<str>, Box<str>) = if rt.access_log {
        (host_of_str(&parts.uri, &parts.headers).into(), parts.uri.path().into())
    } else {
        (Box::default(), Box::default())
    };
    let mut out = Outcome::default();
    // The access log's request facts: the user agent and, for a request with a body, its summary.
    let mut user_agent = None;
    let mut content_type = None;
    if rt.access_log {
        // A clone of the field's shared bytes; cleaned and cut only when the line is written.
        user_agent = parts.headers.get(http::header::USER_AGENT).cloned();
        if !http_body::Body::is_end_stream(&body) {
            let media = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::content::media_type);
            let json = media.as_ref().is_some_and(crate::content::MediaType::is_json);
            content_type = media.map(|m| crate::observe::log_text(m.essence.as_bytes(), 128));
            out.tap = Some(crate::observe::payload::Tap::shared(&rt.privacy, json));
        }
    }
    // The anomaly record's view of the head, taken before the head is forwarded.
    let anomaly = rt.anomaly.as_ref().and_then(crate::anomaly::runtime::AnomalyRt::current);
    let anomaly_head = anomaly.as_ref().map(|a| a.head(&parts.headers));
    let mut ex = Exchange::new(request_id, client_ip, conn, parts, body, started);
    if let Some(tracer) = &rt.tracer {
        let trusted = headers::is_trusted(conn.peer.ip(), &rt.trusted_proxies);
        ex.trace = Some(tracer.start(trusted, &ex.parts, started));
    }
    // Boxed: the stages' future is large, and this one is moved whole into hyper's connection; one
    // allocation costs less than copying kilobytes of state on the way.
    let result = Box::pin(run(&rt, listener, &mut ex, &request_id_header, &mut out)).await;
    let (mut resp, problem) = match result {
        Ok(resp) => (resp, None),
        Err(reject) => {
            let kind = (reject.kind().0, reject.detail());
            let place = ex.refused_at.map(Place::as_str);
            tracing::debug!(request_id, problem = kind.0, reason = kind.1, stage = place, "request refused");
            if rt.events.is_enabled() {
                derived_event(&mut ex, &reject);
            }
            (reject.into_response(request_id), Some(kind))
        }
    };
    if let Some(trace) = ex.trace.take() {
        trace.finish(&ex, resp.status().as_u16(), problem.map(|p| p.0));
    }
    if !ex.events.is_empty() {
        shared.lasting.live.noted(&ex.events);
        emit_events(&rt.events, &mut ex, resp.status().as_u16());
    }
    // A body a stage read whole and that was refused never passed the upstream's tap.
    if let (Some(tap), RequestBody::Buffered(b)) = (&out.tap, &ex.body) {
        crate::observe::payload::feed(tap, b);
    }
    rt.guard.observe(client_ip, resp.status().as_u16());
    // Response side: security headers, then record.
    let h = resp.headers_mut();
    h.insert(&X_REQUEST_ID, request_id_header.clone());
    if let Some(hsts) = &listener.hsts {
        h.entry(STRICT_TRANSPORT_SECURITY).or_insert_with(|| hsts.clone());
    }
    out.route.as_ref().map_or(&rt.security_headers, |r| &r.protect.headers).apply(h, ex.principal.is_some());
    if let Some(l) = ex.limit_headers.take() {
        limit_headers(h, &l);
    }
    let route = out.route;
    // Taken field by field: moving the request head out whole would copy it for its method alone.
    let (route_name, principal, bytes_in) = (ex.route.take(), ex.principal.take(), ex.bytes_in.take());
    let authz = ex.authz.take();
    let held = std::mem::take(&mut ex.held);
    let (method, upstream_duration, refused_in_force) =
        (ex.parts.method.clone(), ex.upstream_duration, ex.refused_in_force);
    if let (Some(origin), Some(cors)) = (&out.cors_origin, route.as_ref().and_then(|r| r.cors.as_ref())) {
        cors.origin_headers(origin, h);
    }
    let anomaly = anomaly.zip(anomaly_head).map(|(a, head)| {
        let route_id = route.as_ref().map_or(crate::anomaly::NO_ROUTE, |r| r.anomaly_id);
        let status = resp.status().as_u16();
        let done = crate::anomaly::runtime::Done {
            params: &ex.params,
            ip: client_ip,
            principal: principal.clone(),
            route: route_id,
            status,
            refused_in_force,
            claimed: ex.claimed.take(),
        };
        let record = a.record(head, done);
        (a as Arc<dyn crate::activity::Sink>, record)
    });
    let completion = Completion {
        started,
        request_id: request_id_header,
        client_ip,
        method: Some(method),
        host: log_host,
        path: log_path,
        status: resp.status().as_u16(),
        bytes_in: bytes_in.map_or(0, |b| b.load(Ordering::Relaxed)),
        bytes_out: 0,
        route: route_name,
        principal,
        upstream: route.as_ref().map(|r| r.upstream.name.clone()),
        upstream_duration,
        tls_version: conn.tls.as_ref().and_then(|t| t.version),
        problem,
        authz,
        aborted: false,
        held,
        user_agent,
        content_type,
        payload: out.tap.take(),
        privacy: rt.privacy.clone(),
        access_log: rt.access_log,
        route_metrics: route.map_or_else(|| rt.unmatched.clone(), |r| r.metrics.clone()),
        metrics: shared.lasting.metrics.clone(),
        live: shared.lasting.live.clone(),
        anomaly,
    };
    resp.body_mut().set_completion(Box::new(completion));
    resp
}

/// Adds the event a refusal is when no stage noted one of its kind (head limits, route match and the
/// guards refuse without noting; an authorization denial names the rule that decided).
fn derived_event(ex: &mut Exchange<'_>, reject: &Reject) {
    use crate::events::Kind;
    let Some(mut noted) = reject.event() else { return };
    let covered = ex
        .events
        .iter()
        .any(|n| n.kind == noted.kind || (noted.kind == Kind::RateLimited && n.kind == Kind::QuotaExceeded));
    if covered {
        return;
    }
    if noted.kind == Kind::AuthzDenied {
        if let Some(d) = ex.authz.as_ref().filter(|d| !d.allowed) {
            noted.rule = Some(d.rule.to_string().into());
        }
    }
    if let Some(place) = ex.refused_at {
        noted = noted.attr("stage", place.as_str());
    }
    ex.events.push(noted);
}

/// Completes what stages noted with the request's context and sends it (`crate::events`).
fn emit_events(emitter: &crate::events::Emitter, ex: &mut Exchange<'_>, status: u16) {
    let noted = std::mem::take(&mut ex.events);
    if !emitter.is_enabled() {
        return;
    }
    for n in noted {
        let mut e = crate::events::Event::from_noted(n);
        e.request_id = Some(ex.request_id.into());
        e.principal = ex.principal.as_ref().map(|p| p.id.as_str().into());
        e.client_ip = Some(ex.client_ip);
        e.route = ex.route.clone();
        e.method = Some(ex.parts.method.as_str().into());
        e.path = Some(ex.path().into());
        e.status = Some(status);
        emitter.emit(e);
    }
}

/// `RateLimit-Policy`, `RateLimit` and, on a refusal, `Retry-After`.
fn limit_headers(h: &mut http::HeaderMap, l: &crate::exchange::LimitHeaders) {
    // (An anomaly throttle's refusal carries `Retry-After` alone.)
    if let (false, Ok(policy), Ok(state)) =
        (l.policy.is_empty(), HeaderValue::from_str(&l.policy), HeaderValue::from_str(&l.state))
    {
        h.insert(http::HeaderName::from_static("ratelimit-policy"), policy);
        h.insert(http::HeaderName::from_static("ratelimit"), state);
    }
    if let Some(secs) = l.retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// What the request side hands the response side besides the exchange.
#[derive(Default)]
struct Outcome {
    route: Option<Arc<Route>>,
    /// An allowed `Origin` on a CORS route, answered with CORS headers.
    cors_origin: Option<HeaderValue>,
    /// The access log's payload summary of the request body.
    tap: Option<crate::observe::payload::SharedTap>,
}

fn host_of_str<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> &'a str {
    uri.authority().map(Authority::as_str).or_else(|| headers.get(HOST)?.to_str().ok()).unwrap_or("")
}

/// The request side, in [`Place`] order: head limits and framing, route match, the route's chain, proxy.
async fn run(
    rt: &Runtime,
    listener: &ListenerRt,
    ex: &mut Exchange<'_>,
    request_id: &HeaderValue,
    out: &mut Outcome,
) -> Result<Response<ResponseBody>, Reject> {
    ex.refused_at = Some(Place::ConnectionGuards);
    rt.guard.check(ex.client_ip)?;
    ex.refused_at = Some(Place::HeadLimits);
    validate::check_sizes(&ex.parts, &rt.limits.request)?;
    let matched = {
        let host = validate::check_framing(&ex.parts)?;
        if listener.redirect_https_port.is_some() || listener.refuse_plain {
            return redirect(listener, &ex.parts, host, ex.client_ip);
        }
        ex.refused_at = Some(Place::RouteMatch);
        let normalized = path::normalize(ex.parts.uri.path()).map_err(|e| Reject::InvalidPath(e.reason()))?;
        let matrix = path::has_matrix_params(&normalized);
        // Routes are matched on the path as matrix-parameter servers read it (`/admin;x` is `/admin`).
        let routed = if matrix { path::without_matrix_params(&normalized) } else { Cow::Borrowed(&*normalized) };
        let matched = match_route(&rt.routes, host, &routed, &ex.parts, &mut ex.params)?;
        if matrix && !matched.route.matrix_params {
            return Err(Reject::InvalidPath(path::PathError::MatrixParams.reason()));
        }
        ex.set_normalized(owned(normalized));
        matched
    };
    let route = matched.route;
    ex.route = Some(route.name.clone());
    out.route = Some(route.clone());
    if let Some(cors) = &route.cors {
        if matched.preflight {
            return cors.preflight(&ex.parts.headers);
        }
        out.cors_origin = cors.check(&ex.parts.headers)?;
    }
    if validate::content_length(&ex.parts).is_some_and(|n| n > route.max_body_bytes) {
        return Err(Reject::PayloadTooLarge);
    }
    ex.body_limit = route.max_body_bytes;
    ex.body_timeout = route.upstream.response_timeout;
    ex.refused_at = None;
    route.chain.run(ex).await?;
    ex.refused_at = Some(Place::Proxy);
    let target = upstream_target(ex)?;
    // One walk over the names says what hygiene has to touch; most requests need no removal at all.
    let found = headers::scan(&ex.parts.headers);
    let underscores =
        headers::Underscores { allowed: listener.underscores_in_headers, protected: &listener.credentials.headers };
    headers::clean_request(&mut ex.parts.headers, found, underscores)?;
    route.protect.prepare_request(&mut ex.parts.headers);
    let (mut outgoing, body) = upstream_request(rt, ex, found, target, request_id, out.tap.clone());
    if let Some(trace) = ex.trace.as_deref_mut() {
        trace.upstream_start(&mut outgoing.headers);
    }
    let forwarded = crate::proxy::forward(&route.upstream, &outgoing, body).await;
    if let Some(trace) = ex.trace.as_deref_mut() {
        let (address, outcome) = crate::proxy::outcome(&route.upstream, &forwarded);
        trace.upstream_end(&route.upstream.name, address, outcome);
    }
    let (mut resp, took) = forwarded?;
    ex.upstream_duration = Some(took);
    ex.refused_at = None;
    headers::clean_response(resp.headers_mut());
    let timeout = route.upstream.response_timeout;
    let resp = match route.chain.authz().filter(|a| a.response_owner().is_some()) {
        Some(authz) if resp.status().is_success() => owned_response(authz, ex, resp, timeout).await?,
        _ => resp.map(ResponseBody::upstream),
    };
    route.protect.response(ex, resp, timeout).await
}

/// `owner_in_response`: the upstream's answer is read whole (within the bound and the response timeout)
/// and judged before any of it is released; refused, it is discarded and the client gets 403, and a
/// BOLA event is logged (target `security`).
async fn owned_response(
    authz: &crate::authz::Authz,
    ex: &mut Exchange<'_>,
    resp: Response<crate::proxy::UpstreamBody>,
    timeout: std::time::Duration,
) -> Result<Response<ResponseBody>, Reject> {
    use http_body_util::BodyExt;
    let max = authz.response_owner().map_or(0, |o| o.max_bytes);
    let (mut head, body) = resp.into_parts();
    let read = tokio::time::timeout(timeout, http_body_util::Limited::new(body, max as usize).collect()).await;
    let verdict = match read {
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            authz.judge_response(ex, &bytes).map(|kept| kept.map_or(bytes, Into::into))
        }
        Ok(Err(_)) => {
            authz.withheld(ex);
            Err("the answer is over the bound or broke off")
        }
        Err(_) => return Err(Reject::GatewayTimeout("the upstream's answer did not arrive whole in time")),
    };
    match verdict {
        Ok(bytes) => {
            head.headers.remove(http::header::CONTENT_LENGTH);
            head.headers.remove(http::header::TRANSFER_ENCODING);
            if authz.response_owner().is_some_and(|o| o.filter) {
                // What the upstream said of its whole answer is not true of this one, and this one is
                // the caller's alone: no shared cache may serve it to another.
                for name in
                    ["etag", "last-modified", "content-range", "content-md5", "digest", "content-digest", "repr-digest"]
                {
                    head.headers.remove(name);
                }
                head.headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("private, no-store"));
            }
            Ok(Response::from_parts(head, ResponseBody::full(bytes)))
        }
        Err(reason) => {
            ex.refused_at = Some(Place::ResponseAuthorization);
            tracing::warn!(
                target: "security",
                event = "bola",
                request_id = ex.request_id,
                route = ex.route.as_deref(),
                principal = ex.principal.as_ref().map(|p| p.id.as_str()),
                reason,
                "upstream answer withheld: not the principal's object"
            );
            Err(Reject::Forbidden)
        }
    }
}

/// A normalised path kept only when it differs from the target's.
fn owned(path: Cow<'_, str>) -> Option<String> {
    match path {
        Cow::Borrowed(_) => None,
        Cow::Owned(p) => Some(p),
    }
}

/// The route a request matched.
struct Matched {
    route: Arc<Route>,
    /// A CORS preflight that this route answers itself.
    preflight: bool,
}

/// The route for this request.
///
/// A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is matched as the request it
/// announces; the route found answers it only if it has CORS. Otherwise the `OPTIONS` request is
/// routed as itself, under the same most-specific-route rule, so it never reaches an upstream
/// through another route's authentication. The route's path parameters are left in `params`.
fn match_route(
    routes: &RouteTable<Arc<Route>>,
    host: Option<&str>,
    path: &str,
    parts: &http::request::Parts,
    params: &mut Params,
) -> Result<Matched, Reject> {
    if Cors::is_preflight(&parts.method, &parts.headers) {
        let announced = parts
            .headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
        if let Some(method) = announced {
            if let Found::Route(route) = routes.find(host, path, &method, params) {
                if route.cors.is_some() {
                    return Ok(Matched { route: route.clone(), preflight: true });
                }
            }
        }
    }
    match routes.find(host, path, &parts.method, params) {
        Found::Route(route) => Ok(Matched { route: route.clone(), preflight: false }),
        Found::MethodNotAllowed(allow) => Err(Reject::MethodNotAllowed(allow)),
        Found::NotFound => Err(Reject::NotFound),
    }
}

/// The origin-form target sent upstream: the normalised path and the query.
fn upstream_target(ex: &Exchange<'_>) -> Result<PathAndQuery, Reject> {
    let uri = &ex.parts.uri;
    let path = ex.path();
    match uri.query() {
        _ if path == uri.path() => Ok(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))),
        None | Some("") => path.parse().map_err(|_| Reject::BadRequest("unparseable path")),
        Some(q) => format!("{path}?{q}").parse().map_err(|_| Reject::BadRequest("unparseable target")),
    }
}

/// Builds the request sent upstream from the exchange: origin-form target, HTTP/1.1, hygienic headers,
/// and the header fields the gateway adds to them (forwarding, request id, identity).
fn upstream_request(
    rt: &Runtime,
    ex: &mut Exchange<'_>,
    found: headers::Found,
    target: PathAndQuery,
    request_id: &HeaderValue,
    tap: Option<crate::observe::payload::SharedTap>,
) -> (Outgoing, LimitedBody) {
    let mut headers = std::mem::take(&mut ex.parts.headers);
    if found.has(headers::Found::COOKIE) {
        join_cookies(&mut headers);
    }
    let host = match headers.get(HOST) {
        Some(v) => Some(v.clone()),
        // HTTP/2 (and absolute-form) requests name the host in the target: the upstream gets it as `Host`.
        None => {
            let v = ex.parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            if let Some(v) = &v {
                headers.insert(HOST, v.clone());
            }
            v
        }
    };
    let peer = ex.conn.peer.ip();
    let fwd = Forwarding {
        peer: &ex.conn.forwarded_peer,
        peer_trusted: headers::is_trusted(peer, &rt.trusted_proxies),
        proto: if ex.conn.tls.is_some() { "https" } else { "http" },
        host: host.as_ref(),
    };
    let mut added = headers::Added::default();
    headers::set_forwarded(&mut headers, &fwd, found, &mut added);
    if found.has(headers::Found::X_REQUEST_ID) {
        headers.remove(&X_REQUEST_ID);
    }
    added.push("x-request-id", request_id.clone());
    if found.has(headers::Found::IDENTITY) {
        remove_identity_headers(&mut headers);
    }
    // Who the caller is ([`Principal::identity_headers`]): client-sent `X-Portcullis-*` fields were
    // removed above, so the upstream can trust these.
    if let Some(p) = &ex.principal {
        added.identify(p.clone());
    }
    let body = match std::mem::replace(&mut ex.body, RequestBody::Buffered(bytes::Bytes::new())) {
        RequestBody::Buffered(bytes) => {
            if let Some(tap) = &tap {
                crate::observe::payload::feed(tap, &bytes);
            }
            LimitedBody::full(bytes)
        }
        RequestBody::Streaming(body) if http_body::Body::is_end_stream(&body) => LimitedBody::empty(),
        RequestBody::Streaming(body) => {
            LimitedBody::new(body, ex.body_limit, ex.bytes_in.get_or_insert_with(Arc::default).clone()).with_tap(tap)
        }
    };
    (Outgoing { method: ex.parts.method.clone(), target, headers, added }, body)
}

/// Several `Cookie` lines become one, joined with `; `: HTTP/2 clients (browsers) send each cookie as its
/// own field, and RFC 9113 8.2.3 requires them to be concatenated before they go on in HTTP/1.1, where
/// a second `Cookie` line is not allowed (RFC 6265 5.4) and servers keep only one of them or join them
/// with `,` (found in review). One lookup when there is at most one line (the usual case).
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut lines = headers.get_all(http::header::COOKIE).iter();
    if lines.next().is_none() || lines.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(http::header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Every part was a valid value, and so is `; `: this cannot fail.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// Any `X-Portcullis-*` header a client sent: only the gateway may tell the upstream who the caller is.
fn remove_identity_headers(headers: &mut http::HeaderMap) {
    let spoofed: Vec<http::HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with("x-portcullis-")).cloned().collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// A plain listener that does not serve routes: `refuse` answers 403 to everything; `redirect` sends
/// 308 to HTTPS, except for a request that carries a credential, which is refused (403) instead.
fn redirect(
    listener: &ListenerRt,
    parts: &http::request::Parts,
    host: Option<&str>,
    client_ip: std::net::IpAddr,
) -> Result<Response<ResponseBody>, Reject> {
    let port = match listener.redirect_https_port {
        Some(port) if !listener.credentials.present(parts) => port,
        _ => {
            tracing::info!(listener = %listener.name, %client_ip, "plain-HTTP request refused");
            return Err(Reject::InsecureTransport);
        }
    };
    let host = host.ok_or(Reject::BadRequest("missing or invalid host"))?;
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    let pq = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = if port == 443 { format!("https://{host}{pq}") } else { format!("https://{host}:{port}{pq}") };
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::try_from(location).map_err(|_| Reject::BadRequest("unredirectable target"))?);
    Ok(resp)
}
