//! SQL injection: a SQL tokenizer and rules over the sequence of token classes (the approach of
//! libinjection: what matters is the shape `string-break, logic operator, literal, comparison,
//! literal`, not the words), written here.
//!
//! The value is tokenized three times: as it is, and, when it holds a quote, as if it continued a
//! string opened with `'` or `"` (the place most injections land: `name = '<value>'`). A *break* is
//! that first string closing early. Rules look at a bounded window of tokens (at most [`LOOK`]
//! ahead), and the tokens are produced in chunks, so work and memory stay linear in the value.
//!
//! At paranoia 1 a break counts only after a short, one-word prefix (`admin'`, `1'`): prose such as
//! `what does 'or' mean` has words before its quote. Paranoia 2 drops that requirement.

use super::{Category, Hits, Rule, View};

macro_rules! rule {
    ($name:ident, $id:expr, $p:expr, $desc:expr) => {
        pub static $name: Rule = Rule { id: $id, category: Category::Sqli, paranoia: $p, score: 5, name: $desc };
    };
}

rule!(UNION, 1001, 1, "UNION SELECT");
rule!(TAUTOLOGY, 1002, 1, "boolean tautology (OR 1=1)");
rule!(SUBQUERY, 1003, 1, "SELECT expression after an operator or a break");
rule!(TRUNCATION, 1004, 1, "string break followed by a comment");
rule!(STACKED, 1005, 1, "stacked query (; DROP / SELECT / EXEC ...)");
rule!(TIME, 1006, 1, "time-based blind function (SLEEP, BENCHMARK, WAITFOR DELAY)");
rule!(DANGEROUS_FN, 1007, 1, "error-based or file function (EXTRACTVALUE, LOAD_FILE, xp_cmdshell)");
rule!(PROBE, 1008, 1, "ORDER BY / GROUP BY / HAVING probing after a break");
rule!(SERVER_VAR, 1009, 1, "server variable (@@version)");
rule!(BREAK_LOGIC, 1010, 2, "string break followed by a logic operator");
rule!(STATEMENT, 1011, 2, "a whole SQL statement as a value");

/// Tokens of lookahead a rule may use.
const LOOK: usize = 48;
const CHUNK: usize = 2048;

/// Bytes that make a value worth tokenizing (quote, statement end, parenthesis, comparison, comment,
/// logic operator); a value with none of them needs a SQL keyword (`union`, `select`, `by`), a
/// `--` comment or a `/*` to be.
fn special(b: u8) -> bool {
    matches!(b, b'\'' | b'"' | b'`' | b';' | b'(' | b')' | b'=' | b'<' | b'>' | b'#' | b'|' | b'&')
}

fn keyword_finders() -> &'static [memchr::memmem::Finder<'static>; 6] {
    static F: std::sync::OnceLock<[memchr::memmem::Finder<'static>; 6]> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        use memchr::memmem::Finder;
        [
            Finder::new("union"),
            Finder::new("select"),
            Finder::new(" by "),
            Finder::new("--"),
            Finder::new("/*"),
            Finder::new("@@"),
        ]
    })
}

/// One pass over the bytes; the keyword searches run only on values with a space (a single word
/// cannot be an injection without one of the special bytes).
fn worth_tokenizing(s: &[u8]) -> bool {
    let (mut space, mut dash, mut slash, mut at) = (false, false, false, false);
    for &b in s {
        if special(b) {
            return true;
        }
        match b {
            b' ' => space = true,
            b'-' => dash = true,
            b'/' => slash = true,
            b'@' => at = true,
            _ => {}
        }
    }
    let [union, select, by, comment, inline, var] = keyword_finders();
    (dash && comment.find(s).is_some())
        || (slash && inline.find(s).is_some())
        || (at && var.find(s).is_some())
        || (space && [union, select, by].iter().any(|f| f.find(s).is_some()))
}

