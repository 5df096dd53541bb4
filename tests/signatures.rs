#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Signed requests (RFC 9421) end to end: a small signing client written here (its own signature base
//! construction, aws-lc-rs for HMAC-SHA-256 and Ed25519, RFC 9530 `Content-Digest`) against the real
//! gateway. Every refusal is a 401 with the `Signature` challenge, and nothing reaches the upstream.
#[allow(unreachable_pub)]
mod common;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use aws_lc_rs::{digest, hmac, rand};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET_ENV: &str = "PORTCULLIS_TEST_SIGNING_SECRET";
const SECRET: &str = "signing-test-shared-secret-0123456789abcdef";
const HOST: &str = "api.test";

enum Signer {
    Hmac(&'static str),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    fn sign(&self, base: &[u8]) -> Vec<u8> {
        match self {
            Signer::Hmac(secret) => {
                hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), base).as_ref().to_vec()
            }
            Signer::Ed25519(kp) => kp.sign(base).as_ref().to_vec(),
        }
    }
}

/// A new Ed25519 key as PKCS#8 (the key pair type is not `Clone`; tests re-create it from this).
fn ed25519() -> Vec<u8> {
    Ed25519KeyPair::generate_pkcs8(&rand::SystemRandom::new()).unwrap().as_ref().to_vec()
}

fn pair(pkcs8: &[u8]) -> Ed25519KeyPair {
    Ed25519KeyPair::from_pkcs8(pkcs8).unwrap()
}

/// An SPKI PEM for an Ed25519 public key (RFC 8410: fixed 12-byte prefix, then the key).
fn spki_pem(pkcs8: &[u8]) -> String {
    let kp = pair(pkcs8);
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(kp.public_key().as_ref());
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", B64.encode(der))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn nonce() -> String {
    let mut b = [0u8; 16];
    rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut b).unwrap();
    B64.encode(b)
}

/// A request as the client builds it, before and after signing.
#[derive(Clone)]
struct Req {
    method: &'static str,
    path_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &'static str, path_query: &str, body: &[u8]) -> Req {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if !body.is_empty() {
            let d = digest::digest(&digest::SHA256, body);
            headers.push(("content-digest".into(), format!("sha-256=:{}:", B64.encode(d))));
        }
        Req { method, path_query: path_query.into(), headers, body: body.to_vec() }
    }

    /// RFC 9421 §2.2 and §2.1, for the components this client signs.
    fn component(&self, name: &str) -> String {
        let (path, query) = self.path_query.split_once('?').map_or((&*self.path_query, None), |(p, q)| (p, Some(q)));
        match name {
            "@method" => self.method.into(),
            "@target-uri" => format!("http://{HOST}{}", self.path_query),
            "@authority" => HOST.into(),
            "@path" => path.into(),
            "@query" => format!("?{}", query.unwrap_or("")),
            field => {
                self.headers.iter().filter(|(k, _)| k == field).map(|(_, v)| v.trim()).collect::<Vec<_>>().join(", ")
            }
        }
    }

    /// Adds `Signature-Input` and `Signature` for `components` with `params` (`;created=..;keyid=..`).
    fn sign(mut self, components: &[&str], params: &str, signer: &Signer) -> Req {
        let list = components.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(" ");
        let sig_params = format!("({list}){params}");
        let mut base = String::new();
        for c in components {
            base.push_str(&format!("\"{c}\": {}\n", self.component(c)));
        }
        base.push_str(&format!("\"@signature-params\": {sig_params}"));
        let signature = B64.encode(signer.sign(base.as_bytes()));
        self.headers.push(("signature-input".into(), format!("sig1={sig_params}")));
        self.headers.push(("signature".into(), format!("sig1=:{signature}:")));
        self
    }

    fn send(&self, gw: &Gateway) -> String {
        let mut head = format!("{} {} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n", self.method, self.path_query);
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        raw(gw.addr("main"), &bytes, Duration::from_secs(10))
    }
}

fn params(keyid: &str, created: i64, nonce: &str) -> String {
    format!(";created={created};nonce=\"{nonce}\";keyid=\"{keyid}\"")
}

const COVERED: &[&str] = &["@method", "@target-uri", "@authority", "content-type", "content-digest"];

struct Setup {
    up: Upstream,
    gw: Gateway,
    ed: Vec<u8>,
    ed_file: Vec<u8>,
    _dir: TempDir,
}

