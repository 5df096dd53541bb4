//! Revoked JWT ids: a `jti` deny list, consulted after the verified-token cache, so a token revoked
//! while it sits in the cache is refused on its next request (reason `revoked`).
//!
//! An entry names a `jti`, and an issuer or none (any issuer), and carries an end time (unix seconds):
//! after it the entry is ignored and dropped at the next refresh (a token of that id has expired by then).
//!
//! Where entries live, in order of precedence:
//! - with `redis:`, in the fleet's Redis: the sorted set `portcullis:revoked` (member the JSON array
//!   `[issuer, jti]`, `""` for any issuer; score the end time) and the change counter
//!   `portcullis:revoked:version`, which every node polls every [`POLL`], so a revocation reaches every
//!   node within about 250 ms (well under a second);
//! - else with `store:`, in the SQLite state store (component `revoked_tokens`, change counter of the
//!   same name), polled likewise;
//! - else nowhere: the list is empty (`portcullis tokens` refuses to run without one of the two).
//!
//! The lookup is one atomic load and, when the list is not empty, one hash of the `jti`: the entries are
//! held by `jti`, each with the issuers it is revoked for, swapped whole on every change.

pub mod cli;

use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use rusqlite::params;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The store component and its migration steps (append only).
const COMPONENT: &str = "revoked_tokens";
const STEPS: &[&str] = &["CREATE TABLE revoked_tokens (
       issuer TEXT NOT NULL,
       jti TEXT NOT NULL,
       until INTEGER NOT NULL,
       reason TEXT NOT NULL DEFAULT '',
       created_at INTEGER NOT NULL,
       PRIMARY KEY (issuer, jti)
     );
     CREATE INDEX revoked_tokens_by_until ON revoked_tokens (until);"];

/// How often a running gateway looks at the change counter (store or Redis).
pub const POLL: Duration = Duration::from_millis(250);

/// The longest `jti` the list takes (a JWT's `jti` is a short unique id; longer is a mistake).
pub const MAX_JTI: usize = 512;

/// Redis keys.
const ZSET: &str = "portcullis:revoked";
const VERSION: &str = "portcullis:revoked:version";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `None`: revoked whatever the issuer.
    pub issuer: Option<String>,
    pub jti: String,
    /// Unix seconds after which the entry no longer applies.
    pub until: i64,
}

/// Checks a `jti` (or issuer) typed by an operator: not empty, at most [`MAX_JTI`] bytes, no control
/// characters (which a log line or a list would mangle).
pub fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} cannot be empty"));
    }
    if s.len() > MAX_JTI {
        return Err(format!("{what} is longer than {MAX_JTI} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} holds control characters"));
    }
    Ok(())
}

/// Per `jti`: the issuers it is revoked for (`None`: any) and until when.
type Issuers = Vec<(Option<Box<str>>, i64)>;

/// The active entries as one lookup structure.
#[derive(Debug, Default)]
pub struct RevokedSet {
    /// `jti` → (issuer or any, end time).
    by_jti: HashMap<Box<str>, Issuers>,
    /// The earliest end time held (`i64::MAX` when empty): the set is rebuilt after it.
    next_expiry: i64,
}

impl RevokedSet {
    pub fn build(entries: &[Entry], now: i64) -> RevokedSet {
        let mut by_jti: HashMap<Box<str>, Issuers> = HashMap::new();
        let mut next_expiry = i64::MAX;
        for e in entries.iter().filter(|e| e.until > now) {
            next_expiry = next_expiry.min(e.until);
            by_jti.entry(e.jti.as_str().into()).or_default().push((e.issuer.as_deref().map(Into::into), e.until));
        }
        RevokedSet { by_jti, next_expiry }
    }

    pub fn len(&self) -> usize {
        self.by_jti.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_jti.is_empty()
    }

    /// True when `jti` is revoked for `issuer` (or for any issuer) at `now`.
    #[inline]
    pub fn contains(&self, issuer: &str, jti: &str, now: i64) -> bool {
        if self.by_jti.is_empty() {
            return false;
        }
        match self.by_jti.get(jti) {
            None => false,
            Some(list) => list.iter().any(|(iss, until)| *until > now && iss.as_deref().is_none_or(|i| i == issuer)),
        }
    }
}

/// The `revoked_tokens` table of an open store.
pub struct SqliteRevoked {
    store: Store,
}

impl SqliteRevoked {
    pub fn open(path: &Path) -> Result<SqliteRevoked, StoreError> {
        let mut store = Store::open(path)?;
        store.migrate(COMPONENT, STEPS)?;
        Ok(SqliteRevoked { store })
    }