pub fn scan(v: &View<'_>, hits: &mut Hits) {
    let s = v.folded.as_bytes();
    hits.work += s.len() as u64;
    if s.len() < 2 {
        return;
    }
    if !worth_tokenizing(s) {
        return;
    }
    let before = hits.matched.len();
    let mut found: Option<&'static Rule> = None;
    let mut run = |ctx: u8, hits: &mut Hits| {
        if found.is_none() {
            found = analyse(s, ctx, v.paranoia, &mut hits.work);
        }
    };
    run(0, hits);
    if memchr::memchr(b'\'', s).is_some() {
        run(b'\'', hits);
    }
    if memchr::memchr(b'"', s).is_some() {
        run(b'"', hits);
    }
    if let Some(rule) = found {
        hits.hit(rule, v);
    }
    debug_assert!(hits.matched.len() <= before + 1);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tok {
    /// `s` string, `1` number or literal, `n` bareword, `U` union, `E` statement, `k` keyword, `&`
    /// logic, `o` operator, `f` function, `v` variable, `c` comment, `;` `(` `)` `,`, `x` other.
    c: u8,
    start: u32,
    end: u32,
    /// A string that reached the end of the value without its closing quote.
    open: bool,
}

struct Tokenizer<'a> {
    s: &'a [u8],
    pos: usize,
    ctx: u8,
}

impl Tokenizer<'_> {
    fn next(&mut self) -> Option<Tok> {
        let s = self.s;
        if self.pos == 0 && self.ctx != 0 {
            // The value continues a string opened with `ctx`.
            let (end, open) = string_end(s, 0, self.ctx);
            self.pos = if open { end } else { end + 1 };
            return Some(Tok { c: b's', start: 0, end: end as u32, open });
        }
        while self.pos < s.len() && s[self.pos] == b' ' {
            self.pos += 1;
        }
        let i = self.pos;
        let b = *s.get(i)?;
        let tok = |c: u8, end: usize| Tok { c, start: i as u32, end: end as u32, open: false };
        let t = match b {
            b'\'' | b'"' => {
                let (end, open) = string_end(s, i + 1, b);
                self.pos = if open { end } else { end + 1 };
                return Some(Tok { c: b's', start: (i + 1) as u32, end: end as u32, open });
            }
            b'`' => {
                let end = memchr::memchr(b'`', &s[i + 1..]).map_or(s.len(), |e| i + 1 + e + 1);
                tok(b'n', end)
            }
            b'0'..=b'9' => tok(b'1', number_end(s, i)),
            b'.' if s.get(i + 1).is_some_and(u8::is_ascii_digit) => tok(b'1', number_end(s, i)),
            b'@' => {
                let mut e = i + 1;
                while e < s.len() && (s[e] == b'@' || word_byte(s[e])) {
                    e += 1;
                }
                tok(b'v', e)
            }
            b'#' => tok(b'c', s.len()),
            b'-' if s.get(i + 1) == Some(&b'-') => tok(b'c', s.len()),
            b'/' if s.get(i + 1) == Some(&b'*') => tok(b'c', s.len()),
            b';' | b'(' | b')' | b',' => tok(b, i + 1),
            b'|' if s.get(i + 1) == Some(&b'|') => tok(b'&', i + 2),
            b'&' if s.get(i + 1) == Some(&b'&') => tok(b'&', i + 2),
            b'=' | b'<' | b'>' | b'!' | b'|' | b'&' | b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'~' => {
                let mut e = i + 1;
                while e < s.len() && e < i + 3 && matches!(s[e], b'=' | b'<' | b'>') {
                    e += 1;
                }
                tok(b'o', e)
            }
            _ if word_byte(b) => {
                let mut e = i + 1;
                while e < s.len() && (word_byte(s[e]) || s[e] == b'.') {
                    e += 1;
                }
                let word = &s[i..e];
                let mut c = classify(word);
                let mut n = e;
                while n < s.len() && s[n] == b' ' {
                    n += 1;
                }
                if s.get(n) == Some(&b'(') && (c == b'n' || c == b'f') {
                    c = if is_function(word) { b'f' } else { b'n' };
                } else if c == b'f' {
                    c = b'n';
                }
                tok(c, e)
            }
            _ => {
                // Anything else (one character, whole if not ASCII).
                let len = utf8_len(b);
                tok(b'x', (i + len).min(s.len()))
            }
        };
        self.pos = t.end as usize;
        Some(t)
    }
}

