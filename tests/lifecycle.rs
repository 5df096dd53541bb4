//! The gateway's life: `check`, `run` on a broken config, `--help`/`--version`, reload (SIGHUP, file
//! watch, refused configs, reloads under load), graceful shutdown, the admin listener and the access log.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

/// A config with one upstream and the routes `extra_routes` (YAML list items), plus `/a` and `/sleep`.
fn config(up: SocketAddr, limits: &str, extra_routes: &str) -> String {
    format!(
        r#"workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
limits:
  shutdown_timeout: 5s
{limits}
upstreams:
  app:
    targets:
      - address: {up}
routes:
  - name: a
    match:
      path: {{ prefix: /a }}
    upstream: app
    auth: none
  - name: sleep
    match:
      path: {{ prefix: /sleep }}
    upstream: app
    auth: none
{extra_routes}
admin:
  address: 127.0.0.1:0
"#
    )
}

fn route(name: &str, prefix: &str) -> String {
    format!("  - name: {name}\n    match:\n      path: {{ prefix: {prefix} }}\n    upstream: app\n    auth: none\n")
}

fn code(gw: &Gateway, path: &str) -> u16 {
    curl(&[&format!("http://{}{path}", gw.addr("main"))]).0
}

/// Waits until `f` is true (at most `timeout`).
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
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

fn metric_of(gw: &Gateway, series: &str) -> f64 {
    metric(&gw.metrics(), series).unwrap_or_else(|| panic!("no {series} in /metrics"))
}

// ------------------------------------------------------------------------------------------------
// check, run, --help, --version
// ------------------------------------------------------------------------------------------------

const GOOD: &str = r#"listeners:
  - name: main
    address: 127.0.0.1:0
limits:
  idle_timeout: 30s
  header_read_timeout: 5s
upstreams:
  app:
    targets:
      - address: 127.0.0.1:9
routes:
  - name: users
    match:
      hosts: [api.example.com]
      path: { template: '/users/{id}' }
      methods: [GET]
    upstream: app
    auth: none
  - name: rest
    match:
      path: { prefix: / }
    upstream: app
    auth: none
admin:
  address: 127.0.0.1:0
  token: ${env:PC_TEST_ADMIN_TOKEN}
"#;

const SECRET: &str = "s3cr3t-Adm1n-t0ken-value";

fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, String, String, String) {
    let dir = TempDir::new();
    let file = path_str(&dir.write("gw.yaml", yaml));
    let (code, out, err) = portcullis(&["check", "-c", &file], env);
    (code, out, err, file)
}

/// The 1-based line holding `needle` in `yaml`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in the config")) + 1
}

#[test]
fn check_accepts_a_good_file_and_prints_the_route_table() {
    let (code, out, err, file) = check(GOOD, &[("PC_TEST_ADMIN_TOKEN", SECRET)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{file}: configuration is valid")), "{out}");
    assert!(out.contains("listener main on 127.0.0.1:0 (plain)"), "{out}");
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("routes for host api.example.com"))
        .take_while(|l| !l.starts_with("chains"))
        .collect();
    assert_eq!(table.len(), 7, "{out}");
    // Per host, most specific first.
    assert!(table[1].starts_with("order"), "{out}");
    assert!(table[2].contains("users") && table[2].contains("api.example.com") && table[2].contains("/users/{id}"));
    assert!(table[2].contains("GET") && table[2].contains("app") && table[2].contains("none"));
    assert!(table[3].contains("rest") && table[3].contains("/*") && table[3].contains("any"));
    assert!(table[4].starts_with("routes for any other host"), "{out}");
    assert!(table[6].contains("rest") && !out.contains("2      users"), "{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    // each route's effective chain, in the fixed order
    assert!(out.contains("  users: head-limits -> route-match[max_body"), "{out}");
    assert!(
        out.contains(
            "-> proxy[app] -> error-scrubbing[5xx] -> security-headers[request-id, nosniff, csp, referrer-policy, \
             cache-control] -> record"
        ),
        "{out}"
    );
}

/// A broken variant of GOOD: (what, broken yaml, the text on the offending line, what the message says).
fn broken_configs() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "unknown key",
            GOOD.replace("  idle_timeout: 30s", "  idle_timeout: 30s\n  max_bogus: 1"),
            "max_bogus",
            "unknown field `max_bogus`",
        ),
        ("bad duration", GOOD.replace("header_read_timeout: 5s", "header_read_timeout: 5 years"), "5 years", "unit"),
        ("route without auth", GOOD.replacen("    auth: none\n", "", 1), "- name: users", "missing field `auth`"),
        (
            "undefined upstream",
            GOOD.replacen("upstream: app", "upstream: nowhere", 1),
            "upstream: nowhere",
            "upstream `nowhere` is not defined",
        ),
        (
            "missing environment secret",
            GOOD.replace("PC_TEST_ADMIN_TOKEN", "PC_TEST_SURELY_UNSET"),
            "PC_TEST_SURELY_UNSET",
            "environment variable `PC_TEST_SURELY_UNSET` is not set",
        ),
    ]
}

