//! The request side over JSON bodies: the whole body checked by a strict parser first, then one walk
//! that follows only the paths leading to a field, refuses repeated and case-variant keys on them, and
//! rewrites the fields' values in place; everything else is copied byte for byte.

use super::cipher::MAX_VALUE;
use super::{invalid, Seg, Tokenizer};
use crate::exchange::Reject;
use serde::Deserialize;

pub(super) fn rewrite(t: &Tokenizer, body: &[u8]) -> Result<Option<Vec<u8>>, Reject> {
    // The whole document, strictly, first: the walk below can then skip what it does not need.
    let mut de = serde_json::Deserializer::from_slice(body);
    if let Err(e) = serde::de::IgnoredAny::deserialize(&mut de).and_then(|_| de.end()) {
        let offset = crate::json::offset_of(body, e.line(), e.column());
        return Err(Reject::MalformedJson { offset, reason: "the body is not well-formed JSON" });
    }
    let mut w = Walker { b: body, i: 0, out: None, copied: 0, t, path: Vec::new() };
    w.value()?;
    Ok(w.out.map(|mut o| {
        o.extend_from_slice(&body[w.copied..]);
        o
    }))
}

/// True if `a` and `b` differ but a case-insensitive reader could take one for the other: ASCII case,
/// and Unicode case mappings (`ſ` upper-cases to `S`, the Kelvin sign lower-cases to `k`), as Java's
/// `equalsIgnoreCase` and .NET's case-insensitive binders do.
pub(super) fn case_variant(a: &str, b: &str) -> bool {
    if a == b {
        return false;
    }
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.to_lowercase() == b.to_lowercase() || a.to_uppercase() == b.to_uppercase()
}

/// One step of the path to the value being read.
enum Step {
    Key(String),
    Index(usize),
}

/// How the path being read relates to the fields' pointers.
enum Rel {
    None,
    /// The path leads towards a field.
    Prefix,
    /// The path is field `usize`.
    Exact(usize),
    /// The last key differs from field `usize`'s only in case.
    CaseVariant(usize),
}

/// The request-side walk over a JSON body already known to be well-formed.
struct Walker<'a> {
    b: &'a [u8],
    i: usize,
    out: Option<Vec<u8>>,
    copied: usize,
    t: &'a Tokenizer,
    path: Vec<Step>,
}

fn malformed(offset: usize, reason: &'static str) -> Reject {
    Reject::MalformedJson { offset: offset as u64, reason }
}

