//! OS command injection, Unix and Windows: a shell separator (`;`, `|`, `&`, a newline) or a
//! substitution (`$(`, backticks) followed by a known command, shell evasions (`${IFS}`, brace
//! expansion, globbed paths, quotes inside a command name), and explicit interpreter invocations
//! (`/bin/sh`, `cmd /c`, `powershell -enc`, `/dev/tcp/`).
//!
//! Commands are graded: unambiguous program names (`whoami`, `wget`, `powershell`) count after any
//! separator; short names (`id`, `ls`, `dir`) only at the end of the value or with a shell-like
//! argument; English words that are also commands (`cat`, `echo`, `sleep`, `type`) only with a
//! shell-like argument (an option, a path, a number, a quote, `$`). So "cat food; dog food" and
//! "Tom & Jerry" pass, and `;cat /etc/passwd`, `|id`, `& dir` do not.

use std::sync::LazyLock;

use super::super::{Category, Rule, TargetKind};
use super::text::{at_ci, before, is_word, RuleSet};
use super::Out;

static SEPARATED: Rule =
    Rule { id: 3001, category: Category::Cmdi, paranoia: 1, score: 5, name: "shell separator followed by a command" };
static SUBSTITUTION: Rule = Rule {
    id: 3002,
    category: Category::Cmdi,
    paranoia: 1,
    score: 5,
    name: "command substitution ($(...) or backticks) of a command",
};
static EVASION: Rule = Rule {
    id: 3003,
    category: Category::Cmdi,
    paranoia: 1,
    score: 5,
    name: "shell evasion (${IFS}, brace expansion, globbed or quoted command name)",
};
static INTERPRETER: Rule = Rule {
    id: 3004,
    category: Category::Cmdi,
    paranoia: 1,
    score: 5,
    name: "shell or interpreter invocation (/bin/sh, /dev/tcp, cmd /c, powershell -enc)",
};
static CODE_EXEC: Rule = Rule {
    id: 3005,
    category: Category::Cmdi,
    paranoia: 1,
    score: 5,
    name: "code-level command execution call after a break (system('id'), exec('sleep 5'))",
};
static SEPARATED_LOOSE: Rule = Rule {
    id: 3101,
    category: Category::Cmdi,
    paranoia: 2,
    score: 5,
    name: "shell separator followed by a command word and an argument",
};
static LEADING: Rule = Rule {
    id: 3102,
    category: Category::Cmdi,
    paranoia: 2,
    score: 3,
    name: "value starts with a command and a shell-like argument",
};
static PROSE_TICKS: Rule =
    Rule { id: 3103, category: Category::Cmdi, paranoia: 2, score: 3, name: "backticks around a command in prose" };
static INTERPRETER_LOOSE: Rule = Rule {
    id: 3104,
    category: Category::Cmdi,
    paranoia: 2,
    score: 3,
    name: "shell invocation with a command string (sh -c) or Windows environment variable",
};
static SEPARATED_ANY: Rule = Rule {
    id: 3201,
    category: Category::Cmdi,
    paranoia: 3,
    score: 3,
    name: "shell separator followed by any command word",
};

pub(super) const TRIGGERS: &[&str] = &[
    ";",
    "|",
    "&",
    "`",
    "$(",
    "\n",
    "\r",
    "$ifs",
    "${ifs",
    "{",
    "/bin/",
    "/dev/",
    "cmd",
    "powershell",
    "pwsh",
    "iex",
    "invoke-",
    "download",
    "webclient",
    "nc ",
    "ncat",
    "netcat",
    "bash",
    "sh -",
    "%comspec%",
    "%systemroot%",
    "%windir%",
    "certutil",
    "bitsadmin",
    "mshta",
    "regsvr32",
    "rundll32",
    "curl",
    "wget",
    "system",
    "exec",
    "eval",
    "passthru",
    "popen",
    "proc_open",
    "assert",
];

