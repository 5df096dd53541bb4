//! The OTLP/HTTP exporter: finished traces wait in a queue bounded in spans, one background thread
//! (its own single-threaded tokio runtime, never the proxy's workers) turns them into an
//! `ExportTraceServiceRequest`, encodes it with prost and POSTs it to `{endpoint}/v1/traces` as
//! `application/x-protobuf` over hyper's HTTP/1.1 client, in batches of at most `batch` spans or every
//! `flush_interval`. A full queue drops the new spans; a failed export is retried twice (with
//! backoff and jitter) and then dropped. Every span is counted once as sent or dropped
//! (`portcullis_exporter_events_total{exporter="otlp"}`), and each retry as retried.

use super::context::{SpanId, TraceId};
use super::TracesConfig;
use crate::exchange::Place;
use crate::observe::metrics::Metrics;
use crate::observe::privacy::Privacy;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode as Code, ResourceSpans, ScopeSpans, Span, Status,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

const EXPORTER: &str = "otlp";
/// Export attempts after the first one fails.
const RETRIES: u32 = 2;

/// A stage of the chain: its place, its span id, and its times from the request's start.
pub(super) struct StageSpan {
    pub(super) place: Place,
    pub(super) span_id: SpanId,
    pub(super) start: Duration,
    pub(super) end: Duration,
    pub(super) refused: bool,
}

/// The upstream call.
pub(super) struct ClientSpan {
    pub(super) span_id: SpanId,
    pub(super) start: Duration,
    pub(super) end: Duration,
    pub(super) upstream: Option<Arc<str>>,
    /// The target that answered, `host:port`.
    pub(super) address: Option<Box<str>>,
    /// Its status, or why the call failed.
    pub(super) outcome: Result<u16, &'static str>,
}

/// A sampled request's trace, handed over when its answer is known. Turned into OTLP spans on the
/// exporter's thread, not the worker's.
pub(super) struct Finished {
    pub(super) trace_id: TraceId,
    pub(super) span_id: SpanId,
    pub(super) parent_span: Option<SpanId>,
    pub(super) state: Option<HeaderValue>,
    pub(super) start_unix_ns: u64,
    pub(super) end: Duration,
    pub(super) method: Method,
    pub(super) scheme: &'static str,
    pub(super) version: &'static str,
    pub(super) path: Box<str>,
    pub(super) route: Option<Arc<str>>,
    pub(super) status: u16,
    pub(super) problem: Option<&'static str>,
    pub(super) refused_at: Option<Place>,
    pub(super) client_ip: IpAddr,
    pub(super) host: Option<HeaderValue>,
    pub(super) request_id: Box<str>,
    pub(super) stages: Vec<StageSpan>,
    pub(super) upstream: Option<ClientSpan>,
    pub(super) privacy: Arc<Privacy>,
}

impl Finished {
    fn span_count(&self) -> usize {
        1 + self.stages.len() + usize::from(self.upstream.is_some())
    }
}

struct Counters {
    sent: Counter,
    retried: Counter,
    dropped: Counter,
    depth: Gauge,
}

/// The producer side, shared by every tracer of one configuration. Dropping it ends the thread once
/// what is queued has been sent.
pub(super) struct Exporter {
    tx: UnboundedSender<Finished>,
    /// Spans offered and not yet sent or dropped (queued, batched or in flight).
    queued: Arc<AtomicUsize>,
    bound: usize,
    batch: usize,
    /// Wakes the exporter when a batch's worth is queued.
    nudge: Arc<Notify>,
    counters: Arc<Counters>,
}

