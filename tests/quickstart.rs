//! The quickstart config (examples/quickstart.yaml, also built into `portcullis quickstart`) works as
//! documented: run here on free ports instead of its fixed ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::time::Duration;

const DEMO_KEY: &str = "pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva";
const ADMIN_KEY: &str = "pcs_lkxqo2sd_dxpgsvs7zhxelocag2yx37sgxjglhgmpp6il2sa";

/// A free port below the kernel's ephemeral range (`ip_local_port_range`, 32768 up by default), so the
/// gateway's own `:0` listeners, bound a moment later, cannot be given the same one (they come from
/// that range; found as a rare "address already in use" in CI).
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    for _ in 0..1000 {
        let port = 10_000 + random_below(span);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {low}");
}

/// A pseudo-random number below `n` (the clock's nanoseconds and the process id; enough to spread
/// parallel tests over the range).
fn random_below(n: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    (h.finish() % u64::from(n)) as u16
}

fn start_quickstart() -> Gateway {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml")).unwrap();
    let echo = free_port();
    let yaml = text
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:9080", &format!("127.0.0.1:{echo}"));
    Gateway::start(&yaml)
}

#[test]
fn quickstart_config_serves_what_the_readme_shows() {
    let gw = start_quickstart();
    let https = gw.addr("https");
    let (code, headers, body) = curl(&["-k", &format!("https://{https}/echo/hello")]);
    assert_eq!(code, 200, "{headers}{body}");
    assert!(body.contains("portcullis-demo-echo"), "{body}");
    assert!(headers.to_ascii_lowercase().contains("strict-transport-security"));

    let (code, _, _) = curl(&["-k", "--http2", &format!("https://{https}/users/42")]);
    assert_eq!(code, 200);

    let (code, headers, body) =
        curl(&["-k", "-H", "X-Request-Id: quickstart-401", &format!("https://{https}/private/data")]);
    assert_eq!(code, 401, "{body}");
    assert!(headers.to_ascii_lowercase().contains("www-authenticate: apikey"), "{headers}");
    // The 401 is a security event on stdout (docs/events.md).
    assert!(
        gw.wait_log(r#""type":"authn.failure","severity":"low","request_id":"quickstart-401""#, Duration::from_secs(5)),
        "{:#?}",
        gw.logs()
    );
    let (code, _, body) =
        curl(&["-k", "-H", &format!("X-API-Key: {DEMO_KEY}"), &format!("https://{https}/private/data")]);
    assert_eq!(code, 200, "{body}");
    // Authorization: the demo key is a reader; deleting needs the admin key.
    let with = |key: &str, method: &str, path: &str| {
        let (code, _, body) =
            curl(&["-k", "-X", method, "-H", &format!("X-API-Key: {key}"), &format!("https://{https}{path}")]);
        (code, body)
    };
    let (code, body) = with(DEMO_KEY, "DELETE", "/private/data");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("urn:portcullis:problem:forbidden"), "{body}");
    assert_eq!(with(ADMIN_KEY, "DELETE", "/private/data").0, 200);
    assert_eq!(with(ADMIN_KEY, "GET", "/private/data").0, 200, "admin includes reader");
    // Ownership: each principal sees its own profile.
    assert_eq!(with(DEMO_KEY, "GET", "/users/quickstart-demo/profile").0, 200);
    assert_eq!(with(DEMO_KEY, "GET", "/users/quickstart-admin/profile").0, 403);
    assert_eq!(with(DEMO_KEY, "GET", "/users/Quickstart-Demo/profile").0, 403);
    assert_eq!(with(ADMIN_KEY, "GET", "/users/quickstart-demo/profile").0, 200, "override role");

    // Rate limit: one connection, twenty requests, as the README's curl does (2/s, burst 5).
    let url = format!("https://{https}/limited/[1-20]");
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-", "-w", "CODE %{http_code}\n", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let codes: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("code ")).collect();
    assert_eq!(codes.len(), 20, "{text}");
    assert!(codes.iter().filter(|c| **c == "200").count() >= 5, "{codes:?}");
    assert!(codes.contains(&"429"), "{codes:?}");
    assert_eq!(text.matches("ratelimit: \"per-client\";r=").count(), 20, "every answer has RateLimit: {text}");
    assert!(text.contains("retry-after: "), "{text}");

    let (code, _, body) = curl(&["-k", &format!("https://{https}/nowhere")]);
    assert_eq!(code, 404);
    assert!(body.contains("urn:portcullis:problem:not-found"));

    let (code, headers, _) = curl(&[&format!("http://{}/echo/hello?x=1", gw.addr("http"))]);
    assert_eq!(code, 308);
    assert!(headers.contains("location: https://127.0.0.1:8443/echo/hello?x=1"), "{headers}");

    let (code, _, metrics) = curl(&[&format!("http://{}/metrics", gw.addr("admin"))]);
    assert_eq!(code, 200);
    assert!(metrics.contains("portcullis_requests_total{route=\"public-echo\",status=\"2xx\"} 1"), "{metrics}");
}

