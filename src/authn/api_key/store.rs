//! The embedded SQLite key store. It holds only keyed hashes and key attributes, never a key. Every
//! write bumps a generation counter, which running gateways poll to reload within seconds.

use super::{principal, Digest, KeyMap, KeyRecord};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Arc;

pub struct Store {
    conn: Connection,
}

/// A key's attributes as listed by `portcullis keys list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub allowed_cidrs: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub grace_until: Option<i64>,
    pub rotated_to: Option<String>,
}

/// A change to a stored key's attributes (the admin API's `PATCH`): `None` keeps a field; for
/// `expires_at`, `Some(None)` removes the expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChange {
    pub roles: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub allowed_cidrs: Option<Vec<String>>,
    pub expires_at: Option<Option<i64>>,
    /// Apply only if the key still has these attributes (compare-and-set in the store, so two
    /// operators on two nodes cannot overwrite each other: the admin API's `If-Match`).
    pub expected: Option<Expected>,
}

pub use crate::store::{Changed, Expected};

/// What a key must still be for a conditional change to apply (the admin API's `If-Match`).
pub fn expected_of(k: &KeyInfo) -> Expected {
    Expected {
        roles: list_to_json(&k.roles),
        scopes: list_to_json(&k.scopes),
        allowed_cidrs: list_to_json(&k.allowed_cidrs),
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        grace_until: k.grace_until,
    }
}

fn err(e: rusqlite::Error) -> String {
    e.to_string()
}

pub fn list_to_json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(super) fn json_to_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// A stored `allowed_cidrs` column: every entry parsed, or the first one that cannot be (the whole
/// column when it is not a JSON list of strings).
pub(super) fn restriction(column: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let entries: Vec<String> = serde_json::from_str(column).map_err(|_| column.chars().take(64).collect::<String>())?;
    entries.iter().map(|e| super::parse_cidr(e).ok_or_else(|| e.chars().take(64).collect())).collect()
}

/// One stored row's columns, as either store (SQLite or PostgreSQL) holds them.
pub(super) struct Stored<'a> {
    pub hash: &'a [u8],
    pub id: String,
    pub principal: &'a str,
    pub roles: &'a str,
    pub scopes: &'a str,
    pub cidrs: &'a str,
}

impl Stored<'_> {
    /// The record the gateway holds, by digest; `None` for a hash of the wrong length. An address
    /// restriction that cannot be read makes the key unusable (never unrestricted).
    pub(super) fn record(
        self,
        created_at: i64,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
        grace_until: Option<i64>,
    ) -> Option<(Digest, KeyRecord)> {
        let digest = <Digest>::try_from(self.hash).ok()?;
        let (allowed, unusable) = match restriction(self.cidrs) {
            Ok(nets) => (nets, false),
            Err(entry) => {
                tracing::warn!(
                    key = self.id.as_str(),
                    entry = entry.as_str(),
                    "API key refused: its address restriction cannot be read"
                );
                (Vec::new(), true)
            }
        };
        let record = KeyRecord {
            id: self.id,
            created_at: Some(created_at),
            principal: principal(self.principal, json_to_list(self.roles), json_to_list(self.scopes)),
            expires_at,
            grace_until,
            revoked: revoked_at.is_some(),
            allowed,
            unusable,
        };
        Some((digest, record))
    }
}

