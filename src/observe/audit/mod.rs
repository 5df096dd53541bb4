//! The tamper-evident audit trail (`audit:`): append-only JSON lines, each carrying the SHA-256 of the
//! line before, with checkpoints signed by an Ed25519 key (format in [`chain`]).
//!
//! The gateway's trail is a [`Sink`] behind the events hub: it queues events for its own writer
//! thread, so the proxy never waits on the disk. Security events are dropped (and counted) when the
//! queue is full; the audited kinds (reloads, keys, bans, admin actions: rare, and the record that
//! matters) are always queued. The `keys` and `bans` commands append synchronously ([`CliTrail`]).
//! This module never writes a secret: events carry none, and the signing key is only used to sign.

pub mod chain;
pub mod cli;
pub mod verify;
mod writer;

use crate::events::{Event, Sink};
use crate::observe::metrics::Metrics;
use crate::observe::privacy::Privacy;
use crate::secret::Secret;
use crate::units::{Bytes, Dur};
use aws_lc_rs::signature::Ed25519KeyPair;
use chain::Signer;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use serde::{de, Deserialize, Deserializer};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use writer::Writer;

/// Security events waiting for the writer beyond this are dropped (and counted).
const QUEUE: usize = 8192;
/// A bound on queued audited records too, only so a runaway could never exhaust memory.
const AUDITED_QUEUE: usize = 1 << 16;

/// The top-level `audit:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The trail's file (created mode 0600 when missing).
    pub file: PathBuf,
    /// The Ed25519 private key that signs checkpoints: PKCS#8 PEM (`portcullis audit keygen`, or
    /// `openssl genpkey -algorithm ed25519`), usually `${file:/path}`.
    pub signing_key: Secret,
    /// Records between signed checkpoints.
    #[serde(default = "default_every")]
    pub checkpoint_every: u32,
    /// And at most this long after an unanchored record.
    #[serde(default = "default_interval")]
    pub checkpoint_interval: Dur,
    /// `always` (after each write) or a duration (at most that long after a write).
    #[serde(default)]
    pub fsync: Fsync,
    /// Rotate when the file grows past this size.
    #[serde(default)]
    pub rotate_bytes: Option<Bytes>,
    /// Security events too, beside reloads, keys, bans and admin actions.
    #[serde(default)]
    pub security_events: bool,
}

fn default_every() -> u32 {
    100
}
fn default_interval() -> Dur {
    Dur::secs(10)
}

/// When written records reach the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fsync {
    #[default]
    Always,
    Within(Duration),
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Fsync;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`always` or a duration such as 100ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Fsync, E> {
                if v == "always" {
                    return Ok(Fsync::Always);
                }
                crate::units::parse_duration(v)
                    .map(Fsync::Within)
                    .map_err(|e| E::custom(format!("fsync: `always` or a duration: {e}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// The signing key from its PKCS#8 PEM form (the error never repeats the value).
pub fn signing_key(secret: &Secret) -> Result<Ed25519KeyPair, String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(secret.expose().as_bytes())
        .map_err(|_| "signing_key is not a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`)".to_string())?;
    Ed25519KeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|_| "signing_key is not an Ed25519 private key".into())
}

fn writer_for(cfg: &AuditConfig) -> Result<Writer, String> {
    if cfg.checkpoint_every == 0 {
        return Err("checkpoint_every must be at least 1".into());
    }
    let interval_ms = u64::try_from(cfg.checkpoint_interval.0.as_millis()).unwrap_or(u64::MAX);
    let signer = Signer::new(signing_key(&cfg.signing_key)?, cfg.checkpoint_every, interval_ms);
    probe(&cfg.file).map_err(|e| format!("`{}`: {e}", cfg.file.display()))?;
    Ok(Writer::new(cfg.file.clone(), signer, cfg.checkpoint_every, cfg.rotate_bytes.map(|b| b.0)))
}

/// Whether the trail's file can be appended to (or created), without writing: `check` and a reload
/// that is then refused must leave the file alone.
fn probe(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            if std::fs::metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(std::io::Error::other("its directory is not a directory"))
            }
        }
        Err(e) => Err(e),
    }
}

