//! Secrets kept in a state store, encrypted: the `secrets:` section (which KEKs), the keyring (KEKs and
//! the data keys they wrap), and the SQLite tables (`data_keys`, `secrets`).
//!
//! The storage side is the [`KeyTable`] trait (data keys) plus the [`SqliteSecrets`] value table, so a
//! second store (PostgreSQL) implements the same few calls; the cryptography stays in [`Keyring`] and
//! [`super::envelope`].

use super::clock::{now_ms, parse_rfc3339, utc};
use super::envelope::{Dek, Tampered};
use super::kek::{Kek, KekSource};
use crate::sqlite::Store;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// `secrets:` in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// The current KEK: `{ file: PATH }`, `{ env: NAME }` or `{ command: [argv...] }`.
    pub kek: KekSource,
    /// The KEK before the last rotation, still accepted for reads (until `previous_kek_until`).
    #[serde(default)]
    pub previous_kek: Option<KekSource>,
    /// RFC 3339: after this instant `previous_kek` is no longer used (the grace period's end).
    #[serde(default)]
    pub previous_kek_until: Option<String>,
}

/// `portcullis check` warnings for `secrets:`: a previous KEK without an end, or past its end.
pub fn lints(cfg: Option<&SecretsConfig>) -> Vec<String> {
    let Some(cfg) = cfg else { return Vec::new() };
    let mut out = Vec::new();
    match (&cfg.previous_kek, cfg.previous_kek_until.as_deref().map(parse_rfc3339)) {
        (Some(_), None) => out.push(
            "secrets.previous_kek has no `previous_kek_until`: it is accepted for as long as it stays in the config;              run `portcullis secrets rotate-kek`, then remove it"
                .into(),
        ),
        (Some(_), Some(Ok(until))) if until <= now_ms() => out.push(format!(
            "secrets.previous_kek_until ({}) has passed: `previous_kek` is no longer used; remove it",
            utc(until)
        )),
        _ => {}
    }
    for (key, src) in [("kek", Some(&cfg.kek)), ("previous_kek", cfg.previous_kek.as_ref())] {
        use std::os::unix::fs::PermissionsExt;
        let program = src.and_then(|s| s.command.as_ref()).and_then(|c| c.first());
        if let Some(program) = program.filter(|p| !p.starts_with('/')) {
            out.push(format!(
                "secrets.{key}.command: `{program}` is not an absolute path, so it is looked up in PATH (or the \
                 working directory) of whichever process loads the config; write its absolute path"
            ));
        }
        let Some(path) = src.and_then(|s| s.file.as_ref()) else { continue };
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            out.push(format!(
                "secrets.{key}: `{}` is readable or writable by group or others; `chmod 600` it",
                path.display()
            ));
        }
    }
    out
}

/// A `portcullis check` warning when secrets are kept in a state store file that group or others can
/// read or write (a new file is 0600; one made by an older build, or copied, may not be).
pub fn store_lint(cfg: Option<&SecretsConfig>, store: Option<&Path>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = store.filter(|_| cfg.is_some())?;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "store.sqlite: `{}` (wrapped data keys, sealed secrets) is readable or writable by group or others; `chmod 600` it",
            path.display()
        )
    })
}

/// The KEKs a config gives: the current one, and the previous one while its grace lasts.
#[derive(Debug, Clone)]
pub struct Keys {
    pub current: Kek,
    pub previous: Option<Kek>,
    /// When the previous KEK's grace ended (set when it is configured but no longer used).
    pub grace_ended: Option<i64>,
}

