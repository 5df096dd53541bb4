#![allow(clippy::unwrap_used)]
use super::*;

fn tokenizer(yaml: &str) -> Tokenizer {
    let fields: Vec<FieldConfig> = serde_yaml_ng::from_str(yaml).unwrap();
    let top: TokenizationConfig = serde_yaml_ng::from_str("{ key: 0123456789abcdef0123456789abcdef-test }").unwrap();
    Tokenizer::compile("r", &fields, Some(&top), Arc::new(Vault::memory(1000))).unwrap()
}

fn json(t: &Tokenizer, body: &str) -> Result<String, Reject> {
    t.rewrite(BodyKind::Json, body.as_bytes())
        .map(|o| o.map_or_else(|| body.to_owned(), |b| String::from_utf8(b).unwrap()))
}

fn form(t: &Tokenizer, body: &str) -> Result<String, Reject> {
    t.rewrite(BodyKind::Form, body.as_bytes())
        .map(|o| o.map_or_else(|| body.to_owned(), |b| String::from_utf8(b).unwrap()))
}

fn code(r: Reject) -> (String, &'static str) {
    match r {
        Reject::Invalid(i) => (i.errors[0].pointer.to_string(), i.errors[0].code),
        other => panic!("{other:?}"),
    }
}

const CARD: &str = "4111111111111111";

#[test]
fn config_is_checked() {
    let top: TokenizationConfig = serde_yaml_ng::from_str("{ key: short }").unwrap();
    let f: Vec<FieldConfig> = serde_yaml_ng::from_str("[{ pointer: /a, mode: tokenize }]").unwrap();
    let v = || Arc::new(Vault::memory(1));
    assert!(Tokenizer::compile("r", &f, Some(&top), v()).unwrap_err().contains("32 bytes"));
    assert!(Tokenizer::compile("r", &f, None, v()).is_err());
    let top: TokenizationConfig = serde_yaml_ng::from_str("{ key: 0123456789abcdef0123456789abcdef }").unwrap();
    for bad in [
        "[{ pointer: a, mode: tokenize }]",
        "[{ pointer: /a, form: a, mode: tokenize }]",
        "[{ mode: tokenize }]",
        "[{ pointer: /a, mode: format_preserving }]",
        "[{ pointer: /a, mode: format_preserving, mark: x9 }]",
        "[{ pointer: /a, mode: tokenize, mark: '99' }]",
        "[{ pointer: /a, mode: tokenize }, { pointer: /a, mode: encrypt }]",
        "[{ form: a, mode: tokenize, detokenize_roles: [r] }]",
        "[{ form: a, mode: tokenize, mask: x }]",
        "[{ pointer: /a, mode: tokenize, mask: '' }]",
    ] {
        let f: Vec<FieldConfig> = serde_yaml_ng::from_str(bad).unwrap();
        assert!(Tokenizer::compile("r", &f, Some(&top), v()).is_err(), "{bad}");
    }
    assert!(serde_yaml_ng::from_str::<Vec<FieldConfig>>("[{ pointer: /a, mode: tokenize, extra: 1 }]").is_err());
    assert!(serde_yaml_ng::from_str::<Vec<FieldConfig>>("[{ pointer: /a, mode: hash }]").is_err());
    assert!(serde_yaml_ng::from_str::<TokenizationConfig>("{ key: x, other: 1 }").is_err());
}

