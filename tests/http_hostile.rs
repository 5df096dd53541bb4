//! Hostile HTTP input against the real gateway binary: request smuggling, oversize messages, hostile
//! paths, slow and greedy clients, HTTP/2 abuse and odd request targets. Every rejection is checked for
//! its exact status, its problem `type` where the gateway renders one, and that the upstream saw nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(3);

/// A gateway with small limits in front of `up`. `limits` is extra YAML under `limits:`.
fn config(up: SocketAddr, limits: &str) -> String {
    format!(
        r#"workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
limits:
  max_header_bytes: 2KiB
  max_headers: 20
  max_url_bytes: 512
  max_body_bytes: 1KiB
{limits}
upstreams:
  app:
    targets:
      - address: {up}
routes:
  - name: small
    match:
      path: {{ exact: /small }}
    upstream: app
    auth: none
    max_body_bytes: 100
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: none
admin:
  address: 127.0.0.1:0
"#
    )
}

fn start(limits: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, limits));
    (up, gw)
}

/// What a hostile request must get back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The gateway's own problem+json with this status and slug.
    Problem(u16, &'static str),
    /// The framer (the parser of record, `validate::head`) refuses it before hyper or any route sees it:
    /// problem+json for this status (400 bad-request, 414 uri-too-long, 431 headers-too-large).
    Parser(u16),
}

/// Sends `request` on a fresh connection and checks the answer; returns a description of what is wrong.
fn check(addr: SocketAddr, name: &str, request: &[u8], expect: Expect) -> Option<String> {
    let (resp, closed) = raw_until_close(addr, request, T);
    let status = status_of(&resp);
    let ctype = header_of(&resp, "content-type").unwrap_or_default();
    let responses = resp.matches("HTTP/1.1 ").count();
    let wrong = match expect {
        Expect::Problem(code, slug) => {
            status != code || ctype != "application/problem+json" || problem_type(body_of(&resp)) != problem(slug)
        }
        Expect::Parser(code) => {
            let slug = match code {
                414 => "uri-too-long",
                431 => "headers-too-large",
                _ => "bad-request",
            };
            status != code
                || ctype != "application/problem+json"
                || problem_type(body_of(&resp)) != problem(slug)
                || header_of(&resp, "x-request-id").is_none()
        }
    };
    if wrong || responses != 1 || !closed {
        return Some(format!(
            "{name}: expected {expect:?}, one response and the connection closed; got {responses} response(s), closed={closed}:\n{resp}"
        ));
    }
    None
}

