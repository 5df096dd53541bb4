//! DPoP (RFC 9449) against a real OAuth server: panva's `oidc-provider` (tests/idp/, DPoP on by default
//! in version 9) issues DPoP-bound access tokens (`cnf.jkt`) by the client credentials grant when the
//! token request carries a `DPoP` proof. The client's ES256 keys and proofs are made here with aws-lc-rs.
//! Every refusal checks the status, the `WWW-Authenticate` error and that the upstream saw nothing.
//!
//! Needs `node` and `tests/idp/node_modules` (scripts/test.sh runs `npm ci --prefix tests/idp`; when the
//! modules are missing, the first test here runs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::idp::{Idp, INTROSPECTION_SECRET};

/// A token from the provider, bound to `key` (a DPoP proof on the token request) when given.
fn token(idp: &Idp, resource: &str, key: Option<&Key>) -> (String, Value) {
    let url = format!("{}/token", idp.issuer);
    let headers: Vec<String> =
        key.map(|k| format!("DPoP: {}", k.proof("POST", &url, None, None))).into_iter().collect();
    let body = idp.token_response(resource, &headers);
    (body["access_token"].as_str().unwrap().to_owned(), body)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b64url(&b)
}

/// A client's ES256 proof key.
struct Key(EcdsaKeyPair);

impl Key {
    fn new() -> Key {
        Key(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    fn jwk(&self) -> Value {
        let p = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64url(&p[1..33]), "y": b64url(&p[33..65])})
    }

    /// RFC 7638 thumbprint, written out independently of the gateway's.
    fn thumbprint(&self) -> String {
        let j = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().unwrap(),
            j["y"].as_str().unwrap()
        );
        b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(&serde_json::to_vec(header).unwrap()),
            b64url(&serde_json::to_vec(claims).unwrap())
        );
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64url(sig.as_ref()))
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()})
    }

    fn claims(&self, htm: &str, htu: &str, token: Option<&str>, nonce: Option<&str>) -> Value {
        let mut c = json!({"jti": random_id(), "htm": htm, "htu": htu, "iat": now()});
        if let Some(t) = token {
            c["ath"] = json!(b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes()).as_ref()));
        }
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        c
    }

    fn proof(&self, htm: &str, htu: &str, token: Option<&str>, nonce: Option<&str>) -> String {
        self.sign(&self.header(), &self.claims(htm, htu, token, nonce))
    }
}

fn config(upstream: std::net::SocketAddr, issuer: &str) -> String {
    let jwt = |dpop: &str| {
        format!(
            "    jwt:\n      issuer: {issuer}\n      audiences: [orders-api]\n      algorithms: [RS256]\n      discovery: true\n{dpop}"
        )
    };
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {upstream}
authenticators:
  dpop:
{}
  dpop-nonce:
{}
  dpop-optional:
{}
  plain:
{}
  opaque-dpop:
    introspection:
      endpoint: {issuer}/token/introspection
      client_id: gateway
      client_secret: {INTROSPECTION_SECRET}
      issuer: {issuer}
      audiences: [opaque-api]
      dpop: required
routes:
  - name: dpop
    match:
      path: {{ prefix: /dpop }}
    upstream: app
    auth: dpop
    authorize: authenticated
  - name: nonce
    match:
      path: {{ prefix: /nonce }}
    upstream: app
    auth: dpop-nonce
    authorize: authenticated
  - name: optional
    match:
      path: {{ prefix: /optional }}
    upstream: app
    auth: dpop-optional
    authorize: authenticated
  - name: plain
    match:
      path: {{ prefix: /plain }}
    upstream: app
    auth: plain
    authorize: authenticated
  - name: opaque
    match:
      path: {{ prefix: /opaque }}
    upstream: app
    auth: opaque-dpop
    authorize: authenticated
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        jwt("      dpop: required\n"),
        jwt("      dpop: { mode: required, algorithms: [ES256], nonce: true }\n"),
        jwt("      dpop: optional\n"),
        jwt(""),
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
    let gw = Gateway::start(&config(up.addr, &idp.issuer));
    Setup { idp, up, gw }
}

