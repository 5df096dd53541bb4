#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The request boundary's header rules through the real binary: the client address read from the
//! forwarding chain (from the right), header names with `_`, `Connection` naming fields the gateway
//! relies on, and `Expect` answered at the gateway.
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);
const HMAC_ENV: &str = "PORTCULLIS_TEST_FWD_HMAC";
const HMAC: &str = "forwarding-test-server-secret-5c1e9a7b3d";

/// One listener (`listener_extra` lines under it), `top` at the top level, `/open` public and `/keyed`
/// behind an API key from `store`.
fn config(up: SocketAddr, store: &Path, listener_extra: &str, top: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
{listener_extra}
{top}
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HMAC_ENV}}}
      store: {store}
      refresh_interval: 200ms
routes:
  - name: keyed
    match:
      path: {{ prefix: /keyed }}
    upstream: app
    auth: keys
    authorize: authenticated
  - name: open
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: none
logging:
  level: info
  access_log: true
admin:
  address: 127.0.0.1:0
"#,
        store = path_str(store)
    )
}

struct Setup {
    up: Upstream,
    gw: Gateway,
    dir: TempDir,
}

fn start(listener_extra: &str, top: &str) -> Setup {
    let dir = TempDir::new();
    let up = Upstream::start("fwd");
    let gw = Gateway::start_with_env(&config(up.addr, &dir.path("keys.db"), listener_extra, top), &[(HMAC_ENV, HMAC)]);
    Setup { up, gw, dir }
}

fn send(gw: &Gateway, request: &str) -> String {
    raw(gw.addr("main"), request.as_bytes(), T)
}