impl Exporter {
    pub(super) fn spawn(cfg: &TracesConfig, metrics: &Metrics) -> Result<Exporter, String> {
        let endpoint = Endpoint::parse(&cfg.endpoint)?;
        let counters = Arc::new(Counters {
            sent: metrics.exporter_events(EXPORTER, "sent"),
            retried: metrics.exporter_events(EXPORTER, "retried"),
            dropped: metrics.exporter_dropped(EXPORTER),
            depth: metrics.exporter_queue_depth(EXPORTER),
        });
        let (tx, rx) = unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let nudge = Arc::new(Notify::new());
        let worker = Worker {
            rx,
            nudge: nudge.clone(),
            queued: queued.clone(),
            counters: counters.clone(),
            batch: cfg.batch,
            flush_interval: cfg.flush_interval.0,
            resource: resource(&cfg.service_name),
            client: Client { endpoint, timeout: cfg.timeout.0, conn: None },
            failing: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("traces: cannot start the exporter: {e}"))?;
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || runtime.block_on(worker.run()))
            .map_err(|e| format!("traces: cannot start the exporter: {e}"))?;
        Ok(Exporter { tx, queued, bound: cfg.queue, batch: cfg.batch, nudge, counters })
    }

    /// Queues a trace's spans, or drops and counts them when the queue is full. Never waits.
    pub(super) fn offer(&self, finished: Finished) {
        let n = finished.span_count();
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.bound {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.counters.dropped.inc_by(n as u64);
            return;
        }
        if self.tx.send(finished).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.counters.dropped.inc_by(n as u64);
        } else if before < self.batch && before + n >= self.batch {
            self.nudge.notify_one();
        }
    }
}

/// The exporter's thread: batches, encodes and sends.
struct Worker {
    rx: UnboundedReceiver<Finished>,
    nudge: Arc<Notify>,
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    batch: usize,
    flush_interval: Duration,
    resource: Resource,
    client: Client,
    /// The last export failed (for logging only the change).
    failing: bool,
}

