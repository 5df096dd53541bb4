//! Overlapping routes: a more specific route wins its requests (exact > template > longer prefix, exact
//! host > wildcard > any), so a route inside another's path space carves a hole in it. When the hole
//! is less protected (weaker authentication, no authorization, no rate limit), part of the stronger
//! route's space is reachable through the weaker one.
//!
//! Decided with the gateway's own route table (`crate::route`): for each route, sample requests it
//! matches (its path with parameters filled, a path below a prefix, each of its hosts and methods) are
//! looked up in the table without it; the route that would have answered them is the one it shadows.

use super::{path_text, Ctx, ROUTE_SHADOW};
use crate::authn::AuthConfig;
use crate::authz::AuthorizeConfig;
use crate::config::file::{FileConfig, PathMatch, Route, TrailingSlash};
use crate::exchange::Params;
use crate::route::{Found, HostPattern, Matcher, PathOptions, PathPattern, RouteTable, Segment};
use crate::scan_path;
use http::Method;

/// The route's matcher as the gateway compiles it; `None` when it would not compile (`check` says why).
fn matcher(r: &Route) -> Option<Matcher> {
    let hosts = r.matcher.hosts.iter().map(|h| HostPattern::parse(h).ok()).collect::<Option<Vec<_>>>()?;
    let path = match &r.matcher.path {
        PathMatch { exact: Some(p), prefix: None, template: None } => PathPattern::exact(p).ok()?,
        PathMatch { exact: None, prefix: Some(p), template: None } => PathPattern::prefix(p).ok()?,
        PathMatch { exact: None, prefix: None, template: Some(p) } => PathPattern::template(p).ok()?,
        _ => return None,
    };
    let methods =
        r.matcher.methods.iter().map(|m| Method::from_bytes(m.as_bytes()).ok()).collect::<Option<Vec<_>>>()?;
    let options = PathOptions {
        case_sensitive: r.matcher.case_sensitive,
        strict_trailing_slash: r.matcher.trailing_slash == TrailingSlash::Strict,
    };
    Some(Matcher { hosts, path, methods, options })
}

/// Requests the matcher takes: (host, path).
fn samples(m: &Matcher) -> Vec<(Option<String>, String)> {
    let paths = match &m.path {
        PathPattern::Exact(p) => vec![p.clone()],
        PathPattern::Prefix(p) => vec![p.clone(), format!("{}/portcullis-scan-probe", p.trim_end_matches('/'))],
        PathPattern::Template(segments) => {
            let mut p = String::new();
            for s in segments {
                p.push('/');
                match s {
                    Segment::Literal(l) => p.push_str(l),
                    Segment::Param(_) => p.push('1'),
                }
            }
            vec![if p.is_empty() { "/".into() } else { p }]
        }
    };
    let hosts: Vec<Option<String>> = if m.hosts.is_empty() {
        vec![None]
    } else {
        m.hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(e) => Some(e.clone()),
                HostPattern::Suffix(s) => Some(format!("portcullis-scan-probe{s}")),
            })
            .collect()
    };
    hosts.iter().flat_map(|h| paths.iter().map(move |p| (h.clone(), p.clone()))).collect()
}

/// How strongly a route is protected: (authentication, authorization, rate limited).
fn strength(cfg: &FileConfig, r: &Route) -> (u8, u8, u8) {
    let level = |name: &String| match cfg.authenticators.get(name) {
        Some(a) if a.api_key.is_some() => 1,
        Some(_) => 2,
        None => 1,
    };
    let auth = match &r.auth {
        AuthConfig::None => 0,
        AuthConfig::AnyOf(names) => names.iter().map(level).min().unwrap_or(0),
        AuthConfig::AllOf(names) => names.iter().map(level).max().unwrap_or(0) + u8::from(names.len() > 1),
    };
    let authz = u8::from(matches!(r.authorize, Some(AuthorizeConfig::Rule(_))));
    (auth, authz, u8::from(!r.rate_limits.is_empty()))
}

pub fn check(ctx: &mut Ctx<'_>) {
    let cfg = ctx.cfg;
    let matchers: Vec<Option<Matcher>> = cfg.routes.iter().map(matcher).collect();
    let mut params = Params::default();
    for (a, ma) in matchers.iter().enumerate() {
        let Some(ma) = ma else { continue };
        let others = RouteTable::new(
            matchers
                .iter()
                .enumerate()
                .filter(|(i, m)| *i != a && m.is_some())
                .filter_map(|(i, m)| Some((m.clone()?, i)))
                .collect(),
        );
        let mut shadowed: Vec<usize> = Vec::new();
        for (host, path) in samples(ma) {
            for method in ma.allowed().to_vec() {
                if let Found::Route(&b) = others.find(host.as_deref(), &path, &method, &mut params) {
                    if !shadowed.contains(&b) {
                        shadowed.push(b);
                    }
                }
            }
        }
        let sa = strength(cfg, &cfg.routes[a]);
        for b in shadowed {
            let sb = strength(cfg, &cfg.routes[b]);
            let mut weaker = Vec::new();
            if sa.0 < sb.0 {
                weaker.push("authentication");
            }
            if sa.1 < sb.1 {
                weaker.push("authorization");
            }
            if sa.2 < sb.2 {
                weaker.push("rate limit");
            }
            if weaker.is_empty() {
                continue;
            }
            let (ra, rb) = (&cfg.routes[a], &cfg.routes[b]);
            ctx.report(
                &ROUTE_SHADOW,
                &scan_path!["routes", a, "match"],
                format!("route `{}` shadows part of route `{}`", ra.name, rb.name),
                format!(
                    "`{}` takes requests inside `{}`'s `{}` with weaker {}",
                    path_text(ra),
                    rb.name,
                    path_text(rb),
                    weaker.join(", ")
                ),
            );
        }
    }
}
