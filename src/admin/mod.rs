//! The admin listener (loopback by default, separate from traffic listeners): `GET /healthz` and
//! Prometheus `GET /metrics`, the latter behind a bearer token when `admin.token` is set.
//! The authenticated admin API with its store arrives in its own module later; two read-only endpoints
//! do not need axum yet.

use crate::body::ResponseBody;
use crate::pipeline::Shared;
use crate::respond::problem::Reject;
use crate::server::conn::{Activity, ConnLimits, TrackedIo};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

/// At most this many admin connections at once (a scraper and an operator need a handful).
const MAX_CONNECTIONS: usize = 64;
/// And at most this many from one client (an IPv6 client counted by `limits.connection_ipv6_prefix`).
const MAX_CONNECTIONS_PER_IP: usize = 16;

/// Serves the admin listener: HTTP/1.1 only, with its own connection limits, the traffic listeners'
/// `header_read_timeout` (hyper's, which also bounds the wait for a kept-alive connection's next
/// request: fine for scrapes) and `idle_timeout`, and a back-off on accept errors.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let limits = Arc::new(ConnLimits::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                crate::server::accept_failed(&e).await;
                continue;
            }
        };
        let (header_timeout, idle, v6_prefix) = {
            let rt = shared.runtime.load();
            (rt.limits.header_read_timeout, rt.limits.idle_timeout, rt.limits.connection_ipv6_prefix)
        };
        let guard = match limits.try_acquire(peer.ip(), v6_prefix, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP) {
            Ok(g) => g,
            Err(reason) => {
                shared.metrics.connection_refused(reason);
                tracing::debug!(client_ip = %peer.ip(), reason, listener = "admin", "connection refused");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::default());
            let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, &req)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(64 * 1024);
            let conn = builder.serve_connection(io, service);
            tokio::select! {
                _ = conn => {}
                _ = activity.watch(idle, None) => tracing::debug!(listener = "admin", "idle connection closed"),
            }
            drop(guard);
        });
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<ResponseBody> {
    if req.method() != Method::GET {
        return Reject::MethodNotAllowed(vec![Method::GET]).into_response("admin");
    }
    match req.uri().path() {
        "/healthz" => json("{\"status\":\"ok\"}"),
        "/metrics" => {
            let rt = shared.runtime.load();
            if let Some(token) = rt.admin.as_ref().and_then(|a| a.token.as_ref()) {
                let given = req
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                    .unwrap_or_default();
                if !same(given, token.expose().as_bytes()) {
                    return Reject::Unauthorized {
                        challenge: HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
                    }
                    .into_response("admin");
                }
            }
            let mut resp = Response::new(ResponseBody::full(shared.metrics.encode().into()));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        _ => Reject::NotFound.into_response("admin"),
    }
}

fn json(body: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(bytes::Bytes::from_static(body.as_bytes())));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