impl Keys {
    /// Loads the KEKs. `ignore_grace`: use `previous_kek` even after `previous_kek_until` (only
    /// `rotate-kek` does, to move data off it).
    pub fn load(cfg: &SecretsConfig, ignore_grace: bool) -> Result<Keys, String> {
        let current = cfg.kek.load().map_err(|e| format!("secrets.kek: {e}"))?;
        let until = cfg
            .previous_kek_until
            .as_deref()
            .map(parse_rfc3339)
            .transpose()
            .map_err(|e| format!("secrets.previous_kek_until: {e}"))?;
        if until.is_some() && cfg.previous_kek.is_none() {
            return Err("secrets.previous_kek_until needs `previous_kek`".into());
        }
        let expired = until.filter(|u| !ignore_grace && now_ms() >= *u);
        let previous = match (&cfg.previous_kek, expired) {
            (Some(src), None) => Some(src.load().map_err(|e| format!("secrets.previous_kek: {e}"))?),
            _ => None,
        };
        if previous.as_ref().is_some_and(|p| p.id() == current.id()) {
            return Err("secrets.previous_kek is the same key as secrets.kek".into());
        }
        Ok(Keys { current, previous, grace_ended: expired })
    }

    /// The KEK with this id, or why there is none.
    pub fn find(&self, id: &str) -> Result<&Kek, String> {
        if self.current.id() == id {
            return Ok(&self.current);
        }
        if let Some(p) = self.previous.as_ref().filter(|p| p.id() == id) {
            return Ok(p);
        }
        match self.grace_ended {
            Some(t) => Err(format!(
                "it was encrypted under KEK {id}, which is not `kek`, and `previous_kek`'s grace ended at {}; \
                 run `portcullis secrets rotate-kek` (or re-encrypt the value)",
                utc(t)
            )),
            None => Err(format!("it was encrypted under KEK {id}, which is neither `kek` nor `previous_kek`")),
        }
    }
}

/// A data key as stored: wrapped under the KEK `kek_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDek {
    pub id: String,
    pub kek_id: String,
    pub wrapped: Vec<u8>,
    pub created_at: i64,
    pub active: bool,
}

/// What [`KeyTable::rewrap_all`] calls per data key: its new `(kek_id, wrapped)`, or `None` to keep it.
pub type Rewrap<'a> = dyn FnMut(&WrappedDek) -> Result<Option<(String, Vec<u8>)>, String> + 'a;

/// Where data keys are kept (SQLite today; PostgreSQL implements the same).
pub trait KeyTable {
    fn data_keys(&mut self) -> Result<Vec<WrappedDek>, String>;
    /// Adds `dek` and makes it the only active one, in one transaction.
    fn add_active(&mut self, dek: &WrappedDek) -> Result<(), String>;
    /// In one transaction, replaces each data key's wrapping with what `rewrap` returns (`None`: keep
    /// it); any error rolls everything back. Returns how many were replaced.
    fn rewrap_all(&mut self, rewrap: &mut Rewrap<'_>) -> Result<usize, String>;
}

/// The KEKs and the data keys unwrapped so far (each DEK is unwrapped once, on first use).
#[derive(Debug)]
pub struct Keyring {
    pub keys: Keys,
    wrapped: HashMap<String, WrappedDek>,
    open: HashMap<String, Dek>,
}

impl Keyring {
    pub fn load(keys: Keys, table: &mut dyn KeyTable) -> Result<Keyring, String> {
        let wrapped = table.data_keys()?.into_iter().map(|w| (w.id.clone(), w)).collect();
        Ok(Keyring { keys, wrapped, open: HashMap::new() })
    }

    /// The data key `id`, unwrapped.
    pub fn dek(&mut self, id: &str) -> Result<&Dek, String> {
        if !self.open.contains_key(id) {
            let w = self.wrapped.get(id).ok_or_else(|| format!("its data key {id} is not in the store"))?;
            let kek = self.keys.find(&w.kek_id).map_err(|e| format!("data key {id}: {e}"))?;
            let dek = Dek::unwrap(id, &w.wrapped, kek).map_err(|Tampered| {
                format!("data key {id} does not unwrap under KEK {}: wrong KEK or tampered row", kek.id())
            })?;
            self.open.insert(id.to_owned(), dek);
        }
        self.open.get(id).ok_or_else(|| "data key lost".into())
    }

    /// The active data key, made (and stored) when there is none yet.
    pub fn active(&mut self, table: &mut dyn KeyTable) -> Result<Dek, String> {
        let active = self.wrapped.values().filter(|w| w.active).max_by_key(|w| w.created_at).map(|w| w.id.clone());
        match active {
            Some(id) => self.dek(&id).cloned(),
            None => self.rotate(table),
        }
    }

