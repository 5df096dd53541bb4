//! The per-field transforms: keys derived with HKDF-SHA-256 from the `tokenization.key` and the field's
//! name, and the three modes. No primitive is written here: AES-256-GCM-SIV, AES-256-GCM, HMAC-SHA-256
//! and HKDF come from `aws-lc-rs`.
//!
//! - `tokenize`: AES-256-GCM-SIV under the field key with a fixed nonce derived from it. GCM-SIV is
//!   nonce-misuse resistant: a repeated nonce reveals only that two plaintexts are equal, which is the
//!   determinism wanted (joins). The tag authenticates the token, so a forged `tok_` value is refused.
//! - `encrypt`: AES-256-GCM with a random 96-bit nonce; the associated data binds the field.
//! - `format_preserving`: see [`FieldCipher::format_preserving`] and `vault.rs`.

use crate::secret::envelope::{open_with, seal_with};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, AES_256_GCM_SIV, NONCE_LEN};
use aws_lc_rs::{hkdf, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The mark of a deterministic token.
pub const TOKEN_MARK: &str = "tok_";
/// The mark of an encrypted value.
pub const ENCRYPTED_MARK: &str = "enc_";
/// The longest value a field transforms (bytes); longer values are refused, never forwarded.
pub const MAX_VALUE: usize = 4096;

/// A field's keys, derived once at load.
pub struct FieldCipher {
    name: Box<str>,
    siv: LessSafeKey,
    siv_nonce: [u8; NONCE_LEN],
    gcm: LessSafeKey,
    /// `encrypt\0<name>`: the associated data of `encrypt`.
    encrypt_aad: Box<[u8]>,
    digits: hmac::Key,
    vault: LessSafeKey,
}

impl std::fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCipher").field("name", &self.name).finish_non_exhaustive()
    }
}

/// 32 bytes of HKDF-SHA-256 output for `purpose` and the field `name`.
fn derive(key: &[u8], purpose: &str, name: &str) -> Result<[u8; 32], String> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"portcullis tokenization v1");
    let prk = salt.extract(key);
    let info = [purpose.as_bytes(), b"\0", name.as_bytes()];
    let okm = prk.expand(&info, hkdf::HKDF_SHA256).map_err(|_| "key derivation failed".to_string())?;
    let mut out = [0u8; 32];
    okm.fill(&mut out).map_err(|_| "key derivation failed".to_string())?;
    Ok(out)
}

fn aead(alg: &'static aws_lc_rs::aead::Algorithm, bytes: &[u8; 32]) -> Result<LessSafeKey, String> {
    Ok(LessSafeKey::new(UnboundKey::new(alg, bytes).map_err(|_| "bad AEAD key".to_string())?))
}

/// Why a value cannot be transformed: a stable code for the problem's `errors` member.
pub type Refusal = &'static str;

