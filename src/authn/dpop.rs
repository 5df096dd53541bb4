//! DPoP, RFC 9449: access tokens bound to a key the client proves it holds, on every request.
//!
//! ```yaml
//! authenticators:
//!   sso:
//!     jwt:
//!       issuer: https://idp.example.com
//!       audiences: [orders-api]
//!       algorithms: [RS256]
//!       discovery: true
//!       dpop: required            # or `optional`, or the long form:
//!       # dpop: { mode: required, algorithms: [ES256, EdDSA], max_age: 60s, future_skew: 5s, nonce: true }
//! ```
//!
//! With DPoP the token comes as `Authorization: DPoP <token>` and a `DPoP: <proof>` field: a JWT the
//! client signs for this one request with the key the token is bound to (`cnf.jkt`, its RFC 7638
//! thumbprint). The token is verified (and cached) as usual; the proof is verified on every request,
//! cached token or not:
//! - its header is read here, never by a library: `typ` is `dpop+jwt`, `alg` one of the pinned
//!   algorithms (never `none`, never HMAC), `jwk` a public key of that algorithm's type (a private
//!   member refuses it), and no `crit`;
//! - the signature verifies under that `jwk` (aws-lc-rs);
//! - `htm` is the request method, `htu` the request URL (scheme, host case-insensitive with the default
//!   port stripped, path normalised as routing normalises it; query and fragment ignored);
//! - `iat` is at most `max_age` old and at most `future_skew` ahead;
//! - `ath` is base64url(SHA-256(token)), and the thumbprint of `jwk` is the token's `cnf.jkt`;
//! - with `nonce: true`, `nonce` is one this gateway issued (stateless: an HMAC of a time window under
//!   a process key, valid for the current and the previous window); otherwise 401 with
//!   `error="use_dpop_nonce"` and a fresh `DPoP-Nonce`;
//! - last, `jti` was never seen with this key: recorded in the replay store the signed requests use
//!   (this node's memory, or Redis with the `redis:` section, failing closed unless configured open).
//!
//! A DPoP-bound token (one with `cnf.jkt`) sent as `Bearer` is refused: a stolen token without its key.
//! In `required` mode a token without `cnf.jkt` is refused too. Refusals are 401 with
//! `WWW-Authenticate: DPoP algs="...", error="invalid_dpop_proof"` (or `invalid_token`); the reason
//! code goes to logs and metrics, the proof and the token never do.

