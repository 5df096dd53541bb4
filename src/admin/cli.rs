//! `portcullis admin token create|list|revoke`: admin tokens in the config's `store:`. `create` prints
//! the token once on stdout; nothing else ever shows it.

use super::auth::Role;
use super::tokens::TokenStore;
use crate::events::{Emitter, Event, Kind};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Admin tokens: the credentials of the admin API and the dashboard.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token; prints it once on stdout.
    Create {
        /// `viewer` (reads), `operator` (keys, bans, quotas) or `admin` (also tokens, config, reload).
        #[arg(long)]
        role: Role,
        /// A name to know it by (default: the role).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30d (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (ids, names, roles, times; never the tokens).
    List,
    /// Revoke a token at once (running gateways refuse it within a second).
    Revoke { id: String },
}

fn event(action: &'static str, id: &str) -> Event {
    Event::new(Kind::AdminAction, action)
        .principal(crate::events::actor())
        .rule(format!("admin_token:{id}"))
        .attr("via", "cli")
}

/// Runs `cmd` against `store`; changes go to `audit`.
pub fn run(store: Option<TokenStore>, cmd: AdminCommand, audit: &Emitter) -> Result<(), String> {
    let store = store.ok_or("admin tokens are kept in the config's `store:`; add one")?;
    let AdminCommand::Token { command } = cmd;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        match command {
            TokenCommand::Create { role, name, expires } => {
                let expires_at = expires
                    .map(|e| {
                        crate::units::parse_duration(&e).map(|d| crate::authn::api_key::now() + d.as_secs() as i64)
                    })
                    .transpose()?;
                let name = name.unwrap_or_else(|| role.as_str().to_owned());
                let (info, token) = store.create(&name, role, expires_at, &crate::events::actor()).await?;
                audit.emit(event("admin_token.created", &info.id).attr("role", role.as_str()));
                eprintln!(
                    "created admin token {} ({}, role {}); shown once: store it now",
                    info.id,
                    info.name,
                    role.as_str()
                );
                println!("{token}");
            }
            TokenCommand::List => {
                println!("{:<14} {:<20} {:<9} {:<21} {:<21} status", "id", "name", "role", "created", "expires");
                let now = crate::authn::api_key::now();
                for (_, t) in store.load().await? {
                    let status = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at.is_some_and(|e| now >= e) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<14} {:<20} {:<9} {:<21} {:<21} {status}",
                        t.id,
                        t.name,
                        t.role.as_str(),
                        crate::units::utc(t.created_at * 1000),
                        t.expires_at.map_or("never".into(), |e| crate::units::utc(e * 1000)),
                    );
                }
            }
            TokenCommand::Revoke { id } => {
                let found = store.revoke(&id).await?.ok_or_else(|| format!("no admin token `{id}`"))?;
                audit.emit(event("admin_token.revoked", &found.id));
                eprintln!("admin token {id} revoked");
            }
        }
        Ok(())
    })
}
