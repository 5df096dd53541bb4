//! Request validation that needs no route: URL and header size limits, and the framing checks against
//! request smuggling. For HTTP/1, [`head::Framer`] is the parser of record: it has already refused
//! every head and body that is not in one canonical form before hyper sees a byte of it, so these
//! checks read hyper's parse of canonical bytes. They are kept for HTTP/2 (whose framing hyper and h2
//! check) and as a second, cheap line of defence.

pub mod body;
pub mod head;
pub mod openapi;
pub mod path;
pub mod shape;

use crate::exchange::Reject;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{request::Parts, Version};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_url_bytes: usize,
    pub max_body_bytes: u64,
}

/// Size limits: 414 for a long URL, 431 for too many or too large headers.
pub fn check_sizes(parts: &Parts, limits: &Limits) -> Result<(), Reject> {
    let url_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if url_len > limits.max_url_bytes {
        return Err(Reject::UriTooLong);
    }
    if parts.headers.len() > limits.max_headers {
        return Err(Reject::HeadersTooLarge);
    }
    let mut total = 0usize;
    for (name, value) in &parts.headers {
        total += name.as_str().len() + value.len() + 4;
    }
    if total > limits.max_header_bytes {
        return Err(Reject::HeadersTooLarge);
    }
    Ok(())
}

/// Message framing must be unambiguous: one well-formed `Content-Length`, or `Transfer-Encoding: chunked`
/// alone (HTTP/1.1), never both, never another coding; and the target host too: one well-formed `Host`
/// (required in HTTP/1.1), agreeing with the authority of the request target when that has one.
///
/// Returns the host the request names, as routing matches it: from the target's authority when it has
/// one, else from `Host`; without the port, and an IPv6 literal without its brackets. `None` only for an
/// HTTP/1.0 request that names no host.
pub fn check_framing(parts: &Parts) -> Result<Option<&str>, Reject> {
    // One walk over the fields instead of a map lookup per name: most requests carry only `Host`.
    let (mut length, mut lengths, mut coding, mut codings, mut host, mut hosts) = (None, 0, None, 0, None, 0);
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH {
            lengths += 1;
            length = Some(value);
        } else if name == TRANSFER_ENCODING {
            codings += 1;
            coding = Some(value);
        } else if name == HOST {
            hosts += 1;
            host = Some(value);
        }
    }
    if let Some(first) = length {
        if lengths > 1 {
            return Err(Reject::AmbiguousFraming("several content-length headers"));
        }
        let v = first.as_bytes();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(Reject::AmbiguousFraming("invalid content-length"));
        }
    }
    if let Some(te) = coding {
        if parts.version != Version::HTTP_11 {
            return Err(Reject::AmbiguousFraming("transfer-encoding outside HTTP/1.1"));
        }
        if codings > 1 || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Reject::AmbiguousFraming("transfer coding other than chunked"));
        }
        if lengths > 0 {
            return Err(Reject::AmbiguousFraming("both content-length and transfer-encoding"));
        }
    }
    if hosts > 1 {
        return Err(Reject::BadRequest("several host headers"));
    }
    check_host(parts, host.map(http::HeaderValue::as_bytes))
}

/// RFC 9112 3.2: an HTTP/1.1 request without `Host`, or with an invalid one, is a 400. When the target
/// carries an authority too (absolute form, HTTP/2 `:authority`), routing uses the authority while the
/// upstream would see `Host`: if they differ, which host was meant is ambiguous, so the request is refused.
/// Returns the routing host (see [`check_framing`]).
fn check_host<'a>(parts: &'a Parts, host: Option<&'a [u8]>) -> Result<Option<&'a str>, Reject> {
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    let routing = match authority {
        Some(a) => Some(authority_host(a).ok_or(Reject::BadRequest("invalid authority in the request target"))?),
        None => None,
    };
    let Some(h) = host else {
        // HTTP/1.0 too: a request with no host would reach only routes for any host, and go upstream
        // as HTTP/1.1 without one, to whatever the upstream's default host is.
        if authority.is_none() {
            return Err(Reject::BadRequest("missing host header"));
        }
        return Ok(routing);
    };
    let from_host = authority_host(h).ok_or(Reject::BadRequest("invalid host header"))?;
    match authority {
        Some(a) if !h.eq_ignore_ascii_case(a) => {
            Err(Reject::BadRequest("host header disagrees with the request target"))
        }
        Some(_) => Ok(routing),
        None => Ok(Some(from_host)),
    }
}

/// The host of a valid authority, `host[:port]` with a DNS-style name, an IPv4 address or a bracketed
/// IPv6 address (no userinfo, no path, no empty host): without the port, an IPv6 literal without its
/// brackets. `None` when the authority is not valid.
pub fn authority_host(v: &[u8]) -> Option<&str> {
    let (host, rest) = match v.strip_prefix(b"[") {
        Some(r) => {
            let end = r.iter().position(|&b| b == b']')?;
            let inner = &r[..end];
            if inner.is_empty() || !inner.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')) {
                return None;
            }
            (inner, &r[end + 1..])
        }
        None => {
            // The name up to the port, checked in the same pass that finds its end.
            let mut i = 0;
            while let Some(&b) = v.get(i).filter(|&&b| b != b':') {
                if !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
                    return None;
                }
                i += 1;
            }
            // No empty label: `a..b` or `.a` would reach only routes for any host (one trailing dot,
            // the root's, is the name itself and is matched without it).
            if i == 0 || v[0] == b'.' || v[..i].windows(2).any(|w| w == b"..") {
                return None;
            }
            (&v[..i], &v[i..])
        }
    };
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    // Only ASCII got this far.
    port_ok.then(|| std::str::from_utf8(host).ok()).flatten()
}

