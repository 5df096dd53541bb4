//! Policy as code: Cedar policy sets named under `policies:`, required by a route's
//! `authorize: { policy: NAME }` (beside or instead of roles and the other conditions).
//!
//! The gateway writes one Cedar schema per set (namespace `Portcullis`) and validates the set against
//! it in strict mode at load: a policy that does not parse, names an attribute that does not exist, or
//! compares values of different types fails `check` and any reload (which keeps the old config).
//! The schema, and so what a policy may read:
//! - principal `Portcullis::Principal::"<method>:<id>"` (`api_key:ci-bot`, `jwt:alice`: ids are only
//!   unique per authentication method), member of a `Portcullis::Role::"<name>"` for each role it has
//!   (inherited and granted ones included), with `id`, `kind` (the method), `roles` and `scopes` (sets of
//!   strings), `tenant` (optional) and `claims`: the claims the set names, each with its Cedar type,
//!   present only when the verified claim has that type;
//! - action `Portcullis::Action::"<METHOD>"`;
//! - resource `Portcullis::Route::"<route name>"` with `name`, `path` (the normalised request path) and
//!   `params`: the path parameters the routes requiring this set capture (each optional: a policy
//!   tests `resource.params has id` first);
//! - context: `ip` (the client as the trusted-proxy rules decided), `time` (a `datetime`, UTC), `hour`,
//!   `minute` and `weekday` (UTC; Monday is 1), `tls`, `tls_version` (optional), `client_cert` (a verified
//!   client certificate was presented), `auth` (the authentication method).
//!
//! A request is allowed when Cedar allows it. Cedar skips a policy whose evaluation fails; a skipped
//! `forbid` would let through what it was written to stop, so an evaluation error in a `forbid` denies
//! (and a failing `permit` simply does not permit). Each decision names the policy that made it.

use crate::exchange::{Params, Principal};
use cedar_policy as cedar;
use http::Method;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// `policies.NAME`: a Cedar policy set, from a file or inline.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A file of Cedar policies (read at load and at each reload).
    #[serde(default)]
    pub file: Option<String>,
    /// The policies, inline.
    #[serde(default)]
    pub cedar: Option<String>,
    /// Verified claims given to the policies as `principal.claims.NAME`, with their Cedar type.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimType>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum ClaimType {
    String,
    Long,
    Bool,
    #[serde(rename = "Set<String>")]
    SetOfString,
}

impl ClaimType {
    fn cedar(self) -> &'static str {
        match self {
            ClaimType::String => "String",
            ClaimType::Long => "Long",
            ClaimType::Bool => "Bool",
            ClaimType::SetOfString => "Set<String>",
        }
    }
}

/// What the routes requiring a set tell its schema and its lint.
#[derive(Debug, Default, Clone)]
pub struct Uses {
    /// Route names.
    pub routes: BTreeSet<String>,
    /// The path parameters their templates capture.
    pub params: BTreeSet<String>,
    /// The methods they serve.
    pub methods: BTreeSet<String>,
}

/// The methods every schema declares as actions (routes may add their own).
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

/// The most policies one set may hold (each decision scans them; each has its own counters).
const MAX_POLICIES: usize = 1000;

/// A compiled, validated policy set.
pub struct PolicySet {
    set: cedar::PolicySet,
    /// Each policy's Cedar id and the name decisions give it (its `@id` annotation, else the Cedar id),
    /// in source order.
    policies: Vec<(cedar::PolicyId, String, cedar::Effect)>,
    claims: Vec<(String, ClaimType)>,
    authorizer: cedar::Authorizer,
    principal_type: cedar::EntityTypeName,
    role_type: cedar::EntityTypeName,
    action_type: cedar::EntityTypeName,
    route_type: cedar::EntityTypeName,
    /// What the policies read of what costs to build: `context.time` (a datetime parsed from text),
    /// `context.ip`, membership in roles (entity parents, closed transitively per request). What no
    /// policy reads is left out of the request (the schema validated that none can read it).
    reads: Reads,
    /// Policies that can never apply (for `check`).
    pub never: Vec<String>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet").field("policies", &self.policies.len()).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Reads {
    time: bool,
    ip: bool,
    role_entities: bool,
}

