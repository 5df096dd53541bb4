//! [`Params`]: the path parameters a template route captured, held so that matching a route costs no
//! heap allocation in the common case (it runs on every request of a templated route).

use std::fmt;
use std::sync::Arc;

/// Parameters held inline; a template with more keeps the rest in a `Vec`.
const INLINE: usize = 4;
/// Bytes of value text held inline; more move the whole text to a `String`.
const INLINE_TEXT: usize = 64;

/// Path parameters captured by a template route, percent-decoded (invalid UTF-8 replaced).
///
/// Each name is shared with the route's template (an `Arc`, not a copy); the values are copied, one
/// after another, into one text buffer. Up to four parameters and 64 bytes of values live inside the
/// value itself: a match allocates nothing then. A template never names a parameter twice, but a
/// `Params` may (built by hand), so a check that wants the one value asks [`Params::count`] too.
#[derive(Clone)]
pub struct Params {
    len: usize,
    /// The first [`INLINE`] parameters, in path order; `None` past `len`.
    inline: [Option<Param>; INLINE],
    /// The parameters after the first [`INLINE`].
    more: Vec<Param>,
    text: Text,
}

#[derive(Clone)]
struct Param {
    name: Arc<str>,
    /// The value's bytes in [`Params::text`].
    start: usize,
    end: usize,
}

#[derive(Clone)]
enum Text {
    Inline { bytes: [u8; INLINE_TEXT], len: usize },
    Heap(String),
}

impl Text {
    /// Appends `s`; returns where it starts and ends. Text that outgrows the inline buffer moves, whole,
    /// to the heap.
    fn push(&mut self, s: &str) -> (usize, usize) {
        let mut heap = match self {
            Text::Inline { bytes, len } => {
                let start = *len;
                if let Some(room) = bytes.get_mut(start..start + s.len()) {
                    room.copy_from_slice(s.as_bytes());
                    *len += s.len();
                    return (start, *len);
                }
                let mut heap = String::with_capacity(2 * (start + s.len()));
                // Only whole strings were written, so this is never lossy.
                heap.push_str(&String::from_utf8_lossy(&bytes[..start]));
                heap
            }
            Text::Heap(text) => std::mem::take(text),
        };
        let start = heap.len();
        heap.push_str(s);
        let end = heap.len();
        *self = Text::Heap(heap);
        (start, end)
    }

    fn get(&self, start: usize, end: usize) -> Option<&str> {
        match self {
            // Whole strings only were written: the check cannot fail (safe code has no unchecked one).
            Text::Inline { bytes, .. } => std::str::from_utf8(bytes.get(start..end)?).ok(),
            Text::Heap(text) => text.get(start..end),
        }
    }

    fn clear(&mut self) {
        match self {
            Text::Inline { len, .. } => *len = 0,
            Text::Heap(text) => text.clear(),
        }
    }
}

impl Params {
    pub const fn new() -> Params {
        Params {
            len: 0,
            inline: [const { None }; INLINE],
            more: Vec::new(),
            text: Text::Inline { bytes: [0; INLINE_TEXT], len: 0 },
        }
    }

    /// Adds parameter `name` with its (decoded) `value`, after the others.
    pub fn push(&mut self, name: Arc<str>, value: &str) {
        let (start, end) = self.text.push(value);
        let param = Param { name, start, end };
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(param),
            None => self.more.push(param),
        }
        self.len += 1;
    }

    /// The value of the first parameter called `name`; `None` if there is none.
    pub fn get(&self, name: &str) -> Option<&str> {
        let p = self.all().find(|p| &*p.name == name)?;
        self.text.get(p.start, p.end)
    }

    /// How many parameters are called `name` (a template captures each at most once).
    pub fn count(&self, name: &str) -> usize {
        self.all().filter(|p| &*p.name == name).count()
    }

    /// Every parameter as (name, value), in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.all().filter_map(|p| Some((&*p.name, self.text.get(p.start, p.end)?)))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every parameter, keeping any heap capacity for reuse.
    pub fn clear(&mut self) {
        for slot in self.inline.iter_mut().take(self.len) {
            *slot = None;
        }
        self.more.clear();
        self.text.clear();
        self.len = 0;
    }

    fn all(&self) -> impl Iterator<Item = &Param> {
        self.inline.iter().flatten().chain(&self.more)
    }
}

impl Default for Params {
    fn default() -> Params {
        Params::new()
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Builds parameters from (name, value) pairs, each name its own `Arc` (tests, benches, tools).
impl<'a> FromIterator<(&'a str, &'a str)> for Params {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Params {
        let mut params = Params::new();
        for (name, value) in pairs {
            params.push(name.into(), value);
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_then_spilled() {
        let mut p = Params::new();
        assert!(p.is_empty());
        assert_eq!(p.get("id"), None);
        p.push("user".into(), "alice");
        p.push("id".into(), "a b/ü");
        assert_eq!((p.len(), p.get("user"), p.get("id"), p.get("x")), (2, Some("alice"), Some("a b/ü"), None));
        assert!(matches!(p.text, Text::Inline { .. }));
        // More parameters than inline slots, and more text than the inline buffer.
        let long = "x".repeat(70);
        for i in 0..5 {
            p.push(format!("p{i}").into(), &long[..i * 14]);
        }
        assert!(matches!(p.text, Text::Heap(_)));
        assert_eq!(p.len(), 7);
        let all: Vec<(&str, &str)> = p.iter().collect();
        assert_eq!(all[..2], [("user", "alice"), ("id", "a b/ü")]);
        for i in 0..5 {
            assert_eq!(all[2 + i], (format!("p{i}").as_str(), &long[..i * 14]));
        }
        p.clear();
        assert_eq!((p.len(), p.iter().count(), p.get("user")), (0, 0, None));
        p.push("id".into(), "7");
        assert_eq!(p.get("id"), Some("7"));
    }

    #[test]
    fn repeated_names_are_counted() {
        let p: Params = [("id", "alice"), ("x", ""), ("id", "bob")].into_iter().collect();
        assert_eq!((p.count("id"), p.count("x"), p.count("y")), (2, 1, 0));
        assert_eq!(p.get("id"), Some("alice"), "the first");
        assert_eq!(p.get("x"), Some(""), "present and empty is not absent");
        assert_eq!(format!("{p:?}"), r#"{"id": "alice", "x": "", "id": "bob"}"#);
    }
}
