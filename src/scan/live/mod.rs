//! `portcullis scan api`: bounded live probing of an API (issue 17, part 2).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The API's OpenAPI document.
    #[arg(long)]
    pub openapi: PathBuf,
    /// The base URL probed; nothing is sent to any other host.
    #[arg(long = "base-url")]
    pub base_url: String,
}

pub fn run(args: Args) -> ExitCode {
    eprintln!("portcullis scan api: not implemented yet ({} {})", args.openapi.display(), args.base_url);
    ExitCode::from(2)
}
