//! Rate limits through the real gateway, with the in-memory store: bursts and refusals with their
//! headers, accuracy at twice the rate (by counts), keys (client IP with IPv6 by prefix, header,
//! principal, tiers by role), limits that run before authentication, reloads that keep the state, and
//! config mistakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);
const SECRET: &str = "limits-test-server-secret-0123456789abcdef";

fn config(up: std::net::SocketAddr, limits: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
trusted_proxies: [127.0.0.1/32]
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  sso:
    jwt:
      issuer: https://idp.test
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {SECRET}
      roles_claim: roles
roles:
  pro: {{}}
rate_limits:
{limits}
routes:
{routes}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

fn route(name: &str, prefix: &str, auth: &str, limits: &str) -> String {
    let authorize = if auth == "none" { "" } else { "\n    authorize: authenticated" };
    format!(
        "  - name: {name}\n    match:\n      path: {{ prefix: {prefix} }}\n    upstream: app\n    auth: {auth}{authorize}\n    rate_limits: [{limits}]\n"
    )
}

fn get(gw: &Gateway, path: &str, extra: &[&str]) -> (u16, String, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let mut args: Vec<&str> = extra.to_vec();
    args.push(&url);
    curl(&args)
}

fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

#[test]
fn a_burst_then_429_with_retry_after_and_ratelimit_headers_on_every_answer() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(
        up.addr,
        "  per-ip: { rate: 1/m, burst: 3 }",
        &route("limited", "/limited", "none", "per-ip"),
    ));
    let mut conn = RawConn::connect(gw.addr("main"));
    let mut codes = Vec::new();
    for i in 0..6 {
        let resp = conn.get(&format!("/limited/{i}"), T);
        let code = status_of(&resp);
        codes.push(code);
        assert_eq!(header_of(&resp, "ratelimit-policy").as_deref(), Some("\"per-ip\";q=3;w=180"), "{resp}");
        let state = header_of(&resp, "ratelimit").unwrap();
        if code == 200 {
            assert_eq!(state, format!("\"per-ip\";r={};t={}", 2 - i, 60 * (i + 1)), "{resp}");
            assert!(header_of(&resp, "retry-after").is_none());
        } else {
            assert_eq!(code, 429);
            assert_eq!(problem_type(body_of(&resp)), problem("too-many-requests"), "{resp}");
            assert!(state.starts_with("\"per-ip\";r=0;t="), "{resp}");
            let wait: u64 = header_of(&resp, "retry-after").unwrap().parse().unwrap();
            assert!((58..=60).contains(&wait), "{resp}");
        }
    }
    assert_eq!(codes, vec![200, 200, 200, 429, 429, 429]);
    assert_eq!(up.hits(), 3, "refused requests never reach the upstream");
    let m = gw.metrics();
    assert_eq!(metric(&m, r#"portcullis_rate_limited_total{route="limited",limit="per-ip"}"#), Some(3.0), "{m}");
    // Another client is another bucket.
    let (code, _, _) = get(&gw, "/limited/x", &["-H", "X-Forwarded-For: 192.0.2.9"]);
    assert_eq!(code, 200);
}

#[test]
fn twice_the_rate_admits_the_configured_amount() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(
        up.addr,
        "  fast: { rate: 200/s, burst: 200 }",
        &route("limited", "/limited", "none", "fast"),
    ));
    // Offer about 400/s on one connection for about 3 s (paced by counts; never judged by sleeps).
    let mut conn = RawConn::connect(gw.addr("main"));
    let start = Instant::now();
    let (mut allowed, mut sent) = (0u64, 0u64);
    let (mut last, mut longest_gap) = (start, Duration::ZERO);
    // Time the client spent beyond its 2.5 ms pace between requests (a loaded machine stalls it): while
    // the bucket is full (it starts full) such a pause refills nothing, so it lowers what may be admitted.
    let mut stalled = Duration::ZERO;
    while sent < 1200 {
        let due = start + Duration::from_micros(sent * 2500);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        longest_gap = longest_gap.max(now - last);
        if sent > 0 {
            stalled += (now - last).saturating_sub(Duration::from_micros(2500));
        }
        last = now;
        if status_of(&conn.get("/limited/x", T)) == 200 {
            allowed += 1;
        }
        sent += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // What the limit admits over the time the requests took: the burst plus the rate.
    let want = 200.0 + 200.0 * elapsed;
    assert!(allowed as f64 <= want * 1.02, "{allowed} admitted, at most {want:.0} configured over {elapsed:.2}s");
    // The lower bound holds when the client kept the bucket drained: no pause longer than the burst
    // takes to refill (1 s; a busy machine can stall a client, and a limiter only counts what comes).
    // What was offered bounds it too: a slowed client may not have drained the bucket at all.
    if longest_gap < Duration::from_millis(900) {
        let expected = (want - 200.0 * stalled.as_secs_f64()).min(sent as f64);
        assert!(
            allowed as f64 >= expected * 0.98,
            "{allowed} admitted, {expected:.0} expected over {elapsed:.2}s ({sent} sent, client stalled {stalled:?})"
        );
    }
    assert_eq!(up.hits() as u64, allowed);
}

