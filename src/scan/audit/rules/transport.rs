//! The wire and the edge: listeners (TLS, plain HTTP), trusted proxies, upstreams over plain HTTP,
//! CORS, security headers after overrides, and inspection left in `detect` on public writes.

use super::{
    takes_writes, Ctx, CORS_OPEN, HEADERS_REMOVED, INSPECT_DETECT, PLAIN_LISTENER, PLAIN_REDIRECT, PLAIN_UPSTREAM,
    TLS_WEAK, TRUSTED_PROXIES_WIDE,
};
use crate::authn::AuthConfig;
use crate::config::file::PlainHttp;
use crate::inspect::{Mode, RouteInspect};
use crate::respond::protect::{SecurityHeadersConfig, Setting};
use crate::scan::finding::Severity;
use crate::scan_path;
use std::net::IpAddr;
use std::time::Duration;

const HSTS_DEFAULT: Duration = Duration::from_secs(365 * 86_400);

pub fn check(ctx: &mut Ctx<'_>) {
    listeners(ctx);
    proxies(ctx);
    upstreams(ctx);
    routes(ctx);
}

/// `127.0.0.1:80`, `[::1]:80`, `localhost:80`: whether the host part is loopback.
pub fn loopback(address: &str) -> bool {
    let host =
        address
            .rsplit_once(':')
            .map_or(address, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { address });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost"),
    }
}

fn listeners(ctx: &mut Ctx<'_>) {
    for (i, l) in ctx.cfg.listeners.clone().iter().enumerate() {
        let Some(tls) = &l.tls else {
            let redirect = l.plain_http == Some(PlainHttp::Redirect)
                || (l.plain_http.is_none() && l.redirect_https_port.is_some());
            let refuse = l.plain_http == Some(PlainHttp::Refuse);
            if redirect {
                let at = if l.plain_http.is_some() { "plain_http" } else { "redirect_https_port" };
                ctx.report(
                    &PLAIN_REDIRECT,
                    &scan_path!["listeners", i, at],
                    format!("listener `{}` redirects plain HTTP", l.name),
                    "requests arrive in the clear before they are redirected (credentials are refused with 403)",
                );
            } else if !refuse && !loopback(&l.address) {
                ctx.report(
                    &PLAIN_LISTENER,
                    &scan_path!["listeners", i, "address"],
                    format!("listener `{}` serves plain HTTP on {}", l.name, l.address),
                    "routes, credentials and answers cross the network unencrypted",
                );
            }
            continue;
        };
        if !tls.hsts {
            ctx.report(
                &TLS_WEAK,
                &scan_path!["listeners", i, "tls", "hsts"],
                format!("listener `{}` sends no HSTS", l.name),
                "browsers may be downgraded to plain HTTP",
            );
        } else if tls.hsts_max_age.0 < HSTS_DEFAULT {
            ctx.report(
                &TLS_WEAK,
                &scan_path!["listeners", i, "tls", "hsts_max_age"],
                format!("listener `{}` has a short HSTS max-age", l.name),
                format!("{}s, below the default of a year", tls.hsts_max_age.0.as_secs()),
            )
            .severity = Severity::Low;
        }
        if !loopback(&l.address) {
            for (j, c) in tls.certificates.iter().enumerate() {
                if c.self_signed.is_some() {
                    ctx.report(
                        &TLS_WEAK,
                        &scan_path!["listeners", i, "tls", "certificates", j, "self_signed"],
                        format!("listener `{}` uses a self-signed certificate off loopback", l.name),
                        "clients cannot authenticate the gateway and learn to click through warnings",
                    );
                }
            }
        }
    }
}

const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "100.64.0.0/10",
    "fc00::/7",
    "::1/128",
    "fe80::/10",
    "169.254.0.0/16",
];

fn proxies(ctx: &mut Ctx<'_>) {
    let private: Vec<ipnet::IpNet> = PRIVATE.iter().filter_map(|p| p.parse().ok()).collect();
    for (i, p) in ctx.cfg.trusted_proxies.clone().iter().enumerate() {
        let net = p.parse::<ipnet::IpNet>().ok().or_else(|| p.parse::<IpAddr>().ok().map(ipnet::IpNet::from));
        let Some(net) = net else { continue };
        if !private.iter().any(|r| r.contains(&net)) {
            let f = ctx.report(
                &TRUSTED_PROXIES_WIDE,
                &scan_path!["trusted_proxies", i],
                format!("trusted proxy range {p} is not private"),
                "any host in it can set the client address the gateway believes (bans, limits, allow lists, logs)",
            );
            if net.prefix_len() == 0 {
                f.severity = Severity::Critical;
            }
        }
    }
}

