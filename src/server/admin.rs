//! The admin listener: HTTP/1.1 only, its own connection limits, the traffic listeners' timeouts, and a
//! back-off on accept errors. What it answers is `crate::admin`'s.

use super::conn::{Activity, ConnLimits, TrackedIo};
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
pub async fn serve(listener: TcpListener, state: crate::admin::Listener) {
    let shared = state.state.shared.clone();
    let limits = Arc::new(ConnLimits::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                super::accept_failed(&e).await;
                continue;
            }
        };
        let (header_timeout, idle, v6_prefix, tls, certs) = {
            let rt = shared.runtime.load();
            let admin = rt.admin.as_ref();
            (
                rt.limits.header_read_timeout,
                rt.limits.idle_timeout,
                rt.limits.connection_ipv6_prefix,
                admin.and_then(|a| a.tls.clone()),
                admin.and_then(|a| a.certificates.clone()),
            )
        };
        let guard = match limits.try_acquire(peer.ip(), v6_prefix, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP) {
            Ok(g) => g,
            Err(reason) => {
                shared.lasting.metrics.connection_refused(reason);
                tracing::debug!(client_ip = %peer.ip(), reason, listener = "admin", "connection refused");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::default());
            let io = TrackedIo::new(stream, activity.clone());
            let Some(tls) = tls else {
                let peer = crate::admin::Peer { client_ip: Some(peer.ip()), ..crate::admin::Peer::default() };
                serve_connection(io, state, peer, header_timeout, idle, activity).await;
                drop(guard);
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(io)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client_ip = %peer.ip(), error = %e, listener = "admin", "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client_ip = %peer.ip(), listener = "admin", "TLS handshake timed out");
                    return;
                }
            };
            let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
            let certificate = match (leaf, certs) {
                (Some(der), Some((auth, roles))) => match auth.identity(&der) {
                    Ok(id) => roles
                        .get(&id)
                        .and_then(|r| crate::admin::auth::Role::parse(r))
                        .map(|role| crate::admin::auth::Caller { id: format!("mtls:{id}"), role }),
                    Err(reason) => {
                        tracing::debug!(client_ip = %peer.ip(), reason, listener = "admin", "client certificate names no admin");
                        None
                    }
                },
                _ => None,
            };
            let peer = crate::admin::Peer { certificate, tls: true, client_ip: Some(peer.ip()) };
            serve_connection(stream, state, peer, header_timeout, idle, activity).await;
            drop(guard);
        });
    }
}

/// Serves one admin connection (plain or TLS) until it closes or idles out.
async fn serve_connection<I>(
    io: I,
    state: crate::admin::Listener,
    peer: crate::admin::Peer,
    header_timeout: std::time::Duration,
    idle: std::time::Duration,
    activity: Arc<Activity>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let service = service_fn(move |req| {
        let (state, peer) = (state.clone(), peer.clone());
        async move { Ok::<_, Infallible>(crate::admin::respond(&state, req, &peer).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = activity.watch(idle, None) => tracing::debug!(listener = "admin", "idle connection closed"),
    }
}
