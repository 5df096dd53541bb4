//! Configuration: the file format ([`file`]; its typed scalars and secret references are the leaf
//! modules `crate::units` and `crate::secret`), loading with `file:line:column` errors, and compilation into a [`compile::Runtime`].
//!
//! YAML is read with serde (JSON is valid YAML, so JSON files work too). Error messages quote no
//! config text beyond the offending key or name, so secrets never leak through them.

pub mod compile;
pub mod file;
pub mod lint;

use std::fmt;
use std::path::{Path, PathBuf};

/// A config error that points at the file: `path:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn yaml_error(e: &serde_yaml_ng::Error, file: &Path) -> ConfigError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut message = e.to_string();
    // serde_yaml appends " at line X column Y"; we already say where.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    ConfigError { file: file.to_owned(), line, column, message }
}

/// The `secrets:` and `store:` sections alone, read before the rest (they resolve `${enc:...}` and
/// `${store:...}` references elsewhere in the file). `Err`: the section is there but malformed (the
/// main parse also reports it, with its line).
pub type SecretSections =
    (Result<Option<crate::secret::vault::SecretsConfig>, String>, Result<Option<crate::store::StoreConfig>, String>);

pub fn secret_sections(text: &str) -> SecretSections {
    let Ok(value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return (Ok(None), Ok(None));
    };
    let section = |name: &str| value.get(name).cloned().filter(|v| !v.is_null());
    let secrets = section("secrets").map(serde_yaml_ng::from_value).transpose().map_err(|e| format!("secrets: {e}"));
    let store = section("store").map(serde_yaml_ng::from_value).transpose().map_err(|e| format!("store: {e}"));
    (secrets, store)
}

/// Parses config text. `file` is only used in error messages.
pub fn parse(text: &str, file: &Path) -> Result<file::FileConfig, ConfigError> {
    let (secrets, store) = secret_sections(text);
    let store = store.map(|s| s.map(|s| s.sqlite));
    let (parsed, resolved) =
        crate::secret::scoped(secrets, store, || serde_yaml_ng::from_str::<file::FileConfig>(text));
    let cfg = parsed.map_err(|e| yaml_error(&e, file))?;
    if let Some(message) = resolved.kek_error {
        let line = text.lines().position(|l| l.starts_with("secrets:")).map_or(1, |i| i + 1);
        return Err(ConfigError { file: file.to_owned(), line, column: 1, message });
    }
    // A sealed reference in a field that is not a secret would be used as its literal text: refused.
    let doc = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap_or_default();
    if let Some((raw, shown)) = crate::secret::misplaced(&doc, &resolved.seen) {
        let line = text.lines().position(|l| l.contains(raw.as_str())).map_or(1, |i| i + 1);
        let column = text.lines().nth(line - 1).and_then(|l| l.find(raw.as_str())).map_or(1, |c| c + 1);
        let message = format!(
            "`{shown}` is in a field that is not a secret, where it would be used as its literal text; \
             `${{enc:...}}` and `${{store:...}}` are resolved only in secret fields (client_secret, hmac_secret, token, ...)"
        );
        return Err(ConfigError { file: file.to_owned(), line, column, message });
    }
    Ok(cfg)
}

/// Reads and parses the config file.
pub fn load(path: &Path) -> Result<(file::FileConfig, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: 1,
        column: 1,
        message: format!("cannot read the config file: {}", e.kind()),
    })?;
    Ok((parse(&text, path)?, text))
}

/// Reads, parses and compiles: what `check` and a reload do.
pub fn load_and_compile(
    path: &Path,
    lasting: &crate::pipeline::runtime::Lasting,
    previous: Option<&compile::Runtime>,
) -> Result<compile::Runtime, ConfigError> {
    let (cfg, text) = load(path)?;
    compile::compile(&cfg, lasting, previous).map_err(|e| e.locate(&text, path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn unknown_key_points_at_line_and_column() {
        let text = "listeners: []\nroutes: []\nbogus: 1\n";
        let err = parse(text, Path::new("c.yaml")).unwrap_err();
        assert_eq!((err.line, err.column), (3, 1));
        assert!(err.message.contains("bogus"), "{}", err.message);
        assert!(err.to_string().starts_with("c.yaml:3:1: "));
    }

    #[test]
    fn bad_duration_is_located() {
        let text = "listeners: []\nroutes: []\nlimits:\n  idle_timeout: 5 years\n";
        let err = parse(text, Path::new("c.yaml")).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.message.contains("unit"), "{}", err.message);
    }

    #[test]
    fn a_key_written_in_place_of_its_source_is_not_quoted() {
        let key = "3f9a1c0e5b7d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468";
        for kek in [key.to_owned(), format!("[{key}]"), format!("\"{key}\"")] {
            let text = format!("listeners: []\nroutes: []\nsecrets:\n  kek: {kek}\n");
            let err = parse(&text, Path::new("c.yaml")).unwrap_err();
            assert!(!err.message.contains(&key[..16]), "{}", err.message);
            assert!(err.message.contains("never the key itself"), "{}", err.message);
            assert_eq!(err.line, 4);
            let (secrets, _) = secret_sections(&text);
            assert!(!secrets.unwrap_err().contains(&key[..16]));
        }
        // The same for `previous_kek`, and a KEK source that names an unknown key.
        let text = format!("listeners: []\nroutes: []\nsecrets:\n  kek: {{ env: K }}\n  previous_kek: {key}\n");
        let err = parse(&text, Path::new("c.yaml")).unwrap_err();
        assert!(!err.message.contains(&key[..16]), "{}", err.message);
        let text = "listeners: []\nroutes: []\nsecrets:\n  kek: { path: /k }\n";
        assert!(parse(text, Path::new("c.yaml")).unwrap_err().message.contains("path"));
    }

    #[test]
    fn a_sealed_reference_in_a_field_that_is_not_a_secret_is_refused() {
        let text = "listeners:\n  - name: main\n    address: 127.0.0.1:0\nroutes: []\nheaders_note: x\n";
        assert!(parse(text, Path::new("c.yaml")).is_err(), "unknown key: the fixture itself is checked");
        for (name, shown) in
            [("${store:db-password}", "`${store:db-password}`"), ("${enc:v1:0123456789abcdef:QUJD}", "`${enc:...}`")]
        {
            let text = format!("listeners:\n  - name: {name}\n    address: 127.0.0.1:0\nroutes: []\n");
            let err = parse(&text, Path::new("c.yaml")).unwrap_err();
            assert_eq!((err.line, err.column), (2, 11), "{}", err.message);
            assert!(err.message.contains(shown), "{}", err.message);
            assert!(err.message.contains("not a secret"), "{}", err.message);
            assert!(!err.message.contains("QUJD"), "{}", err.message);
        }
        // Other text is left alone.
        let text = "listeners:\n  - name: ${store\n    address: 127.0.0.1:0\nroutes: []\n";
        assert!(parse(text, Path::new("c.yaml")).is_ok());
    }

    #[test]
    fn route_without_auth_is_an_error() {
        let text = "listeners: []\nroutes:\n  - name: a\n    match: { path: { prefix: / } }\n    upstream: u\n";
        let err = parse(text, Path::new("c.yaml")).unwrap_err();
        assert!(err.message.contains("auth"), "{}", err.message);
    }
}
