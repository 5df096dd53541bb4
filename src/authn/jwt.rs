//! JWT bearer tokens (RFC 7519, RFC 8725 best practices, RFC 9068 access tokens).
//!
//! Per issuer, the accepted algorithms are pinned in the config and the token's `alg` only selects
//! among them: `none` never passes, an HS* key is only ever the configured `hmac_secret`, and keys come
//! only from the configuration (`jwks_file`, `jwks_uri` or OpenID Connect discovery), never from the
//! token's `jku`, `x5u`, `jwk` or `x5c`. Claims: `iss` exact, `aud` containing a configured audience,
//! `exp` required, `nbf` / `iat` with bounded leeway, optional maximum age and required claims.
//!
//! Verified tokens are cached by a keyed hash of the token (bounded, never past `exp`), so the hot path is a
//! hash and a map lookup; the RFC 8705 certificate binding (`cnf.x5t#S256`) is still checked on every
//! request, since the same token may arrive over another connection.
//!
//! Tokens and secrets are never logged; a refusal's reason code goes to logs and metrics only.

pub mod cache;
pub mod claims;
pub mod jwks;
pub mod lifetime;
pub mod revoked;
pub mod token;

use super::{AuthRequest, PrincipalKind, Verdict};
use crate::client::{Client, Url};
use crate::observe::metrics::Metrics;
use crate::secret::Secret;
use crate::units::{Bytes, Dur};
use claims::{Mapping, Presented, Verified};
use jsonwebtoken::Algorithm;
use jwks::{Jwks, Key, Outcome, Source, Timing};
use serde::{de, Deserialize, Deserializer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The exact `iss` of accepted tokens (and the discovery base URL with `discovery: true`).
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// The accepted algorithms; a token's `alg` must be one of them and fit its key.
    pub algorithms: Vec<Alg>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// Find `jwks_uri` from `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// The shared secret for HS256/384/512 (at least as long as the hash: 32, 48 or 64 bytes).
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    /// PEM file of the CAs trusted for fetching keys (instead of the system trust store).
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    #[serde(default)]
    pub max_token_age: Option<Dur>,
    /// Refuse tokens minted to live longer than this (`exp - iat`), e.g. `1h`.
    #[serde(default)]
    pub max_lifetime: Option<Dur>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Dotted path of the roles claim, e.g. `realm_access.roles`.
    #[serde(default)]
    pub roles_claim: Option<String>,
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Read the token from this cookie instead of `Authorization: Bearer`.
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default = "default_max_token")]
    pub max_token_bytes: Bytes,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_interval: Dur,
    #[serde(default = "default_unknown_kid")]
    pub unknown_kid_refresh_interval: Dur,
    #[serde(default = "default_max_stale")]
    pub max_stale: Dur,
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: Dur,
    /// Send the accepted token upstream (off: it is removed, like every other credential).
    #[serde(default)]
    pub forward_credential: bool,
    /// DPoP (RFC 9449): `required`, `optional` or the long form (see [`super::dpop`]).
    #[serde(default)]
    pub dpop: Option<super::dpop::DpopConfig>,
}

/// A pinned algorithm, checked while the file is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alg(pub Algorithm);

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        token::algorithm(&name).map(Alg).ok_or_else(|| {
            de::Error::custom(format!(
                "`{name}` is not an accepted algorithm; use RS256/384/512, PS256/384/512, ES256/384, EdDSA or HS256/384/512"
            ))
        })
    }
}

fn default_leeway() -> Dur {
    Dur::secs(30)
}
fn default_max_token() -> Bytes {
    Bytes(8 * 1024)
}
fn default_refresh() -> Dur {
    Dur::secs(300)
}
fn default_unknown_kid() -> Dur {
    Dur::secs(30)
}
fn default_max_stale() -> Dur {
    Dur::secs(24 * 3600)
}
fn default_cache_size() -> usize {
    10_000
}
fn default_fetch_timeout() -> Dur {
    Dur::secs(5)
}

