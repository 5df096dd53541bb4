//! `portcullis secrets -c CONFIG ...`: encrypt config values, and keep secrets encrypted in the config's
//! `store:` (put, list, delete, rotate the data key, re-wrap under a new KEK). Only the config's
//! `secrets:` and `store:` sections are used, so a secret can be put before the config that refers to
//! it loads. Values are read on stdin and never printed.

use super::clock::utc;
use super::envelope;
use super::kek::Kek;
use super::vault::{KeyTable, Keyring, Keys, SecretsConfig, SqliteSecrets};
use crate::events::{Emitter, Event, Kind};
use clap::Subcommand;
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Encrypt a value read on stdin with the config's KEK; prints `${enc:v1:...}` for the config.
    Encrypt,
    /// Store a secret (value on stdin) encrypted in the config's `store:`; `${store:NAME}` refers to it.
    Put { name: String },
    /// The stored secrets' names, data keys and dates (never values).
    List,
    /// Delete a stored secret.
    Delete { name: String },
    /// Make a new data key; new writes use it, existing values stay readable.
    RotateDek,
    /// Re-wrap every data key under the config's `kek` (the old KEK must be its `previous_kek`).
    RotateKek,
    /// Print a new random KEK (64 hex digits) for a KEK file, variable or KMS.
    Keygen {
        /// Write it to this new file (mode 0600; an existing file is never overwritten) instead of stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

impl SecretsCommand {
    /// Whether the command needs a config file.
    pub fn needs_config(&self) -> bool {
        !matches!(self, SecretsCommand::Keygen { .. })
    }
}

/// The largest value `encrypt` and `put` accept.
const MAX_VALUE: usize = 1 << 20;

/// Reads stdin; one trailing newline (`echo`) is dropped. Empty, larger than 1 MiB after that (refused,
/// never cut short) or not UTF-8 (every secret field is text) is refused.
fn read_value() -> Result<Zeroizing<Vec<u8>>, String> {
    read_value_from(std::io::stdin().lock())
}

fn read_value_from(input: impl Read) -> Result<Zeroizing<Vec<u8>>, String> {
    // Reserved up front, so growing does not leave copies of the value behind in freed memory.
    let mut value = Zeroizing::new(Vec::with_capacity(MAX_VALUE + 3));
    // One byte more than a value with its `\r\n` may have, so a longer one is seen as such.
    input.take(MAX_VALUE as u64 + 3).read_to_end(&mut value).map_err(|e| format!("stdin: {}", e.kind()))?;
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.len() > MAX_VALUE {
        return Err("the value on stdin is larger than 1 MiB".into());
    }
    if value.is_empty() {
        return Err("the value on stdin is empty".into());
    }
    if std::str::from_utf8(&value).is_err() {
        return Err("the value on stdin is not UTF-8 text (secrets are text; base64 binary keys)".into());
    }
    Ok(value)
}

fn event(action: &'static str, name: &str) -> Event {
    Event::new(Kind::AdminAction, action).rule(name.to_owned()).principal(crate::events::actor()).attr("via", "cli")
}

fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err("a secret name is 1 to 128 of A-Z a-z 0-9 _ - . /".into())
    }
}

