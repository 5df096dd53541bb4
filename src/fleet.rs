//! Shared state for a fleet of gateways: the `redis:` section and the one Redis connection that the
//! stages keeping fleet-wide state use (rate limits with `store: redis`, the signed-request replay
//! store). It owns connecting, timeouts and what a failure looks like; it never decides what a
//! failure means for a request (each caller's `on_store_failure` does).
//!
//! ```yaml
//! redis:
//!   url: rediss://redis.internal:6380/0     # redis:// (plain) or rediss:// (TLS, rustls)
//!   username: portcullis                    # Redis 6 ACL user (optional)
//!   password: ${env:REDIS_PASSWORD}         # a secret reference; never inside the URL
//!   command_timeout: 50ms                   # the most a request waits for Redis
//!   connect_timeout: 1s
//!   share_bans: true                        # bans live here, for every node (default: `store:`)
//! ```
//!
//! One multiplexed connection (redis-rs's connection manager, which reconnects by itself) carries
//! every node's commands; concurrent requests share it, so their commands go out in shared writes.
//! Every call is bounded by `command_timeout`. After a failure Redis is left alone for a short quiet
//! time ([`QUIET`]), so an outage costs requests nothing but the fallback; the first call after it
//! probes again, and shared state resumes by itself once Redis answers. Failures are logged at most
//! once per [`LOG_EVERY`], with how many there were.
//!
//! Calls of one multi-key script that arrive together are sent as one ([`Batched`]): the requests a
//! worker thread handles in one turn share one command, one write and one read, and Redis runs the
//! script once for all of them (still atomically, key by key, in arrival order).

use crate::secret::Secret;
use crate::units::Dur;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The `redis:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://host:port/db` (TLS). No password here: see `password`.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// The most one command (one request's round trip) may take; default 50ms.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Dur,
    /// The most one connection attempt may take; default 1s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// `true`: bans (`portcullis bans`, automatic bans) live in this Redis and apply on every node.
    #[serde(default)]
    pub share_bans: bool,
}

fn default_command_timeout() -> Dur {
    Dur(Duration::from_millis(50))
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}

/// What a caller does when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Decide locally, as a single node would (logged and counted).
    FailOpen,
    /// Refuse with 503 (logged and counted).
    FailClosed,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::FailOpen => "fail_open",
            OnFailure::FailClosed => "fail_closed",
        }
    }
}

