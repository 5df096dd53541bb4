//! Masking inside a JSON document, in place: one linear pass over the bytes finds every string value
//! (and integer) and hands it to [`super::mask`]; only what a mask changed is rewritten, so everything
//! else (key order, number spelling, white space, duplicate keys) reaches the client byte for byte.
//! Object keys are never masked. A field allowlist (JSON pointers, `*` for any one segment) keeps the
//! values at and under those places as they are.
//!
//! An integer that is a card number (a `card_number: 4111111111111111` API) becomes the string of
//! its mask: its type changes, which beats leaking it.

use super::mask::{self, Kinds};

/// The nesting the pass follows; deeper documents are refused (as malformed) rather than guessed at.
const MAX_DEPTH: usize = 1024;

/// What a route masks in its JSON answers.
#[derive(Debug, Clone, Default)]
pub struct JsonMask {
    pub kinds: Kinds,
    /// JSON pointers, unescaped into segments, whose values (and everything under them) stay.
    pub allow: Vec<Vec<Box<str>>>,
    /// JSON pointers whose values stay only at the place itself (an array or object there is masked
    /// as usual): the tokenized fields, which detokenization already judged.
    exact: Vec<Vec<Box<str>>>,
}

/// A masked document, with how many findings were masked.
pub struct Masked {
    pub body: Vec<u8>,
    pub found: usize,
}

/// A JSON pointer's segments after its leading `/`, RFC 6901 escapes (`~1`, `~0`) undone.
fn segments(rest: &str) -> Vec<Box<str>> {
    rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~").into_boxed_str()).collect()
}

/// One step of the path to the value being read.
#[derive(Clone, Copy)]
enum Seg {
    /// The raw key token (with its quotes) and whether it has escapes.
    Key(usize, usize, bool),
    Index(usize),
}

impl JsonMask {
    /// Parses the allowlist (`/a/b`, `/items/*/card`; RFC 6901 escapes `~0`, `~1`).
    pub fn new(kinds: Kinds, allow: &[String]) -> Result<JsonMask, String> {
        let mut pointers = Vec::with_capacity(allow.len());
        for p in allow {
            let Some(rest) = p.strip_prefix('/') else {
                return Err(format!("mask.allow: `{p}` is not a JSON pointer (it starts with /)"));
            };
            pointers.push(segments(rest));
        }
        Ok(JsonMask { kinds, allow: pointers, exact: Vec::new() })
    }

    /// Leaves the value at `pointer` (only: not what is under it) unmasked; a pointer that does not start
    /// with `/` is ignored.
    pub fn keep_exact(&mut self, pointer: &str) {
        if let Some(rest) = pointer.strip_prefix('/') {
            self.exact.push(segments(rest));
        }
    }

    /// The document with its findings masked; `Ok(None)` when nothing was found (nothing is copied);
    /// `Err` when it is not one well-formed JSON value (for the logs).
    pub fn apply(&self, src: &[u8]) -> Result<Option<Masked>, &'static str> {
        let mut w = Walker { b: src, i: 0, out: None, copied: 0, found: 0, m: self };
        w.document()?;
        Ok(w.out.map(|mut body| {
            body.extend_from_slice(&src[w.copied..]);
            Masked { body, found: w.found }
        }))
    }
}

struct Walker<'a> {
    b: &'a [u8],
    i: usize,
    out: Option<Vec<u8>>,
    copied: usize,
    found: usize,
    m: &'a JsonMask,
}

enum Frame {
    Obj,
    Arr,
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

