//! The config audit's rules: each has an id, a default severity and a documented fix (`docs/scan.md`).
//! A rule reads the typed config (what the gateway will really do, defaults included) and names the
//! setting it is about by its key path; [`Ctx::finding`] turns the path into `file:line:column`.

pub mod access;
pub mod credentials;
pub mod shadow;
pub mod transport;

pub use transport::loopback as transport_loopback;

use super::position::{show, Positions};
use crate::config::file::{FileConfig, Route};
use crate::scan::finding::{Finding, Location, Rule, Severity};
use std::time::Duration;

macro_rules! rule {
    ($name:ident, $id:literal, $sev:ident, $title:literal, $help:literal) => {
        pub const $name: Rule = Rule { id: $id, name: $title, severity: Severity::$sev, help: $help };
    };
}

rule!(PERMISSIVE_AUTHZ, "PC-AUTHZ-001", Medium, "Authenticated route with a permissive authorize",
    "Give the route an `authorize:` with the roles or scopes it needs (or an owner/tenant rule); `authenticated` or no `authorize` lets any principal of the authenticators in.");
rule!(ADMIN_LOW_ROLES, "PC-AUTHZ-002", High, "Admin route reachable with low roles",
    "Require a top role (one no other role includes, such as `admin`) in the route's `authorize.roles`, for every method.");
rule!(KEY_ALONE, "PC-AUTHZ-003", High, "Sensitive or admin/internal/debug route reachable with an API key alone",
    "Use `auth: { all_of: [api-key, jwt] }` or a stronger authenticator (JWT, mTLS, signatures) on the route, and mark it `sensitive: true`.");
rule!(LOGIN_NO_LIMIT, "PC-LIMIT-001", Medium, "Authentication or login route without a rate limit",
    "Apply a rate limit keyed on the client address (`rate_limits: [login]` with a `rate_limits.login: { rate: 10/m }`) so credentials cannot be guessed at line speed.");
rule!(JWT_NO_AUDIENCE, "PC-JWT-001", High, "JWT issuer without an audience",
    "List this API's audience in `audiences`: without it a token the issuer minted for any other service is accepted here.");
rule!(JWT_LONG_AGE, "PC-JWT-002", Medium, "JWTs with a long or unbounded lifetime",
    "Set `max_lifetime` (exp - iat) and `max_token_age` (now - iat) to at most a day (an hour is usual for access tokens).");
rule!(
    INTROSPECTION_NO_AUDIENCE,
    "PC-INTRO-001",
    High,
    "Token introspection without audiences",
    "List this API's audience in `audiences` so an active token issued for another resource server is refused."
);
rule!(KEY_NO_EXPIRY, "PC-KEY-001", Medium, "API keys without expiry",
    "Give keys an `expires_at` (or the authenticator a `max_age`), and create them with `portcullis keys create --expires-in`.");
rule!(
    KEY_OLD,
    "PC-KEY-002",
    Medium,
    "API keys older than the age policy",
    "Rotate the key (`portcullis keys rotate ID`) and set the authenticator's `max_age` to the policy age."
);
rule!(
    KEY_STORE_UNREAD,
    "PC-KEY-003",
    Info,
    "API key store not audited",
    "Run the scan where the SQLite key store is readable (PostgreSQL stores are not read by the scan)."
);
rule!(CORS_OPEN, "PC-CORS-001", High, "CORS open to any or untrusted origins with credentials",
    "List the exact https origins of your front ends in `allow_origins`; never `*` or `null`, and `allow_credentials` only for origins you control over https.");
rule!(TLS_WEAK, "PC-TLS-001", Medium, "TLS settings below the defaults",
    "Keep `hsts: true` with `hsts_max_age` of at least 365d, and use a certificate from a CA (not `self_signed`) off loopback.");
rule!(TRUSTED_PROXIES_WIDE, "PC-NET-001", High, "trusted_proxies wider than private ranges",
    "List only your load balancers' addresses or private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7): any client in a wider range can forge X-Forwarded-For.");
rule!(INSPECT_DETECT, "PC-INSPECT-001", Medium, "Inspection in detect mode on a public write route",
    "Set `inspect.mode: block` on routes that take writes without authentication; `detect` only logs the attack and lets it through.");
rule!(
    PLAIN_UPSTREAM,
    "PC-UPSTREAM-001",
    Medium,
    "Upstream over plain HTTP outside loopback",
    "Give the upstream a `tls: { ca: ... }` section, or keep plain HTTP to targets on loopback."
);
rule!(INLINE_SECRET, "PC-SECRET-001", High, "Secret written inline",
    "Write the secret as `${env:NAME}`, `${file:/path}`, `${enc:v1:...}` (`portcullis secrets encrypt`) or `${store:NAME}`, never its value.");