use super::jwt::claims::{self, Presented, Verified};
use super::signature::replay::ReplayStore;
use super::signature::{SharedReplay, STORE_UNAVAILABLE};
use super::{AuthRequest, Verdict};
use crate::fleet::OnFailure;
use crate::units::Dur;
use aws_lc_rs::{constant_time, digest, hmac, signature as sig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use jsonwebtoken::Algorithm;
use serde::{de, Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// The `DPoP` request field carrying the proof, and the `DPoP-Nonce` answer field.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// The reason code that asks the client for a (fresh) server nonce (`error="use_dpop_nonce"`).
pub const USE_NONCE: &str = "dpop_nonce_required";

/// How the routing normalises a path (`validate::path::normalize`), handed in by the compile step so
/// this stage does not import another; `None` for a path routing would refuse.
pub type NormalizePath = fn(&str) -> Option<Cow<'_, str>>;

/// Whether DPoP is demanded or only honoured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every token must be DPoP-bound and presented with a proof.
    Required,
    /// Bearer tokens without `cnf.jkt` still pass; bound tokens need their proof.
    Optional,
}

/// `dpop:` on a `jwt` or `introspection` authenticator: `required`, `optional`, or the long form.
#[derive(Debug, Clone, PartialEq)]
pub struct DpopConfig {
    pub mode: Mode,
    /// Algorithms accepted for proofs (asymmetric only).
    pub algorithms: Vec<super::jwt::Alg>,
    /// How old a proof's `iat` may be.
    pub max_age: Dur,
    /// How far ahead of the gateway's clock a proof's `iat` may be.
    pub future_skew: Dur,
    /// Require a server-issued `nonce` in every proof.
    pub nonce: bool,
    /// How long one nonce window lasts (a nonce is valid in its window and the next).
    pub nonce_window: Dur,
    /// The nonce key shared by the nodes of a fleet (at least 32 bytes); default: a random key per process.
    pub nonce_secret: Option<crate::secret::Secret>,
    /// Most proof ids remembered at once in this node's memory.
    pub replay_capacity: usize,
    /// With `redis:`, when Redis cannot record a proof id in time (default `fail_closed`: 503).
    pub on_replay_store_failure: Option<OnFailure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongForm {
    mode: Mode,
    #[serde(default = "default_algorithms")]
    algorithms: Vec<super::jwt::Alg>,
    #[serde(default = "default_max_age")]
    max_age: Dur,
    #[serde(default = "default_skew")]
    future_skew: Dur,
    #[serde(default)]
    nonce: bool,
    #[serde(default = "default_nonce_window")]
    nonce_window: Dur,
    #[serde(default)]
    nonce_secret: Option<crate::secret::Secret>,
    #[serde(default = "default_capacity")]
    replay_capacity: usize,
    #[serde(default)]
    on_replay_store_failure: Option<OnFailure>,
}

fn default_algorithms() -> Vec<super::jwt::Alg> {
    use super::jwt::Alg;
    vec![
        Alg(Algorithm::ES256),
        Alg(Algorithm::ES384),
        Alg(Algorithm::EdDSA),
        Alg(Algorithm::PS256),
        Alg(Algorithm::RS256),
    ]
}
fn default_max_age() -> Dur {
    Dur::secs(60)
}
fn default_skew() -> Dur {
    Dur::secs(5)
}
fn default_nonce_window() -> Dur {
    Dur::secs(300)
}
fn default_capacity() -> usize {
    100_000
}

impl From<LongForm> for DpopConfig {
    fn from(l: LongForm) -> Self {
        DpopConfig {
            mode: l.mode,
            algorithms: l.algorithms,
            max_age: l.max_age,
            future_skew: l.future_skew,
            nonce: l.nonce,
            nonce_window: l.nonce_window,
            nonce_secret: l.nonce_secret,
            replay_capacity: l.replay_capacity,
            on_replay_store_failure: l.on_replay_store_failure,
        }
    }
}

impl<'de> Deserialize<'de> for DpopConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = DpopConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`required`, `optional`, or { mode, algorithms, max_age, future_skew, nonce, ... }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DpopConfig, E> {
                let mode = match v {
                    "required" => Mode::Required,
                    "optional" => Mode::Optional,
                    other => return Err(E::custom(format!("dpop: `{other}` is not `required` or `optional`"))),
                };
                let long = LongForm {
                    mode,
                    algorithms: default_algorithms(),
                    max_age: default_max_age(),
                    future_skew: default_skew(),
                    nonce: false,
                    nonce_window: default_nonce_window(),
                    nonce_secret: None,
                    replay_capacity: default_capacity(),
                    on_replay_store_failure: None,
                };
                Ok(long.into())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<DpopConfig, A::Error> {
                LongForm::deserialize(de::value::MapAccessDeserializer::new(map)).map(Into::into)
            }
        }
        d.deserialize_any(V)
    }
}

