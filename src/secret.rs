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
