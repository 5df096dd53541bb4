//! One streaming pass over a JSON document that checks its shape without building a tree: nesting
//! depth, keys per object, array length, string length (keys included), and duplicate keys. Shared by
//! the stages that judge JSON bodies (validation; inspection may reuse it); it belongs to none of them.
//!
//! A refusal names where (a JSON pointer, RFC 6901, and a byte offset) and which limit, never a
//! value. The pointer is the one place a key of the body appears, as the `errors` contract allows.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// serde_json refuses nesting deeper than 128 on its own; a configured depth stays below it.
pub const MAX_DEPTH_CEILING: u32 = 100;

/// The shape a JSON document may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Nesting of objects and arrays (a scalar document is depth 0, `{}` and `[]` depth 1).
    pub max_depth: u32,
    /// Keys in one object.
    pub max_keys: u32,
    /// Elements in one array.
    pub max_array: u32,
    /// Bytes (UTF-8, after unescaping) of one string or key.
    pub max_string: u32,
    /// Refuse an object that repeats a key, also one that differs only in case (`id`, `ID`; many
    /// frameworks match keys regardless of case and would read the other one). Parsers disagree on
    /// which duplicate wins, so the gateway would judge one value and the upstream act on another.
    pub refuse_duplicate_keys: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Shape { max_depth: 32, max_keys: 1000, max_array: 10_000, max_string: 64 * 1024, refuse_duplicate_keys: true }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// Not JSON (or trailing bytes): the byte offset where reading failed.
    Malformed { offset: u64 },
    /// A limit or a duplicate key: `code` is `max-depth`, `max-keys`, `max-array`, `max-string` or
    /// `duplicate-key`; `pointer` the object, array or string it applies to (for a duplicate key, the
    /// repeated member).
    Limit { pointer: String, code: &'static str, offset: u64 },
}

/// Walks `body` once, checking `shape`.
pub fn check(body: &[u8], shape: &Shape) -> Result<(), ShapeError> {
    let mut state = State { path: String::new(), shape, depth: 0, refused: None };
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Walker { state: &mut state }.deserialize(&mut de).and_then(|()| de.end());
    match walked {
        Ok(()) => Ok(()),
        Err(e) => {
            let offset = offset_of(body, e.line(), e.column());
            match state.refused {
                Some((pointer, code)) => Err(ShapeError::Limit { pointer, code, offset }),
                None => Err(ShapeError::Malformed { offset }),
            }
        }
    }
}

/// The longest pointer an error carries: past it, the pointer is cut (at a character boundary), so
/// an answer never grows with a hostile key's length.
pub const MAX_POINTER: usize = 256;

/// `pointer` cut to [`MAX_POINTER`] bytes.
pub fn capped(pointer: &str) -> &str {
    if pointer.len() <= MAX_POINTER {
        return pointer;
    }
    let mut end = MAX_POINTER;
    while !pointer.is_char_boundary(end) {
        end -= 1;
    }
    &pointer[..end]
}

/// serde_json reports a 1-based line and a column counted in bytes; the offset is what a client can
/// seek to.
pub fn offset_of(body: &[u8], line: usize, column: usize) -> u64 {
    let mut start = 0;
    for _ in 1..line {
        match memchr::memchr(b'\n', &body[start..]) {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    (start + column.saturating_sub(1)).min(body.len()) as u64
}

struct State<'s> {
    path: String,
    shape: &'s Shape,
    depth: u32,
    refused: Option<(String, &'static str)>,
}

impl State<'_> {
    fn refuse<E: de::Error>(&mut self, code: &'static str) -> E {
        self.refused = Some((capped(&self.path).to_owned(), code));
        E::custom(code)
    }

    fn string<E: de::Error>(&mut self, len: usize) -> Result<(), E> {
        if len > self.shape.max_string as usize {
            return Err(self.refuse("max-string"));
        }
        Ok(())
    }

    fn push_key(&mut self, key: &str) {
        self.path.push('/');
        if !key.bytes().any(|b| b == b'~' || b == b'/') {
            self.path.push_str(key);
            return;
        }
        for c in key.chars() {
            match c {
                '~' => self.path.push_str("~0"),
                '/' => self.path.push_str("~1"),
                c => self.path.push(c),
            }
        }
    }
}

struct Walker<'a, 's> {
    state: &'a mut State<'s>,
}

impl<'de> DeserializeSeed<'de> for Walker<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walker<'_, '_> {
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.state.depth += 1;
        if self.state.depth > self.state.shape.max_depth {
            return Err(self.state.refuse("max-depth"));
        }
        Ok(())
    }
}

/// A key as case-insensitive parsers see it: ASCII folded cheaply, other text through Unicode case
/// folding (`s` and `ſ`, `k` and the Kelvin sign are one key to some parser).
fn folded(key: &str) -> Cow<'_, str> {
    if key.is_ascii() {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(key.to_ascii_lowercase())
        } else {
            Cow::Borrowed(key)
        }
    } else {
        Cow::Owned(key.to_uppercase().to_lowercase())
    }
}