/// The declared body length, if any (already validated by [`check_framing`]).
pub fn content_length(parts: &Parts) -> Option<u64> {
    parts.headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    /// An HTTP/1.1 request with these headers (and `Host: a` unless one is given).
    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri("/x").version(Version::HTTP_11);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            b = b.header("host", "a");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn framing() {
        assert!(check_framing(&parts(&[("content-length", "5")])).is_ok());
        assert!(check_framing(&parts(&[("transfer-encoding", "chunked")])).is_ok());
        assert!(check_framing(&parts(&[("content-length", "5"), ("transfer-encoding", "chunked")])).is_err());
        assert!(check_framing(&parts(&[("content-length", "5"), ("content-length", "5")])).is_err());
        assert!(check_framing(&parts(&[("content-length", "+5")])).is_err());
        assert!(check_framing(&parts(&[("transfer-encoding", "gzip, chunked")])).is_err());
        assert!(check_framing(&parts(&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")])).is_err());
        assert!(check_framing(&parts(&[("host", "a"), ("host", "b")])).is_err());
    }

    #[test]
    fn host() {
        for good in ["a", "a.example:8080", "127.0.0.1", "[::1]:443", "xn--bcher-kva.example", "a_b.internal", "a:"] {
            assert!(check_framing(&parts(&[("host", good)])).is_ok(), "{good}");
        }
        for bad in
            ["", "a/b", "user@a", "a:b", "a:123456", "[::1", "[]", "a b", "a:1:2", "[::1]x", "a..b", "a..", ".a", "."]
        {
            assert!(check_framing(&parts(&[("host", bad)])).is_err(), "{bad}");
        }
        // Required in HTTP/1.1, and in HTTP/1.0 too (found in review: an HTTP/1.0 request without one
        // reached only routes for any host and went upstream without a host).
        let no_host = Request::builder().uri("/x").version(Version::HTTP_11).body(()).unwrap().into_parts().0;
        assert_eq!(check_framing(&no_host), Err(Reject::BadRequest("missing host header")));
        let old = Request::builder().uri("/x").version(Version::HTTP_10).body(()).unwrap().into_parts().0;
        assert_eq!(check_framing(&old), Err(Reject::BadRequest("missing host header")));
        assert!(check_framing(&parts(&[("host", "a.example.")])).is_ok(), "one trailing dot is the name");
        // An absolute-form target needs no Host, but one that is there must agree.
        let abs = |host: Option<&str>| {
            let mut b = Request::builder().uri("http://a.example/x").version(Version::HTTP_11);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            check_framing(&b.body(()).unwrap().into_parts().0).map(|h| h.map(str::to_owned))
        };
        assert!(abs(None).is_ok());
        assert!(abs(Some("A.example")).is_ok());
        assert!(abs(Some("b.example")).is_err());
        let userinfo = Request::builder().uri("http://u@a.example/x").body(()).unwrap().into_parts().0;
        assert!(check_framing(&userinfo).is_err());
    }

    /// The host routing sees: the authority's when the target has one, else `Host`'s, without the port.
    #[test]
    fn routing_host() {
        for (host, want) in [
            ("a", "a"),
            ("a.example:8080", "a.example"),
            ("127.0.0.1:9", "127.0.0.1"),
            ("[::1]:443", "::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("a:", "a"),
        ] {
            assert_eq!(check_framing(&parts(&[("host", host)])), Ok(Some(want)), "{host}");
        }
        let abs = Request::builder().uri("http://b.example:81/x").version(Version::HTTP_11).body(()).unwrap();
        assert_eq!(check_framing(&abs.into_parts().0), Ok(Some("b.example")));
    }

    proptest::proptest! {
        /// Whatever the bytes, an accepted authority is exactly its host, then nothing or `:` and at most
        /// five digits; and every well-formed name with an optional port is accepted, as its name.
        #[test]
        fn authority_host_returns_the_host_it_accepted(v in proptest::collection::vec(proptest::num::u8::ANY, 0..24)) {
            if let Some(h) = authority_host(&v) {
                let rest = if v.first() == Some(&b'[') {
                    proptest::prop_assert!(v[1..].starts_with(h.as_bytes()) && v.get(h.len() + 1) == Some(&b']'));
                    &v[h.len() + 2..]
                } else {
                    proptest::prop_assert!(v.starts_with(h.as_bytes()) && !h.is_empty());
                    &v[h.len()..]
                };
                proptest::prop_assert!(
                    rest.is_empty() || (rest[0] == b':' && rest.len() <= 6 && rest[1..].iter().all(u8::is_ascii_digit))
                );
            }
        }

        #[test]
        fn well_formed_authorities_are_accepted(
            name in "([a-z0-9_-]{1,5}\\.){0,3}[a-z0-9_-]{1,5}\\.?",
            port in proptest::option::of(0u32..65536),
        ) {
            let v = match port {
                Some(p) => format!("{name}:{p}"),
                None => name.clone(),
            };
            proptest::prop_assert_eq!(authority_host(v.as_bytes()), Some(name.as_str()));
        }
    }

    #[test]
    fn sizes() {
        let limits = Limits { max_header_bytes: 64, max_headers: 3, max_url_bytes: 4, max_body_bytes: 0 };
        assert_eq!(check_sizes(&parts(&[]), &limits), Ok(()));
        let long = Request::builder().uri("/xxxxx").body(()).unwrap().into_parts().0;
        assert_eq!(check_sizes(&long, &limits), Err(Reject::UriTooLong));
        let big = "v".repeat(80);
        assert_eq!(check_sizes(&parts(&[("a", &big)]), &limits), Err(Reject::HeadersTooLarge));
        assert_eq!(
            check_sizes(&parts(&[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]), &limits),
            Err(Reject::HeadersTooLarge)
        );
    }
}
