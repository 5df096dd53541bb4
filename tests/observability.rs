//! Metrics, the shipped Grafana dashboard and Prometheus alert rules, and the access log file.
//!
//! The dashboard (`deploy/grafana/portcullis.json`) and the alert rules (`deploy/prometheus/alerts.yml`)
//! are checked against a real gateway's `/metrics` after real traffic: every metric name their
//! expressions use must be exposed, so neither can drift from the code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub)]
mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The quickstart's demo key (role `reader`), declared by its keyed hash.
const READER_KEY: &str = "pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva";

fn deploy(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)).unwrap()
}

/// A gateway with one route per kind of decision the dashboard shows.
/// `siem` is a loopback port nothing listens on: the exporter's small queue fills and drops.
fn config(upstream: std::net::SocketAddr, jwks: std::net::SocketAddr, siem: std::net::SocketAddr) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {upstream}
authenticators:
  keys:
    api_key:
      hmac_secret: quickstart-demo-secret-not-for-production-use
      keys:
        - id: vukq26u5
          hash: 6ea1128b77bcae4b38a66dc0c5bf70d35c2be9dbe79923664fac0a7ee6fdae0e
          principal: demo
          roles: [reader]
  sso:
    jwt:
      issuer: https://idp.test
      audiences: [api]
      algorithms: [RS256]
      jwks_uri: http://{jwks}/jwks
roles:
  reader: {{}}
  admin: {{ includes: [reader] }}
rate_limits:
  tight:
    rate: 1/m
    burst: 1
inspect:
  mode: block
  paranoia: 1
events:
  stdout: true
  exporters:
    - name: siem
      syslog: {{ address: "{siem}", transport: tcp, format: cef }}
      queue: 2
routes:
  - name: private
    match:
      path: {{ prefix: /private }}
    upstream: app
    auth: keys
    authorize:
      roles: [reader]
      methods:
        DELETE: {{ roles: [admin] }}
  - name: sso
    match:
      path: {{ prefix: /sso }}
    upstream: app
    auth: sso
    authorize: authenticated
  - name: limited
    match:
      path: {{ prefix: /limited }}
    upstream: app
    auth: none
    rate_limits: [tight]
  - name: open
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: none
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

/// The sum of the samples of `name` whose labels contain every one of `labels` (`key="value"`).
fn sum_of(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|want| rest.contains(want))).then(|| value.parse::<f64>().ok())?
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Every metric name a Prometheus scraping `text` can query: sample names, and the names `# TYPE`
/// declares (a histogram's with `_bucket`, `_sum` and `_count`), so a family without samples yet counts.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_owned());
        }
    }
    names
}

/// The `portcullis_*` metric names an expression uses.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("portcullis_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Brackets balance and nest (a cheap syntax check of a PromQL expression; label values hold none).
fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    for c in expr.chars() {
        match c {
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = stack.pop();
                if open
                    != Some(match c {
                        ')' => '(',
                        ']' => '[',
                        _ => '{',
                    })
                {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty()
}

/// The dashboard's panel expressions, after checking the model's structure.
fn dashboard_exprs() -> Vec<String> {
    let dash: serde_json::Value = serde_json::from_str(&deploy("grafana/portcullis.json")).expect("dashboard JSON");
    assert!(dash["id"].is_null(), "an importable model has no database id");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()) && dash["title"] == "Portcullis");
    let vars = dash["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").expect("a datasource variable");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id {}", p["id"]);
        let title = p["title"].as_str().unwrap().to_owned();
        let pos = &p["gridPos"];
        assert!(pos["w"].as_u64().unwrap() + pos["x"].as_u64().unwrap() <= 24, "{title}: wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: use the datasource variable");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(balanced(expr), "{title}: unbalanced brackets in {expr}");
            exprs.push(expr.to_owned());
        }
        titles.push(title);
    }
    for wanted in [
        "Request rate",
        "4xx and 5xx ratio",
        "Total latency",
        "Upstream latency",
        "Authentication failures",
        "Authorization denials",
        "Rate-limit rejections",
        "Inspection detections",
        "Security events",
        "Exporter queue depth",
        "Exporter events sent / retried / dropped",
        "JWKS refreshes",
        "Config reloads",
        "Active connections",
    ] {
        assert!(titles.iter().any(|t| t.starts_with(wanted)), "no panel `{wanted}…` in {titles:?}");
    }
    exprs
}

