//! JWT and introspection against a real OpenID Provider: panva's `oidc-provider` on Node (tests/idp/),
//! started here on a free loopback port. It issues tokens by client credentials and serves discovery,
//! JWKS, introspection and revocation; its test-only admin endpoints rotate the signing key.
//!
//! Needs `node` and `tests/idp/node_modules` (scripts/test.sh runs `npm ci --prefix tests/idp`; when the
//! modules are missing, the first test here runs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::time::{Duration, Instant};

use common::idp::{Idp, INTROSPECTION_SECRET, POST_SECRET};

fn config(upstream: std::net::SocketAddr, issuer: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {upstream}
authenticators:
  sso:
    jwt:
      issuer: {issuer}
      audiences: [orders-api]
      algorithms: [RS256, PS256, ES256]
      discovery: true
      roles_claim: realm_access.roles
      required_claims: [sub, jti]
      jwks_refresh_interval: 1s
      unknown_kid_refresh_interval: 1s
      max_stale: 1h
  sso-uri:
    jwt:
      issuer: {issuer}
      audiences: [orders-api]
      algorithms: [RS256]
      jwks_uri: {issuer}/jwks
  opaque:
    introspection:
      endpoint: {issuer}/token/introspection
      client_id: gateway
      client_secret: ${{env:TEST_INTROSPECTION_SECRET}}
      auth_method: basic
      cache_ttl: 3s
      negative_cache_ttl: 1s
      issuer: {issuer}
      audiences: [opaque-api]
      roles_claim: realm_access.roles
  opaque-post:
    introspection:
      endpoint: {issuer}/token/introspection
      client_id: gateway-post
      client_secret: {POST_SECRET}
      auth_method: post
      cache_ttl: 3s
routes:
  - name: jwt
    match:
      path: {{ prefix: /jwt }}
    upstream: app
    auth: sso
    authorize: authenticated
  - name: jwt-uri
    match:
      path: {{ prefix: /uri }}
    upstream: app
    auth: sso-uri
    authorize: authenticated
  - name: opaque
    match:
      path: {{ prefix: /opaque }}
    upstream: app
    auth: opaque
    authorize: authenticated
  - name: post
    match:
      path: {{ prefix: /post }}
    upstream: app
    auth: opaque-post
    authorize: authenticated
  - name: either
    match:
      path: {{ prefix: /either }}
    upstream: app
    auth: {{ any_of: [sso, opaque] }}
    authorize: authenticated
logging:
  level: info
"#
    )
}

struct Setup {
    idp: Idp,
    up: Upstream,
    gw: Gateway,
}

fn setup() -> Setup {
    let idp = Idp::start();
    let up = Upstream::start("app");
    let gw =
        Gateway::start_with_env(&config(up.addr, &idp.issuer), &[("TEST_INTROSPECTION_SECRET", INTROSPECTION_SECRET)]);
    Setup { idp, up, gw }
}

fn status(gw: &Gateway, path: &str, token: &str) -> u16 {
    curl(&[&format!("http://{}{path}", gw.addr("main")), "-H", &format!("Authorization: Bearer {token}")]).0
}

/// Polls until `path` answers `want` for `token` (at most `timeout`).
fn eventually(gw: &Gateway, path: &str, token: &str, want: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if status(gw, path, token) == want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn provider_tokens_pass_with_discovery_and_jwks_uri() {
    let s = setup();
    let token = s.idp.jwt();
    assert_eq!(token.matches('.').count(), 2, "a JWT access token");
    assert_eq!(status(&s.gw, "/jwt/orders", &token), 200);
    // The principal the upstream is told about: the provider's claims, mapped.
    let seen = s.up.last().unwrap();
    assert_eq!(seen.header("x-portcullis-principal"), Some("app"), "sub of a client credentials token");
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("jwt"));
    assert_eq!(seen.header("x-portcullis-roles"), Some("reader,auditor"), "from realm_access.roles");
    assert_eq!(seen.header("x-portcullis-scopes"), Some("orders:read"));
    assert_eq!(status(&s.gw, "/uri/orders", &token), 200);
    assert_eq!(status(&s.gw, "/either/orders", &token), 200);
    assert_eq!(s.up.hits(), 3);
    assert!(s.idp.count("discovery") >= 1, "discovery was used");
    // A token for another resource (audience) is refused.
    let other = s.idp.opaque();
    assert_eq!(status(&s.gw, "/jwt/orders", &other), 401, "opaque token on a JWT-only route");
    // Tampering with a real token: refused, nothing forwarded.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    assert_eq!(status(&s.gw, "/jwt/orders", &parts.join(".")), 401);
    assert_eq!(s.up.hits(), 3);
}

