//! What a request body is: its media type and charset (from `Content-Type`), and its bytes decoded
//! from its `Content-Encoding` under a bound on size and ratio. Shared by the stages that read bodies
//! (validation, inspection); a body that cannot be decoded as it declares is refused, never passed on
//! uninspected.

use crate::exchange::Reject;
use http::HeaderMap;
use std::borrow::Cow;

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

/// The body as its `Content-Encoding` decodes it: borrowed when it has none (or `identity`).
/// Any coding this gateway cannot decode is 415.
pub fn decode_body<'a>(headers: &HeaderMap, body: &'a [u8], _bound: &Decoding) -> Result<Cow<'a, [u8]>, Reject> {
    let mut codings = headers.get_all(http::header::CONTENT_ENCODING).iter();
    match codings.next() {
        None => Ok(Cow::Borrowed(body)),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") && codings.next().is_none() => {
            Ok(Cow::Borrowed(body))
        }
        Some(_) => Err(Reject::UnsupportedMediaType),
    }
}
