//! `portcullis scan config`: every rule fires on a config that has its flaw (rule id, severity,
//! line:column) and stays quiet on the fixed one; suppressions; the quickstart scans clean above `low`;
//! SARIF validates against the vendored SARIF 2.1.0 schema; JSON shape; `--fail-on` exit codes;
//! `--compliance`; hostile configs exit 2 with the loader's message, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use serde_json::Value;

const ENV: [(&str, &str); 1] = [("SCAN_TEST_SECRET", "0123456789abcdef0123456789abcdef-scan")];

const HEAD: &str = "listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: 127.0.0.1:9000
";

const JWT: &str = "  jwt-a:
    jwt:
      issuer: https://idp.example
      audiences: [api]
      algorithms: [ES256]
      jwks_uri: https://idp.example/jwks
      max_lifetime: 1h
      max_token_age: 1h
";

/// Writes `yaml` and scans it; returns the exit code, the JSON report and stderr.
fn scan(dir: &TempDir, yaml: &str, args: &[&str]) -> (i32, Value, String) {
    let path = dir.0.join("gw.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = path.to_str().unwrap();
    let mut all = vec!["scan", "config", "-c", p, "--format", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = portcullis(&all, &ENV);
    assert!(!err.contains("panicked"), "{err}");
    let json = if code == 2 {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
    };
    (code, json, err)
}

/// Line and column (1-based) of the first occurrence of `needle`.
fn locate(yaml: &str, needle: &str) -> (u64, u64) {
    for (i, line) in yaml.lines().enumerate() {
        if let Some(c) = line.find(needle) {
            return (i as u64 + 1, c as u64 + 1);
        }
    }
    panic!("`{needle}` is not in the fixture")
}

fn of<'a>(report: &'a Value, rule: &str) -> Vec<&'a Value> {
    report["findings"].as_array().unwrap().iter().filter(|f| f["rule"] == rule).collect()
}

/// One rule: `bad` has the flaw at `needle` with `severity`; `good` does not.
struct Case {
    rule: &'static str,
    severity: &'static str,
    needle: &'static str,
    bad: String,
    good: String,
}

