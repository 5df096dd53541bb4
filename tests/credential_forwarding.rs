#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What of the client's credentials reaches the upstream: only the credential of a method that accepted
//! the request, and only when that method says `forward_credential: true`. Every other credential a
//! method of the route reads (an API key, a bearer token, a token cookie, the signature fields) is
//! removed, whichever method decided: an `any_of` route stops at the first method that accepts, so the
//! others were never verified. Checked with a recording upstream through the real binary.
#[allow(unreachable_pub)]
mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::json;

const HMAC_ENV: &str = "PORTCULLIS_TEST_FWD_HMAC";
const HMAC: &str = "forwarding-test-server-secret-5d2c7e19a4b3";
const JWT_SECRET: &str = "forwarding-test-jwt-secret-0123456789abcdef";
const ISSUER: &str = "https://idp.test";

fn config(up: std::net::SocketAddr, store: &std::path::Path) -> String {
    let jwt = |extra: &str| {
        format!(
            "    jwt:\n      issuer: {ISSUER}\n      audiences: [api]\n      algorithms: [HS256]\n      hmac_secret: {JWT_SECRET}\n{extra}"
        )
    };
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HMAC_ENV}}}
      store: {store}
      query_param: api_key
  sso:
{sso}
  sso-fwd:
{sso_fwd}
  sso-cookie:
{sso_cookie}
  sso-cookie-fwd:
{sso_cookie_fwd}
  signed:
    signature:
      keys:
        k1: {{ alg: hmac-sha256, secret: {JWT_SECRET} }}
routes:
  - name: any
    match: {{ path: {{ prefix: /any }} }}
    upstream: app
    auth: {{ any_of: [keys, sso, signed] }}
    authorize: authenticated
  - name: all
    match: {{ path: {{ prefix: /all }} }}
    upstream: app
    auth: {{ all_of: [keys, sso] }}
    authorize: authenticated
  - name: fwd
    match: {{ path: {{ prefix: /fwd }} }}
    upstream: app
    auth: {{ any_of: [keys, sso-fwd] }}
    authorize: authenticated
  - name: cookie-fwd
    match: {{ path: {{ prefix: /cookie-fwd }} }}
    upstream: app
    auth: {{ any_of: [keys, sso-cookie-fwd] }}
    authorize: authenticated
  - name: cookie
    match: {{ path: {{ prefix: /cookie }} }}
    upstream: app
    auth: {{ any_of: [keys, sso-cookie] }}
    authorize: authenticated
logging:
  level: info
"#,
        store = path_str(store),
        sso = jwt(""),
        sso_fwd = jwt("      forward_credential: true\n"),
        sso_cookie = jwt("      cookie: at\n"),
        sso_cookie_fwd = jwt("      cookie: at\n      forward_credential: true\n"),
    )
}

fn jwt() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let claims = json!({"iss": ISSUER, "aud": "api", "sub": "alice", "iat": now, "exp": now + 600});
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
}

struct Setup {
    up: Upstream,
    gw: Gateway,
    key: String,
    _dir: TempDir,
}

fn start() -> Setup {
    let dir = TempDir::new();
    let up = Upstream::start("app");
    let yaml = config(up.addr, &dir.path("keys.db"));
    let cfg = dir.write("cli.yaml", &yaml);
    let (code, key, err) =
        portcullis(&["keys", "-c", cfg.to_str().unwrap(), "create", "--principal", "p"], &[(HMAC_ENV, HMAC)]);
    assert_eq!(code, 0, "{err}");
    let gw = Gateway::start_with_env(&yaml, &[(HMAC_ENV, HMAC)]);
    Setup { up, gw, key: key.trim().to_owned(), _dir: dir }
}

/// Sends `path` with `headers`; expects `status`; returns what the upstream saw (when it was reached).
fn send(s: &Setup, path: &str, headers: &[String], status: u16) -> Option<Seen> {
    send_with(s, &[], path, headers, status)
}