    /// Makes a new data key, wraps it under the current KEK and makes it the active one.
    pub fn rotate(&mut self, table: &mut dyn KeyTable) -> Result<Dek, String> {
        let dek = Dek::generate()?;
        let w = WrappedDek {
            id: dek.id().to_owned(),
            kek_id: self.keys.current.id().to_owned(),
            wrapped: dek.wrap(&self.keys.current)?,
            created_at: now_ms(),
            active: true,
        };
        table.add_active(&w)?;
        for other in self.wrapped.values_mut() {
            other.active = false;
        }
        self.wrapped.insert(w.id.clone(), w);
        self.open.insert(dek.id().to_owned(), dek.clone());
        Ok(dek)
    }

    /// Re-wraps every data key not under the current KEK (one transaction). Returns how many.
    pub fn rotate_kek(&mut self, table: &mut dyn KeyTable) -> Result<usize, String> {
        let current = self.keys.current.clone();
        let keys = self.keys.clone();
        let n = table.rewrap_all(&mut |w| {
            if w.kek_id == current.id() {
                return Ok(None);
            }
            let kek = keys.find(&w.kek_id).map_err(|e| format!("data key {}: {e}", w.id))?;
            let dek = Dek::unwrap(&w.id, &w.wrapped, kek)
                .map_err(|Tampered| format!("data key {} does not unwrap under KEK {}", w.id, kek.id()))?;
            Ok(Some((current.id().to_owned(), dek.wrap(&current)?)))
        })?;
        self.wrapped = table.data_keys()?.into_iter().map(|w| (w.id.clone(), w)).collect();
        Ok(n)
    }
}

/// The component's tables (see `Store::migrate`).
const STEPS: &[&str] = &["CREATE TABLE data_keys (
        id TEXT PRIMARY KEY,
        kek_id TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        active INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        dek_id TEXT NOT NULL,
        value BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );"];

/// The change counter a write bumps.
pub const COUNTER: &str = "secrets";
/// The table and column values are bound to (with the secret's name as the row id).
const TABLE: &str = "secrets";
const COLUMN: &str = "value";

/// One stored secret, as `secrets list` shows it (no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub dek_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The `secrets` and `data_keys` tables of an SQLite state store.
#[derive(Debug)]
pub struct SqliteSecrets {
    store: Store,
}

impl SqliteSecrets {
    /// Opens the store. `create`: make the file if missing (the CLI's writes); otherwise a missing file
    /// is an error (a config that reads secrets from a store that is not there).
    pub fn open(path: &Path, create: bool) -> Result<SqliteSecrets, String> {
        if !create && !path.exists() {
            return Err(format!("the state store `{}` does not exist", path.display()));
        }
        let mut store = Store::open(path).map_err(|e| e.to_string())?;
        store.migrate("secrets", STEPS).map_err(|e| e.to_string())?;
        // Deleted and overwritten rows are zeroed rather than left in free pages.
        store.conn().execute_batch("PRAGMA secure_delete = ON;").map_err(|e| store.error(e).to_string())?;
        Ok(SqliteSecrets { store })
    }

    fn err(&self, e: rusqlite::Error) -> String {
        self.store.error(e).to_string()
    }

    /// A secret's value: `Ok(None)` when there is no such name.
    pub fn get(&mut self, keyring: &mut Keyring, name: &str) -> Result<Option<Vec<u8>>, String> {
        let row: Option<(String, Vec<u8>)> = self
            .store
            .conn()
            .query_row("SELECT dek_id, value FROM secrets WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((dek_id, blob)) = row else { return Ok(None) };
        let dek = keyring.dek(&dek_id)?;
        dek.open(TABLE, name, COLUMN, &blob).map(Some).map_err(|Tampered| {
            "it does not decrypt: the stored row was changed, swapped or copied from another name".to_string()
        })
    }

    /// Stores (or replaces) a secret under the active data key; bumps the counter.
    pub fn put(&mut self, keyring: &mut Keyring, name: &str, value: &[u8]) -> Result<(), String> {
        let dek = keyring.active(self)?;
        let blob = dek.seal(TABLE, name, COLUMN, value)?;
        let now = now_ms();
        let conn = self.store.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate);
        let result = tx.and_then(|tx| {
            tx.execute(
                "INSERT INTO secrets (name, dek_id, value, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (name) DO UPDATE SET dek_id = excluded.dek_id, value = excluded.value,
                 updated_at = excluded.updated_at",
                params![name, dek.id(), blob, now],
            )?;
            Store::bump(&tx, COUNTER)?;
            tx.commit()
        });
        result.map_err(|e| self.err(e))
    }

