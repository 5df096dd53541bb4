//! PostgreSQL, the store a fleet of gateways shares (`store.postgres`): API keys and admin tokens. The
//! SQLite file (`store.sqlite`) stays each node's own state (secrets vault, token vault, bans without
//! Redis).
//!
//! ```yaml
//! store:
//!   sqlite: /var/lib/portcullis/state.db
//!   postgres:
//!     url: ${env:PG_URL}            # postgres://user:password@host:port/db (a secret: never logged)
//!     tls: { ca: /etc/portcullis/pg-ca.pem }   # verify-full; `disable` (default) only for loopback
//!     pool_size: 8
//!     poll_interval: 1s             # fallback when a notification is missed
//!     connect_timeout: 5s
//! ```
//!
//! - **Schema:** versioned migrations ([`MIGRATIONS`]): `schema_migrations` holds one row per applied
//!   step; steps are never edited, only appended; a database with a step this build does not know is
//!   refused. They run at start and with `portcullis store migrate`, inside a transaction holding an
//!   advisory lock, so nodes starting together apply each step once.
//! - **Changes:** each write bumps a named counter in `generations` in its own transaction and sends
//!   `NOTIFY portcullis_changes, '<name>'` (delivered at commit). One task per process ([`Postgres::subscribe`])
//!   holds a LISTEN connection (reconnecting with back-off) and also reads `generations` every
//!   `poll_interval`; it publishes the counters, and each user (an API key authenticator, the admin
//!   tokens) reloads its set when its counter moves.
//! - **Outages:** users keep their last good copy; failures are logged (a warning once per outage, then
//!   debug lines), counted (`portcullis_store_errors_total{backend="postgres",op}`) and shown
//!   (`portcullis_store_up{backend="postgres"}`), and retried; the first successful read catches up.
//!
//! The URL's password never appears in logs, errors or `Debug`: the store is named `host:port/db`.

use crate::secret::Secret;
use crate::units::Dur;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_postgres::config::{Host, SslMode};

pub mod keys;
pub mod tokens;

pub use tokio_postgres::Client;

/// `store.postgres`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db`; write it as `${env:NAME}` or `${file:PATH}`.
    pub url: Secret,
    #[serde(default)]
    pub tls: PgTls,
    /// Most connections in the pool (default 8).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How often `generations` is read besides notifications (default 1s).
    #[serde(default = "default_poll")]
    pub poll_interval: Dur,
    /// The most one connection attempt may take (default 5s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
}

fn default_pool_size() -> usize {
    8
}
fn default_poll() -> Dur {
    Dur::secs(1)
}
fn default_connect_timeout() -> Dur {
    Dur::secs(5)
}

/// `store.postgres.tls`: `disable` (the default; loopback hosts only), `verify_full` (the system's
/// trust store), or `{ ca: PATH }` (verify-full against the CAs of that PEM file only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PgTls {
    #[default]
    Disable,
    VerifyFull {
        ca: Option<PathBuf>,
    },
}

impl<'de> Deserialize<'de> for PgTls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Ca {
            ca: PathBuf,
        }
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = PgTls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`disable`, `verify_full`, or { ca: PATH }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PgTls, E> {
                match v {
                    "disable" => Ok(PgTls::Disable),
                    "verify_full" => Ok(PgTls::VerifyFull { ca: None }),
                    other => Err(E::custom(format!(
                        "store.postgres.tls: `{other}` is not `disable`, `verify_full` or {{ ca: PATH }}"
                    ))),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<PgTls, A::Error> {
                let c = Ca::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PgTls::VerifyFull { ca: Some(c.ca) })
            }
        }
        d.deserialize_any(V)
    }
}

/// What can go wrong talking to PostgreSQL; the text names the store as `host:port/db`, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL {target}: {detail}")]
    Db { target: String, detail: String },
    #[error(
        "PostgreSQL {target} is at schema version {found}, newer than this build knows ({known}); upgrade portcullis"
    )]
    TooNew { target: String, found: i64, known: i64 },
}

