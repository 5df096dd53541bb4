//! JWT authentication against the real gateway: tokens minted here with aws-lc-rs, keys served by a
//! small JWKS server on loopback. The attack catalogue expects, for every hostile token, a 401 with an
//! RFC 6750 challenge and a problem+json body, and nothing at the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

const ISSUER: &str = "https://idp.test";
const SECRET: &str = "test-hmac-secret-0123456789abcdefghij";

/// A signing key of any kind, with its kid.
enum Signer {
    Rsa(String, sig::RsaKeyPair),
    Ec(String, sig::EcdsaKeyPair),
    Ed(String, sig::Ed25519KeyPair),
}

impl Signer {
    fn rsa(kid: &str) -> Signer {
        Signer::Rsa(kid.into(), sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
    }
    fn ec(kid: &str) -> Signer {
        Signer::Ec(kid.into(), sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }
    fn ed(kid: &str) -> Signer {
        Signer::Ed(kid.into(), sig::Ed25519KeyPair::generate().unwrap())
    }

    fn kid(&self) -> &str {
        match self {
            Signer::Rsa(k, _) | Signer::Ec(k, _) | Signer::Ed(k, _) => k,
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(..) => "RS256",
            Signer::Ec(..) => "ES256",
            Signer::Ed(..) => "EdDSA",
        }
    }

    /// The public JWK.
    fn jwk(&self) -> Value {
        match self {
            Signer::Rsa(kid, k) => {
                let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(kid, k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
            Signer::Ed(kid, k) => {
                json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
        }
    }

    /// The DER of the RSA public key (what an attacker would try as an HMAC secret).
    fn public_der(&self) -> Vec<u8> {
        match self {
            Signer::Rsa(_, k) => k.public_key().as_ref().to_vec(),
            _ => unreachable!(),
        }
    }

    fn sign_input(&self, alg: &str, input: &str) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(_, k) => {
                let padding: &'static dyn sig::RsaEncoding = match alg {
                    "PS256" => &sig::RSA_PSS_SHA256,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &rng, input.as_bytes(), &mut out).unwrap();
                out
            }
            Signer::Ec(_, k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Ed(_, k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        }
    }

    /// A token with this key's alg and kid, `extra` merged into the standard header.
    fn token_with(&self, extra_header: Value, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid()});
        for (k, v) in extra_header.as_object().unwrap() {
            header[k] = v.clone();
        }
        let alg = header["alg"].as_str().unwrap_or("RS256").to_owned();
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        format!("{input}.{}", b64(&self.sign_input(&alg, &input)))
    }

    fn token(&self, claims: &Value) -> String {
        self.token_with(json!({}), claims)
    }
}

fn hmac_token(secret: &[u8], header: Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
}

fn claims() -> Value {
    let t = now();
    json!({"iss": ISSUER, "aud": ["orders-api"], "sub": "alice", "iat": t, "exp": t + 600,
           "scope": "orders:read", "realm_access": {"roles": ["reader"]}})
}

fn with(mut c: Value, k: &str, v: Value) -> Value {
    c[k] = v;
    c
}

/// A loopback HTTP server answering every path with `(status, body)` from `answer`, and recording the
/// path of each request.
struct KeyServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    jwks: Arc<Mutex<(u16, String)>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl KeyServer {
    fn start(jwks: Value) -> KeyServer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let doc = Arc::new(Mutex::new((200u16, jwks.to_string())));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (seen2, doc2) = (seen.clone(), doc.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        _ = &mut stop_rx => return,
                    };
                    let (seen, doc) = (seen2.clone(), doc2.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            seen.lock().unwrap().push(req.uri().path().to_owned());
                            let (status, body) = doc.lock().unwrap().clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                        .unwrap(),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        KeyServer { addr, seen, jwks: doc, _stop: stop }
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn set(&self, status: u16, body: &str) {
        *self.jwks.lock().unwrap() = (status, body.to_owned());
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
}

fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
}

/// The gateway with `/` behind `sso` (RS256, ES256, EdDSA from a JWKS URI) and `/mixed` behind an issuer
/// that also pins HS256 with a configured secret.
fn config(upstream: SocketAddr, jwks_uri: &str, extra: &str) -> String {
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
      issuer: {ISSUER}
      audiences: [orders-api]
      algorithms: [RS256, PS256, ES256, EdDSA]
      jwks_uri: {jwks_uri}
      roles_claim: realm_access.roles
      unknown_kid_refresh_interval: 1s
{extra}
  mixed:
    jwt:
      issuer: {ISSUER}
      audiences: [orders-api]
      algorithms: [RS256, HS256]
      jwks_uri: {jwks_uri}
      hmac_secret: {SECRET}
routes:
  - name: mixed
    match:
      path: {{ prefix: /mixed }}
    upstream: app
    auth: mixed
    authorize: authenticated
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: sso
    authorize: authenticated
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

fn get(gw: &Gateway, path: &str, token: &str) -> (u16, String, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    curl(&[&url, "-H", &format!("Authorization: Bearer {token}")])
}

/// Asserts a refusal: 401, the RFC 6750 challenge (with `invalid_token` when a token was refused),
/// a problem+json body naming no check.
fn assert_refused(resp: &(u16, String, String), what: &str, invalid: bool) {
    let (code, headers, body) = resp;
    assert_eq!(*code, 401, "{what}: {headers}{body}");
    let challenge = header_of(headers, "www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer realm=\"portcullis\""), "{what}: {challenge}");
    assert_eq!(challenge.contains("error=\"invalid_token\""), invalid, "{what}: {challenge}");
    assert!(header_of(headers, "content-type").unwrap_or_default().starts_with("application/problem+json"), "{what}");
    assert_eq!(problem_type(body), problem("unauthorized"), "{what}: {body}");
    for word in ["signature", "kid", "issuer", "audience", "expired", "alg"] {
        assert!(!body.to_ascii_lowercase().contains(word), "{what}: the body hints at the check: {body}");
    }
}

struct Setup {
    up: Upstream,
    keys: KeyServer,
    gw: Gateway,
    rsa: Signer,
    ec: Signer,
    ed: Signer,
}

fn setup(extra: &str) -> Setup {
    let (rsa, ec, ed) = (Signer::rsa("rsa-1"), Signer::ec("ec-1"), Signer::ed("ed-1"));
    let keys = KeyServer::start(jwks(&[&rsa, &ec, &ed]));
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, &keys.url(), extra));
    Setup { up, keys, gw, rsa, ec, ed }
}

#[test]
fn valid_tokens_of_every_key_type_pass() {
    let s = setup("");
    for signer in [&s.rsa, &s.ec, &s.ed] {
        let (code, h, b) = get(&s.gw, "/orders", &signer.token(&claims()));
        assert_eq!(code, 200, "{}: {h}{b}", signer.alg());
    }
    let seen = s.up.last().unwrap();
    assert_eq!(seen.header("x-portcullis-principal"), Some("alice"));
    assert_eq!(seen.header("x-portcullis-roles"), Some("reader"));
    assert_eq!(seen.header("x-portcullis-scopes"), Some("orders:read"));
    let ps = s.rsa.token_with(json!({"alg": "PS256"}), &claims());
    assert_eq!(get(&s.gw, "/orders", &ps).0, 200, "PS256 with the same RSA key");
    assert_eq!(s.up.hits(), 4);
    // The same token again is served from the verified-token cache, with the same answer.
    let t = s.rsa.token(&claims());
    assert_eq!(get(&s.gw, "/orders", &t).0, 200);
    assert_eq!(get(&s.gw, "/orders", &t).0, 200);
    // HS256 with the configured secret, on the issuer that pins it.
    let hs = hmac_token(SECRET.as_bytes(), json!({"alg": "HS256", "typ": "JWT"}), &claims());
    assert_eq!(get(&s.gw, "/mixed/x", &hs).0, 200);
    assert_refused(&get(&s.gw, "/orders", &hs), "HS256 where only public-key algorithms are pinned", true);
    // No token: a challenge without an error code.
    let url = format!("http://{}/orders", s.gw.addr("main"));
    assert_refused(&curl(&[&url]), "no token", false);
    assert_refused(&curl(&[&url, "-H", "Authorization: Basic dXNlcjpwdw=="]), "another scheme", false);
}

#[test]
fn attack_catalogue() {
    let s = setup("      max_token_bytes: 4KiB\n");
    let started = Instant::now();
    let attacker = Signer::rsa("rsa-1"); // an untrusted key that claims the trusted key's kid
    let jku = Upstream::start("jku");
    let jku_url = format!("http://{}/jwks", jku.addr);
    let c = claims();
    let t = now();
    let valid = s.rsa.token(&c);
    let (vh, vp, vs) = {
        let mut parts = valid.split('.');
        (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
    };
    let json_part = |v: Value| b64(v.to_string().as_bytes());
    let mut flipped = vs.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let public_der = s.rsa.public_der();
    let public_jwk_json = s.rsa.jwk().to_string();

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none, no signature", format!("{}.{vp}.", json_part(json!({"alg": "none", "typ": "JWT"}))), "/orders"),
        ("alg none, with signature", format!("{}.{vp}.{vs}", json_part(json!({"alg": "none"}))), "/orders"),
        ("alg None", format!("{}.{vp}.{vs}", json_part(json!({"alg": "None", "kid": "rsa-1"}))), "/orders"),
        (
            "HS256 with the RSA public key (DER) as secret",
            hmac_token(&public_der, json!({"alg": "HS256", "kid": "rsa-1"}), &c),
            "/mixed/a",
        ),
        (
            "HS256 with the RSA public JWK as secret",
            hmac_token(public_jwk_json.as_bytes(), json!({"alg": "HS256", "kid": "rsa-1"}), &c),
            "/mixed/a",
        ),
        ("HS256 confusion where HS is not pinned", hmac_token(&public_der, json!({"alg": "HS256"}), &c), "/orders"),
        ("signature stripped", format!("{vh}.{vp}."), "/orders"),
        ("signature stripped, two parts", format!("{vh}.{vp}"), "/orders"),
        ("signature altered", format!("{vh}.{vp}.{flipped}"), "/orders"),
        ("claims altered", format!("{vh}.{}.{vs}", json_part(with(c.clone(), "sub", json!("admin")))), "/orders"),
        ("expired", s.rsa.token(&with(c.clone(), "exp", json!(t - 120))), "/orders"),
        (
            "no exp",
            s.rsa.token(&{
                let mut x = c.clone();
                x.as_object_mut().unwrap().remove("exp");
                x
            }),
            "/orders",
        ),
        ("nbf in the future", s.rsa.token(&with(c.clone(), "nbf", json!(t + 600))), "/orders"),
        ("iat in the future", s.rsa.token(&with(c.clone(), "iat", json!(t + 600))), "/orders"),
        ("wrong iss", s.rsa.token(&with(c.clone(), "iss", json!("https://evil.test"))), "/orders"),
        ("iss with trailing slash", s.rsa.token(&with(c.clone(), "iss", json!(format!("{ISSUER}/")))), "/orders"),
        ("wrong aud", s.rsa.token(&with(c.clone(), "aud", json!("billing-api"))), "/orders"),
        (
            "no aud",
            s.rsa.token(&{
                let mut x = c.clone();
                x.as_object_mut().unwrap().remove("aud");
                x
            }),
            "/orders",
        ),
        ("kid with path traversal", s.rsa.token_with(json!({"kid": "../../../../../../etc/passwd"}), &c), "/orders"),
        ("kid with SQL", s.rsa.token_with(json!({"kid": "x' OR '1'='1'; DROP TABLE keys;--"}), &c), "/orders"),
        (
            "jku to the attacker's key set",
            attacker.token_with(json!({"kid": "attacker", "jku": jku_url}), &c),
            "/orders",
        ),
        (
            "x5u to the attacker's certificate",
            attacker.token_with(json!({"kid": "attacker", "x5u": format!("http://{}/cert.pem", jku.addr)}), &c),
            "/orders",
        ),
        ("embedded jwk", attacker.token_with(json!({"kid": "attacker", "jwk": attacker.jwk()}), &c), "/orders"),
        ("embedded jwk claiming a trusted kid", attacker.token_with(json!({"jwk": attacker.jwk()}), &c), "/orders"),
        (
            "untrusted issuer's key, same kid",
            attacker.token(&with(c.clone(), "iss", json!("https://evil.test"))),
            "/orders",
        ),
        ("untrusted key, same kid, our iss", attacker.token(&c), "/orders"),
        ("unknown crit", s.rsa.token_with(json!({"crit": ["exp"], "exp": 1}), &c), "/orders"),
        ("b64 false", s.rsa.token_with(json!({"crit": ["b64"], "b64": false}), &c), "/orders"),
        ("over the size limit", s.rsa.token(&with(c.clone(), "padding", json!("x".repeat(5000)))), "/orders"),
        ("malformed base64 header", format!("eyJ!!.{vp}.{vs}"), "/orders"),
        ("malformed base64 payload", format!("{vh}.%%%%.{vs}"), "/orders"),
        ("padded base64", format!("{vh}=.{vp}.{vs}"), "/orders"),
        ("header not JSON", format!("{}.{vp}.{vs}", b64(b"{\"alg\":\"RS256\"")), "/orders"),
        ("header a JSON array", format!("{}.{vp}.{vs}", b64(b"[\"RS256\"]")), "/orders"),
        ("duplicate alg", format!("{}.{vp}.{vs}", b64(br#"{"alg":"RS256","alg":"none"}"#)), "/orders"),
        ("claims not JSON", s.rsa.token_with(json!({}), &json!("not an object")), "/orders"),
        ("JWE shape", format!("{vh}.a.b.c.d"), "/orders"),
        (
            "certificate-bound, no certificate",
            s.rsa.token(&with(c.clone(), "cnf", json!({"x5t#S256": "abc"}))),
            "/orders",
        ),
        ("DPoP-bound", s.rsa.token(&with(c.clone(), "cnf", json!({"jkt": "abc"}))), "/orders"),
    ];
    for (what, token, path) in &cases {
        assert_refused(&get(&s.gw, path, token), what, true);
    }
    assert_eq!(s.up.hits(), 0, "nothing reached the upstream");
    assert_eq!(jku.hits(), 0, "the jku/x5u server received no request");
    // The unknown kids caused at most one JWKS fetch per second (rate-limited), on top of the first.
    let secs = started.elapsed().as_secs() as usize + 1;
    assert!(s.keys.hits() <= 2 + secs, "JWKS fetches: {} in {secs}s", s.keys.hits());
    // Every refusal was logged with a reason, and no token reached the logs.
    let logs = s.gw.logs().join("\n");
    assert!(logs.contains("authentication failed"));
    assert!(!logs.contains(&vs), "a token signature appeared in the logs");
    assert!(!logs.contains(SECRET));
    // Sanity: the trusted key still works after all that.
    assert_eq!(get(&s.gw, "/orders", &valid).0, 200);
}

#[test]
fn random_kids_do_not_flood_the_key_server() {
    let s = setup("");
    assert_eq!(get(&s.gw, "/orders", &s.rsa.token(&claims())).0, 200);
    let before = s.keys.hits();
    let started = Instant::now();
    for i in 0..40 {
        let t = s.rsa.token_with(json!({"kid": format!("random-{i}")}), &claims());
        assert_refused(&get(&s.gw, "/orders", &t), "random kid", true);
    }
    let elapsed = started.elapsed().as_secs() + 1;
    // unknown_kid_refresh_interval is 1s: at most one fetch per second of the flood.
    assert!(s.keys.hits() - before <= elapsed as usize + 1, "{} fetches in {elapsed}s", s.keys.hits() - before);
    assert_eq!(s.up.hits(), 1);
}

#[test]
fn new_key_is_fetched_on_unknown_kid_and_removed_key_stops_working() {
    let s = setup("      jwks_refresh_interval: 1s\n      max_stale: 1h\n");
    let old = s.rsa.token(&claims());
    assert_eq!(get(&s.gw, "/orders", &old).0, 200);
    // Rotation: the provider publishes a new key; a token signed with it passes at once.
    let new = Signer::rsa("rsa-2");
    s.keys.set(200, &jwks(&[&new, &s.rsa]).to_string());
    std::thread::sleep(Duration::from_millis(1100)); // past the unknown-kid interval since the first fetch
    let fresh = new.token(&claims());
    assert_eq!(get(&s.gw, "/orders", &fresh).0, 200, "new kid fetched on demand");
    assert_eq!(get(&s.gw, "/orders", &old).0, 200, "old key still published");
    // The old key is removed: its tokens, even cached ones, stop passing after the next refresh.
    s.keys.set(200, &jwks(&[&new]).to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&s.gw, "/orders", &old).0 == 200 {
        assert!(Instant::now() < deadline, "the removed key kept working");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_refused(&get(&s.gw, "/orders", &old), "removed key", true);
    assert_eq!(get(&s.gw, "/orders", &fresh).0, 200);
}

/// A provider that replaces the key under an existing `kid` (new material, same name): tokens signed with
/// the old material, cached or not, stop passing once the gateway has fetched the new set.
#[test]
fn a_key_replaced_under_the_same_kid_stops_verifying_cached_tokens() {
    let s = setup("      jwks_refresh_interval: 1s\n      max_stale: 1h\n");
    let old = s.rsa.token(&claims());
    assert_eq!(get(&s.gw, "/orders", &old).0, 200);
    assert_eq!(get(&s.gw, "/orders", &old).0, 200, "served from the verified-token cache");
    let replacement = Signer::rsa("rsa-1");
    s.keys.set(200, &jwks(&[&replacement, &s.ec, &s.ed]).to_string());
    let fresh = replacement.token(&claims());
    // Poll (to a deadline) until the refresh has installed the new material under the same kid.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&s.gw, "/orders", &fresh).0 != 200 {
        assert!(Instant::now() < deadline, "the replacement key was never fetched");
        std::thread::sleep(Duration::from_millis(100));
    }
    let hits = s.up.hits();
    assert_refused(&get(&s.gw, "/orders", &old), "token of the replaced key material", true);
    assert_eq!(s.up.hits(), hits, "nothing reached the upstream");
    assert_eq!(get(&s.gw, "/orders", &fresh).0, 200);
    assert_eq!(get(&s.gw, "/orders", &s.ec.token(&claims())).0, 200, "the other keys still verify");
}

#[test]
fn key_server_outage_keeps_keys_until_max_stale() {
    let s = setup("      jwks_refresh_interval: 1s\n      max_stale: 8s\n");
    assert_eq!(get(&s.gw, "/orders", &s.rsa.token(&claims())).0, 200);
    let failures = |gw: &Gateway| {
        metric(&gw.metrics(), r#"portcullis_jwks_refreshes_total{authenticator="sso",result="failed"}"#).unwrap_or(0.0)
    };
    // Waits (to a generous deadline) until the gateway has tried and failed to refresh once more.
    let failed_once_more = |gw: &Gateway| {
        let before = failures(gw);
        let deadline = Instant::now() + Duration::from_secs(20);
        while failures(gw) <= before {
            assert!(Instant::now() < deadline, "no refresh attempt during the outage");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Down, then garbage: the gateway keeps serving with the keys it has, and does not crash. The last
    // good fetch was at most a refresh interval before `outage`; the keys are kept for max_stale after it.
    let outage = Instant::now();
    s.keys.set(503, "{}");
    failed_once_more(&s.gw);
    let fresh = |what: &str| {
        // Only meaningful while the keys cannot be stale yet; a machine stalled for seconds skips it.
        if outage.elapsed() < Duration::from_secs(6) {
            assert_eq!(get(&s.gw, "/orders", &s.ec.token(&claims())).0, 200, "{what}");
        }
    };
    fresh("cached keys during the outage");
    s.keys.set(200, "{\"keys\": [{\"kty\": 42}");
    failed_once_more(&s.gw);
    fresh("cached keys despite garbage");
    // Past max_stale the keys are no longer trusted: 401, not a pass; and never before max_stale.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = get(&s.gw, "/orders", &s.rsa.token(&claims()));
        if r.0 == 401 {
            assert_refused(&r, "stale keys", true);
            break;
        }
        assert!(Instant::now() < deadline, "keys still trusted long past max_stale");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(outage.elapsed() >= Duration::from_secs(7), "keys dropped before max_stale: {:?}", outage.elapsed());
    // The provider comes back: keys are fetched again.
    s.keys.set(200, &jwks(&[&s.rsa, &s.ec, &s.ed]).to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&s.gw, "/orders", &s.rsa.token(&claims())).0 != 200 {
        assert!(Instant::now() < deadline, "keys not fetched again after the outage");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(s.gw.logs().iter().any(|l| l.contains("JWKS refresh failed")));
    // Counted, for alerting: failures during the outage, successes before and after it.
    let m = s.gw.metrics();
    let failed = metric(&m, r#"portcullis_jwks_refreshes_total{authenticator="sso",result="failed"}"#);
    let ok = metric(&m, r#"portcullis_jwks_refreshes_total{authenticator="sso",result="ok"}"#);
    assert!(failed.is_some_and(|n| n >= 2.0), "{m}");
    assert!(ok.is_some_and(|n| n >= 2.0), "{m}");
}

#[test]
fn token_from_a_cookie() {
    let rsa = Signer::rsa("rsa-1");
    let keys = KeyServer::start(jwks(&[&rsa]));
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let file = dir.write("jwks.json", &jwks(&[&rsa]).to_string());
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {}
authenticators:
  web:
    jwt:
      issuer: {ISSUER}
      audiences: [orders-api]
      algorithms: [RS256]
      jwks_file: {}
      cookie: session
      max_token_age: 1h
      required_claims: [sub]
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: web
    authorize: authenticated
logging:
  level: info
"#,
        up.addr,
        path_str(&file)
    );
    let gw = Gateway::start(&yaml);
    let url = format!("http://{}/page", gw.addr("main"));
    let token = rsa.token(&claims());
    let (code, h, b) = curl(&[&url, "-H", &format!("Cookie: theme=dark; session={token}")]);
    assert_eq!(code, 200, "{h}{b}");
    assert_refused(
        &curl(&[&url, "-H", &format!("Authorization: Bearer {token}")]),
        "bearer when a cookie is configured",
        false,
    );
    let old = rsa.token(&with(claims(), "iat", json!(now() - 7200)));
    assert_refused(&curl(&[&url, "-H", &format!("Cookie: session={old}")]), "older than max_token_age", true);
    let anonymous = rsa.token(&{
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        c
    });
    assert_refused(&curl(&[&url, "-H", &format!("Cookie: session={anonymous}")]), "required claim missing", true);
    assert_eq!(up.hits(), 1);
    assert_eq!(keys.hits(), 0, "a jwks_file source fetches nothing");
}

#[test]
fn config_errors_are_reported() {
    let dir = TempDir::new();
    let bad = [
        ("algorithms: [none]", "not an accepted algorithm"),
        ("algorithms: [RS256]\n      hmac_secret: short", "hmac_secret is set but no HS"),
        ("algorithms: [HS256]\n      hmac_secret: short", "at least 32 bytes"),
        ("algorithms: [HS256]\n      jwks_uri: http://127.0.0.1:1/jwks", "HS256/384/512 need `hmac_secret`"),
        ("algorithms: [RS256]", "need jwks_uri, jwks_file or discovery"),
        ("algorithms: [RS256]\n      jwks_uri: http://idp.example.com/jwks", "only allowed to a loopback host"),
        ("algorithms: [RS256]\n      discovery: true\n      jwks_uri: https://idp.test/jwks", "use one of"),
        ("algorithms: [RS256]\n      jwks_uri: https://idp.test/jwks\n      leeway: 1h", "leeway is at most"),
    ];
    for (snippet, expected) in bad {
        let yaml = format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - address: 127.0.0.1:9\n\
             authenticators:\n  sso:\n    jwt:\n      issuer: https://idp.test\n      audiences: [api]\n      {snippet}\n\
             routes:\n  - name: app\n    match:\n      path: {{ prefix: / }}\n    upstream: app\n    auth: sso\n    authorize: authenticated\n"
        );
        let path = dir.write("bad.yaml", &yaml);
        let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
        assert_eq!(code, 1, "{snippet}: {out}{err}");
        assert!(format!("{out}{err}").contains(expected), "{snippet}: {out}{err}");
        assert!(!format!("{out}{err}").contains(SECRET));
    }
}

/// Runs `openssl` in `dir`; panics with its output on failure.
fn openssl(dir: &TempDir, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(&dir.0).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and two client certificates (`a`, `b`) in `dir`.
fn certificates(dir: &TempDir) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        dir,
        &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca"]]
            .concat(),
    );
    dir.write("server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
    dir.write("client.ext", "extendedKeyUsage=clientAuth\n");
    for (name, ext) in [("server", "server.ext"), ("a", "client.ext"), ("b", "client.ext")] {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(dir, &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                ext,
            ],
        );
    }
}

/// RFC 8705 thumbprint of a PEM certificate: base64url(SHA-256(DER)).
fn thumbprint(pem_path: &std::path::Path) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(pem_path).unwrap();
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref()).as_ref())
}

#[test]
fn certificate_bound_tokens_need_their_certificate() {
    let dir = TempDir::new();
    certificates(&dir);
    let rsa = Signer::rsa("rsa-1");
    let keys = dir.write("jwks.json", &jwks(&[&rsa]).to_string());
    // An introspection endpoint whose answers are bound to certificate `a` too.
    let answer = json!({"active": true, "client_id": "svc", "exp": now() + 600,
                        "cnf": {"x5t#S256": thumbprint(&dir.path("a.pem"))}});
    let introspection = KeyServer::start(answer);
    let up = Upstream::start("app");
    let p = |n: &str| path_str(&dir.path(n));
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    tls:
      certificates:
        - cert: {}
          key: {}
      client_auth:
        ca: {}
        mode: optional
upstreams:
  app:
    targets:
      - address: {}
authenticators:
  sso:
    jwt:
      issuer: {ISSUER}
      audiences: [orders-api]
      algorithms: [RS256]
      jwks_file: {}
  opaque:
    introspection:
      endpoint: http://{}/introspect
      client_id: gateway
      client_secret: gateway-secret
routes:
  - name: opaque
    match:
      path: {{ prefix: /opaque }}
    upstream: app
    auth: opaque
    authorize: authenticated
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: sso
    authorize: authenticated
logging:
  level: info
"#,
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        up.addr,
        path_str(&keys),
        introspection.addr
    );
    let gw = Gateway::start(&yaml);
    let url = format!("https://127.0.0.1:{}/orders", gw.addr("main").port());
    let bound = rsa.token(&with(claims(), "cnf", json!({"x5t#S256": thumbprint(&dir.path("a.pem"))})));
    let opaque_url = format!("https://127.0.0.1:{}/opaque/1", gw.addr("main").port());
    let call_at = |url: &str, cert: Option<&str>, token: &str| {
        let auth = format!("Authorization: Bearer {token}");
        let mut args: Vec<&str> = Vec::new();
        let ca = p("ca.pem");
        let (cert_path, key_path) = cert.map(|c| (p(&format!("{c}.pem")), p(&format!("{c}.key")))).unzip();
        args.extend([url, "--cacert", ca.as_str(), "-H", auth.as_str()]);
        if let (Some(c), Some(k)) = (&cert_path, &key_path) {
            args.extend(["--cert", c.as_str(), "--key", k.as_str()]);
        }
        curl(&args)
    };
    let call = |cert: Option<&str>, token: &str| call_at(&url, cert, token);
    let (code, h, b) = call(Some("a"), &bound);
    assert_eq!(code, 200, "{h}{b}");
    assert_eq!(call(Some("a"), &bound).0, 200, "cached, same certificate");
    assert_refused(&call(Some("b"), &bound), "cached token, another certificate", true);
    assert_refused(&call(None, &bound), "no certificate", true);
    assert_eq!(call(Some("b"), &rsa.token(&claims())).0, 200, "an unbound token with any certificate");
    // The same binding for an introspected opaque token, cached after the first answer.
    assert_eq!(call_at(&opaque_url, Some("a"), "opaque-token-0123").0, 200);
    assert_refused(&call_at(&opaque_url, Some("b"), "opaque-token-0123"), "introspected, another certificate", true);
    assert_refused(&call_at(&opaque_url, None, "opaque-token-0123"), "introspected, no certificate", true);
    assert_eq!(introspection.hits(), 1, "one introspection call, then the cache");
    assert_eq!(up.hits(), 4);
}

#[test]
fn discovery_document_must_name_our_issuer() {
    let rsa = Signer::rsa("rsa-1");
    // One document served at every path: discovery (issuer, jwks_uri) and key set (keys) at once.
    let server = KeyServer::start(json!({}));
    let issuer = format!("http://{}/realms/main", server.addr);
    let doc = |iss: &str| {
        json!({"issuer": iss, "jwks_uri": format!("http://{}/realms/main/jwks", server.addr), "keys": [rsa.jwk()]})
            .to_string()
    };
    server.set(200, &doc("https://evil.test/realms/main"));
    let up = Upstream::start("app");
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {}
authenticators:
  sso:
    jwt:
      issuer: {issuer}
      audiences: [orders-api]
      algorithms: [RS256]
      discovery: true
      unknown_kid_refresh_interval: 1s
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: sso
    authorize: authenticated
logging:
  level: info
"#,
        up.addr
    );
    let gw = Gateway::start(&yaml);
    let token = rsa.token(&with(claims(), "iss", json!(issuer)));
    assert_refused(&get(&gw, "/orders", &token), "discovery names another issuer", true);
    assert!(gw.wait_log("is not `", Duration::from_secs(5)), "the mismatch is logged");
    server.set(200, &doc(&issuer));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&gw, "/orders", &token).0 != 200 {
        assert!(Instant::now() < deadline, "keys never fetched after discovery was fixed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|p| p == "/realms/main/.well-known/openid-configuration"), "{seen:?}");
    assert!(seen.iter().any(|p| p == "/realms/main/jwks"), "{seen:?}");
}

#[test]
fn any_of_two_issuers_accepts_each_and_neither_consults_the_others_keys() {
    // Two identity providers, each with its own key server; a route accepting tokens of either.
    let (a, b) = (Signer::rsa("shared-kid"), Signer::ec("shared-kid"));
    let (keys_a, keys_b) = (KeyServer::start(jwks(&[&a])), KeyServer::start(jwks(&[&b])));
    let up = Upstream::start("app");
    let issuer_b = "https://partner-idp.test";
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {}
authenticators:
  staff:
    jwt:
      issuer: {ISSUER}
      audiences: [orders-api]
      algorithms: [RS256]
      jwks_uri: {}
      unknown_kid_refresh_interval: 1s
  partners:
    jwt:
      issuer: {issuer_b}
      audiences: [orders-api]
      algorithms: [ES256]
      jwks_uri: {}
      unknown_kid_refresh_interval: 1s
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: {{ any_of: [staff, partners] }}
    authorize: authenticated
"#,
        up.addr,
        keys_a.url(),
        keys_b.url()
    );
    let gw = Gateway::start(&yaml);
    let staff = a.token(&claims());
    let partner = b.token(&with(with(claims(), "iss", json!(issuer_b)), "sub", json!("bob")));
    assert_eq!(get(&gw, "/orders", &staff).0, 200);
    assert_eq!(up.last().unwrap().header("x-portcullis-principal"), Some("alice"));
    assert_eq!(get(&gw, "/orders", &partner).0, 200);
    assert_eq!(up.last().unwrap().header("x-portcullis-principal"), Some("bob"));
    let (hits_a, hits_b) = (keys_a.hits(), keys_b.hits());

    // Each issuer's tokens are checked only against that issuer's keys: a partner token signed with the
    // staff key (same kid) or claiming the staff issuer with the partner key is refused, and no key
    // server is asked for anything (no refresh on an unknown kid for a token that is not its issuer's).
    let forged_a = a.token(&with(claims(), "iss", json!(issuer_b)));
    let forged_b = b.token(&claims());
    let stranger = Signer::rsa("shared-kid").token(&claims());
    for (what, t) in
        [("partner iss, staff key", &forged_a), ("staff iss, partner key", &forged_b), ("stranger", &stranger)]
    {
        assert_refused(&get(&gw, "/orders", t), what, true);
    }
    let other_issuer = a.token(&with(claims(), "iss", json!("https://evil.test")));
    assert_refused(&get(&gw, "/orders", &other_issuer), "unknown issuer", true);
    for i in 0..10 {
        let t = a.token_with(json!({"kid": format!("random-{i}")}), &with(claims(), "iss", json!("https://evil.test")));
        assert_refused(&get(&gw, "/orders", &t), "unknown issuer, random kid", true);
    }
    assert_eq!(keys_b.hits(), hits_b, "the partner key server was asked about tokens that are not its issuer's");
    assert!(keys_a.hits() <= hits_a + 2, "the staff key server was asked {} times", keys_a.hits() - hits_a);
    assert_eq!(up.hits(), 2);
    assert_refused(&get(&gw, "/orders", ""), "no token", false);
}
