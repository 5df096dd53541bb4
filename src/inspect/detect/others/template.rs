//! Template and expression injection: Log4j lookups (`${jndi:` and its obfuscations, resolved the
//! way Log4j resolves nested lookups), expressions inside template delimiters (`{{ }}`, `{% %}`,
//! `${ }`, `#{ }`, `*{ }`, `%{ }`, `<% %>`) that compute or reach objects (`7*7`, `''.__class__`,
//! `config`, `T(java.lang.Runtime)`), OGNL, SpEL, Freemarker, Velocity, Smarty and Twig markers.
//!
//! A plain variable reference (`{{name}}`, `${HOME}`, `#{id}`, a JavaScript template literal) is
//! ordinary templating and passes; level 2 also flags calls inside delimiters.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};

use super::super::{Category, Rule};
use super::text::{before, is_word, RuleSet};
use super::Out;

static JNDI: Rule = Rule {
    id: 6001,
    category: Category::Template,
    paranoia: 1,
    score: 5,
    name: "Log4j JNDI lookup (${jndi:, nested or obfuscated)",
};
static EXPRESSION: Rule = Rule {
    id: 6002,
    category: Category::Template,
    paranoia: 1,
    score: 5,
    name: "template expression that computes or reaches objects ({{7*7}}, {{config}}, ${''.__class__})",
};
static LOOKUP: Rule = Rule {
    id: 6003,
    category: Category::Template,
    paranoia: 1,
    score: 5,
    name: "Log4j lookup of the environment or system (${env:, ${sys:, ${java:)",
};
static OGNL: Rule = Rule {
    id: 6004,
    category: Category::Template,
    paranoia: 1,
    score: 5,
    name: "OGNL expression (%{(#, #_memberAccess, @java.lang.Runtime@)",
};
static SPEL: Rule = Rule {
    id: 6005,
    category: Category::Template,
    paranoia: 1,
    score: 5,
    name: "SpEL or EL type reference (T(java.lang.Runtime), new java.lang.)",
};
static CLASSLOADER: Rule = Rule {
    id: 6006,
    category: Category::Template,
    paranoia: 1,
    score: 5,
    name: "class.classLoader property path (Spring4Shell)",
};
static ENGINE: Rule = Rule {
    id: 6007,
    category: Category::Template,
    paranoia: 1,
    score: 5,
    name: "template engine directive (Freemarker <#assign, ?new(), Velocity #set, Smarty {php}, Twig _self)",
};
static CALL: Rule = Rule {
    id: 6101,
    category: Category::Template,
    paranoia: 2,
    score: 5,
    name: "call or arithmetic inside template delimiters",
};
static DELIMITED: Rule = Rule {
    id: 6201,
    category: Category::Template,
    paranoia: 3,
    score: 3,
    name: "quotes or brackets inside template delimiters",
};

pub(super) const TRIGGERS: &[&str] = &[
    "${",
    "{{",
    "{%",
    "#{",
    "%{",
    "*{",
    "<%",
    "<#",
    "(#",
    "@java",
    "@ognl",
    "ognl",
    "t(",
    "t (",
    "new java",
    "getclass",
    "classloader",
    "freemarker",
    "?new",
    "#set",
    "$class",
    "{php}",
    "{system",
    "$smarty",
    "_self",
    "dump(app)",
    "#foreach",
    "@(",
    "@{",
    "smarty",
    "#with",
];

/// Template delimiters, in the order of `Opener`.
const OPENERS: &[&str] = &["${", "{{", "{%", "#{", "%{", "*{", "<%", "@(", "@{"];

static OPENER_AC: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::builder().match_kind(MatchKind::LeftmostFirst).kind(Some(AhoCorasickKind::DFA)).build(OPENERS).ok()
});

