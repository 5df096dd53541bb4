//! The admin API (served on its own listener by `server::admin`, loopback by default): `GET /healthz`,
//! Prometheus `GET /metrics`, and `GET /keys/nearing-max-age` (stored API keys nearing their
//! authenticator's `max_age`: ids and principals, never keys); all but the first behind a bearer token
//! when `admin.token` is set.
//! The authenticated admin API with its store arrives in its own module later; two read-only endpoints
//! do not need axum yet.

pub mod auth;
mod exposition;
pub mod stats;
pub mod ui;

use crate::body::ResponseBody;
use crate::exchange::Reject;
use crate::pipeline::Shared;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, VARY};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

/// What the admin listener answers with: its own bodies, the dashboard's, and event streams.
pub type AdminBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, crate::body::BoxError>;

fn boxed<B>(body: B) -> AdminBody
where
    B: http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Send + 'static,
{
    use http_body_util::BodyExt;
    body.map_err(|e| match e {}).boxed_unsync()
}

/// Answers one admin request: the dashboard under `/admin/ui/`, the live statistics under
/// `/admin/v1/stats`, and [`respond`]'s endpoints.
pub async fn handle(
    shared: Arc<Shared>,
    ui: &ui::Ui,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<AdminBody> {
    use http_body_util::{BodyExt, Full, Limited};
    let path = req.uri().path();
    if path == "/admin/ui" || path.starts_with("/admin/ui/") {
        let (parts, body) = req.into_parts();
        let Ok(body) = Limited::new(body, ui::MAX_FORM).collect().await.map(http_body_util::Collected::to_bytes) else {
            return Reject::PayloadTooLarge.into_response("admin").map(BodyExt::boxed_unsync);
        };
        let r = ui::respond(
            ui,
            &ui::UiRequest {
                method: &parts.method,
                path: parts.uri.path(),
                headers: &parts.headers,
                body: &body,
                client_ip: peer.ip(),
                tls: false,
            },
            &|token| auth::authenticate_bearer(&shared, token),
        );
        return r.map(|b| boxed(Full::new(b)));
    }
    if path == "/admin/v1/stats" || path == "/admin/v1/stats/stream" {
        if req.method() != Method::GET {
            return Reject::MethodNotAllowed(vec![Method::GET]).into_response("admin").map(BodyExt::boxed_unsync);
        }
        let bearer = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
        let caller = match bearer {
            Some(t) => auth::authenticate_bearer(&shared, t),
            None => match ui::session_caller(&ui.sessions, req.headers(), req.method()) {
                Ok(c) => c,
                Err(_) => return Reject::Forbidden.into_response("admin").map(BodyExt::boxed_unsync),
            },
        };
        if caller.is_none() {
            let challenge = HeaderValue::from_static("Bearer realm=\"portcullis-admin\"");
            return Reject::Unauthorized { challenge }.into_response("admin").map(BodyExt::boxed_unsync);
        }
        if path.ends_with("/stream") {
            let mut resp = Response::new(boxed(stats::stream(shared.clone())));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            resp.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return resp;
        }
        let mut resp = Response::new(boxed(Full::new(bytes::Bytes::from(stats::json(&shared)))));
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    }
    respond(&shared, &req).map(BodyExt::boxed_unsync)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers one admin request (the listener, its limits and timeouts are `server::admin`'s).
pub fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<ResponseBody> {
    if req.method() != Method::GET {
        return Reject::MethodNotAllowed(vec![Method::GET]).into_response("admin");
    }
    match req.uri().path() {
        "/healthz" => json("{\"status\":\"ok\"}"),
        "/keys/nearing-max-age" => {
            let rt = shared.runtime.load();
            if let Some(refused) = refuse(&rt, req) {
                return refused;
            }
            let body = serde_json::json!({ "authenticators": rt.authenticators.keys_nearing_max_age() });
            let mut resp = Response::new(ResponseBody::full(body.to_string().into()));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        "/metrics" => {
            let rt = shared.runtime.load();
            if let Some(refused) = refuse(&rt, req) {
                return refused;
            }
            let openmetrics = shared.lasting.metrics.encode();
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let (body, media) = if exposition::wants_openmetrics(accept) {
                (openmetrics, exposition::OPENMETRICS)
            } else {
                (exposition::to_prometheus_text(&openmetrics), exposition::PROMETHEUS_TEXT)
            };
            let mut resp = Response::new(ResponseBody::full(body.into()));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(media));
            resp.headers_mut().insert(VARY, HeaderValue::from_static("accept"));
            resp
        }
        _ => Reject::NotFound.into_response("admin"),
    }
}

/// The 401 for a request without the admin token, when `admin.token` is set.
fn refuse(rt: &crate::pipeline::runtime::Runtime, req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    let token = rt.admin.as_ref().and_then(|a| a.token.as_ref())?;
    let given =
        req.headers().get(AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")).unwrap_or_default();
    if same(given, token.expose().as_bytes()) {
        return None;
    }
    Some(
        Reject::Unauthorized { challenge: HeaderValue::from_static("Bearer realm=\"portcullis-admin\"") }
            .into_response("admin"),
    )
}

fn json(body: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(bytes::Bytes::from_static(body.as_bytes())));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
