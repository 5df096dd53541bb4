//! Live statistics for the dashboard (`GET /admin/v1/stats`, `/admin/v1/stats/stream`).
//!
//! The data path pays a few relaxed atomic increments per request ([`Live::record`], from the request's
//! `Completion`): the request count, one latency bucket and, on a refusal, its problem type, in a shard
//! of its own thread (no cache line is shared between cores, no lock is taken, nothing is allocated).
//! One request in [`SAMPLE_EVERY`] and every refusal are also offered to a bounded queue (a full queue
//! drops them) that feeds the top lists of principals and client addresses; what stages noted (the
//! authentication method of a failure, inspection hits) is counted from the refusal path
//! ([`Live::noted`]).
//!
//! A thread started once per process ([`Live::start`]) drains that queue every 50 ms (woken by time,
//! never by a sender: no request pays a futex call or a context switch) and, once a second, sums the
//! shards into a per-second point kept in a five-minute ring; latency percentiles come from the
//! histogram deltas of the last ten seconds. Readers take a [`Snapshot`]. The state lives in
//! `Lasting`, so it survives reloads.

use crate::events::{Kind, Noted, Value};
use crate::exchange::Principal;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the live-stats thread drains the samples' queue.
const POLL: Duration = Duration::from_millis(50);
/// Samples queued for the top lists between two drains; more are dropped.
const QUEUE: usize = 4096;
/// Counter shards; each thread writes to one (threads beyond this share).
const SHARDS: usize = 16;
/// Latency buckets: two per power of two of microseconds, up to about 2^31 µs (35 minutes).
const BUCKETS: usize = 64;
/// One successful request in this many (per thread) feeds the top lists; every refusal does.
pub const SAMPLE_EVERY: u32 = 8;
/// Per-second points kept: five minutes.
pub const RING: usize = 300;
/// Seconds the percentiles and rates are taken over.
pub const WINDOW: usize = 10;
/// Slots of each top list (space-saving).
pub const TOP_SLOTS: usize = 64;
/// Entries of each top list shown.
pub const TOP_SHOWN: usize = 10;
/// The top lists' counts are halved this often, so they show who is active now.
const DECAY_EVERY: u64 = 60;

/// The problem types the gateway answers with (`Reject::kind`), so a refusal is counted by index.
/// Anything else is counted as the last one, `other`.
const TYPES: [&str; 28] = [
    "bad-request",
    "ambiguous-framing",
    "invalid-path",
    "not-found",
    "method-not-allowed",
    "payload-too-large",
    "uri-too-long",
    "headers-too-large",
    "unauthorized",
    "cors-forbidden",
    "forbidden",
    "forbidden-property",
    "malformed-json",
    "unsupported-media-type",
    "insecure-transport",
    "expectation-failed",
    "bad-gateway",
    "upstream-error",
    "no-healthy-upstream",
    "gateway-timeout",
    "too-many-requests",
    "store-unavailable",
    "internal-error",
    "ip-denied",
    "banned",
    "invalid-request",
    "request-blocked",
    "other",
];
const UNAUTHORIZED: usize = 8;
const TOO_MANY: usize = 20;

/// Authentication methods (`method` of an `authn.failure` event).
const METHODS: [&str; 6] = ["api_key", "jwt", "introspection", "mtls", "signature", "other"];

/// One thread's counters, on cache lines of their own.
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    by_type: [AtomicU64; TYPES.len()],
    latency: [AtomicU64; BUCKETS],
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            requests: AtomicU64::new(0),
            by_type: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, and its count of successful requests (for sampling).
    static LOCAL: (usize, std::cell::Cell<u32>) =
        (NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS, const { std::cell::Cell::new(0) });
}

/// A request offered to the top lists.
struct Sample {
    principal: Option<Arc<Principal>>,
    client_ip: IpAddr,
    refused: bool,
    /// How many requests this one stands for (sampled successes stand for [`SAMPLE_EVERY`]).
    weight: u32,
}