static INTERPRETERS: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::new(&[
        (r"(?i)(?:^|[^!])/bin/(?:ba|z|k|c|tc|da|ash|)sh\b", &INTERPRETER),
        (r"(?i)/dev/(?:tcp|udp)/", &INTERPRETER),
        (r"(?i)\bcmd(?:\.exe)?\s*/[ckr]\b", &INTERPRETER),
        (r"(?i)\bcmd\.exe\b", &INTERPRETER),
        (
            r"(?i)\b(?:powershell|pwsh)(?:\.exe)?\s+-(?:e|ec|en|enc|encodedcommand|c|command|nop|noprofile|w|windowstyle|exec|executionpolicy|ep|noni|noninteractive|sta|file)\b",
            &INTERPRETER,
        ),
        (
            r"(?i)\b(?:iex|invoke-expression)\s*[(\x22'$]|\bdownload(?:string|file|data)\s*\(|net\.webclient|\binvoke-webrequest\b",
            &INTERPRETER,
        ),
        (r"(?i)\b(?:nc|ncat|netcat)(?:\.exe)?\s+(?:-[a-z]+\s+)*-[a-z]*[ec]\s", &INTERPRETER),
        (
            r"(?i)\b(?:nc|ncat|netcat)(?:\.exe)?\s[^|;&\n]{0,100}\s-[a-z]*[ec]\s*(?:/bin/)?(?:ba|z|da)?sh\b",
            &INTERPRETER,
        ),
        (r"(?i)\bbash\s+-i\b", &INTERPRETER),
        (r"(?i)%comspec%", &INTERPRETER),
        (
            r"(?i)\bcertutil(?:\.exe)?\s+-urlcache|\bbitsadmin(?:\.exe)?\s+/transfer|\bmshta(?:\.exe)?\s+(?:https?|vbscript|javascript):|\bregsvr32(?:\.exe)?\s+/s|\brundll32(?:\.exe)?\s+[a-z]",
            &INTERPRETER,
        ),
        (r"(?i)\b(?:curl|wget)\s[^|;&\n]{0,200}\|\s*(?:ba|z|da)?sh\b", &INTERPRETER),
        (r"(?i)\b(?:ba|z|da)?sh\s+-c\s", &INTERPRETER_LOOSE),
        (r"(?i)%(?:systemroot|windir|programfiles|userprofile|temp)%", &INTERPRETER_LOOSE),
        (r"(?i)\$\{?ifs\b", &EVASION),
        // Shellshock: a function definition in a value that bash imports from the environment.
        (r"\(\s*\)\s*\{\s*:\s*;\s*\}\s*;", &INTERPRETER),
        (
            r#"(?i)(?:^|[;|&'"\n`]\s*)(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|eval|assert)\s*\(\s*['"`]\s*(?:[\w/]*/)?(?:sleep|id|whoami|cat|ls|uname|ping|nc|curl|wget|bash|sh|cmd|echo|dir|type|ipconfig|ifconfig|net|powershell|nslookup|ps|pwd|hostname)\b"#,
            &CODE_EXEC,
        ),
    ])
});

/// How much evidence a command name needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// A program name that is not an English word: enough after a separator.
    Strong,
    /// A short name (`id`, `ls`): at the end of the value or with an argument.
    Short,
    /// An English word (`cat`, `sleep`): only with a shell-like argument.
    Word,
}

fn strength(name: &[u8]) -> Option<Strength> {
    use Strength::{Short, Strong, Word};
    Some(match name {
        b"whoami" | b"uname" | b"ifconfig" | b"ipconfig" | b"netstat" | b"wget" | b"curl" | b"nc" | b"ncat"
        | b"netcat" | b"bash" | b"sh" | b"zsh" | b"ksh" | b"csh" | b"tcsh" | b"dash" | b"powershell" | b"pwsh"
        | b"cmd" | b"python" | b"python2" | b"python3" | b"perl" | b"ruby" | b"php" | b"nslookup" | b"systeminfo"
        | b"tasklist" | b"taskkill" | b"chmod" | b"chown" | b"telnet" | b"sudo" | b"sysinfo" | b"busybox"
        | b"certutil" | b"bitsadmin" | b"wmic" | b"xterm" | b"nmap" | b"socat" | b"passwd" | b"useradd"
        | b"usermod" | b"crontab" | b"nohup" | b"mkfifo" | b"xxd" | b"lsb_release" | b"getent" | b"printenv"
        | b"netsh" | b"schtasks" | b"cscript" | b"wscript" | b"mshta" | b"rundll32" | b"regsvr32" | b"ncat.exe"
        | b"iex" | b"gcc" | b"awk" | b"gawk" | b"sed" | b"traceroute" | b"tracert" | b"hostname" | b"killall"
        | b"pkill" | b"ifup" | b"route" | b"arp" | b"dig" | b"whois" | b"lynx" | b"ftp" | b"tftp" | b"scp" | b"ssh"
        | b"rm" => Strong,
        b"id" | b"ls" | b"base64" | b"pwd" | b"dir" | b"ver" | b"env" | b"ps" | b"who" | b"w" | b"set" | b"vol"
        | b"net" | b"uptime" | b"df" | b"du" | b"top" | b"ll" | b"cd" | b"rd" | b"md" | b"del" | b"reg" | b"sc"
        | b"tar" | b"zip" | b"cp" | b"mv" | b"ln" | b"wc" | b"nl" | b"od" | b"fg" | b"bg" => Short,
        b"cat" | b"echo" | b"sleep" | b"ping" | b"type" | b"find" | b"more" | b"less" | b"head" | b"tail" | b"kill"
        | b"date" | b"time" | b"sort" | b"start" | b"exit" | b"print" | b"printf" | b"export" | b"copy" | b"move"
        | b"at" | b"call" | b"test" | b"touch" | b"mkdir" | b"grep" | b"which" | b"whereis" | b"locate" | b"file"
        | b"uniq" | b"host" | b"reboot" | b"shutdown" | b"history" | b"rmdir" | b"ren" | b"erase" | b"attrib"
        | b"read" | b"eval" | b"exec" | b"source" | b"timeout" | b"wait" | b"tee" | b"cut" | b"nice" | b"systemctl"
        | b"service" | b"mount" | b"chdir" | b"findstr" | b"query" | b"whoami.exe" => Word,
        _ => return None,
    })
}

