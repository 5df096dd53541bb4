//! Small byte helpers and a `regex` set with one rule per pattern, shared by the detectors.

use regex::bytes::{RegexSet, RegexSetBuilder};

use super::super::Rule;
use super::Out;

/// Whether `b[i..]` starts with `pat`, ASCII case-insensitively.
pub(super) fn at_ci(b: &[u8], i: usize, pat: &[u8]) -> bool {
    b.get(i..i.saturating_add(pat.len())).is_some_and(|s| s.eq_ignore_ascii_case(pat))
}

/// A byte that can be part of an identifier or a command name.
pub(super) fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The byte before `i`, if any.
pub(super) fn before(b: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| b.get(j).copied())
}

/// Patterns compiled once into one `RegexSet` (one linear pass reports every pattern that matches),
/// each reporting its rule. The patterns are ASCII and compiled without Unicode classes (`\b`, `\w`,
/// `\s` and case folding are ASCII), so the lazy DFA never has to give up on a non-ASCII value.
pub(super) struct RuleSet {
    set: Option<RegexSet>,
    rules: Vec<&'static Rule>,
}

impl RuleSet {
    pub(super) fn new(patterns: &[(&str, &'static Rule)]) -> RuleSet {
        let set = RegexSetBuilder::new(patterns.iter().map(|(p, _)| *p)).unicode(false).build().ok();
        RuleSet { set, rules: patterns.iter().map(|(_, r)| *r).collect() }
    }

    #[cfg(test)]
    pub(super) fn compiled(&self) -> bool {
        self.set.is_some()
    }

    /// Runs every pattern over the decoded value, reporting those that match.
    pub(super) fn scan(&self, out: &mut Out<'_, '_>) {
        let Some(set) = &self.set else { return };
        let text = out.v.decoded;
        out.work(text.len());
        let matches = set.matches(text.as_bytes());
        if !matches.matched_any() {
            return;
        }
        for i in matches.iter() {
            if let Some(rule) = self.rules.get(i) {
                out.hit(rule);
            }
        }
    }
}