    /// Deletes a secret; false if there was none.
    pub fn delete(&mut self, name: &str) -> Result<bool, String> {
        let conn = self.store.conn();
        let result = conn.transaction_with_behavior(TransactionBehavior::Immediate).and_then(|tx| {
            let n = tx.execute("DELETE FROM secrets WHERE name = ?1", [name])?;
            if n > 0 {
                Store::bump(&tx, COUNTER)?;
            }
            tx.commit()?;
            Ok(n > 0)
        });
        result.map_err(|e| self.err(e))
    }

    pub fn list(&mut self) -> Result<Vec<Listed>, String> {
        let conn = self.store.conn();
        let result = conn.prepare("SELECT name, dek_id, created_at, updated_at FROM secrets ORDER BY name").and_then(
            |mut st| {
                st.query_map([], |r| {
                    Ok(Listed { name: r.get(0)?, dek_id: r.get(1)?, created_at: r.get(2)?, updated_at: r.get(3)? })
                })?
                .collect::<Result<Vec<_>, _>>()
            },
        );
        result.map_err(|e| self.err(e))
    }

    pub fn path(&self) -> &str {
        self.store.path()
    }

    /// Copies the WAL into the database and truncates it to zero bytes, so the page images of replaced
    /// rows (a data key still wrapped under the KEK just rotated away, a deleted secret's ciphertext)
    /// do not linger in the `-wal` file; `secure_delete` already zeroes them in the database itself.
    /// Best effort: a reader holding the WAL (a gateway mid-query) makes it a no-op, reported as false.
    /// Waits at most 250 ms for readers, not the store's 5 s busy timeout (restored after).
    pub fn scrub_wal(&mut self) -> bool {
        let conn = self.store.conn();
        let _ = conn.busy_timeout(std::time::Duration::from_millis(250));
        let result: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        matches!(result, Ok((0, _, _)))
    }
}

impl KeyTable for SqliteSecrets {
    fn data_keys(&mut self) -> Result<Vec<WrappedDek>, String> {
        let conn = self.store.conn();
        let result = conn
            .prepare("SELECT id, kek_id, wrapped, created_at, active FROM data_keys ORDER BY created_at")
            .and_then(|mut st| st.query_map([], wrapped_dek)?.collect::<Result<Vec<_>, _>>());
        result.map_err(|e| self.err(e))
    }

    fn add_active(&mut self, dek: &WrappedDek) -> Result<(), String> {
        let conn = self.store.conn();
        let result = conn.transaction_with_behavior(TransactionBehavior::Immediate).and_then(|tx| {
            tx.execute("UPDATE data_keys SET active = 0", [])?;
            tx.execute(
                "INSERT INTO data_keys (id, kek_id, wrapped, created_at, active) VALUES (?1, ?2, ?3, ?4, 1)",
                params![dek.id, dek.kek_id, dek.wrapped, dek.created_at],
            )?;
            Store::bump(&tx, COUNTER)?;
            tx.commit()
        });
        result.map_err(|e| self.err(e))
    }