/// The alert rules' expressions, after checking each rule's structure.
fn alert_exprs() -> Vec<String> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&deploy("prometheus/alerts.yml")).expect("alerts YAML");
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert").to_owned();
            assert!(names.insert(name.clone()), "duplicate alert {name}");
            let expr = rule["expr"].as_str().unwrap();
            assert!(balanced(expr), "{name}: unbalanced brackets");
            let for_ = rule["for"].as_str().unwrap_or_else(|| panic!("{name}: no `for:`"));
            let (n, unit) = for_.split_at(for_.len() - 1);
            assert!(n.parse::<u32>().is_ok() && ["s", "m", "h"].contains(&unit), "{name}: for: {for_}");
            let severity = rule["labels"]["severity"].as_str();
            assert!(matches!(severity, Some("critical" | "warning" | "info")), "{name}: severity {severity:?}");
            for a in ["summary", "description"] {
                assert!(rule["annotations"][a].as_str().is_some_and(|s| s.len() > 10), "{name}: no {a}");
            }
            let known = ["alert", "expr", "for", "labels", "annotations", "keep_firing_for"];
            for key in rule.as_mapping().unwrap().keys() {
                assert!(known.contains(&key.as_str().unwrap()), "{name}: unknown key {key:?}");
            }
            exprs.push(expr.to_owned());
        }
    }
    // The alerts the issue asks for, by the metric each one watches.
    for needle in [
        "portcullis_jwks_refreshes_total{result=\"failed\"}",
        "portcullis_exporter_events_total{result=\"dropped\"}",
        "portcullis_requests_total{status=\"5xx\"}",
        "portcullis_authn_failures_total",
        "portcullis_reload_failures_total",
    ] {
        assert!(exprs.iter().any(|e| e.contains(needle)), "no alert on {needle}");
    }
    exprs
}

fn scrape(gw: &Gateway, accept: &str) -> (String, String) {
    let (code, headers, body) =
        curl(&["-H", &format!("accept: {accept}"), &format!("http://{}/metrics", gw.addr("admin"))]);
    assert_eq!(code, 200, "{body}");
    let ctype = headers
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    (ctype, body)
}

