//! The response body type served to clients: a fixed buffer, nothing, or a streamed upstream body.
//!
//! An enum rather than a boxed trait object, so the common cases cost no allocation. It also carries the
//! request's [`Completion`]: when hyper drops the body (fully sent, or the client went away) the access
//! log line and metrics are written with the real byte count and duration.

use crate::observe::Completion;
use crate::proxy::UpstreamBody;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub use crate::exchange::BoxError;

/// What holds a request as in flight on its connection until its response body is done (the server's
/// connection activity). A trait, so the body needs nothing of the server.
pub trait InFlight: Send + Sync {
    /// The response body was sent whole, or dropped.
    fn responded(&self);
}

/// Keeps the request counted as in flight until dropped with the body.
pub struct Responding(std::sync::Arc<dyn InFlight>);

impl Responding {
    pub fn new(on: std::sync::Arc<dyn InFlight>) -> Responding {
        Responding(on)
    }
}

impl Drop for Responding {
    fn drop(&mut self) {
        self.0.responded();
    }
}

pub struct ResponseBody {
    kind: Kind,
    completion: Option<Box<Completion>>,
    /// Keeps the request counted as in flight on its connection until the body is done.
    responding: Option<Responding>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

impl ResponseBody {
    pub fn empty() -> Self {
        ResponseBody { kind: Kind::Empty, completion: None, responding: None }
    }

    pub fn full(bytes: Bytes) -> Self {
        ResponseBody { kind: Kind::Full(Some(bytes)), completion: None, responding: None }
    }

    pub fn upstream(body: UpstreamBody) -> Self {
        ResponseBody { kind: Kind::Upstream(body), completion: None, responding: None }
    }

    pub fn set_completion(&mut self, completion: Box<Completion>) {
        self.completion = Some(completion);
    }

    pub fn set_responding(&mut self, guard: Responding) {
        self.responding = Some(guard);
    }

    /// The answer to a `HEAD` request: the same head (with the length the body would have had), no
    /// body. hyper drops bodies of HEAD responses over HTTP/1 by itself, but over HTTP/2 it would send
    /// them as DATA frames, which ends the stream with PROTOCOL_ERROR at the client. Only the
    /// gateway's own bodies are dropped here; an upstream's answer to HEAD has none to begin with.
    /// Returns the dropped body's length.
    pub fn drop_for_head(&mut self) -> Option<u64> {
        match &mut self.kind {
            Kind::Full(data) => {
                let n = data.take().map_or(0, |d| d.len() as u64);
                self.kind = Kind::Empty;
                Some(n)
            }
            Kind::Empty | Kind::Upstream(_) => None,
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(c) = self.completion.as_mut() {
            c.bytes_out += n as u64;
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                let n = d.len();
                this.count(n);
            }
        }
        if let Poll::Ready(Some(Err(_))) = &polled {
            if let Some(c) = this.completion.as_mut() {
                c.aborted = true;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(d) => d.is_none(),
            Kind::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Upstream(b) => b.size_hint(),
        }
    }
}