    fn rewrap_all(&mut self, rewrap: &mut Rewrap<'_>) -> Result<usize, String> {
        let path = self.store.path().to_owned();
        let sql = |e: rusqlite::Error| format!("state store {path}: {e}");
        // Read inside the write transaction, so no DEK added meanwhile is missed.
        let tx = self.store.conn().transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        let keys = {
            let mut st = tx
                .prepare("SELECT id, kek_id, wrapped, created_at, active FROM data_keys ORDER BY rowid")
                .map_err(sql)?;
            let rows = st.query_map([], wrapped_dek).map_err(sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql)?
        };
        let mut n = 0;
        for w in &keys {
            if let Some((kek_id, wrapped)) = rewrap(w)? {
                tx.execute(
                    "UPDATE data_keys SET kek_id = ?1, wrapped = ?2 WHERE id = ?3",
                    params![kek_id, wrapped, w.id],
                )
                .map_err(sql)?;
                n += 1;
            }
        }
        if n > 0 {
            Store::bump(&tx, COUNTER).map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(n)
    }
}

/// A `data_keys` row read as `SELECT id, kek_id, wrapped, created_at, active`.
fn wrapped_dek(r: &rusqlite::Row<'_>) -> rusqlite::Result<WrappedDek> {
    Ok(WrappedDek {
        id: r.get(0)?,
        kek_id: r.get(1)?,
        wrapped: r.get(2)?,
        created_at: r.get(3)?,
        active: r.get::<_, i64>(4)? != 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("portcullis-vault-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("state.db")
    }

    fn keys(current: &Kek, previous: Option<&Kek>) -> Keys {
        Keys { current: current.clone(), previous: previous.cloned(), grace_ended: None }
    }

    #[test]
    fn put_get_rotate_and_tamper() {
        let path = temp("tamper");
        let kek = Kek::generate().unwrap();
        let mut s = SqliteSecrets::open(&path, true).unwrap();
        let mut ring = Keyring::load(keys(&kek, None), &mut s).unwrap();
        s.put(&mut ring, "a", b"alpha").unwrap();
        s.put(&mut ring, "b", b"bravo").unwrap();
        assert_eq!(s.get(&mut ring, "a").unwrap().unwrap(), b"alpha");
        assert_eq!(s.get(&mut ring, "none").unwrap(), None);
        // A new data key: new writes use it, old values stay readable.
        let old = ring.active(&mut s).unwrap().id().to_owned();
        ring.rotate(&mut s).unwrap();
        s.put(&mut ring, "c", b"charlie").unwrap();
        let list = s.list().unwrap();
        assert_ne!(list[2].dek_id, old);
        assert_eq!(list[0].dek_id, old);
        let mut fresh = Keyring::load(keys(&kek, None), &mut s).unwrap();
        assert_eq!(s.get(&mut fresh, "a").unwrap().unwrap(), b"alpha");
        assert_eq!(s.get(&mut fresh, "c").unwrap().unwrap(), b"charlie");

        // Swap a and b's values: both refused.
        let conn = s.store.conn();
        conn.execute_batch("UPDATE secrets SET value = (SELECT value FROM secrets WHERE name = 'b') WHERE name = 'a';")
            .unwrap();
        let err = s.get(&mut fresh, "a").unwrap_err();
        assert!(err.contains("does not decrypt"), "{err}");
        // Copy b's row to a new name: refused.
        s.store
            .conn()
            .execute_batch("INSERT INTO secrets SELECT 'copy', dek_id, value, created_at, updated_at FROM secrets WHERE name = 'b';")
            .unwrap();
        assert!(s.get(&mut fresh, "copy").is_err());
        assert_eq!(s.get(&mut fresh, "b").unwrap().unwrap(), b"bravo");
        // Flip one bit of c's ciphertext.
        let mut blob: Vec<u8> =
            s.store.conn().query_row("SELECT value FROM secrets WHERE name = 'c'", [], |r| r.get(0)).unwrap();
        blob[14] ^= 1;
        s.store.conn().execute("UPDATE secrets SET value = ?1 WHERE name = 'c'", [blob]).unwrap();
        assert!(s.get(&mut fresh, "c").is_err());
        // A wrong KEK cannot unwrap the data keys.
        let mut wrong = Keyring::load(keys(&Kek::generate().unwrap(), None), &mut s).unwrap();
        let err = s.get(&mut wrong, "b").unwrap_err();
        assert!(err.contains("neither"), "{err}");
        // A tampered wrapped DEK.
        s.store.conn().execute_batch("UPDATE data_keys SET wrapped = zeroblob(60);").unwrap();
        let mut broken = Keyring::load(keys(&kek, None), &mut s).unwrap();
        assert!(s.get(&mut broken, "b").unwrap_err().contains("does not unwrap"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn rotate_kek_rewraps_every_data_key() {
        let path = temp("rotate");
        let (k1, k2) = (Kek::generate().unwrap(), Kek::generate().unwrap());
        let mut s = SqliteSecrets::open(&path, true).unwrap();
        let mut ring = Keyring::load(keys(&k1, None), &mut s).unwrap();
        s.put(&mut ring, "a", b"alpha").unwrap();
        ring.rotate(&mut s).unwrap();
        s.put(&mut ring, "b", b"bravo").unwrap();
        // Without the old KEK, nothing can be re-wrapped; the transaction changes nothing.
        let mut blind = Keyring::load(keys(&k2, None), &mut s).unwrap();
        assert!(blind.rotate_kek(&mut s).is_err());
        assert!(s.data_keys().unwrap().iter().all(|w| w.kek_id == k1.id()));
        let mut ring = Keyring::load(keys(&k2, Some(&k1)), &mut s).unwrap();
        assert_eq!(ring.rotate_kek(&mut s).unwrap(), 2);
        assert_eq!(ring.rotate_kek(&mut s).unwrap(), 0);
        let mut only_new = Keyring::load(keys(&k2, None), &mut s).unwrap();
        assert_eq!(s.get(&mut only_new, "a").unwrap().unwrap(), b"alpha");
        assert_eq!(s.get(&mut only_new, "b").unwrap().unwrap(), b"bravo");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_rotate_kek_that_fails_midway_changes_nothing() {
        let path = temp("midway");
        let (k1, k2, k3) = (Kek::generate().unwrap(), Kek::generate().unwrap(), Kek::generate().unwrap());
        let mut s = SqliteSecrets::open(&path, true).unwrap();
        let mut ring = Keyring::load(keys(&k1, None), &mut s).unwrap();
        s.put(&mut ring, "a", b"alpha").unwrap();
        // A second data key under a KEK the rotation will not be given.
        let mut other = Keyring::load(keys(&k3, None), &mut s).unwrap();
        other.rotate(&mut s).unwrap();
        s.put(&mut other, "b", b"bravo").unwrap();
        let before = s.data_keys().unwrap();
        assert_eq!(before.len(), 2);
        let counter = s.store.counter(COUNTER).unwrap();
        // The first data key (in insertion order) is re-wrapped, the second fails: both are rolled back.
        let mut ring = Keyring::load(keys(&k2, Some(&k1)), &mut s).unwrap();
        let err = ring.rotate_kek(&mut s).unwrap_err();
        assert!(err.contains("neither"), "{err}");
        assert_eq!(s.data_keys().unwrap(), before, "nothing re-wrapped");
        assert_eq!(s.store.counter(COUNTER).unwrap(), counter, "no change announced");
        let mut old = Keyring::load(keys(&k1, None), &mut s).unwrap();
        assert_eq!(s.get(&mut old, "a").unwrap().unwrap(), b"alpha");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn after_rotate_kek_the_old_wrapping_is_in_neither_the_file_nor_the_wal() {
        let path = temp("scrub");
        let wal = path.with_extension("db-wal");
        let (k1, k2) = (Kek::generate().unwrap(), Kek::generate().unwrap());
        let mut s = SqliteSecrets::open(&path, true).unwrap();
        let mut ring = Keyring::load(keys(&k1, None), &mut s).unwrap();
        s.put(&mut ring, "a", b"alpha").unwrap();
        s.put(&mut ring, "gone", b"deleted-value").unwrap();
        let old = s.data_keys().unwrap()[0].wrapped.clone();
        let gone: Vec<u8> =
            s.store.conn().query_row("SELECT value FROM secrets WHERE name = 'gone'", [], |r| r.get(0)).unwrap();
        let raw = || [std::fs::read(&path).unwrap(), std::fs::read(&wal).unwrap_or_default()].concat();
        assert!(contains(&raw(), &old), "the fixture: the wrapped key is on disk before the rotation");
        let mut ring = Keyring::load(keys(&k2, Some(&k1)), &mut s).unwrap();
        assert_eq!(ring.rotate_kek(&mut s).unwrap(), 1);
        assert!(s.delete("gone").unwrap());
        // Without the scrub, the WAL still holds the page images written before.
        assert!(contains(&raw(), &old), "the fixture: the WAL keeps old page images");
        assert!(s.scrub_wal());
        assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
        let bytes = raw();
        assert!(!contains(&bytes, &old), "the data key wrapped under the old KEK");
        assert!(!contains(&bytes, &gone), "the deleted secret's ciphertext");
        let mut only_new = Keyring::load(keys(&k2, None), &mut s).unwrap();
        assert_eq!(s.get(&mut only_new, "a").unwrap().unwrap(), b"alpha");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn grace_ends_the_previous_kek() {
        let dir = temp("grace");
        let dir = dir.parent().unwrap();
        let (k1, k2) = (Kek::generate().unwrap(), Kek::generate().unwrap());
        std::fs::write(dir.join("k1"), k1.to_hex()).unwrap();
        std::fs::write(dir.join("k2"), k2.to_hex()).unwrap();
        let file = |n: &str| KekSource { file: Some(dir.join(n)), ..KekSource::default() };
        let mut cfg = SecretsConfig {
            kek: file("k2"),
            previous_kek: Some(file("k1")),
            previous_kek_until: Some("2000-01-01T00:00:00Z".into()),
        };
        let past = Keys::load(&cfg, false).unwrap();
        assert!(past.previous.is_none());
        assert!(past.find(k1.id()).unwrap_err().contains("grace ended at 2000-01-01T00:00:00Z"));
        assert!(Keys::load(&cfg, true).unwrap().previous.is_some());
        cfg.previous_kek_until = Some("2999-01-01T00:00:00Z".into());
        assert_eq!(Keys::load(&cfg, false).unwrap().find(k1.id()).unwrap().id(), k1.id());
        cfg.previous_kek_until = Some("tomorrow".into());
        assert!(Keys::load(&cfg, false).unwrap_err().contains("previous_kek_until"));
        cfg.previous_kek_until = Some("2000-01-01T00:00:00Z".into());
        assert!(lints(Some(&cfg))[0].contains("has passed"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("k1"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(lints(Some(&cfg)).iter().any(|l| l.contains("secrets.previous_kek: ") && l.contains("chmod 600")));
        std::fs::set_permissions(dir.join("k1"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.join("k2"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lints(Some(&cfg)).len(), 1);
        // A KEK command looked up in PATH is named; an absolute one is not.
        cfg.kek = KekSource { command: Some(vec!["kms-get".into(), "kek".into()]), ..KekSource::default() };
        let l = lints(Some(&cfg));
        assert!(l.iter().any(|l| l.starts_with("secrets.kek.command: `kms-get` is not an absolute path")), "{l:?}");
        cfg.kek = KekSource { command: Some(vec!["/usr/bin/kms-get".into()]), ..KekSource::default() };
        assert_eq!(lints(Some(&cfg)).len(), 1);
        cfg.kek = file("k2");
        // The state store's mode.
        let db = dir.join("state.db");
        drop(SqliteSecrets::open(&db, true).unwrap());
        assert_eq!(store_lint(Some(&cfg), Some(&db)), None, "created 0600");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(store_lint(Some(&cfg), Some(&db)).unwrap().contains("chmod 600"));
        assert_eq!(store_lint(None, Some(&db)), None, "no `secrets:`: not this lint's business");
        assert_eq!(store_lint(Some(&cfg), Some(&dir.join("missing.db"))), None);
        cfg.previous_kek = Some(file("k2"));
        cfg.previous_kek_until = None;
        assert!(lints(Some(&cfg))[0].contains("no `previous_kek_until`"));
        assert!(Keys::load(&cfg, false).unwrap_err().contains("same key"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