/// The answer to one request: status, headers text, body.
struct Answer {
    code: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn challenge(&self) -> String {
        header_of(&self.headers, "www-authenticate").unwrap_or_default()
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addr("main"))
    }

    /// Sends `method path` with `Authorization: <authorization>` and one `DPoP` field per proof.
    fn send(&self, method: &str, path: &str, authorization: &str, proofs: &[&str], extra: &[&str]) -> Answer {
        let url = self.url(path);
        let mut args: Vec<String> =
            vec![url, "-X".into(), method.into(), "-H".into(), format!("Authorization: {authorization}")];
        for p in proofs {
            args.extend(["-H".into(), format!("DPoP: {p}")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, headers, body) = curl(&refs);
        Answer { code, headers, body }
    }

    /// Asserts a 401 with this `WWW-Authenticate` error and that the upstream saw nothing new.
    fn refused(&self, a: &Answer, error: &str, what: &str) {
        assert_eq!(a.code, 401, "{what}: {}", a.body);
        assert!(a.challenge().contains(&format!("error=\"{error}\"")), "{what}: {}", a.challenge());
        assert!(a.challenge().starts_with("DPoP algs="), "{what}: {}", a.challenge());
        assert_eq!(problem_type(&a.body), problem("unauthorized"), "{what}");
        assert_eq!(self.up.hits(), 0, "{what}: reached the upstream");
    }
}

fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn dpop_bound_tokens_need_their_proof() {
    let s = setup();
    let key = Key::new();
    let (token, body) = token(&s.idp, "urn:portcullis:orders", Some(&key));
    assert_eq!(body["token_type"], "DPoP", "{body}");
    assert_eq!(claims_of(&token)["cnf"]["jkt"], key.thumbprint(), "the provider bound the token to our key");
    let auth = format!("DPoP {token}");
    let url = s.url("/dpop/orders/1");

    // Refusals first (the upstream must see nothing).
    let a = s.send("GET", "/dpop/orders/1", &format!("Bearer {token}"), &[], &[]);
    s.refused(&a, "invalid_token", "a stolen DPoP-bound token sent as Bearer");
    let thief = Key::new();
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&thief.proof("GET", &url, Some(&token), None)], &[]);
    s.refused(&a, "invalid_dpop_proof", "the token with a proof by another key");
    let a = s.send("GET", "/dpop/orders/1", &auth, &[], &[]);
    s.refused(&a, "invalid_dpop_proof", "no DPoP field");
    let (p1, p2) = (key.proof("GET", &url, Some(&token), None), key.proof("GET", &url, Some(&token), None));
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&p1, &p2], &[]);
    s.refused(&a, "invalid_dpop_proof", "two DPoP fields");
    let addr = s.gw.addr("main");
    for (htm, htu, what) in [
        ("POST", url.clone(), "another method"),
        ("GET", s.url("/dpop/orders/2"), "another path"),
        ("GET", format!("https://{addr}/dpop/orders/1"), "another scheme"),
        ("GET", format!("http://localhost:{}/dpop/orders/1", addr.port()), "another host"),
        ("GET", format!("http://{}:{}/dpop/orders/1", addr.ip(), addr.port() ^ 1), "another port"),
    ] {
        let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.proof(htm, &htu, Some(&token), None)], &[]);
        s.refused(&a, "invalid_dpop_proof", what);
    }
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.proof("GET", &url, Some("another.access.token"), None)], &[]);
    s.refused(&a, "invalid_dpop_proof", "wrong ath");
    let mut old = key.claims("GET", &url, Some(&token), None);
    old["iat"] = json!(now() - 120);
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.sign(&key.header(), &old)], &[]);
    s.refused(&a, "invalid_dpop_proof", "an old iat");
    let claims = key.claims("GET", &url, Some(&token), None);
    let mut none = key.header();
    none["alg"] = json!("none");
    let unsigned =
        format!("{}.{}.", b64url(&serde_json::to_vec(&none).unwrap()), b64url(&serde_json::to_vec(&claims).unwrap()));
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&unsigned], &[]);
    s.refused(&a, "invalid_dpop_proof", "alg none");
    let mut hs = key.header();
    hs["alg"] = json!("HS256");
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.sign(&hs, &claims)], &[]);
    s.refused(&a, "invalid_dpop_proof", "alg HS256");
    let mut private = key.header();
    private["jwk"]["d"] = json!(b64url(&[1; 32]));
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.sign(&private, &claims)], &[]);
    s.refused(&a, "invalid_dpop_proof", "a private key in the jwk");
    let mut typ = key.header();
    typ["typ"] = json!("JWT");
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.sign(&typ, &claims)], &[]);
    s.refused(&a, "invalid_dpop_proof", "typ JWT");

    // A valid proof; query strings are not part of htu, and the path is compared normalised.
    let proof = key.proof("GET", &url, Some(&token), None);
    let a = s.send("GET", "/dpop/orders/1?page=2", &auth, &[&proof], &[]);
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(s.up.hits(), 1);
    let seen = s.up.last().unwrap();
    assert!(seen.header("dpop").is_none(), "the proof is removed before the upstream");
    assert!(seen.header("authorization").is_none(), "the token is removed before the upstream");
    assert_eq!(seen.header("x-portcullis-principal"), Some("app"));

    // The same proof again: a replay.
    let a = s.send("GET", "/dpop/orders/1?page=2", &auth, &[&proof], &[]);
    assert_eq!(a.code, 401);
    assert!(a.challenge().contains("error=\"invalid_dpop_proof\""), "{}", a.challenge());
    assert_eq!(s.up.hits(), 1, "a replayed proof reached the upstream");

    // The token is now cached: the proof is still checked on every request.
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&thief.proof("GET", &url, Some(&token), None)], &[]);
    assert_eq!(a.code, 401, "a cached token with another key's proof");
    let dotted = format!("http://{addr}/dpop//orders/%31");
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.proof("GET", &dotted, Some(&token), None)], &[]);
    assert_eq!(a.code, 200, "htu path normalised as routing normalises it: {}", a.body);
    let dots = format!("http://{addr}/dpop/x/../orders/1");
    let a = s.send("GET", "/dpop/orders/1", &auth, &[&key.proof("GET", &dots, Some(&token), None)], &[]);
    assert_eq!(a.code, 401, "a dot segment routing would refuse");
    // Host compared case-insensitively, the default port stripped; the method is the request's.
    let host = format!("LocalHost:{}", addr.port());
    let htu = format!("http://localhost:{}/dpop/orders/1", addr.port());
    let proof = key.proof("POST", &htu, Some(&token), None);
    let a = s.send("POST", "/dpop/orders/1", &auth, &[&proof], &["-H", &format!("Host: {host}"), "-d", "{}"]);
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(s.up.hits(), 3);

    // Reason codes in the metrics, never the token or the proof in the logs.
    let metrics = s.gw.metrics();
    for reason in
        ["dpop_bound_token_as_bearer", "dpop_key_mismatch", "dpop_replayed", "dpop_htu_mismatch", "dpop_ath_mismatch"]
    {
        let series = format!("portcullis_authn_failures_total{{method=\"jwt\",reason=\"{reason}\"}}");
        assert!(metric(&metrics, &series).is_some_and(|n| n >= 1.0), "{series}\n{metrics}");
    }
    let logs = s.gw.logs().join("\n");
    assert!(!logs.contains(&token) && !logs.contains(&proof), "a credential in the logs");
}

