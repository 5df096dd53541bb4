//! Authorization (issue 11): may this principal take this action on this route? Deny by default, and
//! every decision names the rule that made it.
//!
//! Roles with inheritance (`roles:`), roles granted to principal ids by config (`principals:`, per
//! authentication method) beside those authentication gives, and what a route requires (`authorize:`):
//! roles, scopes, `any_of` / `all_of`, per-method requirements, object-level rules (an owner named by a
//! path, query or JSON body field; a tenant from the path or host; an owner in the upstream's answer,
//! judged in `pipeline::owned_response`) and property-level rules (which JSON fields each role may set,
//! `properties.rs`) and policy as code: a Cedar policy set the route requires (`cedar.rs`).
//!
//! Roles are bits: each declared role is one bit, and a role's mask holds the bits of every role it
//! includes, transitively. A principal's roles (from authentication and from `principals:`) are looked
//! up once per request and or-ed together; a requirement on roles is one AND of masks.

pub mod cedar;
mod properties;

use crate::exchange::{Decision, Exchange, Params, Principal, Reject};
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

/// `principals:`: roles granted by config to a principal id, for the authentication methods named in
/// `via` (required: ids are not unique across methods, and a token whose `sub` is `ci-bot` must not get
/// the roles granted to the API key principal `ci-bot`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    #[serde(default)]
    pub roles: Vec<String>,
    /// `api_key`, `jwt`, `introspection`, `mtls`, `signature`.
    #[serde(default)]
    pub via: Vec<String>,
}

/// The authentication kinds `via` may name, in the order of [`kind_index`].
const KINDS: [&str; 5] = ["api_key", "jwt", "introspection", "mtls", "signature"];

fn kind_index(kind: crate::exchange::PrincipalKind) -> usize {
    KINDS.iter().position(|k| *k == kind.as_str()).unwrap_or(0)
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
    /// Object-level: the object the request names belongs to the principal.
    #[serde(default)]
    pub owner: Option<OwnerConfig>,
    /// Tenant isolation: the principal's tenant is the one the request names.
    #[serde(default)]
    pub tenant: Option<TenantConfig>,
    /// Per method, a requirement that replaces this one (top level only). With `methods` and no other
    /// condition, a method not listed is denied.
    #[serde(default)]
    pub methods: Option<BTreeMap<String, AuthorizeConfig>>,
    /// Object level, when only the upstream knows the owner (top level only): a field of its JSON answer.
    #[serde(default)]
    pub owner_in_response: Option<ResponseOwnerConfig>,
    /// Property level (top level only): per role, the JSON pointers of the body fields a POST, PUT or
    /// PATCH may set (`*` matches one segment; a pointer allows what is under it). Any other field: 403.
    #[serde(default)]
    pub properties: Option<BTreeMap<String, Vec<String>>>,
    /// A Cedar policy set declared under `policies:` must allow the request.
    #[serde(default)]
    pub policy: Option<String>,
}

/// `owner: { param: id, principal: id }`, `owner: { query: user, claim: sub, override: [admin] }`: the
/// value the request names (a path template parameter or a query parameter) must equal the principal's
/// id or one of its claims; a principal with an override role gets through either way.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    /// A field of the JSON request body, by JSON pointer (`/customer/id`); the body is then read.
    #[serde(default)]
    pub body: Option<String>,
    /// `id`: the principal's id (every authentication method has one).
    #[serde(default)]
    pub principal: Option<PrincipalField>,
    /// A verified claim (JWT, introspection) holding a string.
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default, rename = "override")]
    pub override_roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalField {
    Id,
}

/// `owner_in_response: { pointer: /owner, claim: sub }`: the upstream's JSON answer (2xx) is read whole
/// (at most `max_bytes`, default 1 MiB) before any of it is released, and its field at `pointer` must be
/// the principal's (id or claim), else 403 and nothing of it leaves. With `filter: true` the answer is a
/// JSON array and the items that are not the principal's are dropped instead.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseOwnerConfig {
    pub pointer: String,
    #[serde(default)]
    pub principal: Option<PrincipalField>,
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default, rename = "override")]
    pub override_roles: Vec<String>,
    #[serde(default)]
    pub filter: bool,
    #[serde(default)]
    pub max_bytes: Option<crate::units::Bytes>,
}

/// A compiled `owner_in_response`.
#[derive(Debug)]
pub struct ResponseOwner {
    pointer: String,
    claim: Option<String>,
    override_mask: u128,
    pub filter: bool,
    pub max_bytes: u64,
}

