//! Where an `api_key` authenticator's managed keys live, as one interface for the admin API and the
//! CLI: the embedded SQLite file today (`store: PATH`), PostgreSQL for fleets. Every method is async;
//! the SQLite arm runs its (short) queries on the blocking pool, never on a runtime thread.
//!
//! Creating and rotating make the key here (shown once to the caller, never stored: only its keyed hash).

use super::store::{Changed, KeyChange, KeyInfo, Store};
use super::{generate, hash, now};
use crate::store::blocking;
use crate::store::postgres::keys as pg_keys;
use crate::store::Postgres;
use aws_lc_rs::hmac;
use std::sync::Arc;

/// The store of one authenticator's managed keys.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The SQLite file of `store: PATH`.
    Sqlite(String),
    /// `store: postgres`: the fleet's PostgreSQL and the authenticator's name (its rows' key).
    Postgres(Arc<Postgres>, String),
}

impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Backend::Sqlite(a), Backend::Sqlite(b)) => a == b,
            (Backend::Postgres(a, x), Backend::Postgres(b, y)) => Arc::ptr_eq(a, b) && x == y,
            _ => false,
        }
    }
}

impl Eq for Backend {}

/// Runs one exchange with PostgreSQL on a pooled connection, counting the outcome in the store's
/// health (`portcullis_store_up`, `portcullis_store_errors_total{op="keys"}`).
async fn on_pg<T>(
    pg: &Postgres,
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
            pg.failed("keys", &e);
            Err(e.to_string())
        }
    }
}

/// Makes a key in PostgreSQL (a taken id is retried).
async fn create_pg(pg: &Postgres, name: &str, secret: &hmac::Key, info: KeyInfo) -> Result<Made, String> {
    for _ in 0..5 {
        let (id, key) = generate()?;
        let info = KeyInfo { id: id.clone(), created_at: now(), ..info.clone() };
        let row = super::pg::row_of(&id, &hash(secret, &key), &info);
        if on_pg(pg, async |c| pg_keys::insert(c, name, &row).await).await? {
            return Ok(Made { info, key });
        }
    }
    Err("could not allocate a key id".into())
}

async fn get_pg(pg: &Postgres, name: &str, id: &str) -> Result<Option<KeyInfo>, String> {
    let row = on_pg(pg, async |c| pg_keys::get(c, name, id).await).await?;
    Ok(row.as_ref().map(super::pg::info_of))
}

/// A key just made: its attributes and the key itself (shown once).
pub struct Made {
    pub info: KeyInfo,
    pub key: String,
}

impl std::fmt::Debug for Made {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Made").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Backend {
    /// The backend of an authenticator's config (`None` when it keeps no managed keys).
    /// (`store: postgres` has no file: [`super::ApiKeyAuth::backend`] gives its PostgreSQL arm.)
    pub fn of(c: &super::ApiKeyConfig) -> Option<Backend> {
        c.store.clone().filter(|s| s != super::pg::WORD).map(Backend::Sqlite)
    }

