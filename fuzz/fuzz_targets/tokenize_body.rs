//! Field tokenization (`tokenize::Tokenizer::rewrite`) over any JSON or form body: no panic; a
//! rewritten body is rewritten to itself (every field now holds a token the gateway recognises); in
//! JSON, the values at the fields' pointers are tokens (or `null`) and the output is JSON.
//!
//! Input layout: byte 0's low bit picks JSON or form; the rest is the body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::tokenize::vault::Vault;
use portcullis::tokenize::{BodyKind, FieldConfig, TokenizationConfig, Tokenizer};
use std::sync::{Arc, OnceLock};

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let fields: Vec<FieldConfig> = serde_json::from_str(
            r#"[{"pointer": "/card", "mode": "format_preserving", "mark": "99"},
                {"pointer": "/a/*/b", "mode": "tokenize"},
                {"pointer": "/s", "mode": "encrypt"},
                {"form": "card", "name": "/card", "mode": "format_preserving", "mark": "99", "luhn": false},
                {"form": "s", "mode": "tokenize"}]"#,
        )
        .unwrap();
        let top: TokenizationConfig =
            serde_json::from_str(r#"{"key": "fuzz-master-key-0123456789abcdef0123456789"}"#).unwrap();
        Tokenizer::compile(&fields, Some(&top), Arc::new(Vault::memory(100_000))).unwrap()
    })
}

fn marked(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.starts_with("tok_") || s.starts_with("enc_") || s.starts_with("99"),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let kind = if pick & 1 == 0 { BodyKind::Json } else { BodyKind::Form };
    let t = tokenizer();
    let Ok(out) = t.rewrite(kind, body) else { return };
    let out = out.unwrap_or_else(|| body.to_vec());
    assert_eq!(t.rewrite(kind, &out).ok(), Some(None), "a rewritten body is not stable");
    if kind == BodyKind::Json {
        let v: serde_json::Value = serde_json::from_slice(&out).expect("the output is JSON");
        if let Some(c) = v.pointer("/card") {
            assert!(marked(c));
        }
        if let Some(s) = v.pointer("/s") {
            assert!(marked(s));
        }
        if let Some(serde_json::Value::Array(items)) = v.pointer("/a") {
            for b in items.iter().filter_map(|i| i.get("b")) {
                assert!(marked(b));
            }
        }
    }
});
