//! The configured outputs of security events (`events:`): JSON lines on stdout, exporters (syslog,
//! HTTP collectors), and the audit trail. [`Hub`] is the [`Sink`] behind every [`Emitter`]: it counts
//! each event, writes client addresses as `logging.client_ip` says, and offers the event to each output's
//! bounded queue. A full queue drops the event and counts the drop; emitting never blocks.
//!
//! Exporters (`events.exporters`): [`exporter`] compiles each into an outlet (filters and a bounded queue
//! the hub offers to) and a worker that [`queue`] runs on the `events-export` thread, sending in
//! [`format`] (JSON, CEF, [`ocsf`]) over [`syslog`] or [`http`].

pub mod exporter;
pub mod format;
pub mod http;
pub mod ocsf;
pub mod queue;
pub mod syslog;

use crate::events::{Emitter, Event, Kind, Sink};
use crate::observe::metrics::Metrics;
use crate::observe::privacy::Privacy;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// The top-level `events:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Every event as one JSON line on stdout (beside the logs).
    #[serde(default)]
    pub stdout: bool,
    /// SIEM exporters: syslog (UDP, TCP, TLS) and HTTP collectors (webhook, Splunk HEC, `_bulk`).
    #[serde(default)]
    pub exporters: Vec<exporter::ExporterConfig>,
}

/// Events to stdout: a bounded queue and one writer thread.
struct Stdout {
    tx: SyncSender<Arc<Event>>,
    dropped: Counter,
}

impl Stdout {
    fn spawn(dropped: Counter) -> std::io::Result<Stdout> {
        let (tx, rx) = sync_channel::<Arc<Event>>(8192);
        std::thread::Builder::new().name("events-stdout".into()).spawn(move || {
            use std::io::Write;
            while let Ok(e) = rx.recv() {
                let mut line = e.to_json();
                line.push('\n');
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
        })?;
        Ok(Stdout { tx, dropped })
    }

    fn offer(&self, e: &Arc<Event>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(e.clone()) {
            self.dropped.inc();
        }
    }
}

/// The outputs of one `events:` section: kept across reloads that leave the section unchanged, and
/// stopped (after draining) when the last hub holding them goes.
struct Outputs {
    stdout: Option<Stdout>,
    exporters: Vec<exporter::Outlet>,
}

/// The sink every emitter of one configuration sends to. Rebuilt on every reload (it is cheap), so the
/// privacy and audit settings are always the current ones; the outputs behind it are kept.
pub struct Hub {
    privacy: Privacy,
    by_kind: Vec<Counter>,
    outputs: Arc<Outputs>,
    audit: Option<Arc<dyn Sink>>,
    audit_security: bool,
}

impl Sink for Hub {
    fn emit(&self, mut event: Event) {
        if let Some(c) = self.by_kind.get(event.kind as usize) {
            c.inc();
        }
        if let Some(ip) = event.client_ip.take() {
            (event.client_ip, event.client_ip_hash) = self.privacy.client_ip(ip);
        }
        if let Some(audit) = &self.audit {
            if self.audit_security || event.kind.is_audited() {
                audit.emit(event.clone());
            }
        }
        if self.outputs.stdout.is_none() && self.outputs.exporters.is_empty() {
            return;
        }
        let event = Arc::new(event);
        if let Some(s) = &self.outputs.stdout {
            s.offer(&event);
        }
        for x in &self.outputs.exporters {
            x.offer(&event);
        }
    }
}

/// The outputs across reloads: rebuilt only when the `events:` section changes.
#[derive(Default)]
pub struct Kept {
    current: Mutex<Option<(EventsConfig, Arc<Outputs>)>>,
}

impl Kept {
    /// The emitter for `cfg`: a hub over the running outputs when the section did not change, else over
    /// new ones (the old ones drain and stop when the last runtime using them goes). `audit` is the
    /// audit trail's sink (which takes the audited kinds, and every kind when `audit_security`).
    /// Nothing is sent here: exporters connect when they first have events.
    pub fn emitter(
        &self,
        cfg: Option<&EventsConfig>,
        audit: Option<Arc<dyn Sink>>,
        audit_security: bool,
        privacy: &Privacy,
        metrics: &Metrics,
    ) -> Result<Emitter, exporter::Fault> {
        let cfg = cfg.cloned().unwrap_or_default();
        let mut cur = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = match cur.as_ref() {
            Some((old, outputs)) if *old == cfg => outputs.clone(),
            _ => {
                let (exporters, workers) = compile_exporters(&cfg.exporters, metrics)?;
                let stdout = if cfg.stdout {
                    Some(Stdout::spawn(metrics.exporter_dropped("stdout")).map_err(|e| thread_fault(&e))?)
                } else {
                    None
                };
                queue::spawn(workers).map_err(|e| thread_fault(&e))?;
                let outputs = Arc::new(Outputs { stdout, exporters });
                *cur = Some((cfg, outputs.clone()));
                outputs
            }
        };
        if outputs.stdout.is_none() && outputs.exporters.is_empty() && audit.is_none() {
            return Ok(Emitter::none());
        }
        let by_kind = Kind::ALL.iter().map(|k| metrics.events(k.as_str())).collect();
        let hub = Hub { privacy: privacy.clone(), by_kind, outputs, audit, audit_security };
        Ok(Emitter::new(Arc::new(hub)))
    }
}

fn thread_fault(e: &std::io::Error) -> exporter::Fault {
    exporter::Fault::new("events", "", format!("events: cannot start a thread: {e}"))
}

/// Every exporter, or the first mistake. Names must be unique (they label the metrics).
fn compile_exporters(
    list: &[exporter::ExporterConfig],
    metrics: &Metrics,
) -> Result<(Vec<exporter::Outlet>, Vec<queue::Worker>), exporter::Fault> {
    let mut names = std::collections::HashSet::new();
    let (mut outlets, mut workers) = (Vec::new(), Vec::new());
    for c in list {
        if !names.insert(c.name.as_str()) || c.name == "stdout" {
            return Err(exporter::Fault::new(
                "name",
                c.name.clone(),
                format!("events.exporters: the name `{}` is used twice (or is `stdout`, which is taken)", c.name),
            ));
        }
        let (outlet, worker) = exporter::compile(c, metrics)?;
        outlets.push(outlet);
        workers.push(worker);
    }
    Ok((outlets, workers))
}
