//! Secret references. A config value that holds a secret is written as `${env:NAME}`, `${file:/path}`,
//! `${enc:v1:...}` (encrypted with the `secrets:` KEK, see [`envelope`]) or `${store:NAME}` (kept
//! encrypted in the state store, see [`vault`]), and resolved while the file is read; a missing variable,
//! unreadable file, wrong key or tampered value is an error that names the reference (never its value).
//! The resolved value is kept in a type whose `Debug` never prints it.
//!
//! `${enc:...}` and `${store:...}` need the `secrets:` (and `store:`) sections before the rest of the
//! file is read: the config loader reads those first and runs the main deserialization inside
//! [`scoped`], a thread-local resolution context. The KEK is loaded (and the store opened) at most once
//! per load, on first use. Nothing here runs per request.

pub mod cli;
pub mod clock;
pub mod envelope;
pub mod kek;
pub mod vault;

use serde::{de, Deserialize, Deserializer};
use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use vault::{Keyring, Keys, SecretsConfig, SqliteSecrets};

/// What `${enc:...}` and `${store:...}` resolve against during one config load.
struct Context {
    secrets: Result<Option<SecretsConfig>, String>,
    store: Result<Option<PathBuf>, String>,
    keys: Option<Result<Keys, String>>,
    vault: Option<Result<(SqliteSecrets, Keyring), String>>,
    /// The `${enc:...}` and `${store:...}` references deserialized as secrets (see [`misplaced`]).
    seen: Vec<String>,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// What [`scoped`] gives back besides `f`'s result.
#[derive(Debug, Default)]
pub struct Resolved {
    /// When `secrets:` is set, the KEK must load (so a config with an unusable KEK is refused even if
    /// nothing refers to it yet): why it did not.
    pub kek_error: Option<String>,
    /// The `${enc:...}` and `${store:...}` references that were read as secrets (for [`misplaced`]).
    pub seen: Vec<String>,
}

/// Runs `f` (a deserialization) with `secrets` and the store file `store` as the resolution context
/// for `${enc:...}` and `${store:...}`; the context ends with `f`, on this thread only (a reload on
/// another thread, or a CLI command, has its own).
///
/// Each section is `Err` when it is present but malformed (the references then say so).
pub fn scoped<R>(
    secrets: Result<Option<SecretsConfig>, String>,
    store: Result<Option<PathBuf>, String>,
    f: impl FnOnce() -> R,
) -> (R, Resolved) {
    struct Reset(Option<Context>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            CONTEXT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let has_secrets = matches!(secrets, Ok(Some(_)));
    let context = Context { secrets, store, keys: None, vault: None, seen: Vec::new() };
    let previous = CONTEXT.with(|c| c.borrow_mut().replace(context));
    let _reset = Reset(previous);
    let out = f();
    let kek_error = if has_secrets { with_keys(|_| Ok(())).err() } else { None };
    let seen = CONTEXT.with(|c| c.borrow_mut().as_mut().map(|ctx| std::mem::take(&mut ctx.seen))).unwrap_or_default();
    (out, Resolved { kek_error, seen })
}

/// The first `${enc:...}` or `${store:...}` reference in `doc` (the whole config as YAML) that was not
/// read as a secret (`seen`, from [`scoped`]): it sits in a field that is not a secret and would be used
/// as its literal text (a header value, a URL). Described without its data.
pub fn misplaced(doc: &serde_yaml_ng::Value, seen: &[String]) -> Option<(String, String)> {
    fn walk<'a>(v: &'a serde_yaml_ng::Value, out: &mut Vec<&'a str>) {
        use serde_yaml_ng::Value;
        match v {
            Value::String(s) if is_sealed_reference(s) => out.push(s),
            Value::Sequence(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Mapping(m) => m.iter().for_each(|(k, v)| {
                walk(k, out);
                walk(v, out);
            }),
            Value::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(doc, &mut found);
    let mut seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    for raw in found {
        if let Some(i) = seen.iter().position(|s| *s == raw) {
            seen.swap_remove(i);
            continue;
        }
        let shown = match raw.strip_prefix("${store:") {
            Some(name) => format!("${{store:{}", name),
            None => "${enc:...}".to_owned(),
        };
        return Some((raw.to_owned(), shown));
    }
    None
}

fn is_sealed_reference(s: &str) -> bool {
    (s.starts_with("${enc:") || s.starts_with("${store:")) && s.ends_with('}')
}

fn with_keys<R>(f: impl FnOnce(&Keys) -> Result<R, String>) -> Result<R, String> {
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.as_mut().ok_or("no `secrets:` section (the KEK) in this config")?;
        let secrets = match &ctx.secrets {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the config has no `secrets:` section (the KEK)".into()),
            Err(e) => return Err(format!("the `secrets:` section is invalid: {e}")),
        };
        let keys = ctx.keys.get_or_insert_with(|| Keys::load(secrets, false));
        f(keys.as_ref().map_err(Clone::clone)?)
    })
}

fn resolve_enc(body: &str) -> Result<String, String> {
    let (kek_id, blob) = envelope::parse_config(body)?;
    let plain = with_keys(|keys| {
        let kek = keys.find(kek_id)?;
        envelope::decrypt_config(kek, &blob)
            .map_err(|_| format!("it does not decrypt under KEK {kek_id}: the value was changed or the KEK is wrong"))
    })?;
    utf8(plain, "the decrypted value is not UTF-8")
}

/// The plaintext as text; when it is not UTF-8 the bytes are wiped before the error is returned.
fn utf8(plain: Vec<u8>, error: &str) -> Result<String, String> {
    String::from_utf8(plain).map_err(|e| {
        zeroize::Zeroize::zeroize(&mut e.into_bytes());
        error.to_owned()
    })
}

fn resolve_store(name: &str) -> Result<String, String> {
    let keys = with_keys(|k| Ok(k.clone()))?;
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.as_mut().ok_or("no resolution context")?;
        let path = match &ctx.store {
            Ok(Some(p)) => p.clone(),
            Ok(None) => return Err("the config has no `store:` section (the state store holds the secret)".into()),
            Err(e) => return Err(format!("the `store:` section is invalid: {e}")),
        };
        let vault = ctx.vault.get_or_insert_with(|| {
            let mut s = SqliteSecrets::open(&path, false)?;
            let ring = Keyring::load(keys, &mut s)?;
            Ok((s, ring))
        });
        let (s, ring) = vault.as_mut().map_err(|e| e.clone())?;
        let plain = s.get(ring, name)?.ok_or_else(|| format!("no secret `{name}` in the state store {}", s.path()))?;
        utf8(plain, "the stored value is not UTF-8")
    })
}

