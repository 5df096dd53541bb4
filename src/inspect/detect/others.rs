//! The detectors other than SQL injection and XSS: command injection, path traversal and file
//! inclusion, SSRF and remote file inclusion, template and expression injection, NoSQL operators,
//! XPath and LDAP injection, deserialization markers, and scanner fingerprints.
//!
//! One Aho-Corasick pass over the decoded value (ASCII case-insensitive) finds the trigger strings of
//! every detector at once; a detector runs only when one of its triggers occurs, so a benign value
//! costs one linear pass and no allocation. Each detector then confirms with hand-written scanners or
//! a `regex` set (linear time, no backtracking). Detectors read `decoded` (and match case-insensitively
//! themselves) rather than `folded`, because folding collapses comments and whitespace that some of
//! these languages give meaning to (`#{`, `//*`, a newline as a shell separator).
//!
//! This module never decides whether a request is blocked: it only reports rules to [`Hits`].

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use super::{Hits, Rule, TargetKind, View};

mod cmdi;
mod deser;
mod ldap;
mod nosql;
mod scanner;
mod ssrf;
mod template;
mod text;
mod traversal;
mod xpath;

/// What a detector sees: the value, and where its hits and work go. Reports each rule at most once
/// per value.
pub(super) struct Out<'o, 'v> {
    pub(super) v: &'o View<'v>,
    hits: &'o mut Hits,
    /// `hits.matched` before this value, so a rule is reported once per value.
    start: usize,
}

impl Out<'_, '_> {
    pub(super) fn hit(&mut self, rule: &'static Rule) {
        let seen = self.hits.matched.get(self.start..).is_some_and(|m| m.iter().any(|(r, _)| std::ptr::eq(*r, rule)));
        if !seen {
            self.hits.hit(rule, self.v);
        }
    }

    /// Counts `bytes` looked at.
    pub(super) fn work(&mut self, bytes: usize) {
        self.hits.work = self.hits.work.saturating_add(bytes as u64);
    }
}

const CMDI: u16 = 1;
const TRAVERSAL: u16 = 1 << 1;
const SSRF: u16 = 1 << 2;
const TEMPLATE: u16 = 1 << 3;
const NOSQL: u16 = 1 << 4;
const XPATH: u16 = 1 << 5;
const LDAP: u16 = 1 << 6;
const DESER: u16 = 1 << 7;
const SCANNER: u16 = 1 << 8;
const ALL: u16 = (1 << 9) - 1;

/// The trigger strings of every detector, in one automaton, each with the detectors it wakes.
struct Prefilter {
    ac: AhoCorasick,
    wakes: Vec<u16>,
}

static PREFILTER: LazyLock<Option<Prefilter>> = LazyLock::new(|| {
    let groups: [(&[&str], u16); 9] = [
        (cmdi::TRIGGERS, CMDI),
        (traversal::TRIGGERS, TRAVERSAL),
        (ssrf::TRIGGERS, SSRF),
        (template::TRIGGERS, TEMPLATE),
        (nosql::TRIGGERS, NOSQL),
        (xpath::TRIGGERS, XPATH),
        (ldap::TRIGGERS, LDAP),
        (deser::TRIGGERS, DESER),
        (scanner::TRIGGERS, SCANNER),
    ];
    let mut patterns: Vec<String> = Vec::new();
    let mut wakes: Vec<u16> = Vec::new();
    for (list, bit) in groups {
        for p in list {
            let p = p.to_ascii_lowercase();
            match patterns.iter().position(|q| *q == p) {
                Some(i) => {
                    if let Some(w) = wakes.get_mut(i) {
                        *w |= bit;
                    }
                }
                None => {
                    patterns.push(p);
                    wakes.push(bit);
                }
            }
        }
    }
    let ac =
        AhoCorasick::builder().ascii_case_insensitive(true).kind(Some(AhoCorasickKind::DFA)).build(&patterns).ok()?;
    Some(Prefilter { ac, wakes })
});

/// A detector's entry point.
type Detector = fn(&mut Out<'_, '_>);