impl Reads {
    /// From the policies' JSON form: an attribute read or tested is `"attr":"NAME"`, an entity type is
    /// written out in full.
    fn of(set: &cedar::PolicySet) -> Reads {
        let json = set.clone().to_json().map(|v| v.to_string()).unwrap_or_default();
        if json.is_empty() {
            return Reads { time: true, ip: true, role_entities: true };
        }
        Reads {
            time: json.contains(r#""attr":"time""#),
            ip: json.contains(r#""attr":"ip""#),
            role_entities: json.contains("Portcullis::Role"),
        }
    }
}

/// Facts of the request a policy may read beside the principal and the route.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub route: &'a str,
    pub path: &'a str,
    pub ip: IpAddr,
    pub now: SystemTime,
    pub tls_version: Option<&'a str>,
    pub tls: bool,
    pub client_cert: bool,
}

impl Default for Facts<'_> {
    fn default() -> Self {
        Facts {
            route: "",
            path: "/",
            ip: IpAddr::from([0, 0, 0, 0]),
            now: SystemTime::now(),
            tls_version: None,
            tls: false,
            client_cert: false,
        }
    }
}

/// A policy set's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied by this policy (index in source order).
    Forbidden(usize),
    /// No policy permits.
    NoPermit,
    /// A policy could not be evaluated and nothing permitted, or a `forbid` could not be evaluated.
    Error,
}

