//! The admin listener's answers (served by `server::admin`, loopback by default):
//! - `GET /healthz`; Prometheus `GET /metrics` and `GET /keys/nearing-max-age`, behind `admin.token`
//!   when it is set (their rule is unchanged);
//! - the admin API under `/admin/v1` ([`api`]): admin tokens ([`tokens`]) or a client certificate,
//!   with roles ([`auth`]);
//! - the dashboard under `/admin/ui` ([`ui`]), whose session cookie the API also takes.
//!
//! [`State`] lives as long as the listener (across reloads): the accepted tokens, the idempotency
//! cache, and the router with its OpenAPI document.

pub mod api;
pub mod auth;
pub mod cli;
mod exposition;
pub mod remote;
pub mod tokens;
pub mod ui;

use crate::body::ResponseBody;
use crate::exchange::Reject;
use crate::pipeline::Shared;
use auth::{Authn, Caller};
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, VARY};
use http::{Method, Request, Response};
use std::sync::{Arc, OnceLock};

/// Reloads the config file (the server's reload, handed in: this module does not import the server).
pub type Reloader = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The admin listener's state, kept across reloads.
pub struct State {
    pub shared: Arc<Shared>,
    pub tokens: tokens::Tokens,
    pub idempotency: api::idempotency::Cache,
    /// One write of a key at a time on this node (the `If-Match` check and the write together).
    pub writes: tokio::sync::Mutex<()>,
    pub reload: Option<Reloader>,
    pub openapi: OnceLock<String>,
    /// The dashboard's sessions and login limits.
    pub ui: ui::Ui,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

impl State {
    /// The state and the router that serves it. The router holds the state, so the state never holds
    /// the router (a cycle would keep the whole gateway, and its audit trail's last checkpoint, from
    /// ever being dropped at shutdown).
    pub fn listener(shared: Arc<Shared>, reload: Option<Reloader>) -> Listener {
        let state = Arc::new(State {
            shared,
            tokens: tokens::Tokens::default(),
            idempotency: api::idempotency::Cache::default(),
            writes: tokio::sync::Mutex::new(()),
            reload,
            openapi: OnceLock::new(),
            ui: ui::Ui::default(),
        });
        let (router, doc) = api::router(state.clone());
        let _ = state.openapi.set(doc.to_pretty_json().unwrap_or_default());
        Listener { state, router }
    }

    /// Where stored admin tokens live (the config's `store.postgres`, else its `store.sqlite`), if
    /// anywhere.
    pub fn token_store(&self) -> Option<tokens::TokenStore> {
        let rt = self.shared.runtime.load();
        let admin = rt.admin.as_ref()?;
        match &admin.postgres {
            Some(pg) => Some(tokens::TokenStore::Postgres(pg.clone())),
            None => tokens::TokenStore::of(admin.store.as_ref()),
        }
    }

    /// Reads the stored tokens now, then every second, and at once when the fleet's PostgreSQL notifies
    /// a change (a token made or revoked elsewhere is in force here within about a second). The task
    /// ends with the state.
    pub async fn start(self: &Arc<Self>) {
        if let Err(e) = self.tokens.refresh(self.token_store().as_ref()).await {
            tracing::warn!(error = %e, "admin tokens cannot be read from the store yet");
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                // With the fleet's PostgreSQL, a change notified by any node wakes the refresh at once;
                // the one-second poll stays the fallback.
                let changes = weak.upgrade().and_then(|s| match s.token_store() {
                    Some(tokens::TokenStore::Postgres(pg)) => Some(pg.subscribe()),
                    _ => None,
                });
                let tick = tokio::time::sleep(std::time::Duration::from_secs(1));
                match changes {
                    Some(mut changes) => {
                        tokio::select! {
                            _ = tick => {}
                            _ = changes.changed() => {}
                        }
                    }
                    None => tick.await,
                }
                let Some(state) = weak.upgrade() else { return };
                match state.tokens.refresh(state.token_store().as_ref()).await {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "admin tokens cannot be read from the store; keeping the last ones");
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

/// The admin listener's state and router.
#[derive(Clone)]
pub struct Listener {
    pub state: Arc<State>,
    router: axum::Router,
}

/// What the listener knows about the connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The caller a verified client certificate maps to (`admin.client_certificates`).
    pub certificate: Option<Caller>,
    /// The connection is TLS (cookies get `Secure`).
    pub tls: bool,
    /// The client's address (the dashboard limits failed logins per address).
    pub client_ip: Option<std::net::IpAddr>,
}

/// Answers one admin request.
pub async fn respond<B>(listener: &Listener, mut req: Request<B>, peer: &Peer) -> Response<axum::body::Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = &listener.state;
    let path = req.uri().path();
    if path == "/admin/ui" || path.starts_with("/admin/ui/") {
        return dashboard(state, req, peer).await;
    }
    if path == "/admin/v1" || path.starts_with("/admin/v1/") {
        let authn = match auth::bearer(req.headers()) {
            Some(t) => auth::authenticate_bearer(state, t).map_or(Authn::Missing, Authn::Caller),
            None => match peer.certificate.clone() {
                Some(c) => Authn::Caller(c),
                None => match ui::session_caller(&state.ui, req.headers(), req.method(), &state.tokens) {
                    Ok(Some(c)) => Authn::Caller(c),
                    Ok(None) => Authn::Missing,
                    Err(_) => Authn::Csrf,
                },
            },
        };
        req.extensions_mut().insert(authn);
        let mut router = listener.router.clone();
        let req = req.map(axum::body::Body::new);
        return match tower_service::Service::call(&mut router, req).await {
            Ok(resp) => no_store(resp),
            Err(never) => match never {},
        };
    }
    legacy(&state.shared, &req).map(axum::body::Body::new)
}

/// `/admin/ui/...`: the dashboard's forms are small, read whole (at most [`ui::MAX_FORM`]).
async fn dashboard<B>(state: &Arc<State>, req: Request<B>, peer: &Peer) -> Response<axum::body::Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let Ok(body) = http_body_util::Limited::new(body, ui::MAX_FORM).collect().await.map(|c| c.to_bytes()) else {
        return Reject::PayloadTooLarge.into_response("admin").map(axum::body::Body::new);
    };
    let client_ip = peer.client_ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let request = ui::UiRequest {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        body: &body,
        client_ip,
        tls: peer.tls,
    };
    ui::respond(&state.ui, &request, &state.tokens).map(axum::body::Body::from)
}

/// Admin answers are never cached.
fn no_store(mut resp: Response<axum::body::Body>) -> Response<axum::body::Body> {
    resp.headers_mut().entry(http::header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// `/healthz`, `/metrics`, `/keys/nearing-max-age`.
fn legacy<B>(shared: &Shared, req: &Request<B>) -> Response<ResponseBody> {
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
fn refuse<B>(rt: &crate::pipeline::runtime::Runtime, req: &Request<B>) -> Option<Response<ResponseBody>> {
    let token = rt.admin.as_ref().and_then(|a| a.token.as_ref())?;
    let given =
        req.headers().get(AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")).unwrap_or_default();
    // Constant time (aws-lc-rs), so the token cannot be guessed byte by byte from timings.
    if aws_lc_rs::constant_time::verify_slices_are_equal(given, token.expose().as_bytes()).is_ok() {
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
