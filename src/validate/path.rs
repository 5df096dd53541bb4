//! Request-target normalisation, done once before routing so that every later stage and the upstream
//! see one spelling of a path.
//!
//! Percent-encoded unreserved characters (`%41` → `A`) are decoded, other escapes are kept with
//! upper-case hex. Refused outright (400): anything that could make the gateway and the upstream
//! disagree about which resource is meant — dot segments (`.`, `..`, also encoded), encoded `/`, `\`
//! or NUL, a raw backslash, control characters (raw or encoded), malformed escapes, and escapes that
//! decode to invalid UTF-8. A dot segment followed by matrix parameters (`..;x`, `.%3B`) is a dot
//! segment: Tomcat, Jetty and Spring drop the parameters and then resolve it.
//!
//! Empty segments are merged (`//admin` is `/admin`, as NGINX's `merge_slashes` does), and the merged
//! path is what the upstream receives, so the gateway and the upstream name one resource.
//! Matrix parameters (`;` in a segment) are kept here; [`without_matrix_params`] gives the spelling
//! routes are matched on, and a route refuses them unless it opts in.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with /")]
    NotAbsolute,
    #[error("malformed percent-encoding")]
    BadEscape,
    #[error("encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("dot segment")]
    DotSegment,
    #[error("control character or backslash")]
    BadCharacter,
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("matrix parameters (`;`) on a route that does not allow them")]
    MatrixParams,
}

impl PathError {
    /// The reason for logs and metrics (the client sees only the problem type).
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path not absolute",
            PathError::BadEscape => "bad percent-encoding",
            PathError::EncodedSeparator => "encoded separator",
            PathError::DotSegment => "dot segment",
            PathError::BadCharacter => "bad character",
            PathError::InvalidUtf8 => "invalid utf-8",
            PathError::MatrixParams => "matrix parameters",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a path (without query). Borrows when nothing changes, which is the common case.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out: Option<Vec<u8>> = None;
    let mut decoded_utf8: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            else {
                return Err(PathError::BadEscape);
            };
            let v = h << 4 | l;
            if matches!(v, b'/' | b'\\' | 0) {
                return Err(PathError::EncodedSeparator);
            }
            // Encoded controls are refused like raw ones: `%0D%0A` decoded by an upstream into a log line,
            // a redirect or a header is an injection.
            if v < 0x20 || v == 0x7f {
                return Err(PathError::BadCharacter);
            }
            if v >= 0x80 {
                decoded_utf8.push(v);
            }
            let buf = out.get_or_insert_with(|| bytes[..i].to_vec());
            if unreserved(v) {
                buf.push(v);
            } else {
                buf.extend_from_slice(&[b'%', HEX[(v >> 4) as usize], HEX[(v & 15) as usize]]);
            }
            i += 3;
            continue;
        }
        if b < 0x20 || b == 0x7f || b == b'\\' {
            return Err(PathError::BadCharacter);
        }
        if b == b'/' {
            let after_slash = match &out {
                Some(buf) => buf.last() == Some(&b'/'),
                None => i > 0 && bytes[i - 1] == b'/',
            };
            if after_slash {
                out.get_or_insert_with(|| bytes[..i].to_vec());
                i += 1;
                continue;
            }
        }
        if b >= 0x80 {
            decoded_utf8.push(b);
        }
        if let Some(buf) = out.as_mut() {
            buf.push(b);
        }
        i += 1;
    }
    // Non-ASCII bytes, raw or escaped, must form valid UTF-8 when decoded.
    if !decoded_utf8.is_empty() {
        let decoded = percent_encoding::percent_decode(out.as_deref().unwrap_or(bytes));
        if std::str::from_utf8(&decoded.collect::<Vec<u8>>()).is_err() {
            return Err(PathError::InvalidUtf8);
        }
    }
    let result: Cow<'_, str> = match out {
        None => Cow::Borrowed(path),
        Some(buf) => Cow::Owned(String::from_utf8(buf).map_err(|_| PathError::InvalidUtf8)?),
    };
    // Only a path with a `.` can hold a dot segment: most have none, and skip the walk.
    if memchr::memchr(b'.', result.as_bytes()).is_some() && result.split('/').any(is_dot_segment) {
        return Err(PathError::DotSegment);
    }
    Ok(result)
}

/// `.` or `..`, also with matrix parameters after it (`..;x`, `.%3B`): Tomcat, Jetty and Spring drop the
/// parameters and then resolve the dot segment.
fn is_dot_segment(seg: &str) -> bool {
    let seg = seg.as_bytes();
    let dots = seg.iter().take_while(|&&b| b == b'.').count();
    (dots == 1 || dots == 2) && (seg.len() == dots || seg[dots] == b';' || seg[dots..].starts_with(b"%3B"))
}

/// Whether a normalised path carries matrix parameters (`;`, raw or encoded, in a segment).
pub fn has_matrix_params(path: &str) -> bool {
    let b = path.as_bytes();
    memchr::memchr(b';', b).is_some()
        || memchr::memchr_iter(b'%', b).any(|i| b[i + 1..].get(..2).is_some_and(|h| h.eq_ignore_ascii_case(b"3B")))
}