fn upstreams(ctx: &mut Ctx<'_>) {
    for (name, u) in ctx.cfg.upstreams.clone() {
        if u.tls.is_some() {
            continue;
        }
        for (j, t) in u.targets.iter().enumerate() {
            if !loopback(&t.address) {
                ctx.report(
                    &PLAIN_UPSTREAM,
                    &scan_path!["upstreams", name, "targets", j, "address"],
                    format!("upstream `{name}` is plain HTTP to {}", t.address),
                    "requests, forwarded identities and answers cross the network unencrypted",
                );
            }
        }
    }
}

fn routes(ctx: &mut Ctx<'_>) {
    let top_headers = ctx.cfg.respond.as_ref().and_then(|r| r.security_headers.clone()).unwrap_or_default();
    for (h, s) in headers(&top_headers) {
        if *s == Setting::Off {
            ctx.report(
                &HEADERS_REMOVED,
                &scan_path!["respond", "security_headers", h],
                format!("`{h}` is off for every route"),
                "the gateway's default header is not sent",
            );
        }
    }
    for (i, route) in ctx.cfg.routes.clone().iter().enumerate() {
        if let Some(c) = &route.cors {
            cors(ctx, i, &route.name, c);
        }
        let own = route.respond.as_ref().and_then(|r| r.security_headers.clone()).unwrap_or_default();
        for (h, s) in headers(&own) {
            if *s == Setting::Off {
                ctx.report(
                    &HEADERS_REMOVED,
                    &scan_path!["routes", i, "respond", "security_headers", h],
                    format!("route `{}` removes `{h}`", route.name),
                    "the per-route override turns the default header off",
                );
            }
        }
        let (inspect, at) = match &route.inspect {
            Some(RouteInspect::Off) => (None, scan_path!["routes", i, "inspect"]),
            Some(RouteInspect::On(c)) => (Some(c.clone()), scan_path!["routes", i, "inspect", "mode"]),
            None => (ctx.cfg.inspect.clone(), scan_path!["inspect", "mode"]),
        };
        if inspect.is_some_and(|c| c.mode == Mode::Detect) && route.auth == AuthConfig::None && takes_writes(route) {
            ctx.report(
                &INSPECT_DETECT,
                &at,
                format!("public write route `{}` only detects attacks", route.name),
                format!("route `{}` takes unauthenticated writes and its inspection is in `detect` mode", route.name),
            );
        }
    }
}

fn headers(h: &SecurityHeadersConfig) -> [(&'static str, &Setting); 4] {
    [
        ("x_content_type_options", &h.x_content_type_options),
        ("content_security_policy", &h.content_security_policy),
        ("referrer_policy", &h.referrer_policy),
        ("cache_control", &h.cache_control),
    ]
}

fn cors(ctx: &mut Ctx<'_>, i: usize, name: &str, c: &crate::respond::cors::CorsConfig) {
    for (j, o) in c.allow_origins.iter().enumerate() {
        let at = scan_path!["routes", i, "cors", "allow_origins", j];
        let (severity, why) = match (o.as_str(), c.allow_credentials) {
            ("*", true) => (Severity::Critical, "any site may read answers with the user's credentials"),
            ("*", false) => (Severity::Low, "any site may read the answers"),
            ("null", true) => (
                Severity::High,
                "`null` is the origin of sandboxed frames and files: any site can send it, with credentials",
            ),
            ("null", false) => {
                (Severity::Medium, "`null` is the origin of sandboxed frames and files: any site can send it")
            }
            (o, true) if o.starts_with("http://") && !loopback(o.trim_start_matches("http://")) => {
                (Severity::Medium, "a plain-HTTP origin with credentials: a network attacker can act as it")
            }
            _ => continue,
        };
        ctx.report(&CORS_OPEN, &at, format!("route `{name}` allows CORS from `{o}`"), why).severity = severity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        for a in ["127.0.0.1:80", "[::1]:8080", "localhost:9", "127.9.9.9", "api.localhost:1"] {
            assert!(loopback(a), "{a}");
        }
        for a in ["10.0.0.1:80", "[2001:db8::1]:443", "api.example.com:80", "0.0.0.0:8080"] {
            assert!(!loopback(a), "{a}");
        }
    }
}
