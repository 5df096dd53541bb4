//! Cross-site scripting, aware of where a payload would land: HTML tags and their attributes (event
//! handlers, URL attributes with `javascript:`/`vbscript:`/`data:text/html`, `srcdoc`, CSS
//! `expression()`), script and embedding elements (SVG included), attribute breaks (`" onfocus=`),
//! script URLs on their own, and JavaScript string breaks into a sink (`';alert(1)//`).
//!
//! A hand-written scanner over the folded value: each byte is read a bounded number of times (a tag
//! is parsed once, then scanning goes on after it), so the work is linear.

use super::{Category, Hits, Rule, View};

macro_rules! rule {
    ($name:ident, $id:expr, $p:expr, $desc:expr) => {
        pub static $name: Rule = Rule { id: $id, category: Category::Xss, paranoia: $p, score: 5, name: $desc };
    };
}

rule!(SCRIPT_TAG, 2001, 1, "script element with a source or code");
rule!(EVENT_HANDLER, 2002, 1, "event-handler attribute in a tag");
rule!(SCRIPT_URL_ATTR, 2003, 1, "script URL in a tag attribute");
rule!(EMBED_TAG, 2004, 1, "embedding element with a source (iframe, object, embed, base ...)");
rule!(ATTRIBUTE_BREAK, 2005, 1, "attribute break into an event handler");
rule!(SCRIPT_URL, 2006, 1, "javascript:/vbscript:/data:text/html URL");
rule!(CSS_EXPRESSION, 2007, 1, "CSS expression() or script URL in a style");
rule!(JS_BREAK, 2008, 1, "JavaScript string break into a sink (';alert(1)//)");
rule!(DANGEROUS_TAG, 2009, 2, "script-capable element (script, iframe, svg, object ...)");
rule!(DOM_SINK, 2010, 2, "DOM sink or source (document.cookie, innerHTML)");

pub fn scan(v: &View<'_>, hits: &mut Hits) {
    let s = v.folded.as_bytes();
    hits.work += s.len() as u64;
    if !s.iter().any(|&b| matches!(b, b'<' | b':' | b'=' | b'(' | b'`')) {
        return;
    }
    let mut found = judge(s, v.paranoia, &mut hits.work);
    if found.is_none() && finders().comment.find(v.decoded.as_bytes()).is_some() {
        // The folded value collapsed `/* ... */` as SQL comments; HTML does not: `<script>/*</script><svg
        // onload=...>*/` is read again without that.
        let lower = v.decoded.to_lowercase();
        found = judge(lower.as_bytes(), v.paranoia, &mut hits.work);
    }
    if let Some(rule) = found {
        hits.hit(rule, v);
    }
}

/// Needles searched in every value that passes the byte gate, built once (building a searcher per
/// call showed in profiles).
struct Finders {
    comment: memchr::memmem::Finder<'static>,
    close_script: memchr::memmem::Finder<'static>,
}

fn finders() -> &'static Finders {
    static F: std::sync::OnceLock<Finders> = std::sync::OnceLock::new();
    F.get_or_init(|| Finders {
        comment: memchr::memmem::Finder::new(b"/*"),
        close_script: memchr::memmem::Finder::new(b"</script"),
    })
}

fn judge(s: &[u8], paranoia: u8, work: &mut u64) -> Option<&'static Rule> {
    tags(s, paranoia, work)
        .or_else(|| script_urls(s, work))
        .or_else(|| attribute_break(s, work))
        .or_else(|| js_break(s, paranoia, work))
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':')
}

