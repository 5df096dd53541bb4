//! Normalisation of one value before the detectors see it, bounded in work.
//!
//! - `decoded`: percent-decoding (`%XX`, `%uXXXX`), `\uXXXX` and `\xXX` escapes and HTML entities
//!   (numeric, and the named ones attacks use), repeated until the value is stable or [`MAX_PASSES`]
//!   passes ran. Overlong UTF-8 (`%c0%af`) decodes to the character it spells and is flagged; other
//!   invalid UTF-8 becomes U+FFFD. NUL bytes are flagged.
//! - `folded`: `decoded` in lower case, NUL removed, runs of whitespace as one space, inline SQL
//!   comments (`/* ... */`) as one space (a MySQL `/*! ... */` keeps its content). Line comments
//!   (`--`, `#`) are kept: the SQL detector reads them.
//!
//! Each pass reads its input once, so the work (counted in [`Flags::work`]) is at most
//! `MAX_PASSES + 1` times the length of the value.

/// Decoding passes at most (the first is the one that finds the value already stable).
pub const MAX_PASSES: usize = 4;

/// What normalisation noticed about a value, and the bytes it looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub nul: bool,
    pub overlong: bool,
    pub work: u64,
}

/// Reusable buffers: one request's values are normalised into the same allocations.
#[derive(Default)]
pub struct Scratch {
    pub decoded: String,
    pub folded: String,
    bytes: Vec<u8>,
}

impl Scratch {
    /// Normalises `raw` into `self.decoded` and `self.folded`.
    pub fn normalize(&mut self, raw: &str) -> Flags {
        let mut flags = Flags::default();
        self.decoded.clear();
        self.decoded.push_str(raw);
        for _ in 0..MAX_PASSES {
            flags.work += self.decoded.len() as u64;
            self.bytes.clear();
            if !decode_once(self.decoded.as_bytes(), &mut self.bytes) {
                break;
            }
            self.decoded.clear();
            to_utf8(&self.bytes, &mut self.decoded, &mut flags);
        }
        if memchr::memchr(0, self.decoded.as_bytes()).is_some() {
            flags.nul = true;
        }
        flags.work += self.decoded.len() as u64;
        fold(&self.decoded, &mut self.folded);
        flags
    }
}

fn hex(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'a'..=b'f' => Some(u32::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(b - b'A' + 10)),
        _ => None,
    }
}

fn hex_n(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0u32, |acc, &b| Some(acc * 16 + hex(b)?))
}

