//! Rejections and their one rendering: RFC 9457 `application/problem+json`.
//!
//! Every refusal anywhere in the gateway is a [`Reject`]. [`Reject::into_response`] is the only place that
//! turns one into bytes: a fixed public `title` per `type`, the status, and the request id; never the
//! internal detail, which goes to logs only.

use crate::body::ResponseBody;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Response};

use crate::exchange::Reject;

impl Reject {
    /// The problem document. `request_id` is always a validated token (no JSON escaping needed).
    fn document(&self, request_id: &str) -> String {
        let (slug, title) = self.kind();
        // RFC 9457 extension members: where in the body the problem is (never a value from it).
        let extension = match self {
            Reject::ForbiddenProperty(pointer) => {
                format!(",\"pointer\":{}", serde_json::Value::String(pointer.to_string()))
            }
            Reject::MalformedJson { offset, .. } => format!(",\"offset\":{offset}"),
            Reject::Invalid(i) => errors_member(&i.errors),
            _ => String::new(),
        };
        format!(
            "{{\"type\":\"{TYPE_PREFIX}{slug}\",\"title\":\"{title}\",\"status\":{},\"request_id\":\"{request_id}\"{extension}}}",
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
            Reject::Reauthenticate => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer error=\"invalid_token\", error_description=\"a credential issued after the alert is required\"",
                    ),
                );
            }
            Reject::DpopNonce { challenge, nonce } => {
                h.insert(WWW_AUTHENTICATE, challenge);
                h.insert(http::header::HeaderName::from_static("dpop-nonce"), nonce);
            }
            _ => {}
        }
        resp
    }
}

/// The `errors` extension member: where and which check, never a value from the request.
fn errors_member(errors: &[crate::exchange::FieldError]) -> String {
    let list: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| {
            let mut m = serde_json::Map::new();
            m.insert("in".into(), e.location.into());
            m.insert("pointer".into(), e.pointer.as_ref().into());
            m.insert("code".into(), e.code.into());
            if let Some(o) = e.offset {
                m.insert("offset".into(), o.into());
            }
            serde_json::Value::Object(m)
        })
        .collect();
    format!(",\"errors\":{}", serde_json::Value::Array(list))
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
            Reject::InvalidPath("dot segment"),
            Reject::NotFound,
            Reject::MethodNotAllowed(vec![]),
            Reject::PayloadTooLarge,
            Reject::UriTooLong,
            Reject::HeadersTooLarge,
            Reject::Unauthorized { challenge: HeaderValue::from_static("Bearer") },
            Reject::CorsForbidden,
            Reject::BadGateway("x"),
            Reject::UpstreamError(http::StatusCode::INTERNAL_SERVER_ERROR),
            Reject::NoHealthyUpstream,
            Reject::GatewayTimeout("x"),
            Reject::TooManyRequests,
            Reject::StoreUnavailable,
            Reject::Internal("x"),
        ];
        let mut slugs: Vec<_> = all.iter().map(|r| r.kind().0).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), all.len());
    }
}
