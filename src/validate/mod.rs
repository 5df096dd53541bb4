//! Request validation that needs no route: URL and header size limits, and the framing checks against
//! request smuggling. hyper's parser already refuses most malformed messages (obsolete line folding,
//! bad chunk sizes, conflicting lengths) with a bare 400 before we see them; these checks are the
//! gateway's own, stricter rule on top, so nothing ambiguous is ever forwarded.

pub mod body;
pub mod path;

use crate::respond::problem::Reject;
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
/// alone (HTTP/1.1), never both, never another coding, and one `Host`.
pub fn check_framing(parts: &Parts) -> Result<(), Reject> {
    let h = &parts.headers;
    let mut lengths = h.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.next().is_some() {
            return Err(Reject::AmbiguousFraming("several content-length headers"));
        }
        let v = first.as_bytes();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(Reject::AmbiguousFraming("invalid content-length"));
        }
    }
    let mut codings = h.get_all(TRANSFER_ENCODING).iter();
    if let Some(te) = codings.next() {
        if parts.version != Version::HTTP_11 {
            return Err(Reject::AmbiguousFraming("transfer-encoding outside HTTP/1.1"));
        }
        if codings.next().is_some() || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Reject::AmbiguousFraming("transfer coding other than chunked"));
        }
        if h.contains_key(CONTENT_LENGTH) {
            return Err(Reject::AmbiguousFraming("both content-length and transfer-encoding"));
        }
    }
    let mut hosts = h.get_all(HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return Err(Reject::BadRequest("several host headers"));
    }
    Ok(())
}

/// The declared body length, if any (already validated by [`check_framing`]).
pub fn content_length(parts: &Parts) -> Option<u64> {
    parts.headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri("/x").version(Version::HTTP_11);
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