/// The schema, one step per entry, applied in order and never edited once released (append a step).
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "api_keys and generations",
        "CREATE TABLE api_keys (
           authenticator TEXT NOT NULL,
           id TEXT NOT NULL,
           hash BYTEA NOT NULL UNIQUE,
           principal TEXT NOT NULL,
           roles TEXT NOT NULL DEFAULT '[]',
           scopes TEXT NOT NULL DEFAULT '[]',
           allowed_cidrs TEXT NOT NULL DEFAULT '[]',
           created_at BIGINT NOT NULL,
           expires_at BIGINT,
           revoked_at BIGINT,
           grace_until BIGINT,
           rotated_to TEXT,
           PRIMARY KEY (authenticator, id)
         );
         CREATE TABLE generations (name TEXT PRIMARY KEY, value BIGINT NOT NULL);",
    ),
    (
        "admin_tokens",
        "CREATE TABLE admin_tokens (
           id TEXT PRIMARY KEY,
           hash BYTEA NOT NULL UNIQUE,
           name TEXT NOT NULL,
           role TEXT NOT NULL,
           created_at BIGINT NOT NULL,
           created_by TEXT NOT NULL,
           expires_at BIGINT,
           revoked_at BIGINT
         );",
    ),
];

/// The advisory lock migrations hold (any constant shared by every build: "portcul" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6f72_7463_756c;
/// The notification channel.
pub const CHANNEL: &str = "portcullis_changes";

/// The generation name of an API key authenticator's keys.
pub fn keys_generation(authenticator: &str) -> String {
    format!("keys:{authenticator}")
}

/// `portcullis_store_errors_total{backend,op}` and `portcullis_store_up{backend}`, made by the metrics
/// registry and handed to the store.
#[derive(Clone, Default)]
pub struct StoreMetrics {
    pub errors: Family<Vec<(String, String)>, Counter>,
    pub up: Family<Vec<(String, String)>, Gauge>,
}

/// Generation counters by name, as last read.
pub type Generations = Arc<BTreeMap<String, i64>>;

/// Connection settings validated from the config, and how to make a TLS connection.
#[derive(Clone)]
enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// The fleet's PostgreSQL: the pool, the change watcher, health.
pub struct Postgres {
    target: String,
    config: tokio_postgres::Config,
    tls: Tls,
    pool: deadpool_postgres::Pool,
    poll: Duration,
    generations: watch::Sender<Generations>,
    watching: AtomicBool,
    metrics: StoreMetrics,
    /// True while an outage is under way (a warning was logged; the next ones are debug lines).
    down: AtomicBool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("target", &self.target).finish_non_exhaustive()
    }
}

