//! Connection guards through the real gateway: IP allow and deny lists (global, per route, from list
//! files re-read when they change), bans set by `portcullis bans` against a running gateway (address,
//! prefix, principal; expiry; lifted; kept in the SQLite store across a restart) and automatic bans.
//! Clients present other addresses through a trusted proxy (`X-Forwarded-For` from 127.0.0.1). Every
//! refusal checks the status, the problem type and that the upstream saw nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::time::{Duration, Instant};

const SECRET: &str = "guard-test-server-secret-0123456789abcdef";

/// A real API key for `principal` and its config entry, as `portcullis keys` would make them.
fn key(principal: &str) -> (String, String) {
    let (id, key) = portcullis::authn::api_key::generate().unwrap();
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let hash: String = aws_lc_rs::hmac::sign(&k, key.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let entry = format!("        - id: {id}\n          hash: {hash}\n          principal: {principal}\n");
    (key, entry)
}

/// A gateway config: `top` goes before `routes:` (trusted proxies, ip_filter, store, auto_ban,
/// authenticators), then `routes`.
fn config(up: std::net::SocketAddr, top: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
upstreams:
  app:
    targets:
      - address: {up}
{top}
routes:
{routes}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

const PUBLIC: &str = "  - name: public\n    match: { path: { prefix: / } }\n    upstream: app\n    auth: none\n";

/// GET `path` as the client `from` (through the trusted proxy 127.0.0.1), with extra curl arguments.
fn get(gw: &Gateway, path: &str, from: Option<&str>, extra: &[&str]) -> (u16, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let xff = from.map(|f| format!("X-Forwarded-For: {f}"));
    let mut args: Vec<&str> = Vec::new();
    if let Some(h) = &xff {
        args.extend(["-H", h.as_str()]);
    }
    args.extend(extra);
    args.push(&url);
    let (code, _, body) = curl(&args);
    (code, body)
}

/// A refusal: its status and problem type, and nothing reached the upstream.
#[track_caller]
fn refused(up: &Upstream, (code, body): (u16, String), status: u16, slug: &str) {
    let before = up.hits();
    assert_eq!(code, status, "{body}");
    assert_eq!(problem_type(&body), problem(slug), "{body}");
    assert_eq!(up.hits(), before, "the upstream saw a refused request");
}

#[track_caller]
fn passes(up: &Upstream, (code, body): (u16, String)) {
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"upstream\""), "{body}");
    let _ = up;
}

/// Polls `f` until it holds or `secs` pass.
fn until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bans(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let config = path_str(&gw.config);
    let mut all = vec!["bans", "-c", config.as_str()];
    all.extend(args);
    portcullis(&all, &[])
}

#[test]
fn global_allow_and_deny_lists_for_ipv4_and_ipv6_before_authentication() {
    let up = Upstream::start("app");
    let (k, entry) = key("alice");
    let top = format!(
        "trusted_proxies: [127.0.0.1/32]
ip_filter:
  allow: [203.0.113.0/24, 2001:db8::/32, 127.0.0.1]
  deny: [203.0.113.66, 2001:db8:bad::/48]
authenticators:
  keys:
    api_key:
      hmac_secret: {SECRET}
      keys:
{entry}"
    );
    let routes = format!(
        "  - name: private\n    match: {{ path: {{ prefix: /private }} }}\n    upstream: app\n    auth: keys\n    authorize: authenticated\n{PUBLIC}"
    );
    let gw = Gateway::start(&config(up.addr, &top, &routes));
    passes(&up, get(&gw, "/a", Some("203.0.113.5"), &[]));
    passes(&up, get(&gw, "/a", Some("2001:db8:1::5"), &[]));
    passes(&up, get(&gw, "/a", None, &[]));
    // IPv4-mapped IPv6 clients are their IPv4 address.
    passes(&up, get(&gw, "/a", Some("::ffff:203.0.113.5"), &[]));
    refused(&up, get(&gw, "/a", Some("::ffff:203.0.113.66"), &[]), 403, "ip-denied");
    // Deny wins over allow; outside the allow list nothing gets in.
    refused(&up, get(&gw, "/a", Some("203.0.113.66"), &[]), 403, "ip-denied");
    refused(&up, get(&gw, "/a", Some("2001:db8:bad:1::1"), &[]), 403, "ip-denied");
    refused(&up, get(&gw, "/a", Some("198.51.100.1"), &[]), 403, "ip-denied");
    refused(&up, get(&gw, "/a", Some("2001:db9::1"), &[]), 403, "ip-denied");
    // Before authentication: no 401 for a denied client, even with a valid key.
    let auth = format!("X-API-Key: {k}");
    refused(&up, get(&gw, "/private/x", Some("198.51.100.1"), &[]), 403, "ip-denied");
    refused(&up, get(&gw, "/private/x", Some("198.51.100.1"), &["-H", &auth]), 403, "ip-denied");
    passes(&up, get(&gw, "/private/x", Some("203.0.113.5"), &["-H", &auth]));
    let m = gw.metrics();
    assert!(metric(&m, "portcullis_rejections_total{type=\"ip-denied\"}").unwrap() >= 7.0, "{m}");
}