/// The live statistics of the process.
pub struct Live {
    shards: Box<[Shard]>,
    /// The status last answered with each problem type (for the legend).
    status: [AtomicU16; TYPES.len()],
    authn_by_method: [AtomicU64; METHODS.len()],
    inspect_hits: AtomicU64,
    running: AtomicBool,
    tx: SyncSender<Sample>,
    rx: Mutex<Option<Receiver<Sample>>>,
    state: Mutex<State>,
    /// The tick count, sent once a second (what `stats/stream` waits on).
    tick: tokio::sync::watch::Sender<u64>,
}

impl Default for Live {
    fn default() -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        Live {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            status: std::array::from_fn(|_| AtomicU16::new(0)),
            authn_by_method: std::array::from_fn(|_| AtomicU64::new(0)),
            inspect_hits: AtomicU64::new(0),
            running: AtomicBool::new(false),
            tx,
            rx: Mutex::new(Some(rx)),
            state: Mutex::new(State::default()),
            tick: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Cumulative totals at one instant.
#[derive(Clone)]
struct Totals {
    requests: u64,
    by_type: [u64; TYPES.len()],
    latency: [u64; BUCKETS],
    authn_by_method: [u64; METHODS.len()],
    inspect_hits: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            requests: 0,
            by_type: [0; TYPES.len()],
            latency: [0; BUCKETS],
            authn_by_method: [0; METHODS.len()],
            inspect_hits: 0,
        }
    }
}

/// What the ticker keeps.
#[derive(Default)]
struct State {
    last: Option<Totals>,
    /// Per-second latency histograms of the last [`WINDOW`] seconds.
    recent: std::collections::VecDeque<[u64; BUCKETS]>,
    /// Per-second rejections by type of the last [`WINDOW`] seconds.
    recent_types: std::collections::VecDeque<[u64; TYPES.len()]>,
    recent_methods: std::collections::VecDeque<[u64; METHODS.len()]>,
    series: std::collections::VecDeque<Point>,
    principals: TopK<String>,
    client_ips: TopK<IpAddr>,
    ticks: u64,
}

/// One second of traffic, as charted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// The second's end, Unix seconds.
    pub t: i64,
    pub requests: u64,
    /// Requests answered with a problem (every type).
    pub rejections: u64,
    pub authn_failures: u64,
    pub rate_limited: u64,
    pub inspect_hits: u64,
    /// Latency percentiles over the [`WINDOW`] seconds ending here, in milliseconds (`null` without
    /// traffic).
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Rejections of this second by problem type (types with none are left out).
    pub by_type: std::collections::BTreeMap<&'static str, u64>,
}

/// A problem type's rejections.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TypeCount {
    /// The problem type's slug (`https://portcullis.dev/problems/<type>`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status last answered with it.
    pub status: u16,
    pub total: u64,
    /// Over the last [`WINDOW`] seconds.
    pub per_second: f64,
}

/// Authentication failures of one method.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MethodCount {
    pub method: &'static str,
    pub total: u64,
    pub per_second: f64,
}

/// A total and its rate over the last [`WINDOW`] seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rate {
    pub total: u64,
    pub per_second: f64,
}

/// Latency percentiles in milliseconds (`null` without traffic in the window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One entry of a top list: estimated requests (sampled) and counted refusals, both decaying.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Top {
    /// The principal (`kind:id`) or client address (as `logging.client_ip` writes it).
    pub name: String,
    pub requests: u64,
    pub refusals: u64,
}

/// `GET /admin/v1/stats`, and each `event: stats` of `/admin/v1/stats/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// RFC 3339.
    pub time: String,
    /// Seconds the rates and percentiles are taken over.
    pub window_seconds: u32,
    pub requests: Rate,
    /// Every request answered with a problem.
    pub rejections: Rate,
    pub rejections_by_type: Vec<TypeCount>,
    pub latency: Latency,
    pub authn_failures: Rate,
    pub authn_failures_by_method: Vec<MethodCount>,
    pub rate_limited: Rate,
    pub inspect_hits: Rate,
    pub top_principals: Vec<Top>,
    pub top_client_ips: Vec<Top>,
    /// Per-second points, oldest first: the last five minutes in a snapshot, the newest one in a
    /// stream frame.
    pub series: Vec<Point>,
}

