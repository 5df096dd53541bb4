use super::*;
use crate::proxy::headers::Added;
use http_body_util::BodyExt;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

#[derive(Clone, Default)]
struct Pool(Arc<AtomicUsize>);

impl Release for Pool {
    fn release(self, _conn: Conn) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn pair() -> (Conn, DuplexStream) {
    let (a, b) = duplex(64 * 1024);
    (Conn::new(Box::new(a)), b)
}

/// A request of `method` for `target`, with `Host` and the gateway's `added` fields.
fn outgoing(method: Method, target: &str, headers: HeaderMap, added: Added) -> crate::proxy::Outgoing {
    crate::proxy::Outgoing { method, target: target.parse().unwrap(), headers, added }
}

fn get_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::HOST, HeaderValue::from_static("up.example"));
    h
}

/// Sends a GET whose response is `response` (written by the "upstream" in `parts`, split as given), and
/// returns the head, the body bytes (or the body error) and whether the connection went back to the pool.
async fn run(
    method: Method,
    parts: Vec<Vec<u8>>,
    close_after: bool,
) -> Result<(Head, Result<Vec<u8>, String>, bool), Error> {
    let (mut conn, mut upstream) = pair();
    let writer = tokio::spawn(async move {
        let mut req = vec![0u8; 4096];
        let n = upstream.read(&mut req).await.unwrap();
        req.truncate(n);
        for p in parts {
            upstream.write_all(&p).await.unwrap();
            tokio::task::yield_now().await;
        }
        if close_after {
            drop(upstream);
            None
        } else {
            Some(upstream)
        }
    });
    let head = conn
        .exchange(&outgoing(method.clone(), "/x", get_headers(), Added::default()), &mut LimitedBody::empty())
        .await;
    let head = match head {
        Ok(h) => h,
        Err(e) => return Err(e),
    };
    let pool = Pool::default();
    let summary =
        Head { status: head.status, headers: head.headers.clone(), framing: head.framing, keep_alive: head.keep_alive };
    let body = ResponseBody::new(conn, &head, pool.clone());
    let collected = tokio::time::timeout(std::time::Duration::from_secs(5), body.collect()).await.expect("body hung");
    let _keep = writer.await.unwrap();
    let bytes = collected.map(|c| c.to_bytes().to_vec()).map_err(|e| e.to_string());
    Ok((summary, bytes, pool.0.load(Ordering::Relaxed) == 1))
}

fn one(s: &str) -> Vec<Vec<u8>> {
    vec![s.as_bytes().to_vec()]
}

#[tokio::test]
async fn content_length_response_returns_the_connection() {
    let (head, body, pooled) =
        run(Method::GET, one("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"), false).await.unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["x-a"], "b");
    assert_eq!(head.framing, Framing::Length(5));
    assert_eq!(body.unwrap(), b"hello");
    assert!(pooled);
}

#[tokio::test]
async fn request_is_written_in_origin_form_with_framing() {
    let (mut conn, mut upstream) = pair();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"body!") {
            let n = upstream.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        upstream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        (got, upstream)
    });
    let mut headers = get_headers();
    // A client's framing headers are replaced by the gateway's own.
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
    headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    let mut body = LimitedBody::full(Bytes::from_static(b"body!"));
    let mut added = Added::default();
    added.push("x-request-id", HeaderValue::from_static("abc"));
    let head = conn.exchange(&outgoing(Method::POST, "/p?q=1", headers, added), &mut body).await.unwrap();
    assert_eq!(head.status, 204);
    assert_eq!(head.framing, Framing::Empty);
    let (got, _up) = reader.await.unwrap();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "POST /p?q=1 HTTP/1.1\r\nhost: up.example\r\nx-request-id: abc\r\ncontent-length: 5\r\n\r\nbody!"
    );
}

