#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Introspection under a flood of made-up opaque tokens, against an introspection endpoint served here
//! (it counts its calls): inactive answers never push active ones out of the cache, and each client
//! address has a small budget of calls about tokens the gateway has no answer for (429 beyond it, without
//! a call). Counted, never timed.
#[allow(unreachable_pub)]
mod common;

use common::*;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The endpoint: `good-*` tokens are active (`sub` = the token), others inactive; `slow-*` tokens are
/// answered (inactive) only once `release` is called.
struct Endpoint {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Endpoint {
    fn start() -> Endpoint {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (calls2, gate2) = (calls.clone(), gate.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        _ = &mut stop_rx => return,
                    };
                    let (calls, gate) = (calls2.clone(), gate2.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (calls, gate) = (calls.clone(), gate.clone());
                            async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                let form = req.into_body().collect().await.unwrap().to_bytes();
                                let form = String::from_utf8_lossy(&form).into_owned();
                                let token = form
                                    .split('&')
                                    .find_map(|kv| kv.strip_prefix("token="))
                                    .unwrap_or_default()
                                    .to_owned();
                                if token.starts_with("slow-") {
                                    gate.acquire().await.unwrap().forget();
                                }
                                let body = if token.starts_with("good-") {
                                    format!(r#"{{"active":true,"sub":"{token}","client_id":"app"}}"#)
                                } else {
                                    r#"{"active":false}"#.to_string()
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                        .unwrap(),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Endpoint { addr, calls, gate, _stop: stop }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.gate.add_permits(1000);
    }
}

fn config(up: SocketAddr, endpoint: SocketAddr) -> String {
    let method = |extra: &str| {
        format!(
            "    introspection:\n      endpoint: http://{endpoint}/introspect\n      client_id: gw\n      client_secret: gw-secret\n      timeout: 30s\n      negative_cache_ttl: 5m\n{extra}"
        )
    };
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  tight:
{tight}
  wide:
{wide}
routes:
  - name: tight
    match: {{ path: {{ prefix: /tight }} }}
    upstream: app
    auth: tight
    authorize: authenticated
  - name: wide
    match: {{ path: {{ prefix: /wide }} }}
    upstream: app
    auth: wide
    authorize: authenticated
logging:
  level: info
"#,
        tight = method("      per_ip_concurrent: 2\n      per_ip_per_minute: 5\n"),
        wide = method("      cache_size: 160\n      negative_cache_size: 160\n      per_ip_per_minute: 100000\n      per_ip_concurrent: 100\n"),
    )
}

struct Setup {
    up: Upstream,
    idp: Endpoint,
    gw: Gateway,
}

fn start() -> Setup {
    let idp = Endpoint::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, idp.addr));
    Setup { up, idp, gw }
}

fn request(path: &str, token: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes()
}

/// Sends one request on a keep-alive connection; returns the status.
fn status(conn: &mut RawConn, path: &str, token: &str) -> u16 {
    status_of(&conn.send(&request(path, token), Duration::from_secs(20)))
}

#[test]
fn a_flood_of_made_up_tokens_does_not_evict_valid_ones() {
    let s = start();
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let good: Vec<String> = (0..8).map(|i| format!("good-{i}")).collect();
    for t in &good {
        assert_eq!(status(&mut conn, "/wide", t), 200);
    }
    assert_eq!(s.idp.calls(), 8);
    // 1,000 made-up tokens: each costs one call and one inactive answer (the positive cache holds 160,
    // ten per shard: shared with these, the active answers would be pushed out).
    for i in 0..1000 {
        assert_eq!(status(&mut conn, "/wide", &format!("made-up-{i}")), 401);
    }
    assert_eq!(s.idp.calls(), 1008);
    let hits = s.up.hits();
    for t in &good {
        assert_eq!(status(&mut conn, "/wide", t), 200);
    }
    assert_eq!(s.idp.calls(), 1008, "the active answers were still cached");
    assert_eq!(s.up.hits(), hits + 8);
}

#[test]
fn unknown_tokens_have_a_budget_per_client_address() {
    let s = start();
    let mut conn = RawConn::connect(s.gw.addr("main"));
    assert_eq!(status(&mut conn, "/tight", "good-a"), 200, "one call of this minute's five");
    for i in 0..4 {
        assert_eq!(status(&mut conn, "/tight", &format!("made-up-{i}")), 401);
    }
    assert_eq!(s.idp.calls(), 5);
    // The budget is spent: refused without a call, whatever the token, unless an answer is cached.
    let hits = s.up.hits();
    let resp = conn.send(&request("/tight", "made-up-x"), Duration::from_secs(20));
    assert_eq!(status_of(&resp), 429, "{resp}");
    assert_eq!(problem_type(body_of(&resp)), problem("too-many-requests"));
    assert_eq!(status(&mut conn, "/tight", "good-b"), 429);
    assert_eq!(s.idp.calls(), 5, "no call beyond the budget");
    assert_eq!(s.up.hits(), hits);
    assert_eq!(status(&mut conn, "/tight", "good-a"), 200, "a cached active answer needs no call");
    assert_eq!(status(&mut conn, "/tight", "made-up-0"), 401, "a cached inactive answer neither");
    assert_eq!(s.idp.calls(), 5);
    // Another client address has its own budget (the whole of 127/8 is loopback).
    let (code, _, _) = curl(&[
        "--interface",
        "127.0.0.2",
        &format!("http://{}/tight", s.gw.addr("main")),
        "-H",
        "Authorization: Bearer good-c",
    ]);
    assert_eq!(code, 200);
    assert_eq!(s.idp.calls(), 6);
    assert!(s.gw.wait_log("\"reason\":\"introspection_budget\"", Duration::from_secs(5)));
}

#[test]
fn unknown_tokens_in_flight_are_bounded_per_client_address() {
    let s = start();
    let addr = s.gw.addr("main");
    // Two calls held at the endpoint (per_ip_concurrent: 2).
    let held: Vec<_> = (0..2)
        .map(|i| std::thread::spawn(move || status(&mut RawConn::connect(addr), "/tight", &format!("slow-{i}"))))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.idp.calls() < 2 {
        assert!(Instant::now() < deadline, "the held calls never reached the endpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A third unknown token from the same address: refused at once, no call.
    assert_eq!(status(&mut RawConn::connect(addr), "/tight", "made-up-third"), 429);
    assert_eq!(s.idp.calls(), 2);
    s.idp.release();
    for h in held {
        assert_eq!(h.join().unwrap(), 401);
    }
    // Their places are given back: the next unknown token is asked about.
    assert_eq!(status(&mut RawConn::connect(addr), "/tight", "made-up-fourth"), 401);
    assert_eq!(s.idp.calls(), 3);
}