impl PolicySet {
    /// Reads, parses and validates the set `name` against the schema its uses imply.
    pub fn compile(name: &str, config: &PolicyConfig, uses: &Uses) -> Result<PolicySet, String> {
        let text = match (&config.file, &config.cedar) {
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| format!("policies.{name}.file `{path}` cannot be read: {}", e.kind()))?,
            (None, Some(text)) => text.clone(),
            _ => return Err(format!("policies.{name} needs exactly one of `file` or `cedar`")),
        };
        let set = cedar::PolicySet::from_str(&text).map_err(|e| format!("policies.{name}: {}", errors_of(&e)))?;
        if set.templates().next().is_some() {
            return Err(format!("policies.{name}: templates (`?principal`, `?resource`) are not supported"));
        }
        let mut policies: Vec<(cedar::PolicyId, String, cedar::Effect)> = set
            .policies()
            .map(|p| {
                let shown = p.annotation("id").map_or_else(|| p.id().to_string(), str::to_owned);
                (p.id().clone(), shown, p.effect())
            })
            .collect();
        if policies.is_empty() {
            return Err(format!("policies.{name} holds no policy (it would deny everything)"));
        }
        if policies.len() > MAX_POLICIES {
            return Err(format!("policies.{name} holds {} policies (at most {MAX_POLICIES})", policies.len()));
        }
        // Source order: Cedar numbers policies `policy0`, `policy1`, ... as it reads them.
        policies.sort_by_key(|(id, _, _)| id.to_string().strip_prefix("policy").and_then(|n| n.parse::<usize>().ok()));
        let mut seen = HashSet::new();
        for (_, shown, _) in &policies {
            if !seen.insert(shown.as_str()) {
                return Err(format!("policies.{name}: two policies are named `{shown}` (`@id`)"));
            }
            check_name(shown, &format!("policies.{name}: @id"))?;
        }
        for claim in config.claims.keys() {
            check_name(claim, &format!("policies.{name}.claims"))?;
        }
        let schema_text = schema(config, uses)?;
        let (schema, _) = cedar::Schema::from_cedarschema_str(&schema_text)
            .map_err(|e| format!("policies.{name}: the generated schema does not parse ({e})"))?;
        let result = cedar::Validator::new(schema).validate(&set, cedar::ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> =
                result.validation_errors().map(|e| format!("{}: {e}", shown_of(&policies, e.policy_id()))).collect();
            return Err(format!("policies.{name} does not validate: {}", errors.join("; ")));
        }
        let mut never: Vec<String> = result
            .validation_warnings()
            .filter(|w| matches!(w, cedar::ValidationWarning::ImpossiblePolicy(_)))
            .map(|w| format!("policies.{name}: policy `{}` can never apply ({w})", shown_of(&policies, w.policy_id())))
            .collect();
        never.extend(scope_lints(name, &set, &policies, uses));
        let ty = |t: &str| cedar::EntityTypeName::from_str(t).map_err(|e| e.to_string());
        let reads = Reads::of(&set);
        Ok(PolicySet {
            reads,
            set,
            policies,
            claims: config.claims.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            authorizer: cedar::Authorizer::new(),
            principal_type: ty("Portcullis::Principal")?,
            role_type: ty("Portcullis::Role")?,
            action_type: ty("Portcullis::Action")?,
            route_type: ty("Portcullis::Route")?,
            never,
        })
    }

    /// The names decisions give the policies, in source order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|(_, shown, _)| shown.as_str())
    }

    /// Asks the set whether `p`, with the roles named `roles`, may take `method` on the route.
    pub fn decide<'r>(
        &self,
        p: &Principal,
        roles: impl Iterator<Item = &'r str>,
        method: &Method,
        params: &Params,
        facts: &Facts<'_>,
    ) -> Verdict {
        match self.evaluate(p, roles, method, params, facts) {
            Ok(v) => v,
            Err(_) => Verdict::Error,
        }
    }

    fn evaluate<'r>(
        &self,
        p: &Principal,
        roles: impl Iterator<Item = &'r str>,
        method: &Method,
        params: &Params,
        facts: &Facts<'_>,
    ) -> Result<Verdict, String> {
        use cedar::RestrictedExpression as X;
        let uid = |ty: &cedar::EntityTypeName, id: &str| {
            cedar::EntityUid::from_type_name_and_id(ty.clone(), cedar::EntityId::new(id))
        };
        let kind = p.kind.as_str();
        let principal_uid = uid(&self.principal_type, &format!("{kind}:{}", p.id));
        let mut role_names = Vec::new();
        let mut parents = HashSet::new();
        for r in roles {
            if self.reads.role_entities {
                parents.insert(uid(&self.role_type, r));
            }
            role_names.push(X::new_string(r.to_owned()));
        }
        let mut attrs = std::collections::HashMap::new();
        attrs.insert("id".to_owned(), X::new_string(p.id.clone()));
        attrs.insert("kind".to_owned(), X::new_string(kind.to_owned()));
        attrs.insert("roles".to_owned(), X::new_set(role_names));
        attrs.insert("scopes".to_owned(), X::new_set(p.scopes.iter().map(|s| X::new_string(s.clone()))));
        if let Some(t) = &p.tenant {
            attrs.insert("tenant".to_owned(), X::new_string(t.clone()));
        }
        let mut claims = Vec::new();
        for (name, ty) in &self.claims {
            let Some(v) = p.claims.as_ref().and_then(|c| c.get(name)) else { continue };
            let value = match (ty, v) {
                (ClaimType::String, serde_json::Value::String(s)) => X::new_string(s.clone()),
                (ClaimType::Long, serde_json::Value::Number(n)) => match n.as_i64() {
                    Some(n) => X::new_long(n),
                    None => continue,
                },
                (ClaimType::Bool, serde_json::Value::Bool(b)) => X::new_bool(*b),
                (ClaimType::SetOfString, serde_json::Value::Array(items)) => {
                    let strings: Option<Vec<X>> =
                        items.iter().map(|i| i.as_str().map(|s| X::new_string(s.to_owned()))).collect();
                    match strings {
                        Some(s) => X::new_set(s),
                        None => continue,
                    }
                }
                _ => continue,
            };
            claims.push((name.clone(), value));
        }
        attrs.insert("claims".to_owned(), X::new_record(claims).map_err(|e| e.to_string())?);
        let principal = cedar::Entity::new(principal_uid.clone(), attrs, parents).map_err(|e| e.to_string())?;

        let route_uid = uid(&self.route_type, facts.route);
        // A parameter captured twice (never by one template) counts as absent.
        let mut captured: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for (n, v) in params.iter() {
            captured.entry(n).and_modify(|e| *e = None).or_insert(Some(v));
        }
        let params = captured.into_iter().filter_map(|(n, v)| Some((n.to_owned(), X::new_string(v?.to_owned()))));
        let route_attrs = std::collections::HashMap::from([
            ("name".to_owned(), X::new_string(facts.route.to_owned())),
            ("path".to_owned(), X::new_string(facts.path.to_owned())),
            ("params".to_owned(), X::new_record(params).map_err(|e| e.to_string())?),
        ]);
        let route = cedar::Entity::new(route_uid.clone(), route_attrs, HashSet::new()).map_err(|e| e.to_string())?;

        let context = self.context(facts, kind)?;
        let action = uid(&self.action_type, method.as_str());
        let request =
            cedar::Request::new(principal_uid, action, route_uid, context, None).map_err(|e| e.to_string())?;
        let entities = cedar::Entities::from_entities([principal, route], None).map_err(|e| e.to_string())?;
        let response = self.authorizer.is_authorized(&request, &self.set, &entities);
        let d = response.diagnostics();
        let failed_forbid = d.errors().any(|e| {
            let cedar::AuthorizationError::PolicyEvaluationError(e) = e;
            self.effect_of(e.policy_id()) != Some(cedar::Effect::Permit)
        });
        Ok(match response.decision() {
            cedar::Decision::Allow if failed_forbid => Verdict::Error,
            cedar::Decision::Allow => Verdict::Allow,
            cedar::Decision::Deny => {
                let first = d.reason().filter_map(|id| self.policies.iter().position(|(p, _, _)| p == id)).min();
                match first {
                    Some(i) => Verdict::Forbidden(i),
                    None if d.errors().next().is_some() => Verdict::Error,
                    None => Verdict::NoPermit,
                }
            }
        })
    }

    /// The request's context. Building one costs microseconds (Cedar parses the names of `ip` and
    /// `ipaddr` as it builds and evaluates the address), and a client's requests on one connection
    /// share it: each worker thread keeps the last one and its inputs, and reuses it while they match.
    fn context(&self, facts: &Facts<'_>, kind: &'static str) -> Result<cedar::Context, String> {
        use cedar::RestrictedExpression as X;
        let secs = facts.now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let key = ContextKey {
            ip: self.reads.ip.then(|| facts.ip.to_canonical()),
            // Without `time`, only the minute matters (hour, minute, weekday).
            at: if self.reads.time { secs } else { secs.div_euclid(60) * 60 },
            tls: facts.tls,
            tls_version: facts.tls_version.map(str::to_owned),
            client_cert: facts.client_cert,
            auth: kind,
        };
        let cached = LAST_CONTEXT.with(|c| c.borrow().as_ref().filter(|(k, _)| *k == key).map(|(_, ctx)| ctx.clone()));
        if let Some(ctx) = cached {
            return Ok(ctx);
        }
        let (time, hour, minute, weekday) = clock(UNIX_EPOCH + std::time::Duration::from_secs(key.at.max(0) as u64));
        let mut context = vec![
            ("hour".to_owned(), X::new_long(hour)),
            ("minute".to_owned(), X::new_long(minute)),
            ("weekday".to_owned(), X::new_long(weekday)),
            ("tls".to_owned(), X::new_bool(facts.tls)),
            ("client_cert".to_owned(), X::new_bool(facts.client_cert)),
            ("auth".to_owned(), X::new_string(kind.to_owned())),
        ];
        if let Some(v) = facts.tls_version {
            context.push(("tls_version".to_owned(), X::new_string(v.to_owned())));
        }
        if let Some(ip) = key.ip {
            // An IPv4 client on a dual-stack socket is that IPv4 address (Cedar does not read `::ffff:a.b.c.d`).
            context.push(("ip".to_owned(), X::new_ip(ip.to_string())));
        }
        if self.reads.time {
            context.push(("time".to_owned(), X::new_datetime(time)));
        }
        let ctx = cedar::Context::from_pairs(context).map_err(|e| e.to_string())?;
        LAST_CONTEXT.with(|c| *c.borrow_mut() = Some((key, ctx.clone())));
        Ok(ctx)
    }

    fn effect_of(&self, id: &cedar::PolicyId) -> Option<cedar::Effect> {
        self.policies.iter().find(|(p, _, _)| p == id).map(|(_, _, e)| *e)
    }
}

