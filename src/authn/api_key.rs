//! API keys.
//!
//! Keys look like `pcs_<id>_<secret><check>`: a recognisable prefix (so secret scanners can find a leaked
//! key), a public 8-character id (safe to log, used to list, rotate and revoke), 32 characters of
//! secret (160 random bits), and a 7-character checksum so a mistyped key is refused before any lookup.
//! Only a keyed hash is kept: HMAC-SHA-256 of the whole key under the server's `hmac_secret`. A request's
//! key is hashed the same way and looked up by that digest, so the time taken says nothing about stored
//! secrets. Keys live in an embedded SQLite store (managed with `portcullis keys ...`, polled so a running
//! gateway sees changes within `refresh_interval`) and/or are declared in the config file as hashes.
//!
//! The checksum and the HMAC are functions of the presented key's bytes alone, so a key found in the map
//! once is remembered by a keyed 128-bit hash of it (the verified-token cache's SipHash, see
//! [`super::jwt::cache`]) mapped to its HMAC digest: later requests skip the SHA-256 checksum and the
//! HMAC (about 8,600 instructions), never the lookup. The record is still taken from the current key map
//! and judged on every request (revoked, expired, rotated, address), so a store change takes effect as
//! before. Only keys that were found are remembered; the key itself is never stored.

use super::jwt::cache::{self, TokenCache};
use super::{AuthRequest, Principal, PrincipalKind, Verdict};
use crate::secret::Secret;
use crate::units::Dur;
use arc_swap::ArcSwap;
use aws_lc_rs::{digest, hmac, rand};
use http::header::{HeaderName, AUTHORIZATION};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod backend;
pub mod cli;
pub mod lifecycle;
pub mod pg;
pub mod store;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Server secret for the keyed hashes (at least 32 bytes); use `${env:NAME}` or `${file:PATH}`.
    pub hmac_secret: Secret,
    /// SQLite file managed by `portcullis keys`; created if missing. The word `postgres`: the keys
    /// live in the top-level `store.postgres`, shared by a fleet.
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default = "default_refresh")]
    pub refresh_interval: Dur,
    /// Header carrying the bare key.
    #[serde(default = "default_header")]
    pub header: String,
    /// `Authorization: <scheme> <key>` is accepted too.
    #[serde(default = "default_scheme")]
    pub authorization_scheme: String,
    /// Off by default: keys in URLs end up in logs, caches and browser history.
    #[serde(default)]
    pub query_param: Option<String>,
    /// Keys declared in the config file, by hash (`portcullis keys hash` prints one).
    #[serde(default)]
    pub keys: Vec<DeclaredKey>,
    /// Stored keys older than this (since `created_at`) are refused (`too_old`), e.g. `90d`. Keys
    /// declared in the config file have no creation time and are exempt (`portcullis check` says so).
    #[serde(default)]
    pub max_age: Option<Dur>,
    /// How long before `max_age` a key counts as nearing it (events, gauge, `keys list`); default the
    /// smaller of 14 days and a tenth of `max_age`.
    #[serde(default)]
    pub warn_before: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredKey {
    pub id: String,
    /// Hex HMAC-SHA-256 of the key under `hmac_secret`.
    pub hash: String,
    pub principal: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unix time after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

fn default_refresh() -> Dur {
    Dur::secs(2)
}
fn default_header() -> String {
    "x-api-key".into()
}
fn default_scheme() -> String {
    "ApiKey".into()
}

/// One key as the gateway holds it in memory.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    /// When a stored key was made (unix seconds); `None` for keys declared in the config file.
    pub created_at: Option<i64>,
    pub principal: Arc<Principal>,
    pub expires_at: Option<i64>,
    /// End of the grace period of a rotated key.
    pub grace_until: Option<i64>,
    pub revoked: bool,
    pub allowed: Vec<IpNet>,
    /// The stored restriction could not be read: the key is refused everywhere (a restriction is never
    /// dropped, which would let the key in from anywhere).
    pub unusable: bool,
}

