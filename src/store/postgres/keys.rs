//! The `api_keys` table: rows of every API key authenticator with `store: postgres`, by authenticator.
//! Only keyed hashes and attributes, never a key. Each write bumps `keys:<authenticator>` and notifies
//! in its own transaction. The authenticator turns rows into its in-memory records.

use super::{bump, keys_generation, Client};
use tokio_postgres::Error;

/// One stored key, as the table holds it (lists as JSON text, like the SQLite store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub hash: Vec<u8>,
    pub principal: String,
    pub roles: String,
    pub scopes: String,
    pub allowed_cidrs: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub grace_until: Option<i64>,
    pub rotated_to: Option<String>,
}

const COLUMNS: &str =
    "id, hash, principal, roles, scopes, allowed_cidrs, created_at, expires_at, revoked_at, grace_until, rotated_to";

fn row(r: &tokio_postgres::Row) -> KeyRow {
    KeyRow {
        id: r.get(0),
        hash: r.get(1),
        principal: r.get(2),
        roles: r.get(3),
        scopes: r.get(4),
        allowed_cidrs: r.get(5),
        created_at: r.get(6),
        expires_at: r.get(7),
        revoked_at: r.get(8),
        grace_until: r.get(9),
        rotated_to: r.get(10),
    }
}

/// Every key of `authenticator`, oldest first, and the generation they were read at (one snapshot).
pub async fn load(client: &mut Client, authenticator: &str) -> Result<(i64, Vec<KeyRow>), Error> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let generation: i64 = tx
        .query_opt("SELECT value FROM generations WHERE name = $1", &[&keys_generation(authenticator)])
        .await?
        .map_or(0, |r| r.get(0));
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE authenticator = $1 ORDER BY created_at, id"),
            &[&authenticator],
        )
        .await?;
    tx.commit().await?;
    Ok((generation, rows.iter().map(row).collect()))
}

/// One key of `authenticator`.
pub async fn get(client: &Client, authenticator: &str, id: &str) -> Result<Option<KeyRow>, Error> {
    let r = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE authenticator = $1 AND id = $2"),
            &[&authenticator, &id],
        )
        .await?;
    Ok(r.as_ref().map(row))
}

/// Inserts one row of `authenticator` (`tail`: an `ON CONFLICT` clause or nothing): rows inserted.
async fn insert_row(
    tx: &tokio_postgres::Transaction<'_>,
    authenticator: &str,
    k: &KeyRow,
    tail: &str,
) -> Result<u64, Error> {
    tx.execute(
        &format!(
            "INSERT INTO api_keys (authenticator, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) {tail}"
        ),
        &[
            &authenticator,
            &k.id,
            &k.hash,
            &k.principal,
            &k.roles,
            &k.scopes,
            &k.allowed_cidrs,
            &k.created_at,
            &k.expires_at,
            &k.revoked_at,
            &k.grace_until,
            &k.rotated_to,
        ],
    )
    .await
}

/// Adds a key. `Ok(false)` when the id (or the hash) is taken: the caller draws another.
pub async fn insert(client: &mut Client, authenticator: &str, k: &KeyRow) -> Result<bool, Error> {
    let tx = client.transaction().await?;
    let n = insert_row(&tx, authenticator, k, "ON CONFLICT DO NOTHING").await?;
    if n == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    bump(&tx, &keys_generation(authenticator)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Writes a key as given (an import): inserted, or its row replaced when the id exists with the same
/// hash. `Ok(false)` when the id exists with another hash (left alone).
pub async fn upsert(client: &mut Client, authenticator: &str, k: &KeyRow) -> Result<bool, Error> {
    let tx = client.transaction().await?;
    let existing = tx
        .query_opt("SELECT hash FROM api_keys WHERE authenticator = $1 AND id = $2", &[&authenticator, &k.id])
        .await?
        .map(|r| r.get::<_, Vec<u8>>(0));
    if existing.as_ref().is_some_and(|h| *h != k.hash) {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.execute("DELETE FROM api_keys WHERE authenticator = $1 AND id = $2", &[&authenticator, &k.id]).await?;
    insert_row(&tx, authenticator, k, "").await?;
    bump(&tx, &keys_generation(authenticator)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Revokes a key at `now`. False when there is no such active key.
pub async fn revoke(client: &mut Client, authenticator: &str, id: &str, now: i64) -> Result<bool, Error> {
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE api_keys SET revoked_at = $3 WHERE authenticator = $1 AND id = $2 AND revoked_at IS NULL",
            &[&authenticator, &id, &now],
        )
        .await?;
    if n == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    bump(&tx, &keys_generation(authenticator)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks `old` as rotated to `new`, valid until `grace_until`.
pub async fn mark_rotated(
    client: &mut Client,
    authenticator: &str,
    old: &str,
    new: &str,
    grace_until: i64,
) -> Result<bool, Error> {
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE api_keys SET grace_until = $3, rotated_to = $4 WHERE authenticator = $1 AND id = $2",
            &[&authenticator, &old, &grace_until, &new],
        )
        .await?;
    bump(&tx, &keys_generation(authenticator)).await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// A change of a key's attributes (lists as JSON text); `None` keeps a field, `expires_at: Some(None)`
/// removes the expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub roles: Option<String>,
    pub scopes: Option<String>,
    pub allowed_cidrs: Option<String>,
    pub expires_at: Option<Option<i64>>,
    /// Apply only if the row still has these attributes (compare-and-set).
    pub expected: Option<crate::store::Expected>,
}

/// Applies `u` to a key (only if it still has `u.expected`, when given).
pub async fn update(
    client: &mut Client,
    authenticator: &str,
    id: &str,
    u: &Update,
) -> Result<crate::store::Changed, Error> {
    use crate::store::Changed;
    let tx = client.transaction().await?;
    let e = u.expected.as_ref();
    let n = tx
        .execute(
            "UPDATE api_keys SET
               roles = COALESCE($3, roles),
               scopes = COALESCE($4, scopes),
               allowed_cidrs = COALESCE($5, allowed_cidrs),
               expires_at = CASE WHEN $6 THEN $7 ELSE expires_at END
             WHERE authenticator = $1 AND id = $2 AND (NOT $8 OR (roles = $9 AND scopes = $10
               AND allowed_cidrs = $11 AND expires_at IS NOT DISTINCT FROM $12
               AND revoked_at IS NOT DISTINCT FROM $13 AND grace_until IS NOT DISTINCT FROM $14))",
            &[
                &authenticator,
                &id,
                &u.roles,
                &u.scopes,
                &u.allowed_cidrs,
                &u.expires_at.is_some(),
                &u.expires_at.flatten(),
                &e.is_some(),
                &e.map(|e| e.roles.as_str()).unwrap_or(""),
                &e.map(|e| e.scopes.as_str()).unwrap_or(""),
                &e.map(|e| e.allowed_cidrs.as_str()).unwrap_or(""),
                &e.and_then(|e| e.expires_at),
                &e.and_then(|e| e.revoked_at),
                &e.and_then(|e| e.grace_until),
            ],
        )
        .await?;
    if n == 0 {
        let found =
            tx.query_opt("SELECT 1 FROM api_keys WHERE authenticator = $1 AND id = $2", &[&authenticator, &id]).await?;
        tx.rollback().await?;
        return Ok(if found.is_some() { Changed::Stale } else { Changed::NotFound });
    }
    bump(&tx, &keys_generation(authenticator)).await?;
    tx.commit().await?;
    Ok(Changed::Done)
}
