//! `portcullis audit verify|keygen`.
//!
//! Exit codes of `verify`: 0 intact (warnings for an unanchored tail or a torn last line), 1 tampered
//! (the first bad record is named), 2 the files or the key cannot be read.

use super::verify::{verify, Input};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use clap::Subcommand;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check a trail's hash chain and checkpoint signatures. Give rotated files oldest first and the
    /// live file last (`audit.log.* audit.log` sorts so).
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A file with the public key: SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or the raw 32 bytes in
        /// base64. Repeat for a trail whose signing key was replaced.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// A checkpoint the trail must still hold, as `SEQ:SHA256` from the gateway's `audit
        /// checkpoint` log line (kept off the host): detects the file's end cut back past it.
        #[arg(long, value_name = "SEQ:SHA256")]
        expect: Option<super::verify::Expect>,
    },
    /// Make an Ed25519 signing key: the private key (PKCS#8 PEM, mode 0600) goes to `--out`, the
    /// public key (SPKI PEM) to stdout and to `--public-out` when given.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
}

pub fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { files, key, expect } => verify_files(&files, &key, expect),
        AuditCommand::Keygen { out, public_out } => match keygen(&out, public_out.as_deref()) {
            Ok(public) => {
                print!("{public}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis audit keygen: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn verify_files(files: &[PathBuf], keys: &[PathBuf], expect: Option<super::verify::Expect>) -> ExitCode {
    let mut public = Vec::new();
    for key in keys {
        let read = std::fs::read(key).map_err(|e| e.kind().to_string());
        match read.and_then(|t| crate::secret::ed25519_public_key(&t)) {
            Ok(k) => public.push(k),
            Err(e) => {
                eprintln!("portcullis audit verify: key `{}`: {e}", key.display());
                return ExitCode::from(2);
            }
        }
    }
    let mut contents = Vec::new();
    for f in files {
        match std::fs::read(f) {
            Ok(b) => contents.push((f.display().to_string(), b)),
            Err(e) => {
                eprintln!("portcullis audit verify: `{}` cannot be read: {}", f.display(), e.kind());
                return ExitCode::from(2);
            }
        }
    }
    let inputs: Vec<Input<'_>> = contents.iter().map(|(name, bytes)| Input { name, bytes }).collect();
    match verify(&inputs, &public, expect) {
        Ok(r) => {
            if let Some(note) = &r.continues {
                eprintln!("note: {note}");
            }
            if r.unanchored > 0 {
                eprintln!(
                    "warning: unanchored tail: {} record(s) after the last signed checkpoint; they are chained but not \
                     signed, so they could have been cut or rewritten without detection",
                    r.unanchored
                );
            }
            if let Some(line) = r.torn_line {
                eprintln!(
                    "warning: line {line} of the last file is incomplete (a write cut short by a crash); ignored"
                );
            }
            println!(
                "intact: {} record(s), {} signed checkpoint(s), {} unanchored",
                r.records, r.checkpoints, r.unanchored
            );
            ExitCode::SUCCESS
        }
        Err(bad) => {
            eprintln!("TAMPERED: {bad}");
            ExitCode::from(1)
        }
    }
}

/// Writes a new private key to `out` (never over an existing file) and returns the public key's PEM
/// (also written to `public_out`). The quickstart may call it to make a key for its trail.
pub fn keygen(out: &Path, public_out: Option<&Path>) -> Result<String, String> {
    let pair = Ed25519KeyPair::generate().map_err(|_| "cannot generate a key".to_string())?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|_| "cannot encode the key".to_string())?;
    let spki = pair.public_key().as_der().map_err(|_| "cannot encode the public key".to_string())?;
    let public = pem("PUBLIC KEY", spki.as_ref());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("`{}`: {e}", out.display()))?;
    f.write_all(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).map_err(|e| format!("`{}`: {e}", out.display()))?;
    if let Some(p) = public_out {
        std::fs::write(p, &public).map_err(|e| format!("`{}`: {e}", p.display()))?;
    }
    Ok(public)
}

/// RFC 7468 text encoding: base64 in lines of 64.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}
