//! Criterion benchmarks of API key authentication: the whole check of a presented key (shape and
//! checksum, HMAC-SHA-256 under the server secret, one map lookup, the expiry/CIDR checks) with 10,000
//! keys declared, and a malformed key refused by the checksum before any hashing. Run briefly with
//! `cargo bench --bench api_key -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::authn::api_key::{self, ApiKeyAuth, ApiKeyConfig};
use portcullis::authn::{AuthRequest, Verdict};
use portcullis::exchange::ConnInfo;
use std::fmt::Write;
use std::hint::black_box;

const SECRET: &str = "bench-api-key-secret-0123456789abcdef";
const KEYS: usize = 10_000;

fn bench_api_key(c: &mut Criterion) {
    let secret = api_key::hmac_key(&serde_yaml_ng::from_str(SECRET).unwrap()).unwrap();
    let mut yaml = format!("hmac_secret: {SECRET}\nkeys:\n");
    let mut presented = String::new();
    for i in 0..KEYS {
        let (id, key) = api_key::generate().unwrap();
        let hex: String = api_key::hash(&secret, &key).iter().map(|b| format!("{b:02x}")).collect();
        writeln!(yaml, "  - {{id: {id}, hash: {hex}, principal: client-{i}, roles: [reader]}}").unwrap();
        if i == KEYS / 2 {
            presented = key;
        }
    }
    let cfg: ApiKeyConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let auth = ApiKeyAuth::new("bench", &cfg).unwrap();
    let conn = ConnInfo::new(0, "127.0.0.1:40000".parse().unwrap(), None);
    let parts = |key: &str| http::Request::get("/orders/42").header("x-api-key", key).body(()).unwrap().into_parts().0;

    let valid = parts(&presented);
    let req = AuthRequest { parts: &valid, conn: &conn, client_ip: conn.peer.ip() };
    assert!(matches!(auth.check(&req), Verdict::Valid(_)));
    // One character changed: the checksum no longer matches.
    let mut typo = presented.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = parts(std::str::from_utf8(&typo).unwrap());
    let bad = AuthRequest { parts: &typo, conn: &conn, client_ip: conn.peer.ip() };
    assert!(matches!(auth.check(&bad), Verdict::Invalid(_)));

    let mut g = c.benchmark_group("api_key");
    g.bench_function("lookup_valid_10k_keys", |b| b.iter(|| auth.check(black_box(&req))));
    g.bench_function("reject_bad_checksum", |b| b.iter(|| auth.check(black_box(&bad))));
    g.bench_function("hmac_sha256", |b| b.iter(|| api_key::hash(&secret, black_box(&presented))));
    g.finish();
}

criterion_group!(benches, bench_api_key);
criterion_main!(benches);