#[test]
fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_count() {
    let up = Upstream::start("app");
    let top = "ip_filter:\n  allow: [203.0.113.0/24]\n  deny: [192.0.2.0/24]\n";
    let gw = Gateway::start(&config(up.addr, top, PUBLIC));
    // The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is the client's own claim.
    refused(&up, get(&gw, "/a", Some("203.0.113.5"), &[]), 403, "ip-denied");
    refused(&up, get(&gw, "/a", None, &[]), 403, "ip-denied");
    let top = "ip_filter:\n  deny: [127.0.0.0/8]\n";
    let gw2 = Gateway::start(&config(up.addr, top, PUBLIC));
    refused(&up, get(&gw2, "/a", Some("203.0.113.5"), &[]), 403, "ip-denied");
    // Every protocol and method: HTTP/2 (h2c), HTTP/1.0, HEAD (no body, the same status).
    refused(&up, get(&gw2, "/a", None, &["--http2-prior-knowledge"]), 403, "ip-denied");
    refused(&up, get(&gw2, "/a", None, &["-0"]), 403, "ip-denied");
    let (code, _) = get(&gw2, "/a", None, &["-I"]);
    assert_eq!(code, 403);
    assert_eq!(up.hits(), 0);
}

#[test]
fn per_route_lists_apply_to_their_route_only() {
    let up = Upstream::start("app");
    let routes = format!(
        "  - name: admin\n    match: {{ path: {{ prefix: /admin }} }}\n    upstream: app\n    auth: none\n    ip_filter:\n      allow: [10.0.0.0/8, \"fd00::/8\"]\n      deny: [10.6.6.0/24]\n{PUBLIC}"
    );
    let top = "trusted_proxies: [127.0.0.1/32]\nip_filter:\n  deny: [198.51.100.0/24]\n";
    let gw = Gateway::start(&config(up.addr, top, &routes));
    passes(&up, get(&gw, "/admin/x", Some("10.1.2.3"), &[]));
    passes(&up, get(&gw, "/admin/x", Some("fd00::1"), &[]));
    refused(&up, get(&gw, "/admin/x", Some("192.0.2.1"), &[]), 403, "ip-denied");
    refused(&up, get(&gw, "/admin/x", Some("10.6.6.6"), &[]), 403, "ip-denied");
    passes(&up, get(&gw, "/other", Some("192.0.2.1"), &[]));
    // The global list applies to every route.
    refused(&up, get(&gw, "/other", Some("198.51.100.9"), &[]), 403, "ip-denied");
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&gw.config)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("connection-guards[ip_filter: allow 2 ranges, deny 1 ranges]"), "{out}");
}

