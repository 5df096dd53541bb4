//! What JWT and introspection share: finding the presented token (RFC 6750 `Authorization: Bearer`, or
//! a named cookie), reading claims (dotted paths, `scope` / `scp`, RFC 8705 `cnf`), and building the
//! principal.

use crate::exchange::ConnInfo;
use crate::exchange::{Principal, PrincipalKind};
use http::header::{AUTHORIZATION, COOKIE};
use serde_json::{Map, Value};
use std::sync::Arc;

pub type Claims = Map<String, Value>;

/// The token a request presents, if any.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Absent,
    Token(&'a str),
    /// Malformed or ambiguous (two `Authorization` headers, two cookies of the name, bad characters).
    Malformed,
}

/// A character of RFC 6750 §2.1 `b64token` before its `=` padding.
fn b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() | matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. This runs
/// over every byte of every token on the hot path: the check folds without an early exit, so the compiler
/// turns it into vector comparisons (a token is hundreds of bytes, and nearly always valid).
pub fn is_b64token(t: &[u8]) -> bool {
    let pad = t.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &t[..t.len() - pad];
    !body.is_empty() && body.iter().fold(true, |ok, &b| ok & b64token_char(b))
}

/// `Authorization: Bearer <token>`. Another scheme means no bearer token (another method's credential).
pub fn bearer(parts: &http::request::Parts) -> Presented<'_> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Presented::Absent };
    // Read as bytes: a valid token is ASCII, so only the token is checked, once.
    let v = value.as_bytes().trim_ascii();
    let scheme_end = v.iter().position(|&b| b == b' ').filter(|&i| v[..i].eq_ignore_ascii_case(b"bearer"));
    let Some(scheme_end) = scheme_end else {
        // Not ours; a value that is not visible ASCII is malformed whatever its scheme.
        return if value.to_str().is_ok() { Presented::Absent } else { Presented::Malformed };
    };
    if values.next().is_some() {
        return Presented::Malformed;
    }
    let token = v[scheme_end + 1..].trim_ascii();
    match std::str::from_utf8(token) {
        Ok(token) if is_b64token(token.as_bytes()) => Presented::Token(token),
        _ => Presented::Malformed,
    }
}

/// The cookie `name` (RFC 6265 `Cookie:` pairs, in one or several headers).
pub fn cookie<'a>(parts: &'a http::request::Parts, name: &str) -> Presented<'a> {
    let mut found = None;
    for value in parts.headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else { continue };
            if k == name {
                if found.is_some() {
                    return Presented::Malformed;
                }
                found = Some(v.trim_matches('"'));
            }
        }
    }
    match found {
        None => Presented::Absent,
        Some(t) if is_b64token(t.as_bytes()) => Presented::Token(t),
        Some(_) => Presented::Malformed,
    }
}

/// A claim by dotted path: `realm_access.roles`.
pub fn path<'a>(claims: &'a Claims, dotted: &str) -> Option<&'a Value> {
    let mut parts = dotted.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// An array of strings, or one space-separated string.
pub fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Scopes from `scope` (RFC 8693 / RFC 9068: space separated) and `scp` (an array, as Azure AD and Okta
/// write them), without duplicates.
pub fn scopes(claims: &Claims) -> Vec<String> {
    let mut out = strings(claims.get("scope"));
    for s in strings(claims.get("scp")) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional; truncated.
pub fn numeric_date(v: Option<&Value>) -> Result<Option<i64>, &'static str> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f as i64)),
            _ => Err("malformed_date"),
        },
        Some(_) => Err("malformed_date"),
    }
}

/// What a token is bound to: (RFC 8705 `x5t#S256`, RFC 9449 `jkt`).
pub type Bindings = (Option<Arc<str>>, Option<Arc<str>>);

/// `cnf`: the certificate thumbprint the token is bound to (RFC 8705 `x5t#S256`) and the key it is bound
/// to (RFC 9449 `jkt`). A confirmation method we cannot enforce refuses the token rather than ignoring
/// its binding.
pub fn cnf(claims: &Claims) -> Result<Bindings, &'static str> {
    let Some(cnf) = claims.get("cnf") else { return Ok((None, None)) };
    let Some(cnf) = cnf.as_object() else { return Err("malformed_cnf") };
    let (mut x5t, mut jkt) = (None, None);
    for (k, v) in cnf {
        match (k.as_str(), v) {
            ("x5t#S256", Value::String(t)) => x5t = Some(Arc::from(t.as_str())),
            ("jkt", Value::String(t)) if !t.is_empty() => jkt = Some(Arc::from(t.as_str())),
            _ => return Err("unsupported_cnf"),
        }
    }
    Ok((x5t, jkt))
}

/// True when the token is not certificate-bound, or bound to the certificate this connection presented.
pub fn binding_holds(bound: Option<&str>, conn: &ConnInfo) -> bool {
    match bound {
        None => true,
        Some(t) => crate::authn::cert_thumbprint(conn).is_some_and(|presented| presented == t),
    }
}

/// How claims become a principal.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    pub roles_claim: Option<String>,
    pub tenant_claim: Option<String>,
}