/// What a context is built from (see [`PolicySet::context`]).
#[derive(Debug, PartialEq, Eq)]
struct ContextKey {
    ip: Option<IpAddr>,
    at: i64,
    tls: bool,
    tls_version: Option<String>,
    client_cert: bool,
    auth: &'static str,
}

thread_local! {
    static LAST_CONTEXT: std::cell::RefCell<Option<(ContextKey, cedar::Context)>> = const { std::cell::RefCell::new(None) };
}

/// Cedar's parse errors, one line.
fn errors_of(e: &cedar::ParseErrors) -> String {
    e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn shown_of<'a>(policies: &'a [(cedar::PolicyId, String, cedar::Effect)], id: &cedar::PolicyId) -> &'a str {
    policies.iter().find(|(p, _, _)| p == id).map_or("?", |(_, s, _)| s.as_str())
}

/// Names written into the schema or the metrics: printable, no quotes or backslashes.
fn check_name(name: &str, at: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(format!("{at}: `{name}` must be 1 to 128 printable characters without quotes or backslashes"));
    }
    Ok(())
}

/// The Cedar schema of a set: what the gateway puts in every request (see the module doc).
fn schema(config: &PolicyConfig, uses: &Uses) -> Result<String, String> {
    let claims: Vec<String> = config.claims.iter().map(|(n, t)| format!("\"{n}\"?: {}", t.cedar())).collect();
    let mut params = Vec::new();
    for p in &uses.params {
        check_name(p, "path parameter")?;
        params.push(format!("\"{p}\"?: String"));
    }
    let mut actions: BTreeSet<String> = METHODS.iter().map(|m| (*m).to_owned()).collect();
    actions.extend(uses.methods.iter().cloned());
    let actions: Vec<String> = actions.iter().map(|m| format!("\"{m}\"")).collect();
    Ok(format!(
        "namespace Portcullis {{\n\
         entity Role;\n\
         entity Principal in [Role] = {{ \"id\": String, \"kind\": String, \"roles\": Set<String>, \
         \"scopes\": Set<String>, \"tenant\"?: String, \"claims\": {{ {} }} }};\n\
         entity Route = {{ \"name\": String, \"path\": String, \"params\": {{ {} }} }};\n\
         type Context = {{ \"ip\": ipaddr, \"time\": datetime, \"hour\": Long, \"minute\": Long, \"weekday\": Long, \
         \"tls\": Bool, \"tls_version\"?: String, \"client_cert\": Bool, \"auth\": String }};\n\
         action {} appliesTo {{ principal: [Principal], resource: [Route], context: Context }};\n\
         }}\n",
        claims.join(", "),
        params.join(", "),
        actions.join(", "),
    ))
}

