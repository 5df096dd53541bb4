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
use std::path::PathBuf;
use vault::{Keyring, Keys, SecretsConfig, SqliteSecrets};

/// What `${enc:...}` and `${store:...}` resolve against during one config load.
struct Context {
    secrets: Result<Option<SecretsConfig>, String>,
    store: Result<Option<PathBuf>, String>,
    keys: Option<Result<Keys, String>>,
    vault: Option<Result<(SqliteSecrets, Keyring), String>>,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` (a deserialization) with `secrets` and the store file `store` as the resolution context
/// for `${enc:...}` and `${store:...}`; the context ends with `f`. After `f`, when `secrets:` is set,
/// the KEK must load (so a config with an unusable KEK is refused even if nothing refers to it yet):
/// that error is the second element.
///
/// Each section is `Err` when it is present but malformed (the references then say so).
pub fn scoped<R>(
    secrets: Result<Option<SecretsConfig>, String>,
    store: Result<Option<PathBuf>, String>,
    f: impl FnOnce() -> R,
) -> (R, Option<String>) {
    struct Reset(Option<Context>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            CONTEXT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let has_secrets = matches!(secrets, Ok(Some(_)));
    let previous = CONTEXT.with(|c| c.borrow_mut().replace(Context { secrets, store, keys: None, vault: None }));
    let _reset = Reset(previous);
    let out = f();
    let kek_error = if has_secrets { with_keys(|_| Ok(())).err() } else { None };
    (out, kek_error)
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
    String::from_utf8(plain).map_err(|_| "the decrypted value is not UTF-8".into())
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
        String::from_utf8(plain).map_err(|_| "the stored value is not UTF-8".into())
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

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Resolves one value: `${env:NAME}`, `${file:PATH}` (trailing newline trimmed), or a literal.
pub fn resolve(text: &str) -> Result<String, String> {
    let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
        return Ok(text.to_owned());
    };
    if let Some(name) = inner.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"));
    }
    if let Some(path) = inner.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("secret file `{path}` cannot be read: {}", e.kind()));
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
    Err(format!(
        "`${{{inner}}}` is not a secret reference; use ${{env:NAME}}, ${{file:/path}}, ${{enc:v1:...}} or ${{store:NAME}}"
    ))
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
        let s = Secret("hidden".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
