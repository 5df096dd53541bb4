//! Signed requests: HTTP Message Signatures (RFC 9421) with `hmac-sha256` or `ed25519`, replay
//! protection, and the body checked through `Content-Digest` (RFC 9530).
//!
//! ```yaml
//! authenticators:
//!   partners:
//!     signature:
//!       keys:
//!         billing-1:                       # the `keyid` clients sign with
//!           alg: hmac-sha256
//!           secret: ${env:BILLING_SIGNING_SECRET}   # at least 32 bytes
//!           principal: billing             # default: the keyid
//!           roles: [billing]
//!         partner-ed:
//!           alg: ed25519
//!           public_key: JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=   # or public_key_file: ed.pem
//!       max_skew: 5m                       # |now - created| allowed; nonces are kept this long
//!       required_components: ["@method", "@target-uri"]
//!       require_content_digest: true       # a request with a body must cover `content-digest`
//! ```
//!
//! A request without `Signature-Input` and `Signature` is [`Verdict::Absent`]. Otherwise the first
//! signature whose `keyid` is configured (and whose label and `tag` match, when configured) is checked, in
//! this order: the key's configured algorithm decides (a request's `alg` must match it, never choose it);
//! `created` is required and within `max_skew`; `expires`, when present, has not passed; a `nonce` is
//! required and not already used; the required components are covered; the signature verifies
//! (constant time) over the signature base rebuilt from the request. All of that reads the head only, so
//! a request that cannot pass is refused before any of its body is read. Then, only when needed, the body
//! is read and checked ([`SignatureAuth::check_body`]): a `Content-Digest` field, when present, matches
//! it; and only then is the nonce recorded, so unsigned garbage cannot fill the replay store.
//!
//! Nonces are remembered in this node's memory ([`replay`]), or, with the top-level `redis:` section,
//! in Redis (`SET NX PX`), so a request accepted by one node of a fleet is refused by every other. If
//! Redis cannot answer in time, `on_replay_store_failure` decides: `fail_closed` (the default: 503,
//! since accepting could accept a replay) or `fail_open` (this node's own store decides, so a replay
//! to another node could pass while Redis is down).

pub mod base;
pub mod fields;
pub mod replay;

use super::{AuthRequest, Principal, PrincipalKind, Verdict};
use crate::exchange::Registry;
use crate::fleet::{Fleet, OnFailure};
use crate::secret::Secret;
use crate::units::Dur;
use aws_lc_rs::{constant_time, digest, hmac, signature as sig};
use base::{Component, Message};
use fields::{DigestAlg, SignatureInput};
use replay::{Refused, ReplayStore};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// The accepted keys, by `keyid`.
    pub keys: BTreeMap<String, KeyConfig>,
    /// How far `created` may be from now, either way. Also how long nonces are remembered.
    #[serde(default = "default_skew")]
    pub max_skew: Dur,
    /// Components every signature must cover.
    #[serde(default = "default_required")]
    pub required_components: Vec<String>,
    /// A request with a non-empty body must cover `content-digest`.
    #[serde(default = "default_true")]
    pub require_content_digest: bool,
    /// Only the signature with this label is considered.
    #[serde(default)]
    pub label: Option<String>,
    /// Only signatures with this `tag` parameter are considered (RFC 9421 §2.3).
    #[serde(default)]
    pub tag: Option<String>,
    /// Most nonces remembered at once; beyond it new signatures are refused until old nonces expire.
    #[serde(default = "default_capacity")]
    pub replay_capacity: usize,
    /// Send the accepted `Signature` and `Signature-Input` fields upstream (off: they are removed).
    #[serde(default)]
    pub forward_credential: bool,
    /// With `redis:`, when Redis cannot record a nonce in time: `fail_closed` (default, 503) or
    /// `fail_open` (this node's own replay store decides).
    #[serde(default)]
    pub on_replay_store_failure: Option<OnFailure>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub alg: Alg,
    /// `hmac-sha256`: the shared secret (its bytes as written), at least 32 bytes.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `ed25519`: the public key, base64 of the raw 32 bytes, or an SPKI PEM block.
    #[serde(default)]
    pub public_key: Option<String>,
    /// `ed25519`: a PEM file (`BEGIN PUBLIC KEY`) holding the public key.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// The principal id; default: the keyid.
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The algorithms of the RFC 9421 registry that we accept.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Alg {
    HmacSha256,
    Ed25519,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HmacSha256 => "hmac-sha256",
            Alg::Ed25519 => "ed25519",
        }
    }
}