impl Live {
    /// One answered request (from its `Completion`): a few relaxed increments in this thread's shard;
    /// one in [`SAMPLE_EVERY`] and every refusal also go to the top lists' queue.
    pub fn record(
        &self,
        status: u16,
        elapsed: Duration,
        problem: Option<&'static str>,
        principal: Option<&Arc<Principal>>,
        client_ip: IpAddr,
    ) {
        let (shard, sampled) = LOCAL.with(|(shard, count)| {
            let sampled = problem.is_none() && {
                let n = count.get().wrapping_add(1);
                count.set(n);
                n % SAMPLE_EVERY == 0
            };
            (*shard, sampled)
        });
        let Some(s) = self.shards.get(shard) else { return };
        s.requests.fetch_add(1, Relaxed);
        if let Some(b) = s.latency.get(bucket(elapsed)) {
            b.fetch_add(1, Relaxed);
        }
        if let Some(slug) = problem {
            let i = type_index(slug);
            s.by_type[i].fetch_add(1, Relaxed);
            self.status[i].store(status, Relaxed);
        }
        if (sampled || problem.is_some()) && self.running.load(Relaxed) {
            let weight = if problem.is_some() { 1 } else { SAMPLE_EVERY };
            let sample = Sample { principal: principal.cloned(), client_ip, refused: problem.is_some(), weight };
            // A full queue drops the sample: the lists are estimates.
            let _ = self.tx.try_send(sample);
        }
    }

