//! Who may reach a route: permissive `authorize`, admin routes open to low roles, API keys alone on
//! sensitive routes, and login routes without a rate limit.

use super::{privileged_segment, segments, Ctx, ADMIN_LOW_ROLES, KEY_ALONE, LOGIN_NO_LIMIT, PERMISSIVE_AUTHZ};
use crate::authn::AuthConfig;
use crate::authz::{AuthorizeConfig, RuleConfig};
use crate::config::file::FileConfig;
use crate::scan::finding::Severity;
use crate::scan_path;
use std::collections::BTreeSet;

pub fn check(ctx: &mut Ctx<'_>) {
    let low = low_roles(ctx.cfg);
    for (i, route) in ctx.cfg.routes.clone().iter().enumerate() {
        let authenticated = route.auth != AuthConfig::None;
        let privileged = privileged_segment(route);
        let verdict = route
            .authorize
            .as_ref()
            .map_or(Verdict::Low("no `authorize`: any authenticated principal".into()), |a| verdict(a, &low));
        match (&privileged, authenticated, &verdict) {
            (Some(seg), false, _) => {
                ctx.report(
                    &ADMIN_LOW_ROLES,
                    &scan_path!["routes", i, "auth"],
                    format!("`{seg}` route `{}` needs no authentication", route.name),
                    "an administrative, internal or debugging route is public",
                )
                .severity = Severity::Critical;
            }
            (Some(seg), true, Verdict::Low(why)) => {
                let at = if route.authorize.is_some() { "authorize" } else { "auth" };
                ctx.report(
                    &ADMIN_LOW_ROLES,
                    &scan_path!["routes", i, at],
                    format!("`{seg}` route `{}` is reachable with low roles", route.name),
                    why.clone(),
                );
            }
            (None, true, _) => {
                let Some(why) = permissive(route.authorize.as_ref()) else {
                    check_rest(ctx, i, route, privileged);
                    continue;
                };
                let at = if route.authorize.is_some() { "authorize" } else { "auth" };
                ctx.report(
                    &PERMISSIVE_AUTHZ,
                    &scan_path!["routes", i, at],
                    format!("route `{}` authenticates but authorizes anyone", route.name),
                    why,
                );
            }
            _ => {}
        }
        check_rest(ctx, i, route, privileged);
    }
}

fn check_rest(ctx: &mut Ctx<'_>, i: usize, route: &crate::config::file::Route, privileged: Option<String>) {
    {
        if let Some(reason) = key_alone(ctx.cfg, &route.auth).filter(|_| route.sensitive || privileged.is_some()) {
            let what = if route.sensitive {
                "sensitive".to_owned()
            } else {
                format!("`{}`", privileged.clone().unwrap_or_default())
            };
            ctx.report(
                &KEY_ALONE,
                &scan_path!["routes", i, "auth"],
                format!("{what} route `{}` accepts an API key alone", route.name),
                reason,
            );
        }
        if is_login(&segments(route), &route.name) && route.rate_limits.is_empty() {
            ctx.report(
                &LOGIN_NO_LIMIT,
                &scan_path!["routes", i, "match"],
                format!("login route `{}` has no rate limit", route.name),
                "credential guessing on an authentication route is limited only by the connection limits",
            );
        }
    }
}

/// Why an `authorize` lets any authenticated principal in, if it does: none at all, `authenticated`,
/// or an `any_of` branch or a method that says `authenticated`.
pub fn permissive(a: Option<&AuthorizeConfig>) -> Option<String> {
    let Some(a) = a else { return Some("no `authorize`: any authenticated principal".into()) };
    let AuthorizeConfig::Rule(r) = a else {
        return Some("`authorize: authenticated` lets any authenticated principal in".into());
    };
    if let Some(why) = r.any_of.iter().flatten().find_map(|b| permissive(Some(b))) {
        return Some(format!("an `any_of` branch: {why}"));
    }
    r.methods.iter().flatten().find_map(|(m, b)| permissive(Some(b)).map(|why| format!("{m}: {why}")))
}

/// Whether an `authorize` can be met by a low role (or by anyone authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Yes: why.
    Low(String),
    /// Only top roles meet it.
    High,
    /// It does not turn on roles (scopes, owner, tenant, policy): the audit cannot tell.
    Unknown,
}

/// Roles included by another role: those are not the top of the hierarchy.
pub fn low_roles(cfg: &FileConfig) -> BTreeSet<String> {
    let mut low = BTreeSet::new();
    let mut stack: Vec<&String> = cfg.roles.values().flat_map(|r| r.includes.iter()).collect();
    while let Some(name) = stack.pop() {
        if low.insert(name.clone()) {
            if let Some(r) = cfg.roles.get(name) {
                stack.extend(r.includes.iter());
            }
        }
    }
    low
}

