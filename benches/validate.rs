//! Criterion benchmarks of the validation stage's body work on a ~2 KiB JSON order: the streaming
//! shape pass (depth, keys, arrays, strings, duplicate keys; no tree), the OpenAPI body schema check
//! (tree plus jsonschema), and gzip decoding under the bound. Run briefly with
//! `cargo bench --bench validate -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::content::{decode_body, Decoding};
use portcullis::json::{check, Shape};
use portcullis::validate::openapi::Document;
use std::hint::black_box;
use std::io::Write as _;

const DOC: &str = r##"
openapi: 3.1.0
info: { title: orders, version: "1" }
paths:
  /orders:
    post:
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Order" }
      responses: { "201": { description: ok } }
components:
  schemas:
    Order:
      type: object
      additionalProperties: false
      required: [customer, items]
      properties:
        customer:
          type: object
          required: [name, email]
          properties:
            name: { type: string, maxLength: 100 }
            email: { type: string, format: email }
            address:
              type: object
              properties:
                street: { type: string }
                city: { type: string }
                zip: { type: string, pattern: "^[0-9]{5}$" }
        items:
          type: array
          maxItems: 50
          items:
            type: object
            required: [sku, qty]
            properties:
              sku: { type: string, pattern: "^[A-Z]{3}-[0-9]{4}$" }
              qty: { type: integer, minimum: 1 }
              price: { type: number }
              note: { type: string, maxLength: 500 }
        comment: { type: string }
        website: { type: string, format: uri }
"##;

fn order() -> String {
    let items: Vec<String> = (0..17)
        .map(|i| {
            format!(
                r#"{{"sku":"ABC-{i:04}","qty":{},"price":{}.99,"note":"Please wrap item {i} separately; it's a gift for O'Brien."}}"#,
                i + 1,
                i * 3
            )
        })
        .collect();
    format!(
        r#"{{"customer":{{"name":"Siobhán O'Brien","email":"siobhan@example.com","address":{{"street":"12 Main St","city":"Dublin","zip":"12345"}}}},"items":[{}],"comment":"Deliver after 5pm, ring twice. The code is 1234.","website":"https://example.com/profile?id=42"}}"#,
        items.join(",")
    )
}

fn bench(c: &mut Criterion) {
    let body = order();
    eprintln!("body: {} bytes", body.len());
    let shape = Shape::default();
    assert!(check(body.as_bytes(), &shape).is_ok());
    c.bench_function("validate/json_shape_2k", |b| b.iter(|| check(black_box(body.as_bytes()), &shape)));

    let doc = Document::parse("orders", DOC, true, None).unwrap();
    let m = doc.find(&http::Method::POST, "/orders").unwrap().unwrap();
    let op = doc.operation(m.index).unwrap();
    let mut errors = Vec::new();
    let value: serde_json::Value = serde_json::from_slice(body.as_bytes()).unwrap();
    op.check_body("application/json", &value, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    c.bench_function("validate/openapi_body_2k", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_slice(black_box(body.as_bytes())).unwrap();
            let mut errors = Vec::new();
            op.check_body("application/json", &value, &mut errors);
            errors.len()
        })
    });

    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body.as_bytes()).unwrap();
    let gz = e.finish().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
    let bound = Decoding::default();
    c.bench_function("validate/gunzip_2k", |b| b.iter(|| decode_body(&headers, black_box(&gz), &bound).unwrap().len()));
}

/// A document of 250 paths (500 operations, each with a path and a query parameter and a body
/// referring to one of 100 component schemas): what a load or reload compiles.
fn big_document() -> String {
    let mut text = String::from("openapi: 3.0.3\ninfo: { title: big, version: \"1\" }\npaths:\n");
    for i in 0..250 {
        text.push_str(&format!(
            "  /r{i}/{{id}}:\n    parameters:\n      - {{ name: id, in: path, required: true, schema: {{ type: integer }} }}\n\
             \x20   get:\n      parameters:\n        - {{ name: q, in: query, schema: {{ type: string, maxLength: 50 }} }}\n\
             \x20     responses: {{ \"200\": {{ description: ok }} }}\n\
             \x20   put:\n      requestBody:\n        content:\n          application/json:\n\
             \x20           schema: {{ $ref: \"#/components/schemas/S{}\" }}\n      responses: {{ \"200\": {{ description: ok }} }}\n",
            i % 100
        ));
    }
    text.push_str("components:\n  schemas:\n");
    for i in 0..100 {
        text.push_str(&format!(
            "    S{i}:\n      type: object\n      additionalProperties: false\n      required: [name]\n      properties:\n\
             \x20       name: {{ type: string, pattern: \"^[a-z]+$\" }}\n        email: {{ type: string, format: email }}\n\
             \x20       next: {{ $ref: \"#/components/schemas/S{}\" }}\n",
            (i + 1) % 100
        ));
    }
    text
}

fn load(c: &mut Criterion) {
    let text = big_document();
    let doc = Document::parse("big", &text, true, None).unwrap();
    assert_eq!(doc.operation_count(), 500);
    let mut g = c.benchmark_group("validate");
    g.sample_size(10);
    g.bench_function("openapi_load_500_operations", |b| {
        b.iter(|| Document::parse("big", black_box(&text), true, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench, load);
criterion_main!(benches);