    pub async fn list(&self) -> Result<Vec<KeyInfo>, String> {
        match self {
            Backend::Sqlite(path) => {
                let path = path.clone();
                blocking(move || Store::open(&path)?.list()).await
            }
            Backend::Postgres(pg, name) => {
                let (_, rows) = on_pg(pg, async |c| pg_keys::load(c, name).await).await?;
                Ok(rows.iter().map(super::pg::info_of).collect())
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<KeyInfo>, String> {
        match self {
            Backend::Sqlite(path) => {
                let (path, id) = (path.clone(), id.to_owned());
                blocking(move || Store::open(&path)?.get(&id)).await
            }
            Backend::Postgres(pg, name) => get_pg(pg, name, id).await,
        }
    }

    /// Makes a key with `info`'s attributes (its `id` and `created_at` are set here).
    pub async fn create(&self, secret: &hmac::Key, info: KeyInfo) -> Result<Made, String> {
        match self {
            Backend::Sqlite(path) => {
                let (path, secret) = (path.clone(), secret.clone());
                blocking(move || create_in(&Store::open(&path)?, &secret, info)).await
            }
            Backend::Postgres(pg, name) => create_pg(pg, name, secret, info).await,
        }
    }

    /// Issues a replacement for `id` with the same attributes; `id` stays valid for `grace` seconds.
    /// `Ok(None)` when there is no such key; an error when it is revoked.
    pub async fn rotate(&self, secret: &hmac::Key, id: &str, grace: i64) -> Result<Option<(Made, KeyInfo)>, String> {
        match self {
            Backend::Sqlite(path) => {
                let (path, secret, id) = (path.clone(), secret.clone(), id.to_owned());
                blocking(move || {
                    let store = Store::open(&path)?;
                    let Some(old) = store.get(&id)? else { return Ok(None) };
                    if old.revoked_at.is_some() {
                        return Err(format!("key `{id}` is revoked"));
                    }
                    let allowed_cidrs = store.restriction_of(&id)?;
                    let made = create_in(&store, &secret, KeyInfo { allowed_cidrs, ..old })?;
                    store.mark_rotated(&id, &made.info.id, now().saturating_add(grace))?;
                    let old = store.get(&id)?.ok_or_else(|| format!("key `{id}` vanished"))?;
                    Ok(Some((made, old)))
                })
                .await
            }
            Backend::Postgres(pg, name) => {
                let Some(row) = on_pg(pg, async |c| pg_keys::get(c, name, id).await).await? else { return Ok(None) };
                if row.revoked_at.is_some() {
                    return Err(format!("key `{id}` is revoked"));
                }
                // The restriction is copied only when it reads: never turned into "anywhere".
                let nets = super::store::restriction(&row.allowed_cidrs).map_err(|entry| {
                    format!("key `{id}`: its address restriction cannot be read (`{entry}`); fix or revoke the key")
                })?;
                let allowed_cidrs = nets.iter().map(ToString::to_string).collect();
                let old = super::pg::info_of(&row);
                let made = create_pg(pg, name, secret, KeyInfo { allowed_cidrs, ..old }).await?;
                let until = now().saturating_add(grace);
                on_pg(pg, async |c| pg_keys::mark_rotated(c, name, id, &made.info.id, until).await).await?;
                let old = get_pg(pg, name, id).await?.ok_or_else(|| format!("key `{id}` vanished"))?;
                Ok(Some((made, old)))
            }
        }
    }

    /// Revokes at once: the key's new state, `None` when there is no such key (a revoked key stays
    /// revoked at its first time).
    pub async fn revoke(&self, id: &str) -> Result<Option<KeyInfo>, String> {
        match self {
            Backend::Sqlite(path) => {
                let (path, id) = (path.clone(), id.to_owned());
                blocking(move || {
                    let store = Store::open(&path)?;
                    store.revoke(&id, now())?;
                    store.get(&id)
                })
                .await
            }
            Backend::Postgres(pg, name) => {
                on_pg(pg, async |c| pg_keys::revoke(c, name, id, now()).await).await?;
                get_pg(pg, name, id).await
            }
        }
    }

    /// Changes a key's attributes: its new state, `None` when there is no such key.
    pub async fn update(&self, id: &str, change: KeyChange) -> Result<Update, String> {
        let changed = match self {
            Backend::Sqlite(path) => {
                let (path, id) = (path.clone(), id.to_owned());
                blocking(move || Store::open(&path)?.update(&id, &change)).await?
            }
            Backend::Postgres(pg, name) => {
                let list = |v: &Option<Vec<String>>| v.as_deref().map(super::store::list_to_json);
                let update = pg_keys::Update {
                    roles: list(&change.roles),
                    scopes: list(&change.scopes),
                    allowed_cidrs: list(&change.allowed_cidrs),
                    expires_at: change.expires_at,
                    expected: change.expected.clone(),
                };
                on_pg(pg, async |c| pg_keys::update(c, name, id, &update).await).await?
            }
        };
        Ok(match changed {
            Changed::NotFound => Update::NotFound,
            Changed::Stale => Update::Stale,
            Changed::Done => match self.get(id).await? {
                Some(k) => Update::Done(k),
                None => Update::NotFound,
            },
        })
    }
}

/// What [`Backend::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Done(KeyInfo),
    NotFound,
    /// The key changed since the caller read it (its `If-Match` is stale): nothing was written.
    Stale,
}

/// Makes a key in `store` (ids are 40 random bits; a collision is retried).
pub fn create_in(store: &Store, secret: &hmac::Key, info: KeyInfo) -> Result<Made, String> {
    for _ in 0..5 {
        let (id, key) = generate()?;
        if !store.exists(&id)? {
            let info = KeyInfo { id: id.clone(), created_at: now(), ..info };
            store.insert(&id, &hash(secret, &key), &info)?;
            return Ok(Made { info, key });
        }
    }
    Err("could not allocate a key id".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn info(principal: &str) -> KeyInfo {
        KeyInfo {
            id: String::new(),
            principal: principal.into(),
            roles: vec!["reader".into()],
            scopes: vec![],
            allowed_cidrs: vec!["10.0.0.0/8".into()],
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            grace_until: None,
            rotated_to: None,
        }
    }

    #[tokio::test]
    async fn create_rotate_update_revoke_round_trip() {
        let dir = std::env::temp_dir().join(format!("portcullis-keys-backend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let b = Backend::Sqlite(dir.join("keys.db").display().to_string());
        let secret = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]);
        let made = b.create(&secret, info("alice")).await.unwrap();
        assert!(made.key.contains(&made.info.id), "the key carries its id");
        assert!(!format!("{made:?}").contains(&made.key), "Debug never shows the key");
        let (new, old) = b.rotate(&secret, &made.info.id, 60).await.unwrap().unwrap();
        assert_eq!(new.info.allowed_cidrs, vec!["10.0.0.0/8".to_string()]);
        assert_eq!(old.rotated_to.as_deref(), Some(new.info.id.as_str()));
        let change = KeyChange { roles: Some(vec!["writer".into()]), expires_at: Some(Some(99)), ..Default::default() };
        let done = |u: Update| match u {
            Update::Done(k) => k,
            other => panic!("{other:?}"),
        };
        let seen = new.info.clone();
        let changed = done(b.update(&new.info.id, change).await.unwrap());
        assert_eq!((changed.roles.clone(), changed.expires_at), (vec!["writer".to_string()], Some(99)));
        assert_eq!(changed.scopes, new.info.scopes);
        // A change conditional on what was read before the last one is refused and writes nothing.
        let late = KeyChange {
            roles: Some(vec![]),
            expected: Some(super::super::store::expected_of(&seen)),
            ..Default::default()
        };
        assert_eq!(b.update(&new.info.id, late).await.unwrap(), Update::Stale);
        let now_seen = b.get(&new.info.id).await.unwrap().unwrap();
        assert_eq!(now_seen.roles, vec!["writer".to_string()]);
        let ok = KeyChange {
            scopes: Some(vec!["s".into()]),
            expected: Some(super::super::store::expected_of(&now_seen)),
            ..Default::default()
        };
        assert_eq!(done(b.update(&new.info.id, ok).await.unwrap()).scopes, vec!["s".to_string()]);
        let cleared = b.update(&new.info.id, KeyChange { expires_at: Some(None), ..Default::default() }).await;
        assert_eq!(done(cleared.unwrap()).expires_at, None);
        assert_eq!(b.update("nope", KeyChange::default()).await.unwrap(), Update::NotFound);
        let revoked = b.revoke(&new.info.id).await.unwrap().unwrap();
        let first = revoked.revoked_at;
        assert!(first.is_some());
        assert_eq!(b.revoke(&new.info.id).await.unwrap().unwrap().revoked_at, first);
        assert!(b.rotate(&secret, &new.info.id, 60).await.unwrap_err().contains("revoked"));
        assert!(b.rotate(&secret, "nope", 60).await.unwrap().is_none());
        assert_eq!(b.list().await.unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
