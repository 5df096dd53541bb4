//! OAuth 2.0 token introspection (RFC 7662) for opaque access tokens.
//!
//! The gateway asks the configured endpoint about each token it has not seen recently, authenticating
//! as a client (`basic`: HTTP Basic, RFC 6749 §2.3.1, or `post`: credentials in the form body). Only
//! `"active": true` passes; `active: false`, an error status, a malformed answer, a timeout or an
//! unreachable endpoint are 401, never a pass. Active answers are cached by a keyed hash of the token until
//! the earlier of their `exp` and `cache_ttl`; inactive ones for `negative_cache_ttl`. The RFC 8705
//! certificate binding (`cnf.x5t#S256`) is checked on every request, cached or not. At most
//! `max_concurrent` introspection calls are in flight, so a flood of made-up tokens cannot turn into a
//! flood on the identity provider; inactive answers are cached apart from active ones (a flood of them
//! never evicts an active answer), and each client address has a small budget of calls about tokens in
//! neither cache ([`budget`]), beyond which its requests get 429 without a call.

pub mod budget;

use super::jwt::cache::{self, TokenCache};
use super::jwt::claims::{self, Claims, Mapping, Presented, Verified};
use super::jwt::{bearer_challenge, check_token_source, unix_now};
use super::{AuthRequest, PrincipalKind, Verdict};
use crate::client::{form_encode, Client, Url};
use crate::secret::Secret;
use crate::units::{Bytes, Dur};
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default)]
    pub auth_method: ClientAuth,
    #[serde(default = "default_ttl")]
    pub cache_ttl: Dur,
    #[serde(default = "default_negative_ttl")]
    pub negative_cache_ttl: Dur,
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Inactive answers kept, apart from the active ones (0 turns this cache off).
    #[serde(default = "default_cache_size")]
    pub negative_cache_size: usize,
    /// Introspections of tokens not in either cache, in flight at once per client address (per /64 for
    /// IPv6); more are refused with 429 without asking the endpoint.
    #[serde(default = "default_per_ip_concurrent")]
    pub per_ip_concurrent: u32,
    /// Introspections of tokens not in either cache started per client address per minute.
    #[serde(default = "default_per_ip_per_minute")]
    pub per_ip_per_minute: u32,
    /// PEM file of the CAs trusted for the endpoint (instead of the system trust store).
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_concurrency")]
    pub max_concurrent: usize,
    /// When set, the answer's `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// When set, the answer's `iss` must be exactly this.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub roles_claim: Option<String>,
    #[serde(default)]
    pub tenant_claim: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default = "default_max_token")]
    pub max_token_bytes: Bytes,
    /// Send the accepted token upstream (off: it is removed, like every other credential).
    #[serde(default)]
    pub forward_credential: bool,
    /// DPoP (RFC 9449): `required`, `optional` or the long form (see [`super::dpop`]).
    #[serde(default)]
    pub dpop: Option<super::dpop::DpopConfig>,
}

/// How the gateway authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Basic,
    Post,
}

fn default_ttl() -> Dur {
    Dur::secs(60)
}
fn default_negative_ttl() -> Dur {
    Dur::secs(5)
}
fn default_cache_size() -> usize {
    10_000
}
fn default_per_ip_concurrent() -> u32 {
    4
}
fn default_per_ip_per_minute() -> u32 {
    120
}
fn default_timeout() -> Dur {
    Dur::secs(5)
}
fn default_concurrency() -> usize {
    32
}
fn default_max_token() -> Bytes {
    Bytes(8 * 1024)
}

/// Bound of an introspection answer.
const MAX_ANSWER: usize = 64 * 1024;

pub struct IntrospectionAuth {
    pub forward_credential: bool,
    inner: Box<Inner>,
    /// DPoP proofs, when `dpop:` is configured.
    pub dpop: Option<super::dpop::Dpop>,
}

