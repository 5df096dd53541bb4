//! What a scan reports, shared by the config audit (`scan config`) and the live scan (`scan api`): a
//! [`Finding`] of a [`Rule`] at a [`Severity`], located in a file (config audit) or at a URL (live scan),
//! possibly suppressed with a reason. The output formats (table, JSON, SARIF) read only these types.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

/// How bad a finding is: the security events' severity (`--fail-on` compares its order).
pub use crate::events::Severity;

/// A place in a file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A kind of finding: its id (`PC-AUTHZ-001`), short name, default severity and the fix in general.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub help: &'static str,
}

/// One thing a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's id.
    pub rule: Cow<'static, str>,
    pub severity: Severity,
    /// One line: what is wrong.
    pub title: String,
    /// The details: which setting, which route, why it matters.
    pub message: String,
    /// Where in the config (config audit); `None` for a live finding, which names its URL in `evidence`
    /// or `uri`.
    pub location: Option<Location>,
    /// For a finding with no file: the URL (or other address) it was seen at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// How to fix it, in this case.
    pub fix: String,
    /// A taxonomy entry, e.g. an OWASP API Security Top 10 2023 category (`API1:2023`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// What shows it (a request and answer, a config value with secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Set when a deliberate exception was declared: the reason given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<String>,
}

impl Finding {
    /// A finding of `rule` at its default severity, without location; fill the rest with the builders.
    pub fn new(rule: &Rule, title: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            rule: Cow::Borrowed(rule.id),
            severity: rule.severity,
            title: title.into(),
            message: message.into(),
            location: None,
            uri: None,
            fix: rule.help.to_owned(),
            category: None,
            evidence: None,
            suppressed: None,
        }
    }

    pub fn at(mut self, location: Location) -> Finding {
        self.location = Some(location);
        self
    }

    pub fn severity(mut self, severity: Severity) -> Finding {
        self.severity = severity;
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self
    }

    pub fn category(mut self, category: impl Into<String>) -> Finding {
        self.category = Some(category.into());
        self
    }

    pub fn evidence(mut self, evidence: impl Into<String>) -> Finding {
        self.evidence = Some(evidence.into());
        self
    }

    pub fn uri(mut self, uri: impl Into<String>) -> Finding {
        self.uri = Some(uri.into());
        self
    }

    /// Not suppressed, and at or above `threshold`: what `--fail-on` counts.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.suppressed.is_none() && self.severity >= threshold
    }
}

/// Sorts findings for output: most severe first, then by place, then by rule.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| {
                let key = |f: &Finding| f.location.as_ref().map(|l| (l.file.clone(), l.line, l.column));
                key(a).cmp(&key(b))
            })
            .then_with(|| a.rule.cmp(&b.rule))
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Info < Severity::Low && Severity::High < Severity::Critical);
        assert_eq!("HIGH".parse::<Severity>().unwrap(), Severity::High);
        assert_eq!(" medium ".parse::<Severity>().unwrap(), Severity::Medium);
        assert!("severe".parse::<Severity>().unwrap_err().contains("one of"));
        assert_eq!(serde_json::to_value(Severity::Critical).unwrap(), "critical");
    }

    #[test]
    fn suppressed_findings_never_fail() {
        const R: Rule = Rule { id: "PC-T-001", name: "t", severity: Severity::High, help: "fix it" };
        let mut f = Finding::new(&R, "t", "m");
        assert!(f.fails(Severity::High) && !f.fails(Severity::Critical));
        f.suppressed = Some("demo".into());
        assert!(!f.fails(Severity::Info));
    }
}
