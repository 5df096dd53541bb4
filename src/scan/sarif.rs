//! SARIF 2.1.0 (OASIS), the code-scanning exchange format: one run of one tool, its rules and its
//! results. Generic over what was scanned: a config finding has a file location (`physicalLocation`
//! with a region), a live finding has a URL (the URL is the artifact's uri, without a region).
//! Suppressed findings keep their place with a `suppressions` entry of kind `inSource`, carrying the
//! reason as the justification, so viewers show them as dismissed rather than hiding them.

use super::finding::{Finding, Location, Rule, Severity};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Map, Value};

/// Where the schema lives; written into the log's `$schema`.
pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// Characters a path keeps percent-encoded in a uri reference.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The SARIF log of one run: `tool` and `version` name the driver, `rules` are every rule the tool
/// knows (results point at them by index), `findings` are the results.
pub fn sarif(tool: &str, version: &str, rules: &[Rule], findings: &[Finding]) -> Value {
    let results: Vec<Value> = findings.iter().map(|f| result(rules, f)).collect();
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": tool,
                "version": version,
                "rules": rules.iter().map(rule).collect::<Vec<_>>(),
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

/// Adds `properties` to the log's (first) run: e.g. a compliance section.
pub fn set_run_properties(log: &mut Value, properties: Map<String, Value>) {
    if let Some(run) = log.get_mut("runs").and_then(|r| r.get_mut(0)).and_then(Value::as_object_mut) {
        run.insert("properties".into(), Value::Object(properties));
    }
}

/// SARIF's `level`: `error` for high and critical, `warning` for medium, `note` below.
fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub code scanning's `security-severity` (a CVSS-like score) for a severity.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn rule(r: &Rule) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "shortDescription": { "text": r.name },
        "help": { "text": r.help },
        "defaultConfiguration": { "level": level(r.severity) },
        "properties": {
            "severity": r.severity.as_str(),
            "security-severity": security_severity(r.severity),
            "tags": ["security"],
        },
    })
}

fn result(rules: &[Rule], f: &Finding) -> Value {
    let mut out = Map::new();
    out.insert("ruleId".into(), Value::from(f.rule.as_ref()));
    if let Some(i) = rules.iter().position(|r| r.id == f.rule) {
        out.insert("ruleIndex".into(), Value::from(i));
    }
    out.insert("level".into(), Value::from(level(f.severity)));
    let text = if f.message.is_empty() { f.title.clone() } else { format!("{}: {}", f.title, f.message) };
    out.insert("message".into(), json!({ "text": text }));
    let location = match (&f.location, &f.uri) {
        (Some(l), _) => Some(physical(l)),
        (None, Some(uri)) => Some(json!({ "physicalLocation": { "artifactLocation": { "uri": uri } } })),
        (None, None) => None,
    };
    if let Some(l) = location {
        out.insert("locations".into(), json!([l]));
    }
    if let Some(reason) = &f.suppressed {
        out.insert("suppressions".into(), json!([{ "kind": "inSource", "justification": reason }]));
    }
    let mut properties = Map::new();
    properties.insert("severity".into(), Value::from(f.severity.as_str()));
    properties.insert("security-severity".into(), Value::from(security_severity(f.severity)));
    properties.insert("fix".into(), Value::from(f.fix.as_str()));
    if let Some(c) = &f.category {
        properties.insert("category".into(), Value::from(c.as_str()));
        properties.insert("tags".into(), json!([c]));
    }
    if let Some(e) = &f.evidence {
        properties.insert("evidence".into(), Value::from(e.as_str()));
    }
    out.insert("properties".into(), Value::Object(properties));
    Value::Object(out)
}

fn physical(l: &Location) -> Value {
    json!({ "physicalLocation": {
        "artifactLocation": { "uri": file_uri(&l.file) },
        "region": { "startLine": l.line.max(1), "startColumn": l.column.max(1) },
    }})
}

/// A file path as a uri reference: relative paths stay relative (code scanning resolves them against
/// the repository), absolute ones become `file://` URIs; either way percent-encoded.
pub fn file_uri(path: &str) -> String {
    let path = path.replace('\\', "/");
    let encoded = utf8_percent_encode(&path, PATH).to_string();
    if path.starts_with('/') {
        format!("file://{encoded}")
    } else {
        encoded.trim_start_matches("./").to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::scan::finding::Severity;

    const RULES: [Rule; 2] = [
        Rule { id: "PC-A-001", name: "a", severity: Severity::High, help: "fix a" },
        Rule { id: "PC-B-001", name: "b", severity: Severity::Low, help: "fix b" },
    ];

    #[test]
    fn results_point_at_rules_files_and_suppressions() {
        let at = Location { file: "conf dir/gw.yaml".into(), line: 3, column: 5 };
        let mut suppressed = Finding::new(&RULES[1], "b", "why").at(at.clone());
        suppressed.suppressed = Some("demo only".into());
        let live = Finding::new(&RULES[0], "a", "").uri("https://api.example/x").category("API1:2023");
        let log = sarif("portcullis", "0.1.0", &RULES, &[Finding::new(&RULES[0], "a", "m").at(at), suppressed, live]);
        let results = &log["runs"][0]["results"];
        assert_eq!(results[0]["ruleIndex"], 0);
        assert_eq!(results[0]["level"], "error");
        let loc = &results[0]["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "conf%20dir/gw.yaml");
        assert_eq!((loc["region"]["startLine"].as_u64(), loc["region"]["startColumn"].as_u64()), (Some(3), Some(5)));
        assert_eq!(results[1]["suppressions"][0]["kind"], "inSource");
        assert_eq!(results[1]["suppressions"][0]["justification"], "demo only");
        assert!(results[0].get("suppressions").is_none());
        assert_eq!(results[2]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "https://api.example/x");
        assert_eq!(results[2]["properties"]["category"], "API1:2023");
        assert_eq!(log["runs"][0]["tool"]["driver"]["rules"][1]["defaultConfiguration"]["level"], "note");
    }

    #[test]
    fn absolute_paths_are_file_uris() {
        assert_eq!(file_uri("/etc/portcullis/gw.yaml"), "file:///etc/portcullis/gw.yaml");
        assert_eq!(file_uri("./a#b.yaml"), "a%23b.yaml");
    }
}