/// Scrapes (Prometheus text) until `name{labels}` sums to at least `min`.
fn wait_metric(gw: &Gateway, name: &str, labels: &[&str], min: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(gw, "text/plain").1;
        if sum_of(&text, name, labels).is_some_and(|v| v >= min) || Instant::now() > deadline {
            assert!(sum_of(&text, name, labels).is_some_and(|v| v >= min), "{name}{labels:?} < {min}:\n{text}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_cover_the_dashboard_and_the_alerts_after_real_traffic() {
    let up = Upstream::start("app");
    let jwks = closed_port(); // the JWT authenticator's key server is down: refreshes fail
    let yaml = config(up.addr, jwks, closed_port());
    let gw = Gateway::start(&yaml);
    let base = format!("http://{}", gw.addr("main"));
    let get = |path: &str, extra: &[&str]| {
        let url = format!("{base}{path}");
        let mut args = extra.to_vec();
        args.push(&url);
        curl(&args).0
    };
    for _ in 0..3 {
        assert_eq!(get("/open/x", &[]), 200);
    }
    assert_eq!(get("/status/503", &[]), 503);
    assert_eq!(get("/open/search?q=1'%20OR%20'1'='1", &[]), 403);
    assert_eq!(get("/private/x", &[]), 401);
    assert_eq!(get("/private/x", &["-H", "x-api-key: pcs_vukq26u5_wrongwrongwrongwrongwrongwrongwrongwrongwron"]), 401);
    assert_eq!(get("/private/x", &["-H", &format!("x-api-key: {READER_KEY}")]), 200);
    assert_eq!(get("/private/x", &["-X", "DELETE", "-H", &format!("x-api-key: {READER_KEY}")]), 403);
    assert_eq!(get("/sso/x", &["-H", "authorization: Bearer not.a.token"]), 401);
    let limited: Vec<u16> = (0..3).map(|_| get("/limited/x", &[])).collect();
    assert!(limited.contains(&429), "{limited:?}");

    // A reload that works, then one that is refused (the running config stays).
    gw.signal("HUP");
    wait_metric(&gw, "portcullis_reloads_total", &[], 1.0);
    gw.rewrite_config(&yaml.replace("rate: 1/m", "rate: nonsense"));
    gw.signal("HUP");
    wait_metric(&gw, "portcullis_reload_failures_total", &[], 1.0);

    // The dead collector: more events than its queue holds were dropped, none sent.
    wait_metric(&gw, "portcullis_exporter_events_total", &["exporter=\"siem\"", "result=\"dropped\""], 1.0);

    // Each of the issue's metrics, with the labels the dashboard and the alerts group by.
    let text =
        wait_metric(&gw, "portcullis_jwks_refreshes_total", &["authenticator=\"sso\"", "result=\"failed\""], 1.0);
    let at_least = |name: &str, labels: &[&str], min: f64| {
        let v = sum_of(&text, name, labels);
        assert!(v.is_some_and(|v| v >= min), "{name}{labels:?} = {v:?}, want >= {min}:\n{text}");
    };
    at_least("portcullis_requests_total", &["route=\"open\"", "status=\"2xx\""], 3.0);
    at_least("portcullis_requests_total", &["route=\"open\"", "status=\"5xx\""], 1.0);
    at_least("portcullis_requests_total", &["route=\"private\"", "status=\"4xx\""], 3.0);
    at_least("portcullis_request_duration_seconds_bucket", &["route=\"open\"", "le=\"+Inf\""], 5.0);
    at_least("portcullis_request_duration_seconds_count", &["route=\"private\""], 4.0);
    at_least("portcullis_authn_failures_total", &["method=\"api_key\"", "reason=\""], 2.0);
    at_least("portcullis_authn_failures_total", &["method=\"jwt\"", "reason=\""], 1.0);
    at_least("portcullis_authz_decisions_total", &["route=\"private\"", "decision=\"deny\"", "rule=\""], 1.0);
    at_least("portcullis_authz_decisions_total", &["route=\"private\"", "decision=\"allow\""], 1.0);
    at_least("portcullis_rate_limited_total", &["route=\"limited\"", "limit=\"tight\""], 1.0);
    at_least("portcullis_inspect_detections_total", &["category=\"", "action=\"block\""], 1.0);
    at_least("portcullis_security_events_total", &["type=\"authn.failure\""], 3.0);
    at_least("portcullis_rejections_total", &[], 5.0);
    at_least("portcullis_exporter_events_total", &["exporter=\"stdout\"", "result=\"dropped\""], 0.0);
    at_least("portcullis_exporter_queue_depth", &["exporter=\"siem\""], 0.0);
    at_least("portcullis_exporter_events_total", &["exporter=\"siem\"", "result=\"sent\""], 0.0);
    at_least("portcullis_active_connections", &[], 0.0);
    at_least("portcullis_upstream_duration_seconds_count", &["route=\"open\""], 4.0);

    // Nothing the dashboard or the alerts query is missing from what the gateway exposes.
    let have = exposed(&text);
    for (what, exprs) in [("dashboard", dashboard_exprs()), ("alerts.yml", alert_exprs())] {
        let used: BTreeSet<String> = exprs.iter().flat_map(|e| names_in(e)).collect();
        assert!(used.len() >= 5, "{what}: {used:?}");
        let missing: Vec<_> = used.difference(&have).collect();
        assert!(missing.is_empty(), "{what} uses metrics the gateway does not expose: {missing:?}");
    }
}

#[test]
fn metrics_are_openmetrics_when_asked_and_prometheus_text_otherwise() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&basic_config(up.addr, ""));
    assert_eq!(curl(&[&format!("http://{}/x", gw.addr("main"))]).0, 200);
    wait_metric(&gw, "portcullis_requests_total", &["route=\"app\""], 1.0);

    // What Prometheus sends when it prefers OpenMetrics.
    let prometheus =
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,\
                      text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let (ctype, om) = scrape(&gw, prometheus);
    assert_eq!(ctype, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE portcullis_requests counter\n"), "{om}");

    for accept in ["text/plain;version=0.0.4", "*/*"] {
        let (ctype, text) = scrape(&gw, accept);
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8", "{accept}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(text.contains("# TYPE portcullis_requests_total counter\n"), "{text}");
        assert!(text.contains("# TYPE portcullis_request_duration_seconds histogram\n"), "{text}");
        assert_eq!(sum_of(&text, "portcullis_requests_total", &["route=\"app\"", "status=\"2xx\""]), Some(1.0));
    }
}

/// Requests made and answered 200, counted by the load threads.
fn load(
    addr: std::net::SocketAddr,
    threads: usize,
    each: usize,
    done: Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut conn = RawConn::connect(addr);
                for i in 0..each {
                    let resp = conn.get(&format!("/load/{t}/{i}"), Duration::from_secs(10));
                    assert_eq!(status_of(&resp), 200, "{resp}");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect()
}

fn access_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn access_log_file_is_reopened_on_sigusr1_and_loses_no_line() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let log = dir.path("access.log");
    let rotated = dir.path("access.log.1");
    let yaml = basic_config(up.addr, "").replace(
        "logging:\n  level: info\n",
        &format!("logging:\n  level: info\n  access_log_file: {}\n", path_str(&log)),
    );
    let gw = Gateway::start_in(dir, &yaml);
    let addr = gw.addr("main");

    let done = Arc::new(AtomicUsize::new(0));
    let (threads, each) = (4, 150);
    let workers = load(addr, threads, each, done.clone());
    // Rotate the logrotate way in the middle of the load: move the file, then SIGUSR1.
    while done.load(Ordering::SeqCst) < threads * each / 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("USR1");
    for w in workers {
        w.join().unwrap();
    }
    let mut made = threads * each;
    // The reopen happens at the first line written after the signal: requests until one lands in the
    // new file (counted, so the total below stays exact).
    let deadline = Instant::now() + Duration::from_secs(10);
    while access_lines(&log).is_empty() {
        assert!(Instant::now() < deadline, "no line in the reopened file");
        assert_eq!(curl(&[&format!("http://{addr}/after")]).0, 200);
        made += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (old, new) = loop {
        let (old, new) = (access_lines(&rotated), access_lines(&log));
        if old.len() + new.len() >= made || Instant::now() > deadline {
            break (old, new);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(old.len() + new.len(), made, "access lines across both files = requests made");
    // Lines still queued at the signal may land in either file; both files have lines.
    assert!(!old.is_empty() && !new.is_empty(), "{} lines before the rotation, {} after", old.len(), new.len());
    assert!(old.iter().chain(&new).all(|v| v["target"] == "access" && v["status"] == 200));
    // Each request exactly once.
    let paths: Vec<&str> = old.iter().chain(&new).map(|v| v["path"].as_str().unwrap()).collect();
    let load_paths: BTreeSet<&&str> = paths.iter().filter(|p| p.starts_with("/load/")).collect();
    assert_eq!(load_paths.len(), threads * each, "every load request logged once");
    assert_eq!(paths.iter().filter(|p| **p == "/after").count(), made - threads * each);
    // Other log lines stay on stdout, access lines leave it.
    assert!(gw.logs().iter().any(|l| l.contains("\"listening\"")));
    assert!(gw.access_log().is_empty(), "access lines on stdout");
}

#[test]
fn an_access_log_file_that_cannot_be_opened_refuses_to_start() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let yaml = basic_config(up.addr, "").replace(
        "logging:\n  level: info\n",
        "logging:\n  level: info\n  access_log_file: /nonexistent-dir/access.log\n",
    );
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (code, _, stderr) = portcullis(&["run", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("logging.access_log_file"), "{stderr}");
}

/// A stray SIGUSR1 (a logrotate rule left behind after the access log went back to stdout) is
/// ignored: the gateway keeps serving and logging.
#[test]
fn sigusr1_without_an_access_log_file_is_ignored() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&basic_config(up.addr, ""));
    let url = format!("http://{}/a", gw.addr("main"));
    assert_eq!(curl(&[&url]).0, 200);
    gw.signal("USR1");
    gw.signal("USR1");
    assert_eq!(curl(&[&url]).0, 200, "still serving after SIGUSR1");
    assert_eq!(gw.wait_access_log(2, std::time::Duration::from_secs(5)).len(), 2);
}
