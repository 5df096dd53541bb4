//! `portcullis store migrate|export|import -c FILE`: the fleet's PostgreSQL schema, and moving API keys
//! and bans between a single node's stores (SQLite, its own Redis or none) and a fleet's (PostgreSQL,
//! the fleet's Redis).
//!
//! The export file is JSON, written with mode 0600: key *hashes* and attributes (keys themselves cannot
//! be exported: they were never stored), admin token digests, bans. Admin tokens and keys of
//! authenticators with `store: postgres` come from (and go to) `store.postgres` when the config has
//! it; `--from`/`--to sqlite` name the SQLite files instead. An import writes each key under its authenticator's
//! name; a key already there with the same hash is updated in place, one with another hash is left
//! alone and reported, so importing the same file twice changes nothing. A ban already present (same
//! target and end) is skipped, and bans already over are not imported.

use crate::authn::api_key::pg as key_pg;
use crate::authn::api_key::store::{KeyInfo, Store as KeySqlite};
use crate::config::file::FileConfig;
use crate::store::postgres::keys as pg_keys;
use crate::store::{Postgres, PostgresConfig};
use clap::{Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Bring the `store.postgres` schema up to date (the gateway also does this at start).
    Migrate,
    /// Write the keys (hashes, never keys) and bans of the config's stores to a file (mode 0600).
    Export {
        #[arg(long)]
        out: PathBuf,
        /// Where the keys are read: each authenticator's SQLite file, or `store.postgres`
        /// (default: where each authenticator's `store` says).
        #[arg(long, value_enum)]
        from: Option<Backend>,
    },
    /// Read a file made by `export` into the config's stores; running it twice changes nothing more.
    Import {
        #[arg(long = "in")]
        input: PathBuf,
        /// Where the keys go: each authenticator's SQLite file, or `store.postgres` (default:
        /// `store.postgres` when the config has it, else each authenticator's SQLite file).
        #[arg(long, value_enum)]
        to: Option<Backend>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The export file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// Always `portcullis-store-export`.
    pub format: String,
    pub version: u32,
    pub exported_at: i64,
    pub api_keys: Vec<ExportedKey>,
    /// Admin tokens (SHA-256 digests, never tokens).
    #[serde(default)]
    pub admin_tokens: Vec<ExportedToken>,
    pub bans: Vec<ExportedBan>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedToken {
    pub id: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const FORMAT: &str = "portcullis-store-export";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedKey {
    pub authenticator: String,
    pub id: String,
    /// Hex HMAC-SHA-256 of the key under the authenticator's `hmac_secret` (meaningful only with it).
    pub hash: String,
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedBan {
    /// `ip`, `prefix` or `principal`.
    pub kind: String,
    pub target: String,
    pub reason: String,
    pub source: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub expires_at: i64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The api_key authenticators of the config: name and `store` value.
fn authenticators(cfg: &FileConfig) -> Vec<(String, Option<String>)> {
    cfg.authenticators.iter().filter_map(|(n, a)| a.api_key.as_ref().map(|k| (n.clone(), k.store.clone()))).collect()
}

fn postgres(cfg: &FileConfig) -> Result<Postgres, String> {
    let c: &PostgresConfig =
        cfg.store.as_ref().and_then(|s| s.postgres.as_ref()).ok_or("the config has no `store.postgres` section")?;
    let pg = Postgres::new(c, Default::default())?;
    pg.connect_and_migrate().map_err(|e| e.to_string())?;
    Ok(pg)
}

pub fn run(cfg: &FileConfig, cmd: StoreCommand) -> Result<(), String> {
    match cmd {
        StoreCommand::Migrate => {
            let c = cfg
                .store
                .as_ref()
                .and_then(|s| s.postgres.as_ref())
                .ok_or("the config has no `store.postgres` section")?;
            let pg = Postgres::new(c, Default::default())?;
            let applied = pg.connect_and_migrate().map_err(|e| e.to_string())?;
            if applied.is_empty() {
                println!("{}: schema up to date ({} steps)", pg.target(), crate::store::postgres::MIGRATIONS.len());
            }
            for step in applied {
                println!("{}: applied {step}", pg.target());
            }
            Ok(())
        }
        StoreCommand::Export { out, from } => export(cfg, &out, from),
        StoreCommand::Import { input, to } => import(cfg, &input, to),
    }
}

fn exported(authenticator: &str, hash: &[u8], k: KeyInfo) -> ExportedKey {
    ExportedKey {
        authenticator: authenticator.to_owned(),
        id: k.id,
        hash: hex(hash),
        principal: k.principal,
        roles: k.roles,
        scopes: k.scopes,
        allowed_cidrs: k.allowed_cidrs,
        created_at: k.created_at,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        grace_until: k.grace_until,
        rotated_to: k.rotated_to,
    }
}

/// The admin token store `backend` names (default: PostgreSQL when the config has it).
fn token_store(cfg: &FileConfig, backend: Option<Backend>) -> Result<Option<crate::admin::tokens::TokenStore>, String> {
    let Some(store) = cfg.store.as_ref() else { return Ok(None) };
    match backend {
        Some(Backend::Sqlite) => Ok(Some(crate::admin::tokens::TokenStore::Sqlite(store.sqlite.clone()))),
        Some(Backend::Postgres) if store.postgres.is_none() => Err("the config has no `store.postgres` section".into()),
        _ => crate::admin::tokens::TokenStore::open(Some(store)),
    }
}

fn export(cfg: &FileConfig, out: &Path, from: Option<Backend>) -> Result<(), String> {
    let mut api_keys = Vec::new();
    let mut pg = None;
    for (name, store) in authenticators(cfg) {
        let on_pg = store.as_deref() == Some(key_pg::WORD);
        match (from, on_pg, store) {
            (Some(Backend::Postgres), _, _) | (None, true, _) => {
                if pg.is_none() {
                    pg = Some(postgres(cfg)?);
                }
                let Some(pg) = pg.as_ref() else { continue };
                let (_, rows) = crate::store::postgres::block_on(async {
                    let mut c = pg.connect().await?;
                    pg_keys::load(&mut c, &name).await.map_err(|e| pg.error(e))
                })?
                .map_err(|e| e.to_string())?;
                for r in rows {
                    let hash = r.hash.clone();
                    api_keys.push(exported(&name, &hash, key_pg::info_of(&r)));
                }
            }
            (_, true, _) => {
                eprintln!("note: authenticator `{name}` keeps its keys in PostgreSQL, not SQLite: skipped");
            }
            (_, false, Some(path)) => {
                for (hash, k) in KeySqlite::open(&path)?.rows()? {
                    api_keys.push(exported(&name, &hash, k));
                }
            }
            (_, false, None) => {}
        }
    }
    let admin_tokens = match token_store(cfg, from)? {
        Some(store) => crate::store::postgres::block_on(store.load())??
            .into_iter()
            .map(|(d, t)| ExportedToken {
                id: t.id,
                hash: hex(&d),
                name: t.name,
                role: t.role.as_str().to_owned(),
                created_at: t.created_at,
                created_by: t.created_by,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
            })
            .collect(),
        None => Vec::new(),
    };
    let bans = match crate::guard::cli::Backend::open(cfg.store.as_ref(), cfg.redis.as_ref()) {
        Ok(mut b) => b
            .list(Some(crate::guard::bans::now_ms()))?
            .into_iter()
            .map(|b| ExportedBan {
                kind: b.target.kind().to_owned(),
                target: b.target.text(),
                reason: b.reason,
                source: b.source,
                created_at: b.created_at,
                expires_at: b.expires_at,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let file = Export {
        format: FORMAT.into(),
        version: 1,
        exported_at: crate::store::postgres::now(),
        api_keys,
        admin_tokens,
        bans,
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    write_private(out, text.as_bytes())?;
    eprintln!(
        "exported {} API keys, {} admin tokens and {} bans to {}",
        file.api_keys.len(),
        file.admin_tokens.len(),
        file.bans.len(),
        out.display()
    );
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600 (an existing file is made 0600 before it is written).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("`{shown}`: {e}"))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("`{shown}`: {e}"))?;
    f.set_len(0).map_err(|e| format!("`{shown}`: {e}"))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| format!("`{shown}`: {e}"))
}

/// Checks every entry of an export before anything is written: hashes, ids, roles, address
/// restrictions and ban targets.
fn validate(file: &Export) -> Result<(), String> {
    let id_ok =
        |id: &str| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    for k in &file.api_keys {
        if !id_ok(&k.id) || k.authenticator.is_empty() {
            return Err(format!("key `{}`: bad id or authenticator", k.id.chars().take(64).collect::<String>()));
        }
        if unhex(&k.hash).is_none_or(|h| h.len() != 32) {
            return Err(format!("key `{}`: bad hash", k.id));
        }
        if let Some(c) = k.allowed_cidrs.iter().find(|c| crate::authn::api_key::parse_cidr(c).is_none()) {
            return Err(format!(
                "key `{}`: `{}` is not a CIDR or an address",
                k.id,
                c.chars().take(64).collect::<String>()
            ));
        }
    }
    for t in &file.admin_tokens {
        if !id_ok(&t.id) || unhex(&t.hash).is_none_or(|h| h.len() != 32) {
            return Err(format!("admin token `{}`: bad id or hash", t.id.chars().take(64).collect::<String>()));
        }
        if crate::admin::auth::Role::parse(&t.role).is_none() {
            return Err(format!("admin token `{}`: unknown role", t.id));
        }
    }
    for b in &file.bans {
        crate::guard::bans::Target::parse(&b.kind, &b.target)?;
    }
    Ok(())
}

fn import(cfg: &FileConfig, input: &Path, to: Option<Backend>) -> Result<(), String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("`{}`: {}", input.display(), e.kind()))?;
    let file: Export = serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", input.display()))?;
    if file.format != FORMAT || file.version != 1 {
        return Err(format!("`{}` is not a portcullis store export (version 1)", input.display()));
    }
    validate(&file).map_err(|e| format!("`{}`: {e}; nothing was imported", input.display()))?;
    let has_pg = cfg.store.as_ref().is_some_and(|s| s.postgres.is_some());
    let to = to.unwrap_or(if has_pg { Backend::Postgres } else { Backend::Sqlite });
    let configured = authenticators(cfg);
    let (mut written, mut refused) = (0usize, Vec::new());
    let mut pg = None;
    for k in &file.api_keys {
        let hash = unhex(&k.hash).filter(|h| h.len() == 32).ok_or_else(|| format!("key `{}`: bad hash", k.id))?;
        let info = KeyInfo {
            id: k.id.clone(),
            principal: k.principal.clone(),
            roles: k.roles.clone(),
            scopes: k.scopes.clone(),
            allowed_cidrs: k.allowed_cidrs.clone(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            grace_until: k.grace_until,
            rotated_to: k.rotated_to.clone(),
        };
        let ok = match to {
            Backend::Postgres => {
                if pg.is_none() {
                    pg = Some(postgres(cfg)?);
                }
                let Some(pg) = pg.as_ref() else { continue };
                let mut row = key_pg::row_of(&k.id, &[0; 32], &info);
                row.hash = hash;
                crate::store::postgres::block_on(async {
                    let mut c = pg.connect().await?;
                    pg_keys::upsert(&mut c, &k.authenticator, &row).await.map_err(|e| pg.error(e))
                })?
                .map_err(|e| e.to_string())?
            }
            Backend::Sqlite => {
                let path = configured
                    .iter()
                    .find(|(n, _)| *n == k.authenticator)
                    .and_then(|(_, s)| s.clone().filter(|s| s != key_pg::WORD))
                    .ok_or_else(|| {
                        format!(
                            "key `{}`: authenticator `{}` has no SQLite `store` in this config",
                            k.id, k.authenticator
                        )
                    })?;
                KeySqlite::open(&path)?.upsert(&hash, &info)?
            }
        };
        if ok {
            written += 1;
        } else {
            refused.push(format!("{}/{}", k.authenticator, k.id));
        }
    }
    let mut tokens_written = 0usize;
    if !file.admin_tokens.is_empty() {
        let store = token_store(cfg, Some(to))?.ok_or("admin tokens need a `store:` in the config")?;
        for t in &file.admin_tokens {
            let digest: crate::admin::tokens::Digest = unhex(&t.hash)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| format!("admin token `{}`: bad hash", t.id))?;
            let role = crate::admin::auth::Role::parse(&t.role)
                .ok_or_else(|| format!("admin token `{}`: unknown role `{}`", t.id, t.role))?;
            let info = crate::admin::tokens::TokenInfo {
                id: t.id.clone(),
                name: t.name.clone(),
                role,
                created_at: t.created_at,
                created_by: t.created_by.clone(),
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
            };
            if crate::store::postgres::block_on(store.import(digest, info))?? {
                tokens_written += 1;
            } else {
                refused.push(format!("admin token {}", t.id));
            }
        }
    }
    let mut bans_added = 0usize;
    if !file.bans.is_empty() {
        let mut bans = crate::guard::cli::Backend::open(cfg.store.as_ref(), cfg.redis.as_ref())?;
        let now = crate::guard::bans::now_ms();
        let present = bans.list(Some(now))?;
        for b in file.bans.iter().filter(|b| b.expires_at > now) {
            let target = crate::guard::bans::Target::parse(&b.kind, &b.target)?;
            if present.iter().any(|p| p.target == target && p.expires_at == b.expires_at) {
                continue;
            }
            bans.add_from(&target, b.expires_at, &b.reason, &b.source)?;
            bans_added += 1;
        }
    }
    eprintln!(
        "imported {written} API keys, {tokens_written} admin tokens and {bans_added} new bans from {}",
        input.display()
    );
    if !refused.is_empty() {
        return Err(format!("these keys exist with another hash and were left alone: {}", refused.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn the_file_refuses_unknown_fields() {
        let text = r#"{"format":"portcullis-store-export","version":1,"exported_at":0,"api_keys":[],"bans":[],"x":1}"#;
        assert!(serde_json::from_str::<Export>(text).is_err());
    }

    #[test]
    fn the_export_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("portcullis-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("e.json");
        std::fs::write(&p, "old and longer than the new text").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
