//! Criterion benchmarks of response protection: the security headers added to every answer, and
//! data-loss masking of a realistic 16 KiB JSON answer with nothing to mask (the usual case: one
//! linear pass, no copy) and with findings (one card per object), and of pathological input (a long
//! run of digits, `-----BEGIN ` repeated) to show the scanners stay linear. Run briefly with
//! `cargo bench --bench respond -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis::respond::json_mask::JsonMask;
use portcullis::respond::mask::Kinds;
use portcullis::respond::protect::SecurityHeaders;
use std::hint::black_box;

const ALL: Kinds = Kinds { cards: true, ssn: true, iban: true, private_keys: true, cloud_keys: true };

/// An order list like an API returns: names, prose, URLs, numbers, dates; `card` adds a card number.
fn orders(card: bool) -> String {
    let mut items = Vec::new();
    let mut i = 0;
    while serde_json::to_string(&items).unwrap().len() < 16 * 1024 {
        let mut o = serde_json::json!({
            "id": 100_000 + i,
            "customer": {"name": "Ann O'Brien", "email": "ann@example.com", "phone": "+1 555 0100"},
            "note": "Deliver to the back door; call 30 minutes ahead. Order 2024-05-01, ref 12-345.",
            "url": format!("https://shop.example.com/orders/{i}?lang=en"),
            "total": 129.95,
            "items": [{"sku": "AB-1234", "qty": 2}, {"sku": "CD-5678", "qty": 1}],
        });
        if card {
            o["card"] = "4111 1111 1111 1111".into();
        }
        items.push(o);
        i += 1;
    }
    serde_json::to_string(&items).unwrap()
}

fn bench(c: &mut Criterion) {
    let headers = SecurityHeaders::default();
    let mut base = http::HeaderMap::new();
    base.insert("content-type", http::HeaderValue::from_static("application/json"));
    base.insert("content-length", http::HeaderValue::from_static("1234"));
    base.insert("date", http::HeaderValue::from_static("Sun, 29 Nov 2026 16:00:00 GMT"));
    c.bench_function("security_headers/apply", |b| {
        b.iter_batched_ref(|| base.clone(), |h| headers.apply(black_box(h), true), criterion::BatchSize::SmallInput)
    });

    let m = JsonMask::new(ALL, &["/0/customer".into()]).unwrap();
    let mut g = c.benchmark_group("mask");
    for (name, doc) in [("clean_16k", orders(false)), ("cards_16k", orders(true))] {
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.bench_function(name, |b| b.iter(|| m.apply(black_box(doc.as_bytes())).unwrap()));
    }
    for n in [64 * 1024, 1024 * 1024] {
        let digits = format!("[\"{}\"]", "4".repeat(n));
        let pem = format!("[\"{}\"]", "-----BEGIN ".repeat(n / 11));
        let dashed = format!("[\"{}\"]", "1-".repeat(n / 2));
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("digits_{}k", n / 1024), |b| b.iter(|| m.apply(black_box(digits.as_bytes()))));
        g.bench_function(format!("pem_{}k", n / 1024), |b| b.iter(|| m.apply(black_box(pem.as_bytes()))));
        g.bench_function(format!("dashed_{}k", n / 1024), |b| b.iter(|| m.apply(black_box(dashed.as_bytes()))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
