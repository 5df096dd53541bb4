//! Response protection through the real binary: security headers on every answer (proxied and the
//! gateway's own), their overrides, upstream error scrubbing, JSON-only routes, and data-loss masking
//! (whole, chunked, oversized, compressed, HEAD, HTTP/2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "respond-test-server-secret-0123456789abcdef";
const T: Duration = Duration::from_secs(10);

/// An HTTP/1.1 upstream written on raw sockets, so a test says every byte of the answer (chunked,
/// compressed, HTML, leaking headers). It answers by the last path segment and records request heads.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let seen = seen2.clone();
                std::thread::spawn(move || serve(s, &seen));
            }
        });
        RawUpstream { addr, seen, stop }
    }

    fn heads(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut s: TcpStream, seen: &Mutex<Vec<String>>) {
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
    seen.lock().unwrap().push(head);
    let name = path.rsplit('/').next().unwrap_or("").to_owned();
    let _ = s.write_all(&answer(&name, method == "HEAD"));
    let _ = s.flush();
}

const PII: &str = r#"{"name":"Ann O'Brien","card":"4111 1111 1111 1111","bad_card":"4111111111111112","ssn":"123-45-6789","iban":"DE89 3704 0044 0532 0130 00","aws":"AKIAIOSFODNN7EXAMPLE","key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n","test_card":"4111111111111111","order":12345,"pan":5500005555555559}"#;