#[test]
fn json_fields_are_replaced_in_place() {
    let t = tokenizer("[{ pointer: /card/number, mode: tokenize }, { pointer: /items/*/ssn, mode: encrypt }]");
    let out = json(&t, &format!(r#"{{"a": 1, "card": {{"number": "{CARD}", "x": [1, "{{"]}}, "items": [{{"ssn": "123"}}, {{"ssn": "456"}}]}}"#)).unwrap();
    assert!(!out.contains(CARD) && !out.contains("\"123\"") && !out.contains("\"456\""), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tok = v["card"]["number"].as_str().unwrap();
    assert!(tok.starts_with("tok_"));
    assert_eq!(v["a"], 1);
    assert_eq!(v["card"]["x"], serde_json::json!([1, "{"]));
    assert!(v["items"][1]["ssn"].as_str().unwrap().starts_with("enc_"));
    // Deterministic, and idempotent.
    let again = json(&t, &format!(r#"{{"card": {{"number": "{CARD}"}}}}"#)).unwrap();
    assert!(again.contains(tok));
    let same = format!(r#"{{"card": {{"number": "{tok}"}}}}"#);
    assert_eq!(json(&t, &same).unwrap(), same);
    // Nothing to do: no copy.
    assert!(t.rewrite(BodyKind::Json, br#"{"b": {"number": "4111111111111111"}}"#).unwrap().is_none());
}

#[test]
fn hostile_json_is_refused() {
    let t = tokenizer("[{ pointer: /card_number, mode: tokenize }]");
    let dup = format!(r#"{{"card_number": "{CARD}", "card_number": "{CARD}"}}"#);
    assert!(matches!(json(&t, &dup), Err(Reject::MalformedJson { .. })));
    let case = format!(r#"{{"Card_Number": "{CARD}"}}"#);
    assert_eq!(code(json(&t, &case).unwrap_err()), ("/Card_Number".into(), "case-variant"));
    // Unicode case mappings that case-insensitive binders follow: long s upper-cases to S.
    let ssn = tokenizer("[{ pointer: /ssn, mode: tokenize }, { form: ssn, mode: tokenize }]");
    assert_eq!(code(json(&ssn, r#"{"\u017fsn": "123-45-6789"}"#).unwrap_err()), ("/\u{17f}sn".into(), "case-variant"));
    assert_eq!(code(form(&ssn, "%C5%BFsn=123-45-6789").unwrap_err()).1, "case-variant");
    let escaped = format!(r#"{{"card\u005fnumber": "{CARD}"}}"#);
    let out = json(&t, &escaped).unwrap();
    assert!(!out.contains(CARD) && out.contains("tok_"), "{out}");
    assert_eq!(code(json(&t, r#"{"card_number": 4111111111111111}"#).unwrap_err()).1, "type");
    assert_eq!(code(json(&t, r#"{"card_number": {"x": 1}}"#).unwrap_err()).1, "type");
    assert_eq!(code(json(&t, r#"{"card_number": true}"#).unwrap_err()).1, "type");
    assert_eq!(json(&t, r#"{"card_number": null}"#).unwrap(), r#"{"card_number": null}"#);
    assert_eq!(code(json(&t, r#"{"card_number": "tok_AAAA"}"#).unwrap_err()).1, "invalid-token");
    let huge = format!(r#"{{"card_number": "{}"}}"#, "1".repeat(5000));
    assert_eq!(code(json(&t, &huge).unwrap_err()).1, "too-long");
    assert!(matches!(json(&t, r#"{'card_number': 1}"#), Err(Reject::MalformedJson { .. })));
    assert!(matches!(json(&t, r#"{"a": 1} x"#), Err(Reject::MalformedJson { .. })));
    // Escaped content in the value is decoded before it is tokenized.
    let a = json(&t, r#"{"card_number": "4111\u0031"}"#).unwrap();
    let b = json(&t, r#"{"card_number": "41111"}"#).unwrap();
    assert_eq!(a, b);
}

#[test]
fn many_keys_stay_linear() {
    let t = tokenizer("[{ pointer: /card_number, mode: tokenize }]");
    let mut body = String::from("{");
    for i in 0..200_000 {
        body.push_str(&format!("\"k{i}\":{i},"));
    }
    body.push_str(&format!("\"card_number\":\"{CARD}\"}}"));
    let began = std::time::Instant::now();
    let out = json(&t, &body).unwrap();
    assert!(!out.contains(CARD));
    assert!(began.elapsed() < std::time::Duration::from_secs(20), "{:?}", began.elapsed());
    let dup = body.replacen("\"k199999\"", "\"k5\"", 1);
    assert!(matches!(json(&t, &dup), Err(Reject::MalformedJson { .. })));
}

#[test]
fn format_preserving_cards() {
    let t = tokenizer("[{ pointer: /card, mode: format_preserving, mark: '99' }]");
    let out = json(&t, &format!(r#"{{"card": "{CARD}"}}"#)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tok = v["card"].as_str().unwrap().to_owned();
    assert_eq!(tok.len(), 16);
    assert!(tok.starts_with("99") && tok.ends_with("1111") && cipher::luhn_valid(tok.as_bytes()));
    assert_eq!(json(&t, &format!(r#"{{"card": "{CARD}"}}"#)).unwrap(), out);
    let f = &t.fields()[0];
    assert_eq!(t.reveal(f, &tok).as_deref(), Some(CARD));
    assert_eq!(code(json(&t, r#"{"card": "4111111111111112"}"#).unwrap_err()), ("/card".into(), "luhn"));
    assert_eq!(code(json(&t, r#"{"card": "4111 1111 1111 1111"}"#).unwrap_err()).1, "digits");
    assert_eq!(code(json(&t, r#"{"card": "411111"}"#).unwrap_err()).1, "length");
    // Already a token: left alone.
    let again = format!(r#"{{"card": "{tok}"}}"#);
    assert_eq!(json(&t, &again).unwrap(), again);
    // A number that only carries the mark is not a token: it is protected too.
    let lookalike = json(&t, r#"{"card": "9900000000000002"}"#).unwrap();
    assert!(!lookalike.contains("9900000000000002"), "{lookalike}");
    // Distinct cards with the same tail get distinct tokens.
    let other = json(&t, r#"{"card": "5555555555554444"}"#).unwrap();
    assert_ne!(other, out);
}

#[test]
fn full_vault_is_503() {
    let fields: Vec<FieldConfig> =
        serde_yaml_ng::from_str("[{ pointer: /c, mode: format_preserving, mark: '99' }]").unwrap();
    let top: TokenizationConfig = serde_yaml_ng::from_str("{ key: 0123456789abcdef0123456789abcdef }").unwrap();
    let t = Tokenizer::compile("r", &fields, Some(&top), Arc::new(Vault::memory(1))).unwrap();
    json(&t, &format!(r#"{{"c": "{CARD}"}}"#)).unwrap();
    assert_eq!(json(&t, r#"{"c": "5500000000000004"}"#).unwrap_err(), Reject::StoreUnavailable);
}

#[test]
fn form_fields() {
    let t = tokenizer("[{ form: card_number, mode: tokenize }]");
    let out = form(&t, &format!("a=1&card_number={CARD}&b=%20")).unwrap();
    assert!(out.starts_with("a=1&card_number=tok_") && out.ends_with("&b=%20"), "{out}");
    let pct = form(&t, &format!("card%5Fnumber={CARD}")).unwrap();
    assert!(!pct.contains(CARD), "{pct}");
    assert_eq!(code(form(&t, &format!("card_number={CARD}&card_number=1")).unwrap_err()).1, "repeated");
    assert_eq!(code(form(&t, &format!("Card_Number={CARD}")).unwrap_err()).1, "case-variant");
    assert_eq!(code(form(&t, &format!("card_number[]={CARD}")).unwrap_err()).1, "case-variant");
    assert_eq!(code(form(&t, &format!("a=1;card_number={CARD}")).unwrap_err()).1, "separator");
    assert_eq!(code(form(&t, "card_number=%FF").unwrap_err()).1, "encoding");
    assert_eq!(form(&t, "a=1&b").unwrap(), "a=1&b");
    let plus = form(&t, "card_number=41+11").unwrap();
    let space = form(&t, "card_number=41%2011").unwrap();
    assert_eq!(plus, space);
}

/// Names PHP files under the field (leading spaces dropped; ` `, `.`, an unclosed `[` made `_`), control
/// characters and NULs (a C-string end, or UTF-16 in disguise): refused, never passed on untokenized.
#[test]
fn form_names_an_upstream_would_rename_are_refused() {
    let t = tokenizer("[{ form: card_number, mode: tokenize }, { form: card, mode: tokenize }]");
    for name in [
        "+card",
        "%20card",
        "++card",
        "card.number",
        "card+number",
        "card%20number",
        "card[number",
        "Card.Number",
        "+card_number",
        "%20card_number[]",
        "+Card",
    ] {
        let err = code(form(&t, &format!("a=1&{name}={CARD}")).unwrap_err());
        assert_eq!(err.1, "renamed", "{name}");
        assert!(err.0 == "card" || err.0 == "card_number", "{name}: {err:?}");
    }
    assert_eq!(code(form(&t, &format!("card.number={CARD}")).unwrap_err()), ("card_number".into(), "renamed"));
    assert_eq!(code(form(&t, &format!("+card={CARD}")).unwrap_err()), ("card".into(), "renamed"));
    for name in ["card%00", "card_number%00x", "%00card", "card%09", "card%0Anumber", "card%7F", "card%C2%85"] {
        let err = code(form(&t, &format!("{name}={CARD}")).unwrap_err()).1;
        assert!(err == "nul" || err == "control-character", "{name}: {err}");
    }
    assert_eq!(code(form(&t, "card%7F=1").unwrap_err()).1, "control-character");
    assert_eq!(code(form(&t, &format!("card={CARD}%00")).unwrap_err()).1, "nul");
    assert_eq!(code(form(&t, &format!("a=%00&card={CARD}")).unwrap_err()).1, "nul");
    assert_eq!(code(t.rewrite(BodyKind::Form, b"a=\0&card=1").unwrap_err()).1, "nul");
    // The UTF-16BE spelling of `card=`, were the charset let through.
    assert_eq!(code(form(&t, &format!("%00c%00a%00r%00d%00={CARD}")).unwrap_err()).1, "nul");
    // Names that only look alike stay other fields, and the exact names are still tokenized.
    let out = form(&t, &format!("card_=1&xcard=2&card_number_x=3&card.=4&card={CARD}")).unwrap();
    assert!(!out.contains(CARD) && out.starts_with("card_=1&xcard=2&card_number_x=3&card.=4&card=tok_"), "{out}");
}

#[test]
fn heads_that_cannot_be_read_are_415() {
    let t = tokenizer("[{ pointer: /a, mode: tokenize }]");
    let h = |pairs: &[(&'static str, &'static str)]| {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, http::HeaderValue::from_static(v));
        }
        m
    };
    assert_eq!(t.check_head(&h(&[("content-type", "application/json")])), Ok(BodyKind::Json));
    assert_eq!(t.check_head(&h(&[("content-type", "application/merge-patch+json")])), Ok(BodyKind::Json));
    for fine in
        ["application/json; charset=utf-8", "application/json;charset=\"UTF-8\"", "application/json; CharSet=US-ASCII"]
    {
        assert_eq!(t.check_head(&h(&[("content-type", fine)])), Ok(BodyKind::Json), "{fine}");
    }
    let f = tokenizer("[{ form: card, mode: tokenize }]");
    let form_type = "application/x-www-form-urlencoded";
    assert_eq!(f.check_head(&h(&[("content-type", form_type)])), Ok(BodyKind::Form));
    for bad in [
        "application/x-www-form-urlencoded; charset=utf-16be",
        "application/x-www-form-urlencoded; charset=UTF-16LE",
        "application/x-www-form-urlencoded; charset=\"utf-32\"",
        "application/x-www-form-urlencoded; charset=ibm037",
    ] {
        assert_eq!(f.check_head(&h(&[("content-type", bad)])), Err(Reject::UnsupportedMediaType), "{bad}");
    }
    for bad in [
        h(&[("content-type", "application/json"), ("content-encoding", "gzip")]),
        h(&[("content-type", "application/x-www-form-urlencoded")]),
        h(&[("content-type", "text/plain")]),
        h(&[("content-type", "application/json; charset=utf-16be")]),
        h(&[("content-type", "application/json; charset=\"UTF-16\"")]),
        h(&[("content-type", "application/json; charset=latin1")]),
        h(&[("content-type", "application/json; charset=\"\"")]),
        h(&[("content-type", "application/json; charset=utf-8; charset=utf-8")]),
        h(&[]),
    ] {
        assert_eq!(t.check_head(&bad), Err(Reject::UnsupportedMediaType), "{bad:?}");
    }
}

#[test]
fn answers_are_detokenized_for_allowed_roles_only() {
    let t = tokenizer(
        "[{ pointer: /card, mode: format_preserving, mark: '99' }, { pointer: /ssn, mode: tokenize, mask: '***' }, { pointer: /items/*/n, mode: encrypt }]",
    );
    let out = json(&t, &format!(r#"{{"card": "{CARD}", "ssn": "123-45-6789", "items": [{{"n": "x"}}]}}"#)).unwrap();
    let tokens: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut v = tokens.clone();
    assert!(t.detokenize(&mut v, |_| true));
    assert_eq!(v, serde_json::json!({"card": CARD, "ssn": "123-45-6789", "items": [{"n": "x"}]}));
    let mut v = tokens.clone();
    assert!(t.detokenize(&mut v, |_| false));
    assert_eq!(v["card"], tokens["card"]);
    assert_eq!(v["ssn"], "***");
    assert_eq!(v["items"], tokens["items"]);
    // An original the upstream answered is withheld from the others.
    let mut v = serde_json::json!({"card": CARD, "items": [{"n": 5}]});
    assert!(t.detokenize(&mut v, |_| false));
    assert_eq!(v, serde_json::json!({"card": "[withheld]", "items": [{"n": "[withheld]"}]}));
}

/// An array or object at a field's pointer (what it holds is anyone's guess), a forged token and a
/// boolean are withheld whole from a principal without the roles, masked where the field has a mask.
#[test]
fn arrays_and_objects_at_a_pointer_are_withheld() {
    let t = tokenizer(
        "[{ pointer: /card, mode: tokenize }, { pointer: /ssn, mode: tokenize, mask: '***' }, { pointer: /items/*/n, mode: encrypt }]",
    );
    let mut v = serde_json::json!({
        "card": [CARD],
        "ssn": {"pan": CARD, "x": [CARD]},
        "items": [{"n": {"pan": CARD}}, {"n": "enc_forged"}, {"n": true}, {"n": null}, {"n": ""}],
    });
    let upstream = v.clone();
    assert!(t.detokenize(&mut v, |_| false));
    assert_eq!(
        v,
        serde_json::json!({
            "card": "[withheld]",
            "ssn": "***",
            "items": [{"n": "[withheld]"}, {"n": "[withheld]"}, {"n": "[withheld]"}, {"n": null}, {"n": ""}],
        })
    );
    // A principal with the roles sees what the upstream answered.
    let mut v = upstream.clone();
    assert!(!t.detokenize(&mut v, |_| true));
    assert_eq!(v, upstream);
}

/// The same pointer on two routes gets different keys (so different tokens, and a token of one is
/// not one of the other) unless both give the same explicit `name`.
#[test]
fn routes_do_not_share_tokens_by_default() {
    let top: TokenizationConfig = serde_yaml_ng::from_str("{ key: 0123456789abcdef0123456789abcdef }").unwrap();
    let on = |route: &str, yaml: &str| {
        let f: Vec<FieldConfig> = serde_yaml_ng::from_str(yaml).unwrap();
        Tokenizer::compile(route, &f, Some(&top), Arc::new(Vault::memory(10))).unwrap()
    };
    let body = format!(r#"{{"number": "{CARD}"}}"#);
    let pay = on("payments", "[{ pointer: /number, mode: tokenize }]");
    let tickets = on("tickets", "[{ pointer: /number, mode: tokenize }]");
    let (a, b) = (json(&pay, &body).unwrap(), json(&tickets, &body).unwrap());
    assert_ne!(a, b);
    // A token copied from /payments is forged on /tickets: refused, never revealed there.
    assert_eq!(code(json(&tickets, &a).unwrap_err()), ("/number".to_owned(), "invalid-token"));
    let mut v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert!(!tickets.detokenize(&mut v, |_| true));
    assert!(!v.to_string().contains(CARD), "{v}");
    // Same explicit name: same tokens (joins).
    let pay = on("payments", "[{ pointer: /number, name: card, mode: tokenize }]");
    let tickets = on("tickets", "[{ pointer: /number, name: card, mode: tokenize }]");
    assert_eq!(json(&pay, &body).unwrap(), json(&tickets, &body).unwrap());
    // The default labels are reserved.
    let f: Vec<FieldConfig> =
        serde_yaml_ng::from_str("[{ pointer: /number, name: 'route:payments:/number', mode: tokenize }]").unwrap();
    assert!(Tokenizer::compile("tickets", &f, Some(&top), Arc::new(Vault::memory(1)))
        .unwrap_err()
        .contains("reserved"));
}

/// One explicit name with different roles or masks anywhere is refused, naming both routes.
#[test]
fn one_name_with_different_roles_is_refused() {
    let list = |yaml: &str| serde_yaml_ng::from_str::<Vec<FieldConfig>>(yaml).unwrap();
    let pay = list("[{ pointer: /number, name: card, mode: tokenize, detokenize_roles: [billing, ops] }]");
    let same = list("[{ pointer: /n, name: card, mode: tokenize, detokenize_roles: [ops, billing, ops] }, { form: n, name: card, mode: tokenize }]");
    assert_eq!(check_names([("payments", &pay[..]), ("tickets", &same[..])]), Ok(()));
    for bad in [
        "[{ pointer: /number, name: card, mode: tokenize, detokenize_roles: [support] }]",
        "[{ pointer: /number, name: card, mode: tokenize }]",
        "[{ pointer: /number, name: card, mode: tokenize, detokenize_roles: [billing, ops], mask: '***' }]",
    ] {
        let other = list(bad);
        let e = check_names([("payments", &pay[..]), ("tickets", &other[..])]).unwrap_err();
        assert!(e.contains("`card`") && e.contains("`payments`") && e.contains("`tickets`"), "{e}");
    }
    // Within one route too.
    let two = list("[{ pointer: /a, name: card, mode: tokenize, detokenize_roles: [x] }, { pointer: /b, name: card, mode: tokenize }]");
    assert!(check_names([("r", &two[..])]).is_err());
    // Default names are per route: no clash.
    let plain = list("[{ pointer: /number, mode: tokenize, detokenize_roles: [support] }]");
    let plain2 = list("[{ pointer: /number, mode: tokenize, detokenize_roles: [billing] }]");
    assert_eq!(check_names([("payments", &plain[..]), ("tickets", &plain2[..])]), Ok(()));
}

mod generated {
    use super::*;
    use proptest::prelude::*;

    /// JSON values over a few keys near the fields' names (and case variants), strings that are cards,
    /// tokens-to-be or anything.
    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            prop_oneof![Just(CARD.to_owned()), Just("5555555555554444".to_owned()), "[0-9]{8,20}", "\\PC{0,12}"]
                .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            let key = prop_oneof![Just("card"), Just("a"), Just("b"), Just("s"), Just("Card"), Just("x")];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(key.prop_map(str::to_owned), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn rewriting_is_stable_and_leaves_no_original(v in value()) {
            let t = tokenizer(
                "[{ pointer: /card, mode: format_preserving, mark: '99' }, { pointer: /a/*/b, mode: tokenize }, \
                 { pointer: /s, mode: encrypt }]",
            );
            let body = serde_json::to_vec(&v).unwrap();
            if let Ok(out) = t.rewrite(BodyKind::Json, &body) {
                let out = out.unwrap_or(body);
                prop_assert_eq!(t.rewrite(BodyKind::Json, &out).ok(), Some(None));
                let after: serde_json::Value = serde_json::from_slice(&out).unwrap();
                let marked = |x: &serde_json::Value| match x {
                    serde_json::Value::Null => true,
                    serde_json::Value::String(s) => s.starts_with("tok_") || s.starts_with("enc_") || s.starts_with("99"),
                    _ => false,
                };
                for p in ["/card", "/s"] {
                    if let Some(x) = after.pointer(p) {
                        prop_assert!(marked(x), "{} = {}", p, x);
                    }
                }
                if let Some(serde_json::Value::Array(items)) = after.pointer("/a") {
                    for b in items.iter().filter_map(|i| i.get("b")) {
                        prop_assert!(marked(b), "{}", b);
                    }
                }
                // Outside the fields, nothing changed.
                let mut a = v.clone();
                let mut b = after.clone();
                for x in [&mut a, &mut b] {
                    if let Some(o) = x.as_object_mut() {
                        o.remove("card");
                        o.remove("s");
                        o.remove("a");
                    }
                }
                prop_assert_eq!(a, b);
            }
        }
    }
}
