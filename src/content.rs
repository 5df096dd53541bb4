//! What a request body is: its media type and charset (from `Content-Type`), and its bytes decoded
//! from its `Content-Encoding` under a bound on size and ratio. Shared by the stages that read bodies
//! (validation, inspection); a body that cannot be decoded as it declares is refused, never passed on
//! uninspected.

use crate::exchange::Reject;
use http::HeaderMap;
use std::borrow::Cow;
use std::io::Read;

/// Bounds on decoding a compressed body: its decoded size, and decoded bytes per encoded byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    pub max_bytes: u64,
    pub max_ratio: u32,
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding { max_bytes: 1 << 20, max_ratio: 100 }
    }
}

/// A content coding this gateway decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
}

/// The body as its `Content-Encoding` decodes it: borrowed when it has none (or `identity`).
///
/// - `gzip` (and its alias `x-gzip`) and `deflate` (zlib-wrapped, as RFC 9110 defines it; a raw
///   deflate stream, which some clients send, is accepted too) are decoded incrementally, and decoding
///   stops as soon as the output passes `max_bytes` or `max_ratio` times the encoded length: a
///   decompression bomb is 413 after at most that much work.
/// - Any other coding is 415, and so are stacked codings (`gzip, gzip`, or several fields): no client
///   needs them, and each layer would multiply the bound.
/// - A body that is not valid in its coding (truncated, corrupt, trailing bytes) is 400.
pub fn decode_body<'a>(headers: &HeaderMap, body: &'a [u8], bound: &Decoding) -> Result<Cow<'a, [u8]>, Reject> {
    let mut coding = Coding::Identity;
    for field in headers.get_all(http::header::CONTENT_ENCODING) {
        let text = field.to_str().map_err(|_| Reject::UnsupportedMediaType)?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let this = if token.eq_ignore_ascii_case("identity") {
                Coding::Identity
            } else if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else if token.eq_ignore_ascii_case("deflate") {
                Coding::Deflate
            } else {
                return Err(Reject::UnsupportedMediaType);
            };
            if this != Coding::Identity {
                if coding != Coding::Identity {
                    return Err(Reject::UnsupportedMediaType);
                }
                coding = this;
            }
        }
    }
    match coding {
        Coding::Identity => Ok(Cow::Borrowed(body)),
        Coding::Gzip => {
            decode_with(flate2::bufread::GzDecoder::new(body), body.len(), bound).and_then(|(out, rest)| {
                // One gzip member, nothing after it (a second member would be skipped by this decoder
                // and read by another).
                if rest {
                    Err(Reject::BadRequest("bytes after the gzip stream"))
                } else {
                    Ok(Cow::Owned(out))
                }
            })
        }
        Coding::Deflate => {
            // zlib framing starts with a CMF byte whose method is 8 and a header checksum.
            let zlib =
                body.len() >= 2 && body[0] & 0x0f == 8 && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0;
            let decoded = if zlib {
                decode_with(flate2::bufread::ZlibDecoder::new(body), body.len(), bound)
            } else {
                decode_with(flate2::bufread::DeflateDecoder::new(body), body.len(), bound)
            };
            decoded.and_then(|(out, rest)| {
                if rest {
                    Err(Reject::BadRequest("bytes after the deflate stream"))
                } else {
                    Ok(Cow::Owned(out))
                }
            })
        }
    }
}

/// Reads a decoder to its end in small steps, refusing (413) as soon as the output passes the bound.
/// Returns the output and whether encoded bytes were left unread.
fn decode_with<R: Read + Remaining>(
    mut decoder: R,
    encoded: usize,
    bound: &Decoding,
) -> Result<(Vec<u8>, bool), Reject> {
    let by_ratio = (encoded as u64).saturating_mul(u64::from(bound.max_ratio));
    let limit = bound.max_bytes.min(by_ratio);
    let mut out = Vec::with_capacity(encoded.saturating_mul(4).min(limit as usize).min(1 << 20));
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = decoder.read(&mut chunk).map_err(|_| Reject::BadRequest("body not valid in its content coding"))?;
        if n == 0 {
            break;
        }
        if (out.len() + n) as u64 > limit {
            return Err(Reject::PayloadTooLarge);
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok((out, decoder.remaining()))
}

/// Whether a finished decoder left encoded bytes unread.
trait Remaining {
    fn remaining(&self) -> bool;
}

impl Remaining for flate2::bufread::GzDecoder<&[u8]> {
    fn remaining(&self) -> bool {
        !self.get_ref().is_empty()
    }
}
impl Remaining for flate2::bufread::ZlibDecoder<&[u8]> {
    fn remaining(&self) -> bool {
        !self.get_ref().is_empty()
    }
}
impl Remaining for flate2::bufread::DeflateDecoder<&[u8]> {
    fn remaining(&self) -> bool {
        !self.get_ref().is_empty()
    }
}

/// A parsed `Content-Type`: `type/subtype` lower-cased, and the parameters that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// `type/subtype`, lower-cased (borrowed when it already was).
    pub essence: Cow<'a, str>,
    /// The `charset` parameter, lower-cased, unquoted.
    pub charset: Option<Cow<'a, str>>,
    /// The `boundary` parameter (multipart), unquoted, case kept.
    pub boundary: Option<Cow<'a, str>>,
}