fn default_skew() -> Dur {
    Dur::secs(300)
}
fn default_required() -> Vec<String> {
    vec!["@method".into(), "@target-uri".into()]
}
fn default_true() -> bool {
    true
}
fn default_capacity() -> usize {
    100_000
}

const MAX_NONCE_LEN: usize = 256;

enum Verifier {
    /// Boxed: aws-lc's HMAC key holds precomputed state (over a kilobyte).
    Hmac(Box<hmac::Key>),
    Ed25519([u8; 32]),
}

struct Key {
    alg: Alg,
    verifier: Verifier,
    principal: Arc<Principal>,
}

impl Key {
    fn compile(keyid: &str, c: &KeyConfig) -> Result<Key, String> {
        let verifier = match (c.alg, &c.secret, &c.public_key, &c.public_key_file) {
            (Alg::HmacSha256, Some(secret), None, None) => {
                if secret.expose().len() < 32 {
                    return Err(format!("key `{keyid}`: an hmac-sha256 secret must be at least 32 bytes"));
                }
                Verifier::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes())))
            }
            (Alg::HmacSha256, ..) => return Err(format!("key `{keyid}`: hmac-sha256 takes `secret` (only)")),
            (Alg::Ed25519, None, Some(text), None) => Verifier::Ed25519(ed25519_key(text.as_bytes())?),
            (Alg::Ed25519, None, None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| format!("key `{keyid}`: `{path}`: {}", e.kind()))?;
                Verifier::Ed25519(ed25519_key(&pem).map_err(|e| format!("key `{keyid}`: `{path}`: {e}"))?)
            }
            (Alg::Ed25519, ..) => {
                return Err(format!("key `{keyid}`: ed25519 takes one of `public_key` or `public_key_file`"))
            }
        };
        let principal = Principal {
            id: c.principal.clone().unwrap_or_else(|| keyid.to_owned()),
            kind: PrincipalKind::Signature,
            roles: c.roles.clone(),
            scopes: c.scopes.clone(),
            claims: None,
            tenant: None,
            identity: Default::default(),
        };
        Ok(Key { alg: c.alg, verifier, principal: Arc::new(principal) })
    }

    /// Constant-time for HMAC (`hmac::verify`); Ed25519 verification works on public data.
    fn verify(&self, base: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Hmac(k) => hmac::verify(k, base, signature).is_ok(),
            Verifier::Ed25519(pk) => sig::UnparsedPublicKey::new(&sig::ED25519, pk).verify(base, signature).is_ok(),
        }
    }
}

pub(crate) use crate::secret::ed25519_public_key as ed25519_key;

pub struct SignatureAuth {
    pub forward_credential: bool,
    keys: BTreeMap<String, Key>,
    skew: i64,
    required: Vec<Component>,
    require_digest: bool,
    label: Option<String>,
    tag: Option<String>,
    replay: Arc<ReplayStore>,
    /// With `redis:`: the fleet's replay store (the local one is then the `fail_open` fallback).
    shared: Option<SharedReplay>,
}

/// The fleet-wide replay store: `portcullis:replay:<authenticator>:<hex SHA-256 of keyid and nonce>`.
pub struct SharedReplay {
    pub fleet: Arc<Fleet>,
    pub on_failure: OnFailure,
    pub prefix: String,
    /// `portcullis_replay_store_failures_total{authenticator,mode}`.
    pub failures: prometheus_client::metrics::counter::Counter,
}

