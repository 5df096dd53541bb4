//! The structured fields of a signed request, parsed with `sfv` (RFC 8941) into typed values:
//! `Signature-Input` and `Signature` (RFC 9421 §4) and `Content-Digest` (RFC 9530). Anything that is
//! not what the RFCs allow is refused with a reason code; nothing here panics on input.

use super::base::Component;
use sfv::{BareItem, Dictionary, ListEntry, ListSerializer, Parser, Version};
use std::collections::HashMap;

/// Most components one signature may cover; more is refused rather than processed.
const MAX_COMPONENTS: usize = 32;
/// Most signatures one request may carry.
const MAX_SIGNATURES: usize = 8;

/// One member of `Signature-Input`: what a signature covers and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureInput {
    pub label: String,
    pub components: Vec<Component>,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub keyid: Option<String>,
    pub alg: Option<String>,
    pub tag: Option<String>,
    /// The canonical serialization of the inner list and its parameters: the `@signature-params` value.
    pub params_line: String,
}

fn dictionary(value: &str) -> Result<Dictionary, &'static str> {
    Parser::new(value).with_version(Version::Rfc8941).parse::<Dictionary>().map_err(|_| "malformed_signature")
}

/// Parses a (combined) `Signature-Input` field value.
pub fn parse_inputs(value: &str) -> Result<Vec<SignatureInput>, &'static str> {
    let dict = dictionary(value)?;
    if dict.is_empty() || dict.len() > MAX_SIGNATURES {
        return Err("malformed_signature");
    }
    dict.iter().map(|(label, entry)| input(label.as_str(), entry)).collect()
}

fn input(label: &str, entry: &ListEntry) -> Result<SignatureInput, &'static str> {
    let ListEntry::InnerList(list) = entry else { return Err("malformed_signature") };
    if list.items.len() > MAX_COMPONENTS {
        return Err("malformed_signature");
    }
    let mut components = Vec::with_capacity(list.items.len());
    for item in &list.items {
        let BareItem::String(name) = &item.bare_item else { return Err("malformed_signature") };
        // Component parameters (`;sf`, `;key`, `;bs`, `;req`, `;name`) are not supported: refusing them is
        // safer than signing a base that differs from what the client meant.
        if !item.params.is_empty() {
            return Err("unsupported_component");
        }
        let c = Component::parse(name.as_str())?;
        // RFC 9421 §2.5: a component listed twice makes the signature invalid.
        if components.contains(&c) {
            return Err("malformed_signature");
        }
        components.push(c);
    }
    let mut si = SignatureInput {
        label: label.to_owned(),
        components,
        created: None,
        expires: None,
        nonce: None,
        keyid: None,
        alg: None,
        tag: None,
        params_line: String::new(),
    };
    for (key, value) in &list.params {
        match key.as_str() {
            "created" => si.created = Some(integer(value)?),
            "expires" => si.expires = Some(integer(value)?),
            "nonce" => si.nonce = Some(string(value)?),
            "keyid" => si.keyid = Some(string(value)?),
            "alg" => si.alg = Some(string(value)?),
            "tag" => si.tag = Some(string(value)?),
            // Other parameters are covered by the signature (they are in `@signature-params`) and ignored.
            _ => {}
        }
    }
    let mut ser = ListSerializer::new();
    ser.members([entry]);
    si.params_line = ser.finish().ok_or("malformed_signature")?;
    Ok(si)
}

fn integer(v: &BareItem) -> Result<i64, &'static str> {
    v.as_integer().map(i64::from).ok_or("malformed_signature")
}

fn string(v: &BareItem) -> Result<String, &'static str> {
    v.as_string().map(|s| s.as_str().to_owned()).ok_or("malformed_signature")
}

/// Parses a (combined) `Signature` field value: label → signature bytes.
pub fn parse_signatures(value: &str) -> Result<HashMap<String, Vec<u8>>, &'static str> {
    let dict = dictionary(value)?;
    if dict.len() > MAX_SIGNATURES {
        return Err("malformed_signature");
    }
    dict.into_iter()
        .map(|(label, entry)| match entry {
            ListEntry::Item(item) => match item.bare_item {
                BareItem::ByteSequence(bytes) => Ok((label.as_str().to_owned(), bytes)),
                _ => Err("malformed_signature"),
            },
            ListEntry::InnerList(_) => Err("malformed_signature"),
        })
        .collect()
}

/// A `Content-Digest` algorithm we verify (RFC 9530 §5: the two that are not deprecated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlg {
    Sha256,
    Sha512,
}