impl MediaType<'_> {
    /// `type` of `type/subtype`.
    pub fn top(&self) -> &str {
        self.essence.split('/').next().unwrap_or("")
    }

    /// `application/json`, or any `+json` structured syntax suffix (`application/problem+json`).
    pub fn is_json(&self) -> bool {
        self.essence == "application/json" || (self.top() == "application" && self.essence.ends_with("+json"))
    }

    /// `application/x-www-form-urlencoded`.
    pub fn is_form(&self) -> bool {
        self.essence == "application/x-www-form-urlencoded"
    }

    /// `multipart/*`.
    pub fn is_multipart(&self) -> bool {
        self.top() == "multipart"
    }

    /// `application/xml`, `text/xml` or a `+xml` suffix (SOAP's `application/soap+xml`).
    pub fn is_xml(&self) -> bool {
        self.essence == "application/xml" || self.essence == "text/xml" || self.essence.ends_with("+xml")
    }
}

/// Parses a `Content-Type` value (RFC 9110 section 8.3.1): `None` when it is not `type/subtype` of
/// tokens followed by well-formed `;name=value` parameters, or repeats `charset` or `boundary`.
pub fn media_type(value: &str) -> Option<MediaType<'_>> {
    let (essence, mut rest) = match value.find(';') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    let essence = essence.trim_matches([' ', '\t']);
    let (top, sub) = essence.split_once('/')?;
    if !is_token(top) || !is_token(sub) {
        return None;
    }
    let mut parsed = MediaType { essence: lower(essence), charset: None, boundary: None };
    while !rest.is_empty() {
        // rest starts with ';'
        rest = rest[1..].trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        if rest.starts_with(';') {
            continue;
        }
        let eq = rest.find('=')?;
        let name = &rest[..eq];
        if !is_token(name) {
            return None;
        }
        rest = &rest[eq + 1..];
        let value: Cow<'_, str> = if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in quoted.char_indices() {
                match (escaped, c) {
                    (true, c) => {
                        out.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, c) => out.push(c),
                }
            }
            let end = end?;
            rest = quoted[end + 1..].trim_start_matches([' ', '\t']);
            Cow::Owned(out)
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            let v = rest[..end].trim_end_matches([' ', '\t']);
            if !is_token(v) {
                return None;
            }
            rest = &rest[end..];
            Cow::Borrowed(v)
        };
        if !rest.is_empty() && !rest.starts_with(';') {
            return None;
        }
        if name.eq_ignore_ascii_case("charset") {
            if parsed.charset.is_some() {
                return None;
            }
            parsed.charset = Some(match value {
                Cow::Borrowed(v) => lower(v),
                Cow::Owned(v) => Cow::Owned(v.to_ascii_lowercase()),
            });
        } else if name.eq_ignore_ascii_case("boundary") {
            if parsed.boundary.is_some() {
                return None;
            }
            parsed.boundary = Some(value);
        }
    }
    Some(parsed)
}

