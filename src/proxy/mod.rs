//! Forwarding to upstreams: target choice, pooled HTTP/1.1 connections (plain or TLS, optionally with a
//! client certificate), connect and response timeouts, retries of idempotent requests whose connection
//! failed, and the streamed response body that returns its connection to the pool when it ends.
//!
//! Failures are classified by source: cannot connect → 502 (504 on connect timeout), no response in
//! time → 504, broken response → 502, no available target → 503. A request body over its limit while
//! streaming → 413.

pub mod client_ip;
pub mod h1;
pub mod headers;
pub mod health;
pub mod section;
pub mod upstream;

use crate::exchange::Reject;
use crate::validate::body::LimitedBody;
use bytes::Bytes;
use h1::Conn;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Response};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
pub use upstream::{Target, Upstream};

#[derive(Debug)]
enum ConnectError {
    Timeout,
    Failed,
}

/// Opens a new connection to `target` (TCP, then TLS when the upstream has it).
async fn connect(upstream: &Upstream, target: &Target) -> Result<Conn, ConnectError> {
    let fut = async {
        let tcp = TcpStream::connect(target.address.as_str()).await.map_err(|_| ConnectError::Failed)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn h1::Io> = match &upstream.tls {
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
        Ok(Conn::new(io))
    };
    tokio::time::timeout(upstream.connect_timeout, fut).await.map_err(|_| ConnectError::Timeout)?
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// How many times a request is sent again because a pooled connection turned out to be closed.
const MAX_STALE: u32 = 3;

/// A request on its way upstream, less its body: method, origin-form target, the client's (hygienic)
/// header fields and the gateway's own.
pub struct Outgoing {
    pub method: Method,
    pub target: PathAndQuery,
    pub headers: HeaderMap,
    pub added: headers::Added,
}

/// Sends `out` with `body` to a target of `upstream`. Returns the response and the time spent upstream.
/// Takes the request by reference: the future stays small (it is moved into its caller's).
pub async fn forward(
    upstream: &Upstream,
    out: &Outgoing,
    mut body: LimitedBody,
) -> Result<(Response<UpstreamBody>, Duration), Reject> {
    let started = Instant::now();
    let retry_ok = idempotent(&out.method);
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
        let pooled = target.checkout(upstream.pool_idle_timeout, started);
        let from_pool = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            // Boxed: a new connection (TCP, TLS) is a large future that the pooled path, every
            // request's, should not carry.
            None => match Box::pin(connect(upstream, target)).await {
                Ok(c) => {
                    target.connect_succeeded();
                    c
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
        let replay = if from_pool { body.replay() } else { None };
        // From the request's start (a clock read saved), which also bounds retries on stale connections.
        let deadline = (started + upstream.response_timeout).into();
        let exchange = conn.exchange_until(deadline, out, &mut body);
        match exchange.await {
            None => return Err(Reject::GatewayTimeout("upstream response timeout")),
            Some(Ok(head)) => {
                let elapsed = started.elapsed();
                let checkin = Checkin { target: target.clone(), max_idle: upstream.max_idle };
                let inner = h1::ResponseBody::new(conn, &head, checkin);
                let mut resp = Response::new(UpstreamBody { inner, _outstanding: outstanding });
                *resp.status_mut() = head.status;
                *resp.headers_mut() = head.headers;
                return Ok((resp, elapsed));
            }
            Some(Err(h1::Error::Closed { sent })) if from_pool && (retry_ok || !sent) && stale < MAX_STALE => {
                // A pooled connection the upstream had closed: the request did not get through.
                if let Some(again) = replay {
                    body = again;
                    stale += 1;
                    continue;
                }
                tracing::warn!(upstream = &*upstream.name, address = %target.address, "pooled upstream connection closed under a streamed request");
                return Err(Reject::BadGateway("upstream request failed"));
            }
            Some(Err(h1::Error::BodyTooLarge)) => return Err(Reject::PayloadTooLarge),
            Some(Err(h1::Error::ClientBody)) => {
                // The client's body was malformed (bad chunk framing) or cut off: its fault, not the
                // upstream's.
                tracing::debug!(upstream = &*upstream.name, "request body failed while forwarding");
                return Err(Reject::BadRequest("malformed or incomplete request body"));
            }
            Some(Err(e)) => {
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

/// Returns a connection whose response was read to the end to its target's pool.
pub struct Checkin {
    target: Arc<Target>,
    max_idle: usize,
}

impl h1::Release for Checkin {
    fn release(self, conn: Conn) {
        self.target.checkin(conn, self.max_idle);
    }
}

/// An upstream response body, read from its connection as the client takes it. When it has been read
/// to the end, its connection goes back to the pool; if it is dropped early, the connection is closed
/// instead (never reused mid-message).
pub struct UpstreamBody {
    inner: h1::ResponseBody<Checkin>,
    _outstanding: Outstanding,
}

/// What a trace records of a [`forward`]: the target that answered (or the only one, when the call
/// failed) and its status, or why the call failed.
pub fn outcome<'a>(
    upstream: &'a Upstream,
    forwarded: &'a Result<(Response<UpstreamBody>, Duration), Reject>,
) -> (Option<&'a str>, Result<u16, &'static str>) {
    match forwarded {
        Ok((resp, _)) => (Some(resp.body()._outstanding.0.address.as_str()), Ok(resp.status().as_u16())),
        Err(reject) => {
            let only = match upstream.targets.as_slice() {
                [one] => Some(one.address.as_str()),
                _ => None,
            };
            (only, Err(reject.kind().0))
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = crate::exchange::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
        let mut conn = connect(upstream, target).await.ok()?;
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, http::HeaderValue::from_str(&target.address).ok()?);
        headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static("portcullis-health-check"));
        let out =
            Outgoing { method: Method::GET, target: path.parse().ok()?, headers, added: headers::Added::default() };
        let head = conn.exchange(&out, &mut LimitedBody::empty()).await.ok()?;
        Some(head.status.is_success())
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)))
}
