//! JWKS parsing (`authn::jwt::jwks::parse_jwks`) never panics on any document, and the keys it keeps
//! are the ones the module documents: signature keys only, never an HMAC key, only pinned algorithms
//! of the key's family, `kid` as published, at most 64 keys looked at.
//!
//! Input layout: 2 bytes pinned-algorithm mask, then the JWKS document.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::authn::jwt::jwks::{parse_jwk, parse_jwks};
use portcullis::authn::jwt::token::algorithm;
use serde_json::Value;

const ALGS: [&str; 12] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"];
const MAX_KEYS: usize = 64;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mask = u16::from_le_bytes([data[0], data[1]]);
    let body = &data[2..];
    let pinned: Vec<_> =
        ALGS.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).filter_map(|(_, n)| algorithm(n)).collect();
    let family = |kty: &str, crv: Option<&str>| -> Vec<_> {
        let names: &[&str] = match (kty, crv) {
            ("RSA", _) => &ALGS[..6],
            ("EC", Some("P-256")) => &["ES256"],
            ("EC", Some("P-384")) => &["ES384"],
            ("OKP", Some("Ed25519")) => &["EdDSA"],
            _ => &[],
        };
        names.iter().filter_map(|n| algorithm(n)).collect()
    };

    let Ok((keys, notes)) = parse_jwks(body, &pinned) else { return };
    let doc: Value = serde_json::from_slice(body).expect("accepted JWKS is JSON");
    let list = doc.get("keys").and_then(Value::as_array).expect("accepted JWKS has a `keys` array");
    assert!(keys.len() + notes.len() <= list.len().min(MAX_KEYS));

    // Key by key, the same decisions as the whole document, in order.
    let mut kept = keys.iter();
    let mut errors = 0;
    for jwk in list.iter().take(MAX_KEYS) {
        match parse_jwk(jwk, &pinned) {
            Ok(Some(single)) => {
                let k = kept.next().expect("parse_jwks kept every usable key");
                assert_eq!(k.kid, single.kid);
                assert_eq!(k.algs, single.algs);

                assert!(jwk.get("use").is_none_or(|u| u == "sig"), "kept a non-signature key");
                if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
                    assert!(ops.iter().any(|o| o == "verify"));
                }
                assert_eq!(k.kid.as_deref(), jwk.get("kid").map(|v| v.as_str().expect("kid is a string")));
                let kty = jwk.get("kty").and_then(Value::as_str).expect("kept key has a `kty`");
                assert_ne!(kty, "oct", "a JWKS never supplies an HMAC key");
                let allowed = family(kty, jwk.get("crv").and_then(Value::as_str));
                assert!(!k.algs.is_empty());
                for a in &k.algs {
                    assert!(pinned.contains(a), "kept key for unpinned {a:?}");
                    assert!(allowed.contains(a), "{a:?} does not fit a {kty} key");
                }
                if let Some(named) = jwk.get("alg") {
                    let named = algorithm(named.as_str().expect("alg is a string")).expect("a known alg");
                    assert_eq!(k.algs, vec![named]);
                }
            }
            Ok(None) => {}
            Err(_) => errors += 1,
        }
    }
    assert!(kept.next().is_none(), "parse_jwks kept a key that parse_jwk refuses");
    assert_eq!(errors, notes.len());
});