/// Checks `store.postgres` and describes it as `host:port/db` (never the password).
pub fn parse(c: &PostgresConfig) -> Result<(tokio_postgres::Config, String), String> {
    let mut config = tokio_postgres::Config::from_str(c.url.expose()).map_err(|_| {
        "store.postgres.url is not a PostgreSQL URL: write postgres://user:password@host:port/db".to_string()
    })?;
    let hosts = config.get_hosts();
    if hosts.len() != 1 || config.get_hostaddrs().len() > 1 {
        return Err("store.postgres.url must name exactly one host".into());
    }
    let (host, local) = match &hosts[0] {
        Host::Tcp(h) => {
            let bare = h.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            (h.clone(), loopback)
        }
        Host::Unix(p) => (p.display().to_string(), true),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres").to_owned();
    let target = format!("{host}:{port}/{db}");
    if config.get_user().is_none() {
        return Err(format!("store.postgres.url ({target}) must name a user"));
    }
    if config.get_ssl_mode() != SslMode::Prefer {
        return Err(format!("store.postgres.url ({target}): set TLS with store.postgres.tls, not sslmode in the URL"));
    }
    match &c.tls {
        PgTls::Disable if !local => {
            return Err(format!(
                "store.postgres: {target} is not a loopback host, so TLS is required: set tls: {{ ca: PATH }} or tls: verify_full"
            ))
        }
        PgTls::Disable => {
            config.ssl_mode(SslMode::Disable);
        }
        PgTls::VerifyFull { .. } => {
            config.ssl_mode(SslMode::Require);
        }
    }
    if c.pool_size == 0 || c.pool_size > 256 {
        return Err("store.postgres.pool_size must be between 1 and 256".into());
    }
    let poll = c.poll_interval.0;
    if poll < Duration::from_millis(50) || poll > Duration::from_secs(60) {
        return Err("store.postgres.poll_interval must be between 50ms and 60s".into());
    }
    let connect = c.connect_timeout.0;
    if connect.is_zero() || connect > Duration::from_secs(60) {
        return Err("store.postgres.connect_timeout must be between 1ms and 60s".into());
    }
    config.connect_timeout(connect);
    config.application_name("portcullis");
    Ok((config, target))
}

impl Postgres {
    /// Checks the section and makes the (empty) pool; connects only on use.
    pub fn new(c: &PostgresConfig, metrics: StoreMetrics) -> Result<Postgres, String> {
        let (config, target) = parse(c)?;
        let tls = match &c.tls {
            PgTls::Disable => Tls::None,
            PgTls::VerifyFull { ca } => {
                let ca = ca.as_ref().map(|p| p.display().to_string());
                let client =
                    crate::client::tls_config(ca.as_deref()).map_err(|e| format!("store.postgres.tls: {e}"))?;
                Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new((*client).clone()))
            }
        };
        let manager_config =
            deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast };
        let manager = match &tls {
            Tls::None => deadpool_postgres::Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config),
            Tls::Rustls(t) => deadpool_postgres::Manager::from_config(config.clone(), t.clone(), manager_config),
        };
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(c.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(c.connect_timeout.0))
            .create_timeout(Some(c.connect_timeout.0))
            .recycle_timeout(Some(c.connect_timeout.0))
            .build()
            .map_err(|e| format!("store.postgres: {e}"))?;
        let (generations, _) = watch::channel(Arc::new(BTreeMap::new()));
        Ok(Postgres {
            target,
            config,
            tls,
            pool,
            poll: c.poll_interval.0,
            generations,
            watching: AtomicBool::new(false),
            metrics,
            down: AtomicBool::new(false),
        })
    }

    /// `host:port/db`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `poll_interval`.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// Wraps a driver or pool error with the store's name.
    pub fn error(&self, e: impl std::error::Error + 'static) -> PgError {
        PgError::Db { target: self.target.clone(), detail: describe_chain(&e) }
    }

    fn error_text(&self, detail: String) -> PgError {
        PgError::Db { target: self.target.clone(), detail }
    }

    /// A connection from the pool (needs the tokio runtime that will keep serving: the pool's
    /// connections live on it).
    pub async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        self.pool.get().await.map_err(|e| self.error(e))
    }

    /// A connection of its own, outside the pool (for the CLI and for a compile, on a short-lived
    /// runtime): its driver runs on the current runtime and ends with the client.
    pub async fn connect(&self) -> Result<Client, PgError> {
        match &self.tls {
            Tls::None => {
                let (client, conn) = self.config.connect(tokio_postgres::NoTls).await.map_err(|e| self.error(e))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            }
            Tls::Rustls(t) => {
                let (client, conn) = self.config.connect(t.clone()).await.map_err(|e| self.error(e))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            }
        }
    }

    /// Connects (proving that PostgreSQL is reachable) and brings the schema up to date; returns the
    /// names of the steps applied now. Blocks (see [`block_on`]).
    pub fn connect_and_migrate(&self) -> Result<Vec<String>, PgError> {
        block_on(async {
            let mut client = self.connect().await.map_err(|e| match e {
                PgError::Db { target, detail } => PgError::Db {
                    target,
                    detail: format!(
                        "cannot connect at start (PostgreSQL must answer when the gateway starts): {detail}"
                    ),
                },
                other => other,
            })?;
            self.migrate(&mut client).await
        })
        .unwrap_or_else(|e| Err(self.error_text(e)))
    }

    /// Applies the missing steps of [`MIGRATIONS`] in one transaction under the advisory lock.
    pub async fn migrate(&self, client: &mut Client) -> Result<Vec<String>, PgError> {
        let wrap = |e: tokio_postgres::Error| self.error(e);
        let tx = client.transaction().await.map_err(wrap)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(wrap)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
               version BIGINT PRIMARY KEY,
               name TEXT NOT NULL,
               applied_at BIGINT NOT NULL
             )",
        )
        .await
        .map_err(wrap)?;
        let found: i64 =
            tx.query_one("SELECT COALESCE(max(version), 0) FROM schema_migrations", &[]).await.map_err(wrap)?.get(0);
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(PgError::TooNew { target: self.target.clone(), found, known });
        }
        let mut applied = Vec::new();
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await.map_err(wrap)?;
            let version = i as i64 + 1;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[&version, name, &now()],
            )
            .await
            .map_err(wrap)?;
            applied.push(format!("{version} {name}"));
        }
        tx.commit().await.map_err(wrap)?;
        Ok(applied)
    }

    /// The change counters published by the watcher (started on first call; needs the runtime).
    pub fn subscribe(self: &Arc<Self>) -> watch::Receiver<Generations> {
        if !self.watching.swap(true, Ordering::SeqCst) {
            let weak = Arc::downgrade(self);
            tokio::spawn(watch_changes(weak));
        }
        self.generations.subscribe()
    }

    /// Counts a failed operation (`op`: `poll`, `listen`, `load`, `write`...), marks the store down and
    /// logs: a warning for the first failure of an outage, debug lines after it.
    pub fn failed(&self, op: &'static str, error: &dyn std::fmt::Display) {
        self.metrics.errors.get_or_create(&labels(Some(op))).inc();
        self.metrics.up.get_or_create(&labels(None)).set(0);
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                store = self.target.as_str(),
                operation = op,
                error = %error,
                "PostgreSQL unavailable; serving the last good copy and retrying"
            );
        } else {
            tracing::debug!(store = self.target.as_str(), operation = op, error = %error, "PostgreSQL still unavailable");
        }
    }

    /// Marks the store up (after any successful exchange); logs the end of an outage.
    pub fn succeeded(&self) {
        self.metrics.up.get_or_create(&labels(None)).set(1);
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!(store = self.target.as_str(), "PostgreSQL reachable again; catching up");
        }
    }
}

