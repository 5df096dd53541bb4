#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rate limits and the signed-request replay store shared through a real Redis (`redis:`,
//! `store: redis`): accuracy, one budget across two gateway processes, a Redis killed mid-run
//! (`fail_open` and `fail_closed`, bounded latency, recovery after a restart), the headers, replays
//! across nodes, and the config errors. Judged by counts and measured elapsed time, never by sleeps.
#[allow(unreachable_pub)]
mod common;

use aws_lc_rs::{hmac, rand};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(10);

/// One route `/` to `up` with the named limits (declared in `limits`), and `redis:` on `redis`.
fn config(up: SocketAddr, redis: &RedisServer, timeout: &str, limits: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
redis:
  url: {url}
  command_timeout: {timeout}
  connect_timeout: 200ms
rate_limits:
{limits}
routes:
{routes}
logging:
  level: info
  access_log: false
admin:
  address: 127.0.0.1:0
"#,
        url = redis.url()
    )
}

fn route(name: &str, prefix: &str, limits: &str) -> String {
    format!(
        "  - name: {name}\n    match:\n      path: {{ prefix: {prefix} }}\n    upstream: app\n    auth: none\n    rate_limits: [{limits}]\n"
    )
}

/// Sends `GET path` on the connection; reconnects once when the gateway closed it.
fn get(conn: &mut Option<RawConn>, addr: SocketAddr, path: &str) -> String {
    for _ in 0..2 {
        let c = conn.get_or_insert_with(|| RawConn::connect(addr));
        let resp = c.get(path, T);
        if status_of(&resp) != 0 {
            if header_of(&resp, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                *conn = None;
            }
            return resp;
        }
        *conn = None;
    }
    panic!("no answer from {addr}");
}

/// What [`offer`] saw.
struct Offered {
    /// Per address offered to.
    allowed: Vec<u64>,
    refused: u64,
    /// From the first request sent to the last answer.
    span: Duration,
    /// When each answer came, from the start.
    answers: Vec<Duration>,
}

/// Offers `rate_per_client` requests a second to `path` from `clients` clients per address (each on
/// its own keep-alive connection, paced to its own schedule) for `secs`. Several clients, so one slow
/// answer does not hold the offered load back.
fn offer(addrs: &[SocketAddr], path: &'static str, clients: usize, rate_per_client: u64, secs: u64) -> Offered {
    let start = Instant::now();
    let gap = Duration::from_nanos(1_000_000_000 / rate_per_client);
    let threads: Vec<_> = addrs
        .iter()
        .enumerate()
        .flat_map(|(n, addr)| (0..clients).map(move |c| (n, c, *addr)))
        .map(|(n, c, addr)| {
            std::thread::spawn(move || {
                let mut conn = None;
                let (mut allowed, mut refused, mut answers) = (0, 0, Vec::new());
                // Clients of one address spread over one gap, so together they are evenly paced.
                let offset = gap * u32::try_from(c).unwrap() / u32::try_from(clients).unwrap();
                for i in 0..rate_per_client * secs {
                    // Paced to a schedule (behind it, the next request goes at once): the offered
                    // rate, not a wait that any assertion depends on.
                    let due = start + offset + gap * u32::try_from(i).unwrap();
                    if let Some(d) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let resp = get(&mut conn, addr, path);
                    match status_of(&resp) {
                        200 => allowed += 1,
                        429 => {
                            assert!(header_of(&resp, "retry-after").is_some(), "429 without Retry-After:\n{resp}");
                            refused += 1;
                        }
                        other => panic!("unexpected {other}:\n{resp}"),
                    }
                    answers.push(start.elapsed());
                }
                (n, allowed, refused, answers)
            })
        })
        .collect();
    let mut o = Offered { allowed: vec![0; addrs.len()], refused: 0, span: Duration::ZERO, answers: Vec::new() };
    for t in threads {
        let (n, allowed, refused, answers) = t.join().unwrap();
        o.allowed[n] += allowed;
        o.refused += refused;
        o.answers.extend(answers);
    }
    o.span = start.elapsed();
    o.answers.sort();
    o
}

