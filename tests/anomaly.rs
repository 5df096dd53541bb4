#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The anomaly detector in a running gateway (issue 16): alerts with explanations through the admin API
//! and the event stream; `enforce` mode bans a stuffing address and lifts it at expiry; a `challenge`
//! on a JWT route needs a token issued after the alert; `monitor` mode only logs; lifting an action.
//! Clients are real (raw HTTP/1.1 on keep-alive connections, curl for the admin API); client addresses
//! come from `X-Forwarded-For` through a trusted proxy (the test), so one loopback client can be many.

#[allow(unreachable_pub)]
mod common;

use common::admin::{call, token, Answer};
use common::{hs256, Gateway, RawConn, TempDir, Upstream};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HMAC: &str = "anomaly-test-hmac-secret-0123456789abcdef";
const JWT_SECRET: &str = "anomaly-test-jwt-secret-0123456789abcdef!";
const JWT_SECRET_2: &str = "anomaly-test-jwt-secret-of-another-idp-0123!";
const T: Duration = Duration::from_secs(10);

fn config(dir: &TempDir, up: SocketAddr, anomaly: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
trusted_proxies: [127.0.0.1]
upstreams:
  app:
    targets:
      - address: {up}
store:
  sqlite: {state}
authenticators:
  keys:
    api_key:
      hmac_secret: {HMAC}
  tokens:
    jwt:
      issuer: https://idp.test
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {JWT_SECRET}
  other_idp:
    jwt:
      issuer: https://idp2.test
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {JWT_SECRET_2}
routes:
  - name: keyed
    match:
      path: {{ prefix: /k }}
    upstream: app
    auth: keys
    authorize: authenticated
  - name: tokened
    match:
      path: {{ prefix: /j }}
    upstream: app
    auth: tokens
    authorize: authenticated
  - name: other_idp
    match:
      path: {{ prefix: /i }}
    upstream: app
    auth: other_idp
    authorize: authenticated
  - name: open
    match:
      path: {{ prefix: /p }}
    upstream: app
    auth: none
events:
  stdout: true
logging:
  level: info
admin:
  address: 127.0.0.1:0
{anomaly}
"#,
        state = dir.path("state.db").display(),
    )
}

struct Setup {
    gw: Gateway,
    up: Upstream,
    viewer: String,
    operator: String,
}

fn setup(anomaly: &str) -> Setup {
    setup_with(anomaly, |yaml| yaml)
}

/// [`setup`] with the config edited first.
fn setup_with(anomaly: &str, edit: impl FnOnce(String) -> String) -> Setup {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let yaml = edit(config(&dir, up.addr, anomaly));
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (viewer, _) = token(&cfg, "viewer");
    let (operator, _) = token(&cfg, "operator");
    let gw = Gateway::start_in(dir, &yaml);
    Setup { gw, up, viewer, operator }
}

impl Setup {
    fn admin(&self, token: &str, method: &str, path: &str) -> Answer {
        call(self.gw.addr("admin"), Some(token), method, path, None, &[])
    }

    fn alerts(&self, detector: &str) -> Vec<Value> {
        let a = self.admin(&self.viewer, "GET", &format!("/admin/v1/anomaly/alerts?detector={detector}"));
        assert_eq!(a.status, 200, "{a:?}");
        a.json()["items"].as_array().cloned().unwrap_or_default()
    }

    /// The newest `anomaly.action` event with this reason (`set`, `expired`, `lifted`) and action.
    fn action_event(&self, reason: &str, action: &str) -> Option<Value> {
        let a = self.admin(&self.viewer, "GET", "/admin/v1/events?kind=anomaly.action");
        assert_eq!(a.status, 200, "{a:?}");
        a.json()["items"].as_array()?.iter().find(|e| e["reason"] == reason && e["attrs"]["action"] == action).cloned()
    }

    fn actions(&self) -> Vec<Value> {
        let a = self.admin(&self.viewer, "GET", "/admin/v1/anomaly/actions");
        assert_eq!(a.status, 200, "{a:?}");
        a.json()["items"].as_array().cloned().unwrap_or_default()
    }
}

/// One request on `conn` from client address `ip` (through the trusted proxy) with extra header lines.
fn get(conn: &mut RawConn, path: &str, ip: &str, headers: &str) -> (u16, String) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: {ip}\r\nUser-Agent: okhttp/4.12.0\r\nAccept: application/json\r\n{headers}\r\n"
    );
    let resp = conn.send(req.as_bytes(), T);
    let status = common::status_of(&resp);
    (status, resp)
}

/// A well-formed-looking API key with public id `id` that no store knows.
fn bogus_key(id: &str) -> String {
    format!("pcs_{id}_{}", "A".repeat(32) + "abcdefg")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn jwt(sub: &str, iat: u64) -> String {
    hs256(JWT_SECRET, &json!({"iss": "https://idp.test", "aud": "api", "sub": sub, "iat": iat, "exp": iat + 3600}))
}

fn problem_of(resp: &str) -> String {
    common::problem_type(common::body_of(resp))
}

/// Credential stuffing from one address: many different key ids refused. Returns the status that ended
/// the run (403 once banned) and the number of attempts.
fn stuff(conn: &mut RawConn, ip: &str, max: usize, stop_on_ban: bool) -> (u16, usize) {
    let mut last = 0;
    for i in 0..max {
        let key = bogus_key(&format!("{i:08x}"));
        let (status, resp) = get(conn, "/k/orders", ip, &format!("X-API-Key: {key}\r\n"));
        last = status;
        if status == 403 {
            assert_eq!(problem_of(&resp), "urn:portcullis:problem:banned", "{resp}");
            if stop_on_ban {
                return (status, i + 1);
            }
        } else {
            assert_eq!(status, 401, "{resp}");
        }
    }
    (last, max)
}

#[test]
fn enforce_bans_a_stuffing_address_and_lifts_it_at_expiry() {
    let s = setup("anomaly:\n  mode: enforce\n  detectors:\n    credential_stuffing: { duration: 3s }\n");
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let attacker = "203.0.113.7";
    let (status, attempts) = stuff(&mut conn, attacker, 600, true);
    assert_eq!(status, 403, "not banned after {attempts} distinct failing keys");
    assert_eq!(s.up.hits(), 0, "nothing reaches the upstream");
    // The alert, explained.
    let alerts = s.alerts("credential_stuffing");
    let a = alerts.iter().find(|a| a["entity"]["label"] == attacker).unwrap_or_else(|| panic!("{alerts:?}"));
    assert_eq!(a["entity"]["kind"], "ip", "{a}");
    assert!(a["feature"].as_str().is_some_and(|f| !f.is_empty()), "{a}");
    assert!(a["observed"].as_f64().unwrap() > a["baseline"].as_f64().unwrap(), "{a}");
    assert!(a["score"].as_f64().unwrap() > 0.0 && a["window_s"].as_u64().unwrap() > 0, "{a}");
    assert!(a["explanation"].as_str().unwrap().len() > 20, "{a}");
    assert_eq!(a["enforced"], true);
    // The ban is an action in force, and a guard ban.
    let actions = s.actions();
    assert!(actions.iter().any(|x| x["kind"] == "ban" && x["target"] == attacker), "{actions:?}");
    let bans = s.admin(&s.viewer, "GET", "/admin/v1/bans").json();
    assert!(bans["items"].as_array().unwrap().iter().any(|b| b["target"] == attacker), "{bans}");
    // Another client is not touched.
    let (other, _) = get(&mut conn, "/k/orders", "198.51.100.9", &format!("X-API-Key: {}\r\n", bogus_key("feedbeef")));
    assert_eq!(other, 401);
    // The security event carries the explanation.
    let events = s.admin(&s.viewer, "GET", "/admin/v1/events?kind=anomaly.alert").json();
    let e = events["items"].as_array().unwrap().iter().find(|e| e["rule"] == "credential_stuffing").cloned();
    let e = e.unwrap_or_else(|| panic!("no anomaly.alert event: {events}"));
    assert!(e["attrs"]["explanation"].as_str().is_some_and(|x| !x.is_empty()), "{e}");
    assert_eq!(e["severity"], "high", "`alert` is among the default actions: {e}");
    // The ban runs out by itself: the address is answered 401 again (polled, no sleep asserted).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lifted = false;
    while Instant::now() < deadline {
        let (st, _) = get(&mut conn, "/k/orders", attacker, "");
        if st == 401 {
            lifted = true;
            break;
        }
        assert_eq!(st, 403);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lifted, "the ban did not expire");
    assert_eq!(s.up.hits(), 0);
    // The action's life is in the event stream: set, then expired (the detector notices on its own
    // clock: polled).
    let set = s.action_event("set", "ban").unwrap_or_else(|| panic!("no anomaly.action set event"));
    assert_eq!((set["rule"].as_str(), set["attrs"]["target"].as_str()), (Some("credential_stuffing"), Some(attacker)));
    wait_for("the anomaly.action expired event", || s.action_event("expired", "ban").is_some());
}

#[test]
fn monitor_mode_alerts_but_never_refuses() {
    let s = setup("anomaly:\n  detectors:\n    credential_stuffing: { duration: 1m }\n");
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let attacker = "203.0.113.8";
    let (last, _) = stuff(&mut conn, attacker, 300, false);
    assert_eq!(last, 401, "monitor mode must not ban");
    // The alert arrives (the detector thread is asynchronous: poll).
    let deadline = Instant::now() + T;
    let alert = loop {
        let alerts = s.alerts("credential_stuffing");
        if let Some(a) = alerts.into_iter().find(|a| a["entity"]["label"] == attacker) {
            break a;
        }
        assert!(Instant::now() < deadline, "no alert in monitor mode");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(alert["enforced"], false);
    assert!(s.actions().is_empty());
    // (The entity count is taken at the detector's tick, once a second: it can trail the alert.)
    let deadline = Instant::now() + T;
    let status = loop {
        let status = s.admin(&s.viewer, "GET", "/admin/v1/anomaly/status").json();
        if status["entities"].as_u64().is_some_and(|n| n >= 1) || Instant::now() >= deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["mode"], "monitor");
    assert!(status["entities"].as_u64().unwrap() >= 1, "{status}");
    let metrics = s.gw.metrics();
    let alerts = common::metric(&metrics, "portcullis_anomaly_alerts_total{detector=\"credential_stuffing\"}");
    assert!(alerts.is_some_and(|n| n >= 1.0), "{metrics}");
}

#[test]
fn challenge_on_a_jwt_route_needs_a_fresh_token_and_can_be_lifted() {
    let s = setup(
        "anomaly:\n  mode: enforce\n  detectors:\n    token_sharing: { actions: [log, alert, challenge], duration: 10m }\n",
    );
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let stolen = jwt("carol", now_s() - 30);
    let auth = format!("Authorization: Bearer {stolen}\r\n");
    // The owner, then the same token from many networks and agents at once.
    let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &auth);
    assert_eq!(st, 200);
    let mut challenged = None;
    'outer: for round in 0..30 {
        for net in 0..40u32 {
            let ip = format!("{}.{}.{}.{}", 11 + net, 20 + round, 3, 4);
            let agent = format!("User-Agent: client-{net}/1.{round}\r\n");
            let req =
                format!("GET /j/profile HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: {ip}\r\n{agent}{auth}\r\n");
            let resp = conn.send(req.as_bytes(), T);
            let status = common::status_of(&resp);
            if status == 401 {
                assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
                assert!(common::header_of(&resp, "www-authenticate").is_some(), "{resp}");
                challenged = Some(resp);
                break 'outer;
            }
            assert_eq!(status, 200, "{resp}");
        }
    }
    assert!(challenged.is_some(), "the shared token was never challenged");
    let alert = s.alerts("token_sharing").into_iter().next().expect("a token_sharing alert");
    assert!(alert["explanation"].as_str().unwrap().len() > 20, "{alert}");
    // Refused requests never reach the upstream.
    let hits = s.up.hits();
    let (st, resp) = get(&mut conn, "/j/profile", "192.0.2.10", &auth);
    assert_eq!((st, problem_of(&resp)), (401, "urn:portcullis:problem:reauthenticate".to_owned()), "{resp}");
    assert_eq!(s.up.hits(), hits);
    // A token issued after the alert passes (iat is in seconds: poll until one is newer than the alert).
    let deadline = Instant::now() + T;
    loop {
        let fresh = jwt("carol", now_s());
        let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &format!("Authorization: Bearer {fresh}\r\n"));
        if st == 200 {
            break;
        }
        assert_eq!(st, 401);
        assert!(Instant::now() < deadline, "a fresh token was never accepted");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Other principals are not challenged.
    let (st, _) =
        get(&mut conn, "/j/profile", "192.0.2.11", &format!("Authorization: Bearer {}\r\n", jwt("dave", now_s() - 30)));
    assert_eq!(st, 200);
    // Lifting: a viewer may not, an operator may; then the old token works again.
    let action = s.actions().into_iter().find(|a| a["kind"] == "challenge").expect("a challenge in force");
    assert_eq!(action["target"], "jwt:carol", "{action}");
    let id = action["id"].as_u64().unwrap();
    assert_eq!(s.admin(&s.viewer, "DELETE", &format!("/admin/v1/anomaly/actions/{id}")).status, 403);
    assert_eq!(s.admin(&s.operator, "DELETE", &format!("/admin/v1/anomaly/actions/{id}")).status, 204);
    assert_eq!(s.admin(&s.operator, "DELETE", &format!("/admin/v1/anomaly/actions/{id}")).status, 404);
    // Set, then lifted: both are security events.
    let set = s.action_event("set", "challenge").unwrap_or_else(|| panic!("no anomaly.action set event"));
    assert_eq!(set["rule"], "token_sharing", "{set}");
    assert!(s.action_event("lifted", "challenge").is_some(), "no anomaly.action lifted event");
    let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &auth);
    assert_eq!(st, 200);
}

