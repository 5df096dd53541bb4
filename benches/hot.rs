//! Criterion micro-benchmarks of per-request hot functions: path normalisation, route lookup, header
//! hygiene and the HTTP/1 framer. Run briefly with
//! `cargo bench --bench hot -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use ipnet::IpNet;
use portcullis::exchange::Params;
use portcullis::proxy::client_ip::{client_ip, ChainHeader};
use portcullis::proxy::headers::{scan, set_forwarded, strip_hop_by_hop, Added, Forwarding, Peer};
use portcullis::route::{Found, HostPattern, Matcher, PathPattern, RouteTable};
use portcullis::validate::path::normalize;
use std::hint::black_box;
use std::net::IpAddr;

fn bench_normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    let typical = "/api/v1/users/12345/orders/67890";
    let encoded = "/api/v1/%7Ejohn/caf%C3%A9/files/report%20final%2Epdf";
    g.bench_function("typical", |b| b.iter(|| normalize(black_box(typical)).unwrap()));
    g.bench_function("encoded", |b| b.iter(|| normalize(black_box(encoded)).unwrap()));
    g.finish();
}

fn matcher(hosts: &[&str], path: PathPattern, methods: &[Method]) -> Matcher {
    Matcher::new(hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(), path, methods.to_vec())
}

/// About 50 routes of the mix a gateway sees: exact health paths, per-service prefixes, templated
/// resources with method lists, some host-restricted ones and a catch-all.
fn route_table() -> RouteTable<usize> {
    let mut entries = Vec::new();
    let services = ["users", "orders", "billing", "search", "catalog", "inventory", "reports", "auth"];
    for (i, s) in services.iter().enumerate() {
        entries.push(matcher(&[], PathPattern::prefix(&format!("/api/v1/{s}")).unwrap(), &[]));
        entries.push(matcher(
            &[],
            PathPattern::template(&format!("/api/v1/{s}/{{id}}")).unwrap(),
            &[Method::GET, Method::PUT, Method::DELETE],
        ));
        entries.push(matcher(
            &[],
            PathPattern::template(&format!("/api/v1/{s}/{{id}}/items/{{item}}")).unwrap(),
            &[Method::GET],
        ));
        entries.push(matcher(&[], PathPattern::exact(&format!("/api/v1/{s}/health")).unwrap(), &[Method::GET]));
        entries.push(matcher(
            &[&format!("{s}.example.com")],
            PathPattern::prefix(&format!("/v{}", i + 1)).unwrap(),
            &[],
        ));
        entries.push(matcher(&["*.internal.example.com"], PathPattern::prefix(&format!("/{s}")).unwrap(), &[]));
    }
    entries.push(matcher(&[], PathPattern::exact("/healthz").unwrap(), &[Method::GET]));
    entries.push(matcher(&[], PathPattern::prefix("/static").unwrap(), &[Method::GET, Method::HEAD]));
    entries.push(matcher(&[], PathPattern::prefix("/").unwrap(), &[]));
    RouteTable::new(entries.into_iter().enumerate().map(|(i, m)| (m, i)).collect())
}

fn bench_route(c: &mut Criterion) {
    let table = route_table();
    assert!(table.iter().count() >= 50);
    let mut g = c.benchmark_group("route_find");
    let cases: [(&str, Option<&str>, &str, Method); 5] = [
        ("template_hit", Some("api.example.com"), "/api/v1/reports/42/items/7", Method::GET),
        ("exact_hit", Some("api.example.com"), "/api/v1/auth/health", Method::GET),
        ("host_prefix_hit", Some("billing.example.com"), "/v3/invoices", Method::POST),
        ("catch_all", None, "/unknown/path/here", Method::GET),
        ("method_not_allowed_falls_back", Some("api.example.com"), "/api/v1/users/42", Method::PATCH),
    ];
    for (name, host, path, method) in cases {
        let mut params = Params::new();
        assert!(matches!(table.find(host, path, &method, &mut params), Found::Route(..)), "{name} should match");
        g.bench_function(name, |b| {
            b.iter(|| match table.find(black_box(host), black_box(path), black_box(&method), &mut params) {
                Found::Route(r) => (*r, params.len()),
                _ => (usize::MAX, 0),
            })
        });
    }
    g.finish();
}

