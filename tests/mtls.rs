#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Mutual TLS authentication end to end: certificates made per test with the `openssl` CLI (a CA, client
//! certificates with a CN, a SPIFFE SAN URI and a SAN DNS name, and a second, untrusted CA), a TLS
//! listener with `client_auth: { mode: optional }`, and curl presenting them.
//!
//! Which field named the principal is seen twice: each route's authenticator allows one identity
//! (`allowed_ids`, refusal reason in the log), and the upstream receives `X-Portcullis-Principal`/`-Roles`.
#[allow(unreachable_pub)]
mod common;

use common::pki::Ca;
use common::*;
use std::time::{Duration, Instant};

const BILLING: &str = "spiffe://example.org/ns/prod/sa/billing";

struct Setup {
    up: Upstream,
    gw: Gateway,
    ca: Ca,
    other: Ca,
    _dir: TempDir,
}

fn route(name: &str, auth: &str) -> String {
    let authorize = if auth == "none" { "" } else { "    authorize: authenticated\n" };
    format!("  - name: {name}\n    match:\n      path: {{ prefix: /{name} }}\n    upstream: app\n    auth: {auth}\n{authorize}")
}

fn start() -> Setup {
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "trusted");
    let other = Ca::new(&dir.0, "other");
    let up = Upstream::start("mtls");
    let routes = [
        route("cn", "by-cn"),
        route("uri", "by-uri"),
        route("dns", "by-dns"),
        route("any", "any-cert"),
        route("both", "{ all_of: [by-cn, by-uri] }"),
        route("public", "none"),
    ]
    .concat();
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    tls:
      certificates:
        - self_signed: [localhost]
      client_auth:
        ca: {ca}
        mode: optional
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  by-cn:
    mtls:
      principal_from: subject_cn
      allowed_ids: [alice]
  by-uri:
    mtls:
      principal_from: san_uri
      roles:
        "{BILLING}": [billing]
      allowed_ids: ["{BILLING}"]
  by-dns:
    mtls:
      principal_from: san_dns
      allowed_ids: [billing.internal]
  any-cert:
    mtls:
      principal_from: san_uri
      roles:
        "{BILLING}": [billing-any]
      default_roles: [workload]
routes:
{routes}logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        ca = path_str(&ca.pem()),
        up = up.addr,
    );
    let gw = Gateway::start(&yaml);
    Setup { up, gw, ca, other, _dir: dir }
}

/// GET `path` over TLS (server certificate not checked: it is self-signed), with a client certificate.
fn get(s: &Setup, path: &str, cert: Option<&(String, String)>) -> (u16, String, String) {
    let url = format!("https://localhost:{}{path}", s.gw.addr("main").port());
    let resolve = format!("localhost:{}:127.0.0.1", s.gw.addr("main").port());
    let mut args = vec!["-k", "--resolve", resolve.as_str(), url.as_str()];
    if let Some((c, k)) = cert {
        args.extend_from_slice(&["--cert", c, "--key", k]);
    }
    curl(&args)
}

