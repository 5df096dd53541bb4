//! The route's validation stage (`validate:`): what a request may look like, checked at
//! [`Place::Validation`](crate::exchange::Place::Validation), before inspection.
//!
//! - Counts: query parameters and cookies (400 `invalid-request`), header fields (431, as
//!   `limits.max_headers`).
//! - The body: its media type among the allowed ones and its charset among the allowed ones (415);
//!   its `Content-Encoding` decoded under a size and ratio bound (415 for a coding the gateway does not
//!   decode, 413 for a bomb); then read as what it declares: JSON in one streaming pass that checks
//!   depth, keys per object, array length, string length and duplicate keys (malformed: 400
//!   `malformed-json` with the byte offset; a limit: 400 `invalid-request` naming the pointer and the
//!   limit), text in its charset, a form as percent-encoded UTF-8, multipart with its boundary. A body
//!   that cannot be read as it declares is refused; it is never forwarded unread.
//! - With `openapi: NAME`, the request against its operation in the document (see [`super::openapi`]).
//!
//! The body forwarded upstream is always the original bytes; a decoded copy is left on the exchange
//! (`decoded_body`) for inspection.

use super::openapi::{self, Document, Documents};
use crate::content::{self, Decoding, MediaType};
use crate::exchange::{Exchange, FieldError, Reject};
use crate::json::{self, Shape, ShapeError};
use crate::units::Bytes;
use serde::Deserialize;
use std::sync::Arc;

/// A route's `validate:` section. Every key has a secure default, so `validate: {}` turns on the
/// shape limits with the default allow-lists (JSON in UTF-8 only).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// Media types a body may have (`application/json`, `text/*`, `*/*`). Default:
    /// `[application/json]`. With `openapi`, an operation that declares a request body accepts the
    /// types it declares instead.
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
    /// Charsets a `charset` parameter may name: `utf-8`, `us-ascii`, `iso-8859-1`. Default `[utf-8]`.
    /// A JSON body is UTF-8 (RFC 8259), whatever the list says.
    #[serde(default)]
    pub charsets: Option<Vec<String>>,
    #[serde(default)]
    pub json: JsonConfig,
    /// Default 100.
    #[serde(default)]
    pub max_query_params: Option<usize>,
    /// Header fields; default `limits.max_headers` (431 past it).
    #[serde(default)]
    pub max_headers: Option<usize>,
    /// Default 50.
    #[serde(default)]
    pub max_cookies: Option<usize>,
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// The OpenAPI document (a name under the top-level `openapi:`) requests are validated against.
    #[serde(default)]
    pub openapi: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JsonConfig {
    /// Nesting of objects and arrays (at most 100). Default 32.
    pub max_depth: u32,
    /// Keys in one object. Default 1000.
    pub max_keys: u32,
    /// Elements in one array. Default 10000.
    pub max_array: u32,
    /// Bytes of one string or key. Default 64 KiB.
    pub max_string: Bytes,
    /// `refuse` (default) or `allow` an object that repeats a key (also one differing only in case).
    pub duplicate_keys: DuplicateKeys,
}