fn labels(op: Option<&str>) -> Vec<(String, String)> {
    let mut l = vec![("backend".to_owned(), "postgres".to_owned())];
    if let Some(op) = op {
        l.push(("op".to_owned(), op.to_owned()));
    }
    l
}

/// A driver or pool error as one line, with its causes (the server's message when it sent one). Never
/// the URL: the driver does not hold it as text, and its errors name neither host nor password.
fn describe(e: impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").chars().take(300).collect()
}

/// [`describe`] with the chain of sources (`db error: FATAL: password authentication failed ...`).
pub fn describe_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    describe(text)
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Runs `fut` to completion on a current-thread runtime of its own, in a thread of its own: usable from
/// synchronous code whether or not the caller is inside a tokio runtime (never nesting runtimes, never
/// blocking a runtime's task: the caller's thread waits, as a compile or the CLI does anyway).
pub fn block_on<F>(fut: F) -> Result<F::Output, String>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime for PostgreSQL: {e}"))?;
            Ok(rt.block_on(fut))
        })
        .join()
        .unwrap_or_else(|_| Err("the PostgreSQL thread panicked".into()))
    })
}

/// Bumps the generation `name` and notifies the fleet; call it inside the transaction of the change.
pub async fn bump(tx: &tokio_postgres::Transaction<'_>, name: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO generations (name, value) VALUES ($1, 1)
         ON CONFLICT (name) DO UPDATE SET value = generations.value + 1",
        &[&name],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &name]).await?;
    Ok(())
}

/// Reads every generation counter.
pub async fn read_generations(client: &Client) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let rows = client.query("SELECT name, value FROM generations", &[]).await?;
    Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect())
}

