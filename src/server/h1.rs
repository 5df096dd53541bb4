//! A parkable HTTP/1 connection: while it waits for its next request it holds no buffer.
//!
//! hyper's HTTP/1 server connection keeps an 8 KiB read buffer (reserved before every read, so also
//! while nothing arrives) and an 8 KiB write buffer for its whole life. Kept alive, that is most of
//! an idle connection's cost. So once hyper has answered everything, flushed it, and found nothing
//! more to read ([`Activity::parkable`]), its connection is taken apart ([`Connection::into_parts`])
//! and dropped, leaving the socket, the framer's few words of state and one timer. When the socket
//! turns readable a new hyper connection is built on the same I/O, with the same service. NGINX frees
//! a kept-alive connection's buffers the same way (see `docs/performance.md`, Connection scale).
//!
//! The connection is a hand-written future, not an `async fn`: the task of a parked connection holds
//! exactly the fields below (an `async fn` would also keep copies of its arguments and the largest of
//! its await points' states). Its timeouts are [`Deadlines`]: one timer, checked lazily, armed at
//! most once per idle period on a busy connection (no watchdog task, no per-request timer work).

use super::conn::{Activity, Deadlines, Expired, Gate, GatedIo, Socket, Sweeper};
use super::{log_expired, ConnService, Stop};
use hyper::server::conn::http1::{Builder, Connection};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

type Conn<I, S> = Connection<TokioIo<GatedIo<I>>, S>;

/// Serves one HTTP/1 connection until it closes; see the module documentation.
pub(super) struct Parkable<I, S: ConnService> {
    state: State<I, S>,
    /// The service, while parked (hyper's connection holds it while active).
    service: Option<S>,
    builder: Builder,
    activity: Arc<Activity>,
    deadlines: Deadlines,
    timer: Pin<Box<Sleep>>,
    /// Parking is deferred to the next sweep (see [`Sweeper`]); `enlisted`: the sweep epoch and the
    /// requests served when this connection enlisted.
    sweeper: Arc<Sweeper>,
    enlisted: Option<(u64, u64)>,
    gate: Arc<Gate>,
    /// The timer has been polled since it was last reset (its waker is registered: polled outside the
    /// task's budget, see [`poll_unbudgeted`]): until it fires, a wake needs only `is_elapsed`, a load,
    /// not a poll.
    timer_polled: bool,
    /// `stopping` has been polled once (unbudgeted; its waker then stays registered): after that only `signal`
    /// is looked at (a load), not the channel's waiter list (a lock) on every wake.
    stop_polled: bool,
    signal: tokio::sync::watch::Receiver<bool>,
    /// Resolves when the gateway shuts down.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Held until the connection is done: the shutdown waits for it.
    _drain: tokio::sync::mpsc::Sender<()>,
}

// The parked I/O stays inline: boxing it would cost an allocation per park, and the space it leaves
// unused while active is the task's, not the heap's.
#[allow(clippy::large_enum_variant)]
enum State<I, S: ConnService> {
    /// Waiting for the socket to turn readable; nothing is read, nothing is buffered.
    Parked(GatedIo<I>),
    Active(Pin<Box<Conn<I, S>>>),
    /// The gateway is shutting down: the request in flight finishes, then the connection closes.
    Closing(Pin<Box<Conn<I, S>>>),
    Done,
}

