//! A second look at the raw bytes of HTTP/1 request heads, for the ambiguities hyper's parser accepts and
//! then smooths over, so that [`super::check_framing`] never sees them: a `Content-Length` next to
//! `Transfer-Encoding` (hyper drops the length), a repeated `Content-Length` with the same value (hyper
//! keeps one), and a line ended by a bare LF (accepted as CRLF). Another parser in front of or behind the
//! gateway may read these differently; that disagreement is what request smuggling is made of.
//!
//! [`HeadScanner`] follows the connection's bytes as they are read: through each head, then over the
//! body by its declared framing, to the next head. It records one verdict per head, in order; the server
//! hands them out one per request. When anything is unclear (a head it cannot follow, an upgrade, an h2c
//! preface) it stops for the rest of the connection and hyper's parser alone decides, as without it.

use std::collections::VecDeque;

/// Set on a request whose raw head was ambiguous; [`super::check_framing`] refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeadProblem(pub &'static str);

/// Longest header line kept for inspection; framing headers are far shorter.
const MAX_LINE: usize = 256;
/// Past this, hyper has refused the head already (its buffer is smaller).
const MAX_HEAD: usize = 2 * 1024 * 1024;
const MAX_TRAILERS: usize = 64 * 1024;
const MAX_CHUNK_EXT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    ChunkSize {
        size: u64,
        digits: u8,
    },
    ChunkSizeWs {
        size: u64,
    },
    ChunkExt {
        size: u64,
        len: usize,
    },
    ChunkSizeLf {
        size: u64,
    },
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    TrailerLineStart,
    TrailerLine,
    TrailersEndLf,
    /// Not following this connection any more.
    Off,
}

/// What is known about the head being read.
#[derive(Default)]
struct Head {
    len: usize,
    line: Vec<u8>,
    line_len: usize,
    lines: usize,
    prev_cr: bool,
    bare_lf: bool,
    bare_cr: bool,
    folded: bool,
    lengths: u32,
    length: Option<u64>,
    codings: u32,
    chunked_last: bool,
    unreadable: bool,
    connect: bool,
    preface: bool,
}

pub struct HeadScanner {
    state: State,
    head: Head,
    /// Bytes of the heads already complete.
    head_total: u64,
    trailers: usize,
    verdicts: VecDeque<Option<&'static str>>,
}

impl Default for HeadScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadScanner {
    pub fn new() -> Self {
        HeadScanner { state: State::Head, head: Head::default(), head_total: 0, trailers: 0, verdicts: VecDeque::new() }
    }

    /// A scanner that follows nothing (HTTP/2 connections).
    pub fn disabled() -> Self {
        HeadScanner { state: State::Off, ..Self::new() }
    }

