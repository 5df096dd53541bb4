//! Secret references. A config value that holds a secret is written as `${env:NAME}` or `${file:/path}`
//! and resolved while the file is read; a missing variable or unreadable file is an error that names the
//! reference (never its value). The resolved value is kept in a type whose `Debug` never prints it.

use serde::{de, Deserialize, Deserializer};
use std::fmt;

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
    Err(format!("`${{{inner}}}` is not a secret reference; use ${{env:NAME}} or ${{file:/path}}"))
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, so the error is raised while the parser is at this value (correct line/column).
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a secret: ${env:NAME}, ${file:/path} or a literal")
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
