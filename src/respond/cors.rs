//! CORS per route, with an explicit origin allowlist.
//!
//! Preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are answered by the gateway
//! and never reach the upstream. A request from an origin that is not allowed is refused with 403 rather
//! than forwarded without CORS headers, so a cross-site form post cannot cause side effects either.
//! `*` is accepted only without credentials (a config error otherwise).

use crate::exchange::Reject;
use crate::units::Dur;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Deserialize;

/// A route's `cors:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub max_age: Option<Dur>,
}

#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    allowed_header_names: Vec<String>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn join(items: &[String]) -> Result<Option<HeaderValue>, String> {
    if items.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&items.join(", ")).map(Some).map_err(|_| "invalid header list".to_string())
}

impl Cors {
    pub fn compile(c: &CorsConfig) -> Result<Cors, String> {
        let any_origin = c.allow_origins.iter().any(|o| o == "*");
        if any_origin && c.allow_credentials {
            return Err("cors: `*` origin cannot be combined with allow_credentials".into());
        }
        if c.allow_origins.is_empty() {
            return Err("cors: allow_origins must list at least one origin".into());
        }
        let mut origins = Vec::new();
        for o in c.allow_origins.iter().filter(|o| *o != "*") {
            let uri: http::Uri = o.parse().map_err(|_| format!("cors: `{o}` is not an origin"))?;
            let ok = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && (uri.path() == "/" || uri.path().is_empty())
                && !o.ends_with('/');
            if !ok {
                return Err(format!("cors: `{o}` is not an origin like https://app.example.com"));
            }
            origins.push(HeaderValue::from_str(o).map_err(|_| format!("cors: `{o}` is not an origin"))?);
        }
        let methods = if c.allow_methods.is_empty() {
            vec![Method::GET, Method::HEAD, Method::POST]
        } else {
            c.allow_methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| format!("cors: bad method `{m}`")))
                .collect::<Result<_, _>>()?
        };
        let names: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        let allow_methods = join(&names)?.unwrap_or(HeaderValue::from_static("GET"));
        Ok(Cors {
            any_origin,
            origins,
            methods,
            allow_methods,
            allow_headers: join(&c.allow_headers)?,
            allowed_header_names: c.allow_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            expose_headers: join(&c.expose_headers)?,
            credentials: c.allow_credentials,
            max_age: c.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
        })
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    /// True for a CORS preflight.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answers a preflight: 204 with the allowed methods and headers, or 403.
    pub fn preflight(&self, headers: &HeaderMap) -> Result<Response<crate::body::ResponseBody>, Reject> {
        let origin = one_origin(headers)?.ok_or(Reject::CorsForbidden)?;
        if !self.allowed(origin) {
            return Err(Reject::CorsForbidden);
        }
        let method = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or(Reject::CorsForbidden)?;
        if !self.methods.contains(&method) {
            return Err(Reject::CorsForbidden);
        }
        if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            let requested = requested.to_str().map_err(|_| Reject::CorsForbidden)?;
            for name in requested.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !self.allowed_header_names.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                    return Err(Reject::CorsForbidden);
                }
            }
        }
        let mut resp = Response::new(crate::body::ResponseBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.origin_headers(origin, h);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if let Some(v) = &self.allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        Ok(resp)
    }

    /// Checks the `Origin` of an actual request; `Ok(Some(origin))` when CORS headers must be added.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, Reject> {
        match one_origin(headers)? {
            None => Ok(None),
            Some(o) if self.allowed(o) => Ok(Some(o.clone())),
            Some(_) => Err(Reject::CorsForbidden),
        }
    }

    /// Adds the response headers for an allowed origin.
    pub fn origin_headers(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        if self.any_origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

/// The request's `Origin`, if any. A browser sends at most one (RFC 6454 7.3); with two, the gateway
/// would judge the first while the upstream, which receives both, may read the other (found in review),
/// so two are refused.
fn one_origin(headers: &HeaderMap) -> Result<Option<&HeaderValue>, Reject> {
    let mut all = headers.get_all(header::ORIGIN).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(Reject::CorsForbidden);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Result<Cors, String> {
        Cors::compile(&CorsConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["Content-Type".into()],
            expose_headers: vec![],
            allow_credentials: credentials,
            max_age: None,
        })
    }

    #[test]
    fn wildcard_with_credentials_is_refused() {
        assert!(cors(&["*"], true).is_err());
        assert!(cors(&["*"], false).is_ok());
        assert!(cors(&["https://a.example/path"], false).is_err());
        assert!(cors(&["ftp://a.example"], false).is_err());
    }

    #[test]
    fn preflight() {
        let c = cors(&["https://app.example"], true).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example"));
        h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("PUT"));
        h.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_static("content-type"));
        let resp = c.preflight(&h).unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        h.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_static("x-evil"));
        assert!(c.preflight(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert_eq!(c.check(&h), Err(Reject::CorsForbidden));
    }
}
