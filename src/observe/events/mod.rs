//! The configured outputs of security events (`events:`): JSON lines on stdout, exporters (syslog,
//! HTTP collectors), and the audit trail. [`Hub`] is the [`Sink`] behind every [`Emitter`]: it counts
//! each event, writes client addresses as `logging.client_ip` says, and offers the event to each output's
//! bounded queue. A full queue drops the event and counts the drop; emitting never blocks.
//!
//! Exporters (`events.exporters`): [`exporter`] compiles each into an outlet (filters and a bounded queue
//! the hub offers to) and a worker that [`queue`] runs on the `events-export` thread, sending in
//! [`format`] (JSON, CEF, [`ocsf`]) over [`syslog`] or [`http`]. Compiling sends nothing: exporters
//! connect when they first have events. When a reload replaces the outputs, the old exporters drain
//! their queues (for a bounded time) and stop.

pub mod exporter;
pub mod format;
pub mod http;
pub mod ocsf;
pub mod queue;
pub mod recent;
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

/// How often the stdout writer drains its queue.
const STDOUT_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// Bytes of JSON lines the stdout writer gathers before writing without waiting for the next poll.
const STDOUT_BATCH: usize = 1 << 20;

/// Events to stdout: a bounded queue and one writer thread, which drains it every 50 ms.
struct Stdout {
    tx: SyncSender<Arc<Event>>,
    dropped: Counter,
}

impl Stdout {
    fn spawn(dropped: Counter) -> std::io::Result<Stdout> {
        let (tx, rx) = sync_channel::<Arc<Event>>(8192);
        std::thread::Builder::new().name("events-stdout".into()).spawn(move || {
            use std::io::Write;
            use std::sync::mpsc::TryRecvError;
            // Polled, never blocked on: a receiver waiting in `recv` makes every sender wake it, two
            // futex calls per refused request in a flood of them (measured). Woken by time instead,
            // it drains what came meanwhile and writes it in one call.
            let mut out = Vec::with_capacity(64 * 1024);
            loop {
                let (mut closed, mut full) = (false, false);
                loop {
                    match rx.try_recv() {
                        Ok(e) => {
                            out.extend_from_slice(e.to_json().as_bytes());
                            out.push(b'\n');
                            if out.len() >= STDOUT_BATCH {
                                full = true;
                                break;
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if !out.is_empty() {
                    let _ = std::io::stdout().lock().write_all(&out);
                    out.clear();
                }
                if closed {
                    return;
                }
                if !full {
                    std::thread::sleep(STDOUT_POLL);
                }
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

/// The outputs an `events:` section configures; kept across reloads that leave it unchanged.
struct Outputs {
    stdout: Option<Stdout>,
    exporters: Vec<exporter::Outlet>,
}

impl Outputs {
    fn is_empty(&self) -> bool {
        self.stdout.is_none() && self.exporters.is_empty()
    }

    fn offer(&self, event: &Arc<Event>) {
        if let Some(s) = &self.stdout {
            s.offer(event);
        }
        for x in &self.exporters {
            x.offer(event);
        }
    }
}

/// The sink every emitter of one configuration sends to.
pub struct Hub {
    privacy: Privacy,
    by_kind: Vec<Counter>,
    outputs: Arc<Outputs>,
    audit: Option<Arc<dyn Sink>>,
    audit_security: bool,
    recent: Arc<recent::Recent>,
}

impl Sink for Hub {
    fn emit(&self, mut event: Event) {
        if let Some(c) = self.by_kind.get(event.kind as usize) {
            c.inc();
        }
        if let Some(ip) = event.client_ip.take() {
            (event.client_ip, event.client_ip_hash) = self.privacy.client_ip(ip);
        }
        let audit = self.audit.as_ref().filter(|_| self.audit_security || event.kind.is_audited());
        if let Some(audit) = audit {
            audit.emit(event.clone());
        }
        let event = Arc::new(event);
        if !self.outputs.is_empty() {
            self.outputs.offer(&event);
        }
        self.recent.push(event);
    }
}

/// The one emitter of the process: what holds it (health checks, guards) across reloads always sends to
/// the hub of the configuration in force.
#[derive(Default)]
struct Switch(arc_swap::ArcSwapOption<Hub>);

impl Sink for Switch {
    fn emit(&self, event: Event) {
        if let Some(hub) = &*self.0.load() {
            hub.emit(event);
        }
    }

    fn enabled(&self) -> bool {
        self.0.load().is_some()
    }
}

/// The hub across reloads: rebuilt only when its configuration changes.
#[derive(Default)]
pub struct Kept {
    current: Mutex<Option<(EventsConfig, Arc<Outputs>)>>,
    switch: Arc<Switch>,
    /// The last events, for the admin API (kept across reloads).
    recent: Arc<recent::Recent>,
}

impl Kept {
    /// The process's last events and their live stream.
    pub fn recent(&self) -> &Arc<recent::Recent> {
        &self.recent
    }

    /// The process's emitter (whatever configuration is in force), for parts that outlive reloads.
    pub fn handle(&self) -> Emitter {
        Emitter::new(self.switch.clone())
    }

    /// The emitter for `cfg`: the running one when nothing changed, else a new hub. `audit` is the
    /// audit trail's sink (which takes the audited kinds, and every kind when `audit_security`).
    pub fn emitter(
        &self,
        cfg: Option<&EventsConfig>,
        audit: Option<Arc<dyn Sink>>,
        audit_security: bool,
        privacy: &Privacy,
        metrics: &Metrics,
    ) -> Result<(Emitter, Activation), exporter::Fault> {
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
                Arc::new(Outputs { stdout, exporters })
            }
        };
        // Always a hub: the admin API's recent events are kept even without outputs.
        let by_kind = Kind::ALL.iter().map(|k| metrics.events(k.as_str())).collect();
        let hub = Some(Arc::new(Hub {
            privacy: privacy.clone(),
            by_kind,
            outputs: outputs.clone(),
            audit,
            audit_security,
            recent: self.recent.clone(),
        }));
        *cur = Some((cfg, outputs));
        let activation = Activation { switch: self.switch.clone(), hub: Mutex::new(Some(hub)) };
        Ok((Emitter::new(self.switch.clone()), activation))
    }
}

/// A compiled configuration's hub, put in force when its runtime starts (`Runtime::start`): a reload
/// refused after compiling leaves the running configuration's outputs in force.
pub struct Activation {
    switch: Arc<Switch>,
    hub: Mutex<Option<Option<Arc<Hub>>>>,
}

impl Activation {
    /// Sends the process's events to this configuration's outputs (once; later calls do nothing).
    pub fn activate(&self) {
        if let Some(hub) = self.hub.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            self.switch.0.store(hub);
        }
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

/// Lets one event a second through, and says how many it held back since the last.
#[derive(Debug, Default)]
pub struct Sampler {
    second: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl Sampler {
    /// `Some(held back since the last one)` when this one may go out.
    pub fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.second.load(Relaxed);
        if last != now && self.second.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            Some(self.held.swap(0, Relaxed))
        } else {
            self.held.fetch_add(1, Relaxed);
            None
        }
    }
}
