//! Listeners and connections: accept with connection limits, TLS handshake (rustls), HTTP/1.1 and
//! HTTP/2 serving (hyper), idle and header-read timeouts, and graceful shutdown on SIGTERM/SIGINT
//! (stop accepting, let in-flight requests finish up to `limits.shutdown_timeout`, then close).

pub mod admin;
pub mod conn;
pub mod demo;
mod h1;
pub mod reload;

use crate::exchange::Reject;
use crate::exchange::{ConnInfo, TlsInfo};
use crate::observe::Completion;
use crate::pipeline::runtime::ServerLimits;
use crate::pipeline::{self, Shared};
use crate::proxy::headers::new_request_id;
use crate::validate::head::HeadLimits;
use conn::{Activity, ConnLimits, GatedIo, Socket, TrackedIo};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::{Method, StatusCode, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// h1, or h2 with prior knowledge (h2c).
    Auto,
}

/// Runs the gateway until SIGTERM or SIGINT. `config_path` enables reloads (SIGHUP, file changes).
/// `ephemeral_admin` (the quickstart) makes an admin token that lives in memory only and prints it
/// with the dashboard's address.
pub async fn run(shared: Arc<Shared>, config_path: Option<PathBuf>, ephemeral_admin: bool) -> Result<(), String> {
    let rt = shared.runtime.load_full();
    rt.start(&shared.lasting);
    // Reloads (SIGHUP, file changes) are handled before anything reports that it listens.
    reload::spawn(shared.clone(), config_path.clone());
    let mut bound = Vec::new();
    for (i, l) in rt.listeners.iter().enumerate() {
        let listener =
            listen(l.address).map_err(|e| format!("listener `{}` cannot bind {}: {e}", l.name, l.address))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(listener = l.name.as_str(), address = %local, tls = l.tls.is_some(), "listening");
        bound.push((i, listener));
    }
    if let Some(admin) = &rt.admin {
        let listener = listen(admin.address).map_err(|e| format!("admin cannot bind {}: {e}", admin.address))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(listener = "admin", address = %local, tls = admin.tls.is_some(), "listening");
        let reloader: Option<crate::admin::Reloader> = config_path.clone().map(|path| {
            let shared = shared.clone();
            Arc::new(move || reload::reload(&shared, &path)) as crate::admin::Reloader
        });
        let admin_listener = crate::admin::State::listener(shared.clone(), reloader);
        let state = admin_listener.state.clone();
        state.start().await;
        if ephemeral_admin {
            let token = state.tokens.ephemeral("quickstart", crate::admin::auth::Role::Admin)?;
            // Printed once for the person who started the quickstart; never logged.
            println!(
                "Dashboard: http://{local}/admin/ui/  (log in with this admin token, valid until exit)\n  {token}\n\
                 Admin API: curl -H 'Authorization: Bearer {token}' http://{local}/admin/v1/whoami\n"
            );
        }
        drop(state);
        tokio::spawn(admin::serve(listener, admin_listener));
    }
    if let Some(addr) = rt.demo_upstream {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("demo upstream cannot bind {addr}: {e}"))?;
        tokio::spawn(demo::serve(listener));
    }
    drop(rt);

    let limits = Arc::new(ConnLimits::default());
    let sweeper = Arc::new(conn::Sweeper::default());
    tokio::spawn(sweeper.clone().run());
    // `stop` tells accept loops and connections to wind down; each of them holds a `drain` sender
    // (in its `Stop`), so `drained` sees the end of the stream once the last connection has closed.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain, mut drained) = mpsc::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for (i, listener) in bound {
        accept_tasks.push(tokio::spawn(accept_loop(
            i,
            listener,
            shared.clone(),
            limits.clone(),
            Stop { stop: stop_rx.clone(), _drain: drain.clone(), sweeper: sweeper.clone() },
        )));
    }
    drop(drain);
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    let deadline = shared.runtime.load().limits.shutdown_timeout;
    match tokio::time::timeout(deadline, drained.recv()).await {
        // Nothing is ever sent: `recv` ends when the last connection drops its sender.
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("shutdown deadline reached; closing remaining connections"),
    }
    // What was counted since the last write, so a restart does not reset a quota.
    shared.lasting.limits.quotas.flush();
    // The anomaly detector's state, when it is kept in the store (`anomaly.snapshot`).
    if let Some(a) = shared.lasting.anomaly.current() {
        let _ = tokio::task::spawn_blocking(move || a.save_snapshot()).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn accept_loop(
    index: usize,
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    mut stop: Stop,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let (max_total, max_per_ip, v6_prefix) = {
            let l = &shared.runtime.load().limits;
            (l.max_connections, l.max_connections_per_ip, l.connection_ipv6_prefix)
        };
        let guard = match limits.try_acquire(peer.ip(), v6_prefix, max_total, max_per_ip) {
            Ok(g) => g,
            Err(reason) => {
                shared.lasting.metrics.connection_refused(reason);
                tracing::debug!(client_ip = %peer.ip(), reason, "connection refused");
                continue;
            }
        };
        shared.lasting.metrics.active_connections.inc();
        let count = Count { metrics: shared.lasting.metrics.clone(), _guard: guard };
        let plain_h1 = {
            let rt = shared.runtime.load();
            rt.listeners.get(index).is_some_and(|l| l.tls.is_none() && !l.http2)
        };
        if plain_h1 {
            // The common case, spawned as it is: the task holds a parked connection and nothing more.
            let fut = plain_h1_connection(index, stream, peer, shared.clone(), stop.clone());
            tokio::spawn(Counted { fut, _count: count });
        } else {
            let fut = Box::pin(serve_connection(index, stream, peer, shared.clone(), stop.clone()));
            tokio::spawn(Counted { fut, _count: count });
        }
    }
}

