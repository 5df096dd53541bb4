//! Header hygiene between client and upstream.
//!
//! Toward the upstream: hop-by-hop headers and every header named in `Connection` are removed;
//! `Forwarded` (RFC 7239) and `X-Forwarded-For/-Proto/-Host` are set, and incoming ones are kept only
//! when the peer is a configured trusted proxy (which is also how the client IP is decided), and so are
//! `X-Real-IP` and the other `X-Forwarded-*` fields;
//! `X-Request-Id` is always present. Toward the client: hop-by-hop headers, `Server` and `X-Powered-By`
//! are removed.

use crate::exchange::{Principal, Reject};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static PROXY_AUTHENTICATE: HeaderName = HeaderName::from_static("proxy-authenticate");
static PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// The header names hygiene cares about that a single pass over a header map found. Requests and
/// responses usually carry none of them, so hygiene costs one walk over the names and no map lookups.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found(u16);

impl Found {
    pub const CONNECTION: u16 = 1;
    /// `keep-alive`, `proxy-connection`, `proxy-authenticate`, `proxy-authorization`, `te`, `trailer`,
    /// `transfer-encoding`, `upgrade`.
    pub const HOP: u16 = 1 << 1;
    pub const FORWARDED: u16 = 1 << 2;
    pub const X_FORWARDED_FOR: u16 = 1 << 3;
    pub const X_FORWARDED_PROTO: u16 = 1 << 4;
    pub const X_FORWARDED_HOST: u16 = 1 << 5;
    /// `x-portcullis-*`: the identity headers only the gateway may set.
    pub const IDENTITY: u16 = 1 << 6;
    /// `server`, `x-powered-by`.
    pub const SERVER: u16 = 1 << 7;
    pub const X_REQUEST_ID: u16 = 1 << 8;
    /// `expect`: answered at the gateway, never forwarded.
    pub const EXPECT: u16 = 1 << 9;
    /// A name with `_` in it (CGI-style servers read `X_Foo` as `X-Foo`).
    pub const UNDERSCORE: u16 = 1 << 10;
    /// `x-real-ip` and the `x-forwarded-*` fields other than `-for`, `-proto` and `-host`
    /// (`-port`, `-prefix`, `-scheme`, `-ssl`, ...): claims about the client or the original request
    /// that upstream frameworks believe, kept only from a trusted proxy.
    pub const CLIENT_CLAIM: u16 = 1 << 11;
    /// `X-Original-URL`, `X-Rewrite-URL` and the method-override fields: some frameworks route or act
    /// on them instead of the request line (Symfony, IIS, method-override middleware), so a client
    /// could name a path or method the gateway never judged. Always removed.
    pub const OVERRIDE: u16 = 1 << 12;
    /// `cookie`: several lines (HTTP/2 sends one per cookie) are joined before the request leaves.
    pub const COOKIE: u16 = 1 << 13;

    pub fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
}

fn classify(name: &str) -> u16 {
    match name {
        "connection" => Found::CONNECTION,
        "keep-alive"
        | "proxy-connection"
        | "proxy-authenticate"
        | "proxy-authorization"
        | "te"
        | "trailer"
        | "transfer-encoding"
        | "upgrade" => Found::HOP,
        "forwarded" => Found::FORWARDED,
        "x-forwarded-for" => Found::X_FORWARDED_FOR,
        "x-forwarded-proto" => Found::X_FORWARDED_PROTO,
        "x-forwarded-host" => Found::X_FORWARDED_HOST,
        "server" | "x-powered-by" => Found::SERVER,
        "x-request-id" => Found::X_REQUEST_ID,
        "expect" => Found::EXPECT,
        "cookie" => Found::COOKIE,
        "x-real-ip"
        | "true-client-ip"
        | "x-client-ip"
        | "cf-connecting-ip"
        | "fastly-client-ip"
        | "x-cluster-client-ip"
        | "x-originating-ip"
        | "forwarded-for"
        | "x-original-forwarded-for" => Found::CLIENT_CLAIM,
        "x-original-url" | "x-rewrite-url" | "x-http-method-override" | "x-http-method" | "x-method-override" => {
            Found::OVERRIDE
        }
        n if n.starts_with("x-forwarded-") => Found::CLIENT_CLAIM,
        n if n.starts_with("x-portcullis-") => Found::IDENTITY,
        _ => 0,
    }
}

