//! One HTTP/1.1 connection to an upstream, driven inline by the request that uses it.
//!
//! **Departure from DESIGN.md** (which names hyper for HTTP): requests are forwarded upstream with this
//! small client, not hyper's. hyper's client runs each connection in a task of its own and hands every
//! request, response and body chunk across channels between that task and the request's; on this path
//! that hand-off was the largest cost left after the kernel's (about 14% of a proxied request's CPU in
//! `perf`, see README, Performance). Here the request's own task writes the request and reads the
//! response, and the response body reads straight from the connection as hyper's server pulls it.
//! Parsing is still a well-kept crate's: `httparse` (hyper's parser) reads the response head and the
//! chunk-size lines and trailer sections; this module only frames. The framing rules are strict (RFC
//! 9112 §6.3): a response with both `Content-Length` and `Transfer-Encoding`, several or invalid lengths,
//! a transfer coding other than `chunked`, obsolete line folding, a head over 64 KiB, or bytes left over
//! after a response is refused (502) or never reused, so an upstream cannot desynchronise a connection.
//! hyper still serves clients, and hyper's client still fetches JWKS, discovery and introspection.

use crate::exchange::BoxError;
use crate::proxy::{headers, Outgoing};
use crate::validate::body::{BodyTooLarge, LimitedBody};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Largest response head accepted (status line and header fields); offsets into it fit in a `u16`.
const MAX_HEAD: usize = 64 * 1024 - 1;
/// Most header fields in a response head (and in a trailer section).
const MAX_HEADERS: usize = 128;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
/// Largest chunk-size line (with extensions) or trailer section accepted in a chunked body.
const MAX_CHUNK_META: usize = 16 * 1024;
/// A buffered request body up to this size goes out in the same write as the head.
const COALESCE: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection was closed or reset before any byte of a response arrived. `sent`: the request may
    /// have reached the upstream (a write succeeded), so only an idempotent one may be sent again.
    #[error("upstream closed the connection (request sent: {sent})")]
    Closed { sent: bool },
    #[error("upstream I/O: {0}")]
    Io(#[source] io::Error),
    /// The upstream's response broke HTTP/1.1 or our limits.
    #[error("upstream response: {0}")]
    Protocol(&'static str),
    /// The client's body went over the route's limit while streaming (413).
    #[error("request body exceeds the limit")]
    BodyTooLarge,
    /// The client's body was malformed or cut off (400).
    #[error("reading the request body failed")]
    ClientBody,
}

fn closed_kind(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

/// The request body failed: over its limit (413), or anything else on the client's side (400).
fn body_error(e: &BoxError) -> Error {
    if e.is::<BodyTooLarge>() {
        Error::BodyTooLarge
    } else {
        Error::ClientBody
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A response head read from the upstream.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request after this response's body.
    pub keep_alive: bool,
}

pub struct Conn {
    io: Box<dyn Io>,
    /// Bytes read from the upstream and not yet consumed.
    buf: BytesMut,
    /// The request head being written (reused across requests).
    out: Vec<u8>,
    /// The deadline of [`Conn::exchange_until`]: one timer per connection, moved later for each request
    /// (which the runtime does without touching its timer wheel while the timer has not fired), rather
    /// than a timer registered and removed per request.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    pub fn new(io: Box<dyn Io>) -> Conn {
        Conn { io, buf: BytesMut::with_capacity(READ_SIZE), out: Vec::with_capacity(1024), timer: None }
    }

    /// [`Conn::exchange`], given up at `deadline`: `None` when the deadline came first (the connection is
    /// then mid-exchange and must not be reused).
    pub async fn exchange_until(
        &mut self,
        deadline: tokio::time::Instant,
        out: &Outgoing,
        body: &mut LimitedBody,
    ) -> Option<Result<Head, Error>> {
        let mut timer = match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let result = tokio::select! {
            biased;
            r = self.exchange(out, body) => Some(r),
            () = timer.as_mut() => None,
        };
        self.timer = Some(timer);
        result
    }

    /// An idle connection may be used again: nothing is buffered and the upstream has neither closed it
    /// nor sent anything unasked. Checked without waiting (and, on TCP, usually without a system call:
    /// the runtime knows the socket has not become readable since the last read drained it).
    pub fn reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        matches!(Pin::new(&mut *self.io).poll_read(&mut cx, &mut rb), Poll::Pending)
    }

    /// Sends one request and reads the head of its response (interim 1xx responses are skipped).
    pub async fn exchange(&mut self, out: &Outgoing, body: &mut LimitedBody) -> Result<Head, Error> {
        let whole = match self.send(out, body).await {
            Ok(()) => true,
            Err(SendError::Body(e)) => return Err(e),
            Err(SendError::Io { e, any_sent }) => {
                if !closed_kind(&e) {
                    return Err(Error::Io(e));
                }
                if !any_sent {
                    return Err(Error::Closed { sent: false });
                }
                // The upstream may have answered before closing (an early 413, say): read what it sent.
                false
            }
        };
        let mut head = self.read_head(out.method == Method::HEAD).await?;
        // A connection whose request could not be written whole is never reused.
        head.keep_alive &= whole;
        Ok(head)
    }

    /// Writes the request: `out.added` after `out.headers` (none of their names are in `out.headers`).
    async fn send(&mut self, out: &Outgoing, body: &mut LimitedBody) -> Result<(), SendError> {
        let (method, target, headers, added) = (&out.method, out.target.as_str(), &out.headers, &out.added);
        let framing = request_framing(method, headers, body);
        // The first piece of the body is awaited before anything is written: a body refused at once
        // (over its limit, a malformed first chunk) never lets its head reach the upstream, and a small
        // body goes out in the same write as the head.
        let first = match framing {
            ReqFraming::None => None,
            _ => match body.take_buffered() {
                Some(b) => Some(b),
                None => next_data(body).await.map_err(SendError::Body)?,
            },
        };
        let mut sent = first.as_ref().map_or(0, |b| b.len() as u64);
        check_length(framing, sent, false)?;
        let chunked = framing == ReqFraming::Chunked;
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
                continue;
            }
            headers::write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        added.write(out);
        match framing {
            ReqFraming::None => {}
            ReqFraming::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            ReqFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        let mut large = None;
        if let Some(data) = first {
            if chunked {
                chunk_line(out, data.len());
            }
            if data.len() <= COALESCE {
                out.extend_from_slice(&data);
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
            } else {
                large = Some(data);
            }
        }
        let mut ended = framing == ReqFraming::None || body.is_end_stream();
        if ended && chunked && large.is_none() {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        let mut w = Writer { io: &mut self.io, any_sent: false };
        w.all(&self.out).await?;
        if let Some(data) = large {
            w.all(&data).await?;
            if chunked {
                w.all(if ended { b"\r\n0\r\n\r\n" } else { b"\r\n" }).await?;
            }
        }
        let mut line = Vec::new();
        while !ended {
            let Some(data) = next_data(body).await.map_err(SendError::Body)? else {
                ended = true;
                if chunked {
                    w.all(b"0\r\n\r\n").await?;
                }
                continue;
            };
            sent += data.len() as u64;
            check_length(framing, sent, false)?;
            if chunked {
                line.clear();
                chunk_line(&mut line, data.len());
                w.all(&line).await?;
                w.all(&data).await?;
                w.all(b"\r\n").await?;
            } else {
                w.all(&data).await?;
            }
        }
        check_length(framing, sent, true)?;
        w.flush().await
    }

    /// Reads a response head. The request was (at least partly) sent: a close before any byte of it
    /// is `Closed { sent: true }`.
    async fn read_head(&mut self, head_request: bool) -> Result<Head, Error> {
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                match parse_head(&mut self.buf, head_request)? {
                    Parsed::Final(head) => return Ok(head),
                    Parsed::Interim => continue,
                    Parsed::Partial if self.buf.len() >= MAX_HEAD => {
                        return Err(Error::Protocol("response head too large"))
                    }
                    Parsed::Partial => {}
                }
            }
            self.buf.reserve(READ_SIZE);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) if !received => return Err(Error::Closed { sent: true }),
                Ok(0) => return Err(Error::Protocol("connection closed inside the response head")),
                Ok(_) => {}
                Err(e) if !received && closed_kind(&e) => return Err(Error::Closed { sent: true }),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        let fut = self.io.read_buf(&mut self.buf);
        std::pin::pin!(fut).poll(cx)
    }
}