impl<'de> Visitor<'de> for Walker<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.state.string(s.len())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        let base = self.state.path.len();
        let mut i = 0u32;
        loop {
            if i == self.state.shape.max_array {
                // One more element is one too many; an array of exactly the limit ends here.
                self.state.path.truncate(base);
                return match seq.next_element::<de::IgnoredAny>()? {
                    None => {
                        self.state.depth -= 1;
                        Ok(())
                    }
                    Some(_) => Err(self.state.refuse("max-array")),
                };
            }
            self.state.path.push('/');
            self.state.path.push_str(itoa::Buffer::new().format(i));
            let more = seq.next_element_seed(Walker { state: self.state })?;
            self.state.path.truncate(base);
            if more.is_none() {
                break;
            }
            i += 1;
        }
        self.state.depth -= 1;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        let base = self.state.path.len();
        // Folded keys seen so far: borrowed from the body when it spells them plainly (the usual
        // case), so a small object costs one short list and no key copies.
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        let mut set: Option<std::collections::HashSet<Cow<'de, str>>> = None;
        let mut count = 0u32;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            count += 1;
            if count > self.state.shape.max_keys {
                return Err(self.state.refuse("max-keys"));
            }
            self.state.push_key(&key);
            self.state.string(key.len())?;
            if self.state.shape.refuse_duplicate_keys {
                let k = match key {
                    Cow::Borrowed(b) => match folded(b) {
                        Cow::Borrowed(_) => Cow::Borrowed(b),
                        Cow::Owned(o) => Cow::Owned(o),
                    },
                    Cow::Owned(o) => Cow::Owned(folded(&o).into_owned()),
                };
                // Small objects (the common case) scan a short list; large ones use a set.
                let fresh = match &mut set {
                    Some(set) => set.insert(k),
                    None if seen.len() < 16 => {
                        let fresh = !seen.contains(&k);
                        seen.push(k);
                        fresh
                    }
                    None => {
                        let mut s: std::collections::HashSet<Cow<'de, str>> = seen.drain(..).collect();
                        let fresh = s.insert(k);
                        set = Some(s);
                        fresh
                    }
                };
                if !fresh {
                    return Err(self.state.refuse("duplicate-key"));
                }
            }
            map.next_value_seed(Walker { state: self.state })?;
            self.state.path.truncate(base);
        }
        self.state.depth -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(body: &str, shape: &Shape) -> Option<(String, &'static str)> {
        match check(body.as_bytes(), shape) {
            Ok(()) => None,
            Err(ShapeError::Limit { pointer, code, .. }) => Some((pointer, code)),
            Err(e) => panic!("{body}: {e:?}"),
        }
    }

    #[test]
    fn each_limit_at_its_boundary() {
        let s = Shape { max_depth: 3, max_keys: 2, max_array: 3, max_string: 4, refuse_duplicate_keys: true };
        assert_eq!(limit(r#"{"a":[[1]]}"#, &s), None);
        assert_eq!(limit(r#"{"a":[[[1]]]}"#, &s), Some(("/a/0/0".into(), "max-depth")));
        assert_eq!(limit(r#"{"a":1,"b":2}"#, &s), None);
        assert_eq!(limit(r#"{"x":{"a":1,"b":2,"c":3}}"#, &s), Some(("/x".into(), "max-keys")));
        assert_eq!(limit(r#"[1,2,3]"#, &s), None);
        assert_eq!(limit(r#"{"l":[1,2,3,4]}"#, &s), Some(("/l".into(), "max-array")));
        assert_eq!(limit(r#"["abcd"]"#, &s), None);
        assert_eq!(limit(r#"["abcde"]"#, &s), Some(("/0".into(), "max-string")));
        assert_eq!(limit(r#"{"abcde":1}"#, &s), Some(("/abcde".into(), "max-string")));
        // an escape counts as what it decodes to
        assert_eq!(limit(r#"["\u0061bcd"]"#, &s), None);
    }

    #[test]
    fn duplicate_keys_including_case_variants() {
        let s = Shape::default();
        assert_eq!(limit(r#"{"a":{"b":1,"b":2}}"#, &s), Some(("/a/b".into(), "duplicate-key")));
        assert_eq!(limit(r#"{"role":1,"r\u006fle":2}"#, &s), Some(("/role".into(), "duplicate-key")));
        assert_eq!(limit(r#"{"id":1,"ID":2}"#, &s), Some(("/ID".into(), "duplicate-key")));
        assert_eq!(limit("{\"k\":1,\"\u{212a}\":2}", &s).unwrap().1, "duplicate-key");
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":1")).collect();
        assert_eq!(limit(&format!("{{{},\"K39\":0}}", many.join(",")), &s).unwrap().1, "duplicate-key");
        assert_eq!(limit(&format!("{{{}}}", many.join(",")), &s), None);
        let allow = Shape { refuse_duplicate_keys: false, ..s };
        assert_eq!(limit(r#"{"a":1,"a":2}"#, &allow), None);
    }

    #[test]
    fn malformed_gives_the_offset() {
        let s = Shape::default();
        assert_eq!(check(b"{\"a\":1,\n  \"b\" 2}", &s), Err(ShapeError::Malformed { offset: 14 }));
        assert!(matches!(check(b"{\"a\":1} x", &s), Err(ShapeError::Malformed { .. })));
        assert!(matches!(check(b"", &s), Err(ShapeError::Malformed { offset: 0 })));
        assert!(matches!(check(b"\"\xff\"", &s), Err(ShapeError::Malformed { .. })));
        assert!(check(&[b'['; 100_000], &Shape { max_depth: MAX_DEPTH_CEILING, ..s }).is_err());
    }

    proptest! {
        /// Never a panic, whatever the bytes; and the reported offset is inside the body.
        #[test]
        fn any_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            match check(&body, &Shape::default()) {
                Ok(()) => {}
                Err(ShapeError::Malformed { offset }) | Err(ShapeError::Limit { offset, .. }) => {
                    prop_assert!(offset <= body.len() as u64)
                }
            }
        }
    }
}