fn send_with(s: &Setup, curl_args: &[&str], path: &str, headers: &[String], status: u16) -> Option<Seen> {
    let hits = s.up.hits();
    let url = format!("http://{}{path}", s.gw.addr("main"));
    let mut args = curl_args.to_vec();
    args.push(url.as_str());
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    let (code, h, b) = curl(&args);
    assert_eq!(code, status, "{path} {headers:?}: {h}{b}");
    if status != 200 {
        assert_eq!(s.up.hits(), hits, "a refused request reached the upstream");
        return None;
    }
    assert_eq!(s.up.hits(), hits + 1);
    s.up.last()
}

fn lines<'a>(seen: &'a Seen, name: &str) -> Vec<&'a str> {
    seen.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
}

const SIGNATURE: &str = "Signature: sig1=:AAAA:";
const SIGNATURE_INPUT: &str = "Signature-Input: sig1=(\"@method\");created=1;keyid=\"k1\";nonce=\"n\"";

#[test]
fn any_of_forwards_no_credential_beside_the_accepted_one() {
    let s = start();
    let key = format!("X-API-Key: {}", s.key);
    // An API key decides; an unverified bearer token and signature fields ride along.
    let junk = [key.clone(), "Authorization: Bearer junk.junk.junk".into(), SIGNATURE.into(), SIGNATURE_INPUT.into()];
    let seen = send(&s, "/any", &junk, 200).unwrap();
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("api_key"));
    for name in ["x-api-key", "authorization", "signature", "signature-input"] {
        assert!(lines(&seen, name).is_empty(), "{name} reached the upstream: {:?}", seen.headers);
    }
    // Names that fold onto a credential field for CGI-style upstreams are that field.
    let folded =
        [key.clone(), "X_Api_Key: pcs_other".into(), "X-Api_Key: pcs_other".into(), "Signature_Input: x".into()];
    let seen = send(&s, "/any", &folded, 200).unwrap();
    let names: Vec<&str> = seen.headers.iter().map(|(k, _)| k.as_str()).collect();
    for name in ["x_api_key", "x-api_key", "signature_input"] {
        assert!(!names.contains(&name), "{name} reached the upstream: {names:?}");
    }
    // Other spellings of the scheme, and several lines: every line goes, of a known scheme and of one no
    // method of the route reads (Basic): nobody judged it (see an_authorization_scheme_no_method_reads...).
    let spelled = [key.clone(), "authorization: bEaReR\tjunk".into(), "Authorization: Basic dTpw".into()];
    let seen = send(&s, "/any", &spelled, 200).unwrap();
    assert!(lines(&seen, "authorization").is_empty(), "{:?}", seen.headers);
    // The key in the query string, a bearer token beside it.
    let seen = send(&s, &format!("/any?x=1&api_key={}", s.key), &["Authorization: Bearer junk".into()], 200).unwrap();
    assert_eq!(seen.path_and_query, "/any?x=1");
    assert!(lines(&seen, "authorization").is_empty());
    // A percent-encoded spelling of the parameter's name beside the key is removed too.
    let seen = send(&s, &format!("/any?api%5Fkey=pcs_other&x=1&api_key={}", s.key), &[], 200).unwrap();
    assert_eq!(seen.path_and_query, "/any?x=1");
    // HTTP/2, HEAD included: the same.
    for method in ["GET", "HEAD"] {
        let h2 = ["--http2-prior-knowledge", "-X", method];
        let junk = [key.clone(), "Authorization: Bearer junk".into(), "Cookie: a=1".into(), SIGNATURE.into()];
        let seen = send_with(&s, &h2, "/any", &junk, 200).unwrap();
        assert_eq!(seen.method, method);
        for name in ["x-api-key", "authorization", "signature"] {
            assert!(lines(&seen, name).is_empty(), "{name} reached the upstream over HTTP/2");
        }
    }
    // A JWT decides: the token itself is not forwarded either (no `forward_credential`).
    let seen = send(&s, "/any", &[format!("Authorization: Bearer {}", jwt())], 200).unwrap();
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("jwt"));
    assert!(lines(&seen, "authorization").is_empty());
    // A bad credential beside a good one is still refused (checked before the JWT).
    send(&s, "/any", &["X-API-Key: pcs_nope".into(), format!("Authorization: Bearer {}", jwt())], 401);
}