/// Parses each tag once; scanning resumes after it.
fn tags(s: &[u8], paranoia: u8, work: &mut u64) -> Option<&'static Rule> {
    let mut i = 0;
    let mut weak: Option<&'static Rule> = None;
    while let Some(off) = memchr::memchr(b'<', &s[i..]) {
        let lt = i + off;
        let mut j = lt + 1;
        if s.get(j) == Some(&b'/') {
            j += 1;
        }
        let name_start = j;
        while j < s.len() && name_byte(s[j]) {
            j += 1;
        }
        let name = &s[name_start..j];
        *work += (j - lt) as u64;
        if name.is_empty() || !name[0].is_ascii_alphabetic() {
            i = lt + 1;
            continue;
        }
        let closing = s[lt + 1] == b'/';
        let (end, found) = attributes(s, j, name, work);
        if let Some(r) = found {
            return Some(r);
        }
        if !closing {
            match name {
                b"script" => {
                    // `<script>` mentioned in prose has no code after it: look for code up to the next `<`.
                    let body_end = memchr::memchr(b'<', &s[end..]).map_or(s.len(), |e| end + e);
                    let body = &s[end..body_end];
                    *work += body.len() as u64;
                    let code = (body.iter().any(|&b| matches!(b, b'(' | b'=' | b'`'))
                        || [&b"msgbox"[..], b"alert", b"eval", b"document.", b"window."]
                            .iter()
                            .any(|k| contains(body, k)))
                        && s.get(end.saturating_sub(1)) == Some(&b'>');
                    if code || (s[body_end..].starts_with(b"</script") && !body.trim_ascii().is_empty()) {
                        return Some(&SCRIPT_TAG);
                    }
                    if paranoia >= 2 {
                        weak = Some(&DANGEROUS_TAG);
                    }
                }
                b"style" => {
                    let body_end = memchr::memchr(b'<', &s[end..]).map_or(s.len(), |e| end + e);
                    let body = &s[end..body_end];
                    *work += body.len() as u64;
                    if dangerous_css(body) {
                        return Some(&CSS_EXPRESSION);
                    }
                    if paranoia >= 2 {
                        weak = Some(&DANGEROUS_TAG);
                    }
                }
                b"iframe" | b"frame" | b"frameset" | b"object" | b"embed" | b"applet" | b"svg" | b"math" | b"meta"
                | b"base" | b"link" | b"xml" | b"import" | b"layer" | b"ilayer" | b"bgsound" | b"isindex"
                | b"template"
                    if paranoia >= 2 =>
                {
                    weak = Some(&DANGEROUS_TAG);
                }
                _ => {}
            }
        }
        i = end.max(lt + 1);
    }
    weak
}

/// Reads a tag's attributes from `i` to its `>` (or the end, or a `<` outside a quoted value):
/// returns where the tag ends and the rule its attributes match.
fn attributes(s: &[u8], mut i: usize, tag: &[u8], work: &mut u64) -> (usize, Option<&'static Rule>) {
    let start = i;
    let mut result = None;
    loop {
        while i < s.len() && matches!(s[i], b' ' | b'/' | b'"' | b'\'') {
            i += 1;
        }
        if i >= s.len() || s[i] == b'>' || s[i] == b'<' {
            break;
        }
        let n0 = i;
        while i < s.len() && !matches!(s[i], b' ' | b'=' | b'>' | b'/' | b'<') {
            i += 1;
        }
        let attr = &s[n0..i];
        while i < s.len() && s[i] == b' ' {
            i += 1;
        }
        let mut value: &[u8] = &[];
        if s.get(i) == Some(&b'=') {
            i += 1;
            while i < s.len() && s[i] == b' ' {
                i += 1;
            }
            match s.get(i) {
                Some(&q @ (b'"' | b'\'' | b'`')) => {
                    let e = memchr::memchr(q, &s[i + 1..]).map_or(s.len(), |e| i + 1 + e);
                    value = &s[i + 1..e];
                    i = (e + 1).min(s.len());
                }
                _ => {
                    let v0 = i;
                    while i < s.len() && !matches!(s[i], b' ' | b'>') {
                        i += 1;
                    }
                    value = &s[v0..i];
                }
            }
        }
        if result.is_none() {
            result = judge_attribute(tag, attr, value);
        }
    }
    *work += (i - start) as u64;
    let end = if s.get(i) == Some(&b'>') { i + 1 } else { i };
    (end, result)
}