/// A limit of `rate`/s with `burst` admits at most `burst + rate * span` (plus the request at the
/// edge), and, offered more than the rate all along, at least that less `pct`. "All along" is a
/// premise about the machine, not the limiter: if it stalled the clients so that fewer requests than
/// the rate came in some stretch of half the burst's worth of time, capacity may have gone unused,
/// and only the upper bound is judged.
fn assert_accurate(o: &Offered, rate: u64, burst: u64, pct: f64) {
    let allowed: u64 = o.allowed.iter().sum();
    let configured = burst as f64 + rate as f64 * o.span.as_secs_f64();
    eprintln!("{allowed} admitted, {configured:.1} configured over {:?}", o.span);
    assert!(allowed as f64 <= configured + 1.0, "{allowed} admitted, at most {configured:.1} configured");
    let window = Duration::from_secs_f64(burst as f64 / rate as f64 / 2.0);
    let mut from = Duration::ZERO;
    while from + window <= o.span {
        let n = o.answers.iter().filter(|t| **t >= from && **t < from + window).count();
        if (n as f64) < rate as f64 * window.as_secs_f64() {
            eprintln!("only {n} answers in {window:?} from {from:?}: the machine held the load back");
            return;
        }
        from += window;
    }
    assert!(
        allowed as f64 >= configured * (1.0 - pct / 100.0),
        "{allowed} admitted, {configured:.1} configured (-{pct}%)"
    );
}

#[test]
fn twice_the_limit_admits_the_configured_amount() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let limits = "  shared:\n    rate: 100/s\n    burst: 50\n    store: redis\n    on_store_failure: fail_closed\n";
    let gw = Gateway::start(&config(up.addr, &redis, "5s", limits, &route("app", "/", "shared")));
    let o = offer(&[gw.addr("main")], "/a", 4, 50, 4);
    assert!(o.refused > 0);
    assert_accurate(&o, 100, 50, 2.0);
    assert_eq!(up.hits() as u64, o.allowed[0], "a refused request reached the upstream");
    let keys = redis.keys("portcullis:rl:shared:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].len(), "portcullis:rl:shared:".len() + 64, "SHA-256 hex: {keys:?}");
    let ttl: i64 = redis.command(&["PTTL", &keys[0]]).trim_start_matches(':').trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 1000, "the key expires once idle: {ttl} ms");
}

#[test]
fn two_gateways_share_one_budget() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let limits = "  shared:\n    rate: 50/s\n    burst: 25\n    store: redis\n    on_store_failure: fail_closed\n";
    let yaml = config(up.addr, &redis, "5s", limits, &route("app", "/", "shared"));
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    // Each node is offered the whole limit (twice it together); all clients are 127.0.0.1: one key.
    let o = offer(&[a.addr("main"), b.addr("main")], "/a", 2, 25, 4);
    assert!(o.allowed.iter().all(|n| *n > 0), "both nodes admit: {:?}", o.allowed);
    assert_accurate(&o, 50, 25, 3.0);
    assert_eq!(up.hits() as u64, o.allowed.iter().sum::<u64>());
}

#[test]
fn headers_are_present_and_correct() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let limits = "  shared:\n    rate: 1/m\n    burst: 3\n    store: redis\n    on_store_failure: fail_closed\n";
    let gw = Gateway::start(&config(up.addr, &redis, "5s", limits, &route("app", "/", "shared")));
    let mut conn = None;
    let first = get(&mut conn, gw.addr("main"), "/x");
    assert_eq!(status_of(&first), 200, "{first}");
    assert_eq!(header_of(&first, "ratelimit-policy").as_deref(), Some("\"shared\";q=3;w=180"));
    assert_eq!(header_of(&first, "ratelimit").as_deref(), Some("\"shared\";r=2;t=60"));
    assert_eq!(header_of(&first, "retry-after"), None);
    let second = get(&mut conn, gw.addr("main"), "/x");
    assert_eq!(header_of(&second, "ratelimit").as_deref(), Some("\"shared\";r=1;t=120"));
    get(&mut conn, gw.addr("main"), "/x");
    let hits = up.hits();
    let refused = get(&mut conn, gw.addr("main"), "/x");
    assert_eq!(status_of(&refused), 429, "{refused}");
    assert_eq!(problem_type(body_of(&refused)), problem("too-many-requests"));
    let retry: u64 = header_of(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "Retry-After {retry}");
    let state = header_of(&refused, "ratelimit").unwrap();
    assert!(state.starts_with("\"shared\";r=0;t=1"), "{state}");
    assert_eq!(up.hits(), hits, "the refused request reached the upstream");
}

