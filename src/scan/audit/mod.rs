//! `portcullis scan config`: static audit of a gateway config (issue 17, part 1).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file to audit.
    #[arg(short = 'c', long = "config")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    eprintln!("portcullis scan config: not implemented yet ({})", args.config.display());
    ExitCode::from(2)
}
