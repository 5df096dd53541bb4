//! Criterion benchmarks of field tokenization (issue 18: one field costs at most 2 µs): one value
//! through each mode (`tokenize_field/*`: the transform alone, as the stage calls it per field), and
//! a small JSON body with one card field rewritten whole (the walk, the strict parse, the copy).
//! Run briefly with `cargo bench --bench tokenize -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::tokenize::vault::Vault;
use portcullis::tokenize::{BodyKind, FieldConfig, TokenizationConfig, Tokenizer};
use std::hint::black_box;
use std::sync::Arc;

fn tokenizer(fields: &str) -> Tokenizer {
    let fields: Vec<FieldConfig> = serde_yaml_ng::from_str(fields).unwrap();
    let top: TokenizationConfig =
        serde_yaml_ng::from_str("{ key: bench-master-key-0123456789abcdef0123456789 }").unwrap();
    Tokenizer::compile("bench", &fields, Some(&top), Arc::new(Vault::memory(1_000_000))).unwrap()
}

fn bench(c: &mut Criterion) {
    let t = tokenizer(
        "[{ pointer: /card, mode: tokenize }, { pointer: /enc, mode: encrypt }, \
         { pointer: /fp, mode: format_preserving, mark: '99' }]",
    );
    let card = "4111111111111111";
    let f = t.fields();
    c.bench_function("tokenize_field/tokenize", |b| b.iter(|| t.protect(&f[0], black_box(card)).unwrap()));
    c.bench_function("tokenize_field/encrypt", |b| b.iter(|| t.protect(&f[1], black_box(card)).unwrap()));
    // The card is already in the vault (the steady state: a card seen before).
    t.protect(&f[2], card).unwrap();
    c.bench_function("tokenize_field/format_preserving", |b| b.iter(|| t.protect(&f[2], black_box(card)).unwrap()));
    let body = br#"{"order":{"id":123456,"note":"deliver to the back door"},"card":"4111111111111111","amount":129.95,"currency":"EUR"}"#;
    c.bench_function("tokenize_field/json_body_one_field", |b| {
        b.iter(|| t.rewrite(BodyKind::Json, black_box(body)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
