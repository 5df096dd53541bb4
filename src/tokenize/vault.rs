//! The token vault of format-preserving fields: token -> the original, sealed with AES-256-GCM under the
//! field's vault key, the associated data binding the table, the field and the token. A same-length,
//! Luhn-valid token with a reserved prefix cannot carry every digit of the original, so reversing one
//! needs this table.
//!
//! In memory always; with `store:` also in the SQLite file (component `token_vault`), loaded at start
//! and written by a background thread, never on the request path. Each entry also keeps the keyed
//! fingerprint (HMAC-SHA-256) of its original, so that finding the token of a value already seen costs
//! one lookup and no decryption.

use crate::store::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, RwLock};

/// The SQL steps of the `token_vault` component.
const MIGRATIONS: &[&str] = &["CREATE TABLE token_vault (
        field TEXT NOT NULL,
        token TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        sealed BLOB NOT NULL,
        PRIMARY KEY (field, token)
    );"];

/// One vault entry.
#[derive(Clone)]
pub struct Entry {
    pub fingerprint: [u8; 32],
    pub sealed: Vec<u8>,
}

struct Row {
    field: String,
    token: String,
    entry: Entry,
}

/// The vault of every format-preserving field.
pub struct Vault {
    /// `field \0 token` -> entry.
    entries: RwLock<HashMap<String, Entry>>,
    max_entries: Mutex<usize>,
    writer: Option<Mutex<mpsc::Sender<Row>>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What [`Vault::claim`] found.
pub enum Claim {
    /// The token is now this value's.
    Claimed,
    /// The token already was this value's.
    Same,
    /// The token belongs to another value (a collision): try the next counter.
    Taken,
    /// The vault is full (`tokenization.vault_max_entries`).
    Full,
}

fn key(field: &str, token: &str) -> String {
    let mut k = String::with_capacity(field.len() + 1 + token.len());
    k.push_str(field);
    k.push('\0');
    k.push_str(token);
    k
}

impl Vault {
    /// A vault in memory only.
    pub fn memory(max_entries: usize) -> Vault {
        Vault { entries: RwLock::default(), max_entries: Mutex::new(max_entries), writer: None, path: None }
    }

    /// A vault kept in the SQLite file at `path`: its rows are loaded now, and new ones are written by
    /// a background thread.
    pub fn open(path: &Path, max_entries: usize) -> Result<Vault, String> {
        let mut store = Store::open(path).map_err(|e| e.to_string())?;
        store.migrate("token_vault", MIGRATIONS).map_err(|e| e.to_string())?;
        let mut entries = HashMap::new();
        {
            let conn = store.conn();
            let mut q = conn
                .prepare("SELECT field, token, fingerprint, sealed FROM token_vault")
                .map_err(|e| store_error(path, &e))?;
            let rows = q
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .map_err(|e| store_error(path, &e))?;
            for row in rows {
                let (field, token, fp, sealed) = row.map_err(|e| store_error(path, &e))?;
                let Ok(fingerprint) = <[u8; 32]>::try_from(fp.as_slice()) else { continue };
                entries.insert(key(&field, &token), Entry { fingerprint, sealed });
            }
        }
        let (tx, rx) = mpsc::channel::<Row>();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("token-vault".into())
            .spawn(move || write_rows(store, rx, &shown))
            .map_err(|e| format!("token vault writer: {e}"))?;
        Ok(Vault {
            entries: RwLock::new(entries),
            max_entries: Mutex::new(max_entries),
            writer: Some(Mutex::new(tx)),
            path: Some(path.to_owned()),
        })
    }