fn start() -> Setup {
    let dir = TempDir::new();
    let (ed, ed_file) = (ed25519(), ed25519());
    let pem = dir.write("ed.pem", &spki_pem(&ed_file));
    let up = Upstream::start("signed");
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  signed:
    signature:
      keys:
        hmac-1:
          alg: hmac-sha256
          secret: ${{env:{SECRET_ENV}}}
          principal: billing
          roles: [billing]
        ed-1:
          alg: ed25519
          public_key: {ed_pub}
        ed-file:
          alg: ed25519
          public_key_file: {pem}
      max_skew: 5m
routes:
  - name: signed
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: signed
    authorize: authenticated
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        up = up.addr,
        ed_pub = B64.encode(pair(&ed).public_key().as_ref()),
        pem = path_str(&pem),
    );
    let gw = Gateway::start_with_env(&yaml, &[(SECRET_ENV, SECRET)]);
    Setup { up, gw, ed, ed_file, _dir: dir }
}

/// Sends `req`, expects 401 with the challenge and problem+json, the upstream untouched, and `reason` logged.
fn refused(s: &Setup, req: &Req, reason: &str) {
    let needle = format!("\"reason\":\"{reason}\"");
    let logged_before = s.gw.count_log(&needle);
    let hits = s.up.hits();
    let resp = req.send(&s.gw);
    assert_eq!(status_of(&resp), 401, "expected 401 ({reason}):\n{resp}");
    assert_eq!(header_of(&resp, "www-authenticate").as_deref(), Some("Signature realm=\"portcullis\""));
    assert_eq!(problem_type(body_of(&resp)), problem("unauthorized"), "{resp}");
    assert_eq!(s.up.hits(), hits, "a refused request reached the upstream ({reason})");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.gw.count_log(&needle) == logged_before {
        assert!(std::time::Instant::now() < deadline, "no `{reason}` logged:\n{}", s.gw.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `req`, expects 200; returns the principal and roles the upstream was told.
fn accepted(s: &Setup, req: &Req) -> (String, String) {
    let hits = s.up.hits();
    let resp = req.send(&s.gw);
    assert_eq!(status_of(&resp), 200, "{resp}\n{}", s.gw.logs().join("\n"));
    assert_eq!(s.up.hits(), hits + 1);
    let seen = s.up.last().unwrap();
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("signature"));
    let h = |n: &str| seen.header(n).unwrap_or_default().to_owned();
    (h("x-portcullis-principal"), h("x-portcullis-roles"))
}

#[test]
fn signed_requests_are_accepted() {
    let s = start();
    let hmac = Signer::Hmac(SECRET);
    let body = br#"{"amount": 42}"#;
    let req = Req::new("POST", "/orders?id=7", body).sign(COVERED, &params("hmac-1", now(), &nonce()), &hmac);
    assert_eq!(accepted(&s, &req), ("billing".to_string(), "billing".to_string()));
    let seen = s.up.last().unwrap();
    assert_eq!(seen.body, body);
    assert_eq!(seen.path_and_query, "/orders?id=7");

    // Ed25519, from a base64 key and from a PEM file; `alg` given explicitly and matching.
    let ed = Signer::Ed25519(pair(&s.ed));
    let p = format!("{};alg=\"ed25519\"", params("ed-1", now(), &nonce()));
    let r = Req::new("GET", "/items", b"").sign(&["@method", "@target-uri"], &p, &ed);
    assert_eq!(accepted(&s, &r).0, "ed-1", "the principal defaults to the keyid");
    let ed_file = Signer::Ed25519(pair(&s.ed_file));
    let p = params("ed-file", now(), &nonce());
    accepted(
        &s,
        &Req::new("DELETE", "/items/3", b"").sign(
            &["@method", "@path", "@query", "@authority", "@target-uri"],
            &p,
            &ed_file,
        ),
    );
    // Created a little in the future (clock skew within the window) and with `expires` ahead.
    let p = format!("{};expires={}", params("hmac-1", now() + 60, &nonce()), now() + 120);
    accepted(&s, &Req::new("POST", "/orders", b"{}").sign(COVERED, &p, &hmac));

    assert!(!s.gw.logs().iter().any(|l| l.contains(SECRET)), "the shared secret was logged");
}

#[test]
fn every_tampering_is_refused() {
    let s = start();
    let hmac = Signer::Hmac(SECRET);
    let body = br#"{"amount": 42}"#;
    let fresh = || params("hmac-1", now(), &nonce());
    let signed = |p: &str| Req::new("POST", "/orders?id=7", body).sign(COVERED, p, &hmac);

    // No signature at all.
    refused(&s, &Req::new("POST", "/orders", body), "missing_credentials");

    // Tampered body, the signed digest left in place.
    let mut r = signed(&fresh());
    r.body = br#"{"amount": 4200}"#.to_vec();
    refused(&s, &r, "digest_mismatch");

    // Tampered body with a recomputed digest: the digest is covered, so the signature breaks.
    let mut r = signed(&fresh());
    r.body = br#"{"amount": 4200}"#.to_vec();
    let d = digest::digest(&digest::SHA256, &r.body);
    r.headers.iter_mut().find(|(k, _)| k == "content-digest").unwrap().1 = format!("sha-256=:{}:", B64.encode(d));
    refused(&s, &r, "bad_signature");

    // Tampered target.
    let mut r = signed(&fresh());
    r.path_query = "/admin?id=7".into();
    refused(&s, &r, "bad_signature");

    // Replayed nonce: the same signed request twice.
    let r = signed(&fresh());
    accepted(&s, &r);
    refused(&s, &r, "replayed_nonce");

    // Stale and far-future `created`; expired `expires`.
    refused(&s, &signed(&params("hmac-1", now() - 600, &nonce())), "stale_signature");
    refused(&s, &signed(&params("hmac-1", now() + 600, &nonce())), "stale_signature");
    let p = format!("{};expires={}", params("hmac-1", now() - 10, &nonce()), now() - 5);
    refused(&s, &signed(&p), "expired_signature");

    // Missing covered components: `@method`, or `content-digest` on a request with a body.
    let p = fresh();
    refused(
        &s,
        &Req::new("POST", "/orders", body).sign(&["@target-uri", "content-digest"], &p, &hmac),
        "missing_component",
    );
    let p = fresh();
    refused(&s, &Req::new("POST", "/orders", body).sign(&["@method", "@target-uri"], &p, &hmac), "missing_component");

    // Missing nonce or created.
    refused(&s, &signed(&format!(";created={};keyid=\"hmac-1\"", now())), "missing_nonce");
    refused(&s, &signed(&format!(";nonce=\"{}\";keyid=\"hmac-1\"", nonce())), "missing_created");

    // Wrong key, unknown key id, and an `alg` that is not the key's.
    let r = Req::new("POST", "/orders", body).sign(
        COVERED,
        &fresh(),
        &Signer::Hmac("another-secret-of-sufficient-length-123"),
    );
    refused(&s, &r, "bad_signature");
    refused(&s, &signed(&params("nobody", now(), &nonce())), "unknown_key");
    let p = format!("{};alg=\"hmac-sha256\"", params("ed-1", now(), &nonce()));
    let ed = Signer::Ed25519(pair(&s.ed));
    refused(&s, &Req::new("POST", "/orders", body).sign(COVERED, &p, &ed), "alg_mismatch");
    // An HMAC signature presented for an ed25519 key id: the key's algorithm decides, so it cannot verify.
    let p = params("ed-1", now(), &nonce());
    let confused = Req::new("GET", "/items", b"").sign(&["@method", "@target-uri"], &p, &Signer::Hmac("x"));
    refused(&s, &confused, "bad_signature");

    // Malformed structured fields.
    let mut r = signed(&fresh());
    r.headers.iter_mut().find(|(k, _)| k == "signature-input").unwrap().1 = "sig1=(\"@method\"".into();
    refused(&s, &r, "malformed_signature");
    let mut r = signed(&fresh());
    r.headers.retain(|(k, _)| k != "signature");
    refused(&s, &r, "malformed_signature");
    // A component parameter we do not support.
    let mut r = signed(&fresh());
    let input = &mut r.headers.iter_mut().find(|(k, _)| k == "signature-input").unwrap().1;
    *input = input.replacen("\"@method\"", "\"@method\";req", 1);
    refused(&s, &r, "unsupported_component");

    assert!(!s.gw.logs().iter().any(|l| l.contains(SECRET)), "the shared secret was logged");
}

impl Req {
    /// Sends only the head, announcing a `length`-byte body that never comes; returns what came back
    /// within `timeout` ("" if nothing).
    fn send_head(&self, gw: &Gateway, length: usize, timeout: Duration) -> String {
        let mut head = format!("{} {} HTTP/1.1\r\nhost: {HOST}\r\n", self.method, self.path_query);
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {length}\r\n\r\n"));
        RawConn::connect(gw.addr("main")).send(head.as_bytes(), timeout)
    }
}

/// Credentials are judged on the request's head: a request whose signature cannot pass is refused at once,
/// before any of its body is read. Each request announces 5 MiB (within the route's 10 MiB limit) and
/// sends none of it: the 401 must come back while the gateway would otherwise still be waiting for the
/// body (its body timeout is the upstream's 30s response timeout; we wait at most 10s).
#[test]
fn refusals_come_before_the_body_is_read() {
    let s = start();
    let hmac = Signer::Hmac(SECRET);
    let big = 5 << 20;
    let fresh = || params("hmac-1", now(), &nonce());
    let signed = |p: &str| Req::new("POST", "/orders", b"{}").sign(COVERED, p, &hmac);
    let used = signed(&fresh());
    accepted(&s, &used);
    let wrong_secret = Signer::Hmac("another-secret-of-sufficient-length-123");
    let cases = [
        ("missing_credentials", Req::new("POST", "/orders", b"{}")),
        ("unknown_key", signed(&params("nobody", now(), &nonce()))),
        ("stale_signature", signed(&params("hmac-1", now() - 600, &nonce()))),
        ("missing_nonce", signed(&format!(";created={};keyid=\"hmac-1\"", now()))),
        ("bad_signature", Req::new("POST", "/orders", b"{}").sign(COVERED, &fresh(), &wrong_secret)),
        ("replayed_nonce", used),
        // A body is announced but `content-digest` is not covered.
        ("missing_component", Req::new("POST", "/orders", b"").sign(&["@method", "@target-uri"], &fresh(), &hmac)),
    ];
    for (reason, req) in cases {
        let needle = format!("\"reason\":\"{reason}\"");
        let logged_before = s.gw.count_log(&needle);
        let hits = s.up.hits();
        let resp = req.send_head(&s.gw, big, Duration::from_secs(10));
        assert_eq!(status_of(&resp), 401, "{reason}: no prompt 401:\n{resp}");
        assert_eq!(problem_type(body_of(&resp)), problem("unauthorized"), "{resp}");
        assert_eq!(s.up.hits(), hits, "{reason}: reached the upstream");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.gw.count_log(&needle) == logged_before {
            assert!(std::time::Instant::now() < deadline, "no `{reason}` logged");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A head that passes is followed by reading the body, which is then held against its digest (and the
    // nonce of a refused body is not consumed: the same signed head with the right body passes).
    let good = signed(&fresh());
    let mut tampered = good.clone();
    tampered.body = br#"{"x":1}"#.to_vec();
    refused(&s, &tampered, "digest_mismatch");
    accepted(&s, &good);
}

/// The same over HTTP/2: the request's HEADERS announce 5 MiB and no DATA frame follows; the 401 comes
/// back on the open stream (HEAD too).
#[test]
fn refusals_come_before_the_body_is_read_over_http2() {
    let s = start();
    let hmac = Signer::Hmac(SECRET);
    let addr = s.gw.addr("main");
    let bad_key = Req::new("POST", "/orders", b"{}").sign(COVERED, &params("nobody", now(), &nonce()), &hmac);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (method, req) in [("POST", Req::new("POST", "/orders", b"{}")), ("POST", bad_key.clone()), ("HEAD", bad_key)] {
        let hits = s.up.hits();
        let status = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (client, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(conn);
            let mut client = client.ready().await.unwrap();
            let mut builder = http::Request::builder().method(method).uri(format!("http://{HOST}{}", req.path_query));
            for (k, v) in &req.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let request = builder.header("content-length", 5u32 << 20).body(()).unwrap();
            let (response, _body_stream) = client.send_request(request, false).unwrap();
            let response = tokio::time::timeout(Duration::from_secs(10), response).await;
            response.expect("no prompt answer").unwrap().status().as_u16()
        });
        assert_eq!(status, 401, "{method}");
        assert_eq!(s.up.hits(), hits, "reached the upstream");
    }
}
