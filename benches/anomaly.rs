//! Criterion benchmarks of anomaly detection (issue 16): the data path's part (`signals()` on a typical
//! browser head, building a `Record`), which must stay under 1 µs, and `Engine::observe` throughput on
//! the detector thread. Run briefly with `cargo bench --bench anomaly -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis::anomaly::{signals, Engine, Record, Settings, Signals};
use portcullis::exchange::{Principal, PrincipalKind};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

fn head() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig"),
        ("origin", "https://app.example.com"),
        ("referer", "https://app.example.com/orders"),
        ("sec-ch-ua", "\"Chromium\";v=\"131\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-site"),
        ("priority", "u=1, i"),
    ] {
        h.append(k, http::HeaderValue::from_static(v));
    }
    h
}

fn principal(i: u64) -> Arc<Principal> {
    Arc::new(Principal {
        id: format!("client-{i}"),
        kind: PrincipalKind::Jwt,
        roles: vec!["reader".into()],
        scopes: vec![],
        claims: None,
        tenant: None,
        identity: Default::default(),
    })
}

fn record(at_ms: u64, ip: IpAddr, principal: Option<Arc<Principal>>, s: Signals, ua: u64, id: u64) -> Record {
    Record {
        at_ms,
        ip,
        principal,
        claimed: None,
        route: 3,
        status: 200,
        bytes_in: 120,
        bytes_out: 2_400,
        id_param: Some(id),
        params_hash: id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        user_agent: ua,
        signals: s,
        in_force: false,
    }
}

fn bench_hot_path(c: &mut Criterion) {
    let h = head();
    let p = principal(7);
    let ip: IpAddr = "198.51.100.23".parse().unwrap();
    let mut g = c.benchmark_group("anomaly_hot_path");
    g.bench_function("signals_browser_head", |b| b.iter(|| signals(black_box(&h))));
    g.bench_function("build_record", |b| {
        b.iter(|| {
            let s = signals(black_box(&h));
            let ua = h
                .get("user-agent")
                .map_or(0, |v| v.as_bytes().iter().fold(0u64, |a, &x| a.rotate_left(5) ^ u64::from(x)));
            record(black_box(1_800_000_000_000), ip, Some(p.clone()), s, ua, 42)
        })
    });
    g.finish();
}

fn bench_observe(c: &mut Criterion) {
    let h = head();
    let s = signals(&h);
    let principals: Vec<_> = (0..10_000).map(principal).collect();
    // The same traffic from IPv4 addresses, and from IPv6 /64s (one in eight failing with a claimed
    // key, so that their sites (/56) are tracked too).
    let records = |v6: bool| -> Vec<Record> {
        (0..100_000u64)
            .map(|i| {
                let who = (i * 7919) % 10_000;
                let ip = if v6 {
                    IpAddr::from(std::net::Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        (who >> 4) as u16,
                        (who & 15) as u16,
                        0,
                        0,
                        0,
                        1,
                    ))
                } else {
                    IpAddr::from([10, (who >> 8) as u8, who as u8, 1])
                };
                let mut r =
                    record(1_800_000_000_000 + i * 10, ip, Some(principals[who as usize].clone()), s, 99, i % 500);
                if v6 && i % 8 == 0 {
                    (r.status, r.principal, r.claimed) = (401, None, Some(format!("key-{who}").into()));
                }
                r
            })
            .collect()
    };
    let mut g = c.benchmark_group("anomaly_engine");
    g.throughput(Throughput::Elements(1));
    for (name, v6) in [("observe_10k_principals", false), ("observe_10k_principals_v6", true)] {
        let records = records(v6);
        let mut engine = Engine::new(Settings { seed: Some(1), ..Settings::default() });
        let mut alerts = Vec::new();
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                engine.observe(black_box(&records[i % records.len()]), &mut alerts);
                i += 1;
                alerts.clear();
            })
        });
    }
    g.finish();
}

/// The data path's whole cost as the gateway pays it: the head's part of the record (taken before the
/// head is forwarded), the record at completion, and the offer to the detector's bounded queue (whose
/// thread runs meanwhile, as it does in the gateway).
fn bench_gateway_path(c: &mut Criterion) {
    use portcullis::activity::Sink as _;
    let cfg: portcullis::anomaly::runtime::AnomalyConfig = serde_yaml_ng::from_str("mode: monitor\n").unwrap();
    let policy = portcullis::anomaly::runtime::Policy::compile(&cfg, None).unwrap();
    let kept = portcullis::anomaly::runtime::Kept::default();
    let detector = kept.get(policy, &portcullis::observe::metrics::AnomalyMetrics::default());
    let h = head();
    let p = principal(7);
    let ip: IpAddr = "198.51.100.23".parse().unwrap();
    let mut params = portcullis::exchange::Params::new();
    params.push(Arc::from("id"), "4242");
    let mut g = c.benchmark_group("anomaly_gateway_path");
    g.bench_function("head_record_offer", |b| {
        b.iter(|| {
            let head = detector.head(black_box(&h));
            let done = portcullis::anomaly::runtime::Done {
                params: &params,
                ip,
                principal: Some(p.clone()),
                route: 3,
                status: 200,
                refused_in_force: false,
                claimed: None,
            };
            let r = detector.record(head, done);
            detector.offer(r);
        })
    });
    g.finish();
}

/// The periodic snapshot holds the engine's lock (records wait in the queue meanwhile): 100,000
/// entities, each with an hour of minutes behind it; a million take about ten times as long.
fn bench_snapshot(c: &mut Criterion) {
    let h = head();
    let s = signals(&h);
    let n = 50_000u64;
    let principals: Vec<_> = (0..n).map(principal).collect();
    let mut engine = Engine::new(Settings { seed: Some(1), max_entities: 2 * n as usize, ..Settings::default() });
    let mut alerts = Vec::new();
    for minute in 0..60u64 {
        for who in (0..n).filter(|w| (w + minute) % 12 == 0) {
            let ip = IpAddr::from([10, (who >> 16) as u8, (who >> 8) as u8, who as u8]);
            let at = 1_800_000_000_000 + minute * 60_000 + who % 60_000;
            engine.observe(&record(at, ip, Some(principals[who as usize].clone()), s, 99, who % 500), &mut alerts);
            alerts.clear();
        }
    }
    let bytes = engine.snapshot();
    eprintln!(
        "{} entities: {} bytes in memory, a snapshot of {} bytes ({} an entity)",
        engine.entities(),
        engine.memory_bytes(),
        bytes.len(),
        bytes.len() / engine.entities()
    );
    let settings = Settings { seed: Some(1), max_entities: 2 * n as usize, ..Settings::default() };
    let mut g = c.benchmark_group("anomaly_snapshot");
    g.sample_size(10);
    g.bench_function("snapshot_100k_entities", |b| b.iter(|| black_box(engine.snapshot())));
    g.bench_function("restore_100k_entities", |b| {
        b.iter(|| Engine::restore(settings.clone(), black_box(&bytes)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_hot_path, bench_observe, bench_gateway_path, bench_snapshot);
criterion_main!(benches);