/// A resolved secret. `Debug` prints `Secret(***)`; use [`Secret::expose`] where the value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The value is wiped from memory when the secret is dropped (a reload drops the previous config's).
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The largest `${file:...}` secret: a mistaken `/dev/zero` or log file is refused, never read whole.
const MAX_FILE: u64 = 1 << 20;

/// Reads at most `max` bytes of text from `path` (more is an error); the buffer is wiped on drop.
fn read_capped(path: &Path, max: u64) -> Result<zeroize::Zeroizing<String>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.kind().to_string())?;
    let mut text = zeroize::Zeroizing::new(String::with_capacity(4096));
    file.take(max + 1).read_to_string(&mut text).map_err(|e| e.kind().to_string())?;
    if text.len() as u64 > max {
        return Err(format!("it is larger than {} KiB", max / 1024));
    }
    Ok(text)
}

/// Resolves one value: `${env:NAME}`, `${file:PATH}` (trailing newline trimmed), or a literal.
pub fn resolve(text: &str) -> Result<String, String> {
    let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
        return Ok(text.to_owned());
    };
    if let Some(name) = inner.strip_prefix("env:") {
        return std::env::var(name).map_err(|e| match e {
            std::env::VarError::NotPresent => format!("environment variable `{name}` is not set"),
            std::env::VarError::NotUnicode(_) => format!("environment variable `{name}` is not UTF-8"),
        });
    }
    if let Some(path) = inner.strip_prefix("file:") {
        let text =
            read_capped(Path::new(path), MAX_FILE).map_err(|e| format!("secret file `{path}` cannot be read: {e}"))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    if is_sealed_reference(text) {
        CONTEXT.with(|c| {
            if let Some(ctx) = c.borrow_mut().as_mut() {
                ctx.seen.push(text.to_owned());
            }
        });
    }
    if inner.starts_with("enc:") {
        return resolve_enc(inner).map_err(|e| format!("`${{enc:...}}`: {e}"));
    }
    if let Some(name) = inner.strip_prefix("store:") {
        if name.is_empty() {
            return Err("`${store:}` needs a secret name".into());
        }
        return resolve_store(name).map_err(|e| format!("`${{store:{name}}}`: {e}"));
    }
    // The text is not quoted: a literal secret that happens to look like `${...}` must not leak.
    let scheme =
        inner.split_once(':').map(|(s, _)| s).filter(|s| s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    Err(match scheme {
        Some(scheme) => format!(
            "`${{{scheme}:...}}` is not a secret reference; use ${{env:NAME}}, ${{file:/path}}, ${{enc:v1:...}} or ${{store:NAME}}"
        ),
        None => "a value of the form `${...}` is not a secret reference; use ${env:NAME}, ${file:/path}, ${enc:v1:...} \
                 or ${store:NAME}"
            .into(),
    })
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, so the error is raised while the parser is at this value (correct line/column).
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a secret: ${env:NAME}, ${file:/path}, ${enc:v1:...}, ${store:NAME} or a literal")
            }
            fn visit_str<E: de::Error>(self, raw: &str) -> Result<Secret, E> {
                let value = resolve(raw).map_err(E::custom)?;
                if value.is_empty() {
                    return Err(E::custom("a secret cannot be empty"));
                }
                Ok(Secret(value))
            }
        }
        d.deserialize_str(V)
    }
}

