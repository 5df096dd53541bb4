//! Response protection (places 15-17): security headers on every answer, upstream error scrubbing,
//! JSON routes that stay JSON, and data-loss masking of JSON answers.
//!
//! The `respond:` section exists at the top level (the defaults of every route) and on a route (which
//! overrides them key by key; `security_headers` header by header). It compiles into one [`Protect`]
//! per route. A route whose answers need no reading ([`Protect::needs_body`] false: no masking, the
//! default) streams the upstream's answer as before and pays for a few header lookups only.
//!
//! Decisions (README, "Response protection"):
//! - Security headers are added when the answer lacks them; an upstream's own value is kept (it knows
//!   its content, an HTML page of docs for one) unless `replace_upstream: true`. `X-Content-Type-Options`
//!   has one value and is always set. `Cache-Control: no-store` goes only on answers to authenticated
//!   requests that carry no `Cache-Control` of their own: an upstream that says how its answer may be
//!   cached has decided; one that says nothing would leave it to caches' heuristics.
//! - `scrub_errors` (on by default): a 5xx answer of the upstream is replaced by a problem document of
//!   the same status (`upstream-error`); only its `Retry-After` is kept. Its body is never read.
//! - `json: true`: an answer that is not `application/json` or `application/*+json` (problem+json is
//!   JSON) is replaced by 502 `bad-gateway`, logged. Answers without a body (204, 304, a length of 0)
//!   pass; a redirect (3xx with `Location`) keeps its head and loses a body that is not JSON.
//! - `mask`: the answer is read whole within `max_body_bytes` and the route's response timeout;
//!   over the bound it is refused (502), never released unmasked. Masked routes ask the upstream for
//!   `identity` (no `Accept-Encoding`, no `Range`); a compressed or partial answer is refused (502).
//!   A masked answer gets a new `Content-Length` and loses `ETag`, `Content-MD5` and digests.
//!   Non-JSON answers are not masked (pair `mask` with `json: true`).

use super::json_mask::JsonMask;
use super::mask::Kinds;
use crate::body::ResponseBody;
use crate::exchange::{Exchange, Place, Reject};
use crate::units::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The `respond:` section, at the top level and on routes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    #[serde(default)]
    pub security_headers: Option<SecurityHeadersConfig>,
    /// Replace the upstream's 5xx answers with a problem document (default true).
    #[serde(default)]
    pub scrub_errors: Option<bool>,
    /// The route answers JSON: anything else from the upstream becomes 502 (default false).
    #[serde(default)]
    pub json: Option<bool>,
    /// Data-loss masking of JSON answers (off by default); a route's `mask` replaces the default's.
    #[serde(default)]
    pub mask: Option<MaskConfig>,
    /// The most of an answer read whole to rewrite it (default 2MiB); more is refused with 502.
    #[serde(default)]
    pub max_body_bytes: Option<Bytes>,
}

/// `security_headers:` each one a value, `null` or `false` (not added), `true` (the default value),
/// or left out (inherited: a route's from the top level, the top level's the default).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    #[serde(default)]
    pub x_content_type_options: Setting,
    #[serde(default)]
    pub content_security_policy: Setting,
    #[serde(default)]
    pub referrer_policy: Setting,
    /// On answers to authenticated requests that carry no `Cache-Control` of their own.
    #[serde(default)]
    pub cache_control: Setting,
    /// The values replace the upstream's own (default: an upstream's own value is kept).
    #[serde(default)]
    pub replace_upstream: Option<bool>,
}

/// One security header's setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Setting {
    #[default]
    Inherit,
    Default,
    Off,
    Value(String),
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Setting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value, null or false (not sent), or true (the default value)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Setting, E> {
                Ok(Setting::Value(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Setting, E> {
                Ok(if v { Setting::Default } else { Setting::Off })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Setting, E> {
                Ok(Setting::Off)
            }
            fn visit_none<E: de::Error>(self) -> Result<Setting, E> {
                Ok(Setting::Off)
            }
        }
        d.deserialize_any(V)
    }
}

/// `mask:` which kinds of data are masked in JSON answers, and where they may stay.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    #[serde(default)]
    pub cards: bool,
    #[serde(default)]
    pub ssn: bool,
    #[serde(default)]
    pub iban: bool,
    #[serde(default)]
    pub private_keys: bool,
    #[serde(default)]
    pub cloud_keys: bool,
    /// JSON pointers (`*` for any one segment) whose values, and all under them, are never masked.
    #[serde(default)]
    pub allow: Vec<String>,
}

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const CSP: HeaderValue = HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'");
const NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const DEFAULT_MAX_BODY: u64 = 2 * 1024 * 1024;