/// A command name read after a separator: its lower-cased base name and what follows it.
struct Command {
    name: [u8; 24],
    len: usize,
    /// The name was written with quotes, carets or backslashes inside it (`w'h'o'am'i`, `c\at`).
    quoted: bool,
    /// A path segment was globbed (`/???/c?t`).
    globbed: bool,
    /// The index just after the name.
    end: usize,
}

impl Command {
    fn name(&self) -> &[u8] {
        self.name.get(..self.len).unwrap_or_default()
    }
}

/// The longest command token we read (a path to a program included).
const MAX_TOKEN: usize = 64;

/// Reads a command token starting at `i` (after blanks). Quotes, carets and backslashes between
/// letters are dropped, as a shell (or cmd.exe) drops them; a path keeps its base name.
fn read_command(b: &[u8], mut i: usize, out: &mut Out<'_, '_>) -> Option<Command> {
    i = skip_blanks(b, i);
    let start = i;
    let mut c = Command { name: [0; 24], len: 0, quoted: false, globbed: false, end: i };
    let mut drive = false;
    let mut overflow = false;
    // The name before the first backslash escape, in case the backslash was not one (`id\n`).
    let mut escape: Option<(usize, usize)> = None;
    while let Some(&ch) = b.get(i) {
        if i - start >= MAX_TOKEN {
            overflow = true;
            break;
        }
        let next = b.get(i + 1).copied().unwrap_or(0);
        match ch {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                if c.len < c.name.len() {
                    if let Some(slot) = c.name.get_mut(c.len) {
                        *slot = ch.to_ascii_lowercase();
                    }
                    c.len += 1;
                } else {
                    overflow = true;
                }
            }
            b'\'' | b'"' | b'^' if c.len > 0 && (is_word(next) || next == ch) => c.quoted = true,
            b'\'' | b'"' if c.len == 0 && i == start && is_word(next) => {}
            b'\\' if c.len > 0 && !drive && is_word(next) && c.name().iter().all(|&x| is_word(x)) => {
                c.quoted = true;
                escape = escape.or(Some((c.len, i)));
            }
            b':' if c.len == 1 && (next == b'\\' || next == b'/') => {
                drive = true;
                c.len = 0;
            }
            b'/' | b'\\' if is_word(next) || matches!(next, b'?' | b'*' | b'.' | b'/' | b'\\') => c.len = 0,
            b'?' | b'*' => {
                c.globbed = true;
                if c.len < c.name.len() {
                    if let Some(slot) = c.name.get_mut(c.len) {
                        *slot = b'?';
                    }
                    c.len += 1;
                }
            }
            _ => break,
        }
        i += 1;
    }
    out.work(i - start);
    c.end = i;
    if overflow || i == start {
        return None;
    }
    if let Some((len, at)) = escape {
        if strength(c.name()).is_none() && c.name.get(..len).and_then(strength).is_some() {
            c.len = len;
            c.end = at;
            c.quoted = false;
        }
    }
    // `cmd.exe`, `whoami.exe`: the program name without its extension.
    if c.name().ends_with(b".exe") {
        c.len -= 4;
    }
    Some(c)
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    let limit = i + 16;
    while i < limit {
        match b.get(i) {
            Some(b' ' | b'\t') => i += 1,
            // `${IFS}` and `$IFS$9` stand for a blank.
            Some(b'$') if at_ci(b, i, b"${ifs}") => i += 6,
            Some(b'$') if at_ci(b, i, b"$ifs$9") => i += 6,
            Some(b'$') if at_ci(b, i, b"$ifs") => i += 4,
            _ => break,
        }
    }
    i
}

