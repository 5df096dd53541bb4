//! Authorization (issue 11): may this principal take this action on this route? Deny by default, and
//! every decision names the rule that made it.
//!
//! This first part is role-based: roles with inheritance (`roles:`), roles granted to principal ids by
//! config (`principals:`) beside those authentication gives, and what a route requires (`authorize:`):
//! roles, scopes, `any_of` / `all_of` of such requirements, and per-method requirements. Object-level
//! (ownership, tenants), property-level (mass assignment) and policy rules (Cedar) are still to come.
//!
//! Roles are bits: each declared role is one bit, and a role's mask holds the bits of every role it
//! includes, transitively. A principal's roles (from authentication and from `principals:`) are looked
//! up once per request and or-ed together; a requirement on roles is one AND of masks.

use crate::exchange::{Decision, Exchange, Principal, Reject};
use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// `roles:`: a role, and the roles it includes (`admin: { includes: [editor] }`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    #[serde(default)]
    pub includes: Vec<String>,
}

/// `principals:`: roles granted by config to a principal id, whichever way it authenticates.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A route's `authorize:`: `authenticated` (any authenticated principal), or a requirement.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum AuthorizeConfig {
    Keyword(Keyword),
    Rule(Box<RuleConfig>),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Keyword {
    Authenticated,
}

/// A requirement: every condition it states must hold.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The principal has at least one of these roles (directly or by inheritance).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Option<ScopesConfig>,
    /// At least one of these requirements holds.
    #[serde(default)]
    pub any_of: Option<Vec<AuthorizeConfig>>,
    /// Every one of these requirements holds.
    #[serde(default)]
    pub all_of: Option<Vec<AuthorizeConfig>>,
    /// Per method, a requirement that replaces this one (top level only). With `methods` and no other
    /// condition, a method not listed is denied.
    #[serde(default)]
    pub methods: Option<BTreeMap<String, AuthorizeConfig>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScopesConfig {
    #[serde(default)]
    pub all_of: Vec<String>,
    #[serde(default)]
    pub any_of: Vec<String>,
}

/// The most roles a config may declare (each is a bit).
const MAX_ROLES: usize = 128;

/// The declared roles and the config's grants, compiled once per config.
#[derive(Debug, Default)]
pub struct Roles {
    /// Role name to the mask of itself and every role it includes.
    masks: HashMap<String, u128>,
    /// Principal id to the mask of the roles `principals:` grants it.
    granted: HashMap<String, u128>,
    names: Vec<String>,
}