fn reply(status: &str, headers: &[(&str, &str)], body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn chunked(pieces: &[&str]) -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for p in pieces {
        out.extend_from_slice(format!("{:x}\r\n{p}\r\n", p.len()).as_bytes());
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn big_json(n: usize) -> String {
    format!("{{\"pad\":\"{}\",\"card\":\"4111111111111111\"}}", "x".repeat(n))
}

fn answer(name: &str, head: bool) -> Vec<u8> {
    const JSON: (&str, &str) = ("content-type", "application/json");
    match name {
        "json" => reply("200 OK", &[JSON, ("etag", "\"v1\"")], br#"{"ok":true,"card":"4111111111111111"}"#, head),
        "html" => reply("200 OK", &[("content-type", "text/html")], b"<script>alert(document.cookie)</script>", head),
        "noct" => reply("200 OK", &[], b"<b>hi</b>", head),
        "nocontent" => b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec(),
        "problem" => {
            reply("404 Not Found", &[("content-type", "application/problem+json")], br#"{"status":404}"#, head)
        }
        "trace" => reply(
            "500 Internal Server Error",
            &[("content-type", "text/html"), ("x-aspnet-version", "4.0.30319"), ("x-debug-token", "abc123")],
            b"java.lang.NullPointerException at com.acme.Orders.find(Orders.java:42) SELECT * FROM users",
            head,
        ),
        "unavailable" => reply("503 Service Unavailable", &[("retry-after", "7"), JSON], br#"{"db":"down"}"#, head),
        "cached" => reply(
            "200 OK",
            &[JSON, ("cache-control", "max-age=60"), ("content-security-policy", "default-src 'self'")],
            b"{}",
            head,
        ),
        "pii" => reply("200 OK", &[JSON, ("etag", "\"abc\""), ("content-md5", "x")], PII.as_bytes(), head),
        "chunked" => chunked(&[r#"{"a":"card 4111 11"#, r#"11 1111 1111 end","ssn":"123-"#, r#"45-6789"}"#]),
        "big" => reply("200 OK", &[JSON], big_json(100 * 1024).as_bytes(), head),
        "bigchunked" => {
            let pad = "y".repeat(16 * 1024);
            let pieces: Vec<String> = (0..8).map(|_| pad.clone()).collect();
            let mut all = vec!["{\"pad\":\""];
            all.extend(pieces.iter().map(String::as_str));
            all.push("\"}");
            chunked(&all)
        }
        "redirect" => reply(
            "303 See Other",
            &[("location", "/json/json"), ("content-type", "text/html")],
            b"<a href=x>x</a>",
            head,
        ),
        "gzip" => reply("200 OK", &[JSON, ("content-encoding", "gzip")], b"\x1f\x8b\x08\x00garbage", head),
        "malformed" => reply("200 OK", &[JSON], br#"{"card":"4111111111111111""#, head),
        "debug" => {
            reply("200 OK", &[JSON, ("x-debug-token-link", "/_profiler/abc"), ("x-runtime", "0.1")], b"{}", head)
        }
        _ => reply("200 OK", &[JSON], b"{}", head),
    }
}

fn config(up: SocketAddr, top: &str) -> String {
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
  sso:
    jwt:
      issuer: https://idp.test
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {SECRET}
{top}
routes:
  - name: plain
    match: {{ path: {{ prefix: /plain }} }}
    upstream: app
    auth: none
  - name: authed
    match: {{ path: {{ prefix: /authed }} }}
    upstream: app
    auth: sso
    authorize: authenticated
  - name: json
    match: {{ path: {{ prefix: /json }} }}
    upstream: app
    auth: none
    respond: {{ json: true }}
  - name: raw
    match: {{ path: {{ prefix: /raw }} }}
    upstream: app
    auth: none
    respond:
      scrub_errors: false
      security_headers:
        content_security_policy: "default-src 'self'"
        referrer_policy: null
  - name: masked
    match: {{ path: {{ prefix: /masked }} }}
    upstream: app
    auth: none
    respond:
      json: true
      max_body_bytes: 64KiB
      mask: {{ cards: true, ssn: true, iban: true, private_keys: true, cloud_keys: true, allow: [/test_card] }}
logging:
  level: info
"#
    )
}

fn token() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    hs256(
        SECRET,
        &serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": "u1", "iat": now, "exp": now + 600}),
    )
}

fn get(gw: &Gateway, path: &str, extra: &[&str]) -> (u16, String, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let mut args: Vec<&str> = extra.to_vec();
    args.push(&url);
    let (code, headers, body) = curl(&args);
    (code, headers.to_ascii_lowercase(), body)
}

fn has(headers: &str, line: &str) -> bool {
    headers.lines().any(|l| l.trim_end() == line)
}

fn assert_defaults(headers: &str) {
    assert!(has(headers, "x-content-type-options: nosniff"), "{headers}");
    assert!(has(headers, "content-security-policy: default-src 'none'; frame-ancestors 'none'"), "{headers}");
    assert!(has(headers, "referrer-policy: no-referrer"), "{headers}");
}

#[test]
fn default_security_headers_on_proxied_and_refused_answers() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    let (code, h, _) = get(&gw, "/plain/json", &[]);
    assert_eq!(code, 200);
    assert_defaults(&h);
    // Unauthenticated, and the upstream said nothing: no Cache-Control is invented.
    assert!(!h.contains("cache-control"), "{h}");
    for path in ["/nowhere", "/authed/json"] {
        let (code, h, body) = get(&gw, path, &[]);
        assert!(code == 404 || code == 401, "{code} {body}");
        assert_defaults(&h);
        assert!(has(&h, "cache-control: no-store"), "{h}");
    }
    // A head the framer refuses never reaches the pipeline: its answer has them too.
    let resp = raw(
        gw.addr("main"),
        b"POST /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        T,
    );
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(header_of(&resp, "x-content-type-options").as_deref(), Some("nosniff"), "{resp}");
    assert_eq!(header_of(&resp, "referrer-policy").as_deref(), Some("no-referrer"), "{resp}");
    // HTTP/2 answers too.
    let (code, h, _) = get(&gw, "/plain/json", &["--http2-prior-knowledge"]);
    assert_eq!(code, 200);
    assert_defaults(&h);
}

#[test]
fn authenticated_answers_are_not_stored_unless_the_upstream_says_how() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    let auth = format!("Authorization: Bearer {}", token());
    let (code, h, _) = get(&gw, "/authed/json", &["-H", &auth]);
    assert_eq!(code, 200);
    assert!(has(&h, "cache-control: no-store"), "{h}");
    assert_defaults(&h);
    // The upstream's own Cache-Control and CSP are its decision.
    let (code, h, _) = get(&gw, "/authed/cached", &["-H", &auth]);
    assert_eq!(code, 200);
    assert!(has(&h, "cache-control: max-age=60") && !h.contains("no-store"), "{h}");
    assert!(has(&h, "content-security-policy: default-src 'self'"), "{h}");
    assert_eq!(h.matches("content-security-policy").count(), 1, "{h}");
}

#[test]
fn security_headers_overridden_per_route_and_globally() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    let (code, h, _) = get(&gw, "/raw/json", &[]);
    assert_eq!(code, 200);
    assert!(has(&h, "content-security-policy: default-src 'self'"), "{h}");
    assert!(!h.contains("referrer-policy"), "{h}");
    assert!(has(&h, "x-content-type-options: nosniff"), "{h}");
    drop(gw);

    let top =
        "respond:\n  security_headers:\n    x_content_type_options: false\n    referrer_policy: same-origin\n    \
               cache_control: \"private, no-store\"\n    replace_upstream: true\n";
    let gw = Gateway::start(&config(up.addr, top));
    let (code, h, _) = get(&gw, "/nowhere", &[]);
    assert_eq!(code, 404);
    assert!(!h.contains("x-content-type-options"), "{h}");
    assert!(has(&h, "referrer-policy: same-origin"), "{h}");
    // The route's own CSP still wins on its route; replace_upstream is inherited.
    let (_, h, _) = get(&gw, "/raw/json", &[]);
    assert!(has(&h, "content-security-policy: default-src 'self'") && !h.contains("referrer-policy"), "{h}");
    let auth = format!("Authorization: Bearer {}", token());
    let (_, h, _) = get(&gw, "/authed/cached", &["-H", &auth]);
    assert!(has(&h, "cache-control: private, no-store"), "replace_upstream: {h}");
    assert!(has(&h, "content-security-policy: default-src 'none'; frame-ancestors 'none'"), "{h}");

    // Unknown keys are refused at load.
    let bad = config(up.addr, "respond:\n  security_headers:\n    referer_policy: x\n");
    let dir = TempDir::new();
    let file = dir.write("bad.yaml", &bad);
    let (code, _, err) = portcullis(&["check", "-c", &path_str(&file)], &[]);
    assert_ne!(code, 0, "{err}");
    // Masking without `json: true` is valid, and warned about; `check` prints the response side.
    let lax = config(up.addr, "").replace("      json: true\n      max_body_bytes", "      max_body_bytes");
    let file = dir.write("lax.yaml", &lax);
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&file)], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("route `masked` masks JSON answers but does not say"), "{out}{err}");
    assert!(
        out.contains("-> data-loss-masking[cards, ssn, iban, private_keys, cloud_keys] -> error-scrubbing[5xx]"),
        "{out}"
    );
}

