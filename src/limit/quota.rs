//! Quotas: at most `limit` requests per calendar day or month (UTC) per principal (or any key a rate
//! limit can use), named under `quotas:` and applied by routes (`route.quotas: [name]`). Tiers give
//! roles other amounts.
//!
//! Counts live in memory (sharded) and, with `store:`, in the node's SQLite store: each quota's counts
//! of the current period are loaded when it is first compiled, and what was counted since is written
//! every 200 ms by a thread of its own (never on the request path) and once more at shutdown, so a
//! restart does not reset a quota. A crash loses at most the last 200 ms of counts. Keys in the store
//! are SHA-256 digests of what identifies the caller (never the principal's id itself) and stay the
//! same across restarts.
//!
//! With `store: redis` a quota is counted once for the fleet: [`QUOTA_LUA`] increments
//! `portcullis:q:<quota>:<period index>:<hex SHA-256 of the key parts>`, expires it at the period's
//! end, and undoes the increment over the limit. When Redis cannot answer, `on_store_failure:
//! fail_open` counts on this node (as a `store: local` quota does) and `fail_closed` answers 503.
//!
//! A refusal is 429 with `Retry-After` until the period ends; every answer carries the quota in
//! `RateLimit-Policy` (`q` the quota, `w` the period's length) and `RateLimit` (`r` what is left, `t`
//! seconds until the period ends).

use super::KeyPart;
use crate::exchange::{Exchange, Place, Reject};
use crate::fleet::{Batched, Fleet, OnFailure};
use crate::store::{Store, StoreError};
use crate::units::{civil_from_days, days_from_civil};
use prometheus_client::metrics::counter::Counter;
use rusqlite::params;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `quotas.NAME`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub limit: u64,
    pub period: Period,
    /// Default `[principal]` (a public route's callers are counted by address).
    #[serde(default = "default_key")]
    pub key: Vec<KeyPart>,
    /// Per role (from authentication), another amount; the largest of the principal's applies.
    #[serde(default)]
    pub tiers: BTreeMap<String, u64>,
    /// Where the counts live: `local` (default: this node's memory and `store:`) or `redis` (one
    /// count for the fleet; needs the top-level `redis:` section).
    #[serde(default)]
    pub store: super::Store,
    /// Required with `store: redis`: `fail_open` (count on this node) or `fail_closed` (503) when
    /// Redis cannot answer in time.
    #[serde(default)]
    pub on_store_failure: Option<OnFailure>,
}

fn default_key() -> Vec<KeyPart> {
    vec![KeyPart::Principal]
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    /// The period holding `secs` (Unix time), and its start and end.
    fn at(self, secs: i64) -> (i64, i64, i64) {
        let days = secs.div_euclid(86_400);
        match self {
            Period::Day => (days, days * 86_400, (days + 1) * 86_400),
            Period::Month => {
                let (y, m, _) = civil_from_days(days);
                let index = y * 12 + (m - 1);
                let start = days_from_civil(y, m, 1) * 86_400;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (index, start, days_from_civil(ny, nm, 1) * 86_400)
            }
        }
    }
}

const COMPONENT: &str = "quotas";
const STEPS: &[&str] = &["CREATE TABLE quotas (
       name TEXT NOT NULL,
       key BLOB NOT NULL,
       period INTEGER NOT NULL,
       count INTEGER NOT NULL,
       PRIMARY KEY (name, key, period)
     );"];

const SHARDS: usize = 16;
const FLUSH: Duration = Duration::from_millis(200);

type Key = [u8; 16];

#[derive(Default, Clone, Copy)]
struct Count {
    period: i64,
    count: u64,
    /// Counted since the last write to the store.
    unwritten: u64,
}

/// One quota's counts, shared by every route naming it and kept across reloads.
pub struct QuotaState {
    name: String,
    period: Period,
    shards: Box<[Mutex<HashMap<Key, Count>>]>,
    store: Option<Mutex<Store>>,
    writer: std::sync::Once,
}