impl Roles {
    pub fn compile(
        roles: &BTreeMap<String, RoleConfig>,
        principals: &BTreeMap<String, PrincipalConfig>,
    ) -> Result<Roles, String> {
        if roles.len() > MAX_ROLES {
            return Err(format!("at most {MAX_ROLES} roles can be declared ({} are)", roles.len()));
        }
        let names: Vec<String> = roles.keys().cloned().collect();
        let bit = |name: &str| names.iter().position(|n| n == name).map(|i| 1u128 << i);
        for (name, r) in roles {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("role name `{name}` is empty or has spaces"));
            }
            for inc in &r.includes {
                bit(inc)
                    .ok_or_else(|| format!("role `{name}` includes `{inc}`, which is not declared under `roles`"))?;
            }
        }
        // The transitive closure: repeat until nothing changes (at most one pass per role).
        let mut masks: HashMap<String, u128> = names.iter().map(|n| (n.clone(), bit(n).unwrap_or_default())).collect();
        for _ in 0..=names.len() {
            let mut changed = false;
            for (name, r) in roles {
                let mut m = masks[name];
                for inc in &r.includes {
                    m |= masks[inc];
                }
                if m != masks[name] {
                    masks.insert(name.clone(), m);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (name, r) in roles {
            let me = bit(name).unwrap_or_default();
            let cycle = r.includes.iter().any(|inc| inc == name)
                || names.iter().any(|other| {
                    let them = bit(other).unwrap_or_default();
                    other != name && masks[name] & them != 0 && masks[other] & me != 0
                });
            if cycle {
                return Err(format!("role `{name}` includes itself through `includes` (a cycle)"));
            }
        }
        let mut granted = HashMap::new();
        for (id, p) in principals {
            let mut m = 0;
            for role in &p.roles {
                m |= masks.get(role).ok_or_else(|| {
                    format!("principal `{id}` is granted `{role}`, which is not declared under `roles`")
                })?;
            }
            granted.insert(id.clone(), m);
        }
        Ok(Roles { masks, granted, names })
    }

    /// The mask of every role `principal` has: those authentication gave (roles not declared under
    /// `roles:` count for nothing), those `principals:` grants its id, and all they include.
    pub fn of(&self, principal: &Principal) -> u128 {
        let mut m = self.granted.get(&principal.id).copied().unwrap_or(0);
        for role in &principal.roles {
            m |= self.masks.get(role).copied().unwrap_or(0);
        }
        m
    }

    fn mask_of(&self, role: &str) -> Option<u128> {
        let i = self.names.iter().position(|n| n == role)?;
        Some(1u128 << i)
    }
}

/// A compiled requirement.
#[derive(Debug)]
enum Rule {
    Authenticated,
    /// Every condition; each with the rule id that names it in decisions.
    All(Vec<(Condition, Arc<str>)>),
}

#[derive(Debug)]
enum Condition {
    /// Any of these role bits.
    Roles(u128),
    ScopesAll(Box<[String]>),
    ScopesAny(Box<[String]>),
    AnyOf(Vec<Rule>),
    AllOf(Vec<Rule>),
}

/// A route's authorization stage.
#[derive(Debug)]
pub struct Authz {
    roles: Arc<Roles>,
    default: Option<(Rule, Arc<str>)>,
    methods: Vec<(Method, Rule, Arc<str>)>,
    /// The decision counters, per rule id and decision.
    counters: HashMap<(Arc<str>, bool), Counter>,
    /// The rule id of a method with no requirement (when only `methods` is given).
    unlisted: Arc<str>,
    description: String,
}

impl Authz {
    /// `decisions`: the `portcullis_authz_decisions_total` family; counters for every rule of the route
    /// are made here, so a decision costs no label work.
    pub fn compile(
        config: &AuthorizeConfig,
        roles: &Arc<Roles>,
        route: &str,
        decisions: &Family<Vec<(String, String)>, Counter>,
    ) -> Result<Authz, String> {
        let mut ids = Vec::new();
        let (default, methods) = match config {
            AuthorizeConfig::Keyword(Keyword::Authenticated) => {
                let id: Arc<str> = "authenticated".into();
                ids.push(id.clone());
                (Some((Rule::Authenticated, id)), Vec::new())
            }
            AuthorizeConfig::Rule(r) => {
                let mut methods = Vec::new();
                for (m, c) in r.methods.iter().flatten() {
                    let method = match Method::from_bytes(m.as_bytes()) {
                        Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => method,
                        _ => return Err(format!("authorize.methods: `{m}` is not an HTTP method (upper case)")),
                    };
                    let id: Arc<str> = format!("authorize.methods.{m}").into();
                    let rule = compile_rule(c, roles, &id, &mut ids, false)?;
                    ids.push(id.clone());
                    methods.push((method, rule, id));
                }
                let has_default = r.roles.is_some() || r.scopes.is_some() || r.any_of.is_some() || r.all_of.is_some();
                let default = if has_default {
                    let plain = RuleConfig { methods: None, ..(**r).clone() };
                    let id: Arc<str> = "authorize".into();
                    let rule = compile_rule(&AuthorizeConfig::Rule(Box::new(plain)), roles, &id, &mut ids, false)?;
                    ids.push(id.clone());
                    Some((rule, id))
                } else if methods.is_empty() {
                    return Err("authorize states no requirement (write `authorize: authenticated` for any authenticated caller)".into());
                } else {
                    None
                };
                (default, methods)
            }
        };
        let unlisted: Arc<str> = "authorize.methods (method not listed)".into();
        ids.push(unlisted.clone());
        let mut counters = HashMap::new();
        for id in ids {
            for allowed in [true, false] {
                let labels = vec![
                    ("route".to_owned(), route.to_owned()),
                    ("decision".to_owned(), if allowed { "allow" } else { "deny" }.to_owned()),
                    ("rule".to_owned(), id.to_string()),
                ];
                counters.insert((id.clone(), allowed), decisions.get_or_create(&labels).clone());
            }
        }
        let description = describe(config);
        Ok(Authz { roles: roles.clone(), default, methods, counters, unlisted, description })
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Decides for the exchange's principal and method; refuses with 403 (no hint of the rule).
    pub fn authorize(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        let decision = self.decide(ex.principal.as_deref(), &ex.parts.method);
        if let Some(c) = self.counters.get(&(decision.rule.clone(), decision.allowed)) {
            c.inc();
        }
        let allowed = decision.allowed;
        ex.authz = Some(decision);
        if allowed {
            Ok(())
        } else {
            Err(Reject::Forbidden)
        }
    }

    fn decide(&self, principal: Option<&Principal>, method: &Method) -> Decision {
        let chosen = self.methods.iter().find(|(m, _, _)| m == method).map(|(_, r, id)| (r, id));
        let Some((rule, id)) = chosen.or(self.default.as_ref().map(|(r, id)| (r, id))) else {
            return Decision { allowed: false, rule: self.unlisted.clone() };
        };
        let Some(principal) = principal else {
            // Authentication runs first; a route without a principal has nothing to authorize.
            return Decision { allowed: false, rule: id.clone() };
        };
        let mask = self.roles.of(principal);
        match failing(rule, principal, mask) {
            None => Decision { allowed: true, rule: id.clone() },
            Some(rule) => Decision { allowed: false, rule },
        }
    }
}

/// The id of the first condition that fails, or `None` if the rule holds.
fn failing(rule: &Rule, p: &Principal, mask: u128) -> Option<Arc<str>> {
    let Rule::All(conditions) = rule else { return None };
    for (c, id) in conditions {
        let holds = match c {
            Condition::Roles(want) => mask & want != 0,
            Condition::ScopesAll(s) => s.iter().all(|s| p.scopes.iter().any(|have| have == s)),
            Condition::ScopesAny(s) => s.iter().any(|s| p.scopes.iter().any(|have| have == s)),
            Condition::AnyOf(rules) => rules.iter().any(|r| failing(r, p, mask).is_none()),
            Condition::AllOf(rules) => rules.iter().all(|r| failing(r, p, mask).is_none()),
        };
        if !holds {
            return Some(id.clone());
        }
    }
    None
}

fn compile_rule(
    config: &AuthorizeConfig,
    roles: &Roles,
    id: &str,
    ids: &mut Vec<Arc<str>>,
    nested: bool,
) -> Result<Rule, String> {
    let r = match config {
        AuthorizeConfig::Keyword(Keyword::Authenticated) => return Ok(Rule::Authenticated),
        AuthorizeConfig::Rule(r) => r,
    };
    if nested && r.methods.is_some() {
        return Err(format!("{id}: `methods` is allowed only at the top of `authorize`"));
    }
    let mut conditions = Vec::new();
    let mut push = |c: Condition, name: String, ids: &mut Vec<Arc<str>>| {
        let cid: Arc<str> = name.into();
        ids.push(cid.clone());
        conditions.push((c, cid));
    };
    if let Some(list) = &r.roles {
        if list.is_empty() {
            return Err(format!("{id}.roles is empty"));
        }
        let mut m = 0;
        for role in list {
            m |= roles.mask_of(role).ok_or_else(|| format!("{id}.roles: `{role}` is not declared under `roles`"))?;
        }
        // A principal's mask already holds every role its roles include: one AND.
        push(Condition::Roles(m), format!("{id}.roles"), ids);
    }
    if let Some(s) = &r.scopes {
        if s.all_of.is_empty() && s.any_of.is_empty() {
            return Err(format!("{id}.scopes states neither `all_of` nor `any_of`"));
        }
        if !s.all_of.is_empty() {
            push(Condition::ScopesAll(s.all_of.clone().into()), format!("{id}.scopes.all_of"), ids);
        }
        if !s.any_of.is_empty() {
            push(Condition::ScopesAny(s.any_of.clone().into()), format!("{id}.scopes.any_of"), ids);
        }
    }
    for (list, any) in [(&r.any_of, true), (&r.all_of, false)] {
        let Some(list) = list else { continue };
        let key = if any { "any_of" } else { "all_of" };
        if list.is_empty() {
            return Err(format!("{id}.{key} is empty"));
        }
        let sub = list
            .iter()
            .enumerate()
            .map(|(i, c)| compile_rule(c, roles, &format!("{id}.{key}[{i}]"), ids, true))
            .collect::<Result<Vec<_>, _>>()?;
        push(if any { Condition::AnyOf(sub) } else { Condition::AllOf(sub) }, format!("{id}.{key}"), ids);
    }
    if conditions.is_empty() {
        return Err(format!("{id} states no requirement (write `authenticated` for any authenticated caller)"));
    }
    Ok(Rule::All(conditions))
}

fn describe(config: &AuthorizeConfig) -> String {
    match config {
        AuthorizeConfig::Keyword(Keyword::Authenticated) => "authenticated".into(),
        AuthorizeConfig::Rule(r) => {
            let mut parts = Vec::new();
            if let Some(roles) = &r.roles {
                parts.push(format!("roles any of {}", roles.join("|")));
            }
            if let Some(s) = &r.scopes {
                if !s.all_of.is_empty() {
                    parts.push(format!("scopes all of {}", s.all_of.join("|")));
                }
                if !s.any_of.is_empty() {
                    parts.push(format!("scopes any of {}", s.any_of.join("|")));
                }
            }
            if let Some(a) = &r.any_of {
                parts.push(format!("any of ({})", a.iter().map(describe).collect::<Vec<_>>().join("; ")));
            }
            if let Some(a) = &r.all_of {
                parts.push(format!("all of ({})", a.iter().map(describe).collect::<Vec<_>>().join("; ")));
            }
            for (m, c) in r.methods.iter().flatten() {
                parts.push(format!("{m}: {}", describe(c)));
            }
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests;