/// Found in review: on a route whose methods read no `Basic` (or, for the API key route, no `Bearer`),
/// such a line was judged by nobody, yet reached the upstream beside the gateway's identity fields.
#[test]
fn an_authorization_scheme_no_method_reads_is_not_forwarded() {
    let s = start();
    let key = format!("X-API-Key: {}", s.key);
    for (path, extra) in [
        ("/any", "Authorization: Basic ZXZpbDpldmls"),
        ("/fwd", "Authorization: Basic ZXZpbDpldmls"),
        ("/cookie", "Authorization: Basic ZXZpbDpldmls"),
        ("/cookie", "Authorization: Bearer not.judged.here"),
    ] {
        let headers = vec![key.clone(), extra.to_owned()];
        let seen = send(&s, path, &headers, 200).unwrap();
        assert!(lines(&seen, "authorization").is_empty(), "{path}: {:?}", seen.headers);
    }
    // A method that forwards keeps its own scheme (two Authorization lines beside a bearer token are
    // refused by the JWT method itself: which one would it be?).
    let seen = send(&s, "/fwd", &[format!("Authorization: Bearer {}", jwt())], 200).unwrap();
    assert_eq!(lines(&seen, "authorization").len(), 1, "{:?}", seen.headers);
    send(&s, "/fwd", &[format!("Authorization: Bearer {}", jwt()), "Authorization: Basic eA==".into()], 401);
}

#[test]
fn all_of_forwards_neither_credential() {
    let s = start();
    let both = [format!("X-API-Key: {}", s.key), format!("Authorization: Bearer {}", jwt()), SIGNATURE.into()];
    let seen = send(&s, "/all", &both, 200).unwrap();
    for name in ["x-api-key", "authorization"] {
        assert!(lines(&seen, name).is_empty(), "{name} reached the upstream");
    }
    // `signed` is not a method of this route: its fields are the upstream's business.
    assert_eq!(lines(&seen, "signature"), ["sig1=:AAAA:"]);
}

#[test]
fn only_an_accepted_credential_is_forwarded_and_only_where_configured() {
    let s = start();
    let token = jwt();
    let seen = send(&s, "/fwd", &[format!("Authorization: Bearer {token}")], 200).unwrap();
    assert_eq!(lines(&seen, "authorization"), [format!("Bearer {token}")], "forward_credential: true");
    // The API key decided: the bearer token beside it was never verified, so it is not forwarded.
    let seen = send(&s, "/fwd", &[format!("X-API-Key: {}", s.key), "Authorization: Bearer junk".into()], 200).unwrap();
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("api_key"));
    assert!(lines(&seen, "authorization").is_empty(), "{:?}", seen.headers);
}

#[test]
fn token_cookies_are_removed_pair_by_pair() {
    let s = start();
    let key = format!("X-API-Key: {}", s.key);
    let headers = [key, "Cookie: a=1; at=junk; b=2".into(), "Authorization: Bearer junk".into()];
    let seen = send(&s, "/cookie", &headers, 200).unwrap();
    assert_eq!(lines(&seen, "cookie"), ["a=1; b=2"]);
    assert!(lines(&seen, "authorization").is_empty());
    let seen = send(&s, "/cookie", &[format!("Cookie: at={}; theme=dark", jwt())], 200).unwrap();
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("jwt"));
    assert_eq!(lines(&seen, "cookie"), ["theme=dark"]);
    // Forwarding the accepted cookie does not forward a bearer token beside it (the method reads the
    // cookie, not `Authorization`).
    let token = jwt();
    let headers = [format!("Cookie: at={token}"), "Authorization: Bearer junk".into()];
    let seen = send(&s, "/cookie-fwd", &headers, 200).unwrap();
    assert_eq!(lines(&seen, "cookie"), [format!("at={token}")]);
    assert!(lines(&seen, "authorization").is_empty());
}
