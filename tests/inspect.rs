//! Threat inspection through the real gateway: SQL injection and XSS blocked with 403
//! `request-blocked` before anything reaches the upstream, benign look-alikes passed, detect mode
//! forwarding and logging, exclusions scoped to one target, XXE refused, double encoding and values
//! split over repeated parameters seen through, malformed declared bodies refused, `inspect: off`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::time::Duration;

fn config(up: std::net::SocketAddr, top: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
upstreams:
  app:
    targets:
      - address: {up}
{top}
routes:
{routes}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

const ROUTES: &str = r#"  - name: detect
    match: { path: { prefix: /detect } }
    upstream: app
    auth: none
    inspect: { mode: detect }
  - name: excl
    match: { path: { prefix: /excl } }
    upstream: app
    auth: none
    inspect:
      exclusions:
        - { category: sqli, target: "query:q" }
  - name: off
    match: { path: { prefix: /off } }
    upstream: app
    auth: none
    inspect: off
  - name: validated
    match: { path: { prefix: /validated } }
    upstream: app
    auth: none
    validate: {}
  - name: api
    match: { path: { prefix: / } }
    upstream: app
    auth: none
"#;

fn start() -> (Upstream, Gateway) {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "inspect: { mode: block }", ROUTES));
    (up, gw)
}

fn get(gw: &Gateway, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let (code, _, body) = curl(&["--path-as-is", &url]);
    (code, body)
}

fn post(gw: &Gateway, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let ct = format!("Content-Type: {content_type}");
    let (code, _, body) = curl(&["-X", "POST", "-H", &ct, "--data-binary", body, &url]);
    (code, body)
}

fn assert_blocked(up: &Upstream, before: usize, (code, body): (u16, String)) {
    assert_eq!(code, 403, "{body}");
    assert_eq!(problem_type(&body), problem("request-blocked"), "{body}");
    assert_eq!(up.hits(), before, "the upstream saw nothing");
}