#[test]
fn backoff_escalates_as_on_one_node() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let limits = "  shared:\n    rate: 1/s\n    burst: 1\n    backoff: { max: 8s }\n    store: redis\n    \
                  on_store_failure: fail_closed\n";
    let gw = Gateway::start(&config(up.addr, &redis, "5s", limits, &route("app", "/", "shared")));
    let mut conn = None;
    assert_eq!(status_of(&get(&mut conn, gw.addr("main"), "/x")), 200);
    let waits: Vec<String> = (0..4)
        .map(|_| {
            let resp = get(&mut conn, gw.addr("main"), "/x");
            assert_eq!(status_of(&resp), 429, "{resp}");
            header_of(&resp, "retry-after").unwrap()
        })
        .collect();
    assert_eq!(waits, ["2", "4", "8", "8"], "each refusal in a row doubles the wait, up to the cap");
    assert_eq!(up.hits(), 1);
}

#[test]
fn concurrent_requests_and_two_limits_on_one_route_count_exactly() {
    // Requests arriving together share one script call; each still gets its own answer for each limit.
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let limits = "  a:\n    rate: 1/m\n    burst: 40\n    store: redis\n    on_store_failure: fail_closed\n  \
                  b:\n    rate: 1/m\n    burst: 1000\n    key: [route]\n    store: redis\n    on_store_failure: fail_closed\n";
    let gw = Gateway::start(&config(up.addr, &redis, "5s", limits, &route("app", "/", "a, b")));
    let addr = gw.addr("main");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = None;
                (0..10).filter(|_| status_of(&get(&mut conn, addr, "/x")) == 200).count()
            })
        })
        .collect();
    let allowed: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(allowed, 40, "limit a's burst, exactly");
    assert_eq!(up.hits(), 40);
    let last = get(&mut None, addr, "/x");
    assert_eq!(status_of(&last), 429);
    let state = header_of(&last, "ratelimit").unwrap();
    assert!(state.starts_with("\"a\";r=0;t=") && state.contains(", \"b\";r=919;t="), "{state}");
}