/// How the token came: `Authorization: Bearer` (or a cookie) or `Authorization: DPoP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// The token a request presents and its scheme. Without DPoP configured only the bearer forms count
/// (a `DPoP` token is then another method's credential).
pub fn presented<'a>(parts: &'a http::request::Parts, cookie: Option<&str>, dpop: bool) -> (Presented<'a>, Scheme) {
    if !dpop {
        return (super::jwt::presented(parts, cookie), Scheme::Bearer);
    }
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return (Presented::Absent, Scheme::Bearer) };
    let v = value.as_bytes().trim_ascii();
    let is_dpop = v.len() > 5 && v[..4].eq_ignore_ascii_case(b"dpop") && matches!(v[4], b' ' | b'\t');
    if !is_dpop {
        return (claims::bearer(parts), Scheme::Bearer);
    }
    if values.next().is_some() {
        return (Presented::Malformed, Scheme::Dpop);
    }
    let token = v[5..].trim_ascii();
    match std::str::from_utf8(token) {
        Ok(t) if claims::is_b64token(t.as_bytes()) => (Presented::Token(t), Scheme::Dpop),
        _ => (Presented::Malformed, Scheme::Dpop),
    }
}

/// Most bytes of a proof (an RSA-4096 `jwk` and signature fit well within).
const MAX_PROOF: usize = 8 * 1024;
const MAX_JTI: usize = 256;

/// A proof's key, checked against the proof's `alg`.
enum ProofKey {
    /// Uncompressed SEC1 point (`04 || x || y`).
    Ec(Vec<u8>, &'static sig::EcdsaVerificationAlgorithm),
    Ed25519(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        params: &'static sig::RsaParameters,
    },
}

impl ProofKey {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            ProofKey::Ec(point, alg) => sig::UnparsedPublicKey::new(*alg, point).verify(message, signature).is_ok(),
            ProofKey::Ed25519(x) => sig::UnparsedPublicKey::new(&sig::ED25519, x).verify(message, signature).is_ok(),
            ProofKey::Rsa { n, e, params } => sig::RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
                .verify(params, message, signature)
                .is_ok(),
        }
    }
}

/// Members that make a JWK private (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn b64_member<'a>(jwk: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, &'static str> {
    match jwk.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err("dpop_bad_jwk"),
    }
}

fn decode(s: &str) -> Result<Vec<u8>, &'static str> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| "dpop_bad_jwk")
}

/// The proof key from `jwk` for `alg`, and its RFC 7638 thumbprint.
fn proof_key(jwk: &serde_json::Map<String, Value>, alg: Algorithm) -> Result<(ProofKey, String), &'static str> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err("dpop_private_key");
    }
    let kty = jwk.get("kty").and_then(Value::as_str).ok_or("dpop_bad_jwk")?;
    // The RFC 7638 members in lexicographic order; the values are base64url or fixed names, which JSON
    // writes as they are.
    let (key, canonical) = match (alg, kty) {
        (Algorithm::ES256 | Algorithm::ES384, "EC") => {
            let (crv, len, verify) = match alg {
                Algorithm::ES256 => ("P-256", 32, &sig::ECDSA_P256_SHA256_FIXED),
                _ => ("P-384", 48, &sig::ECDSA_P384_SHA384_FIXED),
            };
            if jwk.get("crv").and_then(Value::as_str) != Some(crv) {
                return Err("dpop_bad_jwk");
            }
            let (x, y) = (b64_member(jwk, "x")?, b64_member(jwk, "y")?);
            let (xb, yb) = (decode(x)?, decode(y)?);
            if xb.len() != len || yb.len() != len {
                return Err("dpop_bad_jwk");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&xb);
            point.extend_from_slice(&yb);
            (ProofKey::Ec(point, verify), format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#))
        }
        (Algorithm::EdDSA, "OKP") => {
            if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Err("dpop_bad_jwk");
            }
            let x = b64_member(jwk, "x")?;
            let xb = decode(x)?;
            if xb.len() != 32 {
                return Err("dpop_bad_jwk");
            }
            (ProofKey::Ed25519(xb), format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#))
        }
        (
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
            "RSA",
        ) => {
            let params: &'static sig::RsaParameters = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                _ => &sig::RSA_PSS_2048_8192_SHA512,
            };
            let (n, e) = (b64_member(jwk, "n")?, b64_member(jwk, "e")?);
            let key = ProofKey::Rsa { n: decode(n)?, e: decode(e)?, params };
            (key, format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#))
        }
        _ => return Err("dpop_bad_jwk"),
    };
    let thumbprint = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
    Ok((key, thumbprint))
}

