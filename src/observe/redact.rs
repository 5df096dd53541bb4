//! What is never written anywhere (access log, security events, audit trail, inspection logs): values
//! of credentials and of fields whose names say they are secret, and card numbers.
//!
//! Logs carry names (of headers, parameters, JSON fields), never values, with one exception: an
//! inspection match quotes a short fragment of the value it matched, so an operator can tell an attack
//! from a false positive. That fragment is withheld when the value sits under a secret name, in a
//! header or a cookie, and any card number in it is masked.

use std::borrow::Cow;

/// Names whose values are secret whatever the config says (compared without regard to case, `-` and
/// `_`, as substrings: `user_password`, `X-Api-Key`, `refreshToken`).
const BUILT_IN: [&str; 9] =
    ["password", "passwd", "secret", "token", "apikey", "authorization", "cookie", "session", "credential"];

/// The names to redact: built in, plus `logging.redact` and every configured credential carrier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    extra: Vec<String>,
}

fn fold(name: &str) -> String {
    name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

impl Redactor {
    pub fn new<'a>(extra: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut extra: Vec<String> = extra.into_iter().map(fold).filter(|n| !n.is_empty()).collect();
        extra.sort();
        extra.dedup();
        Redactor { extra }
    }

    /// True when values under `name` (a header, a query parameter, a JSON field or pointer, a form
    /// field) are never to be written.
    pub fn is_secret(&self, name: &str) -> bool {
        let n = fold(name);
        BUILT_IN.iter().any(|b| n.contains(b)) || self.extra.iter().any(|e| n.contains(e.as_str()))
    }
}

/// `text` with every run of 13 to 19 digits (spaces and dashes between them allowed) that passes the
/// Luhn check replaced by `****` and its last four digits.
pub fn mask_cards(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // The longest run of digits with single separators from here.
        let (mut j, mut digits, mut end) = (i, Vec::with_capacity(19), i);
        while j < bytes.len() && digits.len() < 19 {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                end = j + 1;
            } else if !((b == b' ' || b == b'-') && j + 1 < bytes.len() && bytes[j + 1].is_ascii_digit()) {
                break;
            }
            j += 1;
        }
        let followed_by_digit = bytes.get(end).is_some_and(u8::is_ascii_digit);
        if (13..=19).contains(&digits.len()) && !followed_by_digit && luhn(&digits) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[last..i]);
            o.push_str("****");
            for d in &digits[digits.len() - 4..] {
                o.push(char::from(b'0' + d));
            }
            last = end;
            i = end;
        } else {
            i = end.max(i + 1);
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[last..]);
            Cow::Owned(o)
        }
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_in_any_spelling() {
        let r = Redactor::new(["ssn", "x-internal-pin"]);
        for n in ["password", "user_password", "X-Api-Key", "api_key", "refreshToken", "json:/a/SSN", "X_Internal_Pin"]
        {
            assert!(r.is_secret(n), "{n}");
        }
        for n in ["name", "q", "limit", "json:/order/items"] {
            assert!(!r.is_secret(n), "{n}");
        }
    }

    #[test]
    fn cards_are_masked() {
        assert_eq!(mask_cards("pay 4111 1111 1111 1111 now"), "pay ****1111 now");
        assert_eq!(mask_cards("4111-1111-1111-1111"), "****1111");
        assert_eq!(mask_cards("id 4111111111111112"), "id 4111111111111112"); // fails Luhn
        assert_eq!(mask_cards("order 12345"), "order 12345");
        assert_eq!(mask_cards("x5500005555555559y"), "x****5559y");
    }
}