/// What follows a command name.
#[derive(PartialEq, Eq)]
enum After {
    /// Nothing: the end of the value, a closing `)` or backtick, or a shell comment.
    End,
    /// A shell-like argument: an option, a path, a number, a quote, a variable, a redirection.
    Argument,
    /// An ordinary word.
    Word,
    /// Another separator (`name;id;email` is a list, not a command).
    Separator,
    /// Other punctuation (`data:image/png;base64,`).
    Punct,
}

fn after(b: &[u8], end: usize) -> After {
    let i = skip_blanks(b, end);
    let Some(&c) = b.get(i) else { return After::End };
    let next = b.get(i + 1).copied().unwrap_or(0);
    match c {
        b')' | b'`' | b'#' | b'\0' | b'\n' | b'\r' => After::End,
        b'-' if next.is_ascii_alphanumeric() || next == b'-' => After::Argument,
        b'/' | b'\\' | b'~' | b'$' | b'\'' | b'"' | b'>' | b'<' | b'%' | b'*' | b'0'..=b'9' => After::Argument,
        b'.' if matches!(next, b'/' | b'\\' | b'.') => After::Argument,
        b'a'..=b'z' | b'A'..=b'Z' if next == b':' && matches!(b.get(i + 2), Some(b'\\' | b'/')) => After::Argument,
        b';' | b'|' | b'&' => After::Separator,
        _ if is_word(c) => token(b, i),
        _ => After::Punct,
    }
}

/// A plain word (`shows`, `don't`) reads as prose; a token with digits, dots, slashes or colons
/// (`evil.example`, `http://x`, `10.0.0.1`) reads as an argument.
fn token(b: &[u8], i: usize) -> After {
    let run = b
        .get(i..)
        .unwrap_or_default()
        .iter()
        .take(64)
        .take_while(|c| !c.is_ascii_whitespace() && !matches!(c, b';' | b'|' | b'&'))
        .count();
    let tok = b.get(i..i + run).unwrap_or_default();
    let end = tok
        .iter()
        .rposition(|c| !matches!(c, b'.' | b',' | b':' | b'!' | b'?' | b')' | b'"' | b'\''))
        .map_or(0, |p| p + 1);
    let tok = tok.get(..end).unwrap_or_default();
    if tok.iter().all(|c| c.is_ascii_alphabetic() || matches!(c, b'\'' | b'-')) {
        After::Word
    } else {
        After::Argument
    }
}

/// Judges a command after a separator: Some(level) at which it is an attack.
fn judge(b: &[u8], cmd: &Command, kind: TargetKind) -> Option<u8> {
    let mut s = strength(cmd.name())?;
    // Headers use `;` as a list separator (`(compatible; Nmap Scripting Engine)`): a program name
    // there needs the evidence a short name needs.
    if kind == TargetKind::Header && s == Strength::Strong {
        s = Strength::Short;
    }
    let after = after(b, cmd.end);
    Some(match (s, after) {
        (_, After::Word) if subcommand(cmd.name(), next_word(b, cmd.end)) => 1,
        (Strength::Strong, After::End | After::Argument | After::Separator) => 1,
        // `busybox nc`, `sudo id`, `nohup bash`: a program running another.
        (Strength::Strong, After::Word) if strength(word_of(&next_word(b, cmd.end))).is_some() => 1,
        (_, After::Argument) => 1,
        (Strength::Short, After::End) => 1,
        (_, After::Word) => 2,
        _ => 3,
    })
}

/// The word after a command name (up to 16 bytes), lower-cased into `buf`.
fn next_word(b: &[u8], end: usize) -> [u8; 16] {
    let mut buf = [0u8; 16];
    let i = skip_blanks(b, end);
    for (slot, &c) in buf.iter_mut().zip(b.get(i..).unwrap_or_default().iter().take_while(|&&c| is_word(c))) {
        *slot = c.to_ascii_lowercase();
    }
    buf
}

/// The bytes of a `next_word` buffer.
fn word_of(buf: &[u8; 16]) -> &[u8] {
    buf.split(|&c| c == 0).next().unwrap_or_default()
}

/// Windows administration commands whose first argument is a subcommand (`net user`, `reg query`).
fn subcommand(name: &[u8], word: [u8; 16]) -> bool {
    let word = word.split(|&c| c == 0).next().unwrap_or_default();
    match name {
        b"net" => matches!(
            word,
            b"user"
                | b"users"
                | b"localgroup"
                | b"group"
                | b"view"
                | b"share"
                | b"use"
                | b"accounts"
                | b"session"
                | b"config"
                | b"start"
                | b"stop"
        ),
        b"reg" => matches!(word, b"query" | b"add" | b"delete" | b"save" | b"export"),
        b"sc" => matches!(word, b"query" | b"create" | b"config" | b"start" | b"stop" | b"qc"),
        _ => false,
    }
}

