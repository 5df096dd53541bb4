//! Forwarding to upstreams: target choice, pooled HTTP/1.1 connections (plain or TLS, optionally with a
//! client certificate), connect and response timeouts, retries of idempotent requests whose connection
//! failed, and the streamed response body that returns its connection to the pool when it ends.
//!
//! Failures are classified by source: cannot connect → 502 (504 on connect timeout), no response in
//! time → 504, broken response → 502, no available target → 503. A request body over its limit while
//! streaming → 413.

pub mod headers;
pub mod health;
pub mod upstream;

use crate::respond::problem::Reject;
use crate::validate::body::{is_client_body_error, is_too_large, LimitedBody};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
pub use upstream::{Sender, Target, Upstream};

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

#[derive(Debug)]
enum ConnectError {
    Timeout,
    Failed,
}

/// Opens a new connection to `target` and starts its HTTP/1.1 client task.
async fn connect(upstream: &Upstream, target: &Target) -> Result<Sender, ConnectError> {
    let fut = async {
        let tcp = TcpStream::connect(target.address.as_str()).await.map_err(|_| ConnectError::Failed)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &upstream.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = match &tls.server_name {
                    Some(n) => n.clone(),
                    None => {
                        rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|_| ConnectError::Failed)?
                    }
                };
                let stream = tls.connector.connect(name, tcp).await.map_err(|e| {
                    tracing::warn!(upstream = &*upstream.name, address = %target.address, error = %e, "upstream TLS handshake failed");
                    ConnectError::Failed
                })?;
                Box::new(stream)
            }
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, LimitedBody>(TokioIo::new(io))
            .await
            .map_err(|_| ConnectError::Failed)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    };
    tokio::time::timeout(upstream.connect_timeout, fut).await.map_err(|_| ConnectError::Timeout)?
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Sends `req` to a target of `upstream`. Returns the response, the time spent upstream and its target.
pub async fn forward(
    upstream: &Upstream,
    mut req: Request<LimitedBody>,
) -> Result<(Response<UpstreamBody>, Duration), Reject> {
    let started = Instant::now();
    let retry_ok = idempotent(req.method());
    let mut exclude = None;
    let mut attempts = 0;
    let mut stale = 0;
    // When a retry finds no other target, the client hears why the last attempt failed (502/504), not
    // that the pool is empty (503): the target that failed is still in rotation.
    let mut failed: Option<Reject> = None;
    loop {
        let Some(idx) = upstream.pick(exclude) else {
            return Err(failed.unwrap_or(Reject::NoHealthyUpstream));
        };
        let target = &upstream.targets[idx];
        let outstanding = Outstanding::new(target.clone());
        let pooled = target.checkout(upstream.pool_idle_timeout);
        let from_pool = pooled.is_some();
        let mut sender = match pooled {
            Some(s) => s,
            // Boxed: a new connection (TCP, TLS, handshake) is a large future that the pooled path,
            // every request's, should not carry.
            None => match Box::pin(connect(upstream, target)).await {
                Ok(s) => {
                    target.connect_succeeded();
                    s
                }
                Err(e) => {
                    target.connect_failed(&upstream.passive);
                    tracing::warn!(upstream = &*upstream.name, address = %target.address, error = ?e, "upstream connect failed");
                    let reject = match e {
                        ConnectError::Timeout => Reject::GatewayTimeout("upstream connect timeout"),
                        ConnectError::Failed => Reject::BadGateway("upstream connect failed"),
                    };
                    if retry_ok && attempts < upstream.retries {
                        attempts += 1;
                        exclude = Some(idx);
                        failed = Some(reject);
                        continue;
                    }
                    return Err(reject);
                }
            },
        };
        if sender.ready().await.is_err() {
            // A pooled connection closed under us: nothing was sent, try another.
            stale += 1;
            if stale > 3 {
                return Err(Reject::BadGateway("upstream connections closing"));
            }
            continue;
        }
        let send = sender.try_send_request(req);
        match tokio::time::timeout(upstream.response_timeout, send).await {
            Err(_) => return Err(Reject::GatewayTimeout("upstream response timeout")),
            Ok(Ok(resp)) => {
                let elapsed = started.elapsed();
                let ret = Checkin { sender, target: target.clone(), max_idle: upstream.max_idle };
                return Ok((resp.map(|b| UpstreamBody::new(b, ret, outstanding)), elapsed));
            }
            Ok(Err(mut err)) => {
                if let Some(back) = err.take_message() {
                    // Never sent (the pooled connection was closed by the upstream): safe to resend.
                    req = back;
                    stale += 1;
                    if from_pool && stale <= 3 {
                        continue;
                    }
                }
                let e = err.into_error();
                if is_too_large(&e) {
                    return Err(Reject::PayloadTooLarge);
                }
                if is_client_body_error(&e) {
                    // The client's body was malformed (bad chunk framing) or cut off: its fault, not the
                    // upstream's.
                    tracing::debug!(upstream = &*upstream.name, error = %e, "request body failed while forwarding");
                    return Err(Reject::BadRequest("malformed or incomplete request body"));
                }
                tracing::warn!(upstream = &*upstream.name, address = %target.address, error = %e, "upstream request failed");
                return Err(Reject::BadGateway("upstream request failed"));
            }
        }
    }
}

/// Counts a request against its target until the response body is finished (least-request balancing).
pub struct Outstanding(Arc<Target>);

impl Outstanding {
    fn new(t: Arc<Target>) -> Self {
        t.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(t)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Checkin {
    sender: Sender,
    target: Arc<Target>,
    max_idle: usize,
}

/// An upstream response body. When it has been read to the end, its connection goes back to the pool;
/// if it is dropped early, the connection is closed instead (never reused mid-message).
pub struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
    _outstanding: Outstanding,
}

impl UpstreamBody {
    fn new(inner: Incoming, checkin: Checkin, outstanding: Outstanding) -> Self {
        let mut body = UpstreamBody { inner, checkin: Some(checkin), _outstanding: outstanding };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(c) = self.checkin.take() {
            c.target.checkin(c.sender, c.max_idle);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.checkin = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A GET to a target for health checking: 2xx within `timeout` is healthy. Uses its own connection.
pub async fn probe(upstream: &Upstream, target: &Target, path: &str, timeout: Duration) -> bool {
    let fut = async {
        let mut sender = connect(upstream, target).await.ok()?;
        let req = Request::get(path)
            .header(http::header::HOST, target.host.as_str())
            .header(http::header::USER_AGENT, "portcullis-health-check")
            .body(LimitedBody::empty())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status().is_success())
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)))
}