fn assert_all(failures: Vec<Option<String>>) {
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{} case(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn smuggling_attempts_are_refused_with_400_and_never_forwarded() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    use Expect::*;
    let framing = Problem(400, "ambiguous-framing");
    let cases: &[(&str, &[u8], Expect)] = &[
        (
            "content-length and transfer-encoding",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            framing,
        ),
        (
            "transfer-encoding then content-length",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            framing,
        ),
        (
            "two equal content-lengths",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            framing,
        ),
        (
            "two different content-lengths",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            framing,
        ),
        ("content-length +5", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", framing),
        ("content-length '5, 5'", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", framing),
        ("content-length abc", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\nhello", framing),
        ("content-length -1", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nhello", framing),
        (
            "transfer-encoding gzip, chunked",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            framing,
        ),
        (
            "transfer-encoding chunked, chunked",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            framing,
        ),
        (
            "transfer-encoding twice",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            framing,
        ),
        (
            "transfer-encoding xchunked",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            framing,
        ),
        (
            "transfer-encoding gzip alone",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            framing,
        ),
        (
            "space before the colon",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            Parser(400),
        ),
        (
            "vertical tab before chunked",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
            Parser(400),
        ),
        (
            "transfer-encoding in HTTP/1.0",
            b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            framing,
        ),
        ("obsolete line folding", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", Parser(400)),
        (
            "folded transfer-encoding",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            framing,
        ),
        ("bare LF in the headers", b"GET /x HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", framing),
        ("bare LF everywhere", b"GET /x HTTP/1.1\nHost: a\nX-A: 1\n\n", framing),
        ("bare CR in the headers", b"GET /x HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n", Parser(400)),
        ("NUL in a header value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", Parser(400)),
        ("space in a header name", b"GET /x HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n", Parser(400)),
        ("two Host headers", b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Problem(400, "bad-request")),
        ("no Host header", b"GET /x HTTP/1.1\r\n\r\n", Problem(400, "bad-request")),
        ("Host with a path", b"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n", Problem(400, "bad-request")),
        ("Host with userinfo", b"GET /x HTTP/1.1\r\nHost: user@a\r\n\r\n", Problem(400, "bad-request")),
        (
            "malformed chunk size",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
            Problem(400, "bad-request"),
        ),
        ("HTTP/0.9 request line", b"GET /x\r\n\r\n", Parser(400)),
        ("HTTP/2.0 in an HTTP/1 request line", b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n", Parser(400)),
    ];
    let failures = cases.iter().map(|(name, req, expect)| check(addr, name, req, *expect)).collect();
    assert_all(failures);
    assert_eq!(up.hits(), 0, "forwarded: {:#?}", up.all_seen());
}

#[test]
fn leading_whitespace_in_transfer_encoding_is_optional_whitespace_not_smuggling() {
    // RFC 9110 5.5: whitespace around a field value is not part of it, so ` chunked` is `chunked`. The
    // gateway reads it as chunked and re-frames the body for the upstream, which sees no
    // Transfer-Encoding of the client's and exactly the decoded body.
    let (up, gw) = start("");
    let req = b"POST /ows HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t chunked \t\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let resp = raw(gw.addr("main"), req, T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = up.last().unwrap();
    assert_eq!(seen.body, b"hello");
    assert_eq!(up.hits(), 1);
}

#[test]
fn pipelined_request_after_a_smuggling_attempt_never_reaches_the_upstream() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    let attempts: &[(&str, &[u8])] = &[
        (
            "TE gzip, chunked",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "CL.TE",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "TE.CL",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "two content-lengths",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "TE twice",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "bad chunk size",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ];
    let mut failures = Vec::new();
    for (name, req) in attempts {
        let (resp, closed) = raw_until_close(addr, req, T);
        let responses = resp.matches("HTTP/1.1 ").count();
        if status_of(&resp) != 400 || responses != 1 || !closed {
            failures.push(format!("{name}: {responses} response(s), closed={closed}:\n{resp}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let paths: Vec<String> = up.all_seen().into_iter().map(|s| s.path_and_query).collect();
    assert!(paths.is_empty(), "the upstream received {paths:?}");
}

#[test]
fn a_good_pipelined_pair_is_served_in_order() {
    // The control for the test above: pipelining itself works.
    let (up, gw) = start("");
    let req = b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (resp, closed) = raw_until_close(gw.addr("main"), req, T);
    assert!(closed);
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 2, "{resp}");
    let p1 = resp.find("\"path\":\"/p1\"").unwrap();
    let p2 = resp.find("\"path\":\"/p2\"").unwrap();
    assert!(p1 < p2);
    assert_eq!(up.hits(), 2);
}

#[test]
fn oversize_heads_are_refused_with_431_and_414() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    let big = format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(2100));
    let huge = format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let spread: String = (0..12).map(|i| format!("X-H{i}: {}\r\n", "v".repeat(180))).collect();
    let spread = format!("GET /x HTTP/1.1\r\nHost: a\r\n{spread}\r\n");
    // 21 headers: one over `max_headers: 20`, still within hyper's own ceiling, so the gateway answers.
    let many: String = (0..20).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let many = format!("GET /x HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let very_many: String = (0..200).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let very_many = format!("GET /x HTTP/1.1\r\nHost: a\r\n{very_many}\r\n");
    let long_url = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(600));
    let long_query = format!("GET /x?q={} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(600));
    use Expect::*;
    let cases: Vec<(&str, &[u8], Expect)> = vec![
        ("one header over max_header_bytes", big.as_bytes(), Problem(431, "headers-too-large")),
        ("headers summing over max_header_bytes", spread.as_bytes(), Problem(431, "headers-too-large")),
        ("a header over hyper's buffer", huge.as_bytes(), Parser(431)),
        ("one header more than max_headers", many.as_bytes(), Problem(431, "headers-too-large")),
        ("far more headers than max_headers", very_many.as_bytes(), Parser(431)),
        ("path over max_url_bytes", long_url.as_bytes(), Problem(414, "uri-too-long")),
        ("query over max_url_bytes", long_query.as_bytes(), Problem(414, "uri-too-long")),
    ];
    let failures = cases.iter().map(|(name, req, expect)| check(addr, name, req, *expect)).collect();
    assert_all(failures);
    assert_eq!(up.hits(), 0);
    // Just under every limit passes.
    let ok = format!("GET /{} HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(400), "b".repeat(1500));
    assert_eq!(status_of(&raw(addr, ok.as_bytes(), T)), 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn url_far_over_the_limit_is_refused_and_not_forwarded() {
    // A request line longer than hyper's read buffer (max_header_bytes + max_url_bytes + 4 KiB) is refused by
    // hyper's parser before the gateway's own 414 check can run; hyper says 431 then.
    let (up, gw) = start("");
    let huge_url = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let (resp, closed) = raw_until_close(gw.addr("main"), huge_url.as_bytes(), T);
    assert!(matches!(status_of(&resp), 414 | 431), "{resp}");
    assert_eq!(header_of(&resp, "content-type").as_deref(), Some("application/problem+json"), "{resp}");
    assert!(closed);
    assert_eq!(up.hits(), 0);
    // Logged and counted like every other refusal, under the id the client was given.
    let id = header_of(&resp, "x-request-id").expect("request id");
    let lines = gw.wait_access_log(1, Duration::from_secs(5));
    let line = lines.iter().find(|l| l["request_id"] == id.as_str()).expect("access log line");
    assert_eq!(line["status"].as_u64(), Some(u64::from(status_of(&resp))));
    assert!(line["problem"].is_string(), "{line}");
}

#[test]
fn body_with_content_length_over_the_limit_is_refused_before_forwarding() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    // Only the head is sent: the gateway must answer from the declared length without waiting for the body.
    let head_only = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n";
    let started = Instant::now();
    let (resp, closed) = raw_until_close(addr, head_only, T);
    assert_eq!(status_of(&resp), 413, "{resp}");
    // Answered from the declared length (waiting for the body would end only at the read timeout).
    assert!(started.elapsed() < T);
    assert_eq!(problem_type(body_of(&resp)), problem("payload-too-large"));
    assert_eq!(header_of(&resp, "content-type").as_deref(), Some("application/problem+json"));
    assert!(closed, "the unread body must not be parsed as a next request");
    // With `Expect: 100-continue` the client never has to send the body at all.
    let expect = b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n";
    let (resp, _) = raw_until_close(addr, expect, T);
    assert!(!resp.contains("100 Continue"), "{resp}");
    assert_eq!(status_of(&resp), 413, "{resp}");
    // A body after the head that looks like a request must not be served either.
    let body = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n".repeat(60);
    let req = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let (resp, _) = raw_until_close(addr, req.as_bytes(), T);
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    assert_eq!(status_of(&resp), 413);
    assert_eq!(up.hits(), 0, "{:?}", up.all_seen().iter().map(|s| &s.path_and_query).collect::<Vec<_>>());
}

#[test]
fn chunked_body_streaming_past_the_limit_gets_413() {
    let (_up, gw) = start("");
    let chunk = format!("200\r\n{}\r\n", "a".repeat(512));
    let req =
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunk.repeat(4));
    let (resp, _) = raw_until_close(gw.addr("main"), req.as_bytes(), T);
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert_eq!(problem_type(body_of(&resp)), problem("payload-too-large"));
    // The upstream may have seen the start of the request, never a complete oversize body.
    // Within the limit, chunked bodies pass whole.
    let req =
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunk.repeat(2));
    let resp = raw(gw.addr("main"), req.as_bytes(), T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(body_of(&resp).contains("\"body_bytes\":1024"), "{resp}");
}

#[test]
fn route_level_body_limit_overrides_the_global_one() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    let body = "x".repeat(200);
    let post = |path: &str| format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 200\r\n\r\n{body}");
    let resp = raw(addr, post("/small").as_bytes(), T);
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert_eq!(problem_type(body_of(&resp)), problem("payload-too-large"));
    assert_eq!(up.hits(), 0);
    let resp = raw(addr, post("/other").as_bytes(), T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.last().unwrap().body.len(), 200);
    // Chunked to the small route: the limit holds while streaming.
    let chunked =
        format!("POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nc8\r\n{body}\r\n0\r\n\r\n");
    let resp = raw(addr, chunked.as_bytes(), T);
    assert_eq!(status_of(&resp), 413, "{resp}");
}

#[test]
fn hostile_paths_are_refused_with_invalid_path() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    use Expect::*;
    let invalid = Problem(400, "invalid-path");
    let cases: &[(&str, Expect)] = &[
        ("/a/../b", invalid),
        ("/a/./b", invalid),
        ("/..", invalid),
        ("/%2e%2e/x", invalid),
        ("/a/.%2E/x", invalid),
        ("/a%2fb", invalid),
        ("/a%2Fb", invalid),
        ("/a%5cb", invalid),
        ("/a\\b", invalid),
        ("/a%00", invalid),
        ("/%ff%fe", invalid),
        ("/caf%C3", invalid),
        ("/a%zz", invalid),
        ("/a%4", invalid),
        ("/a%0d%0aX-Injected:%201", Problem(400, "invalid-path")),
    ];
    let mut failures: Vec<Option<String>> = cases
        .iter()
        .map(|(path, expect)| {
            let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
            check(addr, path, req.as_bytes(), *expect)
        })
        .collect();
    // Raw bytes above 0x7f that are not UTF-8, and control characters, in the request line.
    failures.push(check(addr, "raw 0xff 0xfe", b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n", Parser(400)));
    failures.push(check(addr, "raw tab", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", Parser(400)));
    failures.push(check(addr, "raw DEL", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", Parser(400)));
    assert_all(failures);
    assert_eq!(up.hits(), 0, "{:?}", up.all_seen().iter().map(|s| &s.path_and_query).collect::<Vec<_>>());
}

#[test]
fn percent_encoded_unreserved_characters_are_normalised_before_forwarding() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    let resp = raw(addr, b"GET /%61pi/%7Euser?q=%61 HTTP/1.1\r\nHost: a\r\n\r\n", T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    // The path is normalised; the query is passed as it came.
    assert_eq!(up.last().unwrap().path_and_query, "/api/~user?q=%61");
    let resp = raw(addr, b"GET /a%20b%3a HTTP/1.1\r\nHost: a\r\n\r\n", T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.last().unwrap().path_and_query, "/a%20b%3A");
    let resp = raw(addr, "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes(), T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.hits(), 3);
}

#[test]
fn a_client_stalling_in_its_headers_is_cut_off_while_others_are_served() {
    let (up, gw) = start("  header_read_timeout: 1s\n  idle_timeout: 30s");
    let addr = gw.addr("main");
    let started = Instant::now();
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ").unwrap();
    // A second one trickles a byte every 200 ms: progress does not extend the deadline.
    let mut trickle = TcpStream::connect(addr).unwrap();
    trickle.write_all(b"GET /x HTTP/1.1\r\n").unwrap();
    let trickler = std::thread::spawn(move || {
        let t0 = Instant::now();
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(200));
            if trickle.write_all(b"a").is_err() {
                break;
            }
        }
        let (_, closed) = read_until_close(&mut trickle, Duration::from_millis(100));
        (closed, t0.elapsed())
    });
    // Meanwhile other clients are served normally.
    for i in 0..5 {
        let (code, _, body) = curl(&[&format!("http://{addr}/other/{i}")]);
        assert_eq!(code, 200, "{body}");
    }
    // Bounds far from the 1 s deadline on both sides that still tell it from idle_timeout (30 s) and from
    // a deadline the trickle extends (it keeps sending for 12 s): a loaded machine cannot break them.
    let (resp, closed) = read_until_close(&mut stalled, Duration::from_secs(10));
    let took = started.elapsed();
    assert!(closed, "the stalled connection was not closed");
    assert!(!resp.contains("200 OK"), "{resp}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "closed after {took:?}");
    let (trickle_closed, trickle_took) = trickler.join().unwrap();
    assert!(trickle_closed, "the trickling connection was not closed");
    assert!(trickle_took < Duration::from_secs(10), "trickler closed after {trickle_took:?}");
    assert_eq!(up.hits(), 5);
}

#[test]
fn idle_keep_alive_connection_is_closed_but_a_slow_response_is_not_cut() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "  header_read_timeout: 20s\n  idle_timeout: 1s"));
    let addr = gw.addr("main");
    let mut conn = RawConn::connect(addr);
    let resp = conn.get("/first", T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    let started = Instant::now();
    assert!(conn.closed_within(Duration::from_secs(15)), "idle connection still open");
    let took = started.elapsed();
    // idle_timeout (1 s), not header_read_timeout (20 s)
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(15), "closed after {took:?}");
    // A request in flight longer than idle_timeout is not idle.
    let mut conn = RawConn::connect(addr);
    let resp = conn.get("/sleep/1600", Duration::from_secs(5));
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.hits(), 2);
}

#[test]
fn kept_alive_connections_wait_for_idle_timeout_not_header_read_timeout() {
    let (up, gw) = start("  header_read_timeout: 1s\n  idle_timeout: 20s");
    let mut conn = RawConn::connect(gw.addr("main"));
    assert_eq!(status_of(&conn.get("/a", T)), 200);
    // Waiting for the next request is idleness (20 s allowed), not a slow head (1 s).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(status_of(&conn.get("/b", T)), 200, "the kept-alive connection was closed");
    // A head that starts on the kept-alive connection and stalls is still cut off after 1 s.
    conn.stream.write_all(b"GET /c HTTP/1.1\r\nHost: a\r\n").unwrap();
    let started = Instant::now();
    assert!(conn.closed_within(Duration::from_secs(15)), "stalled head not cut off");
    let took = started.elapsed();
    // header_read_timeout (1 s), not idle_timeout (20 s)
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(15), "closed after {took:?}");
    assert_eq!(up.hits(), 2);
}

#[test]
fn connections_over_the_per_ip_limit_are_closed_without_service() {
    let (up, gw) = start("  max_connections_per_ip: 2");
    let addr = gw.addr("main");
    let mut a = RawConn::connect(addr);
    let mut b = RawConn::connect(addr);
    assert_eq!(status_of(&a.get("/a1", T)), 200);
    assert_eq!(status_of(&b.get("/b1", T)), 200);
    let mut c = RawConn::connect(addr);
    let resp = c.get("/c1", T);
    assert_eq!(resp, "", "a third connection was served");
    // The first two keep working.
    assert_eq!(status_of(&a.get("/a2", T)), 200);
    assert_eq!(status_of(&b.get("/b2", T)), 200);
    // Once one closes, a new connection is served (the place is released when the server sees the close).
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(3);
    let served = loop {
        let mut d = RawConn::connect(addr);
        if status_of(&d.get("/d1", Duration::from_millis(500))) == 200 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(served, "no connection served after one closed");
    let paths: Vec<String> = up.all_seen().into_iter().map(|s| s.path_and_query).collect();
    assert!(!paths.contains(&"/c1".to_string()), "{paths:?}");
    let m = gw.metrics();
    assert!(
        metric(&m, "portcullis_rejected_connections_total{reason=\"max_connections_per_ip\"}").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

fn h2c_config(up: SocketAddr) -> String {
    config(up, "").replace("    address: 127.0.0.1:0\nlimits:", "    address: 127.0.0.1:0\n    http2: true\nlimits:")
}

#[test]
fn h2c_with_many_parallel_streams_is_served() {
    // curl 7.88 cannot reuse an h2c connection (curl/curl#10634), so `curl --parallel
    // --http2-prior-knowledge` fails on its own side; the streams are driven by a small frame client.
    let up = Upstream::start("app");
    let gw = Gateway::start(&h2c_config(up.addr));
    let addr = gw.addr("main");
    let statuses = h2c_get_many(addr, 120, 50, Duration::from_secs(10));
    let ok = statuses.iter().filter(|s| **s == Some(200)).count();
    assert_eq!(ok, 120, "{statuses:?}");
    assert_eq!(up.hits(), 120);
    // Still serving afterwards, over both protocols (one request per curl: no connection reuse).
    let (code, headers, _) = curl(&["--http2-prior-knowledge", &format!("http://{addr}/after")]);
    assert_eq!(code, 200);
    assert!(headers.starts_with("HTTP/2 200"), "{headers}");
    let (code, headers, _) = curl(&[&format!("http://{addr}/after-h1")]);
    assert_eq!(code, 200);
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
}

/// GETs `total` streams over one h2c connection, at most `parallel` open at once. Returns each stream's
/// status (200 when the response HEADERS start with the static-table `:status: 200`, 0 for another
/// status, None when no complete response arrived).
fn h2c_get_many(addr: SocketAddr, total: u32, parallel: u32, timeout: Duration) -> Vec<Option<u16>> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect(addr).unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    s.write_all(&out).unwrap();
    let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'a'];
    let mut status: Vec<Option<u16>> = vec![None; total as usize];
    let mut done = vec![false; total as usize];
    let (mut sent, mut finished) = (0u32, 0u32);
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    while finished < total && Instant::now() < deadline {
        let mut batch = Vec::new();
        while sent < total && sent - finished < parallel {
            batch.extend(frame(0x1, 0x5, 2 * sent + 1, &block));
            sent += 1;
        }
        if !batch.is_empty() {
            s.write_all(&batch).unwrap();
        }
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            if kind == 0x4 && flags & 1 == 0 {
                s.write_all(&frame(0x4, 1, 0, &[])).unwrap(); // SETTINGS ACK
            }
            if id == 0 || id % 2 == 0 {
                continue;
            }
            let i = ((id - 1) / 2) as usize;
            if kind == 0x1 && status[i].is_none() {
                status[i] = Some(if payload.first() == Some(&0x88) { 200 } else { 0 });
            }
            let ends = (kind == 0x0 || kind == 0x1) && flags & 1 == 1;
            if (ends || kind == 0x3) && !done[i] {
                done[i] = true;
                finished += 1;
                if kind == 0x3 {
                    status[i] = None;
                }
            }
        }
    }
    status.iter().zip(&done).map(|(s, d)| if *d { *s } else { None }).collect()
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn h2_rapid_reset_flood_is_cut_off_and_the_server_keeps_serving() {
    // CVE-2023-44487: open streams and cancel them at once, many times. Frames are built by hand (no h2
    // client crate in the tree): HEADERS with an HPACK block of static-table entries, then RST_STREAM.
    let up = Upstream::start_with("app", UpstreamOptions { delay: Duration::from_millis(50), ..Default::default() });
    let gw = Gateway::start(&h2c_config(up.addr));
    let addr = gw.addr("main");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                       // :method GET (2), :scheme http (6), :path / (4), :authority "a" (literal, name index 1, not indexed)
    let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'a'];
    let streams = 2000u32;
    for i in 0..streams {
        let id = 2 * i + 1;
        out.extend(frame(0x1, 0x5, id, &block)); // HEADERS, END_STREAM | END_HEADERS
        out.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&out); // the server may close before reading it all
    let (goaway, closed) = read_frames_until_goaway(&mut s, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let hits = up.hits();
    eprintln!("rapid reset: goaway={goaway} closed={closed} hits={hits}");
    assert!(goaway || closed, "the flood was neither answered with GOAWAY nor cut off");
    assert!(hits < streams as usize / 4, "{hits} of {streams} cancelled streams reached the upstream");
    // Other clients are still served.
    let (code, _, _) = curl(&["--http2-prior-knowledge", &format!("http://{addr}/after")]);
    assert_eq!(code, 200);
    let (code, _, _) = curl(&[&format!("http://{addr}/after-h1")]);
    assert_eq!(code, 200);
}

/// Reads HTTP/2 frames until a GOAWAY (true, _), EOF (_, true) or the timeout.
fn read_frames_until_goaway(s: &mut TcpStream, timeout: Duration) -> (bool, bool) {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        // Parse whole frames in buf.
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 {
                return (true, false);
            }
            buf.drain(..9 + len);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut tmp) {
            Ok(0) => return (false, true),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (false, false)
            }
            Err(_) => return (false, true),
        }
    }
}

#[test]
fn connect_and_unknown_methods_are_refused_and_not_forwarded() {
    let (up, gw) = start("");
    let addr = gw.addr("main");
    let cases: &[(&str, &[u8], u16)] = &[
        ("CONNECT authority-form", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400),
        ("CONNECT origin-form", b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        ("TRACE", b"TRACE /x HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        ("extension method", b"FOO /x HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ];
    let mut failures = Vec::new();
    for (name, req, code) in cases {
        let resp = raw(addr, req, T);
        let ok = status_of(&resp) == *code
            && header_of(&resp, "content-type").as_deref() == Some("application/problem+json");
        if !ok {
            failures.push(format!("{name}: expected {code} problem+json:\n{resp}"));
        }
        if *code == 405 {
            let allow = header_of(&resp, "allow").unwrap_or_default();
            if !allow.contains("GET") || allow.contains("TRACE") || allow.contains("CONNECT") {
                failures.push(format!("{name}: Allow is `{allow}`"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(up.hits(), 0, "{:?}", up.all_seen().iter().map(|s| s.method.clone()).collect::<Vec<_>>());
    // The standard methods pass on a route that lists none.
    for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let resp = raw(addr, format!("{m} /m HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").as_bytes(), T);
        assert_eq!(status_of(&resp), 200, "{m}: {resp}");
    }
    assert_eq!(up.hits(), 7);
}

#[test]
fn absolute_form_targets_never_reach_another_host() {
    let (up, gw) = start("");
    let evil = Upstream::start("evil");
    let addr = gw.addr("main");
    // Same authority in the target and Host: served by the configured upstream, never by the named one.
    let req = format!("GET http://{0}/x HTTP/1.1\r\nHost: {0}\r\n\r\n", evil.addr);
    let resp = raw(addr, req.as_bytes(), T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(body_of(&resp).contains("\"upstream\":\"app\""), "{resp}");
    assert_eq!(up.last().unwrap().path_and_query, "/x");
    // The target names one host, the Host header another: which one did the client mean? Refused.
    let req = format!("GET http://{}/y HTTP/1.1\r\nHost: admin.internal\r\n\r\n", evil.addr);
    let resp = raw(addr, req.as_bytes(), T);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(problem_type(body_of(&resp)), problem("bad-request"));
    // https in the target on a plain listener, and other schemes.
    for target in ["https://a/z", "ftp://a/z"] {
        let resp = raw(addr, format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(), T);
        let code = status_of(&resp);
        assert!(code == 400 || code == 200, "{target}: {resp}");
        if code == 200 {
            assert!(body_of(&resp).contains("\"upstream\":\"app\""));
        }
    }
    assert_eq!(evil.hits(), 0, "the gateway connected to the host named in the request target");
    assert!(up.all_seen().iter().all(|s| !s.path_and_query.starts_with("http")), "{:?}", up.all_seen());
}

/// A raw upstream: answers each connection's first request with `head`, then after `pause` writes
/// `body` (or nothing), then holds the connection open for `hold`.
fn raw_upstream(head: &'static [u8], pause: Duration, body: &'static [u8], hold: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(head);
                std::thread::sleep(pause);
                let _ = s.write_all(body);
                std::thread::sleep(hold);
            });
        }
    });
    addr
}

#[test]
fn an_upstream_body_that_looks_like_a_refusal_is_passed_through_untouched() {
    // The body arrives after the head was sent, so it is written on its own; it reads exactly like the
    // bare 400 hyper writes for an unparseable head, which the gateway replaces. It must not be.
    const BODY: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 47\r\n\r\n",
        Duration::from_millis(300),
        BODY,
        Duration::ZERO,
    );
    assert_eq!(BODY.len(), 47);
    let gw = Gateway::start(&config(up, ""));
    let mut conn = RawConn::connect(gw.addr("main"));
    conn.stream.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (resp, _) = read_until_close(&mut conn.stream, Duration::from_secs(2));
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(body_of(&resp).as_bytes(), BODY, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "one response whose body holds the look-alike: {resp}");
    assert!(!resp.contains("problem+json"), "{resp}");
}

#[test]
fn a_stalled_upstream_body_does_not_hold_the_client_connection_forever() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
        Duration::ZERO,
        b"hello",
        Duration::from_secs(20),
    );
    let gw = Gateway::start(&config(up, "  idle_timeout: 1s"));
    let mut conn = RawConn::connect(gw.addr("main"));
    conn.stream.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let started = Instant::now();
    // idle_timeout is 1 s; the stalled upstream would hold it for 20 s.
    let (resp, closed) = read_until_close(&mut conn.stream, Duration::from_secs(15));
    assert!(closed, "still open after {:?}: {resp}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(15), "closed after {:?}", started.elapsed());
    assert!(resp.ends_with("hello"), "{resp}");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_header_read_timeout() {
    let (_up, gw) = start("  header_read_timeout: 1s\n  idle_timeout: 30s");
    let mut silent = RawConn::connect(gw.addr("main"));
    let started = Instant::now();
    assert!(silent.closed_within(Duration::from_secs(15)), "silent connection still open");
    let took = started.elapsed();
    // header_read_timeout (1 s), not idle_timeout (30 s)
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(15), "closed after {took:?}");
}

/// Issue 9, item 8: a long framing line used to stop the raw-head scanner, and with it the head
/// deadline, for the rest of the connection. The deadline now holds for every head, whatever the bytes.
#[test]
fn the_head_deadline_holds_after_a_long_transfer_encoding_line() {
    let (up, gw) = start("  header_read_timeout: 1s\n  idle_timeout: 60s");
    let mut conn = RawConn::connect(gw.addr("main"));
    let first =
        format!("POST /long-te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:{}chunked\r\n\r\n0\r\n\r\n", " ".repeat(300));
    let resp = conn.send(first.as_bytes(), T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    // The next head, one byte at a time: progress never extends the deadline.
    let mut trickle = conn.stream.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        for b in b"GET /next HTTP/1.1\r\nHost: a\r\nX-Slow: ".iter().chain([b'a'; 200].iter()) {
            if trickle.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let started = Instant::now();
    let (resp, closed) = read_until_close(&mut conn.stream, Duration::from_secs(15));
    assert!(closed, "the trickled head was not cut off: {resp}");
    assert!(started.elapsed() < Duration::from_secs(10), "closed only after {:?}", started.elapsed());
    assert!(!resp.contains("200 OK"), "{resp}");
    trickler.join().unwrap();
    assert_eq!(up.hits(), 1);
}

/// Issue 9, item 9: a chunked trailer ended by a bare LF, then a bare-LF request on the same
/// connection. The framer and hyper used to disagree on where the trailer ended.
#[test]
fn a_bare_lf_request_after_a_chunked_trailer_is_never_served() {
    let (up, gw) = start("");
    let addrs = gw.addr("main");
    for trailer in ["0\r\nX: y\n\r\n", "0\r\nX: y\r\n\n", "0\n\n", "0\r\n\n"] {
        let req = format!(
            "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{trailer}GET /bare HTTP/1.1\nHost: x\n\n"
        );
        let (resp, closed) = raw_until_close(addrs, req.as_bytes(), T);
        assert!(closed, "{trailer:?}: {resp}");
        assert!(resp.matches("HTTP/1.1 ").count() <= 1, "{trailer:?}: {resp}");
        assert!(!resp.contains("/bare"), "{trailer:?}: {resp}");
        if !resp.is_empty() {
            assert_eq!(status_of(&resp), 400, "{trailer:?}: {resp}");
        }
    }
    let paths: Vec<String> = up.all_seen().into_iter().map(|s| s.path_and_query).collect();
    assert!(!paths.iter().any(|p| p == "/bare"), "the upstream received {paths:?}");
    assert!(!paths.iter().any(|p| p == "/first"), "an incomplete body was forwarded whole: {paths:?}");
}

const HEAD_KEYS_ENV: &str = "PORTCULLIS_TEST_HEAD_KEYS_HMAC";

/// Issue 9, item 10: HEAD to an answer the gateway makes itself, over HTTP/2 (TLS, ALPN h2) and
/// HTTP/1.1, with real curl: the head of the answer, no body, a clean end of stream.
#[test]
fn head_requests_to_the_gateways_own_answers_end_cleanly_over_h2_and_h1() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let store = path_str(&dir.path("keys.db"));
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
    tls:
      certificates:
        - self_signed: [gw.test, 127.0.0.1]
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HEAD_KEYS_ENV}}}
      store: {store}
routes:
  - name: keyed
    match:
      path: {{ prefix: /keyed }}
    upstream: app
    auth: keys
    authorize: authenticated
  - name: ro
    match:
      path: {{ prefix: /ro }}
      methods: [GET]
    upstream: app
    auth: none
admin:
  address: 127.0.0.1:0
"#,
        up = up.addr
    );
    let gw = Gateway::start_with_env(&yaml, &[(HEAD_KEYS_ENV, "head-test-secret-0123456789abcdef")]);
    let base = format!("https://127.0.0.1:{}", gw.addr("main").port());
    // (path, status): no route, no credential, an invalid path.
    let cases = [("/nowhere", 404), ("/keyed/x", 401), ("/ro/a/../b", 400)];
    for version in ["--http2", "--http1.1"] {
        for (path, want) in cases {
            let url = format!("{base}{path}");
            let out = std::process::Command::new("curl")
                .args(["-skI", "--path-as-is", "--max-time", "10", version, "-w", "%{http_version} %{http_code}", &url])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{version} HEAD {path}: curl failed ({:?}): {stderr}\n{stdout}", out.status);
            let want_version = if version == "--http2" { "2" } else { "1.1" };
            assert!(stdout.ends_with(&format!("{want_version} {want}")), "{version} HEAD {path}: {stdout}");
            assert!(stdout.to_ascii_lowercase().contains("content-type: application/problem+json"), "{stdout}");
        }
    }
    assert_eq!(up.hits(), 0);
}

/// Issue 9, item 11: an HTTP/2 connection with no stream open is closed after idle_timeout even though
/// the client answers every PING (the server's keep-alive PINGs used to count as activity).
#[test]
fn an_idle_h2_connection_that_answers_pings_is_closed() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&h2c_config(up.addr).replace("limits:\n", "limits:\n  idle_timeout: 1s\n"));
    let addr = gw.addr("main");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let outcome = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
        // One request first, so the connection is known to work; then nothing but PING answers
        // (the h2 crate answers PINGs by itself while the connection is driven).
        let req = http::Request::get(format!("http://{addr}/first")).body(()).unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let driver = tokio::spawn(conn);
        let status = resp.await.unwrap().status();
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(20), driver).await;
        (status, ended.is_ok(), started.elapsed(), client)
    });
    let (status, ended, took, _client) = outcome;
    assert_eq!(status, 200);
    assert!(ended, "the idle HTTP/2 connection was still open after 20 s");
    assert!(took < Duration::from_secs(15), "closed only after {took:?}");
    assert_eq!(up.hits(), 1);
}