    pub fn version(&self) -> Result<i64, StoreError> {
        self.store.counter(COMPONENT)
    }

    /// Revokes (or re-revokes, with this end time); entries that ended are purged on the way.
    pub fn revoke(&mut self, e: &Entry, reason: &str) -> Result<(), StoreError> {
        let t = now();
        let result = (|| {
            let tx = self.store.conn().transaction()?;
            tx.execute("DELETE FROM revoked_tokens WHERE until <= ?1", [t])?;
            tx.execute(
                "INSERT INTO revoked_tokens (issuer, jti, until, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (issuer, jti) DO UPDATE SET until = excluded.until, reason = excluded.reason",
                params![e.issuer.as_deref().unwrap_or(""), e.jti, e.until, reason, t],
            )?;
            Store::bump(&tx, COMPONENT)?;
            tx.commit()
        })();
        result.map_err(|err| self.store.error(err))
    }

    /// Lifts a revocation; false when there was none.
    pub fn unrevoke(&mut self, issuer: Option<&str>, jti: &str) -> Result<bool, StoreError> {
        let result = (|| {
            let tx = self.store.conn().transaction()?;
            let n = tx.execute(
                "DELETE FROM revoked_tokens WHERE issuer = ?1 AND jti = ?2",
                params![issuer.unwrap_or(""), jti],
            )?;
            Store::bump(&tx, COMPONENT)?;
            tx.commit()?;
            Ok(n > 0)
        })();
        result.map_err(|err| self.store.error(err))
    }

    /// Entries that have not ended at `now` (or all kept ones).
    pub fn list(&mut self, now: Option<i64>) -> Result<Vec<Entry>, StoreError> {
        let result = (|| {
            let conn = self.store.conn();
            let mut stmt = conn.prepare(
                "SELECT issuer, jti, until FROM revoked_tokens WHERE until > ?1 ORDER BY created_at, issuer, jti",
            )?;
            let rows = stmt.query_map([now.unwrap_or(i64::MIN)], |r| {
                let issuer: String = r.get(0)?;
                Ok(Entry { issuer: (!issuer.is_empty()).then_some(issuer), jti: r.get(1)?, until: r.get(2)? })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })();
        result.map_err(|err: rusqlite::Error| self.store.error(err))
    }
}

/// The fleet's revocations in Redis (see the module doc). Blocking calls, on their own connection.
pub struct RedisRevoked {
    conn: crate::fleet::Blocking,
}

fn member(issuer: Option<&str>, jti: &str) -> String {
    serde_json::json!([issuer.unwrap_or(""), jti]).to_string()
}

impl RedisRevoked {
    pub fn new(fleet: &crate::fleet::Fleet) -> RedisRevoked {
        RedisRevoked { conn: fleet.blocking() }
    }

    fn with<T>(&mut self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        self.conn.with(f)
    }

    pub fn version(&mut self) -> Result<i64, String> {
        self.with(|c| redis::cmd("GET").arg(VERSION).query::<Option<i64>>(c)).map(|v| v.unwrap_or(0))
    }

    pub fn revoke(&mut self, e: &Entry) -> Result<(), String> {
        let m = member(e.issuer.as_deref(), &e.jti);
        let t = now();
        self.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("ZREMRANGEBYSCORE")
                .arg(ZSET)
                .arg("-inf")
                .arg(t)
                .ignore()
                .zadd(ZSET, &m, e.until)
                .ignore()
                .incr(VERSION, 1)
                .ignore()
                .query::<()>(c)
        })
    }

    pub fn unrevoke(&mut self, issuer: Option<&str>, jti: &str) -> Result<bool, String> {
        let m = member(issuer, jti);
        self.with(|c| {
            let (n,): (i64,) = redis::pipe().atomic().zrem(ZSET, &m).incr(VERSION, 1).ignore().query(c)?;
            Ok(n > 0)
        })
    }

    pub fn list(&mut self, now: Option<i64>) -> Result<Vec<Entry>, String> {
        let min = now.map_or_else(|| "-inf".to_owned(), |t| format!("({t}"));
        let raw: Vec<(String, f64)> =
            self.with(|c| redis::cmd("ZRANGEBYSCORE").arg(ZSET).arg(&min).arg("+inf").arg("WITHSCORES").query(c))?;
        let mut out = Vec::with_capacity(raw.len());
        for (m, score) in raw {
            match serde_json::from_str::<(String, String)>(&m) {
                Ok((issuer, jti)) => {
                    out.push(Entry { issuer: (!issuer.is_empty()).then_some(issuer), jti, until: score as i64 })
                }
                Err(_) => tracing::warn!(target: "security", "unreadable revocation in redis skipped"),
            }
        }
        Ok(out)
    }
}