fn cases() -> Vec<Case> {
    let jwt_route = |authorize: &str| {
        format!("{HEAD}authenticators:\n{JWT}roles:\n  reader: {{}}\n  admin: {{ includes: [reader] }}\nroutes:\n  - name: orders\n    match: {{ path: {{ prefix: /orders }} }}\n    upstream: app\n    auth: jwt-a\n    {authorize}\n")
    };
    let admin_route = |roles: &str| {
        format!("{HEAD}authenticators:\n{JWT}roles:\n  reader: {{}}\n  admin: {{ includes: [reader] }}\nroutes:\n  - name: console\n    match: {{ path: {{ prefix: /admin }} }}\n    upstream: app\n    auth: jwt-a\n    authorize: {{ roles: [{roles}] }}\n")
    };
    let keys = |auth: &str| {
        format!("{HEAD}authenticators:\n{JWT}  keys:\n    api_key:\n      hmac_secret: ${{env:SCAN_TEST_SECRET}}\nroutes:\n  - name: internal\n    match: {{ path: {{ prefix: /internal/jobs }} }}\n    upstream: app\n    auth: {auth}\n    authorize: {{ roles: [ops] }}\n")
    };
    let login = |limits: &str| {
        format!("{HEAD}rate_limits:\n  login: {{ rate: 5/s }}\nroutes:\n  - name: sign-in\n    match: {{ path: {{ exact: /api/login }} }}\n    upstream: app\n    auth: none\n{limits}")
    };
    let jwt_only = |jwt: &str| format!("{HEAD}authenticators:\n  jwt-a:\n    jwt:\n{jwt}routes: []\n");
    let intro = |extra: &str| {
        format!("{HEAD}authenticators:\n  idp:\n    introspection:\n      endpoint: https://idp.example/introspect\n      client_id: gw\n      client_secret: ${{env:SCAN_TEST_SECRET}}\n{extra}routes: []\n")
    };
    let declared = |extra: &str| {
        format!("{HEAD}authenticators:\n  demo:\n    api_key:\n      hmac_secret: ${{env:SCAN_TEST_SECRET}}\n      keys:\n        - id: k1\n          hash: 6ea1128b77bcae4b38a66dc0c5bf70d35c2be9dbe79923664fac0a7ee6fdae0e\n          principal: p1\n{extra}routes: []\n")
    };
    let cors = |origin: &str| {
        format!("{HEAD}routes:\n  - name: web\n    match: {{ path: {{ prefix: /web }} }}\n    upstream: app\n    auth: none\n    cors:\n      allow_origins: [\"{origin}\"]\n      allow_credentials: true\n")
    };
    let tls = |hsts: &str| {
        format!("listeners:\n  - name: main\n    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - self_signed: [localhost]\n      hsts: {hsts}\nroutes: []\n")
    };
    let inspect = |mode: &str| {
        format!("{HEAD}inspect:\n  mode: {mode}\nroutes:\n  - name: comments\n    match: {{ path: {{ prefix: /comments }}, methods: [POST] }}\n    upstream: app\n    auth: none\n")
    };
    let shadow = |open: &str| {
        format!("{HEAD}authenticators:\n{JWT}routes:\n  - name: api\n    match: {{ path: {{ prefix: /api }} }}\n    upstream: app\n    auth: jwt-a\n    authorize: {{ roles: [admin] }}\n  - name: open\n    match: {{ path: {{ prefix: {open} }} }}\n    upstream: app\n    auth: none\n")
    };
    let headers = |respond: &str| {
        format!("{HEAD}routes:\n  - name: page\n    match: {{ path: {{ prefix: /page }} }}\n    upstream: app\n    auth: none\n{respond}")
    };
    let plain = |l: &str| format!("listeners:\n  - name: http\n{l}routes: []\n");
    vec![
        Case { rule: "PC-AUTHZ-001", severity: "medium", needle: "authorize", bad: jwt_route("authorize: authenticated"), good: jwt_route("authorize: { roles: [reader] }") },
        Case { rule: "PC-AUTHZ-002", severity: "high", needle: "authorize", bad: admin_route("reader"), good: admin_route("admin") },
        Case { rule: "PC-AUTHZ-003", severity: "high", needle: "auth: ", bad: keys("keys"), good: keys("{ all_of: [keys, jwt-a] }") },
        Case { rule: "PC-LIMIT-001", severity: "medium", needle: "match:", bad: login(""), good: login("    rate_limits: [login]\n") },
        Case { rule: "PC-JWT-001", severity: "high", needle: "audiences", bad: jwt_only("      issuer: https://idp.example\n      audiences: []\n      algorithms: [ES256]\n      max_lifetime: 1h\n"), good: jwt_only("      issuer: https://idp.example\n      audiences: [api]\n      algorithms: [ES256]\n      max_lifetime: 1h\n") },
        Case { rule: "PC-JWT-002", severity: "medium", needle: "max_lifetime", bad: jwt_only("      issuer: https://idp.example\n      audiences: [api]\n      algorithms: [ES256]\n      max_lifetime: 30d\n"), good: jwt_only("      issuer: https://idp.example\n      audiences: [api]\n      algorithms: [ES256]\n      max_lifetime: 1h\n") },
        Case { rule: "PC-INTRO-001", severity: "high", needle: "introspection", bad: intro(""), good: intro("      audiences: [api]\n") },
        Case { rule: "PC-KEY-001", severity: "medium", needle: "keys:", bad: declared(""), good: declared("          expires_at: 4102444800\n") },
        Case { rule: "PC-CORS-001", severity: "critical", needle: "\"*\"", bad: cors("*"), good: cors("https://app.example") },
        Case { rule: "PC-TLS-001", severity: "medium", needle: "hsts", bad: tls("false"), good: tls("true") },
        Case { rule: "PC-NET-001", severity: "high", needle: "172.", bad: format!("{HEAD}trusted_proxies:\n  - 10.0.0.0/8\n  - 172.0.0.0/8\nroutes: []\n"), good: format!("{HEAD}trusted_proxies:\n  - 10.0.0.0/8\n  - 172.16.0.0/12\nroutes: []\n") },
        Case { rule: "PC-INSPECT-001", severity: "medium", needle: "mode", bad: inspect("detect"), good: inspect("block") },
        Case { rule: "PC-UPSTREAM-001", severity: "medium", needle: "address: 10.", bad: HEAD.replace("127.0.0.1:9000", "10.1.2.3:80") + "routes: []\n", good: format!("{HEAD}routes: []\n") },
        Case { rule: "PC-SECRET-001", severity: "high", needle: "hmac_secret", bad: format!("{HEAD}authenticators:\n  keys:\n    api_key:\n      hmac_secret: a-literal-secret-of-thirty-two-bytes!!\nroutes: []\n"), good: format!("{HEAD}authenticators:\n  keys:\n    api_key:\n      hmac_secret: ${{env:SCAN_TEST_SECRET}}\nroutes: []\n") },
        Case { rule: "PC-ROUTE-001", severity: "medium", needle: "match: { path: { prefix: /api/", bad: shadow("/api/open"), good: shadow("/other/open") },
        Case { rule: "PC-HDR-001", severity: "medium", needle: "content_security_policy", bad: headers("    respond:\n      security_headers:\n        content_security_policy: false\n"), good: headers("    respond:\n      security_headers:\n        referrer_policy: same-origin\n") },
        Case { rule: "PC-HTTP-001", severity: "low", needle: "redirect_https_port", bad: plain("    address: 127.0.0.1:0\n    redirect_https_port: 8443\n"), good: plain("    address: 127.0.0.1:0\n    plain_http: refuse\n") },
        Case { rule: "PC-HTTP-002", severity: "high", needle: "address", bad: plain("    address: 0.0.0.0:8080\n"), good: plain("    address: 127.0.0.1:8080\n") },
    ]
}

