//! Credentials: JWT audiences and lifetimes, introspection audiences, API key expiry and age (the
//! declared keys, and the SQLite store read-only), and secrets written inline.

use super::{
    Ctx, INLINE_SECRET, INTROSPECTION_NO_AUDIENCE, JWT_LONG_AGE, JWT_NO_AUDIENCE, KEY_NO_EXPIRY, KEY_OLD,
    KEY_STORE_UNREAD,
};
use crate::scan::finding::Severity;
use crate::scan_path;
use std::time::Duration;

/// A token lifetime above this is "long".
const LONG_TOKEN: Duration = Duration::from_secs(24 * 3600);

pub fn check(ctx: &mut Ctx<'_>) {
    for (name, a) in ctx.cfg.authenticators.clone() {
        if let Some(jwt) = &a.jwt {
            if jwt.audiences.iter().all(String::is_empty) {
                ctx.report(
                    &JWT_NO_AUDIENCE,
                    &scan_path!["authenticators", name, "jwt", "audiences"],
                    format!("JWT authenticator `{name}` checks no audience"),
                    format!("issuer `{}` with no audience", jwt.issuer),
                );
            }
            let longest = [("max_lifetime", jwt.max_lifetime), ("max_token_age", jwt.max_token_age)];
            if longest.iter().all(|(_, d)| d.is_none()) {
                ctx.report(&JWT_LONG_AGE, &scan_path!["authenticators", name, "jwt"], format!("JWT authenticator `{name}` accepts tokens of any lifetime"),
                    "neither `max_lifetime` nor `max_token_age` is set: a token with a far `exp` is good for as long as it says").severity = Severity::Low;
            }
            for (key, d) in longest {
                if let Some(d) = d.filter(|d| d.0 > LONG_TOKEN) {
                    ctx.report(
                        &JWT_LONG_AGE,
                        &scan_path!["authenticators", name, "jwt", key],
                        format!("JWT authenticator `{name}` accepts long-lived tokens"),
                        format!("`{key}` is {}s, above a day", d.0.as_secs()),
                    );
                }
            }
        }
        if let Some(i) = &a.introspection {
            if i.audiences.iter().all(String::is_empty) {
                ctx.report(
                    &INTROSPECTION_NO_AUDIENCE,
                    &scan_path!["authenticators", name, "introspection"],
                    format!("introspection authenticator `{name}` checks no audience"),
                    "any active token of the authorization server is accepted, whatever resource it was issued for",
                );
            }
        }
        if let Some(k) = &a.api_key {
            let never: Vec<&str> = k.keys.iter().filter(|d| d.expires_at.is_none()).map(|d| d.id.as_str()).collect();
            if !never.is_empty() && k.max_age.is_none() {
                ctx.report(
                    &KEY_NO_EXPIRY,
                    &scan_path!["authenticators", name, "api_key", "keys"],
                    format!("API keys of `{name}` never expire"),
                    format!("declared keys without `expires_at` and no `max_age`: {}", never.join(", ")),
                );
            }
            match k.store.as_deref() {
                None => {}
                Some("postgres") => {
                    ctx.report(
                        &KEY_STORE_UNREAD,
                        &scan_path!["authenticators", name, "api_key", "store"],
                        format!("the keys of `{name}` were not audited"),
                        "keys in PostgreSQL are not read by the scan; list them with `portcullis keys list`",
                    );
                }
                Some(path) => store_keys(ctx, &name, path, k.max_age.is_some()),
            }
        }
    }
    inline_secrets(ctx);
}

/// The keys of an SQLite store, opened read-only (the scan never creates or changes a store).
fn store_keys(ctx: &mut Ctx<'_>, name: &str, path: &str, has_max_age: bool) {
    let at = scan_path!["authenticators", name, "api_key", "store"];
    let rows = read_store(path);
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            ctx.report(
                &KEY_STORE_UNREAD,
                &at,
                format!("the key store of `{name}` was not audited"),
                format!("`{path}` cannot be read: {e}"),
            );
            return;
        }
    };
    let never: Vec<&str> = rows.iter().filter(|r| r.2.is_none()).map(|r| r.0.as_str()).collect();
    if !never.is_empty() && !has_max_age {
        ctx.report(
            &KEY_NO_EXPIRY,
            &at,
            format!("API keys in the store of `{name}` never expire"),
            format!("keys without expiry: {}", never.join(", ")),
        );
    }
    let limit = ctx.age_policy.as_secs() as i64;
    let old: Vec<String> = rows
        .iter()
        .filter(|r| ctx.now - r.1 > limit)
        .map(|r| format!("{} ({} days)", r.0, (ctx.now - r.1) / 86_400))
        .collect();
    if !old.is_empty() {
        ctx.report(
            &KEY_OLD,
            &at,
            format!("API keys in the store of `{name}` are older than {} days", limit / 86_400),
            format!("live keys past the age policy: {}", old.join(", ")),
        );
    }
}

/// `(id, created_at, expires_at)` of the live (unrevoked) keys.
fn read_store(path: &str) -> Result<Vec<(String, i64, Option<i64>)>, String> {
    use rusqlite::{Connection, OpenFlags};
    if !std::path::Path::new(path).is_file() {
        return Err("no such file".into());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT id, created_at, expires_at FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id")
        .map_err(|e| e.to_string())?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(|e| e.to_string())?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

/// Keys that hold a secret (`crate::secret::Secret` fields), with the section they must be under when
/// the name alone is too common.
const SECRET_KEYS: &[(&str, Option<&str>)] = &[
    ("hmac_secret", None),
    ("client_secret", None),
    ("nonce_secret", None),
    ("signing_key", None),
    ("hash_key", Some("logging")),
    ("password", Some("redis")),
    ("token", Some("admin")),
    ("token", Some("events")),
    ("secret", Some("authenticators")),
    ("key", Some("tokenization")),
    ("url", Some("postgres")),
];

fn inline_secrets(ctx: &mut Ctx<'_>) {
    let mut found = Vec::new();
    for (path, value, _) in ctx.positions.scalars() {
        let Some(last) = path.last() else { continue };
        let is_secret =
            SECRET_KEYS.iter().any(|(k, under)| last == k && under.is_none_or(|u| path.iter().any(|p| p == u)));
        if !is_secret || value.starts_with("${") || value.is_empty() {
            continue;
        }
        // A connection URL is only a secret when it carries a password.
        if last == "url"
            && !value
                .split_once("://")
                .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|a| a.contains(':') && a.contains('@')))
        {
            continue;
        }
        found.push(path);
    }
    for path in found {
        let key = path.last().cloned().unwrap_or_default();
        ctx.report(
            &INLINE_SECRET,
            &path,
            format!("`{key}` is written inline"),
            "a literal secret in the config file is in every copy, backup and diff of it",
        );
    }
}