#[test]
fn required_optional_and_unbound_tokens() {
    let s = setup();
    let (bearer, body) = token(&s.idp, "urn:portcullis:orders", None);
    assert_eq!(body["token_type"], "Bearer");
    // `required`: a token without cnf.jkt is refused, as Bearer or as DPoP.
    let a = s.send("GET", "/dpop/x", &format!("Bearer {bearer}"), &[], &[]);
    s.refused(&a, "invalid_token", "an unbound token on a DPoP-required route");
    let key = Key::new();
    let a = s.send(
        "GET",
        "/dpop/x",
        &format!("DPoP {bearer}"),
        &[&key.proof("GET", &s.url("/dpop/x"), Some(&bearer), None)],
        &[],
    );
    s.refused(&a, "invalid_token", "an unbound token under the DPoP scheme");
    // No credential at all: the DPoP challenge without an error.
    let (code, headers, _) = curl(&[&s.url("/dpop/x")]);
    assert_eq!(code, 401);
    assert_eq!(header_of(&headers, "www-authenticate").unwrap(), "DPoP algs=\"ES256 ES384 EdDSA PS256 RS256\"");
    // A bound token on an authenticator without `dpop:`: its binding cannot be enforced, so refused.
    let (bound, _) = token(&s.idp, "urn:portcullis:orders", Some(&key));
    let a = s.send("GET", "/plain/x", &format!("Bearer {bound}"), &[], &[]);
    assert_eq!(a.code, 401);
    assert_eq!(s.up.hits(), 0);
    // `optional`: a plain bearer token passes; a bound one still needs its proof.
    let a = s.send("GET", "/optional/x", &format!("Bearer {bearer}"), &[], &[]);
    assert_eq!(a.code, 200, "{}", a.body);
    let a = s.send("GET", "/optional/x", &format!("Bearer {bound}"), &[], &[]);
    assert_eq!(a.code, 401);
    assert!(a.challenge().contains("DPoP algs="), "{}", a.challenge());
    assert_eq!(s.up.hits(), 1);
    let proof = key.proof("GET", &s.url("/optional/x"), Some(&bound), None);
    let a = s.send("GET", "/optional/x", &format!("DPoP {bound}"), &[&proof], &[]);
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(s.up.hits(), 2);
}