impl FieldCipher {
    /// The keys of the field `name` under the master `key` (at least 32 bytes).
    pub fn new(key: &[u8], name: &str) -> Result<FieldCipher, String> {
        let siv = derive(key, "tokenize", name)?;
        let nonce = derive(key, "tokenize-nonce", name)?;
        let mut siv_nonce = [0u8; NONCE_LEN];
        siv_nonce.copy_from_slice(&nonce[..NONCE_LEN]);
        Ok(FieldCipher {
            name: name.into(),
            siv: aead(&AES_256_GCM_SIV, &siv)?,
            siv_nonce,
            gcm: aead(&AES_256_GCM, &derive(key, "encrypt", name)?)?,
            encrypt_aad: [b"encrypt\0".as_slice(), name.as_bytes()].concat().into(),
            digits: hmac::Key::new(hmac::HMAC_SHA256, &derive(key, "format-preserving", name)?),
            vault: aead(&AES_256_GCM, &derive(key, "vault", name)?)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `tok_<base64url(GCM-SIV(value))>`: the same value gives the same token.
    pub fn tokenize(&self, value: &str) -> Result<String, Refusal> {
        let mut buf = Vec::with_capacity(value.len() + 16);
        buf.extend_from_slice(value.as_bytes());
        let nonce = Nonce::assume_unique_for_key(self.siv_nonce);
        self.siv.seal_in_place_append_tag(nonce, Aad::from(self.name.as_bytes()), &mut buf).map_err(|_| "seal")?;
        let mut out = String::with_capacity(TOKEN_MARK.len() + buf.len().div_ceil(3) * 4);
        out.push_str(TOKEN_MARK);
        URL_SAFE_NO_PAD.encode_string(&buf, &mut out);
        Ok(out)
    }

    /// The value of a `tok_` token of this field; `None` for anything else (forged, another field's).
    pub fn detokenize(&self, token: &str) -> Option<String> {
        let mut buf = URL_SAFE_NO_PAD.decode(token.strip_prefix(TOKEN_MARK)?).ok()?;
        let nonce = Nonce::assume_unique_for_key(self.siv_nonce);
        let plain = self.siv.open_in_place(nonce, Aad::from(self.name.as_bytes()), &mut buf).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// `enc_<base64url(nonce || AES-256-GCM(value))>`, a fresh random nonce each time.
    pub fn encrypt(&self, value: &str) -> Result<String, Refusal> {
        let buf = seal_with(&self.gcm, &self.encrypt_aad, value.as_bytes()).map_err(|_| "seal")?;
        let mut out = String::with_capacity(ENCRYPTED_MARK.len() + buf.len().div_ceil(3) * 4);
        out.push_str(ENCRYPTED_MARK);
        URL_SAFE_NO_PAD.encode_string(&buf, &mut out);
        Ok(out)
    }

    /// The value of an `enc_` value of this field; `None` for anything else.
    pub fn decrypt(&self, text: &str) -> Option<String> {
        let buf = URL_SAFE_NO_PAD.decode(text.strip_prefix(ENCRYPTED_MARK)?).ok()?;
        String::from_utf8(open_with(&self.gcm, &self.encrypt_aad, &buf).ok()?).ok()
    }

    /// The keyed digest of `counter` and a value: the fingerprint the vault compares and the source of
    /// a format-preserving token's digits.
    pub fn fingerprint(&self, counter: u8, value: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.digits);
        ctx.update(&[counter, 0]);
        ctx.update(value.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// `n` decimal digits drawn from the keyed digest stream of `(counter, value)`, unbiased (bytes
    /// of 250 and above are skipped).
    fn digits(&self, counter: u8, value: &str, n: usize, out: &mut Vec<u8>) {
        let mut block = 0u8;
        let mut left = n;
        while left > 0 {
            let mut ctx = hmac::Context::with_key(&self.digits);
            ctx.update(&[counter, 1, block]);
            ctx.update(value.as_bytes());
            for &b in ctx.sign().as_ref() {
                if left == 0 {
                    break;
                }
                if b < 250 {
                    out.push(b'0' + b % 10);
                    left -= 1;
                }
            }
            block = block.wrapping_add(1);
        }
    }

    /// A format-preserving token candidate for the digit string `value` (already checked by
    /// [`FpShape::check`]): the mark, then digits drawn from the keyed digest of `(counter, value)`,
    /// then (with `luhn`) the one digit that makes the whole Luhn-valid, then the kept last digits.
    pub fn format_preserving(&self, shape: &FpShape, counter: u8, value: &str) -> String {
        let n = value.len();
        let keep = shape.keep_last;
        let free = n - shape.mark.len() - keep - usize::from(shape.luhn);
        let mut out = Vec::with_capacity(n);
        out.extend_from_slice(shape.mark.as_bytes());
        self.digits(counter, value, free, &mut out);
        if shape.luhn {
            let slot = out.len();
            out.push(b'0');
            out.extend_from_slice(&value.as_bytes()[n - keep..]);
            fix_luhn(&mut out, slot);
        } else {
            out.extend_from_slice(&value.as_bytes()[n - keep..]);
        }
        // Only ASCII digits were pushed.
        String::from_utf8(out).unwrap_or_default()
    }

    fn vault_aad(&self, token: &str) -> Vec<u8> {
        [b"portcullis token_vault v1\0".as_slice(), self.name.as_bytes(), b"\0", token.as_bytes()].concat()
    }

    /// The original sealed for the vault: `nonce || AES-256-GCM(value)`, bound to the field and token.
    pub fn seal_original(&self, token: &str, value: &str) -> Result<Vec<u8>, Refusal> {
        seal_with(&self.vault, &self.vault_aad(token), value.as_bytes()).map_err(|_| "seal")
    }

    /// The original of a vault entry; `None` if it was not sealed for this field and token.
    pub fn open_original(&self, token: &str, sealed: &[u8]) -> Option<String> {
        String::from_utf8(open_with(&self.vault, &self.vault_aad(token), sealed).ok()?).ok()
    }
}

/// What a format-preserving field accepts and produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpShape {
    /// The reserved leading digits every token starts with.
    pub mark: String,
    /// The last digits kept as they are (4: the digits receipts show).
    pub keep_last: usize,
    /// The value is a card number: Luhn-valid in, Luhn-valid out.
    pub luhn: bool,
    /// Digits the token draws from the digest at least (fewer make collisions likely).
    pub min_free: usize,
}

/// The fewest drawn digits a token may have: below a million tokens per kept tail, collisions (and
/// guessing) get cheap.
pub const MIN_FREE_DIGITS: usize = 6;

impl FpShape {
    /// Checks a value: digits only, a card length (12 to 19) and a valid Luhn check with `luhn`, 8 to
    /// 32 digits otherwise, and room for the mark, the kept digits and at least six drawn ones.
    pub fn check(&self, value: &str) -> Result<(), Refusal> {
        let b = value.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return Err("digits");
        }
        let (lo, hi) = if self.luhn { (12, 19) } else { (8, 32) };
        if b.len() < lo || b.len() > hi {
            return Err("length");
        }
        if b.len() < self.mark.len() + self.keep_last + usize::from(self.luhn) + self.min_free {
            return Err("length");
        }
        if self.luhn && !luhn_valid(b) {
            return Err("luhn");
        }
        Ok(())
    }

    /// True if `value` is already a token of this shape: it carries the mark and passes [`check`].
    pub fn is_token(&self, value: &str) -> bool {
        value.starts_with(&self.mark) && self.check(value).is_ok()
    }
}

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    luhn_sum(digits).is_multiple_of(10)
}

fn luhn_sum(digits: &[u8]) -> u32 {
    digits.iter().rev().enumerate().map(|(i, &d)| luhn_weight(d - b'0', i % 2 == 1)).sum()
}

fn luhn_weight(d: u8, doubled: bool) -> u32 {
    let d = u32::from(d);
    if doubled {
        let x = 2 * d;
        if x > 9 {
            x - 9
        } else {
            x
        }
    } else {
        d
    }
}

/// Sets the digit at `slot` (one of `b`'s ASCII digits) so that `b` passes the Luhn check. One digit
/// always does: at either weight, the ten digits give ten different residues.
fn fix_luhn(b: &mut [u8], slot: usize) {
    b[slot] = b'0';
    let rest = luhn_sum(b);
    let doubled = (b.len() - 1 - slot) % 2 == 1;
    for d in 0..10u8 {
        if (rest + luhn_weight(d, doubled)).is_multiple_of(10) {
            b[slot] = b'0' + d;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn card() -> FpShape {
        FpShape { mark: "99".into(), keep_last: 4, luhn: true, min_free: MIN_FREE_DIGITS }
    }

    #[test]
    fn tokens_are_deterministic_per_field_and_reversible() {
        let a = FieldCipher::new(KEY, "card").unwrap();
        let b = FieldCipher::new(KEY, "ssn").unwrap();
        let t = a.tokenize("4111111111111111").unwrap();
        assert!(t.starts_with("tok_"));
        assert_eq!(t, a.tokenize("4111111111111111").unwrap());
        assert_ne!(t, b.tokenize("4111111111111111").unwrap());
        assert_eq!(a.detokenize(&t).as_deref(), Some("4111111111111111"));
        assert_eq!(b.detokenize(&t), None, "another field's token");
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(a.detokenize(&forged), None);
        let other = FieldCipher::new(b"another key, thirty-two bytes lo", "card").unwrap();
        assert_eq!(other.detokenize(&t), None);
    }

    #[test]
    fn encryption_is_randomised_and_bound_to_the_field() {
        let a = FieldCipher::new(KEY, "ssn").unwrap();
        let b = FieldCipher::new(KEY, "other").unwrap();
        let x = a.encrypt("123-45-6789").unwrap();
        let y = a.encrypt("123-45-6789").unwrap();
        assert!(x.starts_with("enc_") && x != y);
        assert_eq!(a.decrypt(&x).as_deref(), Some("123-45-6789"));
        assert_eq!(b.decrypt(&x), None);
        assert_eq!(a.decrypt("enc_AAAA"), None);
    }

    #[test]
    fn format_preserving_shape() {
        let c = FieldCipher::new(KEY, "card").unwrap();
        let s = card();
        assert_eq!(s.check("4111111111111111"), Ok(()));
        assert_eq!(s.check("4111111111111112"), Err("luhn"));
        assert_eq!(s.check("4111-1111"), Err("digits"));
        assert_eq!(s.check("41111111111"), Err("length"));
        assert_eq!(s.check("41111111111111111111"), Err("length"));
        let t = c.format_preserving(&s, 0, "4111111111111111");
        assert_eq!(t.len(), 16);
        assert!(t.starts_with("99") && t.ends_with("1111"), "{t}");
        assert!(luhn_valid(t.as_bytes()));
        assert!(s.is_token(&t));
        assert_ne!(t, c.format_preserving(&s, 1, "4111111111111111"));
        assert_eq!(t, c.format_preserving(&s, 0, "4111111111111111"));
        let sealed = c.seal_original(&t, "4111111111111111").unwrap();
        assert_eq!(c.open_original(&t, &sealed).as_deref(), Some("4111111111111111"));
        assert_eq!(c.open_original("9900000000001111", &sealed), None, "bound to its token");
    }

    proptest! {
        #[test]
        fn tokenize_round_trips(v in "\\PC{0,64}") {
            let c = FieldCipher::new(KEY, "f").unwrap();
            let t = c.tokenize(&v).unwrap();
            prop_assert_eq!(c.detokenize(&t), Some(v.clone()));
            let e = c.encrypt(&v).unwrap();
            prop_assert_eq!(c.decrypt(&e), Some(v));
        }

        #[test]
        fn format_preserving_keeps_length_luhn_and_tail(body in "[0-9]{11,18}", counter in 0u8..4) {
            // Make the number Luhn-valid by its last digit.
            let mut digits = format!("{body}0").into_bytes();
            let last = digits.len() - 1;
            fix_luhn(&mut digits, last);
            let v = String::from_utf8(digits).unwrap();
            let c = FieldCipher::new(KEY, "card").unwrap();
            let t = c.format_preserving(&card(), counter, &v);
            prop_assert_eq!(t.len(), v.len());
            prop_assert!(t.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(luhn_valid(t.as_bytes()));
            prop_assert!(t.starts_with("99"));
            prop_assert_eq!(&t[t.len() - 4..], &v[v.len() - 4..]);
        }
    }
}