/// The next non-empty piece of the request body; `None` at its end (trailers are not forwarded).
async fn next_data(body: &mut LimitedBody) -> Result<Option<Bytes>, Error> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e))?;
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
    Ok(None)
}

/// A body with a declared length must be exactly that long: `end` once it is all read.
fn check_length(framing: ReqFraming, sent: u64, end: bool) -> Result<(), SendError> {
    match framing {
        ReqFraming::Length(n) if sent > n || (end && sent != n) => Err(SendError::Body(Error::ClientBody)),
        _ => Ok(()),
    }
}

fn chunk_line(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// Writes a request out, remembering whether any of it was accepted by the connection.
struct Writer<'a> {
    io: &'a mut Box<dyn Io>,
    any_sent: bool,
}

impl Writer<'_> {
    async fn all(&mut self, mut data: &[u8]) -> Result<(), SendError> {
        while !data.is_empty() {
            match self.io.write(data).await {
                Ok(0) => return Err(SendError::Io { e: io::ErrorKind::WriteZero.into(), any_sent: self.any_sent }),
                Ok(n) => {
                    self.any_sent = true;
                    data = &data[n..];
                }
                Err(e) => return Err(SendError::Io { e, any_sent: self.any_sent }),
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SendError> {
        self.io.flush().await.map_err(|e| SendError::Io { e, any_sent: self.any_sent })
    }
}

enum SendError {
    Io { e: io::Error, any_sent: bool },
    Body(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length(u64),
    Chunked,
}

/// How the request body goes upstream: its exact length when known (buffered, or the client's
/// `Content-Length`), chunked otherwise; an empty body is announced as `content-length: 0` only where a
/// body is expected (or the client said so).
fn request_framing(method: &Method, headers: &HeaderMap, body: &LimitedBody) -> ReqFraming {
    if body.is_end_stream() {
        let expects_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        return if expects_body || headers.contains_key(CONTENT_LENGTH) {
            ReqFraming::Length(0)
        } else {
            ReqFraming::None
        };
    }
    match body.size_hint().exact() {
        Some(n) => ReqFraming::Length(n),
        None => ReqFraming::Chunked,
    }
}

enum Parsed {
    Final(Head),
    /// A 1xx response, consumed; another head follows.
    Interim,
    Partial,
}

/// Parses one response head from the front of `buf`, consuming it when complete.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, Error> {
    // Uninitialised field slots: nothing is written to the ones a head does not use.
    let mut fields = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Protocol("too many response header fields")),
        Err(_) => return Err(Error::Protocol("malformed response head")),
    };
    if len > MAX_HEAD {
        return Err(Error::Protocol("response head too large"));
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Protocol("invalid status code"))?;
    if status.is_informational() {
        if code == 101 {
            return Err(Error::Protocol("protocol upgrades are not forwarded"));
        }
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let http11 = resp.version == Some(1);
    // Where each field lies in the head, so the values can share its memory once it is frozen.
    let base = buf.as_ptr() as usize;
    // Offsets fit in 16 bits: a head is at most `MAX_HEAD` bytes.
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    // What `classify` made of each kept name (zero-filled like `spans`: no per-slot initialisation).
    let mut fields = [0u8; MAX_HEADERS];
    let mut length: Option<u64> = None;
    let mut lengths = 0;
    let mut codings = 0;
    let mut chunked = false;
    let mut close = !http11;
    let mut kept = 0;
    for f in resp.headers.iter() {
        let name = f.name.as_bytes();
        let field = classify(name);
        // Hop-by-hop fields and `Server`/`X-Powered-By` never reach the client: they are not even
        // copied (a `Connection` naming further fields is kept for `headers::clean_response`).
        let keep = match field {
            Field::TransferEncoding => false,
            Field::Connection => !headers::connection_names_no_headers(f.value),
            Field::Other => !headers::dropped_from_responses(name),
            Field::ContentLength | Field::Known(_) => true,
        };
        if keep {
            let (n_off, v_off) = (name.as_ptr() as usize - base, f.value.as_ptr() as usize - base);
            spans[kept] = (n_off as u16, name.len() as u16, v_off as u16, f.value.len() as u16);
            fields[kept] = field.code();
            kept += 1;
        }
        match field {
            Field::ContentLength => {
                lengths += 1;
                let v = f.value;
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(Error::Protocol("invalid content-length"));
                }
                let n = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                length = Some(n.ok_or(Error::Protocol("invalid content-length"))?);
            }
            Field::TransferEncoding => {
                codings += 1;
                chunked = f.value.eq_ignore_ascii_case(b"chunked");
            }
            Field::Connection => {
                for token in f.value.split(|&b| b == b',') {
                    if token.trim_ascii().eq_ignore_ascii_case(b"close") {
                        close = true;
                    }
                }
            }
            Field::Known(_) | Field::Other => {}
        }
    }
    let no_body = head_request || code == 204 || code == 304;
    let framing = if no_body {
        Framing::Empty
    } else if codings > 0 {
        if lengths > 0 {
            return Err(Error::Protocol("both content-length and transfer-encoding"));
        }
        if codings > 1 || !chunked || !http11 {
            return Err(Error::Protocol("transfer coding other than chunked"));
        }
        Framing::Chunked
    } else if lengths > 1 {
        return Err(Error::Protocol("several content-length fields"));
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let head = buf.split_to(len).freeze();
    // Room for the fields the gateway adds to the response (request id, HSTS) without growing.
    let mut headers = HeaderMap::with_capacity(kept + 2);
    for (&(n_off, n_len, v_off, v_len), &code) in spans[..kept].iter().zip(&fields[..kept]) {
        let (n_off, v_off) = (n_off as usize, v_off as usize);
        let name = field_name(Field::from_code(code), &head[n_off..n_off + n_len as usize])?;
        let value = HeaderValue::from_maybe_shared(head.slice(v_off..v_off + v_len as usize))
            .map_err(|_| Error::Protocol("invalid header value"))?;
        headers.append(name, value);
    }
    let keep_alive = !close && framing != Framing::Close;
    Ok(Parsed::Final(Head { status, headers, framing, keep_alive }))
}

/// Field names a response head parser recognises with one comparison: the ones that frame the body or
/// the connection, and those most responses carry ([`KNOWN`]), which then skip
/// `HeaderName::from_bytes` (it copies the name to lower-case it and matches it against every
/// standard name: about 150 instructions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    /// `KNOWN[i]`.
    Known(u8),
    Other,
}