/// Runs every detector of this module on one value.
pub fn scan(v: &View<'_>, hits: &mut Hits) {
    let text = v.decoded;
    // Some targets wake a detector by their kind alone: a key or name may be a NoSQL operator, a
    // header may be a scanner's User-Agent.
    let mut wake = match v.kind {
        TargetKind::JsonKey | TargetKind::QueryName | TargetKind::FormName => NOSQL,
        TargetKind::Header => SCANNER,
        _ => 0,
    };
    // A command at the very start of a value (level 2) needs no separator to trigger on.
    if v.paranoia >= 2 {
        wake |= CMDI;
    }
    hits.work = hits.work.saturating_add(text.len() as u64);
    match PREFILTER.as_ref() {
        Some(p) => {
            for m in p.ac.find_overlapping_iter(text) {
                wake |= p.wakes.get(m.pattern().as_usize()).copied().unwrap_or(ALL);
                if wake == ALL {
                    break;
                }
            }
        }
        None => wake = ALL,
    }
    if wake == 0 {
        return;
    }
    let start = hits.matched.len();
    let mut out = Out { v, hits, start };
    let detectors: [(u16, Detector); 9] = [
        (CMDI, cmdi::scan),
        (TRAVERSAL, traversal::scan),
        (SSRF, ssrf::scan),
        (TEMPLATE, template::scan),
        (NOSQL, nosql::scan),
        (XPATH, xpath::scan),
        (LDAP, ldap::scan),
        (DESER, deser::scan),
        (SCANNER, scanner::scan),
    ];
    for (bit, detector) in detectors {
        if wake & bit != 0 {
            detector(&mut out);
        }
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! Builds views the way the normaliser would (for ASCII test input) and runs the detectors.

    use super::super::{Hits, TargetKind, View};

    /// The ids of the rules `decoded` matches at `paranoia`, as kind `kind`.
    pub(crate) fn ids_at(decoded: &str, kind: TargetKind, paranoia: u8) -> Vec<u32> {
        let folded = fold(decoded);
        let v = View { raw: decoded, decoded, folded: &folded, kind, paranoia };
        let mut hits = Hits::default();
        super::scan(&v, &mut hits);
        hits.matched.iter().map(|(r, _)| r.id).collect()
    }

    /// The ids of the rules that would block (score above zero) at level 1, as a query value.
    pub(crate) fn ids(decoded: &str) -> Vec<u32> {
        ids_at(decoded, TargetKind::QueryValue, 1)
    }

    /// Whether `decoded` scores at paranoia level 1 as kind `kind`.
    pub(crate) fn blocks(decoded: &str, kind: TargetKind) -> bool {
        let folded = fold(decoded);
        let v = View { raw: decoded, decoded, folded: &folded, kind, paranoia: 1 };
        let mut hits = Hits::default();
        super::scan(&v, &mut hits);
        hits.matched.iter().any(|(r, _)| r.score > 0)
    }

    /// The work `decoded` costs at paranoia 4 (every rule).
    pub(crate) fn work(decoded: &str, kind: TargetKind) -> u64 {
        work_at(decoded, kind, 4)
    }

    /// The work `decoded` costs at `paranoia`.
    pub(crate) fn work_at(decoded: &str, kind: TargetKind, paranoia: u8) -> u64 {
        let folded = fold(decoded);
        let v = View { raw: decoded, decoded, folded: &folded, kind, paranoia };
        let mut hits = Hits::default();
        super::scan(&v, &mut hits);
        hits.work
    }

    fn fold(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut space = false;
        for c in s.chars().flat_map(char::to_lowercase) {
            if c.is_whitespace() {
                if !space {
                    out.push(' ');
                }
                space = true;
            } else {
                out.push(c);
                space = false;
            }
        }
        out
    }

    /// Asserts that the work of a 1 MiB input is about 16 times that of a 64 KiB one.
    pub(crate) fn assert_linear(unit: &str, kind: TargetKind) {
        let small = unit.repeat(64 * 1024 / unit.len().max(1));
        let large = unit.repeat(1024 * 1024 / unit.len().max(1));
        let (ws, wl) = (work(&small, kind), work(&large, kind));
        let ratio = wl as f64 / ws.max(1) as f64;
        assert!((15.0..=17.5).contains(&ratio), "{unit:?}: work {ws} -> {wl}, ratio {ratio}");
        assert!(wl <= 64 * large.len() as u64, "{unit:?}: {wl} bytes of work for {}", large.len());
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_linear, ids, work_at};
    use super::TargetKind;

    #[test]
    fn every_automaton_builds() {
        assert!(super::PREFILTER.is_some());
    }

    #[test]
    fn a_plain_value_costs_one_pass() {
        let s = "just some ordinary text about cats and dogs, nothing else";
        assert!(ids(s).is_empty());
        assert_eq!(work_at(s, TargetKind::QueryValue, 1), s.len() as u64);
    }

    #[test]
    fn pathological_inputs_cost_linear_work() {
        for unit in [
            "'",
            "<",
            "[",
            "{",
            "(",
            "%25",
            "../",
            "..\\",
            ";",
            "|",
            "&",
            "`",
            "$(",
            "${",
            "{{",
            "#{",
            "%{",
            "<%",
            "${${",
            "://",
            "http://",
            "$ne",
            "[$ne]",
            ")(",
            "*)(",
            "a:1:{",
            "O:1:\"",
            "rO0AB",
            "//*[",
            "::",
            ";id",
            "|cat /",
            "${jndi:",
            "http://127.0.0.1/",
            "0x7f.",
            "[::",
            "\n",
            "\\",
            "/etc/passwd",
            "{{7*7}}",
            "cat\\",
            "''\"\"",
            "@",
        ] {
            assert_linear(unit, TargetKind::QueryValue);
        }
        assert_linear("$ne", TargetKind::JsonKey);
        assert_linear("sqlmap", TargetKind::Header);
    }

    proptest::proptest! {
        /// Any value, however hostile its mix of metacharacters, is scanned without a panic in work
        /// linear in its length.
        #[test]
        fn any_value_costs_linear_work(s in "[a-z0-9 ./\\\\%{}$#@()\\[\\]|;&`'\"<>:=*!?\n-]{0,400}") {
            for kind in [TargetKind::QueryValue, TargetKind::JsonKey, TargetKind::Header, TargetKind::FileName] {
                let w = super::testing::work(&s, kind);
                proptest::prop_assert!(w <= 40 * s.len() as u64 + 2048, "{w} for {} bytes", s.len());
            }
        }
    }
}
