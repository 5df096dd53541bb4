//! Envelope encryption with AES-256-GCM (aws-lc-rs): values are sealed under a data key (DEK), DEKs are
//! wrapped under the KEK. Every sealed blob is `nonce (12) || ciphertext || tag (16)` with a fresh
//! random nonce, and its associated data binds it to where it belongs:
//!
//! - a wrapped DEK: `portcullis dek v1`, the DEK id and the KEK id;
//! - a stored value: `portcullis value v1`, the table, the row id, the column and the DEK id, so a
//!   flipped bit, a value swapped with another row's or copied to another id fails authentication;
//! - a `${enc:v1:...}` config value: `portcullis enc v1` and the KEK id, under a key derived from the
//!   KEK with HKDF-SHA256 (so the KEK itself never encrypts data directly).
//!
//! A failed authentication is an error, never garbage.

use super::kek::{hex, Kek};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

const TAG_LEN: usize = 16;

/// Authentication failed: wrong key, or the blob or its place was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered;

fn key(bytes: &[u8]) -> Result<LessSafeKey, Tampered> {
    UnboundKey::new(&AES_256_GCM, bytes).map(LessSafeKey::new).map_err(|_| Tampered)
}

/// Seals `plaintext` under `key` with `aad` and a fresh random nonce: `nonce || ciphertext || tag`.
/// (Also the tokenization stage's `encrypt` mode and token vault.)
pub fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "no randomness available".to_string())?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[NONCE_LEN..])
        .map_err(|_| "encryption failed".to_string())?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what [`seal_with`] sealed under `key` with `aad`.
pub fn open_with(key: &LessSafeKey, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, Tampered> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(Tampered);
    }
    let (nonce, sealed) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Tampered)?;
    let mut buf = sealed.to_vec();
    let Ok(plain) = key.open_in_place(nonce, Aad::from(aad), &mut buf) else {
        buf.zeroize();
        return Err(Tampered);
    };
    let n = plain.len();
    buf.truncate(n);
    Ok(buf)
}

/// A data key: 32 random bytes and a random id (16 hex digits). `Debug` shows the id only.
#[derive(Clone)]
pub struct Dek {
    id: String,
    key: [u8; 32],
}

impl Drop for Dek {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dek({})", self.id)
    }
}

fn dek_aad(dek_id: &str, kek_id: &str) -> Vec<u8> {
    [b"portcullis dek v1\0".as_slice(), dek_id.as_bytes(), b"\0", kek_id.as_bytes()].concat()
}

/// The associated data of a stored value: its table, row id, column and DEK id.
pub fn value_aad(table: &str, row: &str, column: &str, dek_id: &str) -> Vec<u8> {
    let mut aad = b"portcullis value v1".to_vec();
    for part in [table, row, column, dek_id] {
        aad.push(0);
        // Length-prefixed, so no two (table, row, column) tuples give the same bytes.
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

impl Dek {
    pub fn generate() -> Result<Dek, String> {
        let mut key = [0u8; 32];
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| "no randomness available".to_string())?;
        aws_lc_rs::rand::fill(&mut id).map_err(|_| "no randomness available".to_string())?;
        let dek = Dek { id: hex(&id), key };
        key.zeroize();
        Ok(dek)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// This DEK sealed under `kek` (AAD: DEK id and KEK id).
    pub fn wrap(&self, kek: &Kek) -> Result<Vec<u8>, String> {
        let k = key(kek.bytes()).map_err(|_| "bad KEK".to_string())?;
        seal_with(&k, &dek_aad(&self.id, kek.id()), &self.key)
    }

    /// The DEK `id` from `wrapped` under `kek`.
    pub fn unwrap(id: &str, wrapped: &[u8], kek: &Kek) -> Result<Dek, Tampered> {
        let k = key(kek.bytes())?;
        let bytes = Zeroizing::new(open_with(&k, &dek_aad(id, kek.id()), wrapped)?);
        let mut key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Tampered)?;
        let dek = Dek { id: id.to_owned(), key };
        key.zeroize();
        Ok(dek)
    }

    /// Seals a value for (table, row, column).
    pub fn seal(&self, table: &str, row: &str, column: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let k = key(&self.key).map_err(|_| "bad data key".to_string())?;
        seal_with(&k, &value_aad(table, row, column, &self.id), plaintext)
    }

    /// Opens a value sealed for (table, row, column).
    pub fn open(&self, table: &str, row: &str, column: &str, blob: &[u8]) -> Result<Vec<u8>, Tampered> {
        open_with(&key(&self.key)?, &value_aad(table, row, column, &self.id), blob)
    }
}

/// The prefix of a config value encrypted with `secrets encrypt`.
pub const ENC_PREFIX: &str = "enc:v1:";

fn config_key(kek: &Kek) -> Result<LessSafeKey, Tampered> {
    use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
    let prk = Salt::new(HKDF_SHA256, b"portcullis").extract(kek.bytes());
    let okm = prk.expand(&[b"config value v1"], &AES_256_GCM).map_err(|_| Tampered)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn enc_aad(kek_id: &str) -> Vec<u8> {
    [b"portcullis enc v1\0".as_slice(), kek_id.as_bytes()].concat()
}

/// `${enc:v1:KEKID:BASE64URL}`: the KEK's id (16 hex digits), then `nonce || ciphertext || tag`
/// (base64url, no padding), sealed under a key derived from the KEK.
pub fn encrypt_config(kek: &Kek, plaintext: &[u8]) -> Result<String, String> {
    let k = config_key(kek).map_err(|_| "bad KEK".to_string())?;
    let blob = seal_with(&k, &enc_aad(kek.id()), plaintext)?;
    Ok(format!("${{{ENC_PREFIX}{}:{}}}", kek.id(), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob)))
}

/// The KEK id an `enc:v1:` body (without `${`, `}`) names, and its blob.
pub fn parse_config(body: &str) -> Result<(&str, Vec<u8>), String> {
    let rest = body.strip_prefix(ENC_PREFIX).ok_or("not an `enc:v1:` value")?;
    let (kek_id, data) = rest.split_once(':').ok_or("an `enc:v1:` value is `enc:v1:KEKID:DATA`")?;
    if kek_id.len() != 16 || !kek_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the KEK id of an `enc:v1:` value is 16 hex digits".into());
    }
    let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| "the data of an `enc:v1:` value is not base64url")?;
    Ok((kek_id, blob))
}

