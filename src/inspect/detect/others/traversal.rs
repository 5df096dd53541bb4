//! Path traversal and local file inclusion: `../` and `..\` steps (with the filter evasions
//! `....//`, `..;/`, overlong and encoded separators left over after decoding), sensitive system
//! files (`/etc/passwd`, `/proc/self/`, `win.ini`, `WEB-INF/web.xml`), and stream wrappers
//! (`php://filter`, `file://`, `zip://`, `phar://`).
//!
//! One `../` inside prose or a Markdown link is common in benign content, so level 1 asks for a chain
//! of two steps, a step at the start of the value, or a step in a file name; a sensitive file named in
//! prose (after a blank) is level 2.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::super::{Category, Rule, TargetKind};
use super::text::{at_ci, before, is_word, RuleSet};
use super::Out;

static CHAIN: Rule =
    Rule { id: 4001, category: Category::Traversal, paranoia: 1, score: 5, name: "two or more ../ steps" };
static LEADING_STEP: Rule = Rule {
    id: 4002,
    category: Category::Traversal,
    paranoia: 1,
    score: 5,
    name: "value or file name starting with a ../ step",
};
static SENSITIVE: Rule =
    Rule { id: 4003, category: Category::Traversal, paranoia: 1, score: 5, name: "sensitive system file or directory" };
static WRAPPER: Rule = Rule {
    id: 4004,
    category: Category::Traversal,
    paranoia: 1,
    score: 5,
    name: "stream wrapper (php://, file://, zip://, phar://, expect://)",
};
static STEP: Rule = Rule { id: 4101, category: Category::Traversal, paranoia: 2, score: 5, name: "a ../ step" };
static SENSITIVE_PROSE: Rule = Rule {
    id: 4102,
    category: Category::Traversal,
    paranoia: 2,
    score: 3,
    name: "sensitive system file named in prose",
};
static SYSTEM_VALUE: Rule = Rule {
    id: 4005,
    category: Category::Traversal,
    paranoia: 1,
    score: 5,
    name: "value that is a path into /etc, /proc, /sys, /root or /boot",
};
static SYSTEM_PATH: Rule = Rule {
    id: 4201,
    category: Category::Traversal,
    paranoia: 3,
    score: 3,
    name: "absolute path into a system directory",
};

pub(super) const TRIGGERS: &[&str] = &[
    "..",
    "%2e",
    "0x2e",
    "%c0",
    "%c1",
    "%e0%80",
    "%uff0e",
    "%u002e",
    "\u{ff0e}",
    "\u{fffd}",
    "etc/",
    "proc/",
    "/var/",
    "/root/",
    "/home/",
    "/usr/",
    "win.ini",
    "boot.ini",
    "system.ini",
    "system32",
    "web-inf",
    "meta-inf",
    ".ht",
    ".git/",
    ".svn/",
    ".ssh",
    ".aws",
    ".env",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "authorized_keys",
    "_history",
    ".bashrc",
    "wp-config",
    "localsettings",
    "windows",
    "inetpub",
    "applicationhost",
    "web.config",
    "php.ini",
    "my.cnf",
    "httpd.conf",
    "nginx.conf",
    "docker.sock",
    "ntds.dit",
    "://",
    "file:",
    "jar:",
    "c:\\",
    "c:/",
];

/// Sensitive names and the level they count at when not written in prose.
const SENSITIVE_NAMES: &[(&str, u8)] = &[
    ("etc/passwd", 1),
    ("etc/shadow", 1),
    ("etc/group", 1),
    ("etc/gshadow", 1),
    ("etc/sudoers", 1),
    ("etc/issue", 1),
    ("etc/crontab", 1),
    ("etc/ssh/", 1),
    ("etc/security/", 1),
    ("etc/master.passwd", 1),
    ("etc/apache2/", 1),
    ("etc/httpd/", 1),
    ("etc/nginx/", 1),
    ("etc/mysql/", 1),
    ("etc/php", 1),
    ("etc/environment", 1),
    ("etc/profile", 1),
    ("etc/fstab", 1),
    ("etc/hosts", 1),
    ("etc/hostname", 1),
    ("/repair/sam", 1),
    ("\\repair\\sam", 1),
    ("etc/resolv.conf", 2),
    ("etc/motd", 2),
    ("proc/self/", 1),
    ("proc/version", 1),
    ("proc/cmdline", 1),
    ("proc/mounts", 1),
    ("proc/net/", 1),
    ("proc/sched_debug", 1),
    ("proc/1/", 1),
    ("/var/log/", 1),
    ("/var/run/secrets", 1),
    ("/var/www/", 2),
    ("/root/", 2),
    ("/.aws/credentials", 1),
    (".aws/credentials", 1),
    ("/.ssh/", 1),
    ("id_rsa", 1),
    ("id_dsa", 1),
    ("id_ecdsa", 1),
    ("id_ed25519", 1),
    ("authorized_keys", 1),
    (".bash_history", 1),
    (".zsh_history", 1),
    (".mysql_history", 1),
    (".bashrc", 2),
    ("/.htaccess", 1),
    ("/.htpasswd", 1),
    (".htpasswd", 1),
    ("/.git/config", 1),
    ("/.git/head", 1),
    ("/.svn/entries", 1),
    ("/.env", 1),
    ("wp-config.php", 1),
    ("localsettings.php", 2),
    ("web-inf/", 1),
    ("meta-inf/", 1),
    ("win.ini", 1),
    ("boot.ini", 1),
    ("system.ini", 1),
    ("windows\\system32", 1),
    ("windows/system32", 1),
    ("system32\\config", 1),
    ("c:\\windows", 1),
    ("c:/windows", 1),
    ("\\windows\\", 2),
    ("inetpub\\", 1),
    ("inetpub/", 1),
    ("applicationhost.config", 1),
    ("web.config", 2),
    ("php.ini", 1),
    ("my.cnf", 1),
    ("httpd.conf", 1),
    ("nginx.conf", 2),
    ("docker.sock", 1),
    ("ntds.dit", 1),
];