/// Runs `cmd` with the config's `secrets:` and `store:` (`store` is the SQLite file); writes are
/// emitted to `audit` (the config's audit trail, or nothing).
pub fn run(
    secrets: Option<&SecretsConfig>,
    store: Option<&Path>,
    cmd: SecretsCommand,
    audit: &Emitter,
) -> Result<(), String> {
    if let SecretsCommand::Keygen { out } = cmd {
        let key = Zeroizing::new(Kek::generate()?.to_hex());
        let Some(path) = out else {
            println!("{}", *key);
            return Ok(());
        };
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("`{}`: {}", path.display(), e.kind()))?;
        file.write_all(key.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|e| format!("`{}`: {}", path.display(), e.kind()))?;
        eprintln!("a new KEK written to `{}` (mode 0600)", path.display());
        return Ok(());
    }
    let secrets = secrets.ok_or("the config has no `secrets:` section: add `secrets: { kek: { file: PATH } }`")?;
    let rotating = matches!(cmd, SecretsCommand::RotateKek);
    let keys = Keys::load(secrets, rotating)?;
    if let SecretsCommand::Encrypt = cmd {
        let value = read_value()?;
        println!("{}", envelope::encrypt_config(&keys.current, &value)?);
        return Ok(());
    }
    let path = store.ok_or("the config has no `store:` section: add `store: { sqlite: PATH }`")?;
    let mut table = SqliteSecrets::open(path, true)?;
    let mut ring = Keyring::load(keys, &mut table)?;
    match cmd {
        SecretsCommand::Put { name } => {
            valid_name(&name)?;
            let value = read_value()?;
            table.put(&mut ring, &name, &value)?;
            audit.emit(event("secret.put", &name));
            eprintln!("secret `{name}` stored");
        }
        SecretsCommand::List => {
            println!("{:<32} {:<16} {:<21} updated (UTC)", "name", "data key", "created (UTC)");
            for s in table.list()? {
                println!("{:<32} {:<16} {:<21} {}", s.name, s.dek_id, utc(s.created_at), utc(s.updated_at));
            }
        }
        SecretsCommand::Delete { name } => {
            if !table.delete(&name)? {
                return Err(format!("no secret `{name}`"));
            }
            audit.emit(event("secret.delete", &name));
            eprintln!("secret `{name}` deleted");
        }
        SecretsCommand::RotateDek => {
            let dek = ring.rotate(&mut table)?;
            audit.emit(
                Event::new(Kind::KeyLifecycle, "data_key.rotated")
                    .rule(dek.id().to_owned())
                    .principal(crate::events::actor())
                    .attr("via", "cli"),
            );
            println!("{}", dek.id());
        }
        SecretsCommand::RotateKek => {
            let before = table.data_keys()?;
            let current = ring.keys.current.id().to_owned();
            if !before.is_empty() && before.iter().all(|w| w.kek_id == current) {
                return Err(format!(
                    "every data key is already wrapped under KEK {current}: set the new key as `kek` and the old \
                     one as `previous_kek`"
                ));
            }
            let n = ring.rotate_kek(&mut table)?;
            audit.emit(
                Event::new(Kind::KeyLifecycle, "kek.rotated")
                    .rule(current.clone())
                    .principal(crate::events::actor())
                    .attr("via", "cli")
                    .attr("rewrapped", n.to_string()),
            );
            println!("{n} data keys re-wrapped under KEK {current}");
        }
        SecretsCommand::Encrypt | SecretsCommand::Keygen { .. } => {}
    }
    if !table.scrub_wal() {
        eprintln!(
            "note: the state store's WAL could not be truncated now (a reader holds it); SQLite recycles it at its next checkpoint"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn stdin_values_are_taken_whole_or_refused() {
        let read = |b: &[u8]| read_value_from(b).map(|v| v.to_vec());
        assert_eq!(read(b"s3cret\n").unwrap(), b"s3cret");
        assert_eq!(read(b"s3cret\r\n").unwrap(), b"s3cret");
        // Only one newline is dropped; inner and leading whitespace stays.
        assert_eq!(read(b" a b\n\n").unwrap(), b" a b\n");
        assert!(read(b"").unwrap_err().contains("empty"));
        assert!(read(b"\n").unwrap_err().contains("empty"));
        // Exactly 1 MiB is accepted; one byte more is refused, never cut short.
        let mut big = vec![b'x'; MAX_VALUE];
        assert_eq!(read(&big).unwrap().len(), MAX_VALUE);
        big.push(b'y');
        assert!(read(&big).unwrap_err().contains("larger than 1 MiB"));
        // The limit does not count the one trailing newline `echo` adds; a second one counts.
        let mut with_newline = vec![b'x'; MAX_VALUE];
        with_newline.extend_from_slice(b"\r\n");
        assert_eq!(read(&with_newline).unwrap().len(), MAX_VALUE);
        with_newline.push(b'\n');
        assert!(read(&with_newline).unwrap_err().contains("larger than 1 MiB"));
        let mut two = vec![b'x'; MAX_VALUE - 1];
        two.extend_from_slice(b"\n\n");
        assert!(read(&two).is_ok(), "1 MiB once the last newline is dropped");
        // Binary is refused (every secret field is text), and the error does not quote it.
        let err = read(b"\xff\xfeabc").unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
        assert!(read("pässwörd ✓".as_bytes()).is_ok());
    }

    #[test]
    fn names_are_restricted() {
        assert!(valid_name("db/primary.password-1_x").is_ok());
        for bad in ["", "a b", "a\0b", "${env:X}", "a}", "é", &"a".repeat(129)] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }
}
