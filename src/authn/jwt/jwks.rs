//! An issuer's verification keys: a JWKS file, a `jwks_uri`, or the `jwks_uri` of OpenID Connect
//! discovery, plus an optional configured HMAC secret.
//!
//! Remote keys are fetched in the background (every `jwks_refresh_interval`, sooner when the response's
//! `Cache-Control` says so, but never more often than `unknown_kid_refresh_interval`) and on demand when
//! a token names a `kid` we do not hold. On-demand fetches are single-flight and rate-limited, so a
//! flood of random `kid`s costs the identity provider at most one request per interval. A failed fetch
//! keeps the keys we have; they stay usable until `max_stale` after the last successful fetch, then
//! tokens are refused (401), never passed.
//!
//! A JWKS never supplies an HMAC key (`kty: oct` is skipped): HS* verification uses only the configured
//! secret, so a public key can never be turned into a shared secret.

use crate::client::{Client, Url};
use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many keys of a JWKS are used; at most this many are tried for one token without `kid`.
const MAX_KEYS: usize = 64;
const MAX_TRIES: usize = 4;
/// Bound of a JWKS or discovery document.
pub const MAX_DOCUMENT: usize = 512 * 1024;

/// One verification key and the pinned algorithms it may verify.
pub struct Key {
    pub kid: Option<String>,
    pub algs: Vec<Algorithm>,
    key: DecodingKey,
    /// SHA-256 of the key type and public material: tells a key replaced under the same `kid` apart.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("algs", &self.algs).finish_non_exhaustive()
    }
}

impl Key {
    /// A configured HMAC secret, for the pinned HS* algorithms.
    pub fn secret(secret: &[u8], pinned: &[Algorithm]) -> Key {
        let algs = pinned.iter().copied().filter(|a| hs_len(*a).is_some()).collect();
        Key { kid: None, algs, key: DecodingKey::from_secret(secret), fingerprint: fingerprint(&[b"oct", secret]) }
    }
}

/// The minimum HMAC key length of an HS* algorithm (RFC 7518 §3.2: at least the hash size).
pub fn hs_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

const RSA_ALGS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

fn b64_len(v: &str, field: &str) -> Result<usize, String> {
    URL_SAFE_NO_PAD.decode(v).map(|b| b.len()).map_err(|_| format!("`{field}` is not base64url"))
}

fn member<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, String> {
    jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("missing `{name}`"))
}

fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        // Length-prefixed, so the parts cannot run into each other.
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// One JWK as a verification key; `Ok(None)` for a key we do not use (encryption key, `oct`, an
/// algorithm that is not pinned).
pub fn parse_jwk(jwk: &Value, pinned: &[Algorithm]) -> Result<Option<Key>, String> {
    if jwk.get("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|o| o == "verify") {
            return Ok(None);
        }
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("`kid` is not a string".into()),
    };
    let (family, key, material): (&[Algorithm], DecodingKey, [u8; 32]) = match member(jwk, "kty")? {
        "RSA" => {
            let (n, e) = (member(jwk, "n")?, member(jwk, "e")?);
            if b64_len(n, "n")? < 256 {
                return Err("RSA keys shorter than 2048 bits are refused".into());
            }
            b64_len(e, "e")?;
            let key = DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?;
            (&RSA_ALGS, key, fingerprint(&[b"RSA", n.as_bytes(), e.as_bytes()]))
        }
        "EC" => {
            let (x, y) = (member(jwk, "x")?, member(jwk, "y")?);
            let crv = member(jwk, "crv")?;
            let (alg, len) = match crv {
                "P-256" => (&[Algorithm::ES256], 32),
                "P-384" => (&[Algorithm::ES384], 48),
                _ => return Ok(None),
            };
            if b64_len(x, "x")? != len || b64_len(y, "y")? != len {
                return Err("EC coordinates do not match the curve".into());
            }
            let key = DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?;
            (alg, key, fingerprint(&[b"EC", crv.as_bytes(), x.as_bytes(), y.as_bytes()]))
        }
        "OKP" if member(jwk, "crv")? == "Ed25519" => {
            let x = member(jwk, "x")?;
            if b64_len(x, "x")? != 32 {
                return Err("an Ed25519 key is 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?;
            (&[Algorithm::EdDSA], key, fingerprint(&[b"OKP", b"Ed25519", x.as_bytes()]))
        }
        // `oct` (shared secrets) never come from a key set; other types are not JWS signature keys.
        _ => return Ok(None),
    };
    let named = match jwk.get("alg") {
        None => None,
        Some(Value::String(a)) => match super::token::algorithm(a) {
            Some(a) => Some(a),
            None => return Ok(None),
        },
        Some(_) => return Err("`alg` is not a string".into()),
    };
    let algs: Vec<Algorithm> =
        family.iter().copied().filter(|a| pinned.contains(a) && named.is_none_or(|n| n == *a)).collect();
    if algs.is_empty() {
        return Ok(None);
    }
    Ok(Some(Key { kid, algs, key, fingerprint: material }))
}

/// A JWKS document (`{"keys": [...]}`): the usable keys. A key that cannot be read is skipped (and
/// named in the returned notes), so one odd key does not take the others down.
pub fn parse_jwks(body: &[u8], pinned: &[Algorithm]) -> Result<(Vec<Key>, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let list = doc.get("keys").and_then(Value::as_array).ok_or("not a JWKS document: no `keys` array")?;
    let mut keys = Vec::new();
    let mut notes = Vec::new();
    for (i, jwk) in list.iter().enumerate().take(MAX_KEYS) {
        match parse_jwk(jwk, pinned) {
            Ok(Some(k)) => keys.push(k),
            Ok(None) => {}
            Err(e) => notes.push(format!("key {i}: {e}")),
        }
    }
    Ok((keys, notes))
}

/// The keys in force.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// Remote keys are not used after this (the last successful fetch plus `max_stale`).
    pub usable_until: Option<Instant>,
}

