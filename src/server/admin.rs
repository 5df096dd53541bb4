//! The admin listener: HTTP/1.1 only, its own connection limits, the traffic listeners' timeouts, and a
//! back-off on accept errors. What it answers is `crate::admin`'s.

use super::conn::{Activity, ConnLimits, TrackedIo};
use crate::pipeline::Shared;
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
    let ui = Arc::new(crate::admin::ui::Ui::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                super::accept_failed(&e).await;
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
                shared.lasting.metrics.connection_refused(reason);
                tracing::debug!(client_ip = %peer.ip(), reason, listener = "admin", "connection refused");
                continue;
            }
        };
        let shared = shared.clone();
        let ui = ui.clone();
        tokio::spawn(async move {
            let activity = Arc::new(Activity::default());
            let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
            let service = service_fn(move |req| {
                let (shared, ui) = (shared.clone(), ui.clone());
                async move { Ok::<_, Infallible>(crate::admin::handle(shared, &ui, req, peer).await) }
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