/// Back-off of the LISTEN connection after a failure: doubles from 100ms up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The process's watcher: a LISTEN connection (reconnected with back-off) and a poll of `generations`
/// every `poll_interval`; publishes the counters whenever a notification arrives or a poll reads them.
/// Ends when the store is dropped (a reload to another `store.postgres`).
async fn watch_changes(weak: Weak<Postgres>) {
    let (notified_tx, mut notified) = tokio::sync::mpsc::unbounded_channel::<()>();
    let listener = tokio::spawn(listen(weak.clone(), notified_tx));
    let mut backoff = Duration::ZERO;
    loop {
        let Some(pg) = weak.upgrade() else { break };
        let poll = pg.poll;
        let result = async {
            let client = pg.client().await?;
            read_generations(&client).await.map_err(|e| pg.error(e))
        }
        .await;
        match result {
            Ok(g) => {
                pg.succeeded();
                backoff = Duration::ZERO;
                pg.generations.send_if_modified(|old| {
                    if **old == g {
                        return false;
                    }
                    *old = Arc::new(g);
                    true
                });
            }
            Err(e) => {
                pg.failed("poll", &e);
                backoff = (backoff * 2).clamp(Duration::from_millis(100), poll);
            }
        }
        drop(pg);
        let wait = if backoff.is_zero() { poll } else { backoff };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            n = notified.recv() => {
                if n.is_none() { break; }
                // Several notifications of one burst are read once.
                while notified.try_recv().is_ok() {}
            }
        }
    }
    listener.abort();
}

/// Keeps one LISTEN connection open; sends `()` on every notification and once after each (re)connect
/// (a change made while it was away is read at once).
async fn listen(weak: Weak<Postgres>, notified: tokio::sync::mpsc::UnboundedSender<()>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(pg) = weak.upgrade() else { return };
        let failed = match &pg.tls {
            Tls::None => match pg.config.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    drive(&pg, client, conn, &notified, &mut backoff).await;
                    None
                }
                Err(e) => Some(e),
            },
            Tls::Rustls(t) => match pg.config.connect(t.clone()).await {
                Ok((client, conn)) => {
                    drive(&pg, client, conn, &notified, &mut backoff).await;
                    None
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            pg.failed("listen", &describe_chain(&e));
        }
        drop(pg);
        if notified.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs one LISTEN connection until it fails.
async fn drive<S, T>(
    pg: &Postgres,
    client: Client,
    mut conn: tokio_postgres::Connection<S, T>,
    notified: &tokio::sync::mpsc::UnboundedSender<()>,
    backoff: &mut Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The LISTEN command needs the connection driven while it runs.
    let command = format!("LISTEN {CHANNEL}");
    let subscribe = client.batch_execute(&command);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        let message = std::future::poll_fn(|cx| {
            if !subscribed {
                if let std::task::Poll::Ready(r) = subscribe.as_mut().poll(cx) {
                    subscribed = true;
                    return std::task::Poll::Ready(Some(r.map(|()| None)));
                }
            }
            conn.poll_message(cx).map(|m| m.map(|r| r.map(Some)))
        })
        .await;
        match message {
            Some(Ok(None)) => {
                // Subscribed: whatever changed while we were away is read now.
                *backoff = Duration::from_millis(100);
                tracing::debug!(store = pg.target.as_str(), "listening for PostgreSQL changes");
                let _ = notified.send(());
            }
            Some(Ok(Some(tokio_postgres::AsyncMessage::Notification(_)))) => {
                let _ = notified.send(());
            }
            Some(Ok(Some(_))) => {}
            Some(Err(e)) => {
                pg.failed("listen", &describe_chain(&e));
                return;
            }
            None => {
                pg.failed("listen", &"the connection closed");
                return;
            }
        }
        if notified.is_closed() {
            return;
        }
    }
}

/// The store, kept across reloads while `store.postgres` stays the same (so a reload neither
/// reconnects nor re-migrates). On the process's lasting state, never a static.
#[derive(Default)]
pub struct Kept(Mutex<Option<(PostgresConfig, Arc<Postgres>)>>);

