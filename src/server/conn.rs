//! Per-connection guards: connection limits (overall and per client IP), the idle watchdog, and the raw
//! request-head scanner in front of hyper's HTTP/1 parser.

use crate::validate::head::HeadScanner;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts open connections, overall and per peer IP.
#[derive(Default)]
pub struct ConnLimits {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's place; released on drop.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

/// The key a client is counted under: an IPv4 address (also when written as IPv4-mapped IPv6) as it is,
/// an IPv6 address cut to its first `v6_prefix` bits. One IPv6 host usually holds a whole /64, so
/// counting single addresses would let it open 2^64 times the limit.
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

impl ConnLimits {
    /// Takes a place for the client `ip` (counted by [`client_key`] with `v6_prefix`), or says which
    /// limit refused it.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        v6_prefix: u8,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnGuard, &'static str> {
        let ip = client_key(ip, v6_prefix);
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections");
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections_per_ip");
        }
        *n += 1;
        Ok(ConnGuard { limits: self.clone(), ip })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Activity of one connection, read by its watchdogs and by [`ScannedIo`].
pub struct Activity {
    touched: AtomicBool,
    /// Requests whose handler is running (waiting for the upstream is not idleness).
    handling: AtomicU32,
    /// Requests whose response is not yet all handed to hyper (their body is still streaming).
    responding: AtomicU32,
    /// When the request head being awaited started arriving, in milliseconds since `born`, plus one;
    /// 0 while no head is awaited. Set when the connection is served (the first head is awaited from
    /// the start), then kept by [`ScannedIo`] from the raw bytes, which tell heads from bodies.
    head_since: AtomicU64,
    /// Request-head bytes were read since the last request reached the service.
    head_bytes: AtomicBool,
    born: Instant,
    /// Set on the first HTTP/2 request of an h2c connection: its frames between requests are no heads.
    http2: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            touched: AtomicBool::new(false),
            handling: AtomicU32::new(0),
            responding: AtomicU32::new(0),
            head_since: AtomicU64::new(0),
            head_bytes: AtomicBool::new(false),
            born: Instant::now(),
            http2: AtomicBool::new(false),
        }
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64 + 1
    }

    /// The first request head is awaited from now (after the TLS handshake, which has its own limit).
    pub fn await_first_head(&self) {
        self.head_since.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes of a request head arrived; `partial`: the head is not complete yet.
    fn head_read(&self, partial: bool) {
        self.head_bytes.store(true, Ordering::Relaxed);
        if !partial {
            self.head_since.store(0, Ordering::Relaxed);
        } else if self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request reached the service. The first guard ends with its handler, the second (kept by the
    /// response body) when the response is all handed to hyper.
    pub fn request_started(self: &Arc<Self>) -> (Handling, Responding) {
        self.handling.fetch_add(1, Ordering::Relaxed);
        self.responding.fetch_add(1, Ordering::Relaxed);
        self.head_bytes.store(false, Ordering::Relaxed);
        (Handling(self.clone()), Responding(self.clone()))
    }

    /// Could hyper be answering a head it refused? Only between responses, after head bytes arrived.
    fn may_refuse(&self) -> bool {
        !self.http2.load(Ordering::Relaxed)
            && self.head_bytes.load(Ordering::Relaxed)
            && self.handling.load(Ordering::Relaxed) == 0
            && self.responding.load(Ordering::Relaxed) == 0
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// The connection turned out to speak HTTP/2 (h2c prior knowledge on a plain listener).
    pub fn mark_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Watches the connection from a task of its own, so the connection's own task is not woken (nor
    /// its timers polled) for it on every request. Returns why the connection should be closed:
    /// - `Idle`: HTTP/1, no I/O and no running handler for at least `idle` (a response body that
    ///   stalls, the upstream having stopped sending, is idleness); HTTP/2, no open stream (no running
    ///   handler, no response being sent) for at least `idle`, whatever frames go back and forth;
    /// - `HeadTimeout` (HTTP/1 only, `head_limit` given): a request head has been awaited or arriving for longer than
    ///   `head_limit`, from the start of the connection for the first request, from its first byte for
    ///   the next ones. Trickling bytes do not extend it; a kept-alive connection waiting for its next
    ///   request is `idle`'s business.
    ///
    /// Checked every quarter of the shorter limit (at least 10 ms), so either fires within 1.25x of it.
    pub async fn watch(&self, idle: Duration, head_limit: Option<Duration>) -> Expired {
        let limit_ms = head_limit.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
        let tick = (head_limit.map_or(idle, |l| idle.min(l)) / 4).max(Duration::from_millis(10));
        let mut quiet_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(tick).await;
            let touched = self.touched.swap(false, Ordering::Relaxed);
            // HTTP/2: bytes are no sign of use (the server's own keep-alive PINGs, and the client's
            // answers, go both ways on an unused connection); an open stream is.
            let busy = if self.http2.load(Ordering::Relaxed) {
                self.handling.load(Ordering::Relaxed) > 0 || self.responding.load(Ordering::Relaxed) > 0
            } else {
                touched || self.handling.load(Ordering::Relaxed) > 0
            };
            if busy {
                quiet_since = None;
            } else {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                // The tick before this one saw no activity either: the quiet started at most a tick ago.
                if since.elapsed() + tick >= idle {
                    return Expired::Idle;
                }
            }
            if let (Some(limit_ms), false) = (limit_ms, self.http2.load(Ordering::Relaxed)) {
                let since = self.head_since.load(Ordering::Relaxed);
                if since != 0 && self.now_ms().saturating_sub(since) >= limit_ms {
                    return Expired::HeadTimeout;
                }
            }
        }
    }
}

/// Why a connection's watchdog closed it; see [`Activity::watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    HeadTimeout,
    /// Not a timeout: the gateway is shutting down (see `server::drive`).
    Shutdown,
}

/// A request's handler is running; see [`Activity::request_started`].
pub struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request's response is still being handed to hyper; see [`Activity::request_started`].
pub struct Responding(Arc<Activity>);

impl Drop for Responding {
    fn drop(&mut self) {
        self.0.responding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks the connection's [`Activity`] on every read and write.
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        TrackedIo { inner, activity }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T> TrackedIo<T> {
    /// Only bytes that went out count as activity: a client that reads nothing keeps writes pending,
    /// and retried writes must not keep its connection alive.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.touched.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touched.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Shows every byte read from an HTTP/1 connection to a [`HeadScanner`] before hyper parses it; the
/// server takes one verdict per request from [`ScannedIo::verdicts`].
///
/// It also stands in for hyper where hyper answers by itself: a request head its parser refuses (bad
/// syntax, a head over its buffer, too many headers) never reaches a service, and hyper writes a bare
/// `400`/`414`/`431` with no body. Those writes are recognised (a 4xx head with an empty body and no
/// `x-request-id`, which every gateway response carries) and replaced with the gateway's own
/// problem+json answer from `refuse`, which also logs and counts the refusal.
pub struct ScannedIo<T> {
    inner: T,
    scanner: Arc<Mutex<HeadScanner>>,
    activity: Arc<Activity>,
    refuse: Option<Refuse>,
    /// The replacement being written: its bytes, how many are out, and the length hyper asked to write.
    pending: Option<(Vec<u8>, usize, usize)>,
}

/// Renders the answer to a head hyper's parser refused with this status.
pub type Refuse = Box<dyn Fn(u16) -> Vec<u8> + Send + Sync>;

impl<T> ScannedIo<T> {
    /// `scan`: false for connections that speak HTTP/2 only (which also get no `refuse`).
    pub fn new(inner: T, scan: bool, activity: Arc<Activity>, refuse: Option<Refuse>) -> Self {
        let scanner = if scan { HeadScanner::new() } else { HeadScanner::disabled() };
        ScannedIo { inner, scanner: Arc::new(Mutex::new(scanner)), activity, refuse, pending: None }
    }

    pub fn verdicts(&self) -> Arc<Mutex<HeadScanner>> {
        self.scanner.clone()
    }
}

/// The status of hyper's automatic answer to an unparseable head, if `head` is one.
fn automatic_refusal(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.1 ").or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => 400,
        b"414 " => 414,
        b"431 " => 431,
        _ => return None,
    };
    let lower = head.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    let ours = has(b"\r\nx-request-id:");
    (head.ends_with(b"\r\n\r\n") && has(b"\r\ncontent-length: 0\r\n") && !ours).then_some(status)
}

impl<T: AsyncWrite + Unpin> ScannedIo<T> {
    /// Starts replacing `head` if it is hyper's automatic refusal.
    fn intercept(&mut self, head: &[u8], total: usize) {
        // hyper answers a refused head only between responses (never inside a response body, whose
        // bytes could read like anything), after head bytes arrived; the whole write is that answer.
        if self.pending.is_some() || head.len() != total || !self.activity.may_refuse() {
            return;
        }
        if let (Some(refuse), Some(status)) = (&self.refuse, automatic_refusal(head)) {
            self.pending = Some((refuse(status), 0, total));
        }
    }

    /// Writes the replacement; reports hyper's own length once all of it is out.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, written, claimed)) = &mut self.pending else { return Poll::Ready(Ok(0)) };
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let claimed = *claimed;
        self.pending = None;
        Poll::Ready(Ok(claimed))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ScannedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut scanner = self.scanner.lock().unwrap_or_else(|e| e.into_inner());
            if !scanner.is_off() {
                let seen = scanner.head_bytes();
                scanner.feed(&buf.filled()[before..]);
                if scanner.head_bytes() != seen {
                    self.activity.head_read(scanner.mid_head());
                }
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ScannedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.intercept(buf, buf.len());
        if this.pending.is_some() {
            return this.drive(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.intercept(first, bufs.iter().map(|b| b.len()).sum());
        }
        if this.pending.is_some() {
            return this.drive(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_rewrites_inside_a_response() {
        // A response body chunk that reads like hyper's refusal, written while a response is being sent.
        let (client, mut server) = tokio::io::duplex(4096);
        let refuse: Refuse = Box::new(|_| b"REPLACED".to_vec());
        let activity = Arc::new(Activity::default());
        let mut io = ScannedIo::new(client, true, activity.clone(), Some(refuse));
        let chunk = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let (handling, responding) = activity.request_started();
        activity.head_bytes.store(true, Ordering::Relaxed); // the next request's head is arriving
        drop(handling);
        tokio::io::AsyncWriteExt::write_all(&mut io, chunk).await.unwrap();
        drop(responding);
        // After the response, with no head bytes since the last request: still not hyper's refusal.
        activity.head_bytes.store(false, Ordering::Relaxed);
        tokio::io::AsyncWriteExt::write_all(&mut io, chunk).await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut io).await.unwrap();
        drop(io);
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out).await.unwrap();
        assert_eq!(out, [&chunk[..], &chunk[..]].concat());
    }

    #[test]
    fn recognises_only_hypers_bare_refusals() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_refusal(bare), Some(431));
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_refusal(bare), Some(400));
        // The gateway's own answers carry a request id; other statuses and bodies are never touched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nX-Request-Id: abc\r\n\r\n";
        assert_eq!(automatic_refusal(ours), None);
        assert_eq!(automatic_refusal(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(automatic_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n"), None);
        assert_eq!(automatic_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"), None);
        assert_eq!(automatic_refusal(b"hello"), None);
    }

    #[tokio::test]
    async fn replaces_the_refusal_whole_even_through_short_writes() {
        let (client, mut server) = tokio::io::duplex(7); // 7-byte pipe: every write is short
        let refuse: Refuse = Box::new(|status| format!("REPLACED {status} with a longer answer").into_bytes());
        let activity = Arc::new(Activity::default());
        activity.head_bytes.store(true, Ordering::Relaxed); // a head arrived; no request reached the service
        let mut io = ScannedIo::new(client, true, activity, Some(refuse));
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out).await.unwrap();
            out
        });
        let n = tokio::io::AsyncWriteExt::write(&mut io, bare).await.unwrap();
        assert_eq!(n, bare.len(), "hyper is told its own bytes went out");
        tokio::io::AsyncWriteExt::write_all(&mut io, b"|next").await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut io).await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), b"REPLACED 400 with a longer answer|next");
    }

    #[test]
    fn limits_release_on_drop() {
        let l = Arc::new(ConnLimits::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = l.try_acquire(ip, 64, 3, 2).unwrap();
        let _b = l.try_acquire(ip, 64, 3, 2).unwrap();
        assert_eq!(l.try_acquire(ip, 64, 3, 2).err(), Some("max_connections_per_ip"));
        let _c = l.try_acquire(other, 64, 3, 2).unwrap();
        assert_eq!(l.try_acquire(other, 64, 3, 2).err(), Some("max_connections"));
        drop(a);
        assert!(l.try_acquire(ip, 64, 3, 2).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_by_prefix() {
        let l = Arc::new(ConnLimits::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = l.try_acquire(a, 64, 10, 2).unwrap();
        let _b = l.try_acquire(b, 64, 10, 2).unwrap();
        assert_eq!(l.try_acquire("2001:db8:1:2::77".parse().unwrap(), 64, 10, 2).err(), Some("max_connections_per_ip"));
        assert!(l.try_acquire(other_net, 64, 10, 2).is_ok());
        // With /128 every address is its own client again.
        assert!(l.try_acquire("2001:db8:1:2::77".parse().unwrap(), 128, 10, 2).is_ok());
        // IPv4-mapped addresses count as the IPv4 address.
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_key("::ffff:192.0.2.1".parse().unwrap(), 64), v4);
        assert_eq!(client_key(v4, 0), v4);
        assert_eq!(client_key(a, 0), IpAddr::V6(0.into()));
        assert_eq!(client_key(a, 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
    }
}
