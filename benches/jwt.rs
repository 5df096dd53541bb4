//! Criterion benchmarks of JWT authentication: the verified-token cache hit (the hot path: SHA-256 of
//! the token, one map lookup, the RFC 8705 binding check) against full verification (header and claims
//! parsing plus the signature) for RS256, ES256, EdDSA and HS256. Run briefly with
//! `cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::authn::jwt::cache::digest;
use portcullis::authn::jwt::{JwtAuth, JwtConfig};
use portcullis::authn::{AuthRequest, Verdict};
use portcullis::exchange::ConnInfo;
use serde_json::json;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

const SECRET: &str = "bench-secret-0123456789abcdefghijklmnop";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(alg: &str, kid: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
    let claims = json!({
        "iss": "https://idp.bench", "aud": "orders-api", "sub": "user-42", "client_id": "app",
        "iat": now, "exp": now + 3600, "scope": "orders:read orders:write",
        "realm_access": {"roles": ["reader", "writer"]}, "jti": "b3f1c0de"
    });
    format!("{}.{}", b64(&serde_json::to_vec(&header).unwrap()), b64(&serde_json::to_vec(&claims).unwrap()))
}

/// Keys of every kind, their JWKS, and one token signed by each.
struct Minted {
    jwks: serde_json::Value,
    tokens: Vec<(&'static str, String)>,
}

fn mint() -> Minted {
    let rng = SystemRandom::new();
    let rsa = sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let comps = sig::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let ec = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let ec_pub = ec.public_key().as_ref().to_vec();
    let ed = sig::Ed25519KeyPair::generate().unwrap();

    let input = signing_input("RS256", "rsa-1");
    let mut rs = vec![0u8; rsa.public_modulus_len()];
    rsa.sign(&sig::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut rs).unwrap();
    let rs256 = format!("{input}.{}", b64(&rs));

    let input = signing_input("ES256", "ec-1");
    let es256 = format!("{input}.{}", b64(ec.sign(&rng, input.as_bytes()).unwrap().as_ref()));

    let input = signing_input("EdDSA", "ed-1");
    let eddsa = format!("{input}.{}", b64(ed.sign(input.as_bytes()).as_ref()));

    let input = signing_input("HS256", "hs");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let hs256 = format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()));

    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64(&comps.n), "e": b64(&comps.e)},
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(&ec_pub[1..33]), "y": b64(&ec_pub[33..])},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())},
    ]});
    Minted { jwks, tokens: vec![("rs256", rs256), ("es256", es256), ("eddsa", eddsa), ("hs256", hs256)] }
}

fn auth(jwks_file: &str, cache_size: usize) -> JwtAuth {
    let yaml = format!(
        "issuer: https://idp.bench\naudiences: [orders-api]\nalgorithms: [RS256, ES256, EdDSA, HS256]\n\
         jwks_file: {jwks_file}\nhmac_secret: {SECRET}\nroles_claim: realm_access.roles\ncache_size: {cache_size}\n"
    );
    let cfg: JwtConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    JwtAuth::new("bench", &cfg).unwrap()
}

/// `check` never waits on these paths (keys are local), so one poll finishes it.
fn check(auth: &JwtAuth, req: &AuthRequest<'_>) -> bool {
    let mut fut = pin!(auth.check(req));
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Verdict::Valid(p)) => !p.id.is_empty(),
        Poll::Ready(other) => panic!("refused: {other:?}"),
        Poll::Pending => panic!("check waited"),
    }
}

