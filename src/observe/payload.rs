//! The access log's payload summary: what incident responders ask of a request body without the body
//! itself. Its media type, its size (counted by the body), a keyed hash of its bytes as received
//! (HMAC-SHA-256 under the log key, so equal bodies match across lines but a guessed body cannot be
//! confirmed without the key), and for a JSON object the names of its top-level keys, never a value.
//!
//! The [`Tap`] sees the body as it passes: streamed to the upstream (`validate::body::LimitedBody`) or
//! read whole by a stage. It keeps no bytes beyond the key being read.

use crate::observe::privacy::{hex, Privacy};
use aws_lc_rs::hmac;
use std::sync::{Arc, Mutex};

/// Keys listed at most, and bytes kept of each.
const MAX_KEYS: usize = 32;
const MAX_KEY_BYTES: usize = 64;

/// The names of a JSON object's top-level keys, read incrementally (chunk boundaries anywhere).
#[derive(Debug, Default)]
struct TopKeys {
    depth: u32,
    in_string: bool,
    escape: bool,
    expecting_key: bool,
    capturing: bool,
    started: bool,
    /// Not an object at the top, or more keys than are listed.
    stopped: bool,
    truncated: bool,
    key: Vec<u8>,
    keys: Vec<String>,
}

impl TopKeys {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.stopped {
                return;
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    self.keep(b);
                } else if b == b'\\' {
                    self.escape = true;
                    self.keep(b);
                } else if b == b'"' {
                    self.in_string = false;
                    if self.capturing {
                        self.capturing = false;
                        if self.keys.len() == MAX_KEYS {
                            self.truncated = true;
                            self.stopped = true;
                        } else {
                            self.keys.push(String::from_utf8_lossy(&self.key).into_owned());
                        }
                    }
                } else {
                    self.keep(b);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 && self.expecting_key {
                        self.capturing = true;
                        self.expecting_key = false;
                        self.key.clear();
                    }
                }
                b'{' | b'[' => {
                    if !self.started {
                        self.started = true;
                        if b == b'[' {
                            self.stopped = true;
                        }
                    }
                    self.depth += 1;
                    if self.depth == 1 {
                        self.expecting_key = true;
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b',' if self.depth == 1 => self.expecting_key = true,
                b' ' | b'\t' | b'\r' | b'\n' | b',' | b':' => {}
                _ if !self.started => self.stopped = true,
                _ => {}
            }
        }
    }

    fn keep(&mut self, b: u8) {
        if self.capturing && self.key.len() < MAX_KEY_BYTES {
            self.key.push(b);
        }
    }
}

/// What sees the body's bytes: the hash, and the key scan for JSON.
pub struct Tap {
    mac: hmac::Context,
    keys: Option<TopKeys>,
    bytes: u64,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

/// A tap shared by the body and the access log record.
pub type SharedTap = Arc<Mutex<Tap>>;

impl Tap {
    pub fn new(privacy: &Privacy, json: bool) -> Tap {
        Tap { mac: privacy.body_context(), keys: json.then(TopKeys::default), bytes: 0 }
    }

    pub fn shared(privacy: &Privacy, json: bool) -> SharedTap {
        Arc::new(Mutex::new(Tap::new(privacy, json)))
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.mac.update(bytes);
        if let Some(k) = &mut self.keys {
            k.feed(bytes);
        }
    }

    /// The hash (hex, 128 bits) and the top-level keys joined with `,` (a `…` last when more were
    /// left out); `None` hash when no byte passed.
    pub fn finish(&self) -> (Option<String>, Option<String>) {
        if self.bytes == 0 {
            return (None, None);
        }
        let tag = self.mac.clone().sign();
        let keys = self.keys.as_ref().filter(|k| k.started && (!k.stopped || k.truncated)).map(|k| {
            let mut s = k.keys.join(",");
            if k.truncated {
                s.push_str(",…");
            }
            s
        });
        (Some(hex(&tag.as_ref()[..16])), keys)
    }
}

/// Feeds a shared tap (a poisoned lock still hashes: the tap holds no invariant a panic could break).
pub fn feed(tap: &SharedTap, bytes: &[u8]) {
    tap.lock().unwrap_or_else(std::sync::PoisonError::into_inner).feed(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(chunks: &[&[u8]]) -> Option<String> {
        let p = Privacy::new(crate::observe::privacy::ClientIpMode::Full, b"k");
        let mut t = Tap::new(&p, true);
        for c in chunks {
            t.feed(c);
        }
        t.finish().1
    }

    #[test]
    fn top_level_keys_only_never_values() {
        let body = br#"{"user": "alice", "password": "hunter2", "nested": {"inner": 1}, "list": [{"x": "y"}], "esc\"aped": true}"#;
        assert_eq!(keys_of(&[body]).as_deref(), Some("user,password,nested,list,esc\\\"aped"));
        // Split anywhere, the same answer.
        for i in 0..body.len() {
            assert_eq!(keys_of(&[&body[..i], &body[i..]]), keys_of(&[body]), "split at {i}");
        }
    }

    #[test]
    fn not_an_object_lists_nothing() {
        assert_eq!(keys_of(&[b"[1,2]"]), None);
        assert_eq!(keys_of(&[b"\"str\""]), None);
        assert_eq!(keys_of(&[b"{}"]).as_deref(), Some(""));
    }

    #[test]
    fn many_keys_are_cut() {
        let body: String = format!("{{{}}}", (0..40).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>().join(","));
        let k = keys_of(&[body.as_bytes()]).unwrap();
        assert!(k.ends_with(",…"));
        assert_eq!(k.split(',').count(), MAX_KEYS + 1);
    }

    #[test]
    fn hashes_are_keyed() {
        let a = Privacy::new(crate::observe::privacy::ClientIpMode::Full, b"k1");
        let b = Privacy::new(crate::observe::privacy::ClientIpMode::Full, b"k2");
        let (mut ta, mut tb, mut ta2) = (Tap::new(&a, false), Tap::new(&b, false), Tap::new(&a, false));
        ta.feed(b"body");
        tb.feed(b"body");
        ta2.feed(b"bo");
        ta2.feed(b"dy");
        assert_ne!(ta.finish().0, tb.finish().0);
        assert_eq!(ta.finish().0, ta2.finish().0);
        assert_eq!(ta.finish().0.unwrap().len(), 32);
    }
}