enum Backend {
    None,
    Sqlite(PathBuf, Mutex<Option<SqliteRevoked>>),
    Redis(Box<Mutex<RedisRevoked>>),
}

/// The node's deny list: shared by every JWT authenticator, kept across reloads.
pub struct Revoked {
    set: ArcSwap<RevokedSet>,
    backend: Backend,
    /// The change counter when the set was read.
    version: Mutex<Option<i64>>,
    started: AtomicBool,
}

impl Revoked {
    fn with(backend: Backend) -> Revoked {
        Revoked {
            set: ArcSwap::from_pointee(RevokedSet { next_expiry: i64::MAX, ..Default::default() }),
            backend,
            version: Mutex::new(None),
            started: AtomicBool::new(false),
        }
    }

    /// A fixed list (tests and benches).
    pub fn fixed(entries: &[Entry]) -> Revoked {
        let r = Revoked::with(Backend::None);
        r.set.store(Arc::new(RevokedSet::build(entries, now())));
        r
    }

    /// The list in the `store:` file, read at once.
    pub fn sqlite(path: &Path) -> Result<Revoked, String> {
        let r = Revoked::with(Backend::Sqlite(path.to_owned(), Mutex::new(None)));
        r.poll()?;
        Ok(r)
    }

    /// The fleet's list in Redis, read by the poll loop's first turn as soon as it starts (so compiling
    /// a config, `portcullis check` included, never waits for Redis; a node starts while Redis is down
    /// with an empty list, and polls).
    pub fn redis(fleet: &crate::fleet::Fleet) -> Revoked {
        Revoked::with(Backend::Redis(Box::new(Mutex::new(RedisRevoked::new(fleet)))))
    }

    /// True when the token `jti` of `issuer` is revoked now.
    #[inline]
    pub fn contains(&self, issuer: &str, jti: &str, now: i64) -> bool {
        self.set.load().contains(issuer, jti, now)
    }

    /// True when the principal's token (its `jti` claim) is revoked. A token without a string `jti`
    /// cannot be named in the list, so it is never revoked here.
    #[inline]
    pub fn principal_revoked(&self, issuer: &str, p: &crate::exchange::Principal, now: i64) -> bool {
        let set = self.set.load();
        if set.is_empty() {
            return false;
        }
        match p.claims.as_ref().and_then(|c| c.get("jti")) {
            Some(serde_json::Value::String(jti)) => set.contains(issuer, jti, now),
            _ => false,
        }
    }