fn judge_attribute(tag: &[u8], attr: &[u8], value: &[u8]) -> Option<&'static Rule> {
    let attr = attr.strip_prefix(b"xlink:").unwrap_or(attr);
    if attr.len() > 4 && attr.starts_with(b"on") && attr[2..].iter().all(u8::is_ascii_alphabetic) && !value.is_empty() {
        return Some(&EVENT_HANDLER);
    }
    if attr == b"srcdoc" && !value.is_empty() {
        return Some(&SCRIPT_URL_ATTR);
    }
    if attr == b"style" {
        if dangerous_css(value) {
            return Some(&CSS_EXPRESSION);
        }
        return None;
    }
    if matches!(
        attr,
        b"src"
            | b"href"
            | b"action"
            | b"formaction"
            | b"data"
            | b"code"
            | b"codebase"
            | b"dynsrc"
            | b"lowsrc"
            | b"background"
            | b"poster"
            | b"to"
            | b"values"
            | b"from"
            | b"by"
            | b"content"
            | b"url"
            | b"srcset"
            | b"ping"
            | b"cite"
            | b"icon"
            | b"manifest"
            | b"archive"
    ) {
        if script_scheme(value) {
            return Some(&SCRIPT_URL_ATTR);
        }
        if matches!(attr, b"src" | b"href" | b"data" | b"code")
            && !value.is_empty()
            && matches!(
                tag,
                b"script"
                    | b"iframe"
                    | b"frame"
                    | b"object"
                    | b"embed"
                    | b"applet"
                    | b"base"
                    | b"layer"
                    | b"ilayer"
                    | b"import"
                    | b"link"
            )
        {
            return Some(if tag == b"script" { &SCRIPT_TAG } else { &EMBED_TAG });
        }
    }
    None
}

/// CSS that runs script or loads behaviour: `expression(`, `-moz-binding`, `behavior:`, script URLs.
fn dangerous_css(v: &[u8]) -> bool {
    contains(v, b"expression(")
        || contains(v, b"-moz-binding")
        || contains(v, b"behavior:")
        || contains(v, b"behavior :")
        || script_scheme(v)
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    memchr::memmem::find(h, n).is_some()
}

/// A value that starts (after whitespace and control characters, which browsers skip inside a URL
/// scheme) with a script scheme, or contains `url(javascript:` / `data:text/html`.
fn script_scheme(v: &[u8]) -> bool {
    let mut letters = [0u8; 16];
    let mut n = 0;
    for &b in v {
        if b <= b' ' {
            continue;
        }
        if b == b':' {
            let l = &letters[..n];
            if matches!(l, b"javascript" | b"vbscript" | b"livescript") {
                return true;
            }
            break;
        }
        if n == letters.len() || !b.is_ascii_alphabetic() {
            break;
        }
        letters[n] = b;
        n += 1;
    }
    contains(v, b"javascript:") || contains(v, b"vbscript:") || data_html(v)
}

fn data_html(v: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = memchr::memmem::find(&v[i..], b"data:") {
        let rest = &v[i + off + 5..];
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        if rest.starts_with(b"text/html")
            || rest.starts_with(b"image/svg")
            || rest.starts_with(b"text/javascript")
            || rest.starts_with(b"application/javascript")
            || rest.starts_with(b"application/x-javascript")
            || rest.starts_with(b"text/xml")
            || rest.starts_with(b"application/xhtml")
            || rest.starts_with(b",<")
            || rest.starts_with(b",alert")
        {
            return true;
        }
        i += off + 5;
    }
    false
}

