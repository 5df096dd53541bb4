//! The compact JWS (RFC 7515) as we read it, and the claim checks of RFC 7519 / RFC 8725.
//!
//! We parse the header ourselves rather than trusting a library's lenient reading: `alg` must be one
//! of the issuer's pinned algorithms (so `none` never is), an unknown `crit` refuses the token, and
//! `jku`, `x5u`, `jwk` and `x5c` are never read: keys come only from the configuration.

use super::claims::{numeric_date, Claims};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

/// The algorithm names we accept in configuration and in `alg` (exact, case-sensitive: RFC 7518).
pub fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        _ => return None,
    })
}

/// The header members we look at. Serde refuses a duplicate of any of them, so two `alg`s cannot be
/// read one way here and another way elsewhere.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
    b64: Option<Value>,
    enc: Option<Value>,
    zip: Option<Value>,
}

/// A compact JWS split into its parts, with a checked header.
#[derive(Debug)]
pub struct Jws<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// `header.payload`, the signed bytes.
    pub signing_input: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

fn is_base64url(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits and checks a token; `pinned` are the issuer's algorithms.
pub fn parse<'a>(token: &'a str, pinned: &[Algorithm]) -> Result<Jws<'a>, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed_token");
    };
    if !is_base64url(h) || !is_base64url(payload) || !is_base64url(signature) {
        return Err("malformed_token");
    }
    let raw = URL_SAFE_NO_PAD.decode(h).map_err(|_| "malformed_token")?;
    // Read as a whole object first: serde passes over the members a struct does not name without
    // checking them (invalid UTF-8, lone surrogates), reads a JSON array as a struct, and takes
    // `"crit": null` for no `crit` at all. Other JWT libraries refuse all three.
    let object: serde_json::Map<String, Value> = serde_json::from_slice(&raw).map_err(|_| "malformed_header")?;
    if object.contains_key("crit") {
        return Err("unsupported_crit");
    }
    if object.contains_key("enc") || object.contains_key("zip") {
        return Err("malformed_header");
    }
    // Then by name, which also refuses a repeated member (the object above keeps the last one).
    let header: RawHeader = serde_json::from_slice(&raw).map_err(|_| "malformed_header")?;
    if header.crit.is_some() {
        // We implement no header extension, so every `crit` names one we do not understand (RFC 7515
        // §4.1.11: the token must then be refused).
        return Err("unsupported_crit");
    }
    if header.enc.is_some() || header.zip.is_some() || header.b64.is_some_and(|b| b != Value::Bool(true)) {
        return Err("malformed_header");
    }
    let alg = match header.alg {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => return Err("alg_none"),
        Some(Value::String(name)) => algorithm(&name).ok_or("alg_not_allowed")?,
        _ => return Err("malformed_header"),
    };
    if !pinned.contains(&alg) {
        return Err("alg_not_allowed");
    }
    let kid = match header.kid {
        None => None,
        Some(Value::String(k)) if k.len() <= 256 => Some(k),
        Some(_) => return Err("malformed_header"),
    };
    let signing_input = &token[..h.len() + 1 + payload.len()];
    Ok(Jws { alg, kid, signing_input, payload, signature })
}

/// The decoded claims set (must be a JSON object).
pub fn claims(payload: &str) -> Result<Claims, &'static str> {
    let raw = URL_SAFE_NO_PAD.decode(payload).map_err(|_| "malformed_claims")?;
    serde_json::from_slice::<Claims>(&raw).map_err(|_| "malformed_claims")
}

/// The claim rules of one issuer.
#[derive(Debug, Clone)]
pub struct Rules {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: i64,
    /// Seconds since `iat` after which a token is refused, however long its `exp`.
    pub max_age: Option<i64>,
    pub required: Vec<String>,
}

impl Rules {
    /// `iss` is exactly this issuer.
    pub fn is_issuer(&self, c: &Claims) -> bool {
        matches!(c.get("iss"), Some(Value::String(iss)) if *iss == self.issuer)
    }