#[tokio::test]
async fn empty_post_says_content_length_zero_and_get_says_nothing() {
    for (method, expect) in [(Method::POST, "content-length: 0\r\n"), (Method::GET, "")] {
        let (mut conn, mut upstream) = pair();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\n") {
                let n = upstream.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            upstream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            (got, upstream)
        });
        conn.exchange(&outgoing(method.clone(), "/", get_headers(), Added::default()), &mut LimitedBody::empty())
            .await
            .unwrap();
        let (got, _up) = reader.await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("{method} / HTTP/1.1\r\nhost: up.example\r\n{expect}\r\n"));
    }
}

#[tokio::test]
async fn chunked_response_is_decoded_and_trailers_dropped() {
    let resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n";
    let (head, body, pooled) = run(Method::GET, one(resp), false).await.unwrap();
    assert_eq!(head.framing, Framing::Chunked);
    assert_eq!(body.unwrap(), b"hello world");
    assert!(pooled);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let resp = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
    let (head, body, _) = run(Method::GET, one(resp), false).await.unwrap();
    assert_eq!(head.status, 201);
    assert!(!head.headers.contains_key("link"));
    assert_eq!(body.unwrap(), b"ok");
}

#[tokio::test]
async fn head_and_not_modified_have_no_body() {
    let (head, body, pooled) =
        run(Method::HEAD, one("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"), false).await.unwrap();
    assert_eq!(head.framing, Framing::Empty);
    assert_eq!(head.headers["content-length"], "100");
    assert_eq!(body.unwrap(), b"");
    assert!(pooled);
    let (head, _, pooled) =
        run(Method::GET, one("HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n"), false).await.unwrap();
    assert_eq!(head.framing, Framing::Empty);
    assert!(pooled);
}

#[tokio::test]
async fn close_delimited_body_reads_to_the_end_and_is_not_reused() {
    let (head, body, pooled) = run(Method::GET, one("HTTP/1.1 200 OK\r\n\r\nuntil the end"), true).await.unwrap();
    assert_eq!(head.framing, Framing::Close);
    assert_eq!(body.unwrap(), b"until the end");
    assert!(!pooled);
}

#[tokio::test]
async fn connection_close_and_http10_are_not_reused() {
    let (_, body, pooled) =
        run(Method::GET, one("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\ncontent-length: 1\r\n\r\nx"), false)
            .await
            .unwrap();
    assert_eq!(body.unwrap(), b"x");
    assert!(!pooled);
    let (_, _, pooled) = run(Method::GET, one("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx"), false).await.unwrap();
    assert!(!pooled);
}

#[tokio::test]
async fn bytes_after_the_response_make_the_connection_unusable() {
    let (_, body, pooled) =
        run(Method::GET, one("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n"), false).await.unwrap();
    assert_eq!(body.unwrap(), b"x");
    assert!(!pooled, "a smuggled second response must never be read as the next request's");
}

#[tokio::test]
async fn ambiguous_or_malformed_responses_are_refused() {
    let cases = [
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad header: x\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTP/1.1 200 OK\r\n\r\n",
    ];
    for case in cases {
        match run(Method::GET, one(case), false).await {
            Err(Error::Protocol(_)) => {}
            other => panic!("{case:?} gave {:?}", other.map(|(h, b, _)| (h.status, b))),
        }
    }
}

#[tokio::test]
async fn broken_chunked_bodies_fail_the_body() {
    let cases = [
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
    ];
    for case in cases {
        let (_, body, pooled) = run(Method::GET, one(case), true).await.unwrap();
        assert!(body.is_err(), "{case:?}");
        assert!(!pooled);
    }
    let (_, body, _) = run(Method::GET, one("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"), true).await.unwrap();
    assert!(body.is_err(), "a body cut short is an error, not a short success");
}

#[tokio::test]
async fn oversized_heads_and_chunk_lines_are_refused() {
    let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n", "a".repeat(MAX_HEAD));
    assert!(matches!(run(Method::GET, one(&big), false).await, Err(Error::Protocol(_))));
    let line = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;{}", "e".repeat(MAX_CHUNK_META + 10));
    let (_, body, _) = run(Method::GET, one(&line), false).await.unwrap();
    assert!(body.is_err());
}