/// The security headers of a route (or of answers without one), values built at load: adding them
/// to an answer clones shared values and allocates nothing.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    nosniff: Option<HeaderValue>,
    csp: Option<HeaderValue>,
    referrer: Option<HeaderValue>,
    cache_control: Option<HeaderValue>,
    replace: bool,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        SecurityHeaders {
            nosniff: Some(NOSNIFF),
            csp: Some(CSP),
            referrer: Some(NO_REFERRER),
            cache_control: Some(NO_STORE),
            replace: false,
        }
    }
}

impl SecurityHeaders {
    /// These headers with a section's settings on top.
    fn with(&self, c: &SecurityHeadersConfig) -> Result<SecurityHeaders, String> {
        let pick = |s: &Setting, current: &Option<HeaderValue>, default: HeaderValue, name: &str| match s {
            Setting::Inherit => Ok(current.clone()),
            Setting::Default => Ok(Some(default)),
            Setting::Off => Ok(None),
            Setting::Value(v) if v.trim().is_empty() => {
                Err(format!("security_headers.{name}: an empty value; write null to not send the header"))
            }
            Setting::Value(v) => HeaderValue::from_str(v)
                .map(Some)
                .map_err(|_| format!("security_headers.{name}: `{v}` is not a valid header value")),
        };
        Ok(SecurityHeaders {
            nosniff: pick(&c.x_content_type_options, &self.nosniff, NOSNIFF, "x_content_type_options")?,
            csp: pick(&c.content_security_policy, &self.csp, CSP, "content_security_policy")?,
            referrer: pick(&c.referrer_policy, &self.referrer, NO_REFERRER, "referrer_policy")?,
            cache_control: pick(&c.cache_control, &self.cache_control, NO_STORE, "cache_control")?,
            replace: c.replace_upstream.unwrap_or(self.replace),
        })
    }

    /// Adds the headers to an answer; `authenticated`: the request has a principal.
    pub fn apply(&self, h: &mut HeaderMap, authenticated: bool) {
        if let Some(v) = &self.nosniff {
            h.insert(header::X_CONTENT_TYPE_OPTIONS, v.clone());
        }
        self.put(h, header::CONTENT_SECURITY_POLICY, self.csp.as_ref());
        self.put(h, header::REFERRER_POLICY, self.referrer.as_ref());
        if authenticated {
            self.put(h, header::CACHE_CONTROL, self.cache_control.as_ref());
        }
    }

    fn put(&self, h: &mut HeaderMap, name: HeaderName, v: Option<&HeaderValue>) {
        let Some(v) = v else { return };
        if self.replace {
            h.insert(name, v.clone());
        } else {
            h.entry(name).or_insert_with(|| v.clone());
        }
    }

    fn describe(&self) -> Vec<&'static str> {
        let all = [
            (self.nosniff.is_some(), "nosniff"),
            (self.csp.is_some(), "csp"),
            (self.referrer.is_some(), "referrer-policy"),
            (self.cache_control.is_some(), "cache-control"),
        ];
        all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect()
    }
}

/// The top-level `respond:` compiled: what routes start from.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub headers: SecurityHeaders,
    section: RespondConfig,
}

impl Defaults {
    pub fn compile(c: Option<&RespondConfig>) -> Result<Defaults, String> {
        let Some(c) = c else { return Ok(Defaults::default()) };
        let headers = match &c.security_headers {
            Some(s) => SecurityHeaders::default().with(s)?,
            None => SecurityHeaders::default(),
        };
        // Checks the masks and bounds once here too, so a mistake names the top-level section.
        Protect::compile(&Defaults { headers: headers.clone(), section: RespondConfig::default() }, Some(c))?;
        Ok(Defaults { headers, section: c.clone() })
    }
}