/// The same token from many networks and agents at once, until the gateway answers something other
/// than 200: that answer.
fn share_until_refused(conn: &mut RawConn, auth: &str, tag: u32) -> String {
    for round in 0..30 {
        for net in 0..40u32 {
            let ip = format!("{}.{}.{}.{}", 11 + net, 20 + round, tag, 4);
            let agent = format!("User-Agent: client-{net}/{tag}.{round}\r\n");
            let req =
                format!("GET /j/profile HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: {ip}\r\n{agent}{auth}\r\n");
            let resp = conn.send(req.as_bytes(), T);
            if common::status_of(&resp) != 200 {
                return resp;
            }
        }
    }
    panic!("the shared token was never refused");
}

/// Two workloads whose ids share their first 32 bytes (an alert's label is cut there).
const WORKLOAD_A: &str = "urn:example:payments:workload:00001";
const WORKLOAD_B: &str = "urn:example:payments:workload:00002";

/// Whoever an action lands on is the exact credential it was raised on: not another id with the same
/// first 32 bytes. And a thief replaying the challenged token neither renews the challenge nor moves
/// it past the owner's fresh token.
#[test]
fn a_challenge_lands_on_the_exact_principal_and_replaying_the_old_token_does_not_renew_it() {
    let s = setup(
        "anomaly:\n  mode: enforce\n  cooldown: 1s\n  detectors:\n    token_sharing: { actions: [log, alert, challenge], duration: 10m }\n",
    );
    assert!(WORKLOAD_A.len() > 32 && WORKLOAD_A[..32] == WORKLOAD_B[..32]);
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let stolen = format!("Authorization: Bearer {}\r\n", jwt(WORKLOAD_A, now_s() - 30));
    let resp = share_until_refused(&mut conn, &stolen, 3);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    // The neighbour is not challenged, though an alert's label cannot tell the two apart.
    let neighbour = format!("Authorization: Bearer {}\r\n", jwt(WORKLOAD_B, now_s() - 30));
    let (st, resp) = get(&mut conn, "/j/profile", "192.0.2.20", &neighbour);
    assert_eq!(st, 200, "{resp}");
    let actions = s.actions();
    let action = actions.iter().find(|a| a["kind"] == "challenge").unwrap_or_else(|| panic!("{actions:?}"));
    assert_eq!(action["target"], format!("jwt:{}", &WORKLOAD_A[..32]), "{action}");
    // The owner's fresh token passes (iat is in seconds: poll until one is newer than the alert).
    let deadline = Instant::now() + T;
    let fresh = loop {
        let fresh = format!("Authorization: Bearer {}\r\n", jwt(WORKLOAD_A, now_s()));
        let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &fresh);
        if st == 200 {
            break fresh;
        }
        assert_eq!(st, 401);
        assert!(Instant::now() < deadline, "a fresh token was never accepted");
        std::thread::sleep(Duration::from_millis(250));
    };
    let challenge = |s: &Setup| s.actions().into_iter().find(|a| a["kind"] == "challenge").expect("a challenge");
    let began = challenge(&s)["since_ms"].as_u64().unwrap();
    // Past the cooldown, the owner's own requests alert again (the ten-minute window still holds the
    // thief's networks), but the challenge keeps the time it began: the fresh token stays good. A ban
    // of a stuffing address marks a point the detector has reached (one queue, in order).
    let first_ms = s.alerts("token_sharing").iter().filter_map(|a| a["at_ms"].as_u64()).max().unwrap();
    while SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 <= first_ms + 1_500 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &fresh);
    assert_eq!(st, 200);
    let (st, _) = stuff(&mut conn, "203.0.113.98", 600, true);
    assert_eq!(st, 403);
    let alerted = s.alerts("token_sharing");
    let last_ms = alerted.iter().filter_map(|a| a["at_ms"].as_u64()).max().unwrap();
    assert!(alerted.len() >= 2 && last_ms > first_ms, "the owner's request raised no second alert: {alerted:?}");
    assert_eq!(challenge(&s)["since_ms"].as_u64(), Some(began), "the challenge's start moved");
    let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &fresh);
    assert_eq!(st, 200, "the owner's fresh token is refused after the second alert");
    // Past the one-second cooldown of the latest (polled on the wall clock, nothing asserted on it),
    // the thief replays the old token from eighty more networks: all refused, none reaches the upstream.
    while SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 <= last_ms + 1_500 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let hits = s.up.hits();
    let replay_from = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let resp = share_until_refused(&mut conn, &stolen, 4);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    for net in 0..80u32 {
        let (st, _) = get(&mut conn, "/j/profile", &format!("{}.9.9.9", 100 + net), &stolen);
        assert_eq!(st, 401);
    }
    assert_eq!(s.up.hits(), hits, "a refused replay reached the upstream");
    let (st, _) = stuff(&mut conn, "203.0.113.99", 600, true);
    assert_eq!(st, 403);
    // The replays were not the principal's use: no alert on a request since they began (the owner's
    // request just before may still have raised one: the window holds the thief's networks), and the
    // fresh token still passes.
    let after = s.alerts("token_sharing");
    assert!(after.len() >= alerted.len());
    let raised: Vec<&Value> = after.iter().filter(|a| a["at_ms"].as_u64().unwrap() >= replay_from).collect();
    assert!(raised.is_empty(), "refused replays raised an alert: {raised:?}");
    let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &fresh);
    assert_eq!(st, 200);
}

