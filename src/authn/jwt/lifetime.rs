//! `max_lifetime`: a token minted to live longer than this (`exp - iat`) is a finding, not a credential.
//! Checked with the other claims, before a token is cached, so the cache never holds such a token.

use super::claims::{numeric_date, Claims};

/// Refuses a token whose `exp - iat` exceeds `max` seconds (`lifetime_too_long`), or that does not
/// say when it was issued (`missing_iat`) or when it expires (`missing_exp`): its lifetime is unknown.
pub fn check(claims: &Claims, max: i64) -> Result<(), &'static str> {
    let iat = numeric_date(claims.get("iat")).map_err(|_| "malformed_claims")?.ok_or("missing_iat")?;
    let exp = numeric_date(claims.get("exp")).map_err(|_| "malformed_claims")?.ok_or("missing_exp")?;
    if exp.saturating_sub(iat) > max {
        return Err("lifetime_too_long");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{json, Value};

    fn c(v: Value) -> Claims {
        let Value::Object(m) = v else { unreachable!() };
        m
    }

    #[test]
    fn lifetime_boundaries() {
        assert_eq!(check(&c(json!({"iat": 1000, "exp": 4600})), 3600), Ok(()));
        assert_eq!(check(&c(json!({"iat": 1000, "exp": 4601})), 3600), Err("lifetime_too_long"));
        assert_eq!(check(&c(json!({"iat": 1000.9, "exp": 4600.5})), 3600), Ok(()));
        assert_eq!(check(&c(json!({"exp": 4600})), 3600), Err("missing_iat"));
        assert_eq!(check(&c(json!({"iat": 1000})), 3600), Err("missing_exp"));
        assert_eq!(check(&c(json!({"iat": "1000", "exp": 4600})), 3600), Err("malformed_claims"));
        assert_eq!(check(&c(json!({"iat": i64::MIN, "exp": i64::MAX})), 3600), Err("lifetime_too_long"));
        // A token that expires before it was issued has no lifetime to speak of; `exp` refuses it anyway.
        assert_eq!(check(&c(json!({"iat": 5000, "exp": 4600})), 3600), Ok(()));
    }
}
