//! The key-encryption key (KEK): 32 random bytes written as text (64 hex digits or base64), read from
//! a file, an environment variable or the standard output of a command (a KMS or Vault client). It is
//! never stored beside the data; its id (the first 8 bytes of its SHA-256, hex) is, so a wrapped value
//! says which KEK wrapped it.

use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::{Zeroize, Zeroizing};

/// How long a `command:` KEK source may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a KEK comes from: exactly one of `file`, `env`, `command`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct KekSourceFields {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
}

/// Deserialized through a visitor so that a key written in place of the source (`kek: 3f9a...`) is
/// refused without the value in the message (serde's "invalid type: string ..." would quote it).
impl<'de> Deserialize<'de> for KekSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const NOT_A_MAPPING: &str =
            "a KEK source is a mapping `{ file: PATH }`, `{ env: NAME }` or `{ command: [...] }`, never the key itself";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KekSource;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a KEK source: { file: PATH }, { env: NAME } or { command: [...] }")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<KekSource, A::Error> {
                let f = KekSourceFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(KekSource { file: f.file, env: f.env, command: f.command })
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<KekSource, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<KekSource, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<KekSource, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<KekSource, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<KekSource, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<KekSource, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<KekSource, A::Error> {
                Err(serde::de::Error::custom(NOT_A_MAPPING))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct KekSource {
    /// A file holding the key as text.
    pub file: Option<PathBuf>,
    /// An environment variable holding the key as text.
    pub env: Option<String>,
    /// A program and its arguments (run without a shell) that prints the key on its standard output.
    pub command: Option<Vec<String>>,
}

/// The command's arguments are not shown (one may carry a KMS token), only their number.
impl std::fmt::Debug for KekSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let command = self
            .command
            .as_ref()
            .map(|c| format!("{} (+{} arguments)", c.first().map_or("", String::as_str), c.len().saturating_sub(1)));
        f.debug_struct("KekSource")
            .field("file", &self.file)
            .field("env", &self.env)
            .field("command", &command)
            .finish()
    }
}

impl KekSource {
    /// What the source is, for messages (never the key).
    pub fn describe(&self) -> String {
        match (&self.file, &self.env, &self.command) {
            (Some(p), None, None) => format!("file `{}`", p.display()),
            (None, Some(n), None) => format!("environment variable `{n}`"),
            (None, None, Some(c)) => format!("command `{}`", c.first().map_or("", String::as_str)),
            _ => "an invalid source".into(),
        }
    }

    /// Reads and parses the key.
    pub fn load(&self) -> Result<Kek, String> {
        let text = Zeroizing::new(match (&self.file, &self.env, &self.command) {
            (Some(path), None, None) => {
                read_key_file(path).map_err(|e| format!("the KEK file `{}` cannot be read: {e}", path.display()))?
            }
            (None, Some(name), None) => std::env::var(name)
                .map_err(|_| format!("the KEK environment variable `{name}` is not set"))?
                .into_bytes(),
            (None, None, Some(argv)) => run_command(argv, COMMAND_TIMEOUT)?,
            _ => return Err("a KEK source is exactly one of `file`, `env` or `command`".into()),
        });
        Kek::parse(&text).map_err(|e| format!("the KEK from the {}: {e}", self.describe()))
    }
}

/// The most a KEK source may give: a key is 64 hex digits, so anything near this is a mistake.
const MAX_KEY_TEXT: u64 = 64 * 1024;

/// Reads a KEK file, refusing one larger than [`MAX_KEY_TEXT`] (`/dev/zero`, a log) rather than reading it whole.
fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.kind().to_string())?;
    let mut text = Zeroizing::new(Vec::with_capacity(128));
    file.take(MAX_KEY_TEXT + 1).read_to_end(&mut text).map_err(|e| e.kind().to_string())?;
    if text.len() as u64 > MAX_KEY_TEXT {
        return Err("it is larger than 64 KiB, so it is not a key".into());
    }
    Ok(std::mem::take(&mut *text))
}

/// Runs `argv` without a shell; its stdout is the key. Its stderr is counted, never shown (it may echo
/// credentials of the KMS client).
fn run_command(argv: &[String], timeout: Duration) -> Result<Vec<u8>, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the KEK `command` is empty".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("the KEK command `{program}` cannot be started: {}", e.kind()))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        if let Some(o) = out.as_mut() {
            let _ = o.take(MAX_KEY_TEXT + 1).read_to_end(&mut buf);
            // Drained, so a command that prints too much exits rather than blocks until the timeout.
            let _ = std::io::copy(o, &mut std::io::sink());
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut n = 0u64;
        if let Some(e) = err.as_mut() {
            n = std::io::copy(&mut e.take(1 << 20), &mut std::io::sink()).unwrap_or(0);
        }
        n
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the KEK command `{program}` did not finish within {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("the KEK command `{program}`: {}", e.kind())),
        }
    };
    let mut stdout = reader.join().unwrap_or_default();
    let stderr_len = err_reader.join().unwrap_or(0);
    if !status.success() {
        return Err(format!(
            "the KEK command `{program}` failed ({status}); its stderr ({stderr_len} bytes) is not shown"
        ));
    }
    if stdout.len() as u64 > MAX_KEY_TEXT {
        return Err(format!("the KEK command `{program}` printed more than 64 KiB, so not a key"));
    }
    Ok(std::mem::take(&mut *stdout))
}