/// [`classify`] for a request's field name, which also marks names with `_` (a short loop: names are
/// a few bytes, and a call to `memchr` costs more than it saves).
fn classify_request(name: &str) -> u16 {
    match classify(name) {
        0 if name.bytes().any(|b| b == b'_') => Found::UNDERSCORE,
        c => c,
    }
}

/// One pass over the names of a request's `headers`.
pub fn scan(headers: &HeaderMap) -> Found {
    Found(headers.keys().fold(0, |acc, name| acc | classify_request(name.as_str())))
}

/// One pass over the names of a response's `headers` (no `_` rule: that is for requests).
fn scan_response(headers: &HeaderMap) -> Found {
    Found(headers.keys().fold(0, |acc, name| acc | classify(name.as_str())))
}

/// True for a response header name (any case) the gateway never passes back to clients, unless it is
/// `Connection` naming further headers (then [`clean_response`] removes those too).
pub fn dropped_from_responses(name: &[u8]) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 => is("te"),
        6 => is("server"),
        7 => is("trailer") || is("upgrade"),
        10 => is("keep-alive"),
        12 => is("x-powered-by"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// True when a `Connection` value names only connection options (`close`, `keep-alive`), no headers.
pub fn connection_names_no_headers(value: &[u8]) -> bool {
    // The usual values, without splitting.
    if value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close") {
        return true;
    }
    value.split(|&b| b == b',').all(|t| {
        let t = t.trim_ascii();
        t.is_empty() || t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// Removes hop-by-hop headers, including those listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let found = scan(headers);
    strip_found(headers, found);
}

/// [`strip_hop_by_hop`] with the result of a [`scan`] already in hand.
pub fn strip_found(headers: &mut HeaderMap, found: Found) {
    if found.has(Found::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter(|v| !connection_names_no_headers(v.as_bytes()))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    if found.has(Found::HOP) {
        for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &PROXY_AUTHENTICATE, &PROXY_AUTHORIZATION] {
            headers.remove(name);
        }
        headers.remove(TE);
        headers.remove(TRAILER);
        headers.remove(TRANSFER_ENCODING);
        headers.remove(UPGRADE);
    }
}

/// True for a field the gateway decided on (routing, framing, credentials, client identity,
/// correlation), which `Connection` may not name: removing it after the decision would send the
/// upstream another request than the one judged. Hop-by-hop names (`te`, `keep-alive`, `upgrade`, ...)
/// may be listed; `TE` must be (RFC 9110, 10.1.4).
pub fn protected_from_connection(name: &str) -> bool {
    let n = name.trim();
    let is = |p: &str| n.eq_ignore_ascii_case(p);
    is("host")
        || is("content-length")
        || is("authorization")
        || is("cookie")
        || is("x-api-key")
        || is("forwarded")
        || is("x-real-ip")
        || is("x-request-id")
        || n.get(..12).is_some_and(|p| p.eq_ignore_ascii_case("x-forwarded-"))
        || n.get(..13).is_some_and(|p| p.eq_ignore_ascii_case("x-portcullis-"))
}

/// True for a header name with `_` that, read the CGI way (case folded, `_` as `-`), is a field only
/// the gateway may set or one it decided on (`also`: the configured credential headers): dropped even
/// where underscores are allowed.
pub fn folds_onto_protected(name: &str, also: &[HeaderName]) -> bool {
    let folded = name.to_ascii_lowercase().replace('_', "-");
    protected_from_connection(&folded) || classify(&folded) != 0 || also.iter().any(|h| h.as_str() == folded)
}

/// What happens to request header names with `_` on a listener.
#[derive(Clone, Copy)]
pub struct Underscores<'a> {
    /// `underscores_in_headers`: forward them, except those folding onto a protected name.
    pub allowed: bool,
    /// Further protected names (the credential headers of the configured authenticators).
    pub protected: &'a [HeaderName],
}

/// Request hygiene on the way upstream, with a [`scan`] of `headers` in hand: refuses a `Connection`
/// that names a protected field (400) and an expectation other than `100-continue` (417); removes
/// hop-by-hop fields, `Expect` (the gateway answered it: hyper sends `100 Continue` only when the body
/// is first read, after every check passed), and names with `_` (all of them unless `underscores` is
/// on; those that fold onto a protected name always).
pub fn clean_request(headers: &mut HeaderMap, found: Found, underscores: Underscores<'_>) -> Result<(), Reject> {
    if found.has(Found::CONNECTION) {
        for v in headers.get_all(CONNECTION) {
            if v.to_str().map_or(true, |v| v.split(',').any(protected_from_connection)) {
                return Err(Reject::BadRequest("Connection names an end-to-end field the gateway relies on"));
            }
        }
    }
    if found.has(Found::EXPECT) {
        for v in headers.get_all(http::header::EXPECT) {
            if !v.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                return Err(Reject::ExpectationFailed);
            }
        }
        headers.remove(http::header::EXPECT);
    }
    strip_found(headers, found);
    if found.has(Found::OVERRIDE) {
        let overrides: Vec<HeaderName> =
            headers.keys().filter(|k| classify(k.as_str()) == Found::OVERRIDE).cloned().collect();
        for name in overrides {
            headers.remove(name);
        }
    }
    if found.has(Found::UNDERSCORE) {
        let dropped: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                k.as_str().contains('_')
                    && (!underscores.allowed || folds_onto_protected(k.as_str(), underscores.protected))
            })
            .cloned()
            .collect();
        for name in dropped {
            headers.remove(name);
        }
    }
    Ok(())
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    !trusted.is_empty() && trusted.iter().any(|net| net.contains(&ip))
}