/// `throttle` on a principal: its own rate, 429 with `Retry-After`, nothing past it reaches the
/// upstream, and only the exact principal is slowed.
#[test]
fn a_throttle_answers_429_with_retry_after_to_the_exact_principal() {
    let s = setup(
        "anomaly:\n  mode: enforce\n  detectors:\n    token_sharing: { actions: [log, throttle], duration: 10m, throttle: 1/m }\n",
    );
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let shared = format!("Authorization: Bearer {}\r\n", jwt(WORKLOAD_A, now_s() - 30));
    let resp = share_until_refused(&mut conn, &shared, 5);
    assert_eq!(common::status_of(&resp), 429, "{resp}");
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:too-many-requests", "{resp}");
    let retry: u64 = common::header_of(&resp, "retry-after").expect("Retry-After").trim().parse().unwrap();
    assert!((1..=60).contains(&retry), "{resp}");
    // Refused again at once, even with a fresh token (a throttle is not a challenge), from anywhere.
    let hits = s.up.hits();
    let fresh = format!("Authorization: Bearer {}\r\n", jwt(WORKLOAD_A, now_s() + 1));
    let (st, _) = get(&mut conn, "/j/profile", "192.0.2.10", &fresh);
    assert_eq!(st, 429);
    assert_eq!(s.up.hits(), hits);
    // The neighbour with the same first 32 bytes, and the address the throttled client used, pass.
    let neighbour = format!("Authorization: Bearer {}\r\n", jwt(WORKLOAD_B, now_s() - 30));
    for _ in 0..3 {
        let (st, resp) = get(&mut conn, "/j/profile", "192.0.2.10", &neighbour);
        assert_eq!(st, 200, "{resp}");
    }
    let actions = s.actions();
    let action = actions.iter().find(|a| a["kind"] == "throttle").unwrap_or_else(|| panic!("{actions:?}"));
    assert_eq!((action["target_kind"].as_str(), action["rate"].as_str()), (Some("principal"), Some("1/m")));
}

/// An address throttle applies before credentials are checked: a throttled stuffing address gets 429
/// (with `Retry-After`) instead of another 401, so it cannot go on trying keys at full speed, whatever
/// it presents; its neighbours are untouched.
#[test]
fn an_address_throttle_comes_before_authentication() {
    let s = setup(
        "anomaly:\n  mode: enforce\n  detectors:\n    credential_stuffing: { actions: [log, throttle], duration: 10m, throttle: 1/m }\n",
    );
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let attacker = "203.0.113.50";
    let mut throttled = None;
    for i in 0..600 {
        let key = bogus_key(&format!("{i:08x}"));
        let (st, resp) = get(&mut conn, "/k/orders", attacker, &format!("X-API-Key: {key}\r\n"));
        if st == 429 {
            throttled = Some(resp);
            break;
        }
        assert_eq!(st, 401, "{resp}");
    }
    let resp = throttled.expect("the stuffing address was never throttled");
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:too-many-requests", "{resp}");
    assert!(common::header_of(&resp, "retry-after").is_some_and(|v| v.trim().parse::<u64>().is_ok_and(|s| s >= 1)));
    // Whatever it presents next (another key, a valid-looking JWT, nothing), on a key, token or public
    // route, and however its address is spelled: 429, and nothing reaches the upstream.
    for ip in [attacker, "::ffff:203.0.113.50", "::ffff:cb00:7132"] {
        for (path, header) in [
            ("/k/orders", format!("X-API-Key: {}\r\n", bogus_key("0badc0de"))),
            ("/j/profile", format!("Authorization: Bearer {}\r\n", jwt("mallory", now_s() - 5))),
            ("/k/orders", String::new()),
            ("/p/catalogue", String::new()),
            // A credential next to another credential.
            (
                "/k/orders",
                format!(
                    "X-API-Key: {}\r\nAuthorization: Bearer {}\r\n",
                    bogus_key("0badc0df"),
                    jwt("mallory", now_s() - 5)
                ),
            ),
        ] {
            let (st, resp) = get(&mut conn, path, ip, &header);
            assert_eq!(st, 429, "{ip} {path}: {resp}");
        }
    }
    // HEAD, and HTTP/2 (curl, prior knowledge over cleartext), on a connection of their own.
    let url = format!("http://{}/p/catalogue", s.gw.addr("main"));
    let xff = format!("X-Forwarded-For: {attacker}");
    for extra in [&["-I"][..], &["--http2-prior-knowledge"][..]] {
        let mut args = extra.to_vec();
        args.extend(["-H", xff.as_str(), url.as_str()]);
        let (st, _, _) = common::curl(&args);
        assert_eq!(st, 429, "{extra:?}");
    }
    assert_eq!(s.up.hits(), 0);
    // The address next door still gets its ordinary 401.
    let (st, _) = get(&mut conn, "/k/orders", "203.0.113.51", &format!("X-API-Key: {}\r\n", bogus_key("feedbeef")));
    assert_eq!(st, 401);
    let actions = s.actions();
    assert!(actions.iter().any(|a| a["kind"] == "throttle" && a["target"] == attacker), "{actions:?}");
    // An IPv6 client is its /64: another address in it is the same client.
    let v6 = "2001:db8:77:1::10";
    let mut throttled = false;
    for i in 0..600 {
        let key = bogus_key(&format!("{:08x}", 0x1000 + i));
        let (st, resp) = get(&mut conn, "/k/orders", v6, &format!("X-API-Key: {key}\r\n"));
        if st == 429 {
            throttled = true;
            break;
        }
        assert_eq!(st, 401, "{resp}");
    }
    assert!(throttled, "the IPv6 stuffing client was never throttled");
    let (st, _) = get(&mut conn, "/p/catalogue", "2001:db8:77:1:ffff:1:2:3", "");
    assert_eq!(st, 429, "the same /64");
    let (st, _) = get(&mut conn, "/p/catalogue", "2001:db8:77:2::10", "");
    assert_eq!(st, 200, "the next /64");
}

/// Stuffing spread over an IPv6 site: each attempt from another /64 of one /56, so that no /64 comes
/// near the address tiers. The site is found and banned whole: another /64 of it is refused before
/// its credentials are read, the next /56 (of the same /48) is not, and no /64 was banned on its own.
#[test]
fn enforce_bans_a_site_that_stuffs_from_many_of_its_networks() {
    let s = setup("anomaly:\n  mode: enforce\n  detectors:\n    credential_stuffing: { duration: 10m }\n");
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let mut banned = None;
    for i in 0..200u32 {
        let ip = format!("2001:db8:7:{:x}::{:x}", i % 64, i + 1);
        let (st, resp) =
            get(&mut conn, "/k/orders", &ip, &format!("X-API-Key: {}\r\n", bogus_key(&format!("{i:08x}"))));
        if st == 403 {
            assert_eq!(problem_of(&resp), "urn:portcullis:problem:banned", "{resp}");
            banned = Some(i);
            break;
        }
        assert_eq!(st, 401, "{resp}");
    }
    // Ten keys in a minute from the site; the ban lands within the detector's reach of that.
    let at = banned.unwrap_or_else(|| panic!("the site was not banned"));
    assert!(at >= 10, "banned after {at} attempts: before the site's limit");
    assert_eq!(s.up.hits(), 0);
    let alerts = s.alerts("credential_stuffing");
    let a = alerts.iter().find(|a| a["entity"]["label"] == "2001:db8:7::/56").unwrap_or_else(|| panic!("{alerts:?}"));
    assert_eq!(a["entity"]["kind"], "ip", "{a}");
    assert_eq!(a["feature"], "distinct_failing_identities", "{a}");
    assert!(a["explanation"].as_str().unwrap().contains("of its networks"), "{a}");
    let actions = s.actions();
    assert!(actions.iter().any(|x| x["kind"] == "ban" && x["target"] == "2001:db8:7::/56"), "{actions:?}");
    assert!(actions.iter().all(|x| x["target"].as_str().is_some_and(|t| !t.ends_with("/64"))), "{actions:?}");
    // Another /64 of the site, with a key the store would know or not: refused before the key is read.
    let (st, resp) = get(&mut conn, "/p/catalogue", "2001:db8:7:ef::5", "");
    assert_eq!((st, problem_of(&resp).as_str()), (403, "urn:portcullis:problem:banned"), "{resp}");
    let (st, _) = get(&mut conn, "/p/catalogue", "2001:DB8:7:0:0:0:0:9", "");
    assert_eq!(st, 403, "another spelling of an address in the site");
    assert_eq!(s.up.hits(), 0);
    // The next site is served.
    let (st, _) = get(&mut conn, "/p/catalogue", "2001:db8:7:100::5", "");
    assert_eq!(st, 200, "the next /56");
    assert_eq!(s.up.hits(), 1);
}

/// A stuffing client that puts a decoy key in another header ahead of the keys it tries still claims
/// the key it tried: only the places the API-key method reads keys from count.
#[test]
fn a_decoy_key_does_not_hide_credential_stuffing() {
    let s = setup("anomaly:\n  mode: enforce\n  detectors:\n    credential_stuffing: { duration: 10m }\n");
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let decoy = format!("X-Decoy: {}\r\nX-Forwarded-Key: pcs_aaaaaaaa_\r\n", bogus_key("aaaaaaaa"));
    let mut banned = false;
    for i in 0..600 {
        let key = bogus_key(&format!("{i:08x}"));
        let (st, resp) = get(&mut conn, "/k/orders", "203.0.113.60", &format!("{decoy}X-API-Key: {key}\r\n"));
        if st == 403 {
            assert_eq!(problem_of(&resp), "urn:portcullis:problem:banned", "{resp}");
            banned = true;
            break;
        }
        assert_eq!(st, 401, "{resp}");
    }
    assert!(banned, "the decoy hid the stuffing");
    assert_eq!(s.up.hits(), 0);
    let alerts = s.alerts("credential_stuffing");
    assert!(alerts.iter().any(|a| a["entity"]["label"] == "203.0.113.60"), "{alerts:?}");
}