/// A loaded KEK. `Debug` shows the id only.
#[derive(Clone)]
pub struct Kek {
    key: [u8; 32],
    id: String,
}

impl Drop for Kek {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    /// From text: 64 hex digits, or base64 (standard or URL-safe, padded or not) of 32 bytes;
    /// surrounding whitespace is ignored.
    pub fn parse(text: &[u8]) -> Result<Kek, String> {
        use base64::Engine;
        let text = text.trim_ascii();
        let bytes = if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
            hex_decode(text)
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines.iter().find_map(|e| e.decode(text).ok())
        };
        let bytes = Zeroizing::new(bytes.ok_or("not 64 hex digits or base64")?);
        let mut key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| "a KEK is 32 bytes (64 hex digits or 44 base64 characters)".to_string())?;
        let kek = Kek::from_bytes(key);
        key.zeroize();
        Ok(kek)
    }

    pub fn from_bytes(key: [u8; 32]) -> Kek {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key);
        Kek { key, id: hex(&digest.as_ref()[..8]) }
    }

    /// 32 new random bytes.
    pub fn generate() -> Result<Kek, String> {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| "no randomness available".to_string())?;
        let kek = Kek::from_bytes(key);
        key.zeroize();
        Ok(kek)
    }

    /// The key as 64 hex digits (for `secrets keygen`).
    pub fn to_hex(&self) -> String {
        hex(&self.key)
    }

    /// First 8 bytes of the key's SHA-256, 16 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn hex_decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2).map(|p| std::str::from_utf8(p).ok().and_then(|s| u8::from_str_radix(s, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use base64::Engine;

    #[test]
    fn hex_and_base64_give_the_same_key() {
        let k = Kek::generate().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.bytes());
        let a = Kek::parse(k.to_hex().as_bytes()).unwrap();
        let b = Kek::parse(format!("  {b64}\n").as_bytes()).unwrap();
        assert_eq!(a.id(), k.id());
        assert_eq!(b.id(), k.id());
        assert_eq!(k.id().len(), 16);
        assert!(Kek::parse(b"short").is_err());
        assert!(Kek::parse(&[b'a'; 63]).is_err());
        assert!(format!("{k:?}").contains(k.id()));
        assert!(!format!("{k:?}").contains(&k.to_hex()));
    }

    #[test]
    fn command_source_reads_stdout_and_hides_stderr() {
        let k = Kek::generate().unwrap();
        let src = KekSource { command: Some(vec!["printf".into(), k.to_hex()]), ..KekSource::default() };
        assert_eq!(src.load().unwrap().id(), k.id());
        // Debug (a config printed for diagnosis) names the program, never its arguments.
        let shown = format!("{src:?}");
        assert!(shown.contains("printf (+1 arguments)") && !shown.contains(&k.to_hex()[..16]), "{shown}");
        let failing = KekSource {
            command: Some(vec!["sh".into(), "-c".into(), "echo topsecret >&2; exit 3".into()]),
            ..KekSource::default()
        };
        let err = failing.load().unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
        assert!(err.contains("failed"), "{err}");
        let slow = run_command(&["sleep".into(), "5".into()], Duration::from_millis(200)).unwrap_err();
        assert!(slow.contains("did not finish"), "{slow}");
        let none = KekSource::default().load().unwrap_err();
        assert!(none.contains("exactly one"), "{none}");
        // Too much output: refused at once (drained, so the command is not left blocked until the timeout).
        let chatty = ["sh".into(), "-c".into(), "head -c 200000 /dev/zero; exit 0".into()];
        let err = run_command(&chatty, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("more than 64 KiB"), "{err}");
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_not_read_whole() {
        let zero = KekSource { file: Some("/dev/zero".into()), ..KekSource::default() };
        let err = zero.load().unwrap_err();
        assert!(err.contains("larger than 64 KiB"), "{err}");
        let missing = KekSource { file: Some("/nonexistent/kek".into()), ..KekSource::default() };
        assert!(missing.load().unwrap_err().contains("/nonexistent/kek"));
        // A key file with a wrong length says so without the length or the text.
        let dir = std::env::temp_dir().join(format!("portcullis-kek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("short"), "00112233445566778899aabbccddeeff").unwrap();
        let short = KekSource { file: Some(dir.join("short")), ..KekSource::default() };
        let err = short.load().unwrap_err();
        // Judged after the file's name, which holds the process id (digits such as "16").
        let (_, said) = err.rsplit_once("`: ").unwrap();
        assert!(!said.contains("00112233") && !said.contains("16") && !said.contains("32 hex"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