pub use crate::exchange::Peer;

pub struct Forwarding<'a> {
    pub peer: &'a Peer,
    pub peer_trusted: bool,
    pub proto: &'static str,
    /// The host the request named (already validated: no quotes, no spaces).
    pub host: Option<&'a HeaderValue>,
}

/// Header fields the gateway adds to a request on its way upstream. They are written after the
/// client's own fields (from which any of the same names were removed), so adding them costs no map
/// insertion. At most [`Added::CAPACITY`] single fields (the `X-Forwarded-*` ones and the request id),
/// `Forwarded` (kept as its parts), and the identity fields of the authenticated principal, written from
/// the list the principal built once ([`Principal::identity_headers`]) rather than copied per request.
#[derive(Default)]
pub struct Added {
    items: [Option<(&'static str, HeaderValue)>; Added::CAPACITY],
    len: usize,
    forwarded: Option<ForwardedParts>,
    identity: Option<Arc<Principal>>,
}

/// One header line of an HTTP/1.1 head: `name: value\r\n`.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `Forwarded` field (RFC 7239) the gateway sends, kept as its parts and written out by the upstream
/// client: the elements a trusted proxy sent, then `for=NODE;proto=PROTO[;host="HOST"]`. Joining them
/// into one header value would cost an allocation and a byte-by-byte validation on every request; each
/// part is already a valid header value, and the separators are visible ASCII.
pub struct ForwardedParts {
    prev: Option<HeaderValue>,
    node: HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
}

impl ForwardedParts {
    fn write(&self, out: &mut Vec<u8>) {
        if let Some(prev) = &self.prev {
            out.extend_from_slice(prev.as_bytes());
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"for=");
        out.extend_from_slice(self.node.as_bytes());
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(self.proto.as_bytes());
        if let Some(host) = &self.host {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(host.as_bytes());
            out.push(b'"');
        }
    }
}

impl Added {
    pub const CAPACITY: usize = 4;

    /// `name` must be a lowercase field name.
    pub fn push(&mut self, name: &'static str, value: HeaderValue) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some((name, value));
            self.len += 1;
        }
    }

    /// Writes every added field as `name: value\r\n`.
    pub fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in self.iter() {
            write_field(out, name.as_bytes(), value.as_bytes());
        }
        if let Some(f) = &self.forwarded {
            out.extend_from_slice(b"forwarded: ");
            f.write(out);
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in self.identity_fields() {
            write_field(out, name.as_bytes(), value.as_bytes());
        }
    }

    /// Tells the upstream who the caller is: `principal`'s identity fields go out with the request.
    pub fn identify(&mut self, principal: Arc<Principal>) {
        self.identity = Some(principal);
    }

    fn identity_fields(&self) -> &[(&'static str, HeaderValue)] {
        self.identity.as_deref().map_or(&[], Principal::identity_headers)
    }

    /// The fields pushed whole (not `Forwarded`).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        self.items[..self.len].iter().flatten().map(|(n, v)| (*n, v))
    }

    /// The value of an added field, `Forwarded` included (for tests and diagnostics: it allocates).
    pub fn get(&self, name: &str) -> Option<HeaderValue> {
        if name == "forwarded" {
            let mut v = Vec::new();
            self.forwarded.as_ref()?.write(&mut v);
            return HeaderValue::from_bytes(&v).ok();
        }
        self.iter()
            .chain(self.identity_fields().iter().map(|(n, v)| (*n, v)))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Sets `Forwarded` and `X-Forwarded-*` for the upstream: into `added`, after taking out of `headers`
/// any the client sent (kept and extended only from a trusted proxy). `found`: a [`scan`] of `headers`.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarding<'_>, found: Found, added: &mut Added) {
    let keep = f.peer_trusted;
    let mut take = |name: &HeaderName, bit: u16| -> Option<String> {
        if !found.has(bit) {
            return None;
        }
        let prev = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
        headers.remove(name);
        (keep && !prev.is_empty()).then_some(prev)
    };
    let (xff_prev, proto_prev, host_prev, fwd_prev) = (
        take(&X_FORWARDED_FOR, Found::X_FORWARDED_FOR),
        take(&X_FORWARDED_PROTO, Found::X_FORWARDED_PROTO),
        take(&X_FORWARDED_HOST, Found::X_FORWARDED_HOST),
        take(&FORWARDED, Found::FORWARDED),
    );
    // `X-Real-IP`, `X-Forwarded-Port`, `-Prefix`, `-Scheme`, ...: what a client says of itself is not
    // believed; only a trusted proxy's are passed on.
    if found.has(Found::CLIENT_CLAIM) && !keep {
        let claims: Vec<HeaderName> =
            headers.keys().filter(|k| classify(k.as_str()) == Found::CLIENT_CLAIM).cloned().collect();
        for name in claims {
            headers.remove(name);
        }
    }
    let xff = match xff_prev {
        Some(prev) => value(format!("{prev}, {}", f.peer.xff.to_str().unwrap_or_default())),
        None => Some(f.peer.xff.clone()),
    };
    if let Some(v) = xff {
        added.push("x-forwarded-for", v);
    }
    match proto_prev.and_then(value) {
        Some(v) => added.push("x-forwarded-proto", v),
        None => added.push("x-forwarded-proto", HeaderValue::from_static(f.proto)),
    }
    match (host_prev.and_then(value), f.host) {
        (Some(v), _) => added.push("x-forwarded-host", v),
        (None, Some(host)) => added.push("x-forwarded-host", host.clone()),
        (None, None) => {}
    }
    // A trusted proxy's elements that are not a valid header value are dropped, not forwarded.
    added.forwarded = Some(ForwardedParts {
        prev: fwd_prev.and_then(value),
        node: f.peer.node.clone(),
        proto: f.proto,
        host: f.host.filter(|h| !h.is_empty()).cloned(),
    });
}

fn value(s: String) -> Option<HeaderValue> {
    HeaderValue::try_from(s).ok()
}

/// Headers the gateway never passes back to clients. The upstream client already leaves most of them
/// out while parsing (see [`dropped_from_responses`]); this catches the rest.
pub fn clean_response(headers: &mut HeaderMap) {
    let found = scan_response(headers);
    strip_found(headers, found);
    if found.has(Found::SERVER) {
        headers.remove(http::header::SERVER);
        headers.remove(&X_POWERED_BY);
    }
}

/// A client-supplied request id is kept if it is 1-128 characters of `[A-Za-z0-9._-]`.
pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A new random request id (32 hex digits), as the header value it is sent in.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, byte) in fastrand::u128(..).to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 15)];
    }
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&out)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_from_untrusted_peer_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(&FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        let peer = Peer::new("127.0.0.1".parse().unwrap());
        let host = HeaderValue::from_static("a.example");
        let f = Forwarding { peer: &peer, peer_trusted: false, proto: "https", host: Some(&host) };
        let found = scan(&h);
        let mut added = Added::default();
        set_forwarded(&mut h, &f, found, &mut added);
        assert!(h.is_empty(), "the client's forwarding headers are gone: {h:?}");
        assert_eq!(added.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(added.get("forwarded").unwrap(), "for=127.0.0.1;proto=https;host=\"a.example\"");
        assert_eq!(added.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(added.get("x-forwarded-host").unwrap(), "a.example");
    }

    #[test]
    fn forwarding_from_a_trusted_proxy_is_appended_to() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&FORWARDED, HeaderValue::from_static("for=203.0.113.7"));
        let peer = Peer::new("2001:db8::1".parse().unwrap());
        let f = Forwarding { peer: &peer, peer_trusted: true, proto: "http", host: None };
        let found = scan(&h);
        let mut added = Added::default();
        set_forwarded(&mut h, &f, found, &mut added);
        assert!(h.is_empty(), "{h:?}");
        assert_eq!(added.get("x-forwarded-for").unwrap(), "203.0.113.7, 2001:db8::1");
        assert_eq!(added.get("x-forwarded-proto").unwrap(), "https", "a trusted proxy's scheme is kept");
        assert_eq!(added.get("forwarded").unwrap(), "for=203.0.113.7, for=\"[2001:db8::1]\";proto=http");
        assert!(added.get("x-forwarded-host").is_none());
    }

    #[test]
    fn added_fields_are_bounded() {
        let mut added = Added::default();
        for _ in 0..Added::CAPACITY + 3 {
            added.push("x-a", HeaderValue::from_static("1"));
        }
        assert_eq!(added.iter().count(), Added::CAPACITY);
    }

    #[test]
    fn scan_finds_what_hygiene_touches() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert_eq!(scan(&h), Found::default());
        h.insert("x-portcullis-roles", HeaderValue::from_static("admin"));
        h.insert("te", HeaderValue::from_static("trailers"));
        let f = scan(&h);
        assert!(f.has(Found::IDENTITY) && f.has(Found::HOP) && !f.has(Found::CONNECTION));
    }

    #[test]
    fn response_headers_dropped_at_parse_time() {
        for name in ["Server", "X-Powered-By", "Keep-Alive", "TE", "Transfer-Encoding", "Upgrade", "trailer"] {
            assert!(dropped_from_responses(name.as_bytes()), "{name}");
        }
        for name in ["content-length", "date", "set-cookie", "connection", "servers"] {
            assert!(!dropped_from_responses(name.as_bytes()), "{name}");
        }
        assert!(connection_names_no_headers(b"keep-alive"));
        assert!(connection_names_no_headers(b"Close , keep-alive"));
        assert!(!connection_names_no_headers(b"close, x-internal"));
    }

    fn request(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const DROP: Underscores<'static> = Underscores { allowed: false, protected: &[] };

    fn clean(h: &mut HeaderMap, u: Underscores<'_>) -> Result<(), Reject> {
        let found = scan(h);
        clean_request(h, found, u)
    }

    #[test]
    fn connection_may_not_name_what_the_gateway_relied_on() {
        for named in ["host", "Content-Length", "authorization", "cookie", "x-forwarded-host", "x-portcullis-roles"] {
            let mut h = request(&[("connection", &format!("close, {named}")), ("host", "a")]);
            assert!(clean(&mut h, DROP).is_err(), "{named}");
        }
        let mut h = request(&[("connection", "te, keep-alive, x-hop"), ("te", "trailers"), ("x-hop", "1")]);
        assert_eq!(clean(&mut h, DROP), Ok(()));
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn expect_is_judged_and_removed() {
        let mut h = request(&[("expect", "100-Continue")]);
        assert_eq!(clean(&mut h, DROP), Ok(()));
        assert!(h.is_empty());
        let mut h = request(&[("expect", "100-continue"), ("expect", "x")]);
        assert_eq!(clean(&mut h, DROP), Err(Reject::ExpectationFailed));
    }

    #[test]
    fn underscored_names_are_dropped_or_kept_unless_protected() {
        let fields = [
            ("x_portcullis_roles", "admin"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x-real_ip", "1.2.3.4"),
            ("x_request_id", "r"),
            ("content_length", "5"),
            ("x_shop_key", "k"),
            ("x_custom", "1"),
            ("x-plain", "1"),
        ];
        let mut h = request(&fields);
        assert_eq!(clean(&mut h, DROP), Ok(()));
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-plain"]);
        let shop = [HeaderName::from_static("x-shop-key")];
        let mut h = request(&fields);
        let allowed = Underscores { allowed: true, protected: &shop };
        assert_eq!(clean(&mut h, allowed), Ok(()));
        let mut kept = h.keys().map(HeaderName::as_str).collect::<Vec<_>>();
        kept.sort_unstable();
        assert_eq!(kept, ["x-plain", "x_custom"]);
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123_x.y")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_static("\"}")));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(valid_request_id(&id));
        assert_ne!(id, new_request_id());
    }
}