/// `tenant: { param: tenant }` (a path template parameter) or `tenant: { host: "{tenant}.api.example.com" }`
/// (a label of the request's host, compared without regard to case, as host names are).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
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
    /// Principal id to the mask of the roles `principals:` grants it, per authentication kind.
    granted: HashMap<String, [u128; KINDS.len()]>,
    names: Vec<String>,
    /// `masks` by the role's index in `names`.
    by_index: Vec<u128>,
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
            if p.via.is_empty() {
                return Err(format!(
                    "principal `{id}`: say which authentication methods the grant is for, e.g. `via: [api_key]` \
                     (ids are not unique across methods: a token whose subject is `{id}` is another principal)"
                ));
            }
            let mut by_kind = [0u128; KINDS.len()];
            for kind in &p.via {
                let i = KINDS
                    .iter()
                    .position(|k| k == kind)
                    .ok_or_else(|| format!("principal `{id}`: `via: {kind}` is not one of {}", KINDS.join(", ")))?;
                by_kind[i] = m;
            }
            granted.insert(id.clone(), by_kind);
        }
        let by_index = names.iter().map(|n| masks[n]).collect();
        Ok(Roles { masks, granted, names, by_index })
    }

    /// The mask of every role `principal` has: those authentication gave (roles not declared under
    /// `roles:` count for nothing), those `principals:` grants its id, and all they include.
    pub fn of(&self, principal: &Principal) -> u128 {
        let mut m = if self.granted.is_empty() {
            0
        } else {
            self.granted.get(&principal.id).map_or(0, |by_kind| by_kind[kind_index(principal.kind)])
        };
        for role in &principal.roles {
            m |= self.mask_with(role);
        }
        m
    }

    /// The mask of a role and all it includes (0 if undeclared). A few roles are scanned, more hashed.
    fn mask_with(&self, role: &str) -> u128 {
        if self.names.len() <= 16 {
            self.names.iter().position(|n| n == role).map_or(0, |i| self.by_index[i])
        } else {
            self.masks.get(role).copied().unwrap_or(0)
        }
    }

    /// The mask of any of `names` (each declared under `roles:`), for stages outside authorization that
    /// ask whether a principal holds one of them (with [`Roles::of`]).
    pub fn mask_of_any(&self, names: &[String]) -> Result<u128, String> {
        let mut m = 0;
        for n in names {
            m |= self.mask_of(n).ok_or_else(|| format!("role `{n}` is not declared under `roles`"))?;
        }
        Ok(m)
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
    Owner(Owner),
    Tenant(TenantSource),
    Policy(Box<PolicyCheck>),
}

/// A Cedar policy set the request must satisfy, with the rule id each outcome is recorded under.
#[derive(Debug)]
struct PolicyCheck {
    set: Arc<cedar::PolicySet>,
    /// Per policy (source order): denied by it.
    by_policy: Vec<Arc<str>>,
    no_permit: Arc<str>,
    error: Arc<str>,
}

#[derive(Debug)]
enum TenantSource {
    Param(String),
    /// The host's labels, lower case; `None` is the tenant's.
    Host(Vec<Option<String>>),
}

#[derive(Debug)]
struct Owner {
    source: Source,
    /// `None`: the principal's id; otherwise this claim.
    claim: Option<String>,
    override_mask: u128,
}

#[derive(Debug)]
enum Source {
    Param(String),
    Query(String),
    Body(String),
}

/// What a decision looks at.
struct Ctx<'a> {
    p: &'a Principal,
    mask: u128,
    roles: &'a Roles,
    method: &'a Method,
    /// What policy sets read beside the principal and the route.
    facts: &'a cedar::Facts<'a>,
    params: &'a Params,
    query: Option<&'a str>,
    host: Option<&'a str>,
    /// The JSON request body, on routes whose owner is a body field.
    body: Option<&'a serde_json::Value>,
}

/// A route's authorization stage.
#[derive(Debug)]
pub struct Authz {
    roles: Arc<Roles>,
    default: Option<(Rule, Arc<str>)>,
    methods: Vec<(Method, Rule, Arc<str>)>,
    /// The decision counters: per rule id (by the address of its one `Arc`, so a decision neither hashes
    /// nor clones the name) and decision. A route has a handful: a scan beats a hash.
    counters: Vec<(usize, bool, Counter)>,
    /// A requirement takes the tenant from the host (only then is the host looked up).
    needs_host: bool,
    /// A requirement asks a policy set (only then are the clock, the client and TLS facts gathered).
    needs_facts: bool,
    /// The rule id of a method with no requirement (when only `methods` is given).
    unlisted: Arc<str>,
    /// Per role bit, the body fields it may set; `None` when the route has no property rules.
    properties: Option<Vec<(u128, Vec<properties::Pattern>)>>,
    properties_rule: Arc<str>,
    /// A requirement names a body field as owner: every request's body is read (and must be JSON).
    body_owner: bool,
    response_owner: Option<ResponseOwner>,
    response_rule: Arc<str>,
    description: String,
}

