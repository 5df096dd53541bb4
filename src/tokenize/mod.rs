//! Field tokenization (place `request-transforms`) and detokenization (place `detokenization`): the
//! route's `tokenize:` fields are replaced before the request goes upstream, so the upstream never sees
//! a card number or national id it does not need, and the same fields in its JSON answers are turned
//! back for principals holding one of the field's `detokenize_roles` (everyone else sees the token, or
//! the field's `mask`).
//!
//! Decisions (README, "Field tokenization"; `docs/tokenization.md`):
//! - JSON bodies (`application/json`, `+json`) by JSON pointer (`*` is any one key or index) and
//!   `application/x-www-form-urlencoded` bodies by field name. A body of any other media type, or one
//!   with a `Content-Encoding`, on a tokenizing route is refused with 415: what cannot be read cannot be
//!   protected. A JSON body on a route without pointers (or a form without form fields) likewise.
//! - The JSON body is first checked whole by a strict parser (RFC 8259; a malformed one is 400
//!   `malformed-json`), so no lenient upstream parser can find a field this walk did not. On the way to
//!   a field, a repeated key is 400 `malformed-json` and a key that differs from the field's only in
//!   ASCII case is 400 `case-variant`. Keys are compared unescaped (`"card\u005fnumber"` is
//!   `card_number`).
//! - A form field named twice, a case variant of it, a PHP-style `card_number[]`, and a raw `;` anywhere
//!   in the body (old parsers split on it) are refused with 400.
//! - A value that already is a token is left alone: `tok_` and `enc_` ones only if they open under the
//!   field's key (a forged one is 400 `invalid-token`); format-preserving ones only if the vault knows
//!   them (a value that merely starts with the mark is tokenized like any other, so a real number that
//!   happens to carry the mark never goes upstream).
//! - A malformed value is 400 `invalid-request` whose `errors` name the pointer (or form field) and a
//!   code: `type` (not a string; `null` passes), `digits`, `length`, `luhn`, `too-long` (over 4096 bytes),
//!   `invalid-token`. Never forwarded.

pub mod cipher;
mod form;
mod json;
pub mod vault;

use crate::exchange::{FieldError, Invalid, Reject};
use crate::secret::Secret;
use cipher::{FieldCipher, FpShape, Refusal, ENCRYPTED_MARK, MAX_VALUE, TOKEN_MARK};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use vault::{Claim, Vault};

pub use vault::Kept;

/// The top-level `tokenization:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenizationConfig {
    /// The master key (at least 32 bytes; a secret reference). Each field's keys are derived from it and
    /// the field's name with HKDF-SHA-256.
    pub key: Secret,
    /// The most format-preserving tokens the vault holds (default 1,000,000); new values beyond are
    /// refused with 503.
    #[serde(default = "default_vault_max")]
    pub vault_max_entries: usize,
}

fn default_vault_max() -> usize {
    1_000_000
}

/// One entry of a route's `tokenize:` list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// A JSON pointer into JSON bodies and answers (`/card/number`, `/items/*/card`).
    #[serde(default)]
    pub pointer: Option<String>,
    /// A field of `application/x-www-form-urlencoded` bodies.
    #[serde(default)]
    pub form: Option<String>,
    /// The name keys are derived from (default: `route:`, the route's name, `:` and the pointer, or
    /// `form:` and the field name). Fields with the same name share tokens, so upstreams can join on
    /// them; by default no two routes share any.
    #[serde(default)]
    pub name: Option<String>,
    pub mode: Mode,
    /// `format_preserving`: the reserved leading digits every token starts with (required).
    #[serde(default)]
    pub mark: Option<String>,
    /// `format_preserving`: the last digits kept (default 4).
    #[serde(default)]
    pub keep_last: Option<usize>,
    /// `format_preserving`: the value is a card number, Luhn-checked in and out (default true).
    #[serde(default)]
    pub luhn: Option<bool>,
    /// Principals holding one of these roles see the original in answers (declared under `roles:`).
    #[serde(default)]
    pub detokenize_roles: Vec<String>,
    /// What everyone else sees in answers instead of the token (default: the token).
    #[serde(default)]
    pub mask: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Tokenize,
    FormatPreserving,
    Encrypt,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Tokenize => "tokenize",
            Mode::FormatPreserving => "format_preserving",
            Mode::Encrypt => "encrypt",
        }
    }
}

/// One segment of a field's pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Any,
    Name(Box<str>),
}

/// A compiled field.
#[derive(Debug)]
pub struct Field {
    pointer: Option<(Box<str>, Vec<Seg>)>,
    form: Option<Box<str>>,
    mode: Mode,
    cipher: FieldCipher,
    shape: Option<FpShape>,
    /// The roles that see originals in answers.
    pub detokenize_roles: Vec<String>,
    mask: Option<Box<str>>,
}