static NAMES: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .kind(Some(AhoCorasickKind::DFA))
        .build(SENSITIVE_NAMES.iter().map(|(n, _)| n))
        .ok()
});

static PATTERNS: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::new(&[
        (
            r"(?i)\b(?:php|file|zip|phar|expect|glob|data|zlib|compress\.zlib|compress\.bzip2|ogg|rar|ssh2\.(?:shell|exec|tunnel|sftp|scp))://",
            &WRAPPER,
        ),
        (r"(?i)\bjar:(?:file|https?):", &WRAPPER),
        (r"(?i)(?:^|[^a-z0-9])file:[/\\]", &WRAPPER),
        (r"(?i)^\s*/+(?:etc|proc|sys|root|boot)/+[\w.-]", &SYSTEM_VALUE),
        (
            r"(?i)(?:^|[\s=:'\x22])(?:/(?:etc|proc|var|root|usr|boot|sys|dev)/|[a-z]:\\(?:windows|winnt|users)\\)",
            &SYSTEM_PATH,
        ),
    ])
});

pub(super) fn scan(out: &mut Out<'_, '_>) {
    PATTERNS.scan(out);
    let v = out.v;
    let b = v.decoded.as_bytes();
    dot_dot(b, out);
    if let Some(ac) = NAMES.as_ref() {
        out.work(b.len());
        for m in ac.find_iter(b) {
            let Some(&(_, level)) = SENSITIVE_NAMES.get(m.pattern().as_usize()) else { continue };
            let prev = before(b, m.start());
            // `process.env`, `mywin.ini`: part of a longer name.
            if prev.is_some_and(|c| is_word(c) && !b.get(m.start()).is_some_and(|&s| s == b'/' || s == b'\\')) {
                continue;
            }
            // `win.initial`: the name goes on.
            let last = SENSITIVE_NAMES.get(m.pattern().as_usize()).and_then(|(n, _)| n.bytes().last());
            if last.is_some_and(is_word) && b.get(m.end()).copied().is_some_and(is_word) {
                continue;
            }
            // Prose names a file after a blank: `the file /etc/hosts`.
            let path_start = if matches!(prev, Some(b'/' | b'\\')) { m.start() - 1 } else { m.start() };
            let prose = before(b, path_start).is_some_and(|c| c.is_ascii_whitespace());
            let rule = match (level, prose) {
                (1, false) => &SENSITIVE,
                _ => &SENSITIVE_PROSE,
            };
            out.hit(rule);
        }
    }
}

/// Finds `..` steps (dots in any spelling a decoder may have left) and reports chains, leading
/// steps and single steps.
fn dot_dot(b: &[u8], out: &mut Out<'_, '_>) {
    out.work(b.len());
    let mut i = 0;
    while i < b.len() {
        if dot(b, i) == 0 && fffd_pairs(b, i).0 < 2 {
            i += 1;
            continue;
        }
        let (steps, end) = chain(b, i);
        if steps >= 2 {
            out.hit(&CHAIN);
        } else if steps == 1 {
            let lead = b.get(..i).is_some_and(|s| s.iter().all(|&c| matches!(c, b'/' | b'\\' | b' ' | b'.')));
            if lead || out.v.kind == TargetKind::FileName || matches!(before(b, i), Some(b'=' | b'\'' | b'"')) {
                out.hit(&LEADING_STEP);
            } else {
                out.hit(&STEP);
            }
        }
        i = end.max(i + 1);
    }
}