impl Mapping {
    /// `sub`, or `client_id` for a client's own token (client credentials grant, which has no user).
    pub fn principal(&self, kind: PrincipalKind, claims: Claims) -> Result<Principal, &'static str> {
        let id = match (claims.get("sub"), claims.get("client_id")) {
            (Some(Value::String(s)), _) if !s.is_empty() => s.clone(),
            (None, Some(Value::String(c))) if !c.is_empty() => c.clone(),
            _ => return Err("missing_subject"),
        };
        let roles = self.roles_claim.as_deref().map(|p| strings(path(&claims, p))).unwrap_or_default();
        let tenant = self.tenant_claim.as_deref().and_then(|p| path(&claims, p)?.as_str().map(str::to_owned));
        Ok(Principal {
            id,
            kind,
            roles,
            scopes: scopes(&claims),
            claims: Some(Arc::new(claims)),
            tenant,
            identity: Default::default(),
        })
    }
}

/// One verified token as cached: its principal and the certificate it is bound to, if any.
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Arc<Principal>,
    pub x5t: Option<Arc<str>>,
    /// RFC 9449 `cnf.jkt`: the thumbprint of the key a DPoP proof must be signed with.
    pub jkt: Option<Arc<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// The `Authorization` reading as it was before it worked on bytes: text first, then the scheme.
    fn bearer_by_text(value: &http::HeaderValue) -> Presented<'_> {
        let Ok(text) = value.to_str() else { return Presented::Malformed };
        let Some((scheme, rest)) = text.trim().split_once(' ') else { return Presented::Absent };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Presented::Absent;
        }
        let token = rest.trim();
        let body = token.trim_end_matches('=');
        let ok = !body.is_empty()
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'));
        if ok {
            Presented::Token(token)
        } else {
            Presented::Malformed
        }
    }

    proptest::proptest! {
        /// Any single `Authorization` value is read as the text-based reading read it.
        #[test]
        fn bearer_reads_bytes_as_the_text_reading_did(
            scheme in "(Bearer|bearer|BEARER|Basic|Bearerx|)",
            sep in "( |  |\t|)",
            token in proptest::collection::vec(proptest::sample::select(b"aZ09-._~+/= \t\x80\xff!\"".to_vec()), 0..40),
        ) {
            let mut raw = scheme.into_bytes();
            raw.extend_from_slice(sep.as_bytes());
            raw.extend_from_slice(&token);
            if let Ok(value) = http::HeaderValue::from_bytes(&raw) {
                let mut p = parts(&[]);
                p.headers.insert(AUTHORIZATION, value.clone());
                proptest::prop_assert_eq!(bearer(&p), bearer_by_text(&value));
            }
        }
    }

    #[test]
    fn finds_bearer_tokens() {
        assert_eq!(bearer(&parts(&[])), Presented::Absent);
        assert_eq!(bearer(&parts(&[("authorization", "Bearer a.b.c")])), Presented::Token("a.b.c"));
        assert_eq!(bearer(&parts(&[("authorization", "bearer  abc==")])), Presented::Token("abc=="));
        assert_eq!(bearer(&parts(&[("authorization", "Basic dXNlcjpwdw==")])), Presented::Absent);
        assert_eq!(bearer(&parts(&[("authorization", "Bearer a b")])), Presented::Malformed);
        assert_eq!(bearer(&parts(&[("authorization", "Bearer ")])), Presented::Absent);
        let two = parts(&[("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")]);
        assert_eq!(bearer(&two), Presented::Malformed);
    }

    #[test]
    fn finds_cookies() {
        let p = parts(&[("cookie", "theme=dark; session=a.b.c"), ("cookie", "x=1")]);
        assert_eq!(cookie(&p, "session"), Presented::Token("a.b.c"));
        assert_eq!(cookie(&p, "other"), Presented::Absent);
        let dup = parts(&[("cookie", "session=a.b.c; session=d.e.f")]);
        assert_eq!(cookie(&dup, "session"), Presented::Malformed);
    }

    #[test]
    fn maps_claims() {
        let claims = json!({
            "sub": "alice", "scope": "read write", "scp": ["write", "admin"],
            "realm_access": {"roles": ["reader"]}, "org": {"id": "acme"}
        });
        let Value::Object(claims) = claims else { unreachable!() };
        let m = Mapping { roles_claim: Some("realm_access.roles".into()), tenant_claim: Some("org.id".into()) };
        let p = m.principal(PrincipalKind::Jwt, claims).unwrap();
        assert_eq!(p.id, "alice");
        assert_eq!(p.roles, ["reader"]);
        assert_eq!(p.scopes, ["read", "write", "admin"]);
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        let Value::Object(client) = json!({"client_id": "svc"}) else { unreachable!() };
        assert_eq!(Mapping::default().principal(PrincipalKind::Jwt, client).unwrap().id, "svc");
        let Value::Object(nobody) = json!({"sub": 5}) else { unreachable!() };
        assert!(Mapping::default().principal(PrincipalKind::Jwt, nobody).is_err());
    }

    #[test]
    fn cnf_forms() {
        let c = |v: Value| cnf(v.as_object().unwrap());
        assert_eq!(c(json!({})), Ok((None, None)));
        assert_eq!(c(json!({"cnf": {"x5t#S256": "abc"}})), Ok((Some(Arc::from("abc")), None)));
        assert_eq!(c(json!({"cnf": {"jkt": "abc"}})), Ok((None, Some(Arc::from("abc")))));
        assert_eq!(c(json!({"cnf": {"jkt": 5}})), Err("unsupported_cnf"));
        assert_eq!(c(json!({"cnf": {"other": "x"}})), Err("unsupported_cnf"));
        assert_eq!(c(json!({"cnf": "x"})), Err("malformed_cnf"));
    }
}