impl Worker {
    /// Waits for a batch's worth of spans (a producer's nudge) or the flush interval, then takes what
    /// is queued. Producers never wake this thread per trace: on a busy gateway that would cost a
    /// context switch per request.
    async fn run(mut self) {
        let mut spans: Vec<Span> = Vec::new();
        loop {
            if self.queued.load(Ordering::Relaxed) < self.batch {
                let _ = tokio::time::timeout(self.flush_interval, self.nudge.notified()).await;
            }
            loop {
                match self.rx.try_recv() {
                    Ok(finished) => {
                        to_spans(finished, &mut spans);
                        if spans.len() >= self.batch {
                            self.export(&mut spans).await;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    // Every producer is gone (a reload replaced this exporter, or shutdown).
                    Err(TryRecvError::Disconnected) => {
                        self.export(&mut spans).await;
                        return;
                    }
                }
            }
            self.export(&mut spans).await;
            self.depth();
        }
    }

    fn depth(&self) {
        self.counters.depth.set(i64::try_from(self.queued.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    }

    /// Sends `spans` (retrying a failure twice), then counts them as sent or dropped.
    async fn export(&mut self, spans: &mut Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        let n = spans.len();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: std::mem::take(spans),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let body = Bytes::from(request.encode_to_vec());
        drop(request);
        let mut attempt = 0;
        let result = loop {
            match self.client.post(body.clone()).await {
                Ok(status) if status.is_success() => break Ok(()),
                Ok(status) if !retryable(status) => break Err(format!("the collector answered {status}")),
                failed if attempt < RETRIES => {
                    tracing::debug!(exporter = EXPORTER, attempt, error = ?failed.err(), "trace export failed; retrying");
                    self.counters.retried.inc_by(n as u64);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Ok(status) => break Err(format!("the collector answered {status}")),
                Err(e) => break Err(e),
            }
        };
        // One warning when exports start failing and one line when they work again, not one per batch.
        match result {
            Ok(()) => {
                self.counters.sent.inc_by(n as u64);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(exporter = EXPORTER, "trace export works again");
                }
            }
            Err(error) => {
                self.counters.dropped.inc_by(n as u64);
                if std::mem::replace(&mut self.failing, true) {
                    tracing::debug!(exporter = EXPORTER, spans = n, error, "trace export failed; spans dropped");
                } else {
                    tracing::warn!(exporter = EXPORTER, spans = n, error, "trace export failed; spans dropped");
                }
            }
        }
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.depth();
    }
}

fn retryable(status: StatusCode) -> bool {
    // The statuses OTLP/HTTP names as retryable.
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// 200 ms, then 400 ms, each with up to half again of jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64 << attempt.min(4);
    Duration::from_millis(base + fastrand::u64(0..=base / 2))
}

/// Where spans go: `http://HOST[:PORT][/BASE]` → `POST /BASE/v1/traces`.
struct Endpoint {
    host: String,
    port: u16,
    authority: HeaderValue,
    path: String,
}

impl Endpoint {
    fn parse(text: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("traces.endpoint `{text}`: {why}");
        let uri: http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad("only http:// is supported; run the collector (or an agent) beside the gateway"))
            }
            _ => return Err(bad("write it as http://HOST:PORT")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let path = format!("{}/v1/traces", uri.path().trim_end_matches('/'));
        let authority = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?;
        Ok(Endpoint { host, port, authority, path })
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One kept-alive HTTP/1.1 connection to the collector, made again when it breaks.
struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    conn: Option<Sender>,
}

impl Client {
    async fn post(&mut self, body: Bytes) -> Result<StatusCode, String> {
        match tokio::time::timeout(self.timeout, self.send(body)).await {
            Ok(result) => result,
            Err(_) => {
                self.conn = None;
                Err("timed out".into())
            }
        }
    }

    async fn send(&mut self, body: Bytes) -> Result<StatusCode, String> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = Request::post(self.endpoint.path.as_str())
            .header(http::header::HOST, self.endpoint.authority.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the answer to its end (bounded) so the connection can carry the next batch.
        if http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await.is_ok() {
            self.conn = Some(sender);
        }
        Ok(status)
    }

    async fn connect(&self) -> Result<Sender, String> {
        let tcp = tokio::net::TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

fn resource(service_name: &str) -> Resource {
    Resource { attributes: vec![kv("service.name", service_name.to_owned())], ..Default::default() }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "portcullis".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }
}

fn kv(key: &str, value: impl Into<Val>) -> KeyValue {
    let value = match value.into() {
        Val::S(s) => any_value::Value::StringValue(s),
        Val::I(i) => any_value::Value::IntValue(i),
        Val::B(b) => any_value::Value::BoolValue(b),
    };
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

enum Val {
    S(String),
    I(i64),
    B(bool),
}

impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::S(s)
    }
}
impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::S(s.to_owned())
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Val {
        Val::I(i)
    }
}
impl From<bool> for Val {
    fn from(b: bool) -> Val {
        Val::B(b)
    }
}

fn status(error: Option<&str>) -> Option<Status> {
    error.map(|m| Status { message: m.into(), code: Code::Error as i32 })
}

/// `host[:port]` split for `server.address` and `server.port`.
fn split_host(hostport: &str) -> (&str, Option<i64>) {
    let port = |p: &str| p.parse::<u16>().ok().map(i64::from);
    if let Some(rest) = hostport.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(port)),
            None => (hostport, None),
        };
    }
    match hostport.split_once(':') {
        Some((host, p)) if !p.contains(':') => (host, port(p)),
        _ => (hostport, None),
    }
}