#[test]
fn quickstart_config_passes_check() {
    let out = std::process::Command::new(bin())
        .args(["check", "-c", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("private-echo") && table.contains("demo-keys"), "{table}");
}

#[test]
fn upstream_learns_the_principal_and_clients_cannot_spoof_it() {
    let gw = start_quickstart();
    let https = gw.addr("https");
    let spoof = ["-H", "X-Portcullis-Principal: admin", "-H", "X-Portcullis-Roles: admin"];
    let (code, _, body) = curl(
        &[&["-k", "-H", &format!("X-API-Key: {DEMO_KEY}")], &spoof[..], &[&format!("https://{https}/private/x")]]
            .concat(),
    );
    assert_eq!(code, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-portcullis-principal"], "quickstart-demo");
    assert_eq!(echo["headers"]["x-portcullis-roles"], "reader");
    assert_eq!(echo["headers"]["x-portcullis-auth-method"], "api_key");
    assert!(echo["headers"].get("x-api-key").is_none(), "the API key must not reach the upstream: {body}");
    // A public route forwards no identity, and drops the client's attempt to claim one.
    let (code, _, body) = curl(&[&["-k"], &spoof[..], &[&format!("https://{https}/echo/x")]].concat());
    assert_eq!(code, 200);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(echo["headers"].get("x-portcullis-principal").is_none(), "{body}");
    assert!(echo["headers"].get("x-portcullis-roles").is_none(), "{body}");
    let lines = gw.wait_access_log(2, std::time::Duration::from_secs(3));
    assert!(lines.iter().any(|l| l["principal"] == "quickstart-demo"), "{lines:?}");
}

/// The README's WAF lines: an injection in the query is refused, O'Brien passes, a wrong type on the
/// OpenAPI-validated route is 400 naming the field's pointer and never echoing the value, and the
/// upstream sees none of what was refused.
#[test]
fn quickstart_blocks_attacks_and_validates_orders() {
    let gw = start_quickstart();
    let https = gw.addr("https");
    let (code, headers, body) = curl(&["-k", &format!("https://{https}/echo/search?q=1'%20OR%20'1'='1")]);
    assert_eq!(code, 403, "{body}");
    assert!(headers.to_ascii_lowercase().contains("content-type: application/problem+json"), "{headers}");
    assert_eq!(problem_type(&body), problem("request-blocked"), "{body}");
    assert!(!body.contains("OR"), "the answer never echoes the payload: {body}");
    // Other spellings of the same attack: double encoding, case, comments, the body.
    for q in ["1%2527%2520OR%2520%25271%2527%253D%25271", "1'%20oR%20'1'%3D'1", "1'/**/OR/**/1=1--"] {
        let (code, _, body) = curl(&["-k", &format!("https://{https}/echo/search?q={q}")]);
        assert_eq!(code, 403, "{q}: {body}");
    }
    let (code, _, body) = curl(&[
        "-k",
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"comment":"<script>alert(document.cookie)</script>"}"#,
        &format!("https://{https}/echo/comments"),
    ]);
    assert_eq!(code, 403, "{body}");
    let (code, _, body) = curl(&["-k", &format!("https://{https}/echo/search?q=O'Brien")]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("O'Brien") || body.contains("O%27Brien"), "{body}");

    let orders = format!("https://{https}/orders");
    let post =
        |json: &str| curl(&["-k", "-H", "content-type: application/json", "--data-binary", json, orders.as_str()]);
    let (code, _, body) = post(r#"{"item":"tea","quantity":2}"#);
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = post(r#"{"item":"tea","quantity":"two hundred"}"#);
    assert_eq!(code, 400, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["type"], problem("invalid-request"));
    assert_eq!(doc["errors"][0]["in"], "body", "{body}");
    assert_eq!(doc["errors"][0]["pointer"], "/quantity", "{body}");
    assert!(!body.contains("two hundred"), "never the value: {body}");
    let (code, _, _) = post(r#"{"item":"tea","quantity":2,"admin":true}"#);
    assert_eq!(code, 400, "additionalProperties: false");
    // HTTP/1.1: over h2, curl may report the early answer to a request whose body was not read as a
    // stream error when the stream's reset overtakes it (seen for every early refusal, not this one).
    let (code, _, _) = curl(&["-k", "--http1.1", "-X", "PUT", "--data-binary", "{}", &orders]);
    assert_eq!(code, 405, "the route takes POST only");
    // What was refused never reached the echo API: only forwarded requests have an upstream time.
    let lines = gw.wait_access_log(10, std::time::Duration::from_secs(5));
    let forwarded: Vec<_> = lines.iter().filter(|l| l.get("upstream_ms").is_some()).collect();
    assert_eq!(forwarded.len(), 2, "O'Brien and the valid order only: {lines:?}");
    assert!(forwarded.iter().all(|l| l["status"] == 200), "{lines:?}");
}

/// The real `portcullis quickstart` (its fixed ports, so in a network namespace of its own): it names its
/// audit trail and the command that verifies it; the 401 of the private route is an `authn.failure`
/// event on stdout and a record of the trail, and the printed command verifies the trail.
#[test]
fn quickstart_prints_its_audit_trail_and_the_command_that_verifies_it() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", r#"ip link set lo up && exec "$0" quickstart"#, bin()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux) runs the quickstart in its own network namespace");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&str) -> bool| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("not printed; stdout so far: {lines:#?}"),
            }
        }
    };
    let verify = wait_for(&|l| l.trim_start().starts_with("portcullis audit verify "));
    let words: Vec<&str> = verify.split_whitespace().collect();
    assert_eq!(&words[..3], ["portcullis", "audit", "verify"]);
    assert_eq!(words[4], "--key");
    let (trail, key) = (words[3].to_owned(), words[5].to_owned());
    // In the quickstart's namespace: poll until it serves, then the 401.
    let ns = format!("--net=/proc/{pid}/ns/net");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("nsenter")
            .args([
                ns.as_str(),
                "curl",
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "X-Request-Id: qs-audit-401",
            ])
            .arg("https://127.0.0.1:8443/private/data")
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "401" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the quickstart never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(&|l| l.contains(r#""type":"authn.failure""#) && l.contains("qs-audit-401"));
    // The admin token printed with the dashboard's address opens the admin API (in memory only).
    let dashboard = wait_for(&|l| l.starts_with("Dashboard: http://127.0.0.1:9901/admin/ui/"));
    assert!(dashboard.contains("valid until exit"), "{dashboard}");
    let token = wait_for(&|l| l.trim_start().starts_with("pca_")).trim().to_owned();
    let who = Command::new("nsenter")
        .args([ns.as_str(), "curl", "-s", "-H", &format!("Authorization: Bearer {token}")])
        .arg("http://127.0.0.1:9901/admin/v1/whoami")
        .output()
        .unwrap();
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["role"], "admin", "{who}");
    let printed = lines.iter().filter(|l| l.contains(&token)).count();
    assert_eq!(printed, 2, "the token is printed twice (the line and the curl example) and logged nowhere: {lines:#?}");
    // A graceful stop signs the tail; the printed command then verifies the whole trail.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the quickstart did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(bin()).args(["audit", "verify", &trail, "--key", &key]).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{report}");
    let text = std::fs::read_to_string(&trail).unwrap();
    assert!(text.contains("authn.failure") && text.contains("qs-audit-401"), "{text}");
    // The trail is the quickstart's own directory under the temporary directory.
    let dir = std::path::Path::new(&trail).parent().unwrap();
    assert!(dir.file_name().unwrap().to_string_lossy().starts_with("portcullis-quickstart-"));
    std::fs::remove_dir_all(dir).unwrap();
}