struct Inner {
    name: String,
    endpoint: Url,
    client: Client,
    /// `Authorization: Basic ...` for `basic`, nothing for `post`.
    authorization: Option<HeaderValue>,
    /// `&client_id=...&client_secret=...` for `post`.
    form_credentials: String,
    ttl: i64,
    negative_ttl: i64,
    timeout: std::time::Duration,
    /// Active answers.
    cache: TokenCache<Verified>,
    /// Inactive answers, kept apart so a flood of made-up tokens can never evict an active one.
    negative: TokenCache<()>,
    permits: tokio::sync::Semaphore,
    /// Per client address: introspections of tokens in neither cache.
    budget: budget::Budget,
    audiences: Vec<String>,
    issuer: Option<String>,
    mapping: Mapping,
    cookie: Option<String>,
    max_token: usize,
}

impl IntrospectionAuth {
    pub fn new(name: &str, c: &IntrospectionConfig) -> Result<IntrospectionAuth, String> {
        let endpoint = Url::parse(&c.endpoint).map_err(|e| format!("endpoint: {e}"))?;
        if c.client_id.is_empty() {
            return Err("introspection needs a client_id".into());
        }
        if c.max_concurrent == 0 || c.timeout.0.is_zero() {
            return Err("max_concurrent and timeout must be positive".into());
        }
        if c.per_ip_concurrent == 0 || c.per_ip_per_minute == 0 {
            return Err("per_ip_concurrent and per_ip_per_minute must be positive".into());
        }
        let max_token = check_token_source(c.cookie.as_deref(), c.max_token_bytes)?;
        if c.dpop.is_some() && c.cookie.is_some() {
            return Err("dpop needs the token in `Authorization: DPoP`, not in a cookie".into());
        }
        let (authorization, form_credentials) = match c.auth_method {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: each part form-encoded before Basic encoding.
                let pair = format!("{}:{}", form_encode(&c.client_id), form_encode(c.client_secret.expose()));
                let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
                let mut header = HeaderValue::from_str(&value).map_err(|_| "client credentials are not encodable")?;
                header.set_sensitive(true);
                (Some(header), String::new())
            }
            ClientAuth::Post => (
                None,
                format!(
                    "&client_id={}&client_secret={}",
                    form_encode(&c.client_id),
                    form_encode(c.client_secret.expose())
                ),
            ),
        };
        Ok(IntrospectionAuth {
            forward_credential: c.forward_credential,
            inner: Box::new(Inner {
                name: name.to_owned(),
                client: Client::new(c.ca.as_deref(), endpoint.https, c.timeout.0, MAX_ANSWER)?,
                endpoint,
                authorization,
                form_credentials,
                ttl: c.cache_ttl.0.as_secs() as i64,
                negative_ttl: c.negative_cache_ttl.0.as_secs() as i64,
                timeout: c.timeout.0,
                cache: TokenCache::new(c.cache_size),
                negative: TokenCache::new(c.negative_cache_size),
                permits: tokio::sync::Semaphore::new(c.max_concurrent),
                budget: budget::Budget::new(c.per_ip_concurrent, c.per_ip_per_minute),
                audiences: c.audiences.clone(),
                issuer: c.issuer.clone(),
                mapping: Mapping { roles_claim: c.roles_claim.clone(), tenant_claim: c.tenant_claim.clone() },
                cookie: c.cookie.clone(),
                max_token,
            }),
            dpop: None,
        })
    }

    /// Checks DPoP proofs (and honours `cnf.jkt`) with this compiled `dpop:` section.
    pub fn with_dpop(mut self, dpop: Option<super::dpop::Dpop>) -> IntrospectionAuth {
        self.dpop = dpop;
        self
    }

    pub async fn check(&self, req: &AuthRequest<'_>) -> Verdict {
        self.inner.check(req, self.dpop.as_ref()).await
    }

    /// The challenge; `reason` is this method's refusal, when it refused.
    pub fn challenge(&self, reason: Option<&str>) -> String {
        match &self.dpop {
            Some(d) => d.challenge(reason),
            None => bearer_challenge(reason.is_some()),
        }
    }

    pub fn start(&self) {}

    /// The cookie tokens are read from, when configured.
    pub fn cookie(&self) -> Option<&str> {
        self.inner.cookie.as_deref()
    }
}