/// Opens an `enc:v1:` blob under `kek` (whose id the value named).
pub fn decrypt_config(kek: &Kek, blob: &[u8]) -> Result<Vec<u8>, Tampered> {
    open_with(&config_key(kek)?, &enc_aad(kek.id()), blob)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn values_are_bound_to_table_row_column_and_dek() {
        let dek = Dek::generate().unwrap();
        let blob = dek.seal("secrets", "a", "value", b"hunter2").unwrap();
        assert_eq!(dek.open("secrets", "a", "value", &blob).unwrap(), b"hunter2");
        // Not in the blob in the clear.
        assert!(!blob.windows(7).any(|w| w == b"hunter2"));
        // Each bit flipped anywhere (nonce, ciphertext, tag) is refused.
        for i in 0..blob.len() * 8 {
            let mut bad = blob.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(dek.open("secrets", "a", "value", &bad), Err(Tampered), "bit {i}");
        }
        // Another row, table, column, or data key: refused.
        assert_eq!(dek.open("secrets", "b", "value", &blob), Err(Tampered));
        assert_eq!(dek.open("other", "a", "value", &blob), Err(Tampered));
        assert_eq!(dek.open("secrets", "a", "meta", &blob), Err(Tampered));
        assert_eq!(Dek::generate().unwrap().open("secrets", "a", "value", &blob), Err(Tampered));
        // Truncated or empty.
        assert_eq!(dek.open("secrets", "a", "value", &blob[..blob.len() - 1]), Err(Tampered));
        assert_eq!(dek.open("secrets", "a", "value", &[]), Err(Tampered));
        // Two rows' values swapped: both refused.
        let other = dek.seal("secrets", "b", "value", b"other").unwrap();
        assert_eq!(dek.open("secrets", "a", "value", &other), Err(Tampered));
        assert_eq!(dek.open("secrets", "b", "value", &blob), Err(Tampered));
        // The same tuple spelled with the separator moved does not collide.
        assert_ne!(value_aad("t", "a\0b", "c", "d"), value_aad("t", "a", "b\0c", "d"));
    }

    #[test]
    fn every_seal_has_a_fresh_96_bit_nonce() {
        let dek = Dek::generate().unwrap();
        let kek = Kek::generate().unwrap();
        let mut nonces = std::collections::HashSet::new();
        for i in 0..2000 {
            // The same plaintext and place every time: only the nonce makes the blobs differ.
            let blob = dek.seal("secrets", "a", "value", b"same").unwrap();
            assert_eq!(blob.len(), NONCE_LEN + 4 + TAG_LEN);
            assert!(nonces.insert(blob[..NONCE_LEN].to_vec()), "nonce reused at seal {i}");
            let wrapped = dek.wrap(&kek).unwrap();
            assert!(nonces.insert(wrapped[..NONCE_LEN].to_vec()), "nonce reused at wrap {i}");
        }
        assert_eq!(NONCE_LEN, 12);
    }

    #[test]
    fn deks_unwrap_only_under_their_kek_and_id() {
        let kek = Kek::generate().unwrap();
        let dek = Dek::generate().unwrap();
        let wrapped = dek.wrap(&kek).unwrap();
        let back = Dek::unwrap(dek.id(), &wrapped, &kek).unwrap();
        let blob = dek.seal("t", "r", "c", b"x").unwrap();
        assert_eq!(back.open("t", "r", "c", &blob).unwrap(), b"x");
        assert!(Dek::unwrap(dek.id(), &wrapped, &Kek::generate().unwrap()).is_err());
        assert!(Dek::unwrap("0000000000000000", &wrapped, &kek).is_err());
        let mut bad = wrapped.clone();
        bad[20] ^= 0x80;
        assert!(Dek::unwrap(dek.id(), &bad, &kek).is_err());
        assert!(format!("{dek:?}").starts_with("Dek("));
    }

    #[test]
    fn config_values_round_trip_and_refuse_tampering() {
        let kek = Kek::generate().unwrap();
        let text = encrypt_config(&kek, b"s3cret value").unwrap();
        let body = text.strip_prefix("${").unwrap().strip_suffix('}').unwrap();
        let (id, blob) = parse_config(body).unwrap();
        assert_eq!(id, kek.id());
        assert_eq!(decrypt_config(&kek, &blob).unwrap(), b"s3cret value");
        assert!(decrypt_config(&Kek::generate().unwrap(), &blob).is_err());
        let mut bad = blob.clone();
        bad[15] ^= 1;
        assert!(decrypt_config(&kek, &bad).is_err());
        assert!(parse_config("enc:v1:zz:abc").is_err());
        assert!(parse_config("enc:v1:0123456789abcdef:***").is_err());
        assert!(parse_config("enc:v2:0123456789abcdef:abc").is_err());
        // Two encryptions of one value differ (fresh nonce).
        assert_ne!(text, encrypt_config(&kek, b"s3cret value").unwrap());
    }
}