impl Authz {
    /// `decisions`: the `portcullis_authz_decisions_total` family; counters for every rule of the route
    /// are made here, so a decision costs no label work.
    pub fn compile(
        config: &AuthorizeConfig,
        roles: &Arc<Roles>,
        route: &str,
        path_params: &[&str],
        policies: &Policies,
        decisions: &Family<Vec<(String, String)>, Counter>,
    ) -> Result<Authz, String> {
        let mut ids = Vec::new();
        let mut property_rules = None;
        let mut response_owner = None;
        let env = Env { roles, policies, path_params };
        let roles = &env;
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
                    let rule = compile_rule(c, roles, &id, &mut ids, true)?;
                    ids.push(id.clone());
                    methods.push((method, rule, id));
                }
                if let Some(o) = &r.owner_in_response {
                    if !o.pointer.starts_with('/') {
                        return Err(format!(
                            "authorize.owner_in_response.pointer: `{}` is not a JSON pointer",
                            o.pointer
                        ));
                    }
                    let claim = whose(o.principal, &o.claim, "authorize.owner_in_response")?;
                    let override_mask = env.override_mask(&o.override_roles, "authorize.owner_in_response")?;
                    response_owner = Some(ResponseOwner {
                        pointer: o.pointer.clone(),
                        claim,
                        override_mask,
                        filter: o.filter,
                        max_bytes: o.max_bytes.map_or(1 << 20, |b| b.0),
                    });
                }
                if let Some(props) = &r.properties {
                    let mut compiled = Vec::new();
                    for (role, pointers) in props {
                        let bit = env
                            .mask_of(role)
                            .ok_or_else(|| format!("authorize.properties: `{role}` is not declared under `roles`"))?;
                        let patterns = pointers
                            .iter()
                            .map(|p| {
                                properties::Pattern::parse(p).map_err(|m| format!("authorize.properties.{role}: {m}"))
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        compiled.push((bit, patterns));
                    }
                    property_rules = Some(compiled);
                }
                let has_default = r.roles.is_some()
                    || r.scopes.is_some()
                    || r.any_of.is_some()
                    || r.all_of.is_some()
                    || r.owner.is_some()
                    || r.tenant.is_some()
                    || r.policy.is_some()
                    || r.owner_in_response.is_some();
                let default = if has_default {
                    let plain =
                        RuleConfig { methods: None, properties: None, owner_in_response: None, ..(**r).clone() };
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
        let properties_rule: Arc<str> = "authorize.properties".into();
        ids.push(properties_rule.clone());
        let response_rule: Arc<str> = "authorize.owner_in_response".into();
        ids.push(response_rule.clone());
        let mut counters = Vec::new();
        for id in ids {
            for allowed in [true, false] {
                let labels = vec![
                    ("route".to_owned(), route.to_owned()),
                    ("decision".to_owned(), if allowed { "allow" } else { "deny" }.to_owned()),
                    ("rule".to_owned(), id.to_string()),
                ];
                counters.push((key(&id), allowed, decisions.get_or_create(&labels).clone()));
            }
        }
        let description = describe(config);
        // A body field as owner: the body is read first; a tenant from the host: the host is looked up.
        let body_owner = any_rule(config, &|r| r.owner.as_ref().is_some_and(|o| o.body.is_some()));
        let needs_host = any_rule(config, &|r| r.tenant.as_ref().is_some_and(|t| t.host.is_some()));
        let needs_facts = any_rule(config, &|r| r.policy.is_some());
        Ok(Authz {
            needs_facts,
            response_owner,
            response_rule,
            body_owner,
            needs_host,
            roles: env.roles.clone(),
            default,
            methods,
            counters,
            unlisted,
            properties: property_rules,
            properties_rule,
            description,
        })
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// True if the route has property rules or a body field as owner: bodies are then read whole.
    pub fn may_read_body(&self) -> bool {
        self.properties.is_some() || self.body_owner
    }

    /// True if this request's body must be read before deciding: property rules judge the body of a
    /// POST, PUT or PATCH; a body field as owner, every request's.
    pub fn needs_body(&self, method: &Method) -> bool {
        self.body_owner || (self.properties.is_some() && matches!(*method, Method::POST | Method::PUT | Method::PATCH))
    }

    /// The route's `owner_in_response`, if any: the upstream's 2xx answers are judged before release.
    pub fn response_owner(&self) -> Option<&ResponseOwner> {
        self.response_owner.as_ref()
    }

    /// Judges an upstream's JSON answer read whole: `Ok(None)` releases it as it is, `Ok(Some(bytes))`
    /// releases these instead (the principal's items of a filtered collection), `Err(reason)` refuses
    /// it (recorded on the exchange and counted). Any doubt refuses: a body that is not JSON or has a
    /// duplicate key, a missing or non-scalar owner, an item without one.
    pub fn judge_response(&self, ex: &mut Exchange<'_>, body: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
        let Some(o) = &self.response_owner else { return Ok(None) };
        let verdict = self.response_verdict(o, ex.principal.as_deref(), body);
        if verdict.is_err() {
            self.withheld(ex);
        }
        verdict
    }

    /// Records an upstream answer withheld by `owner_in_response` (also when it could not be read whole).
    pub fn withheld(&self, ex: &mut Exchange<'_>) {
        self.count(&self.response_rule, false);
        ex.authz = Some(Decision { allowed: false, rule: self.response_rule.clone() });
    }

    fn response_verdict(
        &self,
        o: &ResponseOwner,
        principal: Option<&Principal>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, &'static str> {
        let Some(p) = principal else { return Err("no principal") };
        if self.roles.of(p) & o.override_mask != 0 {
            return Ok(None);
        }
        // Parsers disagree on duplicate keys: the client's parser must see the owner judged here.
        properties::walk(body, false, &mut |_| true).map_err(|_| "the answer is not JSON, or has a duplicate key")?;
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON")?;
        let Some(mine) = principal_value(p, o.claim.as_deref()) else { return Err("the principal has no such claim") };
        let owned = |item: &serde_json::Value| match item.pointer(&o.pointer) {
            Some(serde_json::Value::String(s)) => Some(s == mine),
            Some(serde_json::Value::Number(n)) => Some(n.to_string() == mine),
            _ => None,
        };
        if !o.filter {
            return match owned(&value) {
                Some(true) => Ok(None),
                Some(false) => Err("the object is not the principal's"),
                None => Err("the answer has no scalar owner field"),
            };
        }
        let serde_json::Value::Array(items) = value else { return Err("a filtered answer is not a JSON array") };
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            match owned(&item) {
                Some(true) => kept.push(item),
                Some(false) => {}
                None => return Err("an item has no scalar owner field"),
            }
        }
        serde_json::to_vec(&kept).map(Some).map_err(|_| "the filtered answer cannot be written")
    }

    /// True if the decision itself needs the body (a body field as owner); otherwise the requirement is
    /// decided on the head, before any body byte is read.
    pub fn decides_on_body(&self) -> bool {
        self.body_owner
    }

    /// Judges the body read whole when [`Authz::needs_body`] said so (after [`Authz::authorize`] unless
    /// [`Authz::decides_on_body`]): not JSON 415, malformed or with a duplicate key 400 with the byte
    /// offset; then the requirement if it needs the body, then the property rules.
    pub fn judge_body(&self, ex: &mut Exchange<'_>, body: &[u8]) -> Result<(), Reject> {
        if body.is_empty() {
            if self.body_owner {
                self.authorize_ctx(ex, None)?;
            }
            return Ok(());
        }
        // One media type: with two, the upstream may read the body as the other.
        if ex.parts.headers.get_all(http::header::CONTENT_TYPE).iter().count() != 1 || !is_json(&ex.parts.headers) {
            return Err(Reject::UnsupportedMediaType);
        }
        // The property rules judge each field as the walk finds it: nothing is kept but the path.
        let judged = matches!(ex.parts.method, Method::POST | Method::PUT | Method::PATCH);
        let allowed: Vec<&properties::Pattern> = match (&self.properties, judged) {
            (Some(rules), true) => {
                let mask = ex.principal.as_deref().map_or(0, |p| self.roles.of(p));
                rules.iter().filter(|(bit, _)| mask & bit != 0).flat_map(|(_, p)| p.iter()).collect()
            }
            _ => Vec::new(),
        };
        let judge = self.properties.is_some() && judged;
        let refused =
            properties::walk(body, judge, &mut |leaf| allowed.iter().any(|p| p.allows(leaf))).map_err(|m| {
                Reject::MalformedJson {
                    offset: m.offset,
                    reason: if m.duplicate_key { "duplicate key" } else { "malformed JSON or too many fields" },
                }
            })?;
        if self.body_owner {
            // No duplicate keys (just checked), so this value is the one the upstream will read.
            let value = serde_json::from_slice::<serde_json::Value>(body).ok();
            self.authorize_ctx(ex, value.as_ref())?;
        }
        if let Some(pointer) = refused {
            self.count(&self.properties_rule, false);
            ex.authz = Some(Decision { allowed: false, rule: self.properties_rule.clone() });
            return Err(Reject::ForbiddenProperty(pointer.into()));
        }
        Ok(())
    }

    /// Decides for the exchange's principal and method; refuses with 403 (no hint of the rule).
    pub fn authorize(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        self.authorize_ctx(ex, None)
    }

    fn count(&self, rule: &Arc<str>, allowed: bool) {
        let k = key(rule);
        if let Some((_, _, c)) = self.counters.iter().find(|(id, a, _)| *id == k && *a == allowed) {
            c.inc();
        }
    }

    fn authorize_ctx(&self, ex: &mut Exchange<'_>, body: Option<&serde_json::Value>) -> Result<(), Reject> {
        let query = ex.parts.uri.query();
        // Per-method rules judge the method the request names; frameworks that take `_method` from the
        // query (Laravel, Symfony, Rails) would act on another one. Denied where methods have rules.
        if !self.methods.is_empty()
            && query.is_some_and(|q| {
                q.split(['&', ';']).any(|p| loose_name(p.split('=').next().unwrap_or("")) == "_method")
            })
        {
            self.count(&self.unlisted, false);
            ex.authz = Some(Decision { allowed: false, rule: self.unlisted.clone() });
            return Err(Reject::Forbidden);
        }
        let host = if self.needs_host { request_host(&ex.parts) } else { None };
        let facts = if self.needs_facts {
            let tls = ex.conn.tls.as_ref();
            cedar::Facts {
                route: ex.route.as_deref().unwrap_or(""),
                path: ex.path(),
                ip: ex.client_ip,
                now: std::time::SystemTime::now(),
                tls_version: tls.and_then(|t| t.version),
                tls: tls.is_some(),
                client_cert: tls.is_some_and(|t| t.client_chain.is_some()),
            }
        } else {
            cedar::Facts { now: std::time::UNIX_EPOCH, ..cedar::Facts::default() }
        };
        let at = Inputs { params: &ex.params, query, host, body, facts: &facts };
        let decision = self.decide_in(ex.principal.as_deref(), &ex.parts.method, &at);
        self.count(&decision.rule, decision.allowed);
        let allowed = decision.allowed;
        ex.authz = Some(decision);
        if allowed {
            Ok(())
        } else {
            Err(Reject::Forbidden)
        }
    }

    /// The decision for `principal` (`None`: not authenticated) taking `method` on the route, with the
    /// path parameters and the query the request named.
    pub fn decide(
        &self,
        principal: Option<&Principal>,
        method: &Method,
        params: &Params,
        query: Option<&str>,
    ) -> Decision {
        self.decide_at(principal, method, params, query, &cedar::Facts::default())
    }

    /// [`Authz::decide`] with the facts policy sets read (the route, the client, the clock, TLS).
    pub fn decide_at(
        &self,
        principal: Option<&Principal>,
        method: &Method,
        params: &Params,
        query: Option<&str>,
        facts: &cedar::Facts<'_>,
    ) -> Decision {
        self.decide_in(principal, method, &Inputs { params, query, host: None, body: None, facts })
    }

    fn decide_in(&self, principal: Option<&Principal>, method: &Method, at: &Inputs<'_>) -> Decision {
        let chosen = self.methods.iter().find(|(m, _, _)| m == method).map(|(_, r, id)| (r, id));
        let Some((rule, id)) = chosen.or(self.default.as_ref().map(|(r, id)| (r, id))) else {
            return Decision { allowed: false, rule: self.unlisted.clone() };
        };
        let Some(principal) = principal else {
            // Authentication runs first; a route without a principal has nothing to authorize.
            return Decision { allowed: false, rule: id.clone() };
        };
        let ctx = Ctx {
            p: principal,
            mask: self.roles.of(principal),
            roles: &self.roles,
            method,
            facts: at.facts,
            params: at.params,
            query: at.query,
            host: at.host,
            body: at.body,
        };
        match failing(rule, &ctx) {
            None => Decision { allowed: true, rule: id.clone() },
            Some(rule) => Decision { allowed: false, rule },
        }
    }
}

/// The id of the first condition that fails, or `None` if the rule holds.
fn failing(rule: &Rule, ctx: &Ctx<'_>) -> Option<Arc<str>> {
    let Rule::All(conditions) = rule else { return None };
    let p = ctx.p;
    for (c, id) in conditions {
        let holds = match c {
            Condition::Policy(check) => {
                let roles = ctx.p_roles();
                match check.set.decide(p, roles, ctx.method, ctx.params, ctx.facts) {
                    cedar::Verdict::Allow => true,
                    cedar::Verdict::Forbidden(i) => return Some(check.by_policy[i].clone()),
                    cedar::Verdict::NoPermit => return Some(check.no_permit.clone()),
                    cedar::Verdict::Error => return Some(check.error.clone()),
                }
            }
            Condition::Roles(want) => ctx.mask & want != 0,
            Condition::ScopesAll(s) => s.iter().all(|s| p.scopes.iter().any(|have| have == s)),
            Condition::ScopesAny(s) => s.iter().any(|s| p.scopes.iter().any(|have| have == s)),
            Condition::AnyOf(rules) => rules.iter().any(|r| failing(r, ctx).is_none()),
            Condition::AllOf(rules) => rules.iter().all(|r| failing(r, ctx).is_none()),
            Condition::Owner(o) => ctx.mask & o.override_mask != 0 || owns(o, ctx),
            Condition::Tenant(t) => same_tenant(t, ctx),
        };
        if !holds {
            return Some(id.clone());
        }
    }
    None
}

/// The request facts a decision reads beside the principal and the method.
struct Inputs<'a> {
    params: &'a Params,
    query: Option<&'a str>,
    host: Option<&'a str>,
    body: Option<&'a serde_json::Value>,
    facts: &'a cedar::Facts<'a>,
}

impl<'a> Ctx<'a> {
    /// The names of the roles the principal has (inherited and granted ones included).
    fn p_roles(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let roles: &'a Roles = self.roles;
        let mask = self.mask;
        roles.names.iter().enumerate().filter(move |(i, _)| mask & (1u128 << i) != 0).map(|(_, n)| n.as_str())
    }
}

/// The policy sets declared under `policies:`, by name.
pub type Policies = BTreeMap<String, Arc<cedar::PolicySet>>;

/// Whether the object the request names is the principal's. Any doubt is a no: the value missing,
/// named twice, not valid UTF-8 once decoded, or the claim missing or not a string.
fn owns(o: &Owner, ctx: &Ctx<'_>) -> bool {
    let named: Option<std::borrow::Cow<'_, str>> = match &o.source {
        Source::Param(name) => one_param(ctx.params, name).map(Into::into),
        Source::Query(name) => query_value(ctx.query.unwrap_or(""), name),
        Source::Body(pointer) => match ctx.body.and_then(|b| b.pointer(pointer)) {
            Some(serde_json::Value::String(s)) => Some(s.as_str().into()),
            _ => None,
        },
    };
    let Some(named) = named else { return false };
    // A scan: `contains` with a non-ASCII `char` runs a substring search, costly for short values.
    if named.is_empty() || named.chars().any(|c| c == char::REPLACEMENT_CHARACTER) {
        return false;
    }
    principal_value(ctx.p, o.claim.as_deref()) == Some(&*named)
}