/// Parses a (combined) `Content-Digest` field value into the digests we can check. Unknown algorithms
/// are skipped (RFC 9530 §2); a known one whose value is not a byte sequence is malformed.
pub fn parse_content_digest(value: &str) -> Result<Vec<(DigestAlg, Vec<u8>)>, &'static str> {
    let dict =
        Parser::new(value).with_version(Version::Rfc8941).parse::<Dictionary>().map_err(|_| "malformed_digest")?;
    let mut out = Vec::new();
    for (alg, entry) in dict {
        let alg = match alg.as_str() {
            "sha-256" => DigestAlg::Sha256,
            "sha-512" => DigestAlg::Sha512,
            _ => continue,
        };
        match entry {
            ListEntry::Item(item) => match item.bare_item {
                BareItem::ByteSequence(bytes) => out.push((alg, bytes)),
                _ => return Err("malformed_digest"),
            },
            ListEntry::InnerList(_) => return Err("malformed_digest"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_input_round_trips() {
        let v = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
        let inputs = parse_inputs(v).unwrap();
        assert_eq!(inputs.len(), 1);
        let si = &inputs[0];
        assert_eq!(si.label, "sig-b26");
        assert_eq!(si.components.len(), 6);
        assert_eq!(si.created, Some(1618884473));
        assert_eq!(si.keyid.as_deref(), Some("test-key-ed25519"));
        assert_eq!(si.params_line, v.strip_prefix("sig-b26=").unwrap());
        // Whitespace the serializer would not write is normalised away.
        let spaced = parse_inputs("a=( \"@method\"  \"@path\" );created=1;nonce=\"n\", b=()").unwrap();
        assert_eq!(spaced[0].params_line, "(\"@method\" \"@path\");created=1;nonce=\"n\"");
        assert_eq!(spaced[1].params_line, "()");
    }

    #[test]
    fn hostile_inputs_are_refused() {
        for bad in [
            "",
            "sig",
            "sig=1",
            "sig=(1 2)",
            "sig=(\"@method\" \"@method\")",
            "sig=(\"@method\";req)",
            "sig=(\"@query-param\";name=\"a\")",
            "sig=(\"@signature-params\")",
            "sig=(\"Content-Type\")",
            "sig=(\"bad header\")",
            "sig=(\"\")",
            "sig=();created=\"yesterday\"",
            "sig=();nonce=1",
            "sig=();keyid=tok",
            "sig=();created=1.5",
            "sig=(\"@method\"",
            "sig=(\"@method\") trailing",
            "sig=();created=@1",
            "\u{0}",
        ] {
            assert!(parse_inputs(bad).is_err(), "{bad:?} accepted");
        }
        let many = (0..40).map(|i| format!("\"h{i}\"")).collect::<Vec<_>>().join(" ");
        assert!(parse_inputs(&format!("s=({many})")).is_err());
        let labels = (0..9).map(|i| format!("s{i}=()")).collect::<Vec<_>>().join(", ");
        assert!(parse_inputs(&labels).is_err());
    }

    #[test]
    fn signatures_and_digests() {
        let s = parse_signatures("a=:AAEC:, b=:/w==:").unwrap();
        assert_eq!(s["a"], vec![0, 1, 2]);
        assert_eq!(s["b"], vec![255]);
        for bad in ["a=1", "a=\"x\"", "a=(:AA==:)", "a=:not base64!:", "a=:AA"] {
            assert!(parse_signatures(bad).is_err(), "{bad:?}");
        }
        let d = parse_content_digest("sha-256=:AA==:, md5=:AA==:, unixsum=1, sha-512=:AQ==:").unwrap();
        assert_eq!(d, vec![(DigestAlg::Sha256, vec![0]), (DigestAlg::Sha512, vec![1])]);
        assert!(parse_content_digest("sha-256=\"x\"").is_err());
        assert!(parse_content_digest("sha-256=(:AA==:)").is_err());
        assert!(parse_content_digest("sha-256=:AA==").is_err());
        assert_eq!(parse_content_digest("").unwrap(), vec![]);
    }

    proptest::proptest! {
        /// Arbitrary text never panics any of the parsers.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}", ascii in "[ -~]{0,200}") {
            for t in [&text, &ascii] {
                let _ = (parse_inputs(t), parse_signatures(t), parse_content_digest(t));
            }
        }

        /// What a client writes in canonical form is parsed back to the same components and parameters,
        /// and `@signature-params` is exactly the text the client signed.
        #[test]
        fn canonical_inputs_round_trip(
            picks in proptest::sample::subsequence(
                vec!["@method", "@target-uri", "@authority", "@path", "@query", "@scheme", "content-digest", "date", "x-a_b.c"],
                0..9,
            ),
            created in 0i64..=999_999_999_999_999,
            ttl in proptest::option::of(0i64..=86_400),
            nonce in "[A-Za-z0-9+/=_ -]{1,40}",
            keyid in "[ -!#-\\[\\]-~]{1,40}",
        ) {
            let list = picks.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(" ");
            let expires = ttl.map_or(String::new(), |t| format!(";expires={}", created + t));
            let inner = format!("({list});created={created}{expires};nonce=\"{nonce}\";keyid=\"{keyid}\"");
            let si = parse_inputs(&format!("sig1={inner}")).unwrap().remove(0);
            proptest::prop_assert_eq!(&si.params_line, &inner);
            proptest::prop_assert_eq!(si.components.iter().map(Component::name).collect::<Vec<_>>(), picks);
            proptest::prop_assert_eq!(si.created, Some(created));
            proptest::prop_assert_eq!(si.expires, ttl.map(|t| created + t));
            proptest::prop_assert_eq!(si.nonce.as_deref(), Some(nonce.as_str()));
            proptest::prop_assert_eq!(si.keyid.as_deref(), Some(keyid.as_str()));
        }
    }

    /// Cheap deterministic fuzzing: every prefix and single-byte mutation of valid fields parses or is
    /// refused, never panics.
    #[test]
    fn mutations_never_panic() {
        let seeds = [
            r#"sig1=("@method" "@target-uri" "content-digest");created=1618884473;expires=1618884773;nonce="b3k2pp5k7z";keyid="k1";alg="hmac-sha256";tag="app""#,
            "sig1=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:, sig2=:AA==:",
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:AA==:",
        ];
        let alphabet = b"\"();=:,@ \\a1-*?\x7f\x00";
        for seed in seeds {
            for n in 0..=seed.len() {
                if let Some(prefix) = seed.get(..n) {
                    let _ = (parse_inputs(prefix), parse_signatures(prefix), parse_content_digest(prefix));
                }
            }
            let bytes = seed.as_bytes();
            for i in 0..bytes.len() {
                for &b in alphabet {
                    let mut m = bytes.to_vec();
                    m[i] = b;
                    let m = String::from_utf8_lossy(&m);
                    let _ = (parse_inputs(&m), parse_signatures(&m), parse_content_digest(&m));
                }
            }
        }
    }
}