    /// Checks the claims at `now`; returns when a verified token stops being servable from the cache
    /// (its `exp`, or `iat + max_age` when sooner).
    pub fn check(&self, c: &Claims, now: i64) -> Result<i64, &'static str> {
        if !self.is_issuer(c) {
            return Err("wrong_issuer");
        }
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => self.audiences.contains(a),
            Some(Value::Array(list)) => {
                list.iter().any(|a| a.as_str().is_some_and(|a| self.audiences.iter().any(|x| x == a)))
            }
            _ => false,
        };
        if !aud_ok {
            return Err("wrong_audience");
        }
        let exp = numeric_date(c.get("exp")).map_err(|_| "malformed_claims")?.ok_or("missing_exp")?;
        let nbf = numeric_date(c.get("nbf")).map_err(|_| "malformed_claims")?;
        let iat = numeric_date(c.get("iat")).map_err(|_| "malformed_claims")?;
        if now >= exp.saturating_add(self.leeway) {
            return Err("expired");
        }
        if nbf.is_some_and(|nbf| now.saturating_add(self.leeway) < nbf) {
            return Err("not_yet_valid");
        }
        if iat.is_some_and(|iat| now.saturating_add(self.leeway) < iat) {
            return Err("issued_in_future");
        }
        let mut until = exp;
        if let Some(max_age) = self.max_age {
            let iat = iat.ok_or("missing_iat")?;
            let end = iat.saturating_add(max_age);
            if now >= end.saturating_add(self.leeway) {
                return Err("too_old");
            }
            until = until.min(end);
        }
        for name in &self.required {
            if c.get(name).is_none_or(Value::is_null) {
                return Err("missing_required_claim");
            }
        }
        Ok(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn token(header: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&json!({"sub": "a"})))
    }

    #[test]
    fn header_checks() {
        let pinned = [Algorithm::RS256];
        let ok = token(json!({"alg": "RS256", "kid": "k1", "jku": "http://evil", "jwk": {"kty": "oct"}}));
        let jws = parse(&ok, &pinned).unwrap();
        assert_eq!((jws.alg, jws.kid.as_deref()), (Algorithm::RS256, Some("k1")));
        assert_eq!(jws.signing_input.matches('.').count(), 1);
        assert_eq!(parse(&token(json!({"alg": "none"})), &pinned).unwrap_err(), "alg_none");
        assert_eq!(parse(&token(json!({"alg": "NoNe"})), &pinned).unwrap_err(), "alg_none");
        assert_eq!(parse(&token(json!({"alg": "HS256"})), &pinned).unwrap_err(), "alg_not_allowed");
        assert_eq!(parse(&token(json!({"alg": "rs256"})), &pinned).unwrap_err(), "alg_not_allowed");
        assert_eq!(parse(&token(json!({"alg": "RS256", "crit": ["exp"]})), &pinned).unwrap_err(), "unsupported_crit");
        assert_eq!(parse(&token(json!({"alg": "RS256", "kid": 7})), &pinned).unwrap_err(), "malformed_header");
        assert_eq!(parse(&token(json!({"kid": "x"})), &pinned).unwrap_err(), "malformed_header");
        let dup = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","alg":"none"}"#), b64(&json!({})));
        assert_eq!(parse(&dup, &pinned).unwrap_err(), "malformed_header");
        // Found by the jwt_token fuzz target: members we do not read must still be valid JSON text, the
        // header must be an object, and a `crit` (or `enc`, `zip`) refuses even when null.
        let raw = |h: &[u8]| format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(h), b64(&json!({})));
        for bad in [
            &b"{\"alg\":\"RS256\",\"typ\":\"\xff\xfe\"}"[..],
            br#"{"alg":"RS256","typ":"\ud800"}"#,
            br#"["RS256",null,null,null,null,null]"#,
            br#"{"alg":"RS256","enc":null}"#,
            br#"{"alg":"RS256","zip":null}"#,
        ] {
            assert_eq!(parse(&raw(bad), &pinned).unwrap_err(), "malformed_header", "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&raw(br#"{"alg":"RS256","crit":null}"#), &pinned).unwrap_err(), "unsupported_crit");
        assert!(parse(&raw(br#"{"alg":"RS256","typ":"JWT","x":"\ud83d\ude00"}"#), &pinned).is_ok());
        assert_eq!(parse("a.b", &pinned).unwrap_err(), "malformed_token");
        assert_eq!(parse("a.b.c.d.e", &pinned).unwrap_err(), "malformed_token");
        assert_eq!(parse("a.b.", &pinned).unwrap_err(), "malformed_token");
        assert_eq!(parse("a+.b.c", &pinned).unwrap_err(), "malformed_token");
        assert_eq!(parse("e30.e30.c2ln", &pinned).unwrap_err(), "malformed_header");
    }

    fn rules() -> Rules {
        Rules {
            issuer: "https://idp".into(),
            audiences: vec!["api".into()],
            leeway: 30,
            max_age: None,
            required: vec!["sub".into()],
        }
    }

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claim_checks() {
        let r = rules();
        let base = json!({"iss": "https://idp", "aud": ["x", "api"], "exp": 1000, "sub": "a"});
        assert_eq!(r.check(&claims(base.clone()), 900), Ok(1000));
        assert_eq!(r.check(&claims(base.clone()), 1029), Ok(1000), "within leeway");
        assert_eq!(r.check(&claims(base.clone()), 1030), Err("expired"));
        let mut c = claims(base.clone());
        c.insert("iss".into(), json!("https://idp/"));
        assert_eq!(r.check(&c, 900), Err("wrong_issuer"));
        let mut c = claims(base.clone());
        c.insert("aud".into(), json!("other"));
        assert_eq!(r.check(&c, 900), Err("wrong_audience"));
        let mut c = claims(base.clone());
        c.insert("nbf".into(), json!(950));
        assert_eq!(r.check(&c, 900), Err("not_yet_valid"));
        assert!(r.check(&c, 921).is_ok());
        let mut c = claims(base.clone());
        c.remove("exp");
        assert_eq!(r.check(&c, 900), Err("missing_exp"));
        let mut c = claims(base.clone());
        c.insert("exp".into(), json!("1000"));
        assert_eq!(r.check(&c, 900), Err("malformed_claims"));
        let mut c = claims(base.clone());
        c.remove("sub");
        assert_eq!(r.check(&c, 900), Err("missing_required_claim"));
        let aged = Rules { max_age: Some(60), ..rules() };
        assert_eq!(aged.check(&claims(base.clone()), 900), Err("missing_iat"));
        let mut c = claims(base);
        c.insert("iat".into(), json!(880));
        assert_eq!(aged.check(&c, 900), Ok(940));
        assert_eq!(aged.check(&c, 970), Err("too_old"));
    }
}
