//! Body fields as limit keys (`key: ["body:/username"]`): the username of an upstream's own login
//! endpoint, so password spraying and user enumeration against logins the gateway does not own are
//! limited per target account, whatever address they come from.
//!
//! The body is read whole under a small bound ([`MAX_BYTES`]) before the limit decides. Parsers
//! disagree about repeated names (the first or the last wins, with or without regard to case), and an
//! attacker who could make the gateway count one username while the upstream logs in another would
//! evade the limit: a JSON object or a form with a name twice, in any case, is refused (400), and so
//! is malformed JSON. A body of another media type is refused (415): it would name its account where
//! the gateway cannot see it.

use crate::exchange::Reject;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;

/// The most body bytes read for a limit key (a login form is far smaller).
pub const MAX_BYTES: u64 = 64 * 1024;

/// The values of the body fields some key reads (`None`: absent, or not a string or number).
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, Option<String>)>);

impl Fields {
    pub fn get(&self, pointer: &str) -> Option<&str> {
        self.0.iter().find(|(p, _)| p == pointer).and_then(|(_, v)| v.as_deref())
    }

    /// Reads `pointers` from `body` (its `Content-Type` in `content_type`).
    pub fn read<'p>(
        content_type: Option<&str>,
        body: &[u8],
        pointers: impl Iterator<Item = &'p str>,
    ) -> Result<Fields, Reject> {
        let pointers: Vec<&str> = pointers.collect();
        if body.is_empty() {
            return Ok(Fields(pointers.iter().map(|p| ((*p).to_owned(), None)).collect()));
        }
        let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media == "application/json" || (media.starts_with("application/") && media.ends_with("+json")) {
            let Strict(value) = serde_json::from_slice::<Strict>(body).map_err(|e| Reject::MalformedJson {
                offset: body_offset(body, e.line(), e.column()),
                reason: "malformed JSON or a name given twice",
            })?;
            let fields = pointers
                .iter()
                .map(|p| {
                    let v = match value.pointer(p) {
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    };
                    ((*p).to_owned(), v)
                })
                .collect();
            return Ok(Fields(fields));
        }
        if media == "application/x-www-form-urlencoded" {
            let mut seen = HashSet::new();
            let mut pairs = Vec::new();
            for (k, v) in form_pairs(body) {
                if !seen.insert(fold(&k)) {
                    return Err(Reject::BadRequest("a form field is given twice"));
                }
                pairs.push((k, v));
            }
            let fields = pointers
                .iter()
                .map(|p| {
                    let name = &p[1..];
                    let v = pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
                    ((*p).to_owned(), v)
                })
                .collect();
            return Ok(Fields(fields));
        }
        Err(Reject::UnsupportedMediaType)
    }
}

/// A name as case-insensitive parsers compare it: upper then lower case, so `ſ` is `s` and the Kelvin
/// sign is `k` (.NET's ordinal ignore-case, Go's `EqualFold`).
fn fold(name: &str) -> String {
    name.to_uppercase().to_lowercase()
}

/// `application/x-www-form-urlencoded` pairs: `+` is a space, then percent-decoding (lossy UTF-8).
fn form_pairs(body: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    body.split(|b| *b == b'&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let decode = |s: &[u8]| {
            let spaced: Vec<u8> = s.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
            String::from_utf8_lossy(&percent_encoding::percent_decode(&spaced).collect::<Vec<u8>>()).into_owned()
        };
        (decode(k), decode(v))
    })
}

/// The byte offset of a (1-based) line and column in `body`.
fn body_offset(body: &[u8], line: usize, column: usize) -> u64 {
    let mut offset = 0usize;
    for (i, l) in body.split(|b| *b == b'\n').enumerate() {
        if i + 1 == line {
            return (offset + column.saturating_sub(1)) as u64;
        }
        offset += l.len() + 1;
    }
    offset as u64
}

/// A JSON value whose objects never name a key twice, in any case.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen.insert(fold(&k)) {
                return Err(de::Error::custom("a name is given twice"));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(serde_json::Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn read(ct: &str, body: &str) -> Result<Option<String>, Reject> {
        Fields::read(Some(ct), body.as_bytes(), ["/user"].into_iter()).map(|f| f.get("/user").map(str::to_owned))
    }

    #[test]
    fn json_and_form_fields_and_every_ambiguity_refused() {
        assert_eq!(read("application/json", r#"{"user":"alice","pw":"x"}"#).unwrap().as_deref(), Some("alice"));
        assert_eq!(read("application/json; charset=utf-8", r#"{"user":42}"#).unwrap().as_deref(), Some("42"));
        assert_eq!(read("application/json", r#"{"pw":"x"}"#).unwrap(), None);
        assert_eq!(read("application/json", r#"{"user":{"id":"x"}}"#).unwrap(), None);
        assert_eq!(
            read("application/x-www-form-urlencoded", "user=al%69ce+b&pw=x").unwrap().as_deref(),
            Some("alice b")
        );
        for (ct, body) in [
            ("application/json", r#"{"user":"victim","user":"me"}"#),
            ("application/json", r#"{"user":"victim","User":"me"}"#),
            ("application/json", "{\"user\":\"victim\",\"u\u{17f}er\":\"me\"}"),
            ("application/json", r#"{"a":{"b":1,"B":2},"user":"x"}"#),
            ("application/json", r#"{"user":"x""#),
            ("application/x-www-form-urlencoded", "user=victim&user=me"),
            ("application/x-www-form-urlencoded", "user=victim&USER=me"),
            ("text/plain", "user=victim"),
            ("multipart/form-data; boundary=x", "--x"),
        ] {
            assert!(read(ct, body).is_err(), "{ct} {body}");
        }
        assert!(matches!(
            read("application/json", "{\n\"user\":\"a\",\n\"user\":1}"),
            Err(Reject::MalformedJson { .. })
        ));
        // No body: the key falls back to the client's address.
        assert_eq!(Fields::read(Some("application/json"), b"", ["/user"].into_iter()).unwrap().get("/user"), None);
    }
}