#[test]
fn ipv6_clients_are_counted_by_prefix_and_headers_and_mapped_addresses_by_what_they_are() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(
        up.addr,
        "  per-ip: { rate: 1/m, burst: 1 }\n  per-48: { rate: 1/m, burst: 1, ipv6_prefix: 48 }\n  per-tenant: { rate: 1/m, burst: 1, key: [\"header:x-tenant\", route] }",
        &format!(
            "{}{}{}",
            route("a", "/a", "none", "per-ip"),
            route("b", "/b", "none", "per-48"),
            route("c", "/c", "none", "per-tenant")
        ),
    ));
    let from = |path: &str, ip: &str| get(&gw, path, &["-H", &format!("X-Forwarded-For: {ip}")]).0;
    assert_eq!(from("/a", "2001:db8:1:2::1"), 200);
    assert_eq!(from("/a", "2001:db8:1:2:ffff::9"), 429, "the same /64");
    assert_eq!(from("/a", "2001:db8:1:3::1"), 200, "another /64");
    assert_eq!(from("/a", "192.0.2.7"), 200);
    assert_eq!(from("/a", "::ffff:192.0.2.7"), 429, "a mapped address is the IPv4 client");
    assert_eq!(from("/b", "2001:db8:1:2::1"), 200);
    assert_eq!(from("/b", "2001:db8:1:ffff::1"), 429, "the same /48");
    // Behind a NAT64 (64:ff9b::/96, 64:ff9b:1::/48) one /64 holds every IPv4 client of the
    // translator: each address is its own client, however the prefix is set.
    for route in ["/a", "/b"] {
        assert_eq!(from(route, "64:ff9b::192.0.2.10"), 200);
        assert_eq!(from(route, "64:ff9b::192.0.2.11"), 200, "{route}: another client behind the NAT64");
        assert_eq!(from(route, "64:ff9b::c000:20a"), 429, "{route}: the first one, spelled in hex");
        assert_eq!(from(route, "64:ff9b:1:7::c000:20a"), 200);
        assert_eq!(from(route, "64:ff9b:1:7::c000:20b"), 200, "{route}: local-use NAT64 prefix");
    }
    // Keyed by a header and the route: the client address does not matter.
    let tenant = |t: &str, ip: &str| {
        get(&gw, "/c", &["-H", &format!("X-Tenant: {t}"), "-H", &format!("X-Forwarded-For: {ip}")]).0
    };
    assert_eq!(tenant("acme", "192.0.2.1"), 200);
    assert_eq!(tenant("acme", "192.0.2.2"), 429);
    assert_eq!(tenant("globex", "192.0.2.2"), 200);
    // The header twice (the upstream may read either one): counted by the address, so a fresh second
    // value per request is not a fresh bucket.
    let twice = |second: &str| {
        get(
            &gw,
            "/c",
            &["-H", "X-Tenant: acme", "-H", &format!("X-Tenant: {second}"), "-H", "X-Forwarded-For: 198.51.100.9"],
        )
        .0
    };
    assert_eq!(twice("r1"), 200);
    assert_eq!(twice("r2"), 429);
    // A request without the header is counted by its address, not in one shared bucket.
    assert_eq!(from("/c", "198.51.100.1"), 200);
    assert_eq!(from("/c", "198.51.100.2"), 200);
    assert_eq!(from("/c", "198.51.100.1"), 429);
}

fn token(sub: &str, roles: &[&str]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": sub, "iat": now, "exp": now + 600, "roles": roles});
    hs256(SECRET, &claims)
}