#[test]
fn list_files_are_re_read_when_they_change_and_a_bad_one_keeps_the_lists() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let list = dir.write("deny.txt", "# blocked\n192.0.2.0/24\n");
    let replace = |text: &str| {
        let tmp = dir.write("deny.txt.tmp", text);
        std::fs::rename(tmp, &list).unwrap();
    };
    let top = format!("trusted_proxies: [127.0.0.1/32]\nip_filter:\n  deny_files: [{}]\n", path_str(&list));
    let gw = Gateway::start(&config(up.addr, &top, PUBLIC));
    refused(&up, get(&gw, "/a", Some("192.0.2.5"), &[]), 403, "ip-denied");
    passes(&up, get(&gw, "/a", Some("198.51.100.7"), &[]));
    replace("198.51.100.0/24 # moved\n2001:db8::/32\n");
    assert!(until(10, || get(&gw, "/a", Some("198.51.100.7"), &[]).0 == 403), "the new list never applied");
    refused(&up, get(&gw, "/a", Some("198.51.100.7"), &[]), 403, "ip-denied");
    refused(&up, get(&gw, "/a", Some("2001:db8::9"), &[]), 403, "ip-denied");
    passes(&up, get(&gw, "/a", Some("192.0.2.5"), &[]));
    // A bad line: logged and counted, and the lists in force stay.
    replace("203.0.113.0/24\nnot-an-address\n");
    assert!(gw.wait_log("IP list file refused", Duration::from_secs(10)), "{:?}", gw.logs());
    assert!(gw.logs().iter().any(|l| l.contains("deny.txt:2")));
    refused(&up, get(&gw, "/a", Some("198.51.100.7"), &[]), 403, "ip-denied");
    passes(&up, get(&gw, "/a", Some("203.0.113.1"), &[]));
    assert_eq!(metric(&gw.metrics(), "portcullis_ip_list_failures_total"), Some(1.0));
    // A reload re-reads the files too, and refuses a bad one (the running config stays).
    gw.signal("HUP");
    assert!(gw.wait_log("configuration reload refused", Duration::from_secs(10)), "{:?}", gw.logs());
    refused(&up, get(&gw, "/a", Some("198.51.100.7"), &[]), 403, "ip-denied");
    replace("203.0.113.0/24\n");
    assert!(until(10, || get(&gw, "/a", Some("203.0.113.1"), &[]).0 == 403), "the fixed list never applied");
    passes(&up, get(&gw, "/a", Some("198.51.100.7"), &[]));
}

fn store_top(dir: &TempDir, extra: &str) -> String {
    format!("trusted_proxies: [127.0.0.1/32]\nstore:\n  sqlite: {}\n{extra}", path_str(&dir.path("state.db")))
}