/// Whether a requirement anywhere in `config` (nested, per method) satisfies `test`.
fn any_rule(config: &AuthorizeConfig, test: &dyn Fn(&RuleConfig) -> bool) -> bool {
    let AuthorizeConfig::Rule(r) = config else { return false };
    test(r)
        || r.any_of.iter().chain(r.all_of.iter()).flatten().any(|c| any_rule(c, test))
        || r.methods.iter().flat_map(|m| m.values()).any(|c| any_rule(c, test))
}

/// The policy sets `config` requires anywhere (nested, per method).
pub fn policy_names(config: &AuthorizeConfig) -> Vec<&str> {
    let mut out = Vec::new();
    fn walk<'c>(c: &'c AuthorizeConfig, out: &mut Vec<&'c str>) {
        let AuthorizeConfig::Rule(r) = c else { return };
        out.extend(r.policy.as_deref());
        for sub in r.any_of.iter().chain(r.all_of.iter()).flatten() {
            walk(sub, out);
        }
        for sub in r.methods.iter().flat_map(|m| m.values()) {
            walk(sub, out);
        }
    }
    walk(config, &mut out);
    out
}

/// A rule id's identity: the address of its one shared name.
fn key(id: &Arc<str>) -> usize {
    Arc::as_ptr(id).cast::<u8>() as usize
}