impl SharedReplay {
    /// Records `(keyid, nonce)` until `until` (unix seconds) with `SET NX PX`, or refuses a replay. When
    /// Redis cannot answer in time, `on_failure` decides: `Err(None)` (fail closed) or `local` decides.
    pub async fn record(
        &self,
        local: &ReplayStore,
        keyid: &str,
        nonce: &str,
        until: i64,
        now: i64,
    ) -> Result<(), Option<Refused>> {
        let mut h = digest::Context::new(&digest::SHA256);
        for part in [keyid, nonce] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let key = format!("{}{}", self.prefix, crate::fleet::hex(h.finish().as_ref()));
        let ttl_ms = u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1).saturating_mul(1000);
        let set = |mut conn: redis::aio::ConnectionManager| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(1u8)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        match self.fleet.call("replay", set).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Some(Refused::Replayed)),
            Err(_) => {
                self.failures.inc();
                match self.on_failure {
                    OnFailure::FailClosed => Err(None),
                    OnFailure::FailOpen => local.remember(keyid, nonce, until, now).map_err(Some),
                }
            }
        }
    }
}

/// The refusal reason when the shared replay store cannot answer and fails closed (503, not 401).
pub const STORE_UNAVAILABLE: &str = "replay_store_unavailable";

impl SignatureAuth {
    /// `stores`: the replay caches that outlive reloads (see [`crate::authn::Kept`]); `fleet`: the
    /// `redis:` section's connection and the failure counter's metrics, when there is one.
    pub fn new(
        name: &str,
        c: &SignatureConfig,
        stores: &Registry<ReplayStore>,
        fleet: Option<(&Arc<Fleet>, &crate::observe::metrics::Metrics)>,
    ) -> Result<SignatureAuth, String> {
        let err = |e: String| format!("authenticator `{name}`: {e}");
        let shared = match (fleet, c.on_replay_store_failure) {
            (None, Some(_)) => {
                return Err(err("signature.on_replay_store_failure applies only with the `redis:` section".into()))
            }
            (None, None) => None,
            (Some((fleet, metrics)), mode) => {
                let on_failure = mode.unwrap_or(OnFailure::FailClosed);
                Some(SharedReplay {
                    fleet: fleet.clone(),
                    on_failure,
                    prefix: format!("portcullis:replay:{name}:"),
                    failures: metrics.replay_store_failures(name, on_failure.as_str()),
                })
            }
        };
        if c.keys.is_empty() {
            return Err(err("signature.keys cannot be empty".into()));
        }
        let keys = c
            .keys
            .iter()
            .map(|(id, k)| Key::compile(id, k).map(|k| (id.clone(), k)))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let skew = c.max_skew.0.as_secs();
        if !(1..=3600).contains(&skew) {
            return Err(err("signature.max_skew must be between 1s and 1h".into()));
        }
        let required = c
            .required_components
            .iter()
            .map(|n| Component::parse(n).map_err(|_| format!("`{n}` is not a supported component")))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if c.replay_capacity == 0 {
            return Err(err("signature.replay_capacity must be at least 1".into()));
        }
        Ok(SignatureAuth {
            forward_credential: c.forward_credential,
            keys,
            skew: skew as i64,
            required,
            require_digest: c.require_content_digest,
            label: c.label.clone(),
            tag: c.tag.clone(),
            replay: ReplayStore::for_authenticator(stores, name, c.replay_capacity),
            shared,
        })
    }

    /// Everything a request's head can prove, before any of its body is read: the fields parse, a key is
    /// known, the time window, the nonce is unused, the coverage, and the signature itself (it covers the
    /// `Content-Digest` field, not the body). When the body must still be checked, the returned
    /// [`BodyDue`] says how; then the nonce is recorded only once the body has passed.
    pub async fn check(&self, req: &AuthRequest<'_>) -> (Verdict, Option<BodyDue>) {
        let headers = &req.parts.headers;
        match (joined(headers, "signature-input"), joined(headers, "signature")) {
            (None, None) => (Verdict::Absent, None),
            (Some(input), Some(signature)) => {
                let now = now();
                match self.verify_head(req, &input, &signature, now) {
                    Ok((p, due)) if due.needs_body() => (Verdict::Valid(p), Some(due)),
                    Ok((p, due)) => match self.finish(&due, None, now).await {
                        Ok(()) => (Verdict::Valid(p), None),
                        Err(STORE_UNAVAILABLE) => (Verdict::Unavailable(STORE_UNAVAILABLE), None),
                        Err(reason) => (Verdict::Invalid(reason), None),
                    },
                    Err(reason) => (Verdict::Invalid(reason), None),
                }
            }
            _ => (Verdict::Invalid("malformed_signature"), None),
        }
    }