#[test]
fn redis_killed_mid_run_fails_open_or_closed_then_resumes() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("app");
    let limits = "  open:\n    rate: 1/m\n    burst: 3\n    store: redis\n    on_store_failure: fail_open\n  \
                  closed:\n    rate: 1/m\n    burst: 3\n    store: redis\n    on_store_failure: fail_closed\n";
    let routes = format!("{}{}", route("open", "/open", "open"), route("closed", "/closed", "closed"));
    let gw = Gateway::start(&config(up.addr, &redis, "250ms", limits, &routes));
    let addr = gw.addr("main");
    let mut conn = None;
    let statuses = |conn: &mut Option<RawConn>, path: &str, n: usize| -> Vec<u16> {
        (0..n)
            .map(|_| {
                let sent = Instant::now();
                let resp = get(conn, addr, path);
                assert!(sent.elapsed() < Duration::from_secs(1), "{path} took {:?}", sent.elapsed());
                status_of(&resp)
            })
            .collect()
    };
    // Shared: the budget is in Redis.
    assert_eq!(statuses(&mut conn, "/open", 4), [200, 200, 200, 429]);
    assert_eq!(statuses(&mut conn, "/closed", 4), [200, 200, 200, 429]);
    assert_eq!(redis.keys("portcullis:rl:*").len(), 2);

    redis.kill();
    let hits = up.hits();
    // fail_closed: 503 store-unavailable, nothing forwarded, every answer well within a second.
    for _ in 0..20 {
        let sent = Instant::now();
        let resp = get(&mut conn, addr, "/closed");
        assert!(sent.elapsed() < Duration::from_secs(1), "took {:?}", sent.elapsed());
        assert_eq!(status_of(&resp), 503, "{resp}");
        assert_eq!(problem_type(body_of(&resp)), problem("store-unavailable"), "{resp}");
    }
    assert_eq!(up.hits(), hits, "a fail_closed request reached the upstream");
    // fail_open: this node's own copy of the limit decides (fresh: the burst, then refusals).
    assert_eq!(statuses(&mut conn, "/open", 5), [200, 200, 200, 429, 429]);
    assert_eq!(up.hits(), hits + 3);

    redis.restart();
    // Shared limiting resumes by itself: polled to a deadline, the fail_closed route answers again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status_of(&get(&mut conn, addr, "/closed"));
        if s == 200 {
            break;
        }
        assert_eq!(s, 503);
        assert!(Instant::now() < deadline, "shared limiting did not resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(statuses(&mut conn, "/closed", 3), [200, 200, 429], "the budget is Redis's again");
    assert_eq!(redis.keys("portcullis:rl:closed:*").len(), 1);
    // The open route is back on Redis too (its fresh key there admits the burst again).
    assert_eq!(statuses(&mut conn, "/open", 4), [200, 200, 200, 429]);
    assert_eq!(redis.keys("portcullis:rl:open:*").len(), 1);

    let m = gw.metrics();
    let failures = |limit: &str, mode: &str| {
        metric(&m, &format!("portcullis_rate_limit_store_failures_total{{limit=\"{limit}\",mode=\"{mode}\"}}"))
    };
    assert!(failures("open", "fail_open").unwrap_or(0.0) >= 5.0, "{m}");
    assert!(failures("closed", "fail_closed").unwrap_or(0.0) >= 20.0, "{m}");
    assert!(gw.count_log("redis unavailable") >= 1);
    assert!(gw.count_log("redis unavailable") <= 3, "failure logs are paced");
    assert_eq!(gw.count_log("panicked"), 0, "{}", gw.logs().join("\n"));
}

// ---------------------------------------------------------------------------------------------------
// The replay store of signed requests.

const SECRET_ENV: &str = "PORTCULLIS_TEST_FLEET_SIGNING_SECRET";
const SECRET: &str = "fleet-test-shared-signing-secret-0123456789";

fn signed_config(up: SocketAddr, redis: &RedisServer, extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
redis:
  url: {url}
  command_timeout: 250ms
  connect_timeout: 200ms
authenticators:
  partners:
    signature:
      keys:
        k1:
          alg: hmac-sha256
          secret: ${{env:{SECRET_ENV}}}
{extra}
routes:
  - name: signed
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: partners
    authorize: authenticated
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        url = redis.url()
    )
}

/// A GET of `/orders` signed with `k1` (`@method`, `@target-uri`) and a fresh nonce, as raw bytes.
fn signed_get() -> Vec<u8> {
    let mut n = [0u8; 16];
    rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut n).unwrap();
    let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let params = format!("(\"@method\" \"@target-uri\");created={created};nonce=\"{}\";keyid=\"k1\"", B64.encode(n));
    let base = format!("\"@method\": GET\n\"@target-uri\": http://api.test/orders\n\"@signature-params\": {params}");
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()), base.as_bytes());
    format!(
        "GET /orders HTTP/1.1\r\nhost: api.test\r\nsignature-input: sig1={params}\r\nsignature: sig1=:{}:\r\n\
         connection: close\r\n\r\n",
        B64.encode(tag.as_ref())
    )
    .into_bytes()
}