/// Markers that make an expression hostile at level 1 (matched ASCII case-insensitively).
const HOSTILE: &[&str] = &[
    "__",
    "''.",
    "\"\".",
    "[].",
    "().",
    "{}.",
    "getclass",
    "forname",
    "getruntime",
    "processbuilder",
    "java.lang",
    "javax.script",
    "runtime",
    ".exec(",
    "system(",
    "popen(",
    "eval(",
    "exec(",
    "import(",
    "subprocess",
    "constructor",
    "getattribute",
    "classloader",
    ".invoke(",
    "newinstance",
    "scriptengine",
    "execute(",
    "new java",
    "request.application",
    "lipsum",
    "cycler",
    "joiner",
    "url_for",
    "get_flashed_messages",
    "_self",
    "registerundefinedfiltercallback",
    "getfilter",
    "freemarker",
    "child_process",
    "mainmodule",
    "readfile",
    "file.open",
    "file.read",
    "io.popen",
    "dir.entries",
    "%x(",
    "`",
    ".mro",
    "subclasses",
    "globals",
    "builtins",
    "os.system",
    "os.popen",
    "attr(",
    "process.env",
    "require(",
    "self.",
    "config.",
    "settings.",
    "#_memberaccess",
    "@java",
    "#context",
    "#request",
    "#response",
    "ognl",
    "t(java",
    "t (java",
    "applicationscope",
    "pagecontext",
    "facescontext",
    "java.io",
    "java.net",
    "java.util",
    "getmethod",
    "declaredmethod",
    "setaccessible",
    "?new(",
    ".getclass",
    ".class.",
    "sleep(",
    "open3",
    "kernel.",
    "iteritems(",
    "getenv",
    "'.to",
    "\".to",
    "app.request",
    "'system'",
    "\"system\"",
    "'passthru'",
    "'exec'",
    "'shell_exec'",
    "'popen'",
    "environ",
    "#this",
    "#root",
];

static HOSTILE_AC: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::builder().ascii_case_insensitive(true).kind(Some(AhoCorasickKind::DFA)).build(HOSTILE).ok()
});

static MARKERS: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::new(&[
        (
            r"(?i)%\{\s*\(?\s*#|\(\s*#(?:_memberaccess|context|cmd|ct|os|iswin|cmds|p|process|ros|dm|ou|req|res|a|b|c)\b|#_memberaccess|@java\.lang\.[a-z]+@|@ognl\.|ognlcontext|#context\s*\[",
            &OGNL,
        ),
        (r"(?i)\bt\s*\(\s*java\.|\bnew\s+java\.(?:lang|io|net|util)\.|\.getclass\(\s*\)\s*\.forname\(", &SPEL),
        (r"(?i)\bclass\.(?:module\.)?classloader\b", &CLASSLOADER),
        (
            r"(?i)<#assign\b|<#include\b|freemarker\.template\.utility|\?new\s*\(|#set\s*\(\s*\$|\$class\.inspect|\{php\}|\{system\s*\(|\{\$smarty\.|\{\{\s*_self\b|registerundefinedfiltercallback|\{\{\s*app\.request\.server|\bdump\s*\(\s*app\s*\)|#foreach\s*\(\s*\$|smarty_internal_write_file|\{\{\s*#with\s+['\x22][^'\x22]*['\x22]\s+as\s+\||\$\{\{<%\[%'\x22\}\}%\\",
            &ENGINE,
        ),
    ])
});

/// The longest expression we read after an opener.
const WINDOW: usize = 512;

pub(super) fn scan(out: &mut Out<'_, '_>) {
    MARKERS.scan(out);
    let Some(ac) = OPENER_AC.as_ref() else { return };
    let v = out.v;
    let b = v.decoded.as_bytes();
    let mut i = 0;
    while let Some(m) = ac.find(Input::new(b).span(i..b.len())) {
        let p = m.start();
        let limit = b.len().min(p + WINDOW);
        let (content, end) = match m.pattern().as_usize() {
            0 => {
                let (found, end) = lookup(b, p, limit);
                match found {
                    Found::Jndi => out.hit(&JNDI),
                    Found::Lookup => out.hit(&LOOKUP),
                    Found::Nothing => {}
                }
                let (content, close) = braced(b, p + 2, limit);
                (content, close.max(end))
            }
            1 => closed(b, p + 2, limit, b"}}"),
            2 => closed(b, p + 2, limit, b"%}"),
            6 => closed(b, p + 2, limit, b"%>"),
            7 => parened(b, p + 2, limit),
            _ => braced(b, p + 2, limit),
        };
        out.work(end.saturating_sub(p));
        judge(content, m.pattern().as_usize(), out);
        i = end.max(m.end());
    }
}