#[test]
fn sqli_in_query_is_blocked_and_obrien_passes() {
    let (up, gw) = start();
    assert_blocked(&up, 0, get(&gw, "/search?q=1'%20OR%20'1'='1"));
    assert_blocked(&up, 0, get(&gw, "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--"));
    // HTTP/2 (h2c prior knowledge) is inspected the same way.
    let url = format!("http://{}/search?q=1%27%20or%201=1--", gw.addr("main"));
    let (code, _, body) = curl(&["--http2-prior-knowledge", &url]);
    assert_blocked(&up, 0, (code, body));
    let (code, body) = get(&gw, "/search?q=O'Brien");
    assert_eq!(code, 200, "{body}");
    assert_eq!(up.last().unwrap().path_and_query, "/search?q=O'Brien");
    let (code, _) = get(&gw, "/search?q=select%20a%20plan&sort=price%20desc");
    assert_eq!(code, 200);
    let m = gw.metrics();
    assert!(
        metric(&m, r#"portcullis_inspect_detections_total{category="sqli",action="block"}"#).unwrap_or(0.0) >= 2.0,
        "{m}"
    );
    assert!(gw.wait_log("\"rule\":1002", Duration::from_secs(5)));
    // The log carries a fragment, never the whole value.
    assert!(gw.logs().iter().all(|l| !l.contains("UNION SELECT password FROM users--")));
}

#[test]
fn xss_in_json_field_is_blocked() {
    let (up, gw) = start();
    let body = r#"{"user":{"name":"Ann","bio":"<img src=x onerror=alert(document.cookie)>"},"tags":["a"]}"#;
    assert_blocked(&up, 0, post(&gw, "/profile", "application/json", body));
    // Markdown and prose about <script> pass.
    let ok = r#"{"bio":"I write about **HTML**: the <script> tag, <b>bold</b> and `a < b`.","n":1}"#;
    let (code, body) = post(&gw, "/profile", "application/json", ok);
    assert_eq!(code, 200, "{body}");
    assert_eq!(up.hits(), 1);
}

#[test]
fn detect_mode_forwards_and_logs() {
    let (up, gw) = start();
    let (code, _) = get(&gw, "/detect?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(code, 200);
    assert_eq!(up.hits(), 1);
    assert!(gw.wait_log("\"rule\":2001", Duration::from_secs(5)));
    let m = gw.metrics();
    assert_eq!(metric(&m, r#"portcullis_inspect_detections_total{category="xss",action="detect"}"#), Some(1.0), "{m}");
}

#[test]
fn exclusion_applies_to_its_target_only() {
    let (up, gw) = start();
    let (code, _) = get(&gw, "/excl?q=1'%20or%201=1--");
    assert_eq!(code, 200, "sqli is off for query:q");
    assert_eq!(up.hits(), 1);
    assert_blocked(&up, 1, get(&gw, "/excl?other=1'%20or%201=1--"));
    assert_blocked(&up, 1, get(&gw, "/excl?q=%3Csvg%20onload%3Dalert(1)%3E"));
}

#[test]
fn xxe_body_is_refused() {
    let (up, gw) = start();
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
    assert_blocked(&up, 0, post(&gw, "/soap", "application/xml", xxe));
    // Even in detect mode a DTD is only logged; a plain SOAP body passes.
    let soap =
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><q>ok</q></s:Body></s:Envelope>"#;
    let (code, _) = post(&gw, "/soap", "text/xml; charset=utf-8", soap);
    assert_eq!(code, 200);
}

#[test]
fn double_encoding_and_repeated_params_are_seen_through() {
    let (up, gw) = start();
    assert_blocked(&up, 0, get(&gw, "/s?q=%253Cscript%253Ealert(1)%253C%252Fscript%253E"));
    assert_blocked(&up, 0, get(&gw, "/s?q=1%2527%2520or%25201%253D1--"));
    // Each value of a repeated name is inspected.
    assert_blocked(&up, 0, get(&gw, "/s?q=harmless&q=1'%20or%201=1--"));
    assert_blocked(&up, 0, get(&gw, "/s?q=1'%20or%201=1--&q=harmless"));
}

#[test]
fn malformed_declared_body_is_refused() {
    let (up, gw) = start();
    let (code, body) = post(&gw, "/c", "application/json", r#"{"a": [1, 2"#);
    assert_eq!(code, 400, "{body}");
    assert_eq!(problem_type(&body), problem("malformed-json"));
    let (code, body) = post(&gw, "/c", "application/xml", "<a><b></a>");
    assert_eq!(code, 400, "{body}");
    assert_eq!(up.hits(), 0);
    // Text under a binary type is read as text (see declared_types_cannot_hide_a_payload).
    let (code, _) = post(&gw, "/c", "application/octet-stream", "' or 1=1--");
    assert_eq!(code, 403);
}

#[test]
fn inspect_off_route_is_not_inspected() {
    let (up, gw) = start();
    let (code, _) = get(&gw, "/off?q=1'%20or%201=1--");
    assert_eq!(code, 200);
    assert_eq!(up.hits(), 1);
}

/// The body's declared type cannot hide it: JSON sent as `application/octet-stream` (or `image/png`)
/// to an upstream that parses it anyway is read as text; a multipart part declared `image/png` whose
/// bytes are text is inspected; two `Content-Type` fields (which one would the upstream read?) are
/// refused; real binary bodies still pass.
#[test]
fn declared_types_cannot_hide_a_payload() {
    let (up, gw) = start();
    let json = r#"{"q":"1' UNION SELECT password FROM users--"}"#;
    for ct in ["application/octet-stream", "image/png", "application/x-custom"] {
        assert_blocked(&up, 0, post(&gw, "/api", ct, json));
    }
    let multipart = "--xyz\r\nContent-Disposition: form-data; name=\"avatar\"\r\nContent-Type: image/png\r\n\r\n\
                     <script>alert(document.cookie)</script>\r\n--xyz--\r\n";
    assert_blocked(&up, 0, post(&gw, "/api", "multipart/form-data; boundary=\"xyz\"", multipart));
    let url = format!("http://{}/api", gw.addr("main"));
    let (code, _, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: text/plain",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"a":1}"#,
        &url,
    ]);
    assert_eq!(code, 415, "{body}");
    assert_eq!(up.hits(), 0);
    // A charset the detectors cannot read would hide the payload from them, not from the upstream.
    let utf16: String = "' OR 1=1--".chars().flat_map(|c| [c, '\0']).collect();
    for ct in ["text/plain; charset=utf-16le", "application/json; charset=UTF-7", "text/plain; charset=ibm037"] {
        let (code, body) = post(&gw, "/api", ct, &utf16.replace('\0', ""));
        assert_eq!(code, 415, "{ct}: {body}");
    }
    assert_eq!(up.hits(), 0);
    let (code, body) = post(&gw, "/api", "text/plain; charset=ISO-8859-1", "caf\u{e9} au lait");
    assert_eq!(code, 200, "{body}");
    // Binary bytes (not UTF-8) under a binary type are not text: they pass.
    let dir = TempDir::new();
    let file = dir.path("blob.bin");
    std::fs::write(&file, [0x89u8, b'P', b'N', b'G', 0xff, 0xfe, b'\'', b' ', b'O', b'R', 0x00, 0xc3]).unwrap();
    let (code, _, body) =
        curl(&["-X", "POST", "-H", "Content-Type: image/png", "--data-binary", &format!("@{}", path_str(&file)), &url]);
    assert_eq!(code, 200, "{body}");
}

/// A gzip body is inspected decoded, whether inspection decodes it itself or the route's validation
/// stage already did (then it is not decoded twice).
#[test]
fn gzip_bodies_are_inspected_decoded() {
    let (up, gw) = start();
    let dir = TempDir::new();
    let file = dir.path("body.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{{\"q\":\"1 UNION SELECT password FROM users--\"}}' | gzip -c > {}",
            path_str(&file)
        ))
        .status()
        .unwrap();
    assert!(status.success());
    for path in ["/api", "/validated"] {
        let url = format!("http://{}{path}", gw.addr("main"));
        let (code, _, body) = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &format!("@{}", path_str(&file)),
            &url,
        ]);
        assert_blocked(&up, 0, (code, body));
    }
}
