//! Admin tokens: the bearer credentials of the admin API and the dashboard's login. There is no
//! default token: `portcullis admin token create --role admin` prints the first one, once. A token is
//! `pca_` and 43 base64url characters (256 random bits); only its SHA-256 is stored (a keyed hash adds
//! nothing to a value with that much entropy), with its id, name, role, times and who made it.
//!
//! Stored tokens live in the config's `store:` (table `admin_tokens`); a running gateway polls the
//! store's `admin_tokens` change counter every second, so a token made or revoked by the CLI or another
//! node takes effect within about a second. The quickstart's token is ephemeral: in memory only, gone at
//! exit.

use super::auth::{Caller, Role};
use crate::store::blocking;
use crate::store::postgres::tokens as pg_tokens;
use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use base64::Engine as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub type Digest = [u8; 32];

const STEPS: &[&str] = &["CREATE TABLE admin_tokens (
       id TEXT PRIMARY KEY,
       hash BLOB NOT NULL UNIQUE,
       name TEXT NOT NULL,
       role TEXT NOT NULL,
       created_at INTEGER NOT NULL,
       created_by TEXT NOT NULL,
       expires_at INTEGER,
       revoked_at INTEGER
     );"];

/// A token's attributes (never the token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Unix seconds.
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenInfo {
    fn usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The SHA-256 a token is stored and looked up by.
pub fn digest_of(token: &str) -> Digest {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A new token and its id.
fn generate() -> Result<(String, String), String> {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 6];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "no randomness")?;
    aws_lc_rs::rand::fill(&mut id).map_err(|_| "no randomness")?;
    let token = format!("pca_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    Ok((id.iter().map(|b| format!("{b:02x}")).collect(), token))
}

fn now() -> i64 {
    crate::authn::api_key::now()
}

/// Where stored tokens live.
#[derive(Debug, Clone)]
pub enum TokenStore {
    /// The SQLite state store (`store.sqlite`).
    Sqlite(PathBuf),
    /// The fleet's PostgreSQL (`store.postgres`, when the config has it): every node sees the same
    /// tokens.
    Postgres(Arc<crate::store::Postgres>),
}

impl PartialEq for TokenStore {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TokenStore::Sqlite(a), TokenStore::Sqlite(b)) => a == b,
            (TokenStore::Postgres(a), TokenStore::Postgres(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for TokenStore {}

/// A stored PostgreSQL row as the admin module holds it; `None` for a digest of the wrong length.
fn from_pg(r: pg_tokens::TokenRow) -> Option<(Digest, TokenInfo)> {
    let d = Digest::try_from(r.hash.as_slice()).ok()?;
    Some((
        d,
        TokenInfo {
            id: r.id,
            name: r.name,
            // An unknown role (a newer build's) reads as the lowest.
            role: Role::parse(&r.role).unwrap_or(Role::Viewer),
            created_at: r.created_at,
            created_by: r.created_by,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        },
    ))
}

/// Runs one exchange with PostgreSQL on a pooled connection, counting the outcome in the store's
/// health (`portcullis_store_up`, `portcullis_store_errors_total{op="admin_tokens"}`).
async fn on_pg<T>(
    pg: &crate::store::Postgres,
    f: impl for<'c> AsyncFnOnce(&'c mut crate::store::postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, String> {
    let result = async {
        let mut client = pg.client().await?;
        f(&mut client).await.map_err(|e| pg.error(e))
    }
    .await;
    match result {
        Ok(v) => {
            pg.succeeded();
            Ok(v)
        }
        Err(e) => {
            pg.failed("admin_tokens", &e);
            Err(e.to_string())
        }
    }
}

fn sqlite_error(e: StoreError) -> String {
    e.to_string()
}

fn open(path: &std::path::Path) -> Result<Store, String> {
    let mut s = Store::open(path).map_err(sqlite_error)?;
    s.migrate("admin_tokens", STEPS).map_err(sqlite_error)?;
    Ok(s)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, TokenInfo)> {
    let role: String = r.get(3)?;
    Ok((
        r.get(1)?,
        TokenInfo {
            id: r.get(0)?,
            name: r.get(2)?,
            // An unknown role (a newer build's) reads as the lowest.
            role: Role::parse(&role).unwrap_or(Role::Viewer),
            created_at: r.get(4)?,
            created_by: r.get(5)?,
            expires_at: r.get(6)?,
            revoked_at: r.get(7)?,
        },
    ))
}

impl TokenStore {
    /// The token store of a config's `store:` (none without one).
    pub fn of(store: Option<&crate::store::StoreConfig>) -> Option<TokenStore> {
        store.map(|s| TokenStore::Sqlite(s.sqlite.clone()))
    }

    /// The token store of a config for the CLI: PostgreSQL when `store.postgres` is set (connected and
    /// migrated now), else the SQLite file. Blocks.
    pub fn open(store: Option<&crate::store::StoreConfig>) -> Result<Option<TokenStore>, String> {
        match store.and_then(|s| s.postgres.as_ref()) {
            Some(c) => {
                let pg = crate::store::Postgres::new(c, Default::default())?;
                pg.connect_and_migrate().map_err(|e| e.to_string())?;
                Ok(Some(TokenStore::Postgres(Arc::new(pg))))
            }
            None => Ok(Self::of(store)),
        }
    }

    /// The store's change counter (moves on every write).
    pub async fn generation(&self) -> Result<i64, String> {
        match self {
            TokenStore::Sqlite(p) => {
                let p = p.clone();
                blocking(move || open(&p)?.counter("admin_tokens").map_err(sqlite_error)).await
            }
            TokenStore::Postgres(pg) => on_pg(pg, async |c| pg_tokens::generation(c).await).await,
        }
    }

    /// Every token with its digest.
    pub async fn load(&self) -> Result<Vec<(Digest, TokenInfo)>, String> {
        match self {
            TokenStore::Sqlite(p) => {
                let p = p.clone();
                blocking(move || {
                    let mut s = open(&p)?;
                    let conn = s.conn();
                    let mut stmt = conn
                        .prepare(
                            "SELECT id, hash, name, role, created_at, created_by, expires_at, revoked_at
                             FROM admin_tokens ORDER BY created_at, id",
                        )
                        .map_err(|e| e.to_string())?;
                    let rows = stmt.query_map([], row).map_err(|e| e.to_string())?;
                    let mut out = Vec::new();
                    for r in rows {
                        let (hash, info) = r.map_err(|e| e.to_string())?;
                        if let Ok(d) = Digest::try_from(hash.as_slice()) {
                            out.push((d, info));
                        }
                    }
                    Ok(out)
                })
                .await
            }
            TokenStore::Postgres(pg) => {
                let rows = on_pg(pg, async |c| pg_tokens::load(c).await).await?;
                Ok(rows.into_iter().filter_map(from_pg).collect())
            }
        }
    }

    /// Makes a token: its attributes and the token (shown once).
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        expires_at: Option<i64>,
        created_by: &str,
    ) -> Result<(TokenInfo, String), String> {
        let (id, token) = generate()?;
        let info = TokenInfo {
            id,
            name: name.to_owned(),
            role,
            created_at: now(),
            created_by: created_by.to_owned(),
            expires_at,
            revoked_at: None,
        };
        let digest = digest_of(&token);
        match self {
            TokenStore::Sqlite(p) => {
                let (p, stored) = (p.clone(), info.clone());
                blocking(move || {
                    let mut s = open(&p)?;
                    let tx = s.conn().transaction().map_err(|e| e.to_string())?;
                    tx.execute(
                        "INSERT INTO admin_tokens (id, hash, name, role, created_at, created_by, expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        rusqlite::params![
                            stored.id,
                            digest.as_slice(),
                            stored.name,
                            stored.role.as_str(),
                            stored.created_at,
                            stored.created_by,
                            stored.expires_at
                        ],
                    )
                    .map_err(|e| e.to_string())?;
                    Store::bump(&tx, "admin_tokens").map_err(|e| e.to_string())?;
                    tx.commit().map_err(|e| e.to_string())
                })
                .await?;
            }
            TokenStore::Postgres(pg) => {
                let row = pg_tokens::TokenRow {
                    id: info.id.clone(),
                    hash: digest.to_vec(),
                    name: info.name.clone(),
                    role: info.role.as_str().to_owned(),
                    created_at: info.created_at,
                    created_by: info.created_by.clone(),
                    expires_at: info.expires_at,
                    revoked_at: None,
                };
                if !on_pg(pg, async |c| pg_tokens::insert(c, &row).await).await? {
                    return Err("a token with this id exists; try again".into());
                }
            }
        }
        Ok((info, token))
    }

    /// Writes a token exported from another store (`portcullis store import`): added when its id is
    /// new; `Ok(true)` also when the same token (id and digest) is already there, `Ok(false)` when the
    /// id is taken by another token (left alone).
    pub async fn import(&self, digest: Digest, info: TokenInfo) -> Result<bool, String> {
        if let Some((d, _)) = self.load().await?.into_iter().find(|(_, t)| t.id == info.id) {
            return Ok(d == digest);
        }
        match self {
            TokenStore::Sqlite(p) => {
                let p = p.clone();
                blocking(move || {
                    let mut s = open(&p)?;
                    let tx = s.conn().transaction().map_err(|e| e.to_string())?;
                    let n = tx
                        .execute(
                            "INSERT OR IGNORE INTO admin_tokens
                               (id, hash, name, role, created_at, created_by, expires_at, revoked_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            rusqlite::params![
                                info.id,
                                digest.as_slice(),
                                info.name,
                                info.role.as_str(),
                                info.created_at,
                                info.created_by,
                                info.expires_at,
                                info.revoked_at
                            ],
                        )
                        .map_err(|e| e.to_string())?;
                    Store::bump(&tx, "admin_tokens").map_err(|e| e.to_string())?;
                    tx.commit().map_err(|e| e.to_string())?;
                    Ok(n > 0)
                })
                .await
            }
            TokenStore::Postgres(pg) => {
                let row = pg_tokens::TokenRow {
                    id: info.id.clone(),
                    hash: digest.to_vec(),
                    name: info.name.clone(),
                    role: info.role.as_str().to_owned(),
                    created_at: info.created_at,
                    created_by: info.created_by.clone(),
                    expires_at: info.expires_at,
                    revoked_at: info.revoked_at,
                };
                on_pg(pg, async |c| pg_tokens::insert(c, &row).await).await
            }
        }
    }

    /// Revokes a token at once: its new state, `None` when there is no such token.
    pub async fn revoke(&self, id: &str) -> Result<Option<TokenInfo>, String> {
        match self {
            TokenStore::Sqlite(p) => {
                let (p, id) = (p.clone(), id.to_owned());
                blocking(move || {
                    let mut s = open(&p)?;
                    let tx = s.conn().transaction().map_err(|e| e.to_string())?;
                    tx.execute(
                        "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                        rusqlite::params![id, now()],
                    )
                    .map_err(|e| e.to_string())?;
                    Store::bump(&tx, "admin_tokens").map_err(|e| e.to_string())?;
                    let found = tx
                        .query_row(
                            "SELECT id, hash, name, role, created_at, created_by, expires_at, revoked_at
                             FROM admin_tokens WHERE id = ?1",
                            [&id],
                            row,
                        )
                        .map(|(_, info)| info);
                    let found = match found {
                        Ok(info) => Some(info),
                        Err(rusqlite::Error::QueryReturnedNoRows) => None,
                        Err(e) => return Err(e.to_string()),
                    };
                    tx.commit().map_err(|e| e.to_string())?;
                    Ok(found)
                })
                .await
            }
            TokenStore::Postgres(pg) => {
                let found = on_pg(pg, async |c| pg_tokens::revoke(c, id, now()).await).await?;
                Ok(found.and_then(from_pg).map(|(_, info)| info))
            }
        }
    }
}

/// The tokens a running gateway accepts: the store's (polled) and the ephemeral ones.
#[derive(Default)]
pub struct Tokens {
    stored: ArcSwap<HashMap<Digest, TokenInfo>>,
    ephemeral: Mutex<HashMap<Digest, TokenInfo>>,
    /// The store read last and its generation.
    seen: Mutex<Option<(TokenStore, i64)>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("stored", &self.stored.load().len()).finish_non_exhaustive()
    }
}

impl Tokens {
    /// The caller a presented token stands for, if it is a usable token.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        // Malformed tokens are refused before hashing (and never looked at again).
        if !token.starts_with("pca_") || token.len() != 47 {
            return None;
        }
        self.by_digest(&digest_of(token))
    }

    /// The caller the token of digest `d` stands for now, if it is still usable (a dashboard session
    /// keeps its token's digest and checks it on every use, so it ends when the token is revoked).
    pub fn by_digest(&self, d: &Digest) -> Option<Caller> {
        let t = now();
        let found = self
            .stored
            .load()
            .get(d)
            .cloned()
            .or_else(|| self.ephemeral.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(d).cloned())?;
        found.usable(t).then(|| Caller { id: format!("token:{}", found.id), role: found.role })
    }

    /// Makes a token that lives in this process only (the quickstart's): the token, shown once.
    pub fn ephemeral(&self, name: &str, role: Role) -> Result<String, String> {
        let (id, token) = generate()?;
        let info = TokenInfo {
            id,
            name: name.into(),
            role,
            created_at: now(),
            created_by: "quickstart".into(),
            expires_at: None,
            revoked_at: None,
        };
        self.ephemeral.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(digest_of(&token), info);
        Ok(token)
    }

    /// Reads `store` when it changed since the last read (or is another store). An unreadable store
    /// keeps the tokens in memory.
    pub async fn refresh(&self, store: Option<&TokenStore>) -> Result<bool, String> {
        let Some(store) = store else {
            self.stored.store(Arc::new(HashMap::new()));
            *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            return Ok(false);
        };
        let generation = store.generation().await?;
        let last = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if last.as_ref().is_some_and(|(s, g)| s == store && *g == generation) {
            return Ok(false);
        }
        let all = store.load().await?;
        self.stored.store(Arc::new(all.into_iter().collect()));
        *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((store.clone(), generation));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn tokens_are_stored_hashed_and_revocation_takes_effect_on_refresh() {
        let dir = std::env::temp_dir().join(format!("portcullis-admin-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = TokenStore::Sqlite(dir.join("state.db"));
        let (info, token) = store.create("ops", Role::Operator, None, "test").await.unwrap();
        assert!(token.starts_with("pca_") && token.len() == 47);
        let raw = std::fs::read(dir.join("state.db")).unwrap();
        let wal = std::fs::read(dir.join("state.db-wal")).unwrap_or_default();
        for bytes in [&raw, &wal] {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "the token is never stored");
        }
        let tokens = Tokens::default();
        assert!(tokens.authenticate(&token).is_none(), "not read yet");
        assert!(tokens.refresh(Some(&store)).await.unwrap());
        assert!(!tokens.refresh(Some(&store)).await.unwrap(), "unchanged");
        let caller = tokens.authenticate(&token).unwrap();
        assert_eq!((caller.id.as_str(), caller.role), (format!("token:{}", info.id).as_str(), Role::Operator));
        // Other spellings of the token are other tokens.
        for other in [token.to_uppercase(), format!("{token} "), token[..46].to_string(), token.replace("pca_", "PCA_")]
        {
            assert!(tokens.authenticate(&other).is_none(), "{other}");
        }
        store.revoke(&info.id).await.unwrap().unwrap();
        assert!(tokens.refresh(Some(&store)).await.unwrap());
        assert!(tokens.authenticate(&token).is_none());
        assert!(store.revoke("nope").await.unwrap().is_none());
        let (expired, old) = store.create("old", Role::Admin, Some(now() - 1), "test").await.unwrap();
        tokens.refresh(Some(&store)).await.unwrap();
        assert!(tokens.authenticate(&old).is_none(), "{expired:?} is past its expiry");
        let eph = tokens.ephemeral("quickstart", Role::Admin).unwrap();
        assert_eq!(tokens.authenticate(&eph).unwrap().role, Role::Admin);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