    /// The verdict on the next request head, oldest first: `Some(Some(reason))` for an ambiguous head,
    /// `Some(None)` for a clean one, `None` when no head was recorded for it.
    pub fn next_verdict(&mut self) -> Option<Option<&'static str>> {
        self.verdicts.pop_front()
    }

    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// How many request-head bytes were followed so far (never body bytes).
    pub fn head_bytes(&self) -> u64 {
        self.head_total + self.head.len as u64
    }

    /// A request head has started and is not complete.
    pub fn mid_head(&self) -> bool {
        self.state == State::Head && self.head.len > 0
    }

    /// Follows `bytes`, the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Fixed(n) | State::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::Fixed(_), l) => State::Fixed(l),
                        (_, 0) => State::ChunkDataCr,
                        (_, l) => State::ChunkData(l),
                    };
                }
                // The ordinary bytes of a head line, up to its CR or LF, in one step (the same as one by
                // one: only CR and LF, and the byte after a CR, need the byte-wise path). A whole line at
                // the start of the input is judged in place, not copied.
                State::Head if !self.head.prev_cr => {
                    if self.head.line_len == 0 {
                        if let Some((end, cr)) = Self::whole_line_at(bytes, self.head.lines) {
                            let content = &bytes[..end];
                            bytes = &bytes[end + usize::from(cr) + 1..];
                            self.whole_line(content, cr);
                            continue;
                        }
                    }
                    match memchr::memchr2(b'\r', b'\n', bytes) {
                        Some(0) => {
                            self.head_byte(bytes[0]);
                            bytes = &bytes[1..];
                        }
                        found => {
                            let n = found.unwrap_or(bytes.len());
                            self.head_span(&bytes[..n]);
                            bytes = &bytes[n..];
                        }
                    }
                }
                _ => {
                    self.byte(bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
    }

    /// Where the line at the start of `bytes` ends, if it ends in `bytes` with no CR inside it: the length
    /// of its content, and whether a CR precedes its LF. `lines`: head lines already complete.
    fn whole_line_at(bytes: &[u8], lines: usize) -> Option<(usize, bool)> {
        let lf = memchr::memchr(b'\n', bytes)?;
        let cr = lf > 0 && bytes[lf - 1] == b'\r';
        let end = lf - usize::from(cr);
        if (lines == 0 && end == 0) || memchr::memchr(b'\r', &bytes[..end]).is_some() {
            return None;
        }
        Some((end, cr))
    }

    /// `feed` without the line fast path: every head byte one by one. The reference it is tested against.
    #[cfg(test)]
    fn feed_bytewise(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                // Body bytes are skipped the same way in both paths.
                State::Fixed(_) | State::ChunkData(_) => {
                    self.feed(&bytes[..1]);
                    bytes = &bytes[1..];
                }
                _ => {
                    self.byte(bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
    }

    /// Bytes of a head line that contain no CR or LF, with no CR before them.
    fn head_span(&mut self, span: &[u8]) {
        let h = &mut self.head;
        h.len += span.len();
        if h.len > MAX_HEAD {
            self.state = State::Off;
            return;
        }
        let room = MAX_LINE.saturating_sub(h.line.len()).min(span.len());
        h.line.extend_from_slice(&span[..room]);
        h.line_len += span.len();
    }

    fn byte(&mut self, b: u8) {
        self.state = match self.state {
            State::Head => return self.head_byte(b),
            State::ChunkSize { size, digits } => match (b, hex(b)) {
                (_, Some(d)) if size >> 60 == 0 => {
                    State::ChunkSize { size: size << 4 | u64::from(d), digits: digits.saturating_add(1) }
                }
                (b' ' | b'\t', _) if digits > 0 => State::ChunkSizeWs { size },
                (b';', _) if digits > 0 => State::ChunkExt { size, len: 0 },
                (b'\r', _) if digits > 0 => State::ChunkSizeLf { size },
                _ => State::Off,
            },
            State::ChunkSizeWs { size } => match b {
                b' ' | b'\t' => State::ChunkSizeWs { size },
                b';' => State::ChunkExt { size, len: 0 },
                b'\r' => State::ChunkSizeLf { size },
                _ => State::Off,
            },
            State::ChunkExt { size, len } => match b {
                b'\r' => State::ChunkSizeLf { size },
                b'\n' => State::Off,
                _ if len < MAX_CHUNK_EXT => State::ChunkExt { size, len: len + 1 },
                _ => State::Off,
            },
            State::ChunkSizeLf { size } => match (b, size) {
                (b'\n', 0) => {
                    self.trailers = 0;
                    State::TrailerLineStart
                }
                (b'\n', n) => State::ChunkData(n),
                _ => State::Off,
            },
            State::ChunkDataCr => {
                if b == b'\r' {
                    State::ChunkDataLf
                } else {
                    State::Off
                }
            }
            State::ChunkDataLf => {
                if b == b'\n' {
                    State::ChunkSize { size: 0, digits: 0 }
                } else {
                    State::Off
                }
            }
            State::TrailerLineStart => match b {
                b'\r' => State::TrailersEndLf,
                b'\n' => State::Off,
                _ => self.trailer_byte(b),
            },
            State::TrailerLine => self.trailer_byte(b),
            State::TrailersEndLf => {
                if b == b'\n' {
                    State::Head
                } else {
                    State::Off
                }
            }
            State::Fixed(_) | State::ChunkData(_) | State::Off => self.state,
        }
    }

    fn trailer_byte(&mut self, b: u8) -> State {
        self.trailers += 1;
        match b {
            _ if self.trailers > MAX_TRAILERS => State::Off,
            b'\n' => State::TrailerLineStart,
            _ => State::TrailerLine,
        }
    }

    fn head_byte(&mut self, b: u8) {
        let h = &mut self.head;
        // Empty lines before a request line are skipped, as hyper (httparse) does.
        if h.lines == 0 && h.line_len == 0 && !h.prev_cr && (b == b'\r' || b == b'\n') {
            if b == b'\r' {
                h.prev_cr = true;
            }
            return;
        }
        if h.lines == 0 && h.line_len == 0 && h.prev_cr && b == b'\n' {
            h.prev_cr = false;
            return;
        }
        h.len += 1;
        if h.len > MAX_HEAD {
            self.state = State::Off;
            return;
        }
        if b == b'\n' {
            if !h.prev_cr {
                h.bare_lf = true;
            }
            h.prev_cr = false;
            return self.end_line();
        }
        if h.prev_cr {
            h.bare_cr = true;
        }
        h.prev_cr = b == b'\r';
        if b != b'\r' {
            if h.line.len() < MAX_LINE {
                h.line.push(b);
            }
            h.line_len += 1;
        }
    }

    /// The end of a line gathered byte by byte (or across reads) in `head.line`.
    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.head.line);
        let truncated = self.head.line_len > line.len();
        self.line_done(&line, truncated);
        // The line buffer is kept for the next line (and head): no allocation per line.
        line.clear();
        self.head.line = line;
    }

    /// A whole head line found in one read, `content` without its line end (`cr`: CRLF, else a bare
    /// LF), containing no CR: judged in place, without copying it. The same as feeding it byte by byte.
    fn whole_line(&mut self, content: &[u8], cr: bool) {
        let h = &mut self.head;
        for step in [content.len(), usize::from(cr), 1] {
            h.len += step;
            if h.len > MAX_HEAD {
                self.state = State::Off;
                return;
            }
        }
        if !cr {
            h.bare_lf = true;
        }
        h.line_len = content.len();
        let kept = &content[..content.len().min(MAX_LINE)];
        self.line_done(kept, content.len() > MAX_LINE);
    }

    /// One complete head line (its first `MAX_LINE` bytes; `truncated` if there were more).
    fn line_done(&mut self, line: &[u8], truncated: bool) {
        let h = &mut self.head;
        let empty = h.line_len == 0;
        h.line_len = 0;
        h.lines += 1;
        if h.lines == 1 {
            h.preface = line.starts_with(b"PRI ");
            h.connect = line.starts_with(b"CONNECT ");
        } else if empty {
            self.end_head();
        } else if matches!(line.first(), Some(b' ' | b'\t')) {
            h.folded = true;
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                h.lengths += 1;
                h.unreadable |= truncated;
                if h.length.is_none() {
                    h.length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                h.codings += 1;
                h.unreadable |= truncated;
                let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
                h.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
        }
    }

    fn end_head(&mut self) {
        let mut h = std::mem::take(&mut self.head);
        self.head.line = std::mem::take(&mut h.line);
        self.head.line.clear();
        self.head_total += h.len as u64;
        if h.preface || h.bare_cr || h.folded || h.unreadable {
            // h2c, or a head hyper refuses by itself, or one we could not read whole: stop following.
            self.state = State::Off;
            return;
        }
        let verdict = if h.lengths > 0 && h.codings > 0 {
            Some("content-length with transfer-encoding")
        } else if h.lengths > 1 {
            Some("several content-length headers")
        } else if h.bare_lf {
            Some("line ended by a bare LF in the request head")
        } else {
            None
        };
        self.verdicts.push_back(verdict);
        self.state = match (verdict, h.connect, h.codings, h.length) {
            // A refused request closes its connection; nothing after it is served.
            (Some(_), ..) | (None, true, ..) => State::Off,
            (None, false, 0, None | Some(0)) => State::Head,
            (None, false, 0, Some(n)) => State::Fixed(n),
            (None, false, _, _) if h.chunked_last => State::ChunkSize { size: 0, digits: 0 },
            (None, false, _, _) => State::Off,
        };
        if h.lengths == 1 && h.length.is_none() {
            // An unparseable length: hyper refuses it.
            self.state = State::Off;
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(input: &[u8], step: usize) -> (Vec<Option<&'static str>>, bool) {
        let mut s = HeadScanner::new();
        for chunk in input.chunks(step) {
            s.feed(chunk);
        }
        let mut out = Vec::new();
        while let Some(v) = s.next_verdict() {
            out.push(v);
        }
        (out, s.is_off())
    }

    /// The same verdicts whichever way the bytes are split into reads.
    fn all_splits(input: &[u8]) -> (Vec<Option<&'static str>>, bool) {
        let whole = verdicts(input, input.len().max(1));
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(verdicts(input, step), whole, "split {step}");
        }
        whole
    }

    proptest::proptest! {
        /// The line fast path changes nothing: verdicts and state match the byte-by-byte reading for
        /// heads built from framing-relevant pieces, fed in arbitrary chunks.
        #[test]
        fn fast_path_matches_bytewise(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "GET / HTTP/1.1", "POST /x HTTP/1.1", "PRI * HTTP/2.0", "CONNECT a:1 HTTP/1.1", "Host: a",
                "Content-Length: 3", "content-length:0", "Transfer-Encoding: chunked", "transfer-encoding: gzip, chunked",
                " folded", "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                // Over the kept line length: truncated the same way on both paths.
                "Content-Length: 00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000007",
                "\r\n", "\n", "\r", "\r\n\r\n", "abc", "3\r\nabc\r\n0\r\n\r\n", "5;x=y\r\nhello\r\n", ":",
            ]), 0..24),
            step in 1usize..64,
        ) {
            let input: Vec<u8> = pieces.concat().into_bytes();
            let (mut fast, mut slow) = (HeadScanner::new(), HeadScanner::new());
            for chunk in input.chunks(step) {
                fast.feed(chunk);
                slow.feed_bytewise(chunk);
            }
            proptest::prop_assert_eq!(fast.state, slow.state);
            proptest::prop_assert_eq!(&fast.verdicts, &slow.verdicts);
            proptest::prop_assert_eq!(fast.head.len, slow.head.len);
            proptest::prop_assert_eq!(&fast.head.line, &slow.head.line);
            proptest::prop_assert_eq!(fast.head.lines, slow.head.lines);
            proptest::prop_assert_eq!(fast.head.line_len, slow.head.line_len);
            proptest::prop_assert_eq!(fast.head_bytes(), slow.head_bytes());
        }
    }

    #[test]
    fn clean_heads_and_bodies_are_followed() {
        let input = b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nGET /\r\n0\r\nT: 1\r\n\r\n\
            GET /d HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(all_splits(input), (vec![None, None, None, None], false));
    }

    #[test]
    fn bodies_that_look_like_heads_are_not_heads() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        let mut input = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        assert_eq!(all_splits(&input), (vec![None, None], false));
    }

    #[test]
    fn ambiguous_heads_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "content-length with"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n", "content-length with"),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "several"),
            (b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", "bare LF"),
            (b"GET / HTTP/1.1\nHost: a\n\n", "bare LF"),
        ];
        for (input, reason) in cases {
            let (v, off) = all_splits(input);
            assert_eq!(v.len(), 1, "{}", String::from_utf8_lossy(input));
            assert!(v[0].unwrap().contains(reason), "{:?}", v);
            assert!(off, "a refused head ends the scan");
        }
    }

    #[test]
    fn gives_up_where_hyper_decides() {
        for input in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: 1\rY: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ] {
            let (v, off) = all_splits(input);
            assert!(v.iter().all(Option::is_none), "{}", String::from_utf8_lossy(input));
            assert!(off, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn long_framing_headers_stop_the_scan() {
        let te = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {}chunked\r\n\r\n", "gzip, ".repeat(60));
        assert_eq!(all_splits(te.as_bytes()), (vec![], true));
        // Long other headers are fine.
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(5000));
        assert_eq!(all_splits(long.as_bytes()), (vec![None], false));
    }
}
