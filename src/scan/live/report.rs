//! Findings of a live scan and their reports: a table, JSON, and one self-contained HTML file (inline
//! CSS, no script, no external resource). Evidence is redacted before it is stored in a finding: the
//! values of credential headers, the test principals' own secrets wherever they appear, anything shaped
//! like a JWT, and the values of JSON fields named like secrets.

use serde::Serialize;
use std::fmt::Write as _;

pub use crate::scan::finding::Severity;

/// OWASP API Security Top 10 2023.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Owasp {
    API1,
    API2,
    API3,
    API4,
    API5,
    API6,
    API7,
    API8,
    API9,
    API10,
}

impl Owasp {
    pub const ALL: [Owasp; 10] = [
        Owasp::API1,
        Owasp::API2,
        Owasp::API3,
        Owasp::API4,
        Owasp::API5,
        Owasp::API6,
        Owasp::API7,
        Owasp::API8,
        Owasp::API9,
        Owasp::API10,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Owasp::API1 => "API1:2023",
            Owasp::API2 => "API2:2023",
            Owasp::API3 => "API3:2023",
            Owasp::API4 => "API4:2023",
            Owasp::API5 => "API5:2023",
            Owasp::API6 => "API6:2023",
            Owasp::API7 => "API7:2023",
            Owasp::API8 => "API8:2023",
            Owasp::API9 => "API9:2023",
            Owasp::API10 => "API10:2023",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Owasp::API1 => "Broken Object Level Authorization",
            Owasp::API2 => "Broken Authentication",
            Owasp::API3 => "Broken Object Property Level Authorization",
            Owasp::API4 => "Unrestricted Resource Consumption",
            Owasp::API5 => "Broken Function Level Authorization",
            Owasp::API6 => "Unrestricted Access to Sensitive Business Flows",
            Owasp::API7 => "Server Side Request Forgery",
            Owasp::API8 => "Security Misconfiguration",
            Owasp::API9 => "Improper Inventory Management",
            Owasp::API10 => "Unsafe Consumption of APIs",
        }
    }
}

/// One request and its answer, redacted and truncated.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub request: String,
    pub response: String,
}

/// One finding of the live scan.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// A stable rule id (`live.bola`, `live.no-auth`, ...).
    pub rule: &'static str,
    pub owasp: Owasp,
    pub severity: Severity,
    /// The operation (`GET /orders/{id}`) or the place (`GET /debug`, `TLS`).
    pub target: String,
    pub title: String,
    pub detail: String,
    pub fix: &'static str,
    pub evidence: Vec<Evidence>,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub base_url: String,
    pub operations: usize,
    pub requests: u64,
    /// True when the request bound stopped the scan before every probe ran.
    pub truncated: bool,
    pub seconds: f64,
    pub findings: Vec<Finding>,
    /// Probes that could not run, and why (no second principal for BOLA, no https for TLS, ...).
    pub notes: Vec<String>,
}

