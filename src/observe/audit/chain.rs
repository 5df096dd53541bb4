//! The trail's line format, shared by the writer and `portcullis audit verify`.
//!
//! One JSON object per line, fields in this order:
//! `{"seq":N,"time":"…","prev":"<hex SHA-256 of the previous line>", then one of "event":{…} or
//! "start":{…}, then for signed lines "checkpoint":{…},"sig":"<base64 Ed25519>"}`.
//! `prev` hashes the previous line's exact bytes (without its `\n`); the first line of the trail has
//! 64 zeros. A file begins with a signed `start` line, which names the file before it after a rotation;
//! a checkpoint is a signed line with neither `event` nor `start`. The signature covers
//! [`SIGNING_CONTEXT`] followed by the line's bytes up to (not including) `,"sig":"`, so it covers the
//! `prev` hash and with it every line before.

use crate::events::{rfc3339_ms, Event};
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Prefixed to what a checkpoint signs, so an audit signature means nothing elsewhere.
pub const SIGNING_CONTEXT: &[u8] = b"portcullis audit checkpoint v1\n";
const SIG_FIELD: &str = ",\"sig\":\"";

pub type Hash = [u8; 32];
pub const GENESIS: Hash = [0; 32];

pub fn hash_line(line: &[u8]) -> Hash {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, line).as_ref());
    out
}

pub fn hex(h: &Hash) -> String {
    crate::observe::privacy::hex(h)
}

/// A short, public name for a signing key: the first 8 bytes of the SHA-256 of its raw public key.
pub fn key_id(public: &[u8]) -> String {
    crate::observe::privacy::hex(&hash_line(public)[..8])
}

/// What a signed line declares about the writer, so the verifier knows how long an unanchored tail
/// may honestly be.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub every: u32,
    pub interval_ms: u64,
    pub key: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// The file this one continues (a rotated file's name), absent at the trail's first line.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub previous_file: Option<String>,
}

#[derive(Serialize)]
struct Out<'a> {
    seq: u64,
    time: String,
    prev: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<&'a Start>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<&'a Checkpoint>,
}

/// One parsed line (the verifier's view).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub seq: u64,
    pub time: String,
    pub prev: String,
    #[serde(default)]
    pub event: Option<serde_json::Value>,
    #[serde(default)]
    pub start: Option<Start>,
    #[serde(default)]
    pub checkpoint: Option<Checkpoint>,
    #[serde(default)]
    pub sig: Option<String>,
}

impl Line {
    pub fn parse(bytes: &[u8]) -> Option<Line> {
        let line: Line = serde_json::from_slice(bytes).ok()?;
        let signed = line.checkpoint.is_some() && line.sig.is_some();
        let shape_ok = match (&line.event, &line.start) {
            (Some(_), None) => !signed && line.checkpoint.is_none() && line.sig.is_none(),
            (None, Some(_)) => signed,
            (None, None) => signed,
            (Some(_), Some(_)) => false,
        };
        shape_ok.then_some(line)
    }

    pub fn is_signed(&self) -> bool {
        self.checkpoint.is_some()
    }
}

/// The signing half: the writer's key and what its checkpoints declare.
pub struct Signer {
    key: Ed25519KeyPair,
    declared: Checkpoint,
}

impl Signer {
    pub fn new(key: Ed25519KeyPair, every: u32, interval_ms: u64) -> Signer {
        let id = key_id(key.public_key().as_ref());
        Signer { key, declared: Checkpoint { every, interval_ms, key: id } }
    }

    /// An event record: `{"seq":…,"time":…,"prev":…,"event":{…}}` (no newline).
    pub fn event_line(&self, seq: u64, time_ms: i64, prev: &Hash, event: &Event) -> Vec<u8> {
        let out =
            Out { seq, time: rfc3339_ms(time_ms), prev: hex(prev), event: Some(event), start: None, checkpoint: None };
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// A signed line: a checkpoint, or with `start` the first line of a file.
    pub fn signed_line(&self, seq: u64, time_ms: i64, prev: &Hash, start: Option<&Start>) -> Vec<u8> {
        let out = Out {
            seq,
            time: rfc3339_ms(time_ms),
            prev: hex(prev),
            event: None,
            start,
            checkpoint: Some(&self.declared),
        };
        let mut line = serde_json::to_vec(&out).unwrap_or_default();
        line.pop(); // the closing brace
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&line);
        let sig = self.key.sign(&msg);
        line.extend_from_slice(SIG_FIELD.as_bytes());
        line.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(sig.as_ref()).as_bytes());
        line.extend_from_slice(b"\"}");
        line
    }
}

/// Whether a signed line's signature is valid under `public` (a raw Ed25519 public key).
pub fn signature_valid(line: &[u8], public: &[u8; 32]) -> bool {
    let Some(at) = find_last(line, SIG_FIELD.as_bytes()) else {
        return false;
    };
    let rest = &line[at + SIG_FIELD.len()..];
    let Some(b64) = rest.strip_suffix(b"\"}") else {
        return false;
    };
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return false;
    };
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(&line[..at]);
    UnparsedPublicKey::new(&ED25519, public).verify(&msg, &sig).is_ok()
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Parses a `prev` field back to bytes.
pub fn parse_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    // Only the lowercase spelling the writer uses: another spelling is another line.
    (hex(&out) == text).then_some(out)
}
