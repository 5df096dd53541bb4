//! Observability: structured JSON logs, the per-request access log line, and metrics.
//!
//! Log lines are written by a background thread behind a bounded queue (lossy: a full queue drops lines
//! rather than stalling requests). Secrets and query values never reach a log line.

pub mod audit;
pub mod events;
pub mod live;
pub mod logfile;
pub mod metrics;
pub mod payload;
pub mod privacy;
pub mod redact;
pub mod trace;

use http::Method;
use metrics::{Metrics, RouteMetrics};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;

pub use tracing_appender::non_blocking::WorkerGuard;

/// Installs the JSON log subscriber. Keep the guard alive for the life of the process. With
/// `access_log_file`, access log lines (target `access`) go to that file, through their own bounded
/// lossy queue and writer thread, and the file is reopened on SIGUSR1; every other line stays on stdout.
/// Fails only when that file cannot be opened.
pub fn init_logging(level: &str, access_log_file: Option<&std::path::Path>) -> std::io::Result<LogGuard> {
    let lossy = |w| {
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .buffered_lines_limit(64 * 1024)
            .lossy(true)
            .thread_name("portcullis-log")
            .finish(w)
    };
    let (stdout, guard) = lossy(Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>);
    let (file, file_guard) = match access_log_file {
        Some(path) => {
            let (w, g) = lossy(Box::new(logfile::AccessLogFile::open(path)?));
            (Some(w), Some(g))
        }
        None => {
            // Nothing to reopen, but a stray SIGUSR1 (a logrotate rule left behind) must not end the
            // process, which is the signal's default action.
            signal_hook::flag::register(
                signal_hook::consts::SIGUSR1,
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
            )?;
            (None, None)
        }
    };
    let writer = logfile::Split { access: file, rest: stdout };
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    Ok(LogGuard { _stdout: guard, _file: file_guard })
}

/// Flushes the log queues when dropped (at exit).
pub struct LogGuard {
    _stdout: WorkerGuard,
    _file: Option<WorkerGuard>,
}

/// What is known about one request when its response has been sent. Dropping it writes the access log
/// line and updates the metrics, so a client that goes away mid-body is still accounted for.
pub struct Completion {
    pub started: Instant,
    pub request_id: http::HeaderValue,
    pub client_ip: IpAddr,
    /// `None` when the request line could not be parsed.
    pub method: Option<Method>,
    pub host: Box<str>,
    pub path: Box<str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub route: Option<Arc<str>>,
    pub principal: Option<Arc<crate::exchange::Principal>>,
    pub upstream: Option<Arc<str>>,
    pub upstream_duration: Option<Duration>,
    pub tls_version: Option<&'static str>,
    pub problem: Option<(&'static str, &'static str)>,
    /// The authorization decision and the rule that made it, on routes that authorize.
    pub authz: Option<crate::exchange::Decision>,
    pub aborted: bool,
    /// Held until the answer is done (concurrency limits' places), then given back.
    pub held: Vec<Box<dyn std::any::Any + Send + Sync>>,
    /// The request's `User-Agent` (cut to 256 bytes and cleaned when the line is written).
    pub user_agent: Option<http::HeaderValue>,
    /// The request body's media type (essence only), when it had a body.
    pub content_type: Option<Box<str>>,
    /// The request body's summary: keyed hash and JSON top-level key names.
    pub payload: Option<payload::SharedTap>,
    /// How the client address is written (`logging.client_ip`).
    pub privacy: Arc<privacy::Privacy>,
    pub access_log: bool,
    pub route_metrics: Arc<RouteMetrics>,
    pub metrics: Arc<Metrics>,
    /// The dashboard's live statistics.
    pub live: Arc<live::Live>,
    /// The anomaly detector and this request's record (status and sizes filled in at the end).
    pub anomaly: Option<(Arc<dyn crate::activity::Sink>, crate::activity::Record)>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.route_metrics.observe(self.status, elapsed.as_secs_f64(), self.upstream_duration);
        self.live.record(self.status, elapsed, self.problem.map(|p| p.0), self.principal.as_ref(), self.client_ip);
        if let Some((detector, mut record)) = self.anomaly.take() {
            record.status = self.status;
            record.bytes_in = u32::try_from(self.bytes_in).unwrap_or(u32::MAX);
            record.bytes_out = u32::try_from(self.bytes_out).unwrap_or(u32::MAX);
            detector.offer(record);
        }
        if let Some((slug, _)) = self.problem {
            self.metrics.rejection(slug).inc();
        }
        if !self.access_log {
            return;
        }
        let (body_hmac, json_keys) = match &self.payload {
            Some(tap) => tap.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finish(),
            None => (None, None),
        };
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            client_ip = %ClientIp(self.client_ip, &self.privacy),
            method = self.method.as_ref().map(Method::as_str),
            host = &*self.host,
            path = &*self.path,
            status = self.status,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            route = self.route.as_deref(),
            principal = self.principal.as_ref().map(|p| p.id.as_str()),
            auth_method = self.principal.as_ref().map(|p| p.kind.as_str()),
            upstream = self.upstream.as_deref(),
            upstream_ms = self.upstream_duration.map(|d| d.as_secs_f64() * 1000.0),
            tls = self.tls_version,
            problem = self.problem.map(|p| p.0),
            reason = self.problem.map(|p| p.1),
            authz = self.authz.as_ref().map(|d| if d.allowed { "allow" } else { "deny" }),
            authz_rule = self.authz.as_ref().map(|d| &*d.rule),
            aborted = self.aborted,
            user_agent = self.user_agent.as_ref().map(|v| LogText(v.as_bytes(), 256)).map(tracing::field::display),
            content_type = self.content_type.as_deref(),
            body_hmac = body_hmac.as_deref(),
            json_keys = json_keys.as_deref(),
        );
    }
}

/// A client address as `logging.client_ip` says to write it.
struct ClientIp<'a>(IpAddr, &'a privacy::Privacy);

impl std::fmt::Display for ClientIp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1.mode {
            privacy::ClientIpMode::Full => write!(f, "{}", self.0),
            _ => f.write_str(&self.1.client_ip_str(self.0)),
        }
    }
}

/// Bytes a client sent, fit for a log field (see [`LogText`]), as an owned string.
pub fn log_text(bytes: &[u8], max: usize) -> Box<str> {
    LogText(bytes, max).to_string().into()
}

/// Bytes a client sent, fit for a log field: at most `.1` bytes, lossy UTF-8, control characters as `?`.
struct LogText<'a>(&'a [u8], usize);

impl std::fmt::Display for LogText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let cut = &self.0[..self.0.len().min(self.1)];
        for c in String::from_utf8_lossy(cut).chars() {
            f.write_char(if c.is_control() { '?' } else { c })?;
        }
        Ok(())
    }
}
