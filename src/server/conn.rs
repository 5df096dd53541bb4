//! Per-connection guards: connection limits (overall and per client IP or IPv6 prefix), the idle and
//! head-deadline watchdog, and the request-framing gate in front of hyper's HTTP/1 parser.

use crate::body::{InFlight, Responding};
use crate::exchange::Reject;
use crate::validate::head::{Framer, HeadLimits, Refusal};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
/// an IPv6 address cut to its first `v6_prefix` bits ([`crate::exchange::client_net`]). One IPv6 host usually holds
/// a whole /64, so counting single addresses would let it open 2^64 times the limit.
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    crate::exchange::client_net(ip, v6_prefix).network()
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

/// Activity of one connection, read by its watchdogs and kept by [`TrackedIo`] and [`GatedIo`].
pub struct Activity {
    touched: AtomicBool,
    /// Requests whose handler is running (waiting for the upstream is not idleness).
    handling: AtomicU32,
    /// Requests whose response is not yet all handed to hyper (their body is still streaming).
    responding: AtomicU32,
    /// When the request head being awaited started arriving, in milliseconds since `born`, plus one;
    /// 0 while no head is awaited. Set when the connection is served (the first head is awaited from
    /// the start), then kept by [`GatedIo`] from its framer, which tells heads from bodies.
    head_since: AtomicU64,
    born: Instant,
    /// Set on the first HTTP/2 request of an h2c connection: its frames between requests are no heads.
    http2: AtomicBool,
    /// What [`GatedIo`] saw last (`READ_PENDING`, `FLUSHED`, `AT_REST` bits): with no request in flight,
    /// all three mean hyper's HTTP/1 connection is waiting for a next request with nothing buffered, and
    /// may be taken apart (see [`Activity::parkable`]).
    io: AtomicU8,
}

/// hyper's last read of the connection found nothing to read.
const READ_PENDING: u8 = 1;
/// hyper's last write-side call was a flush that completed: nothing it wrote is still buffered.
const FLUSHED: u8 = 2;
/// The framer is between messages with no byte of the next one read, and nothing is held back.
const AT_REST: u8 = 4;