pub fn verdict(a: &AuthorizeConfig, low: &BTreeSet<String>) -> Verdict {
    let AuthorizeConfig::Rule(r) = a else {
        return Verdict::Low("`authorize: authenticated` lets any authenticated principal in".into());
    };
    let base = rule_verdict(r, low);
    let by_method = r.methods.iter().flatten().find_map(|(m, a)| match verdict(a, low) {
        Verdict::Low(why) => Some(Verdict::Low(format!("{m}: {why}"))),
        _ => None,
    });
    by_method.unwrap_or(base)
}

fn rule_verdict(r: &RuleConfig, low: &BTreeSet<String>) -> Verdict {
    let mut out = Verdict::Unknown;
    if let Some(roles) = &r.roles {
        out = match roles.iter().find(|role| low.contains(*role)) {
            Some(role) => Verdict::Low(format!("role `{role}` is included by a higher role")),
            None if roles.is_empty() => Verdict::Low("an empty `roles` list".into()),
            None => Verdict::High,
        };
    }
    if let Some(branches) = &r.any_of {
        if let Some(v) = branches.iter().map(|b| verdict(b, low)).find(|v| matches!(v, Verdict::Low(_))) {
            return v;
        }
    }
    if let Some(branches) = &r.all_of {
        let vs: Vec<Verdict> = branches.iter().map(|b| verdict(b, low)).collect();
        if vs.contains(&Verdict::High) {
            return Verdict::High;
        }
    }
    out
}

/// Why an API key alone satisfies `auth`, if it does.
pub fn key_alone(cfg: &FileConfig, auth: &AuthConfig) -> Option<String> {
    let is_key = |name: &String| cfg.authenticators.get(name).is_some_and(|a| a.api_key.is_some());
    match auth {
        AuthConfig::None => None,
        AuthConfig::AnyOf(names) => {
            names.iter().find(|n| is_key(n)).map(|n| format!("`{n}` (an API key authenticator) is enough"))
        }
        AuthConfig::AllOf(names) => {
            names.iter().all(is_key).then(|| "every authenticator of `all_of` is an API key".to_owned())
        }
    }
}

const LOGIN_WORDS: &[&str] = &[
    "login",
    "logon",
    "signin",
    "sign-in",
    "sign_in",
    "auth",
    "authenticate",
    "oauth",
    "oauth2",
    "token",
    "tokens",
    "session",
    "sessions",
    "password",
    "passwords",
    "signup",
    "sign-up",
    "register",
    "otp",
    "mfa",
    "2fa",
    "sso",
    "saml",
    "openid",
    "openid-connect",
];

/// A route that takes credentials: one of its path segments (or its name) is a login word.
pub fn is_login(segments: &[String], name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    segments.iter().any(|s| LOGIN_WORDS.contains(&s.as_str()) || s.contains("login") || s.contains("password"))
        || name.contains("login")
        || name.contains("signin")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cfg(roles: &str) -> FileConfig {
        serde_yaml_ng::from_str(&format!("listeners: []\nroutes: []\nroles: {roles}\n")).unwrap()
    }

    #[test]
    fn low_roles_are_the_included_ones() {
        let c = cfg("{ reader: {}, editor: { includes: [reader] }, admin: { includes: [editor] }, ops: {} }");
        let low = low_roles(&c);
        assert_eq!(low.into_iter().collect::<Vec<_>>(), ["editor", "reader"]);
    }

    #[test]
    fn verdicts() {
        let low: BTreeSet<String> = ["reader".to_owned()].into();
        let parse = |t: &str| serde_yaml_ng::from_str::<AuthorizeConfig>(t).unwrap();
        assert!(matches!(verdict(&parse("authenticated"), &low), Verdict::Low(_)));
        assert_eq!(verdict(&parse("{ roles: [admin] }"), &low), Verdict::High);
        assert!(
            matches!(verdict(&parse("{ roles: [admin], methods: { GET: { roles: [reader] } } }"), &low), Verdict::Low(w) if w.starts_with("GET"))
        );
        assert!(matches!(
            verdict(&parse("{ any_of: [{ roles: [admin] }, { roles: [reader] }] }"), &low),
            Verdict::Low(_)
        ));
        assert_eq!(verdict(&parse("{ scopes: { all_of: [x] } }"), &low), Verdict::Unknown);
    }

    #[test]
    fn login_words() {
        assert!(is_login(&["api".into(), "login".into()], "x"));
        assert!(is_login(&["oauth".into(), "token".into()], "x"));
        assert!(is_login(&["reset-password".into()], "x"));
        assert!(!is_login(&["authors".into()], "books"));
    }
}
