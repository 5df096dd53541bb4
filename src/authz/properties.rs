//! Property-level rules (mass assignment): per role, the JSON body fields a POST, PUT or PATCH may set.
//!
//! The body is walked once with serde_json (no tree is built): every leaf (a scalar, `null`, or an
//! empty object or array) is a field the request sets, named by its JSON pointer (RFC 6901). A
//! duplicate key anywhere is refused, since parsers disagree about which one wins (the gateway would
//! judge one and the upstream act on the other).

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Why a body could not be walked: its byte offset and a short reason.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed {
    pub(super) offset: u64,
    pub(super) duplicate_key: bool,
}

/// Every leaf's JSON pointer (escaped per RFC 6901), in document order.
pub(super) fn leaves(body: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut out = Vec::new();
    let mut path = String::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Walker { path: &mut path, out: &mut out }.deserialize(&mut de).and_then(|()| de.end());
    match walked {
        Ok(()) => Ok(out),
        Err(e) => Err(Malformed {
            offset: offset_of(body, e.line(), e.column()),
            duplicate_key: e.to_string().starts_with(DUPLICATE),
        }),
    }
}

const DUPLICATE: &str = "duplicate key";

/// serde_json reports a 1-based line and a column counted in bytes; the offset is what a client can
/// seek to.
fn offset_of(body: &[u8], line: usize, column: usize) -> u64 {
    let mut start = 0;
    for _ in 1..line {
        match body[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    (start + column.saturating_sub(1)).min(body.len()) as u64
}

struct Walker<'a> {
    path: &'a mut String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walker<'_> {
    fn leaf<E>(self) -> Result<(), E> {
        self.out.push(self.path.clone());
        Ok(())
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let base = self.path.len();
        let mut i = 0usize;
        loop {
            self.path.push('/');
            self.path.push_str(itoa::Buffer::new().format(i));
            let more = seq.next_element_seed(Walker { path: self.path, out: self.out })?;
            self.path.truncate(base);
            if more.is_none() {
                break;
            }
            i += 1;
        }
        if i == 0 {
            self.out.push(self.path.clone());
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let base = self.path.len();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !seen.insert(key.clone().into_owned()) {
                return Err(de::Error::custom(format_args!("{DUPLICATE} at {}", self.path)));
            }
            self.path.push('/');
            for c in key.chars() {
                match c {
                    '~' => self.path.push_str("~0"),
                    '/' => self.path.push_str("~1"),
                    c => self.path.push(c),
                }
            }
            map.next_value_seed(Walker { path: self.path, out: self.out })?;
            self.path.truncate(base);
        }
        if seen.is_empty() {
            self.out.push(self.path.clone());
        }
        Ok(())
    }
}

/// An allowed field: a JSON pointer whose segments are matched in order, `*` matching any one segment;
/// it allows itself and everything under it.
#[derive(Debug, Clone)]
pub(super) struct Pattern(Vec<String>);

impl Pattern {
    pub(super) fn parse(pointer: &str) -> Result<Pattern, String> {
        if pointer.is_empty() {
            return Ok(Pattern(Vec::new()));
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(format!("`{pointer}` is not a JSON pointer (it must start with `/`)"));
        };
        Ok(Pattern(rest.split('/').map(str::to_owned).collect()))
    }

    pub(super) fn allows(&self, leaf: &str) -> bool {
        let mut segments = leaf.split('/').skip(1);
        self.0.iter().all(|p| segments.next().is_some_and(|s| p == "*" || p == s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_named_by_their_pointers() {
        let body = br#"{"name":"a","address":{"city":"x","zip":null},"tags":["t",{"k":1}],"e":{},"z":[],"a/b~":true}"#;
        assert_eq!(
            leaves(body).unwrap(),
            ["/name", "/address/city", "/address/zip", "/tags/0", "/tags/1/k", "/e", "/z", "/a~1b~0"]
        );
        assert_eq!(leaves(b"[]").unwrap(), [""]);
        assert_eq!(leaves(b"7").unwrap(), [""]);
    }

    #[test]
    fn duplicates_and_malformed_bodies_give_their_offset() {
        let e = leaves(br#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
        assert!(e.duplicate_key);
        assert!((18..=21).contains(&e.offset), "at the second `\"c\"`: {e:?}");
        let e = leaves(b"{\"a\":1,\n \"a\":2}").unwrap_err();
        assert!(e.duplicate_key, "{e:?}");
        // The same key spelled with an escape is the same key.
        assert!(leaves(br#"{"role":1,"r\u006fle":2}"#).unwrap_err().duplicate_key);
        let e = leaves(b"{\"a\":1,\n  \"b\" 2}").unwrap_err();
        assert!(!e.duplicate_key);
        assert_eq!(e.offset, 14);
        assert!(leaves(b"{\"a\":1} x").is_err(), "trailing bytes");
        assert!(leaves(b"").is_err());
        assert!(leaves(&[b'['; 200]).is_err(), "nesting is bounded");
    }

    #[test]
    fn patterns_allow_themselves_what_is_under_them_and_wildcards() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("/name").allows("/name"));
        assert!(!p("/name").allows("/names"));
        assert!(!p("/name").allows("/role"));
        assert!(p("/address").allows("/address/city"));
        assert!(!p("/address/city").allows("/address"));
        assert!(p("/items/*/qty").allows("/items/3/qty"));
        assert!(!p("/items/*/qty").allows("/items/3/price"));
        assert!(p("").allows("/anything"));
        assert!(Pattern::parse("name").is_err());
    }
}