/// A route's tokenization, compiled.
#[derive(Debug)]
pub struct Tokenizer {
    fields: Vec<Field>,
    vault: Arc<Vault>,
    has_pointers: bool,
    has_forms: bool,
}

/// What a refused value is called in the problem's `errors`.
fn invalid(location: &'static str, pointer: &str, code: &'static str) -> Reject {
    Reject::Invalid(Box::new(Invalid {
        status: StatusCode::BAD_REQUEST,
        reason: "a tokenized field cannot be tokenized",
        errors: vec![FieldError { location, pointer: crate::json::capped(pointer).into(), code, offset: None }],
    }))
}

fn parse_pointer(p: &str) -> Result<Vec<Seg>, String> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!("tokenize: `{p}` is not a JSON pointer (it starts with /)"));
    };
    Ok(rest
        .split('/')
        .map(|s| if s == "*" { Seg::Any } else { Seg::Name(s.replace("~1", "/").replace("~0", "~").into()) })
        .collect())
}

impl Tokenizer {
    /// Compiles route `route`'s `tokenize:` list under the top-level section's key.
    pub fn compile(
        route: &str,
        fields: &[FieldConfig],
        top: Option<&TokenizationConfig>,
        vault: Arc<Vault>,
    ) -> Result<Tokenizer, String> {
        let Some(top) = top else {
            return Err("tokenize: needs the top-level `tokenization:` section (its key)".into());
        };
        let key = top.key.expose().as_bytes();
        if key.len() < 32 {
            return Err("tokenization.key must be at least 32 bytes".into());
        }
        if fields.is_empty() {
            return Err("tokenize: the list is empty".into());
        }
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let (pointer, form) = match (&f.pointer, &f.form) {
                (Some(p), None) => (Some((p.as_str().into(), parse_pointer(p)?)), None),
                (None, Some(n)) if !n.is_empty() => (None, Some(n.as_str().into())),
                _ => return Err("tokenize: each field has exactly one of `pointer` or `form`".into()),
            };
            let shown = f.pointer.clone().or_else(|| f.form.as_ref().map(|n| format!("form:{n}"))).unwrap_or_default();
            if f.name.as_deref().is_some_and(|n| n.starts_with("route:")) {
                return Err(format!(
                    "tokenize `{shown}`: a `name` starting with `route:` is reserved for the defaults"
                ));
            }
            // The default is the route's own: a token copied from another route's answer is not one here.
            let name = f.name.clone().unwrap_or_else(|| format!("route:{route}:{shown}"));
            let shape = match f.mode {
                Mode::FormatPreserving => {
                    let mark = f.mark.clone().ok_or_else(|| {
                        format!("tokenize `{shown}`: format_preserving needs a `mark` (reserved leading digits, e.g. \"99\")")
                    })?;
                    if mark.is_empty() || mark.len() > 6 || !mark.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("tokenize `{shown}`: mark must be 1 to 6 digits"));
                    }
                    let keep_last = f.keep_last.unwrap_or(4);
                    if keep_last > 8 {
                        return Err(format!("tokenize `{shown}`: keep_last is at most 8"));
                    }
                    Some(FpShape { mark, keep_last, luhn: f.luhn.unwrap_or(true), min_free: cipher::MIN_FREE_DIGITS })
                }
                _ => {
                    if f.mark.is_some() || f.keep_last.is_some() || f.luhn.is_some() {
                        return Err(format!(
                            "tokenize `{shown}`: mark, keep_last and luhn apply to format_preserving only"
                        ));
                    }
                    None
                }
            };
            if form.is_some() && (!f.detokenize_roles.is_empty() || f.mask.is_some()) {
                return Err(format!(
                    "tokenize `{shown}`: detokenize_roles and mask apply to answers, which are JSON: give the field a \
                     `pointer` entry with the same `name` for them"
                ));
            }
            if f.mask.as_deref().is_some_and(str::is_empty) {
                return Err(format!("tokenize `{shown}`: an empty mask"));
            }
            if out
                .iter()
                .any(|o: &Field| o.pointer.as_ref().map(|p| &p.0) == pointer.as_ref().map(|p| &p.0) && o.form == form)
            {
                return Err(format!("tokenize: `{shown}` is listed twice"));
            }
            out.push(Field {
                pointer,
                form,
                mode: f.mode,
                cipher: FieldCipher::new(key, &name)?,
                shape,
                detokenize_roles: f.detokenize_roles.clone(),
                mask: f.mask.as_deref().map(Into::into),
            });
        }
        let has_pointers = out.iter().any(|f| f.pointer.is_some());
        let has_forms = out.iter().any(|f| f.form.is_some());
        Ok(Tokenizer { fields: out, vault, has_pointers, has_forms })
    }

    /// What `check` prints.
    pub fn describe(&self) -> String {
        self.fields
            .iter()
            .map(|f| {
                let at = f
                    .pointer
                    .as_ref()
                    .map_or_else(|| format!("form:{}", f.form.as_deref().unwrap_or("")), |p| p.0.to_string());
                format!("{at} {}", f.mode.as_str())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The JSON pointers of the fields (answers carry tokens there: data-loss masking leaves them).
    pub fn pointers(&self) -> Vec<String> {
        self.fields.iter().filter_map(|f| f.pointer.as_ref().map(|p| p.0.to_string())).collect()
    }

    /// True if some field is detokenized or masked in answers (the answer must be read whole).
    pub fn rewrites_answers(&self) -> bool {
        self.fields.iter().any(|f| f.pointer.is_some())
    }

    /// The value a field sends upstream: `Ok(None)` when it already is a token of the field.
    pub fn protect(&self, f: &Field, value: &str) -> Result<Option<String>, Refusal> {
        if value.len() > MAX_VALUE {
            return Err("too-long");
        }
        match f.mode {
            Mode::Tokenize if value.starts_with(TOKEN_MARK) => {
                f.cipher.detokenize(value).map(|_| None).ok_or("invalid-token")
            }
            Mode::Tokenize => f.cipher.tokenize(value).map(Some),
            Mode::Encrypt if value.starts_with(ENCRYPTED_MARK) => {
                f.cipher.decrypt(value).map(|_| None).ok_or("invalid-token")
            }
            Mode::Encrypt => f.cipher.encrypt(value).map(Some),
            Mode::FormatPreserving => {
                let Some(shape) = &f.shape else { return Err("internal") };
                // A token this gateway issued is left alone; a value that only looks like one (it
                // carries the mark but the vault does not know it) is protected like any other.
                if value.starts_with(&shape.mark) && self.vault.get(f.cipher.name(), value).is_some() {
                    return Ok(None);
                }
                shape.check(value)?;
                self.format_preserving(f, shape, value).map(Some)
            }
        }
    }

    /// The format-preserving token of `value`: the first candidate (counter 0, 1, ...) that is free in
    /// the vault or already this value's. Same value, same token, as long as the vault is kept.
    fn format_preserving(&self, f: &Field, shape: &FpShape, value: &str) -> Result<String, Refusal> {
        let name = f.cipher.name();
        let fingerprint = f.cipher.fingerprint(0, value);
        for counter in 0..16u8 {
            let token = f.cipher.format_preserving(shape, counter, value);
            match self.vault.holds(name, &token, &fingerprint) {
                Some(true) => return Ok(token),
                Some(false) => continue,
                None => {}
            }
            match self.vault.claim(name, &token, fingerprint, || f.cipher.seal_original(&token, value).ok()) {
                Claim::Claimed | Claim::Same => return Ok(token),
                Claim::Taken => continue,
                Claim::Full => return Err("vault-full"),
            }
        }
        Err("vault-full")
    }

    /// The original of a token of `f`; `None` if it is not one (or its vault entry is gone).
    pub fn reveal(&self, f: &Field, token: &str) -> Option<String> {
        match f.mode {
            Mode::Tokenize => f.cipher.detokenize(token),
            Mode::Encrypt => f.cipher.decrypt(token),
            Mode::FormatPreserving => {
                let e = self.vault.get(f.cipher.name(), token)?;
                f.cipher.open_original(token, &e.sealed)
            }
        }
    }

    fn carries_mark(f: &Field, value: &str) -> bool {
        match (f.mode, &f.shape) {
            (Mode::Tokenize, _) => value.starts_with(TOKEN_MARK),
            (Mode::Encrypt, _) => value.starts_with(ENCRYPTED_MARK),
            (Mode::FormatPreserving, Some(s)) => s.is_token(value),
            (Mode::FormatPreserving, None) => false,
        }
    }

    /// Refuses what the stage cannot read, on the head: a body with a `Content-Encoding`, of a media
    /// type with no field of this route, or in a charset other than UTF-8 or US-ASCII (an upstream
    /// would decode `%00c%00a%00r%00d` in UTF-16 as `card`, which this stage never saw).
    pub fn check_head(&self, headers: &HeaderMap) -> Result<BodyKind, Reject> {
        for v in headers.get_all(http::header::CONTENT_ENCODING) {
            if !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity") {
                return Err(Reject::UnsupportedMediaType);
            }
        }
        let media = crate::content::request_media_type(headers)?;
        if let Some(m) = &media {
            if !matches!(m.charset.as_deref(), None | Some("utf-8" | "us-ascii")) {
                return Err(Reject::UnsupportedMediaType);
            }
        }
        match media {
            Some(m) if m.is_json() && self.has_pointers => Ok(BodyKind::Json),
            Some(m) if m.is_form() && self.has_forms => Ok(BodyKind::Form),
            _ => Err(Reject::UnsupportedMediaType),
        }
    }

    /// The body with its fields replaced: `Ok(None)` when nothing changed.
    pub fn rewrite(&self, kind: BodyKind, body: &[u8]) -> Result<Option<Vec<u8>>, Reject> {
        match kind {
            BodyKind::Json => json::rewrite(self, body),
            BodyKind::Form => form::rewrite(self, body),
        }
    }

    pub(crate) fn refusal(&self, location: &'static str, pointer: &str, code: Refusal) -> Reject {
        if code == "vault-full" {
            tracing::warn!(target: "security", event = "token_vault_full", "the token vault is full: a new value was refused");
            return Reject::StoreUnavailable;
        }
        invalid(location, pointer, code)
    }

    /// Detokenizes (or masks) the fields of a JSON answer; `allowed(i)`: the principal holds one of the
    /// `detokenize_roles` of field `i`. True if anything changed.
    ///
    /// For a principal without the roles, any non-null value at a field's pointer that is not one of
    /// the field's tokens (an original, a forged token, an array, an object) is replaced by the field's
    /// mask, or `[withheld]`; a token is replaced by the mask when the field has one. Data-loss masking
    /// leaves the value at the pointer (only) to this stage.
    pub fn detokenize(&self, body: &mut serde_json::Value, allowed: impl Fn(usize) -> bool) -> bool {
        let mut changed = false;
        for (i, f) in self.fields.iter().enumerate() {
            let Some((_, segs)) = &f.pointer else { continue };
            let may = allowed(i);
            visit(body, segs, &mut |v| {
                let replacement = match v {
                    serde_json::Value::String(s) if may && Self::carries_mark(f, s) => self.reveal(f, s),
                    _ if may => None,
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) if s.is_empty() => None,
                    // One of this field's tokens stays a token (unless the field has a mask).
                    serde_json::Value::String(s)
                        if f.mask.is_none() && Self::carries_mark(f, s) && self.reveal(f, s).is_some() =>
                    {
                        None
                    }
                    // Anything else (an original, a forged token, an array or object holding who knows
                    // what) is withheld whole: data-loss masking leaves this place to this stage.
                    _ => Some(f.mask.as_deref().unwrap_or("[withheld]").to_owned()),
                };
                if let Some(r) = replacement {
                    *v = serde_json::Value::String(r);
                    changed = true;
                }
            });
        }
        changed
    }
}

