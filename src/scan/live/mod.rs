//! `portcullis scan api`: bounded live probing of an API described by an OpenAPI document (issue 17,
//! part 2). See docs/scan-live.md.
//!
//! Safety: every request goes to the base URL's scheme, host and port and nowhere else (no redirect is
//! followed; SSRF payloads point at a canary listener the scanner opens on 127.0.0.1); requests are
//! paced (`--rate`, default 10 per second) and their total is bounded (`--max-requests`); `--dry-run`
//! lists what would be sent and sends nothing. Credentials never reach the output: evidence is redacted.

pub mod http;
pub mod jwt;
pub mod probes;
pub mod report;
pub mod spec;
pub mod tls;

use crate::scan::finding::{Finding as SharedFinding, Rule};
use report::{Finding, Report, Severity};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The API's OpenAPI document (3.0 or 3.1, YAML or JSON).
    #[arg(long)]
    pub openapi: PathBuf,
    /// The base URL probed (document paths are appended to it); nothing is sent to any other host.
    #[arg(long = "base-url")]
    pub base_url: String,
    /// A test principal: NAME=bearer:TOKEN, NAME=apikey:KEY, NAME=header:NAME:VALUE or
    /// NAME=cookie:NAME=VALUE; a value `env:VAR` is read from the environment. The first two are the
    /// owner and the intruder of the object-level (BOLA) probes. Repeatable.
    #[arg(long = "as", value_name = "NAME=KIND:VALUE")]
    pub principals: Vec<String>,
    /// A principal (by NAME) entitled to administrative operations: not used for function-level probes.
    #[arg(long = "admin", value_name = "NAME")]
    pub admins: Vec<String>,
    /// Requests per second (a token bucket of one token).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Hard bound on the requests (and TLS handshakes) sent; the scan stops there and says so.
    #[arg(long = "max-requests", default_value_t = 2000)]
    pub max_requests: u64,
    /// Requests in the rate-limit burst.
    #[arg(long, default_value_t = 30)]
    pub burst: usize,
    /// List the requests the scan would send (with placeholders for ids it would discover); send nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Also write a self-contained HTML report to this file.
    #[arg(long = "report-html", value_name = "FILE")]
    pub report_html: Option<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "sarif"])]
    pub format: String,
    /// Write the report (in --format) to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 1 when a finding is at least this severe (info, low, medium, high, critical).
    #[arg(long = "fail-on", value_name = "SEVERITY")]
    pub fail_on: Option<String>,
    /// Do not verify the server's certificate (a test deployment with a self-signed one).
    #[arg(long = "insecure-skip-verify", conflicts_with = "ca")]
    pub insecure_skip_verify: bool,
    /// Trust only the CAs of this PEM file for an https:// base URL.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// The API's JWT public key (PEM), for the algorithm-confusion token (HS256 keyed with it).
    #[arg(long = "jwt-public-key", value_name = "PEM")]
    pub jwt_public_key: Option<PathBuf>,
}

/// The live scan's rules (for SARIF's rule table).
pub const RULES: &[Rule] = &[
    rule(
        "live.bola",
        "object-level-authorization",
        Severity::High,
        "A principal reads another principal's object (OWASP API1:2023).",
    ),
    rule(
        "live.no-auth",
        "missing-authentication",
        Severity::High,
        "A secured operation answers without credentials (API2:2023).",
    ),
    rule("live.jwt", "forged-jwt-accepted", Severity::Critical, "A forged JWT is accepted (API2:2023)."),
    rule(
        "live.excessive-data",
        "excessive-data-exposure",
        Severity::Medium,
        "Answers carry undeclared properties (API3:2023).",
    ),
    rule(
        "live.mass-assignment",
        "mass-assignment",
        Severity::High,
        "Writes accept read-only or undeclared properties (API3:2023).",
    ),
    rule(
        "live.no-rate-limit",
        "no-rate-limit",
        Severity::Medium,
        "A burst of requests is answered without 429 (API4:2023).",
    ),
    rule(
        "live.function-level",
        "function-level-authorization",
        Severity::High,
        "An administrative operation is reachable by an ordinary principal (API5:2023).",
    ),
    rule("live.ssrf", "server-side-request-forgery", Severity::High, "The API fetches a URL it is given (API7:2023)."),
    rule("live.security-header", "missing-security-header", Severity::Low, "A security header is missing (API8:2023)."),
    rule("live.cors", "permissive-cors", Severity::High, "CORS allows any origin (API8:2023)."),
    rule("live.trace", "trace-enabled", Severity::Low, "TRACE is echoed (API8:2023)."),
    rule(
        "live.verbose-error",
        "verbose-error",
        Severity::Medium,
        "Errors reveal stack traces or SQL errors (API8:2023).",
    ),
    rule(
        "live.reflected-input",
        "reflected-input",
        Severity::Medium,
        "Input is reflected unescaped in HTML (API8:2023).",
    ),
    rule(
        "live.version-disclosure",
        "version-disclosure",
        Severity::Info,
        "A header names software and version (API8:2023).",
    ),
    rule("live.tls-legacy", "legacy-tls", Severity::Medium, "TLS 1.0 or 1.1 is accepted (API8:2023)."),
    rule("live.tls-weak-suite", "weak-tls-suite", Severity::Low, "A non-AEAD TLS suite is accepted (API8:2023)."),
    rule(
        "live.debug-endpoint",
        "debug-endpoint",
        Severity::High,
        "An undeclared debug endpoint answers without credentials (API9:2023).",
    ),
];