const MAX_LEEWAY: Duration = Duration::from_secs(300);

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Checks shared by JWT and introspection: the token's source and its size.
pub fn check_token_source(cookie: Option<&str>, max_token_bytes: Bytes) -> Result<usize, String> {
    if let Some(c) = cookie {
        if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            return Err(format!("cookie `{c}` is not a valid cookie name"));
        }
    }
    match max_token_bytes.0 {
        n @ 64..=1_048_576 => Ok(n as usize),
        _ => Err("max_token_bytes must be between 64 and 1MiB".into()),
    }
}

/// The token a request presents, from the configured cookie or `Authorization: Bearer`.
pub fn presented<'a>(parts: &'a http::request::Parts, cookie: Option<&str>) -> Presented<'a> {
    match cookie {
        Some(name) => claims::cookie(parts, name),
        None => claims::bearer(parts),
    }
}

/// RFC 6750 §3 challenge.
pub fn bearer_challenge(invalid: bool) -> String {
    if invalid {
        "Bearer realm=\"portcullis\", error=\"invalid_token\"".into()
    } else {
        "Bearer realm=\"portcullis\"".into()
    }
}

/// Refuses a certificate-bound token presented without that certificate. (The methods go through
/// [`super::dpop::bind`], which also holds a key-bound token to its DPoP proof.)
pub fn bind(v: Verified, req: &AuthRequest<'_>) -> Verdict {
    if claims::binding_holds(v.x5t.as_deref(), req.conn) {
        Verdict::Valid(v.principal)
    } else {
        Verdict::Invalid("certificate_mismatch")
    }
}

struct Inner {
    jwks: Jwks,
    pinned: Vec<Algorithm>,
    rules: token::Rules,
    mapping: Mapping,
    cookie: Option<String>,
    max_token: usize,
    /// Verified tokens with the key generation they were verified under.
    cache: cache::TokenCache<(Verified, u64)>,
    /// `max_lifetime` in seconds.
    max_lifetime: Option<i64>,
}

pub struct JwtAuth {
    pub forward_credential: bool,
    inner: Arc<Inner>,
    started: AtomicBool,
    /// DPoP proofs, when `dpop:` is configured ([`JwtAuth::with_dpop`]).
    pub dpop: Option<super::dpop::Dpop>,
    /// The node's revoked token ids (with `store:` or `redis:`).
    revoked: Option<Arc<revoked::Revoked>>,
}

fn key_source(c: &JwtConfig) -> Result<Source, String> {
    let issuer_url = || Url::parse(&c.issuer).map_err(|e| format!("discovery needs the issuer as a URL: {e}"));
    match (&c.jwks_uri, &c.jwks_file, c.discovery) {
        (None, None, false) => Ok(Source::None),
        (Some(u), None, false) => Ok(Source::Uri(Url::parse(u).map_err(|e| format!("jwks_uri: {e}"))?)),
        (None, Some(f), false) => Ok(Source::File(f.clone())),
        (None, None, true) => {
            let base = issuer_url()?;
            let path = format!("{}/.well-known/openid-configuration", base.path().trim_end_matches('/'));
            Ok(Source::Discovery(base.with_path(&path)))
        }
        _ => Err("use one of jwks_uri, jwks_file or discovery: true".into()),
    }
}

impl JwtAuth {
    pub fn new(name: &str, c: &JwtConfig) -> Result<JwtAuth, String> {
        Self::with_metrics(name, c, None)
    }

