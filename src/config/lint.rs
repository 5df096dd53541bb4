//! `portcullis check`'s warnings: what is valid but cannot do what it says. They do not fail `check`
//! (a config may be ahead of its principals), but they are printed, so nobody ships one by accident.

use super::file::FileConfig;
use crate::authz::{AuthorizeConfig, RuleConfig};
use std::collections::BTreeSet;

/// Cedar policies that can never apply: Cedar's validator finds them impossible, or their scope names
/// methods or routes that no route requiring the set has; and sets no route requires.
fn policy_lints(cfg: &FileConfig) -> Vec<String> {
    let uses = super::compile::policy_uses(cfg);
    let mut out = Vec::new();
    for (name, p) in &cfg.policies {
        match uses.get(name.as_str()) {
            None => out.push(format!(
                "policy set `{name}` is declared but no route requires it (`authorize: {{ policy: {name} }}`)"
            )),
            Some(u) => {
                if let Ok(set) = crate::authz::cedar::PolicySet::compile(name, p, u) {
                    out.extend(set.never);
                }
            }
        }
    }
    out
}

/// A fleet store that shares less than it seems to: `store.postgres` while API keys stay in each node's
/// SQLite file, or while bans stay node-local.
fn store_lints(cfg: &FileConfig) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.store.as_ref().is_none_or(|s| s.postgres.is_none()) {
        return out;
    }
    for (name, a) in &cfg.authenticators {
        if let Some(path) = a.api_key.as_ref().and_then(|k| k.store.as_deref()) {
            if path != crate::authn::api_key::pg::WORD {
                out.push(format!(
                    "authenticator `{name}` keeps its keys in the SQLite file `{path}`, not in store.postgres: \
                     other nodes of the fleet do not see them (write `store: postgres`; \
                     `portcullis store export`/`import` moves them)"
                ));
            }
        }
    }
    if !cfg.redis.as_ref().is_some_and(|r| r.share_bans) {
        out.push(
            "store.postgres is set but bans stay on each node (PostgreSQL does not hold bans): \
             share them with `redis:` and `share_bans: true`"
                .into(),
        );
    }
    out
}

/// Tokenizing routes whose answers could pass unread, and format-preserving tokens whose vault is lost
/// on restart.
fn tokenize_lints(cfg: &FileConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut fp_without_store = false;
    for r in &cfg.routes {
        let Some(fields) = &r.tokenize else { continue };
        let json = r.respond.as_ref().and_then(|x| x.json).or(cfg.respond.as_ref().and_then(|x| x.json));
        if fields.iter().any(|f| f.pointer.is_some()) && json != Some(true) {
            out.push(format!(
                "route `{}` tokenizes JSON fields but does not say `respond: {{ json: true }}`: an answer of another \
                 media type would pass without detokenization or withholding",
                r.name
            ));
        }
        fp_without_store |= fields.iter().any(|f| f.mode == crate::tokenize::Mode::FormatPreserving);
    }
    if fp_without_store && cfg.store.is_none() {
        out.push(
            "no `store:`: the token vault of format-preserving fields is kept in memory only (after a restart, \
             earlier tokens cannot be detokenized and resent ones are tokenized again); add `store: { sqlite: PATH }`"
                .into(),
        );
    }
    out
}