impl Inner {
    async fn check(&self, req: &AuthRequest<'_>, dpop: Option<&super::dpop::Dpop>) -> Verdict {
        let (token, scheme) = match super::dpop::presented(req.parts, self.cookie.as_deref(), dpop.is_some()) {
            (Presented::Absent, _) => return Verdict::Absent,
            (Presented::Malformed, _) => return Verdict::Invalid("malformed_token"),
            (Presented::Token(t), scheme) => (t, scheme),
        };
        if token.len() > self.max_token {
            return Verdict::Invalid("token_too_large");
        }
        let now = unix_now();
        let digest = cache::digest(token);
        match self.lookup(&digest, now) {
            Some(Some(v)) => return super::dpop::bind(dpop, v, req, token, scheme).await,
            Some(None) => return Verdict::Invalid("inactive_token"),
            None => {}
        }
        // A token in neither cache costs a call to the endpoint: bounded per client address, so one
        // client cannot take the endpoint's permits (or its answers fill the caches) for everyone.
        let Some(_ticket) = self.budget.take(req.client_ip, now) else {
            return Verdict::Busy("introspection_budget");
        };
        // Boxed: the HTTP exchange is a large future that cache hits should not carry.
        let answer = Box::pin(self.introspect(token, now)).await;
        match answer {
            Ok(answer) => {
                let verified = answer.as_ref().map(|(v, _)| v.clone());
                self.remember(digest, answer, now);
                match verified {
                    Some(v) => super::dpop::bind(dpop, v, req, token, scheme).await,
                    None => Verdict::Invalid("inactive_token"),
                }
            }
            // Not cached: the next request asks again.
            Err(reason) => Verdict::Invalid(reason),
        }
    }

    /// A cached answer: `Some(None)` for an inactive token.
    fn lookup(&self, digest: &cache::Digest, now: i64) -> Option<Option<Verified>> {
        if let Some(v) = self.cache.get(digest, now) {
            return Some(Some(v));
        }
        self.negative.get(digest, now).map(|()| None)
    }

    /// Caches an answer: an active one until its end, an inactive one for `negative_cache_ttl`, each in
    /// its own bounded cache.
    fn remember(&self, digest: cache::Digest, answer: Option<(Verified, i64)>, now: i64) {
        match answer {
            Some((v, until)) => self.cache.insert(digest, v, until, now),
            None => self.negative.insert(digest, (), now.saturating_add(self.negative_ttl), now),
        }
    }