/// The headers of a typical browser/API-client request arriving at the gateway.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    let pairs = [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("content-type", "application/json"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"),
        ("cookie", "session=abc123; theme=dark"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.2"),
        ("x-request-id", "3f2b8c1e9a7d4f60b1c2d3e4f5a6b7c8"),
    ];
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

/// The framer (the HTTP/1 parser of record) on a typical request head read whole, as most are.
fn bench_framer(c: &mut Criterion) {
    use portcullis::validate::head::{Framer, HeadLimits};
    let head = b"GET /api/v1/orders/12345?expand=items HTTP/1.1\r\nHost: api.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0\r\n\
        Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.9\r\n\
        Accept-Encoding: gzip, deflate, br\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl\r\n\
        Cookie: session=abc123; theme=dark\r\nX-Request-Id: 3f2b8c1e9a7d4f60b1c2d3e4f5a6b7c8\r\n\r\n";
    let mut framer = Framer::new(HeadLimits::new(16 * 1024, 100, 8 * 1024), false);
    c.bench_function("framer/typical_head", |b| b.iter(|| black_box(framer.feed(black_box(head)))));
}

fn bench_headers(c: &mut Criterion) {
    let base = request_headers();
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let untrusted_peer: IpAddr = "198.51.100.20".parse().unwrap();
    let trusted_peer: IpAddr = "10.0.0.9".parse().unwrap();
    let host = HeaderValue::from_static("api.example.com");
    let (untrusted, trusted_p) = (Peer::new(untrusted_peer), Peer::new(trusted_peer));
    let mut g = c.benchmark_group("headers");
    g.bench_function("clone_map", |b| b.iter(|| black_box(&base).clone()));
    g.bench_function("strip_hop_by_hop", |b| {
        b.iter_batched_ref(|| base.clone(), strip_hop_by_hop, BatchSize::SmallInput)
    });
    for (name, peer, trusted, proto) in
        [("set_forwarded_untrusted", &untrusted, false, "http"), ("set_forwarded_trusted", &trusted_p, true, "https")]
    {
        g.bench_function(name, |b| {
            let f = Forwarding { peer, peer_trusted: trusted, proto, host: Some(&host) };
            b.iter_batched_ref(
                || base.clone(),
                |h| {
                    let found = scan(h);
                    let mut added = Added::default();
                    set_forwarded(h, &f, found, &mut added);
                    added
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("client_ip_untrusted_peer", |b| {
        b.iter(|| {
            client_ip(black_box(untrusted_peer), black_box(&base), black_box(&trusted), ChainHeader::XForwardedFor)
        })
    });
    g.bench_function("client_ip_trusted_peer", |b| {
        b.iter(|| client_ip(black_box(trusted_peer), black_box(&base), black_box(&trusted), ChainHeader::XForwardedFor))
    });
    g.bench_function("client_ip_no_trusted_proxies", |b| {
        b.iter(|| client_ip(black_box(trusted_peer), black_box(&base), black_box(&[]), ChainHeader::XForwardedFor))
    });
    // The whole upstream-header step of the pipeline on one map: clone, strip, forward.
    g.bench_function("clone_strip_forward", |b| {
        let f = Forwarding { peer: &untrusted, peer_trusted: false, proto: "http", host: Some(&host) };
        b.iter(|| {
            let mut h = black_box(&base).clone();
            let found = scan(&h);
            portcullis::proxy::headers::strip_found(&mut h, found);
            let mut added = Added::default();
            set_forwarded(&mut h, &f, found, &mut added);
            (h, added)
        })
    });
    g.finish();
}

/// What every request pays the dashboard's live statistics (`observe::live::Live::record`): a success
/// (two relaxed increments and a sampling counter), and a refusal (also queued for the top lists, with
/// the ticker thread draining).
fn bench_live(c: &mut Criterion) {
    use portcullis::observe::live::Live;
    use std::time::Duration;
    let live = std::sync::Arc::new(Live::default());
    let _ = live.start();
    let ip: std::net::IpAddr = "192.0.2.10".parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    c.bench_function("live_record_success", |b| {
        b.iter(|| live.record(200, std::hint::black_box(Duration::from_micros(850)), None, None, ip))
    });
    c.bench_function("live_record_refusal", |b| {
        b.iter(|| live.record(401, Duration::from_micros(120), std::hint::black_box(Some("unauthorized")), None, ip))
    });
}

criterion_group!(benches, bench_normalize, bench_route, bench_headers, bench_framer, bench_live);
criterion_main!(benches);