/// A route's response protection, compiled.
#[derive(Debug, Clone)]
pub struct Protect {
    pub headers: SecurityHeaders,
    scrub_errors: bool,
    json_only: bool,
    mask: Option<JsonMask>,
    max_body_bytes: u64,
    /// Response schema filtering (place 14), from the route's OpenAPI document.
    schema: Option<Arc<dyn ResponseSchema>>,
    /// Detokenization of the route's tokenized fields (place 13).
    detokenize: Option<Arc<dyn Detokenize>>,
}

/// Detokenization (place 13): the route's tokenized fields turned back (or masked) in JSON answers,
/// by who the principal is. Implemented over the route's tokenization stage by `config`.
pub trait Detokenize: Send + Sync + fmt::Debug {
    /// Rewrites the fields of `body` for `principal`; true if anything changed.
    fn detokenize(&self, principal: Option<&crate::exchange::Principal>, body: &mut serde_json::Value) -> bool;
    /// The JSON pointers it owns: data-loss masking leaves them to it.
    fn pointers(&self) -> Vec<String>;
    /// What `check` prints.
    fn describe(&self) -> String;
}

/// Response schema filtering (place 14): what the answer to an operation may carry. Implemented over
/// the route's OpenAPI document by `config` (this module does not know the validation stage).
pub trait ResponseSchema: Send + Sync + fmt::Debug {
    /// True if answers to `operation` (the index validation matched) with `status` are filtered.
    fn filters(&self, operation: usize, status: u16) -> bool;
    /// Removes what the schema does not declare; true if anything was removed.
    fn filter(&self, operation: usize, status: u16, body: &mut serde_json::Value) -> bool;
}

impl Default for Protect {
    fn default() -> Self {
        Protect {
            headers: SecurityHeaders::default(),
            scrub_errors: true,
            json_only: false,
            mask: None,
            max_body_bytes: DEFAULT_MAX_BODY,
            schema: None,
            detokenize: None,
        }
    }
}

impl Protect {
    /// A route's section (if any) over the top-level defaults.
    pub fn compile(d: &Defaults, route: Option<&RespondConfig>) -> Result<Protect, String> {
        let g = &d.section;
        let r = route.cloned().unwrap_or_default();
        let headers = match &r.security_headers {
            Some(s) => d.headers.with(s)?,
            None => d.headers.clone(),
        };
        let mask = match r.mask.as_ref().or(g.mask.as_ref()) {
            Some(m) => {
                let kinds = Kinds {
                    cards: m.cards,
                    ssn: m.ssn,
                    iban: m.iban,
                    private_keys: m.private_keys,
                    cloud_keys: m.cloud_keys,
                };
                let jm = JsonMask::new(kinds, &m.allow)?;
                kinds.any().then_some(jm)
            }
            None => None,
        };
        let max_body_bytes = r.max_body_bytes.or(g.max_body_bytes).map_or(DEFAULT_MAX_BODY, |b| b.0);
        if max_body_bytes == 0 {
            return Err("respond.max_body_bytes must be at least 1".into());
        }
        Ok(Protect {
            headers,
            scrub_errors: r.scrub_errors.or(g.scrub_errors).unwrap_or(true),
            json_only: r.json.or(g.json).unwrap_or(false),
            mask,
            max_body_bytes,
            schema: None,
            detokenize: None,
        })
    }