    /// What the stages of one request noted (refusal path): authentication failures by method and
    /// inspection hits (detections that did not block too).
    pub fn noted(&self, noted: &[Noted]) {
        for n in noted {
            match n.kind {
                Kind::AuthnFailure => {
                    let method = n.attrs.iter().find(|(k, _)| *k == "method").map(|(_, v)| v);
                    let i = match method {
                        Some(Value::Str(m)) => METHODS.iter().position(|x| *x == m).unwrap_or(METHODS.len() - 1),
                        _ => METHODS.len() - 1,
                    };
                    self.authn_by_method[i].fetch_add(1, Relaxed);
                }
                Kind::InspectDetection => {
                    self.inspect_hits.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
    }

    /// Starts the thread that feeds the top lists and ticks once a second (once per process; later
    /// calls do nothing).
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(rx) = self.rx.lock().unwrap_or_else(PoisonError::into_inner).take() else { return Ok(()) };
        let live = Arc::downgrade(self);
        self.running.store(true, Relaxed);
        std::thread::Builder::new().name("live-stats".into()).spawn(move || {
            let mut next = Instant::now() + Duration::from_secs(1);
            let mut more = false;
            loop {
                // Polled, never blocked on: a receiver waiting in `recv` makes every sender wake it,
                // a futex call and a context switch for every sampled request. Woken by time
                // instead, it drains what came meanwhile, and at once again when it found a full
                // queue (a flood of refusals, each of which is offered).
                if !more {
                    std::thread::sleep(POLL.min(next.saturating_duration_since(Instant::now())));
                }
                let Some(live) = live.upgrade() else { return };
                more = match rx.try_recv() {
                    Ok(sample) => live.take(sample, &rx) >= QUEUE,
                    Err(std::sync::mpsc::TryRecvError::Empty) => false,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                };
                if Instant::now() >= next {
                    live.tick_now(unix_now());
                    next += Duration::from_secs(1);
                    // After a stall (a suspended process), tick from now on rather than catch up.
                    if next < Instant::now() {
                        next = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
        })?;
        Ok(())
    }

    /// Puts one sample and whatever else is queued (up to [`QUEUE`] in all) into the top lists; returns
    /// how many.
    fn take(&self, first: Sample, rx: &Receiver<Sample>) -> usize {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut add = |s: Sample| {
            let refusals = u64::from(s.refused);
            if let Some(p) = &s.principal {
                let name = format!("{}:{}", p.kind.as_str(), p.id);
                st.principals.add(name, u64::from(s.weight), refusals);
            }
            st.client_ips.add(s.client_ip, u64::from(s.weight), refusals);
        };
        add(first);
        let mut n = 1;
        for s in rx.try_iter().take(QUEUE - 1) {
            add(s);
            n += 1;
        }
        n
    }

    /// The ticks so far, changed once a second (`stats/stream` waits on it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tick.subscribe()
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.shards.iter() {
            t.requests += s.requests.load(Relaxed);
            for (acc, c) in t.by_type.iter_mut().zip(&s.by_type) {
                *acc += c.load(Relaxed);
            }
            for (acc, c) in t.latency.iter_mut().zip(&s.latency) {
                *acc += c.load(Relaxed);
            }
        }
        for (acc, c) in t.authn_by_method.iter_mut().zip(&self.authn_by_method) {
            *acc = c.load(Relaxed);
        }
        t.inspect_hits = self.inspect_hits.load(Relaxed);
        t
    }

    /// One second passed (`now`: Unix seconds): the point of that second, and the lists' decay.
    fn tick_now(&self, now: i64) {
        let totals = self.totals();
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let last = st.last.take().unwrap_or_default();
        let latency: [u64; BUCKETS] = std::array::from_fn(|i| totals.latency[i].saturating_sub(last.latency[i]));
        let types: [u64; TYPES.len()] = std::array::from_fn(|i| totals.by_type[i].saturating_sub(last.by_type[i]));
        let methods: [u64; METHODS.len()] =
            std::array::from_fn(|i| totals.authn_by_method[i].saturating_sub(last.authn_by_method[i]));
        push_bounded(&mut st.recent, latency, WINDOW);
        push_bounded(&mut st.recent_types, types, WINDOW);
        push_bounded(&mut st.recent_methods, methods, WINDOW);
        let window = sum_window(&st.recent);
        let point = Point {
            t: now,
            requests: totals.requests.saturating_sub(last.requests),
            rejections: types.iter().sum(),
            authn_failures: types[UNAUTHORIZED],
            rate_limited: types[TOO_MANY],
            inspect_hits: totals.inspect_hits.saturating_sub(last.inspect_hits),
            p50_ms: percentile(&window, 0.50),
            p90_ms: percentile(&window, 0.90),
            p99_ms: percentile(&window, 0.99),
            by_type: TYPES.iter().zip(types).filter(|(_, n)| *n > 0).map(|(t, n)| (*t, n)).collect(),
        };
        push_bounded(&mut st.series, point, RING);
        st.last = Some(totals);
        st.ticks += 1;
        if st.ticks.is_multiple_of(DECAY_EVERY) {
            st.principals.decay();
            st.client_ips.decay();
        }
        let ticks = st.ticks;
        drop(st);
        self.tick.send_replace(ticks);
    }

    /// The statistics now. `client_ip` writes an address as `logging.client_ip` says; `full_series`
    /// gives the five-minute ring, else only its newest point.
    pub fn snapshot(&self, client_ip: &dyn Fn(IpAddr) -> String, full_series: bool) -> Snapshot {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let totals = st.last.clone().unwrap_or_default();
        let secs = st.recent.len().max(1) as f64;
        let rate = |n: u64| (n as f64 / secs * 100.0).round() / 100.0;
        let window_requests: u64 = st.series.iter().rev().take(st.recent.len()).map(|p| p.requests).sum();
        let types = sum_window(&st.recent_types);
        let methods = sum_window(&st.recent_methods);
        let window_inspect: u64 = st.series.iter().rev().take(st.recent.len()).map(|p| p.inspect_hits).sum();
        let latency = sum_window(&st.recent);
        let rejections_by_type = TYPES
            .iter()
            .enumerate()
            .filter(|(i, _)| totals.by_type[*i] > 0)
            .map(|(i, kind)| TypeCount {
                kind,
                status: self.status[i].load(Relaxed),
                total: totals.by_type[i],
                per_second: rate(types[i]),
            })
            .collect();
        let authn_failures_by_method = METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| totals.authn_by_method[*i] > 0)
            .map(|(i, method)| MethodCount { method, total: totals.authn_by_method[i], per_second: rate(methods[i]) })
            .collect();
        let series = if full_series {
            st.series.iter().cloned().collect()
        } else {
            st.series.back().cloned().into_iter().collect()
        };
        Snapshot {
            time: crate::events::rfc3339_ms(unix_now() * 1000),
            window_seconds: WINDOW as u32,
            requests: Rate { total: totals.requests, per_second: rate(window_requests) },
            rejections: Rate { total: totals.by_type.iter().sum(), per_second: rate(types.iter().sum()) },
            rejections_by_type,
            latency: Latency {
                p50_ms: percentile(&latency, 0.50),
                p90_ms: percentile(&latency, 0.90),
                p99_ms: percentile(&latency, 0.99),
            },
            authn_failures: Rate { total: totals.by_type[UNAUTHORIZED], per_second: rate(types[UNAUTHORIZED]) },
            authn_failures_by_method,
            rate_limited: Rate { total: totals.by_type[TOO_MANY], per_second: rate(types[TOO_MANY]) },
            inspect_hits: Rate { total: totals.inspect_hits, per_second: rate(window_inspect) },
            top_principals: st.principals.top(TOP_SHOWN, |n| n.clone()),
            top_client_ips: st.client_ips.top(TOP_SHOWN, |ip| client_ip(*ip)),
            series,
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn push_bounded<T>(q: &mut std::collections::VecDeque<T>, item: T, max: usize) {
    if q.len() == max {
        q.pop_front();
    }
    q.push_back(item);
}

fn sum_window<const N: usize>(q: &std::collections::VecDeque<[u64; N]>) -> [u64; N] {
    let mut sum = [0u64; N];
    for row in q {
        for (acc, n) in sum.iter_mut().zip(row) {
            *acc += n;
        }
    }
    sum
}

fn type_index(slug: &str) -> usize {
    TYPES.iter().position(|t| *t == slug).unwrap_or(TYPES.len() - 1)
}

/// The bucket of a latency: two per power of two of microseconds (bucket `2k` holds `[2^k, 1.5·2^k)`,
/// `2k+1` holds `[1.5·2^k, 2^(k+1))`); under 1 µs is bucket 0.
fn bucket(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    if us < 2 {
        return 0;
    }
    let k = 63 - us.leading_zeros() as usize;
    let half = ((us >> (k - 1)) & 1) as usize;
    (2 * k + half).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in milliseconds.
fn bucket_upper_ms(i: usize) -> f64 {
    let k = i / 2;
    let base = (1u64 << k.min(62)) as f64;
    let upper = if i.is_multiple_of(2) { base * 1.5 } else { base * 2.0 };
    upper / 1000.0
}

/// The `q` quantile of a histogram: the upper bound of the bucket it falls in (so at most a third high).
fn percentile(h: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in h.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some((bucket_upper_ms(i) * 1000.0).round() / 1000.0);
        }
    }
    None
}

/// A bounded top list (the space-saving algorithm): [`TOP_SLOTS`] slots; a newcomer when all are
/// taken replaces the smallest and inherits its count, so a heavy hitter is never missed.
struct TopK<K> {
    slots: Vec<Slot<K>>,
    index: HashMap<K, usize>,
}

struct Slot<K> {
    key: K,
    requests: u64,
    refusals: u64,
}

impl<K> Default for TopK<K> {
    fn default() -> Self {
        TopK { slots: Vec::new(), index: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> TopK<K> {
    fn add(&mut self, key: K, requests: u64, refusals: u64) {
        if let Some(&i) = self.index.get(&key) {
            if let Some(s) = self.slots.get_mut(i) {
                s.requests += requests;
                s.refusals += refusals;
            }
            return;
        }
        if self.slots.len() < TOP_SLOTS {
            self.index.insert(key.clone(), self.slots.len());
            self.slots.push(Slot { key, requests, refusals });
            return;
        }
        let Some((i, _)) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.requests) else { return };
        let slot = &mut self.slots[i];
        self.index.remove(&slot.key);
        self.index.insert(key.clone(), i);
        slot.key = key;
        slot.requests += requests;
        slot.refusals = refusals;
    }

    /// Halves every count and forgets the entries that reach zero.
    fn decay(&mut self) {
        for s in &mut self.slots {
            s.requests /= 2;
            s.refusals /= 2;
        }
        self.slots.retain(|s| s.requests > 0);
        self.index = self.slots.iter().enumerate().map(|(i, s)| (s.key.clone(), i)).collect();
    }

    fn top(&self, n: usize, name: impl Fn(&K) -> String) -> Vec<Top> {
        let mut v: Vec<&Slot<K>> = self.slots.iter().collect();
        v.sort_by(|a, b| b.requests.cmp(&a.requests).then(b.refusals.cmp(&a.refusals)));
        v.into_iter().take(n).map(|s| Top { name: name(&s.key), requests: s.requests, refusals: s.refusals }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::PrincipalKind;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn principal(id: &str) -> Arc<Principal> {
        Arc::new(Principal {
            id: id.into(),
            kind: PrincipalKind::ApiKey,
            roles: vec![],
            scopes: vec![],
            claims: None,
            tenant: None,
            identity: Default::default(),
        })
    }

    #[test]
    fn buckets_are_ordered_and_bounded() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(2)), 2);
        assert_eq!(bucket(Duration::from_micros(3)), 3);
        assert_eq!(bucket(Duration::from_micros(4)), 4);
        assert_eq!(bucket(Duration::from_micros(6)), 5);
        assert_eq!(bucket(Duration::from_secs(100_000)), BUCKETS - 1);
        let mut last = 0;
        for us in 1..100_000u64 {
            let b = bucket(Duration::from_micros(us));
            assert!(b >= last);
            // The bucket's upper bound is above the value, and at most twice it.
            let upper = bucket_upper_ms(b) * 1000.0;
            assert!(upper > us as f64 && upper <= 2.0 * us as f64 + 2.0, "{us} -> {b} ({upper})");
            last = b;
        }
    }

    #[test]
    fn percentiles_of_a_window() {
        let live = Live::default();
        for _ in 0..90 {
            live.record(200, Duration::from_millis(1), None, None, ip("192.0.2.1"));
        }
        for _ in 0..9 {
            live.record(200, Duration::from_millis(10), None, None, ip("192.0.2.1"));
        }
        live.record(200, Duration::from_millis(100), None, None, ip("192.0.2.1"));
        live.tick_now(1000);
        let s = live.snapshot(&|ip| ip.to_string(), true);
        let (p50, p90, p99) = (s.latency.p50_ms.unwrap(), s.latency.p90_ms.unwrap(), s.latency.p99_ms.unwrap());
        assert!((1.0..=1.5).contains(&p50), "{p50}");
        assert!((1.0..=1.5).contains(&p90), "{p90}");
        assert!((10.0..=15.0).contains(&p99), "{p99}");
        assert_eq!(s.requests.total, 100);
        assert_eq!(s.requests.per_second, 100.0);
        assert_eq!(s.series.len(), 1);
        assert_eq!(s.series[0].t, 1000);
        // Nothing in the next ten seconds: the window empties, the totals stay.
        for t in 1001..=1010 {
            live.tick_now(t);
        }
        let s = live.snapshot(&|ip| ip.to_string(), true);
        assert_eq!(s.latency, Latency::default());
        assert_eq!(s.requests, Rate { total: 100, per_second: 0.0 });
        assert_eq!(s.series.len(), 11);
    }

    #[test]
    fn rejections_by_type_and_what_stages_noted() {
        let live = Live::default();
        let c = ip("203.0.113.9");
        live.record(200, Duration::from_millis(1), None, None, c);
        live.record(401, Duration::from_millis(1), Some("unauthorized"), None, c);
        live.record(401, Duration::from_millis(1), Some("unauthorized"), None, c);
        live.record(429, Duration::from_millis(1), Some("too-many-requests"), None, c);
        live.record(418, Duration::from_millis(1), Some("no-such-type"), None, c);
        live.noted(&[
            Noted::new(Kind::AuthnFailure, "missing").attr("method", "api_key"),
            Noted::new(Kind::AuthnFailure, "bad").attr("method", "jwt"),
            Noted::new(Kind::AuthnFailure, "bad"),
            Noted::new(Kind::InspectDetection, "sqli"),
            Noted::new(Kind::RateLimited, "x"),
        ]);
        live.tick_now(50);
        let s = live.snapshot(&|ip| ip.to_string(), false);
        assert_eq!(s.rejections.total, 4);
        let types: Vec<_> = s.rejections_by_type.iter().map(|t| (t.kind, t.status, t.total)).collect();
        assert_eq!(types, [("unauthorized", 401, 2), ("too-many-requests", 429, 1), ("other", 418, 1)]);
        assert_eq!(s.authn_failures, Rate { total: 2, per_second: 2.0 });
        assert_eq!(s.rate_limited.total, 1);
        assert_eq!(s.inspect_hits.total, 1);
        let methods: Vec<_> = s.authn_failures_by_method.iter().map(|m| (m.method, m.total)).collect();
        assert_eq!(methods, [("api_key", 1), ("jwt", 1), ("other", 1)]);
        let p = &s.series[0];
        assert_eq!((p.requests, p.rejections, p.authn_failures, p.rate_limited), (5, 4, 2, 1));
        assert_eq!(p.by_type.get("unauthorized"), Some(&2));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rejections_by_type"][0]["type"], "unauthorized");
        assert_eq!(json["series"][0]["by_type"]["too-many-requests"], 1);
    }

    #[test]
    fn top_lists_from_the_thread() {
        let live = Arc::new(Live::default());
        live.start().unwrap();
        live.start().unwrap();
        let alice = principal("alice");
        let bob = principal("bob");
        for _ in 0..(SAMPLE_EVERY * 20) {
            live.record(200, Duration::from_millis(1), None, Some(&alice), ip("192.0.2.1"));
        }
        for _ in 0..5 {
            live.record(403, Duration::from_millis(1), Some("forbidden"), Some(&bob), ip("198.51.100.7"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ticks = live.subscribe();
        loop {
            let s = live.snapshot(&|ip| format!("ip:{ip}"), false);
            let ok = s.top_principals.first().is_some_and(|t| t.name == "api_key:alice" && t.requests == 160)
                && s.top_principals.get(1).is_some_and(|t| t.name == "api_key:bob" && t.refusals == 5)
                && s.top_client_ips.iter().any(|t| t.name == "ip:198.51.100.7" && t.refusals == 5)
                && !s.series.is_empty();
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The ticker ticks.
        let t0 = *ticks.borrow_and_update();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *ticks.borrow() == t0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn space_saving_keeps_the_heavy_hitter() {
        let mut t = TopK::<u32>::default();
        for i in 0..1000u32 {
            t.add(i, 1, 0);
            if i % 4 == 0 {
                t.add(7, 1, 1);
            }
        }
        assert!(t.slots.len() <= TOP_SLOTS);
        let top = t.top(3, |k| k.to_string());
        assert_eq!(top[0].name, "7");
        assert!(top[0].requests >= 250);
        t.decay();
        let top = t.top(1, |k| k.to_string());
        assert_eq!(top[0].name, "7");
        for _ in 0..20 {
            t.decay();
        }
        assert!(t.slots.is_empty() && t.index.is_empty());
    }
}