fn bench_jwt(c: &mut Criterion) {
    let minted = mint();
    let dir = std::env::temp_dir().join(format!("portcullis-bench-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, minted.jwks.to_string()).unwrap();
    let cached = auth(&file.to_string_lossy(), 10_000);
    let uncached = auth(&file.to_string_lossy(), 0);
    let conn = ConnInfo::new(0, "127.0.0.1:40000".parse().unwrap(), None);

    let mut g = c.benchmark_group("jwt");
    for (name, token) in &minted.tokens {
        let parts = http::Request::get("/orders/42")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let req = AuthRequest { parts: &parts, conn: &conn, client_ip: conn.peer.ip() };
        assert!(check(&cached, &req));
        g.bench_function(format!("cache_hit_{name}"), |b| b.iter(|| check(&cached, black_box(&req))));
        g.bench_function(format!("verify_{name}"), |b| b.iter(|| check(&uncached, black_box(&req))));
    }
    // The cache key alone, for the RS256 token (the longest): most of a cache hit's cost.
    let rs256 = &minted.tokens[0].1;
    g.bench_function("sha256_cache_key_rs256", |b| b.iter(|| digest(black_box(rs256))));
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// DPoP (RFC 9449) with a cached ES256 access token bound to the proof key (`cnf.jkt`): the token's cache
/// hit plus the whole proof check (header and `jwk`, the ES256 signature, `htm`/`htu`/`iat`/`ath`, the
/// thumbprint, the local replay store). A fresh proof per iteration is signed outside the measurement.
fn bench_dpop(c: &mut Criterion) {
    use portcullis::authn::dpop::{Dpop, DpopConfig};
    use portcullis::authn::signature::replay::ReplayStore;
    let rng = SystemRandom::new();
    let issuer = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let issuer_pub = issuer.public_key().as_ref().to_vec();
    let client = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let cp = client.public_key().as_ref().to_vec();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&cp[1..33]), "y": b64(&cp[33..])});
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, b64(&cp[1..33]), b64(&cp[33..]));
    let jkt = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"});
    let claims = json!({
        "iss": "https://idp.bench", "aud": "orders-api", "sub": "user-42", "client_id": "app",
        "iat": now, "exp": now + 3600, "scope": "orders:read", "jti": "b3f1c0de", "cnf": {"jkt": jkt}
    });
    let input =
        format!("{}.{}", b64(&serde_json::to_vec(&header).unwrap()), b64(&serde_json::to_vec(&claims).unwrap()));
    let token = format!("{input}.{}", b64(issuer.sign(&rng, input.as_bytes()).unwrap().as_ref()));
    let ath = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref());

    let dir = std::env::temp_dir().join(format!("portcullis-bench-dpop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    let jwks = json!({"keys": [{"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(&issuer_pub[1..33]), "y": b64(&issuer_pub[33..])}]});
    std::fs::write(&file, jwks.to_string()).unwrap();
    let yaml = format!(
        "issuer: https://idp.bench\naudiences: [orders-api]\nalgorithms: [ES256]\njwks_file: {}\n",
        file.to_string_lossy()
    );
    let cfg: JwtConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let dpop_cfg: DpopConfig = serde_yaml_ng::from_str("{ mode: required, replay_capacity: 10000000 }").unwrap();
    let dpop = Dpop::new(&dpop_cfg, std::sync::Arc::new(ReplayStore::new(10_000_000)), None, |p| {
        portcullis::validate::path::normalize(p).ok()
    })
    .unwrap();
    let auth = JwtAuth::new("bench", &cfg).unwrap().with_dpop(Some(dpop));
    let conn = ConnInfo::new(0, "127.0.0.1:40000".parse().unwrap(), None);
    let proof_header = b64(&serde_json::to_vec(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk})).unwrap());
    let mut n = 0u64;
    let mut request = || {
        n += 1;
        let claims = json!({"jti": format!("bench-{n}"), "htm": "GET", "htu": "http://api.bench/orders/42", "iat": now, "ath": ath});
        let input = format!("{proof_header}.{}", b64(&serde_json::to_vec(&claims).unwrap()));
        let proof = format!("{input}.{}", b64(client.sign(&rng, input.as_bytes()).unwrap().as_ref()));
        http::Request::get("/orders/42")
            .header("host", "api.bench")
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    let first = request();
    assert!(check(&auth, &AuthRequest { parts: &first, conn: &conn, client_ip: conn.peer.ip() }), "token cached");
    let mut g = c.benchmark_group("jwt");
    // The floor: the proof's ES256 signature alone (aws-lc-rs), to read the DPoP check as "signature
    // plus the rest".
    let floor_msg = b"eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJqdGkiOiJiZW5jaCJ9";
    let floor_sig = client.sign(&rng, floor_msg).unwrap();
    g.bench_function("p256_verify_floor", |b| {
        b.iter(|| {
            sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, black_box(&cp))
                .verify(black_box(floor_msg), floor_sig.as_ref())
                .is_ok()
        })
    });
    g.bench_function("dpop_es256_cached_token", |b| {
        b.iter_batched(
            &mut request,
            |parts| check(&auth, black_box(&AuthRequest { parts: &parts, conn: &conn, client_ip: conn.peer.ip() })),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------------
// Token revocation (issue 18, part 4): the `jti` deny-list check that runs after every cache hit.
// Target: at most 100 ns locally.
// ---------------------------------------------------------------------------------------------------

/// The deny-list check with 10,000 revoked ids: a miss (the common case), a hit, and the check as a
/// request makes it (the `jti` read from the cached principal's claims); and a whole HS256 cache hit
/// with that list installed, to compare with `jwt/cache_hit_hs256`.
fn bench_revoked(c: &mut Criterion) {
    use portcullis::authn::jwt::revoked::{Entry, Revoked};
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 3600;
    let entries: Vec<Entry> = (0..10_000)
        .map(|i| Entry {
            issuer: (i % 2 == 0).then(|| "https://idp.bench".to_owned()),
            jti: format!("revoked-{i:08}-3f6c2a9e"),
            until,
        })
        .collect();
    let list = std::sync::Arc::new(Revoked::fixed(&entries));
    let now = until - 1800;
    let mut g = c.benchmark_group("jwt_revoked");
    g.bench_function("deny_list_miss", |b| {
        b.iter(|| list.contains(black_box("https://idp.bench"), black_box("a1b2c3d4-e5f6-4789-abcd-ef0123456789"), now))
    });
    g.bench_function("deny_list_hit", |b| {
        b.iter(|| list.contains(black_box("https://idp.bench"), black_box("revoked-00004242-3f6c2a9e"), now))
    });
    let claims = json!({"sub": "alice", "jti": "a1b2c3d4-e5f6-4789-abcd-ef0123456789", "iss": "https://idp.bench",
        "aud": "orders-api", "scope": "orders:read", "realm_access": {"roles": ["reader"]}});
    let serde_json::Value::Object(claims) = claims else { unreachable!() };
    let principal = portcullis::exchange::Principal {
        id: "alice".into(),
        kind: portcullis::exchange::PrincipalKind::Jwt,
        roles: vec!["reader".into()],
        scopes: vec!["orders:read".into()],
        claims: Some(std::sync::Arc::new(claims)),
        tenant: None,
        identity: Default::default(),
    };
    g.bench_function("deny_list_principal_miss", |b| {
        b.iter(|| list.principal_revoked(black_box("https://idp.bench"), black_box(&principal), now))
    });
    // A whole cache hit with the list installed.
    let minted = mint();
    let dir = std::env::temp_dir().join(format!("portcullis-bench-jwt-revoked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, minted.jwks.to_string()).unwrap();
    let with_list = auth(&file.to_string_lossy(), 10_000).revocations(Some(list.clone()));
    let conn = ConnInfo::new(0, "127.0.0.1:40000".parse().unwrap(), None);
    if let Some((_, token)) = minted.tokens.iter().find(|(n, _)| *n == "hs256") {
        let parts = http::Request::get("/orders/42")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let req = AuthRequest { parts: &parts, conn: &conn, client_ip: conn.peer.ip() };
        assert!(check(&with_list, &req));
        g.bench_function("cache_hit_hs256_with_deny_list", |b| b.iter(|| check(&with_list, black_box(&req))));
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_jwt, bench_dpop, bench_revoked);
criterion_main!(benches);
