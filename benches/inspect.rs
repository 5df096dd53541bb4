//! Criterion benchmarks of the inspection engine: a realistic 2 KiB API JSON body (the committed
//! fixture `benches/fixtures/api-2k.json`) and a GET with five parameters at paranoia 1, and
//! pathological values (`'`, `<`, `(`, `%25` repeated) at 64 KiB and 1 MiB, whose times should stay
//! about 16 apart (linear work; the unit test `work_is_linear_on_pathological_input` asserts it with
//! a work counter). Run briefly with
//! `cargo bench --bench inspect -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis::inspect::{Engine, InspectConfig};
use std::hint::black_box;

fn parts(uri: &str, content_type: &str) -> http::request::Parts {
    let b = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", content_type)
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)");
    b.body(()).unwrap().into_parts().0
}

fn bench(c: &mut Criterion) {
    let engine = Engine::compile(&InspectConfig::default()).unwrap();
    let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/fixtures/api-2k.json")).unwrap();
    let json = parts("/api/v1/orders/48213", "application/json");
    assert!(engine.inspect(&json, Some(&fixture)).detections.is_empty(), "the fixture is benign");
    let mut g = c.benchmark_group("inspect");
    g.throughput(Throughput::Bytes(fixture.len() as u64));
    g.bench_function("json-2k-paranoia-1", |b| b.iter(|| black_box(engine.inspect(&json, Some(black_box(&fixture))))));
    let get = parts("/api/v1/search?q=wireless+keyboard&category=peripherals&sort=price_asc&page=2&lang=en-IE", "");
    g.throughput(Throughput::Elements(1));
    g.bench_function("get-5-params", |b| b.iter(|| black_box(engine.inspect(&get, None))));
    g.finish();

    let detect =
        Engine::compile(&InspectConfig { mode: portcullis::inspect::Mode::Detect, ..Default::default() }).unwrap();
    let form = parts("/c", "application/x-www-form-urlencoded");
    let mut g = c.benchmark_group("pathological");
    g.sample_size(10);
    for (name, pat) in [("quote", "'"), ("lt", "<"), ("paren", "("), ("bracket", "["), ("pct25", "%2525")] {
        for size in [64 * 1024, 1024 * 1024] {
            let body = format!("v={}", pat.repeat(size / pat.len()));
            g.throughput(Throughput::Bytes(body.len() as u64));
            g.bench_function(format!("{name}-{}k", size / 1024), |b| {
                b.iter(|| black_box(detect.inspect(&form, Some(black_box(body.as_bytes())))))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
