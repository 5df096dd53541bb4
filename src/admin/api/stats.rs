//! `/admin/v1/stats`: the live statistics now (with the five-minute series), and their stream over
//! Server-Sent Events (`event: stats` once a second, its series holding only the newest point). Both
//! are `observe::live`'s [`Snapshot`]; client addresses are written as `logging.client_ip` says.

use super::{json, Problem, St, Viewer};
use crate::observe::live::Snapshot;
use crate::pipeline::Shared;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;

/// The statistics now; `full_series`: the whole five-minute ring, else its newest point.
pub fn snapshot(shared: &Shared, full_series: bool) -> Snapshot {
    let privacy = shared.runtime.load().privacy.clone();
    shared.lasting.live.snapshot(&|ip| privacy.client_ip_str(ip), full_series)
}

/// One `event: stats` frame (the JSON is one line: serde_json escapes line breaks in strings).
fn frame(s: &Snapshot) -> Bytes {
    Bytes::from(format!("event: stats\ndata: {}\n\n", serde_json::to_string(s).unwrap_or_default()))
}

/// The live statistics: rates, rejections by type, latency percentiles, authentication failures by
/// method, rate-limit and inspection hits, top principals and client addresses, and per-second points
/// of the last five minutes.
#[utoipa::path(get, path = "/admin/v1/stats", tag = "stats", responses((status = 200, body = Snapshot)))]
pub async fn show(State(state): State<St>, _: Viewer) -> Result<Response, Problem> {
    Ok(json(StatusCode::OK, &snapshot(&state.shared, true)))
}

/// Server-Sent Events: the statistics as `event: stats` once a second (its `series`: the newest point).
#[utoipa::path(get, path = "/admin/v1/stats/stream", tag = "stats",
    responses((status = 200, description = "text/event-stream of `stats` events (Snapshot)", content_type = "text/event-stream")))]
pub async fn stream(State(state): State<St>, _: Viewer) -> Result<Response, Problem> {
    let (tx, resp) = super::events::sse();
    let mut ticks = state.shared.lasting.live.subscribe();
    let shared = state.shared.clone();
    tokio::spawn(async move {
        let first = frame(&snapshot(&shared, false));
        if tx.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err() || tx.send(first).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                changed = ticks.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            if tx.send(frame(&snapshot(&shared, false))).await.is_err() {
                return;
            }
        }
    });
    Ok(resp)
}