impl Kept {
    /// The running store if `c` is unchanged; else a new one, connected and migrated now (an error when
    /// PostgreSQL cannot be reached).
    pub fn get(&self, c: &PostgresConfig, metrics: &StoreMetrics) -> Result<Arc<Postgres>, String> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, pg)) = kept.as_ref() {
            if old == c {
                return Ok(pg.clone());
            }
        }
        let pg = Arc::new(Postgres::new(c, metrics.clone())?);
        let applied = pg.connect_and_migrate().map_err(|e| e.to_string())?;
        pg.succeeded();
        for step in applied {
            tracing::info!(store = pg.target(), step = step.as_str(), "PostgreSQL migration applied");
        }
        *kept = Some((c.clone(), pg.clone()));
        Ok(pg)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cfg(yaml: &str) -> Result<PostgresConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn loopback_without_tls_is_fine_and_named_without_the_password() {
        let c = cfg("url: postgres://gw:s3cret-pw@127.0.0.1:5433/fleet").unwrap();
        let (config, target) = parse(&c).unwrap();
        assert_eq!(target, "127.0.0.1:5433/fleet");
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let pg = Postgres::new(&c, StoreMetrics::default()).unwrap();
        assert!(!format!("{pg:?}").contains("s3cret"));
        for local in ["postgres://gw@localhost/db", "postgres://gw@[::1]:5432/db", "postgres://gw@%2Frun%2Fpg/db"] {
            parse(&cfg(&format!("url: {local}")).unwrap()).unwrap();
        }
    }

    #[test]
    fn a_remote_host_needs_tls() {
        let err = parse(&cfg("url: postgres://gw:s3cret-pw@db.internal:5432/fleet").unwrap()).unwrap_err();
        assert!(err.contains("TLS is required") && err.contains("db.internal:5432/fleet"), "{err}");
        assert!(!err.contains("s3cret"));
        let err = parse(&cfg("url: postgres://gw:pw@10.0.0.5/fleet\ntls: disable").unwrap()).unwrap_err();
        assert!(err.contains("TLS is required"), "{err}");
        let (config, _) = parse(&cfg("url: postgres://gw:pw@db.internal/fleet\ntls: verify_full").unwrap()).unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        let c = cfg("url: postgres://gw:pw@db.internal/fleet\ntls: { ca: /etc/ca.pem }").unwrap();
        assert_eq!(c.tls, PgTls::VerifyFull { ca: Some("/etc/ca.pem".into()) });
    }

    #[test]
    fn bad_sections_are_refused() {
        assert!(cfg("url: x\ntls: { ca: /a, extra: 1 }").is_err());
        assert!(cfg("url: x\ntls: prefer").unwrap_err().contains("not `disable`"));
        assert!(cfg("url: x\nbogus: 1").is_err());
        let err = parse(&cfg("url: 'not a url ::: s3cret'").unwrap()).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse(&cfg("url: postgres://gw:pw@127.0.0.1/db?sslmode=disable").unwrap()).unwrap_err();
        assert!(err.contains("sslmode"), "{err}");
        let err = parse(&cfg("url: postgres://gw:pw@127.0.0.1,127.0.0.2/db").unwrap()).unwrap_err();
        assert!(err.contains("exactly one host"), "{err}");
        for (k, v) in [("pool_size", "0"), ("poll_interval", "1ms"), ("connect_timeout", "0s")] {
            let err = parse(&cfg(&format!("url: postgres://gw:pw@127.0.0.1/db\n{k}: {v}")).unwrap()).unwrap_err();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn block_on_works_inside_and_outside_a_runtime() {
        assert_eq!(block_on(async { 7 }).unwrap(), 7);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { assert_eq!(block_on(async { 8 }).unwrap(), 8) });
    }

    #[test]
    fn migration_steps_are_numbered_from_one_and_named() {
        assert!(!MIGRATIONS.is_empty());
        assert!(MIGRATIONS.iter().all(|(name, sql)| !name.is_empty() && !sql.trim().is_empty()));
    }
}