/// The proof header members we read. Serde refuses a repeated one.
#[derive(Deserialize)]
struct ProofHeader {
    typ: Option<Value>,
    alg: Option<Value>,
    jwk: Option<Value>,
    /// Present at all (even `null`): refused.
    #[serde(default)]
    crit: Present,
}

/// A member that is there, whatever its value (`null` included, which `Option` would read as absent).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

/// The proof claims we read. Serde refuses a repeated one.
#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

/// What a verified proof says.
struct Proof {
    thumbprint: String,
    jti: String,
    iat: i64,
    nonce: Option<String>,
}

/// Stateless server nonces: `base64url(window || HMAC-SHA256(key, window)[..16])`.
struct Nonces {
    key: hmac::Key,
    window: i64,
}

/// The nonce key, drawn once per process (so a reload does not void the nonces clients hold).
fn nonce_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        if aws_lc_rs::rand::fill(&mut key).is_err() {
            // Should the system generator ever fail, a key from the clock and the address space layout is
            // still unknown to clients.
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let addr = &key as *const _ as usize as u128;
            let d = digest::digest(&digest::SHA256, &(seed.as_nanos() ^ addr.rotate_left(64)).to_le_bytes());
            key.copy_from_slice(d.as_ref());
        }
        key
    })
}

impl Nonces {
    fn tag(&self, window: i64) -> [u8; 16] {
        let t = hmac::sign(&self.key, &window.to_be_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&t.as_ref()[..16]);
        out
    }

