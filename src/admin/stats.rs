//! `GET /admin/v1/stats` (the live statistics now, with the five-minute series) and
//! `GET /admin/v1/stats/stream` (Server-Sent Events: `event: stats` once a second, its series holding
//! only the newest point). Both are `observe::live`'s [`Snapshot`]; client addresses are written as
//! `logging.client_ip` says.

use crate::observe::live::Snapshot;
use crate::pipeline::Shared;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The statistics now; `full_series`: the whole five-minute ring, else its newest point.
pub fn snapshot(shared: &Shared, full_series: bool) -> Snapshot {
    let privacy = shared.runtime.load().privacy.clone();
    shared.lasting.live.snapshot(&|ip| privacy.client_ip_str(ip), full_series)
}

/// The JSON of `GET /admin/v1/stats`.
pub fn json(shared: &Shared) -> String {
    serde_json::to_string(&snapshot(shared, true)).unwrap_or_default()
}

/// One Server-Sent Events frame.
pub fn frame(event: &str, data: &str) -> Bytes {
    // `data` is JSON on one line: serde_json escapes line breaks inside strings.
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The body of `GET /admin/v1/stats/stream`: a task sends a frame after each tick of the live
/// statistics, and ends when the client goes away.
pub fn stream(shared: Arc<Shared>) -> SseBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let mut ticks = shared.lasting.live.subscribe();
    tokio::spawn(async move {
        let first = frame("stats", &serde_json::to_string(&snapshot(&shared, false)).unwrap_or_default());
        if tx.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err() || tx.send(first).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                changed = ticks.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            let data = serde_json::to_string(&snapshot(&shared, false)).unwrap_or_default();
            if tx.send(frame("stats", &data)).await.is_err() {
                return;
            }
        }
    });
    SseBody(rx)
}

/// A response body fed from a channel of frames (`text/event-stream`).
pub struct SseBody(tokio::sync::mpsc::Receiver<Bytes>);

impl SseBody {
    /// A body that sends what arrives on `rx` until its senders are gone.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> SseBody {
        SseBody(rx)
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
