//! `portcullis scan` (issue 17): `scan config` audits a gateway config statically (`audit`); `scan api`
//! probes a running API (`live`). Both report as a table, JSON or SARIF 2.1.0 (`sarif`); the live scan
//! also writes a self-contained HTML report.

use std::process::ExitCode;

pub mod audit;
pub mod finding;
pub mod live;
pub mod sarif;

/// `portcullis scan ...`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Audit a gateway config: findings with rule id, severity, file:line:column and a fix.
    Config(audit::Args),
    /// Probe a running API described by an OpenAPI document (bounded, single host).
    Api(Box<live::Args>),
}

pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Config(args) => audit::run(args),
        Command::Api(args) => live::run(*args),
    }
}