/// Expects a 401 with the client-certificate challenge, the upstream untouched, and `reason` logged.
fn refused(s: &Setup, path: &str, cert: Option<&(String, String)>, reason: &str) {
    let needle = format!("\"reason\":\"{reason}\"");
    let before = s.gw.count_log(&needle);
    let hits = s.up.hits();
    let (code, headers, body) = get(s, path, cert);
    assert_eq!(code, 401, "{path}: {headers}{body}");
    assert!(
        header_of(&headers, "www-authenticate").is_some_and(|c| c.contains("ClientCertificate realm=\"portcullis\"")),
        "{headers}"
    );
    assert_eq!(problem_type(&body), problem("unauthorized"));
    assert_eq!(s.up.hits(), hits, "{path}: a refused request reached the upstream");
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.gw.count_log(&needle) == before {
        assert!(Instant::now() < deadline, "{path}: no `{reason}` logged:\n{}", s.gw.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Expects a 200; returns (principal, roles) as the upstream was told.
fn ok(s: &Setup, path: &str, cert: Option<&(String, String)>) -> (String, String) {
    let hits = s.up.hits();
    let (code, headers, body) = get(s, path, cert);
    assert_eq!(code, 200, "{path}: {headers}{body}\n{}", s.gw.logs().join("\n"));
    assert_eq!(s.up.hits(), hits + 1);
    let seen = s.up.last().unwrap();
    let h = |n: &str| seen.header(n).unwrap_or_default().to_owned();
    if cert.is_some() && path != "/public" {
        assert_eq!(h("x-portcullis-auth-method"), "mtls");
    }
    (h("x-portcullis-principal"), h("x-portcullis-roles"))
}

fn pair(id: &str, roles: &str) -> (String, String) {
    (id.to_owned(), roles.to_owned())
}

#[test]
fn principal_comes_from_the_configured_field() {
    let s = start();
    let alice = s.ca.client("alice", "/CN=alice", &[&format!("URI:{BILLING}"), "DNS:billing.internal"]);
    // Each route allows only the identity its field should yield, and maps it to its roles.
    assert_eq!(ok(&s, "/cn", Some(&alice)), pair("alice", ""));
    assert_eq!(ok(&s, "/uri", Some(&alice)), pair(BILLING, "billing"));
    assert_eq!(ok(&s, "/dns", Some(&alice)), pair("billing.internal", ""));
    assert_eq!(ok(&s, "/any", Some(&alice)), pair(BILLING, "billing-any"));
    // all_of: the first method's identity, the union of the roles.
    assert_eq!(ok(&s, "/both", Some(&alice)), pair("alice", "billing"));
    // Same CA, other names: every field yields an identity that is not allowed.
    let bob = s.ca.client("bob", "/CN=bob", &["URI:spiffe://example.org/ns/dev/sa/other", "DNS:other.internal"]);
    for path in ["/cn", "/uri", "/dns", "/both"] {
        refused(&s, path, Some(&bob), "identity_not_allowed");
    }
    assert_eq!(ok(&s, "/any", Some(&bob)), pair("spiffe://example.org/ns/dev/sa/other", "workload"));
    // A CN but no SANs: the SAN routes find no identity, the CN route accepts.
    let cn_only = s.ca.client("cn-only", "/CN=alice", &[]);
    assert_eq!(ok(&s, "/cn", Some(&cn_only)).0, "alice");
    refused(&s, "/uri", Some(&cn_only), "identity_missing");
    refused(&s, "/dns", Some(&cn_only), "identity_missing");
    refused(&s, "/both", Some(&cn_only), "identity_missing");
    // SANs but no CN.
    let no_cn = s.ca.client("no-cn", "/O=example", &[&format!("URI:{BILLING}")]);
    refused(&s, "/cn", Some(&no_cn), "identity_missing");
    assert_eq!(ok(&s, "/uri", Some(&no_cn)).0, BILLING);
}

#[test]
fn no_certificate_is_401_and_untrusted_ca_is_refused_at_handshake() {
    let s = start();
    // mode: optional: the handshake succeeds without a certificate; public routes answer, others refuse.
    assert_eq!(ok(&s, "/public", None), pair("", ""));
    for path in ["/cn", "/uri", "/dns", "/both"] {
        refused(&s, path, None, "missing_credentials");
    }
    // A certificate from a CA the listener does not trust never completes the handshake.
    let hits = s.up.hits();
    let mallory = s.other.client("mallory", "/CN=alice", &[&format!("URI:{BILLING}"), "DNS:billing.internal"]);
    for path in ["/cn", "/public"] {
        let (code, headers, body) = get(&s, path, Some(&mallory));
        assert_eq!(code, 0, "{path}: untrusted client certificate accepted: {headers}{body}");
    }
    assert_eq!(s.up.hits(), hits);
}
