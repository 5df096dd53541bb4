//! The node's SQLite state file (`store.sqlite`), a leaf module: features keep their tables in it
//! (bans, quotas, the secrets and token vaults). Re-exported by [`crate::store`]; the secret vault
//! names it here directly, so that `store` (whose PostgreSQL section holds a secret URL) can import
//! `secret` without a circle.
//!
//! The file is versioned per component: `schema` holds one row per component (`bans`, ...) with the
//! number of migration steps applied, and [`Store::migrate`] applies the missing ones in a transaction,
//! so a feature adds tables by adding a component or a step, never by editing an applied step. A
//! database written by a newer build (more steps than this build knows) is refused rather than guessed
//! at. `counters` holds named change counters: a writer bumps one, and a running gateway polls it to
//! pick up changes made by another process (`portcullis bans add`) within about a second.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

/// What can go wrong with the store (the path is named, never any stored value).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("state store {path}: the file cannot be created: {kind}")]
    Create { path: String, kind: std::io::ErrorKind },
    #[error("state store {path}: component `{component}` is at schema version {found}, newer than this build knows ({known}); upgrade portcullis")]
    TooNew { path: String, component: String, found: i64, known: i64 },
}

/// An open state store: one connection (not shared between threads; open one per user).
pub struct Store {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the file: WAL journal (readers never block the writer), a 5 s busy timeout
    /// for concurrent writers (the gateway and the CLI), and the bookkeeping tables.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let wrap = |source| StoreError::Sqlite { path: shown.clone(), source };
        // A new file is private to the owner (it holds bans, wrapped data keys, sealed secrets); SQLite
        // gives its `-wal` and `-shm` files the same mode. An existing file keeps its mode.
        create_private(path).map_err(|e| StoreError::Create { path: shown.clone(), kind: e.kind() })?;
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(wrap)?;
        Ok(Store { conn, path: shown })
    }

    /// Brings `component`'s tables up to date: `steps[i]` is the SQL that takes it from version `i` to
    /// `i + 1`. Steps already applied are skipped; the rest run in one transaction.
    pub fn migrate(&mut self, component: &str, steps: &[&str]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite { path: path.clone(), source };
        let known = steps.len() as i64;
        // Up to date (the common case, on every open): a read, no write transaction and no fsync.
        let current: Option<i64> = self
            .conn
            .query_row("SELECT version FROM schema WHERE component = ?1", [component], |r| r.get(0))
            .optional()
            .map_err(wrap)?;
        if current == Some(known) {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(wrap)?;
        let found: i64 = tx
            .query_row("SELECT version FROM schema WHERE component = ?1", [component], |r| r.get(0))
            .optional()
            .map_err(wrap)?
            .unwrap_or(0);
        if found > known {
            return Err(StoreError::TooNew { path, component: component.into(), found, known });
        }
        for step in &steps[found as usize..] {
            tx.execute_batch(step).map_err(wrap)?;
        }
        tx.execute(
            "INSERT INTO schema (component, version) VALUES (?1, ?2)
             ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            params![component, known],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)
    }

    /// The connection, for a component's own queries (after [`Store::migrate`]).
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The current value of a change counter (0 if never bumped).
    pub fn counter(&self, name: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|source| self.error(source))
    }

    /// Bumps a change counter (call it in the same transaction as the change it announces).
    pub fn bump(conn: &Connection, name: &str) -> rusqlite::Result<()> {
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1",
            [name],
        )
        .map(|_| ())
    }

    /// Wraps an error of a component's own query with the store's path.
    pub fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Creates `path` with mode 0600 when it does not exist yet.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portcullis-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("state.db")
    }

    #[test]
    fn migrations_apply_once_and_in_order() {
        let path = temp("migrate");
        let mut s = Store::open(&path).unwrap();
        s.migrate("demo", &["CREATE TABLE a (x INTEGER);"]).unwrap();
        s.conn().execute("INSERT INTO a VALUES (1)", []).unwrap();
        // Reopened with one more step: only the new step runs, the data stays.
        drop(s);
        let mut s = Store::open(&path).unwrap();
        s.migrate("demo", &["CREATE TABLE a (x INTEGER);", "ALTER TABLE a ADD COLUMN y TEXT;"]).unwrap();
        let n: i64 = s.conn().query_row("SELECT count(*) FROM a", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        // An older build (fewer steps) refuses the newer file.
        let err = s.migrate("demo", &["CREATE TABLE a (x INTEGER);"]).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 2, known: 1, .. }), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_new_file_is_private_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("mode");
        let mut s = Store::open(&path).unwrap();
        s.migrate("demo", &["CREATE TABLE a (x INTEGER);"]).unwrap();
        s.conn().execute("INSERT INTO a VALUES (1)", []).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let wal = path.with_extension("db-wal");
        assert!(wal.exists());
        assert_eq!(mode(&wal), 0o600, "SQLite gives the WAL the database's mode");
        drop(s);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let _s = Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o640);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn counters_start_at_zero_and_count() {
        let path = temp("counters");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.counter("bans").unwrap(), 0);
        Store::bump(&s.conn, "bans").unwrap();
        Store::bump(&s.conn, "bans").unwrap();
        assert_eq!(s.counter("bans").unwrap(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