#[test]
fn server_nonces() {
    let s = setup();
    let key = Key::new();
    let (token, _) = token(&s.idp, "urn:portcullis:orders", Some(&key));
    let auth = format!("DPoP {token}");
    let url = s.url("/nonce/a");
    let a = s.send("GET", "/nonce/a", &auth, &[&key.proof("GET", &url, Some(&token), None)], &[]);
    s.refused(&a, "use_dpop_nonce", "a proof without the server's nonce");
    let nonce = header_of(&a.headers, "dpop-nonce").expect("a DPoP-Nonce to use");
    let a = s.send("GET", "/nonce/a", &auth, &[&key.proof("GET", &url, Some(&token), Some("made-up"))], &[]);
    s.refused(&a, "use_dpop_nonce", "a made-up nonce");
    let a = s.send("GET", "/nonce/a", &auth, &[&key.proof("GET", &url, Some(&token), Some(&nonce))], &[]);
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(s.up.hits(), 1);
}

/// oidc-provider's introspection answers `cnf.jkt` for a DPoP-bound opaque token.
#[test]
fn introspected_tokens_carry_their_binding() {
    let s = setup();
    let key = Key::new();
    let (token, body) = token(&s.idp, "urn:portcullis:opaque", Some(&key));
    assert_eq!(body["token_type"], "DPoP");
    assert!(!token.contains('.'), "an opaque token");
    let url = s.url("/opaque/a");
    let a = s.send("GET", "/opaque/a", &format!("Bearer {token}"), &[], &[]);
    s.refused(&a, "invalid_token", "an introspected bound token as Bearer");
    let thief = Key::new();
    let a = s.send("GET", "/opaque/a", &format!("DPoP {token}"), &[&thief.proof("GET", &url, Some(&token), None)], &[]);
    s.refused(&a, "invalid_dpop_proof", "another key");
    let proof = key.proof("GET", &url, Some(&token), None);
    let a = s.send("GET", "/opaque/a", &format!("DPoP {token}"), &[&proof], &[]);
    assert_eq!(a.code, 200, "{}", a.body);
    let a = s.send("GET", "/opaque/a", &format!("DPoP {token}"), &[&proof], &[]);
    assert_eq!(a.code, 401, "replayed");
    assert_eq!(s.up.hits(), 1);
}

// ---------------------------------------------------------------------------------------------------
// Across a fleet: proof ids shared through Redis. Tokens minted here (ES256, `jwks_file`), no provider.

/// An ES256 access token for `jkt`, signed by `issuer`, and the JWKS to verify it.
fn minted_token(issuer: &Key, jkt: &str) -> (String, String) {
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
    let claims = json!({
        "iss": "https://idp.test", "aud": "orders-api", "sub": "alice", "iat": now(), "exp": now() + 600,
        "cnf": {"jkt": jkt}
    });
    let mut jwk = issuer.jwk();
    jwk["kid"] = json!("k1");
    (issuer.sign(&header, &claims), json!({"keys": [jwk]}).to_string())
}

fn fleet_config(up: std::net::SocketAddr, redis: &RedisServer, jwks: &str, extra: &str) -> String {
    local_config(
        up,
        &format!("redis:\n  url: {}\n  command_timeout: 250ms\n  connect_timeout: 200ms\n", redis.url()),
        jwks,
        extra,
        "",
    )
}

