//! Compact JWS parsing (`authn::jwt::token::parse`), claims decoding (`token::claims`) and the claim
//! rules (`Rules::check`) never panic, and what they accept is what the module documents.
//!
//! Input layout: 2 bytes pinned-algorithm mask, 8 bytes `now` (little-endian i64), 1 flag byte, then
//! the token. Flag bit 0 clear: the rest is the token as presented (UTF-8). Flag bit 0 set: the rest is
//! `header JSON \n claims JSON \n signature bytes`, which the target base64url-encodes itself, so the
//! fuzzer reaches the JSON parsers without having to discover base64. Bits 1..=6: leeway (x10 s);
//! bit 7: `max_age` of one hour.
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use portcullis::authn::jwt::token::{algorithm, claims, parse, Rules};
use serde_json::Value;

const ALGS: [&str; 12] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"];

fn is_base64url(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let mask = u16::from_le_bytes([data[0], data[1]]);
    let now = i64::from_le_bytes(data[2..10].try_into().expect("8 bytes"));
    let flags = data[10];
    let rest = &data[11..];
    let pinned: Vec<_> =
        ALGS.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).filter_map(|(_, n)| algorithm(n)).collect();

    let token = if flags & 1 == 0 {
        let Ok(t) = std::str::from_utf8(rest) else { return };
        t.to_owned()
    } else {
        let mut parts = rest.splitn(3, |b| *b == b'\n');
        let (h, c, s) =
            (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(c), URL_SAFE_NO_PAD.encode(s))
    };

    let first = parse(&token, &pinned);
    // Deterministic.
    let second = parse(&token, &pinned);
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    let Ok(jws) = first else { return };

    // The split: exactly three non-empty base64url parts, signing input = header.payload.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| is_base64url(p)));
    assert_eq!(jws.signing_input, format!("{}.{}", parts[0], parts[1]));
    assert_eq!(jws.payload, parts[1]);
    assert_eq!(jws.signature, parts[2]);
    assert_eq!(format!("{}.{}", jws.signing_input, jws.signature), token);

    // The algorithm: pinned, never `none`, and the one the header names.
    assert!(pinned.contains(&jws.alg), "accepted alg {:?} is not pinned", jws.alg);
    let raw = URL_SAFE_NO_PAD.decode(parts[0]).expect("accepted header is base64url");
    let header: Value = serde_json::from_slice(&raw).expect("accepted header is JSON");
    let obj = header.as_object().expect("accepted JOSE header is a JSON object (RFC 7515 §4)");
    let alg_name = obj.get("alg").and_then(Value::as_str).expect("accepted header has a string `alg`");
    assert_eq!(algorithm(alg_name), Some(jws.alg));
    // Extensions we do not implement are refused whenever the member is present at all.
    for member in ["crit", "enc", "zip"] {
        assert!(!obj.contains_key(member), "accepted header with `{member}`");
    }
    match (&jws.kid, obj.get("kid")) {
        (Some(k), Some(Value::String(v))) => assert!(k == v && k.len() <= 256),
        (None, None | Some(Value::Null)) => {}
        (k, v) => panic!("kid {k:?} does not match header {v:?}"),
    }

    // Claims, then the claim rules at the fuzzed `now`.
    let Ok(c) = claims(jws.payload) else { return };
    let rules = Rules {
        issuer: "https://idp.example".into(),
        audiences: vec!["api".into()],
        leeway: i64::from(flags >> 1 & 0x3f) * 10,
        max_age: (flags & 0x80 != 0).then_some(3600),
        required: vec!["sub".into()],
    };
    let Ok(until) = rules.check(&c, now) else { return };
    assert_eq!(c.get("iss").and_then(Value::as_str), Some(rules.issuer.as_str()));
    assert!(c.get("sub").is_some_and(|s| !s.is_null()));
    assert!(now < until.saturating_add(rules.leeway), "served until {until}, but now is {now}");
    let exp = c.get("exp").expect("accepted claims have `exp`");
    if let Some(exp) = exp.as_i64() {
        assert!(until <= exp, "served until {until}, past exp {exp}");
    }
    if let Some(max_age) = rules.max_age {
        let iat = c.get("iat").expect("max_age needs `iat`");
        if let Some(iat) = iat.as_i64() {
            assert!(until <= iat.saturating_add(max_age));
        }
    }
});
