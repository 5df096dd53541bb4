//! Covered components and the signature base (RFC 9421 §2): the exact bytes a signature is computed over.
//!
//! Supported: the derived components `@method`, `@target-uri`, `@authority`, `@scheme`, `@path` and
//! `@query`, and header fields by (lowercase) name. Component parameters and the other derived components
//! (`@request-target`, `@query-param`, `@status`) are refused when the input is parsed.

use http::header::HOST;
use http::request::Parts;

/// A covered component identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Method,
    TargetUri,
    Authority,
    Scheme,
    Path,
    Query,
    /// A header field, by lowercase name.
    Field(String),
}

impl Component {
    /// Parses a component name as it appears (unquoted) in `Signature-Input`.
    pub fn parse(name: &str) -> Result<Component, &'static str> {
        Ok(match name {
            "@method" => Component::Method,
            "@target-uri" => Component::TargetUri,
            "@authority" => Component::Authority,
            "@scheme" => Component::Scheme,
            "@path" => Component::Path,
            "@query" => Component::Query,
            n if n.starts_with('@') => return Err("unsupported_component"),
            // RFC 9421 §2.1: field names are lowercased; an uppercase or non-token name is not a field.
            n if !n.is_empty() && n.bytes().all(is_lower_tchar) => Component::Field(n.to_owned()),
            _ => return Err("malformed_signature"),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Component::Method => "@method",
            Component::TargetUri => "@target-uri",
            Component::Authority => "@authority",
            Component::Scheme => "@scheme",
            Component::Path => "@path",
            Component::Query => "@query",
            Component::Field(n) => n,
        }
    }
}

fn is_lower_tchar(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The request as the signer saw it: its parts and the scheme it was sent with.
pub struct Message<'a> {
    pub parts: &'a Parts,
    /// `https` or `http`, from the connection (or the request line's absolute form).
    pub scheme: &'a str,
}

impl Message<'_> {
    /// The value of one component, or `None` when the request does not have it.
    pub fn value(&self, c: &Component) -> Option<Vec<u8>> {
        let uri = &self.parts.uri;
        Some(match c {
            Component::Method => self.parts.method.as_str().as_bytes().to_vec(),
            Component::Scheme => self.scheme.as_bytes().to_vec(),
            Component::Authority => self.authority()?.into_bytes(),
            Component::Path => path(uri).as_bytes().to_vec(),
            Component::Query => format!("?{}", uri.query().unwrap_or("")).into_bytes(),
            Component::TargetUri => {
                let query = uri.query().map_or(String::new(), |q| format!("?{q}"));
                format!("{}://{}{}{query}", self.scheme, self.authority()?, path(uri)).into_bytes()
            }
            Component::Field(name) => self.field(name)?,
        })
    }

    /// RFC 9421 §2.2.3: the authority, host in lowercase, without the scheme's default port.
    fn authority(&self) -> Option<String> {
        let raw = match self.parts.uri.authority() {
            Some(a) => a.clone(),
            None => self.parts.headers.get(HOST)?.to_str().ok()?.parse::<http::uri::Authority>().ok()?,
        };
        if raw.as_str().contains('@') {
            return None; // userinfo has no place in a request's authority
        }
        let host = raw.host().to_ascii_lowercase();
        let default = if self.scheme == "https" { 443 } else { 80 };
        Some(match raw.port_u16() {
            Some(p) if p != default => format!("{host}:{p}"),
            _ => host,
        })
    }

    /// RFC 9421 §2.1: every field line's value, trimmed, joined with ", ".
    fn field(&self, name: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for (i, v) in self.parts.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v.as_bytes().trim_ascii());
        }
        self.parts.headers.contains_key(name).then_some(out)
    }
}

fn path(uri: &http::Uri) -> &str {
    match uri.path() {
        "" => "/",
        p => p,
    }
}

/// RFC 9421 §2.5: one `"name": value` line per component, then the `@signature-params` line.
pub fn signature_base(msg: &Message<'_>, components: &[Component], params_line: &str) -> Result<Vec<u8>, &'static str> {
    let mut base = Vec::with_capacity(256);
    for c in components {
        let value = msg.value(c).ok_or("component_absent")?;
        base.push(b'"');
        base.extend_from_slice(c.name().as_bytes());
        base.extend_from_slice(b"\": ");
        base.extend_from_slice(&value);
        base.push(b'\n');
    }
    base.extend_from_slice(b"\"@signature-params\": ");
    base.extend_from_slice(params_line.as_bytes());
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn derived_components() {
        let p = parts(
            http::Request::post("/foo?param=Value&Pet=dog")
                .header("host", "Example.COM:443")
                .header("x-multi", " a ")
                .header("x-multi", "b\t")
                .header("x-empty", ""),
        );
        let m = Message { parts: &p, scheme: "https" };
        let v = |c: &str| String::from_utf8(m.value(&Component::parse(c).unwrap()).unwrap()).unwrap();
        assert_eq!(v("@method"), "POST");
        assert_eq!(v("@authority"), "example.com");
        assert_eq!(v("@target-uri"), "https://example.com/foo?param=Value&Pet=dog");
        assert_eq!(v("@path"), "/foo");
        assert_eq!(v("@query"), "?param=Value&Pet=dog");
        assert_eq!(v("@scheme"), "https");
        assert_eq!(v("x-multi"), "a, b");
        assert_eq!(v("x-empty"), "");
        assert!(m.value(&Component::Field("absent".into())).is_none());

        let p = parts(http::Request::get("/").header("host", "127.0.0.1:8080"));
        let m = Message { parts: &p, scheme: "http" };
        assert_eq!(m.value(&Component::Query).unwrap(), b"?");
        assert_eq!(m.value(&Component::TargetUri).unwrap(), b"http://127.0.0.1:8080/");
        // HTTP/2 style: the authority is in the URI.
        let p = parts(http::Request::get("https://[::1]:443/x?"));
        let m = Message { parts: &p, scheme: "https" };
        assert_eq!(m.value(&Component::Authority).unwrap(), b"[::1]");
        assert_eq!(m.value(&Component::Query).unwrap(), b"?");
        // No host at all, or userinfo: no authority.
        let p = parts(http::Request::get("/"));
        assert!(Message { parts: &p, scheme: "http" }.value(&Component::TargetUri).is_none());
        let p = parts(http::Request::get("/").header("host", "user@evil"));
        assert!(Message { parts: &p, scheme: "http" }.value(&Component::Authority).is_none());
    }

    #[test]
    fn component_names() {
        assert_eq!(Component::parse("content-digest"), Ok(Component::Field("content-digest".into())));
        for bad in ["", "Content-Digest", "a b", "a:b", "\"", "é"] {
            assert_eq!(Component::parse(bad), Err("malformed_signature"), "{bad}");
        }
        for unsupported in ["@request-target", "@query-param", "@status", "@signature-params", "@"] {
            assert_eq!(Component::parse(unsupported), Err("unsupported_component"));
        }
    }
}
