use super::*;
use crate::exchange::ConnInfo;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A client's proof key.
enum Signer {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    fn es256() -> Signer {
        Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }
    fn ed25519() -> Signer {
        Signer::Ed(Ed25519KeyPair::generate().unwrap())
    }
    fn alg(&self) -> &'static str {
        match self {
            Signer::Ec(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        }
    }
    fn jwk(&self) -> Value {
        match self {
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Signer::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())}),
        }
    }
    fn thumbprint(&self) -> String {
        let (key, t) = proof_key(self.jwk().as_object().unwrap(), algorithm(self.alg())).unwrap();
        drop(key);
        t
    }
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input =
            format!("{}.{}", b64(&serde_json::to_vec(header).unwrap()), b64(&serde_json::to_vec(claims).unwrap()));
        let sig = match self {
            Signer::Ec(k) => k.sign(&SystemRandom::new(), input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()})
    }
}

fn algorithm(name: &str) -> Algorithm {
    super::super::jwt::token::algorithm(name).unwrap()
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

fn ath(token: &str) -> String {
    b64(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

fn claims_for(method: &str, htu: &str) -> Value {
    json!({
        "jti": format!("{:x}", rand_u64()),
        "htm": method, "htu": htu, "iat": super::super::jwt::unix_now(), "ath": ath(TOKEN),
    })
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A fake normaliser: `%62` is `b`, `/./` is `/`; `..` is refused.
fn norm(p: &str) -> Option<Cow<'_, str>> {
    if p.contains("..") {
        return None;
    }
    Some(Cow::Owned(p.replace("%62", "b").replace("/./", "/")))
}

fn dpop(yaml: &str) -> Dpop {
    let cfg: DpopConfig = serde_yaml_ng::from_str(yaml).unwrap();
    Dpop::new(&cfg, Arc::new(ReplayStore::new(1000)), None, norm).unwrap()
}

fn parts(method: &str, uri: &str, host: &str, proofs: &[&str]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri).header("host", host);
    for p in proofs {
        b = b.header("dpop", *p);
    }
    b.body(()).unwrap().into_parts().0
}

fn run(d: &Dpop, parts: &http::request::Parts, scheme: Scheme, jkt: Option<&str>) -> Result<(), &'static str> {
    let conn = ConnInfo::new(0, "127.0.0.1:1".parse().unwrap(), None);
    let req = AuthRequest { parts, conn: &conn, client_ip: conn.peer.ip() };
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(d.check(&req, TOKEN, scheme, jkt))
}

/// Sends `proof` for `GET http://api.example/orders/1` with a token bound to `signer`'s key.
fn send(d: &Dpop, signer: &Signer, proof: &str) -> Result<(), &'static str> {
    let p = parts("GET", "/orders/1?x=1", "api.example", &[proof]);
    run(d, &p, Scheme::Dpop, Some(&signer.thumbprint()))
}

const URL: &str = "http://api.example/orders/1";

#[test]
fn a_valid_proof_passes_once() {
    let d = dpop("required");
    for s in [Signer::es256(), Signer::ed25519()] {
        let proof = s.sign(&s.header(), &claims_for("GET", URL));
        assert_eq!(send(&d, &s, &proof), Ok(()));
        assert_eq!(send(&d, &s, &proof), Err("dpop_replayed"));
    }
}

