//! `events.exporters[]`: the file format of one exporter and its compilation into the hub's side (an
//! [`Outlet`]: filters, the queue's sender, counters) and the sending side (a [`Worker`]). Compiling
//! checks everything and reads CA files, but opens no connection and sends nothing (`portcullis check`
//! compiles too).

use super::http::{HttpConfig, HttpExport};
use super::queue::{Counters, Transport, Worker};
use super::syslog::{Syslog, SyslogConfig};
use crate::events::{Event, Kind, Severity};
use crate::observe::metrics::Metrics;
use crate::units::Dur;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{channel, error::TrySendError, Sender};

/// Bounds of the settings (a typo of three zeros should not become gigabytes of queued events).
const MAX_QUEUE: usize = 1_000_000;
const MAX_BATCH: usize = 10_000;

/// One entry of `events.exporters`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// Unique; the `exporter` label of the exporter's metrics.
    pub name: String,
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Events waiting to be sent, at most (default 10,000). Beyond it new events are dropped.
    #[serde(default)]
    pub queue: Option<usize>,
    /// Events per send, at most (default 100).
    #[serde(default)]
    pub batch: Option<usize>,
    /// How long a batch waits to fill (default 1s for `http`, 0 for `syslog`: sent as soon as queued).
    #[serde(default)]
    pub flush_interval: Option<Dur>,
    /// Only events at least this severe.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Only events of these types (`authn.failure`, ...).
    #[serde(default)]
    pub types: Option<Vec<String>>,
}

/// A configuration mistake, with the key and value to point at in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub key: &'static str,
    pub value: String,
    pub message: String,
}

impl Fault {
    pub fn new(key: &'static str, value: impl Into<String>, message: impl Into<String>) -> Fault {
        Fault { key, value: value.into(), message: message.into() }
    }
}

/// The hub's end of one exporter.
pub struct Outlet {
    min_severity: Severity,
    /// Bit `k as usize` set = kind `k` is exported.
    kinds: u32,
    tx: Sender<Arc<Event>>,
    counters: Counters,
}

impl Outlet {
    /// Offers an event; never waits. A full (or stopped) queue drops it and counts the drop.
    pub fn offer(&self, e: &Arc<Event>) {
        if e.severity < self.min_severity || self.kinds & (1 << e.kind as u32) == 0 {
            return;
        }
        match self.tx.try_send(e.clone()) {
            Ok(()) => {
                self.counters.depth.inc();
            }
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.counters.dropped.inc();
            }
        }
    }
}

/// Compiles one exporter (see the module's note: nothing is sent here).
pub fn compile(c: &ExporterConfig, metrics: &Metrics) -> Result<(Outlet, Worker), Fault> {
    let name = c.name.as_str();
    let fault = |key, value: &str, m: String| Fault::new(key, value, format!("events.exporters `{name}`: {m}"));
    if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')) {
        return Err(fault("name", name, "a name is letters, digits, `-`, `_` and `.`".into()));
    }
    let (transport, default_flush) = match (&c.syslog, &c.http) {
        (Some(s), None) => (Transport::Syslog(Syslog::compile(s).map_err(|m| fault("syslog", "", m))?), Duration::ZERO),
        (None, Some(h)) => {
            (Transport::Http(HttpExport::compile(h).map_err(|m| fault("http", "", m))?), Duration::from_secs(1))
        }
        _ => return Err(fault("name", name, "give exactly one of `syslog` or `http`".into())),
    };
    let queue = c.queue.unwrap_or(10_000);
    if queue == 0 || queue > MAX_QUEUE {
        return Err(fault("queue", &queue.to_string(), format!("queue must be 1 to {MAX_QUEUE} events")));
    }
    let batch = c.batch.unwrap_or(100);
    if batch == 0 || batch > MAX_BATCH {
        return Err(fault("batch", &batch.to_string(), format!("batch must be 1 to {MAX_BATCH} events")));
    }
    let flush = c.flush_interval.map_or(default_flush, |d| d.0);
    if flush > Duration::from_secs(60) {
        return Err(fault("flush_interval", "", "flush_interval must be at most 60s".into()));
    }
    let mut kinds = 0u32;
    match &c.types {
        None => kinds = u32::MAX,
        Some(types) if types.is_empty() => {
            return Err(fault("types", "", "`types: []` exports nothing; name types or leave `types` out".into()));
        }
        Some(types) => {
            for t in types {
                let k = Kind::parse(t).ok_or_else(|| {
                    let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                    fault("types", t, format!("unknown event type `{t}` (known: {})", known.join(", ")))
                })?;
                kinds |= 1 << k as u32;
            }
        }
    }
    let (tx, rx) = channel(queue);
    let counters = Counters::new(metrics, name);
    let outlet =
        Outlet { min_severity: c.min_severity.unwrap_or(Severity::Info), kinds, tx, counters: counters.clone() };
    let worker = Worker { name: name.to_owned(), rx, transport, batch, flush, counters, problem: None };
    Ok((outlet, worker))
}

