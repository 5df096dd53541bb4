//! The admin API (`/admin/v1`) against the real binary, driven with curl: authentication and roles on
//! every endpoint, key management taking effect on the data path, idempotency, conditional updates,
//! hostile bodies, bans, the audit trail, and the OpenAPI document checked against real answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub)]
mod common;

use common::admin::{call, token, Answer};
use common::{curl, Gateway, TempDir, Upstream};
use std::time::{Duration, Instant};

const HMAC: &str = "admin-api-test-server-secret-0a1b2c3d4e5f";

fn config(dir: &TempDir, up: std::net::SocketAddr) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
store:
  sqlite: {state}
authenticators:
  keys:
    api_key:
      hmac_secret: {HMAC}
      store: {keys}
      refresh_interval: 10s
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: keys
    authorize: authenticated
events:
  stdout: true
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        state = dir.path("state.db").display(),
        keys = dir.path("keys.db").display(),
    )
}

struct Setup {
    gw: Gateway,
    up: Upstream,
    admin: String,
    operator: String,
    viewer: String,
}

fn setup() -> Setup {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let yaml = config(&dir, up.addr);
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (admin, _) = token(&cfg, "admin");
    let (operator, _) = token(&cfg, "operator");
    let (viewer, _) = token(&cfg, "viewer");
    let gw = Gateway::start_in(dir, &yaml);
    Setup { gw, up, admin, operator, viewer }
}

impl Setup {
    fn call(&self, token: Option<&str>, method: &str, path: &str, body: Option<&str>, headers: &[&str]) -> Answer {
        call(self.gw.addr("admin"), token, method, path, body, headers)
    }

    /// A request through the gateway with an API key: its status.
    fn with_key(&self, key: &str) -> u16 {
        let url = format!("http://{}/data", self.gw.addr("main"));
        curl(&["-H", &format!("X-API-Key: {key}"), &url]).0
    }

    fn key_count(&self) -> usize {
        self.call(Some(&self.viewer), "GET", "/admin/v1/keys", None, &[]).json()["items"].as_array().unwrap().len()
    }
}

/// Polls `f` until it is true or `within` passed; returns whether it became true.
fn within(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every operation of the OpenAPI document: (method, path with sample parameters, least role).
fn operations(s: &Setup) -> Vec<(String, String, &'static str)> {
    let doc = s.call(Some(&s.admin), "GET", "/admin/v1/openapi.json", None, &[]).json();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "1").replace("{name}", "q");
            let m = method.to_uppercase();
            let role = if path.contains("/tokens") || path.contains("/config/") {
                "admin"
            } else if m == "GET" {
                "viewer"
            } else {
                "operator"
            };
            ops.push((m, concrete, role));
        }
    }
    assert!(ops.len() >= 18, "{ops:?}");
    ops
}

#[test]
fn every_endpoint_refuses_without_a_token_and_with_too_low_a_role() {
    let s = setup();
    let ops = operations(&s);
    let forged = format!("pca_{}", "A".repeat(43));
    for (method, path, role) in &ops {
        for token in [None, Some(forged.as_str()), Some("not-a-token"), Some("")] {
            let a = s.call(token, method, path, Some("{}"), &[]);
            assert_eq!(a.status, 401, "{method} {path} with {token:?}: {a:?}");
            assert_eq!(a.problem(), "unauthorized");
            assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"), "{a:?}");
        }
        let lower: &[&str] = match *role {
            "admin" => &[&s.viewer, &s.operator],
            "operator" => &[&s.viewer],
            _ => &[],
        };
        for t in lower {
            let a = s.call(Some(t), method, path, Some("{}"), &[]);
            assert_eq!(a.status, 403, "{method} {path}: {a:?}");
            assert_eq!(a.problem(), "forbidden");
        }
    }
    // The admin token's own spellings: lower-case scheme works, two headers or a prefix do not.
    assert_eq!(
        call(
            s.gw.addr("admin"),
            None,
            "GET",
            "/admin/v1/whoami",
            None,
            &[&format!("authorization: bearer {}", s.admin)]
        )
        .status,
        200
    );
    let two = s.call(Some(&s.admin), "GET", "/admin/v1/whoami", None, &[&format!("Authorization: Bearer {}", s.admin)]);
    assert_eq!(two.status, 401, "two Authorization headers: {two:?}");
    let who = s.call(Some(&s.operator), "GET", "/admin/v1/whoami", None, &[]).json();
    assert_eq!(who["role"], "operator");
    // Unknown paths and methods are problem+json too (after authentication).
    assert_eq!(s.call(Some(&s.admin), "GET", "/admin/v1/nope", None, &[]).problem(), "not-found");
    let a = s.call(Some(&s.admin), "PUT", "/admin/v1/keys", Some("{}"), &[]);
    assert_eq!((a.status, a.problem().as_str()), (405, "method-not-allowed"));
    // The legacy endpoints keep their rule.
    assert_eq!(curl(&[&format!("http://{}/healthz", s.gw.addr("admin"))]).0, 200);
    assert_eq!(s.up.hits(), 0, "nothing reached the upstream");
}