#[test]
fn htm_and_htu_name_this_request() {
    let d = dpop("required");
    let s = Signer::es256();
    let ok = |htm: &str, htu: &str| send(&d, &s, &s.sign(&s.header(), &claims_for(htm, htu)));
    assert_eq!(ok("POST", URL), Err("dpop_htm_mismatch"));
    assert_eq!(ok("get", URL), Err("dpop_htm_mismatch"), "methods are case-sensitive");
    assert_eq!(ok("GET", "http://api.example/orders/2"), Err("dpop_htu_mismatch"));
    assert_eq!(ok("GET", "https://api.example/orders/1"), Err("dpop_htu_mismatch"), "scheme");
    assert_eq!(ok("GET", "http://other.example/orders/1"), Err("dpop_htu_mismatch"), "host");
    assert_eq!(ok("GET", "http://api.example:8080/orders/1"), Err("dpop_htu_mismatch"), "port");
    assert_eq!(ok("GET", "http://user@api.example/orders/1"), Err("dpop_htu_mismatch"), "userinfo");
    assert_eq!(ok("GET", "http://api.example/orders/.."), Err("dpop_htu_mismatch"));
    assert_eq!(ok("GET", "/orders/1"), Err("dpop_htu_mismatch"), "relative");
    assert_eq!(ok("GET", "http://API.Example/orders/1"), Ok(()), "host case-insensitive");
    assert_eq!(ok("GET", "http://api.example:80/orders/1"), Ok(()), "default port");
    assert_eq!(ok("GET", "http://api.example/orders/1?y=2#frag"), Ok(()), "query and fragment ignored");
    assert_eq!(ok("GET", "http://api.example/orders/./1"), Ok(()), "normalised as routing does");
    let mut c = claims_for("GET", URL);
    c["htu"] = json!(5);
    assert_eq!(send(&d, &s, &s.sign(&s.header(), &c)), Err("dpop_htu_mismatch"));
}

#[test]
fn time_ath_and_jti() {
    let d = dpop("{ mode: required, max_age: 60s, future_skew: 5s }");
    let s = Signer::es256();
    let now = super::super::jwt::unix_now();
    let with = |k: &str, v: Value| {
        let mut c = claims_for("GET", URL);
        c[k] = v;
        send(&d, &s, &s.sign(&s.header(), &c))
    };
    assert_eq!(with("iat", json!(now - 61)), Err("dpop_proof_too_old"));
    assert_eq!(with("iat", json!(now - 55)), Ok(()));
    assert_eq!(with("iat", json!(now + 30)), Err("dpop_proof_in_future"));
    assert_eq!(with("iat", json!("now")), Err("dpop_bad_iat"));
    assert_eq!(with("ath", json!(ath("another.token.x"))), Err("dpop_ath_mismatch"));
    assert_eq!(with("ath", Value::Null), Err("dpop_ath_mismatch"));
    assert_eq!(with("jti", json!("")), Err("dpop_bad_jti"));
    assert_eq!(with("jti", json!("x".repeat(257))), Err("dpop_bad_jti"));
}