/// `application/json` or `application/*+json`.
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")))
}

/// Whether the tenant the request names is the principal's. A principal with no tenant, a request
/// naming none (or one twice), never match.
fn same_tenant(t: &TenantSource, ctx: &Ctx<'_>) -> bool {
    let Some(mine) = ctx.p.tenant.as_deref() else { return false };
    match t {
        TenantSource::Param(name) => one_param(ctx.params, name).is_some_and(|v| !v.is_empty() && v == mine),
        TenantSource::Host(pattern) => {
            let Some(host) = ctx.host else { return false };
            let labels: Vec<&str> = host.split('.').collect();
            if labels.len() != pattern.len() {
                return false;
            }
            labels.iter().zip(pattern).all(|(label, p)| match p {
                Some(literal) => label.eq_ignore_ascii_case(literal),
                None => !label.is_empty() && label.eq_ignore_ascii_case(mine),
            })
        }
    }
}

/// The request's host name: the target's authority or the `Host` field, without its port or a final dot.
fn request_host(parts: &http::request::Parts) -> Option<&str> {
    let raw = match parts.uri.host() {
        Some(h) => h,
        None => {
            let v = parts.headers.get(http::header::HOST)?.to_str().ok()?;
            // A bracketed IPv6 literal has no tenant label; otherwise the port goes.
            if v.starts_with('[') {
                return None;
            }
            v.rsplit_once(':').map_or(v, |(h, _)| h)
        }
    };
    Some(raw.strip_suffix('.').unwrap_or(raw))
}