    /// What `check` prints for the response side.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![];
        if let Some(d) = &self.detokenize {
            out.push(format!("{}[{}]", Place::Detokenization.as_str(), d.describe()));
        }
        if let Some(m) = &self.mask {
            out.push(format!("{}[{}]", Place::DataLossMasking.as_str(), m.kinds.names().join(", ")));
        }
        let mut scrub = vec![];
        if self.scrub_errors {
            scrub.push("5xx");
        }
        if self.json_only {
            scrub.push("json-only");
        }
        if !scrub.is_empty() {
            out.push(format!("{}[{}]", Place::ErrorScrubbing.as_str(), scrub.join(", ")));
        }
        out
    }

    /// The names of the security headers this route adds.
    pub fn header_names(&self) -> Vec<&'static str> {
        self.headers.describe()
    }

    /// The request side's part: a route whose answers are rewritten asks for them uncompressed and
    /// whole.
    pub fn prepare_request(&self, h: &mut HeaderMap) {
        if self.mask.is_some() || self.detokenize.is_some() {
            h.remove(header::ACCEPT_ENCODING);
            h.remove(header::RANGE);
            h.remove(header::IF_RANGE);
        }
    }

    /// Detokenizes this route's JSON answers; data-loss masking leaves the values at the tokenized
    /// pointers (only: not what is under an array or object there) to it (they hold tokens, originals
    /// the principal may see, masks, or `[withheld]`).
    pub fn set_detokenizer(&mut self, d: Arc<dyn Detokenize>) {
        if let Some(m) = &mut self.mask {
            for p in d.pointers() {
                m.keep_exact(&p);
            }
        }
        self.detokenize = Some(d);
    }

    /// Filters this route's JSON answers by the response schemas of its OpenAPI document.
    pub fn set_response_schema(&mut self, schema: Arc<dyn ResponseSchema>) {
        self.schema = Some(schema);
    }

    /// The operation whose response schema applies to this answer, if one does.
    fn schema_for(&self, operation: Option<usize>, status: StatusCode) -> Option<usize> {
        let (schema, op) = (self.schema.as_ref()?, operation?);
        schema.filters(op, status.as_u16()).then_some(op)
    }

    /// True when the answer must be read whole before any of it is released: it is JSON and is
    /// masked, or filtered by a response schema.
    pub fn needs_body(&self, method: &Method, status: StatusCode, h: &HeaderMap, operation: Option<usize>) -> bool {
        (self.mask.is_some() || self.detokenize.is_some() || self.schema_for(operation, status).is_some())
            && has_body(method, status, h)
            && is_json(h)
    }

    /// The response side for an upstream's answer: leaking headers dropped, then error scrubbing,
    /// JSON-only, masking. `Err` is a refusal rendered by the caller; the answer is then discarded.
    pub async fn response(
        &self,
        ex: &mut Exchange<'_>,
        mut resp: Response<ResponseBody>,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, Reject> {
        strip_leaks(resp.headers_mut());
        let status = resp.status();
        if self.scrub_errors && status.is_server_error() {
            tracing::debug!(request_id = ex.request_id, status = status.as_u16(), "upstream error answer scrubbed");
            return Ok(scrubbed(status, resp.headers(), ex.request_id));
        }
        if self.json_only && status.is_redirection() && resp.headers().contains_key(header::LOCATION) {
            // A redirect's body is never rendered where it has a Location to follow; one that is not
            // JSON is dropped, the redirect kept.
            if !is_json(resp.headers()) && has_body(&Method::GET, status, resp.headers()) {
                let (mut head, _) = resp.into_parts();
                head.headers.remove(header::CONTENT_TYPE);
                head.headers.remove(header::TRANSFER_ENCODING);
                head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                return Ok(Response::from_parts(head, ResponseBody::empty()));
            }
            return Ok(resp);
        }
        if self.json_only && has_body(&Method::GET, status, resp.headers()) && !is_json(resp.headers()) {
            ex.refused_at = Some(Place::ErrorScrubbing);
            tracing::warn!(
                target: "security",
                event = "non_json_answer",
                request_id = ex.request_id,
                route = ex.route.as_deref(),
                status = status.as_u16(),
                content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                "upstream answer on a JSON route is not JSON: replaced by 502"
            );
            return Err(Reject::BadGateway("a JSON route's upstream answered another media type"));
        }
        if !self.needs_body(&ex.parts.method, status, resp.headers(), ex.operation) {
            return Ok(resp);
        }
        self.rewrite(ex, resp, timeout).await
    }

    /// Reads the answer whole (within the bound and the timeout) and masks it.
    async fn rewrite(
        &self,
        ex: &mut Exchange<'_>,
        resp: Response<ResponseBody>,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, Reject> {
        use http_body_util::BodyExt;
        let refuse = |ex: &mut Exchange<'_>, reason: &'static str| {
            ex.refused_at = Some(Place::DataLossMasking);
            tracing::warn!(
                target: "security",
                event = "dlp_withheld",
                request_id = ex.request_id,
                route = ex.route.as_deref(),
                reason,
                "upstream answer withheld: it cannot be masked"
            );
            Err(Reject::BadGateway(reason))
        };
        let (mut head, body) = resp.into_parts();
        let identity =
            head.headers.get(header::CONTENT_ENCODING).is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if !identity {
            return refuse(ex, "a masked route's upstream answered compressed");
        }
        if head.status == StatusCode::PARTIAL_CONTENT {
            return refuse(ex, "a masked route's upstream answered part of a document");
        }
        let declared = head.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return refuse(ex, "the answer is over respond.max_body_bytes");
        }
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let bytes = match tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return refuse(ex, "the answer is over respond.max_body_bytes")
            }
            Ok(Err(_)) => return Err(Reject::BadGateway("the upstream's answer broke off")),
            Err(_) => return Err(Reject::GatewayTimeout("the upstream's answer did not arrive whole in time")),
        };
        let filter = self.schema_for(ex.operation, head.status).map(|op| (op, head.status.as_u16()));
        let masked = match self.rewrite_json(&bytes, filter, ex.principal.as_deref()) {
            Ok(masked) => masked,
            Err(reason) => return refuse(ex, reason),
        };
        let body = match masked {
            None => bytes,
            Some(m) => {
                if m.found > 0 {
                    tracing::info!(
                        target: "security",
                        event = "dlp_masked",
                        request_id = ex.request_id,
                        route = ex.route.as_deref(),
                        found = m.found,
                        "sensitive data masked in the upstream's answer"
                    );
                }
                if m.filtered {
                    tracing::info!(
                        target: "security",
                        event = "response_filtered",
                        request_id = ex.request_id,
                        route = ex.route.as_deref(),
                        "properties the response schema does not declare removed from the upstream's answer"
                    );
                }
                // What the upstream said of its own bytes is not true of these.
                for name in ["etag", "content-md5", "digest", "content-digest", "repr-digest"] {
                    head.headers.remove(name);
                }
                m.body.into()
            }
        };
        head.headers.remove(header::TRANSFER_ENCODING);
        head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(Response::from_parts(head, ResponseBody::full(body)))
    }
}