const fn rule(id: &'static str, name: &'static str, severity: Severity, help: &'static str) -> Rule {
    Rule { id, name, severity, help }
}

pub fn run(args: Args) -> ExitCode {
    match scan(&args) {
        Ok(report) => {
            let fail_on = match args.fail_on.as_deref().map(str::parse::<Severity>).transpose() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("portcullis scan api: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = write_reports(&args, &report) {
                eprintln!("portcullis scan api: {e}");
                return ExitCode::from(2);
            }
            match (fail_on, report.worst()) {
                (Some(t), Some(w)) if w >= t => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("portcullis scan api: {e}");
            ExitCode::from(2)
        }
    }
}

fn scan(args: &Args) -> Result<Report, String> {
    if let Some(f) = &args.fail_on {
        f.parse::<Severity>()?;
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err("--rate must be a positive number of requests per second".into());
    }
    let text = std::fs::read_to_string(&args.openapi)
        .map_err(|e| format!("--openapi {}: {}", args.openapi.display(), e.kind()))?;
    let api = spec::Api::parse(&text).map_err(|e| format!("--openapi {}: {e}", args.openapi.display()))?;
    let target = http::Target::parse(&args.base_url)?;
    let principals = args
        .principals
        .iter()
        .map(|p| probes::Principal::parse(p, &api, &args.admins))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = principals.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err("--as: each principal needs its own name".into());
    }
    let jwt_public_key = match &args.jwt_public_key {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("--jwt-public-key {}: {}", p.display(), e.kind()))?),
        None => None,
    };
    let tls = if target.https {
        let ca = args.ca.as_ref().map(|p| p.to_string_lossy().into_owned());
        Some(http::tls_config(ca.as_deref(), args.insecure_skip_verify)?)
    } else {
        None
    };
    let client = http::Client::new(target, tls, args.rate, args.max_requests, args.dry_run);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let opts = probes::Options { burst: args.burst, jwt_public_key };
    let (findings, notes, sent, truncated, listed) = rt.block_on(async {
        let mut scan = probes::Scan::new(&api, client, principals, opts);
        scan.run().await;
        scan.client.finish_progress();
        (scan.findings, scan.notes, scan.client.sent, scan.client.exhausted, std::mem::take(&mut scan.client.listed))
    });
    if args.dry_run {
        for l in &listed {
            println!("{l}");
        }
        eprintln!(
            "dry run: {} requests listed, none sent (ids the scan would discover are placeholders)",
            listed.len()
        );
    }
    Ok(Report {
        base_url: args.base_url.clone(),
        operations: api.ops.len(),
        requests: if args.dry_run { 0 } else { sent },
        truncated,
        seconds: started.elapsed().as_secs_f64(),
        findings,
        notes,
    })
}

/// The shared finding type (for SARIF): the OWASP category as its taxonomy entry, the URL it was seen at.
fn shared(base: &str, f: &Finding) -> SharedFinding {
    let rule = RULES.iter().find(|r| r.id == f.rule).cloned().unwrap_or(rule(f.rule, f.rule, f.severity, ""));
    let evidence: Vec<String> = f.evidence.iter().map(|e| format!("{}\n--\n{}", e.request, e.response)).collect();
    let mut out = SharedFinding::new(&rule, f.title.clone(), f.detail.clone())
        .severity(f.severity)
        .fix(f.fix)
        .category(format!("OWASP {} {}", f.owasp.code(), f.owasp.title()))
        .uri(format!("{}#{}", base.trim_end_matches('/'), f.target));
    if !evidence.is_empty() {
        out = out.evidence(evidence.join("\n\n"));
    }
    out
}

fn write_reports(args: &Args, report: &Report) -> Result<(), String> {
    if let Some(path) = &args.report_html {
        std::fs::write(path, report.html()).map_err(|e| format!("--report-html {}: {}", path.display(), e.kind()))?;
    }
    if args.dry_run {
        return Ok(());
    }
    let text = match args.format.as_str() {
        "json" => report.json(),
        "sarif" => {
            let findings: Vec<SharedFinding> = report.findings.iter().map(|f| shared(&report.base_url, f)).collect();
            let log = crate::scan::sarif::sarif("portcullis scan api", env!("CARGO_PKG_VERSION"), RULES, &findings);
            serde_json::to_string_pretty(&log).map_err(|e| e.to_string())?
        }
        _ => report.table(),
    };
    match &args.out {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("--out {}: {}", path.display(), e.kind())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