    /// The file this vault is kept in, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn set_max_entries(&self, n: usize) {
        *self.max_entries.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of a token, if the vault has one.
    pub fn get(&self, field: &str, token: &str) -> Option<Entry> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).get(&key(field, token)).cloned()
    }

    /// True if `token` is already the token of the value whose fingerprint is `fingerprint`.
    pub fn holds(&self, field: &str, token: &str, fingerprint: &[u8; 32]) -> Option<bool> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(&key(field, token)).map(|e| e.fingerprint == *fingerprint)
    }

    /// Makes `token` the token of the value of `fingerprint` unless another value holds it; `seal`
    /// makes the sealed original (called only when the entry is new).
    pub fn claim(
        &self,
        field: &str,
        token: &str,
        fingerprint: [u8; 32],
        seal: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Claim {
        let max = *self.max_entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let k = key(field, token);
        if let Some(e) = entries.get(&k) {
            return if e.fingerprint == fingerprint { Claim::Same } else { Claim::Taken };
        }
        if entries.len() >= max {
            return Claim::Full;
        }
        let Some(sealed) = seal() else { return Claim::Full };
        let entry = Entry { fingerprint, sealed };
        entries.insert(k, entry.clone());
        drop(entries);
        if let Some(w) = &self.writer {
            let row = Row { field: field.to_owned(), token: token.to_owned(), entry };
            if w.lock().unwrap_or_else(|e| e.into_inner()).send(row).is_err() {
                tracing::error!("token vault writer stopped: new tokens are kept in memory only");
            }
        }
        Claim::Claimed
    }
}

fn store_error(path: &Path, e: &rusqlite::Error) -> String {
    format!("token vault {}: {e}", path.display())
}

/// The background writer: rows in small transactions as they come.
fn write_rows(mut store: Store, rx: mpsc::Receiver<Row>, path: &str) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 512 {
                break;
            }
        }
        let conn = store.conn();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO token_vault (field, token, fingerprint, sealed) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for r in &batch {
                    ins.execute(rusqlite::params![r.field, r.token, &r.entry.fingerprint[..], r.entry.sealed])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::error!(path, error = %e, rows = batch.len(), "token vault rows not written");
        }
    }
}

/// The vault that outlives reloads (one per process, per store file).
#[derive(Default)]
pub struct Kept {
    vault: Mutex<Option<std::sync::Arc<Vault>>>,
}

impl Kept {
    /// The running vault if it is kept in the same place, else a new one.
    pub fn vault(&self, path: Option<&Path>, max_entries: usize) -> Result<std::sync::Arc<Vault>, String> {
        let mut v = self.vault.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = v.as_ref().filter(|l| l.path() == path) {
            live.set_max_entries(max_entries);
            return Ok(live.clone());
        }
        let new = std::sync::Arc::new(match path {
            Some(p) => Vault::open(p, max_entries)?,
            None => Vault::memory(max_entries),
        });
        *v = Some(new.clone());
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn claims_and_collisions() {
        let v = Vault::memory(2);
        assert!(matches!(v.claim("f", "t1", [1; 32], || Some(vec![1])), Claim::Claimed));
        assert!(matches!(v.claim("f", "t1", [1; 32], || Some(vec![1])), Claim::Same));
        assert!(matches!(v.claim("f", "t1", [2; 32], || Some(vec![2])), Claim::Taken));
        assert!(matches!(v.claim("g", "t1", [2; 32], || Some(vec![2])), Claim::Claimed));
        assert!(matches!(v.claim("g", "t2", [3; 32], || Some(vec![3])), Claim::Full));
        assert_eq!(v.holds("f", "t1", &[1; 32]), Some(true));
        assert_eq!(v.holds("f", "t9", &[1; 32]), None);
    }

    #[test]
    fn persisted_rows_come_back() {
        let dir = std::env::temp_dir().join(format!("portcullis-vault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        {
            let v = Vault::open(&path, 10).unwrap();
            assert!(matches!(v.claim("f", "t1", [1; 32], || Some(vec![7, 7])), Claim::Claimed));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let v = Vault::open(&path, 10).unwrap();
            if let Some(e) = v.get("f", "t1") {
                assert_eq!(e.sealed, vec![7, 7]);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "row never written");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
