//! The node's persistent state (`store:`): one SQLite file that features keep their tables in (bans,
//! quotas, the vaults; see [`crate::sqlite`], re-exported here), and optionally the fleet's PostgreSQL
//! ([`postgres`]: API keys and admin tokens shared by every node). Without `store:`, each feature keeps
//! its state in memory only.
//!
//! This module never imports a stage; stages (and the CLI) open the store through it.

pub mod postgres;

pub use postgres::{PgError, Postgres, PostgresConfig};

pub use crate::sqlite::{Store, StoreError};

use serde::Deserialize;
use std::path::PathBuf;

/// `store:` in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file (created if missing; its directory must exist): this node's own state.
    pub sqlite: PathBuf,
    /// PostgreSQL, the state a fleet shares: API keys of authenticators with `store: postgres`, admin
    /// tokens (see [`postgres`]).
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
}

/// A stored API key's attributes (roles, scopes and networks as JSON lists), for a compare-and-set
/// change in either store: the admin API's `If-Match`, held by the store itself across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub roles: String,
    pub scopes: String,
    pub allowed_cidrs: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub grace_until: Option<i64>,
}

/// What a conditional change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Done,
    NotFound,
    /// The key changed since `expected` was read: nothing was written.
    Stale,
}

/// Runs a short blocking store call (SQLite) off the runtime's threads, or inline when there is no
/// runtime (the CLI).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::spawn_blocking(f).await.map_err(|_| "the store task failed".to_string())?,
        Err(_) => f(),
    }
}
