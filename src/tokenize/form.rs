//! The request side over `application/x-www-form-urlencoded` bodies: names and values decoded, the
//! fields' values replaced; a field named twice, a case variant (or `name[]`) and a raw `;` refused.

use super::json::case_variant;
use super::{invalid, Tokenizer};
use crate::exchange::Reject;

pub(super) fn rewrite(t: &Tokenizer, body: &[u8]) -> Result<Option<Vec<u8>>, Reject> {
    if body.contains(&b';') {
        return Err(invalid("body", "", "separator"));
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
            for (fi, f) in t.fields.iter().enumerate() {
                let Some(field) = f.form.as_deref() else { continue };
                if name != field {
                    let base = name.split('[').next().unwrap_or(&name);
                    if base == field || case_variant(base, field) {
                        return Err(invalid("body", field, "case-variant"));
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