const KNOWN: [HeaderName; 9] = {
    use http::header::{
        CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, DATE, ETAG, LAST_MODIFIED, LOCATION, SET_COOKIE, VARY,
    };
    [DATE, ETAG, VARY, LOCATION, SET_COOKIE, CONTENT_TYPE, CACHE_CONTROL, LAST_MODIFIED, CONTENT_ENCODING]
};

impl Field {
    fn code(self) -> u8 {
        match self {
            Field::Other => 0,
            Field::ContentLength => 1,
            Field::TransferEncoding => 2,
            Field::Connection => 3,
            Field::Known(i) => 4 + i,
        }
    }

    fn from_code(code: u8) -> Field {
        match code {
            1 => Field::ContentLength,
            2 => Field::TransferEncoding,
            3 => Field::Connection,
            c if c >= 4 && usize::from(c - 4) < KNOWN.len() => Field::Known(c - 4),
            _ => Field::Other,
        }
    }
}

fn classify(name: &[u8]) -> Field {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        4 if is("date") => Field::Known(0),
        4 if is("etag") => Field::Known(1),
        4 if is("vary") => Field::Known(2),
        8 if is("location") => Field::Known(3),
        10 if is("connection") => Field::Connection,
        10 if is("set-cookie") => Field::Known(4),
        12 if is("content-type") => Field::Known(5),
        13 if is("cache-control") => Field::Known(6),
        13 if is("last-modified") => Field::Known(7),
        14 if is("content-length") => Field::ContentLength,
        16 if is("content-encoding") => Field::Known(8),
        17 if is("transfer-encoding") => Field::TransferEncoding,
        _ => Field::Other,
    }
}