#[test]
fn each_rule_fires_on_its_flaw_with_line_and_column_and_not_on_the_fix() {
    let dir = TempDir::new();
    for case in cases() {
        let (code, report, err) = scan(&dir, &case.bad, &["--fail-on", "critical"]);
        assert_ne!(code, 2, "{}: {err}\n{}", case.rule, case.bad);
        let found = of(&report, case.rule);
        assert_eq!(found.len(), 1, "{}: {report:#}\n{}", case.rule, case.bad);
        let f = found[0];
        assert_eq!(f["severity"], case.severity, "{}: {f:#}", case.rule);
        let (line, column) = locate(&case.bad, case.needle);
        assert_eq!(
            (f["location"]["line"].as_u64(), f["location"]["column"].as_u64()),
            (Some(line), Some(column)),
            "{}: {f:#}\n{}",
            case.rule,
            case.bad
        );
        assert!(f["location"]["file"].as_str().unwrap().ends_with("gw.yaml"));
        assert!(!f["fix"].as_str().unwrap().is_empty());
        assert_eq!(code, i32::from(case.severity == "critical"), "{}: exit code with --fail-on critical", case.rule);

        let (code, report, err) = scan(&dir, &case.good, &["--fail-on", "critical"]);
        assert_ne!(code, 2, "{}: {err}", case.rule);
        assert!(of(&report, case.rule).is_empty(), "{} on the fixed config: {report:#}\n{}", case.rule, case.good);
    }
}

/// Every rule's id is documented, and every rule in the docs is one the audit knows.
#[test]
fn every_rule_is_tested_and_documented() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scan.md")).unwrap();
    let tested: Vec<&str> = cases().iter().map(|c| c.rule).collect();
    let dir = TempDir::new();
    let path = dir.0.join("gw.yaml");
    std::fs::write(&path, format!("{HEAD}routes: []\n")).unwrap();
    let (_, out, _) = portcullis(&["scan", "config", "-c", path.to_str().unwrap(), "--format", "sarif"], &ENV);
    let log: Value = serde_json::from_str(&out).unwrap();
    for rule in log["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap() {
        let id = rule["id"].as_str().unwrap();
        assert!(docs.contains(id), "{id} is not in docs/scan.md");
        let elsewhere = ["PC-KEY-002", "PC-KEY-003", "PC-SCAN-001", "PC-SCAN-002"];
        assert!(tested.contains(&id) || elsewhere.contains(&id), "{id} has no case");
    }
}

