#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A fleet: two gateway processes sharing one PostgreSQL (API keys, admin tokens) and one Redis (bans,
//! rate limits), all real. A key made through node A's admin API works on node B; a key revoked on A
//! is refused on B within 1 s of the revoke call's answer; a ban set on B applies on A; one rate limit
//! holds across both; with PostgreSQL stopped both keep serving their last state (and say so in their
//! metrics), and once it is back a revocation made through the CLI reaches both.
#[allow(unreachable_pub)]
mod common;

use common::admin::{call, Answer};
use common::pg::PgServer;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const HMAC_ENV: &str = "PORTCULLIS_TEST_FLEET_HMAC";
const HMAC: &str = "fleet-test-server-secret-5e6f7a8b9c0d1e2f";
const URL_ENV: &str = "PORTCULLIS_TEST_FLEET_PG_URL";

fn config(state: &TempDir, up: SocketAddr, redis: &RedisServer) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
store:
  sqlite: {sqlite}
  postgres:
    url: ${{env:{URL_ENV}}}
    connect_timeout: 1s
redis:
  url: {redis}
  share_bans: true
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HMAC_ENV}}}
      store: postgres
rate_limits:
  shared:
    rate: 1/m
    burst: 4
    key: [principal]
    store: redis
    on_store_failure: fail_closed
routes:
  - name: limited
    match:
      path: {{ prefix: /limited }}
    upstream: app
    auth: keys
    authorize: authenticated
    rate_limits: [shared]
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: keys
    authorize: authenticated
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        sqlite = path_str(&state.path("state.db")),
        redis = redis.url(),
    )
}

struct Node {
    gw: Gateway,
    /// Holds the node's own SQLite file.
    _state: TempDir,
}

impl Node {
    fn start(pg: &PgServer, up: SocketAddr, redis: &RedisServer) -> Node {
        let state = TempDir::new();
        let url = pg.url();
        let gw = Gateway::start_with_env(&config(&state, up, redis), &[(HMAC_ENV, HMAC), (URL_ENV, &url)]);
        Node { gw, _state: state }
    }

    fn get(&self, path: &str, key: &str) -> u16 {
        curl(&["-H", &format!("x-api-key: {key}"), &format!("http://{}{path}", self.gw.addr("main"))]).0
    }

    fn admin(&self, token: &str, method: &str, path: &str, body: Option<&str>, idem: &str) -> Answer {
        let idem = format!("Idempotency-Key: {idem}");
        call(self.gw.addr("admin"), Some(token), method, path, body, &[&idem])
    }

    fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.gw.metrics(), series)
    }
}

/// Runs `portcullis ARGS` with `-c config` after the command word, in the fleet's environment.
fn cli(config: &std::path::Path, pg: &PgServer, args: &[&str]) -> String {
    let mut all = vec![args[0], "-c", config.to_str().unwrap()];
    all.extend_from_slice(&args[1..]);
    let url = pg.url();
    let (code, out, err) = portcullis(&all, &[(HMAC_ENV, HMAC), (URL_ENV, &url)]);
    assert_eq!(code, 0, "portcullis {args:?}: {err}");
    assert!(!out.contains(&pg.password) && !err.contains(&pg.password), "the password was printed");
    out.trim().to_owned()
}

