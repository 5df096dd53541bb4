//! The integration test harness: starts the real `portcullis` binary on a config written to a
//! temporary directory (listeners on port 0, real addresses read from its `listening` log lines),
//! real test upstreams on free loopback ports, and cleans everything up on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod idp;
pub mod pg;
pub mod pki;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!(
            "portcullis-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub dir: TempDir,
    pub config: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    addrs: HashMap<String, SocketAddr>,
}

impl Gateway {
    /// Starts the gateway on `yaml` and waits until every listener (and admin) reports its address.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_in(TempDir::new(), yaml)
    }

    pub fn start_in(dir: TempDir, yaml: &str) -> Gateway {
        let config = dir.write("portcullis.yaml", yaml);
        let mut child = Command::new(bin())
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portcullis");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let expected = yaml.matches("- name:").count(); // upper bound; we wait for "listening" lines to settle
        let mut gw = Gateway { child, dir, config, lines, addrs: HashMap::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            gw.scan_addrs();
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("portcullis exited early ({status}):\n{}", gw.logs().join("\n"));
            }
            let want_admin = yaml.contains("admin:");
            let have_listeners = gw.addrs.keys().filter(|k| *k != "admin").count();
            let listeners_in_yaml = count_listeners(yaml);
            if have_listeners >= listeners_in_yaml && (!want_admin || gw.addrs.contains_key("admin")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start (expected {expected}):\n{}",
                gw.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        gw
    }

    fn scan_addrs(&mut self) {
        for line in self.lines.lock().unwrap().iter() {
            if !line.contains("\"listening\"") {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if let (Some(name), Some(addr)) = (v["listener"].as_str(), v["address"].as_str()) {
                self.addrs.insert(name.to_owned(), addr.parse().unwrap());
            }
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self.addrs.get(listener).unwrap_or_else(|| panic!("no listener {listener}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Sends SIGTERM and waits for exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn count_listeners(yaml: &str) -> usize {
    // Listener entries are the `- name:` items before the first top-level key after `listeners:`.
    let mut in_listeners = false;
    let mut n = 0;
    for line in yaml.lines() {
        if line.starts_with("listeners:") {
            in_listeners = true;
            continue;
        }
        if in_listeners && !line.starts_with(' ') && !line.starts_with('-') && !line.trim().is_empty() {
            break;
        }
        if in_listeners && line.trim_start().starts_with("- name:") {
            n += 1;
        }
    }
    n
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as the test upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 upstream on a free loopback port, on its own thread and runtime. It records every
/// request. Paths: `/status/NNN` answers that status; `/sleep/MS` waits first; `/big/N` sends N bytes;
/// everything else answers 200 with a small JSON body naming `name`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _server: Served,
}

impl Upstream {
    pub fn start(name: &'static str) -> Upstream {
        Self::start_with(name, UpstreamOptions::default())
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }
}

/// An HTTP/1.1 server on a loopback port, on its own thread and runtime, stopped and joined on drop:
/// the body of every test server ([`Upstream`], the scan tests' vulnerable API).
pub struct Served {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Serves `handler` (given the connection's peer and the request) on a free loopback port; `peers`, when
/// given, gets the peer of every accepted connection.
pub fn serve<H, F>(peers: Option<Arc<Mutex<Vec<SocketAddr>>>>, handler: H) -> Served
where
    H: Fn(SocketAddr, hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, peer) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = &mut stop_rx => return,
                };
                if let Some(peers) = &peers {
                    peers.lock().unwrap().push(peer);
                }
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let answer = handler(peer, req);
                        async move { Ok::<_, std::convert::Infallible>(answer.await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    Served { addr, stop: Some(stop_tx), thread: Some(thread) }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn answer(
    name: &str,
    seen: &Mutex<Vec<Seen>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let pq = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: pq.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.clone(),
    });
    let path = parts.uri.path();
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut status = 200;
    if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse::<u16>().ok()) {
        status = code;
    }
    let payload = if let Some(n) = path.strip_prefix("/big/").and_then(|s| s.parse::<usize>().ok()) {
        vec![b'x'; n]
    } else {
        format!("{{\"upstream\":\"{name}\",\"path\":\"{path}\",\"body_bytes\":{}}}", body.len()).into_bytes()
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("server", "test-upstream/1.0")
        .header("x-powered-by", "secrets")
        .body(Full::new(Bytes::from(payload)))
        .unwrap()
}

/// Runs curl; returns (status code, headers text, body).
pub fn curl(args: &[&str]) -> (u16, String, String) {
    let dir = TempDir::new();
    let headers = dir.path("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    (code.trim().parse().unwrap_or(0), headers, body.to_owned())
}

/// Sends raw bytes on a new connection and returns everything read until close or `timeout`.
pub fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // Stop after one complete response with a body length we can see.
                if response_complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else { return false };
    let head = text[..end].to_ascii_lowercase();
    let len =
        head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
    match len {
        Some(n) => buf.len() >= end + 4 + n,
        None => false,
    }
}

/// Status code of a raw HTTP/1.1 response text (0 if none).
pub fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A minimal config around the given upstream address and extra YAML.
pub fn basic_config(upstream: SocketAddr, extra_routes: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
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
{extra_routes}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#
    )
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------------
// Helpers added for the hostile-input, proxy and lifecycle suites (append-only).
// ---------------------------------------------------------------------------------------------------

impl Gateway {
    /// Like [`Gateway::start`], with extra environment variables for the child (secrets in `${env:NAME}`).
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new();
        let config = dir.write("portcullis.yaml", yaml);
        let mut cmd = Command::new(bin());
        cmd.args(["run", "-c"]).arg(&config).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start portcullis");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut gw = Gateway { child, dir, config, lines, addrs: HashMap::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            gw.scan_addrs();
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("portcullis exited early ({status}):\n{}", gw.logs().join("\n"));
            }
            let have_listeners = gw.addrs.keys().filter(|k| *k != "admin").count();
            if have_listeners >= count_listeners(yaml) && (!yaml.contains("admin:") || gw.addrs.contains_key("admin")) {
                break;
            }
            assert!(Instant::now() < deadline, "gateway did not start:\n{}", gw.logs().join("\n"));
            std::thread::sleep(Duration::from_millis(25));
        }
        gw
    }

    /// Replaces the config file atomically (write beside it, then rename over it, like editors do).
    pub fn rewrite_config(&self, yaml: &str) {
        let tmp = self.dir.path("portcullis.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Waits for the process to exit on its own (at most `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.logs().iter().filter(|l| l.contains(needle)).count()
    }

    /// The admin `/metrics` text (no token).
    pub fn metrics(&self) -> String {
        let (code, _, body) = curl(&[&format!("http://{}/metrics", self.addr("admin"))]);
        assert_eq!(code, 200, "metrics: {body}");
        body
    }

    /// The parsed JSON access log lines (target `access`).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .collect()
    }

    /// Waits until `n` access log lines have been written; returns them.
    pub fn wait_access_log(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of the Prometheus sample whose name-and-labels text starts with `series` (e.g.
/// `portcullis_reloads_total` or `portcullis_upstream_healthy{upstream="app",target="127.0.0.1:1"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `type` of a problem+json body ("" if the body is not one).
pub fn problem_type(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The problem `type` URI for a slug.
pub fn problem(slug: &str) -> String {
    format!("urn:portcullis:problem:{slug}")
}

/// A header of a raw HTTP/1.1 response or of curl's header dump (case-insensitive name, first one).
pub fn header_of(resp: &str, name: &str) -> Option<String> {
    let head = resp.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The body of a raw HTTP/1.1 response (after the first blank line).
pub fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Sends raw bytes on a new connection and reads until the server closes it or `timeout` passes.
/// Returns what was read and whether the server closed the connection.
pub fn raw_until_close(addr: SocketAddr, request: &[u8], timeout: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    read_until_close(&mut s, timeout)
}

/// Reads from `s` until EOF (true) or `timeout` (false).
pub fn read_until_close(s: &mut TcpStream, timeout: Duration) -> (String, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
            Err(_) => break true, // reset by peer
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A keep-alive HTTP/1.1 client on one raw connection.
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn { stream }
    }

    /// The local port of this connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    /// Sends `request` and reads one response with a `content-length` (or until close). Returns "" when
    /// nothing came back within `timeout`.
    pub fn send(&mut self, request: &[u8], timeout: Duration) -> String {
        if self.stream.write_all(request).is_err() {
            return String::new();
        }
        self.read_response(timeout)
    }

    pub fn read_response(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while !response_complete(&out) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A simple GET on this connection.
    pub fn get(&mut self, path: &str, timeout: Duration) -> String {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes(), timeout)
    }

    /// True when the server has closed this connection (EOF or reset), waiting at most `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        read_until_close(&mut self.stream, timeout).1
    }
}

/// Options for [`Upstream::start_with`].
#[derive(Clone, Default)]
pub struct UpstreamOptions {
    /// Delay before every answer (on top of `/sleep/MS`).
    pub delay: Duration,
    /// Filled with the peer address of every accepted connection.
    pub peers: Option<Arc<Mutex<Vec<SocketAddr>>>>,
    /// Extra response headers on every answer.
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Upstream {
    /// Like [`Upstream::start`], with a fixed answer delay and a record of accepted connections.
    pub fn start_with(name: &'static str, opts: UpstreamOptions) -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, delay, extra) = (seen.clone(), opts.delay, Arc::new(opts.headers));
        let server = serve(opts.peers, move |_, req| {
            let (seen, extra) = (seen2.clone(), extra.clone());
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut resp = answer(name, &seen, req).await;
                for (k, v) in extra.iter() {
                    resp.headers_mut().append(*k, hyper::header::HeaderValue::from_static(v));
                }
                resp
            }
        });
        Upstream { addr: server.addr, seen, _server: server }
    }

    /// Every request this upstream has seen.
    pub fn all_seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A loopback port free now, for a server this test starts on it (bound, then released: another test's
/// server may take it meanwhile, so callers retry on another when theirs cannot bind).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A loopback port that nothing listens on, and nothing else can: a socket bound to it and never
/// listening, kept for the life of the test process. Connections to it are refused. (A port found free
/// and let go could be taken meanwhile by another test's server, and then answered: seen once in a
/// fresh-clone CI run, an "unreachable" exporter sending its events.)
pub fn closed_port() -> SocketAddr {
    static HELD: Mutex<Vec<socket2::Socket>> = Mutex::new(Vec::new());
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    HELD.lock().unwrap().push(s);
    addr
}

/// Runs the `portcullis` binary with `args` and extra environment; returns (exit code, stdout, stderr).
pub fn portcullis(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run portcullis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// base64url without padding (JWT segments).
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 token with these claims, as an identity provider sharing `secret` would sign it.
pub fn hs256(secret: &str, claims: &serde_json::Value) -> String {
    let input = format!("{}.{}", b64url(br#"{"alg":"HS256","typ":"JWT"}"#), b64url(claims.to_string().as_bytes()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!("{input}.{}", b64url(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
}

// ---------------------------------------------------------------------------------------------------
// Redis for the fleet tests (tests/limits_redis.rs): one `redis-server` per test on a free loopback
// port, nothing saved to disk, killed by PID on drop. (One block; append others after it.)
// ---------------------------------------------------------------------------------------------------

/// A `redis-server` child on 127.0.0.1. `kill` and `restart` (on the same port) simulate an outage.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let port = free_port();
        let mut r = RedisServer { port, child: None };
        r.spawn(false);
        r
    }

    /// `same_port`: a restart keeps its port (waiting for it to be free); a first start takes another
    /// free port if this one was taken meanwhile.
    fn spawn(&mut self, same_port: bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
                .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (scripts/test.sh installs it)");
            while Instant::now() < deadline {
                // Ours answers (not another test's on a port taken meanwhile: ours would have exited).
                if self.ping() && matches!(child.try_wait(), Ok(None)) {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    // The port was taken (by another test, or not yet free after a kill): try again.
                    if !same_port {
                        self.port = free_port();
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "redis-server did not answer PING on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn ping(&self) -> bool {
        self.try_command(&["PING"]).is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one command (RESP) and returns the raw reply text.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).expect("redis answers")
    }

    fn try_command(&self, args: &[&str]) -> Option<String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The keys matching `pattern` (KEYS; tests hold a handful).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.command(&["KEYS", pattern]);
        reply.lines().filter(|l| !l.starts_with('*') && !l.starts_with('$')).map(str::to_owned).collect()
    }

    /// Kills the server (SIGKILL, by PID): an outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(true);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The security events (schema v1 JSON lines) the gateway printed so far.
pub fn events(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("v").is_some() && v.get("type").is_some())
        .collect()
}

/// Waits (at most 10 s) for a security event matching `pred`.
pub fn wait_event(gw: &Gateway, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = events(gw).into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(Instant::now() < deadline, "no such event; events: {:#?}", events(gw));
        std::thread::sleep(Duration::from_millis(50));
    }
}