#[test]
fn a_request_accepted_on_one_node_is_refused_as_a_replay_on_another() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let yaml = signed_config(up.addr, &redis, "");
    let a = Gateway::start_with_env(&yaml, &[(SECRET_ENV, SECRET)]);
    let b = Gateway::start_with_env(&yaml, &[(SECRET_ENV, SECRET)]);
    let req = signed_get();
    let first = raw(a.addr("main"), &req, T);
    assert_eq!(status_of(&first), 200, "{first}");
    assert_eq!(up.hits(), 1);
    for gw in [&b, &a] {
        let replay = raw(gw.addr("main"), &req, T);
        assert_eq!(status_of(&replay), 401, "{replay}");
        assert_eq!(problem_type(body_of(&replay)), problem("unauthorized"));
    }
    assert_eq!(up.hits(), 1, "a replay reached the upstream");
    assert!(b.wait_log("\"reason\":\"replayed_nonce\"", T));
    assert_eq!(redis.keys("portcullis:replay:partners:*").len(), 1);
    // A fresh signature passes on the other node.
    assert_eq!(status_of(&raw(b.addr("main"), &signed_get(), T)), 200);
}

#[test]
fn an_unreachable_replay_store_refuses_by_default_and_can_fail_open() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("app");
    let closed = Gateway::start_with_env(&signed_config(up.addr, &redis, ""), &[(SECRET_ENV, SECRET)]);
    let open = Gateway::start_with_env(
        &signed_config(up.addr, &redis, "      on_replay_store_failure: fail_open"),
        &[(SECRET_ENV, SECRET)],
    );
    redis.kill();
    let sent = Instant::now();
    let resp = raw(closed.addr("main"), &signed_get(), T);
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert_eq!(problem_type(body_of(&resp)), problem("store-unavailable"));
    assert_eq!(up.hits(), 0, "a request whose nonce could not be recorded reached the upstream");
    // fail_open: this node's own store still refuses a replay to it.
    let req = signed_get();
    assert_eq!(status_of(&raw(open.addr("main"), &req, T)), 200);
    assert_eq!(status_of(&raw(open.addr("main"), &req, T)), 401);
    assert_eq!(up.hits(), 1);
    let m = closed.metrics();
    let series = "portcullis_replay_store_failures_total{authenticator=\"partners\",mode=\"fail_closed\"}";
    assert!(metric(&m, series).unwrap_or(0.0) >= 1.0, "{m}");
}

// ---------------------------------------------------------------------------------------------------
// Config errors: `check` refuses them, naming the key, never echoing a secret.

#[test]
fn config_errors_are_refused_by_check() {
    let dir = TempDir::new();
    let base = |redis: &str, limit: &str| {
        format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - address: 127.0.0.1:9\n\
             {redis}rate_limits:\n  l:\n    rate: 10/s\n{limit}routes:\n  - name: r\n    match:\n      path: {{ prefix: / }}\n    \
             upstream: app\n    auth: none\n    rate_limits: [l]\n"
        )
    };
    let redis = "redis:\n  url: redis://127.0.0.1:1/0\n";
    let q = "quotas:\n  q:\n    limit: 5\n    period: day\n";
    let cases = [
        (base("", "    store: redis\n    on_store_failure: fail_open\n"), "needs the top-level `redis:`"),
        (base(redis, "    store: redis\n"), "on_store_failure"),
        (base(redis, "    on_store_failure: fail_open\n"), "only with `store: redis`"),
        (base(redis, "    store: redis\n    on_store_failure: maybe\n"), "fail_open"),
        (base("redis:\n  url: redis://:hunter2secret@127.0.0.1:1/0\n", ""), "must not hold a password"),
        (base("redis:\n  url: http://127.0.0.1:1/\n", ""), "redis.url"),
        (base("redis:\n  url: redis://127.0.0.1:1/0\n  command_timeout: 0s\n", ""), "command_timeout"),
        (
            base("", &format!("{q}    store: redis\n    on_store_failure: fail_open\n")),
            "quotas.q: `store: redis` needs",
        ),
        (base(redis, &format!("{q}    store: redis\n")), "quotas.q: `store: redis` needs `on_store_failure"),
        (base(redis, &format!("{q}    on_store_failure: fail_open\n")), "only with `store: redis`"),
    ];
    for (yaml, want) in cases {
        let path = dir.write("c.yaml", &yaml);
        let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
        assert_eq!(code, 1, "accepted:\n{yaml}\n{out}");
        assert!(err.contains(want), "`{want}` not in: {err}");
        assert!(!err.contains("hunter2secret"), "the secret leaked: {err}");
    }
    // A valid one needs no Redis running to pass `check`.
    let path = dir.write("c.yaml", &base(redis, "    store: redis\n    on_store_failure: fail_closed\n"));
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A route `/` (prefix `prefix`) to `app` counted by the named quotas.
fn quota_route(name: &str, prefix: &str, quotas: &str) -> String {
    format!(
        "  - name: {name}\n    match:\n      path: {{ prefix: {prefix} }}\n    upstream: app\n    auth: none\n    quotas: [{quotas}]\n"
    )
}