    fn issue(&self, now: i64) -> String {
        let w = now.div_euclid(self.window);
        let mut raw = [0u8; 24];
        raw[..8].copy_from_slice(&w.to_be_bytes());
        raw[8..].copy_from_slice(&self.tag(w));
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn valid(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else { return false };
        let Ok(raw) = <[u8; 24]>::try_from(raw.as_slice()) else { return false };
        let mut w = [0u8; 8];
        w.copy_from_slice(&raw[..8]);
        let w = i64::from_be_bytes(w);
        let current = now.div_euclid(self.window);
        (w == current || w == current - 1) && constant_time::verify_slices_are_equal(&raw[8..], &self.tag(w)).is_ok()
    }
}

/// A compiled `dpop:` section.
pub struct Dpop {
    required: bool,
    algs: Vec<Algorithm>,
    /// `algs="ES256 EdDSA"` for the challenge.
    algs_text: String,
    max_age: i64,
    skew: i64,
    nonces: Option<Nonces>,
    replay: Arc<ReplayStore>,
    shared: Option<SharedReplay>,
    normalize: NormalizePath,
}

impl Dpop {
    /// `replay`: this authenticator's local store (kept across reloads); `shared`: the fleet's store.
    pub fn new(
        c: &DpopConfig,
        replay: Arc<ReplayStore>,
        shared: Option<SharedReplay>,
        normalize: NormalizePath,
    ) -> Result<Dpop, String> {
        let algs: Vec<Algorithm> = c.algorithms.iter().map(|a| a.0).collect();
        if algs.is_empty() {
            return Err("dpop.algorithms cannot be empty".into());
        }
        if algs.iter().any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)) {
            return Err("dpop.algorithms: proofs are signed with public keys; HS256/384/512 are not allowed".into());
        }
        let max_age = c.max_age.0.as_secs() as i64;
        if !(1..=3600).contains(&max_age) || c.future_skew.0.as_secs() > 300 {
            return Err("dpop.max_age must be between 1s and 1h, and dpop.future_skew at most 5m".into());
        }
        let window = c.nonce_window.0.as_secs() as i64;
        if c.nonce && !(10..=86_400).contains(&window) {
            return Err("dpop.nonce_window must be between 10s and 24h".into());
        }
        let key = match &c.nonce_secret {
            Some(_) if !c.nonce => return Err("dpop.nonce_secret is set but dpop.nonce is off".into()),
            Some(s) if s.expose().len() < 32 => return Err("dpop.nonce_secret must be at least 32 bytes".into()),
            Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s.expose().as_bytes()),
            None => hmac::Key::new(hmac::HMAC_SHA256, nonce_key()),
        };
        if c.replay_capacity == 0 {
            return Err("dpop.replay_capacity must be at least 1".into());
        }
        let names: Vec<&str> = algs.iter().map(alg_name).collect();
        Ok(Dpop {
            required: c.mode == Mode::Required,
            algs_text: names.join(" "),
            algs,
            max_age,
            skew: c.future_skew.0.as_secs() as i64,
            nonces: c.nonce.then_some(Nonces { key, window }),
            replay,
            shared,
            normalize,
        })
    }

    /// Compiles `dpop:` of authenticator `name` with what the authenticators are compiled with.
    pub fn compile(name: &str, c: &DpopConfig, cx: &super::Context<'_>) -> Result<Dpop, String> {
        let shared = match (cx.fleet, c.on_replay_store_failure) {
            (None, Some(_)) => return Err("dpop.on_replay_store_failure applies only with the `redis:` section".into()),
            (None, None) => None,
            (Some(fleet), mode) => {
                let on_failure = mode.unwrap_or(OnFailure::FailClosed);
                Some(SharedReplay {
                    fleet: fleet.clone(),
                    on_failure,
                    prefix: format!("portcullis:dpop:{name}:"),
                    failures: cx.metrics.replay_store_failures(name, on_failure.as_str()),
                })
            }
        };
        let replay = ReplayStore::for_authenticator(&cx.kept.replay, &format!("dpop\n{name}"), c.replay_capacity);
        Dpop::new(c, replay, shared, cx.normalize_path)
    }

    /// A fresh server nonce, when nonces are on.
    pub fn nonce(&self) -> Option<HeaderValue> {
        let n = self.nonces.as_ref()?.issue(super::jwt::unix_now());
        HeaderValue::from_str(&n).ok()
    }

    /// The `WWW-Authenticate` challenge; `reason` is the refusal's reason code when this method refused.
    pub fn challenge(&self, reason: Option<&str>) -> String {
        let error = reason.map(|r| match r {
            USE_NONCE => "use_dpop_nonce",
            "dpop_bound_token_as_bearer" | "dpop_required" | "dpop_unbound_token" => "invalid_token",
            r if r.starts_with("dpop_") => "invalid_dpop_proof",
            _ => "invalid_token",
        });
        let dpop = match error {
            Some(e) => format!("DPoP algs=\"{}\", error=\"{e}\"", self.algs_text),
            None => format!("DPoP algs=\"{}\"", self.algs_text),
        };
        if self.required {
            dpop
        } else {
            format!("{}, {dpop}", super::jwt::bearer_challenge(error == Some("invalid_token")))
        }
    }

    /// Holds a verified token against the request: its binding (`cnf.jkt`), and the proof when DPoP.
    pub async fn check(
        &self,
        req: &AuthRequest<'_>,
        token: &str,
        scheme: Scheme,
        jkt: Option<&str>,
    ) -> Result<(), &'static str> {
        let jkt = match (scheme, jkt) {
            (Scheme::Bearer, Some(_)) => return Err("dpop_bound_token_as_bearer"),
            (Scheme::Bearer, None) if self.required => return Err("dpop_required"),
            (Scheme::Bearer, None) => return Ok(()),
            (Scheme::Dpop, None) => return Err("dpop_unbound_token"),
            (Scheme::Dpop, Some(jkt)) => jkt,
        };
        let mut fields = req.parts.headers.get_all(DPOP).iter();
        let (Some(field), None) = (fields.next(), fields.next()) else {
            return Err(if req.parts.headers.contains_key(DPOP) {
                "dpop_multiple_proofs"
            } else {
                "dpop_missing_proof"
            });
        };
        let now = super::jwt::unix_now();
        let proof = self.verify(field.as_bytes(), req, token, now)?;
        if proof.thumbprint != jkt {
            return Err("dpop_key_mismatch");
        }
        if let Some(nonces) = &self.nonces {
            if !proof.nonce.as_deref().is_some_and(|n| nonces.valid(n, now)) {
                return Err(USE_NONCE);
            }
        }
        // Remembered as long as the proof could still be accepted.
        let until = proof.iat.saturating_add(self.max_age).max(now).saturating_add(1);
        self.record(&proof.thumbprint, &proof.jti, until, now).await
    }

    /// The proof's own checks: header, key, signature, claims against the request.
    fn verify(&self, proof: &[u8], req: &AuthRequest<'_>, token: &str, now: i64) -> Result<Proof, &'static str> {
        if proof.len() > MAX_PROOF {
            return Err("dpop_malformed");
        }
        let proof = std::str::from_utf8(proof).map_err(|_| "dpop_malformed")?.trim_ascii();
        let mut parts = proof.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("dpop_malformed");
        };
        let raw_header = URL_SAFE_NO_PAD.decode(h).map_err(|_| "dpop_malformed")?;
        // One parse: the members we name (serde refuses a repeated one); the others are still read as
        // JSON (IgnoredAny), so a malformed header is refused.
        let header: ProofHeader = serde_json::from_slice(&raw_header).map_err(|_| "dpop_malformed")?;
        if header.crit.0 {
            return Err("dpop_unsupported_crit");
        }
        if header.typ != Some(Value::String("dpop+jwt".into())) {
            return Err("dpop_bad_typ");
        }
        let alg = match header.alg {
            Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => return Err("dpop_alg_none"),
            Some(Value::String(name)) => super::jwt::token::algorithm(&name).ok_or("dpop_alg_not_allowed")?,
            _ => return Err("dpop_malformed"),
        };
        if !self.algs.contains(&alg) {
            return Err("dpop_alg_not_allowed");
        }
        let Some(Value::Object(jwk)) = header.jwk else { return Err("dpop_bad_jwk") };
        let (key, thumbprint) = proof_key(&jwk, alg)?;
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| "dpop_malformed")?;
        let signing_input = &proof[..h.len() + 1 + p.len()];
        if !key.verify(signing_input.as_bytes(), &signature) {
            return Err("dpop_bad_signature");
        }
        let raw_claims = URL_SAFE_NO_PAD.decode(p).map_err(|_| "dpop_malformed")?;
        if raw_claims.trim_ascii_start().first() != Some(&b'{') {
            return Err("dpop_malformed");
        }
        let c: ProofClaims = serde_json::from_slice(&raw_claims).map_err(|_| "dpop_malformed")?;
        let jti = match c.jti {
            Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI => j,
            _ => return Err("dpop_bad_jti"),
        };
        if !matches!(&c.htm, Some(Value::String(m)) if m == req.parts.method.as_str()) {
            return Err("dpop_htm_mismatch");
        }
        match &c.htu {
            Some(Value::String(u)) if self.same_url(u, req) => {}
            _ => return Err("dpop_htu_mismatch"),
        }
        let iat = claims::numeric_date(c.iat.as_ref()).map_err(|_| "dpop_bad_iat")?.ok_or("dpop_bad_iat")?;
        if now.saturating_sub(iat) > self.max_age {
            return Err("dpop_proof_too_old");
        }
        if iat.saturating_sub(now) > self.skew {
            return Err("dpop_proof_in_future");
        }
        let ath = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()));
        if !matches!(&c.ath, Some(Value::String(a)) if *a == ath) {
            return Err("dpop_ath_mismatch");
        }
        let nonce = match c.nonce {
            None => None,
            Some(Value::String(n)) => Some(n),
            Some(_) => return Err("dpop_malformed"),
        };
        Ok(Proof { thumbprint, jti, iat, nonce })
    }

    /// `htu` names this request's URL: scheme, host (case-insensitive, default port stripped) and path
    /// (normalised as routing normalises it); query and fragment are not compared.
    fn same_url(&self, htu: &str, req: &AuthRequest<'_>) -> bool {
        let htu = htu.split('#').next().unwrap_or_default();
        let Ok(uri) = http::Uri::try_from(htu) else { return false };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { return false };
        let ours = if req.conn.tls.is_some() { "https" } else { "http" };
        if !scheme.eq_ignore_ascii_case(ours) || authority.as_str().contains('@') {
            return false;
        }
        let default_port = if ours == "https" { 443 } else { 80 };
        let host = req
            .parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.parts.headers.get(http::header::HOST)?.to_str().ok());
        let Some(Ok(host)) = host.map(http::uri::Authority::try_from) else { return false };
        let same_host = |a: &http::uri::Authority, b: &http::uri::Authority| {
            let trim = |h: &'_ str| h.strip_suffix('.').unwrap_or(h).to_owned();
            trim(a.host()).eq_ignore_ascii_case(&trim(b.host()))
                && a.port_u16().unwrap_or(default_port) == b.port_u16().unwrap_or(default_port)
        };
        if !same_host(authority, &host) {
            return false;
        }
        let path = if uri.path().is_empty() { "/" } else { uri.path() };
        match ((self.normalize)(path), (self.normalize)(req.parts.uri.path())) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// Records `(thumbprint, jti)` until `until`, in Redis when shared, or refuses a replay.
    async fn record(&self, thumbprint: &str, jti: &str, until: i64, now: i64) -> Result<(), &'static str> {
        let replayed = |r: super::signature::replay::Refused| match r {
            super::signature::replay::Refused::Replayed => "dpop_replayed",
            super::signature::replay::Refused::Full => "dpop_replay_store_full",
        };
        let Some(shared) = &self.shared else {
            return self.replay.remember(thumbprint, jti, until, now).map_err(replayed);
        };
        shared
            .record(&self.replay, thumbprint, jti, until, now)
            .await
            .map_err(|r| r.map_or(STORE_UNAVAILABLE, replayed))
    }
}