pub type Digest = [u8; 32];
pub type KeyMap = HashMap<Digest, Arc<KeyRecord>>;

pub const PREFIX: &str = "pcs_";
/// The public id's length (`pcs_<id>_...`).
pub const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;
const CHECK_LEN: usize = 7;
const KEY_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CHECK_LEN;
const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32(bytes: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 && out.len() < len {
            bits -= 5;
            out.push(B32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 && out.len() < len {
        out.push(B32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn checksum(body: &str) -> String {
    base32(&digest::digest(&digest::SHA256, body.as_bytes()).as_ref()[..4], CHECK_LEN)
}

/// Makes a new key: `(id, full key)`. The key is shown once and never stored.
pub fn generate() -> Result<(String, String), String> {
    let rng = rand::SystemRandom::new();
    let mut raw = [0u8; 25];
    rand::SecureRandom::fill(&rng, &mut raw).map_err(|_| "the system random generator failed".to_string())?;
    let id = base32(&raw[..5], ID_LEN);
    let secret = base32(&raw[5..], SECRET_LEN);
    let key = assemble(&id, &secret);
    Ok((id, key))
}

/// The key of this id and secret (base32 text), with its checksum. The checksum is public: it only
/// catches mistyped keys. Used by `generate` and by the traffic simulator's clients.
pub fn assemble(id: &str, secret: &str) -> String {
    let body = format!("{PREFIX}{id}_{secret}");
    let check = checksum(&body);
    body + &check
}

/// Checks the shape and checksum of a presented key; returns its id.
pub fn parse(key: &str) -> Option<&str> {
    if key.len() != KEY_LEN || !key.starts_with(PREFIX) || !key.is_ascii() {
        return None;
    }
    let id = &key[PREFIX.len()..PREFIX.len() + ID_LEN];
    if key.as_bytes()[PREFIX.len() + ID_LEN] != b'_' {
        return None;
    }
    let (body, check) = key.split_at(KEY_LEN - CHECK_LEN);
    (checksum(body) == check).then_some(id)
}

/// The public id of a key-shaped text (`pcs_<id>_...`, the id exactly [`ID_LEN`] ASCII letters and
/// digits, then `_`), whatever its checksum: what a refused key claimed to be. Nothing of the secret
/// part is ever taken.
pub fn public_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let id = rest.get(..ID_LEN).filter(|id| id.bytes().all(|b| b.is_ascii_alphanumeric()))?;
    (rest.as_bytes().get(ID_LEN) == Some(&b'_')).then_some(id)
}

/// The keyed hash a key is stored and looked up by.
pub fn hash(secret: &hmac::Key, key: &str) -> Digest {
    let tag = hmac::sign(secret, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

pub fn hmac_key(secret: &Secret) -> Result<hmac::Key, String> {
    if secret.expose().len() < 32 {
        return Err("api_key.hmac_secret must be at least 32 bytes".into());
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()))
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub fn principal(id: &str, roles: Vec<String>, scopes: Vec<String>) -> Arc<Principal> {
    Arc::new(Principal {
        id: id.to_owned(),
        kind: PrincipalKind::ApiKey,
        roles,
        scopes,
        claims: None,
        tenant: None,
        identity: Default::default(),
    })
}

pub struct ApiKeyAuth {
    name: String,
    secret: hmac::Key,
    header: HeaderName,
    scheme: String,
    query_param: Option<String>,
    declared: KeyMap,
    keys: Arc<ArcSwap<KeyMap>>,
    store: Option<String>,
    refresh: Duration,
    /// Keys already found: keyed hash of the key → its HMAC digest (see the module doc).
    hashed: TokenCache<Digest>,
    /// `max_age` and `warn_before` in seconds.
    aging: Option<lifecycle::Aging>,
    /// Warnings of keys nearing `max_age` (events and the gauge).
    warnings: Arc<lifecycle::Warnings>,
    /// `store: postgres`: the store and the generation the keys were read at.
    postgres: Option<(Arc<crate::store::Postgres>, i64)>,
    /// The store is followed (once, however often a reload starts a reused authenticator).
    following: std::sync::atomic::AtomicBool,
    /// Wakes the store poller at once (the admin API after a change it made).
    kick: Arc<tokio::sync::Notify>,
    /// The config it was compiled from, for the admin API's key management.
    config: ApiKeyConfig,
}

/// How many presented keys [`ApiKeyAuth`] remembers the digests of.
const HASHED_CACHE: usize = 10_000;

/// One entry of a key's address restriction: a network (`10.0.0.0/8`, `2001:db8::/32`) or a bare
/// address, which means that address alone (`/32` or `/128`). Surrounding spaces are ignored; anything
/// else is `None`. The CLI, the config file and the store loader all read entries with this.
pub fn parse_cidr(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry.parse::<IpNet>().ok().or_else(|| entry.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn parse_cidrs(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter().map(|c| parse_cidr(c).ok_or_else(|| format!("`{c}` is not a CIDR or an address"))).collect()
}

fn decode_hex(s: &str) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl ApiKeyAuth {
    pub fn new(name: &str, c: &ApiKeyConfig) -> Result<ApiKeyAuth, String> {
        Self::with_store(name, c, None)
    }

    /// As [`ApiKeyAuth::new`], with the fleet's PostgreSQL for `store: postgres`.
    pub fn with_store(
        name: &str,
        c: &ApiKeyConfig,
        postgres: Option<&Arc<crate::store::Postgres>>,
    ) -> Result<ApiKeyAuth, String> {
        let secret = hmac_key(&c.hmac_secret)?;
        let header =
            HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| format!("`{}` is not a header name", c.header))?;
        if let Some(q) = &c.query_param {
            tracing::warn!(
                authenticator = name,
                param = q.as_str(),
                "API keys accepted in the query string: they will leak into logs and caches"
            );
        }
        let mut declared = KeyMap::new();
        for k in &c.keys {
            let digest = decode_hex(&k.hash).ok_or_else(|| format!("key `{}`: hash must be 64 hex digits", k.id))?;
            let record = KeyRecord {
                id: k.id.clone(),
                created_at: None,
                principal: principal(&k.principal, k.roles.clone(), k.scopes.clone()),
                expires_at: k.expires_at,
                grace_until: None,
                revoked: false,
                unusable: false,
                allowed: parse_cidrs(&k.allowed_cidrs).map_err(|e| format!("key `{}`: {e}", k.id))?,
            };
            declared.insert(digest, Arc::new(record));
        }
        let mut initial = declared.clone();
        let mut pg_state = None;
        if c.store.as_deref() == Some(pg::WORD) {
            let pg_store = postgres
                .ok_or("`store: postgres` needs the top-level `store.postgres` section (the fleet's PostgreSQL)")?;
            let (generation, loaded) = pg::load_now(pg_store, name)?;
            initial.extend(loaded);
            pg_state = Some((pg_store.clone(), generation));
        } else if let Some(path) = &c.store {
            let loaded =
                store::Store::open(path).and_then(|s| s.load()).map_err(|e| format!("key store `{path}`: {e}"))?;
            initial.extend(loaded);
        }
        Ok(ApiKeyAuth {
            name: name.to_owned(),
            secret,
            header,
            scheme: c.authorization_scheme.clone(),
            query_param: c.query_param.clone(),
            declared,
            keys: Arc::new(ArcSwap::from_pointee(initial)),
            store: c.store.clone(),
            refresh: c.refresh_interval.0,
            hashed: TokenCache::new(HASHED_CACHE),
            aging: lifecycle::Aging::new(c.max_age, c.warn_before)?,
            warnings: Arc::new(lifecycle::Warnings::new(name)),
            postgres: pg_state,
            following: std::sync::atomic::AtomicBool::new(false),
            kick: Arc::new(tokio::sync::Notify::new()),
            config: c.clone(),
        })
    }

    /// Where this authenticator's managed keys live (`None` without a store).
    pub fn backend(&self) -> Option<backend::Backend> {
        match &self.postgres {
            Some((pg, _)) => Some(backend::Backend::Postgres(pg.clone(), self.name.clone())),
            None => backend::Backend::of(&self.config),
        }
    }

    /// The keyed-hash secret new keys are stored under.
    pub fn secret(&self) -> &hmac::Key {
        &self.secret
    }

    /// `max_age` and `warn_before`, for showing a key's status.
    pub fn aging(&self) -> Option<lifecycle::Aging> {
        self.aging
    }

    /// Reloads the store now rather than at the next poll (after a change made through the admin API).
    pub fn refresh_now(&self) {
        self.kick.notify_one();
    }

    /// Reads the store and puts its keys in force before returning: the admin API calls this after a
    /// change it made, so its answer means the change holds on this node. The poller (or PostgreSQL
    /// follower) is also woken, so its next read starts from the store's state.
    pub async fn reload(&self) -> Result<(), String> {
        let loaded = if let Some((pg, _)) = &self.postgres {
            pg::load(pg, &self.name).await.map(|(_, m)| m).map_err(|e| e.to_string())?
        } else if let Some(path) = &self.store {
            let p = path.clone();
            tokio::task::spawn_blocking(move || store::Store::open(&p)?.load())
                .await
                .map_err(|_| "the key store task failed".to_string())??
        } else {
            return Ok(());
        };
        let mut map = self.declared.clone();
        map.extend(loaded);
        self.keys.store(Arc::new(map));
        self.kick.notify_one();
        Ok(())
    }

    /// The stored keys nearing `max_age` now (none without `max_age`), for the admin API.
    pub fn nearing_max_age(&self) -> Vec<lifecycle::Nearing> {
        match &self.aging {
            Some(aging) => lifecycle::nearing(aging, &self.keys.load(), now()),
            None => Vec::new(),
        }
    }

    /// Sends warnings of keys nearing `max_age` to `events`, and counts them in `gauge`.
    pub fn lifecycle(self, events: crate::events::Emitter, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        self.warnings.connect(events, gauge);
        self
    }

    /// The key the request presents: in the header, an `Authorization` line with the scheme, or the query
    /// parameter. `Err` when it presents more than one (two lines, two places, the parameter twice):
    /// which was meant is ambiguous, and judging the first while ignoring the rest hid a bad key behind a
    /// good one (found in review), so such a request is refused as RFC 6750 2 asks of bearer tokens.
    fn presented<'a>(&self, parts: &'a http::request::Parts) -> Result<Option<&'a str>, ()> {
        let mut found = None;
        let mut take = |key: &'a str| match found.replace(key) {
            None => Ok(()),
            Some(_) => Err(()),
        };
        for v in parts.headers.get_all(&self.header) {
            // A value that is not text is a malformed key, judged as such.
            take(v.to_str().unwrap_or_default().trim())?;
        }
        for v in parts.headers.get_all(AUTHORIZATION) {
            if let Some((scheme, rest)) = v.to_str().ok().and_then(|v| v.split_once(' ')) {
                if scheme.eq_ignore_ascii_case(&self.scheme) {
                    take(rest.trim())?;
                }
            }
        }
        if let (Some(param), Some(query)) = (self.query_param.as_deref(), parts.uri.query()) {
            for key in query.split('&').filter_map(|kv| kv.strip_prefix(param)?.strip_prefix('=')) {
                take(key)?;
            }
        }
        Ok(found)
    }

    /// The public id of the one key the request presents where this method reads keys, when it has a
    /// key's shape: the identity a refused key claimed (credential stuffing and spraying count it).
    /// Only this method's own places count: a decoy key in another header claims nothing.
    pub fn claimed(&self, parts: &http::request::Parts) -> Option<Arc<str>> {
        self.presented(parts).ok().flatten().and_then(public_id).map(Arc::from)
    }

    pub fn check(&self, req: &AuthRequest<'_>) -> Verdict {
        let key = match self.presented(req.parts) {
            Ok(Some(key)) => key,
            Ok(None) => return Verdict::Absent,
            Err(()) => return Verdict::Invalid("ambiguous_key"),
        };
        let now = now();
        let seen = cache::digest(key);
        let remembered = self.hashed.get(&seen, now);
        let (id, digest) = match remembered {
            // Found before: it parsed then, and its HMAC is the same.
            Some(d) => match key.get(PREFIX.len()..PREFIX.len() + ID_LEN) {
                Some(id) => (id, d),
                None => return Verdict::Invalid("malformed_key"),
            },
            None => match parse(key) {
                Some(id) => (id, hash(&self.secret, key)),
                None => return Verdict::Invalid("malformed_key"),
            },
        };
        let keys = self.keys.load();
        let Some(record) = keys.get(&digest) else { return Verdict::Invalid("unknown_key") };
        if record.id != id {
            return Verdict::Invalid("unknown_key");
        }
        if remembered.is_none() {
            self.hashed.insert(seen, digest, i64::MAX, now);
        }
        if record.unusable {
            return Verdict::Invalid("unreadable_restriction");
        }
        if record.revoked {
            return Verdict::Invalid("revoked_key");
        }
        if record.expires_at.is_some_and(|t| now >= t) {
            return Verdict::Invalid("expired_key");
        }
        if record.grace_until.is_some_and(|t| now >= t) {
            return Verdict::Invalid("rotated_key");
        }
        if let (Some(aging), Some(created)) = (&self.aging, record.created_at) {
            if aging.too_old(created, now) {
                return Verdict::Invalid("too_old");
            }
        }
        // An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`: judged as the IPv4 address.
        let ip = req.client_ip.to_canonical();
        if !record.allowed.is_empty() && !record.allowed.iter().any(|n| n.contains(&ip)) {
            return Verdict::Invalid("address_not_allowed");
        }
        Verdict::Valid(record.principal.clone())
    }

    /// The header this method reads keys from, and its `Authorization` scheme.
    pub fn sources(&self) -> (&http::HeaderName, &str) {
        (&self.header, &self.scheme)
    }

    /// The query parameter this method reads keys from, when one is configured.
    pub fn query_param(&self) -> Option<&str> {
        self.query_param.as_deref()
    }

    pub fn challenge(&self, _invalid: bool) -> String {
        format!("{} realm=\"portcullis\"", self.scheme)
    }

    /// Polls the store and swaps in its keys when another process changed it.
    pub fn start(&self) {
        if let Some((pg, generation)) = &self.postgres {
            if !self.following.swap(true, std::sync::atomic::Ordering::SeqCst) {
                tokio::spawn(pg::follow(pg::Follow {
                    kick: Arc::downgrade(&self.kick),
                    pg: pg.clone(),
                    name: self.name.clone(),
                    declared: self.declared.clone(),
                    keys: Arc::downgrade(&self.keys),
                    generation: *generation,
                    aging: self.aging,
                    warnings: self.warnings.clone(),
                }));
            }
            return;
        }
        let Some(path) = self.store.clone() else { return };
        let keys = self.keys.clone();
        let declared = self.declared.clone();
        let every = self.refresh;
        let name = self.name.clone();
        let aging = self.aging;
        let warnings = self.warnings.clone();
        let weak = Arc::downgrade(&keys);
        drop(keys);
        let kick = Arc::downgrade(&self.kick);
        tokio::spawn(async move {
            let mut version = None;
            loop {
                let Some(woken) = kick.upgrade() else { return };
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = woken.notified() => {}
                }
                drop(woken);
                let Some(keys) = weak.upgrade() else { return };
                let p = path.clone();
                let last = version;
                let polled = tokio::task::spawn_blocking(move || store::Store::open(&p)?.load_if_changed(last)).await;
                match polled {
                    Ok(Ok(Some((v, loaded)))) => {
                        let mut map = declared.clone();
                        map.extend(loaded);
                        keys.store(Arc::new(map));
                        version = Some(v);
                        tracing::debug!(authenticator = name.as_str(), "API key store reloaded");
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(authenticator = name.as_str(), error = %e, "API key store unreadable; keeping the keys in memory")
                    }
                    Err(_) => {}
                }
                if let Some(aging) = &aging {
                    warnings.scan(aging, &keys.load(), now());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_key_claims_its_public_id_and_never_more() {
        let key = format!("pcs_abcd2345_{}", "s".repeat(39));
        assert_eq!(public_id(&key), Some("abcd2345"));
        // Malformed: no `_` after eight characters (a key with its `_` lost would otherwise hand over
        // the start of its secret), too short, not alphanumeric, multi-byte, or no key at all.
        for bad in [
            "pcs_abcd2345secretsecret",
            "pcs_abcd234_secret",
            "pcs_abc-2345_x",
            "pcs_",
            "pcs_abcd2345",
            "abcd2345_x",
            "pcs_aéééé_x",
            "pcs_ééééé_x",
        ] {
            assert_eq!(public_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_keys_parse_and_typos_do_not() {
        let (id, key) = generate().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(parse(&key), Some(id.as_str()));
        let mut typo = key.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(std::str::from_utf8(&typo).unwrap()), None);
        assert_eq!(parse("pcs_short"), None);
        assert_ne!(generate().unwrap().1, key);
    }

    /// A found key is remembered by its keyed hash, and a remembered key is still judged by the current
    /// record; an unknown key, however well-formed, is never remembered.
    #[test]
    fn found_keys_skip_the_hashing_but_not_the_record() {
        let secret = "0123456789abcdef0123456789abcdef";
        let (id, key) = generate().unwrap();
        let digest = hash(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), &key);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let cfg: ApiKeyConfig = serde_json::from_value(serde_json::json!({
            "hmac_secret": secret,
            "keys": [{ "id": id, "hash": hex, "principal": "ci" }],
        }))
        .unwrap();
        let auth = ApiKeyAuth::new("k", &cfg).unwrap();
        let conn = crate::exchange::ConnInfo::new(0, "127.0.0.1:9".parse().unwrap(), None);
        let check = |presented: &str| {
            let req = http::Request::builder().header("x-api-key", presented).body(()).unwrap();
            let parts = req.into_parts().0;
            match auth.check(&AuthRequest { parts: &parts, conn: &conn, client_ip: conn.peer.ip() }) {
                Verdict::Valid(p) => Ok(p.id.clone()),
                Verdict::Invalid(why) => Err(why),
                _ => Err("absent"),
            }
        };
        assert_eq!(check(&key), Ok("ci".to_owned()));
        assert_eq!(auth.hashed.len(), 1);
        assert_eq!(check(&key), Ok("ci".to_owned()), "remembered");
        let (_, other) = generate().unwrap();
        assert_eq!(check(&other), Err("unknown_key"));
        assert_eq!(auth.hashed.len(), 1, "an unknown key is not remembered");
        // The store says the key is revoked now: the remembered digest leads to the new record.
        let mut revoked = (**auth.keys.load()).clone();
        let record = revoked.get(&digest).unwrap();
        revoked.insert(digest, Arc::new(KeyRecord { revoked: true, ..KeyRecord::clone(record) }));
        auth.keys.store(Arc::new(revoked));
        assert_eq!(check(&key), Err("revoked_key"));
        auth.keys.store(Arc::new(KeyMap::new()));
        assert_eq!(check(&key), Err("unknown_key"));
    }

    #[test]
    fn a_bare_address_is_that_address_alone() {
        assert_eq!(parse_cidr("203.0.113.5").unwrap().to_string(), "203.0.113.5/32");
        assert_eq!(parse_cidr(" 2001:db8::1 ").unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        for bad in ["", "10.0.0.0/33", "203.0.113.5/", "localhost", "10.0.0.0/8,10.1.0.0/16", "::ffff:1.2.3.4/129"] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn hash_depends_on_server_secret() {
        let (_, key) = generate().unwrap();
        let a = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let b = hmac::Key::new(hmac::HMAC_SHA256, b"fedcba9876543210fedcba9876543210");
        assert_ne!(hash(&a, &key), hash(&b, &key));
        assert_eq!(hash(&a, &key), hash(&a, &key));
    }
}