/// Refuses an explicit `name` given with different `detokenize_roles` or `mask` on two JSON fields
/// (of any routes): fields of one name share tokens, so one could reveal what the other withholds.
/// `routes`: each route's name and `tokenize:` list.
pub fn check_names<'a>(routes: impl IntoIterator<Item = (&'a str, &'a [FieldConfig])>) -> Result<(), String> {
    type Answer<'a> = (Vec<&'a str>, Option<&'a str>);
    let mut seen: std::collections::HashMap<&str, (&str, &str, Answer<'a>)> = std::collections::HashMap::new();
    for (route, fields) in routes {
        for f in fields {
            // Form fields carry no answer side (their roles and mask are refused).
            let (Some(name), Some(pointer)) = (f.name.as_deref(), f.pointer.as_deref()) else { continue };
            let mut roles: Vec<&str> = f.detokenize_roles.iter().map(String::as_str).collect();
            roles.sort_unstable();
            roles.dedup();
            let answer = (roles, f.mask.as_deref());
            match seen.get(name) {
                Some((r, p, a)) if *a != answer => {
                    return Err(format!(
                        "tokenize: the name `{name}` is given to `{p}` of route `{r}` and `{pointer}` of route                          `{route}` with different detokenize_roles or mask; fields of one name share tokens, so                          give them the same roles and mask, or different names"
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(name, (route, pointer, answer));
                }
            }
        }
    }
    Ok(())
}

/// The media type of a body the stage rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

/// Calls `f` on every value at `segs` under `v` (`*`: every member or element).
fn visit(v: &mut serde_json::Value, segs: &[Seg], f: &mut dyn FnMut(&mut serde_json::Value)) {
    let Some((first, rest)) = segs.split_first() else {
        f(v);
        return;
    };
    match (v, first) {
        (serde_json::Value::Object(m), Seg::Any) => m.values_mut().for_each(|c| visit(c, rest, f)),
        (serde_json::Value::Array(a), Seg::Any) => a.iter_mut().for_each(|c| visit(c, rest, f)),
        (serde_json::Value::Object(m), Seg::Name(n)) => {
            if let Some(c) = m.get_mut(&**n) {
                visit(c, rest, f);
            }
        }
        (serde_json::Value::Array(a), Seg::Name(n)) => {
            if let Some(c) = n.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                visit(c, rest, f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