#[test]
fn principals_and_tiers_after_authorization_and_client_ips_before_authentication() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(
        up.addr,
        "  per-user: { rate: 1/m, burst: 2, key: [principal], tiers: { pro: { rate: 1/m, burst: 4 } } }\n  guard: { rate: 1/m, burst: 3 }",
        &route("api", "/api", "sso", "guard, per-user"),
    ));
    let call = |tok: &str, ip: &str| {
        let (code, headers, _) = get(
            &gw,
            "/api/x",
            &["-H", &format!("Authorization: Bearer {tok}"), "-H", &format!("X-Forwarded-For: {ip}")],
        );
        (code, headers)
    };
    let (alice, bob, pro) = (token("alice", &[]), token("bob", &[]), token("carol", &["pro"]));
    // Each principal its own bucket, whatever address it comes from.
    assert_eq!(call(&alice, "192.0.2.1").0, 200);
    assert_eq!(call(&alice, "192.0.2.2").0, 200);
    let (code, headers) = call(&alice, "192.0.2.3");
    assert_eq!(code, 429);
    assert_eq!(header(&headers, "ratelimit-policy").unwrap(), "\"guard\";q=3;w=180, \"per-user\";q=2;w=120");
    assert_eq!(call(&bob, "192.0.2.4").0, 200);
    // A tier by role: carol (pro) gets 4.
    let codes: Vec<u16> = (0..5).map(|i| call(&pro, &format!("198.51.100.{i}")).0).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 429]);
    let (_, headers) = call(&pro, "198.51.100.9");
    assert!(header(&headers, "ratelimit-policy").unwrap().contains("\"per-user.pro\";q=4;w=240"), "{headers}");
    // Bad credentials from one address: cut off by the pre-authentication limit before any token
    // work is done for them.
    let failures = |gw: &Gateway| {
        let m = gw.metrics();
        m.lines()
            .filter(|l| l.starts_with("portcullis_authn_failures_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = failures(&gw);
    let codes: Vec<u16> = (0..6).map(|_| call("not-a-token", "203.0.113.5").0).collect();
    assert_eq!(codes, vec![401, 401, 401, 429, 429, 429]);
    assert_eq!(failures(&gw) - before, 3.0, "refused before authentication");
    let hits = up.hits();
    assert_eq!(hits, 2 + 1 + 4, "nothing refused reached the upstream");
}

#[test]
fn a_reload_keeps_the_state_and_mistakes_are_refused() {
    let up = Upstream::start("app");
    let limits = "  per-ip: { rate: 1/m, burst: 2 }";
    let gw = Gateway::start(&config(up.addr, limits, &route("limited", "/limited", "none", "per-ip")));
    assert_eq!(get(&gw, "/limited/1", &[]).0, 200);
    assert_eq!(get(&gw, "/limited/2", &[]).0, 200);
    assert_eq!(get(&gw, "/limited/3", &[]).0, 429);
    // A reload (another route added) must not hand every client a fresh burst.
    let more =
        format!("{}{}", route("limited", "/limited", "none", "per-ip"), route("other", "/other", "none", "per-ip"));
    gw.rewrite_config(&config(up.addr, limits, &more));
    gw.signal("HUP");
    let reloaded = || gw.metrics().contains("portcullis_reloads_total 1");
    let deadline = Instant::now() + T;
    while !reloaded() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reloaded(), "{}", gw.logs().join("\n"));
    assert_eq!(get(&gw, "/limited/4", &[]).0, 429);
    assert_eq!(get(&gw, "/other/1", &[]).0, 429, "one limit named by two routes is one bucket");

    let dir = TempDir::new();
    let cases = [
        (config(up.addr, limits, &route("r", "/r", "none", "nope")), "`nope` is not declared"),
        (config(up.addr, "  x: { rate: 10/fortnight }", &route("r", "/r", "none", "x")), "is not a rate"),
        (config(up.addr, "  x: { rate: 0/s }", &route("r", "/r", "none", "x")), "between 1 and"),
        (config(up.addr, "  x: { rate: 1/s, burst: 0 }", &route("r", "/r", "none", "x")), "at least 1"),
        (config(up.addr, "  x: { rate: 1/s, key: [cookie] }", &route("r", "/r", "none", "x")), "is not a key part"),
        (config(up.addr, "  x: { rate: 1/s, ipv6_prefix: 0 }", &route("r", "/r", "none", "x")), "ipv6_prefix"),
        (config(up.addr, "  x: { rate: 1/s, colour: red }", &route("r", "/r", "none", "x")), "colour"),
        (config(up.addr, limits, &route("r", "/r", "none", "per-ip, per-ip")), "named twice"),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let path = dir.write(&format!("c{i}.yaml"), yaml);
        let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
        assert_ne!(code, 0, "case {i} passed check:\n{out}");
        assert!(err.contains(want), "case {i}: {err}");
    }
    // check prints where each limit runs.
    let path = dir.write(
        "good.yaml",
        &config(up.addr, "  a: { rate: 1/s }\n  b: { rate: 1/s, key: [principal] }", &route("r", "/r", "sso", "a, b")),
    );
    let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pre-auth-limits[a]") && out.contains("principal-limits[b]"), "{out}");
}

#[test]
fn concurrency_limits_hold_a_place_until_the_answer_is_done() {
    let up = Upstream::start("app");
    let routes = "  - name: slow\n    match:\n      path: { prefix: /sleep }\n    upstream: app\n    auth: none\n    concurrency: { max: 2 }\n  - name: mine\n    match:\n      hosts: [mine.test]\n      path: { prefix: /sleep }\n    upstream: app\n    auth: sso\n    authorize: authenticated\n    concurrency: { max: 1, per: principal }\n";
    let gw = Gateway::start(&config(up.addr, "  unused: { rate: 1/s }", routes));
    let addr = gw.addr("main");
    // Two slow requests fill the route.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = RawConn::connect(addr);
                status_of(&c.get("/sleep/4000", Duration::from_secs(20)))
            })
        })
        .collect();
    let deadline = Instant::now() + T;
    while up.hits() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(up.hits(), 2);
    let (code, headers, body) = get(&gw, "/sleep/1", &[]);
    assert_eq!(code, 429, "{body}");
    assert_eq!(header(&headers, "retry-after").as_deref(), Some("1"));
    assert_eq!(problem_type(&body), problem("too-many-requests"));
    assert_eq!(up.hits(), 2, "the refused request never reached the upstream");
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(get(&gw, "/sleep/1", &[]).0, 200, "places are given back");
    // A client that goes away gives its place back too.
    let mut gone = RawConn::connect(addr);
    gone.stream.write_all(b"GET /sleep/20000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut gone2 = RawConn::connect(addr);
    gone2.stream.write_all(b"GET /sleep/20000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let deadline = Instant::now() + T;
    while up.hits() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get(&gw, "/sleep/1", &[]).0, 429);
    drop(gone);
    let deadline = Instant::now() + T;
    let mut code = 0;
    while code != 200 && Instant::now() < deadline {
        code = get(&gw, "/sleep/1", &[]).0;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(code, 200, "the place of a client that left is free before its upstream answered");
    drop(gone2);
    // Per principal: one each (the route for host mine.test).
    let (alice, bob) = (token("alice", &[]), token("bob", &[]));
    let before = up.hits();
    let mut held = RawConn::connect(addr);
    let slow = format!("GET /sleep/20000 HTTP/1.1\r\nHost: mine.test\r\nAuthorization: Bearer {alice}\r\n\r\n");
    held.stream.write_all(slow.as_bytes()).unwrap();
    let deadline = Instant::now() + T;
    while up.hits() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mine =
        |t: &str| get(&gw, "/sleep/1", &["-H", "Host: mine.test", "-H", &format!("Authorization: Bearer {t}")]).0;
    assert_eq!(mine(&alice), 429);
    assert_eq!(mine(&bob), 200);
    drop(held);
}

#[test]
fn quotas_per_principal_survive_a_restart_and_tiers_get_more() {
    let up = Upstream::start("app");
    let state_dir = TempDir::new();
    let db = state_dir.path("state.db");
    let yaml = config(up.addr, "  unused: { rate: 1/s }", &route("api", "/api", "sso", "unused"))
        .replace("rate_limits: [unused]", "quotas: [daily]")
        .replace(
            "routes:\n",
            &format!(
                "store:\n  sqlite: {}\nquotas:\n  daily: {{ limit: 3, period: day, tiers: {{ pro: 5 }} }}\nroutes:\n",
                path_str(&db)
            ),
        );
    let mut gw = Gateway::start(&yaml);
    let (alice, carol) = (token("alice", &[]), token("carol", &["pro"]));
    let call = |gw: &Gateway, tok: &str| get(gw, "/api/x", &["-H", &format!("Authorization: Bearer {tok}")]);
    let (code, headers, _) = call(&gw, &alice);
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "ratelimit-policy").unwrap(), "\"daily\";q=3;w=86400");
    let state = header(&headers, "ratelimit").unwrap();
    assert!(state.starts_with("\"daily\";r=2;t="), "{state}");
    assert_eq!(call(&gw, &alice).0, 200);
    // A restart (graceful) keeps what was counted.
    assert!(gw.terminate(T).is_some());
    drop(gw);
    let gw = Gateway::start(&yaml);
    assert_eq!(call(&gw, &alice).0, 200, "the third of three");
    let (code, headers, body) = call(&gw, &alice);
    assert_eq!(code, 429, "{body}");
    assert_eq!(problem_type(&body), problem("too-many-requests"));
    let wait: i64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let midnight = (now / 86_400 + 1) * 86_400;
    assert!((wait - (midnight - now)).abs() <= 2, "Retry-After {wait} runs to the end of the UTC day");
    // A pro principal gets five; others their own three.
    let codes: Vec<u16> = (0..6).map(|_| call(&gw, &carol).0).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 200, 429]);
    assert_eq!(call(&gw, &token("dave", &[])).0, 200);
    assert_eq!(up.hits(), 3 + 5 + 1, "nothing refused reached the upstream");
    let dir = TempDir::new();
    for (i, (from, to, want)) in [
        ("limit: 3,", "limit: 0,", "at least 1"),
        ("quotas: [daily]", "quotas: [weekly]", "`weekly` is not declared"),
        ("period: day", "period: week", "unknown variant"),
    ]
    .iter()
    .enumerate()
    {
        let path = dir.write(&format!("q{i}.yaml"), &yaml.replace(from, to));
        let (code, _, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
        assert_ne!(code, 0, "case {i}");
        assert!(err.contains(want), "case {i}: {err}");
    }
}

