//! `portcullis keys ...`: create, list, rotate and revoke API keys in the store named by the config.

use super::store::{KeyInfo, Store};
use super::{hash, hmac_key, now, ApiKeyConfig};
use crate::events::{Emitter, Event, Kind};
use crate::units::parse_duration;
use clap::Subcommand;
use std::io::Read;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once on stdout (it is never stored or shown again).
    Create {
        #[arg(long)]
        principal: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. 90d.
        #[arg(long)]
        expires: Option<String>,
        /// Only accept the key from these networks.
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
    },
    /// List keys (ids and attributes, never secrets), with each key's effective expiry (the sooner of
    /// `expires_at` and `created_at + max_age`); `nearing` flags keys within `warn_before` of `max_age`.
    List {
        /// Only keys that are still usable and expire within this long, e.g. 7d.
        #[arg(long, value_name = "DURATION")]
        expiring: Option<String>,
    },
    /// Issue a replacement key; the old one stays valid for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value = "24h")]
        grace: String,
    },
    /// Revoke a key at once.
    Revoke { id: String },
    /// Print the keyed hash of a key read from stdin, for declaring it in the config file.
    Hash,
}

/// A `key.lifecycle` event for the audit trail: the key's id (as `rule`) and principal, by the OS user
/// who ran the command (`principal`); never the key.
fn lifecycle(authenticator: &str, action: &'static str, id: &str, principal: &str) -> Event {
    Event::new(Kind::KeyLifecycle, action)
        .rule(id.to_owned())
        .principal(crate::events::actor())
        .attr("authenticator", authenticator.to_owned())
        .attr("key_principal", principal.to_owned())
        .attr("via", "cli")
}

/// Runs `cmd` against the api_key authenticator `name` (found in the config by `cli`); changes are
/// emitted to `audit` (the config's audit trail, or nothing).
pub fn run(name: &str, c: &ApiKeyConfig, cmd: KeysCommand, audit: &Emitter) -> Result<(), String> {
    let secret = hmac_key(&c.hmac_secret)?;
    if let KeysCommand::Hash = cmd {
        let mut key = String::new();
        std::io::stdin().read_to_string(&mut key).map_err(|e| e.to_string())?;
        let key = key.trim();
        super::parse(key).ok_or("that is not a well-formed key")?;
        let digest = hash(&secret, key);
        println!("{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
        return Ok(());
    }
    let path = c.store.as_deref().ok_or_else(|| format!("authenticator `{name}` has no `store`"))?;
    let store = Store::open(path)?;
    match cmd {
        KeysCommand::Create { principal, roles, scopes, expires, cidrs } => {
            // Stored in canonical form: a bare address becomes `/32` or `/128`.
            let cidrs = cidrs
                .iter()
                .map(|c| {
                    super::parse_cidr(c)
                        .map(|n| n.to_string())
                        .ok_or_else(|| format!("`{c}` is not a CIDR or an address"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let expires_at = expires.map(|e| parse_duration(&e).map(|d| now() + d.as_secs() as i64)).transpose()?;
            let info = KeyInfo {
                id: String::new(),
                principal,
                roles,
                scopes,
                allowed_cidrs: cidrs,
                created_at: now(),
                expires_at,
                revoked_at: None,
                grace_until: None,
                rotated_to: None,
            };
            let (id, key) = create(&store, &secret, &info)?;
            audit.emit(lifecycle(name, "created", &id, &info.principal));
            eprintln!("created key {id} for {} (shown once: store it now)", info.principal);
            println!("{key}");
        }
        KeysCommand::List { expiring } => {
            let aging = super::lifecycle::Aging::new(c.max_age, c.warn_before)?;
            let within = expiring.map(|e| parse_duration(&e).map(|d| d.as_secs() as i64)).transpose()?;
            println!(
                "{:<10} {:<20} {:<20} {:<20} {:<10} {:<12} {:<12} flag",
                "id", "principal", "roles", "scopes", "status", "expires", "effective"
            );
            let t = now();
            for k in store.list()? {
                let effective = super::lifecycle::effective_expiry(k.expires_at, Some(k.created_at), aging.as_ref());
                let status = super::lifecycle::status(&k, aging.as_ref(), t);
                let usable = matches!(status, "active" | "grace");
                if let Some(w) = within {
                    if !usable || effective.is_none_or(|e| e > t.saturating_add(w)) {
                        continue;
                    }
                }
                let flag = if usable && aging.is_some_and(|a| a.nearing(k.created_at, t)) { "nearing" } else { "" };
                println!(
                    "{:<10} {:<20} {:<20} {:<20} {:<10} {:<12} {:<12} {}",
                    k.id,
                    k.principal,
                    k.roles.join(","),
                    k.scopes.join(","),
                    status,
                    k.expires_at.map_or("never".to_string(), |e| e.to_string()),
                    effective.map_or("never".to_string(), |e| e.to_string()),
                    flag
                );
            }
        }
        KeysCommand::Rotate { id, grace } => {
            let old = store.get(&id)?.ok_or_else(|| format!("no key `{id}`"))?;
            if old.revoked_at.is_some() {
                return Err(format!("key `{id}` is revoked"));
            }
            let grace = parse_duration(&grace)?;
            let allowed_cidrs = store.restriction_of(&id)?;
            let info = KeyInfo { created_at: now(), allowed_cidrs, ..old };
            let (new_id, key) = create(&store, &secret, &info)?;
            store.mark_rotated(&id, &new_id, now() + grace.as_secs() as i64)?;
            audit.emit(lifecycle(name, "rotated", &id, &info.principal).attr("new_key_id", new_id.clone()));
            eprintln!("key {id} rotated to {new_id}; the old key stays valid for {grace:?}");
            println!("{key}");
        }
        KeysCommand::Revoke { id } => {
            let principal = store.get(&id)?.map(|k| k.principal).unwrap_or_default();
            if !store.revoke(&id, now())? {
                return Err(format!("no active key `{id}`"));
            }
            audit.emit(lifecycle(name, "revoked", &id, &principal));
            eprintln!("key {id} revoked");
        }
        KeysCommand::Hash => {}
    }
    Ok(())
}

fn create(store: &Store, secret: &aws_lc_rs::hmac::Key, info: &KeyInfo) -> Result<(String, String), String> {
    let made = super::backend::create_in(store, secret, info.clone())?;
    Ok((made.info.id, made.key))
}