/// The content up to `close` (or the window), and the index after it.
fn closed<'b>(b: &'b [u8], from: usize, limit: usize, close: &[u8]) -> (&'b [u8], usize) {
    let window = b.get(from..limit).unwrap_or_default();
    match memchr::memmem::find(window, close) {
        Some(p) => (window.get(..p).unwrap_or_default(), from + p + close.len()),
        None => (window, limit),
    }
}

/// The content up to the matching `)` (nesting counted), and the index after it.
fn parened(b: &[u8], from: usize, limit: usize) -> (&[u8], usize) {
    let mut depth = 1;
    let window = b.get(from..limit).unwrap_or_default();
    for (k, &c) in window.iter().enumerate() {
        match c {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return (window.get(..k).unwrap_or_default(), from + k + 1);
                }
            }
            _ => {}
        }
    }
    (window, limit)
}

/// The content up to the matching `}` (nesting counted), and the index after it.
fn braced(b: &[u8], from: usize, limit: usize) -> (&[u8], usize) {
    let mut depth = 1;
    let window = b.get(from..limit).unwrap_or_default();
    for (k, &c) in window.iter().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return (window.get(..k).unwrap_or_default(), from + k + 1);
                }
            }
            _ => {}
        }
    }
    (window, limit)
}

/// Judges the expression inside delimiters (`opener` indexes `OPENERS`).
fn judge(content: &[u8], opener: usize, out: &mut Out<'_, '_>) {
    let mut trimmed = content.trim_ascii();
    if opener == 6 {
        // ERB and JSP: `<%=`, `<%-`, `-%>`.
        trimmed = trimmed.strip_prefix(b"=").or_else(|| trimmed.strip_prefix(b"-")).unwrap_or(trimmed);
        trimmed = trimmed.strip_suffix(b"-").unwrap_or(trimmed).trim_ascii();
    }
    if trimmed.is_empty() {
        return;
    }
    let hostile = HOSTILE_AC.as_ref().is_some_and(|ac| ac.is_match(trimmed));
    let ognl = opener == 4 && matches!(trimmed.first(), Some(b'(' | b'#'));
    if hostile || ognl || arithmetic(trimmed) == Some(1) || bare_object(trimmed) {
        out.hit(&EXPRESSION);
    } else if trimmed.contains(&b'(') || arithmetic(trimmed).is_some() {
        out.hit(&CALL);
    } else if trimmed.iter().any(|c| matches!(c, b'\'' | b'"' | b'[')) {
        out.hit(&DELIMITED);
    }
}

/// `7*7`, `7*'7'`, `1+1`, `x = 7*7;`: numbers (maybe quoted) on both sides of an operator,
/// anywhere in the expression. Returns the level: 1 for `*` and `+`, 2 for the others (`2024-01-01`
/// is a date as often as a subtraction).
fn arithmetic(e: &[u8]) -> Option<u8> {
    let mut found = None;
    let mut i = 0;
    while i < e.len() {
        let fresh = i == 0 || before(e, i).is_some_and(|c| !is_word(c) && c != b'.');
        let Some(end) = number_at(e, i).filter(|_| fresh) else {
            i += 1;
            continue;
        };
        let j = skip_spaces(e, end);
        if let Some(&op) = e.get(j).filter(|c| matches!(c, b'*' | b'+' | b'-' | b'/' | b'%')) {
            let mut k = skip_spaces(e, j + 1);
            if op == b'*' && e.get(k) == Some(&b'*') {
                k = skip_spaces(e, k + 1);
            }
            if let Some(end2) = number_at(e, k) {
                if !e.get(end2).copied().is_some_and(is_word) {
                    let level = if matches!(op, b'*' | b'+') { 1 } else { 2 };
                    found = Some(found.map_or(level, |f: u8| f.min(level)));
                }
            }
        }
        i = end.max(i + 1);
    }
    found
}