fn local_config(up: std::net::SocketAddr, redis: &str, jwks: &str, extra: &str, jwt_extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
{redis}authenticators:
  sso:
    jwt:
      issuer: https://idp.test
      audiences: [orders-api]
      algorithms: [ES256]
      jwks_file: {jwks}
      dpop: {{ mode: required{extra} }}
{jwt_extra}
routes:
  - name: api
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

#[test]
fn a_proof_used_on_one_node_is_a_replay_on_every_other() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("app");
    let (issuer, client) = (Key::new(), Key::new());
    let (token, jwks) = minted_token(&issuer, &client.thumbprint());
    let dir = TempDir::new();
    let jwks = path_str(&dir.write("jwks.json", &jwks));
    let a = Gateway::start(&fleet_config(up.addr, &redis, &jwks, ""));
    let b = Gateway::start(&fleet_config(up.addr, &redis, &jwks, ""));
    let open = Gateway::start(&fleet_config(up.addr, &redis, &jwks, ", on_replay_store_failure: fail_open"));
    let send = |gw: &Gateway, proof: &str| {
        let url = format!("http://{}/orders", gw.addr("main"));
        curl(&[&url, "-H", &format!("Authorization: DPoP {token}"), "-H", &format!("DPoP: {proof}")]).0
    };
    // Every node is reached at its own port, so one proof names one node's URL: replay it to the same
    // node after the other accepted a proof of its own, and check Redis holds both.
    let (url_a, url_b) = (format!("http://{}/orders", a.addr("main")), format!("http://{}/orders", b.addr("main")));
    let pa = client.proof("GET", &url_a, Some(&token), None);
    let pb = client.proof("GET", &url_b, Some(&token), None);
    assert_eq!(send(&a, &pa), 200);
    assert_eq!(send(&b, &pb), 200);
    assert_eq!(redis.keys("portcullis:dpop:sso:*").len(), 2, "both proofs recorded in Redis");
    assert_eq!(send(&a, &pa), 401);
    assert_eq!(send(&b, &pb), 401);
    assert_eq!(up.hits(), 2);
    // The same jti from the same key is one proof wherever it is sent: signed for b's URL with a's jti.
    let mut claims = client.claims("GET", &url_b, Some(&token), None);
    let pa_claims: Value = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(pa.split('.').nth(1).unwrap()).unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    claims["jti"] = pa_claims["jti"].clone();
    assert_eq!(send(&b, &client.sign(&client.header(), &claims)), 401, "a jti already used on another node");
    assert!(b.wait_log("\"reason\":\"dpop_replayed\"", Duration::from_secs(5)));
    assert_eq!(up.hits(), 2);

    // Redis gone: fail closed (503, nothing forwarded) unless configured open.
    redis.kill();
    let fresh = client.proof("GET", &url_a, Some(&token), None);
    let url = format!("http://{}/orders", a.addr("main"));
    let (code, _, body) = curl(&[&url, "-H", &format!("Authorization: DPoP {token}"), "-H", &format!("DPoP: {fresh}")]);
    assert_eq!(code, 503, "{body}");
    assert_eq!(problem_type(&body), problem("store-unavailable"));
    assert_eq!(up.hits(), 2);
    let url_open = format!("http://{}/orders", open.addr("main"));
    let p = client.proof("GET", &url_open, Some(&token), None);
    assert_eq!(send(&open, &p), 200, "fail_open: this node's store decides");
    assert_eq!(send(&open, &p), 401, "and still refuses a replay to it");
    assert_eq!(up.hits(), 3);
}

#[test]
fn forward_credential_keeps_the_proof_and_ambiguous_headers_are_refused() {
    let up = Upstream::start("app");
    let (issuer, client) = (Key::new(), Key::new());
    let (token, jwks) = minted_token(&issuer, &client.thumbprint());
    let dir = TempDir::new();
    let jwks = path_str(&dir.write("jwks.json", &jwks));
    let gw = Gateway::start(&local_config(up.addr, "", &jwks, "", "      forward_credential: true\n"));
    let url = format!("http://{}/orders", gw.addr("main"));
    let send = |extra: &[&str]| {
        let proof = client.proof("GET", &url, Some(&token), None);
        let mut args = vec![url.as_str()];
        let (auth, dpop) = (format!("Authorization: DPoP {token}"), format!("DPoP: {proof}"));
        args.extend(["-H", auth.as_str(), "-H", dpop.as_str()]);
        args.extend(extra);
        curl(&args)
    };
    // Two `Authorization` fields: which one counts is ambiguous, so neither does.
    let (code, headers, _) = send(&["-H", &format!("Authorization: Bearer {token}")]);
    assert_eq!(code, 401);
    assert!(header_of(&headers, "www-authenticate").unwrap().contains("error=\"invalid_token\""));
    assert_eq!(up.hits(), 0);
    let (code, _, body) = send(&[]);
    assert_eq!(code, 200, "{body}");
    let seen = up.last().unwrap();
    assert_eq!(seen.header("authorization"), Some(format!("DPoP {token}").as_str()));
    assert!(seen.header("dpop").is_some(), "forward_credential keeps the proof with the token");
}