    /// As [`JwtAuth::new`], counting key refreshes in `metrics` (`portcullis_jwks_refreshes_total`).
    pub fn with_metrics(name: &str, c: &JwtConfig, metrics: Option<&Metrics>) -> Result<JwtAuth, String> {
        if c.issuer.is_empty() || c.audiences.is_empty() || c.audiences.iter().any(String::is_empty) {
            return Err("jwt needs an `issuer` and at least one non-empty audience in `audiences`".into());
        }
        let pinned: Vec<Algorithm> = c.algorithms.iter().map(|a| a.0).collect();
        if pinned.is_empty() {
            return Err("jwt needs `algorithms`: the algorithms this issuer signs with".into());
        }
        if c.leeway.0 > MAX_LEEWAY {
            return Err("leeway is at most 5m".into());
        }
        let source = key_source(c)?;
        let hs: Vec<usize> = pinned.iter().filter_map(|a| jwks::hs_len(*a)).collect();
        let secret = match (&c.hmac_secret, hs.iter().max()) {
            (Some(s), Some(&need)) if s.expose().len() >= need => Some(Key::secret(s.expose().as_bytes(), &pinned)),
            (Some(_), Some(need)) => {
                return Err(format!("hmac_secret must be at least {need} bytes for the pinned HS algorithms"))
            }
            (Some(_), None) => return Err("hmac_secret is set but no HS256/384/512 algorithm is pinned".into()),
            (None, Some(_)) => {
                return Err("HS256/384/512 need `hmac_secret`; keys from a JWKS are never HMAC keys".into())
            }
            (None, None) => None,
        };
        let asymmetric = pinned.iter().any(|a| jwks::hs_len(*a).is_none());
        if asymmetric == matches!(source, Source::None) {
            return Err(if asymmetric {
                "public-key algorithms need jwks_uri, jwks_file or discovery: true".into()
            } else {
                "a key source is set but only HS algorithms are pinned".into()
            });
        }
        let t = Timing {
            refresh: c.jwks_refresh_interval.0,
            unknown_kid: c.unknown_kid_refresh_interval.0,
            max_stale: c.max_stale.0,
        };
        if t.refresh.is_zero() || t.unknown_kid.is_zero() || t.max_stale < t.refresh {
            return Err("jwks_refresh_interval and unknown_kid_refresh_interval must be positive, and max_stale at least jwks_refresh_interval".into());
        }
        let max_token = check_token_source(c.cookie.as_deref(), c.max_token_bytes)?;
        let client = match &source {
            Source::Uri(u) | Source::Discovery(u) => {
                Some(Client::new(c.ca.as_deref(), u.https, c.fetch_timeout.0, jwks::MAX_DOCUMENT)?)
            }
            Source::None | Source::File(_) => None,
        };
        let refreshed = metrics.map(|m| m.jwks_refreshes(name)).unwrap_or_default();
        let jwks = Jwks::new(name, &c.issuer, source, pinned.clone(), secret, client, t, refreshed)?;
        let rules = token::Rules {
            issuer: c.issuer.clone(),
            audiences: c.audiences.clone(),
            leeway: c.leeway.0.as_secs() as i64,
            max_age: c.max_token_age.map(|d| d.0.as_secs() as i64),
            required: c.required_claims.clone(),
        };
        let mapping = Mapping { roles_claim: c.roles_claim.clone(), tenant_claim: c.tenant_claim.clone() };
        let max_lifetime = match c.max_lifetime {
            Some(d) if d.0.as_secs() == 0 => return Err("max_lifetime must be at least 1s".into()),
            d => d.map(|d| d.0.as_secs().min(i64::MAX as u64) as i64),
        };
        let inner = Inner {
            jwks,
            pinned,
            rules,
            mapping,
            cookie: c.cookie.clone(),
            max_token,
            cache: cache::TokenCache::new(c.cache_size),
            max_lifetime,
        };
        if c.dpop.is_some() && c.cookie.is_some() {
            return Err("dpop needs the token in `Authorization: DPoP`, not in a cookie".into());
        }
        Ok(JwtAuth {
            forward_credential: c.forward_credential,
            inner: Arc::new(inner),
            started: AtomicBool::new(false),
            dpop: None,
            revoked: None,
        })
    }

    /// Checks DPoP proofs (and honours `cnf.jkt`) with this compiled `dpop:` section.
    pub fn with_dpop(mut self, dpop: Option<super::dpop::Dpop>) -> JwtAuth {
        self.dpop = dpop;
        self
    }

    /// Refuses tokens whose `jti` is on this deny list (checked after the cache, on every request).
    pub fn revocations(mut self, list: Option<Arc<revoked::Revoked>>) -> JwtAuth {
        self.revoked = list;
        self
    }

    /// The last checks of a verified (or cached) token: not revoked, and bound as it says (to the
    /// client certificate, or to the DPoP proof's key).
    async fn admit(
        &self,
        v: Verified,
        req: &AuthRequest<'_>,
        token: &str,
        scheme: super::dpop::Scheme,
        now: i64,
    ) -> Verdict {
        if let Some(list) = &self.revoked {
            if list.principal_revoked(&self.inner.rules.issuer, &v.principal, now) {
                return Verdict::Invalid("revoked");
            }
        }
        super::dpop::bind(self.dpop.as_ref(), v, req, token, scheme).await
    }

