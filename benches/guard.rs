//! Criterion benchmarks of the connection guards' prefix structure: loading a list file of 1,000,000
//! CIDRs (read, parse, sort, merge, index: what a reload of the list does) and one lookup in it, for
//! IPv4 and IPv6, against random client addresses (so most lookups miss the caches). Run briefly with
//! `cargo bench --bench guard -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::guard::filter::{IpFilter, IpFilterConfig};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

const ENTRIES: usize = 1_000_000;

/// A list file of random blocks: IPv4 /16 to /32, or IPv6 /32 to /64 (where real deny lists sit).
fn list_file(v6: bool) -> std::path::PathBuf {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut text = String::with_capacity(ENTRIES * 24);
    text.push_str("# generated\n");
    for _ in 0..ENTRIES {
        if v6 {
            let a = Ipv6Addr::from(0x2000u128 << 112 | u128::from(rng.u64(..)) << 48);
            text.push_str(&format!("{a}/{}\n", rng.u8(32..=64)));
        } else {
            text.push_str(&format!("{}/{}\n", Ipv4Addr::from(rng.u32(..)), rng.u8(16..=32)));
        }
    }
    let path = std::env::temp_dir().join(format!("portcullis-bench-{}-{v6}.txt", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &std::path::Path) -> IpFilter {
    let c = IpFilterConfig { deny_files: vec![path.to_owned()], ..Default::default() };
    IpFilter::compile("bench", &c).unwrap()
}

fn bench(c: &mut Criterion) {
    for v6 in [false, true] {
        let family = if v6 { "ipv6" } else { "ipv4" };
        let path = list_file(v6);
        let started = Instant::now();
        let filter = load(&path);
        eprintln!("guard/{family}: 1,000,000 entries loaded in {:?} ({})", started.elapsed(), filter.describe());
        let mut g = c.benchmark_group(format!("guard_{family}"));
        g.sample_size(10).measurement_time(Duration::from_secs(8));
        g.bench_function("load_1m", |b| b.iter(|| black_box(load(&path))));
        g.finish();
        let mut rng = fastrand::Rng::with_seed(11);
        let probes: Vec<IpAddr> = (0..65_536)
            .map(|_| {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(
                        0x2000u128 << 112 | u128::from(rng.u64(..)) << 48 | u128::from(rng.u32(..)),
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::from(rng.u32(..)))
                }
            })
            .collect();
        let denied = probes.iter().filter(|ip| filter.check(**ip).is_err()).count();
        eprintln!("guard/{family}: {denied} of {} random probes denied", probes.len());
        let mut g = c.benchmark_group(format!("guard_{family}"));
        let mut i = 0;
        g.bench_function("lookup_1m", |b| {
            b.iter(|| {
                i = (i + 1) & 0xffff;
                black_box(filter.check(black_box(probes[i])).is_ok())
            })
        });
        g.finish();
        let _ = std::fs::remove_file(&path);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
