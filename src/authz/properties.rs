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

/// The most leaves a body may have, and the longest pointer: each leaf is checked against the
/// patterns by its pointer, so both bound the work a body can cause (a long key over many leaves
/// would otherwise cost its length once per leaf).
pub(super) const MAX_LEAVES: usize = 10_000;
pub(super) const MAX_POINTER: usize = 4096;

/// Walks a JSON document once, refusing duplicate keys (also keys that differ only in case: many
/// frameworks match keys without regard to case and would read the other one), and calls `leaf` with
/// each leaf's JSON pointer (escaped per RFC 6901); it stops at the first leaf `leaf` refuses and
/// returns that pointer. No pointer is kept: memory is the path being walked.
/// `judge: false` only checks for duplicates (no pointer is built, no bound on leaves).
pub(super) fn walk(body: &[u8], judge: bool, leaf: &mut dyn FnMut(&str) -> bool) -> Result<Option<String>, Malformed> {
    let mut state = State { path: String::new(), judge, leaves: 0, refused: None, leaf };
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Walker { state: &mut state }.deserialize(&mut de).and_then(|()| de.end());
    match walked {
        Ok(()) => Ok(None),
        Err(_) if state.refused.is_some() => Ok(state.refused),
        Err(e) => Err(Malformed {
            offset: offset_of(body, e.line(), e.column()),
            duplicate_key: e.to_string().starts_with(DUPLICATE),
        }),
    }
}

/// Every leaf's pointer (tests only: the gateway never keeps them).
#[cfg(test)]
pub(super) fn leaves(body: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut out = Vec::new();
    walk(body, true, &mut |p| {
        out.push(p.to_owned());
        true
    })?;
    Ok(out)
}

const DUPLICATE: &str = "duplicate key";
const REFUSED: &str = "refused";

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

struct State<'f> {
    path: String,
    judge: bool,
    leaves: usize,
    refused: Option<String>,
    leaf: &'f mut dyn FnMut(&str) -> bool,
}

struct Walker<'a, 'f> {
    state: &'a mut State<'f>,
}

impl<'de> DeserializeSeed<'de> for Walker<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walker<'_, '_> {
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        let s = &mut *self.state;
        if !s.judge {
            return Ok(());
        }
        s.leaves += 1;
        if s.leaves > MAX_LEAVES {
            return Err(E::custom("too many fields"));
        }
        if !(s.leaf)(&s.path) {
            s.refused = Some(s.path.clone());
            return Err(E::custom(REFUSED));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Walker<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let base = self.state.path.len();
        let mut i = 0usize;
        loop {
            if self.state.judge {
                self.state.path.push('/');
                self.state.path.push_str(itoa::Buffer::new().format(i));
            }
            let more = seq.next_element_seed(Walker { state: self.state })?;
            self.state.path.truncate(base);
            if more.is_none() {
                break;
            }
            i += 1;
        }
        if i == 0 {
            return self.leaf();
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let base = self.state.path.len();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            // Folded: `Id` and `ID`, `s` and `ſ`, `k` and the Kelvin sign are one key to some parser.
            if !seen.insert(key.to_uppercase().to_lowercase()) {
                return Err(de::Error::custom(DUPLICATE));
            }
            if self.state.judge {
                let path = &mut self.state.path;
                path.push('/');
                for c in key.chars() {
                    match c {
                        '~' => path.push_str("~0"),
                        '/' => path.push_str("~1"),
                        c => path.push(c),
                    }
                }
                if path.len() > MAX_POINTER {
                    return Err(de::Error::custom("a field's pointer is too long"));
                }
            }
            map.next_value_seed(Walker { state: self.state })?;
            self.state.path.truncate(base);
        }
        if seen.is_empty() {
            return self.leaf();
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
        assert_eq!(walk(br#"{"a":{"b":1},"c":2}"#, true, &mut |p| p != "/a/b"), Ok(Some("/a/b".to_owned())));
        assert!(walk(br#"{"a":1,"a":2}"#, false, &mut |_| false).unwrap_err().duplicate_key);
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
        // Keys that differ only in case are one key to case-insensitive parsers.
        assert!(leaves(br#"{"id":"me","ID":"victim"}"#).unwrap_err().duplicate_key);
        assert!(leaves(br#"{"customer":1,"Customer":2}"#).unwrap_err().duplicate_key);
        assert!(leaves("{\"s\":1,\"\u{17f}\":2}".as_bytes()).unwrap_err().duplicate_key);
        assert!(leaves("{\"k\":1,\"\u{212a}\":2}".as_bytes()).unwrap_err().duplicate_key);
        // The work a body can cause is bounded: a long key over many leaves, or many leaves.
        let long_key = format!("{{\"{}\":[{}0]}}", "k".repeat(5000), "0,".repeat(10));
        assert!(leaves(long_key.as_bytes()).is_err());
        let many = format!("[{}0]", "0,".repeat(MAX_LEAVES));
        assert!(leaves(many.as_bytes()).is_err());
        let fine = format!("[{}0]", "0,".repeat(MAX_LEAVES - 1));
        assert_eq!(leaves(fine.as_bytes()).unwrap().len(), MAX_LEAVES);
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
