//! One request's way through the gateway: the [`Exchange`] (its context) and the ordered stages of a
//! route. Stages never call each other; [`handle`] calls them in order, and turns the first
//! [`Reject`] into the response. See `docs/pipeline.md` for the chart.
//!
//! Order: redirect listener → size limits (414/431) → framing (400) → path normalisation (400) →
//! route match (404/405) → CORS (preflight answered here, 403) → authentication (401) → body limit
//! (413) → header hygiene → forward (502/503/504) → response headers → access log and metrics.

use crate::authn::{Authn, Principal};
use crate::body::ResponseBody;
use crate::config::compile::{ListenerRt, Runtime};
use crate::observe::metrics::{Metrics, RouteMetrics};
use crate::observe::Completion;
use crate::proxy::headers::{self, Forwarding, X_REQUEST_ID};
use crate::proxy::upstream::Upstream;
use crate::proxy::Outgoing;
use crate::respond::cors::Cors;
use crate::respond::problem::Reject;
use crate::route::{Found, Params};
use crate::validate::body::LimitedBody;
use crate::validate::{self, path};
use arc_swap::ArcSwap;
use http::header::{HeaderValue, HOST, LOCATION, STRICT_TRANSPORT_SECURITY};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rustls_pki_types::CertificateDer;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A compiled route: what a matched request goes through.
pub struct Route {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub authn: Authn,
    pub cors: Option<Cors>,
    pub max_body_bytes: u64,
    pub metrics: Arc<RouteMetrics>,
}

/// What the gateway knows about the client connection.
pub struct ConnInfo {
    pub listener: usize,
    pub peer: SocketAddr,
    pub tls: Option<TlsInfo>,
    /// The peer as forwarding headers name it, worked out once per connection.
    pub forwarded_peer: headers::Peer,
}

impl ConnInfo {
    pub fn new(listener: usize, peer: SocketAddr, tls: Option<TlsInfo>) -> ConnInfo {
        ConnInfo { listener, peer, tls, forwarded_peer: headers::Peer::new(peer.ip()) }
    }
}

pub struct TlsInfo {
    pub version: Option<&'static str>,
    pub sni: Option<String>,
    /// The verified client certificate chain, leaf first, when one was presented.
    pub client_chain: Option<Vec<CertificateDer<'static>>>,
}

/// The process-wide state shared by every connection.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
}

/// One request's context as it moves through the stages.
pub struct Exchange<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub conn: &'a ConnInfo,
    pub route: Option<Arc<Route>>,
    pub params: Params,
    pub principal: Option<Arc<Principal>>,
}