    fn expect(&mut self, c: u8) -> Result<(), &'static str> {
        self.ws();
        if self.peek() != Some(c) {
            return Err("unexpected character");
        }
        self.i += 1;
        Ok(())
    }

    /// A string token at `i` (on its quote): its span with the quotes, and whether it has escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), &'static str> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            let rest = self.b.get(self.i..).ok_or("unterminated string")?;
            let p = memchr::memchr2(b'"', b'\\', rest).ok_or("unterminated string")?;
            self.i += p;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok((start, self.i, escaped));
            }
            escaped = true;
            self.i += 2;
        }
    }

    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        let o = self.out.get_or_insert_with(|| Vec::with_capacity(self.b.len() + 16));
        o.extend_from_slice(&self.b[self.copied..start]);
        o.extend_from_slice(with);
        self.copied = end;
    }

    fn document(&mut self) -> Result<(), &'static str> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut path: Vec<Seg> = Vec::new();
        'value: loop {
            self.ws();
            match self.peek().ok_or("unexpected end")? {
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        if stack.len() >= MAX_DEPTH {
                            return Err("nested too deep");
                        }
                        stack.push(Frame::Obj);
                        path.push(self.key()?);
                        continue 'value;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        if stack.len() >= MAX_DEPTH {
                            return Err("nested too deep");
                        }
                        stack.push(Frame::Arr);
                        path.push(Seg::Index(0));
                        continue 'value;
                    }
                }
                b'"' => {
                    let (s, e, escaped) = self.string()?;
                    self.string_value(s, e, escaped, &path)?;
                }
                b'-' | b'0'..=b'9' => {
                    let s = self.i;
                    while self.i < self.b.len()
                        && matches!(self.b[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                    {
                        self.i += 1;
                    }
                    self.number(s, self.i, &path);
                }
                _ => {
                    let rest = &self.b[self.i..];
                    let n = [&b"true"[..], b"false", b"null"]
                        .iter()
                        .find(|l| rest.starts_with(l))
                        .ok_or("unexpected character")?
                        .len();
                    self.i += n;
                }
            }
            // After a value: close containers, or go on to the next member or element.
            loop {
                self.ws();
                let Some(top) = stack.last() else {
                    return if self.i == self.b.len() { Ok(()) } else { Err("data after the document") };
                };
                let close = if matches!(top, Frame::Obj) { b'}' } else { b']' };
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        match path.last_mut() {
                            Some(Seg::Index(n)) => *n += 1,
                            Some(seg) => {
                                self.ws();
                                *seg = self.key()?;
                            }
                            None => return Err("unexpected character"),
                        }
                        continue 'value;
                    }
                    Some(c) if c == close => {
                        self.i += 1;
                        stack.pop();
                        path.pop();
                    }
                    _ => return Err("unexpected character"),
                }
            }
        }
    }

    /// A member's key and its colon.
    fn key(&mut self) -> Result<Seg, &'static str> {
        if self.peek() != Some(b'"') {
            return Err("expected a key");
        }
        let (s, e, escaped) = self.string()?;
        self.expect(b':')?;
        Ok(Seg::Key(s, e, escaped))
    }

    fn string_value(&mut self, s: usize, e: usize, escaped: bool, path: &[Seg]) -> Result<(), &'static str> {
        if !escaped {
            if let Some((v, n)) = mask::mask(&self.b[s + 1..e - 1], self.m.kinds) {
                if !self.allowed(path) {
                    self.replace(s + 1, e - 1, &v);
                    self.found += n;
                }
            }
            return Ok(());
        }
        let text: String = serde_json::from_slice(&self.b[s..e]).map_err(|_| "bad string escape")?;
        if let Some((v, n)) = mask::mask(text.as_bytes(), self.m.kinds) {
            if !self.allowed(path) {
                let v = String::from_utf8(v).map_err(|_| "masked text is not UTF-8")?;
                let encoded = serde_json::to_vec(&v).map_err(|_| "cannot encode")?;
                self.replace(s, e, &encoded);
                self.found += n;
            }
        }
        Ok(())
    }

    /// An integer that is a card number becomes the string of its mask.
    fn number(&mut self, s: usize, e: usize, path: &[Seg]) {
        let digits = &self.b[s..e];
        let card = self.m.kinds.cards
            && (13..=19).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit)
            && (b'2'..=b'6').contains(&digits[0])
            && mask::luhn(digits.iter().copied());
        if card && !self.allowed(path) {
            let mut v = Vec::with_capacity(digits.len() + 2);
            v.push(b'"');
            v.extend(std::iter::repeat_n(b'*', digits.len() - 4));
            v.extend_from_slice(&digits[digits.len() - 4..]);
            v.push(b'"');
            self.replace(s, e, &v);
            self.found += 1;
        }
    }

    /// True when an allowlisted pointer is the path or one of its ancestors, or an exact one is the path.
    fn allowed(&self, path: &[Seg]) -> bool {
        let at = |p: &Vec<Box<str>>| p.iter().zip(path).all(|(want, seg)| self.seg_is(want, *seg));
        self.m.allow.iter().any(|p| p.len() <= path.len() && at(p))
            || self.m.exact.iter().any(|p| p.len() == path.len() && at(p))
    }

    fn seg_is(&self, want: &str, seg: Seg) -> bool {
        if want == "*" {
            return true;
        }
        match seg {
            Seg::Index(n) => want.parse::<usize>().is_ok_and(|w| w == n) && !want.starts_with('+'),
            Seg::Key(s, e, false) => &self.b[s + 1..e - 1] == want.as_bytes(),
            Seg::Key(s, e, true) => serde_json::from_slice::<String>(&self.b[s..e]).is_ok_and(|k| k == want),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ALL: Kinds = Kinds { cards: true, ssn: true, iban: true, private_keys: true, cloud_keys: true };

    fn run(doc: &str, allow: &[&str]) -> String {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        let m = JsonMask::new(ALL, &allow).unwrap();
        match m.apply(doc.as_bytes()).unwrap() {
            Some(out) => String::from_utf8(out.body).unwrap(),
            None => doc.to_owned(),
        }
    }

    #[test]
    fn masks_string_values_in_place() {
        let doc = r#"{ "name":"Ann", "card" : "4111 1111 1111 1111", "n": [1, 2.5e3, true, null, "ssn 123-45-6789"] }"#;
        assert_eq!(
            run(doc, &[]),
            r#"{ "name":"Ann", "card" : "**** **** **** 1111", "n": [1, 2.5e3, true, null, "ssn ***-**-6789"] }"#
        );
    }

    #[test]
    fn keys_are_never_masked_and_clean_documents_are_not_copied() {
        let doc = r#"{"4111111111111111":"x","a":{"b":[]},"c":{}}"#;
        let m = JsonMask::new(ALL, &[]).unwrap();
        assert!(m.apply(doc.as_bytes()).unwrap().is_none());
    }

    #[test]
    fn escaped_strings_are_decoded_first() {
        // \u0034 is "4": the card is found in the decoded text, and the string is encoded again.
        let doc =
            r#"["\u0034111111111111111 \"q\"", "k\n-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"]"#;
        assert_eq!(
            run(doc, &[]),
            r#"["************1111 \"q\"", "k\n-----BEGIN PRIVATE KEY-----\n[REDACTED]\n-----END PRIVATE KEY-----\n"]"#
        );
    }

    #[test]
    fn integer_card_numbers_become_masked_strings() {
        assert_eq!(
            run(r#"{"pan":4111111111111111,"id":4111111111111112}"#, &[]),
            r#"{"pan":"************1111","id":4111111111111112}"#
        );
    }

    #[test]
    fn allowlisted_fields_keep_their_values() {
        let doc = r#"{"test_card":"4111111111111111","items":[{"pan":"4111111111111111","ok":"4111111111111111"}],"a/b":{"x":"4111111111111111"}}"#;
        let out = run(doc, &["/test_card", "/items/*/ok", "/a~1b"]);
        assert_eq!(
            out,
            r#"{"test_card":"4111111111111111","items":[{"pan":"************1111","ok":"4111111111111111"}],"a/b":{"x":"4111111111111111"}}"#
        );
        let out = run(r#"[["4111111111111111"],["4111111111111111"]]"#, &["/1"]);
        assert_eq!(out, r#"[["************1111"],["4111111111111111"]]"#);
    }

    /// The tokenized fields' places keep their values, not what is under them.
    #[test]
    fn exact_places_keep_only_themselves() {
        let mut m = JsonMask::new(ALL, &[]).unwrap();
        m.exact.push(vec!["card".into()]);
        m.exact.push(vec!["items".into(), "*".into(), "n".into()]);
        let doc = r#"{"card":"4111111111111111","items":[{"n":"4111111111111111"},{"n":["4111111111111111"]},{"n":{"pan":"4111111111111111"}}]}"#;
        let out = String::from_utf8(m.apply(doc.as_bytes()).unwrap().unwrap().body).unwrap();
        assert_eq!(
            out,
            r#"{"card":"4111111111111111","items":[{"n":"4111111111111111"},{"n":["************1111"]},{"n":{"pan":"************1111"}}]}"#
        );
        let arr = String::from_utf8(m.apply(br#"{"card":["4111111111111111"]}"#).unwrap().unwrap().body).unwrap();
        assert_eq!(arr, r#"{"card":["************1111"]}"#);
    }

    #[test]
    fn malformed_documents_are_errors_never_panics() {
        let m = JsonMask::new(ALL, &[]).unwrap();
        for bad in ["", "{", "[1,", r#"{"a" 1}"#, r#"{"a":1,}"#, r#""abc"#, r#""\"#, "[1] x", "nul", "{1:2}", "]"] {
            assert!(m.apply(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(m.apply(deep.as_bytes()).is_err());
    }

    #[test]
    fn pointer_must_start_with_a_slash() {
        assert!(JsonMask::new(ALL, &["a".into()]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "[\\[\\]{}\",:0-9a-z\\\\ -]{0,120}") {
            let m = JsonMask::new(ALL, &["/a".into()]).unwrap();
            let _ = m.apply(s.as_bytes());
        }

        #[test]
        fn masked_output_is_the_same_json_shape(card in "4[0-9]{15}", words in "[a-z ]{0,20}") {
            let doc = serde_json::json!({"a": [card.clone(), words.clone(), 1], "b": {"c": format!("{words} {card}")}});
            let text = serde_json::to_string(&doc).unwrap();
            let m = JsonMask::new(ALL, &[]).unwrap();
            let out = m.apply(text.as_bytes()).unwrap().map_or(text.clone().into_bytes(), |o| o.body);
            let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(back["a"][1].as_str(), Some(words.as_str()));
            proptest::prop_assert_eq!(back["a"][2].as_i64(), Some(1));
        }
    }
}
