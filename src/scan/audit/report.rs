//! The audit's outputs: a table for people, JSON for scripts, SARIF 2.1.0 for code scanning.

use super::compliance::Control;
use super::rules::RULES;
use super::Audit;
use crate::scan::finding::{Finding, Severity};
use serde_json::{json, Map, Value};
use std::fmt::Write;

fn counts(a: &Audit) -> Value {
    let mut by = Map::new();
    for s in Severity::ALL {
        let n = a.findings.iter().filter(|f| f.suppressed.is_none() && f.severity == s).count();
        by.insert(s.as_str().into(), n.into());
    }
    by.insert("suppressed".into(), a.findings.iter().filter(|f| f.suppressed.is_some()).count().into());
    Value::Object(by)
}

pub fn json(a: &Audit, fail_on: Severity) -> String {
    let (suppressed, open): (Vec<&Finding>, Vec<&Finding>) = a.findings.iter().partition(|f| f.suppressed.is_some());
    let mut out = json!({
        "file": a.file,
        "tool": { "name": "portcullis", "version": env!("CARGO_PKG_VERSION") },
        "fail_on": fail_on,
        "failed": a.findings.iter().any(|f| f.fails(fail_on)),
        "summary": counts(a),
        "findings": open,
        "suppressed": suppressed,
    });
    if let Some(c) = &a.compliance {
        out["compliance"] = json!(c);
    }
    let mut text = serde_json::to_string_pretty(&out).unwrap_or_default();
    text.push('\n');
    text
}

pub fn sarif(a: &Audit) -> String {
    let mut log = crate::scan::sarif::sarif("portcullis scan config", env!("CARGO_PKG_VERSION"), RULES, &a.findings);
    if let Some(c) = &a.compliance {
        let mut props = Map::new();
        props.insert("compliance".into(), json!(c));
        crate::scan::sarif::set_run_properties(&mut log, props);
    }
    let mut text = serde_json::to_string_pretty(&log).unwrap_or_default();
    text.push('\n');
    text
}

pub fn table(a: &Audit, fail_on: Severity) -> String {
    let mut out = String::new();
    let (suppressed, open): (Vec<&Finding>, Vec<&Finding>) = a.findings.iter().partition(|f| f.suppressed.is_some());
    let _ = writeln!(out, "portcullis scan config: {}", a.file);
    if open.is_empty() {
        let _ = writeln!(out, "\nNo findings.");
    } else {
        let _ = writeln!(out, "\n{:<9} {:<16} {:<28} FINDING", "SEVERITY", "RULE", "WHERE");
        for f in &open {
            let at = f.location.as_ref().map_or_else(String::new, ToString::to_string);
            let _ = writeln!(out, "{:<9} {:<16} {:<28} {}", f.severity.as_str().to_uppercase(), f.rule, at, f.title);
            let _ = writeln!(out, "{:56}{}", "", f.message);
            let _ = writeln!(out, "{:56}fix: {}", "", f.fix);
        }
    }
    if !suppressed.is_empty() {
        let _ = writeln!(out, "\nSuppressed ({}):", suppressed.len());
        for f in &suppressed {
            let at = f.location.as_ref().map_or_else(String::new, ToString::to_string);
            let reason = f.suppressed.as_deref().unwrap_or_default();
            let _ =
                writeln!(out, "{:<9} {:<16} {:<28} {} (reason: {reason})", f.severity.as_str(), f.rule, at, f.title);
        }
    }
    if let Some(controls) = &a.compliance {
        compliance_table(&mut out, controls);
    }
    let c = counts(a);
    let summary: Vec<String> =
        Severity::ALL.iter().rev().map(|s| format!("{} {}", c[s.as_str()], s.as_str())).collect();
    let failed = a.findings.iter().any(|f| f.fails(fail_on));
    let _ = writeln!(
        out,
        "\n{}, {} suppressed; {} (--fail-on {fail_on})",
        summary.join(", "),
        c["suppressed"],
        if failed { "FAIL" } else { "pass" }
    );
    out
}

fn compliance_table(out: &mut String, controls: &[Control]) {
    let _ = writeln!(out, "\nCompliance (the gateway's share of each control):");
    for c in controls {
        let _ =
            writeln!(out, "{:<15} {:<15} {:<16} {}", c.framework, c.control, c.status.as_str().to_uppercase(), c.title);
        for e in &c.evidence {
            let _ = writeln!(out, "{:48}{e}", "");
        }
    }
}