/// Redis did not answer (in time, or at all); the detail has been logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// After a failure, how long calls fail at once without asking Redis.
pub const QUIET: Duration = Duration::from_millis(250);
/// At most one failure log line per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The fleet's Redis: one lazily made, self-reconnecting connection.
pub struct Fleet {
    client: redis::Client,
    manager: ConnectionManagerConfig,
    conn: OnceLock<Result<ConnectionManager, String>>,
    timeout: Duration,
    /// Our own clock, for the quiet time and log pacing.
    epoch: Instant,
    /// Nanoseconds (since `epoch`) until which calls fail without asking Redis.
    quiet_until: AtomicU64,
    /// Nanoseconds (since `epoch`, plus one) of the last failure log line; 0: none yet.
    logged_at: AtomicU64,
    /// Failures since the last log line.
    unlogged: AtomicU64,
    /// The batched scripts, by SHA-1 (see [`Fleet::batched`]).
    batched: Mutex<HashMap<String, Weak<Batched>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Fleet {
    /// Checks the section; connects only on first use (so `check` needs no Redis, and a node starts
    /// while Redis is down).
    pub fn new(c: &RedisConfig) -> Result<Fleet, String> {
        let info = c.url.as_str().into_connection_info().map_err(|_| {
            "redis.url is not a Redis URL: write redis://host:port/db or rediss://host:port/db".to_string()
        })?;
        if !(c.url.starts_with("redis://") || c.url.starts_with("rediss://")) {
            return Err("redis.url must start with redis:// or rediss:// (TLS)".into());
        }
        if info.redis_settings().password().is_some() {
            return Err("redis.url must not hold a password: write it in redis.password (${env:NAME})".into());
        }
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &c.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &c.password {
            settings = settings.set_password(password.expose());
        }
        let timeout = c.command_timeout.0;
        if timeout.is_zero() || timeout > Duration::from_secs(10) {
            return Err("redis.command_timeout must be between 1ms and 10s".into());
        }
        let connect = c.connect_timeout.0;
        if connect.is_zero() || connect > Duration::from_secs(60) {
            return Err("redis.connect_timeout must be between 1ms and 60s".into());
        }
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|_| "redis.url cannot be used (is TLS available for rediss://?)".to_string())?;
        // One connection attempt per reconnect: the quiet time paces the attempts, not a retry loop
        // that a request would wait on.
        let manager = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(timeout));
        Ok(Fleet {
            client,
            manager,
            conn: OnceLock::new(),
            timeout,
            epoch: Instant::now(),
            quiet_until: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            batched: Mutex::new(HashMap::new()),
        })
    }

    /// The one batcher of `script` on this fleet (shared by every caller that asks for it while any
    /// holds it), for a script that answers `width` integers per key.
    pub fn batched(self: &Arc<Self>, what: &'static str, script: &str, width: usize) -> Arc<Batched> {
        let script = redis::Script::new(script);
        let mut all = self.batched.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, b| b.strong_count() > 0);
        if let Some(b) = all.get(script.get_hash()).and_then(Weak::upgrade) {
            return b;
        }
        let hash = script.get_hash().to_owned();
        let b = Arc::new(Batched { fleet: self.clone(), what, script, width, queue: Mutex::new(Vec::new()) });
        all.insert(hash, Arc::downgrade(&b));
        b
    }

    /// A blocking connection to this Redis, for calls off the request path (the ban and revocation
    /// polls, the CLI).
    pub fn blocking(&self) -> Blocking {
        Blocking { client: self.client.clone(), timeout: self.timeout.max(Duration::from_secs(1)), conn: None }
    }

    /// A client of this Redis (for blocking calls off the request path, such as the ban poll).
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// `redis.command_timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Runs one exchange with Redis (`call` gets a handle to the shared connection), bounded by the
    /// command timeout. Needs a tokio runtime.
    pub async fn call<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.now() < self.quiet_until.load(Ordering::Relaxed) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable);
        }
        let conn = self.conn.get_or_init(|| {
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager.clone())
                .map_err(|e| e.to_string())
        });
        let conn = match conn {
            Ok(c) => c.clone(),
            Err(e) => return Err(self.failed(what, e)),
        };
        match tokio::time::timeout(self.timeout, call(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(what, &e.to_string())),
            Err(_) => Err(self.failed(what, "timed out")),
        }
    }

    /// Starts the quiet time, counts the failure and logs it (paced).
    fn failed(&self, what: &'static str, detail: &str) -> Unavailable {
        let now = self.now();
        self.quiet_until.store(now + QUIET.as_nanos() as u64, Ordering::Relaxed);
        let unlogged = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now + 1 >= last + LOG_EVERY.as_nanos() as u64;
        if due && self.logged_at.compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.unlogged.store(0, Ordering::Relaxed);
            tracing::warn!(
                operation = what,
                error = detail,
                failures = unlogged,
                "redis unavailable; each limit and replay store applies its on_store_failure"
            );
        }
        Unavailable
    }
}

/// The fleet connection, kept across reloads while the `redis:` section stays the same (so a reload
/// neither reconnects nor forgets that Redis is down). On the process's lasting state, never a static.
#[derive(Default)]
pub struct Kept(Mutex<Option<(RedisConfig, Arc<Fleet>)>>);

impl Kept {
    /// The running fleet if `c` is unchanged, else a new one (which replaces it once compiled).
    pub fn fleet(&self, c: &RedisConfig) -> Result<Arc<Fleet>, String> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, fleet)) = kept.as_ref() {
            if old == c {
                return Ok(fleet.clone());
            }
        }
        let fleet = Arc::new(Fleet::new(c)?);
        *kept = Some((c.clone(), fleet.clone()));
        Ok(fleet)
    }
}

/// Most callers' keys in one script call.
const MAX_BATCH: usize = 256;

/// One multi-key script whose calls are gathered: the first caller of a turn spawns the sender, which
/// yields once (so the other requests of this turn can join) and then sends every waiting caller's keys
/// and arguments in one call. The script must answer `width` integers per key, in key order.
pub struct Batched {
    fleet: Arc<Fleet>,
    what: &'static str,
    script: redis::Script,
    width: usize,
    queue: Mutex<Vec<Waiting>>,
}

impl std::fmt::Debug for Batched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").field("what", &self.what).finish_non_exhaustive()
    }
}

