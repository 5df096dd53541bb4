//! The configured outputs of security events (`events:`): JSON lines on stdout, exporters (syslog,
//! HTTP collectors), and the audit trail. [`Hub`] is the [`Sink`] behind every [`Emitter`]: it counts
//! each event, writes client addresses as `logging.client_ip` says, and offers the event to each output's
//! bounded queue. A full queue drops the event and counts the drop; emitting never blocks.

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

/// The outputs an `events:` section configures; kept across reloads that leave it unchanged.
struct Outputs {
    stdout: Option<Stdout>,
}

impl Outputs {
    fn is_empty(&self) -> bool {
        self.stdout.is_none()
    }

    fn offer(&self, event: &Arc<Event>) {
        if let Some(s) = &self.stdout {
            s.offer(event);
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
        self.outputs.offer(&Arc::new(event));
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
}

impl Kept {
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
    ) -> Result<Emitter, String> {
        let cfg = cfg.cloned().unwrap_or_default();
        let mut cur = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = match cur.as_ref() {
            Some((old, outputs)) if *old == cfg => outputs.clone(),
            _ => {
                let stdout = if cfg.stdout {
                    Some(Stdout::spawn(metrics.exporter_dropped("stdout")).map_err(|e| format!("events: {e}"))?)
                } else {
                    None
                };
                Arc::new(Outputs { stdout })
            }
        };
        let hub = if outputs.is_empty() && audit.is_none() {
            None
        } else {
            let by_kind = Kind::ALL.iter().map(|k| metrics.events(k.as_str())).collect();
            Some(Arc::new(Hub { privacy: privacy.clone(), by_kind, outputs: outputs.clone(), audit, audit_security }))
        };
        self.switch.0.store(hub);
        *cur = Some((cfg, outputs));
        Ok(Emitter::new(self.switch.clone()))
    }
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
