//! `portcullis scan config`: static audit of a gateway config (issue 17, part 1).
//!
//! The config is read with the gateway's own loader (so what is audited is what would run, defaults
//! included; a config that does not load exits 2 with the loader's message), then the same text is read
//! again for positions ([`position`]) so each finding has `file:line:column`. Nothing is compiled,
//! started, fetched or written: the only other file read is an SQLite API key store, read-only.
//! Exit codes: 0 no unsuppressed finding at or above `--fail-on` (default `high`), 1 some, 2 the config
//! does not load.

pub mod compliance;
pub mod position;
pub mod report;
pub mod rules;
pub mod suppress;

use crate::scan::finding::{self, Finding, Severity};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Sarif,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file to audit.
    #[arg(short = 'c', long = "config")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Exit 1 when an unsuppressed finding is at or above this severity.
    #[arg(long, default_value = "high", value_parser = parse_severity)]
    pub fail_on: Severity,
    /// Add the PCI DSS 4.0 / GDPR art. 32 / HIPAA 164.312 control mapping.
    #[arg(long)]
    pub compliance: bool,
    /// API keys in an SQLite store older than this are findings (e.g. 90d).
    #[arg(long, default_value = "90d", value_parser = parse_age)]
    pub store_age_policy: Duration,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

fn parse_age(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
}

/// The audit's result.
pub struct Audit {
    pub file: String,
    pub findings: Vec<Finding>,
    pub compliance: Option<Vec<compliance::Control>>,
}

/// Audits config `text` (already loaded as `cfg`); `file` names it in locations.
pub fn audit(
    cfg: &crate::config::file::FileConfig,
    text: &str,
    file: &str,
    age_policy: Duration,
    now: i64,
    with_compliance: bool,
) -> Audit {
    let positions = position::Positions::parse(text);
    let mut ctx = rules::Ctx { cfg, positions: &positions, file, age_policy, now, findings: Vec::new() };
    rules::check(&mut ctx);
    let mut findings = ctx.findings;
    suppress::apply(&mut findings, &suppress::parse(text), file);
    finding::sort(&mut findings);
    let compliance = with_compliance.then(|| compliance::controls(cfg, &positions, file, &findings));
    Audit { file: file.to_owned(), findings, compliance }
}

/// The largest config file the scan reads: far above any real config, and a bound on what a hostile
/// file (one in a pull request under review) can make the scan hold, twice (typed, and positions).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

pub fn run(args: Args) -> ExitCode {
    if let Ok(meta) = std::fs::metadata(&args.config) {
        if meta.len() > MAX_CONFIG_BYTES {
            eprintln!(
                "portcullis scan config: the config does not load: {}:1:1: the file is larger than {} MiB",
                args.config.display(),
                MAX_CONFIG_BYTES >> 20
            );
            return ExitCode::from(2);
        }
    }
    let (cfg, text) = match crate::config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("portcullis scan config: the config does not load: {e}");
            return ExitCode::from(2);
        }
    };
    let file = args.config.display().to_string();
    let now = crate::authn::api_key::now();
    let result = audit(&cfg, &text, &file, args.store_age_policy, now, args.compliance);
    let out = match args.format {
        Format::Table => report::table(&result, args.fail_on),
        Format::Json => report::json(&result, args.fail_on),
        Format::Sarif => report::sarif(&result),
    };
    print!("{out}");
    if result.findings.iter().any(|f| f.fails(args.fail_on)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
