#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Plain-HTTP listeners that do not serve routes: `redirect` (308 to HTTPS, but 403 to any request that
//! already sent a credential in clear) and `refuse` (403 to everything), through the real binary.
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// A serving listener `main`, plus `plain` with `plain_extra` lines, and an API-key authenticator whose
/// key travels in `X-Shop-Key` or `?k=`.
fn config(up: SocketAddr, plain_extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
  - name: plain
    address: 127.0.0.1:0
{plain_extra}
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  keys:
    api_key:
      hmac_secret: "0123456789abcdef0123456789abcdef-plain-http"
      header: X-Shop-Key
      query_param: k
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: none
logging:
  level: info
  access_log: true
admin:
  address: 127.0.0.1:0
"#
    )
}

fn assert_insecure(resp: &str, what: &str) {
    assert_eq!(status_of(resp), 403, "{what}: {resp}");
    assert!(header_of(resp, "location").is_none(), "{what}: redirected: {resp}");
    assert_eq!(header_of(resp, "content-type").as_deref(), Some("application/problem+json"), "{what}");
    assert_eq!(problem_type(body_of(resp)), problem("insecure-transport"), "{what}: {resp}");
}

fn rejections(gw: &Gateway) -> f64 {
    metric(&gw.metrics(), "portcullis_rejections_total{type=\"insecure-transport\"}").unwrap_or(0.0)
}

#[test]
fn a_redirecting_listener_refuses_requests_that_carry_credentials() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "    redirect_https_port: 8443\n    http2: true"));
    let addr = gw.addr("plain");
    // No credential: the redirect, as before.
    let resp = raw(addr, b"GET /a?x=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n", T);
    assert_eq!(status_of(&resp), 308, "{resp}");
    assert_eq!(header_of(&resp, "location").as_deref(), Some("https://shop.example:8443/a?x=1"));
    let cases = [
        ("Authorization: Bearer abc\r\n", "/"),
        ("authorization: Basic dTpw\r\n", "/"),
        ("Proxy-Authorization: Basic dTpw\r\n", "/"),
        ("Cookie: session=1\r\n", "/"),
        ("X-API-Key: pcs_x\r\n", "/"),
        ("x-shop-key: pcs_x\r\n", "/"),
        ("X-SHOP-KEY: pcs_x\r\n", "/"),
        ("", "/a?x=1&k=pcs_x"),
        ("", "/a?k"),
    ];
    for (field, target) in cases {
        let resp = raw(addr, format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\n{field}\r\n").as_bytes(), T);
        assert_insecure(&resp, &format!("{field}{target}"));
    }
    // HEAD and POST alike; no body on HEAD.
    let resp = raw(addr, b"HEAD / HTTP/1.1\r\nHost: shop.example\r\nCookie: a=b\r\nConnection: close\r\n\r\n", T);
    assert_eq!(status_of(&resp), 403, "{resp}");
    let resp = raw(addr, b"POST / HTTP/1.1\r\nHost: shop.example\r\nCookie: a=b\r\nContent-Length: 0\r\n\r\n", T);
    assert_insecure(&resp, "POST");
    // With curl, as clients send them (HTTP/1.1 and h2c).
    let url = format!("http://{addr}/login");
    let (code, headers, body) = curl(&["-u", "alice:secret", &url]);
    assert_eq!(code, 403, "{headers}{body}");
    assert_eq!(problem_type(&body), problem("insecure-transport"));
    let (code, headers, body) = curl(&["--http2-prior-knowledge", "-H", "X-Shop-Key: pcs_y", &url]);
    assert_eq!(code, 403, "{headers}{body}");
    assert!(header_of(&headers, "location").is_none());
    let (code, _, _) = curl(&["--http2-prior-knowledge", &url]);
    assert_eq!(code, 308);
    // Counted by type, logged, and nothing reached the upstream.
    assert_eq!(rejections(&gw), 13.0);
    assert!(gw.wait_log("plain-HTTP request refused", T));
    assert_eq!(up.hits(), 0);
    // The serving listener is untouched.
    let (code, _, _) = curl(&["-H", "Cookie: a=b", &format!("http://{}/c", gw.addr("main"))]);
    assert_eq!(code, 200);
}

#[test]
fn plain_http_redirect_is_the_same_as_the_port_alone() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "    plain_http: redirect\n    redirect_https_port: 443"));
    let addr = gw.addr("plain");
    let resp = raw(addr, b"GET /p HTTP/1.1\r\nHost: shop.example\r\n\r\n", T);
    assert_eq!(status_of(&resp), 308, "{resp}");
    assert_eq!(header_of(&resp, "location").as_deref(), Some("https://shop.example/p"));
    let resp = raw(addr, b"GET /p HTTP/1.1\r\nHost: shop.example\r\nAuthorization: Bearer t\r\n\r\n", T);
    assert_insecure(&resp, "Authorization");
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_refusing_listener_answers_403_to_everything() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "    plain_http: refuse"));
    let addr = gw.addr("plain");
    for req in [
        "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        "GET /a?b HTTP/1.1\r\nHost: shop.example\r\nAuthorization: Bearer t\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 0\r\n\r\n",
    ] {
        assert_insecure(&raw(addr, req.as_bytes(), T), req);
    }
    let (code, _, body) = curl(&[&format!("http://{addr}/")]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(rejections(&gw), 4.0);
    assert_eq!(up.hits(), 0);
    let (code, stdout, stderr) = portcullis(&["check", "-c", &path_str(&gw.config)], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listener plain on 127.0.0.1:0 (plain, refuses every request)"), "{stdout}");
}

#[test]
fn contradictory_or_unknown_plain_http_settings_are_config_errors() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let cases = [
        ("    plain_http: refuse\n    redirect_https_port: 8443", "contradict"),
        ("    plain_http: redirect", "needs `redirect_https_port`"),
        ("    redirect_https_port: 0", "port 0"),
        ("    plain_http: serve", "plain_http"),
        ("    plain_http: Refuse", "plain_http"),
        (
            "    plain_http: refuse\n    tls:\n      certificates:\n        - cert: /nonexistent.pem\n          key: /nonexistent.pem",
            "plain listeners only",
        ),
    ];
    for (i, (extra, message)) in cases.iter().enumerate() {
        let file = dir.write(&format!("c{i}.yaml"), &config(up.addr, extra));
        let (code, stdout, stderr) = portcullis(&["check", "-c", &path_str(&file)], &[]);
        assert_eq!(code, 1, "{extra}: {stdout}{stderr}");
        // file:line:column, and the line is the listener's `plain_http:` line.
        let located = format!("{}:6:", path_str(&file));
        assert!(stderr.starts_with(&located), "{extra}: {stderr}");
        assert!(stderr.contains(message), "{extra}: {stderr}");
    }
}