/// What the keys say about one token's signature.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    /// The token names a `kid` we do not hold (or no key fits): a refresh may help.
    UnknownKey,
    Refused(&'static str),
}

impl KeySet {
    /// Verifies `jws` with the keys whose `kid` it names (or every key when it names none) and whose
    /// pinned algorithms include its `alg`; `secret` is the configured HMAC key.
    pub fn verify(&self, jws: &super::token::Jws<'_>, secret: Option<&Key>) -> Outcome {
        let fresh = self.usable_until.is_none_or(|t| Instant::now() < t);
        let remote: &[Key] = if fresh { &self.keys } else { &[] };
        let (mut tried, mut exact) = (0, false);
        for key in remote.iter().chain(secret) {
            match (&jws.kid, &key.kid) {
                (Some(t), Some(k)) if t == k => exact = true,
                (Some(_), Some(_)) => continue,
                _ => {}
            }
            if !key.algs.contains(&jws.alg) {
                continue;
            }
            tried += 1;
            if tried > MAX_TRIES {
                break;
            }
            let ok = jsonwebtoken::crypto::verify(jws.signature, jws.signing_input.as_bytes(), &key.key, jws.alg);
            if matches!(ok, Ok(true)) {
                return Outcome::Valid;
            }
        }
        if (jws.kid.is_some() && !exact) || tried == 0 {
            return Outcome::UnknownKey;
        }
        Outcome::Refused("bad_signature")
    }

    /// True when remote keys are past `max_stale` (and so no longer used).
    pub fn stale(&self) -> bool {
        self.usable_until.is_some_and(|t| Instant::now() >= t)
    }

    fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect()
    }
}

/// Where remote keys come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Only the configured HMAC secret.
    None,
    File(String),
    Uri(Url),
    /// `issuer` + `/.well-known/openid-configuration`.
    Discovery(Url),
}

/// Timings of fetching.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub refresh: Duration,
    pub unknown_kid: Duration,
    pub max_stale: Duration,
}

#[derive(Default)]
struct FetchState {
    /// The last fetch made because of an unknown `kid` (the rate-limited kind).
    last_on_demand: Option<Instant>,
    /// When the last fetch of any kind finished.
    last_done: Option<Instant>,
    /// From discovery, until a fetch from it fails.
    discovered: Option<Url>,
}

pub struct Jwks {
    name: String,
    issuer: String,
    source: Source,
    pinned: Vec<Algorithm>,
    pub secret: Option<Key>,
    current: ArcSwap<KeySet>,
    /// Incremented whenever a key disappears or changes (new material or algorithms under the same `kid`),
    /// so tokens verified with it stop being served from cache.
    generation: AtomicU64,
    client: Option<Client>,
    fetch: tokio::sync::Mutex<FetchState>,
    timing: Timing,
    /// Refreshes that installed keys, and refreshes that failed (the keys in force are kept).
    pub refreshed: (Counter, Counter),
}