fn skip_spaces(e: &[u8], mut i: usize) -> usize {
    while e.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// A number at `i` (digits with an optional fraction, maybe in quotes); the index after it.
fn number_at(e: &[u8], i: usize) -> Option<usize> {
    let quote = e.get(i).copied().filter(|c| matches!(c, b'\'' | b'"'));
    let start = i + usize::from(quote.is_some());
    let digits = e.get(start..).unwrap_or_default().iter().take_while(|c| c.is_ascii_digit() || **c == b'.').count();
    if digits == 0 || digits > 12 || !e.get(start).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let end = start + digits;
    match quote {
        Some(q) if e.get(end) == Some(&q) => Some(end + 1),
        Some(_) => None,
        None => Some(end),
    }
}

/// `{{config}}`, `{{self}}`, `${_self}`: an object that exposes the application.
fn bare_object(e: &[u8]) -> bool {
    const OBJECTS: &[&[u8]] =
        &[b"config", b"self", b"_self", b"settings", b"globals", b"this", b"request", b"request.environ"];
    OBJECTS.iter().any(|o| o.eq_ignore_ascii_case(e))
}

#[derive(PartialEq, Eq)]
enum Found {
    Jndi,
    Lookup,
    Nothing,
}

const DEPTH: usize = 8;
const FRAME: usize = 48;

/// Text collected inside one `${ ... }` of a lookup.
#[derive(Clone, Copy)]
struct Frame {
    buf: [u8; FRAME],
    len: usize,
}

impl Frame {
    const EMPTY: Frame = Frame { buf: [0; FRAME], len: 0 };

    fn push(&mut self, c: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    fn text(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Evaluates the Log4j lookup starting at `p` (`${`), resolving nested lookups as Log4j does
/// (`${lower:j}` is `j`, `${::-j}` and `${env:X:-j}` are their default `j`). Returns what its key
/// names and the index after it (or `limit` when unterminated).
fn lookup(b: &[u8], p: usize, limit: usize) -> (Found, usize) {
    let mut stack = [Frame::EMPTY; DEPTH];
    let mut depth = 1;
    let mut i = p + 2;
    while i < limit {
        let c = b.get(i).copied().unwrap_or(0);
        if c == b'$' && b.get(i + 1) == Some(&b'{') && depth < DEPTH {
            depth += 1;
            if let Some(f) = stack.get_mut(depth - 1) {
                *f = Frame::EMPTY;
            }
            i += 2;
            continue;
        }
        if c == b'}' {
            let inner = stack.get(depth - 1).copied().unwrap_or(Frame::EMPTY);
            if is_jndi(inner.text()) {
                return (Found::Jndi, i + 1);
            }
            if depth == 1 {
                return (key_class(inner.text()), i + 1);
            }
            depth -= 1;
            if let Some(parent) = stack.get_mut(depth - 1) {
                for &x in value_of(inner.text()) {
                    parent.push(x);
                }
                if is_jndi(parent.text()) {
                    return (Found::Jndi, i + 1);
                }
            }
            i += 1;
            continue;
        }
        let frame = stack.get_mut(depth - 1);
        // The dotless ı upper-cases to I (`${upper:ı}`).
        if c == 0xc4 && b.get(i + 1) == Some(&0xb1) {
            if let Some(f) = frame {
                f.push(b'i');
            }
            i += 2;
            continue;
        }
        if let Some(f) = frame {
            if c != b' ' {
                f.push(c.to_ascii_lowercase());
            }
        }
        i += 1;
    }
    let outer = stack.first().copied().unwrap_or(Frame::EMPTY);
    if is_jndi(outer.text()) {
        return (Found::Jndi, limit);
    }
    (Found::Nothing, limit)
}

fn is_jndi(text: &[u8]) -> bool {
    text.starts_with(b"jndi:") || text == b"jndi"
}

/// What a nested lookup yields: its default (after the last `:-`), else what follows its prefix.
fn value_of(text: &[u8]) -> &[u8] {
    let v = if let Some(p) = text.windows(2).rposition(|w| w == b":-") {
        text.get(p + 2..).unwrap_or_default()
    } else if let Some(p) = text.iter().position(|&c| c == b':') {
        text.get(p + 1..).unwrap_or_default()
    } else {
        text
    };
    v.strip_prefix(b"'").and_then(|x| x.strip_suffix(b"'")).unwrap_or(v)
}

fn key_class(text: &[u8]) -> Found {
    const KEYS: &[&[u8]] = &[
        b"env:",
        b"sys:",
        b"java:",
        b"main:",
        b"ctx:",
        b"docker:",
        b"k8s:",
        b"kubernetes:",
        b"jvmrunargs:",
        b"spring:",
        b"bundle:",
        b"log4j:",
        b"base64:",
        b"web:",
    ];
    if KEYS.iter().any(|k| text.starts_with(k)) {
        Found::Lookup
    } else {
        Found::Nothing
    }
}

#[cfg(test)]
mod tests;