/// An Ed25519 public key (signed requests, the audit trail's checkpoints) from base64 (raw 32 bytes) or an SPKI PEM block.
pub fn ed25519_public_key(text: &[u8]) -> Result<[u8; 32], String> {
    use base64::Engine;
    let text = text.trim_ascii();
    let raw = if text.starts_with(b"-----BEGIN") {
        use x509_parser::prelude::FromDer;
        let (_, pem) = x509_parser::pem::parse_x509_pem(text).map_err(|_| "not a PEM block".to_string())?;
        if pem.label != "PUBLIC KEY" {
            return Err(format!("a `{}` PEM block is not a public key", pem.label));
        }
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents)
            .map_err(|_| "not a SubjectPublicKeyInfo".to_string())?;
        if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
            return Err("not an Ed25519 public key".into());
        }
        spki.subject_public_key.data.to_vec()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "public_key is neither base64 nor PEM".to_string())?
    };
    raw.try_into().map_err(|_| "an Ed25519 public key is 32 bytes".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_env_and_file() {
        assert_eq!(resolve("plain").as_deref(), Ok("plain"));
        std::env::set_var("PORTCULLIS_TEST_SECRET", "s3cret");
        assert_eq!(resolve("${env:PORTCULLIS_TEST_SECRET}").as_deref(), Ok("s3cret"));
        let err = resolve("${env:PORTCULLIS_SURELY_MISSING}").unwrap_err();
        assert!(err.contains("PORTCULLIS_SURELY_MISSING"));
        assert!(resolve("${file:/nonexistent/x}").is_err());
        assert!(resolve("${vault:x}").is_err());
        // A file that is not a secret (a device, a log) is refused rather than read whole.
        assert!(resolve("${file:/dev/zero}").unwrap_err().contains("larger than 1024 KiB"));
        // A variable that is set but not UTF-8 is not reported as unset.
        use std::os::unix::ffi::OsStrExt;
        std::env::set_var("PORTCULLIS_TEST_BINARY", std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        assert!(resolve("${env:PORTCULLIS_TEST_BINARY}").unwrap_err().contains("not UTF-8"));
        let s = Secret("hidden".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    /// A KEK in a fresh environment variable, its `secrets:` section, and `value` encrypted under it.
    fn kek_env(name: &str, value: &str) -> (SecretsConfig, String) {
        let kek = kek::Kek::generate().unwrap();
        std::env::set_var(name, kek.to_hex());
        let cfg = SecretsConfig {
            kek: kek::KekSource { env: Some(name.into()), ..kek::KekSource::default() },
            previous_kek: None,
            previous_kek_until: None,
        };
        (cfg, envelope::encrypt_config(&kek, value.as_bytes()).unwrap())
    }

    #[test]
    fn a_resolved_value_is_never_resolved_again() {
        // A variable, file or encrypted value that holds a reference gives that text, not what it names.
        std::env::set_var("PORTCULLIS_TEST_NESTED", "${file:/etc/hostname}");
        assert_eq!(resolve("${env:PORTCULLIS_TEST_NESTED}").as_deref(), Ok("${file:/etc/hostname}"));
        let dir = std::env::temp_dir().join(format!("portcullis-secret-nested-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "${env:PORTCULLIS_TEST_NESTED}\n").unwrap();
        let file_ref = format!("${{file:{}}}", dir.join("s").display());
        assert_eq!(resolve(&file_ref).as_deref(), Ok("${env:PORTCULLIS_TEST_NESTED}"));
        let (cfg, enc) = kek_env("PORTCULLIS_TEST_KEK_NESTED", "${env:PORTCULLIS_TEST_NESTED}");
        let (got, _) = scoped(Ok(Some(cfg)), Ok(None), || resolve(&enc));
        assert_eq!(got.as_deref(), Ok("${env:PORTCULLIS_TEST_NESTED}"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn errors_never_quote_a_value_that_looks_like_a_reference() {
        for (text, shown) in [
            ("${vault:hunter2-secret}", "${vault:...}"),
            ("${hunter2-secret}", "${...}"),
            ("${p4ss:w0rd:hunter2}", "${p4ss:...}"),
            ("${a very long: hunter2-secret}", "${...}"),
        ] {
            let err = resolve(text).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains(shown), "{err}");
        }
        // A malformed `${enc:...}` names neither its data nor its length.
        let err = resolve("${enc:v1:0123456789abcdef:hunter2***}").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_resolution_context_is_per_load_and_per_thread() {
        let (cfg, enc) = kek_env("PORTCULLIS_TEST_KEK_SCOPE", "scoped-value");
        // Outside a load: refused.
        assert!(resolve(&enc).unwrap_err().contains("no `secrets:` section"));
        let (inside, resolved) = scoped(Ok(Some(cfg.clone())), Ok(None), || {
            let here = resolve(&enc);
            // Another thread (a reload, a CLI command) does not see this load's KEK.
            let other = std::thread::scope(|s| s.spawn(|| resolve(&enc)).join().unwrap());
            // A nested load without `secrets:` does not see the outer one's; the outer one comes back after it.
            let (nested, _) = scoped(Ok(None), Ok(None), || resolve(&enc));
            let again = resolve(&enc);
            (here, other, nested, again)
        });
        assert_eq!(inside.0.as_deref(), Ok("scoped-value"));
        assert!(inside.1.unwrap_err().contains("no `secrets:` section"));
        assert!(inside.2.unwrap_err().contains("no `secrets:` section"));
        assert_eq!(inside.3.as_deref(), Ok("scoped-value"));
        assert_eq!(resolved.seen.len(), 2, "the nested load's reference is its own");
        assert!(resolved.kek_error.is_none());
        // After the load (even one that panicked), nothing is left behind on this thread.
        assert!(resolve(&enc).unwrap_err().contains("no `secrets:` section"));
        let panicked = std::panic::catch_unwind(|| scoped(Ok(Some(cfg)), Ok(None), || panic!("in the middle")));
        assert!(panicked.is_err());
        assert!(resolve(&enc).unwrap_err().contains("no `secrets:` section"));
    }

    #[test]
    fn sealed_references_outside_secret_fields_are_found() {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            "a: ${store:db}\nb:\n  - ${store:db}\n  - ${enc:v1:0123456789abcdef:AAAA}\nc:\n  ${store:key}: x\nd: plain\n",
        )
        .unwrap();
        let seen = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let all = seen(&["${store:db}", "${store:db}", "${enc:v1:0123456789abcdef:AAAA}", "${store:key}"]);
        assert_eq!(misplaced(&doc, &all), None);
        // One of the two `${store:db}` was not read as a secret.
        let (raw, shown) = misplaced(&doc, &all[1..]).unwrap();
        assert_eq!((raw.as_str(), shown.as_str()), ("${store:db}", "${store:db}"));
        // The encrypted one is described without its data.
        let (_, shown) = misplaced(&doc, &seen(&["${store:db}", "${store:db}", "${store:key}"])).unwrap();
        assert_eq!(shown, "${enc:...}");
        // A key of a mapping counts too.
        assert!(misplaced(&doc, &all[..3]).is_some());
    }
}