/// The gateway's trail: a queue and a writer thread, started by the first event (so `check`, or a
/// config built and then refused, never touches the file).
pub struct Trail {
    queue: Arc<Queue>,
    run: Mutex<Option<Run>>,
    started: OnceLock<()>,
    /// Signalled (by disconnecting) when the writer thread has finished.
    finished: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

struct Queue {
    state: Mutex<Pending>,
    ready: Condvar,
    dropped: Counter,
    depth: Gauge,
}

#[derive(Default)]
struct Pending {
    events: VecDeque<Event>,
    optional: usize,
    closed: bool,
    /// The writer waits with no deadline (nothing written lately): the next event must wake it.
    idle: bool,
}

/// While events keep coming, the writer takes them in groups at most this far apart, so a busy gateway
/// pays no wake-up (futex call and context switch) per event, and `fsync: always` is one sync a group.
const GROUP: Duration = Duration::from_millis(10);

/// A group this large wakes the writer at once.
const WAKE_BATCH: usize = 512;

impl Queue {
    fn push(&self, event: Event) {
        let mut p = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let audited = event.kind.is_audited();
        let full = if audited { p.events.len() >= AUDITED_QUEUE } else { p.optional >= QUEUE };
        if full {
            self.dropped.inc();
            return;
        }
        p.optional += usize::from(!audited);
        p.events.push_back(event);
        self.depth.set(i64::try_from(p.events.len()).unwrap_or(i64::MAX));
        // Woken for an audited kind (reloads, keys, bans: written at once), for the first event after
        // a quiet spell, or for a large group; otherwise the writer, busy or waiting at most `GROUP`,
        // takes the event with the next group (no futex call on the request path).
        let n = p.events.len();
        if audited || (n == 1 && p.idle) || n == WAKE_BATCH {
            self.ready.notify_one();
        }
    }

    /// What is queued, waiting until something is or `deadline` passes; and whether the queue closed.
    fn take(&self, deadline: Option<Instant>) -> (Vec<Event>, bool) {
        let mut p = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while p.events.is_empty() && !p.closed {
            p.idle = deadline.is_none();
            match deadline {
                None => p = self.ready.wait(p).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let Some(left) = d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) else {
                        break;
                    };
                    p = self.ready.wait_timeout(p, left).unwrap_or_else(PoisonError::into_inner).0;
                }
            }
        }
        p.idle = false;
        p.optional = 0;
        self.depth.set(0);
        (p.events.drain(..).collect(), p.closed)
    }
}

impl Sink for Trail {
    fn emit(&self, event: Event) {
        self.started.get_or_init(|| {
            if let Some(run) = self.run.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let (done, finished) = std::sync::mpsc::channel::<()>();
                let spawned = std::thread::Builder::new().name("audit".into()).spawn(move || {
                    run.run();
                    drop(done);
                });
                match spawned {
                    Ok(_) => *self.finished.lock().unwrap_or_else(PoisonError::into_inner) = Some(finished),
                    Err(e) => tracing::error!(error = %e, "audit trail: cannot start its writer thread"),
                }
            }
        });
        self.queue.push(event);
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        {
            let mut p = self.queue.state.lock().unwrap_or_else(PoisonError::into_inner);
            p.closed = true;
            self.queue.ready.notify_one();
        }
        // Give the writer a moment to write what is queued and a last checkpoint (at shutdown, and
        // when a reload replaced the trail); bounded, should the disk hang.
        if let Some(finished) = self.finished.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = finished.recv_timeout(Duration::from_secs(2));
        }
    }
}

impl Trail {
    fn spawn(cfg: &AuditConfig, metrics: &Metrics) -> Result<Trail, String> {
        let writer = writer_for(cfg)?;
        let queue = Arc::new(Queue {
            state: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            dropped: metrics.exporter_dropped("audit"),
            depth: metrics.exporter_queue_depth("audit"),
        });
        let counts = (metrics.exporter_events("audit", "sent"), metrics.exporter_events("audit", "failed"));
        let run = Run { writer, queue: queue.clone(), interval: cfg.checkpoint_interval.0, fsync: cfg.fsync, counts };
        Ok(Trail { queue, run: Mutex::new(Some(run)), started: OnceLock::new(), finished: Mutex::new(None) })
    }
}

struct Run {
    writer: Writer,
    queue: Arc<Queue>,
    interval: Duration,
    fsync: Fsync,
    counts: (Counter, Counter),
}

