//! HTTP/2 rapid reset (CVE-2023-44487): a client that opens and immediately cancels streams as fast
//! as it can must not exhaust the gateway: other clients keep being served, and the flood's connection
//! is cut off or throttled rather than allowed to run unbounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::time::{Duration, Instant};

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
upstreams:
  app:
    targets:
      - address: {upstream}
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

/// Opens streams and resets each at once, for at most `streams` streams or `budget` time.
async fn flood(addr: std::net::SocketAddr, streams: usize, budget: Duration) -> (usize, bool) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move { conn.await.is_err() });
    let deadline = Instant::now() + budget;
    let mut sent = 0;
    while sent < streams && Instant::now() < deadline {
        let ready = tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await;
        let Ok(Ok(mut c)) = ready else { break };
        let req = http::Request::get(format!("http://{addr}/sleep/50")).body(()).unwrap();
        let Ok((_resp, mut stream)) = c.send_request(req, false) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        client = c;
    }
    drop(client);
    let conn_error =
        tokio::time::timeout(Duration::from_secs(5), driver).await.map(|r| r.unwrap_or(true)).unwrap_or(false);
    (sent, conn_error)
}

#[test]
fn rapid_reset_flood_does_not_starve_other_clients() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(up.addr));
    let addr = gw.addr("main");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let flood_task = rt.spawn(flood(addr, 2_000_000, Duration::from_secs(12)));
    // While the flood runs, an ordinary client is still served promptly.
    std::thread::sleep(Duration::from_millis(200));
    let url = format!("http://{addr}/ok");
    for _ in 0..5 {
        let started = Instant::now();
        let (code, _, body) = curl(&["--http2-prior-knowledge", &url]);
        assert_eq!(code, 200, "{body}");
        // Served while the flood runs (it stops by itself after 12 s): starvation would show as the
        // request waiting for the flood's end, or failing. The bound is far above a loaded machine's
        // curl start-up.
        assert!(started.elapsed() < Duration::from_secs(8), "served too slowly during the flood");
    }
    let (sent, conn_error) = rt.block_on(flood_task).unwrap();
    eprintln!(
        "flood: {sent} streams opened and reset; connection ended with an error: {conn_error}; upstream hits {}",
        up.hits()
    );
    assert!(sent > 0);
    // After the flood the gateway is alive and serving.
    let (code, _, _) = curl(&["--http2-prior-knowledge", &url]);
    assert_eq!(code, 200);
    // The flood did not turn into a matching flood of upstream requests left running.
    std::thread::sleep(Duration::from_millis(300));
    assert!(up.hits() <= sent + 6, "upstream saw {} requests for {sent} reset streams", up.hits());
}
