//! Connection scale (issue 10), at a size CI can afford: thousands of idle connections cost a few KiB
//! each, and the connection limits and timeouts hold for all of them. `bench/idle.sh` measures the
//! same at 10,000 and more, against NGINX.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn config(up: SocketAddr, limits: &str) -> String {
    basic_config(up, "").replace("logging:\n", &format!("limits:\n{limits}logging:\n"))
}

/// The test process holds thousands of sockets too.
fn raise_open_files() {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(limit >= 5000, "open-file limit {limit} is too low for this test");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn active_connections(gw: &Gateway) -> f64 {
    metric(&gw.metrics(), "portcullis_active_connections").unwrap_or(-1.0)
}

/// Polls until `active_connections` is `want` (the metrics request's own connection not counted: it
/// goes to the admin listener).
fn wait_active(gw: &Gateway, want: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = active_connections(gw);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open_with_request(addr: SocketAddr, n: usize) -> Vec<RawConn> {
    (0..n)
        .map(|i| {
            let mut c = RawConn::connect(addr);
            let resp = c.get(&format!("/idle/{i}"), T);
            assert_eq!(status_of(&resp), 200, "connection {i}: {resp}");
            c
        })
        .collect()
}

#[test]
fn two_thousand_idle_connections_cost_a_few_kib_each() {
    raise_open_files();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "  max_connections: 5000\n  max_connections_per_ip: 5000\n"));
    let addr = gw.addr("main");
    // Warm up (allocator, upstream pool, metrics), then the baseline.
    drop(open_with_request(addr, 50));
    assert_eq!(wait_active(&gw, 0.0, T), 0.0);
    let before = rss_kib(gw.pid());
    let n = 2000;
    let mut conns = open_with_request(addr, n);
    assert_eq!(wait_active(&gw, n as f64, T), n as f64, "every connection is counted before RSS is read");
    // Connections at rest park at the next sweep (every 250 ms): poll to a deadline.
    let bound_kib = 8.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let per_conn = loop {
        let per_conn = rss_kib(gw.pid()).saturating_sub(before) as f64 / n as f64;
        if per_conn <= bound_kib || Instant::now() > deadline {
            break per_conn;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Before issue 10 each idle connection held hyper's 8 KiB read and write buffers and a watchdog
    // task: about 34 KiB.
    assert!(per_conn <= bound_kib, "{per_conn:.1} KiB per idle connection (bound {bound_kib} KiB)");
    // Parked connections serve their next request as before.
    for (i, c) in conns.iter_mut().enumerate().step_by(20) {
        let resp = c.get(&format!("/again/{i}"), T);
        assert_eq!(status_of(&resp), 200, "connection {i}: {resp}");
    }
    assert_eq!(up.hits(), 50 + n + n / 20);
}

#[test]
fn max_connections_is_exact_with_a_thousand_clients() {
    raise_open_files();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "  max_connections: 1000\n  max_connections_per_ip: 5000\n"));
    let addr = gw.addr("main");
    let mut conns: Vec<TcpStream> = (0..1100).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let (mut served, mut refused) = (0, 0);
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(T)).unwrap();
        let _ = c.write_all(format!("GET /n/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let mut buf = [0u8; 256];
        match c.read(&mut buf) {
            Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200") => served += 1,
            Ok(0) | Err(_) => refused += 1,
            Ok(n) => panic!("unexpected answer: {}", String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert_eq!((served, refused), (1000, 100));
    assert_eq!(active_connections(&gw), 1000.0);
    let m = gw.metrics();
    assert_eq!(metric(&m, "portcullis_rejected_connections_total{reason=\"max_connections\"}"), Some(100.0), "{m}");
    assert_eq!(up.hits(), 1000);
}

#[test]
fn timeouts_close_thousands_of_silent_and_idle_connections() {
    raise_open_files();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(
        up.addr,
        "  max_connections: 5000\n  max_connections_per_ip: 5000\n  header_read_timeout: 2s\n  idle_timeout: 3s\n",
    ));
    let addr = gw.addr("main");
    // 1,000 connections that never send a byte, and 1,000 that send one request and then stay idle.
    let mut silent: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut idle = open_with_request(addr, 1000);
    // All closed by the gateway on its own: the silent ones by header_read_timeout, the idle ones
    // by idle_timeout (bounds on a single connection's timing are in tests/http_hostile.rs).
    assert_eq!(wait_active(&gw, 0.0, Duration::from_secs(60)), 0.0, "connections left open");
    for (i, s) in silent.iter_mut().enumerate() {
        let (resp, closed) = read_until_close(s, T);
        assert!(closed && !resp.contains("200 OK"), "silent connection {i}: {resp}");
    }
    for (i, c) in idle.iter_mut().enumerate() {
        assert!(c.closed_within(T), "idle connection {i} still open");
    }
    assert_eq!(up.hits(), 1000);
}