impl Store {
    pub fn open(path: &str) -> Result<Store, String> {
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS api_keys (
               id TEXT PRIMARY KEY,
               hash BLOB NOT NULL UNIQUE,
               principal TEXT NOT NULL,
               roles TEXT NOT NULL DEFAULT '[]',
               scopes TEXT NOT NULL DEFAULT '[]',
               allowed_cidrs TEXT NOT NULL DEFAULT '[]',
               created_at INTEGER NOT NULL,
               expires_at INTEGER,
               revoked_at INTEGER,
               grace_until INTEGER,
               rotated_to TEXT
             );
             CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (k, v) VALUES ('generation', 0);",
        )
        .map_err(err)?;
        Ok(Store { conn })
    }

    fn generation(&self) -> Result<i64, String> {
        self.conn.query_row("SELECT v FROM meta WHERE k = 'generation'", [], |r| r.get(0)).map_err(err)
    }

    fn bump(&self) -> Result<(), String> {
        self.conn.execute("UPDATE meta SET v = v + 1 WHERE k = 'generation'", []).map(|_| ()).map_err(err)
    }

    /// All keys, by hash, as the gateway holds them.
    pub fn load(&self) -> Result<KeyMap, String> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, id, principal, roles, scopes, allowed_cidrs, expires_at, revoked_at, grace_until, created_at FROM api_keys")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            })
            .map_err(err)?;
        let mut map = KeyMap::new();
        for row in rows {
            let (hash, id, who, roles, scopes, cidrs, expires_at, revoked_at, grace_until, created_at) =
                row.map_err(err)?;
            let stored = Stored { hash: &hash, id, principal: &who, roles: &roles, scopes: &scopes, cidrs: &cidrs };
            if let Some((digest, record)) = stored.record(created_at, expires_at, revoked_at, grace_until) {
                map.insert(digest, Arc::new(record));
            }
        }
        Ok(map)
    }

    /// The keys and the generation they were read at, if the generation differs from `last`.
    pub fn load_if_changed(&self, last: Option<i64>) -> Result<Option<(i64, KeyMap)>, String> {
        let g = self.generation()?;
        if Some(g) == last {
            return Ok(None);
        }
        Ok(Some((g, self.load()?)))
    }

    pub fn insert(&self, id: &str, hash: &Digest, info: &KeyInfo) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO api_keys (id, hash, principal, roles, scopes, allowed_cidrs, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    hash.as_slice(),
                    info.principal,
                    list_to_json(&info.roles),
                    list_to_json(&info.scopes),
                    list_to_json(&info.allowed_cidrs),
                    info.created_at,
                    info.expires_at
                ],
            )
            .map_err(err)?;
        self.bump()
    }

    /// A key's address restriction in canonical form, or an error when it cannot be read: a rotation
    /// copies it to the new key and must never turn it into "anywhere".
    pub fn restriction_of(&self, id: &str) -> Result<Vec<String>, String> {
        let column: String =
            self.conn.query_row("SELECT allowed_cidrs FROM api_keys WHERE id = ?1", [id], |r| r.get(0)).map_err(err)?;
        let nets = restriction(&column).map_err(|entry| {
            format!("key `{id}`: its address restriction cannot be read (`{entry}`); fix or revoke the key")
        })?;
        Ok(nets.iter().map(ToString::to_string).collect())
    }

    pub fn get(&self, id: &str) -> Result<Option<KeyInfo>, String> {
        Ok(self.list()?.into_iter().find(|k| k.id == id))
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>, String> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, principal, roles, scopes, allowed_cidrs, created_at, expires_at, revoked_at, grace_until, rotated_to
                 FROM api_keys ORDER BY created_at, id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KeyInfo {
                    id: r.get(0)?,
                    principal: r.get(1)?,
                    roles: json_to_list(&r.get::<_, String>(2)?),
                    scopes: json_to_list(&r.get::<_, String>(3)?),
                    allowed_cidrs: json_to_list(&r.get::<_, String>(4)?),
                    created_at: r.get(5)?,
                    expires_at: r.get(6)?,
                    revoked_at: r.get(7)?,
                    grace_until: r.get(8)?,
                    rotated_to: r.get(9)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Revokes at once. False if there is no such key.
    pub fn revoke(&self, id: &str, now: i64) -> Result<bool, String> {
        let n = self
            .conn
            .execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now])
            .map_err(err)?;
        self.bump()?;
        Ok(n > 0)
    }

    /// Marks `old` as rotated to `new`, valid until `grace_until`.
    pub fn mark_rotated(&self, old: &str, new: &str, grace_until: i64) -> Result<(), String> {
        self.conn
            .execute(
                "UPDATE api_keys SET grace_until = ?2, rotated_to = ?3 WHERE id = ?1",
                params![old, grace_until, new],
            )
            .map_err(err)?;
        self.bump()
    }

    /// Every key with its stored hash (for `portcullis store export`).
    pub fn rows(&self) -> Result<Vec<(Vec<u8>, KeyInfo)>, String> {
        let hashes: std::collections::HashMap<String, Vec<u8>> = {
            let mut stmt = self.conn.prepare("SELECT id, hash FROM api_keys").map_err(err)?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))).map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        };
        Ok(self.list()?.into_iter().filter_map(|k| Some((hashes.get(&k.id)?.clone(), k))).collect())
    }

    /// Writes a key as given (`portcullis store import`): inserted, or its attributes replaced when
    /// the id exists with the same hash. False when the id exists with another hash (left alone).
    pub fn upsert(&self, hash: &[u8], info: &KeyInfo) -> Result<bool, String> {
        let n = self
            .conn
            .execute(
                "INSERT INTO api_keys (id, hash, principal, roles, scopes, allowed_cidrs, created_at, expires_at,
                                       revoked_at, grace_until, rotated_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET principal = excluded.principal, roles = excluded.roles,
                   scopes = excluded.scopes, allowed_cidrs = excluded.allowed_cidrs, created_at = excluded.created_at,
                   expires_at = excluded.expires_at, revoked_at = excluded.revoked_at,
                   grace_until = excluded.grace_until, rotated_to = excluded.rotated_to
                 WHERE api_keys.hash = excluded.hash",
                params![
                    info.id,
                    hash,
                    info.principal,
                    list_to_json(&info.roles),
                    list_to_json(&info.scopes),
                    list_to_json(&info.allowed_cidrs),
                    info.created_at,
                    info.expires_at,
                    info.revoked_at,
                    info.grace_until,
                    info.rotated_to
                ],
            )
            .map_err(err)?;
        if n > 0 {
            self.bump()?;
        }
        Ok(n > 0)
    }

    /// Replaces a key's roles, scopes, address restriction and expiry (each `None` keeps the stored
    /// value). False if there is no such key.
    pub fn update(&self, id: &str, change: &KeyChange) -> Result<Changed, String> {
        let e = change.expected.as_ref();
        let n = self
            .conn
            .execute(
                "UPDATE api_keys SET
                   roles = COALESCE(?2, roles),
                   scopes = COALESCE(?3, scopes),
                   allowed_cidrs = COALESCE(?4, allowed_cidrs),
                   expires_at = CASE WHEN ?5 THEN ?6 ELSE expires_at END
                 WHERE id = ?1 AND (NOT ?7 OR (roles = ?8 AND scopes = ?9 AND allowed_cidrs = ?10
                   AND expires_at IS ?11 AND revoked_at IS ?12 AND grace_until IS ?13))",
                params![
                    id,
                    change.roles.as_deref().map(list_to_json),
                    change.scopes.as_deref().map(list_to_json),
                    change.allowed_cidrs.as_deref().map(list_to_json),
                    change.expires_at.is_some(),
                    change.expires_at.flatten(),
                    e.is_some(),
                    e.map(|e| e.roles.as_str()),
                    e.map(|e| e.scopes.as_str()),
                    e.map(|e| e.allowed_cidrs.as_str()),
                    e.and_then(|e| e.expires_at),
                    e.and_then(|e| e.revoked_at),
                    e.and_then(|e| e.grace_until),
                ],
            )
            .map_err(err)?;
        if n > 0 {
            self.bump()?;
            return Ok(Changed::Done);
        }
        Ok(if self.exists(id)? { Changed::Stale } else { Changed::NotFound })
    }

    pub fn exists(&self, id: &str) -> Result<bool, String> {
        self.conn
            .query_row("SELECT 1 FROM api_keys WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::restriction;

    #[test]
    fn an_unreadable_restriction_is_an_error_never_an_empty_list() {
        assert_eq!(restriction("[]").unwrap(), vec![]);
        let nets = restriction(r#"["203.0.113.5", "10.0.0.0/8"]"#).unwrap();
        assert_eq!(nets.iter().map(ToString::to_string).collect::<Vec<_>>(), ["203.0.113.5/32", "10.0.0.0/8"]);
        assert_eq!(restriction(r#"["10.0.0.0/8", "not-an-address"]"#).unwrap_err(), "not-an-address");
        assert!(restriction("not json").is_err());
        assert!(restriction(r#"[1, 2]"#).is_err());
        assert!(restriction("null").is_err());
    }
}