#[test]
fn signing_key_rotation_without_restart() {
    let s = setup();
    let old = s.idp.jwt();
    assert_eq!(status(&s.gw, "/jwt/a", &old), 200);
    assert_eq!(status(&s.gw, "/uri/a", &old), 200);
    std::thread::sleep(Duration::from_millis(1100)); // let the unknown-kid interval pass
    let new_kid = s.idp.admin("rotate")["kid"].as_str().unwrap().to_owned();
    let new = s.idp.jwt();
    assert!(String::from_utf8_lossy(&base64_header(&new)).contains(&new_kid), "signed with the new key");
    // The new key is fetched when its kid is first seen: no restart, no wait for the schedule.
    assert_eq!(status(&s.gw, "/jwt/b", &new), 200, "new key, discovery");
    assert_eq!(status(&s.gw, "/uri/b", &new), 200, "new key, jwks_uri (default 5m schedule)");
    assert_eq!(status(&s.gw, "/jwt/c", &old), 200, "old key still published");
    // The old key is removed from the provider's JWKS: its tokens stop passing after the next refresh.
    s.idp.admin("retire");
    assert!(eventually(&s.gw, "/jwt/d", &old, 401, Duration::from_secs(15)), "the retired key kept working");
    assert_eq!(status(&s.gw, "/jwt/e", &new), 200);
    let logs = s.gw.logs().join("\n");
    assert!(logs.contains("JWKS keys updated"), "{logs}");
    assert!(!logs.contains(&new) && !logs.contains(&old), "a token appeared in the logs");
}

fn base64_header(token: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()
}

#[test]
fn unknown_kids_are_rate_limited_at_the_provider_and_outage_keeps_keys() {
    let s = setup();
    let token = s.idp.jwt();
    assert_eq!(status(&s.gw, "/jwt/a", &token), 200);
    let before = s.idp.count("jwks");
    let started = Instant::now();
    let (_, rest) = token.split_once('.').unwrap();
    for i in 0..30 {
        let header = format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"flood-{i}"}}"#);
        use base64::Engine;
        let forged = format!("{}.{rest}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header));
        assert_eq!(status(&s.gw, "/jwt/a", &forged), 401);
    }
    let secs = started.elapsed().as_secs() + 1;
    let fetched = s.idp.count("jwks") - before;
    // One fetch per second at most (plus the 1s background schedule of this config).
    assert!(fetched <= 2 * secs + 2, "{fetched} JWKS fetches in {secs}s");
    // The provider goes down: keys already fetched keep working (max_stale is 1h).
    s.idp.admin("down");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status(&s.gw, "/jwt/b", &token), 200, "cached token during the outage");
    let issued_before_outage = {
        s.idp.admin("up");
        let t = s.idp.jwt();
        s.idp.admin("down");
        t
    };
    assert_eq!(status(&s.gw, "/jwt/c", &issued_before_outage), 200, "a new token with a known key");
    assert_eq!(s.up.hits(), 3);
}

#[test]
fn introspection_of_active_revoked_and_unknown_tokens() {
    let s = setup();
    let active = s.idp.opaque();
    assert!(!active.contains('.'), "an opaque token");
    assert_eq!(status(&s.gw, "/opaque/a", &active), 200, "active (client auth: basic)");
    let seen = s.up.last().unwrap();
    assert_eq!(seen.header("x-portcullis-principal"), Some("app"), "client_id: no sub in the answer");
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("introspection"));
    assert_eq!(seen.header("x-portcullis-roles"), Some("reader,auditor"));
    assert_eq!(seen.header("x-portcullis-scopes"), Some("orders:read"));
    assert_eq!(status(&s.gw, "/post/a", &active), 200, "active (client auth: post)");
    assert_eq!(status(&s.gw, "/either/a", &active), 200, "any_of: the JWT method passes an opaque token on");
    // Cached: a second request within cache_ttl does not ask the provider again.
    let asked = s.idp.count("introspection");
    assert_eq!(status(&s.gw, "/opaque/b", &active), 200);
    assert_eq!(s.idp.count("introspection"), asked);
    // Revoked: refused once the 3s cache_ttl has passed.
    s.idp.revoke(&active);
    assert!(eventually(&s.gw, "/opaque/c", &active, 401, Duration::from_secs(8)), "revoked token kept passing");
    assert!(eventually(&s.gw, "/post/c", &active, 401, Duration::from_secs(8)), "revoked (post)");
    // Unknown tokens.
    assert_eq!(status(&s.gw, "/opaque/d", "made-up-token-0123456789abcdef"), 401);
    assert_eq!(status(&s.gw, "/opaque/d", &s.idp.jwt()), 401, "a JWT is not an active opaque token here");
    let hits = s.up.hits();
    // The endpoint unreachable: 401, never a pass.
    let fresh = s.idp.opaque();
    s.idp.admin("down");
    let resp =
        curl(&[&format!("http://{}/opaque/e", s.gw.addr("main")), "-H", &format!("Authorization: Bearer {fresh}")]);
    assert_eq!(resp.0, 401, "endpoint down");
    assert!(header_of(&resp.1, "www-authenticate").unwrap().contains("error=\"invalid_token\""));
    assert_eq!(problem_type(&resp.2), problem("unauthorized"));
    s.idp.admin("up");
    assert_eq!(status(&s.gw, "/opaque/f", &fresh), 200, "a failure is not cached");
    assert_eq!(s.up.hits(), hits + 1);
    let logs = s.gw.logs().join("\n");
    assert!(logs.contains("token introspection refused"), "{logs}");
    for secret in [INTROSPECTION_SECRET, POST_SECRET, active.as_str(), fresh.as_str()] {
        assert!(!logs.contains(secret), "a secret or token appeared in the logs");
    }
}