impl Walker<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), Reject> {
        self.ws();
        if self.peek() != Some(c) {
            return Err(malformed(self.i, "unexpected character"));
        }
        self.i += 1;
        Ok(())
    }

    /// A string token at `i` (on its quote): its span with the quotes, and whether it has escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), Reject> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            let rest = self.b.get(self.i..).ok_or_else(|| malformed(start, "unterminated string"))?;
            let p = memchr::memchr2(b'"', b'\\', rest).ok_or_else(|| malformed(start, "unterminated string"))?;
            self.i += p;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok((start, self.i, escaped));
            }
            escaped = true;
            self.i += 2;
        }
    }

    fn text(&self, start: usize, end: usize, escaped: bool) -> Result<String, Reject> {
        if escaped {
            serde_json::from_slice::<String>(&self.b[start..end]).map_err(|_| malformed(start, "bad string"))
        } else {
            std::str::from_utf8(&self.b[start + 1..end - 1])
                .map(str::to_owned)
                .map_err(|_| malformed(start, "bad string"))
        }
    }

    /// The path read so far as a JSON pointer (for errors).
    fn pointer(&self) -> String {
        let mut p = String::new();
        for s in &self.path {
            p.push('/');
            match s {
                Step::Key(k) => p.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Step::Index(i) => p.push_str(itoa::Buffer::new().format(*i)),
            }
        }
        p
    }

    fn relation(&self) -> Rel {
        let mut best = Rel::None;
        for (fi, f) in self.t.fields.iter().enumerate() {
            let Some((_, segs)) = &f.pointer else { continue };
            if self.path.len() > segs.len() {
                continue;
            }
            let mut rel = if self.path.len() == segs.len() { Rel::Exact(fi) } else { Rel::Prefix };
            for (k, (step, seg)) in self.path.iter().zip(segs).enumerate() {
                let ok = match (seg, step) {
                    (Seg::Any, _) => true,
                    (Seg::Name(n), Step::Key(s)) => {
                        if **n == **s {
                            true
                        } else if k + 1 == self.path.len() && case_variant(n, s) {
                            rel = Rel::CaseVariant(fi);
                            true
                        } else {
                            false
                        }
                    }
                    (Seg::Name(n), Step::Index(i)) => n.parse::<usize>().ok() == Some(*i) && !n.starts_with('+'),
                };
                if !ok {
                    rel = Rel::None;
                    break;
                }
            }
            best = match (best, rel) {
                (Rel::Exact(a), _) => Rel::Exact(a),
                (_, Rel::Exact(b)) => Rel::Exact(b),
                (Rel::Prefix, _) | (_, Rel::Prefix) => Rel::Prefix,
                (Rel::CaseVariant(a), _) => Rel::CaseVariant(a),
                (_, r) => r,
            };
        }
        best
    }

    fn value(&mut self) -> Result<(), Reject> {
        self.ws();
        match self.relation() {
            Rel::Exact(fi) => self.field(fi),
            Rel::CaseVariant(_) => Err(invalid("body", &self.pointer(), "case-variant")),
            Rel::Prefix => match self.peek() {
                Some(b'{') => self.object(),
                Some(b'[') => self.array(),
                _ => self.skip(),
            },
            Rel::None => self.skip(),
        }
    }

    fn object(&mut self) -> Result<(), Reject> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        // A few keys are compared in a list, more hashed (an object of a million keys stays linear).
        let mut few: Vec<String> = Vec::new();
        let mut many: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            self.ws();
            let at = self.i;
            let (s, e, esc) = self.string()?;
            let key = self.text(s, e, esc)?;
            let repeated = if many.is_empty() && few.len() < 16 {
                let r = few.contains(&key);
                few.push(key.clone());
                r
            } else {
                many.extend(few.drain(..));
                !many.insert(key.clone())
            };
            if repeated {
                return Err(malformed(at, "duplicate key"));
            }
            self.path.push(Step::Key(key));
            self.expect(b':')?;
            self.value()?;
            self.path.pop();
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(malformed(self.i, "unexpected character")),
            }
        }
    }

    fn array(&mut self) -> Result<(), Reject> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.path.push(Step::Index(index));
            self.value()?;
            self.path.pop();
            index += 1;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(malformed(self.i, "unexpected character")),
            }
        }
    }

    /// Skips one value (the document is well-formed: strings and brackets are enough).
    fn skip(&mut self) -> Result<(), Reject> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek().ok_or_else(|| malformed(self.i, "unexpected end"))? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.b.len()
                    && !matches!(self.b[self.i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(malformed(start, "unexpected character"));
                }
                Ok(())
            }
            None => Err(malformed(self.i, "unexpected end")),
        }
    }

    /// The value of field `fi`: a string, replaced by what the field sends upstream.
    fn field(&mut self, fi: usize) -> Result<(), Reject> {
        if self.b[self.i..].starts_with(b"null") {
            // No value: nothing to protect.
            return self.skip();
        }
        if self.peek() != Some(b'"') {
            return Err(invalid("body", &self.pointer(), "type"));
        }
        let (s, e, esc) = self.string()?;
        if e - s > MAX_VALUE * 6 + 2 {
            return Err(invalid("body", &self.pointer(), "too-long"));
        }
        let value = self.text(s, e, esc)?;
        let f = &self.t.fields[fi];
        let new = self.t.protect(f, &value).map_err(|c| self.t.refusal("body", &self.pointer(), c))?;
        if let Some(new) = new {
            let o = self.out.get_or_insert_with(|| Vec::with_capacity(self.b.len() + 64));
            o.extend_from_slice(&self.b[self.copied..s]);
            o.push(b'"');
            // Tokens are digits and base64url: nothing to escape.
            o.extend_from_slice(new.as_bytes());
            o.push(b'"');
            self.copied = e;
        }
        Ok(())
    }
}