/// `portcullis check` warnings about the `dpop:` sections (authenticator name, section), given whether
/// the `redis:` section makes the gateways a fleet.
pub fn lints<'a>(sections: impl Iterator<Item = (&'a str, &'a DpopConfig)>, fleet: bool) -> Vec<String> {
    sections
        .filter(|(_, c)| fleet && c.nonce && c.nonce_secret.is_none())
        .map(|(name, _)| {
            format!(
                "authenticator `{name}`: DPoP nonces without `dpop.nonce_secret` are issued per node; in a fleet a \
                 client moving to another node is asked for a nonce again"
            )
        })
        .collect()
}

fn alg_name(a: &Algorithm) -> &'static str {
    match a {
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        _ => "unknown",
    }
}

/// The verdict on a verified token: its certificate binding (RFC 8705), then its key binding (DPoP).
/// Without `dpop:` a token bound to a key (`cnf.jkt`) is refused: that binding cannot be enforced.
pub async fn bind(dpop: Option<&Dpop>, v: Verified, req: &AuthRequest<'_>, token: &str, scheme: Scheme) -> Verdict {
    if !claims::binding_holds(v.x5t.as_deref(), req.conn) {
        return Verdict::Invalid("certificate_mismatch");
    }
    let Some(dpop) = dpop else {
        return match v.jkt {
            Some(_) => Verdict::Invalid("unsupported_cnf"),
            None => Verdict::Valid(v.principal),
        };
    };
    match dpop.check(req, token, scheme, v.jkt.as_deref()).await {
        Ok(()) => Verdict::Valid(v.principal),
        Err(STORE_UNAVAILABLE) => Verdict::Unavailable(STORE_UNAVAILABLE),
        Err(reason) => Verdict::Invalid(reason),
    }
}

#[cfg(test)]
mod tests;