/// The request's media type: `Ok(None)` without a `Content-Type`; 415 for an unparseable one or for
/// several fields (two parsers could pick different ones).
pub fn request_media_type(headers: &HeaderMap) -> Result<Option<MediaType<'_>>, Reject> {
    let mut fields = headers.get_all(http::header::CONTENT_TYPE).iter();
    let Some(first) = fields.next() else { return Ok(None) };
    if fields.next().is_some() {
        return Err(Reject::UnsupportedMediaType);
    }
    let text = first.to_str().map_err(|_| Reject::UnsupportedMediaType)?;
    media_type(text).map(Some).ok_or(Reject::UnsupportedMediaType)
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// An RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn headers(ce: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in ce {
            h.append(http::header::CONTENT_ENCODING, v.parse().unwrap());
        }
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_gzip_and_both_deflates() {
        let b = Decoding::default();
        let data = b"{\"hello\":\"world\"}".repeat(20);
        assert_eq!(decode_body(&headers(&["gzip"]), &gzip(&data), &b).unwrap().as_ref(), &data[..]);
        assert_eq!(decode_body(&headers(&["X-GZIP"]), &gzip(&data), &b).unwrap().as_ref(), &data[..]);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&data).unwrap();
        assert_eq!(decode_body(&headers(&["deflate"]), &z.finish().unwrap(), &b).unwrap().as_ref(), &data[..]);
        let mut d = DeflateEncoder::new(Vec::new(), Compression::default());
        d.write_all(&data).unwrap();
        assert_eq!(decode_body(&headers(&["Deflate"]), &d.finish().unwrap(), &b).unwrap().as_ref(), &data[..]);
        assert!(matches!(decode_body(&headers(&[]), b"x", &b).unwrap(), Cow::Borrowed(_)));
        assert!(matches!(decode_body(&headers(&["identity"]), b"x", &b).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn bombs_stop_at_the_bound() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let b = Decoding { max_bytes: 1 << 30, max_ratio: 100 };
        assert_eq!(decode_body(&headers(&["gzip"]), &bomb, &b), Err(Reject::PayloadTooLarge));
        let b = Decoding { max_bytes: 1 << 20, max_ratio: 100_000 };
        assert_eq!(decode_body(&headers(&["gzip"]), &bomb, &b), Err(Reject::PayloadTooLarge));
        // exactly at the bound passes
        let data = vec![7u8; 5000];
        let b = Decoding { max_bytes: 5000, max_ratio: 1000 };
        assert_eq!(decode_body(&headers(&["gzip"]), &gzip(&data), &b).unwrap().len(), 5000);
        let b = Decoding { max_bytes: 4999, max_ratio: 1000 };
        assert_eq!(decode_body(&headers(&["gzip"]), &gzip(&data), &b), Err(Reject::PayloadTooLarge));
    }

    #[test]
    fn unknown_stacked_and_corrupt_codings_are_refused() {
        let b = Decoding::default();
        let g = gzip(b"abc");
        assert_eq!(decode_body(&headers(&["br"]), b"x", &b), Err(Reject::UnsupportedMediaType));
        assert_eq!(decode_body(&headers(&["gzip, gzip"]), &g, &b), Err(Reject::UnsupportedMediaType));
        assert_eq!(decode_body(&headers(&["gzip", "deflate"]), &g, &b), Err(Reject::UnsupportedMediaType));
        assert_eq!(decode_body(&headers(&["identity, gzip"]), &g, &b).unwrap().as_ref(), b"abc");
        assert!(matches!(decode_body(&headers(&["gzip"]), &g[..g.len() - 3], &b), Err(Reject::BadRequest(_))));
        assert!(matches!(decode_body(&headers(&["gzip"]), b"not gzip", &b), Err(Reject::BadRequest(_))));
        let mut two = g.clone();
        two.extend_from_slice(&g);
        assert!(matches!(decode_body(&headers(&["gzip"]), &two, &b), Err(Reject::BadRequest(_))));
    }

    proptest::proptest! {
        /// Never a panic on any Content-Type or any body in any coding; decoding never exceeds the bound.
        #[test]
        fn any_input(ct in ".{0,40}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                     coding in proptest::sample::select(vec!["gzip", "deflate", "identity", "br", "gzip, deflate"])) {
            let _ = media_type(&ct);
            let b = Decoding { max_bytes: 1000, max_ratio: 10 };
            let mut z = body.clone();
            if coding == "gzip" && !body.is_empty() && body[0] % 2 == 0 {
                z = gzip(&body);
            }
            if let Ok(out) = decode_body(&headers(&[coding]), &z, &b) {
                proptest::prop_assert!(out.len() as u64 <= (z.len() as u64 * 10).max(z.len() as u64));
            }
        }
    }

    #[test]
    fn media_types_parse() {
        let m = media_type("Application/JSON; Charset=\"UTF-8\"").unwrap();
        assert_eq!(m.essence, "application/json");
        assert_eq!(m.charset.as_deref(), Some("utf-8"));
        assert!(m.is_json());
        assert!(media_type("application/problem+json").unwrap().is_json());
        assert!(!media_type("text/json").unwrap().is_json());
        let m = media_type("multipart/form-data; boundary=\"a b\\\"c\"").unwrap();
        assert_eq!(m.boundary.as_deref(), Some("a b\"c"));
        assert!(m.is_multipart());
        assert_eq!(media_type("multipart/form-data;boundary=XyZ").unwrap().boundary.as_deref(), Some("XyZ"));
        assert!(media_type("application/json;").is_some());
        for bad in
            ["json", "/json", "a b/c", "a/b; x", "a/b; charset=utf-8; charset=latin1", "a/b; c=\"open", "a/b; c=d e"]
        {
            assert!(media_type(bad).is_none(), "{bad}");
        }
    }
}
