//! The request body as forwarded upstream, with its size limit enforced while streaming: the body is
//! never buffered, and the stream fails with [`BodyTooLarge`] at the first byte past the limit.

use crate::exchange::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit")]
pub struct BodyTooLarge;

pub struct LimitedBody {
    inner: Option<Incoming>,
    /// A body already read in full (routes whose authentication needs it), sent as one frame.
    buffered: Option<Bytes>,
    remaining: u64,
    /// Bytes received so far, shared with the access log record.
    seen: Option<Arc<AtomicU64>>,
    /// The access log's payload summary, fed as the bytes pass.
    tap: Option<crate::observe::payload::SharedTap>,
}

impl LimitedBody {
    pub fn empty() -> Self {
        LimitedBody { inner: None, buffered: None, remaining: 0, seen: None, tap: None }
    }

    /// Feeds `tap` with the bytes as they are sent on.
    pub fn with_tap(mut self, tap: Option<crate::observe::payload::SharedTap>) -> Self {
        self.tap = tap;
        self
    }

    pub fn new(inner: Incoming, limit: u64, seen: Arc<AtomicU64>) -> Self {
        LimitedBody { inner: Some(inner), buffered: None, remaining: limit, seen: Some(seen), tap: None }
    }

    pub fn full(bytes: Bytes) -> Self {
        LimitedBody { inner: None, buffered: (!bytes.is_empty()).then_some(bytes), remaining: 0, seen: None, tap: None }
    }

    /// The whole body, when it was read before forwarding.
    pub fn take_buffered(&mut self) -> Option<Bytes> {
        self.buffered.take()
    }

    /// A second copy of a body that can be sent again (empty or buffered); `None` for a streamed one.
    pub fn replay(&self) -> Option<LimitedBody> {
        match (&self.inner, &self.buffered) {
            (None, Some(b)) => Some(LimitedBody::full(b.clone())),
            (None, None) => Some(LimitedBody::empty()),
            (Some(inner), None) if inner.is_end_stream() => Some(LimitedBody::empty()),
            _ => None,
        }
    }
}

/// Reading the client's body failed (malformed chunked framing, or the client went away mid-body).
#[derive(Debug, thiserror::Error)]
#[error("reading the request body failed: {0}")]
pub struct ClientBodyError(#[source] hyper::Error);

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(bytes) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if let Some(seen) = &this.seen {
                        seen.fetch_add(n, Ordering::Relaxed);
                    }
                    if n > this.remaining {
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= n;
                    if let Some(tap) = &this.tap {
                        crate::observe::payload::feed(tap, data);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.buffered, &self.inner) {
            (Some(b), _) => SizeHint::with_exact(b.len() as u64),
            (None, Some(inner)) => inner.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

/// Reads a whole request body, refusing it past `limit` (413) or when the client stalls (400).
pub async fn read_all(
    body: Incoming,
    limit: u64,
    seen: &AtomicU64,
    timeout: std::time::Duration,
) -> Result<Bytes, crate::exchange::Reject> {
    use crate::exchange::Reject;
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Reject::BadRequest("request body read timed out")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Reject::PayloadTooLarge),
        Ok(Err(_)) => Err(Reject::BadRequest("request body read failed")),
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            seen.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(bytes)
        }
    }
}