/// A connection's place in `portcullis_active_connections` and in the connection limits, given back
/// when its task ends.
struct Count {
    metrics: Arc<crate::observe::metrics::Metrics>,
    _guard: conn::ConnGuard,
}

impl Drop for Count {
    fn drop(&mut self) {
        self.metrics.active_connections.dec();
    }
}

/// A connection's future with its [`Count`].
struct Counted<F> {
    fut: F,
    _count: Count,
}

impl<F: std::future::Future<Output = ()> + Unpin> std::future::Future for Counted<F> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.fut).poll(cx)
    }
}

/// A plain HTTP/1 listener's connection, set up without awaiting anything (see [`h1::Parkable`]).
fn plain_h1_connection(
    index: usize,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: Stop,
) -> h1::Parkable<TrackedIo<TcpStream>, impl ConnService> {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let io = TrackedIo::new(stream, activity.clone());
    let info = ConnInfo::new(index, peer, None);
    let (io, service, limits) = prepare(io, info, Protocol::Http1, shared, &activity);
    let (idle, head) = (limits.idle_timeout, limits.header_read_timeout);
    h1::Parkable::new(io, service, h1_builder(&limits), activity, idle, head, stop)
}

/// Connections the kernel may queue for a listener before they are accepted. tokio's `bind` asks for
/// 128: a burst of new clients (a thousand at once, a reconnect storm after a deploy) overflowed it and
/// the kernel dropped connections, whose clients retried a second or more later. The kernel caps the
/// figure at `net.core.somaxconn` (4096 by default since Linux 5.4).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket (address reuse on, as `TcpListener::bind` does) with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// After a failed `accept` (out of file descriptors, out of memory, a connection reset before it was
/// taken): log it and back off, so a listener never spins on an error that persists (EMFILE). Every
/// listener's accept loop, the admin listener's too, goes through here.
pub async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed; backing off");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Why a handshake failed, as a reason code (never the peer's bytes).
fn handshake_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(E::PeerIncompatible(_)) => "incompatible",
        Some(E::NoCertificatesPresented) => "no_client_certificate",
        Some(E::InvalidCertificate(_)) => "bad_certificate",
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. }) => {
            "invalid_message"
        }
        Some(E::AlertReceived(_)) => "alert_received",
        Some(E::PeerMisbehaved(_)) => "peer_misbehaved",
        Some(_) => "other",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "closed",
        None => "io",
    }
}