#[test]
fn api_keys_in_the_sqlite_store_are_audited_read_only() {
    let dir = TempDir::new();
    let store = dir.0.join("keys.db");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    {
        let conn = rusqlite::Connection::open(&store).unwrap();
        conn.execute_batch(
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, principal TEXT NOT NULL,
               roles TEXT NOT NULL DEFAULT '[]', scopes TEXT NOT NULL DEFAULT '[]', allowed_cidrs TEXT NOT NULL DEFAULT '[]',
               created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER, grace_until INTEGER, rotated_to TEXT);",
        )
        .unwrap();
        let insert = "INSERT INTO api_keys (id, hash, principal, created_at, expires_at, revoked_at) VALUES (?1, ?2, 'p', ?3, ?4, ?5)";
        conn.execute(
            insert,
            rusqlite::params!["old", vec![1u8], now - 200 * 86_400, Option::<i64>::None, Option::<i64>::None],
        )
        .unwrap();
        conn.execute(
            insert,
            rusqlite::params!["fresh", vec![2u8], now - 86_400, Some(now + 86_400), Option::<i64>::None],
        )
        .unwrap();
        conn.execute(
            insert,
            rusqlite::params!["revoked", vec![3u8], now - 400 * 86_400, Option::<i64>::None, Some(now)],
        )
        .unwrap();
    }
    let before = std::fs::read(&store).unwrap();
    let yaml = format!(
        "{HEAD}authenticators:\n  keys:\n    api_key:\n      hmac_secret: ${{env:SCAN_TEST_SECRET}}\n      store: {}\nroutes: []\n",
        store.display()
    );
    let (code, report, err) = scan(&dir, &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    let (line, column) = locate(&yaml, "store:");
    for rule in ["PC-KEY-001", "PC-KEY-002"] {
        let f = of(&report, rule);
        assert_eq!(f.len(), 1, "{rule}: {report:#}");
        assert_eq!(
            (f[0]["location"]["line"].as_u64(), f[0]["location"]["column"].as_u64()),
            (Some(line), Some(column))
        );
        let message = f[0]["message"].as_str().unwrap();
        assert!(message.contains("old") && !message.contains("fresh") && !message.contains("revoked"), "{message}");
    }
    // A longer policy: the 200-day key is within it.
    let (_, report, _) = scan(&dir, &yaml, &["--store-age-policy", "365d"]);
    assert!(of(&report, "PC-KEY-002").is_empty(), "{report:#}");
    assert_eq!(std::fs::read(&store).unwrap(), before, "the scan changed the store");
    assert!(!dir.0.join("keys.db-wal").exists());

    // A store that is not there is said so (at info), and not created.
    let missing = dir.0.join("missing.db");
    let yaml = yaml.replace(store.to_str().unwrap(), missing.to_str().unwrap());
    let (code, report, _) = scan(&dir, &yaml, &["--fail-on", "info"]);
    assert_eq!(code, 1);
    let f = of(&report, "PC-KEY-003");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["severity"], "info");
    assert!(!missing.exists());
}

const SECRET_LINE: &str = "      hmac_secret: a-literal-secret-of-thirty-two-bytes!!";

fn with_secret(comment: &str) -> String {
    format!("{HEAD}authenticators:\n  keys:\n    api_key:\n{comment}{SECRET_LINE}\nroutes: []\n")
}

