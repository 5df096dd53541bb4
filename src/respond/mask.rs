//! Data-loss masking of text: payment card numbers, US social security numbers, IBANs, PEM private keys
//! and cloud access keys, found by hand-written linear scanners (no regular expressions, no
//! backtracking: every scanner looks at each byte a bounded number of times).
//!
//! The masks (README, "Response protection"):
//! - a card number (13 to 19 digits, spaces or dashes between them, a major network's first digit 2-6,
//!   Luhn-valid) keeps its last 4 digits and its separators: `**** **** **** 1111`;
//! - an SSN (`NNN-NN-NNNN`, area not 000, 666 or 9xx, group not 00, serial not 0000): `***-**-6789`;
//! - an IBAN (a known country's length, mod-97 valid; compact or in groups of 4) keeps its country
//!   code and last 4 characters: `DE** **** **** **** **30 00`;
//! - a PEM private key keeps its BEGIN and END lines; what is between becomes `[REDACTED]`;
//! - an AWS access key id (`AKIA`, `ASIA`, `ABIA`, `ACCA` + 16) and a Google API key (`AIza` + 35)
//!   keep their prefix and last 4; an Azure `AccountKey=` or `SharedAccessKey=` value is masked whole.
//!
//! Masks replace ASCII with ASCII, so the text stays valid UTF-8 and needs no JSON escaping.

use std::borrow::Cow;

/// Which kinds of data a route masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    pub cards: bool,
    pub ssn: bool,
    pub iban: bool,
    pub private_keys: bool,
    pub cloud_keys: bool,
}

impl Kinds {
    pub fn any(self) -> bool {
        self.cards || self.ssn || self.iban || self.private_keys || self.cloud_keys
    }

    /// The enabled kinds' names, for `check`'s chain description.
    pub fn names(self) -> Vec<&'static str> {
        let all = [
            (self.cards, "cards"),
            (self.ssn, "ssn"),
            (self.iban, "iban"),
            (self.private_keys, "private_keys"),
            (self.cloud_keys, "cloud_keys"),
        ];
        all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect()
    }
}

/// `text` with every finding of the enabled kinds masked, or `None` when nothing was found (the
/// usual case, which allocates nothing). Returns how many findings were masked too.
pub fn mask(text: &[u8], kinds: Kinds) -> Option<(Vec<u8>, usize)> {
    let mut cur: Cow<'_, [u8]> = Cow::Borrowed(text);
    let mut found = 0;
    if kinds.private_keys {
        if let Some((v, n)) = private_keys(&cur) {
            cur = Cow::Owned(v);
            found += n;
        }
    }
    if kinds.cloud_keys {
        found += cloud_keys(&mut cur);
    }
    let digits = cur.iter().any(u8::is_ascii_digit);
    // IBANs first: their digit groups could otherwise pass for a card number.
    if kinds.iban && digits {
        found += ibans(&mut cur);
    }
    if kinds.cards && digits {
        found += cards(&mut cur);
    }
    if kinds.ssn && digits {
        found += ssns(&mut cur);
    }
    match cur {
        Cow::Owned(v) if found > 0 => Some((v, found)),
        _ => None,
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True when no word character is right before `i`.
fn starts_word(b: &[u8], i: usize) -> bool {
    i == 0 || !is_word(b[i - 1])
}

/// True when no word character is at `end`.
fn ends_word(b: &[u8], end: usize) -> bool {
    end >= b.len() || !is_word(b[end])
}

/// Replaces the bytes at `positions` with `*` (copying the text on the first change).
fn star(cur: &mut Cow<'_, [u8]>, positions: impl Iterator<Item = usize>) {
    let buf = cur.to_mut();
    for p in positions {
        buf[p] = b'*';
    }
}

/// The Luhn check over ASCII digits.
pub fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Card numbers: a run of digits with single spaces or dashes between them, 13 to 19 digits, starting
/// with a major network's digit (2-6), Luhn-valid, not inside a word. A longer run is no card.
fn cards(cur: &mut Cow<'_, [u8]>) -> usize {
    let mut found = 0;
    let mut i = 0;
    while i < cur.len() {
        let b: &[u8] = cur;
        if !b[i].is_ascii_digit() || !starts_word(b, i) || (i > 0 && matches!(b[i - 1], b'-' | b'.' | b'*')) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = 0;
        let mut j = i;
        loop {
            while j < b.len() && b[j].is_ascii_digit() {
                digits += 1;
                j += 1;
            }
            if digits <= 19 && j + 1 < b.len() && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
                continue;
            }
            break;
        }
        i = j;
        if !(13..=19).contains(&digits) || !ends_word(b, j) || !(b'2'..=b'6').contains(&b[start]) {
            continue;
        }
        let run = &b[start..j];
        if !luhn(run.iter().copied().filter(u8::is_ascii_digit)) {
            continue;
        }
        // Every digit but the last 4.
        let mut keep = 4;
        let mut masked = Vec::with_capacity(19);
        for p in (start..j).rev() {
            if b[p].is_ascii_digit() {
                if keep > 0 {
                    keep -= 1;
                } else {
                    masked.push(p);
                }
            }
        }
        star(cur, masked.into_iter());
        found += 1;
    }
    found
}

/// US social security numbers, dashed (`NNN-NN-NNNN`): nine undashed digits are too often something
/// else. Numbers the SSA never issues (area 000, 666, 900-999; group 00; serial 0000) are left alone.
fn ssns(cur: &mut Cow<'_, [u8]>) -> usize {
    let mut found = 0;
    // Candidates are found by their first dash (SIMD search): text without one costs one pass.
    let mut from = 3;
    while from < cur.len() {
        let Some(p) = memchr::memchr(b'-', &cur[from..]) else { break };
        let i = from + p - 3;
        from += p + 1;
        if i + 11 > cur.len() {
            break;
        }
        let b: &[u8] = cur;
        let w = &b[i..i + 11];
        let shape = w.iter().enumerate().all(|(k, &c)| if k == 3 || k == 6 { c == b'-' } else { c.is_ascii_digit() });
        if !shape
            || !starts_word(b, i)
            || (i > 0 && b[i - 1] == b'-')
            || !ends_word(b, i + 11)
            || b.get(i + 11).is_some_and(|&c| c == b'-')
        {
            continue;
        }
        let area = &w[0..3];
        let valid = area != b"000" && area != b"666" && area[0] != b'9' && &w[4..6] != b"00" && &w[7..11] != b"0000";
        if valid {
            star(cur, [i, i + 1, i + 2, i + 4, i + 5].into_iter());
            found += 1;
        }
        from = i + 11;
    }
    found
}

/// The length of an IBAN of this country (ISO 13616 registry), or `None` for a country without IBANs.
fn iban_length(cc: &[u8]) -> Option<usize> {
    let n = match cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    };
    Some(n)
}

