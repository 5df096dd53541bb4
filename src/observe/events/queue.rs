//! The exporters' side of their bounded queues: one thread (`events-export`) with a small
//! current-thread tokio runtime runs every exporter of one configuration, so a slow or dead collector
//! never touches the proxy's worker threads. Each exporter takes events from its queue in batches (up to
//! `batch` events, waiting at most `flush_interval` for a batch to fill), sends them, and on failure
//! sends the same batch again after an exponential backoff with full jitter (capped). While a batch is
//! being retried the queue fills up, and further events are dropped (and counted) when they are offered:
//! memory stays within the bound.
//!
//! When its configuration is replaced (a reload that changed `events:`) and the last request using the
//! old one finishes, an exporter sends what is left in its queue, retrying for at most [`DRAIN`], then
//! stops; what it could not send is counted as dropped.

use super::http::HttpExport;
use super::syslog::Syslog;
use crate::events::Event;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

/// How long a replaced exporter keeps trying to send what is left in its queue.
pub const DRAIN: Duration = Duration::from_secs(5);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// What became of one send.
#[derive(Debug)]
pub enum Outcome {
    Sent,
    /// Nothing was accepted, for a reason that may pass (connection, 429, 5xx): send again later.
    Retry(String),
    /// Refused for good (a 4xx other than 408/429): sending again cannot help.
    Drop(String),
    /// Some items refused for good, some (by index in the batch) to send again, the rest accepted.
    Partial {
        dropped: usize,
        retry: Vec<usize>,
    },
}

/// Where an exporter sends.
pub enum Transport {
    Syslog(Syslog),
    Http(HttpExport),
}

impl Transport {
    async fn send(&mut self, batch: &[Arc<Event>]) -> Outcome {
        match self {
            Transport::Syslog(s) => s.send(batch).await,
            Transport::Http(h) => h.send(batch).await,
        }
    }
}

/// `portcullis_exporter_events_total{exporter,result}` and `portcullis_exporter_queue_depth{exporter}`.
#[derive(Clone, Debug)]
pub struct Counters {
    pub sent: Counter,
    pub retried: Counter,
    pub dropped: Counter,
    pub depth: Gauge,
}

impl Counters {
    pub fn new(metrics: &crate::observe::metrics::Metrics, exporter: &str) -> Counters {
        Counters {
            sent: metrics.exporter_events(exporter, "sent"),
            retried: metrics.exporter_events(exporter, "retried"),
            dropped: metrics.exporter_dropped(exporter),
            depth: metrics.exporter_queue_depth(exporter),
        }
    }
}

/// One exporter's sending loop.
pub struct Worker {
    pub name: String,
    pub rx: Receiver<Arc<Event>>,
    pub transport: Transport,
    pub batch: usize,
    pub flush: Duration,
    pub counters: Counters,
    /// The problem last logged (`None` while sending works).
    pub problem: Option<String>,
}

/// Starts the exporters' thread. Returns at once; the thread ends when every worker has stopped.
pub fn spawn(workers: Vec<Worker>) -> std::io::Result<()> {
    if workers.is_empty() {
        return Ok(());
    }
    std::thread::Builder::new().name("events-export".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "event exporters cannot start their runtime; their events are dropped");
                return;
            }
        };
        rt.block_on(async move {
            let tasks: Vec<_> = workers.into_iter().map(|w| tokio::spawn(w.run())).collect();
            for t in tasks {
                let _ = t.await;
            }
        });
    })?;
    Ok(())
}

/// Exponential backoff with full jitter: a random wait in [0, min(cap, base * 2^attempt)].
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(20)).min(BACKOFF_CAP);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms).max(10))
}

fn count(c: &Counter, n: usize) {
    c.inc_by(n as u64);
}

impl Worker {
    pub async fn run(mut self) {
        let mut drain_until = None;
        loop {
            let batch = self.next_batch().await;
            if batch.is_empty() {
                break;
            }
            if drain_until.is_none() && self.rx.is_closed() {
                drain_until = Some(Instant::now() + DRAIN);
            }
            if drain_until.is_some_and(|until| Instant::now() >= until) {
                // Replaced, and the drain time is over: what is left is dropped without more tries.
                let mut left = batch.len();
                while self.rx.try_recv().is_ok() {
                    self.counters.depth.dec();
                    left += 1;
                }
                count(&self.counters.dropped, left);
                break;
            }
            self.deliver(batch, &mut drain_until).await;
        }
        tracing::debug!(exporter = self.name.as_str(), "event exporter stopped");
    }

    /// Up to `batch` events: waits for the first, then at most `flush` for more. Empty when the queue
    /// is closed and empty.
    async fn next_batch(&mut self) -> Vec<Arc<Event>> {
        let mut batch = Vec::new();
        match self.rx.recv().await {
            Some(e) => batch.push(e),
            None => return batch,
        }
        let deadline = Instant::now() + self.flush;
        while batch.len() < self.batch {
            match self.rx.try_recv() {
                Ok(e) => {
                    batch.push(e);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            if self.flush.is_zero() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        self.counters.depth.dec_by(i64::try_from(batch.len()).unwrap_or(i64::MAX));
        batch
    }

    /// Logs a problem when it starts or changes (not once per batch while it lasts).
    fn trouble(&mut self, why: String, what: &'static str) {
        if self.problem.as_deref() != Some(why.as_str()) {
            tracing::warn!(exporter = self.name.as_str(), error = why.as_str(), "{what}");
            self.problem = Some(why);
        }
    }

    /// Sends one batch until it is accepted or refused for good (or the drain time is over).
    async fn deliver(&mut self, mut batch: Vec<Arc<Event>>, drain_until: &mut Option<Instant>) {
        let mut attempt = 0u32;
        loop {
            match self.transport.send(&batch).await {
                Outcome::Sent => {
                    count(&self.counters.sent, batch.len());
                    if self.problem.take().is_some() {
                        tracing::info!(exporter = self.name.as_str(), "event exporter sends again");
                    }
                    return;
                }
                Outcome::Drop(why) => {
                    count(&self.counters.dropped, batch.len());
                    self.trouble(why, "event collector refuses batches; they are dropped");
                    return;
                }
                Outcome::Partial { dropped, retry } => {
                    count(&self.counters.dropped, dropped);
                    count(&self.counters.sent, batch.len().saturating_sub(dropped + retry.len()));
                    if dropped > 0 {
                        self.trouble("items refused".into(), "event collector refuses some events; they are dropped");
                    }
                    batch = retry.into_iter().filter_map(|i| batch.get(i).cloned()).collect();
                    if batch.is_empty() {
                        return;
                    }
                }
                Outcome::Retry(why) => self.trouble(why, "event exporter cannot send; retrying with backoff"),
            }
            if drain_until.is_none() && self.rx.is_closed() {
                *drain_until = Some(Instant::now() + DRAIN);
            }
            let wait = backoff(attempt);
            if drain_until.is_some_and(|until| Instant::now() + wait > until) {
                count(&self.counters.dropped, batch.len());
                return;
            }
            count(&self.counters.retried, batch.len());
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for attempt in [0, 1, 5, 30, 1000] {
            for _ in 0..100 {
                let w = backoff(attempt);
                assert!(w <= BACKOFF_CAP, "{w:?}");
                assert!(w >= Duration::from_millis(10));
            }
        }
        let early = (0..200).map(|_| backoff(0)).max().unwrap();
        assert!(early <= BACKOFF_BASE);
        let late: std::collections::HashSet<_> = (0..50).map(|_| backoff(12)).collect();
        assert!(late.len() > 1, "jitter varies the wait");
    }
}