impl<I, S> Parkable<I, S>
where
    I: AsyncRead + AsyncWrite + Socket + Send + Unpin + 'static,
    S: ConnService,
{
    pub(super) fn new(
        io: GatedIo<I>,
        service: S,
        builder: Builder,
        activity: Arc<Activity>,
        idle: Duration,
        head: Duration,
        stop: Stop,
    ) -> Self {
        let deadlines = Deadlines::new(idle, head, Instant::now());
        let timer = Box::pin(tokio::time::sleep_until(deadlines.armed));
        let Stop { stop: signal, _drain, sweeper } = stop;
        let mut waiting = signal.clone();
        let stopping = Box::pin(async move {
            let _ = waiting.wait_for(|stopping| *stopping).await;
        });
        // TLS may hold the first request already (read with the handshake's last flight): served at
        // once. Later parks come only after hyper found nothing more to read, in TLS' buffers either.
        let may_hold_bytes = io.get_ref().may_hold_bytes();
        let gate = io.gate();
        let mut this = Parkable {
            sweeper,
            enlisted: None,
            gate,
            state: State::Parked(io),
            service: Some(service),
            builder,
            activity,
            deadlines,
            timer,
            timer_polled: false,
            stop_polled: false,
            signal,
            stopping,
            _drain,
        };
        if may_hold_bytes {
            this.unpark();
        }
        this
    }

    /// Builds a hyper connection on the parked I/O.
    fn unpark(&mut self) {
        let (State::Parked(io), Some(service)) = (std::mem::replace(&mut self.state, State::Done), self.service.take())
        else {
            return;
        };
        self.deadlines.unpark();
        self.state = State::Active(Box::pin(self.builder.serve_connection(TokioIo::new(io), service)));
    }

    /// Takes the hyper connection apart and keeps its I/O and service; false if it cannot be.
    fn park(&mut self, conn: Pin<Box<Conn<I, S>>>) -> bool {
        let parts = Pin::into_inner(conn).into_parts();
        if !parts.read_buf.is_empty() {
            // Never expected (the framer is between messages and hyper found nothing more to read);
            // bytes hyper holds cannot be handed to a new connection as a new message.
            tracing::debug!(bytes = parts.read_buf.len(), "unread bytes at rest; connection closed");
            return false;
        }
        let mut io = parts.io.into_inner();
        io.shed();
        if let Some(due) = self.deadlines.park(Instant::now(), io.served_any()) {
            self.timer.as_mut().reset(due);
            self.timer_polled = false;
        }
        self.service = Some(parts.service);
        self.state = State::Parked(io);
        true
    }

    /// At rest now: whether it has been since before the last sweep with no request in between (then
    /// it parks); otherwise it enlists for the next sweep, once.
    fn at_rest_since_sweep(&mut self, cx: &mut Context<'_>) -> bool {
        let served = self.gate.served();
        let now = self.sweeper.epoch();
        match self.enlisted {
            // Swept since it enlisted, and no request since it was last seen at rest: parks.
            Some((epoch, at)) if now > epoch && at == served => {
                self.enlisted = None;
                true
            }
            // Enlisted for the coming sweep already (one waker per sweep, not one per request).
            Some((epoch, _)) if now == epoch => {
                self.enlisted = Some((epoch, served));
                false
            }
            _ => {
                self.enlisted = Some((now, served));
                self.sweeper.enlist(cx.waker());
                false
            }
        }
    }

    /// Polls the timer; a deadline that passed, if any (re-arming it otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        if self.timer_polled && !self.timer.is_elapsed() {
            return None;
        }
        while poll_unbudgeted(self.timer.as_mut(), cx).is_ready() {
            let served = self.gate.served() > 0;
            if let Some(expired) = self.deadlines.fired(Instant::now(), &self.activity, served) {
                return Some(expired);
            }
            self.timer.as_mut().reset(self.deadlines.armed);
        }
        self.timer_polled = true;
        None
    }

    /// Whether the gateway is shutting down.
    fn stopping(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stop_polled && !self.signal.has_changed().unwrap_or(false) {
            return false;
        }
        self.stop_polled = true;
        poll_unbudgeted(self.stopping.as_mut(), cx).is_ready()
    }
}