impl Protect {
    /// The rewrites of a whole JSON answer, in place order. `Ok(None)`: the bytes stay as they are.
    ///
    /// Response schema filtering (place 14) plugs in here, before masking: when the route has a
    /// filter, parse `body` into a `serde_json::Value`, call `filter_response(&mut value)`, serialize
    /// it, and mask those bytes instead (and make [`Protect::needs_body`] true for such a route).
    fn rewrite_json(
        &self,
        body: &[u8],
        filter: Option<(usize, u16)>,
        principal: Option<&crate::exchange::Principal>,
    ) -> Result<Option<Rewritten>, &'static str> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        // Detokenized first, then filtered (a removed property is not masked, it is gone), then masked.
        let schema = match (filter, &self.schema) {
            (Some((op, status)), Some(schema)) => Some((op, status, schema)),
            _ => None,
        };
        let mut schema_filtered = false;
        let filtered = if schema.is_some() || self.detokenize.is_some() {
            let mut value: serde_json::Value =
                serde_json::from_slice(body).map_err(|_| "the answer is not well-formed JSON")?;
            let detokenized = self.detokenize.as_ref().is_some_and(|d| d.detokenize(principal, &mut value));
            schema_filtered = schema.is_some_and(|(op, status, schema)| schema.filter(op, status, &mut value));
            if detokenized || schema_filtered {
                Some(serde_json::to_vec(&value).map_err(|_| "the answer cannot be written back")?)
            } else {
                None
            }
        } else {
            None
        };
        let masked = match (&self.mask, &filtered) {
            (Some(m), Some(f)) => m.apply(f).map_err(|_| "the answer is not well-formed JSON")?,
            (Some(m), None) => m.apply(body).map_err(|_| "the answer is not well-formed JSON")?,
            (None, _) => None,
        };
        let was_filtered = schema_filtered;
        Ok(match (masked, filtered) {
            (Some(m), _) => Some(Rewritten { body: m.body, found: m.found, filtered: was_filtered }),
            (None, Some(f)) => Some(Rewritten { body: f, found: 0, filtered: was_filtered }),
            (None, None) => None,
        })
    }
}