impl Default for Activity {
    fn default() -> Self {
        Activity {
            touched: AtomicBool::new(false),
            handling: AtomicU32::new(0),
            responding: AtomicU32::new(0),
            head_since: AtomicU64::new(0),
            born: Instant::now(),
            http2: AtomicBool::new(false),
            io: AtomicU8::new(0),
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

    /// After each read: whether a request head has started and is not complete. Its deadline runs from
    /// its first byte (or, for the first head, from the start of the connection).
    fn head_state(&self, mid_head: bool) {
        if !mid_head {
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
        (Handling(self.clone()), Responding::new(self.clone()))
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// The connection turned out to speak HTTP/2 (h2c prior knowledge on a plain listener).
    pub fn mark_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// An HTTP/1 connection whose hyper connection has answered everything, flushed it, and waits for
    /// a next request of which no byte has arrived: hyper holds nothing that is not in its initial
    /// state, so it may be dropped (its read and write buffers with it) and built anew when bytes come.
    pub fn parkable(&self) -> bool {
        self.io.load(Ordering::Relaxed) == READ_PENDING | FLUSHED | AT_REST
            && self.handling.load(Ordering::Relaxed) == 0
            && self.responding.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
    }

    /// When the request head being awaited started arriving, if one is.
    pub fn head_started(&self) -> Option<Instant> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.born + Duration::from_millis(ms - 1)),
        }
    }

    /// Whether the connection saw I/O since the last call (and forgets it).
    pub fn take_touched(&self) -> bool {
        self.touched.swap(false, Ordering::Relaxed)
    }

    pub fn is_handling(&self) -> bool {
        self.handling.load(Ordering::Relaxed) > 0
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
impl InFlight for Activity {
    fn responded(&self) {
        self.responding.fetch_sub(1, Ordering::Relaxed);
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

/// The socket under a connection's layers (TLS, activity tracking), for waiting on readiness while the
/// connection is parked: no layer reads, so no layer needs a buffer.
pub trait Socket {
    fn socket(&self) -> &tokio::net::TcpStream;

    /// Whether a layer may hold bytes already taken from the socket when it is first served: TLS,
    /// whose handshake may have read the first request with its last flight. Such a connection is
    /// served at once, not parked until the socket turns readable (it may never do so again).
    fn may_hold_bytes(&self) -> bool {
        false
    }
}

impl Socket for TrackedIo<tokio::net::TcpStream> {
    fn socket(&self) -> &tokio::net::TcpStream {
        &self.inner
    }
}

impl<T: Socket> Socket for tokio_rustls::server::TlsStream<T> {
    fn socket(&self) -> &tokio::net::TcpStream {
        self.get_ref().0.socket()
    }

    fn may_hold_bytes(&self) -> bool {
        true
    }
}

/// Parks connections that stay at rest: a connection whose hyper connection could be taken apart
/// ([`Activity::parkable`]) enlists here, and is woken at the next sweep (every [`Sweeper::PERIOD`]);
/// if it served no request in between and is still at rest, it parks then. Parking at once after
/// every response cost about 4,000 instructions per request (hyper's connection built and taken apart
/// each time: bench/instructions.sh, 24,400 to 28,400); deferred, a busy connection parks at most
/// once per sweep, and an idle one holds hyper's buffers for at most two periods. Only connections
/// that went quiet since the last sweep are touched: no scan of every connection.
#[derive(Default)]
pub struct Sweeper {
    epoch: AtomicU64,
    waiting: Mutex<Vec<std::task::Waker>>,
}

impl Sweeper {
    pub const PERIOD: Duration = Duration::from_millis(250);

    /// Sweeps so far.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Wakes `waker` at the next sweep.
    pub fn enlist(&self, waker: &std::task::Waker) {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(waker.clone());
    }

    /// Sweeps every [`Sweeper::PERIOD`], for the life of the process. While connections park, and for
    /// a few seconds after (the allocator keeps freed pages for a purge delay of a second), it asks the
    /// allocator to give freed memory back: an idle process would otherwise keep it.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Self::PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut release = 0u32;
        loop {
            tick.tick().await;
            self.epoch.fetch_add(1, Ordering::AcqRel);
            let woken = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            if !woken.is_empty() {
                release = 12;
            }
            for w in woken {
                w.wake();
            }
            if release > 0 {
                release -= 1;
                if let Some(f) = crate::RELEASE_FREED_MEMORY.get() {
                    f();
                }
            }
        }
    }
}

/// The one timer of a parkable HTTP/1 connection, and when it is due. Deadlines are checked lazily:
/// the timer is armed once and, when it fires, looks at what the connection did since and re-arms for
/// the next deadline that can still hold. Requests on a busy connection never touch the timer (no
/// reset per request, no scan every second); the only reset that pulls it earlier is a head that
/// arrives in pieces, whose `header_read_timeout` is shorter than what is armed.
pub struct Deadlines {
    idle: Duration,
    head: Duration,
    /// When the timer is due.
    pub armed: tokio::time::Instant,
    started: tokio::time::Instant,
    parked: Option<Parked>,
    /// Active: when the connection was first seen quiet (no I/O, no running handler).
    quiet_since: Option<tokio::time::Instant>,
}

#[derive(Clone, Copy)]
struct Parked {
    since: tokio::time::Instant,
    /// No request yet: `header_read_timeout` from the start of the connection applies, not `idle`.
    first: bool,
}

impl Deadlines {
    /// A connection starts parked, awaiting its first request head.
    pub fn new(idle: Duration, head: Duration, now: tokio::time::Instant) -> Self {
        Deadlines {
            idle,
            head,
            armed: now + head,
            started: now,
            parked: Some(Parked { since: now, first: true }),
            quiet_since: None,
        }
    }

    /// The connection is parked at `now`; `served`: a request reached the service (until then the
    /// first head is still awaited, and its deadline runs from the start). Returns a new due time when
    /// the armed one is too late (only when `idle_timeout` is below `header_read_timeout`).
    pub fn park(&mut self, now: tokio::time::Instant, served: bool) -> Option<tokio::time::Instant> {
        if !served {
            // Woken without a request (readiness with no bytes): the first head's deadline still
            // runs from the start.
            self.parked = Some(Parked { since: self.started, first: true });
            return None;
        }
        self.parked = Some(Parked { since: now, first: false });
        let due = now + self.idle;
        (due < self.armed).then(|| {
            self.armed = due;
            due
        })
    }

    pub fn unpark(&mut self) {
        self.parked = None;
        self.quiet_since = None;
    }

    /// While active: the deadline of a request head arriving in pieces, if it is before the armed
    /// time (the caller then resets the timer to it).
    /// `served`: a request of the connection reached the service; until then the first head's deadline
    /// runs from the start of the connection, however its bytes trickle in.
    pub fn head_due(&mut self, activity: &Activity, served: bool) -> Option<tokio::time::Instant> {
        let started = if served { tokio::time::Instant::from_std(activity.head_started()?) } else { self.started };
        let due = started + self.head;
        (due < self.armed).then(|| {
            self.armed = due;
            due
        })
    }

    /// The timer fired at `now`: why the connection must close, or `None` with `armed` set anew.
    /// Parked, a connection closes `idle` after it parked (`header_read_timeout` after it started, before its
    /// first request). Active, it closes when a head has been arriving for `header_read_timeout`, or
    /// when it has had no I/O and no running handler for `idle` (checked every quarter of `idle`, so
    /// within 1.25 times of it; only a connection active that long pays those checks).
    pub fn fired(&mut self, now: tokio::time::Instant, activity: &Activity, served: bool) -> Option<Expired> {
        if let Some(p) = self.parked {
            let (limit, why) = if p.first { (self.head, Expired::HeadTimeout) } else { (self.idle, Expired::Idle) };
            if now >= p.since + limit {
                return Some(why);
            }
            self.armed = p.since + limit;
            return None;
        }
        let head_from =
            if served { activity.head_started().map(tokio::time::Instant::from_std) } else { Some(self.started) };
        if let Some(from) = head_from {
            if now >= from + self.head {
                return Some(Expired::HeadTimeout);
            }
        }
        let tick = (self.idle / 4).max(Duration::from_millis(10));
        if activity.take_touched() || activity.is_handling() {
            self.quiet_since = None;
        } else {
            let since = *self.quiet_since.get_or_insert(now);
            // The check before this one saw activity at most a tick ago.
            if now.duration_since(since) + tick >= self.idle {
                return Some(Expired::Idle);
            }
        }
        self.armed = now + tick;
        if let Some(from) = head_from {
            self.armed = self.armed.min(from + self.head);
        }
        None
    }
}

/// The request-framing gate of an HTTP/1 connection: every byte the client sends goes through a
/// [`Framer`], the parser of record, before hyper reads it, and hyper only ever receives what the framer
/// accepted (see `docs/parser.md`):
/// - the bytes of a request head are held back until the whole head is accepted (in the common case,
///   a head and its body in one read, nothing is copied: the read is handed on as it is);
/// - a refused head never reaches hyper: in its place hyper reads a fixed, valid request head, and the
///   service, recognising that request by its place on the connection ([`Gate::take_refusal`]),
///   answers it with the refusal's problem+json and closes the connection; what the client sends after
///   it is read and thrown away (bounded) so that the answer is not lost to a reset;
/// - a refused body (bad chunk framing) ends hyper's reading with an error, as hyper's own chunk decoder
///   would: the request's handler answers 400 and the connection closes;
/// - after an h2c preface the connection is HTTP/2 and bytes pass untouched.
pub struct GatedIo<T> {
    inner: T,
    /// `None` on connections that speak HTTP/2 only (ALPN h2).
    framer: Option<Framer>,
    activity: Arc<Activity>,
    gate: Arc<Gate>,
    /// Bytes of a head not yet complete.
    held: Vec<u8>,
    /// Accepted bytes that did not fit the reader's buffer yet, and how many of them went out.
    release: Vec<u8>,
    released: usize,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Framing,
    /// HTTP/2 by prior knowledge: no more framing.
    Passthrough,
    /// A head was refused: hyper reads [`STAND_IN`] (this many bytes of it out so far).
    StandIn(usize),
    /// Then whatever the client sends is discarded (this many bytes so far).
    Drain(usize),
    /// A body was refused: reading fails.
    BodyError(&'static str),
}

/// The request hyper reads in place of a refused head; answered by the gateway, never routed.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
/// After a refusal, at most this much more is read (and discarded) while the answer goes out.
const MAX_DRAIN: usize = 64 * 1024;

/// What the gate tells the connection's service: which request (by its place on the connection)
/// stands for a refused head, and the refusal.
#[derive(Default)]
pub struct Gate {
    /// Heads handed to hyper so far.
    heads: AtomicU64,
    /// HTTP/1 requests that reached the service so far.
    served: AtomicU64,
    /// The place of the stand-in request, plus one; 0 while there is none.
    refused_at: AtomicU64,
    refusal: std::sync::OnceLock<Reject>,
}

impl Gate {
    /// HTTP/1 requests of the connection that reached the service so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Called once per HTTP/1 request, in order: the refusal, if this request is the stand-in.
    pub fn take_refusal(&self) -> Option<Reject> {
        let place = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if self.refused_at.load(Ordering::Acquire) == place {
            return self.refusal.get().cloned();
        }
        None
    }

    fn refuse(&self, reject: Reject) {
        let place = self.heads.load(Ordering::Relaxed) + 1;
        if self.refusal.set(reject).is_ok() {
            self.refused_at.store(place, Ordering::Release);
        }
    }
}

impl<T> GatedIo<T> {
    /// `limits`: `None` for connections that speak HTTP/2 only; `h2c`: an HTTP/2 preface may open it.
    pub fn new(inner: T, limits: Option<HeadLimits>, h2c: bool, activity: Arc<Activity>) -> Self {
        GatedIo {
            inner,
            framer: limits.map(|l| Framer::new(l, h2c)),
            activity,
            gate: Arc::default(),
            held: Vec::new(),
            release: Vec::new(),
            released: 0,
            phase: Phase::Framing,
        }
    }

    /// Whether any HTTP/1 request of this connection has reached the service.
    pub fn served_any(&self) -> bool {
        self.gate.served() > 0
    }

    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Hands out accepted bytes that are waiting; true if any went out.
    fn give_released(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.released >= self.release.len() {
            return false;
        }
        let n = (self.release.len() - self.released).min(buf.remaining());
        buf.put_slice(&self.release[self.released..self.released + n]);
        self.released += n;
        if self.released == self.release.len() {
            self.release.clear();
            self.released = 0;
        }
        n > 0
    }
}

impl<T: AsyncRead + Unpin> GatedIo<T> {
    fn drain(&mut self, cx: &mut Context<'_>, mut discarded: usize) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 2048];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                // The client closed its side: hyper finishes the answer and closes the connection.
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    discarded += rb.filled().len();
                    self.phase = Phase::Drain(discarded);
                    if discarded > MAX_DRAIN {
                        // Enough: the end of input for hyper, which closes after its answer.
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GatedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let r = self.as_mut().read_gated(cx, buf);
        let this = &*self;
        let mut io = this.activity.io.load(Ordering::Relaxed) & FLUSHED;
        if r.is_pending() {
            io |= READ_PENDING;
        }
        if this.at_rest() {
            io |= AT_REST;
        }
        this.activity.io.store(io, Ordering::Relaxed);
        r
    }
}

impl<T> GatedIo<T> {
    /// The framer is between messages, nothing is held back or waiting to go out, no refusal is
    /// being answered.
    fn at_rest(&self) -> bool {
        self.phase == Phase::Framing
            && self.held.is_empty()
            && self.release.is_empty()
            && self.framer.as_ref().is_some_and(Framer::at_rest)
    }

    /// A parked connection keeps no buffer: the framer's and the gate's are given back.
    pub fn shed(&mut self) {
        self.held = Vec::new();
        self.release = Vec::new();
        self.released = 0;
        if let Some(f) = self.framer.as_mut() {
            f.shed();
        }
        self.activity.io.store(0, Ordering::Relaxed);
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Only the connection's own task writes these bits (and reads them back): a load and a store,
    /// no read-modify-write.
    fn wrote(&self) {
        let io = &self.activity.io;
        io.store(io.load(Ordering::Relaxed) & !FLUSHED, Ordering::Relaxed);
    }

    fn flushed(&self) {
        let io = &self.activity.io;
        io.store(io.load(Ordering::Relaxed) | FLUSHED, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> GatedIo<T> {
    fn read_gated(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.give_released(buf) {
            return Poll::Ready(Ok(()));
        }
        match this.phase {
            Phase::Framing => {}
            Phase::Passthrough => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Phase::StandIn(out) => {
                let n = (STAND_IN.len() - out).min(buf.remaining());
                buf.put_slice(&STAND_IN[out..out + n]);
                this.phase = if out + n == STAND_IN.len() { Phase::Drain(0) } else { Phase::StandIn(out + n) };
                return Poll::Ready(Ok(()));
            }
            Phase::Drain(discarded) => return this.drain(cx, discarded),
            Phase::BodyError(reason) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason))),
        }
        if this.framer.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let read = buf.filled().len() - before;
            if read == 0 {
                // The end of input; an incomplete head held back is dropped with the connection.
                return Poll::Ready(Ok(()));
            }
            let new = &buf.filled()[before..];
            let Some(framer) = this.framer.as_mut() else { return Poll::Ready(Ok(())) };
            let fed = framer.feed(new);
            let http2 = framer.is_http2();
            this.gate.heads.fetch_add(u64::from(fed.heads), Ordering::Relaxed);
            this.activity.head_state(framer.mid_head());
            // Out now: what was held, then this read's accepted prefix; held: the rest.
            if fed.pass > 0 && !this.held.is_empty() {
                this.release.append(&mut this.held);
                this.release.extend_from_slice(&new[..fed.pass]);
            }
            if fed.refused.is_none() {
                this.held.extend_from_slice(&new[fed.pass..]);
            } else {
                this.held.clear();
            }
            let keep = if this.release.is_empty() { fed.pass } else { 0 };
            buf.set_filled(before + keep);
            match fed.refused {
                None if http2 => {
                    this.activity.mark_http2();
                    this.phase = Phase::Passthrough;
                }
                None => {}
                Some(Refusal::Head(reject)) => {
                    tracing::debug!(problem = reject.kind().0, reason = reject.detail(), "request head refused");
                    this.gate.refuse(reject);
                    this.phase = Phase::StandIn(0);
                }
                Some(Refusal::Body(reject)) => {
                    tracing::debug!(reason = reject.detail(), "request body framing refused");
                    this.phase = Phase::BodyError(reject.detail());
                }
            }
            if keep > 0 || this.give_released(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.phase != Phase::Framing {
                // Nothing accepted in this read: go straight to what follows the refusal.
                return Pin::new(this).read_gated(cx, buf);
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GatedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.flushed();
        } else {
            self.wrote();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads everything hyper would read from `GatedIo` over `input`, written in pieces of `step`.
    async fn through_gate(input: &[u8], step: usize) -> (Vec<u8>, Arc<Gate>) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let activity = Arc::new(Activity::default());
        let mut io = GatedIo::new(server, Some(HeadLimits::new(2048, 20, 512)), false, activity);
        let gate = io.gate();
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            for chunk in input.chunks(step) {
                tokio::io::AsyncWriteExt::write_all(&mut client, chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 16];
        loop {
            let read =
                tokio::time::timeout(Duration::from_millis(200), tokio::io::AsyncReadExt::read(&mut io, &mut buf))
                    .await;
            match read {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        }
        drop(writer.await.unwrap());
        (out, gate)
    }

    #[tokio::test]
    async fn hyper_reads_accepted_bytes_only_and_a_stand_in_for_a_refused_head() {
        let good = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let bad = b"GET /bare HTTP/1.1\nHost: x\n\n";
        for step in [1, 5, 300] {
            let (out, gate) = through_gate(&[&good[..], &bad[..]].concat(), step).await;
            assert_eq!(out, [&good[..], STAND_IN].concat(), "step {step}");
            assert_eq!(gate.take_refusal(), None);
            assert_eq!(gate.take_refusal(), None);
            assert!(matches!(gate.take_refusal(), Some(Reject::AmbiguousFraming(_))));
        }
    }

    #[tokio::test]
    async fn a_bare_lf_after_a_chunked_trailer_is_a_body_error() {
        // Issue 9, item 9: the bare-LF request after the trailer is never read as a request.
        let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\nGET /bare HTTP/1.1\nHost: x\n\n";
        let (out, gate) = through_gate(input, 7).await;
        // hyper may read the trailer line up to its bare LF, never the LF nor anything after it.
        let bare_lf = input.windows(2).position(|w| w == b"y\n").unwrap() + 1;
        assert!(out.len() <= bare_lf && out == input[..out.len()], "{}", String::from_utf8_lossy(&out));
        assert!(!out.windows(5).any(|w| w == b"/bare"));
        assert_eq!(gate.take_refusal(), None);
        assert_eq!(gate.take_refusal(), None);
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

    fn at(t0: tokio::time::Instant, ms: u64) -> tokio::time::Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn deadlines_of_a_parked_connection_are_checked_lazily() {
        let activity = Activity::default();
        let t0 = tokio::time::Instant::now();
        let (idle, head) = (Duration::from_secs(60), Duration::from_secs(10));
        let mut d = Deadlines::new(idle, head, t0);
        // A new connection waits for its first head from the start.
        assert_eq!(d.armed, at(t0, 10_000));
        assert_eq!(d.fired(at(t0, 10_000), &activity, true), Some(Expired::HeadTimeout));
        // Woken without a request (readiness, no bytes): still the first head's deadline.
        let mut d = Deadlines::new(idle, head, t0);
        d.unpark();
        assert_eq!(d.park(at(t0, 3_000), false), None);
        assert_eq!(d.fired(at(t0, 10_000), &activity, true), Some(Expired::HeadTimeout));
        // Served and parked at 1 s: the first-head timer fires at 10 s and re-arms for 61 s, once.
        let mut d = Deadlines::new(idle, head, t0);
        d.unpark();
        assert_eq!(d.park(at(t0, 1_000), true), None, "idle ends after the armed time: no reset");
        assert_eq!(d.fired(at(t0, 10_000), &activity, true), None);
        assert_eq!(d.armed, at(t0, 61_000));
        // Requests at 20 s and 30 s touch no timer; the fire at 61 s re-arms for the last park.
        d.unpark();
        d.park(at(t0, 20_000), true);
        d.unpark();
        d.park(at(t0, 30_000), true);
        assert_eq!(d.fired(at(t0, 61_000), &activity, true), None);
        assert_eq!(d.armed, at(t0, 90_000));
        assert_eq!(d.fired(at(t0, 90_000), &activity, true), Some(Expired::Idle));
    }

    #[test]
    fn a_short_idle_timeout_pulls_the_timer_in_and_a_head_in_pieces_too() {
        let activity = Activity::default();
        let t0 = tokio::time::Instant::now();
        let mut d = Deadlines::new(Duration::from_secs(1), Duration::from_secs(20), t0);
        d.unpark();
        // idle_timeout below header_read_timeout: parking moves the timer earlier.
        assert_eq!(d.park(at(t0, 500), true), Some(at(t0, 1_500)));
        assert_eq!(d.fired(at(t0, 1_500), &activity, true), Some(Expired::Idle));
        // Active, a head arriving in pieces: its deadline is pulled in, and holds whatever the I/O.
        let mut d = Deadlines::new(Duration::from_secs(60), Duration::from_millis(200), t0);
        d.unpark();
        assert_eq!(d.park(at(t0, 1), true), None);
        assert_eq!(d.fired(at(t0, 200), &activity, true), None);
        assert_eq!(d.armed, at(t0, 60_001));
        d.unpark();
        assert_eq!(d.head_due(&activity, true), None, "no head is arriving");
        activity.head_state(true);
        let due = d.head_due(&activity, true).expect("a head is arriving");
        assert!(due <= tokio::time::Instant::now() + Duration::from_millis(200));
        assert_eq!(d.head_due(&activity, true), None, "pulled in once");
        activity.touched.store(true, Ordering::Relaxed);
        assert_eq!(d.fired(due + Duration::from_millis(1), &activity, true), Some(Expired::HeadTimeout));
    }

    #[test]
    fn the_first_head_runs_from_the_start_however_its_bytes_trickle() {
        let activity = Activity::default();
        let t0 = tokio::time::Instant::now();
        let mut d = Deadlines::new(Duration::from_secs(60), Duration::from_secs(10), t0);
        // A byte just before the deadline wakes the connection; its head started later, but it is the
        // first head: the deadline stays 10 s from the start.
        d.unpark();
        activity.head_state(true);
        assert_eq!(d.head_due(&activity, false), None, "already armed for the start's deadline");
        activity.touched.store(true, Ordering::Relaxed);
        assert_eq!(d.fired(at(t0, 10_000), &activity, false), Some(Expired::HeadTimeout));
        // Active with no plaintext at all (TLS records only): the same.
        let mut d = Deadlines::new(Duration::from_secs(60), Duration::from_secs(10), t0);
        d.unpark();
        let quiet = Activity::default();
        quiet.touched.store(true, Ordering::Relaxed);
        assert_eq!(d.fired(at(t0, 10_000), &quiet, false), Some(Expired::HeadTimeout));
    }

    #[test]
    fn an_active_connection_is_idle_only_without_io_and_without_a_handler() {
        let activity = Arc::new(Activity::default());
        let t0 = tokio::time::Instant::now();
        let idle = Duration::from_secs(4);
        let mut d = Deadlines::new(idle, Duration::from_secs(10), t0);
        d.unpark();
        // Checked every quarter of idle_timeout while active.
        activity.touched.store(true, Ordering::Relaxed);
        assert_eq!(d.fired(at(t0, 1_000), &activity, true), None);
        assert_eq!(d.armed, at(t0, 2_000));
        let (handling, _responding) = activity.request_started();
        for s in 2..10 {
            assert_eq!(d.fired(at(t0, s * 1_000), &activity, true), None, "a running handler is not idleness");
        }
        drop(handling);
        assert_eq!(d.fired(at(t0, 10_000), &activity, true), None);
        assert_eq!(d.fired(at(t0, 11_000), &activity, true), None);
        assert_eq!(d.fired(at(t0, 12_000), &activity, true), None);
        assert_eq!(d.fired(at(t0, 13_000), &activity, true), Some(Expired::Idle));
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
        // Behind a NAT64 every address is its own client.
        for nat64 in ["64:ff9b::192.0.2.1", "64:ff9b:1:2::c000:201"] {
            let ip: IpAddr = nat64.parse().unwrap();
            assert_eq!(client_key(ip, 64), ip, "{nat64}");
        }
        assert_eq!(client_key("64:ff9c::1".parse().unwrap(), 32), "64:ff9c::".parse::<IpAddr>().unwrap());
    }
}
