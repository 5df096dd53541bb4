//! OpenTelemetry traces against a real OTLP/HTTP receiver: a hyper server in the test decodes each
//! export with the `opentelemetry-proto` types and keeps the spans. Checks the server span, a child per
//! stage (the refusing one marked), the upstream client span, their attributes and ids, the
//! `traceparent` the upstream receives, trusted-proxy continuation, sampling, and a dead collector
//! (drops counted, nothing blocked).
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub)]
mod common;

use common::*;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP receiver on a free loopback port: every `POST /v1/traces` is decoded and its spans kept.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    /// `service.name` of each export, and anything wrong with a request's framing.
    services: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let services: Arc<Mutex<Vec<String>>> = Arc::default();
        let faults: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, v, f) = (Arc::clone(&spans), Arc::clone(&services), Arc::clone(&faults));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        _ = &mut stop_rx => return,
                    };
                    let (s, v, f) = (s.clone(), v.clone(), f.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (s, v, f) = (s.clone(), v.clone(), f.clone());
                            async move {
                                receive(req, &s, &v, &f).await;
                                let ok = ExportTraceServiceRequest::default().encode_to_vec();
                                let resp = hyper::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(bytes::Bytes::from(ok)))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Collector { addr, spans, services, faults, stop: Some(stop_tx), thread: Some(thread) }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits for the server span named `name`.
    fn server_span(&self, name: &str) -> Span {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.spans().into_iter().find(|s| s.kind == SpanKind::Server as i32 && s.name == name);
            if let Some(span) = found {
                return span;
            }
            assert!(Instant::now() < deadline, "no server span {name}: {:#?}", self.spans());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the spans of `trace_id` include a server span and `n` spans in all.
    fn trace(&self, trace_id: &[u8], n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans: Vec<Span> = self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
            if spans.len() >= n || Instant::now() > deadline {
                assert_eq!(spans.len(), n, "spans of trace {}: {spans:#?}", hex(trace_id));
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    spans: &Mutex<Vec<Span>>,
    services: &Mutex<Vec<String>>,
    faults: &Mutex<Vec<String>>,
) {
    let (parts, body) = req.into_parts();
    if parts.method != "POST" || parts.uri.path() != "/v1/traces" {
        faults.lock().unwrap().push(format!("{} {}", parts.method, parts.uri));
    }
    if parts.headers.get("content-type").map(|v| v.as_bytes()) != Some(b"application/x-protobuf") {
        faults.lock().unwrap().push(format!("content-type {:?}", parts.headers.get("content-type")));
    }
    let bytes = body.collect().await.unwrap().to_bytes();
    let export = ExportTraceServiceRequest::decode(bytes).unwrap();
    for rs in export.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        if let Some(name) = string_attr(&resource.attributes, "service.name") {
            services.lock().unwrap().push(name);
        }
        for ss in rs.scope_spans {
            spans.lock().unwrap().extend(ss.spans);
        }
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// `(trace id, parent id, flags)` of a `traceparent`.
fn parts_of(traceparent: &str) -> (Vec<u8>, Vec<u8>, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((p.len(), p[0], p[1].len(), p[2].len()), (4, "00", 32, 16), "{traceparent}");
    (unhex(p[1]), unhex(p[2]), p[3].to_owned())
}

fn config(collector: SocketAddr, upstream: SocketAddr, traces: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
trusted_proxies: [127.0.0.2]
upstreams:
  app:
    targets:
      - address: {upstream}
authenticators:
  sso:
    jwt:
      issuer: https://idp.test
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: a-test-secret-of-at-least-32-bytes!!
routes:
  - name: private
    match: {{ path: {{ prefix: /private }} }}
    upstream: app
    auth: sso
    authorize: authenticated
    inspect: {{ mode: block }}
  - name: pub
    match: {{ path: {{ prefix: / }} }}
    upstream: app
    auth: none
    inspect: {{ mode: block }}
traces:
  endpoint: http://{collector}
  service_name: gw-under-test
{traces}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

const TRUSTED_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// GET `path` from `from` (a loopback address curl binds to) with extra headers; returns the status.
fn get(gw: &Gateway, from: &str, path: &str, headers: &[&str]) -> u16 {
    let url = format!("http://{}{path}", gw.addr("main"));
    let mut args = vec!["--interface", from, url.as_str()];
    for h in headers {
        args.extend(["-H", h]);
    }
    curl(&args).0
}

#[test]
fn spans_of_proxied_and_refused_requests_and_the_traceparent_upstream() {
    let collector = Collector::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(collector.addr, up.addr, "  flush_interval: 50ms"));

    // An untrusted client's traceparent is not continued: the gateway starts its own trace.
    let sent = [format!("traceparent: {TRUSTED_PARENT}"), "tracestate: vendor=from-anyone".into()];
    assert_eq!(get(&gw, "127.0.0.1", "/orders/7?card=4111111111111111", &[&sent[0], &sent[1]]), 200);
    let seen = up.last().unwrap();
    let (trace_id, parent, flags) = parts_of(seen.header("traceparent").expect("traceparent upstream"));
    assert_ne!(hex(&trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(flags, "01");
    assert_eq!(seen.header("tracestate"), None);
    let spans = collector.trace(&trace_id, 3);
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).expect("server span");
    let client = spans.iter().find(|s| s.kind == SpanKind::Client as i32).expect("client span");
    let stage = spans.iter().find(|s| s.kind == SpanKind::Internal as i32).expect("stage span");
    assert!(server.parent_span_id.is_empty(), "a new trace's root");
    assert_eq!(server.name, "GET pub");
    let a = &server.attributes;
    assert_eq!(string_attr(a, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(string_attr(a, "url.path").as_deref(), Some("/orders/7"));
    assert_eq!(string_attr(a, "url.scheme").as_deref(), Some("http"));
    assert_eq!(string_attr(a, "http.route").as_deref(), Some("pub"));
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
    assert_eq!(string_attr(a, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(string_attr(a, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(int_attr(a, "server.port"), Some(i64::from(gw.addr("main").port())));
    let request_id = string_attr(a, "portcullis.request_id").expect("request id");
    assert_eq!(seen.header("x-request-id"), Some(request_id.as_str()));
    assert_eq!(server.status.as_ref().map_or(0, |s| s.code), StatusCode::Unset as i32);
    assert!(server.start_time_unix_nano > 0 && server.end_time_unix_nano >= server.start_time_unix_nano);
    // The stage and the upstream call are children of the server span, inside its time.
    assert_eq!(stage.name, "inspection");
    assert_eq!(stage.parent_span_id, server.span_id);
    assert_eq!(client.parent_span_id, server.span_id);
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    // The upstream's parent is the gateway's client span.
    assert_eq!(parent, client.span_id);
    assert_eq!(string_attr(&client.attributes, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(int_attr(&client.attributes, "server.port"), Some(i64::from(up.addr.port())));
    assert_eq!(int_attr(&client.attributes, "http.response.status_code"), Some(200));
    assert_eq!(string_attr(&client.attributes, "portcullis.upstream").as_deref(), Some("app"));

    // A refusal: the refusing stage is marked, the later ones do not run, nothing goes upstream.
    let hits = up.hits();
    assert_eq!(get(&gw, "127.0.0.1", "/private/x", &[]), 401);
    assert_eq!(up.hits(), hits);
    let refused = collector.trace(&collector.server_span("GET private").trace_id, 2);
    let server = refused.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    let authn = refused.iter().find(|s| s.kind == SpanKind::Internal as i32).unwrap();
    assert_eq!(int_attr(&server.attributes, "http.response.status_code"), Some(401));
    assert_eq!(string_attr(&server.attributes, "portcullis.problem").as_deref(), Some("unauthorized"));
    assert_eq!(string_attr(&server.attributes, "portcullis.refused_at").as_deref(), Some("authentication"));
    assert_eq!(server.status.as_ref().map_or(0, |s| s.code), StatusCode::Unset as i32, "4xx is not a server error");
    assert_eq!(authn.name, "authentication");
    assert_eq!(authn.parent_span_id, server.span_id);
    assert_eq!(attr(&authn.attributes, "portcullis.refused"), Some(&Value::BoolValue(true)));
    assert_eq!(authn.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));

    // A trusted proxy's context is continued: same trace, the proxy's span as the server span's parent,
    // its tracestate passed on.
    let hits = up.hits();
    let status =
        get(&gw, "127.0.0.2", "/continued", &[&format!("traceparent: {TRUSTED_PARENT}"), "tracestate: vendor=opaque"]);
    assert_eq!(status, 200);
    assert_eq!(up.hits(), hits + 1);
    let seen = up.last().unwrap();
    let (trace_id, parent, flags) = parts_of(seen.header("traceparent").unwrap());
    assert_eq!((hex(&trace_id).as_str(), flags.as_str()), ("0af7651916cd43dd8448eb211c80319c", "01"));
    assert_eq!(seen.header("tracestate"), Some("vendor=opaque"));
    let spans = collector.trace(&trace_id, 3);
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    let client = spans.iter().find(|s| s.kind == SpanKind::Client as i32).unwrap();
    assert_eq!(hex(&server.parent_span_id), "b7ad6b7169203331");
    assert_eq!(server.trace_state, "vendor=opaque");
    assert_eq!(parent, client.span_id);

    // A malformed traceparent, even from a trusted proxy, is ignored: a new trace, never an error.
    let bad = "traceparent: 00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01";
    assert_eq!(get(&gw, "127.0.0.2", "/bad", &[bad]), 200);
    let (trace_id, _, _) = parts_of(up.last().unwrap().header("traceparent").unwrap());
    assert_ne!(hex(&trace_id), "0af7651916cd43dd8448eb211c80319c");
    collector.trace(&trace_id, 3);

    // No query string, in any span.
    for s in collector.spans() {
        assert!(!format!("{s:?}").contains("4111111111111111"), "{s:?}");
    }
    assert!(collector.services.lock().unwrap().iter().all(|s| s == "gw-under-test"));
    assert_eq!(*collector.faults.lock().unwrap(), Vec::<String>::new());
    let m = gw.metrics();
    let sent = metric(&m, "portcullis_exporter_events_total{exporter=\"otlp\",result=\"sent\"}").unwrap_or(0.0);
    assert!(sent >= 11.0, "{m}");
}

#[test]
fn sampling_follows_the_ratio_and_a_trusted_parent() {
    let collector = Collector::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(collector.addr, up.addr, "  sample_ratio: 0\n  flush_interval: 50ms"));
    // Ratio 0: nothing is recorded, but the context still goes upstream, marked unsampled.
    for _ in 0..20 {
        assert_eq!(get(&gw, "127.0.0.1", "/x", &[]), 200);
        let (_, _, flags) = parts_of(up.last().unwrap().header("traceparent").unwrap());
        assert_eq!(flags, "00");
    }
    // A trusted parent's unsampled flag is followed too, and its trace id kept.
    let unsampled = TRUSTED_PARENT.replace("-01", "-00");
    assert_eq!(get(&gw, "127.0.0.2", "/x", &[&format!("traceparent: {unsampled}")]), 200);
    let (trace_id, _, flags) = parts_of(up.last().unwrap().header("traceparent").unwrap());
    assert_eq!((hex(&trace_id).as_str(), flags.as_str()), ("0af7651916cd43dd8448eb211c80319c", "00"));
    // A trusted parent's sampled flag is followed whatever the ratio. Its spans are exported after the
    // requests above (one queue, in order), so once they arrive nothing else can: only they are there.
    let sampled = "00-11111111111111111111111111111111-2222222222222222-01";
    assert_eq!(get(&gw, "127.0.0.2", "/x", &[&format!("traceparent: {sampled}")]), 200);
    collector.trace(&unhex("11111111111111111111111111111111"), 3);
    let all = collector.spans();
    assert_eq!(all.len(), 3, "{all:#?}");
}

#[test]
fn a_dead_collector_drops_and_counts_within_the_queue_bound() {
    let dead = closed_port();
    let up = Upstream::start("app");
    let traces = "  queue: 8\n  batch: 4\n  flush_interval: 20ms\n  timeout: 1s";
    let gw = Gateway::start(&config(dead, up.addr, traces));
    let n = 40;
    for i in 0..n {
        assert_eq!(get(&gw, "127.0.0.1", &format!("/load/{i}"), &[]), 200, "request {i} is served");
    }
    // Each request has three spans (server, inspection, upstream call); every one ends dropped.
    let want = f64::from(n * 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = gw.metrics();
        let dropped = metric(&m, "portcullis_exporter_events_total{exporter=\"otlp\",result=\"dropped\"}");
        if dropped == Some(want) || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(metric(&m, "portcullis_exporter_events_total{exporter=\"otlp\",result=\"dropped\"}"), Some(want), "{m}");
    assert_eq!(metric(&m, "portcullis_exporter_events_total{exporter=\"otlp\",result=\"sent\"}").unwrap_or(0.0), 0.0);
    assert!(metric(&m, "portcullis_exporter_events_total{exporter=\"otlp\",result=\"retried\"}").unwrap_or(0.0) > 0.0);
    let depth = metric(&m, "portcullis_exporter_queue_depth{exporter=\"otlp\"}").unwrap_or(0.0);
    assert!(depth <= 8.0, "{m}");
    assert!(gw.count_log("trace export failed") >= 1);
}

#[test]
fn traces_section_errors() {
    let dir = TempDir::new();
    let up = closed_port();
    for (snippet, expected) in [
        ("  sampling: 1", "unknown field `sampling`"),
        ("  sample_ratio: 2", "sample_ratio"),
        ("  batch: 4096", "traces.batch"),
    ] {
        let yaml = config(up, up, snippet);
        let path = dir.write("bad.yaml", &yaml);
        let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
        assert_eq!(code, 1, "{snippet}: {out}{err}");
        assert!(format!("{out}{err}").contains(expected), "{snippet}: {out}{err}");
    }
    let yaml = config(up, up, "").replace(&format!("http://{up}"), "https://collector.test:4318");
    let path = dir.write("bad.yaml", &yaml);
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("only http://"), "{out}{err}");
}