    fn verify_head(
        &self,
        req: &AuthRequest<'_>,
        input: &str,
        signature: &str,
        now: i64,
    ) -> Result<(Arc<Principal>, BodyDue), &'static str> {
        let inputs = fields::parse_inputs(input)?;
        let (si, key) = self.select(&inputs)?;
        let nonce = self.check_params(si, key, now)?;
        let keyid = si.keyid.as_deref().unwrap_or_default();
        if self.replay.contains(keyid, nonce, now) {
            return Err(Refused::Replayed.reason());
        }
        let body = declared_body(req.parts);
        let covered = self.check_coverage(si, body)?;
        let signature = fields::parse_signatures(signature)?.remove(&si.label).ok_or("malformed_signature")?;
        let scheme = req.parts.uri.scheme_str().unwrap_or(if req.conn.tls.is_some() { "https" } else { "http" });
        let base = base::signature_base(&Message { parts: req.parts, scheme }, &si.components, &si.params_line)?;
        if !key.verify(&base, &signature) {
            return Err("bad_signature");
        }
        let created = si.created.unwrap_or(now);
        let until = created.saturating_add(self.skew).saturating_add(1).min(si.expires.unwrap_or(i64::MAX));
        let digest = joined(&req.parts.headers, "content-digest");
        let must_be_empty = self.require_digest && !covered && body != Declared::Empty;
        let due = BodyDue { digest, must_be_empty, keyid: keyid.to_owned(), nonce: nonce.to_owned(), until };
        Ok((key.principal.clone(), due))
    }

    /// The checks of a request's body, once read: its `Content-Digest`, or that it is empty when a body
    /// had to be covered and was not; then the nonce is recorded.
    pub async fn check_body(&self, due: &BodyDue, body: &[u8]) -> Result<(), &'static str> {
        self.finish(due, Some(body), now()).await
    }

    /// The body's checks (when it had to be read), then the nonce is recorded.
    async fn finish(&self, due: &BodyDue, body: Option<&[u8]>, now: i64) -> Result<(), &'static str> {
        if let Some(body) = body {
            if due.must_be_empty && !body.is_empty() {
                return Err("missing_component");
            }
            if let Some(value) = &due.digest {
                check_digest(value, Some(body))?;
            }
        }
        self.record(&due.keyid, &due.nonce, due.until, now).await
    }

    /// Records the nonce until `until` (unix seconds), in Redis when shared, or refuses a replay.
    async fn record(&self, keyid: &str, nonce: &str, until: i64, now: i64) -> Result<(), &'static str> {
        let Some(shared) = &self.shared else {
            return self.replay.remember(keyid, nonce, until, now).map_err(|r| r.reason());
        };
        shared
            .record(&self.replay, keyid, nonce, until, now)
            .await
            .map_err(|refused| refused.map_or(STORE_UNAVAILABLE, Refused::reason))
    }

    /// The first signature meant for us: label and tag as configured, keyid known.
    fn select<'a>(&self, inputs: &'a [SignatureInput]) -> Result<(&'a SignatureInput, &Key), &'static str> {
        let mut candidates = inputs
            .iter()
            .filter(|si| self.label.as_ref().is_none_or(|l| *l == si.label))
            .filter(|si| self.tag.as_ref().is_none_or(|t| si.tag.as_ref() == Some(t)))
            .peekable();
        if candidates.peek().is_none() {
            return Err("no_matching_signature");
        }
        candidates.find_map(|si| Some((si, self.keys.get(si.keyid.as_deref()?)?))).ok_or("unknown_key")
    }

    /// Algorithm, time window and nonce; returns the nonce.
    fn check_params<'a>(&self, si: &'a SignatureInput, key: &Key, now: i64) -> Result<&'a str, &'static str> {
        if si.alg.as_deref().is_some_and(|a| a != key.alg.as_str()) {
            return Err("alg_mismatch");
        }
        let created = si.created.ok_or("missing_created")?;
        if now.abs_diff(created) > self.skew.unsigned_abs() {
            return Err("stale_signature");
        }
        if let Some(expires) = si.expires {
            if expires < created {
                return Err("malformed_signature");
            }
            if now > expires {
                return Err("expired_signature");
            }
        }
        match si.nonce.as_deref() {
            Some(n) if !n.is_empty() && n.len() <= MAX_NONCE_LEN => Ok(n),
            _ => Err("missing_nonce"),
        }
    }

    /// The configured components, and `content-digest` when the request declares a body; returns
    /// whether `content-digest` is covered.
    fn check_coverage(&self, si: &SignatureInput, body: Declared) -> Result<bool, &'static str> {
        if self.required.iter().any(|c| !si.components.contains(c)) {
            return Err("missing_component");
        }
        let covered = si.components.contains(&Component::Field("content-digest".into()));
        if self.require_digest && body == Declared::NonEmpty && !covered {
            return Err("missing_component");
        }
        Ok(covered)
    }

    /// There is no registered HTTP authentication scheme for RFC 9421; `Signature` is what clients of
    /// signed-request APIs recognise (and what draft-cavage used). RFC 9421 §5's `Accept-Signature`
    /// would say which components to sign; the rejection path carries only this challenge for now.
    pub fn challenge(&self, _invalid: bool) -> String {
        "Signature realm=\"portcullis\"".into()
    }

    pub fn start(&self) {}
}