/// Counts a failed handshake and, at most once a second, makes it an event (with how many were
/// counted but not sent since the last one).
fn handshake_failed(shared: &Shared, listener: usize, peer: SocketAddr, reason: &'static str) {
    let rt = shared.runtime.load();
    let name = rt.listeners.get(listener).map_or("", |l| l.name.as_str());
    shared.lasting.metrics.tls_handshake_failure(name, reason);
    if let Some(suppressed) = shared.lasting.tls_sampler.admit() {
        let e = crate::events::Event::new(crate::events::Kind::TlsHandshakeFailure, reason)
            .client_ip(peer.ip())
            .attr("listener", name.to_owned())
            .attr("suppressed", suppressed);
        rt.events.emit(e);
    }
}

/// Shutdown as a connection sees it: the signal to finish up, and its place in the drain count.
#[derive(Clone)]
struct Stop {
    stop: watch::Receiver<bool>,
    _drain: mpsc::Sender<()>,
    /// Parks HTTP/1 connections that stay at rest (see [`conn::Sweeper`]).
    sweeper: Arc<conn::Sweeper>,
}

async fn serve_connection(index: usize, stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, stop: Stop) {
    let _ = stream.set_nodelay(true);
    let rt = shared.runtime.load_full();
    let listener = &rt.listeners[index];
    let activity = Arc::new(Activity::default());
    let io = TrackedIo::new(stream, activity.clone());
    match &listener.tls {
        None => {
            let proto = if listener.http2 { Protocol::Auto } else { Protocol::Http1 };
            let info = ConnInfo::new(index, peer, None);
            drop(rt);
            serve_http(io, info, proto, shared, activity, stop).await;
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let timeout = rt.limits.header_read_timeout;
            drop(rt);
            // Boxed, as the TLS connection's serving below: a plain connection's task is not sized
            // for rustls' state.
            let tls = match tokio::time::timeout(timeout, Box::pin(acceptor.accept(io))).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(client_ip = %peer.ip(), error = %e, "TLS handshake failed");
                    handshake_failed(&shared, index, peer, handshake_reason(&e));
                    return;
                }
                Err(_) => {
                    tracing::debug!(client_ip = %peer.ip(), "TLS handshake timed out");
                    handshake_failed(&shared, index, peer, "timeout");
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            let proto = if session.alpn_protocol() == Some(b"h2") { Protocol::Http2 } else { Protocol::Http1 };
            let info = ConnInfo::new(
                index,
                peer,
                Some(TlsInfo {
                    version: crate::tls::version_name(session.protocol_version()),
                    sni: session.server_name().map(str::to_owned),
                    client_chain: session
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
                }),
            );
            Box::pin(serve_http(tls, info, proto, shared, activity, stop)).await;
        }
    }
}

/// After these refusals the rest of the connection cannot be trusted (its framing was ambiguous, or a
/// body was left unread): the response closes it, so no bytes after it are read as a next request.
fn closes_connection(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    )
}