rule!(ROUTE_SHADOW, "PC-ROUTE-001", Medium, "A weaker route shadows part of a stronger one",
    "Give the more specific route the same authentication, authorization and limits as the route it carves its paths out of, or narrow its match.");
rule!(HEADERS_REMOVED, "PC-HDR-001", Medium, "Security headers removed by an override",
    "Remove the `off` from `respond.security_headers` (or give a value); the defaults are nosniff, a strict CSP, no-referrer and no-store.");
rule!(PLAIN_REDIRECT, "PC-HTTP-001", Low, "Plain-HTTP listener redirects rather than refuses",
    "Set `plain_http: refuse` (HSTS preloading covers browsers): a redirect invites clients to send their first request, and its path and query, in the clear.");
rule!(
    PLAIN_LISTENER,
    "PC-HTTP-002",
    High,
    "Plain-HTTP listener serves routes outside loopback",
    "Give the listener a `tls:` section, or `plain_http: refuse`, or bind it to loopback behind a TLS terminator."
);

/// Every rule the audit knows, in the order of the docs.
pub const RULES: &[Rule] = &[
    PERMISSIVE_AUTHZ,
    ADMIN_LOW_ROLES,
    KEY_ALONE,
    LOGIN_NO_LIMIT,
    JWT_NO_AUDIENCE,
    JWT_LONG_AGE,
    INTROSPECTION_NO_AUDIENCE,
    KEY_NO_EXPIRY,
    KEY_OLD,
    KEY_STORE_UNREAD,
    CORS_OPEN,
    TLS_WEAK,
    TRUSTED_PROXIES_WIDE,
    INSPECT_DETECT,
    PLAIN_UPSTREAM,
    INLINE_SECRET,
    ROUTE_SHADOW,
    HEADERS_REMOVED,
    PLAIN_REDIRECT,
    PLAIN_LISTENER,
    super::suppress::NO_REASON,
    super::suppress::UNUSED,
];

/// What the rules read, and where their findings go.
pub struct Ctx<'a> {
    pub cfg: &'a FileConfig,
    pub positions: &'a Positions,
    /// The config file's name as the report shows it.
    pub file: &'a str,
    /// Keys in a store older than this are findings (`--store-age-policy`).
    pub age_policy: Duration,
    /// Now, in Unix seconds (a parameter so tests are deterministic).
    pub now: i64,
    pub findings: Vec<Finding>,
}

impl Ctx<'_> {
    /// A finding of `rule` at the setting `path`.
    pub fn report(
        &mut self,
        rule: &Rule,
        path: &[String],
        title: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Finding {
        let (line, column) = self.positions.locate(path);
        let message = format!("{}: {}", show(path), message.into());
        let f = Finding::new(rule, title, message).at(Location { file: self.file.to_owned(), line, column });
        self.findings.push(f);
        let last = self.findings.len() - 1;
        &mut self.findings[last]
    }

    /// The route at `i` with its path.
    pub fn routes(&self) -> impl Iterator<Item = (usize, &Route)> {
        self.cfg.routes.iter().enumerate()
    }
}

/// Runs every rule.
pub fn check(ctx: &mut Ctx<'_>) {
    access::check(ctx);
    credentials::check(ctx);
    transport::check(ctx);
    shadow::check(ctx);
}

/// The path segments of a route's match, lower case, parameters as `{}`.
pub fn segments(route: &Route) -> Vec<String> {
    let p = &route.matcher.path;
    let text = p.exact.as_deref().or(p.prefix.as_deref()).or(p.template.as_deref()).unwrap_or_default();
    text.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| if s.starts_with('{') { "{}".into() } else { s.to_ascii_lowercase() })
        .collect()
}

/// The route's match as written, for messages.
pub fn path_text(route: &Route) -> &str {
    let p = &route.matcher.path;
    p.exact.as_deref().or(p.prefix.as_deref()).or(p.template.as_deref()).unwrap_or_default()
}

/// A route that takes writes: it lists POST, PUT, PATCH or DELETE, or lists no methods (the standard
/// ones, writes included).
pub fn takes_writes(route: &Route) -> bool {
    let methods = &route.matcher.methods;
    methods.is_empty()
        || methods.iter().any(|m| matches!(m.to_ascii_uppercase().as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
}

/// A route whose path names an administrative, internal or debugging area.
pub fn privileged_segment(route: &Route) -> Option<String> {
    segments(route).into_iter().find(|s| {
        let s = s.trim_start_matches('_');
        ["admin", "internal", "debug"]
            .iter()
            .any(|w| s == *w || s.starts_with(&format!("{w}-")) || s.starts_with(&format!("{w}_")))
            || s == "actuator"
    })
}

#[cfg(test)]
mod tests;