impl Default for JsonConfig {
    fn default() -> Self {
        let s = Shape::default();
        JsonConfig {
            max_depth: s.max_depth,
            max_keys: s.max_keys,
            max_array: s.max_array,
            max_string: Bytes(u64::from(s.max_string)),
            duplicate_keys: DuplicateKeys::Refuse,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateKeys {
    #[default]
    Refuse,
    Allow,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodingConfig {
    /// Most bytes a `gzip` or `deflate` body may decode to. Default: the route's `max_body_bytes`.
    pub max_bytes: Option<Bytes>,
    /// Most decoded bytes per encoded byte. Default 100.
    pub max_ratio: u32,
}

impl Default for DecodingConfig {
    fn default() -> Self {
        DecodingConfig { max_bytes: None, max_ratio: 100 }
    }
}

const CHARSETS: [&str; 3] = ["utf-8", "us-ascii", "iso-8859-1"];

/// The compiled stage.
#[derive(Debug)]
pub struct Validate {
    content_types: Vec<String>,
    charsets: Vec<String>,
    shape: Shape,
    max_query_params: usize,
    max_headers: usize,
    max_cookies: usize,
    decoding: Decoding,
    openapi: Option<Arc<Document>>,
}

impl Validate {
    pub fn compile(
        c: &ValidateConfig,
        max_body_bytes: u64,
        max_headers: usize,
        docs: &Documents,
    ) -> Result<Validate, String> {
        let content_types = c
            .content_types
            .clone()
            .unwrap_or_else(|| vec!["application/json".into()])
            .into_iter()
            .map(|t| {
                let lower = t.trim().to_ascii_lowercase();
                let ok = lower == "*/*"
                    || lower.strip_suffix("/*").is_some_and(|top| content::media_type(&format!("{top}/x")).is_some())
                    || content::media_type(&lower).is_some_and(|m| m.essence == lower);
                if ok {
                    Ok(lower)
                } else {
                    Err(format!("validate.content_types: `{t}` is not `type/subtype`, `type/*` or `*/*`"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let charsets = c
            .charsets
            .clone()
            .unwrap_or_else(|| vec!["utf-8".into()])
            .into_iter()
            .map(|cs| {
                let lower = cs.trim().to_ascii_lowercase();
                let lower = if lower == "utf8" { "utf-8".to_owned() } else { lower };
                if CHARSETS.contains(&lower.as_str()) {
                    Ok(lower)
                } else {
                    Err(format!("validate.charsets: `{cs}` is not one of {}", CHARSETS.join(", ")))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let j = &c.json;
        if j.max_depth == 0 || j.max_depth > json::MAX_DEPTH_CEILING {
            return Err(format!("validate.json.max_depth must be 1 to {}", json::MAX_DEPTH_CEILING));
        }
        let max_string =
            u32::try_from(j.max_string.0).map_err(|_| "validate.json.max_string is too large".to_owned())?;
        if c.decoding.max_ratio == 0 {
            return Err("validate.decoding.max_ratio must be at least 1".into());
        }
        let openapi =
            match &c.openapi {
                None => None,
                Some(name) => Some(docs.get(name).cloned().ok_or_else(|| {
                    format!("validate.openapi: `{name}` is not declared under the top-level `openapi`")
                })?),
            };
        Ok(Validate {
            content_types,
            charsets,
            shape: Shape {
                max_depth: j.max_depth,
                max_keys: j.max_keys,
                max_array: j.max_array,
                max_string,
                refuse_duplicate_keys: j.duplicate_keys == DuplicateKeys::Refuse,
            },
            max_query_params: c.max_query_params.unwrap_or(100),
            max_headers: c.max_headers.unwrap_or(max_headers),
            max_cookies: c.max_cookies.unwrap_or(50),
            decoding: Decoding {
                max_bytes: c.decoding.max_bytes.map_or(max_body_bytes, |b| b.0),
                max_ratio: c.decoding.max_ratio,
            },
            openapi,
        })
    }

    /// The route's OpenAPI document (for response schema filtering with `Exchange::operation`).
    pub fn document(&self) -> Option<&Arc<Document>> {
        self.openapi.as_ref()
    }

    /// What `check` prints.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "validate (content types {}; json depth {}, keys {}, array {}, string {})",
            self.content_types.join(", "),
            self.shape.max_depth,
            self.shape.max_keys,
            self.shape.max_array,
            self.shape.max_string
        );
        if let Some(d) = &self.openapi {
            s.push_str(&format!(
                "; openapi `{}` ({} operations{})",
                d.name(),
                d.operation_count(),
                if d.strict() { ", strict" } else { "" }
            ));
        }
        s
    }

    /// The checks on the head: counts, and the OpenAPI operation and its parameters. Returns the
    /// operation's index in the document, for [`Validate::check_body`].
    pub fn check_head(&self, ex: &Exchange<'_>) -> Result<Option<usize>, Reject> {
        let parts = &ex.parts;
        if parts.headers.len() > self.max_headers {
            return Err(Reject::HeadersTooLarge);
        }
        let query = parts.uri.query().unwrap_or("");
        if !query.is_empty() && query.split('&').filter(|p| !p.is_empty()).count() > self.max_query_params {
            return Err(one("query", "", "max-query-params"));
        }
        let cookies: usize = parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes().split(|&b| b == b';').filter(|c| c.iter().any(|b| !b.is_ascii_whitespace())).count())
            .sum();
        if cookies > self.max_cookies {
            return Err(one("cookie", "", "max-cookies"));
        }
        let Some(doc) = &self.openapi else { return Ok(None) };
        let Some(m) = doc.find(&parts.method, ex.path())? else { return Ok(None) };
        let mut errors = Vec::new();
        m.operation.check_params(&m, parts, doc.strict(), &mut errors);
        if !errors.is_empty() {
            errors.truncate(openapi::MAX_ERRORS);
            return Err(openapi::invalid("request parameters do not match the OpenAPI document", errors));
        }
        Ok(Some(m.index))
    }

    /// The checks on the body (read whole within the route's limit).
    pub fn check_body(
        &self,
        ex: &mut Exchange<'_>,
        body: &bytes::Bytes,
        operation: Option<usize>,
    ) -> Result<(), Reject> {
        let op = operation.and_then(|i| self.openapi.as_ref().and_then(|d| d.operation(i)));
        let media = content::request_media_type(&ex.parts.headers)?;
        if body.is_empty() {
            if op.is_some_and(openapi::Operation::body_required) {
                return Err(one("body", "", "required"));
            }
            return Ok(());
        }
        if op.is_some_and(|o| !o.has_body()) && self.openapi.as_ref().is_some_and(|d| d.strict()) {
            // A strict document is the whole contract: a body the operation does not declare is refused.
            return Err(one("body", "", "undeclared"));
        }
        let Some(media) = media else { return Err(Reject::UnsupportedMediaType) };
        let allowed = match op.and_then(|o| o.accepts(&media.essence)) {
            Some(declared) => declared,
            None => self.content_types.iter().any(|range| range_matches(range, &media.essence)),
        };
        if !allowed {
            return Err(Reject::UnsupportedMediaType);
        }
        if let Some(cs) = &media.charset {
            let name = if cs == "utf8" { "utf-8" } else { cs.as_ref() };
            if !self.charsets.iter().any(|a| a == name) {
                return Err(Reject::UnsupportedMediaType);
            }
        }
        let decoded = content::decode_body(&ex.parts.headers, body, &self.decoding)?;
        self.check_content(&media, &decoded, op)?;
        if let std::borrow::Cow::Owned(d) = decoded {
            ex.decoded_body = Some(bytes::Bytes::from(d));
        }
        Ok(())
    }

    fn check_content(&self, media: &MediaType<'_>, body: &[u8], op: Option<&openapi::Operation>) -> Result<(), Reject> {
        let charset = media.charset.as_deref();
        if media.is_json() {
            if charset.is_some_and(|c| c != "utf-8" && c != "utf8" && c != "us-ascii") {
                // JSON is UTF-8 (RFC 8259 8.1); another charset cannot be read as declared.
                return Err(Reject::UnsupportedMediaType);
            }
            if charset == Some("us-ascii") && !body.is_ascii() {
                return Err(one("body", "", "charset"));
            }
            match json::check(body, &self.shape) {
                Ok(()) => {}
                Err(ShapeError::Malformed { offset }) => {
                    return Err(Reject::MalformedJson { offset, reason: "malformed JSON body" });
                }
                Err(ShapeError::Limit { pointer, code, offset }) => {
                    let e = FieldError { location: "body", pointer: pointer.into(), code, offset: Some(offset) };
                    return Err(openapi::invalid("JSON body breaks the route's shape limits", vec![e]));
                }
            }
            if let Some(op) = op.filter(|o| o.has_schema_for(&media.essence)) {
                // The tree is built only when a schema needs it, and after the shape pass bounded it.
                let value: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|_| Reject::MalformedJson { offset: 0, reason: "malformed JSON body" })?;
                let mut errors = Vec::new();
                op.check_body(&media.essence, &value, &mut errors);
                if !errors.is_empty() {
                    return Err(openapi::invalid("request body does not match the OpenAPI document", errors));
                }
            }
            return Ok(());
        }
        if media.is_multipart() {
            let ok = media.boundary.as_deref().is_some_and(|b| !b.is_empty() && b.len() <= 70);
            return if ok { Ok(()) } else { Err(one("body", "", "boundary")) };
        }
        if media.is_form() {
            // Percent-encoded pairs whose decoded text is UTF-8.
            let valid = body.split(|&b| b == b'&').all(|pair| {
                let bytes: Vec<u8> = pair.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
                well_formed_percent(&bytes)
                    && std::str::from_utf8(&percent_encoding::percent_decode(&bytes).collect::<Vec<u8>>()).is_ok()
            });
            return if valid { Ok(()) } else { Err(one("body", "", "charset")) };
        }
        // Text (or anything that names a charset) must be valid in it; text without one is UTF-8.
        let check = match charset {
            Some(c) => Some(c),
            None if media.top() == "text" => Some("utf-8"),
            None => None,
        };
        let valid = match check {
            Some("utf-8") | Some("utf8") => std::str::from_utf8(body).is_ok(),
            Some("us-ascii") => body.is_ascii(),
            _ => true,
        };
        if valid {
            Ok(())
        } else {
            Err(one("body", "", "charset"))
        }
    }
}

/// `%` followed by two hex digits, every time.
fn well_formed_percent(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn range_matches(range: &str, essence: &str) -> bool {
    range == "*/*"
        || range == essence
        || range.strip_suffix("/*").is_some_and(|top| essence.split('/').next() == Some(top))
}

fn one(location: &'static str, pointer: &str, code: &'static str) -> Reject {
    openapi::invalid(
        "request breaks the route's shape limits",
        vec![FieldError { location, pointer: pointer.into(), code, offset: None }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> Result<Validate, String> {
        let c: ValidateConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        Validate::compile(&c, 1 << 20, 100, &Documents::new())
    }

    #[test]
    fn config_has_secure_defaults_and_refuses_what_it_cannot_do() {
        let v = compile("{}").unwrap();
        assert_eq!(v.content_types, ["application/json"]);
        assert_eq!(v.charsets, ["utf-8"]);
        assert_eq!(v.shape, Shape::default());
        assert_eq!((v.max_query_params, v.max_headers, v.max_cookies), (100, 100, 50));
        assert_eq!(v.decoding, Decoding { max_bytes: 1 << 20, max_ratio: 100 });
        assert!(compile("content_types: [Text/*, '*/*', application/problem+json]").is_ok());
        assert!(compile("content_types: [json]").unwrap_err().contains("json"));
        assert!(compile("content_types: ['application/json; charset=utf-8']").is_err());
        assert!(compile("charsets: [utf-16]").unwrap_err().contains("utf-16"));
        assert!(compile("json: { max_depth: 101 }").is_err());
        assert!(compile("json: { max_depth: 0 }").is_err());
        assert!(compile("decoding: { max_ratio: 0 }").is_err());
        assert!(compile("openapi: nope").unwrap_err().contains("nope"));
        assert!(compile("bogus: 1").is_err(), "unknown keys are refused");
        assert!(compile("json: { bogus: 1 }").is_err());
    }

    #[test]
    fn percent_encoding_is_well_formed_or_not() {
        assert!(well_formed_percent(b"a=%41%42&b=c"));
        assert!(!well_formed_percent(b"a=%4"));
        assert!(!well_formed_percent(b"a=%zz"));
        assert!(!well_formed_percent(b"%"));
    }
}