#[test]
fn suppressions_are_listed_apart_with_their_reason() {
    let dir = TempDir::new();
    // On the line itself.
    let yaml = format!("{HEAD}authenticators:\n  keys:\n    api_key:\n{SECRET_LINE}  # portcullis-scan: allow PC-SECRET-001 test fixture only\nroutes: []\n");
    let (code, report, _) = scan(&dir, &yaml, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert!(of(&report, "PC-SECRET-001").is_empty());
    let s = &report["suppressed"][0];
    assert_eq!((s["rule"].as_str(), s["suppressed"].as_str()), (Some("PC-SECRET-001"), Some("test fixture only")));
    assert_eq!(report["summary"]["suppressed"], 1);

    // On the line above (comment lines between are fine).
    let (code, report, _) = scan(
        &dir,
        &with_secret(
            "      # portcullis-scan: allow PC-SECRET-001 rotated weekly by the demo\n      # another comment\n",
        ),
        &[],
    );
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["suppressed"][0]["suppressed"], "rotated weekly by the demo");

    // Another rule's id suppresses nothing, and is reported unused at info.
    let (code, report, _) = scan(&dir, &with_secret("      # portcullis-scan: allow PC-CORS-001 wrong rule\n"), &[]);
    assert_eq!(code, 1);
    assert_eq!(of(&report, "PC-SECRET-001").len(), 1);
    let unused = of(&report, "PC-SCAN-002");
    assert_eq!(unused.len(), 1, "{report:#}");
    assert_eq!(unused[0]["severity"], "info");
    assert_eq!(
        unused[0]["location"]["line"].as_u64(),
        Some(locate(&with_secret("      # portcullis-scan: allow PC-CORS-001 wrong rule\n"), "# portcullis-scan").0)
    );

    // Without a reason: ignored, and itself a finding.
    let yaml = with_secret("      # portcullis-scan: allow PC-SECRET-001\n");
    let (code, report, _) = scan(&dir, &yaml, &[]);
    assert_eq!(code, 1);
    assert_eq!(of(&report, "PC-SECRET-001").len(), 1, "{report:#}");
    let missing = of(&report, "PC-SCAN-001");
    assert_eq!(missing.len(), 1, "{report:#}");
    assert_eq!(missing[0]["severity"], "low");
    assert!(report["suppressed"].as_array().unwrap().is_empty());

    // The table lists them in their own section, reason kept.
    let path = dir.0.join("gw.yaml");
    std::fs::write(&path, with_secret("      # portcullis-scan: allow PC-SECRET-001 test fixture only\n")).unwrap();
    let (code, out, _) = portcullis(&["scan", "config", "-c", path.to_str().unwrap()], &ENV);
    assert_eq!(code, 0, "{out}");
    let section = out.split("Suppressed (1):").nth(1).unwrap_or_else(|| panic!("{out}"));
    assert!(section.contains("PC-SECRET-001") && section.contains("reason: test fixture only"), "{out}");
}