/// The path as Tomcat, Jetty and Spring resolve it: each segment without its `;` parameters (raw or
/// encoded as `%3B`, which some servers decode before they strip parameters), empty segments merged.
/// Routes are matched on this spelling, so `/admin;x/users` and `/admin%3Bx/users` meet `/admin`'s
/// checks.
pub fn without_matrix_params(path: &str) -> Cow<'_, str> {
    if !has_matrix_params(path) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').skip(1) {
        if !out.ends_with('/') {
            out.push('/');
        }
        let b = seg.as_bytes();
        let cut = (0..b.len())
            .find(|&i| {
                b[i] == b';' || (b[i] == b'%' && b[i + 1..].get(..2).is_some_and(|h| h.eq_ignore_ascii_case(b"3B")))
            })
            .unwrap_or(b.len());
        out.push_str(&seg[..cut]);
    }
    Cow::Owned(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plain_paths_borrowed() {
        assert!(matches!(normalize("/api/users/42"), Ok(Cow::Borrowed("/api/users/42"))));
    }

    #[test]
    fn decodes_unreserved_and_uppercases_others() {
        assert_eq!(normalize("/%61pi/%7euser").unwrap(), "/api/~user");
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%20b%3a").unwrap(), "/a%20b%3A");
        assert_eq!(normalize("/caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        assert_eq!(normalize("/a/../admin"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a/%2e%2e/admin"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a/.%2E"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%0d%0aSet-Cookie:x"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a%09b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a%7F"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("/caf%C3"), Err(PathError::InvalidUtf8));
        assert_eq!(normalize("/%ff%fe"), Err(PathError::InvalidUtf8));
        assert_eq!(normalize("api"), Err(PathError::NotAbsolute));
        // dots inside names are fine
        assert!(normalize("/v1.2/file.json").is_ok());
        // a dot segment with matrix parameters is still one (Tomcat: `/echo/..;/x` is `/x`)
        assert_eq!(normalize("/echo/..;/private/data"), Err(PathError::DotSegment));
        assert_eq!(normalize("/echo/.;x/data"), Err(PathError::DotSegment));
        assert_eq!(normalize("/echo/..%3b/data"), Err(PathError::DotSegment));
        assert_eq!(normalize("/echo/%2e%2e;a=b/data"), Err(PathError::DotSegment));
        assert!(normalize("/a;b=c/d").is_ok());
    }

    #[test]
    fn merges_empty_segments() {
        assert_eq!(normalize("//admin").unwrap(), "/admin");
        assert_eq!(normalize("/a//b///c/").unwrap(), "/a/b/c/");
        assert_eq!(normalize("/a/%41//b").unwrap(), "/a/A/b");
        assert_eq!(normalize("//").unwrap(), "/");
        assert_eq!(normalize("//..//x"), Err(PathError::DotSegment));
    }

    #[test]
    fn matrix_parameters() {
        assert!(has_matrix_params("/a;b"));
        assert!(has_matrix_params("/a%3Bb"));
        assert!(!has_matrix_params("/a/b"));
        assert_eq!(without_matrix_params("/admin;x/users"), "/admin/users");
        assert_eq!(without_matrix_params("/;x/admin"), "/admin");
        assert_eq!(without_matrix_params("/a;x"), "/a");
        assert_eq!(without_matrix_params("/a;x/"), "/a/");
        assert_eq!(without_matrix_params("/;x"), "/");
        // Encoded `;` too: routes see `/admin%3Bx/users` as `/admin/users`.
        assert_eq!(without_matrix_params("/admin%3Bx/users"), "/admin/users");
        assert_eq!(without_matrix_params("/admin%3bx"), "/admin");
        assert_eq!(without_matrix_params("/a%3A%3Bx/b;y"), "/a%3A/b");
        assert!(matches!(without_matrix_params("/a%20b"), Cow::Borrowed("/a%20b")));
        assert!(matches!(without_matrix_params("/plain"), Cow::Borrowed("/plain")));
    }

    fn decoded(p: &str) -> Vec<u8> {
        percent_encoding::percent_decode_str(p).collect()
    }

    proptest::proptest! {
        /// Accepted paths normalise to themselves, mean the same bytes, and hold no dot segment.
        #[test]
        fn normalisation_is_idempotent_and_meaning_preserving(
            segs in proptest::collection::vec("([a-zA-Z0-9._~-]|%[0-9a-fA-F]{2}|[!$&'()*+,;=:@]){0,6}", 1..6)
        ) {
            let path = format!("/{}", segs.join("/"));
            if let Ok(once) = normalize(&path) {
                proptest::prop_assert_eq!(normalize(&once).unwrap(), once.clone());
                let mut merged = decoded(&path);
                merged.dedup_by(|a, b| *a == b'/' && *b == b'/');
                proptest::prop_assert_eq!(decoded(&once), merged);
                proptest::prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
                proptest::prop_assert!(!once.contains("//"));
            }
        }
    }
}