/// The one value of query parameter `name` (form decoding: `+` is a space, then percent-decoding);
/// `None` when it is absent, given more than once, or not UTF-8.
fn query_value<'q>(query: &'q str, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    // Some upstreams also split on `;` (and would see another parameter there).
    if query.contains(';') {
        return None;
    }
    let decode = |s: &'q str| -> Option<std::borrow::Cow<'q, str>> {
        let spaced: std::borrow::Cow<'q, str> = if s.contains('+') { s.replace('+', " ").into() } else { s.into() };
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
        String::from_utf8(bytes).ok().map(Into::into)
    };
    let wanted = loose_name(name);
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        if k.as_ref() == name {
            if found.is_some() {
                return None;
            }
            found = Some(decode(v)?);
        } else if loose_name(&k) == wanted {
            // Another spelling some framework reads as the same parameter (`User`, `user[]`, `user.x`).
            return None;
        }
    }
    found
}

/// A parameter name as the loosest common framework reads it: case ignored (ASP.NET), `.` and space as
/// `_` and what follows a `[` dropped (PHP).
fn loose_name(name: &str) -> String {
    let base = name.split('[').next().unwrap_or(name);
    base.chars().map(|c| if c == '.' || c == ' ' { '_' } else { c }).collect::<String>().to_lowercase()
}

