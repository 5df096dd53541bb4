//! Deliberate exceptions, written where they live: `# portcullis-scan: allow RULE-ID reason`.
//!
//! A suppression applies to a finding of that rule located on the comment's own line, or on the first
//! line below a block of comment-only lines that holds it (so it can sit on the line above the
//! setting). A suppression without a reason suppresses nothing and is itself a finding; one that
//! matches no finding is reported at `info`, so stale exceptions do not pile up.

use crate::scan::finding::{Finding, Location, Rule, Severity};

pub const NO_REASON: Rule = Rule {
    id: "PC-SCAN-001",
    name: "Suppression without a reason",
    severity: Severity::Low,
    help: "Write why the exception is deliberate after the rule id: `# portcullis-scan: allow RULE-ID reason`.",
};

pub const UNUSED: Rule = Rule {
    id: "PC-SCAN-002",
    name: "Unused suppression",
    severity: Severity::Info,
    help: "Remove the comment: no finding of that rule is on its line (or the setting below it) any more.",
};

const MARK: &str = "portcullis-scan:";

/// One `# portcullis-scan: allow ...` comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub rule: String,
    pub reason: Option<String>,
    /// Where the comment is.
    pub line: usize,
    pub column: usize,
    /// The line whose findings it covers.
    pub covers: usize,
}

/// The suppressions written in `text`. A `#` starts a comment at the start of a line or after a space
/// (YAML's rule), so a `#` inside a value such as a URL fragment is not one.
pub fn parse(text: &str) -> Vec<Suppression> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(hash) = comment_start(line) else { continue };
        let comment = line[hash + 1..].trim_start();
        let Some(rest) = comment.strip_prefix(MARK) else { continue };
        let rest = rest.trim();
        let Some(rest) = rest.strip_prefix("allow") else { continue };
        let mut words = rest.trim().splitn(2, char::is_whitespace);
        let rule = words.next().unwrap_or_default().to_owned();
        let reason = words.next().map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
        let comment_only = line[..hash].trim().is_empty();
        let covers = if comment_only {
            // The first line below that is not a comment or blank.
            (i + 1..lines.len())
                .find(|&j| {
                    let t = lines[j].trim();
                    !t.is_empty() && !t.starts_with('#')
                })
                .map_or(i + 1, |j| j + 1)
        } else {
            i + 1
        };
        let column = line[..hash].chars().count() + 1;
        out.push(Suppression { rule, reason, line: i + 1, column, covers });
    }
    out
}

fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t'))
}

/// Applies `suppressions` (of the config file `file`) to `findings`: marks the findings they cover
/// and adds the findings about the suppressions themselves.
pub fn apply(findings: &mut Vec<Finding>, suppressions: &[Suppression], file: &str) {
    let mut extra = Vec::new();
    for s in suppressions {
        let at = Location { file: file.to_owned(), line: s.line, column: s.column };
        let Some(reason) = &s.reason else {
            extra.push(
                Finding::new(
                    &NO_REASON,
                    format!("suppression of {} without a reason", s.rule),
                    "A suppression must say why the exception is deliberate; this one is ignored.",
                )
                .at(at),
            );
            continue;
        };
        let mut used = false;
        for f in findings.iter_mut() {
            if f.rule == s.rule && f.suppressed.is_none() && f.location.as_ref().is_some_and(|l| l.line == s.covers) {
                f.suppressed = Some(reason.clone());
                used = true;
            }
        }
        if !used {
            extra.push(
                Finding::new(
                    &UNUSED,
                    format!("unused suppression of {}", s.rule),
                    format!("No {} finding is on line {}.", s.rule, s.covers),
                )
                .at(at),
            );
        }
    }
    findings.extend(extra);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn same_line_and_line_above() {
        let text = "a: 1 # portcullis-scan: allow PC-X-001 demo only\n\
                    # portcullis-scan: allow PC-Y-002   because   reasons \n# other comment\n\n  b: 2\n\
                    c: http://x/#portcullis-scan: allow PC-Z-003 no\n#portcullis-scan: allow PC-W-004\n";
        let s = parse(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(
            (s[0].rule.as_str(), s[0].reason.as_deref(), s[0].covers, s[0].column),
            ("PC-X-001", Some("demo only"), 1, 6)
        );
        assert_eq!(
            (s[1].rule.as_str(), s[1].reason.as_deref(), s[1].covers),
            ("PC-Y-002", Some("because   reasons"), 5)
        );
        assert_eq!((s[2].rule.as_str(), s[2].reason.as_deref()), ("PC-W-004", None));
    }
}