#[test]
fn bans_from_the_cli_apply_to_a_running_gateway_expire_and_lift() {
    let up = Upstream::start("app");
    let state = TempDir::new();
    let gw = Gateway::start(&config(up.addr, &store_top(&state, ""), PUBLIC));
    passes(&up, get(&gw, "/a", Some("192.0.2.1"), &[]));
    let (code, id, err) = bans(&gw, &["add", "--ip", "192.0.2.1", "--for", "3s", "--reason", "test ban"]);
    assert_eq!(code, 0, "{err}");
    assert!(id.trim().parse::<i64>().is_ok(), "{id}");
    assert!(until(5, || get(&gw, "/a", Some("192.0.2.1"), &[]).0 == 403), "the ban never applied");
    refused(&up, get(&gw, "/a", Some("192.0.2.1"), &[]), 403, "banned");
    passes(&up, get(&gw, "/a", Some("192.0.2.2"), &[]));
    // Expires by itself.
    assert!(until(10, || get(&gw, "/a", Some("192.0.2.1"), &[]).0 == 200), "the ban never expired");
    // A prefix, listed, then lifted.
    let (code, id, err) = bans(&gw, &["add", "--prefix", "2001:db8::/48", "--for", "1h", "--reason", "scanner"]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    assert!(until(5, || get(&gw, "/a", Some("2001:db8:0:1::5"), &[]).0 == 403), "the prefix ban never applied");
    refused(&up, get(&gw, "/a", Some("2001:db8:0:ffff::1"), &[]), 403, "banned");
    passes(&up, get(&gw, "/a", Some("2001:db8:1::1"), &[]));
    let (code, listed, _) = bans(&gw, &["list"]);
    assert_eq!(code, 0);
    assert!(listed.contains("2001:db8::/48") && listed.contains("scanner") && listed.contains("manual"), "{listed}");
    assert!(!listed.contains("192.0.2.1"), "an expired ban is not listed: {listed}");
    let (code, _, err) = bans(&gw, &["remove", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(until(5, || get(&gw, "/a", Some("2001:db8:0:1::5"), &[]).0 == 200), "the ban was never lifted");
    let (code, _, err) = bans(&gw, &["remove", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("no ban"), "{err}");
    // Bad input is refused.
    for bad in [&["add", "--ip", "10.0.0.0/8", "--for", "1h"][..], &["add", "--principal", "alice", "--for", "1h"]] {
        let (code, _, err) = bans(&gw, bad);
        assert_eq!(code, 1, "{bad:?}: {err}");
    }
}

#[test]
fn banned_principals_are_refused_right_after_authentication() {
    let up = Upstream::start("app");
    let state = TempDir::new();
    let ((bot, bot_entry), (alice, alice_entry)) = (key("ci-bot"), key("alice"));
    let top = store_top(
        &state,
        &format!(
            "authenticators:\n  keys:\n    api_key:\n      hmac_secret: {SECRET}\n      keys:\n{bot_entry}{alice_entry}"
        ),
    );
    let routes = "  - name: api\n    match: { path: { prefix: / } }\n    upstream: app\n    auth: keys\n    authorize: authenticated\n";
    let gw = Gateway::start(&config(up.addr, &top, routes));
    let (bot_h, alice_h) = (format!("X-API-Key: {bot}"), format!("X-API-Key: {alice}"));
    passes(&up, get(&gw, "/a", None, &["-H", &bot_h]));
    let (code, _, err) = bans(&gw, &["add", "--principal", "api_key:ci-bot", "--for", "1h", "--reason", "leaked"]);
    assert_eq!(code, 0, "{err}");
    assert!(until(5, || get(&gw, "/a", None, &["-H", &bot_h]).0 == 403), "the ban never applied");
    refused(&up, get(&gw, "/a", None, &["-H", &bot_h]), 403, "banned");
    passes(&up, get(&gw, "/a", None, &["-H", &alice_h]));
    // Authentication runs first: no credential is still 401.
    refused(&up, get(&gw, "/a", None, &[]), 401, "unauthorized");
    assert!(gw.logs().iter().any(|l| l.contains("\"target\":\"security\"") && l.contains("banned principal")));
}

#[test]
fn bans_survive_a_restart() {
    let up = Upstream::start("app");
    let state = TempDir::new();
    let yaml = config(up.addr, &store_top(&state, ""), PUBLIC);
    let mut gw = Gateway::start(&yaml);
    let (code, _, err) = bans(&gw, &["add", "--ip", "192.0.2.77", "--for", "1h"]);
    assert_eq!(code, 0, "{err}");
    assert!(until(5, || get(&gw, "/a", Some("192.0.2.77"), &[]).0 == 403), "the ban never applied");
    assert!(gw.terminate(Duration::from_secs(10)).is_some());
    drop(gw);
    // A new process on the same store refuses from its first request.
    let gw = Gateway::start(&yaml);
    refused(&up, get(&gw, "/a", Some("192.0.2.77"), &[]), 403, "banned");
    refused(&up, get(&gw, "/a", Some("::ffff:192.0.2.77"), &[]), 403, "banned");
    passes(&up, get(&gw, "/a", Some("192.0.2.78"), &[]));
}

#[test]
fn automatic_bans_after_n_authentication_failures() {
    let up = Upstream::start("app");
    let state = TempDir::new();
    let (k, entry) = key("alice");
    let top = store_top(
        &state,
        &format!(
            "auto_ban: {{ after: 3, statuses: [401], within: 1m, ban_for: 1h }}
authenticators:\n  keys:\n    api_key:\n      hmac_secret: {SECRET}\n      keys:\n{entry}"
        ),
    );
    let routes = "  - name: api\n    match: { path: { prefix: / } }\n    upstream: app\n    auth: keys\n    authorize: authenticated\n";
    let gw = Gateway::start(&config(up.addr, &top, routes));
    let good = format!("X-API-Key: {k}");
    for _ in 0..3 {
        refused(&up, get(&gw, "/a", Some("192.0.2.9"), &["-H", "X-API-Key: wrong"]), 401, "unauthorized");
    }
    // Banned at once: even the right key is refused now, before authentication.
    refused(&up, get(&gw, "/a", Some("192.0.2.9"), &["-H", &good]), 403, "banned");
    passes(&up, get(&gw, "/a", Some("192.0.2.10"), &["-H", &good]));
    // IPv6 by /64: three addresses of one /64 are one client.
    for host in ["1", "2", "3"] {
        refused(&up, get(&gw, "/a", Some(&format!("2001:db8:1:2::{host}")), &[]), 401, "unauthorized");
    }
    refused(&up, get(&gw, "/a", Some("2001:db8:1:2:ffff::1"), &["-H", &good]), 403, "banned");
    passes(&up, get(&gw, "/a", Some("2001:db8:1:3::1"), &["-H", &good]));
    assert_eq!(metric(&gw.metrics(), "portcullis_auto_bans_total"), Some(2.0));
    let logged = gw
        .logs()
        .iter()
        .filter(|l| l.contains("\"target\":\"security\"") && l.contains("\"event\":\"auto_ban\""))
        .count();
    assert_eq!(logged, 2, "{:?}", gw.logs());
    // Stored like a manual ban: listed, and lifted by `bans remove`.
    let mut listed = String::new();
    assert!(until(5, || {
        listed = bans(&gw, &["list"]).1;
        listed.contains("192.0.2.9") && listed.contains("2001:db8:1:2::/64")
    }));
    assert!(listed.contains("auto"), "{listed}");
    let id = listed.lines().find(|l| l.contains("192.0.2.9")).and_then(|l| l.split_whitespace().next()).unwrap();
    let (code, _, err) = bans(&gw, &["remove", id]);
    assert_eq!(code, 0, "{err}");
    assert!(until(5, || get(&gw, "/a", Some("192.0.2.9"), &["-H", &good]).0 == 200), "never lifted");
    refused(&up, get(&gw, "/a", Some("2001:db8:1:2::1"), &["-H", &good]), 403, "banned");
}

#[test]
fn check_refuses_bad_lists_and_warns_without_a_store() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let bad_file = dir.write("bad.txt", "10.0.0.0/8\n10.0.0.300\n");
    let cases = [
        ("ip_filter:\n  deny: [10.0.0.0/33]\n".to_owned(), "`10.0.0.0/33` is not a CIDR"),
        ("ip_filter:\n  allow: []\n".to_owned(), "lets nobody in"),
        (format!("ip_filter:\n  deny_files: [{}]\n", path_str(&bad_file)), "bad.txt:2"),
        (format!("ip_filter:\n  deny_files: [{}]\n", path_str(&dir.path("missing.txt"))), "cannot be read"),
        ("auto_ban: { after: 1, within: 1m, ban_for: 1h }\n".to_owned(), "auto_ban.after"),
        ("ip_filter:\n  denny: []\n".to_owned(), "unknown field"),
    ];
    for (top, want) in cases {
        let path = dir.write("c.yaml", &config(up.addr, &top, PUBLIC));
        let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
        assert_eq!(code, 1, "{top}: {out}");
        assert!(err.contains(want), "{top}: {err}");
    }
    let path = dir.write("c.yaml", &config(up.addr, "auto_ban: { after: 5, within: 1m, ban_for: 1h }\n", PUBLIC));
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("warning: no `store:`"), "{out}");
    let (code, _, err) = portcullis(&["bans", "-c", &path_str(&path), "list"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no `store:`"), "{err}");
}

#[test]
fn automatic_bans_count_upstream_answers_and_work_without_a_store() {
    let up = Upstream::start("app");
    let top = "trusted_proxies: [127.0.0.1/32]
auto_ban: { after: 2, statuses: [429], within: 1m, ban_for: 1h, ignore: [192.0.2.60] }
";
    let gw = Gateway::start(&config(up.addr, top, PUBLIC));
    // The upstream's own 429s count (a login endpoint the gateway does not own).
    for _ in 0..2 {
        assert_eq!(get(&gw, "/status/429", Some("192.0.2.50"), &[]).0, 429);
    }
    assert_eq!(up.hits(), 2);
    refused(&up, get(&gw, "/a", Some("192.0.2.50"), &[]), 403, "banned");
    refused(&up, get(&gw, "/a", Some("::ffff:192.0.2.50"), &["--http2-prior-knowledge"]), 403, "banned");
    passes(&up, get(&gw, "/a", Some("192.0.2.51"), &[]));
    // Other statuses do not count, and an ignored address is never banned.
    for _ in 0..3 {
        assert_eq!(get(&gw, "/status/401", Some("192.0.2.52"), &[]).0, 401);
        assert_eq!(get(&gw, "/status/429", Some("192.0.2.60"), &[]).0, 429);
    }
    passes(&up, get(&gw, "/a", Some("192.0.2.52"), &[]));
    passes(&up, get(&gw, "/a", Some("192.0.2.60"), &[]));
    assert_eq!(metric(&gw.metrics(), "portcullis_auto_bans_total"), Some(1.0));
    // Kept across a reload (in memory: no store).
    let yaml = std::fs::read_to_string(&gw.config).unwrap();
    gw.rewrite_config(&yaml.replace("level: info", "level: debug"));
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(10)), "{:?}", gw.logs());
    refused(&up, get(&gw, "/a", Some("192.0.2.50"), &[]), 403, "banned");
}