/// What compiling a route's requirement needs to know.
struct Env<'a> {
    roles: &'a Arc<Roles>,
    policies: &'a Policies,
    /// The parameters the route's path template captures.
    path_params: &'a [&'a str],
}

impl Env<'_> {
    fn mask_of(&self, role: &str) -> Option<u128> {
        self.roles.mask_of(role)
    }

    /// The bits of an `override` list; `at` names the rule in errors.
    fn override_mask(&self, roles: &[String], at: &str) -> Result<u128, String> {
        roles.iter().try_fold(0, |m, role| {
            self.mask_of(role)
                .map(|bit| m | bit)
                .ok_or_else(|| format!("{at}.override: `{role}` is not declared under `roles`"))
        })
    }
}

/// Whose value an owner is compared with: `None` the principal's id, or a claim. Exactly one is named.
fn whose(principal: Option<PrincipalField>, claim: &Option<String>, at: &str) -> Result<Option<String>, String> {
    match (principal, claim) {
        (Some(PrincipalField::Id), None) => Ok(None),
        (None, Some(c)) if !c.is_empty() => Ok(Some(c.clone())),
        _ => Err(format!("{at} needs exactly one of `principal: id` or `claim`")),
    }
}

/// The principal's id (`claim: None`) or the string value of one of its claims.
fn principal_value<'p>(p: &'p Principal, claim: Option<&str>) -> Option<&'p str> {
    match claim {
        None => Some(&p.id),
        Some(c) => p.claims.as_ref()?.get(c)?.as_str(),
    }
}

