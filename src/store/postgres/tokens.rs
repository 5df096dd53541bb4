//! The `admin_tokens` table: the admin API's tokens (SHA-256 digests, never tokens), shared by the
//! fleet. Each write bumps the `admin_tokens` generation and notifies in its own transaction.

use super::{bump, Client};
use tokio_postgres::Error;

/// The generation (and notification) name of the admin tokens.
pub const GENERATION: &str = "admin_tokens";

/// One stored token (the role as its name: the admin module reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub hash: Vec<u8>,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, hash, name, role, created_at, created_by, expires_at, revoked_at";

fn row(r: &tokio_postgres::Row) -> TokenRow {
    TokenRow {
        id: r.get(0),
        hash: r.get(1),
        name: r.get(2),
        role: r.get(3),
        created_at: r.get(4),
        created_by: r.get(5),
        expires_at: r.get(6),
        revoked_at: r.get(7),
    }
}

/// The generation counter (0 before any write).
pub async fn generation(client: &Client) -> Result<i64, Error> {
    Ok(client.query_opt("SELECT value FROM generations WHERE name = $1", &[&GENERATION]).await?.map_or(0, |r| r.get(0)))
}

/// Every token, oldest first.
pub async fn load(client: &Client) -> Result<Vec<TokenRow>, Error> {
    let rows = client.query(&format!("SELECT {COLUMNS} FROM admin_tokens ORDER BY created_at, id"), &[]).await?;
    Ok(rows.iter().map(row).collect())
}

/// Adds a token; `Ok(false)` when its id or digest is taken.
pub async fn insert(client: &mut Client, t: &TokenRow) -> Result<bool, Error> {
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            &format!(
                "INSERT INTO admin_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
            ),
            &[&t.id, &t.hash, &t.name, &t.role, &t.created_at, &t.created_by, &t.expires_at, &t.revoked_at],
        )
        .await?;
    if n == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    bump(&tx, GENERATION).await?;
    tx.commit().await?;
    Ok(true)
}

/// Revokes a token at `now` (a revoked one keeps its first time): its row, `None` when there is none.
pub async fn revoke(client: &mut Client, id: &str, now: i64) -> Result<Option<TokenRow>, Error> {
    let tx = client.transaction().await?;
    let n = tx
        .execute("UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &now])
        .await?;
    if n > 0 {
        bump(&tx, GENERATION).await?;
    }
    let found = tx.query_opt(&format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = $1"), &[&id]).await?;
    tx.commit().await?;
    Ok(found.as_ref().map(row))
}