#[tokio::test]
async fn a_closed_connection_is_reported_as_closed() {
    let (mut conn, upstream) = pair();
    drop(upstream);
    let r =
        conn.exchange(&outgoing(Method::GET, "/", get_headers(), Added::default()), &mut LimitedBody::empty()).await;
    assert!(matches!(r, Err(Error::Closed { .. })), "{r:?}");

    let (mut conn, mut upstream) = pair();
    let t = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let _ = upstream.read(&mut buf).await;
        // reads the request, then closes without answering
    });
    let r =
        conn.exchange(&outgoing(Method::GET, "/", get_headers(), Added::default()), &mut LimitedBody::empty()).await;
    t.await.unwrap();
    assert!(matches!(r, Err(Error::Closed { sent: true })), "{r:?}");
}

#[tokio::test]
async fn idle_connection_reuse_check() {
    let (mut conn, upstream) = pair();
    assert!(conn.reusable());
    drop(upstream);
    assert!(!conn.reusable(), "a connection the upstream closed is not reused");
    let (mut conn, mut upstream) = pair();
    upstream.write_all(b"unasked").await.unwrap();
    assert!(!conn.reusable(), "a connection with unasked bytes is not reused");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// However the upstream's bytes are split across reads, the decoded body is the same.
    #[test]
    fn chunked_decoding_ignores_read_boundaries(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let mut expect = Vec::new();
        for c in &chunks {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
            expect.extend_from_slice(c);
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
        points.sort_unstable();
        points.dedup();
        let mut parts = Vec::new();
        let mut prev = 0;
        for p in points {
            parts.push(wire[prev..p].to_vec());
            prev = p;
        }
        parts.push(wire[prev..].to_vec());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_, body, pooled) = rt.block_on(run(Method::GET, parts, false)).unwrap();
        prop_assert_eq!(body.unwrap(), expect);
        prop_assert!(pooled);
    }
}

#[tokio::test]
async fn exchange_until_gives_up_at_the_deadline_and_reuses_its_timer() {
    let (mut conn, mut upstream) = pair();
    let answered = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        // The first request is answered; the second never is.
        let _ = upstream.read(&mut buf).await;
        upstream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        let _ = upstream.read(&mut buf).await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        drop(upstream);
    });
    let soon = |ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    let get = outgoing(Method::GET, "/", get_headers(), Added::default());
    let first = conn.exchange_until(soon(2000), &get, &mut LimitedBody::empty()).await;
    assert_eq!(first.unwrap().unwrap().status, 204);
    let started = std::time::Instant::now();
    let second = conn.exchange_until(soon(100), &get, &mut LimitedBody::empty()).await;
    assert!(second.is_none(), "the deadline came first");
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(90) && waited < std::time::Duration::from_secs(2), "{waited:?}");
    answered.abort();
}

/// The names `classify` recognises give what `HeaderName::from_bytes` gives, whatever their case, and
/// every other name is left to it.
#[test]
fn classified_names_match_the_general_parser() {
    for name in [
        "Date",
        "ETAG",
        "vary",
        "Location",
        "Set-Cookie",
        "content-type",
        "Cache-Control",
        "Last-Modified",
        "Content-Length",
        "CONTENT-ENCODING",
        "Connection",
        "transfer-Encoding",
    ] {
        let field = classify(name.as_bytes());
        assert_ne!(field, Field::Other, "{name}");
        assert_eq!(Field::from_code(field.code()), field);
        assert_eq!(field_name(field, b"").unwrap(), HeaderName::from_bytes(name.as_bytes()).unwrap(), "{name}");
    }
    for other in ["dates", "x-date", "content-typ", "server", "", "content_length", "connectio"] {
        assert_eq!(classify(other.as_bytes()), Field::Other, "{other}");
    }
    assert!(field_name(Field::Other, b"bad name").is_err());
}
