#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Encrypted secrets end to end against a real OAuth server: panva's `oidc-provider` (tests/idp/) checks
//! the gateway's introspection client credentials, so a token passes only when the gateway decrypted
//! `client_secret: ${enc:v1:...}` (HTTP Basic) and `client_secret: ${store:NAME}` (form body) to the
//! exact value the provider knows. A third authenticator holds a well-formed encrypted value of the wrong
//! secret: the provider refuses the gateway, and the request never reaches the upstream.
//!
//! Needs `node` and `tests/idp/node_modules` (scripts/test.sh runs `npm ci --prefix tests/idp`; when the
//! modules are missing, the test runs it).
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

use common::idp::{Idp, INTROSPECTION_SECRET as BASIC_SECRET, POST_SECRET};

/// `portcullis secrets ARGS -c CONFIG` with `stdin`: its stdout; fails the test unless it exits 0.
fn secrets(args: &[&str], config: &str, stdin: &str) -> String {
    let mut child = Command::new(bin())
        .arg("secrets")
        .args(args)
        .args(["-c", config])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "secrets {args:?}: {stdout}{stderr}");
    stdout.trim().to_owned()
}

fn config(up: std::net::SocketAddr, issuer: &str, sections: &str, basic: &str, post: &str, wrong: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  basic:
    introspection:
      endpoint: {issuer}/token/introspection
      client_id: gateway
      client_secret: {basic}
      auth_method: basic
      issuer: {issuer}
      audiences: [opaque-api]
  post:
    introspection:
      endpoint: {issuer}/token/introspection
      client_id: gateway-post
      client_secret: {post}
      auth_method: post
  wrong:
    introspection:
      endpoint: {issuer}/token/introspection
      client_id: gateway
      client_secret: {wrong}
      auth_method: basic
routes:
  - name: basic
    match:
      path: {{ prefix: /basic }}
    upstream: app
    auth: basic
    authorize: authenticated
  - name: post
    match:
      path: {{ prefix: /post }}
    upstream: app
    auth: post
    authorize: authenticated
  - name: wrong
    match:
      path: {{ prefix: /wrong }}
    upstream: app
    auth: wrong
    authorize: authenticated
{sections}logging:
  level: info
"#
    )
}

fn status(gw: &Gateway, path: &str, token: &str) -> u16 {
    curl(&[&format!("http://{}{path}", gw.addr("main")), "-H", &format!("Authorization: Bearer {token}")]).0
}

#[test]
fn introspection_client_secrets_from_enc_and_store_authenticate_to_a_real_provider() {
    let idp = Idp::start();
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let (code, kek, err) = portcullis(&["secrets", "keygen"], &[]);
    assert_eq!(code, 0, "{err}");
    let kek_file = dir.write("kek", kek.trim());
    let sections = format!(
        "secrets:\n  kek: {{ file: {} }}\nstore:\n  sqlite: {}\n",
        path_str(&kek_file),
        path_str(&dir.path("state.db"))
    );
    // The CLI needs only `secrets:` and `store:`: a first config with placeholders.
    let cfg = dir.path("portcullis.yaml");
    let cfg_s = path_str(&cfg);
    std::fs::write(&cfg, config(up.addr, &idp.issuer, &sections, "x", "x", "x")).unwrap();
    let basic = secrets(&["encrypt"], &cfg_s, &format!("{BASIC_SECRET}\n"));
    let wrong = secrets(&["encrypt"], &cfg_s, "gateway-secret-9876543210\n");
    assert!(basic.starts_with("${enc:v1:") && wrong.starts_with("${enc:v1:"), "{basic} {wrong}");
    secrets(&["put", "idp/gateway-post"], &cfg_s, POST_SECRET);
    let yaml = config(up.addr, &idp.issuer, &sections, &basic, "${store:idp/gateway-post}", &wrong);
    assert!(!yaml.contains(BASIC_SECRET) && !yaml.contains(POST_SECRET), "no plaintext in the config");
    std::fs::write(&cfg, &yaml).unwrap();
    let (code, out, err) = portcullis(&["check", "-c", &cfg_s], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let gw = Gateway::start_in(dir, &yaml);

    let token = idp.opaque();
    // HTTP Basic with the secret decrypted from `${enc:...}`.
    let asked = idp.count("introspection");
    assert_eq!(status(&gw, "/basic/a", &token), 200);
    assert!(idp.count("introspection") > asked, "the provider was asked");
    assert_eq!(up.hits(), 1);
    let seen = up.last().unwrap();
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("introspection"));
    assert_eq!(seen.header("x-portcullis-principal"), Some("app"));
    // Form body with the secret decrypted from the state store.
    assert_eq!(status(&gw, "/post/a", &token), 200);
    assert_eq!(up.hits(), 2);
    // A well-formed encrypted value of the wrong secret: the provider refuses the gateway's credentials,
    // so the active token is refused, and nothing reaches the upstream.
    let asked = idp.count("introspection");
    assert_eq!(status(&gw, "/wrong/a", &token), 401);
    assert!(idp.count("introspection") > asked, "the provider was asked, and said no");
    assert_eq!(up.hits(), 2, "nothing reached the upstream");
    // A made-up token through a route whose credentials are right: 401, nothing upstream.
    assert_eq!(status(&gw, "/basic/b", "made-up-token-0123456789abcdef"), 401);
    assert_eq!(up.hits(), 2);

    let logs = gw.logs().join("\n");
    for secret in [BASIC_SECRET, POST_SECRET, "gateway-secret-9876543210", token.as_str()] {
        assert!(!logs.contains(secret), "a secret or token appeared in the logs");
    }
}
