//! The spans of one request, as the pipeline reports them through [`crate::exchange::Trace`]:
//! [`Tracer::start`] when the request arrives, `stage` after each stage of the route's chain,
//! `upstream_start` and `upstream_end` around the upstream call, and `finish` when the answer is known.
//! An unsampled trace records nothing (no clock reads) and only propagates its context.

use super::context::{self, SpanId, TraceId, TRACEPARENT, TRACESTATE};
use super::export::{ClientSpan, Exporter, Finished, StageSpan};
use super::TracesConfig;
use crate::exchange::{Exchange, Place, Trace};
use crate::observe::metrics::Metrics;
use crate::observe::privacy::Privacy;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The compiled `traces:` section: sampling, and the exporter spans go to.
pub struct Tracer {
    threshold: u64,
    exporter: Arc<Exporter>,
    privacy: Arc<Privacy>,
}

impl Tracer {
    /// Begins the trace of a request that arrived at `started`. The incoming `traceparent` is continued
    /// (its trace id, parent span and sampled flag) only when `peer_trusted`; from any other peer it is
    /// ignored and a new trace starts, sampled at `sample_ratio`.
    pub fn start(self: &Arc<Self>, peer_trusted: bool, req: &http::request::Parts, started: Instant) -> Box<dyn Trace> {
        let parent = if peer_trusted { context::incoming(&req.headers) } else { None };
        let (trace_id, parent_span, sampled, state) = match parent {
            Some(p) => (p.trace_id, Some(p.span_id), p.sampled, p.state),
            None => {
                let id = context::new_trace_id();
                (id, None, context::sampled_by_ratio(&id, self.threshold), None)
            }
        };
        let (start_unix_ns, host) = if sampled {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            // `Host`, or the target's authority (HTTP/2).
            let host = req
                .headers
                .get(http::header::HOST)
                .cloned()
                .or_else(|| req.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
            (nanos(now.saturating_sub(started.elapsed())), host)
        } else {
            (0, None)
        };
        Box::new(RequestTrace {
            trace_id,
            span_id: context::new_span_id(),
            parent_span,
            sampled,
            state,
            started,
            start_unix_ns,
            host,
            stages: Vec::new(),
            upstream: None,
            tracer: self.clone(),
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One request's trace context and, when sampled, its spans so far.
struct RequestTrace {
    trace_id: TraceId,
    /// The server span: the gateway's handling of the request.
    span_id: SpanId,
    parent_span: Option<SpanId>,
    sampled: bool,
    state: Option<HeaderValue>,
    started: Instant,
    start_unix_ns: u64,
    /// The request's `Host` (for `server.address`), kept before the headers go upstream.
    host: Option<HeaderValue>,
    stages: Vec<StageSpan>,
    upstream: Option<ClientSpan>,
    tracer: Arc<Tracer>,
}

impl Trace for RequestTrace {
    fn recording(&self) -> bool {
        self.sampled
    }

    fn stage(&mut self, place: Place, began: Instant, refused: bool) {
        if self.sampled {
            let start = began.saturating_duration_since(self.started);
            let end = self.started.elapsed();
            self.stages.push(StageSpan { place, span_id: context::new_span_id(), start, end, refused });
        }
    }

    /// Its client span's context replaces any `traceparent` and `tracestate` in `headers` (the outgoing
    /// request's), so the upstream's spans are children of the gateway's.
    fn upstream_start(&mut self, headers: &mut HeaderMap) {
        let span_id = context::new_span_id();
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        headers
            .insert(HeaderName::from_static(TRACEPARENT), context::traceparent(&self.trace_id, &span_id, self.sampled));
        if let Some(state) = &self.state {
            headers.insert(HeaderName::from_static(TRACESTATE), state.clone());
        }
        let start = if self.sampled { self.started.elapsed() } else { Duration::ZERO };
        self.upstream =
            Some(ClientSpan { span_id, start, end: start, upstream: None, address: None, outcome: Err("unfinished") });
    }

    fn upstream_end(&mut self, upstream: &Arc<str>, address: Option<&str>, outcome: Result<u16, &'static str>) {
        if !self.sampled {
            return;
        }
        let end = self.started.elapsed();
        if let Some(span) = &mut self.upstream {
            span.end = end;
            span.upstream = Some(upstream.clone());
            span.address = address.map(Box::from);
            span.outcome = outcome;
        }
    }

    /// Hands the trace to the exporter (when sampled).
    fn finish(self: Box<Self>, ex: &Exchange<'_>, status: u16, problem: Option<&'static str>) {
        if !self.sampled {
            return;
        }
        let t = *self;
        let finished = Finished {
            trace_id: t.trace_id,
            span_id: t.span_id,
            parent_span: t.parent_span,
            state: t.state,
            start_unix_ns: t.start_unix_ns,
            end: t.started.elapsed(),
            method: ex.parts.method.clone(),
            scheme: if ex.conn.tls.is_some() { "https" } else { "http" },
            version: match ex.parts.version {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
            path: ex.parts.uri.path().into(),
            route: ex.route.clone(),
            status,
            problem,
            refused_at: problem.and(ex.refused_at),
            client_ip: ex.client_ip,
            host: t.host,
            request_id: ex.request_id.into(),
            stages: t.stages,
            upstream: t.upstream,
            privacy: t.tracer.privacy.clone(),
        };
        t.tracer.exporter.offer(finished);
    }
}

/// The tracer across reloads: the exporter (its thread, queue and connection) is kept while the
/// settings it uses are unchanged; sampling and privacy follow each reload.
#[derive(Default)]
pub struct Kept {
    current: Mutex<Option<(TracesConfig, Arc<Exporter>)>>,
}

impl Kept {
    /// The tracer for `cfg` (`None` without a `traces:` section).
    pub fn tracer(
        &self,
        cfg: Option<&TracesConfig>,
        privacy: &Privacy,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Tracer>>, String> {
        let mut cur = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(cfg) = cfg else {
            *cur = None;
            return Ok(None);
        };
        cfg.validate()?;
        let key = TracesConfig { sample_ratio: 0.0, ..cfg.clone() };
        let exporter = match cur.as_ref() {
            Some((old, exporter)) if *old == key => exporter.clone(),
            _ => {
                let exporter = Arc::new(Exporter::spawn(cfg, metrics)?);
                *cur = Some((key, exporter.clone()));
                exporter
            }
        };
        let threshold = context::threshold(cfg.sample_ratio);
        Ok(Some(Arc::new(Tracer { threshold, exporter, privacy: Arc::new(privacy.clone()) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str, ratio: f64) -> TracesConfig {
        serde_yaml_ng::from_str(&format!("endpoint: {endpoint}\nsample_ratio: {ratio}")).unwrap()
    }

    fn tracer(kept: &Kept, c: &TracesConfig) -> Result<Option<Arc<Tracer>>, String> {
        kept.tracer(Some(c), &Privacy::new(Default::default(), b"test key"), &Metrics::new())
    }

    #[test]
    fn reloads_keep_the_exporter_while_its_settings_hold() {
        let kept = Kept::default();
        let a = tracer(&kept, &cfg("http://127.0.0.1:9", 1.0)).unwrap().unwrap();
        let b = tracer(&kept, &cfg("http://127.0.0.1:9", 0.5)).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.exporter, &b.exporter), "sampling alone changed");
        let c = tracer(&kept, &cfg("http://127.0.0.1:10", 0.5)).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&b.exporter, &c.exporter));
        assert!(tracer(&kept, &cfg("https://collector:4318", 1.0)).is_err());
        let privacy = Privacy::new(Default::default(), b"test key");
        assert!(kept.tracer(None, &privacy, &Metrics::new()).unwrap().is_none());
    }

    fn request(headers: &[(&'static str, &'static str)]) -> http::request::Parts {
        let mut req = http::Request::builder().uri("/x");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn context_is_continued_only_from_a_trusted_peer() {
        const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let t = tracer(&Kept::default(), &cfg("http://127.0.0.1:9", 0.0)).unwrap().unwrap();
        let req = request(&[("traceparent", PARENT), ("tracestate", "a=1")]);
        let mut out = req.headers.clone();

        let mut untrusted = t.start(false, &req, Instant::now());
        assert!(!untrusted.recording(), "ratio 0");
        untrusted.upstream_start(&mut out);
        let sent = out.get(TRACEPARENT).unwrap().to_str().unwrap().to_owned();
        assert!(!sent.contains("0af7651916cd43dd8448eb211c80319c") && sent.ends_with("-00"), "{sent}");
        assert!(out.get(TRACESTATE).is_none());

        let mut trusted = t.start(true, &req, Instant::now());
        assert!(trusted.recording(), "the parent's sampled flag decides");
        trusted.upstream_start(&mut out);
        let sent = out.get(TRACEPARENT).unwrap().to_str().unwrap();
        assert!(sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && sent.ends_with("-01"), "{sent}");
        assert!(!sent.contains("b7ad6b7169203331"), "the gateway's span is the upstream's parent");
        assert_eq!(out.get(TRACESTATE).unwrap(), "a=1");
        assert_eq!(out.get_all(TRACEPARENT).iter().count(), 1);
    }
}