fn utf8_len(b: u8) -> usize {
    match b {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => 1,
    }
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The end of a string opened before `from` with quote `q`: the index of its closing quote, or the
/// end of the value (`open`). A doubled quote or a backslash escapes.
fn string_end(s: &[u8], from: usize, q: u8) -> (usize, bool) {
    let mut i = from;
    while i < s.len() {
        match memchr::memchr2(q, b'\\', &s[i..]) {
            None => break,
            Some(off) => {
                let j = i + off;
                if s[j] == b'\\' || s.get(j + 1) == Some(&q) {
                    i = j + 2;
                } else {
                    return (j, false);
                }
            }
        }
    }
    (s.len(), true)
}

fn number_end(s: &[u8], i: usize) -> usize {
    let mut e = i;
    if s[i] == b'0' && matches!(s.get(i + 1), Some(b'x' | b'b')) {
        e = i + 2;
        while e < s.len() && s[e].is_ascii_hexdigit() {
            e += 1;
        }
        return e;
    }
    while e < s.len() && (s[e].is_ascii_digit() || s[e] == b'.') {
        e += 1;
    }
    if e < s.len() && s[e] == b'e' && s.get(e + 1).is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+') {
        e += 2;
        while e < s.len() && s[e].is_ascii_digit() {
            e += 1;
        }
    }
    e
}

fn classify(w: &[u8]) -> u8 {
    match w {
        b"union" => b'U',
        b"select" | b"insert" | b"update" | b"delete" | b"drop" | b"create" | b"alter" | b"truncate" | b"exec"
        | b"execute" | b"declare" | b"shutdown" | b"grant" | b"revoke" | b"waitfor" | b"rename" | b"handler" => b'E',
        b"and" | b"or" | b"xor" => b'&',
        b"like" | b"rlike" | b"regexp" | b"is" | b"in" | b"between" | b"div" | b"mod" | b"not" | b"sounds"
        | b"glob" => b'o',
        b"from" | b"where" | b"having" | b"order" | b"group" | b"by" | b"limit" | b"offset" | b"into" | b"outfile"
        | b"dumpfile" | b"values" | b"set" | b"table" | b"database" | b"case" | b"when" | b"then" | b"else"
        | b"end" | b"as" | b"join" | b"procedure" | b"distinct" | b"all" | b"top" | b"delay" | b"time" => b'k',
        b"null" | b"true" | b"false" => b'1',
        // A function only when a `(` follows (the tokenizer checks `is_function` then).
        _ => b'n',
    }
}

fn is_function(w: &[u8]) -> bool {
    // Dotted names (`dbms_pipe.receive_message`) are judged by their last part.
    let last = w.rsplit(|&b| b == b'.').next().unwrap_or(w);
    matches!(
        last,
        b"sleep"
            | b"benchmark"
            | b"pg_sleep"
            | b"receive_message"
            | b"char"
            | b"chr"
            | b"nchar"
            | b"concat"
            | b"concat_ws"
            | b"substring"
            | b"substr"
            | b"mid"
            | b"ascii"
            | b"ord"
            | b"hex"
            | b"unhex"
            | b"version"
            | b"database"
            | b"user"
            | b"current_user"
            | b"session_user"
            | b"system_user"
            | b"schema"
            | b"load_file"
            | b"extractvalue"
            | b"updatexml"
            | b"count"
            | b"cast"
            | b"convert"
            | b"if"
            | b"iif"
            | b"ifnull"
            | b"isnull"
            | b"nullif"
            | b"coalesce"
            | b"md5"
            | b"sha1"
            | b"sha2"
            | b"floor"
            | b"rand"
            | b"elt"
            | b"group_concat"
            | b"length"
            | b"len"
            | b"exists"
            | b"exp"
            | b"row"
            | b"make_set"
            | b"name_const"
            | b"json_keys"
            | b"randomblob"
            | b"xp_cmdshell"
            | b"db_name"
            | b"host_name"
            | b"user_name"
            | b"suser_name"
            | b"is_srvrolemember"
            | b"get_host_name"
            | b"request"
            | b"to_char"
            | b"instr"
            | b"locate"
            | b"bin"
            | b"conv"
            | b"analyse"
            | b"pg_read_file"
            | b"updatexml1"
            | b"drithsx"
            | b"sn"
            | b"lower"
            | b"upper"
            | b"reverse"
            | b"ascii_str"
            | b"unicode"
            | b"left"
            | b"right"
            | b"sysdate"
            | b"now"
            | b"getdate"
            | b"geometrycollection"
            | b"polygon"
            | b"multipoint"
            | b"linestring"
            | b"gtid_subset"
            | b"st_latfromgeohash"
            | b"xmltype"
            | b"dbms_xmlgen"
    )
}