impl Run {
    fn run(mut self) {
        let mut dirty_since: Option<Instant> = None;
        let mut failures: u64 = 0;
        // Set after a group was written: the next one is taken at most `GROUP` later.
        let mut grouping: Option<Instant> = None;
        loop {
            let checkpoint_at = self.writer.unanchored_since.map(|t| t + self.interval);
            let sync_at = match self.fsync {
                Fsync::Within(d) => dirty_since.map(|t| t + d),
                Fsync::Always => None,
            };
            let deadline = [checkpoint_at, sync_at, grouping].into_iter().flatten().min();
            if let Some(g) = grouping {
                // Let the group gather (events pushed meanwhile do not wake this thread).
                let left = g.saturating_duration_since(Instant::now());
                if !left.is_zero() && deadline == Some(g) {
                    std::thread::sleep(left);
                }
            }
            let (batch, closed) = self.queue.take(deadline);
            grouping = (!batch.is_empty()).then(|| Instant::now() + GROUP);
            if !batch.is_empty() {
                let n = batch.len() as u64;
                match self.writer.append(&batch) {
                    Ok(()) => {
                        self.counts.0.inc_by(n);
                    }
                    Err(e) => {
                        self.counts.1.inc_by(n);
                        failures += 1;
                        // Logged at the first failure and then at powers of two: a trail that cannot
                        // be written must not flood the log too.
                        if failures.is_power_of_two() {
                            tracing::error!(error = %e, records = n, failures, "audit trail: cannot append");
                        }
                    }
                }
            }
            let now = Instant::now();
            if closed || checkpoint_at.is_some_and(|t| t <= now) {
                if let Err(e) = self.writer.checkpoint() {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::error!(error = %e, failures, "audit trail: cannot write a checkpoint");
                    }
                    // Try again an interval later, not in a busy loop.
                    if self.writer.unanchored_since.is_some() {
                        self.writer.unanchored_since = Some(now);
                    }
                }
            }
            if self.writer.dirty {
                let since = *dirty_since.get_or_insert(now);
                let due = match self.fsync {
                    Fsync::Always => true,
                    Fsync::Within(d) => closed || since + d <= now,
                };
                if due {
                    if let Err(e) = self.writer.sync() {
                        failures += 1;
                        if failures.is_power_of_two() {
                            tracing::error!(error = %e, failures, "audit trail: fsync failed");
                        }
                    }
                    dirty_since = None;
                }
            }
            if closed {
                return;
            }
        }
    }
}

/// The trail across reloads: the same writer while the `audit:` section is unchanged.
#[derive(Default)]
pub struct Kept {
    current: Mutex<Option<(AuditConfig, Arc<Trail>)>>,
}

impl Kept {
    /// The trail's sink for `cfg` (`None` without an `audit:` section).
    pub fn trail(&self, cfg: Option<&AuditConfig>, metrics: &Metrics) -> Result<Option<Arc<dyn Sink>>, String> {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(cfg) = cfg else {
            *cur = None;
            return Ok(None);
        };
        if let Some((old, trail)) = cur.as_ref() {
            if old == cfg {
                return Ok(Some(trail.clone()));
            }
        }
        let trail = Arc::new(Trail::spawn(cfg, metrics)?);
        *cur = Some((cfg.clone(), trail.clone()));
        Ok(Some(trail))
    }
}

/// The trail for a command (`keys`, `bans`): each event is appended, anchored by a checkpoint and
/// synced before the command returns.
pub struct CliTrail {
    writer: Mutex<Writer>,
    privacy: Privacy,
    failed: Mutex<Option<String>>,
}

impl CliTrail {
    pub fn open(cfg: &AuditConfig, privacy: Privacy) -> Result<CliTrail, String> {
        Ok(CliTrail { writer: Mutex::new(writer_for(cfg)?), privacy, failed: Mutex::new(None) })
    }

    /// The first error of an append, if any.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Sink for CliTrail {
    fn emit(&self, mut event: Event) {
        if let Some(ip) = event.client_ip.take() {
            (event.client_ip, event.client_ip_hash) = self.privacy.client_ip(ip);
        }
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let done = w.append(std::slice::from_ref(&event)).and_then(|()| w.checkpoint()).and_then(|()| w.sync());
        if let Err(e) = done {
            self.failed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e.to_string());
        }
    }
}

pub use crate::events::actor;

#[cfg(test)]
mod tests;