#[test]
fn check_reports_errors_as_file_line_column_and_exits_1() {
    let mut failures = Vec::new();
    for (what, yaml, _, message) in broken_configs() {
        let (code, out, err, file) = check(&yaml, &[("PC_TEST_ADMIN_TOKEN", SECRET)]);
        let first = err.lines().next().unwrap_or("");
        let rest = first.strip_prefix(&format!("{file}:")).unwrap_or("");
        let parts: Vec<&str> = rest.splitn(3, ':').collect();
        let located = parts.len() == 3
            && parts[0].parse::<usize>().is_ok_and(|l| l >= 1)
            && parts[1].parse::<usize>().is_ok_and(|c| c >= 1)
            && parts[2].starts_with(' ');
        if code != 1 || !located || !first.contains(message) || !out.is_empty() {
            failures.push(format!("{what}: exit {code}\nstdout: {out}\nstderr: {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_points_at_the_offending_line() {
    let mut failures = Vec::new();
    for (what, yaml, needle, _) in broken_configs() {
        let (_, _, err, file) = check(&yaml, &[("PC_TEST_ADMIN_TOKEN", SECRET)]);
        let want = format!("{file}:{}:", line_of(&yaml, needle));
        if !err.starts_with(&want) {
            failures.push(format!("{what}: expected `{want}...`, got {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_never_contain_the_secret_value() {
    let env = [("PC_TEST_ADMIN_TOKEN", SECRET)];
    let mut variants: Vec<String> = broken_configs().into_iter().map(|(_, y, _, _)| y).collect();
    variants.push(GOOD.replace("address: 127.0.0.1:0\n  token", "address: 0.0.0.0:99999\n  token"));
    variants.push(GOOD.replace("upstreams:", "upstreams: [oops"));
    variants
        .push(GOOD.replace("  token: ${env:PC_TEST_ADMIN_TOKEN}", "  token: ${env:PC_TEST_ADMIN_TOKEN}\n  tokn: 1"));
    for yaml in &variants {
        let (code, out, err, _) = check(yaml, &env);
        assert_eq!(code, 1, "{yaml}");
        assert!(!out.contains(SECRET) && !err.contains(SECRET), "secret in: {out}{err}");
        let dir = TempDir::new();
        let file = path_str(&dir.write("gw.yaml", yaml));
        let (code, out, err) = portcullis(&["run", "-c", &file], &env);
        assert_eq!(code, 64, "{out}{err}");
        assert!(!out.contains(SECRET) && !err.contains(SECRET), "secret in: {out}{err}");
    }
}

#[test]
fn run_with_a_broken_config_exits_64_and_says_where() {
    for (what, yaml, _, message) in broken_configs() {
        let dir = TempDir::new();
        let file = path_str(&dir.write("gw.yaml", &yaml));
        let (code, out, err) = portcullis(&["run", "-c", &file], &[("PC_TEST_ADMIN_TOKEN", SECRET)]);
        assert_eq!(code, 64, "{what}: {out}{err}");
        assert!(err.contains(&format!("{file}:")) && err.contains(message), "{what}: {err}");
    }
    let (code, _, err) = portcullis(&["run", "-c", "/nonexistent/portcullis.yaml"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("/nonexistent/portcullis.yaml:1:1: cannot read the config file"), "{err}");
}

#[test]
fn help_works_on_every_command() {
    let (code, out, _) = portcullis(&["--help"], &[]);
    assert_eq!(code, 0);
    let commands: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    for c in ["run", "check", "quickstart"] {
        assert!(commands.iter().any(|x| x == c), "`{c}` missing from --help:\n{out}");
    }
    for c in &commands {
        let (code, out, err) = portcullis(&[c, "--help"], &[]);
        assert_eq!(code, 0, "{c} --help: {err}");
        assert!(out.contains("Usage: portcullis"), "{c} --help: {out}");
    }
    let (code, out, _) = portcullis(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("portcullis {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn version_works_on_every_command() {
    for c in ["run", "check", "quickstart", "keys"] {
        let (code, out, err) = portcullis(&[c, "--version"], &[]);
        assert_eq!(code, 0, "{c} --version: {err}");
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{c} --version: {out}");
    }
}

// ------------------------------------------------------------------------------------------------
// reload
// ------------------------------------------------------------------------------------------------

#[test]
fn sighup_reload_adds_a_route() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", ""));
    assert_eq!(code(&gw, "/a"), 200);
    assert_eq!(code(&gw, "/b"), 404);
    gw.rewrite_config(&config(up.addr, "", &route("b", "/b")));
    gw.signal("HUP");
    assert!(gw.wait_log("SIGHUP received", T));
    assert!(eventually(T, || gw.count_log("configuration reloaded") >= 1), "{}", gw.logs().join("\n"));
    assert_eq!(code(&gw, "/b"), 200);
    assert_eq!(code(&gw, "/a"), 200);
    assert_eq!(metric_of(&gw, "portcullis_reloads_total"), 1.0);
    // A SIGHUP always reloads, even with the file unchanged: certificate or key files it names may
    // have been replaced (certbot-style rotation). A file event with unchanged content does not.
    gw.signal("HUP");
    assert!(eventually(T, || gw.count_log("SIGHUP received") >= 2));
    assert!(eventually(T, || metric_of(&gw, "portcullis_reloads_total") == 2.0));
    assert_eq!(code(&gw, "/b"), 200);
}

#[test]
fn a_config_file_change_is_picked_up_without_a_signal() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", ""));
    assert_eq!(code(&gw, "/b"), 404);
    gw.rewrite_config(&config(up.addr, "", &route("b", "/b")));
    assert!(eventually(Duration::from_secs(3), || code(&gw, "/b") == 200), "{}", gw.logs().join("\n"));
    assert!(!gw.logs().iter().any(|l| l.contains("SIGHUP")));
    // An in-place write (not a rename) is seen too.
    std::fs::write(&gw.config, config(up.addr, "", &format!("{}{}", route("b", "/b"), route("c", "/c")))).unwrap();
    assert!(eventually(Duration::from_secs(3), || code(&gw, "/c") == 200), "{}", gw.logs().join("\n"));
}

#[test]
fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", ""));
    assert_eq!(metric_of(&gw, "portcullis_reload_failures_total"), 0.0);
    let broken =
        config(up.addr, "", &route("b", "/b")).replace("  shutdown_timeout: 5s", "  shutdown_timeout: 5s\n  bogus: 1");
    gw.rewrite_config(&broken);
    gw.signal("HUP");
    assert!(eventually(T, || gw.count_log("reload refused") >= 1), "{}", gw.logs().join("\n"));
    let refused = gw.logs().into_iter().find(|l| l.contains("reload refused")).unwrap();
    assert!(refused.contains("bogus"), "{refused}");
    assert!(eventually(T, || metric_of(&gw, "portcullis_reload_failures_total") >= 1.0));
    assert_eq!(metric_of(&gw, "portcullis_reloads_total"), 0.0);
    assert_eq!(code(&gw, "/a"), 200);
    assert_eq!(code(&gw, "/b"), 404);
    // A change that needs a restart is refused too.
    let moved =
        config(up.addr, "", "").replace("name: main\n    address: 127.0.0.1:0", "name: main\n    address: 127.0.0.1:1");
    gw.rewrite_config(&moved);
    assert!(eventually(T, || gw.count_log("reload refused") >= 2), "{}", gw.logs().join("\n"));
    assert_eq!(code(&gw, "/a"), 200);
    // Fixing the file applies it.
    gw.rewrite_config(&config(up.addr, "", &route("b", "/b")));
    assert!(eventually(T, || code(&gw, "/b") == 200));
    assert_eq!(metric_of(&gw, "portcullis_reloads_total"), 1.0);
    assert!(metric_of(&gw, "portcullis_reload_failures_total") >= 2.0);
}

#[test]
fn ten_reloads_under_load_drop_no_request() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", ""));
    let addr = gw.addr("main");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..3 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut conn = RawConn::connect(addr);
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                i += 1;
                // Client 0 opens a new connection for every request; the others keep theirs alive.
                let resp = if c == 0 {
                    raw(addr, format!("GET /a/{c}/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(), T)
                } else {
                    conn.get(&format!("/a/{c}/{i}"), T)
                };
                if status_of(&resp) == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().unwrap().push(format!("client {c} request {i}: {resp:?}"));
                    conn = RawConn::connect(addr);
                }
            }
        }));
    }
    for n in 1..=10u32 {
        // Every version differs: a new route, and a new upstream section (so pools are rebuilt).
        let yaml = config(up.addr, "", &route(&format!("v{n}"), &format!("/v{n}")))
            .replace("    targets:", &format!("    response_timeout: {}s\n    targets:", 30 + n));
        gw.rewrite_config(&yaml);
        gw.signal("HUP");
        let applied = eventually(T, || gw.count_log("configuration reloaded") >= n as usize);
        assert!(applied, "reload {n} not applied:\n{}", gw.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} failed requests:\n{}", failures.len(), failures.join("\n"));
    assert!(ok.load(Ordering::Relaxed) >= 100, "only {} requests in the run", ok.load(Ordering::Relaxed));
    assert_eq!(metric_of(&gw, "portcullis_reloads_total"), 10.0);
    assert_eq!(metric_of(&gw, "portcullis_reload_failures_total"), 0.0);
    assert_eq!(code(&gw, "/v10"), 200);
    assert_eq!(code(&gw, "/v9"), 404);
}

// ------------------------------------------------------------------------------------------------
// graceful shutdown
// ------------------------------------------------------------------------------------------------

#[test]
fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let up = Upstream::start("app");
    // A drain deadline far beyond every wait below: exiting within them shows the drain ended when the
    // request did, not at the deadline, without reading a clock that a loaded machine could stretch.
    let yaml = config(up.addr, "  shutdown_timeout: 60s", "").replace("  shutdown_timeout: 5s\n", "");
    let mut gw = Gateway::start(&yaml);
    let addr = gw.addr("main");
    let url = format!("http://{addr}/sleep/3000");
    let slow = std::thread::spawn(move || curl(&[&url]));
    assert!(eventually(T, || up.hits() == 1), "the slow request did not arrive");
    // An idle keep-alive connection is closed at once, not held until the deadline.
    let mut idle = RawConn::connect(addr);
    assert_eq!(status_of(&idle.get("/a/idle", T)), 200);
    let signalled = Instant::now();
    gw.signal("TERM");
    assert!(gw.wait_log("shutting down", T));
    assert!(idle.closed_within(Duration::from_secs(10)), "idle connection kept open during the drain");
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()),
        "new connections still accepted after SIGTERM"
    );
    let (code, _, body) = slow.join().unwrap();
    assert_eq!(code, 200, "in-flight request cut: {body}");
    let status = gw.wait_exit(Duration::from_secs(20)).expect("did not exit once the in-flight request ended");
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(20), "{:?}", signalled.elapsed());
    assert!(gw.logs().iter().any(|l| l.contains("all connections closed")));
}

