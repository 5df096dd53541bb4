//! Differential request-smuggling suite: raw request bytes from the published smuggling families
//! (CL.TE, TE.CL, TE.TE with obfuscated `Transfer-Encoding`, chunk-size tricks, LF-only lines, odd bytes in
//! names, `Content-Length` lists and signs), each followed on the same connection by a pipelined request.
//!
//! The upstream is a raw TCP recorder written here, not an HTTP library: it reads what the gateway sends
//! byte by byte and records every complete request. For every case, either
//! - the gateway refuses it (one 4xx answer, the connection closed) and the recorder received no
//!   complete request of the case, the pipelined one included; or
//! - the upstream received exactly the case's request, once, with exactly the body the canonical reading
//!   gives, and then the pipelined request, once; and the client got two answers.
//!
//! One gateway serves the whole table; each case uses its own path prefix to tell its requests apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A complete request as the recorder read it off the wire.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// The raw recorder: every complete request it read, and how many requests it saw begin but not end.
#[derive(Default)]
struct Log {
    complete: Vec<Recorded>,
    incomplete: Vec<String>,
}

fn recorder() -> (SocketAddr, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let log = shared.clone();
            std::thread::spawn(move || serve_recorded(stream, &log));
        }
    });
    (addr, log)
}

/// Reads requests off one upstream connection, strictly, and answers each with a small 200.
fn serve_recorded(stream: TcpStream, log: &Mutex<Log>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let (mut length, mut chunked) = (None, false);
        let complete_head = loop {
            let mut h = String::new();
            match r.read_line(&mut h) {
                Ok(0) | Err(_) => break false,
                Ok(_) => {}
            }
            if h == "\r\n" {
                break true;
            }
            let (name, value) = h.split_once(':').unwrap_or((&h, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        };
        let body = if !complete_head {
            None
        } else if chunked {
            read_chunked(&mut r)
        } else {
            let mut body = vec![0; length.unwrap_or(0)];
            r.read_exact(&mut body).ok().map(|_| body)
        };
        let mut log = log.lock().unwrap();
        match body {
            Some(body) => log.complete.push(Recorded { method, target, body }),
            None => {
                log.incomplete.push(target);
                return;
            }
        }
        drop(log);
        if writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
            return;
        }
    }
}

fn read_chunked(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim_end().split(';').next()?, 16).ok()?;
        if n == 0 {
            loop {
                let mut t = String::new();
                if r.read_line(&mut t).ok()? == 0 {
                    return None;
                }
                if t == "\r\n" {
                    return Some(body);
                }
            }
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..n]);
    }
}

/// What a case must come to.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// A 4xx answer, nothing forwarded.
    Refused,
    /// Forwarded once with this body (then the pipelined request is served too).
    Forwarded(&'static [u8]),
}

const HEAD: &str = "POST {P}/x HTTP/1.1\r\nHost: a\r\n";

