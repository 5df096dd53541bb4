use super::*;
use crate::exchange::ConnInfo;
use base64::Engine;

/// RFC 9421 Appendix B.1.5.
const RFC_SHARED_SECRET: &str =
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
/// RFC 9421 Appendix B.1.4.
const RFC_ED25519_PUBLIC: &str =
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\n-----END PUBLIC KEY-----\n";
const RFC_BODY: &[u8] = br#"{"hello": "world"}"#;

/// RFC 9421 Appendix B.2's `test-request`.
fn rfc_request() -> http::request::Parts {
    http::Request::post("/foo?param=Value&Pet=dog")
        .header("host", "example.com")
        .header("date", "Tue, 20 Apr 2021 02:07:55 GMT")
        .header("content-type", "application/json")
        .header(
            "content-digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        )
        .header("content-length", "18")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn rfc_base(input: &str) -> (SignatureInput, Vec<u8>) {
    let si = fields::parse_inputs(input).unwrap().remove(0);
    let parts = rfc_request();
    let base = base::signature_base(&Message { parts: &parts, scheme: "https" }, &si.components, &si.params_line);
    (si, base.unwrap())
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn rfc9421_b25_hmac_sha256() {
    let (_, base) =
        rfc_base(r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#);
    let expected = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\"";
    assert_eq!(String::from_utf8(base.clone()).unwrap(), expected);
    let key = Key {
        alg: Alg::HmacSha256,
        verifier: Verifier::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &b64(RFC_SHARED_SECRET)))),
        principal: Arc::new(principal("test-shared-secret")),
    };
    let sig = fields::parse_signatures("sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:").unwrap();
    assert!(key.verify(&base, &sig["sig-b25"]));
    let mut tampered = base.clone();
    tampered[1] = b'D';
    assert!(!key.verify(&tampered, &sig["sig-b25"]));
}

#[test]
fn rfc9421_b26_ed25519_from_pem() {
    let (_, base) = rfc_base(
        r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
    );
    let pk = ed25519_key(RFC_ED25519_PUBLIC.as_bytes()).unwrap();
    assert_eq!(pk.to_vec(), b64("JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="));
    let key = Key { alg: Alg::Ed25519, verifier: Verifier::Ed25519(pk), principal: Arc::new(principal("ed")) };
    let sig = fields::parse_signatures(
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
    )
    .unwrap();
    assert!(key.verify(&base, &sig["sig-b26"]));
    assert!(!key.verify(&base[1..], &sig["sig-b26"]));
}

#[test]
fn rfc9530_content_digest_of_the_test_body() {
    let parts = rfc_request();
    let value = parts.headers["content-digest"].to_str().unwrap();
    assert_eq!(check_digest(value, Some(RFC_BODY)), Ok(()));
    assert_eq!(check_digest("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", Some(RFC_BODY)), Ok(()));
    assert_eq!(check_digest(value, Some(b"{\"hello\": \"world!\"}")), Err("digest_mismatch"));
    assert_eq!(check_digest("md5=:AA==:", Some(RFC_BODY)), Err("unsupported_digest"));
    assert_eq!(check_digest(value, None), Err("body_unavailable"));
}

#[test]
fn ed25519_key_forms() {
    assert!(ed25519_key(b"JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=").is_ok());
    assert!(ed25519_key(b"AAAA").is_err(), "wrong length");
    assert!(ed25519_key(b"not base64 at all!").is_err());
    assert!(ed25519_key(b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n").is_err());
    // An X25519 SPKI (OID 1.3.101.110) is not an Ed25519 key.
    assert!(ed25519_key(b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\n-----END PUBLIC KEY-----\n").is_err());
}

// ---------------------------------------------------------------------------------------------------
// The whole check, with requests signed here.

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_700_000_000;

fn principal(id: &str) -> Principal {
    Principal {
        id: id.into(),
        kind: PrincipalKind::Signature,
        roles: vec![],
        scopes: vec![],
        claims: None,
        tenant: None,
        identity: Default::default(),
    }
}

fn auth(extra: &str) -> SignatureAuth {
    let yaml = format!("keys:\n  k1: {{ alg: hmac-sha256, secret: {SECRET}, roles: [r1], principal: svc }}\n{extra}");
    let c: SignatureConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    SignatureAuth {
        replay: Arc::new(ReplayStore::new(100)),
        ..SignatureAuth::new("unit", &c, &Default::default(), None).unwrap()
    }
}

struct Signed {
    parts: http::request::Parts,
    body: bytes::Bytes,
}

/// Signs a POST with `components` and `params` (the text after the inner list) using `secret`.
fn signed(components: &str, params: &str, secret: &str, body: &[u8]) -> Signed {
    let digest = digest::digest(&digest::SHA256, body);
    let mut parts = http::Request::post("/orders?id=7")
        .header("host", "api.example")
        .header("content-length", body.len())
        .header("content-digest", format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(digest)))
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let input = format!("sig1=({components}){params}");
    let si = fields::parse_inputs(&input).unwrap().remove(0);
    let base = base::signature_base(&Message { parts: &parts, scheme: "http" }, &si.components, &si.params_line);
    // A base that cannot be built (a covered field is absent) is signed as empty: the verifier refuses first.
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), &base.unwrap_or_default());
    let sig = format!("sig1=:{}:", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
    parts.headers.insert("signature-input", input.parse().unwrap());
    parts.headers.insert("signature", sig.parse().unwrap());
    Signed { parts, body: bytes::Bytes::copy_from_slice(body) }
}

const ALL: &str = r#""@method" "@target-uri" "content-digest""#;

fn params(nonce: &str) -> String {
    format!(r#";created={NOW};nonce="{nonce}";keyid="k1";alg="hmac-sha256""#)
}

fn run(a: &SignatureAuth, s: &Signed, now: i64) -> Result<Arc<Principal>, &'static str> {
    let conn = ConnInfo::new(0, "127.0.0.1:1".parse().unwrap(), None);
    let req = AuthRequest { parts: &s.parts, conn: &conn, client_ip: conn.peer.ip() };
    let headers = &s.parts.headers;
    let (input, sig) = (joined(headers, "signature-input").unwrap(), joined(headers, "signature").unwrap());
    let (p, due) = a.verify_head(&req, &input, &sig, now)?;
    let body = due.needs_body().then_some(&s.body[..]);
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(a.finish(&due, body, now))?;
    Ok(p)
}

#[test]
fn valid_signature_yields_the_configured_principal() {
    let a = auth("");
    let p = run(&a, &signed(ALL, &params("n1"), SECRET, b"{}"), NOW + 3).unwrap();
    assert_eq!((p.id.as_str(), p.roles.clone(), p.kind), ("svc", vec!["r1".to_string()], PrincipalKind::Signature));
}

#[test]
fn each_refusal_has_its_reason() {
    let a = auth("");
    let ok = |n: &str| signed(ALL, &params(n), SECRET, b"{}");
    assert_eq!(run(&a, &ok("r1"), NOW).map(|_| ()), Ok(()));
    assert_eq!(run(&a, &ok("r1"), NOW + 1).err(), Some("replayed_nonce"));
    assert_eq!(run(&a, &ok("r2"), NOW + 301).err(), Some("stale_signature"));
    assert_eq!(run(&a, &ok("r3"), NOW - 301).err(), Some("stale_signature"), "created in the future");
    let mut tampered = ok("r4");
    tampered.body = bytes::Bytes::from_static(b"{\"admin\":true}");
    assert_eq!(run(&a, &tampered, NOW).err(), Some("digest_mismatch"));
    let wrong = signed(ALL, &params("r5"), "fedcba9876543210fedcba9876543210", b"{}");
    assert_eq!(run(&a, &wrong, NOW).err(), Some("bad_signature"));
    let unknown = signed(ALL, &params("r6").replace("k1", "k9"), SECRET, b"{}");
    assert_eq!(run(&a, &unknown, NOW).err(), Some("unknown_key"));
    let no_digest = signed(r#""@method" "@target-uri""#, &params("r7"), SECRET, b"{}");
    assert_eq!(run(&a, &no_digest, NOW).err(), Some("missing_component"));
    let no_method = signed(r#""@target-uri" "content-digest""#, &params("r8"), SECRET, b"{}");
    assert_eq!(run(&a, &no_method, NOW).err(), Some("missing_component"));
    let alg = signed(ALL, &params("r9").replace("hmac-sha256", "ed25519"), SECRET, b"{}");
    assert_eq!(run(&a, &alg, NOW).err(), Some("alg_mismatch"));
    let no_nonce = signed(ALL, &format!(";created={NOW};keyid=\"k1\""), SECRET, b"{}");
    assert_eq!(run(&a, &no_nonce, NOW).err(), Some("missing_nonce"));
    let no_created = signed(ALL, ";nonce=\"r10\";keyid=\"k1\"", SECRET, b"{}");
    assert_eq!(run(&a, &no_created, NOW).err(), Some("missing_created"));
    let expired = signed(ALL, &format!("{};expires={}", params("r11"), NOW + 10), SECRET, b"{}");
    assert_eq!(run(&a, &expired, NOW + 11).err(), Some("expired_signature"));
    let absent = signed(r#""@method" "@target-uri" "content-digest" "x-absent""#, &params("r12"), SECRET, b"{}");
    assert_eq!(run(&a, &absent, NOW).err(), Some("component_absent"));
    // The refused attempts above did not burn their nonces.
    assert_eq!(run(&a, &ok("r4"), NOW).map(|_| ()), Ok(()));
    // An empty body needs no digest coverage.
    let empty = signed(r#""@method" "@target-uri""#, &params("r13"), SECRET, b"");
    assert_eq!(run(&a, &empty, NOW).map(|_| ()), Ok(()));
}

#[test]
fn label_and_tag_select_the_signature() {
    let a = auth("tag: app\n");
    let untagged = signed(ALL, &params("t1"), SECRET, b"{}");
    assert_eq!(run(&a, &untagged, NOW).err(), Some("no_matching_signature"));
    let tagged = signed(ALL, &format!("{};tag=\"app\"", params("t2")), SECRET, b"{}");
    assert_eq!(run(&a, &tagged, NOW).map(|_| ()), Ok(()));
    let a = auth("label: other\n");
    assert_eq!(run(&a, &signed(ALL, &params("t3"), SECRET, b"{}"), NOW).err(), Some("no_matching_signature"));
}

#[test]
fn headers_decide_absent_or_invalid() {
    let a = auth("");
    let conn = ConnInfo::new(0, "127.0.0.1:1".parse().unwrap(), None);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let verdict = |parts: &http::request::Parts| {
        let req = AuthRequest { parts, conn: &conn, client_ip: conn.peer.ip() };
        rt.block_on(a.check(&req)).0
    };
    let bare = http::Request::get("/").body(()).unwrap().into_parts().0;
    assert!(matches!(verdict(&bare), Verdict::Absent));
    let mut half = bare.clone();
    half.headers.insert("signature", "sig1=:AA==:".parse().unwrap());
    assert!(matches!(verdict(&half), Verdict::Invalid("malformed_signature")));
    let mut binary = half.clone();
    binary.headers.insert("signature-input", http::HeaderValue::from_bytes(b"sig1=(\xff)").unwrap());
    assert!(matches!(verdict(&binary), Verdict::Invalid("malformed_signature")));
}

#[test]
fn config_errors() {
    let compile = |yaml: &str| {
        serde_yaml_ng::from_str::<SignatureConfig>(yaml)
            .map_err(|e| e.to_string())
            .and_then(|c| SignatureAuth::new("cfg", &c, &Default::default(), None).map(|_| ()))
    };
    assert!(compile("keys: {}").is_err());
    assert!(compile("keys: { a: { alg: hmac-sha256, secret: short } }").is_err());
    assert!(compile(&format!("keys: {{ a: {{ alg: hmac-sha256, secret: {SECRET}, public_key: x }} }}")).is_err());
    assert!(compile("keys: { a: { alg: ed25519, public_key: AAAA } }").is_err());
    assert!(compile("keys: { a: { alg: ed25519 } }").is_err());
    assert!(compile("keys: { a: { alg: ed25519, public_key_file: /nonexistent.pem } }").is_err());
    assert!(compile("keys: { a: { alg: rsa-pss-sha512, public_key: AAAA } }").is_err());
    let ok = "keys: { a: { alg: ed25519, public_key: JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs= } }";
    assert!(compile(ok).is_ok());
    assert!(compile(&format!("{ok}\nmax_skew: 2h")).is_err());
    assert!(compile(&format!("{ok}\nrequired_components: [\"@status\"]")).is_err());
    assert!(compile(&format!("{ok}\nreplay_capacity: 0")).is_err());
    assert!(compile(&format!("{ok}\nunknown: 1")).is_err());
}