/// The one value of path parameter `name`; `None` when it is absent or captured twice.
fn one_param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.get(name).filter(|_| params.count(name) == 1)
}

fn compile_rule(
    config: &AuthorizeConfig,
    roles: &Env<'_>,
    id: &str,
    ids: &mut Vec<Arc<str>>,
    nested: bool,
) -> Result<Rule, String> {
    let r = match config {
        AuthorizeConfig::Keyword(Keyword::Authenticated) => return Ok(Rule::Authenticated),
        AuthorizeConfig::Rule(r) => r,
    };
    if nested && (r.methods.is_some() || r.properties.is_some() || r.owner_in_response.is_some()) {
        return Err(format!(
            "{id}: `methods`, `properties` and `owner_in_response` are allowed only at the top of `authorize`"
        ));
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
    if let Some(o) = &r.owner {
        let source = match (&o.param, &o.query, &o.body) {
            (Some(p), None, None) if roles.path_params.contains(&p.as_str()) => Source::Param(p.clone()),
            (Some(p), None, None) => {
                return Err(format!("{id}.owner.param: the route's path captures no `{{{p}}}` (use a path template)"))
            }
            (None, Some(q), None) if !q.is_empty() => Source::Query(q.clone()),
            (None, None, Some(b)) if b.starts_with('/') => Source::Body(b.clone()),
            (None, None, Some(b)) => {
                return Err(format!("{id}.owner.body: `{b}` is not a JSON pointer (it must start with `/`)"))
            }
            _ => return Err(format!("{id}.owner needs exactly one of `param`, `query` or `body`")),
        };
        let claim = whose(o.principal, &o.claim, &format!("{id}.owner"))?;
        let override_mask = roles.override_mask(&o.override_roles, &format!("{id}.owner"))?;
        push(Condition::Owner(Owner { source, claim, override_mask }), format!("{id}.owner"), ids);
    }
    if let Some(t) = &r.tenant {
        let source = match (&t.param, &t.host) {
            (Some(p), None) if roles.path_params.contains(&p.as_str()) => TenantSource::Param(p.clone()),
            (Some(p), None) => {
                return Err(format!("{id}.tenant.param: the route's path captures no `{{{p}}}` (use a path template)"))
            }
            (None, Some(h)) => {
                let labels: Vec<Option<String>> =
                    h.split('.').map(|l| if l == "{tenant}" { None } else { Some(l.to_ascii_lowercase()) }).collect();
                let holes = labels.iter().filter(|l| l.is_none()).count();
                if holes != 1 || labels.iter().flatten().any(|l| l.is_empty() || l.contains(['{', '}', '*'])) {
                    return Err(format!(
                        "{id}.tenant.host: `{h}` needs exactly one `{{tenant}}` label and plain labels otherwise"
                    ));
                }
                TenantSource::Host(labels)
            }
            _ => return Err(format!("{id}.tenant needs exactly one of `param` or `host`")),
        };
        push(Condition::Tenant(source), format!("{id}.tenant"), ids);
    }
    if let Some(name) = &r.policy {
        let set = roles
            .policies
            .get(name)
            .ok_or_else(|| format!("{id}.policy: `{name}` is not declared under `policies`"))?;
        let at = format!("{id}.policy:{name}");
        let mut rule = |what: &str| -> Arc<str> {
            let rid: Arc<str> = format!("{at}/{what}").into();
            ids.push(rid.clone());
            rid
        };
        let by_policy = set.names().map(&mut rule).collect();
        let check = PolicyCheck { set: set.clone(), by_policy, no_permit: rule("no-permit"), error: rule("error") };
        push(Condition::Policy(Box::new(check)), at, ids);
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
            if let Some(o) = &r.owner {
                let named = o
                    .param
                    .as_ref()
                    .map_or_else(|| format!("query {}", o.query.as_deref().unwrap_or("")), |p| format!("{{{p}}}"));
                let whose = o.claim.as_ref().map_or_else(|| "principal id".to_owned(), |c| format!("claim {c}"));
                let over = if o.override_roles.is_empty() {
                    String::new()
                } else {
                    format!(" unless {}", o.override_roles.join("|"))
                };
                parts.push(format!("owner {named} = {whose}{over}"));
            }
            if let Some(t) = &r.tenant {
                let from = t
                    .param
                    .as_ref()
                    .map_or_else(|| format!("host {}", t.host.as_deref().unwrap_or("")), |p| format!("{{{p}}}"));
                parts.push(format!("tenant = {from}"));
            }
            if let Some(p) = &r.policy {
                parts.push(format!("policy {p}"));
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
