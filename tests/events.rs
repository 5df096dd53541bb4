#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Security events end to end: the real gateway with `events: {stdout: true}`, hostile and refused
//! requests sent with curl, and the JSON lines read back from its stdout. Each refusal path is one event
//! of the documented type with the schema's fields, and none carries the credential it refused.
#[allow(unreachable_pub)]
mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const SECRET: &str = "events-test-hmac-secret-0123456789abcdef";

fn config(up: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  jwt:
    jwt:
      issuer: https://issuer.test
      audiences: [events]
      algorithms: [HS256]
      hmac_secret: {SECRET}
roles:
  admin: {{}}
rate_limits:
  tight: {{ rate: 1/m, burst: 2 }}
routes:
  - name: admin
    match:
      path: {{ prefix: /admin }}
    upstream: app
    auth: jwt
    authorize:
      roles: [admin]
  - name: limited
    match:
      path: {{ prefix: /limited }}
    upstream: app
    auth: none
    rate_limits: [tight]
  - name: orders
    match:
      path: {{ prefix: /orders }}
    upstream: app
    auth: none
    validate: {{}}
    inspect: {{ mode: block }}
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: jwt
    authorize: authenticated
events:
  stdout: true
{extra}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

fn token(claims: Value) -> String {
    hs256(SECRET, &claims)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.addr("main"))
}