/// Serves one request on `conn`. Never fails: every outcome is a response.
pub async fn handle(shared: &Shared, conn: &ConnInfo, req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let rt = shared.runtime.load_full();
    let listener = &rt.listeners[conn.listener];
    let (mut parts, body) = req.into_parts();
    let request_id_header = match parts.headers.get(&X_REQUEST_ID) {
        Some(v) if headers::valid_request_id(v) => v.clone(),
        _ => headers::new_request_id(),
    };
    // Valid request ids are visible ASCII, so this always succeeds.
    let request_id = request_id_header.to_str().unwrap_or_default();
    let client_ip = headers::client_ip(conn.peer.ip(), &parts.headers, &rt.trusted_proxies);
    // Only the access log needs these copies; the request's own headers go upstream without a clone.
    let (log_host, log_path): (Box<str>, Box<str>) = if rt.access_log {
        (host_of_str(&parts.uri, &parts.headers).into(), parts.uri.path().into())
    } else {
        (Box::default(), Box::default())
    };
    let mut ex = Exchange { request_id, client_ip, conn, route: None, params: Params::new(), principal: None };
    // Request body bytes: counted by the streamed body (shared with it), so only allocated for one.
    let mut bytes_in: Option<Arc<AtomicU64>> = None;
    let mut upstream_duration = None;
    let mut cors_origin = None;
    // Boxed: the stages' future is large, and this one is moved whole into hyper's connection; one
    // allocation costs less than copying kilobytes of state on the way.
    let result = Box::pin(run(
        &rt,
        listener,
        &mut ex,
        &mut parts,
        body,
        &request_id_header,
        &mut bytes_in,
        &mut upstream_duration,
        &mut cors_origin,
    ))
    .await;
    let route = ex.route.take();
    let principal = ex.principal.take();
    let (mut resp, problem) = match result {
        Ok(resp) => (resp, None),
        Err(reject) => {
            let kind = (reject.kind().0, reject.detail());
            tracing::debug!(request_id, problem = kind.0, reason = kind.1, "request refused");
            (reject.into_response(request_id), Some(kind))
        }
    };
    let h = resp.headers_mut();
    h.insert(&X_REQUEST_ID, request_id_header.clone());
    if let Some(hsts) = &listener.hsts {
        h.entry(STRICT_TRANSPORT_SECURITY).or_insert_with(|| hsts.clone());
    }
    if let (Some(origin), Some(cors)) = (&cors_origin, route.as_ref().and_then(|r| r.cors.as_ref())) {
        cors.origin_headers(origin, h);
    }
    let completion = Completion {
        started,
        request_id: request_id_header,
        client_ip,
        method: Some(parts.method),
        host: log_host,
        path: log_path,
        status: resp.status().as_u16(),
        bytes_in: bytes_in.map_or(0, |b| b.load(Ordering::Relaxed)),
        bytes_out: 0,
        route: route.as_ref().map(|r| r.name.clone()),
        principal,
        upstream: route.as_ref().map(|r| r.upstream.name.clone()),
        upstream_duration,
        tls_version: conn.tls.as_ref().and_then(|t| t.version),
        problem,
        aborted: false,
        access_log: rt.access_log,
        route_metrics: route.map_or_else(|| rt.unmatched.clone(), |r| r.metrics.clone()),
        metrics: shared.metrics.clone(),
    };
    resp.body_mut().set_completion(Box::new(completion));
    resp
}

fn host_of_str<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> &'a str {
    uri.authority().map(Authority::as_str).or_else(|| headers.get(HOST)?.to_str().ok()).unwrap_or("")
}

#[allow(clippy::too_many_arguments)]
async fn run(
    rt: &Runtime,
    listener: &ListenerRt,
    ex: &mut Exchange<'_>,
    parts: &mut http::request::Parts,
    body: Incoming,
    request_id: &HeaderValue,
    bytes_in: &mut Option<Arc<AtomicU64>>,
    upstream_duration: &mut Option<std::time::Duration>,
    cors_origin: &mut Option<HeaderValue>,
) -> Result<Response<ResponseBody>, Reject> {
    validate::check_sizes(parts, &rt.limits.request)?;
    let host = validate::check_framing(parts)?;
    if let Some(port) = listener.redirect_https_port {
        return redirect(parts, host, port);
    }
    let normalized = path::normalize(parts.uri.path()).map_err(Reject::InvalidPath)?;
    let preflight = Cors::is_preflight(&parts.method, &parts.headers);
    let match_method = if preflight {
        parts
            .headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(http::Method::OPTIONS)
    } else {
        parts.method.clone()
    };
    let route = match rt.routes.find(host, &normalized, &match_method) {
        Found::Route(route, params) => {
            ex.params = params;
            route.clone()
        }
        Found::MethodNotAllowed(allow) => return Err(Reject::MethodNotAllowed(allow)),
        Found::NotFound => return Err(Reject::NotFound),
    };
    ex.route = Some(route.clone());
    if let Some(cors) = &route.cors {
        if preflight {
            return cors.preflight(&parts.headers);
        }
        *cors_origin = cors.check(&parts.headers)?;
    }
    if validate::content_length(parts).is_some_and(|n| n > route.max_body_bytes) {
        return Err(Reject::PayloadTooLarge);
    }
    // Credentials are judged on the head alone; the body is read only when an accepted signature still
    // has to be checked against it.
    let accepted = route.authn.authenticate(ex, parts).await?;
    let body = if accepted.needs_body() {
        let timeout = route.upstream.response_timeout;
        let seen = bytes_in.get_or_insert_with(Arc::default);
        let bytes = validate::body::read_all(body, route.max_body_bytes, seen, timeout).await?;
        route.authn.check_body(ex, &accepted, &bytes)?;
        Body::Buffered(bytes)
    } else {
        Body::Streaming(body)
    };
    let mut headers = std::mem::take(&mut parts.headers);
    route.authn.strip_credentials(&mut headers, &accepted);
    let query = parts.uri.query().map(|q| route.authn.strip_query(q).map_or(Cow::Borrowed(q), Cow::Owned));
    let target = upstream_target(parts, &normalized, query.as_deref())?;
    let (out, body) =
        upstream_request(rt, ex, parts, headers, target, body, request_id, route.max_body_bytes, bytes_in);
    let (mut resp, took) = crate::proxy::forward(&route.upstream, &out, body).await?;
    *upstream_duration = Some(took);
    headers::clean_response(resp.headers_mut());
    Ok(resp.map(ResponseBody::upstream))
}