/// Policies whose scope names an action no requiring route serves, or a route that does not require
/// the set: they can never apply.
fn scope_lints(
    name: &str,
    set: &cedar::PolicySet,
    policies: &[(cedar::PolicyId, String, cedar::Effect)],
    uses: &Uses,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in set.policies() {
        let shown = shown_of(policies, p.id());
        let actions: Vec<cedar::EntityUid> = match p.action_constraint() {
            cedar::ActionConstraint::Any => Vec::new(),
            cedar::ActionConstraint::Eq(a) => vec![a],
            cedar::ActionConstraint::In(list) => list,
        };
        if !actions.is_empty() && actions.iter().all(|a| !uses.methods.contains(a.id().unescaped())) {
            out.push(format!(
                "policies.{name}: policy `{shown}` names only methods that no route requiring the set serves"
            ));
        }
        let resource = match p.resource_constraint() {
            cedar::ResourceConstraint::Eq(r) | cedar::ResourceConstraint::In(r) => Some(r),
            cedar::ResourceConstraint::IsIn(_, r) => Some(r),
            _ => None,
        };
        if let Some(r) = resource {
            if r.type_name().to_string() == "Portcullis::Route" && !uses.routes.contains(r.id().unescaped()) {
                out.push(format!(
                    "policies.{name}: policy `{shown}` names route `{}`, which does not require the set",
                    r.id().unescaped()
                ));
            }
        }
    }
    out
}

/// The time as a Cedar datetime (UTC, seconds), with its hour, minute and ISO weekday (Monday 1).
fn clock(now: SystemTime) -> (String, i64, i64, i64) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = crate::units::civil_from_days(days);
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let weekday = (days + 3).rem_euclid(7) + 1;
    (format!("{y:04}-{m:02}-{d:02}T{hour:02}:{minute:02}:{second:02}Z"), hour, minute, weekday)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn clock_is_utc_civil_time() {
        let at = |s: u64| clock(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), ("1970-01-01T00:00:00Z".into(), 0, 0, 4));
        // 2026-11-30 is a Monday.
        assert_eq!(at(1_795_996_800 + 3600 * 10 + 60 * 5 + 7).0, "2026-11-30T10:05:07Z");
        assert_eq!(at(1_795_996_800 + 3600 * 10).3, 1);
        assert_eq!(at(951_782_400).0, "2000-02-29T00:00:00Z");
        assert_eq!(at(4_107_542_399).0, "2100-02-28T23:59:59Z");
    }
}