#[test]
fn each_refusal_is_one_event_with_the_schema_fields_and_no_secret() {
    let up = Upstream::start("events");
    let gw = Gateway::start(&config(up.addr, ""));
    let expired = token(
        serde_json::json!({"iss": "https://issuer.test", "aud": "events", "sub": "mallory", "exp": now() - 3600}),
    );
    let user =
        token(serde_json::json!({"iss": "https://issuer.test", "aud": "events", "sub": "bob", "exp": now() + 3600}));

    // 401: no credential, then an expired one.
    let (s, _, _) = curl(&["-H", "X-Request-Id: req-missing-1", &url(&gw, "/app")]);
    assert_eq!(s, 401);
    let e = wait_event(&gw, |e| e["request_id"] == "req-missing-1");
    assert_eq!(e["v"], 1);
    assert_eq!(e["type"], "authn.failure");
    assert_eq!(e["severity"], "low");
    assert_eq!(e["reason"], "missing_credentials");
    assert_eq!(e["rule"], "jwt");
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["route"], "app");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/app");
    assert_eq!(e["status"], 401);
    assert!(e["time"].as_str().unwrap().ends_with('Z'));

    let (s, _, _) = curl(&[
        "-H",
        "X-Request-Id: req-expired-1",
        "-H",
        &format!("Authorization: Bearer {expired}"),
        &url(&gw, "/app?token=querysecret"),
    ]);
    assert_eq!(s, 401);
    let e = wait_event(&gw, |e| e["request_id"] == "req-expired-1");
    assert_eq!(e["type"], "authn.failure");
    assert_eq!(e["reason"], "expired");
    assert_eq!(e["path"], "/app", "never the query");

    // 403: authenticated, without the role; the rule that decided is named.
    let (s, _, _) = curl(&[
        "-H",
        "X-Request-Id: req-authz-1",
        "-H",
        &format!("Authorization: Bearer {user}"),
        &url(&gw, "/admin/x"),
    ]);
    assert_eq!(s, 403);
    let e = wait_event(&gw, |e| e["request_id"] == "req-authz-1");
    assert_eq!(e["type"], "authz.denied");
    assert_eq!(e["principal"], "bob");
    assert!(e["rule"].as_str().is_some_and(|r| !r.is_empty()), "{e}");

    // 429 on the third request in a minute.
    for i in 0..3 {
        let (s, _, _) = curl(&["-H", &format!("X-Request-Id: req-limit-{i}"), &url(&gw, "/limited")]);
        assert_eq!(s, if i < 2 { 200 } else { 429 });
    }
    let e = wait_event(&gw, |e| e["request_id"] == "req-limit-2");
    assert_eq!(e["type"], "ratelimit.exceeded");
    assert_eq!(e["rule"], "tight");
    assert_eq!(e["status"], 429);

    // Inspection blocks an injection: the rule id and category, never the payload.
    let (s, _, _) = curl(&[
        "-H",
        "X-Request-Id: req-sqli-1",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"note": "1' UNION SELECT password FROM users--"}"#,
        &url(&gw, "/orders"),
    ]);
    assert_eq!(s, 403);
    let e = wait_event(&gw, |e| e["request_id"] == "req-sqli-1");
    assert_eq!(e["type"], "inspect.detection");
    assert_eq!(e["severity"], "high");
    assert_eq!(e["attrs"]["category"], "sqli");
    assert_eq!(e["attrs"]["action"], "block");
    assert!(e["rule"].as_str().unwrap().parse::<u32>().is_ok());
    assert!(!e.to_string().contains("UNION"), "{e}");

    // Validation: malformed JSON.
    let (s, _, _) = curl(&[
        "-H",
        "X-Request-Id: req-json-1",
        "-H",
        "Content-Type: application/json",
        "--data",
        "{\"a\":",
        &url(&gw, "/orders"),
    ]);
    assert_eq!(s, 400);
    let e = wait_event(&gw, |e| e["request_id"] == "req-json-1");
    assert_eq!(e["type"], "validation.failed");
    assert_eq!(e["attrs"]["problem"], "malformed-json");

    // Requests that pass make no event; a 404 is not a security event.
    let (s, _, _) = curl(&["-H", "X-Request-Id: req-ok-1", &url(&gw, "/limited/ok")]);
    assert!(s == 200 || s == 429);
    let (s, _, _) =
        curl(&["-H", "X-Request-Id: req-404-1", "-H", &format!("Authorization: Bearer {user}"), &url(&gw, "/nothing")]);
    assert_eq!(s, 200);

    // Nothing printed carries a credential, and each request made at most one event.
    let all = gw.logs().join("\n");
    for secret in [expired.as_str(), user.as_str(), SECRET, "querysecret"] {
        assert!(!all.contains(secret), "a secret was printed");
    }
    let evs = events(&gw);
    for id in ["req-missing-1", "req-expired-1", "req-authz-1", "req-limit-2", "req-sqli-1", "req-json-1"] {
        assert_eq!(evs.iter().filter(|e| e["request_id"] == id).count(), 1, "{id}: {evs:#?}");
    }
    assert!(!evs.iter().any(|e| e["request_id"] == "req-404-1" || e["request_id"] == "req-limit-0"));
    // Counted by type.
    let m = gw.metrics();
    assert!(metric(&m, r#"portcullis_security_events_total{type="authn.failure"}"#).unwrap() >= 2.0, "{m}");
}

#[test]
fn reloads_and_refused_reloads_are_events() {
    let up = Upstream::start("events-reload");
    let gw = Gateway::start(&config(up.addr, ""));
    gw.rewrite_config(&config(up.addr, "# changed\n"));
    gw.signal("HUP");
    let e = wait_event(&gw, |e| e["type"] == "config.reload");
    assert_eq!(e["severity"], "info");
    assert_eq!(e["attrs"]["config_sha256"].as_str().unwrap().len(), 64);
    gw.rewrite_config(&config(up.addr, "unknown_key: 1\n"));
    gw.signal("HUP");
    let e = wait_event(&gw, |e| e["type"] == "config.reload_failed");
    assert_eq!(e["severity"], "medium");
    assert!(e["attrs"]["error"].as_str().unwrap().contains("unknown_key"), "{e}");
}

#[test]
fn client_addresses_are_truncated_or_hashed_when_configured() {
    let up = Upstream::start("events-privacy");
    let gw =
        Gateway::start(&config(up.addr, "").replace(
            "logging:\n  level: info",
            "logging:\n  level: info\n  client_ip: hash\n  hash_key: fixed-test-key",
        ));
    let (s, _, _) = curl(&["-H", "X-Request-Id: req-hash-1", &url(&gw, "/app")]);
    assert_eq!(s, 401);
    let e = wait_event(&gw, |e| e["request_id"] == "req-hash-1");
    assert!(e.get("client_ip").is_none(), "{e}");
    assert!(e["client_ip_hash"].as_str().unwrap().starts_with("h:"));
    let access = gw.wait_access_log(1, Duration::from_secs(5));
    assert!(access.iter().all(|l| l["client_ip"].as_str().unwrap().starts_with("h:")), "{access:?}");

    let gw2 = Gateway::start(
        &config(up.addr, "").replace("logging:\n  level: info", "logging:\n  level: info\n  client_ip: truncate"),
    );
    let (s, _, _) = curl(&["-H", "X-Request-Id: req-trunc-1", &url(&gw2, "/app")]);
    assert_eq!(s, 401);
    let e = wait_event(&gw2, |e| e["request_id"] == "req-trunc-1");
    assert_eq!(e["client_ip"], "127.0.0.0");
}

#[test]
fn access_log_has_user_agent_and_a_payload_summary_without_values() {
    let up = Upstream::start("events-payload");
    let gw = Gateway::start(&config(up.addr, ""));
    let body = r#"{"customer": "alice", "password": "pw-in-body-77", "items": [{"sku": "x"}]}"#;
    let (s, _, _) = curl(&[
        "-H",
        "X-Request-Id: req-payload-1",
        "-H",
        "User-Agent: incident-tester/1.0",
        "-H",
        "Content-Type: application/json; charset=utf-8",
        "--data",
        body,
        &url(&gw, "/orders"),
    ]);
    assert_eq!(s, 200);
    // The same body again (streamed, not validated: the catch-all route refuses it with 401 before
    // reading it, so the summary has no hash there).
    let (s, _, _) = curl(&[
        "-H",
        "X-Request-Id: req-payload-2",
        "-H",
        "Content-Type: application/json",
        "--data",
        body,
        &url(&gw, "/orders/again"),
    ]);
    assert_eq!(s, 200);
    let lines = gw.wait_access_log(2, Duration::from_secs(5));
    let one = lines.iter().find(|l| l["request_id"] == "req-payload-1").unwrap();
    let two = lines.iter().find(|l| l["request_id"] == "req-payload-2").unwrap();
    assert_eq!(one["user_agent"], "incident-tester/1.0");
    assert_eq!(one["content_type"], "application/json");
    assert_eq!(one["json_keys"], "customer,password,items");
    assert_eq!(one["bytes_in"], body.len());
    let hash = one["body_hmac"].as_str().unwrap();
    assert_eq!(hash.len(), 32);
    assert_eq!(two["body_hmac"], hash, "the same body has the same keyed hash, read whole or streamed");
    assert!(!gw.logs().join("\n").contains("pw-in-body-77"));
    // A GET has no payload fields.
    let (s, _, _) = curl(&["-H", "X-Request-Id: req-payload-3", &url(&gw, "/limited")]);
    assert_eq!(s, 200);
    let lines = gw.wait_access_log(3, Duration::from_secs(5));
    let three = lines.iter().find(|l| l["request_id"] == "req-payload-3").unwrap();
    assert!(three.get("body_hmac").is_none() && three.get("json_keys").is_none(), "{three}");
}

/// A hostile client sends secrets every way it can, some inside attacks so inspection quotes them; with
/// logs at debug level, nothing the gateway writes may contain any of them.
#[test]
fn secrets_never_reach_logs_or_events() {
    let up = Upstream::start("events-redaction");
    let extra = "  # redact an application field by name\n";
    let yaml = config(up.addr, extra)
        .replace("logging:\n  level: info", "logging:\n  level: debug\n  redact: [pin_code]")
        .replace("    inspect: { mode: block }", "    inspect: { mode: detect }");
    let gw = Gateway::start(&yaml);
    let bearer =
        token(serde_json::json!({"iss": "https://issuer.test", "aud": "events", "sub": "carol", "exp": now() + 3600}));
    let secrets = [
        "Sup3rS3cretPassw0rd",
        "cookie-session-5f1e2d",
        "apikey-live-9a8b7c6d",
        "querytoken-aa11bb22",
        "4111111111111111",
        "5500 0055 5555 5559",
        "pin-0000-9876",
        bearer.as_str(),
    ];
    let attack_in_password =
        r#"{"password": "Sup3rS3cretPassw0rd' OR '1'='1", "pin_code": "pin-0000-9876' UNION SELECT 1--"}"#;
    let attack_with_card = r#"{"note": "4111111111111111' OR '1'='1' --", "card": "5500 0055 5555 5559"}"#;
    for (i, body) in [attack_in_password, attack_with_card].iter().enumerate() {
        let (s, _, _) = curl(&[
            "-H",
            &format!("X-Request-Id: req-secret-{i}"),
            "-H",
            "Content-Type: application/json",
            "-H",
            "Cookie: session=cookie-session-5f1e2d' OR 1=1--",
            "-H",
            "X-Api-Key: apikey-live-9a8b7c6d",
            "-H",
            &format!("Authorization: Bearer {bearer}"),
            "--data",
            body,
            &url(&gw, "/orders?token=querytoken-aa11bb22&password=Sup3rS3cretPassw0rd"),
        ]);
        assert_eq!(s, 200, "detect mode forwards");
        wait_event(&gw, |e| e["request_id"] == format!("req-secret-{i}").as_str());
    }
    // Refused with the credentials too (401 on the catch-all with a bad token).
    let (s, _, _) = curl(&[
        "-H",
        "Authorization: Bearer Sup3rS3cretPassw0rd",
        "-H",
        "Cookie: session=cookie-session-5f1e2d",
        &url(&gw, "/app?token=querytoken-aa11bb22"),
    ]);
    assert_eq!(s, 401);
    gw.wait_access_log(3, Duration::from_secs(5));
    let out = gw.logs().join("\n");
    assert!(out.contains("inspection"), "inspection logged its detections");
    for s in secrets {
        assert!(!out.contains(s), "`{s}` was written");
    }
    assert!(out.contains("****1111"), "card numbers in fragments are masked, not dropped");
}

/// Events from outside requests: an automatic ban set and expired, an upstream target leaving
/// rotation, and a failed TLS handshake (counted, and an event).
#[test]
fn bans_upstream_health_and_tls_handshakes_are_events() {
    use std::io::{Read, Write};
    let up = Upstream::start("events-outside");
    let dead = closed_port();
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates:
        - self_signed: [localhost]
upstreams:
  app:
    targets:
      - address: {up}
      - address: {dead}
    health_check:
      path: /health
      interval: 200ms
      timeout: 200ms
      unhealthy_threshold: 1
      healthy_threshold: 1
authenticators:
  jwt:
    jwt:
      issuer: https://issuer.test
      audiences: [events]
      algorithms: [HS256]
      hmac_secret: {SECRET}
auto_ban: {{ after: 3, statuses: [401], within: 1m, ban_for: 2s }}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: jwt
    authorize: authenticated
events:
  stdout: true
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        up = up.addr
    );
    let gw = Gateway::start(&yaml);
    // The dead target leaves rotation.
    let e = wait_event(&gw, |e| e["type"] == "upstream.health");
    assert_eq!(e["reason"], "unhealthy");
    assert_eq!(e["severity"], "medium");
    assert_eq!(e["attrs"]["upstream"], "app");
    assert_eq!(e["attrs"]["target"], dead.to_string());
    assert_eq!(e["attrs"]["healthy"], false);

    // Three 401s: banned; the fourth request is refused as banned.
    for _ in 0..3 {
        assert_eq!(curl(&[&url(&gw, "/x")]).0, 401);
    }
    let set = wait_event(&gw, |e| e["type"] == "ban.set");
    assert_eq!(set["reason"], "auto_ban");
    assert_eq!(set["severity"], "high");
    assert_eq!(set["client_ip"], "127.0.0.1");
    assert_eq!(set["attrs"]["source"], "auto");
    assert_eq!(curl(&["-H", "X-Request-Id: req-banned-1", &url(&gw, "/x")]).0, 403);
    let blocked = wait_event(&gw, |e| e["request_id"] == "req-banned-1");
    assert_eq!(blocked["type"], "guard.blocked");
    assert_eq!(blocked["reason"], "banned");
    // Two seconds later the ban runs out; the poll loop notices.
    let expired = wait_event(&gw, |e| e["type"] == "ban.expired");
    assert_eq!(expired["rule"], set["rule"]);
    assert_eq!(expired["reason"], "expired");

    // Plain text to the TLS listener: the handshake fails, is counted, and is an event.
    let mut s = std::net::TcpStream::connect(gw.addr("tls")).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read(&mut [0u8; 256]);
    let e = wait_event(&gw, |e| e["type"] == "tls.handshake_failure");
    assert_eq!(e["attrs"]["listener"], "tls");
    assert_eq!(e["client_ip"], "127.0.0.1");
    let reason = e["reason"].as_str().unwrap().to_owned();
    assert!(["invalid_message", "peer_misbehaved", "incompatible", "other"].contains(&reason.as_str()), "{e}");
    let m = gw.metrics();
    let series = format!(r#"portcullis_tls_handshake_failures_total{{listener="tls",reason="{reason}"}}"#);
    assert_eq!(metric(&m, &series), Some(1.0), "{m}");
}