#[test]
fn headers_and_keys_are_checked() {
    let d = dpop("{ mode: required, algorithms: [ES256] }");
    let s = Signer::es256();
    let claims = || claims_for("GET", URL);
    let with = |h: Value| send(&d, &s, &s.sign(&h, &claims()));
    let mut h = s.header();
    h["typ"] = json!("JWT");
    assert_eq!(with(h), Err("dpop_bad_typ"));
    let mut h = s.header();
    h["alg"] = json!("none");
    assert_eq!(with(h), Err("dpop_alg_none"));
    let mut h = s.header();
    h["alg"] = json!("HS256");
    assert_eq!(with(h), Err("dpop_alg_not_allowed"));
    let ed = Signer::ed25519();
    assert_eq!(send(&d, &ed, &ed.sign(&ed.header(), &claims())), Err("dpop_alg_not_allowed"), "not pinned");
    let mut h = s.header();
    h["jwk"]["d"] = json!(b64(&[7; 32]));
    assert_eq!(with(h), Err("dpop_private_key"));
    let mut h = s.header();
    h["jwk"]["crv"] = json!("P-384");
    assert_eq!(with(h), Err("dpop_bad_jwk"));
    let mut h = s.header();
    h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
    assert_eq!(with(h), Err("dpop_private_key"));
    let mut h = s.header();
    h["crit"] = json!(["x"]);
    assert_eq!(with(h), Err("dpop_unsupported_crit"));
    // `crit` present at all, even `null`, is refused.
    let mut h = s.header();
    h["crit"] = Value::Null;
    assert_eq!(with(h), Err("dpop_unsupported_crit"));
    // Another key's signature under this jwk.
    let other = Signer::es256();
    assert_eq!(send(&d, &s, &other.sign(&s.header(), &claims())), Err("dpop_bad_signature"));
    // A tampered claim.
    let proof = s.sign(&s.header(), &claims());
    let mut parts: Vec<String> = proof.split('.').map(str::to_owned).collect();
    let mut c = claims();
    c["htm"] = json!("GET");
    c["jti"] = json!("tampered");
    parts[1] = b64(&serde_json::to_vec(&c).unwrap());
    assert_eq!(send(&d, &s, &parts.join(".")), Err("dpop_bad_signature"));
    // A repeated header member.
    let raw = format!(r#"{{"typ":"dpop+jwt","alg":"ES256","alg":"none","jwk":{}}}"#, s.jwk());
    let input = format!("{}.{}", b64(raw.as_bytes()), b64(&serde_json::to_vec(&claims()).unwrap()));
    assert_eq!(send(&d, &s, &format!("{input}.c2ln")), Err("dpop_malformed"));
    assert_eq!(send(&d, &s, "a.b"), Err("dpop_malformed"));
    assert_eq!(send(&d, &s, &"a".repeat(10_000)), Err("dpop_malformed"));
}

#[test]
fn binding_and_schemes() {
    let s = Signer::es256();
    let proof = || s.sign(&s.header(), &claims_for("GET", URL));
    let required = dpop("required");
    let optional = dpop("optional");
    let jkt = s.thumbprint();
    let no_proof = parts("GET", "/orders/1", "api.example", &[]);
    assert_eq!(run(&required, &no_proof, Scheme::Bearer, Some(&jkt)), Err("dpop_bound_token_as_bearer"));
    assert_eq!(run(&optional, &no_proof, Scheme::Bearer, Some(&jkt)), Err("dpop_bound_token_as_bearer"));
    assert_eq!(run(&required, &no_proof, Scheme::Bearer, None), Err("dpop_required"));
    assert_eq!(run(&optional, &no_proof, Scheme::Bearer, None), Ok(()));
    assert_eq!(run(&optional, &no_proof, Scheme::Dpop, None), Err("dpop_unbound_token"));
    assert_eq!(run(&required, &no_proof, Scheme::Dpop, Some(&jkt)), Err("dpop_missing_proof"));
    let (a, b) = (proof(), proof());
    let two = parts("GET", "/orders/1", "api.example", &[&a, &b]);
    assert_eq!(run(&required, &two, Scheme::Dpop, Some(&jkt)), Err("dpop_multiple_proofs"));
    let other = Signer::es256();
    let p = parts("GET", "/orders/1", "api.example", &[&proof()]);
    assert_eq!(run(&required, &p, Scheme::Dpop, Some(&other.thumbprint())), Err("dpop_key_mismatch"));
    assert_eq!(run(&required, &p, Scheme::Dpop, Some(&jkt)), Ok(()));
}

#[test]
fn server_nonces() {
    let d = dpop("{ mode: required, nonce: true, nonce_window: 60s }");
    let s = Signer::es256();
    assert_eq!(send(&d, &s, &s.sign(&s.header(), &claims_for("GET", URL))), Err(USE_NONCE));
    let nonce = d.nonce().unwrap();
    let with_nonce = |n: &str| {
        let mut c = claims_for("GET", URL);
        c["nonce"] = json!(n);
        send(&d, &s, &s.sign(&s.header(), &c))
    };
    assert_eq!(with_nonce(nonce.to_str().unwrap()), Ok(()));
    assert_eq!(with_nonce("made-up"), Err(USE_NONCE));
    let nonces = d.nonces.as_ref().unwrap();
    let now = 1_000_000;
    let n = nonces.issue(now);
    assert!(nonces.valid(&n, now) && nonces.valid(&n, now + 60), "current and next window");
    assert!(!nonces.valid(&n, now + 120), "expired after two windows");
    assert!(!nonces.valid(&n, now - 60), "not before its window");
    let mut forged = URL_SAFE_NO_PAD.decode(&n).unwrap();
    forged[..8].copy_from_slice(&(now / 60 + 1).to_be_bytes());
    assert!(!nonces.valid(&b64(&forged), now + 60), "the window is covered by the tag");
    // Nodes sharing `nonce_secret` accept each other's nonces; others do not.
    let secret = "{ mode: required, nonce: true, nonce_secret: 0123456789abcdef0123456789abcdef }";
    let (a, b) = (dpop(secret), dpop(secret));
    let n = a.nonce().unwrap();
    assert!(b.nonces.as_ref().unwrap().valid(n.to_str().unwrap(), super::super::jwt::unix_now()));
    assert!(!d.nonces.as_ref().unwrap().valid(n.to_str().unwrap(), super::super::jwt::unix_now()));
    let c = d.challenge(Some(USE_NONCE));
    assert!(c.contains("error=\"use_dpop_nonce\""), "{c}");
}

#[test]
fn challenges() {
    let d = dpop("{ mode: required, algorithms: [ES256, EdDSA] }");
    assert_eq!(d.challenge(None), "DPoP algs=\"ES256 EdDSA\"");
    assert_eq!(d.challenge(Some("dpop_replayed")), "DPoP algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\"");
    assert_eq!(d.challenge(Some("expired")), "DPoP algs=\"ES256 EdDSA\", error=\"invalid_token\"");
    assert_eq!(d.challenge(Some("dpop_bound_token_as_bearer")), "DPoP algs=\"ES256 EdDSA\", error=\"invalid_token\"");
    let o = dpop("{ mode: optional, algorithms: [ES256] }");
    assert_eq!(o.challenge(None), "Bearer realm=\"portcullis\", DPoP algs=\"ES256\"");
    assert_eq!(
        o.challenge(Some("expired")),
        "Bearer realm=\"portcullis\", error=\"invalid_token\", DPoP algs=\"ES256\", error=\"invalid_token\""
    );
}

#[test]
fn config_forms() {
    let parse = |y: &str| serde_yaml_ng::from_str::<DpopConfig>(y).map_err(|e| e.to_string());
    assert_eq!(parse("required").unwrap().mode, Mode::Required);
    let o = parse("optional").unwrap();
    assert_eq!((o.mode, o.max_age, o.nonce), (Mode::Optional, Dur::secs(60), false));
    assert!(parse("sometimes").is_err());
    assert!(parse("{ mode: required, colour: red }").is_err(), "unknown keys are errors");
    assert!(parse("{ algorithms: [ES256] }").is_err(), "mode is required");
    assert!(parse("{ mode: required, algorithms: [none] }").is_err());
    let build = |y: &str| Dpop::new(&parse(y).unwrap(), Arc::new(ReplayStore::new(1)), None, norm).err();
    assert!(build("{ mode: required, algorithms: [HS256] }").is_some());
    assert!(build("{ mode: required, algorithms: [] }").is_some());
    assert!(build("{ mode: required, max_age: 2h }").is_some());
    assert!(build("{ mode: required, nonce: true, nonce_window: 1s }").is_some());
    assert!(build("{ mode: required, replay_capacity: 0 }").is_some());
    assert!(build("{ mode: required, nonce: true, nonce_secret: short }").is_some());
    assert!(build("{ mode: required, nonce_secret: 0123456789abcdef0123456789abcdef }").is_some(), "nonce off");
    assert!(build("{ mode: required, algorithms: [ES256, RS256, PS256, EdDSA, ES384] }").is_none());
}

#[test]
fn presented_schemes() {
    let p = |v: &[&str]| {
        let mut b = http::Request::builder();
        for x in v {
            b = b.header("authorization", *x);
        }
        b.body(()).unwrap().into_parts().0
    };
    let one = p(&["DPoP abc.def"]);
    assert_eq!(presented(&one, None, true), (Presented::Token("abc.def"), Scheme::Dpop));
    assert_eq!(presented(&one, None, false), (Presented::Absent, Scheme::Bearer), "not ours without dpop");
    let lower = p(&["dpop  abc"]);
    assert_eq!(presented(&lower, None, true), (Presented::Token("abc"), Scheme::Dpop));
    let bearer = p(&["Bearer abc"]);
    assert_eq!(presented(&bearer, None, true), (Presented::Token("abc"), Scheme::Bearer));
    let two = p(&["DPoP abc", "Bearer def"]);
    assert_eq!(presented(&two, None, true).0, Presented::Malformed);
    let bad = p(&["DPoP a b"]);
    assert_eq!(presented(&bad, None, true).0, Presented::Malformed);
    let dpopx = p(&["DPoPx abc"]);
    assert_eq!(presented(&dpopx, None, true).0, Presented::Absent);
}

/// RFC 7638 §3.1's example key and thumbprint (RSA), and RFC 8037 §A.3 (Ed25519).
#[test]
fn rfc7638_thumbprints() {
    let rsa = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
    });
    let (_, t) = proof_key(rsa.as_object().unwrap(), Algorithm::RS256).unwrap();
    assert_eq!(t, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    let okp = json!({"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let (_, t) = proof_key(okp.as_object().unwrap(), Algorithm::EdDSA).unwrap();
    assert_eq!(t, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

#[test]
fn lints_per_node_nonces_in_a_fleet() {
    let parse = |y: &str| serde_yaml_ng::from_str::<DpopConfig>(y).unwrap();
    let (per_node, shared) = (
        parse("{ mode: required, nonce: true }"),
        parse("{ mode: required, nonce: true, nonce_secret: 0123456789abcdef0123456789abcdef }"),
    );
    let sections = || [("a", &per_node), ("b", &shared)].into_iter();
    let l = lints(sections(), true);
    assert_eq!(l.len(), 1);
    assert!(l[0].starts_with("authenticator `a`"), "{l:?}");
    assert!(lints(sections(), false).is_empty(), "one node: nothing to say");
}

#[test]
fn rsa_proofs() {
    use aws_lc_rs::signature::{RsaKeyPair, RsaPublicKeyComponents};
    let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let comps = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let jwk = json!({"kty": "RSA", "n": b64(&comps.n), "e": b64(&comps.e)});
    let (_, jkt) = proof_key(jwk.as_object().unwrap(), Algorithm::RS256).unwrap();
    let d = dpop("{ mode: required, algorithms: [RS256, PS256] }");
    for (alg, padding) in
        [("RS256", &aws_lc_rs::signature::RSA_PKCS1_SHA256), ("PS256", &aws_lc_rs::signature::RSA_PSS_SHA256)]
    {
        let sign = |header: &Value| {
            let claims = claims_for("GET", URL);
            let input =
                format!("{}.{}", b64(&serde_json::to_vec(header).unwrap()), b64(&serde_json::to_vec(&claims).unwrap()));
            let mut sig = vec![0u8; key.public_modulus_len()];
            key.sign(padding, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
            format!("{input}.{}", b64(&sig))
        };
        let p = parts("GET", "/orders/1", "api.example", &[&sign(&json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk}))]);
        assert_eq!(run(&d, &p, Scheme::Dpop, Some(&jkt)), Ok(()), "{alg}");
        let mut private = jwk.clone();
        private["p"] = json!("AQAB");
        let p =
            parts("GET", "/orders/1", "api.example", &[&sign(&json!({"typ": "dpop+jwt", "alg": alg, "jwk": private}))]);
        assert_eq!(run(&d, &p, Scheme::Dpop, Some(&jkt)), Err("dpop_private_key"), "{alg}");
    }
    // An RS256 signature presented as PS256 does not verify.
    let claims = claims_for("GET", URL);
    let header = json!({"typ": "dpop+jwt", "alg": "PS256", "jwk": jwk});
    let input =
        format!("{}.{}", b64(&serde_json::to_vec(&header).unwrap()), b64(&serde_json::to_vec(&claims).unwrap()));
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    let p = parts("GET", "/orders/1", "api.example", &[&format!("{input}.{}", b64(&sig))]);
    assert_eq!(run(&d, &p, Scheme::Dpop, Some(&jkt)), Err("dpop_bad_signature"));
}