/// Polls `f` outside the task's cooperative budget (tokio's `coop`). A budgeted future (a timer, a
/// watch channel) polled when the task's budget is spent returns `Pending` without registering the
/// waker (tokio wakes the task at once instead, to be polled again later). [`Parkable`] remembers a
/// `Pending` timer or shutdown signal as registered and from then on only loads a flag, never polls it
/// again: a refused poll would leave the connection with no timer at all, so a client that sends
/// nothing more was never closed (`tests/scale.rs` under load). tokio's own `timeout` polls its timer
/// unbudgeted for the same reason.
fn poll_unbudgeted<F: Future + ?Sized>(f: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
    Pin::new(&mut tokio::task::unconstrained(f)).poll(cx)
}

impl<I, S> Future for Parkable<I, S>
where
    I: AsyncRead + AsyncWrite + Socket + Send + Unpin + 'static,
    S: ConnService,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Parked(io) => {
                    match io.get_ref().socket().poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            this.unpark();
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!(error = %e, "connection ended with an error");
                            return Poll::Ready(());
                        }
                        Poll::Pending => {}
                    }
                    if let Some(expired) = this.expired(cx) {
                        log_expired(expired);
                        return Poll::Ready(());
                    }
                    // Parked, a connection has nothing in flight: it closes at once.
                    if this.stopping(cx) {
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
                State::Active(conn) => {
                    if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return Poll::Ready(());
                    }
                    if this.activity.parkable() && this.at_rest_since_sweep(cx) {
                        let State::Active(conn) = std::mem::replace(&mut this.state, State::Done) else {
                            return Poll::Ready(());
                        };
                        if this.park(conn) {
                            continue;
                        }
                        return Poll::Ready(());
                    }
                    if let Some(due) = this.deadlines.head_due(&this.activity, this.gate.served() > 0) {
                        this.timer.as_mut().reset(due);
                        this.timer_polled = false;
                    }
                    if let Some(expired) = this.expired(cx) {
                        log_expired(expired);
                        return Poll::Ready(());
                    }
                    if this.stopping(cx) {
                        let State::Active(mut conn) = std::mem::replace(&mut this.state, State::Done) else {
                            return Poll::Ready(());
                        };
                        conn.as_mut().graceful_shutdown();
                        this.state = State::Closing(conn);
                        continue;
                    }
                    return Poll::Pending;
                }
                State::Closing(conn) => {
                    // The shutdown deadline (in `server::run`) bounds this wait.
                    if let Err(e) = std::task::ready!(conn.as_mut().poll(cx)) {
                        tracing::debug!(error = %e, "connection ended with an error during shutdown");
                    }
                    return Poll::Ready(());
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::ResponseBody;
    use crate::server::conn::TrackedIo;
    use crate::validate::head::HeadLimits;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    type Io = TrackedIo<TcpStream>;

    /// A connection served by [`Parkable`] on loopback, and its client.
    async fn connection(
        idle: Duration,
        head: Duration,
    ) -> (Parkable<Io, impl ConnService>, TcpStream, tokio::sync::watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let activity = Arc::new(Activity::default());
        let io = GatedIo::new(
            TrackedIo::new(server, activity.clone()),
            Some(HeadLimits::new(2048, 20, 512)),
            false,
            activity.clone(),
        );
        // As `server::prepare`'s: each request is counted by the gate (a served connection's deadlines
        // are `idle_timeout`'s, no longer the first head's).
        let gate = io.gate();
        let service = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
            let _ = gate.take_refusal();
            async { Ok::<_, Infallible>(http::Response::new(ResponseBody::empty())) }
        });
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let sweeper = Arc::new(Sweeper::default());
        tokio::spawn(sweeper.clone().run());
        let stop = Stop { stop, _drain: tokio::sync::mpsc::channel(1).0, sweeper };
        let conn = Parkable::new(io, service, Builder::new(), activity, idle, head, stop);
        (conn, client, stop_tx)
    }

    /// Polls `conn` once with the task's cooperative budget spent, as a connection task is when the
    /// tasks before it in the worker's LIFO slot (an accept loop taking a burst of connections) used it
    /// up: every budgeted poll in it (socket readiness, the timer, the shutdown signal) is refused.
    /// Then yields, so the task goes on with a new budget. `conn` is polled by this task only, as a
    /// connection is by its own task: the wakers it registered stay this task's.
    async fn poll_out_of_budget<F: Future + Unpin>(conn: &mut F) {
        std::future::poll_fn(|cx| {
            for _ in 0..10_000 {
                if !tokio::task::coop::has_budget_remaining() {
                    break;
                }
                let _ = std::pin::pin!(tokio::task::consume_budget()).poll(cx);
            }
            assert!(!tokio::task::coop::has_budget_remaining(), "the test task's budget is spent");
            assert!(Pin::new(&mut *conn).poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        tokio::task::yield_now().await;
    }

    /// In a task of its own: spawned tasks run with a budget.
    async fn in_task<F: Future<Output = ()> + Send + 'static>(f: F) {
        tokio::spawn(f).await.unwrap();
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_silent_connection_polled_out_of_budget_still_closes_at_its_head_deadline() {
        in_task(async {
            let (mut conn, _client, _stop) = connection(Duration::from_secs(60), Duration::from_millis(100)).await;
            poll_out_of_budget(&mut conn).await;
            let closed = tokio::time::timeout(LONG, &mut conn).await;
            assert!(closed.is_ok(), "still open 10 s after a header_read_timeout of 100 ms");
        })
        .await;
    }

    #[tokio::test]
    async fn a_served_connection_polled_out_of_budget_still_closes_when_idle() {
        in_task(async {
            // header_read_timeout below idle_timeout, as in `tests/scale.rs`: parking does not re-arm
            // the timer, the first head's deadline wakes the connection and re-arms it for idleness.
            let (mut conn, mut client, _stop) =
                connection(Duration::from_millis(300), Duration::from_millis(200)).await;
            // The request is there when the connection is first polled, out of budget.
            client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
            poll_out_of_budget(&mut conn).await;
            let client_side = async {
                let mut buf = [0u8; 512];
                let n = client.read(&mut buf).await.unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
                // Then idle: closed by idle_timeout (300 ms after it parks), not left open.
                let closed = tokio::time::timeout(LONG, client.read(&mut buf)).await;
                assert!(matches!(closed, Ok(Ok(0) | Err(_))), "still open 10 s after an idle_timeout of 300 ms");
            };
            // Taken by value: the socket closes when the finished connection is dropped, as its task's.
            let (served, ()) = tokio::join!(tokio::time::timeout(LONG, conn), client_side);
            assert!(served.is_ok(), "the connection did not end");
        })
        .await;
    }

    /// A waker that notes it was woken.
    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Woken {
        fn take(&self) -> bool {
            self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Polls `conn` once with `waker` (its budget spent first if `out_of_budget`): whether it is pending.
    async fn poll_with<F: Future + Unpin>(conn: &mut F, waker: &std::task::Waker, out_of_budget: bool) -> bool {
        std::future::poll_fn(|cx| {
            while out_of_budget && tokio::task::coop::has_budget_remaining() {
                let _ = std::pin::pin!(tokio::task::consume_budget()).poll(cx);
            }
            Poll::Ready(Pin::new(&mut *conn).poll(&mut Context::from_waker(waker)).is_pending())
        })
        .await
    }

    #[tokio::test]
    async fn a_parked_connection_polled_out_of_budget_still_hears_the_shutdown() {
        in_task(async {
            let (mut conn, _client, stop) = connection(Duration::from_secs(600), Duration::from_secs(600)).await;
            // Polled with a waker of its own, to see what wakes it.
            let woken = Arc::new(Woken::default());
            let waker = std::task::Waker::from(woken.clone());
            assert!(poll_with(&mut conn, &waker, true).await);
            tokio::task::yield_now().await;
            assert!(poll_with(&mut conn, &waker, false).await);
            woken.take();
            stop.send(true).unwrap();
            assert!(woken.take(), "the shutdown signal did not wake the parked connection");
            assert!(!poll_with(&mut conn, &waker, false).await, "closed at shutdown");
        })
        .await;
    }
}