fn push_char(out: &mut Vec<u8>, c: u32) {
    let c = char::from_u32(c).unwrap_or('\u{fffd}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// One decoding pass of `input` into `out`; false if nothing was decoded (the value is stable).
fn decode_once(input: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(first) = memchr::memchr3(b'%', b'\\', b'&', input) else { return false };
    let mut changed = false;
    out.extend_from_slice(&input[..first]);
    let mut i = first;
    while i < input.len() {
        let b = input[i];
        if !matches!(b, b'%' | b'\\' | b'&') {
            // Copy up to the next byte that may start an escape.
            let next = memchr::memchr3(b'%', b'\\', b'&', &input[i..]).map_or(input.len(), |n| i + n);
            out.extend_from_slice(&input[i..next]);
            i = next;
            continue;
        }
        let rest = &input[i..];
        match b {
            b'%' => {
                if let Some(v) = rest.get(1..3).and_then(hex_n) {
                    out.push(v as u8);
                    i += 3;
                    changed = true;
                    continue;
                }
                if matches!(rest.get(1), Some(b'u' | b'U')) {
                    if let Some(v) = rest.get(2..6).and_then(hex_n) {
                        push_char(out, v);
                        i += 6;
                        changed = true;
                        continue;
                    }
                }
            }
            b'\\' => match rest.get(1) {
                Some(b'u' | b'U') => {
                    if let Some(v) = rest.get(2..6).and_then(hex_n) {
                        push_char(out, v);
                        i += 6;
                        changed = true;
                        continue;
                    }
                }
                Some(b'x' | b'X') => {
                    if let Some(v) = rest.get(2..4).and_then(hex_n) {
                        push_char(out, v);
                        i += 4;
                        changed = true;
                        continue;
                    }
                }
                _ => {}
            },
            b'&' => {
                if let Some((c, used)) = entity(rest) {
                    push_char(out, c);
                    i += used;
                    changed = true;
                    continue;
                }
            }
            _ => {}
        }
        out.push(b);
        i += 1;
    }
    changed
}

/// An HTML entity at the start of `s` (which starts with `&`): the character and the bytes used.
/// Numeric ones may omit the `;` (browsers accept `&#106avascript:`); at most 8 digits are read.
fn entity(s: &[u8]) -> Option<(u32, usize)> {
    if s.get(1) == Some(&b'#') {
        let (radix_hex, start) = match s.get(2) {
            Some(b'x' | b'X') => (true, 3),
            _ => (false, 2),
        };
        let mut end = start;
        let mut v: u32 = 0;
        while end < s.len() && end - start < 8 {
            let d = if radix_hex { hex(s[end]) } else { (s[end] as char).to_digit(10) };
            match d {
                Some(d) => v = v * if radix_hex { 16 } else { 10 } + d,
                None => break,
            }
            end += 1;
        }
        if end == start {
            return None;
        }
        if s.get(end) == Some(&b';') {
            end += 1;
        }
        return Some((v, end));
    }
    let semi = s.iter().take(10).position(|&b| b == b';')?;
    let name = &s[1..semi];
    let c = match name {
        b"lt" | b"LT" => '<',
        b"gt" | b"GT" => '>',
        b"amp" | b"AMP" => '&',
        b"quot" | b"QUOT" => '"',
        b"apos" => '\'',
        b"nbsp" => ' ',
        b"tab" | b"Tab" => '\t',
        b"newline" | b"NewLine" => '\n',
        b"colon" => ':',
        b"semi" => ';',
        b"sol" => '/',
        b"bsol" => '\\',
        b"lpar" => '(',
        b"rpar" => ')',
        b"lsqb" | b"lbrack" => '[',
        b"rsqb" | b"rbrack" => ']',
        b"lcub" | b"lbrace" => '{',
        b"rcub" | b"rbrace" => '}',
        b"equals" => '=',
        b"excl" => '!',
        b"num" => '#',
        b"percnt" => '%',
        b"period" => '.',
        b"comma" => ',',
        b"plus" => '+',
        b"grave" => '`',
        b"dollar" => '$',
        b"ast" | b"midast" => '*',
        b"vert" | b"verbar" => '|',
        b"hyphen" | b"dash" => '-',
        b"quest" => '?',
        b"commat" => '@',
        _ => return None,
    };
    Some((c as u32, semi + 1))
}

/// `bytes` as UTF-8 into `out`: overlong forms decode to what they spell (flagged), anything else
/// invalid becomes U+FFFD.
fn to_utf8(bytes: &[u8], out: &mut String, flags: &mut Flags) {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let used = match overlong(bad) {
                    Some((c, n)) => {
                        flags.overlong = true;
                        out.push(c);
                        n
                    }
                    None => {
                        out.push('\u{fffd}');
                        e.error_len().unwrap_or(bad.len())
                    }
                };
                rest = bad.get(used..).unwrap_or_default();
                if rest.is_empty() {
                    return;
                }
            }
        }
    }
}

/// An overlong UTF-8 sequence at the start of `s`: the character it spells and its length.
fn overlong(s: &[u8]) -> Option<(char, usize)> {
    let cont = |b: u8| b & 0xc0 == 0x80;
    match *s {
        [a @ (0xc0 | 0xc1), b, ..] if cont(b) => {
            char::from_u32((u32::from(a & 0x1f) << 6) | u32::from(b & 0x3f)).map(|c| (c, 2))
        }
        [0xe0, b, c, ..] if cont(b) && cont(c) && b < 0xa0 => {
            char::from_u32((u32::from(b & 0x3f) << 6) | u32::from(c & 0x3f)).map(|c| (c, 3))
        }
        [0xf0, b, c, d, ..] if cont(b) && cont(c) && cont(d) && b < 0x90 => {
            char::from_u32((u32::from(b & 0x3f) << 12) | (u32::from(c & 0x3f) << 6) | u32::from(d & 0x3f))
                .map(|c| (c, 4))
        }
        _ => None,
    }
}