/// Polls `f` until it is true or `deadline` passes; returns the attempts made, or panics with `what`.
fn within(deadline: Instant, what: &str, mut f: impl FnMut() -> bool) -> usize {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if f() {
            return attempts;
        }
        assert!(Instant::now() < deadline, "{what} (after {attempts} attempts)");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Makes a key for `principal` through `node`'s admin API; returns (id, key).
fn create_key(node: &Node, token: &str, principal: &str) -> (String, String) {
    let body = format!(r#"{{"principal": "{principal}", "roles": ["reader"]}}"#);
    let made = node.admin(token, "POST", "/admin/v1/keys", Some(&body), &format!("create-{principal}"));
    assert_eq!(made.status, 201, "{made:?}");
    let v = made.json();
    (v["key"]["id"].as_str().unwrap().to_owned(), v["secret"].as_str().unwrap().to_owned())
}

#[test]
fn a_fleet_shares_keys_tokens_bans_and_limits_and_rides_out_a_postgres_outage() {
    let mut pg = PgServer::start();
    let redis = RedisServer::start();
    let up = Upstream::start("fleet");
    let a = Node::start(&pg, up.addr, &redis);
    let b = Node::start(&pg, up.addr, &redis);
    // The admin token is made once, in PostgreSQL: both nodes accept it.
    let token = cli(&a.gw.config, &pg, &["admin", "token", "create", "--role", "admin", "--name", "fleet-admin"]);
    let t = Instant::now() + Duration::from_secs(5);
    within(t, "a node never accepted the admin token", || {
        [&a, &b].iter().all(|n| n.admin(&token, "GET", "/admin/v1/keys", None, "list").status == 200)
    });

    // A key made through A's admin API works on B.
    let (alice_id, alice) = create_key(&a, &token, "alice");
    let t = Instant::now() + Duration::from_secs(2);
    within(t, "A's new key was not accepted by B", || b.get("/x", &alice) == 200);
    assert_eq!(a.get("/x", &alice), 200);
    let (_, bob) = create_key(&a, &token, "bob");

    // Revoked on A: refused on B (and on A) within 1 s of the revoke call's answer.
    let revoked = a.admin(&token, "POST", &format!("/admin/v1/keys/{alice_id}/revoke"), None, "revoke-alice");
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let deadline = Instant::now() + Duration::from_secs(1);
    let attempts =
        within(deadline, "B still accepted the revoked key 1 s after the revocation", || b.get("/x", &alice) == 401);
    eprintln!("revocation reached B after {attempts} attempts");
    within(deadline, "A still accepted the revoked key 1 s after the revocation", || a.get("/x", &alice) == 401);
    let hits = up.hits();
    assert_eq!(b.get("/x", &alice), 401);
    assert_eq!(a.get("/x", &alice), 401);
    assert_eq!(up.hits(), hits, "a revoked key reached the upstream");

    // A ban set on B (through its admin API, into the fleet's Redis) applies on A.
    let (_, carol) = create_key(&a, &token, "carol");
    let t = Instant::now() + Duration::from_secs(2);
    within(t, "carol's key not accepted", || a.get("/x", &carol) == 200 && b.get("/x", &carol) == 200);
    let ban = b.admin(
        &token,
        "POST",
        "/admin/v1/bans",
        Some(r#"{"kind": "principal", "target": "api_key:carol", "duration": "1h", "reason": "fleet test"}"#),
        "ban-carol",
    );
    assert_eq!(ban.status, 201, "{ban:?}");
    let t = Instant::now() + Duration::from_secs(3);
    within(t, "B's ban did not apply on A", || a.get("/x", &carol) == 403);
    let hits = up.hits();
    assert_eq!(a.get("/x", &carol), 403);
    assert_eq!(b.get("/x", &carol), 403);
    assert_eq!(up.hits(), hits, "a banned principal reached the upstream");
    assert_eq!(a.get("/x", &bob), 200, "the ban is carol's alone");

    // One rate limit (burst 4, per principal) across both nodes: the fifth request is refused,
    // whichever node it reaches.
    let (_, dave) = create_key(&b, &token, "dave");
    let t = Instant::now() + Duration::from_secs(2);
    within(t, "dave's key not accepted on A", || a.get("/x", &dave) == 200);
    let statuses: Vec<u16> =
        (0..8).map(|i| if i % 2 == 0 { a.get("/limited", &dave) } else { b.get("/limited", &dave) }).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429], "one budget for the fleet");

    // Rotated on B: the new key works on A, the old one through its grace period.
    let dave_id = dave[4..12].to_owned();
    let rotated =
        b.admin(&token, "POST", &format!("/admin/v1/keys/{dave_id}/rotate"), Some(r#"{"grace": "1h"}"#), "rot-dave");
    assert_eq!(rotated.status, 201, "{rotated:?}");
    let dave2 = rotated.json()["secret"].as_str().unwrap().to_owned();
    let dave2_id = dave2[4..12].to_owned();
    let t = Instant::now() + Duration::from_secs(2);
    within(t, "B's rotated key was not accepted by A", || a.get("/x", &dave2) == 200);
    assert_eq!(a.get("/x", &dave), 200, "the old key during its grace period");
    // Changed on A (conditionally, with the ETag B gave): B applies the new address restriction.
    let shown = b.admin(&token, "GET", &format!("/admin/v1/keys/{dave2_id}"), None, "get-dave2");
    assert_eq!(shown.status, 200, "{shown:?}");
    let etag = shown.header("etag").unwrap();
    let patched = call(
        a.gw.addr("admin"),
        Some(&token),
        "PATCH",
        &format!("/admin/v1/keys/{dave2_id}"),
        Some(r#"{"cidrs": ["203.0.113.0/24"]}"#),
        &["Idempotency-Key: patch-dave2", &format!("If-Match: {etag}")],
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    // A second operator, on B, with the ETag from before A's change: refused, nothing overwritten.
    let late = call(
        b.gw.addr("admin"),
        Some(&token),
        "PATCH",
        &format!("/admin/v1/keys/{dave2_id}"),
        Some(r#"{"cidrs": []}"#),
        &[&format!("If-Match: {etag}")],
    );
    assert_eq!(late.status, 412, "{late:?}");
    let t = Instant::now() + Duration::from_secs(1);
    within(t, "B still accepted the key from an address it no longer allows", || b.get("/x", &dave2) == 401);
    // B lists the keys made on A.
    let listed = b.admin(&token, "GET", "/admin/v1/keys?limit=100", None, "list-b");
    assert_eq!(listed.status, 200, "{listed:?}");
    for id in [&alice_id, &dave_id, &dave2_id] {
        assert!(listed.body.contains(id.as_str()), "{id} not listed on B: {}", listed.body);
    }

    // PostgreSQL stops: both nodes keep their last state; their metrics show the outage.
    assert_eq!(a.metric("portcullis_store_up{backend=\"postgres\"}"), Some(1.0));
    pg.stop();
    for node in [&a, &b] {
        let t = Instant::now() + Duration::from_secs(10);
        within(t, "the outage does not show in store_up", || {
            node.metric("portcullis_store_up{backend=\"postgres\"}") == Some(0.0)
        });
        let errors = node.gw.metrics();
        assert!(
            errors
                .lines()
                .any(|l| l.starts_with("portcullis_store_errors_total{backend=\"postgres\"") && !l.ends_with(" 0")),
            "no store errors counted:\n{errors}"
        );
        assert_eq!(node.get("/x", &bob), 200, "a valid key during the outage");
        assert_eq!(node.get("/x", &alice), 401, "a revoked key during the outage");
        assert_eq!(node.get("/x", &carol), 403, "a banned principal during the outage");
    }
    let logs = a.gw.logs().join("\n");
    assert_eq!(logs.matches("PostgreSQL unavailable").count(), 1, "one warning per outage:\n{logs}");

    // PostgreSQL returns: a key revoked with the CLI reaches both nodes.
    pg.start_again();
    let bob_id = &bob[4..12];
    cli(&a.gw.config, &pg, &["keys", "revoke", bob_id]);
    let t = Instant::now() + Duration::from_secs(10);
    within(t, "the nodes did not catch up after PostgreSQL returned", || {
        a.get("/x", &bob) == 401 && b.get("/x", &bob) == 401
    });
    for node in [&a, &b] {
        let t = Instant::now() + Duration::from_secs(10);
        within(t, "store_up did not return to 1", || {
            node.metric("portcullis_store_up{backend=\"postgres\"}") == Some(1.0)
        });
        assert!(!node.gw.logs().join("\n").contains(&pg.password), "the password was logged");
        assert!(!node.gw.logs().join("\n").contains(&token), "the admin token was logged");
    }
    assert_eq!(a.get("/x", &dave), 200, "dave's key still works");

    // An admin token revoked with the CLI is refused by both nodes within a second.
    let listed = a.admin(&token, "GET", "/admin/v1/tokens", None, "tokens");
    assert_eq!(listed.status, 200, "{listed:?}");
    let id = listed.json()["items"][0]["id"].as_str().unwrap().to_owned();
    cli(&a.gw.config, &pg, &["admin", "token", "revoke", &id]);
    let t = Instant::now() + Duration::from_secs(1);
    within(t, "a node still accepted the revoked admin token 1 s later", || {
        [&a, &b].iter().all(|n| n.admin(&token, "GET", "/admin/v1/keys", None, "list").status == 401)
    });
}
