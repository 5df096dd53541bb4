//! Idle-connection client for `bench/idle.sh`: opens many connections to one server, makes one request on
//! each, then holds them all open, idle, until its standard input closes (or SIGTERM/SIGINT).
//!
//! ```text
//! cargo run --release --example idle_clients -- --addr 127.0.0.1:8080 --n 10000 --mode h1
//!     --mode h1      plain HTTP/1.1 keep-alive: one GET, then idle
//!     --mode tls     TLS 1.3 (ALPN http/1.1), full handshake, one GET, then idle
//!     --mode h2      TLS 1.3 with ALPN h2, one GET on one stream, then idle
//!     --mode h2c     HTTP/2 prior knowledge over plain TCP, one GET, then idle
//!     --mode silent  connect and send nothing (for header_read_timeout checks)
//!     --concurrency 500         at most this many connections being opened at once
//!     --source-base 127.1.0.1   bind each socket to a loopback source address before connecting; connection i
//!     --per-source 20000        uses source-base + i / per-source (spreads over 127.x.y.z so the ephemeral
//!                               port range of one address is never exhausted)
//!     --rate 0                  at most this many new connections per second (0: no limit); silent
//!                               connections hold no permit once connected, so they need a rate to keep
//!                               the server's accept queue from overflowing
//!     --ca FILE --server-name localhost   trust anchor and SNI for tls/h2
//!     --open-timeout 120        seconds for the whole opening phase; --conn-timeout 10 per connection
//! ```
//!
//! Lines on stdout (one per second while opening and while holding; the script waits for them):
//! `progress attempted=A opened=O failed=F closed=C`, then once `ready opened=O failed=F closed=C`, then
//! `holding open=K closed=C`. "opened" counts connections whose handshake and request both completed with a
//! 200 (silent mode: whose TCP connect completed); "closed" counts opened connections the server has since
//! closed. The first few errors go to stderr.
//!
//! The process exits (and the kernel closes every socket at once) when stdin reaches EOF or on a signal.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    H1,
    Tls,
    H2,
    H2c,
    Silent,
}

struct Args {
    addr: SocketAddr,
    n: usize,
    mode: Mode,
    concurrency: usize,
    rate: u64,
    source_base: Option<Ipv4Addr>,
    per_source: usize,
    ca: Option<String>,
    server_name: String,
    path: String,
    open_timeout: Duration,
    conn_timeout: Duration,
}

fn usage(msg: &str) -> ! {
    eprintln!("idle_clients: {msg}");
    eprintln!(
        "usage: idle_clients --addr IP:PORT --n N --mode h1|tls|h2|h2c|silent [--concurrency 500] [--rate 0] \
         [--source-base 127.1.0.1 --per-source 20000] [--ca FILE] [--server-name localhost] [--path /] \
         [--open-timeout 120] [--conn-timeout 10]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        n: 10_000,
        mode: Mode::H1,
        concurrency: 500,
        rate: 0,
        source_base: None,
        per_source: 20_000,
        ca: None,
        server_name: "localhost".into(),
        path: "/".into(),
        open_timeout: Duration::from_secs(120),
        conn_timeout: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(v) = it.next() else { usage(&format!("{flag} needs a value")) };
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--addr" => a.addr = v.parse().unwrap_or_else(|_| usage("--addr: IP:PORT")),
            "--n" => a.n = num(&v) as usize,
            "--mode" => {
                a.mode = match v.as_str() {
                    "h1" => Mode::H1,
                    "tls" => Mode::Tls,
                    "h2" => Mode::H2,
                    "h2c" => Mode::H2c,
                    "silent" => Mode::Silent,
                    _ => usage("--mode: h1, tls, h2, h2c or silent"),
                }
            }
            "--concurrency" => a.concurrency = num(&v).max(1) as usize,
            "--rate" => a.rate = num(&v),
            "--source-base" => a.source_base = Some(v.parse().unwrap_or_else(|_| usage("--source-base: IPv4"))),
            "--per-source" => a.per_source = num(&v).max(1) as usize,
            "--ca" => a.ca = Some(v),
            "--server-name" => a.server_name = v,
            "--path" => a.path = v,
            "--open-timeout" => a.open_timeout = Duration::from_secs(num(&v)),
            "--conn-timeout" => a.conn_timeout = Duration::from_secs(num(&v)),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if let Some(b) = a.source_base {
        if !b.is_loopback() {
            usage("--source-base must be a loopback address (127.0.0.0/8)");
        }
        let last = u32::from(b) as u64 + (a.n as u64).div_ceil(a.per_source as u64);
        if last > u32::from(Ipv4Addr::new(127, 255, 255, 254)) as u64 {
            usage("--source-base: not enough loopback addresses above it");
        }
    }
    if !a.addr.ip().is_loopback() {
        usage("--addr must be a loopback address: this tool only makes loopback traffic");
    }
    a
}

#[derive(Default)]
struct Counters {
    attempted: AtomicUsize,
    opened: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    errors_shown: AtomicUsize,
}

impl Counters {
    fn line(&self, word: &str) -> String {
        format!(
            "{word} attempted={} opened={} failed={} closed={}",
            self.attempted.load(Ordering::Relaxed),
            self.opened.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed)
        )
    }
    fn fail(&self, e: BoxError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if self.errors_shown.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("idle_clients: connection failed: {e}");
        }
    }
}