    pub async fn check(&self, req: &AuthRequest<'_>) -> Verdict {
        let inner = &*self.inner;
        let dpop = self.dpop.as_ref();
        let (token, scheme) = match super::dpop::presented(req.parts, inner.cookie.as_deref(), dpop.is_some()) {
            (Presented::Absent, _) => return Verdict::Absent,
            (Presented::Malformed, _) => return Verdict::Invalid("malformed_token"),
            (Presented::Token(t), scheme) => (t, scheme),
        };
        if token.len() > inner.max_token {
            return Verdict::Invalid("token_too_large");
        }
        if !token.contains('.') {
            // An opaque token: another method's (introspection) credential, not a JWT.
            return Verdict::Absent;
        }
        let now = unix_now();
        let digest = cache::digest(token);
        let generation = inner.jwks.generation();
        if let Some((v, g)) = inner.cache.get(&digest, now) {
            if g == generation {
                return self.admit(v, req, token, scheme, now).await;
            }
        }
        match inner.verify(token, now).await {
            Ok((v, until)) => {
                inner.cache.insert(digest, (v.clone(), generation), until, now);
                self.admit(v, req, token, scheme, now).await
            }
            Err(reason) => Verdict::Invalid(reason),
        }
    }

    /// The challenge; `reason` is this method's refusal, when it refused.
    pub fn challenge(&self, reason: Option<&str>) -> String {
        match &self.dpop {
            Some(d) => d.challenge(reason),
            None => bearer_challenge(reason.is_some()),
        }
    }

    /// Starts the background key refresh (once, however many reloads reuse this authenticator). The
    /// task holds only a weak reference and ends when the authenticator is dropped.
    pub fn start(&self) {
        if let Some(list) = &self.revoked {
            list.start();
        }
        if !self.inner.jwks.refreshes() || self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let wait = inner.jwks.refresh_scheduled().await;
                drop(inner);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// The cookie tokens are read from, when configured.
    pub fn cookie(&self) -> Option<&str> {
        self.inner.cookie.as_deref()
    }

    /// Number of cached verified tokens (for tests and metrics).
    pub fn cached_tokens(&self) -> usize {
        self.inner.cache.len()
    }
}

impl Inner {
    /// The full check of an uncached token; returns the verified principal and its cache end time.
    async fn verify(&self, token: &str, now: i64) -> Result<(Verified, i64), &'static str> {
        // The claims are read before the header and the signature are checked, but only to see whose
        // token this is: a token of another issuer (one of several on an `any_of` route) is refused here,
        // before its `alg` is held against this issuer's pins and without a key lookup, so it can never
        // trigger this issuer's refresh on an unknown `kid`. Nothing in them counts until the signature
        // is verified.
        let payload = token.split('.').nth(1).ok_or("malformed_token")?;
        let claims = token::claims(payload)?;
        if !self.rules.is_issuer(&claims) {
            return Err(super::NOT_MINE);
        }
        let jws = token::parse(token, &self.pinned)?;
        let secret = self.jwks.secret.as_ref();
        let mut outcome = self.jwks.current().verify(&jws, secret);
        if outcome == Outcome::UnknownKey {
            // Boxed: the fetch is a large future, and it would otherwise be carried (and copied) by every
            // request's future although almost none gets here.
            let keys = Box::pin(self.jwks.refresh_on_miss()).await;
            outcome = match keys.verify(&jws, secret) {
                Outcome::UnknownKey if keys.stale() => Outcome::Refused("keys_stale"),
                other => other,
            };
        }
        match outcome {
            Outcome::Valid => {}
            Outcome::UnknownKey => return Err("unknown_kid"),
            Outcome::Refused(reason) => return Err(reason),
        }
        let until = self.rules.check(&claims, now)?;
        if let Some(max) = self.max_lifetime {
            lifetime::check(&claims, max)?;
        }
        let (x5t, jkt) = claims::cnf(&claims)?;
        let principal = self.mapping.principal(PrincipalKind::Jwt, claims)?;
        Ok((Verified { principal: Arc::new(principal), x5t, jkt }, until))
    }
}