/// `rate_limits:` needs an entry; the quotas follow it as their own section.
fn with_quotas(quotas: &str) -> String {
    format!("  unused:\n    rate: 1000/s\nquotas:\n{quotas}")
}

#[test]
fn two_gateways_share_one_quota_exactly() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let quotas =
        with_quotas("  daily:\n    limit: 5\n    period: day\n    store: redis\n    on_store_failure: fail_closed\n");
    let yaml = config(up.addr, &redis, "5s", &quotas, &quota_route("app", "/", "daily"));
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    let nodes = [a.addr("main"), b.addr("main")];
    let mut conns = [None, None];
    let mut statuses = Vec::new();
    for i in 0..12 {
        let resp = get(&mut conns[i % 2], nodes[i % 2], "/x");
        if status_of(&resp) == 429 {
            assert!(header_of(&resp, "retry-after").is_some(), "{resp}");
            assert_eq!(problem_type(body_of(&resp)), problem("too-many-requests"), "{resp}");
        }
        statuses.push(status_of(&resp));
    }
    assert_eq!(statuses[..5], [200; 5], "one combined quota: {statuses:?}");
    assert_eq!(statuses[5..], [429; 7], "then refused on both nodes: {statuses:?}");
    assert_eq!(up.hits(), 5, "a refused request reached the upstream");
    let keys = redis.keys("portcullis:q:daily:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let day = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
    assert!(keys[0].starts_with(&format!("portcullis:q:daily:{day}:")), "{keys:?}");
    assert_eq!(keys[0].len(), format!("portcullis:q:daily:{day}:").len() + 64, "SHA-256 hex: {keys:?}");
    let count = redis.command(&["GET", &keys[0]]);
    assert!(count.contains('5'), "refusals undo their count: {count}");
    let ttl: i64 = redis.command(&["TTL", &keys[0]]).trim_start_matches(':').trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 86_400, "the key expires at the day's end: {ttl} s");
}

#[test]
fn a_stopped_redis_makes_a_quota_fail_closed_or_count_locally() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("app");
    let quotas = with_quotas(
        "  open:\n    limit: 2\n    period: month\n    store: redis\n    on_store_failure: fail_open\n  \
         closed:\n    limit: 2\n    period: day\n    store: redis\n    on_store_failure: fail_closed\n",
    );
    let routes = format!("{}{}", quota_route("open", "/open", "open"), quota_route("closed", "/closed", "closed"));
    let gw = Gateway::start(&config(up.addr, &redis, "250ms", &quotas, &routes));
    let addr = gw.addr("main");
    let mut conn = None;
    let statuses = |conn: &mut Option<RawConn>, path: &str, n: usize| -> Vec<u16> {
        (0..n).map(|_| status_of(&get(conn, addr, path))).collect()
    };
    assert_eq!(statuses(&mut conn, "/open", 3), [200, 200, 429]);
    assert_eq!(statuses(&mut conn, "/closed", 3), [200, 200, 429]);
    assert_eq!(redis.keys("portcullis:q:*").len(), 2);
    assert_eq!(up.hits(), 4);

    redis.kill();
    for _ in 0..5 {
        let resp = get(&mut conn, addr, "/closed");
        assert_eq!(status_of(&resp), 503, "{resp}");
        assert_eq!(problem_type(body_of(&resp)), problem("store-unavailable"), "{resp}");
    }
    assert_eq!(up.hits(), 4, "a fail_closed request reached the upstream");
    // fail_open: this node's own count decides (it saw none of this period: the limit, then 429).
    assert_eq!(statuses(&mut conn, "/open", 4), [200, 200, 429, 429]);
    assert_eq!(up.hits(), 6);
    let m = gw.metrics();
    let failed = metric(&m, "portcullis_rate_limit_store_failures_total{limit=\"quota:closed\",mode=\"fail_closed\"}");
    assert_eq!(failed, Some(5.0), "{m}");
}