struct Ctx {
    args: Args,
    tls: Option<tokio_rustls::TlsConnector>,
    server_name: ServerName<'static>,
    counters: Counters,
}

fn tls_connector(args: &Args) -> Result<tokio_rustls::TlsConnector, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = args.ca.as_deref().ok_or("--ca is needed for tls and h2")?;
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection makes a full handshake (no session resumption), as distinct clients would.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = match args.mode {
        Mode::H2 => vec![b"h2".to_vec()],
        _ => vec![b"http/1.1".to_vec()],
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn connect(ctx: &Ctx, i: usize) -> Result<TcpStream, BoxError> {
    let socket = TcpSocket::new_v4()?;
    if let Some(base) = ctx.args.source_base {
        let src = Ipv4Addr::from(u32::from(base) + (i / ctx.args.per_source) as u32);
        socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    }
    let stream = socket.connect(ctx.args.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One HTTP/1.1 GET on a kept-alive connection; the whole response is read (Content-Length or chunked).
async fn get_h1<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, ctx: &Ctx) -> Result<(), BoxError> {
    let req =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: idle_clients\r\n\r\n", ctx.args.path, ctx.args.server_name);
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let (head_len, status, body) = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(&buf)? {
            let mut body = Body::None;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    body = Body::Length(std::str::from_utf8(h.value)?.trim().parse()?);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    body = Body::Chunked;
                }
            }
            break (len, resp.code.unwrap_or(0), body);
        }
        if buf.len() > 64 * 1024 {
            return Err("response head too long".into());
        }
    };
    loop {
        let rest = &buf[head_len..];
        let done = match body {
            Body::None => true,
            Body::Length(n) => rest.len() >= n,
            Body::Chunked => rest.ends_with(b"0\r\n\r\n"),
        };
        if done {
            break;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed in the response body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if status != 200 {
        return Err(format!("status {status}").into());
    }
    Ok(())
}

enum Body {
    None,
    Length(usize),
    Chunked,
}

/// Waits until the peer closes (EOF or error). Nothing is sent; a byte received is ignored.
async fn wait_closed<S: AsyncRead + Unpin>(mut s: S) {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// HTTP/2 on an established stream (TLS with ALPN h2, or plain for h2c): one GET, body drained; then the
/// connection is held by keeping its `SendRequest` until the connection task ends (server closed it).
async fn h2_open<S>(
    io: S,
    ctx: &Ctx,
    scheme: &str,
) -> Result<(tokio::task::JoinHandle<()>, h2::client::SendRequest<Bytes>), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(io).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await?;
    let uri = format!("{scheme}://{}{}", ctx.args.server_name, ctx.args.path);
    let req = http::Request::get(uri).header("user-agent", "idle_clients").body(())?;
    let (resp, _) = send.send_request(req, true)?;
    let resp = resp.await?;
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(data) = body.data().await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    if status != http::StatusCode::OK {
        return Err(format!("status {status}").into());
    }
    Ok((driver, send))
}

/// Opens connection `i`, counts it as opened or failed, and (if opened) returns a future that resolves when
/// the server closes it.
async fn open_one(ctx: Arc<Ctx>, i: usize) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    let c2 = ctx.clone();
    let work = async move {
        let ctx = c2;
        let mut tcp = connect(&ctx, i).await?;
        let hold: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match ctx.args.mode {
            Mode::Silent => Box::pin(wait_closed(tcp)),
            Mode::H1 => {
                get_h1(&mut tcp, &ctx).await?;
                Box::pin(wait_closed(tcp))
            }
            Mode::Tls => {
                let tls = ctx.tls.as_ref().ok_or("no TLS config")?;
                let mut s = tls.connect(ctx.server_name.clone(), tcp).await?;
                get_h1(&mut s, &ctx).await?;
                Box::pin(wait_closed(s))
            }
            Mode::H2 => {
                let tls = ctx.tls.as_ref().ok_or("no TLS config")?;
                let s = tls.connect(ctx.server_name.clone(), tcp).await?;
                if s.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err::<_, BoxError>("server did not select h2 by ALPN".into());
                }
                let (driver, send) = h2_open(s, &ctx, "https").await?;
                Box::pin(async move {
                    let _ = driver.await;
                    drop(send);
                })
            }
            Mode::H2c => {
                let (driver, send) = h2_open(tcp, &ctx, "http").await?;
                Box::pin(async move {
                    let _ = driver.await;
                    drop(send);
                })
            }
        };
        Ok(hold)
    };
    match tokio::time::timeout(ctx.args.conn_timeout, work).await {
        Ok(Ok(hold)) => {
            ctx.counters.opened.fetch_add(1, Ordering::Relaxed);
            Some(hold)
        }
        Ok(Err(e)) => {
            ctx.counters.fail(e);
            None
        }
        Err(_) => {
            ctx.counters.fail("timed out opening the connection or waiting for the response".into());
            None
        }
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let tls = match args.mode {
        Mode::Tls | Mode::H2 => Some(tls_connector(&args).unwrap_or_else(|e| usage(&format!("TLS setup: {e}")))),
        _ => None,
    };
    let server_name = ServerName::try_from(args.server_name.clone()).unwrap_or_else(|_| usage("--server-name"));
    let ctx = Arc::new(Ctx { args, tls, server_name, counters: Counters::default() });

    // Exit when stdin closes (read on a plain thread: no tokio io-std needed) or on SIGTERM/SIGINT.
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    {
        let tx = stop_tx.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = tx.blocking_send("stdin closed");
        });
    }
    for kind in [tokio::signal::unix::SignalKind::terminate(), tokio::signal::unix::SignalKind::interrupt()] {
        let tx = stop_tx.clone();
        if let Ok(mut sig) = tokio::signal::unix::signal(kind) {
            tokio::spawn(async move {
                sig.recv().await;
                let _ = tx.send("signal").await;
            });
        }
    }

    // Opening: at most `concurrency` connections in their handshake/request at once.
    let opener = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let sem = Arc::new(Semaphore::new(ctx.args.concurrency));
            let pending = Arc::new(AtomicUsize::new(ctx.args.n));
            let t0 = tokio::time::Instant::now();
            for i in 0..ctx.args.n {
                if ctx.args.rate > 0 {
                    tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / ctx.args.rate as f64)).await;
                }
                let Ok(permit) = sem.clone().acquire_owned().await else { break };
                ctx.counters.attempted.fetch_add(1, Ordering::Relaxed);
                let ctx = ctx.clone();
                let pending = pending.clone();
                tokio::spawn(async move {
                    let hold = open_one(ctx.clone(), i).await;
                    drop(permit);
                    pending.fetch_sub(1, Ordering::Relaxed);
                    if let Some(hold) = hold {
                        hold.await;
                        ctx.counters.closed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            // Every connection has finished opening (opened or failed).
            while pending.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let start = Instant::now();
    let deadline = tokio::time::sleep(ctx.args.open_timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(opener);
    let mut ready = false;
    loop {
        tokio::select! {
            why = stop_rx.recv() => {
                println!("{}", ctx.counters.line("exit"));
                eprintln!("idle_clients: {}, exiting", why.unwrap_or("stop"));
                std::process::exit(0);
            }
            _ = &mut opener, if !ready => {
                ready = true;
                println!("{} seconds={:.1}", ctx.counters.line("ready"), start.elapsed().as_secs_f64());
            }
            _ = &mut deadline, if !ready => {
                ready = true;
                println!("{} seconds={:.1} timeout=1", ctx.counters.line("ready"), start.elapsed().as_secs_f64());
            }
            _ = tick.tick() => {
                if ready {
                    let c = &ctx.counters;
                    let open = c.opened.load(Ordering::Relaxed) - c.closed.load(Ordering::Relaxed);
                    println!("holding open={open} closed={}", c.closed.load(Ordering::Relaxed));
                } else {
                    println!("{}", ctx.counters.line("progress"));
                }
            }
        }
    }
}