struct Waiting {
    keys: Vec<String>,
    args: Vec<f64>,
    answer: tokio::sync::oneshot::Sender<Result<Vec<i64>, Unavailable>>,
}

impl Batched {
    /// The script's answer for `keys` (with their `args`), `width` integers per key.
    pub async fn eval(self: &Arc<Self>, keys: Vec<String>, args: Vec<f64>) -> Result<Vec<i64>, Unavailable> {
        let (answer, wait) = tokio::sync::oneshot::channel();
        let first = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(Waiting { keys, args, answer });
            q.len() == 1
        };
        if first {
            Self::spawn_send(self.clone());
        }
        wait.await.unwrap_or(Err(Unavailable))
    }

    /// A task of its own: the call goes out even if the request that started it is dropped meanwhile.
    fn spawn_send(me: Arc<Self>) {
        let send: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(me.send());
        tokio::spawn(send);
    }

    async fn send(self: Arc<Self>) {
        tokio::task::yield_now().await;
        let batch: Vec<Waiting> = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.len().min(MAX_BATCH);
            let batch = q.drain(..n).collect();
            if !q.is_empty() {
                Self::spawn_send(self.clone());
            }
            batch
        };
        if batch.is_empty() {
            return;
        }
        let mut call = self.script.prepare_invoke();
        for w in &batch {
            for k in &w.keys {
                call.key(k);
            }
            for a in &w.args {
                call.arg(a);
            }
        }
        let answer =
            self.fleet.call(self.what, |mut c| async move { call.invoke_async::<Vec<i64>>(&mut c).await }).await;
        let mut at = 0;
        for w in batch {
            let n = w.keys.len() * self.width;
            let part = match &answer {
                Ok(v) => v.get(at..at + n).map(<[i64]>::to_vec).ok_or(Unavailable),
                Err(e) => Err(*e),
            };
            at += n;
            let _ = w.answer.send(part);
        }
    }
}

/// Lowercase hex of a digest (Redis keys stay printable).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// A blocking Redis connection (off the request path), opened on first use and after an error, with
/// the command timeout (at least 1 s) on connect, read and write. Errors are `redis: ...` strings.
pub struct Blocking {
    client: redis::Client,
    timeout: Duration,
    conn: Option<redis::Connection>,
}

impl Blocking {
    /// Runs `f` on the connection; an error drops the connection, so the next call reconnects.
    pub fn with<T>(&mut self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        if self.conn.is_none() {
            let c = self.client.get_connection_with_timeout(self.timeout).map_err(|e| format!("redis: {e}"))?;
            c.set_read_timeout(Some(self.timeout)).map_err(|e| format!("redis: {e}"))?;
            c.set_write_timeout(Some(self.timeout)).map_err(|e| format!("redis: {e}"))?;
            self.conn = Some(c);
        }
        let Some(c) = self.conn.as_mut() else { return Err("redis: no connection".into()) };
        f(c).map_err(|e| {
            self.conn = None;
            format!("redis: {e}")
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            username: None,
            password: None,
            command_timeout: default_command_timeout(),
            connect_timeout: default_connect_timeout(),
            share_bans: false,
        }
    }

    #[test]
    fn urls() {
        assert!(Fleet::new(&config("redis://127.0.0.1:6379/0")).is_ok());
        assert!(Fleet::new(&config("rediss://redis.example:6380")).is_ok());
        assert!(Fleet::new(&config("http://127.0.0.1:6379")).is_err());
        assert!(Fleet::new(&config("not a url")).is_err());
        let err = Fleet::new(&config("redis://:hunter2@127.0.0.1:6379")).unwrap_err();
        assert!(err.contains("password") && !err.contains("hunter2"), "{err}");
        let mut c = config("redis://127.0.0.1:6379");
        c.command_timeout = Dur(Duration::ZERO);
        assert!(Fleet::new(&c).is_err());
    }

    #[test]
    fn hex_digits() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_then_stays_quiet() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let fleet = Fleet::new(&config(&format!("redis://127.0.0.1:{port}"))).unwrap();
        let ping = |mut c: ConnectionManager| async move { redis::cmd("PING").query_async::<String>(&mut c).await };
        let started = Instant::now();
        assert_eq!(fleet.call("ping", ping).await, Err(Unavailable));
        assert_eq!(fleet.call("ping", ping).await, Err(Unavailable), "quiet: not asked again");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