/// Roles no principal can get, and routes (or methods of routes) whose requirement asks for roles no
/// principal can have. Silent when roles can come from somewhere `check` cannot see (a JWT or
/// introspection `roles_claim`, an API key store).
pub fn lints(cfg: &FileConfig) -> Vec<String> {
    let mut out = policy_lints(cfg);
    out.extend(crate::respond::protect::lints(
        cfg.respond.as_ref(),
        cfg.routes.iter().map(|r| (r.name.as_str(), r.respond.as_ref())),
    ));
    out.extend(crate::observe::events::exporter::lints(cfg.events.as_ref().map_or(&[][..], |e| &e.exporters)));
    out.extend(crate::secret::vault::lints(cfg.secrets.as_ref()));
    let dpop = cfg.authenticators.iter().filter_map(|(n, a)| {
        let d = a.jwt.as_ref().and_then(|j| j.dpop.as_ref());
        Some((n.as_str(), d.or(a.introspection.as_ref().and_then(|i| i.dpop.as_ref()))?))
    });
    out.extend(crate::authn::dpop::lints(dpop, cfg.redis.is_some()));
    out.extend(tokenize_lints(cfg));
    out.extend(crate::secret::vault::store_lint(cfg.secrets.as_ref(), cfg.store.as_ref().map(|s| s.sqlite.as_path())));
    let shared_bans = cfg.redis.as_ref().is_some_and(|r| r.share_bans);
    if cfg.store.is_none() && !shared_bans && cfg.auto_ban.is_some() {
        out.push(
            "no `store:`: automatic bans are kept in memory only (lost on restart, not shown by `portcullis bans`); \
             add `store: { sqlite: PATH }`"
                .into(),
        );
    }
    out.extend(store_lints(cfg));
    out.extend(token_policy_lints(cfg));
    if cfg.roles.is_empty() {
        return out;
    }
    let mut open_ended = false;
    let mut given: BTreeSet<String> = BTreeSet::new();
    for p in cfg.principals.values() {
        given.extend(p.roles.iter().cloned());
    }
    for a in cfg.authenticators.values() {
        if let Some(k) = &a.api_key {
            open_ended |= k.store.is_some();
            for key in &k.keys {
                given.extend(key.roles.iter().cloned());
            }
        }
        open_ended |= a.jwt.as_ref().is_some_and(|j| j.roles_claim.is_some());
        open_ended |= a.introspection.as_ref().is_some_and(|i| i.roles_claim.is_some());
        if let Some(m) = &a.mtls {
            given.extend(m.roles.values().flatten().cloned());
            given.extend(m.default_roles.iter().cloned());
        }
        if let Some(s) = &a.signature {
            for key in s.keys.values() {
                given.extend(key.roles.iter().cloned());
            }
        }
    }
    if open_ended {
        return out;
    }
    // What a given role includes is had too.
    let mut had = given;
    loop {
        let more: Vec<String> = had
            .iter()
            .filter_map(|r| cfg.roles.get(r))
            .flat_map(|r| r.includes.iter().cloned())
            .filter(|r| !had.contains(r))
            .collect();
        if more.is_empty() {
            break;
        }
        had.extend(more);
    }
    for name in cfg.roles.keys().filter(|r| !had.contains(*r)) {
        out.push(format!(
            "role `{name}` is declared but no principal can get it (no `principals:` grant, key, certificate mapping or role including it gives it)"
        ));
    }
    for route in &cfg.routes {
        let Some(AuthorizeConfig::Rule(r)) = &route.authorize else { continue };
        if unreachable(r, &had) {
            out.push(format!(
                "route `{}`: no principal can have any of the roles its `authorize` requires",
                route.name
            ));
        }
        for (method, m) in r.methods.iter().flatten() {
            if let AuthorizeConfig::Rule(m) = m {
                if unreachable(m, &had) {
                    out.push(format!(
                        "route `{}`: no principal can have any of the roles `authorize.methods.{method}` requires",
                        route.name
                    ));
                }
            }
        }
    }
    out
}

/// A requirement whose own `roles` list (all its conditions must hold) names only roles nobody has.
fn unreachable(r: &RuleConfig, had: &BTreeSet<String>) -> bool {
    r.roles.as_ref().is_some_and(|roles| !roles.is_empty() && roles.iter().all(|role| !had.contains(role)))
}

/// Token lifetime policy (issue 18): keys declared in the config file have no creation time, so an
/// authenticator's `max_age` does not apply to them.
fn token_policy_lints(cfg: &FileConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (name, a) in &cfg.authenticators {
        if let Some(k) = a.api_key.as_ref().filter(|k| k.max_age.is_some() && !k.keys.is_empty()) {
            out.push(format!(
                "authenticator `{name}`: max_age applies to stored keys only; the {} key(s) declared in the config \
                 file have no creation time and never age out (give them expires_at, or move them to the store)",
                k.keys.len()
            ));
        }
    }
    out
}