#[test]
fn upstream_errors_are_scrubbed_and_leaking_headers_dropped() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    for proto in [&[][..], &["--http2-prior-knowledge"][..]] {
        let (code, h, body) = get(&gw, "/plain/trace", proto);
        assert_eq!(code, 500, "{body}");
        assert_eq!(problem_type(&body), problem("upstream-error"), "{body}");
        assert!(!body.contains("NullPointer") && !body.contains("SELECT"), "{body}");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["status"], 500);
        assert!(doc["request_id"].as_str().is_some_and(|id| h.contains(&format!("x-request-id: {id}"))), "{h}");
        assert!(has(&h, "content-type: application/problem+json"), "{h}");
        assert!(!h.contains("x-aspnet-version") && !h.contains("x-debug-token"), "{h}");
        assert_defaults(&h);
    }
    let (code, h, body) = get(&gw, "/plain/unavailable", &[]);
    assert_eq!(code, 503);
    assert_eq!(problem_type(&body), problem("upstream-error"));
    assert!(has(&h, "retry-after: 7"), "{h}");
    // 2xx untouched, byte for byte (its ETag kept), and leaking headers dropped from it too.
    let (code, h, body) = get(&gw, "/plain/json", &[]);
    assert_eq!((code, body.as_str()), (200, r#"{"ok":true,"card":"4111111111111111"}"#));
    assert!(h.contains("etag: \"v1\""), "{h}");
    let (_, h, _) = get(&gw, "/plain/debug", &[]);
    assert!(!h.contains("x-debug-token-link") && !h.contains("x-runtime"), "{h}");
    // Opted out: the upstream's own error page passes, its debug headers still do not.
    let (code, h, body) = get(&gw, "/raw/trace", &[]);
    assert_eq!(code, 500);
    assert!(body.contains("NullPointerException"), "{body}");
    assert!(!h.contains("x-aspnet-version"), "{h}");
    // HEAD: the same status and problem head, no body.
    let (code, h, body) = get(&gw, "/plain/trace", &["-I"]);
    assert_eq!(code, 500);
    assert!(!body.contains('{'), "{body}");
    assert!(has(&h, "content-type: application/problem+json"), "{h}");
}

#[test]
fn json_routes_stay_json() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    for (path, extra) in
        [("/json/html", &[][..]), ("/json/noct", &[][..]), ("/json/html", &["--http2-prior-knowledge"][..])]
    {
        let (code, h, body) = get(&gw, path, extra);
        assert_eq!(code, 502, "{path}: {body}");
        assert_eq!(problem_type(&body), problem("bad-gateway"));
        assert!(!body.contains("<script>") && !body.contains("<b>"), "{body}");
        assert_defaults(&h);
    }
    let (code, _, body) = get(&gw, "/json/html", &["-I"]);
    assert_eq!(code, 502);
    assert!(!body.contains('{'), "{body}");
    assert!(gw.wait_log("non_json_answer", T), "the refusal is logged");
    let (code, _, body) = get(&gw, "/json/json", &[]);
    assert_eq!((code, body.as_str()), (200, r#"{"ok":true,"card":"4111111111111111"}"#));
    let (code, h, _) = get(&gw, "/json/problem", &[]);
    assert_eq!(code, 404);
    assert!(has(&h, "content-type: application/problem+json"), "{h}");
    let (code, _, body) = get(&gw, "/json/nocontent", &[]);
    assert_eq!((code, body.as_str()), (204, ""));
    // A redirect stays a redirect; its HTML body is dropped.
    let (code, h, body) = get(&gw, "/json/redirect", &[]);
    assert_eq!((code, body.as_str()), (303, ""));
    assert!(has(&h, "location: /json/json") && has(&h, "content-length: 0") && !h.contains("text/html"), "{h}");
    // A route that does not say it is JSON passes HTML through (with nosniff and the CSP).
    let (code, h, body) = get(&gw, "/plain/html", &[]);
    assert_eq!(code, 200);
    assert!(body.contains("<script>"));
    assert_defaults(&h);
}

fn masked_doc(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn sensitive_data_is_masked_in_json_answers() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    for extra in [&["-H", "Accept-Encoding: gzip, br", "-H", "Range: bytes=0-10"][..], &["--http2-prior-knowledge"][..]]
    {
        let (code, h, body) = get(&gw, "/masked/pii", extra);
        assert_eq!(code, 200, "{body}");
        let doc = masked_doc(&body);
        assert_eq!(doc["card"], "**** **** **** 1111");
        assert_eq!(doc["bad_card"], "4111111111111112", "an invalid Luhn is no card");
        assert_eq!(doc["ssn"], "***-**-6789");
        assert_eq!(doc["iban"], "DE** **** **** **** **30 00");
        assert_eq!(doc["aws"], "AKIA************MPLE");
        assert_eq!(doc["key"], "-----BEGIN PRIVATE KEY-----\n[REDACTED]\n-----END PRIVATE KEY-----\n");
        assert_eq!(doc["test_card"], "4111111111111111", "allowlisted");
        assert_eq!(doc["pan"], "************5559", "an integer card number becomes its masked string");
        assert_eq!(doc["name"], "Ann O'Brien");
        assert_eq!(doc["order"], 12345);
        assert!(body.starts_with(r#"{"name":"Ann O'Brien","card":"#), "key order and spelling kept: {body}");
        assert!(!h.contains("etag") && !h.contains("content-md5"), "{h}");
        if extra.len() > 1 {
            assert!(has(&h, &format!("content-length: {}", body.len())), "{h}");
        }
    }
    // The upstream was asked for the whole document, uncompressed.
    for head in up.heads() {
        let head = head.to_ascii_lowercase();
        assert!(!head.contains("accept-encoding") && !head.contains("range:"), "{head}");
    }
    assert!(gw.wait_log("dlp_masked", T));
    // A clean answer keeps its bytes and ETag.
    let (_, h, body) = get(&gw, "/masked/cached", &[]);
    assert_eq!(body, "{}");
    assert!(has(&h, "content-length: 2"), "{h}");
}

#[test]
fn chunked_answers_are_masked_across_chunks() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    let (code, _, body) = get(&gw, "/masked/chunked", &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, r#"{"a":"card **** **** **** 1111 end","ssn":"***-**-6789"}"#);
}

#[test]
fn answers_that_cannot_be_masked_are_withheld() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    // Over respond.max_body_bytes (64 KiB): by Content-Length, and chunked (counted as read).
    for path in ["/masked/big", "/masked/bigchunked", "/masked/gzip", "/masked/malformed"] {
        let (code, _, body) = get(&gw, path, &[]);
        assert_eq!(code, 502, "{path}: {body}");
        assert_eq!(problem_type(&body), problem("bad-gateway"), "{path}");
        assert!(!body.contains("4111"), "{body}");
    }
    assert!(gw.wait_log("dlp_withheld", T));
    // A route without masking streams the same answer untouched.
    let (code, _, body) = get(&gw, "/plain/big", &[]);
    assert_eq!(code, 200);
    assert_eq!(body, big_json(100 * 1024));
}

#[test]
fn head_on_a_masked_route_is_answered_from_the_head() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&config(up.addr, ""));
    // curl -I prints the head where the body would be: no body follows it.
    let (code, h, body) = get(&gw, "/masked/pii", &["-I"]);
    assert_eq!(code, 200);
    assert!(!body.contains('{'), "{body}");
    assert!(has(&h, &format!("content-length: {}", PII.len())), "{h}");
    let (code, _, _) = get(&gw, "/masked/pii", &["-I", "--http2-prior-knowledge"]);
    assert_eq!(code, 200);
}