/// Two gateways sharing bans through one Redis (`redis.share_bans: true`); `top` follows the limits.
fn shared_bans_config(up: SocketAddr, redis: &RedisServer, rate: &str, extra: &str) -> String {
    let limits = format!("  strict:\n    rate: {rate}\n    burst: 1\n{extra}");
    config(up, redis, "5s", &limits, &route("app", "/", "strict"))
        .replace("  connect_timeout: 200ms\n", "  connect_timeout: 200ms\n  share_bans: true\n")
}

/// Polls `addr` until it answers `want` (to a deadline); returns the last answer.
fn until_status(addr: SocketAddr, path: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(&mut None, addr, path);
        if status_of(&resp) == want {
            return resp;
        }
        assert!(Instant::now() < deadline, "{addr} never answered {want}; last:\n{resp}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_ban_set_through_the_cli_applies_on_every_node() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let yaml = shared_bans_config(up.addr, &redis, "1000/s", "");
    let dir = TempDir::new();
    let path = dir.write("c.yaml", &yaml);
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    let (code, out, err) =
        portcullis(&["bans", "-c", &path_str(&path), "add", "--ip", "127.0.0.1", "--for", "1h", "--reason", "t"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_owned();
    assert_eq!(redis.command(&["HLEN", "portcullis:bans"]).trim_start_matches(':').trim(), "1");
    for node in [a.addr("main"), b.addr("main")] {
        until_status(node, "/x", 403);
    }
    let hits = up.hits();
    for node in [a.addr("main"), b.addr("main")] {
        let resp = get(&mut None, node, "/x");
        assert_eq!(status_of(&resp), 403, "{resp}");
    }
    assert_eq!(up.hits(), hits, "a banned request reached the upstream");
    let (code, out, err) = portcullis(&["bans", "-c", &path_str(&path), "list"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("127.0.0.1") && out.contains("manual"), "{out}");
    let (code, out, err) = portcullis(&["bans", "-c", &path_str(&path), "remove", &id], &[]);
    assert_eq!(code, 0, "{out}{err}");
    for node in [a.addr("main"), b.addr("main")] {
        until_status(node, "/x", 200);
    }
}

#[test]
fn an_automatic_ban_on_one_node_applies_on_the_other() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let yaml = shared_bans_config(
        up.addr,
        &redis,
        "1/m",
        "auto_ban: { after: 2, statuses: [429], within: 1m, ban_for: 1h }\n",
    );
    // B bans nobody itself (no auto_ban): a 403 from it is A's ban, read from Redis.
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&shared_bans_config(up.addr, &redis, "1/m", "")));
    let mut conn = None;
    let statuses: Vec<u16> = (0..3).map(|_| status_of(&get(&mut conn, a.addr("main"), "/x"))).collect();
    assert_eq!(statuses, [200, 429, 429]);
    assert_eq!(up.hits(), 1);
    until_status(a.addr("main"), "/x", 403);
    until_status(b.addr("main"), "/x", 403);
    let hits = up.hits();
    for node in [a.addr("main"), b.addr("main")] {
        let resp = get(&mut None, node, "/x");
        assert_eq!(status_of(&resp), 403, "{resp}");
    }
    assert_eq!(up.hits(), hits, "a banned request reached the upstream");
    let stored = redis.command(&["HGETALL", "portcullis:bans"]);
    assert!(stored.contains("127.0.0.1") && stored.contains("auto"), "{stored}");
}