/// The config with one more route: `/j/users/{id}/orders`, each principal's own (a JWT's `sub`).
#[cfg(feature = "sim-clock")]
fn with_owner_route(yaml: String) -> String {
    let route = "  - name: user_orders\n    match:\n      path: { template: \"/j/users/{id}/orders\" }\n    upstream: app\n    auth: tokens\n    authorize:\n      owner: { param: id, claim: sub }\nevents:\n";
    yaml.replacen("events:\n", route, 1)
}

/// Object-level probing padded with requests that succeed (API1): a principal guesses other people's
/// ids, each refused by the route's owner rule, and asks for its own orders in between, two guesses a
/// minute (simulated), in no order, so that no ten minutes hold 30 refusals or half its requests
/// refused and no run of ids forms. The clock hour's distinct refused objects find it on the
/// principal, and in `enforce` the principal is throttled: 429, and neither its guesses nor its own
/// requests reach the upstream past it. Another principal is untouched.
#[cfg(feature = "sim-clock")]
#[test]
fn enumeration_padded_with_successes_is_throttled_on_the_hour() {
    let s = setup_with(
        "anomaly:\n  mode: enforce\n  clock: simulated\n  detectors:\n    enumeration: { actions: [log, throttle], duration: 2h, throttle: 1/m }\n",
        with_owner_route,
    );
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let auth = |sub: &str| format!("Authorization: Bearer {}\r\n", jwt(sub, now_s() - 30));
    let (mallory, alice) = (auth("mallory"), auth("alice"));
    // 08:01 UTC on a simulated day: the whole probe within one clock hour.
    let base: u64 = 1_800_000_000_000 + 60_000;
    let at = |k: u64| format!("Portcullis-Sim-Time: {}\r\n", base + k * 15_000);
    let mut served = 0;
    let mut probe = |conn: &mut RawConn, k: u64| {
        let path = if k.is_multiple_of(2) {
            format!("/j/users/victim-{:x}/orders", k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40)
        } else {
            "/j/users/mallory/orders".to_owned()
        };
        let (status, resp) = get(conn, &path, "198.51.100.7", &format!("{mallory}{}", at(k)));
        match status {
            429 => assert_eq!(problem_of(&resp), "urn:portcullis:problem:too-many-requests", "{resp}"),
            403 if k.is_multiple_of(2) => assert_eq!(problem_of(&resp), "urn:portcullis:problem:forbidden", "{resp}"),
            200 if !k.is_multiple_of(2) => served += 1,
            _ => panic!("request {k}: {resp}"),
        }
        status
    };
    // Up to 58 simulated minutes: 116 guesses. 60 objects set 39 bits of 64 on average (the 30th
    // minute); 116 set fewer over six standard deviations below their mean (the key is random).
    let mut k = 0;
    while k < 232 && probe(&mut conn, k) != 429 {
        k += 1;
    }
    let mut alerts = Vec::new();
    wait_for("the enumeration alert", || {
        alerts = s.alerts("enumeration");
        !alerts.is_empty()
    });
    let alert =
        alerts.iter().find(|a| a["feature"] == "refused_objects_in_hour").unwrap_or_else(|| panic!("{alerts:#?}"));
    assert_eq!(
        (alert["entity"]["label"].as_str(), alert["window_s"].as_u64()),
        (Some("mallory"), Some(3600)),
        "{alert}"
    );
    assert!(alerts.iter().all(|a| a["feature"] == "refused_objects_in_hour"), "no ten-minute tier saw it: {alerts:#?}");
    assert_eq!(alert["actions"], json!(["log", "throttle"]), "{alert}");
    let found = alert["at_ms"].as_u64().unwrap() - base;
    assert!((15 * 60_000..58 * 60_000).contains(&found), "found at {found} ms");
    // The throttle follows the alert: the prober asks for its own orders (at one simulated moment:
    // the action's expiry is on the detectors' clock, which the loop above may have taken many
    // simulated minutes past the alert before the action was in force) until it answers.
    k |= 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe(&mut conn, k) != 429 {
        assert!(Instant::now() < deadline, "no throttle at request {k}: {alert:#}\n{:#?}", s.actions());
        std::thread::sleep(Duration::from_millis(100));
    }
    // No guess reached the upstream (the owner rule refused each), and nothing past the throttle.
    let hits = s.up.hits();
    assert_eq!(hits, served, "only the requests for its own orders reached the upstream");
    for j in 0..3 {
        let at = at(k + j);
        let (status, _) = get(&mut conn, "/j/users/mallory/orders", "198.51.100.7", &format!("{mallory}{at}"));
        assert_eq!(status, 429);
    }
    assert_eq!(s.up.hits(), hits);
    let (status, resp) = get(&mut conn, "/j/users/alice/orders", "198.51.100.7", &format!("{alice}{}", at(k + 5)));
    assert_eq!(status, 200, "{resp}");
    let actions = s.actions();
    let action = actions.iter().find(|a| a["kind"] == "throttle").unwrap_or_else(|| panic!("{actions:?}"));
    assert_eq!(action["target_kind"], "principal", "{action}");
}

/// The same probe spread over six accounts, 40 guesses each in the hour (under each principal's own
/// tier), in `enforce` mode: found on the route, by name, and no one is refused for it (a route's
/// alert has no principal or address for an action to land on).
#[cfg(feature = "sim-clock")]
#[test]
fn enumeration_spread_over_accounts_alerts_on_the_route() {
    let s = setup_with(
        "anomaly:\n  mode: enforce\n  clock: simulated\n  detectors:\n    enumeration: { actions: [log, alert, throttle] }\n",
        with_owner_route,
    );
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let tokens: Vec<_> = (0..6).map(|i| (format!("prober{i}"), jwt(&format!("prober{i}"), now_s() - 30))).collect();
    let base: u64 = 1_800_000_000_000 + 60_000;
    let send = |conn: &mut RawConn, k: u64| {
        let (sub, token) = &tokens[(k % 6) as usize];
        let guess = (k / 6).is_multiple_of(2);
        let path = if guess {
            format!("/j/users/victim-{:x}/orders", k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40)
        } else {
            format!("/j/users/{sub}/orders")
        };
        let headers = format!("Authorization: Bearer {token}\r\nPortcullis-Sim-Time: {}\r\n", base + k * 7_200);
        let (status, resp) = get(conn, &path, &format!("198.51.100.{}", k % 6 + 1), &headers);
        assert_eq!(status, if guess { 403 } else { 200 }, "request {k}: {resp}");
    };
    // 240 guesses in 58 simulated minutes.
    for k in 0..480u64 {
        send(&mut conn, k);
    }
    let mut alerts = Vec::new();
    wait_for("the route's enumeration alert", || {
        alerts = s.alerts("enumeration");
        alerts.iter().any(|a| a["entity"]["kind"] == "route")
    });
    let a = alerts.iter().find(|a| a["entity"]["kind"] == "route").unwrap();
    assert_eq!(
        (a["entity"]["label"].as_str(), a["feature"].as_str(), a["window_s"].as_u64()),
        (Some("user_orders"), Some("refused_objects_on_route"), Some(3600)),
        "{a}"
    );
    assert!(a["observed"].as_f64().unwrap() >= 200.0 && a["enforced"] == true, "{a}");
    // The detector's throttle cannot land on a route: the alert lists what it did.
    assert_eq!(a["actions"], json!(["log", "alert"]), "{a}");
    assert!(s.actions().is_empty(), "an alert on a route refuses no one: {:?}", s.actions());
    // Every prober is still served, guesses still refused by the owner rule alone.
    for k in 480..492u64 {
        send(&mut conn, k);
    }
}

#[test]
fn the_anomaly_section_is_checked() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    for (section, needle) in [
        ("anomaly:\n  detectors:\n    credential_stufing: {}\n", "not a detector"),
        ("anomaly:\n  sensitivity: 0\n", "sensitivity"),
        ("anomaly:\n  mode: block\n", "mode"),
        ("anomaly:\n  ipv6_prefix: 8\n", "ipv6_prefix"),
        ("anomaly:\n  detectors:\n    volumetric: { actions: [shout] }\n", "shout"),
        ("anomaly:\n  detectors:\n    volumetric: { duration: 0s }\n", "duration"),
        ("anomaly:\n  unknown_key: 1\n", "unknown_key"),
        // A claimed identity is anyone's to name: nothing may land on it.
        ("anomaly:\n  detectors:\n    password_spraying: { actions: [log, ban] }\n", "password_spraying"),
        ("anomaly:\n  detectors:\n    password_spraying: { actions: [throttle] }\n", "password_spraying"),
        // A challenge needs a principal; these two judge addresses only: it would never happen.
        ("anomaly:\n  detectors:\n    credential_stuffing: { actions: [log, challenge] }\n", "challenge"),
        ("anomaly:\n  detectors:\n    automation: { actions: [challenge] }\n", "challenge"),
    ] {
        let cfg = dir.write("bad.yaml", &config(&dir, up.addr, section));
        let (code, out, err) = common::portcullis(&["check", "-c", cfg.to_str().unwrap()], &[]);
        assert_ne!(code, 0, "{section}: {out}");
        assert!(err.contains(needle) || out.contains(needle), "{section}: {err}{out}");
    }
}