/// What remains of a request whose head passed: the body's checks (see [`SignatureAuth::check_body`]),
/// if any, then recording its nonce.
#[derive(Debug)]
pub struct BodyDue {
    /// The `Content-Digest` field, which the body must match.
    digest: Option<String>,
    /// `content-digest` was required but not covered, and the head did not say the body is empty.
    must_be_empty: bool,
    keyid: String,
    nonce: String,
    until: i64,
}

impl BodyDue {
    /// True when the body must be read and checked before the nonce is recorded.
    fn needs_body(&self) -> bool {
        self.digest.is_some() || self.must_be_empty
    }
}

/// What a request's head says of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Empty,
    NonEmpty,
    /// HTTP/1 chunked, or HTTP/2 without `Content-Length`: known only once read.
    Unknown,
}

fn declared_body(parts: &http::request::Parts) -> Declared {
    let length =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    match length {
        Some(0) => Declared::Empty,
        Some(_) => Declared::NonEmpty,
        None if parts.version < http::Version::HTTP_2
            && !parts.headers.contains_key(http::header::TRANSFER_ENCODING) =>
        {
            Declared::Empty
        }
        None => Declared::Unknown,
    }
}

/// Every `Content-Digest` algorithm we know must match the received body; at least one must be present.
fn check_digest(value: &str, body: Option<&[u8]>) -> Result<(), &'static str> {
    let body = body.ok_or("body_unavailable")?;
    let digests = fields::parse_content_digest(value)?;
    if digests.is_empty() {
        return Err("unsupported_digest");
    }
    for (alg, expected) in digests {
        let alg = match alg {
            DigestAlg::Sha256 => &digest::SHA256,
            DigestAlg::Sha512 => &digest::SHA512,
        };
        let actual = digest::digest(alg, body);
        if constant_time::verify_slices_are_equal(actual.as_ref(), &expected).is_err() {
            return Err("digest_mismatch");
        }
    }
    Ok(())
}

/// All lines of a field, joined with ", " as RFC 8941 §4.2 parses them; a value that is not visible ASCII
/// becomes a NUL, so the whole field then fails to parse.
fn joined(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(values.map(|v| v.to_str().unwrap_or("\u{0}")).collect::<Vec<_>>().join(", "))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