/// The request body on its way upstream: streamed with its limit, or already read for authentication.
enum Body {
    Streaming(Incoming),
    Buffered(bytes::Bytes),
}

/// The origin-form target sent upstream: the normalised path and the query (less any API key in it).
fn upstream_target(
    parts: &http::request::Parts,
    normalized: &str,
    query: Option<&str>,
) -> Result<PathAndQuery, Reject> {
    let unchanged = normalized == parts.uri.path() && query == parts.uri.query();
    match query {
        _ if unchanged => Ok(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))),
        None | Some("") => normalized.parse().map_err(|_| Reject::BadRequest("unparseable path")),
        Some(q) => format!("{normalized}?{q}").parse().map_err(|_| Reject::BadRequest("unparseable target")),
    }
}

/// Builds the request sent upstream: origin-form target, HTTP/1.1, hygienic headers, and the header
/// fields the gateway adds to them (forwarding, request id, identity).
#[allow(clippy::too_many_arguments)] // each is one piece of the request being assembled
fn upstream_request(
    rt: &Runtime,
    ex: &Exchange<'_>,
    parts: &http::request::Parts,
    mut headers: http::HeaderMap,
    target: PathAndQuery,
    body: Body,
    request_id: &HeaderValue,
    max_body: u64,
    bytes_in: &mut Option<Arc<AtomicU64>>,
) -> (Outgoing, LimitedBody) {
    // One walk over the names says what hygiene has to touch; most requests need no removal at all.
    let found = headers::scan(&headers);
    headers::strip_found(&mut headers, found);
    let host = match headers.get(HOST) {
        Some(v) => Some(v.clone()),
        // HTTP/2 (and absolute-form) requests name the host in the target: the upstream gets it as `Host`.
        None => {
            let v = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
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
    let body = match body {
        Body::Buffered(bytes) => LimitedBody::full(bytes),
        Body::Streaming(body) if http_body::Body::is_end_stream(&body) => LimitedBody::empty(),
        Body::Streaming(body) => LimitedBody::new(body, max_body, bytes_in.get_or_insert_with(Arc::default).clone()),
    };
    (Outgoing { method: parts.method.clone(), target, headers, added }, body)
}

/// Any `X-Portcullis-*` header a client sent: only the gateway may tell the upstream who the caller is.
fn remove_identity_headers(headers: &mut http::HeaderMap) {
    let spoofed: Vec<http::HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with("x-portcullis-")).cloned().collect();
    for name in spoofed {
        headers.remove(name);
    }
}

fn redirect(parts: &http::request::Parts, host: Option<&str>, port: u16) -> Result<Response<ResponseBody>, Reject> {
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
