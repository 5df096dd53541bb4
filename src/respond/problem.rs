//! Rejections and their one rendering: RFC 9457 `application/problem+json`.
//!
//! Every refusal anywhere in the gateway is a [`Reject`]. [`Reject::into_response`] is the only place that
//! turns one into bytes: a fixed public `title` per `type`, the status, and the request id; never the
//! internal detail, which goes to logs only.

use crate::body::ResponseBody;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Malformed request, with a short internal reason for the logs.
    BadRequest(&'static str),
    /// Framing that two parsers could read differently (request smuggling).
    AmbiguousFraming(&'static str),
    InvalidPath(crate::validate::path::PathError),
    NotFound,
    MethodNotAllowed(Vec<Method>),
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    Unauthorized {
        challenge: HeaderValue,
    },
    CorsForbidden,
    /// A credential (or any request, with `plain_http: refuse`) on a plain-HTTP listener.
    InsecureTransport,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    /// Upstream answered badly or could not be reached.
    BadGateway(&'static str),
    NoHealthyUpstream,
    GatewayTimeout(&'static str),
    TooManyRequests,
    Internal(&'static str),
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::BadRequest(_) | Reject::AmbiguousFraming(_) | Reject::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Reject::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::UriTooLong => StatusCode::URI_TOO_LONG,
            Reject::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Reject::CorsForbidden | Reject::InsecureTransport => StatusCode::FORBIDDEN,
            Reject::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            Reject::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Reject::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Reject::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Reject::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Reject::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable problem type slug (the last part of the `type` URI) and its public title.
    pub fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Reject::BadRequest(_) => ("bad-request", "The request is malformed"),
            Reject::AmbiguousFraming(_) => ("ambiguous-framing", "The request framing is ambiguous"),
            Reject::InvalidPath(_) => ("invalid-path", "The request path is not acceptable"),
            Reject::NotFound => ("not-found", "No route matches the request"),
            Reject::MethodNotAllowed(_) => ("method-not-allowed", "The method is not allowed on this route"),
            Reject::PayloadTooLarge => ("payload-too-large", "The request body is too large"),
            Reject::UriTooLong => ("uri-too-long", "The request URI is too long"),
            Reject::HeadersTooLarge => ("headers-too-large", "The request headers are too large"),
            Reject::Unauthorized { .. } => ("unauthorized", "Authentication is required"),
            Reject::CorsForbidden => ("cors-forbidden", "The cross-origin request is not allowed"),
            Reject::InsecureTransport => ("insecure-transport", "The request must use HTTPS"),
            Reject::ExpectationFailed => ("expectation-failed", "The expectation cannot be met"),
            Reject::BadGateway(_) => ("bad-gateway", "The upstream service failed"),
            Reject::NoHealthyUpstream => ("no-healthy-upstream", "No upstream service is available"),
            Reject::GatewayTimeout(_) => ("gateway-timeout", "The upstream service timed out"),
            Reject::TooManyRequests => ("too-many-requests", "Too many requests"),
            Reject::Internal(_) => ("internal-error", "The gateway failed to handle the request"),
        }
    }

    /// The internal reason, for logs only.
    pub fn detail(&self) -> &'static str {
        match self {
            Reject::BadRequest(r)
            | Reject::AmbiguousFraming(r)
            | Reject::BadGateway(r)
            | Reject::GatewayTimeout(r)
            | Reject::Internal(r) => r,
            Reject::InvalidPath(e) => match e {
                crate::validate::path::PathError::NotAbsolute => "path not absolute",
                crate::validate::path::PathError::BadEscape => "bad percent-encoding",
                crate::validate::path::PathError::EncodedSeparator => "encoded separator",
                crate::validate::path::PathError::DotSegment => "dot segment",
                crate::validate::path::PathError::BadCharacter => "bad character",
                crate::validate::path::PathError::InvalidUtf8 => "invalid utf-8",
                crate::validate::path::PathError::MatrixParams => "matrix parameters",
            },
            _ => self.kind().0,
        }
    }

    /// The problem document. `request_id` is always a validated token (no JSON escaping needed).
    fn document(&self, request_id: &str) -> String {
        let (slug, title) = self.kind();
        format!(
            "{{\"type\":\"{TYPE_PREFIX}{slug}\",\"title\":\"{title}\",\"status\":{},\"request_id\":\"{request_id}\"}}",
            self.status().as_u16()
        )
    }

    /// The whole HTTP/1.1 response, bytes ready for the wire, closing the connection: for the answers to
    /// request heads hyper's parser refused, which never reach a service (see `server::conn::ScannedIo`).
    pub fn http1_closing(&self, request_id: &str, hsts: Option<&HeaderValue>) -> Vec<u8> {
        let status = self.status();
        let body = self.document(request_id);
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\n\
             content-length: {}\r\nconnection: close\r\nx-request-id: {request_id}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        if let Some(v) = hsts {
            out.extend_from_slice(b"strict-transport-security: ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }

    /// Renders the problem document as a response.
    pub fn into_response(self, request_id: &str) -> Response<ResponseBody> {
        let status = self.status();
        let body = self.document(request_id);
        let mut resp = Response::new(ResponseBody::full(body.into()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Reject::MethodNotAllowed(methods) => {
                let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    h.insert(ALLOW, v);
                }
            }
            Reject::Unauthorized { challenge } => {
                h.insert(WWW_AUTHENTICATE, challenge);
            }
            _ => {}
        }
        resp
    }
}

/// Every problem `type` is this prefix plus the slug, e.g. `urn:portcullis:problem:not-found`.
pub const TYPE_PREFIX: &str = "urn:portcullis:problem:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_problem_json() {
        let resp = Reject::MethodNotAllowed(vec![Method::GET, Method::POST]).into_response("abc");
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[ALLOW], "GET, POST");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn every_kind_has_a_distinct_slug() {
        let all = [
            Reject::BadRequest("x"),
            Reject::AmbiguousFraming("x"),
            Reject::InvalidPath(crate::validate::path::PathError::DotSegment),
            Reject::NotFound,
            Reject::MethodNotAllowed(vec![]),
            Reject::PayloadTooLarge,
            Reject::UriTooLong,
            Reject::HeadersTooLarge,
            Reject::Unauthorized { challenge: HeaderValue::from_static("Bearer") },
            Reject::CorsForbidden,
            Reject::BadGateway("x"),
            Reject::NoHealthyUpstream,
            Reject::GatewayTimeout("x"),
            Reject::TooManyRequests,
            Reject::Internal("x"),
        ];
        let mut slugs: Vec<_> = all.iter().map(|r| r.kind().0).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), all.len());
    }
}