#[test]
fn the_quickstart_scans_with_no_unsuppressed_finding_above_low() {
    let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml");
    let (code, out, err) =
        portcullis(&["scan", "config", "-c", quickstart, "--format", "json", "--fail-on", "medium"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let above: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !matches!(f["severity"].as_str(), Some("low" | "info")))
        .collect();
    assert!(above.is_empty(), "{above:#?}");
    // Its demo shortcuts are marked where they live, with reasons.
    let suppressed: Vec<&str> =
        report["suppressed"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect();
    for rule in ["PC-SECRET-001", "PC-KEY-001", "PC-HTTP-001"] {
        assert!(suppressed.contains(&rule), "{rule}: {suppressed:?}");
    }
    assert!(report["findings"].as_array().unwrap().iter().all(|f| f["rule"] != "PC-SCAN-002"), "stale suppression");
}

/// A config with findings of most kinds, one suppressed, as SARIF with the compliance section.
fn sarif_of(dir: &TempDir) -> Value {
    let yaml = cases().into_iter().find(|c| c.rule == "PC-CORS-001").unwrap().bad.replace(
        "      allow_origins: [\"*\"]\n",
        "      allow_origins: [\"*\"]  # portcullis-scan: allow PC-CORS-001 test: the \"reason\" <kept> as written\n",
    ) + "trusted_proxies: [0.0.0.0/0]\n";
    let path = dir.0.join("sarif dir");
    std::fs::create_dir_all(&path).unwrap();
    let path = path.join("gw.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, out, err) =
        portcullis(&["scan", "config", "-c", path.to_str().unwrap(), "--format", "sarif", "--compliance"], &ENV);
    assert_eq!(code, 1, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn sarif_validates_against_the_sarif_2_1_0_schema() {
    let dir = TempDir::new();
    let log = sarif_of(&dir);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sarif-2.1.0.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&log).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{log:#}");
    // The schema is really applied: a broken log fails it.
    let mut broken = log.clone();
    broken["runs"][0]["results"][0]["level"] = "severe".into();
    assert!(!validator.is_valid(&broken));

    let run = &log["runs"][0];
    assert_eq!(log["version"], "2.1.0");
    let results = run["results"].as_array().unwrap();
    let cors = results.iter().find(|r| r["ruleId"] == "PC-CORS-001").unwrap();
    assert_eq!(cors["suppressions"][0]["kind"], "inSource");
    assert_eq!(cors["suppressions"][0]["justification"], "test: the \"reason\" <kept> as written");
    let net = results.iter().find(|r| r["ruleId"] == "PC-NET-001").unwrap();
    assert_eq!(net["level"], "error");
    let loc = &net["locations"][0]["physicalLocation"];
    assert!(loc["artifactLocation"]["uri"].as_str().unwrap().ends_with("sarif%20dir/gw.yaml"), "{loc}");
    assert!(loc["region"]["startLine"].as_u64().unwrap() > 1);
    let index = net["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(run["tool"]["driver"]["rules"][index]["id"], "PC-NET-001");
    assert_eq!(run["properties"]["compliance"].as_array().unwrap().len(), 10);
}

#[test]
fn json_shape_and_fail_on_exit_codes() {
    let dir = TempDir::new();
    // One medium finding (a login route without a rate limit).
    let yaml = cases().into_iter().find(|c| c.rule == "PC-LIMIT-001").unwrap().bad;
    let (code, report, _) = scan(&dir, &yaml, &[]);
    assert_eq!(code, 0, "the default --fail-on is high");
    for key in ["file", "tool", "fail_on", "failed", "summary", "findings", "suppressed"] {
        assert!(report.get(key).is_some(), "{key}: {report:#}");
    }
    assert_eq!(report["fail_on"], "high");
    assert_eq!(report["failed"], false);
    assert_eq!(report["summary"]["medium"], 1);
    assert!(report.get("compliance").is_none());
    let f = &report["findings"][0];
    for key in ["rule", "severity", "title", "message", "location", "fix"] {
        assert!(f.get(key).is_some(), "{key}: {f:#}");
    }
    for (fail_on, want) in [("medium", 1), ("MEDIUM", 1), ("low", 1), ("info", 1), ("high", 0), ("critical", 0)] {
        let (code, _, err) = scan(&dir, &yaml, &["--fail-on", fail_on]);
        assert_eq!(code, want, "--fail-on {fail_on}: {err}");
    }
    let path = dir.0.join("gw.yaml");
    let (code, _, err) = portcullis(&["scan", "config", "-c", path.to_str().unwrap(), "--fail-on", "severe"], &ENV);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("one of info, low, medium, high, critical"), "{err}");
    let (code, _, _) = portcullis(&["scan", "config", "-c", path.to_str().unwrap(), "--format", "xml"], &ENV);
    assert_eq!(code, 2);
    // The table says the same.
    let (code, out, _) = portcullis(&["scan", "config", "-c", path.to_str().unwrap(), "--fail-on", "medium"], &ENV);
    assert_eq!(code, 1);
    assert!(out.contains("PC-LIMIT-001") && out.contains("FAIL (--fail-on medium)") && out.contains("fix: "), "{out}");
}

#[test]
fn compliance_maps_controls_with_config_lines_as_evidence() {
    let dir = TempDir::new();
    let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml");
    let (code, out, _) = portcullis(&["scan", "config", "-c", quickstart, "--format", "json", "--compliance"], &[]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    let controls = report["compliance"].as_array().unwrap();
    let names: Vec<String> = controls
        .iter()
        .map(|c| format!("{} {}", c["framework"].as_str().unwrap(), c["control"].as_str().unwrap()))
        .collect();
    for want in [
        "PCI DSS 4.0 Req. 4",
        "PCI DSS 4.0 Req. 6.4",
        "PCI DSS 4.0 Req. 8",
        "PCI DSS 4.0 Req. 10",
        "GDPR Art. 32",
        "HIPAA 164.312(a)(1)",
        "HIPAA 164.312(e)(1)",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    let get = |name: &str| {
        controls
            .iter()
            .find(|c| format!("{} {}", c["framework"].as_str().unwrap(), c["control"].as_str().unwrap()) == name)
            .unwrap()
    };
    // Inspection in block mode on every route: 6.4 met, with the `inspect:` line.
    let pci64 = get("PCI DSS 4.0 Req. 6.4");
    assert_eq!(pci64["status"], "met");
    let text = std::fs::read_to_string(quickstart).unwrap();
    let line = text.lines().position(|l| l.starts_with("inspect:")).unwrap() + 1;
    assert!(pci64["evidence"][0].as_str().unwrap().contains(&format!("quickstart.yaml:{line}:1")), "{pci64:#}");
    // Everything on loopback: transmission controls are not applicable.
    assert_eq!(get("PCI DSS 4.0 Req. 4")["status"], "not_applicable");
    assert_eq!(get("PCI DSS 4.0 Req. 10")["status"], "met");

    // A config without events or audit, with a public plain listener: unmet, with the reasons.
    let yaml = "listeners:\n  - name: http\n    address: 0.0.0.0:8080\nlogging:\n  access_log: false\nroutes: []\n";
    let (code, report, _) = scan(&dir, yaml, &["--compliance"]);
    assert_eq!(code, 1);
    let controls = report["compliance"].as_array().unwrap();
    let find = |name: &str| controls.iter().find(|c| c["control"] == name).unwrap();
    assert_eq!(find("Req. 10")["status"], "unmet");
    assert!(find("Req. 10")["evidence"][0].as_str().unwrap().contains("gw.yaml:5:3"), "{:#}", find("Req. 10"));
    assert_eq!(find("Req. 4")["status"], "unmet");
    assert!(find("Req. 4")["evidence"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("PC-HTTP-002")));
    assert_eq!(find("Req. 8")["status"], "not_applicable");
    // The table has the section too.
    let path = dir.0.join("gw.yaml");
    let (_, out, _) = portcullis(&["scan", "config", "-c", path.to_str().unwrap(), "--compliance"], &[]);
    assert!(out.contains("Compliance") && out.contains("HIPAA") && out.contains("UNMET"), "{out}");
}

#[test]
fn hostile_configs_exit_2_with_the_loaders_message() {
    let dir = TempDir::new();
    let bad: Vec<(&str, String)> = vec![
        ("not yaml", "listeners: [\n  - {name: a\nroutes: ]\n".into()),
        ("unknown key", format!("{HEAD}routes: []\nroutez: []\n")),
        ("deep nesting", format!("{HEAD}routes: []\nx: {}{}\n", "[".repeat(5000), "]".repeat(5000))),
        ("missing env", format!("{HEAD}authenticators:\n  k:\n    api_key:\n      hmac_secret: ${{env:SCAN_TEST_SURELY_UNSET}}\nroutes: []\n")),
        ("not a mapping", "- 1\n- 2\n".into()),
        ("empty", String::new()),
        ("binary", String::from_utf8_lossy(&[0xff, 0xfe, 0, 1, 2, 3]).into_owned()),
    ];
    for (what, yaml) in bad {
        let (code, _, err) = scan(&dir, &yaml, &[]);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains("does not load") && err.contains("gw.yaml:"), "{what}: {err}");
    }
    // The env variable's name is said, never a value.
    let (_, _, err) = scan(&dir, &format!("{HEAD}authenticators:\n  k:\n    api_key:\n      hmac_secret: ${{env:SCAN_TEST_SURELY_UNSET}}\nroutes: []\n"), &[]);
    assert!(err.contains("SCAN_TEST_SURELY_UNSET"), "{err}");
    // Anchors expanded a billion times are refused by the loader, not expanded by the scan.
    let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (i, c) in "bcdefghi".chars().enumerate() {
        let prev = (b'a' + i as u8) as char;
        laughs.push_str(&format!(
            "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let (code, _, err) = scan(&dir, &format!("{HEAD}routes: []\n{laughs}"), &[]);
    assert_eq!(code, 2, "{err}");
    // A huge file is refused before it is read (the scan would hold it twice).
    let huge = dir.0.join("huge.yaml");
    let mut text = format!("{HEAD}routes: []\n");
    let pad = format!("# {}\n", "x".repeat(1022));
    while text.len() <= 16 * 1024 * 1024 {
        text.push_str(&pad);
    }
    std::fs::write(&huge, text).unwrap();
    let (code, _, err) = portcullis(&["scan", "config", "-c", huge.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("larger than 16 MiB"), "{err}");
    std::fs::remove_file(&huge).unwrap();
    // A file that is not there.
    let (code, _, err) = portcullis(&["scan", "config", "-c", dir.0.join("nope.yaml").to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
}