/// Work through the value's tokens in chunks; the first rule found wins.
fn analyse(s: &[u8], ctx: u8, paranoia: u8, work: &mut u64) -> Option<&'static Rule> {
    thread_local! {
        // One token buffer per thread, reused: tokenizing a value allocates nothing.
        static BUF: std::cell::RefCell<Vec<Tok>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            analyse_in(s, ctx, paranoia, work, &mut buf)
        }
        Err(_) => analyse_in(s, ctx, paranoia, work, &mut Vec::new()),
    })
}

fn analyse_in(s: &[u8], ctx: u8, paranoia: u8, work: &mut u64, buf: &mut Vec<Tok>) -> Option<&'static Rule> {
    let mut tz = Tokenizer { s, pos: 0, ctx };
    // Absolute index of buf[0].
    let mut base = 0usize;
    let mut done = false;
    let mut prev: Option<Tok> = None;
    loop {
        while !done && buf.len() < CHUNK + LOOK {
            match tz.next() {
                Some(t) => buf.push(t),
                None => done = true,
            }
        }
        let upto = if done { buf.len() } else { buf.len() - LOOK };
        if base == 0 && ctx != 0 {
            if let Some(r) = after_break(s, buf, paranoia) {
                return Some(r);
            }
        }
        for i in 0..upto {
            *work += 1;
            let p = if i == 0 { prev } else { Some(buf[i - 1]) };
            // After a break following prose (`... like ' or 1=1 is ...`), a tautology must end the value
            // or be followed by a comment to count.
            let prose_break =
                ctx != 0 && base + i == 1 && buf[i].c == b'&' && buf[0].c == b's' && text(s, &buf[0]).contains(&b' ');
            if let Some(r) = at(s, buf, i, p, base + i == 0, paranoia).filter(|_| !prose_break || ends_query(s, buf, i))
            {
                return Some(r);
            }
        }
        if done {
            return None;
        }
        prev = buf.get(upto.wrapping_sub(1)).copied();
        buf.drain(..upto);
        base += upto;
        *work += (LOOK * 2) as u64;
    }
}

fn text<'a>(s: &'a [u8], t: &Tok) -> &'a [u8] {
    s.get(t.start as usize..t.end as usize).unwrap_or_default()
}

fn is(s: &[u8], t: Option<&Tok>, c: u8, w: &[u8]) -> bool {
    t.is_some_and(|t| t.c == c && text(s, t) == w)
}

/// The index after the operand starting at `i` (a literal, a name, a variable, a function call or a
/// parenthesised expression), if there is one.
fn operand(s: &[u8], t: &[Tok], i: usize) -> Option<usize> {
    let tok = t.get(i)?;
    match tok.c {
        b'1' | b's' | b'n' | b'v' => {
            let _ = s;
            Some(i + 1)
        }
        b'f' => skip_parens(t, i + 1),
        b'(' => skip_parens(t, i),
        b'o' if matches!(text(s, tok), b"-" | b"+" | b"~" | b"!") => operand(s, t, i + 1),
        _ => None,
    }
}