/// The length of a dot at `i`: `.`, or an encoding of it a decoder left behind (`%2e`, `0x2e`,
/// overlong `%c0%2e` / `%c0%ae`, `%uff0e`, the full-width dot). 0 if none.
fn dot(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'.') => 1,
        Some(b'%') if at_ci(b, i, b"%2e") => 3,
        Some(b'%') if at_ci(b, i, b"%c0%2e") || at_ci(b, i, b"%c0%ae") || at_ci(b, i, b"%c1%ae") => 6,
        Some(b'%') if at_ci(b, i, b"%uff0e") || at_ci(b, i, b"%u002e") => 6,
        Some(b'%') if at_ci(b, i, b"%e0%80%ae") => 9,
        Some(b'0') if at_ci(b, i, b"0x2e") => 4,
        Some(0xef) if b.get(i..i + 3) == Some("\u{ff0e}".as_bytes()) => 3,
        // An overlong dot that a lossy decoder turned into U+FFFD and its trailing byte (`%c0%2e`
        // is "\u{fffd}.").
        Some(0xef) if b.get(i..i + 3) == Some("\u{fffd}".as_bytes()) && b.get(i + 3) == Some(&b'.') => 4,
        _ => 0,
    }
}

/// The number of consecutive pairs of U+FFFD at `i` and the index after them.
fn fffd_pairs(b: &[u8], i: usize) -> (usize, usize) {
    const PAIR: &[u8] = "\u{fffd}\u{fffd}".as_bytes();
    let n = b.get(i..).unwrap_or_default().chunks_exact(PAIR.len()).take_while(|c| *c == PAIR).count();
    (n, i + n * PAIR.len())
}

/// The number of consecutive dots at `i` and the index after them.
fn dots(b: &[u8], mut i: usize) -> (usize, usize) {
    let mut n = 0;
    loop {
        let len = dot(b, i);
        if len == 0 {
            return (n, i);
        }
        n += 1;
        i += len;
    }
}

/// Counts the `..` steps of a chain starting at `i`; returns them and the index after the chain.
fn chain(b: &[u8], mut i: usize) -> (u32, usize) {
    let mut steps = 0;
    loop {
        let (n, after) = dots(b, i);
        if n == 0 {
            // Overlong dots and slashes (`%c0%ae`, `%c0%af`) that a lossy decoder turned into pairs
            // of U+FFFD: each dot-dot-slash is three pairs, or two before a real separator.
            let (k, end) = fffd_pairs(b, i);
            if k >= 2 {
                let sep = separators(b, end);
                steps += u32::try_from(k / 3).unwrap_or(u32::MAX) + u32::from(k % 3 == 2 && sep.is_some());
                match sep {
                    Some(next) => {
                        i = next;
                        continue;
                    }
                    None => return (steps, end),
                }
            }
        }
        let Some(next) = separators(b, after).filter(|_| n >= 1) else {
            return (steps, after.max(i + 1));
        };
        // `./` between steps (`..././`) changes nothing.
        if n >= 2 {
            steps += 1;
        }
        i = next;
    }
}

/// After dots: one or more separators (`/`, `\`, `;/` as Tomcat reads it, encodings a decoder left
/// behind, the replacement character of an overlong sequence). Returns the index after them.
fn separators(b: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    loop {
        let step = match b.get(i) {
            Some(b'/' | b'\\') => 1,
            Some(b';') if matches!(b.get(i + 1), Some(b'/' | b'\\')) => 2,
            Some(b'%') if at_ci(b, i, b"%2f") || at_ci(b, i, b"%5c") => 3,
            Some(b'%') if at_ci(b, i, b"%c0%af") || at_ci(b, i, b"%c1%9c") || at_ci(b, i, b"%c0%2f") => 6,
            Some(b'%') if at_ci(b, i, b"%c0%5c") || at_ci(b, i, b"%u2215") || at_ci(b, i, b"%u2216") => 6,
            Some(b'%') if at_ci(b, i, b"%uf025") || at_ci(b, i, b"%uefc8") || at_ci(b, i, b"%uff0f") => 6,
            Some(b'%') if at_ci(b, i, b"%e0%80%af") => 9,
            Some(b'0') if at_ci(b, i, b"0x2f") || at_ci(b, i, b"0x5c") => 4,
            Some(0xef) if b.get(i..i + 3) == Some("\u{fffd}".as_bytes()) => 3,
            Some(0xe2) if b.get(i..i + 3) == Some("\u{2215}".as_bytes()) => 3,
            Some(0xef) if b.get(i..i + 3) == Some("\u{ff0f}".as_bytes()) => 3,
            _ => break,
        };
        i += step;
    }
    (i > start).then_some(i)
}

#[cfg(test)]
mod tests;