/// The ISO 7064 mod-97 check of an IBAN (its characters, without spaces, upper case).
pub fn iban_valid(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// IBANs: a country code, two check digits and the country's length of upper-case letters and digits,
/// compact or with single spaces between groups, not inside a word, mod-97 valid.
fn ibans(cur: &mut Cow<'_, [u8]>) -> usize {
    let mut found = 0;
    let mut i = 0;
    while i + 15 <= cur.len() {
        let b: &[u8] = cur;
        let head = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && starts_word(b, i);
        let Some(len) = head.then(|| iban_length(&b[i..i + 2])).flatten() else {
            i += 1;
            continue;
        };
        let mut chars = [0u8; 34];
        let mut at = [0usize; 34];
        let mut n = 0;
        let mut j = i;
        while n < len && j < b.len() {
            let c = b[j];
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                chars[n] = c;
                at[n] = j;
                n += 1;
                j += 1;
            } else if c == b' ' && n >= 4 && j + 1 < b.len() && b[j + 1].is_ascii_alphanumeric() && b[j - 1] != b' ' {
                j += 1;
            } else {
                break;
            }
        }
        if n == len && ends_word(b, j) && iban_valid(&chars[..n]) {
            star(cur, at[2..n - 4].iter().copied());
            found += 1;
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

/// PEM private keys (`-----BEGIN ... PRIVATE KEY-----`, any algorithm, also `PGP PRIVATE KEY BLOCK`):
/// what is between the BEGIN and END lines becomes `[REDACTED]`; without an END line, everything after
/// the BEGIN line does.
fn private_keys(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut found = 0;
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(&b[from..], BEGIN) {
        let start = from + p;
        let label_at = start + BEGIN.len();
        // The label: at most 40 upper-case letters and spaces, then dashes.
        let label_len = b[label_at..].iter().take(41).take_while(|c| c.is_ascii_uppercase() || **c == b' ').count();
        let label = &b[label_at..label_at + label_len];
        let header_end = label_at + label_len + DASHES.len();
        if label_len > 40
            || !b[label_at + label_len..].starts_with(DASHES)
            || memchr::memmem::find(label, b"PRIVATE KEY").is_none()
        {
            from = label_at;
            continue;
        }
        let end = memchr::memmem::find(&b[header_end..], b"-----END ").map_or(b.len(), |e| header_end + e);
        let o = out.get_or_insert_with(|| Vec::with_capacity(b.len()));
        o.extend_from_slice(&b[copied..header_end]);
        o.extend_from_slice(if end < b.len() { b"\n[REDACTED]\n" } else { b"\n[REDACTED]" });
        copied = end;
        found += 1;
        from = end.max(header_end);
        if end >= b.len() {
            break;
        }
        // Past the END line's own dashes.
        from += "-----END ".len();
    }
    let mut o = out?;
    o.extend_from_slice(&b[copied..]);
    Some((o, found))
}

/// AWS access key ids, Google API keys, Azure storage and Service Bus keys in connection strings.
fn cloud_keys(cur: &mut Cow<'_, [u8]>) -> usize {
    let mut found = 0;
    let mut i = 0;
    while i < cur.len() {
        // Every key starts with `A` or `S` (SIMD search to the next one).
        let Some(p) = memchr::memchr2(b'A', b'S', &cur[i..]) else { break };
        i += p;
        let b: &[u8] = cur;
        if !starts_word(b, i) {
            i += 1;
            continue;
        }
        let rest = &b[i..];
        // AWS: a 4-character prefix and 16 upper-case letters or digits.
        let aws = [b"AKIA", b"ASIA", b"ABIA", b"ACCA"].iter().any(|p| rest.starts_with(*p))
            && rest.len() >= 20
            && rest[4..20].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && ends_word(b, i + 20);
        if aws {
            star(cur, i + 4..i + 16);
            found += 1;
            i += 20;
            continue;
        }
        // Google: `AIza` and 35 characters of [A-Za-z0-9_-].
        let key_char = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-');
        let google = rest.starts_with(b"AIza")
            && rest.len() >= 39
            && rest[4..39].iter().all(key_char)
            && b.get(i + 39).is_none_or(|c| !key_char(c));
        if google {
            star(cur, i + 4..i + 35);
            found += 1;
            i += 39;
            continue;
        }
        // Azure: the base64 value of `AccountKey=` or `SharedAccessKey=`, masked whole.
        let name = [&b"AccountKey="[..], &b"SharedAccessKey="[..]].into_iter().find(|p| rest.starts_with(p));
        if let Some(name) = name {
            let v = i + name.len();
            let n = b[v..].iter().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')).count();
            if n >= 32 {
                star(cur, v..v + n);
                found += 1;
            }
            i = v + n;
            continue;
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ALL: Kinds = Kinds { cards: true, ssn: true, iban: true, private_keys: true, cloud_keys: true };

    fn masked(s: &str) -> String {
        mask(s.as_bytes(), ALL).map_or_else(|| s.to_owned(), |(v, _)| String::from_utf8(v).unwrap())
    }

    #[test]
    fn luhn_known_numbers() {
        for ok in ["4111111111111111", "5500005555555559", "378282246310005", "6011111111111117", "79927398713"] {
            assert!(luhn(ok.bytes()), "{ok}");
        }
        for bad in ["4111111111111112", "1234567812345678", "79927398710"] {
            assert!(!luhn(bad.bytes()), "{bad}");
        }
    }

    #[test]
    fn cards_masked_keeping_the_last_four() {
        assert_eq!(masked("4111111111111111"), "************1111");
        assert_eq!(masked("card 4111 1111 1111 1111 ok"), "card **** **** **** 1111 ok");
        assert_eq!(masked("4111-1111-1111-1111"), "****-****-****-1111");
        assert_eq!(masked("amex 378282246310005."), "amex ***********0005.");
        assert_eq!(masked("a 4111111111111111 and 5500005555555559"), "a ************1111 and ************5559");
    }

    #[test]
    fn card_lookalikes_left_alone() {
        for s in [
            "4111111111111112",          // Luhn fails
            "41111111111111110000",      // 20 digits
            "x4111111111111111",         // inside a word
            "4111111111111111x",         // inside a word
            "1700000000000000",          // no card network starts with 1 (timestamps in ms do)
            "411111111111",              // 12 digits
            "4111  1111 1111 1111",      // two spaces: two runs, each too short
            "ID-4111111111111111",       // part of a dashed identifier
            "12.4111111111111111",       // a decimal
            "order 0000000000000000 ok", // zeros pass Luhn, but no network starts with 0
        ] {
            assert_eq!(masked(s), s, "{s}");
        }
    }

    #[test]
    fn ssns_masked_and_impossible_ones_kept() {
        assert_eq!(masked("ssn 123-45-6789."), "ssn ***-**-6789.");
        for s in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "1123-45-6789",
            "123-45-67890",
            "a123-45-6789",
            "123-45-6789-1",
        ] {
            assert_eq!(masked(s), s, "{s}");
        }
    }

    #[test]
    fn ibans_mod97_checked() {
        assert!(iban_valid(b"DE89370400440532013000"));
        assert!(iban_valid(b"GB82WEST12345698765432"));
        assert!(!iban_valid(b"DE89370400440532013001"));
        assert_eq!(masked("DE89370400440532013000"), "DE****************3000");
        assert_eq!(masked("iban: DE89 3704 0044 0532 0130 00, thanks"), "iban: DE** **** **** **** **30 00, thanks");
        assert_eq!(masked("GB82 WEST 1234 5698 7654 32"), "GB** **** **** **** **54 32");
        for s in [
            "DE89370400440532013001",
            "DE8937040044053201300",
            "XX89370400440532013000",
            "de89370400440532013000",
            "DE893704004405320130000",
        ] {
            assert_eq!(masked(s), s, "{s}");
        }
    }

    #[test]
    fn private_keys_redacted() {
        let pem = "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc=\n-----END RSA PRIVATE KEY-----\nb";
        assert_eq!(masked(pem), "a\n-----BEGIN RSA PRIVATE KEY-----\n[REDACTED]\n-----END RSA PRIVATE KEY-----\nb");
        let two = "-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY----- -----BEGIN EC PRIVATE KEY-----y";
        assert_eq!(masked(two), "-----BEGIN PRIVATE KEY-----\n[REDACTED]\n-----END PRIVATE KEY----- -----BEGIN EC PRIVATE KEY-----\n[REDACTED]");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(masked(cert), cert);
        assert_eq!(masked("-----BEGIN -----BEGIN "), "-----BEGIN -----BEGIN ");
    }

    #[test]
    fn cloud_keys_masked() {
        assert_eq!(masked("key AKIAIOSFODNN7EXAMPLE."), "key AKIA************MPLE.");
        assert_eq!(masked("ASIAY34FZKBOKMUTVV7A"), "ASIA************VV7A");
        assert_eq!(masked("AKIAIOSFODNN7EXAMPLEX"), "AKIAIOSFODNN7EXAMPLEX");
        assert_eq!(masked("xAKIAIOSFODNN7EXAMPLE"), "xAKIAIOSFODNN7EXAMPLE");
        let g = "AIzaSyA-1234567890abcdefghijklmnopqrstu";
        assert_eq!(masked(g), "AIza*******************************rstu");
        let az = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;EndpointSuffix=x";
        let out = masked(az);
        assert!(out.contains(&format!("AccountKey={};", "*".repeat(88))), "{out}");
    }

    #[test]
    fn nothing_found_allocates_nothing() {
        assert!(mask(b"plain prose, 12 apples and 3 pears", ALL).is_none());
        assert!(mask(b"", ALL).is_none());
    }

    proptest::proptest! {
        #[test]
        fn masking_never_panics_and_keeps_utf8(s in "\\PC{0,200}") {
            if let Some((v, n)) = mask(s.as_bytes(), ALL) {
                proptest::prop_assert!(n > 0);
                proptest::prop_assert!(String::from_utf8(v).is_ok());
            }
        }

        #[test]
        fn digit_soup_never_panics(s in "[0-9 A-Z-]{0,300}") {
            let _ = mask(s.as_bytes(), ALL);
        }

        /// Any Luhn-valid number of a card's length and first digit, between words, is masked to its
        /// last 4 digits; the words around it are kept.
        #[test]
        fn every_valid_card_is_masked(first in 2u8..=6, body in proptest::collection::vec(0u8..10, 11..=17), pre in "[a-z ]{0,8}") {
            let mut digits: Vec<u8> = std::iter::once(first).chain(body).collect();
            // The check digit that makes it Luhn-valid.
            let check = (0..10u8).find(|c| {
                let mut d = digits.clone();
                d.push(*c);
                luhn(d.iter().map(|x| x + b'0'))
            }).unwrap();
            digits.push(check);
            let card: String = digits.iter().map(|d| char::from(d + b'0')).collect();
            let text = format!("{pre} {card} end");
            let out = masked(&text);
            let n = card.len();
            proptest::prop_assert_eq!(out, format!("{pre} {}{} end", "*".repeat(n - 4), &card[n - 4..]));
        }

        /// Any IBAN with valid check digits is masked; one with a changed check digit is not.
        #[test]
        fn every_valid_iban_is_masked(bban in "[0-9]{18}") {
            let check = 98 - {
                let probe = format!("DE00{bban}");
                let mut rem = 0u32;
                for c in probe[4..].bytes().chain(probe[..4].bytes()) {
                    rem = match c {
                        b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
                        _ => (rem * 100 + u32::from(c - b'A') + 10) % 97,
                    };
                }
                rem
            };
            let iban = format!("DE{check:02}{bban}");
            proptest::prop_assert!(iban_valid(iban.as_bytes()));
            proptest::prop_assert_eq!(masked(&iban), format!("DE{}{}", "*".repeat(16), &iban[18..]));
            let wrong = format!("DE{:02}{bban}", (check + 1) % 100);
            proptest::prop_assert_eq!(masked(&wrong), wrong.clone());
        }
    }
}