/// `javascript:` (letters possibly split by whitespace or control characters) followed by code, or
/// a `data:text/html` URL, anywhere in the value.
fn script_urls(s: &[u8], work: &mut u64) -> Option<&'static Rule> {
    for colon in memchr::memchr_iter(b':', s) {
        // Walk back over at most 24 bytes collecting letters.
        let mut letters = [0u8; 12];
        let mut n = 0;
        let mut j = colon;
        let mut steps = 0;
        while j > 0 && steps < 24 && n < letters.len() {
            j -= 1;
            steps += 1;
            let b = s[j];
            if b <= b' ' {
                continue;
            }
            if !b.is_ascii_alphabetic() {
                break;
            }
            letters[n] = b;
            n += 1;
        }
        *work += steps as u64 + 1;
        letters[..n].reverse();
        let l = &letters[..n];
        let scheme = l.ends_with(b"javascript") || l.ends_with(b"vbscript") || l.ends_with(b"livescript");
        if scheme {
            // Code after the colon: a call, an assignment or a template, not prose ("javascript: the good parts").
            let after = &s[colon + 1..];
            let first = after.first().copied();
            let code = first.is_some_and(|b| b != b' ')
                && after.iter().take(256).any(|&b| matches!(b, b'(' | b'=' | b'`' | b'[' | b'%'));
            if code {
                return Some(&SCRIPT_URL);
            }
        }
        if l.ends_with(b"data") && data_html(&s[colon - 4..]) {
            return Some(&SCRIPT_URL);
        }
    }
    None
}

/// `"` or `'` closing an attribute value, then an event handler: `" onmouseover="alert(1)`; or a value
/// that is itself a handler with code (`onmouseover="document.cookie=1"`).
fn attribute_break(s: &[u8], work: &mut u64) -> Option<&'static Rule> {
    if s.starts_with(b"on") {
        let n = s.iter().skip(2).take_while(|b| b.is_ascii_alphabetic()).count();
        let rest = &s[2 + n..];
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        if n >= 3
            && rest.starts_with(b"=")
            && rest.iter().take(256).any(|&b| matches!(b, b'(' | b'=' | b'`' | b';'))
            && rest.len() > 1
        {
            let code = &rest[1..];
            if code.iter().take(256).any(|&b| matches!(b, b'(' | b'=' | b'`')) {
                return Some(&EVENT_HANDLER);
            }
        }
    }
    for q in memchr::memchr2_iter(b'"', b'\'', s) {
        let mut i = q + 1;
        let mut steps = 0;
        // Attributes (`autofocus`, `x=y`) may come between the quote and the handler; a few are read.
        while steps < 4 {
            steps += 1;
            while i < s.len() && matches!(s[i], b' ' | b'/') {
                i += 1;
            }
            if i == q + 1 {
                break;
            }
            let n0 = i;
            while i < s.len() && s[i].is_ascii_alphabetic() {
                i += 1;
            }
            let name = &s[n0..i];
            *work += (i - n0) as u64 + 1;
            let mut k = i;
            while k < s.len() && s[k] == b' ' {
                k += 1;
            }
            if s.get(k) == Some(&b'=') {
                if name.len() > 4 && name.starts_with(b"on") {
                    return Some(&EVENT_HANDLER);
                }
                if name == b"style" || name == b"href" || name == b"src" {
                    let rest = &s[k + 1..];
                    let rest = &rest[..rest.len().min(256)];
                    if script_scheme(rest) || contains(rest, b"expression(") {
                        return Some(&ATTRIBUTE_BREAK);
                    }
                }
                break;
            }
            if name.is_empty() {
                break;
            }
        }
    }
    None
}

