//! The verified-token cache shared by JWT and introspection: keyed by a keyed 128-bit hash of the token
//! (the token itself is never stored), bounded in size, and never answering for an entry past its end
//! time (a JWT's `exp`, or the introspection TTL).
//!
//! The key is SipHash-2-4 with a 128-bit output under a random key drawn once per process: a
//! pseudo-random function, so without the key nobody can make a token of theirs land on another's
//! entry (a 2^-128 chance per try, and hashes are never shown). It replaced SHA-256, which took most of
//! a cache hit on long bearer tokens (an RS256 token is 600+ bytes).

use siphasher::sip128::{Hasher128, SipHasher24};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, OnceLock};

pub type Digest = [u8; 16];

fn process_key() -> &'static [u8; 16] {
    static KEY: OnceLock<[u8; 16]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 16];
        // The system's generator; should it ever fail, a key from the clock and address space layout is
        // still unknown to clients.
        if aws_lc_rs::rand::fill(&mut key).is_err() {
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let addr = &key as *const _ as usize as u128;
            key = (seed.as_nanos() ^ addr.rotate_left(64)).to_le_bytes();
        }
        key
    })
}

/// The cache key of a presented token.
pub fn digest(token: &str) -> Digest {
    let mut h = SipHasher24::new_with_key(process_key());
    h.write(token.as_bytes());
    h.finish128().as_bytes()
}

/// The keys are already uniformly distributed (a PRF's output): hashing them again is wasted time.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Shard<V> = HashMap<Digest, (V, i64), BuildHasherDefault<DigestHasher>>;

const SHARDS: usize = 16;

pub struct TokenCache<V> {
    shards: Vec<Mutex<Shard<V>>>,
    per_shard: usize,
}

impl<V: Clone> TokenCache<V> {
    /// A cache of at most about `capacity` entries; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        // Draw the process key now (seeding the system generator can take a while), not on the first
        // request.
        process_key();
        let per_shard = capacity.div_ceil(SHARDS);
        TokenCache { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), per_shard }
    }

    fn shard(&self, key: &Digest) -> &Mutex<Shard<V>> {
        &self.shards[usize::from(key[15]) % SHARDS]
    }

    /// The value cached for `key` if its end time (unix seconds) is still ahead of `now`.
    pub fn get(&self, key: &Digest, now: i64) -> Option<V> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        match shard.get(key) {
            Some((v, until)) if now < *until => Some(v.clone()),
            _ => None,
        }
    }

    /// Caches `value` until `until` (unix seconds, exclusive). When the shard is full, expired entries
    /// go first, then an arbitrary one (the digests spread entries evenly, so this is close to random).
    pub fn insert(&self, key: Digest, value: V, until: i64, now: i64) {
        if self.per_shard == 0 || until <= now {
            return;
        }
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, (_, u)| now < *u);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(key, (value, until));
    }

    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_within_a_process_and_tell_tokens_apart() {
        assert_eq!(digest("a.b.c"), digest("a.b.c"));
        assert_ne!(digest("a.b.c"), digest("a.b.d"));
        assert_ne!(digest(""), digest("a"));
        // Not the unkeyed SipHash: the process key is random.
        let unkeyed = {
            let mut h = SipHasher24::new_with_keys(0, 0);
            h.write(b"a.b.c");
            h.finish128().as_bytes()
        };
        assert_ne!(digest("a.b.c"), unkeyed);
    }

    #[test]
    fn never_past_end_time_and_bounded() {
        let c = TokenCache::new(32);
        let k = digest("a.b.c");
        c.insert(k, 1, 100, 50);
        assert_eq!(c.get(&k, 99), Some(1));
        assert_eq!(c.get(&k, 100), None, "never at or after the end time");
        c.insert(digest("expired"), 2, 10, 50);
        assert_eq!(c.get(&digest("expired"), 5), None, "an already-expired entry is not stored");
        for i in 0..10_000 {
            c.insert(digest(&format!("t{i}")), i, 1000, 50);
        }
        assert!(c.len() <= 32, "bounded: {}", c.len());
        c.clear();
        assert!(c.is_empty());
        let off = TokenCache::new(0);
        off.insert(k, 1, 100, 50);
        assert_eq!(off.get(&k, 60), None);
    }
}