#[test]
fn a_login_field_limits_password_spraying_from_any_address_and_ambiguous_bodies_are_refused() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(
        up.addr,
        "  per-account: { rate: 1/m, burst: 2, key: [\"body:/username\"] }",
        &route("login", "/login", "none", "per-account"),
    ));
    let post = |ip: &str, ct: &str, body: &str| {
        let (code, _, resp) = get(
            &gw,
            "/login",
            &[
                "-X",
                "POST",
                "-H",
                &format!("X-Forwarded-For: {ip}"),
                "-H",
                &format!("Content-Type: {ct}"),
                "--data-binary",
                body,
            ],
        );
        (code, resp)
    };
    let json = "application/json";
    assert_eq!(post("192.0.2.1", json, r#"{"username":"victim","password":"a"}"#).0, 200);
    assert_eq!(post("192.0.2.2", "application/x-www-form-urlencoded", "username=victim&password=b").0, 200);
    let (code, body) = post("192.0.2.3", json, r#"{"username":"victim","password":"c"}"#);
    assert_eq!(code, 429, "a third address, the same account: {body}");
    assert_eq!(post("192.0.2.3", json, r#"{"username":"someone-else","password":"c"}"#).0, 200);
    let before = up.hits();
    // The same name twice (in any case), malformed JSON, another media type: refused, never counted
    // under another account.
    for (ct, body, want) in [
        (json, r#"{"username":"x","username":"victim"}"#, 400),
        (json, r#"{"username":"x","UserName":"victim"}"#, 400),
        (json, r#"{"username":"x""#, 400),
        ("application/x-www-form-urlencoded", "username=x&username=victim", 400),
        ("text/plain", "username=victim", 415),
    ] {
        let (code, resp) = post("198.51.100.7", ct, body);
        assert_eq!(code, want, "{ct} {body}: {resp}");
    }
    assert_eq!(up.hits(), before, "nothing refused reached the upstream");
    // A body over the bound of a login form: 413.
    let big = format!("{{\"username\":\"a\",\"pad\":\"{}\"}}", "x".repeat(70_000));
    assert_eq!(post("198.51.100.8", json, &big).0, 413);
    // Without the field, the key is the client's address.
    assert_eq!(post("203.0.113.1", json, r#"{"password":"a"}"#).0, 200);
    assert_eq!(post("203.0.113.1", json, r#"{"password":"a"}"#).0, 200);
    assert_eq!(post("203.0.113.1", json, r#"{"password":"a"}"#).0, 429);
}