/// A JavaScript string or expression break into a sink: `';alert(1)//`, `"-alert(1)-"`,
/// `</script>`-less payloads such as `'+eval(name)+'`.
fn js_break(s: &[u8], paranoia: u8, work: &mut u64) -> Option<&'static Rule> {
    if let Some(close) = finders().close_script.find(s) {
        // Code that closes a script element: `alert(1)</script>`.
        let head = &s[..close];
        *work += head.len() as u64;
        if [&b"alert("[..], b"prompt(", b"confirm(", b"eval(", b"msgbox"].iter().any(|k| contains(head, k)) {
            return Some(&JS_BREAK);
        }
    }
    const SINKS: [&[u8]; 9] =
        [b"alert", b"prompt", b"confirm", b"eval", b"settimeout", b"setinterval", b"function", b"fetch", b"import"];
    for paren in memchr::memchr2_iter(b'(', b'`', s) {
        *work += 1;
        let head = &s[..paren];
        let head = head.strip_suffix(b" ").unwrap_or(head);
        let Some(sink) = SINKS.iter().find(|k| head.ends_with(k)) else { continue };
        let before = &head[..head.len() - sink.len()];
        let before = before.strip_suffix(b" ").unwrap_or(before);
        let Some(&p) = before.last() else {
            // The value starts with the call: `alert(1)` alone is code, not prose.
            if sink != b"function" && sink != b"import" && s[paren] == b'(' {
                let args = &s[paren + 1..];
                if args.iter().take(64).any(|&b| b == b')') && paranoia >= 2 {
                    return Some(&JS_BREAK);
                }
            }
            continue;
        };
        if matches!(
            p,
            b';' | b'+'
                | b'-'
                | b'*'
                | b'|'
                | b'&'
                | b'\''
                | b'"'
                | b'{'
                | b'}'
                | b'='
                | b','
                | b'('
                | b'['
                | b'>'
                | b'!'
                | b'~'
                | b'?'
        ) {
            // `x = alert(1)` is code; `(please confirm)` is prose: the call needs an argument list
            // that closes.
            if s[paren] == b'`' || s[paren + 1..].iter().take(128).any(|&b| b == b')') {
                if p == b'(' && !matches!(sink, &b"alert" | &b"prompt" | &b"eval") {
                    continue;
                }
                return Some(&JS_BREAK);
            }
        }
    }
    if paranoia >= 2 {
        for k in [
            &b"document.cookie"[..],
            b"document.domain",
            b".innerhtml",
            b"document.write",
            b"window.location",
            b"fromcharcode",
        ] {
            if contains(s, k) {
                return Some(&DOM_SINK);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::TargetKind;
    use super::*;
    use crate::inspect::normalize::Scratch;

    fn xss(s: &str, paranoia: u8) -> Option<u32> {
        let mut sc = Scratch::default();
        sc.normalize(s);
        let v = View { raw: s, decoded: &sc.decoded, folded: &sc.folded, kind: TargetKind::QueryValue, paranoia };
        let mut hits = Hits::default();
        scan(&v, &mut hits);
        hits.matched.first().map(|(r, _)| r.id)
    }

    #[test]
    fn attacks() {
        for a in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "<svg/onload=alert(1)>",
            "<a href=\"jav&#x09;ascript:alert(1)\">x</a>",
            "javascript:alert(1)",
            "\" onmouseover=\"alert(1)",
            "\" autofocus onfocus=alert(1) x=\"",
            "<iframe src=data:text/html;base64,PHNjcmlwdD4=></iframe>",
            "<div style=\"width: expression(alert(1));\">",
            "';alert(1);//",
            "%3Cscript%3Ealert(1)%3C/script%3E",
            "<sCrIpT sRc=//x.y/z></sCrIpT>",
            "<scr<script>ipt>alert(1)</scr</script>ipt>",
            "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
        ] {
            assert!(xss(a, 1).is_some(), "missed {a:?}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "In HTML, the <script> tag runs JavaScript.",
            "Use <b>bold</b> and <i>italic</i> in Markdown.",
            "a < b and c > d",
            "if (x < 10 && y > 5) { return true; }",
            "javascript: the good parts",
            "data: 2023 results",
            "Please confirm (yes/no)",
            "<img src=\"https://example.com/a.png\" alt=\"A\">",
            "<a href=\"https://example.com\">link</a>",
            "I <3 Rust",
            "time 10:30, ratio 1:2",
            "Use onerror to handle image load failures",
        ] {
            assert_eq!(xss(b, 1), None, "false positive on {b:?}");
        }
    }
}