/// The request's spans: the server span, one per stage of the chain, and the upstream call.
fn to_spans(f: Finished, out: &mut Vec<Span>) {
    let at = |d: Duration| f.start_unix_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let trace_id = f.trace_id.to_vec();
    let server_id = f.span_id.to_vec();
    let trace_state = f.state.as_ref().and_then(|s| s.to_str().ok()).unwrap_or_default().to_owned();
    let method = f.method.as_str();
    let mut attributes = vec![
        kv("http.request.method", method),
        kv("url.path", &*f.path),
        kv("url.scheme", f.scheme),
        kv("network.protocol.version", f.version),
        kv("http.response.status_code", i64::from(f.status)),
        kv("portcullis.request_id", &*f.request_id),
    ];
    if let Some(route) = &f.route {
        attributes.push(kv("http.route", &**route));
    }
    match f.privacy.client_ip(f.client_ip) {
        (Some(ip), _) => attributes.push(kv("client.address", ip.to_string())),
        (None, Some(hash)) => attributes.push(kv("portcullis.client_ip_hash", &*hash)),
        (None, None) => {}
    }
    if let Some(host) = f.host.as_ref().and_then(|h| h.to_str().ok()) {
        let (host, port) = split_host(host);
        attributes.push(kv("server.address", host));
        if let Some(port) = port {
            attributes.push(kv("server.port", port));
        }
    }
    if let Some(problem) = f.problem {
        attributes.push(kv("portcullis.problem", problem));
    }
    if let Some(place) = f.refused_at {
        attributes.push(kv("portcullis.refused_at", place.as_str()));
    }
    let name = match &f.route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let server_error = (f.status >= 500).then(|| f.problem.unwrap_or("server error"));
    out.push(Span {
        trace_id: trace_id.clone(),
        span_id: server_id.clone(),
        trace_state: trace_state.clone(),
        parent_span_id: f.parent_span.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 1,
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: f.start_unix_ns,
        end_time_unix_nano: at(f.end),
        attributes,
        status: status(server_error),
        ..Default::default()
    });
    for stage in &f.stages {
        let mut attributes = Vec::new();
        if stage.refused {
            attributes.push(kv("portcullis.refused", true));
            if let Some(problem) = f.problem {
                attributes.push(kv("portcullis.problem", problem));
            }
        }
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id: stage.span_id.to_vec(),
            trace_state: trace_state.clone(),
            parent_span_id: server_id.clone(),
            flags: 1,
            name: stage.place.as_str().into(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: at(stage.start),
            end_time_unix_nano: at(stage.end),
            attributes,
            status: status(stage.refused.then(|| f.problem.unwrap_or("refused"))),
            ..Default::default()
        });
    }
    if let Some(call) = &f.upstream {
        let mut attributes = vec![kv("http.request.method", method)];
        if let Some(up) = &call.upstream {
            attributes.push(kv("portcullis.upstream", &**up));
        }
        if let Some(address) = &call.address {
            let (host, port) = split_host(address);
            attributes.push(kv("server.address", host));
            if let Some(port) = port {
                attributes.push(kv("server.port", port));
            }
        }
        let error = match call.outcome {
            Ok(code) => {
                attributes.push(kv("http.response.status_code", i64::from(code)));
                (code >= 400).then_some("error status")
            }
            Err(why) => {
                attributes.push(kv("error.type", why));
                Some(why)
            }
        };
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id: call.span_id.to_vec(),
            trace_state,
            parent_span_id: server_id,
            flags: 1,
            name: method.to_owned(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: at(call.start),
            end_time_unix_nano: at(call.end),
            attributes,
            status: status(error),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("127.0.0.1", 4318, "/v1/traces"));
        let e = Endpoint::parse("http://[::1]:4318/otel/").unwrap();
        assert_eq!((e.host.as_str(), e.path.as_str()), ("::1", "/otel/v1/traces"));
        assert_eq!(e.authority, "[::1]:4318");
        assert_eq!(Endpoint::parse("http://collector").unwrap().port, 80);
        for bad in ["https://c:4318", "c:4318", "ftp://c", "http://u:p@c:4318", "http://c:4318/?a=1", ""] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_and_port() {
        assert_eq!(split_host("api.example:8443"), ("api.example", Some(8443)));
        assert_eq!(split_host("api.example"), ("api.example", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("[::1]"), ("::1", None));
    }
}