/// A JSON answer as the response side rewrote it: filtered by its schema, masked, or both.
struct Rewritten {
    body: Vec<u8>,
    /// Values masked.
    found: usize,
    /// Properties the response schema does not declare were removed.
    filtered: bool,
}

/// `check`'s warnings: a route that masks JSON answers without `json: true` lets a non-JSON answer
/// through unmasked.
pub fn lints<'a>(
    top: Option<&RespondConfig>,
    routes: impl Iterator<Item = (&'a str, Option<&'a RespondConfig>)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, r) in routes {
        let mask = r.and_then(|r| r.mask.as_ref()).or(top.and_then(|t| t.mask.as_ref()));
        let masks = mask.is_some_and(|m| m.cards || m.ssn || m.iban || m.private_keys || m.cloud_keys);
        let json = r.and_then(|r| r.json).or(top.and_then(|t| t.json)).unwrap_or(false);
        if masks && !json {
            out.push(format!(
                "route `{name}` masks JSON answers but does not say `respond: {{ json: true }}`: an answer of \
                 another media type would pass unmasked"
            ));
        }
    }
    out
}

/// An answer with a body to judge: not to HEAD, not 1xx, 204 or 304, and not declared empty.
fn has_body(method: &Method, status: StatusCode, h: &HeaderMap) -> bool {
    !(method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || h.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0"))
}

/// `application/json` or `application/*+json` (problem+json, hal+json, ...), any parameters.
pub fn is_json(h: &HeaderMap) -> bool {
    let Some(v) = h.get(header::CONTENT_TYPE) else { return false };
    let b = v.as_bytes();
    let media = b.split(|&c| c == b';').next().unwrap_or_default().trim_ascii();
    let Some((kind, sub)) = media.split_at_checked(12) else { return false };
    kind.eq_ignore_ascii_case(b"application/")
        && (sub.eq_ignore_ascii_case(b"json")
            || (sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json") && !sub.contains(&b'/')))
}

/// The problem document that stands in for an upstream's 5xx answer; its `Retry-After` is kept.
fn scrubbed(status: StatusCode, upstream: &HeaderMap, request_id: &str) -> Response<ResponseBody> {
    let mut resp = Reject::UpstreamError(status).into_response(request_id);
    if let Some(v) = upstream.get(header::RETRY_AFTER) {
        resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    resp
}

/// Upstream headers that tell an attacker what runs behind the gateway, or debug it (`Server` and
/// `X-Powered-By` are already dropped by header hygiene): one walk over the names, and a removal only
/// when one is there.
fn strip_leaks(h: &mut HeaderMap) {
    fn leaks(name: &str) -> bool {
        let n = name.as_bytes();
        n.len() > 2
            && n.starts_with(b"x-")
            && (matches!(
                name,
                "x-aspnet-version"
                    | "x-aspnetmvc-version"
                    | "x-sourcefiles"
                    | "x-runtime"
                    | "x-generator"
                    | "x-backend-server"
                    | "x-server"
                    | "x-powered-cms"
                    | "x-application-context"
                    | "x-php-version"
                    | "x-exception"
                    | "x-stack-trace"
            ) || name.starts_with("x-debug"))
    }
    if !h.keys().any(|k| leaks(k.as_str())) {
        return;
    }
    let found: Vec<HeaderName> = h.keys().filter(|k| leaks(k.as_str())).cloned().collect();
    for name in found {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "application/hal+json ;x=y",
        ] {
            assert!(is_json(&headers(&[("content-type", ok)])), "{ok}");
        }
        for bad in [
            "text/html",
            "text/json",
            "application/jsonp",
            "application/+json",
            "application/x+json/x",
            "",
            "application/",
        ] {
            assert!(!is_json(&headers(&[("content-type", bad)])), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn default_headers_and_overrides() {
        let mut h = HeaderMap::new();
        SecurityHeaders::default().apply(&mut h, false);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(!h.contains_key("cache-control"));
        let mut h = headers(&[("cache-control", "max-age=60"), ("content-security-policy", "default-src 'self'")]);
        SecurityHeaders::default().apply(&mut h, true);
        assert_eq!(h["cache-control"], "max-age=60");
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        let mut h = HeaderMap::new();
        SecurityHeaders::default().apply(&mut h, true);
        assert_eq!(h["cache-control"], "no-store");

        let yaml = "{ referrer_policy: null, content_security_policy: \"default-src 'self'\", cache_control: false, replace_upstream: true }";
        let c: SecurityHeadersConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let s = SecurityHeaders::default().with(&c).unwrap();
        let mut h = headers(&[("content-security-policy", "x")]);
        s.apply(&mut h, true);
        assert!(!h.contains_key("referrer-policy") && !h.contains_key("cache-control"));
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        let back: SecurityHeadersConfig = serde_yaml_ng::from_str("{ referrer_policy: true }").unwrap();
        assert_eq!(s.with(&back).unwrap().referrer, Some(NO_REFERRER));
        assert!(serde_yaml_ng::from_str::<SecurityHeadersConfig>("{ referer_policy: x }").is_err());
        let bad: SecurityHeadersConfig = serde_yaml_ng::from_str("{ referrer_policy: \"a\\nb\" }").unwrap();
        assert!(SecurityHeaders::default().with(&bad).is_err());
        let empty: SecurityHeadersConfig = serde_yaml_ng::from_str("{ referrer_policy: \"\" }").unwrap();
        assert!(SecurityHeaders::default().with(&empty).is_err());
        assert!(serde_yaml_ng::from_str::<SecurityHeadersConfig>("{ referrer_policy: 5 }").is_err());
    }

    #[test]
    fn route_sections_override_the_defaults_key_by_key() {
        let top: RespondConfig = serde_yaml_ng::from_str(
            "{ scrub_errors: false, mask: { cards: true }, security_headers: { referrer_policy: same-origin } }",
        )
        .unwrap();
        let d = Defaults::compile(Some(&top)).unwrap();
        let p = Protect::compile(&d, None).unwrap();
        assert!(!p.scrub_errors && p.mask.is_some());
        assert_eq!(p.headers.referrer, Some(HeaderValue::from_static("same-origin")));
        let route: RespondConfig = serde_yaml_ng::from_str("{ scrub_errors: true, json: true, mask: {} }").unwrap();
        let p = Protect::compile(&d, Some(&route)).unwrap();
        assert!(p.scrub_errors && p.json_only && p.mask.is_none());
        assert_eq!(p.headers.referrer, Some(HeaderValue::from_static("same-origin")));
        let p = Protect::compile(&Defaults::default(), None).unwrap();
        assert!(p.scrub_errors && !p.json_only && p.mask.is_none());
        assert!(serde_yaml_ng::from_str::<RespondConfig>("{ masks: {} }").is_err());
        let bad: RespondConfig = serde_yaml_ng::from_str("{ mask: { cards: true, allow: [x] } }").unwrap();
        assert!(Defaults::compile(Some(&bad)).is_err());
    }

    #[test]
    fn masking_without_json_only_is_a_lint() {
        let masked: RespondConfig = serde_yaml_ng::from_str("{ mask: { ssn: true } }").unwrap();
        let json: RespondConfig = serde_yaml_ng::from_str("{ json: true }").unwrap();
        let l = lints(Some(&masked), [("a", None), ("b", Some(&json))].into_iter());
        assert_eq!(l.len(), 1);
        assert!(l[0].contains("route `a`"), "{l:?}");
        assert!(lints(None, [("a", Some(&json))].into_iter()).is_empty());
    }

    #[test]
    fn leaking_headers_dropped() {
        let mut h =
            headers(&[("x-aspnet-version", "4"), ("x-debug-token", "a"), ("X-Debug-Token-Link", "b"), ("x-kept", "1")]);
        strip_leaks(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn bodies_to_judge() {
        let none = HeaderMap::new();
        assert!(has_body(&Method::GET, StatusCode::OK, &none));
        assert!(!has_body(&Method::HEAD, StatusCode::OK, &none));
        assert!(!has_body(&Method::GET, StatusCode::NO_CONTENT, &none));
        assert!(!has_body(&Method::GET, StatusCode::NOT_MODIFIED, &none));
        assert!(!has_body(&Method::GET, StatusCode::OK, &headers(&[("content-length", "0")])));
    }
}