/// The index after the balanced parentheses opening at `i` (or the window's end).
fn skip_parens(t: &[Tok], i: usize) -> Option<usize> {
    if t.get(i)?.c != b'(' {
        return None;
    }
    let mut depth = 0usize;
    for (j, tok) in t.iter().enumerate().skip(i).take(LOOK) {
        match tok.c {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
    }
    Some((i + LOOK).min(t.len()))
}

fn literal(c: u8) -> bool {
    matches!(c, b'1' | b's' | b'f' | b'v' | b'(')
}

/// `& operand op operand`: a comparison after a logic operator whose two sides are literals (or
/// functions), e.g. `or 1=1`, `and 'a'='a`, `or sleep(1)=0`.
fn tautology(s: &[u8], t: &[Tok], amp: usize) -> bool {
    // Opening parentheses before the comparison are transparent: `or (1=1`, `or ((1=1`.
    let mut k = amp + 1;
    while t.get(k).is_some_and(|x| x.c == b'(') && k < amp + 8 {
        k += 1;
    }
    let Some(mut a_end) = operand(s, t, k) else { return false };
    while t.get(a_end).is_some_and(|x| x.c == b')') && a_end < k + 8 {
        a_end += 1;
    }
    let Some(op) = t.get(a_end) else { return false };
    if op.c != b'o' {
        return false;
    }
    let Some(b) = t.get(a_end + 1) else { return t[k].c == b's' };
    let (a, b) = (t[k], *b);
    if text(s, op) == b"-" && a.c == b'1' {
        return false;
    }
    (literal(a.c) && literal(b.c)) || (a.c == b'n' && b.c == b'n' && text(s, &a) == text(s, &b))
}

/// The comparison after the logic operator at `i` ends the value or is followed by a comment or `;`.
fn ends_query(s: &[u8], t: &[Tok], i: usize) -> bool {
    let mut k = i + 1;
    while t.get(k).is_some_and(|x| x.c == b'(') && k < i + 8 {
        k += 1;
    }
    match comparison(s, t, k - 1) {
        Some(e) => t.get(e).is_none_or(|x| matches!(x.c, b'c' | b';')),
        None => false,
    }
}

/// `& operand op operand` of any operands: the index after it.
fn comparison(s: &[u8], t: &[Tok], amp: usize) -> Option<usize> {
    let a_end = operand(s, t, amp + 1)?;
    if t.get(a_end)?.c != b'o' {
        return None;
    }
    operand(s, t, a_end + 1)
}

/// A statement keyword at `i` followed by what makes it a statement (not an English word).
fn statement(s: &[u8], t: &[Tok], i: usize) -> bool {
    let Some(tok) = t.get(i) else { return false };
    if tok.c != b'E' {
        return false;
    }
    let next = t.get(i + 1);
    let next2 = t.get(i + 2);
    match text(s, tok) {
        b"select" => select_expr(s, t, i),
        b"drop" | b"truncate" | b"create" | b"alter" => next.is_some_and(|n| {
            matches!(text(s, n), b"table" | b"database" | b"user" | b"function" | b"procedure" | b"view" | b"index")
        }),
        b"insert" => is(s, next, b'k', b"into"),
        b"update" => next.is_some_and(|n| n.c == b'n') && is(s, next2, b'k', b"set"),
        b"delete" => is(s, next, b'k', b"from"),
        b"exec" | b"execute" => next.is_some_and(|n| matches!(n.c, b'n' | b'f' | b'v' | b'(')),
        b"shutdown" => next.is_none_or(|n| matches!(n.c, b'c' | b';')),
        b"declare" => next.is_some_and(|n| n.c == b'v'),
        b"waitfor" => next.is_some_and(|n| matches!(text(s, n), b"delay" | b"time")),
        b"grant" | b"revoke" => is(s, next, b'k', b"all"),
        _ => false,
    }
}

/// `select` followed by a select list (`*`, literals, names, variables, function calls, subqueries,
/// separated by commas) and then the end of the value, a comment, `)`, `;`, `union` or a clause
/// (`from`, `into`, `where` ...): `select 'withdraw', and follow` and `select a plan` are prose.
fn select_expr(s: &[u8], t: &[Tok], i: usize) -> bool {
    let mut j = i + 1;
    if t.get(j).is_some_and(|n| n.c == b'k' && matches!(text(s, n), b"all" | b"distinct" | b"top")) {
        j += 1;
    }
    let mut items = 0;
    while items < 16 {
        let Some(n) = t.get(j) else { return false };
        j = if n.c == b'o' && text(s, n) == b"*" {
            j + 1
        } else if n.c == b'n'
            && t.get(j + 1).is_some_and(|m| m.c == b'n')
            && t.get(j + 2).is_some_and(|m| m.c == b',' || (m.c == b'k' && text(s, m) == b"from"))
        {
            // An alias: `select password p from`.
            j + 2
        } else {
            match operand(s, t, j) {
                Some(e) => e,
                None => return false,
            }
        };
        items += 1;
        if t.get(j).is_some_and(|m| m.c == b',') {
            j += 1;
            continue;
        }
        break;
    }
    match t.get(j) {
        // At the end of the value: one bare word after SELECT is prose ("... by select twelve"), not a
        // query; several items, a literal, a function or `*` are.
        None => items > 1 || t.get(j - 1).is_some_and(|p| p.c != b'n' && (p.c != b's' || !p.open)),
        Some(m) => match m.c {
            b'c' | b';' | b')' | b'U' => true,
            b'k' => matches!(text(s, m), b"from" | b"into" | b"where" | b"limit" | b"order" | b"group" | b"having"),
            _ => false,
        },
    }
}

/// Rules on the tokens right after the value's early string break (`ctx` set).
fn after_break(s: &[u8], t: &[Tok], paranoia: u8) -> Option<&'static Rule> {
    let first = t.first()?;
    if first.open || first.c != b's' {
        return None;
    }
    let prefix = text(s, first);
    let short = prefix.len() <= 64 && !prefix.contains(&b' ');
    if !short && paranoia < 2 {
        return None;
    }
    let mut i = 1;
    while t.get(i).is_some_and(|x| x.c == b')') {
        i += 1;
    }
    let next = t.get(i)?;
    match next.c {
        b'&' => {
            if tautology(s, t, i) {
                return Some(&TAUTOLOGY);
            }
            if let Some(e) = operand(s, t, i + 1) {
                let a = t[i + 1];
                let end = t.get(e);
                if end.is_none_or(|x| matches!(x.c, b'c' | b';')) && matches!(a.c, b'1' | b'f' | b'v') {
                    return Some(&TAUTOLOGY);
                }
                if end.is_some_and(|x| x.c == b'o') && a.c == b'n' {
                    // `' or name like '%x` / `' and email is null`
                    return Some(&TAUTOLOGY);
                }
                if a.c == b's' && end.is_some_and(|x| matches!(x.c, b'c' | b';')) {
                    return Some(&TAUTOLOGY);
                }
                if a.c == b's' && a.open && end.is_none() && a.end - a.start <= 8 {
                    // `' or '1`: the server's own closing quote ends the string.
                    return Some(&TAUTOLOGY);
                }
            }
            if paranoia >= 2 {
                return Some(&BREAK_LOGIC);
            }
        }
        b'c' => return Some(&TRUNCATION),
        b';' if t.get(i + 1).is_none_or(|x| x.c == b'c') || statement(s, t, i + 1) => return Some(&STACKED),
        b'E' if statement(s, t, i) => return Some(&STACKED),
        b'k' if probe(s, t, i) => return Some(&PROBE),
        b'o' if t.get(i + 1).is_some_and(|x| matches!(x.c, b'f' | b'(' | b'1' | b's')) => {
            if matches!(text(s, next), b"=" | b"-" | b"+" | b"*" | b"||" | b"<" | b">" | b"like" | b"rlike") {
                let rest = t.get(i + 2);
                if t[i + 1].c == b'f' || rest.is_some_and(|x| matches!(x.c, b'&' | b'c' | b';' | b'o')) {
                    return Some(&TAUTOLOGY);
                }
            }
        }
        _ => {}
    }
    None
}