impl Report {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<9} {:<11} {:<24} {:<34} title", "severity", "owasp", "rule", "target");
        let mut sorted: Vec<&Finding> = self.findings.iter().collect();
        sorted.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.owasp.cmp(&b.owasp)));
        for f in sorted {
            let _ = writeln!(
                out,
                "{:<9} {:<11} {:<24} {:<34} {}",
                f.severity.as_str(),
                f.owasp.code(),
                f.rule,
                f.target,
                f.title
            );
        }
        let _ = writeln!(
            out,
            "\n{} findings ({} critical, {} high, {} medium, {} low, {} info); {} operations, {} requests in {:.1}s{}",
            self.findings.len(),
            self.count(Severity::Critical),
            self.count(Severity::High),
            self.count(Severity::Medium),
            self.count(Severity::Low),
            self.count(Severity::Info),
            self.operations,
            self.requests,
            self.seconds,
            if self.truncated { " (stopped at --max-requests: some probes did not run)" } else { "" }
        );
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One self-contained HTML page: every value HTML-escaped, no script, no external resource.
    pub fn html(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
             <title>Portcullis API scan</title><style>\
             body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}\
             table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}\
             pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}\
             .critical,.high{color:#fff;background:#b00020}.medium{background:#f4b400}.low{background:#cde}.info{background:#eee}\
             .sev{padding:0 .4rem;border-radius:.2rem;font-weight:bold}section{margin-bottom:2rem}\
             </style></head><body>\n<h1>Portcullis API scan</h1>\n",
        );
        let _ = writeln!(
            out,
            "<p>Target <code>{}</code>: {} operations, {} requests in {:.1} s{}.</p>",
            esc(&self.base_url),
            self.operations,
            self.requests,
            self.seconds,
            if self.truncated { " (stopped at the request bound: some probes did not run)" } else { "" }
        );
        out.push_str("<h2>Summary</h2>\n<table><tr><th>severity</th><th>findings</th></tr>\n");
        for s in [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Info] {
            let _ = writeln!(
                out,
                "<tr><td><span class=\"sev {0}\">{0}</span></td><td>{1}</td></tr>",
                s.as_str(),
                self.count(s)
            );
        }
        out.push_str("</table>\n<table><tr><th>OWASP API Top 10 2023</th><th>findings</th></tr>\n");
        for c in Owasp::ALL {
            let n = self.findings.iter().filter(|f| f.owasp == c).count();
            let _ = writeln!(out, "<tr><td>{} {}</td><td>{n}</td></tr>", c.code(), esc(c.title()));
        }
        out.push_str("</table>\n");
        for c in Owasp::ALL {
            let mut here: Vec<&Finding> = self.findings.iter().filter(|f| f.owasp == c).collect();
            if here.is_empty() {
                continue;
            }
            here.sort_by_key(|f| std::cmp::Reverse(f.severity));
            let _ = writeln!(out, "<section><h2>{} {}</h2>", c.code(), esc(c.title()));
            for f in here {
                let _ = writeln!(
                    out,
                    "<h3><span class=\"sev {}\">{}</span> {} <code>{}</code></h3>\n<p>{}</p>\n<p><b>Rule</b> <code>{}</code>. \
                     <b>Fix</b>: {}</p>",
                    f.severity.as_str(),
                    f.severity.as_str(),
                    esc(&f.title),
                    esc(&f.target),
                    esc(&f.detail),
                    esc(f.rule),
                    esc(f.fix)
                );
                for e in &f.evidence {
                    let _ = writeln!(
                        out,
                        "<details><summary>evidence</summary><h4>request</h4><pre>{}</pre><h4>response</h4><pre>{}</pre></details>",
                        esc(&e.request),
                        esc(&e.response)
                    );
                }
            }
            out.push_str("</section>\n");
        }
        if !self.notes.is_empty() {
            out.push_str("<h2>Notes</h2><ul>\n");
            for n in &self.notes {
                let _ = writeln!(out, "<li>{}</li>", esc(n));
            }
            out.push_str("</ul>\n");
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// HTML escaping of text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Removes secrets from evidence text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// The principals' credential values (and their halves: a `Bearer` token's token).
    secrets: Vec<String>,
}

/// Header names whose values are never shown.
pub fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "dpop")
        || ["key", "token", "secret", "session", "auth", "password", "signature"].iter().any(|w| n.contains(w))
}

fn jwt_shape() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    #[allow(clippy::expect_used)]
    RE.get_or_init(|| {
        regex::Regex::new(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*").expect("constant pattern")
    })
}

fn secret_field() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    #[allow(clippy::expect_used)]
    RE.get_or_init(|| {
        regex::Regex::new(
            r#"(?i)("[a-z_]*(?:password|passwd|secret|token|api_?key|apikey|private_key|credential)[a-z_]*"\s*:\s*)"[^"]*""#,
        )
        .expect("constant pattern")
    })
}

impl Redactor {
    pub fn new(secrets: Vec<String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        let out = jwt_shape().replace_all(&out, "[redacted-jwt]");
        secret_field().replace_all(&out, "$1\"[redacted]\"").into_owned()
    }

    /// A header line: the value of a credential header is replaced whole.
    pub fn header(&self, name: &str, value: &str) -> String {
        if secret_header(name) {
            format!("{name}: [redacted]")
        } else {
            format!("{name}: {}", self.text(value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_tokens_and_secret_fields() {
        let r = Redactor::new(vec!["pcs_supersecretvalue".into()]);
        assert_eq!(r.header("Authorization", "Bearer abc"), "Authorization: [redacted]");
        assert_eq!(r.header("X-Api-Key", "k"), "X-Api-Key: [redacted]");
        let t = r.text(
            r#"{"key":"pcs_supersecretvalue","password":"hunter2","t":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig"}"#,
        );
        assert!(!t.contains("pcs_supersecretvalue") && !t.contains("hunter2") && !t.contains("eyJhbGci"), "{t}");
    }

    #[test]
    fn html_escapes_hostile_content() {
        let f = Finding {
            rule: "live.test",
            owasp: Owasp::API8,
            severity: Severity::High,
            target: "GET /<x>".into(),
            title: "<script>alert(1)</script>".into(),
            detail: "\"onload=".into(),
            fix: "f",
            evidence: vec![Evidence { request: "GET /".into(), response: "<img src=x onerror=alert(1)>".into() }],
        };
        let r = Report {
            base_url: "http://127.0.0.1/".into(),
            operations: 1,
            requests: 1,
            truncated: false,
            seconds: 0.0,
            findings: vec![f],
            notes: vec![],
        };
        let html = r.html();
        assert!(!html.contains("<script") && !html.contains("<img"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