/// The cases: name, the bytes after the request line and `Host` (`HEAD`), and what must happen.
/// `{P}` in a case is replaced with the case's own path prefix.
fn cases() -> Vec<(&'static str, String, Want)> {
    use Want::*;
    let c = |name: &'static str, rest: &str, want: Want| (name, format!("{HEAD}{rest}"), want);
    let raw = |name: &'static str, all: &str, want: Want| (name, all.to_owned(), want);
    let body = "5\r\nhello\r\n0\r\n\r\n";
    vec![
        // Controls: the canonical forms are forwarded.
        c("control: content-length", "Content-Length: 5\r\n\r\nhello", Forwarded(b"hello")),
        c("control: chunked", &format!("Transfer-Encoding: chunked\r\n\r\n{body}"), Forwarded(b"hello")),
        raw("control: GET", "GET {P}/x HTTP/1.1\r\nHost: a\r\n\r\n", Forwarded(b"")),
        // CL.TE and TE.CL.
        c("CL.TE", &format!("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n{body}"), Refused),
        c("TE.CL", &format!("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{body}"), Refused),
        c("CL 0 with TE", &format!("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n{body}"), Refused),
        // TE.TE: obfuscated Transfer-Encoding.
        c("TE space before colon", &format!("Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n{body}"), Refused),
        c("TE tab before colon", &format!("Transfer-Encoding\t: chunked\r\n\r\n{body}"), Refused),
        c("TE vertical tab", &format!("Transfer-Encoding:\x0bchunked\r\n\r\n{body}"), Refused),
        c("TE form feed", &format!("Transfer-Encoding: \x0cchunked\r\n\r\n{body}"), Refused),
        c("TE xchunked", &format!("Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\n{body}"), Refused),
        c("TE chunkedx", &format!("Transfer-Encoding: chunkedx\r\n\r\n{body}"), Refused),
        c(
            "TE chunked twice",
            &format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{body}"),
            Refused,
        ),
        c("TE chunked then x", &format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n{body}"), Refused),
        c("TE list chunked, chunked", &format!("Transfer-Encoding: chunked, chunked\r\n\r\n{body}"), Refused),
        c("TE list identity, chunked", &format!("Transfer-Encoding: identity, chunked\r\n\r\n{body}"), Refused),
        c("TE list chunked, identity", &format!("Transfer-Encoding: chunked, identity\r\n\r\n{body}"), Refused),
        c("TE list gzip, chunked", &format!("Transfer-Encoding: gzip, chunked\r\n\r\n{body}"), Refused),
        c("TE folded", &format!("Transfer-Encoding:\r\n chunked\r\n\r\n{body}"), Refused),
        c("TE after a folded line", &format!("X: a\r\n Transfer-Encoding: chunked\r\n\r\n{body}"), Refused),
        c("TE quoted", &format!("Transfer-Encoding: \"chunked\"\r\n\r\n{body}"), Refused),
        c("TE empty with CL", "Transfer-Encoding:\r\nContent-Length: 5\r\n\r\nhello", Refused),
        c("TE OWS", &format!("Transfer-Encoding: \t chunked \t\r\n\r\n{body}"), Forwarded(b"hello")),
        c("TE upper case", &format!("TRANSFER-ENCODING: CHUNKED\r\n\r\n{body}"), Forwarded(b"hello")),
        c(
            "TE with 300 spaces",
            &format!("Transfer-Encoding:{}chunked\r\n\r\n{body}", " ".repeat(300)),
            Forwarded(b"hello"),
        ),
        c(
            "Transfer_Encoding is not TE",
            "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
            Forwarded(b"hello"),
        ),
        raw(
            "TE in HTTP/1.0",
            &format!("POST {{P}}/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}"),
            Refused,
        ),
        // Chunk sizes.
        c(
            "chunk size leading zeros",
            "Transfer-Encoding: chunked\r\n\r\n0005\r\nhello\r\n0000\r\n\r\n",
            Forwarded(b"hello"),
        ),
        c("chunk extension", "Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0;c\r\n\r\n", Forwarded(b"hello")),
        c("chunk size +5", "Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk size -5", "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk size 0x5", "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk size leading space", "Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk size trailing space", "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk size space before extension", "Transfer-Encoding: chunked\r\n\r\n5 ;a\r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk size overflow", "Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", Refused),
        // (A chunk declared as large as 16 hex digits allow is valid framing: the gateway waits for its
        // data, as any reader would. Data past the body limit is refused.)
        c(
            "chunk past the body limit",
            &format!("Transfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n", "a".repeat(2000)),
            Refused,
        ),
        c("chunk size empty", "Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk longer than its size", "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", Refused),
        c("chunk without its CRLF", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n", Refused),
        c("last chunk without the final CRLF", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", Refused),
        // LF-only and CR-only lines.
        raw("LF-only request", "POST {P}/x HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello", Refused),
        c("LF-only header line", "Content-Length: 5\n\r\nhello", Refused),
        c("LF-only end of head", "Content-Length: 5\r\n\nhello", Refused),
        c("bare CR in a header", "X: a\rContent-Length: 5\r\n\r\nhello", Refused),
        c("LF-only chunk size line", "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", Refused),
        c("LF-only after chunk data", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", Refused),
        c("LF-only last chunk", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\r\n", Refused),
        c("LF-only trailer", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\n\r\n", Refused),
        c("LF-only end of trailers", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n", Refused),
        // NUL and other bytes in names and values.
        c("NUL in a name", "X\x00Y: 1\r\nContent-Length: 5\r\n\r\nhello", Refused),
        c("NUL after content-length", "Content-Length\x00: 5\r\n\r\nhello", Refused),
        c("NUL in transfer-encoding", &format!("Transfer-Encoding\x00: chunked\r\n\r\n{body}"), Refused),
        c("space in a name", "X Y: 1\r\nContent-Length: 5\r\n\r\nhello", Refused),
        c("DEL in a name", "X\x7fY: 1\r\nContent-Length: 5\r\n\r\nhello", Refused),
        c("non-ASCII in a name", "Tr\u{e4}nsfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", Refused),
        c("empty name", ": x\r\nContent-Length: 5\r\n\r\nhello", Refused),
        c("NUL in a value", "Content-Length: 5\x00\r\n\r\nhello", Refused),
        c("NUL in another value", "X: a\x00b\r\nContent-Length: 5\r\n\r\nhello", Refused),
        // Content-Length lists and signs.
        c("CL list", "Content-Length: 5, 5\r\n\r\nhello", Refused),
        c("CL list no space", "Content-Length: 5,5\r\n\r\nhello", Refused),
        c("CL twice, equal", "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", Refused),
        c("CL twice, different", "Content-Length: 5\r\nContent-Length: 3\r\n\r\nhello", Refused),
        c("CL +5", "Content-Length: +5\r\n\r\nhello", Refused),
        c("CL -5", "Content-Length: -5\r\n\r\nhello", Refused),
        c("CL 0x5", "Content-Length: 0x5\r\n\r\nhello", Refused),
        c("CL 5 5", "Content-Length: 5 5\r\n\r\nhello", Refused),
        c("CL empty", "Content-Length:\r\n\r\nhello", Refused),
        c("CL overflow", "Content-Length: 18446744073709551621\r\n\r\nhello", Refused),
        c("CL leading zeros", "Content-Length: 005\r\n\r\nhello", Forwarded(b"hello")),
        c("CL with OWS", "Content-Length: \t5 \r\n\r\nhello", Forwarded(b"hello")),
        // Request lines.
        raw("HTTP/0.9", "GET {P}/x\r\n\r\n", Refused),
        raw("HTTP/1.2", "GET {P}/x HTTP/1.2\r\nHost: a\r\n\r\n", Refused),
        raw("two spaces", "GET  {P}/x HTTP/1.1\r\nHost: a\r\n\r\n", Refused),
        raw("fragment in target", "GET {P}/x#y HTTP/1.1\r\nHost: a\r\n\r\n", Refused),
    ]
}

fn config(up: SocketAddr) -> String {
    format!(
        r#"workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
limits:
  max_body_bytes: 1KiB
upstreams:
  app:
    targets:
      - address: {up}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: none
logging:
  level: info
  access_log: false
"#
    )
}

/// The statuses of the answers in `resp`, in order.
fn statuses(resp: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(resp);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(i) = rest.find("HTTP/1.1 ") {
        if i == 0 || rest[..i].ends_with('\n') || rest[..i].ends_with("ok") || rest[..i].ends_with('}') {
            if let Some(code) = rest[i + 9..].get(..3).and_then(|c| c.parse().ok()) {
                out.push(code);
            }
        }
        rest = &rest[i + 9..];
    }
    out
}

fn run_case(addr: SocketAddr, log: &Mutex<Log>, n: usize, name: &str, bytes: &str, want: Want) -> Option<String> {
    let prefix = format!("/c{n}");
    let mut req = bytes.replace("{P}", &prefix).into_bytes();
    req.extend_from_slice(
        format!("GET {prefix}/pipelined HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(&req);
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(10));
    let got = statuses(resp.as_bytes());
    // What reached the upstream for this case; a request the gateway started forwarding and then
    // abandoned (its body was refused midway) may still be in flight to the recorder: wait for it.
    let ours = |r: &Recorded| r.target.starts_with(&format!("{prefix}/"));
    let deadline = Instant::now() + Duration::from_secs(2);
    let seen: Vec<Recorded> = loop {
        let seen: Vec<Recorded> = log.lock().unwrap().complete.iter().filter(|r| ours(r)).cloned().collect();
        let settled = match want {
            Want::Forwarded(_) => seen.len() >= 2,
            Want::Refused => true,
        };
        if settled || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let fail =
        |why: &str| Some(format!("{name}: {why}; answers {got:?}, closed={closed}, upstream saw {seen:?}\n{resp}"));
    if !closed {
        return fail("the connection was not closed");
    }
    match want {
        Want::Refused => {
            if got.len() != 1 || !(400..500).contains(&got[0]) {
                return fail("expected exactly one 4xx answer");
            }
            if !seen.is_empty() {
                return fail("a refused request (or what followed it) reached the upstream");
            }
        }
        Want::Forwarded(body) => {
            if got != [200, 200] {
                return fail("expected two 200 answers");
            }
            let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
            let expected = [format!("{prefix}/x"), format!("{prefix}/pipelined")];
            if targets != expected {
                return fail("expected the request, then the pipelined one, each once");
            }
            if seen[0].body != body || !seen[1].body.is_empty() || seen[1].method != "GET" {
                return fail("the upstream's body differs from the canonical reading");
            }
        }
    }
    None
}

#[test]
fn every_smuggling_family_is_refused_or_forwarded_exactly_once() {
    let (up, log) = recorder();
    let gw = Gateway::start(&config(up));
    let addr = gw.addr("main");
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(n, (name, bytes, want))| run_case(addr, &log, n, name, bytes, *want))
        .collect();
    assert!(failures.is_empty(), "{} of {} case(s) failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
    // Nothing reached the upstream outside the cases' own requests.
    let log = log.lock().unwrap();
    let stray: Vec<&Recorded> =
        log.complete.iter().filter(|r| !r.target.ends_with("/x") && !r.target.ends_with("/pipelined")).collect();
    assert!(stray.is_empty(), "{stray:?}");
    eprintln!("{} cases; upstream requests abandoned midway by the gateway: {:?}", cases.len(), log.incomplete);
}

/// A refused head after good pipelined requests: the good ones are served first, in order, then the
/// refusal's answer, and nothing after it.
#[test]
fn a_refused_head_is_answered_after_the_pipelined_requests_before_it() {
    let (up, log) = recorder();
    let gw = Gateway::start(&config(up));
    let req = b"GET /p/1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /p/2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
        GET /p/3 HTTP/1.1\nHost: a\n\nGET /p/4 HTTP/1.1\r\nHost: a\r\n\r\n";
    for step in [req.len(), 7, 1] {
        let mut s = TcpStream::connect(gw.addr("main")).unwrap();
        s.set_nodelay(true).unwrap();
        for chunk in req.chunks(step) {
            let _ = s.write_all(chunk);
        }
        let (resp, closed) = read_until_close(&mut s, Duration::from_secs(10));
        assert!(closed, "step {step}: {resp}");
        assert_eq!(statuses(resp.as_bytes()), [200, 200, 400], "step {step}: {resp}");
        assert!(resp.contains("application/problem+json"), "{resp}");
    }
    let log = log.lock().unwrap();
    let targets: Vec<&str> = log.complete.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/p/1", "/p/2", "/p/1", "/p/2", "/p/1", "/p/2"]);
    assert!(log.complete.iter().filter(|r| r.target == "/p/2").all(|r| r.body == b"hello"));
}