/// A kept field's name, by what [`classify`] made of it.
fn field_name(field: Field, raw: &[u8]) -> Result<HeaderName, Error> {
    match field {
        Field::Known(i) => Ok(KNOWN[usize::from(i)].clone()),
        Field::ContentLength => Ok(CONTENT_LENGTH),
        Field::Connection => Ok(http::header::CONNECTION),
        Field::TransferEncoding => Ok(TRANSFER_ENCODING),
        Field::Other => HeaderName::from_bytes(raw).map_err(|_| Error::Protocol("invalid header name")),
    }
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// Where a connection goes when its response body has been read to the end (the pool).
pub trait Release {
    fn release(self, conn: Conn);
}

/// A response body read from its connection as it is polled. When it ends cleanly the connection is
/// handed to its [`Release`]; a body dropped early, or ended by an error, closes it.
pub struct ResponseBody<R: Release> {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    release: Option<R>,
}

impl<R: Release> ResponseBody<R> {
    pub fn new(conn: Conn, head: &Head, release: R) -> Self {
        let state = match head.framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        };
        let mut body = ResponseBody { conn: Some(conn), state, keep_alive: head.keep_alive, release: Some(release) };
        if body.state == State::Done {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        self.state = State::Done;
        let (Some(conn), Some(release)) = (self.conn.take(), self.release.take()) else { return };
        if self.keep_alive && conn.buf.is_empty() {
            release.release(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(Box::new(e))))
    }

    /// Makes sure the buffer holds something, reading if needed. `Ok(false)` at the end of the stream.
    fn poll_some(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !conn.buf.is_empty() {
            return Poll::Ready(Ok(true));
        }
        Poll::Ready(ready!(conn.poll_fill(cx)).map(|n| n > 0))
    }
}

impl<R: Release + Unpin> Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let state = this.state;
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) | State::Chunked(Chunk::Data(remaining)) => {
                    match ready!(Self::poll_some(conn, cx)) {
                        Err(e) => return this.fail(Error::Io(e)),
                        Ok(false) => return this.fail(Error::Protocol("connection closed inside the body")),
                        Ok(true) => {}
                    }
                    let take = remaining.min(conn.buf.len() as u64);
                    let data = conn.buf.split_to(take as usize).freeze();
                    let left = remaining - take;
                    match state {
                        State::Length(_) if left == 0 => this.finish(),
                        State::Length(_) => this.state = State::Length(left),
                        _ if left == 0 => this.state = State::Chunked(Chunk::DataEnd),
                        _ => this.state = State::Chunked(Chunk::Data(left)),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close => match ready!(Self::poll_some(conn, cx)) {
                    Err(e) => return this.fail(Error::Io(e)),
                    Ok(false) => {
                        this.keep_alive = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(true) => {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                },
                State::Chunked(step) => {
                    let parsed = match step {
                        Chunk::Size => match httparse::parse_chunk_size(&conn.buf) {
                            Ok(httparse::Status::Complete((used, size))) => {
                                conn.buf.advance(used);
                                this.state =
                                    State::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                                true
                            }
                            Ok(httparse::Status::Partial) => false,
                            Err(_) => return this.fail(Error::Protocol("invalid chunk size")),
                        },
                        Chunk::DataEnd if conn.buf.len() >= 2 => {
                            if &conn.buf[..2] != b"\r\n" {
                                return this.fail(Error::Protocol("chunk not followed by CRLF"));
                            }
                            conn.buf.advance(2);
                            this.state = State::Chunked(Chunk::Size);
                            true
                        }
                        Chunk::DataEnd => false,
                        Chunk::Trailers => {
                            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                            match httparse::parse_headers(&conn.buf, &mut fields) {
                                Ok(httparse::Status::Complete((used, _))) => {
                                    // Trailers are not forwarded (the client side re-frames the body).
                                    conn.buf.advance(used);
                                    this.finish();
                                    return Poll::Ready(None);
                                }
                                Ok(httparse::Status::Partial) => false,
                                Err(_) => return this.fail(Error::Protocol("malformed trailer section")),
                            }
                        }
                        Chunk::Data(_) => false, // handled with `State::Length` above
                    };
                    if parsed {
                        continue;
                    }
                    if conn.buf.len() > MAX_CHUNK_META {
                        return this.fail(Error::Protocol("chunk metadata too large"));
                    }
                    match ready!(conn.poll_fill(cx)) {
                        Err(e) => return this.fail(Error::Io(e)),
                        Ok(0) => return this.fail(Error::Protocol("connection closed inside the body")),
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