    /// Asks the endpoint. `Ok(None)`: the token is not active (or not acceptable to us).
    async fn introspect(&self, token: &str, now: i64) -> Result<Option<(Verified, i64)>, &'static str> {
        // Waiting for a free slot counts against the same bound as the call itself.
        let Ok(Ok(_permit)) = tokio::time::timeout(self.timeout, self.permits.acquire()).await else {
            tracing::warn!(authenticator = self.name.as_str(), "token introspection: too many calls in flight");
            return Err("introspection_unavailable");
        };
        let mut headers = HeaderMap::new();
        if let Some(a) = &self.authorization {
            headers.insert(AUTHORIZATION, a.clone());
        }
        let form = format!("token={}&token_type_hint=access_token{}", form_encode(token), self.form_credentials);
        let resp = match self.client.post_form(&self.endpoint, headers, form).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(authenticator = self.name.as_str(), endpoint = %self.endpoint.redacted(), error = %e, "token introspection failed");
                return Err("introspection_unavailable");
            }
        };
        if !resp.status.is_success() {
            tracing::warn!(authenticator = self.name.as_str(), endpoint = %self.endpoint.redacted(), status = resp.status.as_u16(), "token introspection refused");
            return Err("introspection_unavailable");
        }
        let Ok(answer) = serde_json::from_slice::<Claims>(&resp.body) else {
            tracing::warn!(authenticator = self.name.as_str(), "token introspection answer is not a JSON object");
            return Err("introspection_unavailable");
        };
        self.accept(answer, now)
    }

    /// Reads an introspection answer.
    fn accept(&self, answer: Claims, now: i64) -> Result<Option<(Verified, i64)>, &'static str> {
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        let exp = claims::numeric_date(answer.get("exp")).map_err(|_| "malformed_introspection")?;
        if exp.is_some_and(|exp| now >= exp) {
            return Ok(None);
        }
        if let Some(iss) = &self.issuer {
            if answer.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err("wrong_issuer");
            }
        }
        if !self.audiences.is_empty() {
            let auds = claims::strings(answer.get("aud"));
            if !auds.iter().any(|a| self.audiences.contains(a)) {
                return Err("wrong_audience");
            }
        }
        let (x5t, jkt) = claims::cnf(&answer)?;
        let principal = self.mapping.principal(PrincipalKind::Introspection, answer)?;
        let mut until = now.saturating_add(self.ttl);
        if let Some(exp) = exp {
            until = until.min(exp);
        }
        Ok(Some((Verified { principal: Arc::new(principal), x5t, jkt }, until)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth(extra: &str) -> Inner {
        let yaml = format!("endpoint: http://127.0.0.1:9/introspect\nclient_id: gw\nclient_secret: s3cret\n{extra}");
        let cfg: IntrospectionConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        *IntrospectionAuth::new("t", &cfg).unwrap().inner
    }

    fn obj(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reads_answers() {
        let a = auth("audiences: [api]\nissuer: https://idp\n");
        let now = 1000;
        assert!(matches!(a.accept(obj(json!({"active": false})), now), Ok(None)));
        assert!(matches!(a.accept(obj(json!({"active": "true"})), now), Ok(None)), "only the boolean true");
        let ok = json!({"active": true, "client_id": "app", "exp": 1030, "aud": ["api"], "iss": "https://idp", "scope": "a b"});
        let (v, until) = a.accept(obj(ok.clone()), now).unwrap().unwrap();
        assert_eq!((v.principal.id.as_str(), until), ("app", 1030), "cached until exp when sooner than the TTL");
        assert_eq!(v.principal.scopes, ["a", "b"]);
        let mut late = obj(ok.clone());
        late.insert("exp".into(), json!(999_999));
        assert_eq!(a.accept(late, now).unwrap().unwrap().1, 1060, "never past the TTL");
        let mut expired = obj(ok.clone());
        expired.insert("exp".into(), json!(1000));
        assert!(matches!(a.accept(expired, now), Ok(None)));
        let mut aud = obj(ok.clone());
        aud.insert("aud".into(), json!("other"));
        assert_eq!(a.accept(aud, now).unwrap_err(), "wrong_audience");
        let mut iss = obj(ok);
        iss.insert("iss".into(), json!("https://evil"));
        assert_eq!(a.accept(iss, now).unwrap_err(), "wrong_issuer");
    }

    /// A flood of made-up tokens (each an inactive answer) never evicts an active answer: the two are
    /// cached apart, and the inactive ones stay within their own bound.
    #[test]
    fn inactive_answers_never_evict_active_ones() {
        let a = auth("cache_size: 1024\nnegative_cache_size: 64\n");
        let now = 1000;
        let active = a.accept(obj(json!({"active": true, "sub": "alice"})), now).unwrap().unwrap();
        let good: Vec<_> = (0..32).map(|i| cache::digest(&format!("good-{i}"))).collect();
        for d in &good {
            a.remember(*d, Some(active.clone()), now);
        }
        for i in 0..50_000 {
            a.remember(cache::digest(&format!("made-up-{i}")), None, now);
        }
        for d in &good {
            assert!(
                matches!(a.lookup(d, now + 1), Some(Some(v)) if v.principal.id == "alice"),
                "an active answer evicted"
            );
        }
        assert!(a.negative.len() <= 64, "inactive answers bounded: {}", a.negative.len());
        assert_eq!(a.cache.len(), 32);
        let last = cache::digest("made-up-49999");
        assert!(matches!(a.lookup(&last, now + 1), Some(None)), "the latest inactive answer is kept");
        assert!(a.lookup(&last, now + 5).is_none(), "for negative_cache_ttl only");
    }

    #[test]
    fn config_checks() {
        let bad = |y: &str| {
            let cfg: IntrospectionConfig = serde_yaml_ng::from_str(y).unwrap();
            IntrospectionAuth::new("t", &cfg).is_err()
        };
        assert!(bad("endpoint: http://idp.example.com/i\nclient_id: gw\nclient_secret: s"));
        assert!(bad("endpoint: https://idp.example.com/i\nclient_id: gw\nclient_secret: s\ncookie: 'a b'"));
        let y = "endpoint: http://127.0.0.1/i\nclient_id: gw\nclient_secret: s\nauth_method: digest";
        assert!(serde_yaml_ng::from_str::<IntrospectionConfig>(y).is_err());
    }
}
