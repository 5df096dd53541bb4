//! `/admin/v1/events`: the last security events (newest first, filtered), and their live stream over
//! Server-Sent Events.

use super::{cursor_of, json, Problem, Query, St, Viewer};
use crate::events::{Event, Kind, Severity};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// An event kind, e.g. `authn.failure` (repeat-free: one kind).
    pub kind: Option<String>,
    /// The lowest severity: `info`, `low`, `medium`, `high` or `critical`.
    pub severity: Option<String>,
    pub principal: Option<String>,
    pub client_ip: Option<String>,
    pub route: Option<String>,
    /// 1 to 500 (default 100); lists only.
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`; lists only.
    pub cursor: Option<String>,
}

/// A compiled filter.
struct Keep {
    kind: Option<Kind>,
    severity: Option<Severity>,
    principal: Option<String>,
    client_ip: Option<String>,
    route: Option<String>,
}

fn severity(s: &str) -> Option<Severity> {
    [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical]
        .into_iter()
        .find(|v| v.as_str() == s)
}

impl Keep {
    fn new(f: &Filter) -> Result<Keep, Problem> {
        let kind = f
            .kind
            .as_deref()
            .map(|k| Kind::parse(k).ok_or_else(|| Problem::bad_request(format!("`{k}` is not an event kind"))))
            .transpose()?;
        let severity = f
            .severity
            .as_deref()
            .map(|s| {
                severity(s).ok_or_else(|| Problem::bad_request("`severity` is info, low, medium, high or critical"))
            })
            .transpose()?;
        Ok(Keep {
            kind,
            severity,
            principal: f.principal.clone(),
            client_ip: f.client_ip.clone(),
            route: f.route.clone(),
        })
    }

    fn keeps(&self, e: &Event) -> bool {
        self.kind.is_none_or(|k| e.kind == k)
            && self.severity.is_none_or(|s| e.severity >= s)
            && self.principal.as_ref().is_none_or(|p| e.principal.as_deref() == Some(p.as_str()))
            && self.client_ip.as_ref().is_none_or(|ip| e.client_ip.is_some_and(|c| c.to_string() == *ip))
            && self.route.as_ref().is_none_or(|r| e.route.as_deref() == Some(r.as_str()))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Events as the SIEM exporters' JSON, newest first; `seq` is their order of arrival.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

fn with_seq(seq: u64, e: &Event) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("seq".into(), seq.into());
    }
    v
}

/// The last security events, newest first.
#[utoipa::path(get, path = "/admin/v1/events", tag = "events", params(Filter), responses((status = 200, body = EventPage)))]
pub async fn list(State(state): State<St>, _: Viewer, Query(f): Query<Filter>) -> Result<Response, Problem> {
    let keep = Keep::new(&f)?;
    let p = super::PageParams { limit: f.limit, cursor: f.cursor.clone() };
    let limit = p.limit()?;
    let before = p.after()?.map(|c| c.parse::<u64>().map_err(|_| Problem::bad_request("bad cursor"))).transpose()?;
    let recent = state.shared.lasting.events.recent();
    let mut got = recent.page(before, limit + 1, |e| keep.keeps(e));
    let next = (got.len() > limit).then(|| cursor_of(&got[limit - 1].0.to_string()));
    got.truncate(limit);
    let items = got.iter().map(|(s, e)| with_seq(*s, e)).collect();
    Ok(json(StatusCode::OK, &EventPage { items, next_cursor: next }))
}

/// Server-Sent Events: each new security event as `event: security` (same filters as the list).
#[utoipa::path(get, path = "/admin/v1/events/stream", tag = "events", params(Filter),
    responses((status = 200, description = "text/event-stream of security events", content_type = "text/event-stream")))]
pub async fn stream(State(state): State<St>, _: Viewer, Query(f): Query<Filter>) -> Result<Response, Problem> {
    let keep = Keep::new(&f)?;
    let mut rx = state.shared.lasting.events.recent().subscribe();
    let (tx, resp) = sse();
    tokio::spawn(async move {
        if tx.send(Bytes::from_static(b": portcullis events\n\n")).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
        tick.reset();
        loop {
            let frame = tokio::select! {
                got = rx.recv() => match got {
                    Ok((seq, e)) if keep.keeps(&e) => {
                        format!("id: {seq}\nevent: security\ndata: {}\n\n", with_seq(seq, &e))
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => ": keep-alive\n\n".to_owned(),
                _ = tx.closed() => return,
            };
            if tx.send(Bytes::from(frame)).await.is_err() {
                return;
            }
        }
    });
    Ok(resp)
}

/// The body of a Server-Sent Events answer: what the sender sends, until it is dropped.
struct SseBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A `text/event-stream` answer and the sender of its events (the stream ends when the sender is
/// dropped; the sender sees `closed()` when the client went away).
pub fn sse() -> (tokio::sync::mpsc::Sender<Bytes>, Response) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut resp = Response::new(axum::body::Body::new(SseBody(rx)));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (tx, resp)
}
