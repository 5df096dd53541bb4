//! API keys in the fleet's PostgreSQL (`store: postgres`, with the top-level `store.postgres`): loaded
//! at compile (PostgreSQL must answer then), then reloaded whenever the authenticator's generation
//! (`keys:<name>`) moves, which the store's watcher learns from a notification or its poll. When
//! PostgreSQL is away the last good keys stay in force (a revoked key stays revoked), and the first
//! read after it returns catches up.

use super::store::Stored;
use super::KeyMap;
use crate::store::postgres::keys::{self, KeyRow};
use crate::store::{PgError, Postgres};
use std::sync::Arc;

/// The `store:` value of an authenticator whose keys live in PostgreSQL.
pub const WORD: &str = "postgres";

/// The records of `rows`, by digest.
pub fn to_map(rows: Vec<KeyRow>) -> KeyMap {
    let mut map = KeyMap::new();
    for r in rows {
        let stored = Stored {
            hash: &r.hash,
            id: r.id,
            principal: &r.principal,
            roles: &r.roles,
            scopes: &r.scopes,
            cidrs: &r.allowed_cidrs,
        };
        if let Some((digest, record)) = stored.record(r.created_at, r.expires_at, r.revoked_at, r.grace_until) {
            map.insert(digest, Arc::new(record));
        }
    }
    map
}

/// The keys of `authenticator` now, on a connection of their own (blocking: a compile or the CLI).
pub fn load_now(pg: &Postgres, authenticator: &str) -> Result<(i64, KeyMap), String> {
    crate::store::postgres::block_on(async {
        let mut client = pg.connect().await?;
        keys::load(&mut client, authenticator).await.map_err(|e| pg.error(e))
    })?
    .map(|(g, rows)| (g, to_map(rows)))
    .map_err(|e| format!("API keys cannot be read: {e}"))
}

/// The keys of `authenticator`, through the pool (on the serving runtime).
pub async fn load(pg: &Postgres, authenticator: &str) -> Result<(i64, KeyMap), PgError> {
    let mut client = pg.client().await?;
    let (g, rows) = keys::load(&mut client, authenticator).await.map_err(|e| pg.error(e))?;
    Ok((g, to_map(rows)))
}

/// What the reload task needs of its authenticator.
pub struct Follow {
    pub pg: Arc<Postgres>,
    pub name: String,
    pub declared: KeyMap,
    pub keys: std::sync::Weak<arc_swap::ArcSwap<KeyMap>>,
    /// The generation the current keys were read at.
    pub generation: i64,
    pub aging: Option<super::lifecycle::Aging>,
    pub warnings: Arc<super::lifecycle::Warnings>,
    /// Wakes the task at once (the admin API after a change it made).
    pub kick: std::sync::Weak<tokio::sync::Notify>,
}

/// Follows the store: reloads the keys when their generation moves (or after a failed read), until the
/// authenticator is dropped.
pub async fn follow(f: Follow) {
    let Follow { pg, name, declared, keys, mut generation, aging, warnings, kick } = f;
    let mut changes = pg.subscribe();
    let counter = crate::store::postgres::keys_generation(&name);
    let mut stale = false;
    loop {
        let Some(woken) = kick.upgrade() else { return };
        let kicked = tokio::select! {
            changed = changes.changed() => if changed.is_err() { return } else { false },
            _ = woken.notified() => true,
            _ = tokio::time::sleep(pg.poll_interval()) => false,
        };
        drop(woken);
        let Some(current) = keys.upgrade() else { return };
        let published = changes.borrow().get(&counter).copied();
        if kicked || stale || published.is_some_and(|g| g != generation) {
            match load(&pg, &name).await {
                Ok((g, loaded)) => {
                    let mut map = declared.clone();
                    map.extend(loaded);
                    current.store(Arc::new(map));
                    generation = g;
                    stale = false;
                    pg.succeeded();
                    tracing::debug!(authenticator = name.as_str(), generation = g, "API keys reloaded from PostgreSQL");
                }
                Err(e) => {
                    stale = true;
                    pg.failed("load", &e);
                }
            }
        }
        if let Some(aging) = &aging {
            warnings.scan(aging, &current.load(), super::now());
        }
    }
}

/// A stored row of a new key (lists as JSON text).
pub fn row_of(id: &str, hash: &super::Digest, info: &super::store::KeyInfo) -> KeyRow {
    KeyRow {
        id: id.to_owned(),
        hash: hash.to_vec(),
        principal: info.principal.clone(),
        roles: super::store::list_to_json(&info.roles),
        scopes: super::store::list_to_json(&info.scopes),
        allowed_cidrs: super::store::list_to_json(&info.allowed_cidrs),
        created_at: info.created_at,
        expires_at: info.expires_at,
        revoked_at: info.revoked_at,
        grace_until: info.grace_until,
        rotated_to: info.rotated_to.clone(),
    }
}

/// A stored row's attributes, as `keys list` shows them.
pub fn info_of(r: &KeyRow) -> super::store::KeyInfo {
    super::store::KeyInfo {
        id: r.id.clone(),
        principal: r.principal.clone(),
        roles: super::store::json_to_list(&r.roles),
        scopes: super::store::json_to_list(&r.scopes),
        allowed_cidrs: super::store::json_to_list(&r.allowed_cidrs),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        grace_until: r.grace_until,
        rotated_to: r.rotated_to.clone(),
    }
}