/// A clause right after a break that probes the query: `' having 1=1`, `' order by 3`, `' limit 1`,
/// `' procedure analyse(`, `' into outfile`.
fn probe(s: &[u8], t: &[Tok], i: usize) -> bool {
    let next = t.get(i + 1);
    match text(s, &t[i]) {
        b"having" | b"where" => tautology(s, t, i),
        b"order" | b"group" => {
            is(s, next, b'k', b"by") && t.get(i + 2).is_some_and(|n| matches!(n.c, b'1' | b'f' | b'('))
        }
        b"limit" => next.is_some_and(|n| n.c == b'1'),
        b"procedure" => next.is_some_and(|n| n.c == b'f'),
        b"into" => next.is_some_and(|n| matches!(text(s, n), b"outfile" | b"dumpfile")),
        _ => false,
    }
}

/// Rules anchored at token `i` anywhere in the value.
fn at(s: &[u8], t: &[Tok], i: usize, prev: Option<Tok>, first: bool, paranoia: u8) -> Option<&'static Rule> {
    let tok = t[i];
    let next = t.get(i + 1);
    match tok.c {
        b'U' => {
            let mut j = i + 1;
            if t.get(j).is_some_and(|n| n.c == b'k' && matches!(text(s, n), b"all" | b"distinct")) {
                j += 1;
            }
            while t.get(j).is_some_and(|n| n.c == b'(') {
                j += 1;
            }
            if is(s, t.get(j), b'E', b"select") {
                return Some(&UNION);
            }
        }
        b';' if statement(s, t, i + 1) => return Some(&STACKED),
        b'E' if matches!(text(s, &tok), b"exec" | b"execute")
            && next.is_some_and(|n| {
                let w = text(s, n);
                let w = w.rsplit(|&b| b == b'.').next().unwrap_or(w);
                w.starts_with(b"xp_") || w.starts_with(b"sp_")
            }) =>
        {
            return Some(&DANGEROUS_FN)
        }
        b'E' => {
            let after = prev.is_none_or(|p| matches!(p.c, b'(' | b'&' | b'o' | b'U' | b';' | b',' | b'k'));
            if text(s, &tok) == b"select" && after && !(first && paranoia < 2) && select_expr(s, t, i) {
                return Some(&SUBQUERY);
            }
            if text(s, &tok) == b"waitfor" && statement(s, t, i) && next.is_some() {
                return Some(&TIME);
            }
            if first && paranoia >= 2 && statement(s, t, i) {
                return Some(&STATEMENT);
            }
        }
        b'f' => {
            let name = text(s, &tok);
            let name = name.rsplit(|&b| b == b'.').next().unwrap_or(name);
            let arg = t.get(i + 2);
            match name {
                b"sleep" | b"pg_sleep" | b"benchmark" | b"receive_message" => {
                    let ctx_ok = prev
                        .is_none_or(|p| matches!(p.c, b'(' | b'&' | b'o' | b',' | b';' | b'1' | b's' | b'k' | b'E'));
                    if ctx_ok && arg.is_some_and(|a| matches!(a.c, b'1' | b's' | b'v' | b'(' | b'f')) {
                        return Some(&TIME);
                    }
                }
                b"extractvalue" | b"updatexml" | b"load_file" | b"xp_cmdshell" | b"name_const" | b"get_host_name"
                | b"drithsx" | b"pg_read_file" | b"gtid_subset" | b"st_latfromgeohash" => return Some(&DANGEROUS_FN),
                _ => {}
            }
        }
        b'v' if text(s, &tok).starts_with(b"@@") => {
            let w = &text(s, &tok)[2..];
            if w.starts_with(b"version")
                || matches!(w, b"datadir" | b"hostname" | b"basedir" | b"servername" | b"tmpdir" | b"spid")
                || w.starts_with(b"global.")
                || w.starts_with(b"session.")
            {
                return Some(&SERVER_VAR);
            }
        }
        b'&' => {
            let before = prev.is_none_or(|p| matches!(p.c, b'1' | b's' | b'n' | b')'));
            if before && comparison(s, t, i).is_some_and(|e| t.get(e).is_some_and(|x| x.c == b'c')) {
                // `or x=y#`: a comparison, then the rest of the query commented out.
                return Some(&TAUTOLOGY);
            }
            if before && t.get(i + 1).is_some_and(|x| x.c == b'1') && t.get(i + 2).is_some_and(|x| x.c == b'c') {
                // `1 or true--`
                return Some(&TAUTOLOGY);
            }
            if before && tautology(s, t, i) {
                // `1 or 1=1`, `x) and (2>1` ... but not `price >= 10 and price <= 20`.
                let a = t[i + 1];
                if a.c != b'n' {
                    return Some(&TAUTOLOGY);
                }
            }
            if before {
                if let Some(f) = t.get(i + 1).filter(|f| f.c == b'f') {
                    let name = text(s, f);
                    if matches!(
                        name,
                        b"sleep"
                            | b"benchmark"
                            | b"pg_sleep"
                            | b"extractvalue"
                            | b"updatexml"
                            | b"exists"
                            | b"if"
                            | b"ascii"
                            | b"substring"
                            | b"substr"
                            | b"mid"
                            | b"length"
                            | b"ord"
                    ) {
                        return Some(&TAUTOLOGY);
                    }
                }
                if is(s, t.get(i + 1), b'(', b"(") && is(s, t.get(i + 2), b'E', b"select") {
                    return Some(&SUBQUERY);
                }
            }
        }
        b'k' if matches!(text(s, &tok), b"order" | b"group") && is(s, next, b'k', b"by") => {
            let n = t.get(i + 2);
            let commented = t.get(i + 3).is_some_and(|c| c.c == b'c');
            if (prev.is_some_and(|p| matches!(p.c, b'1' | b')')) || commented) && n.is_some_and(|n| n.c == b'1') {
                return Some(&PROBE);
            }
        }
        b'k' if text(s, &tok) == b"having" && tautology(s, t, i) => return Some(&PROBE),
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::TargetKind;
    use super::*;
    use crate::inspect::normalize::Scratch;

    pub(crate) fn sqli(s: &str, paranoia: u8) -> Option<u32> {
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
            "1' OR '1'='1",
            "' OR 1=1--",
            "admin'--",
            "admin' #",
            "1 UNION SELECT NULL--",
            "-1 union/**/select 1,@@version",
            "1; DROP TABLE users--",
            "1 AND SLEEP(5)",
            "1' AND (SELECT * FROM (SELECT(SLEEP(5)))a)--",
            "' AND EXTRACTVALUE(1,CONCAT(0x5c,version()))--",
            "1' ORDER BY 10--",
            "1) OR (1=1",
            "') OR ('a'='a",
            "x' AND email IS NULL; --",
            "'; EXEC xp_cmdshell('dir')--",
            "1 AND 8421=8421",
            "' or sleep(5)='",
            "' HAVING 1=1--",
            "1 /*!50000UNION*/ /*!50000SELECT*/ 1,2",
            "1';WAITFOR DELAY '0:0:5'--",
            "hello world' or 1=1--",
            "some words' union select password from users",
            "or 1=1--",
            "' GROUP BY columnnames having 1=1 --",
            "exec master..xp_cmdshell 'ping'",
        ] {
            assert!(sqli(a, 1).is_some(), "missed {a:?}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "O'Brien",
            "Patrick O'Brien",
            "select a plan",
            "Select a plan that fits your team",
            "The union of two sets",
            "what does 'or' mean",
            "price >= 10 and price <= 20",
            "It's a beautiful day, isn't it?",
            "Rock 'n' Roll",
            "\"machine learning\" AND python",
            "How do I use SELECT * FROM users WHERE id = 1 in PostgreSQL?",
            "Order by price",
            "1=1",
            "either 1 or 2",
            "I need sleep (8 hours)",
            "Don't forget: 'single quotes' and \"double quotes\"",
            "-- signature",
            "1; 2; 3",
            "Robert'); is a famous xkcd name",
            "SQL injection happens when input like ' OR 1=1 is concatenated into queries.",
        ] {
            assert_eq!(sqli(b, 1), None, "false positive on {b:?}");
        }
    }
}
#[cfg(test)]
mod debug {
    use super::*;
    #[test]
    fn dump() {
        let Ok(v) = std::env::var("SQLI_DUMP") else { return };
        let mut sc = crate::inspect::normalize::Scratch::default();
        sc.normalize(&v);
        let s = sc.folded.as_bytes();
        for ctx in [0u8, b'\'', b'"'] {
            let mut tz = Tokenizer { s, pos: 0, ctx };
            let mut out = String::new();
            while let Some(t) = tz.next() {
                out.push_str(&format!("{}[{}] ", t.c as char, String::from_utf8_lossy(text(s, &t))));
            }
            let mut w = 0;
            println!("ctx {:?}: {out} => {:?}", ctx as char, analyse(s, ctx, 1, &mut w).map(|r| r.id));
        }
    }
}