#[test]
fn a_client_cannot_move_the_detectors_clock() {
    // With the wall clock, `Portcullis-Sim-Time` is an ordinary header: alerts carry wall time.
    let s = setup("anomaly:\n  detectors:\n    credential_stuffing: { duration: 1m }\n");
    let mut conn = RawConn::connect(s.gw.addr("main"));
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    for i in 0..300 {
        let key = bogus_key(&format!("{i:08x}"));
        let (st, _) =
            get(&mut conn, "/k/x", "203.0.113.9", &format!("X-API-Key: {key}\r\nPortcullis-Sim-Time: 1000\r\n"));
        assert_eq!(st, 401);
    }
    let deadline = Instant::now() + T;
    let alert = loop {
        if let Some(a) = s.alerts("credential_stuffing").into_iter().next() {
            break a;
        }
        assert!(Instant::now() < deadline, "no alert");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(alert["at_ms"].as_u64().unwrap() >= before, "{alert}");
}

fn status(gw: &Gateway, viewer: &str) -> Value {
    let a = call(gw.addr("admin"), Some(viewer), "GET", "/admin/v1/anomaly/status", None, &[]);
    assert_eq!(a.status, 200, "{a:?}");
    a.json()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_detectors_state_survives_a_reload_and_with_snapshot_a_restart() {
    let up = Upstream::start("app");
    // The store lives beside the gateways, so the second process finds the first one's state.
    let state = TempDir::new();
    let yaml = config(&state, up.addr, "anomaly:\n  snapshot: true\n");
    let cfg = state.write("portcullis.yaml", &yaml);
    let (viewer, _) = token(&cfg, "viewer");
    let mut gw = Gateway::start(&yaml);
    let mut conn = RawConn::connect(gw.addr("main"));
    for i in 0..40 {
        let (st, _) = get(&mut conn, "/k/x", &format!("198.51.100.{i}"), "");
        assert_eq!(st, 401);
    }
    stuff(&mut conn, "203.0.113.20", 100, false);
    wait_for("40 entities and an alert", || {
        let s = status(&gw, &viewer);
        s["entities"].as_u64().unwrap() >= 40 && s["alerts"].as_u64().unwrap() >= 1
    });
    // A reload that changes the engine's settings carries its state over, and the alerts stay listed.
    gw.rewrite_config(&config(&state, up.addr, "anomaly:\n  snapshot: true\n  sensitivity: 1.5\n"));
    assert!(gw.wait_log("configuration reloaded", T), "{:?}", gw.logs());
    wait_for("the state after the reload", || status(&gw, &viewer)["entities"].as_u64().unwrap() >= 40);
    let alerts = call(gw.addr("admin"), Some(&viewer), "GET", "/admin/v1/anomaly/alerts", None, &[]).json();
    assert!(!alerts["items"].as_array().unwrap().is_empty(), "{alerts}");
    // A graceful restart writes the state; the next process reads it before any request.
    assert!(gw.terminate(T).is_some());
    drop(gw);
    let gw = Gateway::start(&yaml);
    assert!(gw.wait_log("anomaly: state restored from the store", T), "{:?}", gw.logs());
    wait_for("the restored entities", || status(&gw, &viewer)["entities"].as_u64().unwrap() >= 40);
}

/// With `redis.share_bans: true`, a response one node puts in force holds on the other: a thief
/// challenged on node A is challenged on node B (the owner's fresh token and another principal
/// pass there), a throttled stuffing address is throttled on B before authentication, and lifting the
/// challenge on B lifts it on A too. Each node keys the principal with its own seed.
#[test]
fn a_fleet_shares_challenges_and_throttles_and_a_lift_on_one_node_lifts_them_everywhere() {
    let redis = common::RedisServer::start();
    let anomaly = format!(
        "redis:\n  url: {}\n  share_bans: true\nanomaly:\n  mode: enforce\n  detectors:\n    \
         token_sharing: {{ actions: [log, alert, challenge], duration: 10m }}\n    \
         credential_stuffing: {{ actions: [log, throttle], duration: 10m, throttle: 1/m }}\n",
        redis.url()
    );
    let (a, b) = (setup(&anomaly), setup(&anomaly));
    let (mut on_a, mut on_b) = (RawConn::connect(a.gw.addr("main")), RawConn::connect(b.gw.addr("main")));
    let stolen = format!("Authorization: Bearer {}\r\n", jwt("carol", now_s() - 30));
    let (st, _) = get(&mut on_b, "/j/profile", "192.0.2.10", &stolen);
    assert_eq!(st, 200, "the owner on node B before");
    // The thief's spread is seen by node A, which challenges the token.
    let resp = share_until_refused(&mut on_a, &stolen, 6);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    // Node B refuses it too, within about a second, and nothing it refuses reaches its upstream.
    wait_for("node B to challenge the token node A challenged", || {
        get(&mut on_b, "/j/profile", "192.0.2.10", &stolen).0 == 401
    });
    let hits = b.up.hits();
    let (st, resp) = get(&mut on_b, "/j/profile", "198.51.100.7", &stolen);
    assert_eq!((st, problem_of(&resp)), (401, "urn:portcullis:problem:reauthenticate".to_owned()), "{resp}");
    assert_eq!(b.up.hits(), hits);
    // Another principal passes on B, and so does another identity provider's carol (the same `sub`,
    // another `iss`: someone else).
    let dave = format!("Authorization: Bearer {}\r\n", jwt("dave", now_s() - 30));
    assert_eq!(get(&mut on_b, "/j/profile", "192.0.2.11", &dave).0, 200);
    let iat = now_s() - 30;
    let other_carol = hs256(
        JWT_SECRET_2,
        &json!({"iss": "https://idp2.test", "aud": "api", "sub": "carol", "iat": iat, "exp": iat + 3600}),
    );
    let (st, resp) = get(&mut on_b, "/i/profile", "192.0.2.12", &format!("Authorization: Bearer {other_carol}\r\n"));
    assert_eq!(st, 200, "{resp}");
    // The owner's fresh token passes on B (iat is in seconds: poll until one is newer than the alert).
    wait_for("a fresh token was never accepted on node B", || {
        get(&mut on_b, "/j/profile", "192.0.2.10", &format!("Authorization: Bearer {}\r\n", jwt("carol", now_s()))).0
            == 200
    });
    // Listed on both: here on A, from A on B; shared on both.
    let mine = a.actions().into_iter().find(|x| x["kind"] == "challenge").expect("A's challenge");
    assert_eq!((mine["origin"].as_str(), mine["shared"].as_bool()), (Some("here"), Some(true)), "{mine}");
    let theirs = b.actions().into_iter().find(|x| x["kind"] == "challenge").expect("B holds A's challenge");
    assert_eq!(theirs["target"], "jwt:carol", "{theirs}");
    assert_eq!(theirs["shared"], true, "{theirs}");
    assert!(theirs["origin"].as_str().is_some_and(|o| o != "here" && !o.is_empty()), "{theirs}");
    // A stuffing address throttled on A is throttled on B before credentials are read, on any route.
    let attacker = "203.0.113.77";
    let mut throttled = false;
    for i in 0..600 {
        let (st, resp) =
            get(&mut on_a, "/k/orders", attacker, &format!("X-API-Key: {}\r\n", bogus_key(&format!("{i:08x}"))));
        if st == 429 {
            throttled = true;
            break;
        }
        assert_eq!(st, 401, "{resp}");
    }
    assert!(throttled, "node A never throttled the stuffing address");
    // One request a minute passes a fresh throttle: spend it, then the next is refused.
    wait_for("node B never throttled the address node A throttled", || {
        get(&mut on_b, "/p/catalogue", attacker, "").0 == 429
    });
    let hits = b.up.hits();
    for (path, header) in
        [("/p/catalogue", String::new()), ("/k/orders", format!("X-API-Key: {}\r\n", bogus_key("0badc0de")))]
    {
        let (st, resp) = get(&mut on_b, path, attacker, &header);
        assert_eq!(st, 429, "{path}: {resp}");
    }
    assert_eq!(b.up.hits(), hits);
    assert_eq!(get(&mut on_b, "/p/catalogue", "203.0.113.78", "").0, 200, "the address next door");
    // Lifted on B (by its operator): gone on both, and the old token passes on A again.
    let id = theirs["id"].as_u64().unwrap();
    assert_eq!(b.admin(&b.operator, "DELETE", &format!("/admin/v1/anomaly/actions/{id}")).status, 204);
    assert_eq!(get(&mut on_b, "/j/profile", "192.0.2.10", &stolen).0, 200, "still challenged on B");
    wait_for("the lift on node B never reached node A", || a.actions().iter().all(|x| x["kind"] != "challenge"));
    wait_for("node A to let the token through", || get(&mut on_a, "/j/profile", "192.0.2.10", &stolen).0 == 200);
    // The throttle was not lifted with it (listed, not probed: its one request a minute may be due).
    assert!(a.actions().iter().any(|x| x["kind"] == "throttle" && x["target"] == attacker), "{:?}", a.actions());
    assert!(b.actions().iter().any(|x| x["kind"] == "throttle" && x["target"] == attacker), "{:?}", b.actions());
}

/// A gateway sharing its actions through the Redis at `url`, challenging shared tokens (`extra`: more
/// lines of the `anomaly:` section).
fn challenges_shared(url: &str, extra: &str) -> String {
    format!(
        "redis:\n  url: {url}\n  share_bans: true\nanomaly:\n  mode: enforce\n{extra}  detectors:\n    \
         token_sharing: {{ actions: [log, alert, challenge], duration: 10m }}\n"
    )
}

/// Redis down while node A challenges a token: A enforces it at once and writes it once Redis is
/// back, then node B holds it. Redis restarted empty (its data lost) is not a lift: A writes its
/// action again.
#[test]
fn a_shared_action_raised_while_redis_is_down_reaches_the_fleet_when_it_is_back() {
    let mut redis = common::RedisServer::start();
    let anomaly = challenges_shared(&redis.url(), "");
    let (a, b) = (setup(&anomaly), setup(&anomaly));
    let (mut on_a, mut on_b) = (RawConn::connect(a.gw.addr("main")), RawConn::connect(b.gw.addr("main")));
    let stolen = format!("Authorization: Bearer {}\r\n", jwt("erin", now_s() - 30));
    redis.kill();
    let resp = share_until_refused(&mut on_a, &stolen, 7);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    assert_eq!(get(&mut on_b, "/j/profile", "192.0.2.10", &stolen).0, 200, "B cannot know yet");
    redis.restart();
    wait_for("node B never held the challenge written after the outage", || {
        get(&mut on_b, "/j/profile", "192.0.2.10", &stolen).0 == 401
    });
    // Redis comes back empty again: A writes its action again, and B keeps holding it.
    redis.kill();
    redis.restart();
    wait_for("node A to write its action again", || {
        redis.command(&["HLEN", "portcullis:anomaly:actions"]).trim() == ":1"
    });
    assert_eq!(get(&mut on_b, "/j/profile", "192.0.2.10", &stolen).0, 401);
    assert!(a.actions().iter().any(|x| x["kind"] == "challenge"), "a lost write lifted the action on A");
}

/// A node restarted twice while Redis is down still refuses the token its first process challenged
/// (the first restart adopts it from the store's row; the second finds it in the row the first wrote,
/// where it was lost before). Redis back, empty: the node writes it to the fleet's hash for the
/// process that raised it, so node B, which never saw it, refuses the token too. Lifted on B, it is
/// gone on A and out of A's row, so a restart of A does not bring it back.
#[test]
fn an_adopted_action_outlives_two_restarts_while_redis_is_down_and_then_reaches_the_fleet() {
    let mut redis = common::RedisServer::start();
    let url = redis.url();
    let anomaly = |snapshot: bool| challenges_shared(&url, &format!("  snapshot: {snapshot}\n"));
    let up = Upstream::start("app");
    let state = TempDir::new();
    let yaml = config(&state, up.addr, &anomaly(true));
    let cfg = state.write("portcullis.yaml", &yaml);
    let (viewer, _) = token(&cfg, "viewer");
    let stolen = format!("Authorization: Bearer {}\r\n", jwt("frank", now_s() - 60));
    redis.kill();
    let mut gw = Gateway::start(&yaml);
    let resp = share_until_refused(&mut RawConn::connect(gw.addr("main")), &stolen, 8);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    let listed = |gw: &Gateway| -> Vec<Value> {
        let a = call(gw.addr("admin"), Some(&viewer), "GET", "/admin/v1/anomaly/actions", None, &[]);
        a.json()["items"].as_array().cloned().unwrap_or_default()
    };
    let first = listed(&gw).into_iter().find(|x| x["kind"] == "challenge").expect("the challenge");
    for restart in 1..=2 {
        assert!(gw.terminate(T).is_some());
        drop(gw);
        gw = Gateway::start(&yaml);
        let hits = up.hits();
        let (st, resp) = get(&mut RawConn::connect(gw.addr("main")), "/j/profile", "192.0.2.40", &stolen);
        assert_eq!(st, 401, "restart {restart} freed the challenged token: {resp}");
        assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate");
        assert_eq!(up.hits(), hits);
        let held = listed(&gw).into_iter().find(|x| x["kind"] == "challenge").expect("listed after the restart");
        assert_eq!(held["id"], first["id"], "{held}");
        assert!(held["origin"].as_str().is_some_and(|o| o != "here"), "{held}");
    }
    // Redis back, with none of it: A writes it there, and B (started now) holds it.
    redis.restart();
    wait_for("node A to write the adopted challenge to the fleet's hash", || {
        redis.command(&["HLEN", "portcullis:anomaly:actions"]).trim() == ":1"
    });
    let b = setup(&anomaly(false));
    let mut on_b = RawConn::connect(b.gw.addr("main"));
    wait_for("node B to hold the challenge node A wrote for its predecessor", || {
        get(&mut on_b, "/j/profile", "192.0.2.41", &stolen).0 == 401
    });
    let theirs = b.actions().into_iter().find(|x| x["kind"] == "challenge").expect("listed on B");
    assert_eq!(theirs["id"], first["id"], "{theirs}");
    // Lifted on B: gone on A, and not brought back by A's next restart (Redis down again).
    assert_eq!(b.admin(&b.operator, "DELETE", &format!("/admin/v1/anomaly/actions/{}", first["id"])).status, 204);
    let mut on_a = RawConn::connect(gw.addr("main"));
    wait_for("node A to let the token through", || get(&mut on_a, "/j/profile", "192.0.2.40", &stolen).0 == 200);
    // (The row is written at most once a second after a change: wait for it.)
    let row = || -> String {
        let db = rusqlite::Connection::open(state.path("state.db")).unwrap();
        db.query_row("SELECT CAST(actions AS TEXT) FROM anomaly_actions WHERE id = 1", [], |r| r.get(0))
            .unwrap_or_default()
    };
    wait_for("node A's row to drop the lifted challenge", || !row().contains("frank"));
    assert!(gw.terminate(T).is_some());
    drop(gw);
    redis.kill();
    let gw = Gateway::start(&yaml);
    assert_eq!(get(&mut RawConn::connect(gw.addr("main")), "/j/profile", "192.0.2.40", &stolen).0, 200);
}

/// A field both in the fleet's hash and marked lifted there (a node wrote its action again just as
/// another lifted it) is a lifted action: the node that raised it drops it, and no other node holds it.
/// The field is deleted and the mark made to last as long as the write would have held, so that the
/// write cannot outlive the mark and come back once the mark is collected (a review's finding: the
/// mark lasted to the lifting node's idea of the expiry).
#[test]
fn a_shared_action_marked_lifted_is_lifted_even_if_written_again() {
    let redis = common::RedisServer::start();
    let anomaly = challenges_shared(&redis.url(), "");
    let (a, b) = (setup(&anomaly), setup(&anomaly));
    let (mut on_a, mut on_b) = (RawConn::connect(a.gw.addr("main")), RawConn::connect(b.gw.addr("main")));
    let stolen = format!("Authorization: Bearer {}\r\n", jwt("grace", now_s() - 30));
    let resp = share_until_refused(&mut on_a, &stolen, 9);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    wait_for("node B to hold A's challenge", || get(&mut on_b, "/j/profile", "192.0.2.50", &stolen).0 == 401);
    let keys = redis.command(&["HKEYS", "portcullis:anomaly:actions"]);
    let field = keys.lines().find(|l| l.contains(':') && !l.starts_with('*')).expect("A's field").trim().to_owned();
    // The mark alone, the field left in place (and the version moved, as every write does), marked
    // until sooner than the field holds.
    let until = (now_s() + 2) * 1000;
    redis.command(&["HSET", "portcullis:anomaly:actions:lifted", &field, &until.to_string()]);
    redis.command(&["INCR", "portcullis:anomaly:actions:version"]);
    wait_for("node B to drop the action marked lifted", || {
        get(&mut on_b, "/j/profile", "192.0.2.50", &stolen).0 == 200
    });
    wait_for("node A to drop its own action marked lifted", || {
        get(&mut on_a, "/j/profile", "192.0.2.50", &stolen).0 == 200
    });
    assert!(a.actions().iter().all(|x| x["kind"] != "challenge"), "{:?}", a.actions());
    assert!(b.actions().iter().all(|x| x["kind"] != "challenge"), "{:?}", b.actions());
    assert_eq!(redis.command(&["HEXISTS", "portcullis:anomaly:actions", &field]).trim(), ":0");
    let mark = redis.command(&["HGET", "portcullis:anomaly:actions:lifted", &field]);
    let mark: u64 = mark.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("the mark");
    assert!(mark >= (now_s() + 9 * 60) * 1000, "the mark ends before the write would: {mark}");
}

/// A lift made on node B while Redis is down, then B restarted before Redis is back: the lift is in
/// B's row, and the new process writes it once Redis is back (empty: node A writes its action again,
/// as after any loss of Redis's data, and the mark settles it). Before, the lift lived only in B's
/// outbox, so the restart lost it and the action came back on B and never left A. (From a review.)
#[test]
fn a_lift_made_while_redis_is_down_outlives_a_restart_of_the_lifting_node() {
    let mut redis = common::RedisServer::start();
    let url = redis.url();
    let a = setup(&challenges_shared(&url, ""));
    let up = Upstream::start("app");
    let state = TempDir::new();
    let yaml = config(&state, up.addr, &challenges_shared(&url, "  snapshot: true\n"));
    let cfg = state.write("portcullis.yaml", &yaml);
    let (operator, _) = token(&cfg, "operator");
    let mut b = Gateway::start(&yaml);
    let mut on_a = RawConn::connect(a.gw.addr("main"));
    let stolen = format!("Authorization: Bearer {}\r\n", jwt("ivan", now_s() - 30));
    let resp = share_until_refused(&mut on_a, &stolen, 10);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    let on_b = |b: &Gateway| get(&mut RawConn::connect(b.addr("main")), "/j/profile", "192.0.2.70", &stolen).0;
    wait_for("node B to hold A's challenge", || on_b(&b) == 401);
    redis.kill();
    let listed = call(b.addr("admin"), Some(&operator), "GET", "/admin/v1/anomaly/actions", None, &[]).json();
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    let id = items.iter().find(|x| x["kind"] == "challenge").expect("B lists A's challenge")["id"].clone();
    let lifted =
        call(b.addr("admin"), Some(&operator), "DELETE", &format!("/admin/v1/anomaly/actions/{id}"), None, &[]);
    assert_eq!(lifted.status, 204);
    assert_eq!(on_b(&b), 200);
    assert!(b.terminate(T).is_some());
    drop(b);
    let b = Gateway::start(&yaml);
    assert_eq!(on_b(&b), 200);
    redis.restart();
    wait_for("node A to take B's lift", || get(&mut on_a, "/j/profile", "192.0.2.70", &stolen).0 == 200);
    assert_eq!(on_b(&b), 200, "the lift made during the outage came undone on B");
    assert!(a.actions().iter().all(|x| x["kind"] != "challenge"), "{:?}", a.actions());
}

/// `yaml` (from [`config`]) with one more route, public, on `prefix`, with `extra` lines.
fn with_route(yaml: &str, name: &str, prefix: &str, extra: &str) -> String {
    yaml.replace(
        "events:\n",
        &format!("  - name: {name}\n    match:\n      path: {{ prefix: {prefix} }}\n    upstream: app\n    auth: none\n{extra}events:\n"),
    )
}

/// The config with one more route, `/g`, public and refusing addresses whose bot score is 0.9 or more.
fn with_bot_route(dir: &TempDir, up: SocketAddr, anomaly: &str) -> String {
    with_route(&config(dir, up, anomaly), "guarded", "/g", "    bot: { refuse_at: 0.9 }\n")
}

/// One request from `ip` with user agent `agent`.
fn get_as(conn: &mut RawConn, path: &str, ip: &str, agent: &str) -> (u16, String) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: {ip}\r\nUser-Agent: {agent}\r\nAccept: application/json\r\n\r\n"
    );
    let resp = conn.send(req.as_bytes(), T);
    (common::status_of(&resp), resp)
}