impl QuotaState {
    /// Counts in memory only.
    fn memory(name: &str, period: Period) -> QuotaState {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        QuotaState { name: name.to_owned(), period, shards, store: None, writer: std::sync::Once::new() }
    }

    /// Counts in memory and in the store at `store` (this period's loaded from it).
    fn open(name: &str, period: Period, store: Option<&Path>) -> Result<QuotaState, String> {
        let state = QuotaState::memory(name, period);
        let Some(path) = store else { return Ok(state) };
        let mut s = Store::open(path).map_err(|e| e.to_string())?;
        s.migrate(COMPONENT, STEPS).map_err(|e| e.to_string())?;
        // What this quota counted in the period still running.
        let current = period.at(unix_now()).0;
        {
            let conn = s.conn();
            let mut q =
                conn.prepare("SELECT key, period, count FROM quotas WHERE name = ?1").map_err(|e| e.to_string())?;
            let rows = q
                .query_map([name], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                .map_err(|e| e.to_string())?;
            for row in rows {
                let (key, period, count) = row.map_err(|e| e.to_string())?;
                let Ok(key) = Key::try_from(key.as_slice()) else { continue };
                if period == current {
                    lock(&state.shards[shard(&key)])
                        .insert(key, Count { period, count: count.max(0) as u64, unwritten: 0 });
                }
            }
        }
        Ok(QuotaState { store: Some(Mutex::new(s)), ..state })
    }

    /// Starts the thread that writes the counts (once; it ends when the state is dropped).
    fn start_writer(self: &Arc<Self>) {
        if self.store.is_none() {
            return;
        }
        self.writer.call_once(|| {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new().name(format!("quota-{}", self.name)).spawn(move || flusher(weak));
            if let Err(e) = spawned {
                tracing::error!(quota = %self.name, error = %e, "quota writer not started; counts are written at shutdown only");
            }
        });
    }

    /// Counts one request for `key` in `period` if under `limit`; returns (allowed, used after).
    fn take(&self, key: Key, period: i64, limit: u64) -> (bool, u64) {
        let mut map = lock(&self.shards[shard(&key)]);
        let c = map.entry(key).or_default();
        if c.period != period {
            *c = Count { period, count: 0, unwritten: 0 };
        }
        if c.count >= limit {
            return (false, c.count);
        }
        c.count += 1;
        c.unwritten += 1;
        (true, c.count)
    }

    /// Writes what was counted since the last write. Keys of ended periods are dropped from memory.
    pub fn flush(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else { return Ok(()) };
        let now = unix_now();
        let mut pending = Vec::new();
        for s in self.shards.iter() {
            let mut map = lock(s);
            let current = self.period.at(now).0;
            map.retain(|_, c| c.period >= current || c.unwritten > 0);
            for (k, c) in map.iter_mut().filter(|(_, c)| c.unwritten > 0) {
                pending.push((*k, c.period, c.unwritten));
                c.unwritten = 0;
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let mut store = lock(store);
        let result = (|| {
            let tx = store.conn().transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "INSERT INTO quotas (name, key, period, count) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name, key, period) DO UPDATE SET count = count + excluded.count",
                )?;
                for (k, period, n) in &pending {
                    up.execute(params![self.name, &k[..], period, *n as i64])?;
                }
            }
            tx.commit()
        })();
        result.map_err(|e| store.error(e))
    }
}

fn flusher(state: Weak<QuotaState>) {
    loop {
        std::thread::sleep(FLUSH);
        let Some(state) = state.upgrade() else { return };
        if let Err(e) = state.flush() {
            tracing::warn!(quota = %state.name, error = %e, "quota counts not written; retrying");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn shard(key: &Key) -> usize {
    usize::from(key[0]) % SHARDS
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The states of every quota, by name and store, kept across reloads.
#[derive(Default)]
pub struct Kept {
    states: crate::exchange::Registry<QuotaState>,
}

impl Kept {
    /// Writes every live quota's counts (at shutdown).
    pub fn flush(&self) {
        for state in self.states.live() {
            if let Err(e) = state.flush() {
                tracing::warn!(quota = %state.name, error = %e, "quota counts not written at shutdown");
            }
        }
    }
}

/// One caller's count in a quota's running period (the admin API's view; the key is the hex digest of
/// the quota's key parts, never the parts themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub quota: String,
    pub key: String,
    pub used: u64,
    /// The running period's start (Unix seconds).
    pub period_start: i64,
}

impl Kept {
    /// The counts of every quota of this node in its running period (quotas counted in Redis show
    /// only what this node counted while Redis could not answer).
    pub fn usage(&self) -> Vec<Usage> {
        let now = unix_now();
        let mut out = Vec::new();
        for state in self.states.live() {
            let (current, start, _) = state.period.at(now);
            for shard in state.shards.iter() {
                for (k, c) in lock(shard).iter().filter(|(_, c)| c.period == current && c.count > 0) {
                    out.push(Usage {
                        quota: state.name.clone(),
                        key: crate::fleet::hex(k),
                        used: c.count,
                        period_start: start,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.quota, &a.key).cmp(&(&b.quota, &b.key)));
        out
    }

    /// Resets quota `name`'s counts (of one key, given as its hex digest, or of every key) in memory and
    /// in the store: how many counts were reset, `None` when no quota has that name. Blocking (SQLite).
    pub fn reset(&self, name: &str, key: Option<&str>) -> Result<Option<usize>, String> {
        let mut found = None;
        for state in self.states.live().into_iter().filter(|s| s.name == name) {
            let mut n = 0;
            for shard in state.shards.iter() {
                for (k, c) in lock(shard).iter_mut() {
                    if key.is_none_or(|want| crate::fleet::hex(k) == want) && c.count > 0 {
                        *c = Count { period: c.period, count: 0, unwritten: 0 };
                        n += 1;
                    }
                }
            }
            if let Some(store) = &state.store {
                let mut store = lock(store);
                let conn = store.conn();
                let deleted = match key {
                    None => conn.execute("DELETE FROM quotas WHERE name = ?1", [name]),
                    Some(k) => {
                        let bytes: Vec<u8> = (0..k.len() / 2)
                            .filter_map(|i| u8::from_str_radix(k.get(2 * i..2 * i + 2)?, 16).ok())
                            .collect();
                        conn.execute("DELETE FROM quotas WHERE name = ?1 AND key = ?2", params![name, bytes])
                    }
                };
                let deleted = deleted.map_err(|e| e.to_string())?;
                n = n.max(deleted);
            }
            found = Some(found.unwrap_or(0) + n);
        }
        Ok(found)
    }
}

/// The count of each `KEYS[i]` (`ARGV`, two per key: the limit, the Unix second the period ends):
/// INCR, EXPIREAT the period's end on first use, and over the limit the INCR is undone. Returns two
/// integers per key: allowed (1 or 0), used (after).
pub const QUOTA_LUA: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local ends = math.floor(tonumber(ARGV[2 * i]))
  local n = redis.call('INCR', key)
  if n == 1 then
    redis.call('EXPIREAT', key, ends)
  end
  if n > limit then
    redis.call('DECR', key)
    out[#out + 1] = 0
    out[#out + 1] = n - 1
  else
    out[#out + 1] = 1
    out[#out + 1] = n
  end
end
return out
"#;

/// A `store: redis` quota's link to the fleet's Redis.
struct SharedQuota {
    batched: Arc<Batched>,
    on_failure: OnFailure,
    /// `portcullis:q:<quota>:`
    prefix: String,
    /// `portcullis_rate_limit_store_failures_total{limit="quota:<name>",mode}`.
    failures: Counter,
}

/// A compiled quota.
pub struct Quota {
    name: String,
    limit: u64,
    period: Period,
    key: Vec<KeyPart>,
    tiers: Vec<(String, u64)>,
    state: Arc<QuotaState>,
    shared: Option<SharedQuota>,
}

impl std::fmt::Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Quota {
    pub fn compile(
        name: &str,
        c: &QuotaConfig,
        store: Option<&PathBuf>,
        kept: &Kept,
        fleet: Option<&Arc<Fleet>>,
        metrics: &crate::observe::metrics::Metrics,
    ) -> Result<Quota, String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(format!("quotas: `{name}`: names are letters, digits, `-`, `_` and `.`"));
        }
        if c.limit == 0 || c.tiers.values().any(|n| *n == 0) {
            return Err(format!("quotas.{name}: a limit must be at least 1"));
        }
        if c.key.is_empty() {
            return Err(format!("quotas.{name}.key is empty"));
        }
        if c.key.iter().any(|k| matches!(k, KeyPart::Body(_))) {
            return Err(format!("quotas.{name}.key: a quota cannot be keyed by a body field"));
        }
        let shared = match (c.store, c.on_store_failure, fleet) {
            (super::Store::Local, None, _) => None,
            (super::Store::Local, Some(_), _) => {
                return Err(format!("quotas.{name}.on_store_failure applies only with `store: redis`"))
            }
            (super::Store::Redis, _, None) => {
                return Err(format!("quotas.{name}: `store: redis` needs the top-level `redis:` section"))
            }
            (super::Store::Redis, None, Some(_)) => {
                return Err(format!(
                    "quotas.{name}: `store: redis` needs `on_store_failure: fail_open` (count on this node) \
                     or `fail_closed` (503) for when Redis cannot answer"
                ))
            }
            (super::Store::Redis, Some(on_failure), Some(fleet)) => Some(SharedQuota {
                batched: fleet.batched("quota", QUOTA_LUA, 2),
                on_failure,
                prefix: format!("portcullis:q:{name}:"),
                failures: metrics.rate_limit_store_failures(&format!("quota:{name}"), on_failure.as_str()),
            }),
        };
        // One state per name and store file: a quota moved to another store starts from that store.
        let id = format!("{name}\u{0}{}", store.map(|p| p.display().to_string()).unwrap_or_default());
        let id = format!("{id}\u{0}{:?}", c.period);
        let mut failed = None;
        let state = kept.states.get_or_insert(
            &id,
            |_| {},
            || match QuotaState::open(name, c.period, store.map(PathBuf::as_path)) {
                Ok(s) => s,
                Err(e) => {
                    failed = Some(e);
                    QuotaState::memory(name, c.period)
                }
            },
        );
        if let Some(e) = failed {
            return Err(format!("quotas.{name}: {e}"));
        }
        state.start_writer();
        Ok(Quota {
            name: name.to_owned(),
            limit: c.limit,
            period: c.period,
            key: c.key.clone(),
            tiers: c.tiers.iter().map(|(r, n)| (r.clone(), *n)).collect(),
            state,
            shared,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Before authentication when the key needs no principal (rare for a quota), else after
    /// authorization.
    pub fn place(&self) -> Place {
        if self.tiers.is_empty() && !self.key.iter().any(KeyPart::needs_principal) {
            Place::PreAuthLimits
        } else {
            Place::PrincipalLimits
        }
    }

    fn limit_for(&self, ex: &Exchange<'_>) -> (Option<&str>, u64) {
        let mut best = (None, self.limit);
        if let Some(p) = ex.principal.as_deref() {
            for (role, n) in &self.tiers {
                if *n > best.1 && p.roles.iter().any(|r| r == role) {
                    best = (Some(role.as_str()), *n);
                }
            }
        }
        best
    }

    /// A SHA-256 digest (first 16 bytes) of what identifies the caller: the same on every start.
    fn key_of(&self, ex: &Exchange<'_>) -> Key {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        super::write_parts(&self.key, 64, ex, None, &mut ctx);
        let digest = ctx.finish();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.as_ref()[..16]);
        key
    }

    /// The caller's count in Redis, the same on every node: `portcullis:q:<quota>:<period index>:<hex
    /// SHA-256 of the key parts>`.
    fn shared_key_of(&self, prefix: &str, period: i64, ex: &Exchange<'_>) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        super::write_parts(&self.key, 64, ex, None, &mut ctx);
        format!("{prefix}{period}:{}", crate::fleet::hex(ctx.finish().as_ref()))
    }

    /// Counts the request against the quota (429 once it is used up) and writes the headers. A
    /// `store: redis` quota counts in Redis; when Redis cannot answer, `fail_open` counts on this node
    /// and `fail_closed` refuses with 503.
    pub async fn check(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        let now = unix_now();
        let (period, start, end) = self.period.at(now);
        let (tier, limit) = self.limit_for(ex);
        let answer = match &self.shared {
            None => None,
            Some(s) => {
                let key = self.shared_key_of(&s.prefix, period, ex);
                let v = s.batched.eval(vec![key], vec![limit as f64, end as f64]).await;
                match v.ok().filter(|v| v.len() == 2) {
                    Some(v) => Some((v[0] == 1, u64::try_from(v[1]).unwrap_or(0))),
                    None => {
                        s.failures.inc();
                        if s.on_failure == OnFailure::FailClosed {
                            return Err(Reject::StoreUnavailable);
                        }
                        None
                    }
                }
            }
        };
        let (allowed, used) = match answer {
            Some(a) => a,
            None => self.state.take(self.key_of(ex), period, limit),
        };
        let left = (end - now).max(1) as u64;
        let name = match tier {
            Some(role) => format!("\"{}.{role}\"", self.name),
            None => format!("\"{}\"", self.name),
        };
        let h = ex.limit_headers.get_or_insert_with(Box::default);
        h.add(&format!("{name};q={limit};w={}", end - start), &name, limit.saturating_sub(used) as u32, left);
        if allowed {
            Ok(())
        } else {
            h.retry_after = Some(h.retry_after.unwrap_or(0).max(left));
            ex.event(
                crate::events::Noted::new(crate::events::Kind::QuotaExceeded, "quota")
                    .rule(self.name.to_string())
                    .attr("limit", limit)
                    .attr("used", used),
            );
            Err(Reject::RateLimited)
        }
    }
}

/// A route's quotas at one place of its chain.
#[derive(Debug)]
pub struct Quotas {
    quotas: Vec<Arc<Quota>>,
    place: Place,
}

impl Quotas {
    pub fn new(quotas: Vec<Arc<Quota>>, place: Place) -> Quotas {
        Quotas { quotas, place }
    }

    pub fn place(&self) -> Place {
        self.place
    }

    pub fn describe(&self) -> String {
        self.quotas.iter().map(|q| format!("quota {}", q.name())).collect::<Vec<_>>().join(", ")
    }

    /// Each quota in turn; the first used up refuses (later ones are not counted).
    pub async fn check(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        for q in &self.quotas {
            q.check(ex).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn periods_are_utc_calendar_days_and_months() {
        // 2026-11-30T13:48:08Z
        let t = 1_796_046_088;
        let (_, start, end) = Period::Day.at(t);
        assert_eq!((start, end), (1_795_996_800, 1_795_996_800 + 86_400));
        let (m, start, end) = Period::Month.at(t);
        assert_eq!(m, 2026 * 12 + 10);
        assert_eq!(start, days_from_civil(2026, 11, 1) * 86_400);
        assert_eq!(end, days_from_civil(2026, 12, 1) * 86_400);
        let (_, start, end) = Period::Month.at(days_from_civil(2026, 12, 31) * 86_400 + 5);
        assert_eq!((start, end), (days_from_civil(2026, 12, 1) * 86_400, days_from_civil(2027, 1, 1) * 86_400));
        for d in [-1000, 0, 59, 10_957, 20_000, 40_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn counts_are_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pc-quota-{}-{}", std::process::id(), unix_now()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let a = QuotaState::open("q", Period::Day, Some(&path)).unwrap();
        let period = Period::Day.at(unix_now()).0;
        for _ in 0..3 {
            assert!(a.take([1; 16], period, 5).0);
        }
        a.flush().unwrap();
        let b = QuotaState::open("q", Period::Day, Some(&path)).unwrap();
        assert_eq!(b.take([1; 16], period, 5), (true, 4));
        assert_eq!(b.take([1; 16], period, 5), (true, 5));
        assert_eq!(b.take([1; 16], period, 5), (false, 5));
        // A new period starts from zero.
        assert_eq!(b.take([1; 16], period + 1, 5), (true, 1));
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