#[test]
fn shutdown_timeout_bounds_the_drain() {
    let up = Upstream::start("app");
    let mut gw = Gateway::start(&config(up.addr, "  shutdown_timeout: 1s", "").replace("  shutdown_timeout: 5s\n", ""));
    // The upstream would answer after a minute and curl gives up after ten seconds: an exit well before
    // that can only be the 1 s deadline (the upper bound leaves a loaded machine seconds of slack).
    let url = format!("http://{}/sleep/60000", gw.addr("main"));
    let slow = std::thread::spawn(move || curl(&[&url]));
    assert!(eventually(T, || up.hits() == 1));
    let signalled = Instant::now();
    let status = gw.terminate(Duration::from_secs(8)).expect("did not exit after shutdown_timeout");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(gw.logs().iter().any(|l| l.contains("shutdown deadline reached")));
    let (code, _, _) = slow.join().unwrap();
    assert_ne!(code, 200);
}

// ------------------------------------------------------------------------------------------------
// admin
// ------------------------------------------------------------------------------------------------

#[test]
fn admin_serves_healthz_and_metrics() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", ""));
    assert_eq!(code(&gw, "/a/x"), 200);
    assert_eq!(code(&gw, "/nope"), 404);
    let admin = gw.addr("admin");
    let (c, headers, body) = curl(&[&format!("http://{admin}/healthz")]);
    assert_eq!(c, 200);
    assert_eq!(body, "{\"status\":\"ok\"}");
    assert_eq!(header_of(&headers, "content-type").as_deref(), Some("application/json"));
    let m = gw.metrics();
    for name in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds",
        "portcullis_active_connections",
        "portcullis_upstream_healthy",
        "portcullis_reloads_total",
        "portcullis_reload_failures_total",
    ] {
        assert!(m.lines().any(|l| l.starts_with(name)), "{name} missing:\n{m}");
    }
    assert_eq!(metric(&m, "portcullis_requests_total{route=\"a\",status=\"2xx\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "portcullis_requests_total{route=\"-\",status=\"4xx\"}"), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, &format!("portcullis_upstream_healthy{{upstream=\"app\",target=\"{}\"}}", up.addr)),
        Some(1.0)
    );
    assert_eq!(metric(&m, "portcullis_request_duration_seconds_count{route=\"a\"}"), Some(1.0), "{m}");
    // Other paths and methods on the admin listener.
    let (c, _, body) = curl(&[&format!("http://{admin}/nope")]);
    assert_eq!((c, problem_type(&body)), (404, problem("not-found")));
    let (c, _, _) = curl(&["-X", "POST", &format!("http://{admin}/metrics")]);
    assert_eq!(c, 405);
}

