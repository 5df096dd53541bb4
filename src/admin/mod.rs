//! The admin API (served on its own listener by `server::admin`, loopback by default): `GET /healthz`,
//! Prometheus `GET /metrics`, and `GET /keys/nearing-max-age` (stored API keys nearing their
//! authenticator's `max_age`: ids and principals, never keys); all but the first behind a bearer token
//! when `admin.token` is set.
//! The authenticated admin API with its store arrives in its own module later; two read-only endpoints
//! do not need axum yet.

mod exposition;

use crate::body::ResponseBody;
use crate::exchange::Reject;
use crate::pipeline::Shared;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, VARY};
use http::{Method, Request, Response};
use hyper::body::Incoming;

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
