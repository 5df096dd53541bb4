//! The request side over `application/x-www-form-urlencoded` bodies: names and values decoded, the
//! fields' values replaced; a field named twice, a case variant (or `name[]`), a name an upstream
//! framework would rename to the field's (PHP: ` card`, `card.number`, `card[number`), a control
//! character in a name, a NUL anywhere and a raw `;` refused.

use super::json::case_variant;
use super::{invalid, Tokenizer};
use crate::exchange::Reject;

pub(super) fn rewrite(t: &Tokenizer, body: &[u8]) -> Result<Option<Vec<u8>>, Reject> {
    if body.contains(&b';') {
        return Err(invalid("body", "", "separator"));
    }
    // A NUL ends a name or value early in C-string parsers (PHP) and is how UTF-16 looks in ASCII.
    if body.contains(&0) || memchr::memmem::find(body, b"%00").is_some() {
        return Err(invalid("body", "", "nul"));
    }
    let mut seen = vec![false; t.fields.len()];
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut start = 0;
    while start <= body.len() {
        let end = memchr::memchr(b'&', &body[start..]).map_or(body.len(), |p| start + p);
        let pair = &body[start..end];
        if !pair.is_empty() {
            let eq = memchr::memchr(b'=', pair);
            let raw_name = &pair[..eq.unwrap_or(pair.len())];
            let name = form_decode(raw_name).ok_or_else(|| invalid("body", "", "encoding"))?;
            if name.chars().any(char::is_control) {
                return Err(invalid("body", "", "control-character"));
            }
            let base = name.split('[').next().unwrap_or(&name);
            let (norm, norm_base) = (normalise(&name), normalise(base));
            for (fi, f) in t.fields.iter().enumerate() {
                let Some(field) = f.form.as_deref() else { continue };
                if name != field {
                    if base == field || case_variant(base, field) {
                        return Err(invalid("body", field, "case-variant"));
                    }
                    let nf = normalise(field);
                    if [&norm, &norm_base].into_iter().any(|n| *n == nf || case_variant(n, &nf)) {
                        return Err(invalid("body", field, "renamed"));
                    }
                    continue;
                }
                if std::mem::replace(&mut seen[fi], true) {
                    return Err(invalid("body", field, "repeated"));
                }
                let value_at = start + eq.map_or(pair.len(), |e| e + 1);
                let value =
                    form_decode(&body[value_at.min(end)..end]).ok_or_else(|| invalid("body", field, "encoding"))?;
                if let Some(new) = t.protect(f, &value).map_err(|c| t.refusal("body", field, c))? {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
                    o.extend_from_slice(&body[copied..value_at.min(end)]);
                    // Tokens are digits and base64url: nothing to percent-encode.
                    o.extend_from_slice(new.as_bytes());
                    copied = end;
                }
            }
        }
        start = end + 1;
    }
    Ok(out.map(|mut o| {
        o.extend_from_slice(&body[copied..]);
        o
    }))
}

/// A decoded name as PHP files it: leading spaces dropped, ` `, `.` and `[` (an unclosed one; a closed
/// one is caught through the name's base) made `_`. Compared case-insensitively after this.
fn normalise(name: &str) -> std::borrow::Cow<'_, str> {
    let name = name.trim_start_matches(' ');
    if name.contains([' ', '.', '[']) {
        name.replace([' ', '.', '['], "_").into()
    } else {
        name.into()
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent-decoding; `None` if the
/// result is not UTF-8.
fn form_decode(raw: &[u8]) -> Option<String> {
    let spaced: std::borrow::Cow<'_, [u8]> = if raw.contains(&b'+') {
        raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect::<Vec<u8>>().into()
    } else {
        raw.into()
    };
    percent_encoding::percent_decode(&spaced).decode_utf8().ok().map(std::borrow::Cow::into_owned)
}