/// `portcullis check` warnings: syslog in clear text (UDP or TCP) to a host that is not loopback. Events
/// name principals, client addresses and paths; `transport: tls` protects them on the way.
pub fn lints(list: &[ExporterConfig]) -> Vec<String> {
    let mut out = Vec::new();
    for c in list {
        let Some(s) = &c.syslog else { continue };
        let loopback = super::syslog::split_address(&s.address).is_ok_and(|(host, _)| {
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        if s.transport != super::syslog::Transport::Tls && !loopback {
            out.push(format!(
                "events exporter `{}` sends events in clear text to {} (principals, client addresses, paths); \
                 use `transport: tls`",
                c.name, s.address
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(yaml: &str) -> ExporterConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn fault(yaml: &str) -> String {
        match compile(&parse(yaml), &Metrics::new()) {
            Ok(_) => String::new(),
            Err(f) => f.message,
        }
    }

    #[test]
    fn exactly_one_destination() {
        assert!(fault("name: a").contains("exactly one"));
        assert!(fault("name: a\nsyslog: {address: '127.0.0.1:1'}\nhttp: {url: 'http://127.0.0.1:1/'}")
            .contains("exactly one"));
        assert_eq!(fault("name: a\nsyslog: {address: '127.0.0.1:1', transport: tcp, format: cef}"), "");
    }

    #[test]
    fn refusals_are_clear() {
        assert!(fault("name: a\nhttp: {url: 'http://127.0.0.1:1/', format: cef}").contains("cef"));
        assert!(fault("name: a\nsyslog: {address: '127.0.0.1:1'}\ntypes: [authn.nope]").contains("authn.nope"));
        assert!(fault("name: a\nsyslog: {address: '127.0.0.1:1'}\nqueue: 0").contains("queue"));
        assert!(fault("name: a\nsyslog: {address: '127.0.0.1:1'}\ntypes: []").contains("exports nothing"));
        assert!(fault("name: a\nsyslog: {address: '127.0.0.1:1', facility: mars}").contains("facility"));
        assert!(fault("name: a\nsyslog: {address: 'nowhere'}").contains("host:port"));
        assert!(fault("name: 'a b'\nsyslog: {address: '127.0.0.1:1'}").contains("name"));
        assert!(serde_yaml_ng::from_str::<ExporterConfig>("name: a\nsyslg: {}").is_err());
        assert!(serde_yaml_ng::from_str::<ExporterConfig>("name: a\nsyslog: {address: x, colour: red}").is_err());
    }

    #[test]
    fn clear_text_syslog_off_loopback_is_a_warning() {
        let list: Vec<ExporterConfig> = serde_yaml_ng::from_str(
            "- {name: a, syslog: {address: '10.0.0.5:514', transport: udp}}\n\
             - {name: b, syslog: {address: '127.0.0.1:514', transport: tcp}}\n\
             - {name: c, syslog: {address: 'siem.example:6514', transport: tls}}\n\
             - {name: d, syslog: {address: 'siem.example:601'}}",
        )
        .unwrap();
        let warnings = lints(&list);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("`a`") && warnings[1].contains("`d`"));
    }

    #[tokio::test]
    async fn filters_and_a_full_queue_drops() {
        let m = Metrics::new();
        let cfg = parse(
            "name: f\nsyslog: {address: '127.0.0.1:1'}\nqueue: 2\nmin_severity: low\ntypes: [authn.failure, ban.set]",
        );
        let (outlet, _worker) = compile(&cfg, &m).unwrap();
        outlet.offer(&Arc::new(Event::new(Kind::ConfigReload, "ok"))); // type filtered out
        outlet.offer(&Arc::new(Event::new(Kind::BanSet, "x").severity(Severity::Info))); // below min
        for _ in 0..5 {
            outlet.offer(&Arc::new(Event::new(Kind::AuthnFailure, "missing")));
        }
        assert_eq!(outlet.counters.depth.get(), 2);
        assert_eq!(outlet.counters.dropped.get(), 3);
    }
}
