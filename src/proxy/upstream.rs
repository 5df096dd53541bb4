//! Upstream pools: targets with weights, load balancing (weighted round-robin, or least outstanding
//! requests by power of two choices), passive ejection after consecutive connection failures, and a
//! per-target pool of idle keep-alive HTTP/1.1 connections.

use super::h1::Conn;
use super::section as file;
use crate::observe::metrics::Metrics;
use prometheus_client::metrics::gauge::Gauge;
use rustls_pki_types::ServerName;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Upstream {
    pub name: Arc<str>,
    pub targets: Vec<Arc<Target>>,
    schedule: Vec<usize>,
    next: AtomicUsize,
    pub balance: file::Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    pub max_idle: usize,
    pub pool_idle_timeout: Duration,
    pub passive: file::Passive,
    pub tls: Option<UpstreamTls>,
    /// The file section this was built from: a reload reuses the upstream (pools, health) when unchanged.
    pub source: file::Upstream,
    health_started: AtomicBool,
}

pub struct UpstreamTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: Option<ServerName<'static>>,
}

pub struct Target {
    /// `host:port` as configured.
    pub address: String,
    pub host: String,
    pub weight: u32,
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    pub outstanding: AtomicUsize,
    idle: Mutex<Vec<(Conn, Instant)>>,
    gauge: Gauge,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Target {
    pub fn new(cfg: &file::Target, upstream: &str, metrics: &Metrics) -> Result<Target, String> {
        let (host, port) =
            cfg.address.rsplit_once(':').ok_or_else(|| format!("target `{}` needs host:port", cfg.address))?;
        port.parse::<u16>().map_err(|_| format!("target `{}` has a bad port", cfg.address))?;
        if cfg.weight == 0 || cfg.weight > 1000 {
            return Err(format!("target `{}`: weight must be 1..=1000", cfg.address));
        }
        let gauge = metrics.upstream_target(upstream, &cfg.address);
        gauge.set(1);
        Ok(Target {
            address: cfg.address.clone(),
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            weight: cfg.weight,
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            gauge,
        })
    }

    pub fn available(&self) -> bool {
        // The clock is read only for a target that has been ejected at some point.
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        self.healthy.load(Ordering::Relaxed) && (until == 0 || until <= now_ms())
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Active health check verdict.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.gauge.set(i64::from(healthy));
    }

    pub fn connect_failed(&self, passive: &file::Passive) {
        if passive.consecutive_failures == 0 {
            return;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= passive.consecutive_failures {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(now_ms() + passive.ejection_time.0.as_millis() as u64, Ordering::Relaxed);
            tracing::warn!(address = %self.address, "upstream target ejected after consecutive connection failures");
        }
    }

    pub fn connect_succeeded(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// An idle pooled connection, if one is still open and young enough at `now`.
    pub fn checkout(&self, max_age: Duration, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((mut conn, since)) = idle.pop() {
            if now.saturating_duration_since(since) < max_age && conn.reusable() {
                return Some(conn);
            }
        }
        None
    }

    pub fn checkin(&self, conn: Conn, max_idle: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max_idle {
            idle.push((conn, Instant::now()));
        }
    }
}

impl Upstream {
    pub fn new(
        name: &str,
        cfg: &file::Upstream,
        tls: Option<UpstreamTls>,
        metrics: &Metrics,
    ) -> Result<Upstream, String> {
        if cfg.targets.is_empty() {
            return Err(format!("upstream `{name}` has no targets"));
        }
        let targets =
            cfg.targets.iter().map(|t| Target::new(t, name, metrics).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        // Weighted round-robin schedule, interleaved so a heavy target does not get long runs.
        let max_w = targets.iter().map(|t| t.weight).max().unwrap_or(1);
        let mut schedule = Vec::new();
        for round in 0..max_w {
            for (i, t) in targets.iter().enumerate() {
                if t.weight > round {
                    schedule.push(i);
                }
            }
        }
        Ok(Upstream {
            name: name.into(),
            targets,
            schedule,
            next: AtomicUsize::new(0),
            balance: cfg.balance,
            connect_timeout: cfg.connect_timeout.0,
            response_timeout: cfg.response_timeout.0,
            retries: cfg.retries,
            max_idle: cfg.max_idle_per_target,
            pool_idle_timeout: cfg.pool_idle_timeout.0,
            passive: cfg.passive.clone(),
            tls,
            source: cfg.clone(),
            health_started: AtomicBool::new(false),
        })
    }

    /// True the first time only: health checks start once per upstream, even across reloads.
    pub fn start_once(&self) -> bool {
        !self.health_started.swap(true, Ordering::Relaxed)
    }

    /// Chooses a target that is available and not `exclude`d (the one that just failed).
    pub fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let ok = |i: usize| Some(i) != exclude && self.targets[i].available();
        let n = self.targets.len();
        if n == 1 {
            return ok(0).then_some(0);
        }
        match self.balance {
            file::Balance::RoundRobin => {
                let len = self.schedule.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..len).map(|k| self.schedule[(start + k) % len]).find(|&i| ok(i))
            }
            file::Balance::LeastRequest => {
                let load = |i: usize| {
                    (self.targets[i].outstanding.load(Ordering::Relaxed) as u64 + 1) * 1000
                        / u64::from(self.targets[i].weight)
                };
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                match (ok(a), ok(b)) {
                    (true, true) => Some(if load(b) < load(a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => (0..n).filter(|&i| ok(i)).min_by_key(|&i| load(i)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Dur;

    fn upstream(weights: &[u32], balance: file::Balance) -> Upstream {
        let cfg = file::Upstream {
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, w)| file::Target { address: format!("127.0.0.1:{}", 1000 + i), weight: *w })
                .collect(),
            balance,
            connect_timeout: Dur::secs(1),
            response_timeout: Dur::secs(1),
            retries: 1,
            max_idle_per_target: 1,
            pool_idle_timeout: Dur::secs(1),
            health_check: None,
            passive: file::Passive { consecutive_failures: 2, ejection_time: Dur::secs(60) },
            tls: None,
        };
        Upstream::new("u", &cfg, None, &Metrics::new()).unwrap()
    }

    #[test]
    fn weighted_round_robin() {
        let u = upstream(&[3, 1], file::Balance::RoundRobin);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[u.pick(None).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn ejection_and_exclusion() {
        let u = upstream(&[1, 1], file::Balance::RoundRobin);
        u.targets[0].connect_failed(&u.passive);
        assert!(u.targets[0].available());
        u.targets[0].connect_failed(&u.passive);
        assert!(!u.targets[0].available());
        for _ in 0..10 {
            assert_eq!(u.pick(None), Some(1));
        }
        assert_eq!(u.pick(Some(1)), None);
        u.targets[1].set_healthy(false);
        assert_eq!(u.pick(None), None);
    }

    #[test]
    fn least_request_prefers_idle_target() {
        let u = upstream(&[1, 1], file::Balance::LeastRequest);
        u.targets[0].outstanding.store(10, Ordering::Relaxed);
        for _ in 0..50 {
            assert_eq!(u.pick(None), Some(1));
        }
    }
}