#[test]
fn keys_made_revoked_and_rotated_through_the_api_take_effect_on_the_data_path() {
    let s = setup();
    let a = s.call(
        Some(&s.operator),
        "POST",
        "/admin/v1/keys",
        Some(r#"{"principal":"ci-bot","roles":["deploy"],"expires_in":"30d"}"#),
        &[],
    );
    assert_eq!(a.status, 201, "{a:?}");
    let made = a.json();
    let (id, key) = (made["key"]["id"].as_str().unwrap().to_owned(), made["secret"].as_str().unwrap().to_owned());
    assert!(key.starts_with("pcs_") && key.contains(&id), "{made}");
    assert_eq!(made["key"]["status"], "active");
    // In force at once on this node (no wait for the store poll).
    assert_eq!(s.with_key(&key), 200);
    // Lists and shows never carry the key.
    let list = s.call(Some(&s.viewer), "GET", "/admin/v1/keys", None, &[]);
    assert!(!list.body.contains(&key) && list.body.contains(&id), "{list:?}");
    let shown = s.call(Some(&s.viewer), "GET", &format!("/admin/v1/keys/{id}"), None, &[]);
    assert!(!shown.body.contains(&key));
    let etag = shown.header("etag").unwrap();
    // PATCH needs If-Match; a stale one is 412 and changes nothing.
    let patch = r#"{"roles":["deploy","read"]}"#;
    let a = s.call(Some(&s.operator), "PATCH", &format!("/admin/v1/keys/{id}"), Some(patch), &[]);
    assert_eq!((a.status, a.problem().as_str()), (428, "precondition-required"));
    let a = s.call(Some(&s.operator), "PATCH", &format!("/admin/v1/keys/{id}"), Some(patch), &["If-Match: \"0000\""]);
    assert_eq!((a.status, a.problem().as_str()), (412, "precondition-failed"));
    let a = s.call(
        Some(&s.operator),
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        Some(patch),
        &[&format!("If-Match: {etag}")],
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["roles"], serde_json::json!(["deploy", "read"]));
    // The first operator's ETag is now stale: a second operator cannot overwrite.
    let a = s.call(
        Some(&s.operator),
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        Some(r#"{"roles":[]}"#),
        &[&format!("If-Match: {etag}")],
    );
    assert_eq!(a.status, 412);
    // Rotate: both keys work during the grace period.
    let a = s.call(Some(&s.operator), "POST", &format!("/admin/v1/keys/{id}/rotate"), Some(r#"{"grace":"1h"}"#), &[]);
    assert_eq!(a.status, 201, "{a:?}");
    let rotated = a.json();
    let (new_id, new_key) =
        (rotated["key"]["id"].as_str().unwrap().to_owned(), rotated["secret"].as_str().unwrap().to_owned());
    assert_eq!(rotated["rotated"]["status"], "grace");
    assert_eq!(s.with_key(&new_key), 200);
    assert_eq!(s.with_key(&key), 200);
    // Revoke the new key: the next request with it is refused.
    let a = s.call(Some(&s.operator), "POST", &format!("/admin/v1/keys/{new_id}/revoke"), None, &[]);
    assert_eq!((a.status, a.json()["status"].as_str()), (200, Some("revoked")), "{a:?}");
    assert!(within(Duration::from_secs(1), || s.with_key(&new_key) == 401), "a revoked key is refused within 1 s");
    // A revoked key cannot be rotated; unknown ids are 404.
    let a = s.call(Some(&s.operator), "POST", &format!("/admin/v1/keys/{new_id}/rotate"), None, &[]);
    assert_eq!((a.status, a.problem().as_str()), (409, "conflict"));
    assert_eq!(s.call(Some(&s.operator), "POST", "/admin/v1/keys/nope/revoke", None, &[]).status, 404);
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/keys/nope", None, &[]).status, 404);
    // Pages: one key per page, the cursor walks them all, a forged cursor is 400.
    let p1 = s.call(Some(&s.viewer), "GET", "/admin/v1/keys?limit=1", None, &[]).json();
    assert_eq!(p1["items"].as_array().unwrap().len(), 1);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = s.call(Some(&s.viewer), "GET", &format!("/admin/v1/keys?limit=1&cursor={cursor}"), None, &[]).json();
    assert_ne!(p1["items"][0]["id"], p2["items"][0]["id"]);
    assert!(p2["next_cursor"].is_null());
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/keys?cursor=%%%", None, &[]).status, 400);
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/keys?limit=0", None, &[]).status, 400);
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/keys?limit=501", None, &[]).status, 400);
    // The secrets never reached a log line or an event.
    let logs = s.gw.logs().join("\n");
    for secret in [&key, &new_key, &s.admin, &s.operator, &s.viewer] {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
    // Each change is an admin.action event naming who did it.
    let actions: Vec<serde_json::Value> =
        s.gw.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "admin.action")
            .collect();
    for action in ["key.created", "key.updated", "key.rotated", "key.revoked"] {
        let e =
            actions.iter().find(|e| e["reason"] == action).unwrap_or_else(|| panic!("no {action} event: {actions:?}"));
        assert!(e["principal"].as_str().unwrap().starts_with("token:"), "{e}");
    }
    let updated = actions.iter().find(|e| e["reason"] == "key.updated").unwrap().to_string();
    assert!(updated.contains("read"), "the change is recorded: {updated}");
}

#[test]
fn an_idempotency_key_replays_the_first_answer() {
    let s = setup();
    let body = r#"{"principal":"once"}"#;
    let first = s.call(Some(&s.operator), "POST", "/admin/v1/keys", Some(body), &["Idempotency-Key: create-once-1"]);
    assert_eq!(first.status, 201);
    let again = s.call(Some(&s.operator), "POST", "/admin/v1/keys", Some(body), &["Idempotency-Key: create-once-1"]);
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the same key, shown again to the same caller");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(s.key_count(), 1, "one key made");
    // The same key for another request is refused; another caller's same key is theirs.
    let other = s.call(
        Some(&s.operator),
        "POST",
        "/admin/v1/keys",
        Some(r#"{"principal":"twice"}"#),
        &["Idempotency-Key: create-once-1"],
    );
    assert_eq!((other.status, other.problem().as_str()), (422, "idempotency-key-reused"));
    let admin = s.call(Some(&s.admin), "POST", "/admin/v1/keys", Some(body), &["Idempotency-Key: create-once-1"]);
    assert_eq!(admin.status, 201);
    assert_ne!(admin.body, first.body);
    assert_eq!(s.key_count(), 2);
    // Malformed keys and two headers are 400.
    for h in [&["Idempotency-Key: a b"][..], &["Idempotency-Key: x", "Idempotency-Key: y"]] {
        let a = s.call(Some(&s.operator), "POST", "/admin/v1/keys", Some(body), h);
        assert_eq!(a.status, 400, "{h:?}: {a:?}");
    }
    assert_eq!(s.key_count(), 2);
}

#[test]
fn hostile_bodies_get_problems_and_change_nothing() {
    let s = setup();
    let t = Some(s.operator.as_str());
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"principal":"x""#, 400, "malformed-json"),
        ("not json", 400, "malformed-json"),
        (r#"{"principal":7}"#, 422, "invalid"),
        (r#"{"principal":"x","admin":true}"#, 422, "invalid"),
        (r#"{"roles":["a"]}"#, 422, "invalid"),
        (r#"{"principal":"x","cidrs":["300.1.1.1"]}"#, 422, "invalid"),
        (r#"{"principal":"x","expires_in":"forever"}"#, 422, "invalid"),
        (r#"{"principal":"x","roles":["has space"]}"#, 422, "invalid"),
        (r#"{"principal":"a\u0000b"}"#, 422, "invalid"),
        (r#"{"principal":""}"#, 422, "invalid"),
        (r#"[]"#, 422, "invalid"),
    ];
    for (body, status, slug) in cases {
        let a = s.call(t, "POST", "/admin/v1/keys", Some(body), &[]);
        assert_eq!(a.status, *status, "{body}: {a:?}");
        assert_eq!(a.problem(), *slug, "{body}: {a:?}");
    }
    let huge = format!(r#"{{"principal":"{}"}}"#, "x".repeat(70 * 1024));
    let a = s.call(t, "POST", "/admin/v1/keys", Some(&huge), &[]);
    assert_eq!((a.status, a.problem().as_str()), (413, "payload-too-large"));
    let a = s.call(t, "POST", "/admin/v1/keys", Some(r#"{"principal":"x"}"#), &["content-type: text/plain"]);
    assert_eq!((a.status, a.problem().as_str()), (415, "unsupported-media-type"));
    let a = s.call(
        t,
        "POST",
        "/admin/v1/keys",
        Some(r#"{"principal":"x"}"#),
        &["content-type: application/json", "content-type: text/plain"],
    );
    assert_eq!((a.status, a.problem().as_str()), (415, "unsupported-media-type"), "two content types");
    for (body, status) in [
        (r#"{"kind":"ip","target":"not-ip","duration":"1h"}"#, 422),
        (r#"{"kind":"ip","target":"10.0.0.1","duration":"0s"}"#, 422),
        (r#"{"kind":"nope","target":"x","duration":"1h"}"#, 422),
        (r#"{"kind":"ip"}"#, 422),
    ] {
        let a = s.call(t, "POST", "/admin/v1/bans", Some(body), &[]);
        assert_eq!(a.status, status, "{body}: {a:?}");
    }
    assert_eq!(s.key_count(), 0, "no key was made");
    let bans = s.call(Some(&s.viewer), "GET", "/admin/v1/bans", None, &[]).json();
    assert_eq!(bans["items"].as_array().unwrap().len(), 0, "no ban was set");
}

#[test]
fn bans_added_and_lifted_through_the_api() {
    let s = setup();
    let made = s.call(Some(&s.operator), "POST", "/admin/v1/keys", Some(r#"{"principal":"banned-bot"}"#), &[]).json();
    let key = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(s.with_key(&key), 200);
    let a = s.call(
        Some(&s.operator),
        "POST",
        "/admin/v1/bans",
        Some(r#"{"kind":"principal","target":"api_key:banned-bot","duration":"1h","reason":"test"}"#),
        &[],
    );
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.json()["id"].as_i64().unwrap();
    let hits = s.up.hits();
    assert_eq!(s.with_key(&key), 403);
    assert_eq!(s.up.hits(), hits, "the banned principal did not reach the upstream");
    let listed = s.call(Some(&s.viewer), "GET", "/admin/v1/bans", None, &[]).json();
    assert_eq!(listed["items"][0]["target"], "api_key:banned-bot");
    let a = s.call(Some(&s.operator), "DELETE", &format!("/admin/v1/bans/{id}"), None, &[]);
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(s.with_key(&key), 200);
    assert_eq!(s.call(Some(&s.operator), "DELETE", &format!("/admin/v1/bans/{id}"), None, &[]).status, 404);
}

#[test]
fn tokens_routes_health_events_and_config() {
    let s = setup();
    // Admin tokens: made through the API, usable at once, revoked at once.
    let a = s.call(Some(&s.admin), "POST", "/admin/v1/tokens", Some(r#"{"name":"second","role":"viewer"}"#), &[]);
    assert_eq!(a.status, 201, "{a:?}");
    let (tid, secret) =
        (a.json()["token"]["id"].as_str().unwrap().to_owned(), a.json()["secret"].as_str().unwrap().to_owned());
    assert_eq!(s.call(Some(&secret), "GET", "/admin/v1/whoami", None, &[]).json()["role"], "viewer");
    let list = s.call(Some(&s.admin), "GET", "/admin/v1/tokens", None, &[]);
    assert!(!list.body.contains(&secret) && list.body.contains(&tid));
    assert_eq!(s.call(Some(&s.admin), "DELETE", &format!("/admin/v1/tokens/{tid}"), None, &[]).status, 200);
    assert_eq!(s.call(Some(&secret), "GET", "/admin/v1/whoami", None, &[]).status, 401);
    // Routes with their chains; health of the upstream.
    let routes = s.call(Some(&s.viewer), "GET", "/admin/v1/routes", None, &[]).json();
    assert_eq!(routes["items"][0]["name"], "app");
    assert!(routes["items"][0]["chain"].as_str().unwrap().contains("authentication"), "{routes}");
    let health = s.call(Some(&s.viewer), "GET", "/admin/v1/health", None, &[]).json();
    assert_eq!(health["upstreams"][0]["targets"][0]["healthy"], true);
    // A refused request is an event the API lists, filtered.
    let url = format!("http://{}/data", s.gw.addr("main"));
    assert_eq!(curl(&["-H", "X-API-Key: pcs_wrong", &url]).0, 401);
    assert!(within(Duration::from_secs(5), || {
        let e = s.call(Some(&s.viewer), "GET", "/admin/v1/events?kind=authn.failure", None, &[]).json();
        e["items"].as_array().is_some_and(|i| !i.is_empty())
    }));
    let none = s.call(Some(&s.viewer), "GET", "/admin/v1/events?kind=authn.failure&principal=nobody", None, &[]).json();
    assert!(none["items"].as_array().unwrap().is_empty());
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/events?kind=bogus", None, &[]).status, 400);
    // Validate a candidate: a broken one says where; a good one lists its routes; nothing applied.
    let bad = serde_json::json!({"config": "listeners: []\nroutes: []\nbogus: 1\n"}).to_string();
    let v = s.call(Some(&s.admin), "POST", "/admin/v1/config/validate", Some(&bad), &[]).json();
    assert_eq!(v["valid"], false);
    assert!(v["error"].as_str().unwrap().contains("candidate:3:1"), "{v}");
    let good = serde_json::json!({"config": std::fs::read_to_string(&s.gw.config).unwrap()}).to_string();
    let v = s.call(Some(&s.admin), "POST", "/admin/v1/config/validate", Some(&good), &[]).json();
    assert_eq!(v["valid"], true, "{v}");
    // Reload: applies the file; a broken file is refused and the running config stays.
    let a = s.call(Some(&s.admin), "POST", "/admin/v1/config/reload", None, &[]);
    assert_eq!(a.status, 200, "{a:?}");
    let before = std::fs::read_to_string(&s.gw.config).unwrap();
    std::fs::write(&s.gw.config, format!("{before}\nbogus: 1\n")).unwrap();
    let a = s.call(Some(&s.admin), "POST", "/admin/v1/config/reload", None, &[]);
    assert_eq!(a.status, 422, "{a:?}");
    std::fs::write(&s.gw.config, before).unwrap();
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/whoami", None, &[]).status, 200);
}

/// The OpenAPI document is the one the router serves (every operation answers, none is missing), and
/// real answers validate against the schemas it gives for them.
#[test]
fn real_answers_match_the_openapi_document() {
    let s = setup();
    let doc = s.call(Some(&s.admin), "GET", "/admin/v1/openapi.json", None, &[]).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let made = s.call(
        Some(&s.operator),
        "POST",
        "/admin/v1/keys",
        Some(r#"{"principal":"doc","cidrs":["10.0.0.1"],"expires_in":"1d"}"#),
        &[],
    );
    let id = made.json()["key"]["id"].as_str().unwrap().to_owned();
    let ban = s.call(
        Some(&s.operator),
        "POST",
        "/admin/v1/bans",
        Some(r#"{"kind":"ip","target":"192.0.2.1","duration":"1h"}"#),
        &[],
    );
    let checks: Vec<(&str, String, Answer)> = vec![
        ("post", "/admin/v1/keys".into(), made),
        ("get", "/admin/v1/keys".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/keys", None, &[])),
        (
            "get",
            "/admin/v1/keys/{id}".into(),
            s.call(Some(&s.viewer), "GET", &format!("/admin/v1/keys/{id}"), None, &[]),
        ),
        ("get", "/admin/v1/keys/{id}".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/keys/nope", None, &[])),
        ("post", "/admin/v1/bans".into(), ban),
        ("get", "/admin/v1/bans".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/bans", None, &[])),
        ("get", "/admin/v1/routes".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/routes", None, &[])),
        ("get", "/admin/v1/health".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/health", None, &[])),
        ("get", "/admin/v1/whoami".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/whoami", None, &[])),
        ("get", "/admin/v1/quotas".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/quotas", None, &[])),
        ("get", "/admin/v1/tokens".into(), s.call(Some(&s.admin), "GET", "/admin/v1/tokens", None, &[])),
        ("get", "/admin/v1/events".into(), s.call(Some(&s.viewer), "GET", "/admin/v1/events", None, &[])),
        ("post", "/admin/v1/keys".into(), s.call(Some(&s.operator), "POST", "/admin/v1/keys", Some("{}"), &[])),
        ("post", "/admin/v1/keys".into(), s.call(Some(&s.viewer), "POST", "/admin/v1/keys", Some("{}"), &[])),
    ];
    for (method, path, answer) in checks {
        let status = answer.status.to_string();
        let op = &doc["paths"][&path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let response = &op["responses"][&status];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which the document does not list: {answer:?}"
        );
        let media = if status.starts_with('2') { "application/json" } else { "application/problem+json" };
        let content = &response["content"];
        let schema_at = if content[media].is_object() { media } else { "application/json" };
        let pointer = format!(
            "#/paths/{}/{method}/responses/{status}/content/{}/schema",
            path.replace('~', "~0").replace('/', "~1").replace('{', "%7B").replace('}', "%7D"),
            schema_at.replace('/', "~1")
        );
        let mut root = doc.clone();
        root["$ref"] = pointer.clone().into();
        root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
        let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{pointer}: {e}"));
        let instance = answer.json();
        let errors: Vec<String> = validator.iter_errors(&instance).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{method} {path} {status}: {errors:?}\n{instance}");
    }
}

/// `portcullis keys` and `portcullis bans` against a running gateway's admin API.
#[test]
fn the_cli_manages_keys_and_bans_through_the_admin_api() {
    let s = setup();
    let url = format!("http://{}", s.gw.addr("admin"));
    let env = [("PORTCULLIS_ADMIN_TOKEN", s.operator.as_str())];
    let (code, out, err) =
        common::portcullis(&["keys", "--admin", &url, "create", "--principal", "cli-bot", "--role", "r1"], &env);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("pcs_"), "{out}");
    assert_eq!(s.with_key(&key), 200);
    let (code, out, _) = common::portcullis(&["keys", "--admin", &url, "list"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("cli-bot") && !out.contains(&key), "{out}");
    let id = key.split('_').nth(1).unwrap();
    let (code, _, err) = common::portcullis(&["keys", "--admin", &url, "revoke", id], &env);
    assert_eq!(code, 0, "{err}");
    assert!(within(Duration::from_secs(1), || s.with_key(&key) == 401));
    let (code, out, err) =
        common::portcullis(&["bans", "--admin", &url, "add", "--principal", "api_key:cli-bot", "--for", "1h"], &env);
    assert_eq!(code, 0, "{err}");
    let ban = out.trim().to_owned();
    let (_, out, _) = common::portcullis(&["bans", "--admin", &url, "list"], &env);
    assert!(out.contains("api_key:cli-bot"), "{out}");
    let (code, _, err) = common::portcullis(&["bans", "--admin", &url, "remove", &ban], &env);
    assert_eq!(code, 0, "{err}");
    // A viewer's token cannot write; no token at all is a usage error; the token is never echoed.
    let viewer = [("PORTCULLIS_ADMIN_TOKEN", s.viewer.as_str())];
    let (code, _, err) = common::portcullis(&["keys", "--admin", &url, "create", "--principal", "x"], &viewer);
    assert_eq!(code, 1);
    assert!(err.contains("403") && !err.contains(&s.viewer), "{err}");
    let (code, _, err) = common::portcullis(&["bans", "--admin", &url, "list"], &[]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = common::portcullis(&["keys", "--admin", "http://192.0.2.1:9901", "list"], &env);
    assert_eq!(code, 64, "plain http off loopback: {err}");
}

/// Other spellings of admin paths never skip authentication, and an unknown path says nothing to a
/// caller without a credential.
#[test]
fn other_spellings_of_admin_paths_need_a_credential_too() {
    let s = setup();
    let addr = s.gw.addr("admin");
    for path in [
        "/admin/v1/nope",
        "/admin/v1/keys/",
        "/admin/v1//keys",
        "/admin/v1/%6beys",
        "/admin/v1/keys/..%2f..%2ftokens",
        "/admin/v1/./keys",
        "/admin/v1",
        "/admin/v1/",
        "/admin/v1/keys?authenticator=keys&authenticator=other",
    ] {
        let a = call(addr, None, "GET", path, None, &[]);
        assert_eq!(a.status, 401, "{path}: {a:?}");
        let raw = common::raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(common::status_of(&raw), 401, "{path} (raw): {raw}");
    }
    for path in ["/ADMIN/v1/keys", "/admin/V1/keys", "/admin/v1/../v1/keys"] {
        let raw = common::raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        let status = common::status_of(&raw);
        assert!(status == 401 || status == 404 || status == 400, "{path}: {raw}");
        assert!(!raw.contains("\"items\""), "{path} listed something: {raw}");
    }
    // HEAD is GET without a body: the same credential rule.
    for path in ["/admin/v1/keys", "/admin/v1/tokens", "/admin/v1/openapi.json"] {
        let raw = common::raw(
            addr,
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(common::status_of(&raw), 401, "HEAD {path}: {raw}");
    }
    // A token in another scheme, or in a header of another name, is no credential.
    for h in [
        format!("Authorization: Basic {}", s.admin),
        format!("X-Admin-Token: {}", s.admin),
        format!("Authorization: Bearer  {}", s.admin),
    ] {
        assert_eq!(call(addr, None, "GET", "/admin/v1/whoami", None, &[&h]).status, 401, "{h}");
    }
    // With a credential, an unknown resource is 404 and a known one with a trailing slash too.
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/keys/", None, &[]).status, 404);
    assert_eq!(s.call(Some(&s.viewer), "GET", "/admin/v1/%6beys", None, &[]).status, 404);
}

/// The live event stream over Server-Sent Events carries a refusal as it happens.
#[test]
fn the_event_stream_carries_refusals_live() {
    use std::io::{BufRead, BufReader};
    let s = setup();
    let url = format!("http://{}/admin/v1/events/stream?kind=authn.failure", s.gw.addr("admin"));
    let mut child = std::process::Command::new("curl")
        .args(["-sN", "--max-time", "20", "-H", &format!("Authorization: Bearer {}", s.viewer), &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The stream is open once its first comment arrives; then a refused request.
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().starts_with(':'));
    let main = format!("http://{}/data", s.gw.addr("main"));
    assert_eq!(curl(&["-H", "X-API-Key: pcs_wrong", &main]).0, 401);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let data = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no event in the stream: {seen:?}"));
        if let Some(d) = line.strip_prefix("data: ") {
            break d.to_owned();
        }
        seen.push(line);
    };
    assert!(seen.iter().any(|l| l == "event: security"), "{seen:?}");
    let e: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(e["type"], "authn.failure");
    assert!(!data.contains("pcs_wrong"), "the presented key is not in the event");
    let _ = child.kill();
    let _ = child.wait();
}