impl Jwks {
    #[allow(clippy::too_many_arguments)] // each is one setting of the key source, compiled by `JwtAuth`
    pub fn new(
        name: &str,
        issuer: &str,
        source: Source,
        pinned: Vec<Algorithm>,
        secret: Option<Key>,
        client: Option<Client>,
        timing: Timing,
        refreshed: (Counter, Counter),
    ) -> Result<Jwks, String> {
        let mut initial = KeySet::default();
        if let Source::File(path) = &source {
            let body = std::fs::read(path).map_err(|e| format!("jwks_file `{path}` cannot be read: {}", e.kind()))?;
            let (keys, notes) = parse_jwks(&body, &pinned).map_err(|e| format!("jwks_file `{path}`: {e}"))?;
            if keys.is_empty() {
                return Err(format!("jwks_file `{path}` has no key for the pinned algorithms {notes:?}"));
            }
            initial.keys = keys;
        }
        Ok(Jwks {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            source,
            pinned,
            secret,
            current: ArcSwap::from_pointee(initial),
            generation: AtomicU64::new(0),
            client,
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            timing,
            refreshed,
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True when keys are fetched or re-read in the background.
    pub fn refreshes(&self) -> bool {
        !matches!(self.source, Source::None)
    }

    /// After a token named an unknown key: fetch, unless a fetch finished while we waited for the lock
    /// (single flight) or an unknown `kid` already caused one within `unknown_kid_refresh_interval`;
    /// then return the keys in force. Scheduled refreshes do not count against the interval: a key
    /// published just after one must still be found when its first token arrives.
    pub async fn refresh_on_miss(&self) -> Arc<KeySet> {
        if matches!(self.source, Source::Uri(_) | Source::Discovery(_)) {
            let asked = Instant::now();
            let mut st = self.fetch.lock().await;
            let fetched_meanwhile = st.last_done.is_some_and(|t| t >= asked);
            let allowed = st.last_on_demand.is_none_or(|t| t.elapsed() >= self.timing.unknown_kid);
            if !fetched_meanwhile && allowed {
                st.last_on_demand = Some(Instant::now());
                self.refresh_locked(&mut st).await;
            }
        }
        self.current()
    }

    /// One scheduled refresh; returns how long to wait before the next.
    pub async fn refresh_scheduled(&self) -> Duration {
        let mut st = self.fetch.lock().await;
        self.refresh_locked(&mut st).await
    }

    async fn refresh_locked(&self, st: &mut FetchState) -> Duration {
        let floor = self.timing.unknown_kid.min(self.timing.refresh);
        let loaded = self.load(st).await;
        st.last_done = Some(Instant::now());
        match loaded {
            Ok((keys, max_age)) => {
                let remote = !matches!(self.source, Source::File(_));
                self.install(keys, remote);
                self.refreshed.0.inc();
                max_age.map_or(self.timing.refresh, |a| a.clamp(floor, self.timing.refresh))
            }
            Err(e) => {
                self.refreshed.1.inc();
                tracing::warn!(authenticator = self.name.as_str(), error = %e, "JWKS refresh failed; keeping the keys we have");
                floor
            }
        }
    }

    async fn load(&self, st: &mut FetchState) -> Result<(Vec<Key>, Option<Duration>), String> {
        match &self.source {
            Source::None => Ok((Vec::new(), None)),
            Source::File(path) => {
                let body = tokio::fs::read(path).await.map_err(|e| format!("jwks_file `{path}`: {}", e.kind()))?;
                Ok((self.keys_of(&body, path)?, None))
            }
            Source::Uri(url) => self.fetch_keys(url).await,
            Source::Discovery(config_url) => {
                let url = match st.discovered.clone() {
                    Some(u) => u,
                    None => {
                        let u = self.discover(config_url).await?;
                        st.discovered = Some(u.clone());
                        u
                    }
                };
                let fetched = self.fetch_keys(&url).await;
                if fetched.is_err() {
                    st.discovered = None; // the provider may have moved its keys: discover again
                }
                fetched
            }
        }
    }

    fn keys_of(&self, body: &[u8], from: &str) -> Result<Vec<Key>, String> {
        let (keys, notes) = parse_jwks(body, &self.pinned).map_err(|e| format!("{from}: {e}"))?;
        if !notes.is_empty() {
            tracing::warn!(authenticator = self.name.as_str(), from, skipped = ?notes, "JWKS keys skipped");
        }
        if keys.is_empty() {
            return Err(format!("{from}: no key for the pinned algorithms"));
        }
        Ok(keys)
    }

    async fn fetch_keys(&self, url: &Url) -> Result<(Vec<Key>, Option<Duration>), String> {
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let resp = client.get(url).await.map_err(|e| format!("{}: {e}", url.redacted()))?;
        if !resp.status.is_success() {
            return Err(format!("{}: status {}", url.redacted(), resp.status.as_u16()));
        }
        Ok((self.keys_of(&resp.body, &url.redacted())?, resp.max_age()))
    }

    /// OpenID Connect Discovery 1.0 §4: the document's `issuer` must be exactly ours.
    async fn discover(&self, config_url: &Url) -> Result<Url, String> {
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let at = config_url.redacted();
        let resp = client.get(config_url).await.map_err(|e| format!("{at}: {e}"))?;
        if !resp.status.is_success() {
            return Err(format!("{at}: status {}", resp.status.as_u16()));
        }
        let doc: Value = serde_json::from_slice(&resp.body).map_err(|_| format!("{at}: not JSON"))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(format!("{at}: the document's `issuer` is not `{}`", self.issuer));
        }
        let uri = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| format!("{at}: no `jwks_uri`"))?;
        Url::parse(uri).map_err(|e| format!("{at}: jwks_uri {e}"))
    }

    fn install(&self, keys: Vec<Key>, remote: bool) {
        let old = self.current.load_full();
        let withdrawn = withdrawn(&old.keys, &keys);
        let set = KeySet { keys, usable_until: remote.then(|| Instant::now() + self.timing.max_stale) };
        let (before, after) = (old.kids().join(","), set.kids().join(","));
        if before != after || withdrawn {
            tracing::info!(authenticator = self.name.as_str(), kids = after.as_str(), "JWKS keys updated");
        }
        // The new keys first, then the generation: a request that reads the new generation verifies with
        // the new keys, so nothing verified with a withdrawn key is cached under the new generation.
        self.current.store(Arc::new(set));
        if withdrawn {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// True when a key of `old` is not in `new` with the same `kid`, material and algorithms: tokens it
/// verified must be verified again.
fn withdrawn(old: &[Key], new: &[Key]) -> bool {
    old.iter().any(|o| !new.iter().any(|k| k.kid == o.kid && k.fingerprint == o.fingerprint && k.algs == o.algs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_replaced_under_the_same_kid_is_withdrawn() {
        let all = [Algorithm::RS256, Algorithm::ES256];
        let key = |v: Value| parse_jwk(&v, &all).unwrap().unwrap();
        let n1 = URL_SAFE_NO_PAD.encode([7u8; 256]);
        let n2 = URL_SAFE_NO_PAD.encode([9u8; 256]);
        let a = || key(json!({"kty": "RSA", "kid": "k", "n": n1, "e": "AQAB"}));
        let b = || key(json!({"kty": "RSA", "kid": "k", "n": n2, "e": "AQAB"}));
        let other = || key(json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": b64(32), "y": b64(32)}));
        assert!(!withdrawn(&[a()], &[a()]), "unchanged");
        assert!(!withdrawn(&[a()], &[other(), a()]), "a key added");
        assert!(withdrawn(&[a(), other()], &[other()]), "a key removed");
        assert!(withdrawn(&[a()], &[b()]), "new material under the same kid");
        let narrowed = key(json!({"kty": "RSA", "kid": "k", "alg": "RS256", "n": n1, "e": "AQAB"}));
        let wide = [Algorithm::RS256, Algorithm::PS256];
        let widened = parse_jwk(&json!({"kty": "RSA", "kid": "k", "n": n1, "e": "AQAB"}), &wide).unwrap().unwrap();
        assert!(withdrawn(&[widened], &[narrowed]), "an algorithm withdrawn");
    }

    fn b64(n: usize) -> String {
        URL_SAFE_NO_PAD.encode(vec![7u8; n])
    }

    #[test]
    fn jwk_kinds() {
        let all = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256];
        let rsa = json!({"kty": "RSA", "kid": "r", "n": b64(256), "e": "AQAB"});
        assert_eq!(parse_jwk(&rsa, &all).unwrap().unwrap().algs, [Algorithm::RS256, Algorithm::PS256]);
        let named = json!({"kty": "RSA", "alg": "PS256", "n": b64(256), "e": "AQAB"});
        assert_eq!(parse_jwk(&named, &all).unwrap().unwrap().algs, [Algorithm::PS256]);
        let short = json!({"kty": "RSA", "n": b64(128), "e": "AQAB"});
        assert!(parse_jwk(&short, &all).is_err());
        let ec = json!({"kty": "EC", "crv": "P-256", "x": b64(32), "y": b64(32)});
        assert_eq!(parse_jwk(&ec, &all).unwrap().unwrap().algs, [Algorithm::ES256]);
        let bad_ec = json!({"kty": "EC", "crv": "P-256", "x": b64(48), "y": b64(48)});
        assert!(parse_jwk(&bad_ec, &all).is_err());
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(32)});
        assert_eq!(parse_jwk(&ed, &all).unwrap().unwrap().algs, [Algorithm::EdDSA]);
        let oct = json!({"kty": "oct", "k": b64(32)});
        assert!(parse_jwk(&oct, &all).unwrap().is_none(), "never an HMAC key from a key set");
        let enc = json!({"kty": "RSA", "use": "enc", "n": b64(256), "e": "AQAB"});
        assert!(parse_jwk(&enc, &all).unwrap().is_none());
        assert!(parse_jwk(&ec, &[Algorithm::RS256]).unwrap().is_none(), "not pinned");
        let (keys, notes) = parse_jwks(json!({"keys": [rsa, short, oct]}).to_string().as_bytes(), &all).unwrap();
        assert_eq!((keys.len(), notes.len()), (1, 1));
        assert!(parse_jwks(b"[]", &all).is_err());
    }
}