pub(super) fn scan(out: &mut Out<'_, '_>) {
    INTERPRETERS.scan(out);
    let v = out.v;
    let b = v.decoded.as_bytes();
    out.work(b.len());
    if let Some(cmd) = read_command(b, 0, out) {
        if judge(b, &cmd, v.kind).is_some() && after(b, cmd.end) == After::Argument {
            out.hit(&LEADING);
        }
    }
    let mut i = 0;
    while i < b.len() {
        let c = b.get(i).copied().unwrap_or(0);
        let (kind, from) = match c {
            b';' | b'|' | b'&' | b'\n' | b'\r' => (Sep::Plain, run_end(b, i)),
            b'`' => (Sep::Tick, i + 1),
            b'$' if b.get(i + 1) == Some(&b'(') => (Sep::Dollar, i + 2),
            b'{' => (Sep::Brace, i + 1),
            _ => {
                i += 1;
                continue;
            }
        };
        let Some(cmd) = read_command(b, from, out) else {
            i = from.max(i + 1);
            continue;
        };
        report(b, i, kind, &cmd, out);
        i = cmd.end.max(i + 1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sep {
    Plain,
    Tick,
    Dollar,
    Brace,
}

/// The index after a run of separators and blanks (`;;`, `&&`, `| `).
fn run_end(b: &[u8], mut i: usize) -> usize {
    while let Some(b';' | b'|' | b'&' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

fn report(b: &[u8], at: usize, kind: Sep, cmd: &Command, out: &mut Out<'_, '_>) {
    if cmd.globbed && cmd.name().contains(&b'?') && cmd.len >= 2 {
        // `/???/c?t`, `/bin/ca?`: a globbed path where a command goes.
        if b.get(at..cmd.end).is_some_and(|s| s.contains(&b'/')) {
            out.hit(&EVASION);
        }
        return;
    }
    let Some(mut level) = judge(b, cmd, out.v.kind) else { return };
    if level == 3 && strength(cmd.name()) == Some(Strength::Short) && after(b, cmd.end) == After::Separator {
        // `|id|`, `';id;'`, `a;id|`: a list of names (`name;id;email`) neither starts with its
        // separator nor changes it.
        let leading =
            b.get(..at).is_some_and(|s| s.iter().all(|c| matches!(c, b' ' | b'\'' | b'"' | b';' | b'|' | b'&')));
        let next = b.get(skip_blanks(b, cmd.end)).copied();
        // `a;id;`, `a);id;`: the command closes the value, or follows a closing bracket or quote.
        let trailing = b.get(cmd.end..).is_some_and(|s| s.iter().all(|c| matches!(c, b' ' | b';' | b'|' | b'&')));
        let breakout = matches!(before(b, at), Some(b')' | b'\'' | b'"'));
        if leading || trailing || breakout || (kind == Sep::Plain && next != b.get(at).copied()) {
            level = 1;
        }
    }
    if kind == Sep::Brace {
        // `{cat,/etc/passwd}`: brace expansion runs the command with the rest as arguments.
        if b.get(cmd.end) == Some(&b',') {
            out.hit(&EVASION);
        }
        return;
    }
    if cmd.quoted && level <= 2 {
        out.hit(&EVASION);
    }
    let rule = match (kind, level) {
        (Sep::Dollar, 1 | 2) => &SUBSTITUTION,
        (Sep::Tick, 1 | 2) if tick_in_prose(b, at) => &PROSE_TICKS,
        (Sep::Tick, 1 | 2) => &SUBSTITUTION,
        (Sep::Plain, 1) => &SEPARATED,
        (Sep::Plain, 2) => &SEPARATED_LOOSE,
        _ => &SEPARATED_ANY,
    };
    out.hit(rule);
}

/// A backtick preceded by a blank (or opening a value it does not close) reads as Markdown code.
fn tick_in_prose(b: &[u8], at: usize) -> bool {
    match before(b, at) {
        Some(b'(') => before(b, at - 1) != Some(b'$'),
        Some(c) => c.is_ascii_whitespace() || c == b'`',
        None => {
            // At the start: prose if the closing backtick is followed by more text.
            let close = b.iter().skip(1).position(|&c| c == b'`').map(|p| p + 1);
            close.is_some_and(|p| p + 1 < b.len())
        }
    }
}

#[cfg(test)]
mod tests;
