#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Token lifetime and revocation (issue 18, part 4) against the real gateway: JWT `max_lifetime`, API
//! key `max_age` with its warnings, and the `jti` deny list written by the real `portcullis tokens` CLI
//! into the SQLite store or, for a fleet of two gateways, a real `redis-server`. Tokens are HS256, minted
//! here; requests go through curl; refusals are checked for their status, challenge, event reason, and
//! that nothing reached the upstream.
#[allow(unreachable_pub)]
mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const ISSUER_A: &str = "https://idp-a.test";
const ISSUER_B: &str = "https://idp-b.test";
const SECRET_A: &str = "token-policy-secret-a-0123456789abcdef";
const SECRET_B: &str = "token-policy-secret-b-0123456789abcdef";
const CHALLENGE: &str = "Bearer realm=\"portcullis\", error=\"invalid_token\"";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A gateway with two HS256 issuers (A with `max_lifetime: 1h`, B without) on one route, events on
/// stdout, and `state` (a `store:` or `redis:` section).
fn jwt_config(up: std::net::SocketAddr, state: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  idp-a:
    jwt:
      issuer: {ISSUER_A}
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {SECRET_A}
      max_lifetime: 1h
  idp-b:
    jwt:
      issuer: {ISSUER_B}
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {SECRET_B}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: {{ any_of: [idp-a, idp-b] }}
    authorize: authenticated
{state}
events:
  stdout: true
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

fn token(issuer: &str, jti: &str, iat: i64, exp: i64) -> String {
    let secret = if issuer == ISSUER_A { SECRET_A } else { SECRET_B };
    hs256(secret, &json!({"iss": issuer, "aud": "api", "sub": "alice", "jti": jti, "iat": iat, "exp": exp}))
}

/// A token of `issuer` with this `jti`, valid for ten minutes.
fn fresh(issuer: &str, jti: &str) -> String {
    token(issuer, jti, now() - 5, now() + 600)
}

fn call(gw: &Gateway, token: &str) -> (u16, String, String) {
    let url = format!("http://{}/data", gw.addr("main"));
    curl(&[&url, "-H", &format!("Authorization: Bearer {token}")])
}

/// The request is refused with 401, the bearer challenge and problem+json, with an `authn.failure`
/// event of `reason`, and the upstream saw nothing.
fn refused(gw: &Gateway, up: &Upstream, token: &str, reason: &str) {
    let before = up.hits();
    let failures =
        |gw: &Gateway| events(gw).iter().filter(|e| e["type"] == "authn.failure" && e["reason"] == reason).count();
    let seen = failures(gw);
    let (code, headers, body) = call(gw, token);
    assert_eq!(code, 401, "{headers}{body}");
    assert_eq!(header_of(&headers, "www-authenticate").as_deref(), Some(CHALLENGE), "{headers}");
    assert_eq!(problem_type(&body), problem("unauthorized"), "{body}");
    assert_eq!(up.hits(), before, "a refused request reached the upstream");
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures(gw) <= seen {
        assert!(Instant::now() < deadline, "no authn.failure event `{reason}`: {:#?}", events(gw));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn accepted(gw: &Gateway, up: &Upstream, token: &str) {
    let before = up.hits();
    let (code, headers, body) = call(gw, token);
    assert_eq!(code, 200, "{headers}{body}");
    assert_eq!(up.hits(), before + 1);
}

/// Polls until a request with `token` gets `want`, at most `within`; returns how long it took.
fn until_status(gw: &Gateway, token: &str, want: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if call(gw, token).0 == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still not {want} after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `portcullis tokens -c CONFIG ARGS...`; returns (exit code, stdout, stderr).
fn tokens(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["tokens", "-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    portcullis(&all, &[])
}

fn tokens_ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = tokens(config, args);
    assert_eq!(code, 0, "tokens {args:?}: {err}");
    out
}

#[test]
fn max_lifetime_boundary_is_exact() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&jwt_config(up.addr, ""));
    let iat = now() - 10;
    // Exactly one hour is allowed; one second more is a finding.
    accepted(&gw, &up, &token(ISSUER_A, "a", iat, iat + 3600));
    let long = token(ISSUER_A, "b", iat, iat + 3601);
    refused(&gw, &up, &long, "lifetime_too_long");
    // Never cached: refused again, by the same check.
    refused(&gw, &up, &long, "lifetime_too_long");
    // A year-long token, and one that does not say when it was issued.
    refused(&gw, &up, &token(ISSUER_A, "c", iat, iat + 365 * 86_400), "lifetime_too_long");
    let no_iat = hs256(SECRET_A, &json!({"iss": ISSUER_A, "aud": "api", "sub": "alice", "exp": now() + 60}));
    refused(&gw, &up, &no_iat, "missing_iat");
    let text_iat =
        hs256(SECRET_A, &json!({"iss": ISSUER_A, "aud": "api", "sub": "alice", "iat": "0", "exp": now() + 60}));
    refused(&gw, &up, &text_iat, "malformed_claims");
    // The other issuer has no max_lifetime: its long tokens pass.
    accepted(&gw, &up, &token(ISSUER_B, "d", iat, iat + 365 * 86_400));
}

#[test]
fn revoked_jti_is_refused_within_a_second_even_when_cached() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let store = format!("store:\n  sqlite: {}", path_str(&dir.path("state.db")));
    let gw = Gateway::start(&jwt_config(up.addr, &store));
    let a = fresh(ISSUER_A, "stolen-1");
    let b = fresh(ISSUER_B, "stolen-1");
    // Both verified and cached first.
    accepted(&gw, &up, &a);
    accepted(&gw, &up, &b);

    let out = tokens_ok(&gw.config, &["revoke", "--jti", "stolen-1", "--issuer", ISSUER_A, "--reason", "leaked"]);
    assert!(out.is_empty(), "{out}");
    let took = until_status(&gw, &a, 401, Duration::from_secs(1));
    assert!(took < Duration::from_secs(1), "{took:?}");
    refused(&gw, &up, &a, "revoked");
    // The same jti of another issuer is another token.
    accepted(&gw, &up, &b);
    // Revoked for any issuer: both go.
    tokens_ok(&gw.config, &["revoke", "--jti", "stolen-1", "--for", "1h"]);
    until_status(&gw, &b, 401, Duration::from_secs(3));
    refused(&gw, &up, &b, "revoked");
    let listed = tokens_ok(&gw.config, &["list"]);
    assert!(listed.contains(ISSUER_A) && listed.contains("stolen-1") && listed.contains("* "), "{listed}");

    // Lifting the issuer's entry leaves the any-issuer one; lifting that too lets both in again.
    tokens_ok(&gw.config, &["unrevoke", "--jti", "stolen-1", "--issuer", ISSUER_A]);
    std::thread::sleep(Duration::from_millis(600));
    refused(&gw, &up, &a, "revoked");
    tokens_ok(&gw.config, &["unrevoke", "--jti", "stolen-1"]);
    until_status(&gw, &a, 200, Duration::from_secs(3));
    accepted(&gw, &up, &b);
    let (code, _, err) = tokens(&gw.config, &["unrevoke", "--jti", "stolen-1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not revoked"), "{err}");

    // An entry ends by itself and is dropped.
    let c = fresh(ISSUER_A, "short-lived");
    accepted(&gw, &up, &c);
    tokens_ok(&gw.config, &["revoke", "--jti", "short-lived", "--for", "2s"]);
    until_status(&gw, &c, 401, Duration::from_secs(3));
    until_status(&gw, &c, 200, Duration::from_secs(5));
    let listed = tokens_ok(&gw.config, &["list"]);
    assert!(!listed.contains("short-lived"), "an ended entry is listed: {listed}");

    // The stolen token itself names the entry (jti, issuer, and until its exp plus leeway).
    let exp = now() + 300;
    let d = token(ISSUER_A, "from-stdin", now() - 5, exp);
    accepted(&gw, &up, &d);
    let mut child = std::process::Command::new(bin())
        .args(["tokens", "-c", gw.config.to_str().unwrap(), "revoke", "--token-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), d.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(&d), "the command printed the token: {err}");
    until_status(&gw, &d, 401, Duration::from_secs(3));
    let listed = tokens_ok(&gw.config, &["list"]);
    let line = listed.lines().find(|l| l.contains("from-stdin")).unwrap();
    assert!(line.starts_with(ISSUER_A) && line.contains(&(exp + 30).to_string()), "{listed}");

    // An id with characters beyond ASCII is matched exactly.
    let odd = fresh(ISSUER_A, "jti-ünï-😀");
    accepted(&gw, &up, &odd);
    tokens_ok(&gw.config, &["revoke", "--jti", "jti-ünï-😀", "--issuer", ISSUER_A]);
    until_status(&gw, &odd, 401, Duration::from_secs(3));
    accepted(&gw, &up, &fresh(ISSUER_A, "jti-ünï"));
}

#[test]
fn revocations_apply_from_start_and_survive_reloads() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let store = format!("store:\n  sqlite: {}", path_str(&dir.path("state.db")));
    let yaml = jwt_config(up.addr, &store);
    // Revoked before any gateway runs.
    let config = dir.write("pre.yaml", &yaml);
    tokens_ok(&config, &["revoke", "--jti", "early", "--issuer", ISSUER_A]);
    let gw = Gateway::start(&yaml);
    let t = fresh(ISSUER_A, "early");
    refused(&gw, &up, &t, "revoked");
    // A reload (signal, and a changed file) keeps the list and its poll.
    gw.signal("HUP");
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(10)));
    refused(&gw, &up, &t, "revoked");
    gw.rewrite_config(&yaml.replace("level: info", "level: debug"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.count_log("configuration reloaded") < 2 {
        assert!(Instant::now() < deadline, "no second reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    refused(&gw, &up, &t, "revoked");
    let later = fresh(ISSUER_A, "later");
    accepted(&gw, &up, &later);
    tokens_ok(&gw.config, &["revoke", "--jti", "later"]);
    until_status(&gw, &later, 401, Duration::from_secs(3));
}

#[test]
fn the_cli_refuses_hostile_ids_and_changes_nothing() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let db = dir.path("state.db");
    let gw = Gateway::start(&jwt_config(up.addr, &format!("store:\n  sqlite: {}", path_str(&db))));
    let long = "x".repeat(600);
    let cases: [(&[&str], &str); 7] = [
        (&["revoke", "--jti", ""], "cannot be empty"),
        (&["revoke", "--jti", "a\nb"], "control characters"),
        (&["revoke", "--jti", "a\tb"], "control characters"),
        (&["revoke", "--jti", &long], "longer than 512"),
        (&["revoke", "--jti", "j", "--issuer", "https://evil.test"], "no jwt authenticator"),
        (&["revoke", "--jti", "j", "--until", "1000"], "has passed"),
        (&["revoke", "--jti", "j", "--until", "next tuesday"], "is not a time"),
    ];
    for (args, want) in cases {
        let (code, _, err) = tokens(&gw.config, args);
        assert_eq!(code, 1, "{args:?} passed");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(tokens_ok(&gw.config, &["list", "--all"]).lines().count(), 1, "only the header");
    // A token with a very long id is judged like any other (not revoked).
    let long_jti = fresh(ISSUER_B, &"y".repeat(3000));
    accepted(&gw, &up, &long_jti);
    // A default revocation of an issuer with max_lifetime lasts max_lifetime plus leeway.
    let (code, _, err) = tokens(&gw.config, &["revoke", "--jti", "j", "--issuer", ISSUER_A]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let (code, _, err) = tokens(&gw.config, &["revoke", "--jti", "k"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: an issuer concerned has no max_lifetime"), "{err}");
    let listed = tokens_ok(&gw.config, &["list"]);
    assert!(listed.contains("1h00m") || listed.contains("59m"), "{listed}");
    assert!(listed.contains("23h59m") || listed.contains("1d00h"), "{listed}");
    // Without store or redis there is nowhere to write.
    let bare = dir.write("bare.yaml", &jwt_config(up.addr, ""));
    let (code, _, err) = tokens(&bare, &["revoke", "--jti", "j"]);
    assert_eq!(code, 1);
    assert!(err.contains("neither `redis:` nor `store:`"), "{err}");
}

#[test]
fn a_fleet_refuses_a_revoked_token_on_every_node_within_a_second() {
    let redis = RedisServer::start();
    let state = format!("redis:\n  url: {}", redis.url());
    let (up1, up2) = (Upstream::start("one"), Upstream::start("two"));
    let (gw1, gw2) = (Gateway::start(&jwt_config(up1.addr, &state)), Gateway::start(&jwt_config(up2.addr, &state)));
    let t = fresh(ISSUER_A, "fleet-1");
    accepted(&gw1, &up1, &t);
    accepted(&gw2, &up2, &t);

    tokens_ok(&gw1.config, &["revoke", "--jti", "fleet-1", "--issuer", ISSUER_A]);
    let start = Instant::now();
    until_status(&gw1, &t, 401, Duration::from_secs(1));
    until_status(&gw2, &t, 401, Duration::from_secs(1));
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    refused(&gw1, &up1, &t, "revoked");
    refused(&gw2, &up2, &t, "revoked");
    // Kept in Redis, not in a file.
    assert!(redis.keys("portcullis:revoked*").len() == 2, "{:?}", redis.keys("*"));
    let listed = tokens_ok(&gw2.config, &["list"]);
    assert!(listed.contains("fleet-1"), "{listed}");

    // A node that starts now reads the list before its first request.
    let up3 = Upstream::start("three");
    let gw3 = Gateway::start(&jwt_config(up3.addr, &state));
    until_status(&gw3, &t, 401, Duration::from_secs(3));
    refused(&gw3, &up3, &t, "revoked");

    tokens_ok(&gw2.config, &["unrevoke", "--jti", "fleet-1", "--issuer", ISSUER_A]);
    until_status(&gw1, &t, 200, Duration::from_secs(3));
    until_status(&gw2, &t, 200, Duration::from_secs(3));

    // Redis goes away: the list in force stays (polls fail, nothing is forgotten).
    tokens_ok(&gw1.config, &["revoke", "--jti", "fleet-1"]);
    until_status(&gw1, &t, 401, Duration::from_secs(3));
    until_status(&gw2, &t, 401, Duration::from_secs(3));
    let mut redis = redis;
    redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    refused(&gw1, &up1, &t, "revoked");
    refused(&gw2, &up2, &t, "revoked");
    let (code, _, err) = tokens(&gw1.config, &["revoke", "--jti", "other"]);
    assert_eq!(code, 1, "revoked without redis: {err}");
    assert!(err.contains("redis"), "{err}");
}

#[test]
fn revocations_are_recorded_in_the_audit_trail() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let (private, public) = (dir.path("audit.key"), dir.path("audit.pub"));
    let (code, _, err) =
        portcullis(&["audit", "keygen", "--out", &path_str(&private), "--public-out", &path_str(&public)], &[]);
    assert_eq!(code, 0, "{err}");
    let trail = dir.path("audit.log");
    let state = format!(
        "store:\n  sqlite: {}\naudit:\n  file: {}\n  signing_key: ${{file:{}}}",
        path_str(&dir.path("state.db")),
        path_str(&trail),
        path_str(&private)
    );
    let config = dir.write("portcullis.yaml", &jwt_config(up.addr, &state));
    tokens_ok(&config, &["revoke", "--jti", "audited-1", "--issuer", ISSUER_A, "--reason", "laptop stolen"]);
    tokens_ok(&config, &["unrevoke", "--jti", "audited-1", "--issuer", ISSUER_A]);
    let records: Vec<Value> = std::fs::read_to_string(&trail)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["event"].clone())
        .filter(|v| v["type"] == "admin.action")
        .collect();
    let revoked = records.iter().find(|r| r["reason"] == "token_revoked").expect("no token_revoked record");
    assert_eq!(revoked["rule"], "audited-1", "{revoked}");
    assert_eq!(revoked["attrs"]["issuer"], ISSUER_A, "{revoked}");
    assert_eq!(revoked["attrs"]["revoke_reason"], "laptop stolen", "{revoked}");
    assert!(records.iter().any(|r| r["reason"] == "token_unrevoked" && r["rule"] == "audited-1"), "{records:?}");
    let (code, out, err) = portcullis(&["audit", "verify", &path_str(&trail), "--key", &path_str(&public)], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

// ---------------------------------------------------------------------------------------------------
// API keys: max_age
// ---------------------------------------------------------------------------------------------------

const HMAC_ENV: &str = "PORTCULLIS_TEST_POLICY_HMAC";
const HMAC: &str = "token-policy-keys-secret-5b2e9d71c0a84f36";

fn keys_config(up: std::net::SocketAddr, store: &Path) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HMAC_ENV}}}
      store: {store}
      refresh_interval: 200ms
      max_age: 30d
      warn_before: 7d
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
        store = path_str(store)
    )
}

fn keys(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["keys", "-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, out, err) = portcullis(&all, &[(HMAC_ENV, HMAC)]);
    assert_eq!(code, 0, "keys {args:?}: {err}");
    out.trim().to_owned()
}

fn with_key(gw: &Gateway, key: &str) -> (u16, String, String) {
    curl(&[&format!("http://{}/data", gw.addr("main")), "-H", &format!("X-API-Key: {key}")])
}

fn key_id(key: &str) -> String {
    key.strip_prefix("pcs_").and_then(|k| k.split('_').next()).unwrap().to_owned()
}

#[test]
fn api_keys_age_out_with_warnings_beforehand() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let db = dir.path("keys.db");
    // Keys made (and two of them backdated, as if made 25 and 31 days ago) before the gateway starts,
    // so it reads them once, with their times.
    let yaml = keys_config(up.addr, &db);
    let config = dir.write("portcullis.yaml", &yaml);
    let fresh = keys(&config, &["create", "--principal", "fresh"]);
    let near = keys(&config, &["create", "--principal", "near"]);
    let old = keys(&config, &["create", "--principal", "old", "--expires", "365d"]);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let age = |key: &str, days: i64| {
            conn.execute(
                "UPDATE api_keys SET created_at = ?1 WHERE id = ?2",
                rusqlite::params![now() - days * 86_400, key_id(key)],
            )
            .unwrap();
        };
        age(&near, 25);
        age(&old, 31);
    }
    let gw = Gateway::start_with_env(&yaml, &[(HMAC_ENV, HMAC)]);
    let before = up.hits();
    let (code, headers, body) = with_key(&gw, &old);
    assert_eq!(code, 401, "{body}");
    assert_eq!(header_of(&headers, "www-authenticate").as_deref(), Some("ApiKey realm=\"portcullis\""));
    assert_eq!(up.hits(), before, "a refused request reached the upstream");
    wait_event(&gw, |e| e["type"] == "authn.failure" && e["reason"] == "too_old");
    assert_eq!(with_key(&gw, &fresh).0, 200);
    assert_eq!(with_key(&gw, &near).0, 200, "nearing is a warning, not a refusal");

    // One warning for the nearing key, none for the others, however many scans run.
    let warning = wait_event(&gw, |e| e["type"] == "key.lifecycle" && e["reason"] == "nearing_max_age");
    assert_eq!(warning["rule"], key_id(&near).as_str(), "{warning}");
    assert_eq!(warning["attrs"]["authenticator"], "keys", "{warning}");
    assert!(!warning.to_string().contains(&near), "the event carries the key: {warning}");
    std::thread::sleep(Duration::from_millis(1000));
    let warnings = events(&gw).into_iter().filter(|e| e["type"] == "key.lifecycle").count();
    assert_eq!(warnings, 1, "{:#?}", events(&gw));
    let m = gw.metrics();
    assert_eq!(metric(&m, r#"portcullis_api_keys_nearing_max_age{authenticator="keys"}"#), Some(1.0), "{m}");
    // The admin API lists them: ids and principals, never keys.
    let (code, _, body) = curl(&[&format!("http://{}/keys/nearing-max-age", gw.addr("admin"))]);
    assert_eq!(code, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let near_list = listed["authenticators"]["keys"].as_array().unwrap();
    assert_eq!(near_list.len(), 1, "{body}");
    assert_eq!(near_list[0]["id"], key_id(&near).as_str(), "{body}");
    assert_eq!(near_list[0]["principal"], "near", "{body}");
    assert!(near_list[0]["seconds_left"].as_i64().unwrap() <= 5 * 86_400, "{body}");
    assert!(!body.contains(&near) && !body.contains(HMAC), "{body}");

    // `keys list` shows the effective expiry and flags; `--expiring` keeps only the keys concerned.
    let list = keys(&gw.config, &["list"]);
    let line = |key: &str| list.lines().find(|l| l.starts_with(&key_id(key))).unwrap().to_owned();
    assert!(line(&near).ends_with("nearing"), "{list}");
    assert!(line(&old).contains("too_old"), "{list}");
    assert!(line(&fresh).contains("active") && !line(&fresh).contains("nearing"), "{list}");
    let effective: i64 = line(&near).split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!((effective - (now() + 5 * 86_400)).abs() < 60, "{list}");
    let soon = keys(&gw.config, &["list", "--expiring", "7d"]);
    assert!(soon.contains(&key_id(&near)), "{soon}");
    assert!(!soon.contains(&key_id(&fresh)) && !soon.contains(&key_id(&old)), "{soon}");
    let later = keys(&gw.config, &["list", "--expiring", "40d"]);
    assert!(later.contains(&key_id(&fresh)) && later.contains(&key_id(&near)), "{later}");
}

#[test]
fn check_warns_that_declared_keys_never_age_out() {
    let dir = TempDir::new();
    let hash = "0".repeat(64);
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: 127.0.0.1:9
authenticators:
  keys:
    api_key:
      hmac_secret: {HMAC}
      max_age: 90d
      keys:
        - {{ id: ci, hash: "{hash}", principal: ci }}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: keys
    authorize: authenticated
"#
    );
    let path = dir.write("declared.yaml", &yaml);
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("warning: authenticator `keys`: max_age applies to stored keys only"), "{out}");
    // A warn_before not shorter than max_age is an error.
    let bad = dir.write("bad.yaml", &yaml.replace("max_age: 90d", "max_age: 1d\n      warn_before: 2d"));
    let (code, _, err) = portcullis(&["check", "-c", &path_str(&bad)], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("warn_before must be shorter than max_age"), "{err}");
}

#[test]
fn the_admin_listing_needs_the_admin_token() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let yaml = keys_config(up.addr, &dir.path("keys.db")).replace(
        "admin:\n  address: 127.0.0.1:0\n",
        "admin:\n  address: 127.0.0.1:0\n  token: admin-token-0123456789abcdef\n",
    );
    let gw = Gateway::start_with_env(&yaml, &[(HMAC_ENV, HMAC)]);
    let url = format!("http://{}/keys/nearing-max-age", gw.addr("admin"));
    let (code, headers, _) = curl(&[&url]);
    assert_eq!(code, 401, "{headers}");
    let (code, _, _) = curl(&[&url, "-H", "Authorization: Bearer wrong-token-0123456789abcdef"]);
    assert_eq!(code, 401);
    let (code, _, body) = curl(&[&url, "-H", "Authorization: Bearer admin-token-0123456789abcdef"]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"authenticators": {"keys": []}}));
}