/// A gateway on `with_bot_route` in `mode`, its upstream and a viewer's admin token.
fn bot_gateway(mode: &str) -> (Upstream, Gateway, String) {
    bot_gateway_with(&format!("anomaly:\n  mode: {mode}\n"))
}

/// The same with this `anomaly:` section.
fn bot_gateway_with(anomaly: &str) -> (Upstream, Gateway, String) {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let yaml = with_bot_route(&dir, up.addr, anomaly);
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (viewer, _) = token(&cfg, "viewer");
    (up, Gateway::start_in(dir, &yaml), viewer)
}

/// The newest `guard.blocked` event for a bot score, if any.
fn bot_event(gw: &Gateway, viewer: &str) -> Option<Value> {
    let events = call(gw.addr("admin"), Some(viewer), "GET", "/admin/v1/events?kind=guard.blocked", None, &[]).json();
    events["items"].as_array()?.iter().find(|e| e["reason"] == "bot").cloned()
}

#[test]
fn a_route_refuses_an_address_the_detector_judges_a_bot() {
    let (up, gw, viewer) = bot_gateway("enforce");
    let mut conn = RawConn::connect(gw.addr("main"));
    let scanner = "2001:db8:7:1::5";
    // A scanner's signature scores 0.97 on its first request; the route without `bot:` serves it.
    let (st, _) = get_as(&mut conn, "/p/x", scanner, "sqlmap/1.8.2#stable (https://sqlmap.org)");
    assert_eq!(st, 200);
    // The detector thread scores it off the request path: polled until the guarded route refuses.
    let deadline = Instant::now() + T;
    let resp = loop {
        let (st, resp) = get_as(&mut conn, "/g/x", scanner, "sqlmap/1.8.2#stable (https://sqlmap.org)");
        if st == 403 {
            break resp;
        }
        assert_eq!(st, 200, "{resp}");
        assert!(Instant::now() < deadline, "the guarded route never refused the scanner");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:bot", "{resp}");
    let hits = up.hits();
    // Another agent from the same address, or from its /64, is the same client: refused, unseen upstream.
    for (ip, agent) in [
        (scanner, "okhttp/4.12.0"),
        ("2001:db8:7:1:aaaa::99", "okhttp/4.12.0"),
        ("2001:DB8:7:1:0:0:0:5", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"),
    ] {
        let (st, resp) = get_as(&mut conn, "/g/y", ip, agent);
        assert_eq!(st, 403, "{ip} {agent}: {resp}");
        assert_eq!(problem_of(&resp), "urn:portcullis:problem:bot", "{resp}");
    }
    // HEAD is refused the same way.
    let head = format!(
        "HEAD /g/y HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: {scanner}\r\nUser-Agent: okhttp/4.12.0\r\n\r\n"
    );
    assert_eq!(common::status_of(&conn.send(head.as_bytes(), T)), 403);
    assert_eq!(up.hits(), hits, "a refused request reached the upstream");
    // The route without `bot:` still serves it (the detector's own default for `automation` is `log`),
    // and other clients, the next /64 among them, pass the guarded route.
    assert_eq!(get_as(&mut conn, "/p/x", scanner, "okhttp/4.12.0").0, 200);
    for ip in ["2001:db8:7:2::5", "198.51.100.20"] {
        let (st, resp) = get_as(&mut conn, "/g/x", ip, "okhttp/4.12.0");
        assert_eq!(st, 200, "{ip}: {resp}");
    }
    // The refusal is a security event with the score and the threshold.
    let e = bot_event(&gw, &viewer).expect("no bot event");
    assert_eq!(e["attrs"]["enforced"], true, "{e}");
    assert!(e["attrs"]["score"].as_str().unwrap().parse::<f64>().unwrap() >= 0.9, "{e}");
    assert_eq!(e["attrs"]["refuse_at"], "0.900", "{e}");
}

/// A mark holds for the `automation` detector's `duration` after the address's last request so
/// scored, then goes: the address is served again (here with a browser's agent), without a restart.
#[test]
fn a_bot_mark_ends_after_its_hold() {
    let (up, gw, _) = bot_gateway_with("anomaly:\n  mode: enforce\n  detectors:\n    automation: { duration: 2s }\n");
    let mut conn = RawConn::connect(gw.addr("main"));
    let scanner = "203.0.113.77";
    let marked = |gw: &Gateway| common::metric(&gw.metrics(), "portcullis_anomaly_bot_marked");
    assert_eq!(marked(&gw), Some(0.0));
    let deadline = Instant::now() + T;
    while get_as(&mut conn, "/g/x", scanner, "Nikto/2.5.0").0 != 403 {
        assert!(Instant::now() < deadline, "the guarded route never refused the scanner");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(marked(&gw), Some(1.0));
    // Quiet for the hold: the mark goes (polled; nothing is sent from the address meanwhile).
    wait_for("the mark to go", || marked(&gw) == Some(0.0));
    let hits = up.hits();
    let browser = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let (st, resp) = get_as(&mut conn, "/g/x", scanner, browser);
    assert_eq!(st, 200, "{resp}");
    assert_eq!(up.hits(), hits + 1);
}

#[test]
fn a_bot_route_in_monitor_mode_notes_and_serves() {
    let (_up, gw, viewer) = bot_gateway("monitor");
    let mut conn = RawConn::connect(gw.addr("main"));
    let deadline = Instant::now() + T;
    let e = loop {
        let (st, resp) = get_as(&mut conn, "/g/x", "203.0.113.60", "Nikto/2.5.0");
        assert_eq!(st, 200, "monitor mode refuses nothing: {resp}");
        if let Some(e) = bot_event(&gw, &viewer) {
            break e;
        }
        assert!(Instant::now() < deadline, "no bot event in monitor mode");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(e["attrs"]["enforced"], false, "{e}");
}

#[test]
fn a_bot_route_is_checked() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    for (anomaly, refuse_at, needle) in [
        ("", "0.9", "anomaly"),
        ("anomaly: {}\n", "1.5", "refuse_at"),
        ("anomaly: {}\n", "0", "refuse_at"),
        ("anomaly: {}\n", ".nan", "refuse_at"),
        ("anomaly:\n  detectors:\n    automation: { enabled: false }\n", "0.9", "automation"),
    ] {
        let yaml = with_bot_route(&dir, up.addr, anomaly).replace("refuse_at: 0.9", &format!("refuse_at: {refuse_at}"));
        let cfg = dir.write("bad.yaml", &yaml);
        let (code, out, err) = common::portcullis(&["check", "-c", cfg.to_str().unwrap()], &[]);
        assert_ne!(code, 0, "{anomaly} {refuse_at}: {out}");
        assert!(err.contains(needle) || out.contains(needle), "{anomaly} {refuse_at}: {err}{out}");
    }
    // Unknown keys in it are errors too.
    let yaml = with_bot_route(&dir, up.addr, "anomaly: {}\n").replace("refuse_at: 0.9", "refuse_at: 0.9, score: 1");
    let cfg = dir.write("bad.yaml", &yaml);
    let (code, _, err) = common::portcullis(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("score"), "{err}");
}

/// Stuffing a login form the upstream checks (a route without `auth:`): the gateway cannot name the
/// identities tried, but 30 refusals in a minute from one address ban it in `enforce` mode (stuffing's
/// default actions), and nothing more reaches the upstream from it. A person who mistypes a few times
/// is not touched. Spread over many addresses, it is found on the route.
#[test]
fn stuffing_a_login_form_behind_the_gateway_is_banned() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let yaml =
        config(&dir, up.addr, "anomaly:\n  mode: enforce\n  detectors:\n    credential_stuffing: { duration: 1m }\n");
    let yaml = with_route(&yaml, "login", "/status", "");
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (viewer, _) = token(&cfg, "viewer");
    let gw = Gateway::start_in(dir, &yaml);
    let mut conn = RawConn::connect(gw.addr("main"));
    for _ in 0..4 {
        assert_eq!(get(&mut conn, "/status/401", "198.51.100.40", "").0, 401);
    }
    let attacker = "203.0.113.70";
    let mut banned_after = None;
    for i in 0..200 {
        let (st, resp) = get(&mut conn, "/status/401", attacker, "");
        if st == 403 {
            assert_eq!(problem_of(&resp), "urn:portcullis:problem:banned", "{resp}");
            banned_after = Some(i);
            break;
        }
        assert_eq!(st, 401, "{resp}");
        // The detector thread sees the answers a little after they are sent: paced, not timed.
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = banned_after.expect("the stuffing address was never banned");
    assert!(n >= 30, "banned after {n} refusals: fewer than the rule's 30");
    let hits = up.hits();
    assert_eq!(get(&mut conn, "/status/200", attacker, "").0, 403);
    assert_eq!(up.hits(), hits, "a banned address reached the upstream");
    // The person is still served.
    assert_eq!(get(&mut conn, "/status/200", "198.51.100.40", "").0, 200);
    // Spread over 60 addresses, two tries each, under every address tier: found on the route (an
    // alert: a route cannot be banned), and no address is refused.
    let admin = |path: &str| call(gw.addr("admin"), Some(&viewer), "GET", path, None, &[]).json();
    let alerted = || {
        let alerts = admin("/admin/v1/anomaly/alerts?detector=credential_stuffing");
        alerts["items"].as_array().unwrap().iter().any(|a| {
            a["entity"]["kind"] == "route"
                && a["entity"]["label"] == "login"
                && a["feature"] == "failed_authentications_on_route"
        })
    };
    // The tier counts a clock minute: a round that straddles one is sent again (each round takes
    // well under a minute, so the second holds its 120 in one).
    let mut found = false;
    for _round in 0..3 {
        for i in 0..120 {
            let ip = format!("198.18.{}.{}", i % 60 / 20, i % 60 % 20 + 1);
            assert_eq!(get(&mut conn, "/status/401", &ip, "").0, 401, "{ip}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !found && Instant::now() < deadline {
            found = alerted();
            std::thread::sleep(Duration::from_millis(100));
        }
        if found {
            break;
        }
    }
    assert!(found, "no alert on the route");
    assert!(admin("/admin/v1/anomaly/actions")["items"].as_array().unwrap().iter().all(|a| a["target"] != "login"));
}

/// A process killed before its first state row (written a minute in, and at shutdown) left only its
/// actions row: that row carries the seed the principals' keys were made with, so the next process
/// still refuses the challenged thief's token (it started with a new seed, and put back no principal's
/// action, before).
#[test]
fn actions_in_force_survive_a_restart_before_the_first_state_row() {
    let up = Upstream::start("app");
    let state = TempDir::new();
    let yaml = config(
        &state,
        up.addr,
        "anomaly:\n  mode: enforce\n  snapshot: true\n  detectors:\n    token_sharing: { duration: 30m }\n",
    );
    let old = format!("Authorization: Bearer {}\r\n", jwt("erin", now_s() - 60));
    let mut gw = Gateway::start(&yaml);
    let mut conn = RawConn::connect(gw.addr("main"));
    let resp = share_until_refused(&mut conn, &old, 7);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    assert!(gw.terminate(T).is_some());
    drop(gw);
    // As if it had been killed before writing its state: the actions row alone.
    let db = rusqlite::Connection::open(state.path("state.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM anomaly_state", []).unwrap(), 1);
    drop(db);
    let gw = Gateway::start(&yaml);
    assert!(gw.wait_log("anomaly: actions in force restored from the store", T), "{:?}", gw.logs());
    let mut conn = RawConn::connect(gw.addr("main"));
    let hits = up.hits();
    let (st, resp) = get(&mut conn, "/j/profile", "192.0.2.30", &old);
    assert_eq!(st, 401, "the restart freed the challenged token: {resp}");
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate");
    assert_eq!(up.hits(), hits);
}

/// With `snapshot: true`, the actions in force outlive a restart: a challenged thief's token is still
/// refused by the next process, and a throttled stuffing address still throttled; both are still
/// listed (and can be lifted there), and the owner's fresh token passes. Lifted actions stay lifted
/// across the next restart. The stored state cut short (a damaged row) loses what the engine learnt,
/// not the actions: the seed at its head, which keys the challenged principal, is salvaged.
#[test]
fn actions_in_force_survive_a_restart_with_snapshot() {
    let up = Upstream::start("app");
    let state = TempDir::new();
    let yaml = config(
        &state,
        up.addr,
        "anomaly:\n  mode: enforce\n  snapshot: true\n  detectors:\n    token_sharing: { duration: 30m }\n    \
         credential_stuffing: { actions: [log, throttle], duration: 30m, throttle: 1/m }\n",
    );
    let cfg = state.write("portcullis.yaml", &yaml);
    let (viewer, _) = token(&cfg, "viewer");
    let (operator, _) = token(&cfg, "operator");
    let actions = |gw: &Gateway| -> Vec<Value> {
        let a = call(gw.addr("admin"), Some(&viewer), "GET", "/admin/v1/anomaly/actions", None, &[]);
        a.json()["items"].as_array().cloned().unwrap_or_default()
    };
    let old = format!("Authorization: Bearer {}\r\n", jwt("erin", now_s() - 60));
    let mut gw = Gateway::start(&yaml);
    let mut conn = RawConn::connect(gw.addr("main"));
    let resp = share_until_refused(&mut conn, &old, 7);
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate", "{resp}");
    let before = actions(&gw).into_iter().find(|a| a["kind"] == "challenge").expect("a challenge in force");
    let stuffer = "203.0.113.90";
    let throttled = (0..600).any(|i| {
        let key = bogus_key(&format!("{i:08x}"));
        get(&mut conn, "/k/orders", stuffer, &format!("X-API-Key: {key}\r\n")).0 == 429
    });
    assert!(throttled, "the stuffing address was never throttled");
    let throttle = actions(&gw).into_iter().find(|a| a["kind"] == "throttle").expect("a throttle in force");
    assert!(gw.terminate(T).is_some());
    drop(gw);
    // The stored state, gzipped, cut to half: it no longer inflates whole.
    let db = rusqlite::Connection::open(state.path("state.db")).unwrap();
    let stored: Vec<u8> = db.query_row("SELECT state FROM anomaly_state WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert!(stored.starts_with(&[0x1f, 0x8b]) && stored.len() > 200, "{} bytes", stored.len());
    db.execute("UPDATE anomaly_state SET state = ?1 WHERE id = 1", [&stored[..stored.len() / 2]]).unwrap();
    drop(db);

    let mut gw = Gateway::start(&yaml);
    assert!(gw.wait_log("could not be read; starting afresh with its seed", T), "{:?}", gw.logs());
    assert!(gw.wait_log("anomaly: actions in force restored from the store", T), "{:?}", gw.logs());
    let mut conn = RawConn::connect(gw.addr("main"));
    let hits = up.hits();
    let (st, resp) = get(&mut conn, "/j/profile", "192.0.2.30", &old);
    assert_eq!(st, 401, "the restart freed the challenged token: {resp}");
    assert_eq!(problem_of(&resp), "urn:portcullis:problem:reauthenticate");
    assert_eq!(up.hits(), hits);
    let after = actions(&gw).into_iter().find(|a| a["kind"] == "challenge").expect("the challenge is listed");
    assert_eq!(
        (&after["id"], &after["target"], &after["expires_ms"]),
        (&before["id"], &before["target"], &before["expires_ms"])
    );
    // The stuffing address is still held to one request a minute, whatever it sends (the next
    // process's rate starts afresh: one request may pass), and it is listed as before.
    let hits = up.hits();
    let statuses: Vec<u16> = (0..3).map(|_| get(&mut conn, "/p/catalogue", stuffer, "").0).collect();
    assert_eq!(statuses[1..], [429, 429], "the restart freed the throttled address: {statuses:?}");
    assert!(up.hits() <= hits + 1);
    let kept = actions(&gw).into_iter().find(|a| a["kind"] == "throttle").expect("the throttle is listed");
    assert_eq!(
        (&kept["id"], &kept["target"], &kept["expires_ms"]),
        (&throttle["id"], &throttle["target"], &throttle["expires_ms"])
    );
    // The owner's token issued after the alert passes.
    let fresh = format!("Authorization: Bearer {}\r\n", jwt("erin", now_s() + 1));
    wait_for("the fresh token", || get(&mut conn, "/j/profile", "192.0.2.30", &fresh).0 == 200);
    // Lifted here, they stay lifted across the next restart.
    for id in [&after["id"], &kept["id"]] {
        let path = format!("/admin/v1/anomaly/actions/{}", id.as_u64().unwrap());
        assert_eq!(call(gw.addr("admin"), Some(&operator), "DELETE", &path, None, &[]).status, 204);
    }
    assert!(gw.terminate(T).is_some());
    drop(gw);
    let gw = Gateway::start(&yaml);
    assert!(gw.wait_log("anomaly: state restored from the store", T), "{:?}", gw.logs());
    let mut conn = RawConn::connect(gw.addr("main"));
    assert_eq!(get(&mut conn, "/j/profile", "192.0.2.30", &old).0, 200);
    assert_eq!(get(&mut conn, "/p/catalogue", stuffer, "").0, 200);
    assert_eq!(get(&mut conn, "/p/catalogue", stuffer, "").0, 200);
    assert!(actions(&gw).is_empty());
}