/// Lower case, NUL dropped, whitespace runs and inline SQL comments as one space.
fn fold(decoded: &str, out: &mut String) {
    out.clear();
    let b = decoded.as_bytes();
    let mut space = false;
    let mut i = 0;
    // Fast path over ASCII runs; non-ASCII characters go through `char::to_lowercase`.
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // `/*! ... */` (MySQL executes what is inside): drop the markers and any version digits.
            if b.get(i + 2) == Some(&b'!') {
                i += 3;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                push_space(out, &mut space);
                continue;
            }
            match memchr::memmem::find(&b[i + 2..], b"*/") {
                Some(end) => {
                    i += 2 + end + 2;
                    push_space(out, &mut space);
                    continue;
                }
                None => {
                    // Unterminated: kept for the SQL detector (a comment to the end).
                }
            }
        }
        if c == b'*' && b.get(i + 1) == Some(&b'/') {
            i += 2;
            push_space(out, &mut space);
            continue;
        }
        if plain(c) {
            // A run of bytes that fold to themselves, copied at once.
            let run = b[i..].iter().position(|&x| !plain(x)).map_or(b.len(), |n| i + n);
            out.push_str(&decoded[i..run]);
            space = false;
            i = run;
            continue;
        }
        if c.is_ascii() {
            i += 1;
            if c.is_ascii_whitespace() || c == 0x0b {
                push_space(out, &mut space);
            } else if c != 0 {
                out.push(c.to_ascii_lowercase() as char);
                space = false;
            }
            continue;
        }
        let ch = decoded[i..].chars().next().unwrap_or('\u{fffd}');
        i += ch.len_utf8();
        if ch.is_whitespace() {
            push_space(out, &mut space);
        } else {
            out.extend(ch.to_lowercase());
            space = false;
        }
    }
}

/// ASCII that folding leaves as it is (not upper case, whitespace, NUL, `/` or `*`).
fn plain(b: u8) -> bool {
    PLAIN[usize::from(b)]
}

/// [`plain`] as a table: the fold loop asks it of every byte.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        t[i] = !b.is_ascii_uppercase() && !b.is_ascii_whitespace() && !matches!(b, 0 | 0x0b | b'/' | b'*');
        i += 1;
    }
    t
};

fn push_space(out: &mut String, space: &mut bool) {
    if !*space {
        out.push(' ');
        *space = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> (String, String, Flags) {
        let mut sc = Scratch::default();
        let f = sc.normalize(s);
        (sc.decoded.clone(), sc.folded.clone(), f)
    }

    #[test]
    fn decodes_until_stable() {
        assert_eq!(n("%2527").0, "'");
        assert_eq!(n("%252527").0, "'");
        assert_eq!(n("%u003cscript").0, "<script");
        assert_eq!(n("\\u003cscript").0, "<script");
        assert_eq!(n("&lt;svg&#x20;onload&#61;x&gt;").0, "<svg onload=x>");
        assert_eq!(n("&#106avascript:").0, "javascript:");
        assert_eq!(n("100% sure & done;").0, "100% sure & done;");
    }

    #[test]
    fn passes_are_bounded() {
        let deep = format!("%{}27", "25".repeat(50));
        let (d, _, f) = n(&deep);
        assert!(d.starts_with('%'), "stops after MAX_PASSES");
        assert!(f.work <= (deep.len() * (MAX_PASSES + 1)) as u64);
    }

    #[test]
    fn flags_overlong_and_nul() {
        let (d, _, f) = n("..%c0%af..%c0%afetc");
        assert_eq!(d, "../../etc");
        assert!(f.overlong);
        let (_, folded, f) = n("a%00b");
        assert!(f.nul);
        assert_eq!(folded, "ab");
        assert!(!n("caf\u{e9}").2.overlong);
    }

    #[test]
    fn folds_case_space_and_comments() {
        assert_eq!(n("UNION/**/SELECT\t\n 1").1, "union select 1");
        assert_eq!(n("/*!50000UNION*/ SeLeCt").1, " union select");
        assert_eq!(n("admin'--").1, "admin'--");
        assert_eq!(n("ÉCOLE").1, "école");
    }
}
