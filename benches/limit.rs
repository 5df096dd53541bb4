//! Criterion micro-benchmarks of the local rate limiter (issue 12: at most 150 ns uncontended, at most
//! twice that with every worker thread on the same key). Run briefly with
//! `cargo bench --bench limit -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::limit::gcra::{Clock, LocalStore, Monotonic, Rate};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench_local(c: &mut Criterion) {
    let store = Arc::new(LocalStore::new(1_000_000));
    let clock = Arc::new(Monotonic::default());
    // Generous enough never to refuse: the allowed path is the common one.
    let rate = Rate::new(1_000_000_000, 1_000_000_000, 1_000_000);
    let mut g = c.benchmark_group("limit");
    g.bench_function("local check, one key", |b| b.iter(|| store.check(black_box(42), clock.now(), rate, None)));
    let mut k = 0u128;
    g.bench_function("local check, a new key each time (1M keys)", |b| {
        b.iter(|| {
            k = (k + 1) % 1_000_000;
            store.check(black_box(k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)), clock.now(), rate, None)
        })
    });
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    g.bench_function(format!("local check, {threads} threads on one key (per check)"), |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(threads as u64);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    let (store, clock) = (store.clone(), clock.clone());
                    s.spawn(move || {
                        for _ in 0..per {
                            black_box(store.check(7, clock.now(), rate, None));
                        }
                    });
                }
            });
            // Wall time per check on each thread: what a request on a busy worker waits.
            let took = start.elapsed();
            Duration::from_nanos((took.as_nanos() as u64).saturating_mul(iters) / per.max(1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_local);
criterion_main!(benches);