/// Answers, logs and counts a request head the framer refused (see [`conn::GatedIo`]): the stand-in
/// request hyper read in its place gets the refusal's problem+json, closing the connection, with the
/// same access log line and metrics as every other refusal (no method, host or path: none was accepted).
fn head_refusal(shared: &Shared, info: &ConnInfo, reject: Reject) -> http::Response<crate::body::ResponseBody> {
    let started = std::time::Instant::now();
    let request_id = new_request_id();
    let rt = shared.runtime.load();
    let id = request_id.to_str().unwrap_or_default();
    let problem = (reject.kind().0, reject.detail());
    tracing::debug!(request_id = id, problem = problem.0, reason = problem.1, "request head refused");
    if let Some(noted) = reject.event().filter(|_| rt.events.is_enabled()) {
        let mut e = crate::events::Event::from_noted(noted.attr("stage", crate::exchange::Place::HeadLimits.as_str()));
        e.request_id = Some(id.into());
        e.client_ip = Some(info.peer.ip());
        e.status = Some(reject.status().as_u16());
        rt.events.emit(e);
    }
    let mut resp = reject.into_response(id);
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    h.insert(crate::proxy::headers::X_REQUEST_ID.clone(), request_id.clone());
    if let Some(hsts) = rt.listeners.get(info.listener).and_then(|l| l.hsts.as_ref()) {
        h.insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    rt.security_headers.apply(h, false);
    let completion = Completion {
        started,
        request_id,
        client_ip: info.peer.ip(),
        method: None,
        host: Box::default(),
        path: Box::default(),
        status: resp.status().as_u16(),
        bytes_in: 0,
        bytes_out: 0,
        route: None,
        principal: None,
        upstream: None,
        upstream_duration: None,
        tls_version: info.tls.as_ref().and_then(|t| t.version),
        problem: Some(problem),
        authz: None,
        aborted: false,
        held: Vec::new(),
        user_agent: None,
        content_type: None,
        payload: None,
        privacy: rt.privacy.clone(),
        access_log: rt.access_log,
        route_metrics: rt.unmatched.clone(),
        metrics: shared.lasting.metrics.clone(),
        live: shared.lasting.live.clone(),
        anomaly: None,
    };
    resp.body_mut().set_completion(Box::new(completion));
    resp
}

async fn serve_http<I>(io: I, info: ConnInfo, proto: Protocol, shared: Arc<Shared>, activity: Arc<Activity>, stop: Stop)
where
    I: AsyncRead + AsyncWrite + Socket + Send + Unpin + 'static,
{
    let (io, service, limits) = prepare(io, info, proto, shared, &activity);
    if proto == Protocol::Http1 {
        let (idle, head) = (limits.idle_timeout, limits.header_read_timeout);
        return h1::Parkable::new(io, service, h1_builder(&limits), activity, idle, head, stop).await;
    }
    // Boxed: an HTTP/1 connection's task is not sized for the HTTP/2 state.
    Box::pin(serve_auto(io, service, limits, proto, activity, stop)).await
}

/// The framing gate, the connection's service and the limits it is served under.
fn prepare<I>(
    io: I,
    info: ConnInfo,
    proto: Protocol,
    shared: Arc<Shared>,
    activity: &Arc<Activity>,
) -> (GatedIo<I>, impl ConnService, ServerLimits)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let limits = shared.runtime.load().limits.clone();
    let http1 = proto != Protocol::Http2;
    if !http1 {
        activity.mark_http2();
    }
    let head_limits = http1.then(|| {
        HeadLimits::new(limits.request.max_header_bytes, limits.request.max_headers, limits.request.max_url_bytes)
    });
    let io = GatedIo::new(io, head_limits, proto == Protocol::Auto, activity.clone());
    let gate = io.gate();
    // One shared bundle per connection: each request clones one `Arc`, not three.
    let served = Arc::new(Served { shared, info, activity: activity.clone() });
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let served = served.clone();
        let http1 = req.version() < Version::HTTP_2;
        let head = req.method() == Method::HEAD;
        if !http1 {
            served.activity.mark_http2();
        }
        // HTTP/1 requests reach the service in the order their heads were read: the framer's refusal
        // belongs to the stand-in request at its place.
        let refusal = if http1 { gate.take_refusal() } else { None };
        async move {
            let (handling, responding) = served.activity.request_started();
            let mut resp = match refusal {
                Some(reject) => head_refusal(&served.shared, &served.info, reject),
                None => pipeline::handle(&served.shared, &served.info, req).await,
            };
            drop(handling);
            resp.body_mut().set_responding(responding);
            if head {
                if let Some(len) = resp.body_mut().drop_for_head() {
                    resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
                }
            }
            if http1 && closes_connection(resp.status()) {
                resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    (io, service, limits)
}

/// What serves a connection's requests (`prepare`'s service), as hyper's builders want it.
pub trait ConnService:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<crate::body::ResponseBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Unpin
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ResponseBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Unpin
        + Send
        + 'static
{
}

/// hyper's own ceilings sit above the framer's, which answers first (and hyper only reads heads the
/// framer accepted): room for a whole accepted head and pipelined bytes after it.
fn max_buf(limits: &ServerLimits) -> usize {
    let head =
        HeadLimits::new(limits.request.max_header_bytes, limits.request.max_headers, limits.request.max_url_bytes);
    head.max_head.saturating_add(16 * 1024).max(64 * 1024)
}

/// HTTP/1 only: hyper's own connection, without the version sniffing (and its extra buffer layer on
/// every read) that serving h2c by prior knowledge needs.
fn h1_builder(limits: &ServerLimits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Ours instead (`conn::Deadlines`): hyper's also runs while a kept-alive connection waits for
        // its next request, which would cut keep-alive to `header_read_timeout`.
        .header_read_timeout(None)
        .max_buf_size(max_buf(limits))
        .max_headers(limits.request.max_headers + 1);
    builder
}

/// HTTP/2 (ALPN h2), or a plain listener that also takes h2c by prior knowledge: hyper-util's
/// version-sniffing connection, watched by [`drive`].
async fn serve_auto<I, S>(
    io: GatedIo<I>,
    service: S,
    limits: ServerLimits,
    proto: Protocol,
    activity: Arc<Activity>,
    stop: Stop,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: ConnService,
{
    let idle = limits.idle_timeout;
    activity.await_first_head();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(max_buf(&limits))
        .max_headers(limits.request.max_headers + 1);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size((limits.request.max_header_bytes + limits.request.max_url_bytes) as u32)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(idle / 2))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    let builder = if proto == Protocol::Http2 { builder.http2_only() } else { builder };
    let conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    drive(conn, &activity, idle, limits.header_read_timeout, proto != Protocol::Http2, stop).await;
}

pub(crate) fn log_expired(expired: conn::Expired) {
    match expired {
        conn::Expired::Idle => tracing::debug!("idle connection closed"),
        conn::Expired::HeadTimeout => {
            tracing::debug!("request head not received within header_read_timeout; connection closed")
        }
        conn::Expired::Shutdown => tracing::debug!("connection closed at shutdown"),
    }
}

/// What every request of one connection shares.
struct Served {
    shared: Arc<Shared>,
    info: ConnInfo,
    activity: Arc<Activity>,
}

/// Runs a served connection until it ends, goes idle, (HTTP/1) a request head takes too long, or the
/// gateway shuts down. The watchdog runs in a task of its own and tells this one through a oneshot
/// channel: polling it costs an atomic load when the connection's task wakes for a request, where
/// timers (and a shutdown signal) would be polled again on every wake.
async fn drive<C>(
    mut conn: std::pin::Pin<Box<C>>,
    activity: &Arc<Activity>,
    idle: Duration,
    header_timeout: Duration,
    http1: bool,
    stop: Stop,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    // HTTP/2 connections have no head timeout of their own (hyper's keep-alive pings watch them).
    let head_limit = http1.then_some(header_timeout);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let watched = activity.clone();
    // `_drain` is held until this connection is done: the shutdown waits for it.
    let Stop { stop: mut signal, _drain, sweeper: _ } = stop;
    // Ended with the connection, however this future ends (dropped at shutdown too).
    let _watchdog = AbortOnDrop(tokio::spawn(async move {
        let expired = tokio::select! {
            e = watched.watch(idle, head_limit) => e,
            _ = signal.wait_for(|stopping| *stopping) => conn::Expired::Shutdown,
        };
        let _ = tx.send(expired);
    }));
    let expired = tokio::select! {
        biased;
        res = &mut conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        expired = rx => expired,
    };
    match expired {
        // Finish the request in flight (HTTP/1) or the open streams (HTTP/2, after GOAWAY), then close;
        // an idle connection closes at once. The shutdown deadline bounds the wait.
        Ok(conn::Expired::Shutdown) => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error during shutdown");
            }
        }
        Ok(conn::Expired::Idle) if activity.is_http2() => {
            // No stream is open: GOAWAY, then close (bounded, should the client hold on).
            tracing::debug!("idle HTTP/2 connection closed");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
        Ok(expired) => log_expired(expired),
        Err(_) => {}
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