    /// Entries in force in this process.
    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.load().is_empty()
    }

    /// Reads the list if its counter moved, and drops ended entries; blocking. True when it changed.
    pub fn poll(&self) -> Result<bool, String> {
        let t = now();
        let last = *self.version.lock().unwrap_or_else(|e| e.into_inner());
        let read = match &self.backend {
            Backend::None => None,
            Backend::Redis(r) => {
                let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
                match r.version()? {
                    v if Some(v) == last => None,
                    v => Some((v, r.list(Some(t))?)),
                }
            }
            Backend::Sqlite(path, conn) => {
                let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                if conn.is_none() {
                    *conn = Some(SqliteRevoked::open(path).map_err(|e| e.to_string())?);
                }
                let Some(s) = conn.as_mut() else { return Ok(false) };
                let read = (|| -> Result<_, StoreError> {
                    match s.version()? {
                        v if Some(v) == last => Ok(None),
                        v => Ok(Some((v, s.list(Some(t))?))),
                    }
                })();
                match read {
                    Ok(r) => r,
                    Err(e) => {
                        // Reopened next time: the file may have been replaced.
                        *conn = None;
                        return Err(e.to_string());
                    }
                }
            }
        };
        match read {
            Some((v, entries)) => {
                self.set.store(Arc::new(RevokedSet::build(&entries, t)));
                *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                Ok(true)
            }
            None if self.set.load().next_expiry <= t => {
                // Rebuilt without the ended entries (from what is held: nothing new was written).
                let old = self.set.load_full();
                let kept: Vec<Entry> = old
                    .by_jti
                    .iter()
                    .flat_map(|(jti, l)| {
                        l.iter().map(|(iss, until)| Entry {
                            issuer: iss.as_deref().map(str::to_owned),
                            jti: jti.to_string(),
                            until: *until,
                        })
                    })
                    .collect();
                self.set.store(Arc::new(RevokedSet::build(&kept, t)));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Starts the poll loop once (it ends when the last authenticator holding the list is gone).
    pub fn start(self: &Arc<Self>) {
        if matches!(self.backend, Backend::None) || self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            let mut first = true;
            loop {
                if !std::mem::take(&mut first) {
                    tokio::time::sleep(POLL).await;
                }
                let Some(list) = weak.upgrade() else { return };
                match tokio::task::spawn_blocking(move || list.poll()).await {
                    Ok(Ok(changed)) => {
                        if changed {
                            tracing::debug!("revoked token ids reloaded");
                        }
                        failing = false;
                    }
                    Ok(Err(e)) => {
                        if !failing {
                            tracing::error!(error = %e, "revoked token ids cannot be read; the list in force stays");
                        }
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

/// What outlives a reload: the node's list, by where it lives.
#[derive(Default)]
pub struct Kept {
    lists: crate::exchange::Registry<Revoked>,
}

impl Kept {
    /// The list for this config: the fleet's Redis when there is one, else the `store:` file, else none.
    pub fn list(
        &self,
        store: Option<&Path>,
        fleet: Option<&Arc<crate::fleet::Fleet>>,
    ) -> Result<Option<Arc<Revoked>>, String> {
        if let Some(fleet) = fleet {
            let key = format!("redis:{:p}", Arc::as_ptr(fleet));
            return Ok(Some(self.lists.get_or_insert(&key, |_| {}, || Revoked::redis(fleet))));
        }
        let Some(path) = store else { return Ok(None) };
        let mut failed = None;
        let list = self.lists.get_or_insert(
            &format!("sqlite:{}", path.display()),
            |_| {},
            || match Revoked::sqlite(path) {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(e);
                    Revoked::with(Backend::None)
                }
            },
        );
        match failed {
            Some(e) => Err(format!("store: {e}")),
            None => Ok(Some(list)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn e(issuer: Option<&str>, jti: &str, until: i64) -> Entry {
        Entry { issuer: issuer.map(str::to_owned), jti: jti.into(), until }
    }

    #[test]
    fn issuer_scoped_and_any_issuer_entries() {
        let t = 1_000;
        let s = RevokedSet::build(&[e(Some("https://a"), "j1", 2_000), e(None, "j2", 2_000), e(None, "old", 900)], t);
        assert!(s.contains("https://a", "j1", t));
        assert!(!s.contains("https://b", "j1", t), "another issuer's token of the same id");
        assert!(s.contains("https://a", "j2", t) && s.contains("https://b", "j2", t));
        assert!(!s.contains("https://a", "old", t), "ended entries are not built in");
        assert!(!s.contains("https://a", "j1", 2_000), "never at or after the end time");
        assert!(!s.contains("https://a", "J1", t));
        assert_eq!(s.len(), 2);
        assert!(RevokedSet::build(&[], t).is_empty());
    }

    #[test]
    fn operator_text_is_checked() {
        assert!(check_text("jti", "abc-123").is_ok());
        assert!(check_text("jti", "").is_err());
        assert!(check_text("jti", "a\nb").is_err());
        assert!(check_text("jti", "a\u{7f}").is_err());
        assert!(check_text("jti", &"x".repeat(MAX_JTI + 1)).is_err());
        assert!(check_text("jti", &"é".repeat(MAX_JTI / 2)).is_ok());
    }

    #[test]
    fn the_store_round_trips_and_a_poll_sees_changes() {
        let dir = std::env::temp_dir().join(format!("portcullis-revoked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let list = Revoked::sqlite(&path).unwrap();
        assert!(list.is_empty());
        let mut s = SqliteRevoked::open(&path).unwrap();
        s.revoke(&e(Some("iss"), "j1", now() + 60), "stolen").unwrap();
        s.revoke(&e(None, "j2", now() + 60), "").unwrap();
        s.revoke(&e(None, "gone", now() - 1), "").unwrap();
        assert!(list.poll().unwrap());
        assert!(list.contains("iss", "j1", now()));
        assert!(!list.contains("other", "j1", now()));
        assert!(list.contains("other", "j2", now()));
        assert!(!list.contains("other", "gone", now()));
        assert!(!list.poll().unwrap(), "nothing changed");
        assert!(s.unrevoke(Some("iss"), "j1").unwrap());
        assert!(!s.unrevoke(Some("iss"), "j1").unwrap());
        assert!(!s.unrevoke(None, "j1").unwrap(), "an issuer-scoped entry is not the any-issuer one");
        assert!(list.poll().unwrap());
        assert!(!list.contains("iss", "j1", now()));
        assert_eq!(s.list(Some(now())).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