/// The access log line of the request with `x-request-id: id`.
fn logged(gw: &Gateway, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        if let Some(l) = gw.access_log().into_iter().find(|l| l.to_string().contains(id)) {
            return l;
        }
        assert!(Instant::now() < deadline, "no access log line for {id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Found by fuzzing the walk: bytes that are not visible ASCII anywhere in the line used to make the whole
/// line unreadable, so the client became the trusted proxy itself, an address a key may well allow.
#[test]
fn a_non_ascii_entry_does_not_make_the_client_the_proxy() {
    let s = start("", "trusted_proxies: [127.0.0.1/32]");
    let key = {
        let config = s.gw.config.to_str().unwrap().to_owned();
        let args = ["keys", "-c", &config, "create", "--principal", "lb", "--cidr", "127.0.0.1"];
        let (code, out, err) = portcullis(&args, &[(HMAC_ENV, HMAC)]);
        assert_eq!(code, 0, "{err}");
        out.trim().to_owned()
    };
    let keyed = |xff: &[u8], id: &str| {
        let mut req =
            format!("GET /keyed HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\nX-Request-Id: {id}\r\n").into_bytes();
        req.extend_from_slice(xff);
        req.extend_from_slice(b"\r\n");
        raw(s.gw.addr("main"), &req, T)
    };
    // From the proxy itself (no chain), the key works once the store is read.
    let deadline = Instant::now() + T;
    while status_of(&keyed(b"", "warm")) != 200 {
        assert!(Instant::now() < deadline, "the key never worked from the proxy's address");
        std::thread::sleep(Duration::from_millis(50));
    }
    let hits = s.up.hits();
    for (n, xff) in [&b"X-Forwarded-For: \xcf\x90, 203.0.113.9\r\n"[..], b"X-Forwarded-For: ee\xff-,203.0.113.9\r\n"]
        .iter()
        .enumerate()
    {
        let resp = keyed(xff, &format!("obs{n}"));
        assert_eq!(status_of(&resp), 401, "{resp}");
        assert_eq!(logged(&s.gw, &format!("obs{n}"))["client_ip"], "203.0.113.9");
    }
    assert_eq!(s.up.hits(), hits, "a refused request reached the upstream");
    drop(s.dir);
}

#[test]
fn the_client_is_read_from_the_right_of_the_chain() {
    let s = start("", "trusted_proxies: [127.0.0.1/32]");
    let key = {
        let config = s.gw.config.to_str().unwrap().to_owned();
        let args = ["keys", "-c", &config, "create", "--principal", "lan", "--cidr", "10.0.0.0/8"];
        let (code, out, err) = portcullis(&args, &[(HMAC_ENV, HMAC)]);
        assert_eq!(code, 0, "{err}");
        out.trim().to_owned()
    };
    let keyed = |xff: &str, id: &str| {
        send(&s.gw, &format!("GET /keyed HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\nX-Request-Id: {id}\r\n{xff}\r\n"))
    };
    // A client inside 10/8 (as the trusted proxy says) gets in, once the store is read.
    let deadline = Instant::now() + T;
    while status_of(&keyed("X-Forwarded-For: 203.0.113.9, 10.1.2.3\r\n", "warm")) != 200 {
        assert!(Instant::now() < deadline, "the key never worked from 10.1.2.3");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(logged(&s.gw, "warm")["client_ip"], "10.1.2.3");
    // The issue's chain: the untrusted 203.0.113.9 is the client; what it wrote to its left is not read.
    let hits = s.up.hits();
    for (n, xff) in [
        "X-Forwarded-For: 10.1.2.3, x, 203.0.113.9\r\n",
        "X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-For: 203.0.113.9\r\n",
        "X-Forwarded-For: 10.1.2.3, 203.0.113.9:4711\r\n",
    ]
    .iter()
    .enumerate()
    {
        let resp = keyed(xff, &format!("spoof{n}"));
        assert_eq!(status_of(&resp), 401, "{xff}: {resp}");
        assert_eq!(logged(&s.gw, &format!("spoof{n}"))["client_ip"], "203.0.113.9", "{xff}");
    }
    assert_eq!(s.up.hits(), hits, "a refused request reached the upstream");
    // A malformed entry written by the peer ends trust there: the client is the peer itself.
    let resp = keyed("X-Forwarded-For: 10.1.2.3, junk\r\n", "junk");
    assert_eq!(status_of(&resp), 401, "{resp}");
    assert_eq!(logged(&s.gw, "junk")["client_ip"], "127.0.0.1");
    // The chain goes upstream extended with the peer, whatever was judged.
    let resp = send(&s.gw, "GET /open HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3, x, 203.0.113.9\r\n\r\n");
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(s.up.last().unwrap().header("x-forwarded-for"), Some("10.1.2.3, x, 203.0.113.9, 127.0.0.1"));
    drop(s.dir);
}

#[test]
fn forwarded_is_read_when_configured_and_only_then() {
    let s = start("", "trusted_proxies: [127.0.0.1/32]\nclient_ip_header: forwarded");
    let cases = [
        ("Forwarded: for=10.1.2.3, for=x, for=203.0.113.9", "203.0.113.9"),
        ("Forwarded: for=198.51.100.7;proto=https, for=\"[2001:db8::1]:443\"", "2001:db8::1"),
        ("Forwarded: for=198.51.100.7, for=unknown", "127.0.0.1"),
        ("Forwarded: for=198.51.100.7, for=_hidden", "127.0.0.1"),
        ("Forwarded: for=198.51.100.7\r\nForwarded: for=127.0.0.1", "198.51.100.7"),
        // The other header is not the chain here: a client can write it through any proxy.
        ("X-Forwarded-For: 198.51.100.7", "127.0.0.1"),
    ];
    for (n, (fields, client)) in cases.iter().enumerate() {
        let id = format!("fwd{n}");
        let resp = send(&s.gw, &format!("GET /open HTTP/1.1\r\nHost: a\r\nX-Request-Id: {id}\r\n{fields}\r\n\r\n"));
        assert_eq!(status_of(&resp), 200, "{fields}: {resp}");
        assert_eq!(logged(&s.gw, &id)["client_ip"], *client, "{fields}");
    }
    // A bad value is a config error pointing at the file.
    let dir = TempDir::new();
    let bad = dir.write("bad.yaml", &config(s.up.addr, &dir.path("k.db"), "", "client_ip_header: x-real-ip"));
    let (code, _, err) = portcullis(&["check", "-c", bad.to_str().unwrap()], &[(HMAC_ENV, HMAC)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad.yaml:"), "{err}");
}

/// Found in review after issue 9: `X-Real-IP` (which the underscore and `Connection` rules already treat
/// as a field only the gateway may decide on) and the `X-Forwarded-*` fields other than `-For`,
/// `-Proto` and `-Host` (`-Prefix`, `-Port`, `-Scheme`, ...) went upstream from any client, so an
/// upstream that reads them took the client's word for its address, scheme and path prefix.
const CLAIMS: &str = "X-Real-IP: 1.2.3.4\r\nX-Forwarded-Prefix: /admin\r\nX-Forwarded-Port: 443\r\n\
    X-Forwarded-Scheme: https\r\nX-Forwarded-Ssl: on\r\nTrue-Client-IP: 1.2.3.4\r\nX-Client-IP: 1.2.3.4\r\n\
    CF-Connecting-IP: 1.2.3.4\r\nX-Cluster-Client-IP: 1.2.3.4\r\nForwarded-For: 1.2.3.4\r\n\
    X-Original-Forwarded-For: 1.2.3.4\r\n";

#[test]
fn client_claims_are_dropped_unless_a_trusted_proxy_sent_them() {
    let s = start("", "");
    let resp = send(&s.gw, &format!("GET /open HTTP/1.1\r\nHost: a\r\n{CLAIMS}\r\n"));
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = s.up.last().unwrap();
    for name in [
        "x-real-ip",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
        "forwarded-for",
        "x-original-forwarded-for",
    ] {
        assert!(seen.header(name).is_none(), "{name} reached the upstream: {:?}", seen.headers);
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    // From a trusted proxy they are its word, and kept.
    let t = start("", "trusted_proxies: [127.0.0.1/32]");
    let resp = send(&t.gw, &format!("GET /open HTTP/1.1\r\nHost: a\r\n{CLAIMS}\r\n"));
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = t.up.last().unwrap();
    assert_eq!(seen.header("x-real-ip"), Some("1.2.3.4"));
    assert_eq!(seen.header("x-forwarded-prefix"), Some("/admin"));
}

/// Found in review: frameworks that route or act on these instead of the request line (Symfony and IIS
/// on `X-Original-URL` / `X-Rewrite-URL`, method-override middleware) would run a path or method the
/// gateway never judged. They never go upstream, from anyone.
#[test]
fn path_and_method_overrides_never_reach_the_upstream() {
    for trusted in ["", "trusted_proxies: [127.0.0.1/32]"] {
        let s = start("", trusted);
        let overrides = "X-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nX-HTTP-Method-Override: DELETE\r\n\
            X-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nx-original-url: /admin/y\r\n";
        let resp = send(&s.gw, &format!("GET /open HTTP/1.1\r\nHost: a\r\n{overrides}\r\n"));
        assert_eq!(status_of(&resp), 200, "{resp}");
        let seen = s.up.last().unwrap();
        for name in ["x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override"]
        {
            assert!(seen.header(name).is_none(), "{name} reached the upstream: {:?}", seen.headers);
        }
    }
}

/// Found in review: an HTTP/1.0 request without `Host` skipped every host-bound route and went upstream
/// as HTTP/1.1 without a host; a host with an empty label (`a..`) matched only routes for any host.
#[test]
fn requests_without_a_usable_host_are_refused() {
    let s = start("", "");
    let hits = s.up.hits();
    for req in [
        "GET /open HTTP/1.0\r\n\r\n",
        "GET /open HTTP/1.1\r\nHost: a..\r\n\r\n",
        "GET /open HTTP/1.1\r\nHost: .a\r\n\r\n",
        "GET /open HTTP/1.1\r\nHost: a..b:80\r\n\r\n",
    ] {
        let resp = send(&s.gw, req);
        assert_eq!(status_of(&resp), 400, "{req:?}: {resp}");
        assert_eq!(problem_type(body_of(&resp)), problem("bad-request"), "{resp}");
    }
    assert_eq!(s.up.hits(), hits, "a refused request reached the upstream");
    let resp = send(&s.gw, "GET /open HTTP/1.0\r\nHost: a.\r\n\r\n");
    assert_eq!(status_of(&resp), 200, "{resp}");
}

const UNDERSCORED: &str = "X_Portcullis_Roles: admin\r\nX_Forwarded_For: 1.2.3.4\r\nx_real_ip: 1.2.3.4\r\n\
    X_Request_Id: abc\r\nTransfer_Encoding: chunked\r\nX-Portcullis_Principal: root\r\nX_Custom: kept?\r\n";

#[test]
fn underscored_names_are_dropped_by_default() {
    let s = start("", "");
    let resp = send(&s.gw, &format!("GET /open HTTP/1.1\r\nHost: a\r\n{UNDERSCORED}\r\n"));
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = s.up.last().unwrap();
    let underscored: Vec<_> = seen.headers.iter().filter(|(k, _)| k.contains('_')).collect();
    assert!(underscored.is_empty(), "{underscored:?}");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(seen.header("x-portcullis-roles").is_none());
}

#[test]
fn underscored_names_over_h2c_are_dropped_too() {
    let s = start("    http2: true", "");
    let url = format!("http://{}/open", s.gw.addr("main"));
    let (code, _, body) = curl(&[
        "--http2-prior-knowledge",
        &url,
        "-H",
        "X_Portcullis_Roles: admin",
        "-H",
        "X_Forwarded_For: 1.2.3.4",
        "-H",
        "x_custom: 1",
    ]);
    assert_eq!(code, 200, "{body}");
    let seen = s.up.last().unwrap();
    assert!(seen.headers.iter().all(|(k, _)| !k.contains('_')), "{:?}", seen.headers);
}

#[test]
fn the_opt_in_keeps_other_names_but_never_protected_ones() {
    let s = start("    underscores_in_headers: true", "");
    let resp = send(&s.gw, &format!("GET /open HTTP/1.1\r\nHost: a\r\n{UNDERSCORED}\r\n"));
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = s.up.last().unwrap();
    let underscored: Vec<_> = seen.headers.iter().filter(|(k, _)| k.contains('_')).map(|(k, _)| k.as_str()).collect();
    assert_eq!(underscored, ["x_custom"], "{:?}", seen.headers);
    // Over h2c too (the same listener has no h2c here, so a second one).
    let s2 = start("    underscores_in_headers: true\n    http2: true", "");
    let url = format!("http://{}/open", s2.gw.addr("main"));
    let (code, _, body) =
        curl(&["--http2-prior-knowledge", &url, "-H", "X_Portcullis_Roles: admin", "-H", "x_custom: 1"]);
    assert_eq!(code, 200, "{body}");
    let seen = s2.up.last().unwrap();
    assert!(seen.header("x_portcullis_roles").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.header("x_custom"), Some("1"));
}

#[test]
fn connection_may_not_name_fields_the_gateway_relies_on() {
    let s = start("", "");
    for named in [
        "host",
        "Host",
        "content-length",
        "authorization",
        "cookie",
        "x-forwarded-for",
        "X-Forwarded-Proto",
        "forwarded",
        "x-real-ip",
        "x-request-id",
        "x-portcullis-roles",
        "x-api-key",
        "close, host",
    ] {
        let resp = send(&s.gw, &format!("GET /open HTTP/1.1\r\nHost: a\r\nConnection: {named}\r\n\r\n"));
        assert_eq!(status_of(&resp), 400, "Connection: {named}: {resp}");
        assert_eq!(problem_type(body_of(&resp)), problem("bad-request"), "{resp}");
    }
    // Split over two lines.
    let resp = send(&s.gw, "GET /open HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: Host\r\n\r\n");
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(s.up.hits(), 0, "a refused request reached the upstream");
    // Hop-by-hop options and private fields may still be named, and are removed.
    let resp =
        send(&s.gw, "GET /open HTTP/1.1\r\nHost: a\r\nConnection: te, x-hop\r\nTE: trailers\r\nX-Hop: 1\r\n\r\n");
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = s.up.last().unwrap();
    assert!(seen.header("x-hop").is_none() && seen.header("te").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.header("host"), Some("a"));
}

/// Reads from `s` until the text read contains `needle` (or `T` passes).
fn read_until(s: &mut std::net::TcpStream, needle: &str) -> String {
    use std::io::Read;
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn expect_is_answered_at_the_gateway_after_the_checks() {
    let s = start("", "");
    let addr = s.gw.addr("main");
    // Unauthenticated: 401 at once, never `100 Continue` first, and the body is never asked for.
    let mut c = RawConn::connect(addr);
    let resp = c.send(b"POST /keyed HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", T);
    assert_eq!(status_of(&resp), 401, "{resp}");
    assert!(!resp.contains("100 Continue"), "{resp}");
    // A client that sends the body anyway: it is skipped as a body, never read as a request.
    let body = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let req = format!(
        "POST /keyed HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{body}\
         GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (resp, _) = raw_until_close(addr, req.as_bytes(), T);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(!resp.contains("100 Continue"), "{resp}");
    let paths: Vec<String> = s.up.all_seen().into_iter().map(|r| r.path_and_query).collect();
    assert!(!paths.iter().any(|p| p == "/smuggled"), "{paths:?}");
    // Accepted: `100 Continue`, then the body goes through; the upstream never sees `Expect`.
    let mut c = RawConn::connect(addr);
    c.stream.write_all(b"POST /open HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let interim = read_until(&mut c.stream, "\r\n\r\n");
    assert!(interim.starts_with("HTTP/1.1 100 Continue\r\n"), "{interim}");
    c.stream.write_all(b"hello").unwrap();
    let resp = read_until(&mut c.stream, "\"body_bytes\":5}");
    assert!(resp.contains("HTTP/1.1 200"), "{resp}");
    let seen = s.up.last().unwrap();
    assert_eq!(seen.body, b"hello");
    assert!(seen.header("expect").is_none(), "{:?}", seen.headers);
    // Any other expectation: 417, nothing upstream.
    let hits = s.up.hits();
    for value in ["100-continue-please", "foo", "100-continue, foo"] {
        let resp =
            send(&s.gw, &format!("POST /open HTTP/1.1\r\nHost: a\r\nExpect: {value}\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(status_of(&resp), 417, "{value}: {resp}");
        assert_eq!(problem_type(body_of(&resp)), problem("expectation-failed"));
    }
    assert_eq!(s.up.hits(), hits);
    // HTTP/2 alike: the expectation is judged here, and `Expect` never goes upstream.
    let h2 = start("    http2: true", "");
    let url = format!("http://{}/open", h2.gw.addr("main"));
    // (No request body: a refusal sent before the body was read resets the stream, which curl may
    // report as an error when its upload is still under way.)
    let (code, _, body) = curl(&["--http2-prior-knowledge", "-H", "Expect: foo", &url]);
    assert_eq!(code, 417, "{body}");
    assert_eq!(h2.up.hits(), 0);
    let (code, _, body) = curl(&["--http2-prior-knowledge", "-H", "Expect: 100-continue", "-d", "hello", &url]);
    assert_eq!(code, 200, "{body}");
    let seen = h2.up.last().unwrap();
    assert_eq!(seen.body, b"hello");
    assert!(seen.header("expect").is_none(), "{:?}", seen.headers);
}

/// HTTP/2 clients (browsers) send each cookie as its own `cookie` field; RFC 9113 8.2.3 requires them
/// joined with `; ` before they go on in HTTP/1.1, where servers keep only one `Cookie` line or join
/// them with `,` (found in review: both lines went upstream as they came).
#[test]
fn cookie_lines_reach_the_upstream_as_one() {
    let s = start("    http2: true", "");
    let url = format!("http://{}/open", s.gw.addr("main"));
    let (code, _, body) = curl(&["--http2-prior-knowledge", &url, "-H", "Cookie: a=1", "-H", "Cookie: b=2; c=3"]);
    assert_eq!(code, 200, "{body}");
    let seen = s.up.last().unwrap();
    let cookies: Vec<_> = seen.headers.iter().filter(|(k, _)| k == "cookie").map(|(_, v)| v.as_str()).collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"], "{:?}", seen.headers);
    // HTTP/1.1 clients must not send two, but one that does gets the same treatment.
    let resp = send(&s.gw, "GET /open HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n");
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = s.up.last().unwrap();
    let cookies: Vec<_> = seen.headers.iter().filter(|(k, _)| k == "cookie").map(|(_, v)| v.as_str()).collect();
    assert_eq!(cookies, ["a=1; b=2"], "{:?}", seen.headers);
    // One line is left alone.
    let (code, _, _) = curl(&["--http2-prior-knowledge", &url, "-H", "Cookie: x=1"]);
    assert_eq!(code, 200);
    assert_eq!(s.up.last().unwrap().header("cookie"), Some("x=1"));
}