/// Issue 9, item 12: IPv6 clients are counted by their /64 (one host usually owns all of it).
#[test]
fn ipv6_clients_are_limited_by_prefix() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let up = Upstream::start("app");
    let yaml = config(up.addr, "  max_connections_per_ip: 2")
        .replace("address: 127.0.0.1:0\nlimits", "address: \"[::1]:0\"\nlimits");
    let gw = Gateway::start(&yaml);
    let addr = gw.addr("main");
    assert!(addr.is_ipv6(), "{addr}");
    let mut a = RawConn::connect(addr);
    let mut b = RawConn::connect(addr);
    assert_eq!(status_of(&a.get("/a", T)), 200);
    assert_eq!(status_of(&b.get("/b", T)), 200);
    // ::1 is one /64 with itself: a third connection is over the limit (a /128 count says the same, so
    // the prefix itself is checked by the unit test `ipv6_clients_are_counted_by_prefix`).
    let mut c = RawConn::connect(addr);
    assert!(c.closed_within(T), "a third connection from the same /64 was kept");
    drop(a);
    drop(b);
    assert_eq!(up.hits(), 2);
}

/// Issue 9, item 12: the admin listener has a connection limit and a head deadline of its own.
#[test]
fn the_admin_listener_cuts_off_slow_heads() {
    let (_up, gw) = start("  header_read_timeout: 1s\n  idle_timeout: 60s");
    let admin = gw.addr("admin");
    let mut stalled = TcpStream::connect(admin).unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n").unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_close(&mut stalled, Duration::from_secs(15));
    assert!(closed, "a stalled admin head was kept open");
    assert!(started.elapsed() < Duration::from_secs(10), "closed only after {:?}", started.elapsed());
    drop(gw);
    // More connections than its per-client limit (16): the rest are closed at once.
    let (_up, gw) = start("  header_read_timeout: 30s\n  idle_timeout: 60s");
    let admin = gw.addr("admin");
    let mut conns: Vec<Option<TcpStream>> = (0..80).map(|_| TcpStream::connect(admin).ok()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    while closed < 64 && Instant::now() < deadline {
        for slot in conns.iter_mut() {
            if let Some(c) = slot {
                if read_until_close(c, Duration::from_millis(10)).1 {
                    closed += 1;
                    *slot = None;
                }
            }
        }
    }
    assert!(closed >= 64, "only {closed} of 80 admin connections from one client were refused");
    // Once those close, the client is served again.
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut code = 0;
    while code != 200 && Instant::now() < deadline {
        code = curl(&[&format!("http://{admin}/healthz")]).0;
    }
    assert_eq!(code, 200);
}