#[test]
fn active_connections_gauge_follows_open_connections() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", ""));
    let base = metric_of(&gw, "portcullis_active_connections");
    let mut conns: Vec<RawConn> = (0..3).map(|_| RawConn::connect(gw.addr("main"))).collect();
    for c in &mut conns {
        assert_eq!(status_of(&c.get("/a", T)), 200);
    }
    assert_eq!(metric_of(&gw, "portcullis_active_connections"), base + 3.0);
    drop(conns);
    assert!(eventually(T, || metric_of(&gw, "portcullis_active_connections") == base));
}

#[test]
fn metrics_need_the_admin_token_when_one_is_set() {
    let up = Upstream::start("app");
    let yaml = config(up.addr, "", "").replace(
        "admin:\n  address: 127.0.0.1:0\n",
        "admin:\n  address: 127.0.0.1:0\n  token: ${env:PC_TEST_ADMIN_TOKEN}\n",
    );
    let gw = Gateway::start_with_env(&yaml, &[("PC_TEST_ADMIN_TOKEN", SECRET)]);
    let url = format!("http://{}/metrics", gw.addr("admin"));
    let (c, headers, body) = curl(&[&url]);
    assert_eq!(c, 401, "{body}");
    assert_eq!(problem_type(&body), problem("unauthorized"));
    assert!(header_of(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{headers}");
    for wrong in ["Bearer wrong", &format!("Bearer {SECRET}x"), &format!("Basic {SECRET}"), &format!("bearer{SECRET}")]
    {
        let (c, _, _) = curl(&[&url, "-H", &format!("Authorization: {wrong}")]);
        assert_eq!(c, 401, "{wrong}");
    }
    let (c, _, body) = curl(&[&url, "-H", &format!("Authorization: Bearer {SECRET}")]);
    assert_eq!(c, 200);
    assert!(body.contains("portcullis_requests_total"));
    // /healthz stays open for load balancers.
    let (c, _, _) = curl(&[&format!("http://{}/healthz", gw.addr("admin"))]);
    assert_eq!(c, 200);
    assert!(!gw.logs().iter().any(|l| l.contains(SECRET)), "the token was logged");
}

// ------------------------------------------------------------------------------------------------
// access log
// ------------------------------------------------------------------------------------------------

#[test]
fn access_log_has_one_json_line_per_request_and_no_query_values() {
    let up = Upstream::start("app");
    let tls_listener =
        "  - name: tls\n    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - self_signed: [localhost]\n";
    let yaml = config(up.addr, "", "").replace("limits:\n", &format!("{tls_listener}limits:\n"));
    let gw = Gateway::start(&yaml);
    let secret_q = "QuErYsEcReT42";
    let https = format!("https://localhost:{}/a/path?token={secret_q}&x=1", gw.addr("tls").port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr("tls").port());
    let (c, headers, _) =
        curl(&["-k", "--resolve", &resolve, "-X", "POST", "-d", "hello world", "-H", "X-Request-Id: log-1", &https]);
    assert_eq!(c, 200, "{headers}");
    let (c, _, _) =
        curl(&[&format!("http://{}/nowhere?token={secret_q}", gw.addr("main")), "-H", "X-Request-Id: log-2"]);
    assert_eq!(c, 404);
    let (c, _, _) = curl(&[&format!("http://{}/a/plain", gw.addr("main")), "-H", "X-Request-Id: log-3"]);
    assert_eq!(c, 200);
    let lines = gw.wait_access_log(3, T);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let by_id = |id: &str| lines.iter().find(|l| l["request_id"] == id).unwrap_or_else(|| panic!("{id}: {lines:#?}"));
    let tls = by_id("log-1");
    for field in [
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "route",
        "upstream",
        "upstream_ms",
        "tls",
    ] {
        assert!(!tls[field].is_null(), "{field} missing: {tls}");
    }
    assert_eq!(tls["client_ip"], "127.0.0.1");
    assert_eq!(tls["method"], "POST");
    assert_eq!(tls["host"], format!("localhost:{}", gw.addr("tls").port()));
    assert_eq!(tls["path"], "/a/path");
    assert_eq!(tls["status"], 200);
    assert_eq!(tls["bytes_in"], 11);
    assert!(tls["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(tls["route"], "a");
    assert_eq!(tls["upstream"], "app");
    assert!(tls["duration_ms"].as_f64().unwrap() >= tls["upstream_ms"].as_f64().unwrap());
    assert!(tls["tls"].as_str().unwrap().starts_with("TLSv1."), "{tls}");
    let missed = by_id("log-2");
    assert_eq!(missed["status"], 404);
    assert_eq!(missed["path"], "/nowhere");
    assert_eq!(missed["problem"], "not-found");
    assert!(missed["route"].is_null() && missed["upstream"].is_null());
    let plain = by_id("log-3");
    assert_eq!(plain["status"], 200);
    assert!(plain["tls"].is_null(), "{plain}");
    let leaked: Vec<String> = gw.logs().into_iter().filter(|l| l.contains(secret_q)).collect();
    assert!(leaked.is_empty(), "query value logged: {leaked:?}");
    // Every line of the process's output is JSON with one `target` key.
    for l in gw.logs() {
        assert!(serde_json::from_str::<serde_json::Value>(&l).is_ok(), "not JSON: {l}");
        assert_eq!(l.matches("\"target\":").count(), 1, "{l}");
    }
}
