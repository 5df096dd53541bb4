#![allow(clippy::unwrap_used, clippy::expect_used)]
//! API keys end to end: keys made, rotated and revoked with the real `portcullis keys` CLI while the real
//! gateway runs on the same SQLite store (polled every 500ms), and requests sent with curl.
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// The server's hashing secret, passed as `${env:PORTCULLIS_TEST_KEYS_HMAC}`; it must never be logged.
const HMAC_ENV: &str = "PORTCULLIS_TEST_KEYS_HMAC";
const HMAC: &str = "keys-test-server-secret-7f3a9c0d5e1b2468";

fn config(up: std::net::SocketAddr, store: &Path, extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HMAC_ENV}}}
      store: {store}
      refresh_interval: 500ms
{extra}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: keys
    authorize: authenticated
logging:
  level: info
  access_log: true
admin:
  address: 127.0.0.1:0
"#,
        store = path_str(store)
    )
}

struct Setup {
    up: Upstream,
    gw: Gateway,
    /// Holds the key store; removed on drop.
    _dir: TempDir,
}

fn start(extra: &str) -> Setup {
    let dir = TempDir::new();
    let up = Upstream::start("keys");
    let gw = Gateway::start_with_env(&config(up.addr, &dir.path("keys.db"), extra), &[(HMAC_ENV, HMAC)]);
    Setup { up, gw, _dir: dir }
}

/// Runs `portcullis keys -c CONFIG ARGS...` (with the hmac secret in its environment); returns stdout.
fn keys_cli(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["keys", "-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = portcullis(&all, &[(HMAC_ENV, HMAC)]);
    assert_eq!(code, 0, "keys {args:?} failed:\n{stderr}");
    stdout.trim().to_owned()
}

/// Creates a key; returns (id, key).
fn create(gw: &Gateway, args: &[&str]) -> (String, String) {
    let mut all = vec!["create", "--principal", "alice", "--role", "reader"];
    all.extend_from_slice(args);
    let key = keys_cli(&gw.config, &all);
    (key_id(&key), key)
}

/// The public id inside a key (`pcs_<id>_...`).
fn key_id(key: &str) -> String {
    key.strip_prefix("pcs_").and_then(|k| k.split('_').next()).unwrap().to_owned()
}

fn get(gw: &Gateway, path: &str, headers: &[&str]) -> (u16, String, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let mut args = vec![url.as_str()];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    curl(&args)
}

fn with_key(gw: &Gateway, key: &str) -> u16 {
    get(gw, "/data", &[&format!("X-API-Key: {key}")]).0
}

/// Polls until `f()` returns `want`, at most `timeout`; returns whether it did.
fn eventually(timeout: Duration, want: u16, mut f: impl FnMut() -> u16) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() == want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_unauthorized(resp: &(u16, String, String), up: &Upstream, hits_before: usize) {
    let (code, headers, body) = resp;
    assert_eq!(*code, 401, "{headers}{body}");
    assert_eq!(header_of(headers, "www-authenticate").as_deref(), Some("ApiKey realm=\"portcullis\""), "{headers}");
    assert!(header_of(headers, "content-type").unwrap_or_default().starts_with("application/problem+json"));
    assert_eq!(problem_type(body), problem("unauthorized"), "{body}");
    assert_eq!(up.hits(), hits_before, "a refused request reached the upstream");
}

fn assert_not_logged(gw: &Gateway, secrets: &[&str]) {
    let logs = gw.logs();
    for s in secrets.iter().chain([&HMAC]) {
        assert!(!logs.iter().any(|l| l.contains(s)), "a secret appears in the gateway log:\n{}", logs.join("\n"));
    }
}

#[test]
fn key_lifecycle_create_use_rotate_revoke() {
    let Setup { up, gw, _dir } = start("");
    // Unauthenticated: 401 with a challenge and problem+json, nothing upstream.
    assert_unauthorized(&get(&gw, "/data", &[]), &up, 0);

    let (id, key) = create(&gw, &[]);
    assert!(eventually(Duration::from_secs(5), 200, || with_key(&gw, &key)), "new key never accepted");
    let (code, _, body) = get(&gw, "/data", &[&format!("Authorization: ApiKey {key}")]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"upstream\":\"keys\""));
    let seen = up.last().unwrap();
    assert_eq!(seen.header("x-portcullis-principal"), Some("alice"));
    assert_eq!(seen.header("x-portcullis-roles"), Some("reader"));
    assert_eq!(seen.header("x-portcullis-auth-method"), Some("api_key"));
    let hits = up.hits();
    assert_eq!(hits, 2, "only the accepted requests reach the upstream");

    // Malformed, typo'd (checksum) and wrong-scheme keys.
    let mut typo = key.clone().into_bytes();
    let i = key.len() - 10;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in ["X-API-Key: pcs_short", "X-API-Key: not-a-key", &format!("X-API-Key: {typo}")] {
        assert_unauthorized(&get(&gw, "/data", &[bad]), &up, hits);
    }
    assert_unauthorized(&get(&gw, "/data", &[&format!("Authorization: Bearer {key}")]), &up, hits);

    // Rotation: the new key works and the old one keeps working during the grace period, then stops.
    let new_key = keys_cli(&gw.config, &["rotate", &id, "--grace", "3s"]);
    let rotated_at = Instant::now();
    assert_ne!(new_key, key);
    assert!(eventually(Duration::from_secs(5), 200, || with_key(&gw, &new_key)), "rotated key never accepted");
    if rotated_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(with_key(&gw, &key), 200, "the old key must stay valid during the grace period");
    }
    assert!(eventually(Duration::from_secs(8), 401, || with_key(&gw, &key)), "old key still accepted after grace");
    assert!(rotated_at.elapsed() >= Duration::from_secs(1), "grace period cut short");
    assert_eq!(with_key(&gw, &new_key), 200);

    // Revocation takes effect within seconds.
    let new_id = key_id(&new_key);
    keys_cli(&gw.config, &["revoke", &new_id]);
    assert!(eventually(Duration::from_secs(5), 401, || with_key(&gw, &new_key)), "revoked key still accepted");
    let list = keys_cli(&gw.config, &["list"]);
    assert!(list.contains(&id) && list.contains(&new_id) && list.contains("revoked"), "{list}");
    assert!(!list.contains(&key) && !list.contains(&new_key), "list shows a secret:\n{list}");

    assert_not_logged(&gw, &[&key, &new_key]);
}

#[test]
fn expired_and_network_restricted_keys_are_refused() {
    let Setup { up, gw, _dir } = start("");
    // Expiry is stored in whole seconds: 3s gives at least two seconds of validity to observe.
    let (_, short) = create(&gw, &["--expires", "3s"]);
    let (_, restricted) = create(&gw, &["--cidr", "10.0.0.0/8"]);
    let (_, plain) = create(&gw, &[]);
    assert!(eventually(Duration::from_secs(5), 200, || with_key(&gw, &plain)));
    let hits = up.hits();
    // 127.0.0.1 is not in 10.0.0.0/8, and a forged X-Forwarded-For from an untrusted peer changes nothing.
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {restricted}")]), &up, hits);
    let forged = [format!("X-API-Key: {restricted}"), "X-Forwarded-For: 10.1.2.3".to_string()];
    assert_unauthorized(&get(&gw, "/data", &[&forged[0], &forged[1]]), &up, hits);

    let started = Instant::now();
    assert!(eventually(Duration::from_secs(8), 401, || with_key(&gw, &short)), "expired key still accepted");
    assert!(started.elapsed() < Duration::from_secs(8));
    let hits = up.hits();
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {short}")]), &up, hits);
    assert_not_logged(&gw, &[&short, &restricted, &plain]);
}

/// A key made elsewhere, declared in the config file by its hash (`portcullis keys hash` on stdin).
#[test]
fn key_declared_by_hash_in_the_config() {
    let dir = TempDir::new();
    let up = Upstream::start("keys");
    // Make a key with the CLI in a throwaway store, and hash it.
    let scratch = dir.write("scratch.yaml", &config(up.addr, &dir.path("scratch.db"), ""));
    let key = keys_cli(&scratch, &["create", "--principal", "ci"]);
    let hash = {
        use std::io::Write;
        let mut child = std::process::Command::new(bin())
            .args(["keys", "-c", scratch.to_str().unwrap(), "hash"])
            .env(HMAC_ENV, HMAC)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{key}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(hash.len(), 64, "{hash}");
    assert!(!hash.contains(&key));

    let declared = format!(
        "      keys:\n        - id: {id}\n          hash: {hash}\n          principal: ci\n          roles: [deploy]",
        id = key_id(&key)
    );
    let gw = Gateway::start_with_env(&config(up.addr, &dir.path("keys.db"), &declared), &[(HMAC_ENV, HMAC)]);
    assert_eq!(with_key(&gw, &key), 200);
    assert_eq!(up.last().unwrap().header("x-portcullis-principal"), Some("ci"));
    assert_eq!(up.last().unwrap().header("x-portcullis-roles"), Some("deploy"));
    let hits = up.hits();
    // A different, well-formed key is not accepted because of the declared one.
    let other = keys_cli(&scratch, &["create", "--principal", "other"]);
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {other}")]), &up, hits);
    assert_not_logged(&gw, &[&key, &other]);
    drop(gw);

    // A declared key's `allowed_cidrs`: a bare address is that address alone; an entry that cannot be
    // read fails the load (with its place in the file), never lifting the restriction.
    let restricted = |cidrs: &str| format!("{declared}\n          allowed_cidrs: [{cidrs}]");
    let gw = Gateway::start_with_env(
        &config(up.addr, &dir.path("keys.db"), &restricted("\"203.0.113.5\"")),
        &[(HMAC_ENV, HMAC)],
    );
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {key}")]), &up, up.hits());
    drop(gw);
    let gw = Gateway::start_with_env(
        &config(up.addr, &dir.path("keys.db"), &restricted("\"127.0.0.1\", \"::1\"")),
        &[(HMAC_ENV, HMAC)],
    );
    assert_eq!(with_key(&gw, &key), 200);
    drop(gw);
    let bad = dir.write("bad.yaml", &config(up.addr, &dir.path("keys.db"), &restricted("\"127.0.0.1/40\"")));
    let (code, _, stderr) = portcullis(&["check", "-c", bad.to_str().unwrap()], &[(HMAC_ENV, HMAC)]);
    assert_ne!(code, 0, "an unreadable restriction was accepted");
    assert!(stderr.contains("127.0.0.1/40"), "{stderr}");
}

#[test]
fn query_string_keys_only_when_configured() {
    // Off by default.
    let Setup { up, gw, _dir } = start("");
    let (_, key) = create(&gw, &[]);
    assert!(eventually(Duration::from_secs(5), 200, || with_key(&gw, &key)));
    let hits = up.hits();
    assert_unauthorized(&get(&gw, &format!("/data?api_key={key}"), &[]), &up, hits);
    assert_not_logged(&gw, &[&key]);
    drop(gw);

    // On when `query_param` names the parameter.
    let dir = TempDir::new();
    let up = Upstream::start("keys");
    let gw = Gateway::start_with_env(
        &config(up.addr, &dir.path("keys.db"), "      query_param: api_key"),
        &[(HMAC_ENV, HMAC)],
    );
    let (_, key) = create(&gw, &[]);
    assert!(eventually(Duration::from_secs(5), 200, || get(&gw, &format!("/data?x=1&api_key={key}"), &[]).0));
    // The key is the caller's secret for the gateway: the upstream gets the query without it.
    assert_eq!(up.last().expect("forwarded").path_and_query, "/data?x=1");
    assert_eq!(get(&gw, &format!("/data?api_key={key}&y=2"), &[]).0, 200);
    assert_eq!(up.last().expect("forwarded").path_and_query, "/data?y=2");
    // More than one key presented (found in review: the first was judged and the others ignored, so a
    // bad key hid behind a good one): refused, whichever comes first and wherever they are.
    let hits = up.hits();
    let other = "pcs_nope";
    for (path, headers) in [
        (format!("/data?api_key={key}&y=2&api_key={other}"), vec![]),
        (format!("/data?api_key={other}&api_key={key}"), vec![]),
        (format!("/data?api_key={key}"), vec![format!("X-Api-Key: {key}")]),
        ("/data".to_string(), vec![format!("X-Api-Key: {key}"), format!("X-Api-Key: {other}")]),
        ("/data".to_string(), vec![format!("X-Api-Key: {key}"), format!("Authorization: ApiKey {other}")]),
        ("/data".to_string(), vec![format!("Authorization: ApiKey {key}"), format!("Authorization: ApiKey {key}")]),
    ] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let resp = get(&gw, &path, &headers);
        assert_eq!(resp.0, 401, "{path} {headers:?}: {}", resp.2);
        assert_unauthorized(&resp, &up, hits);
    }
    // One key, and an Authorization line of another scheme beside it, is one key.
    assert_eq!(get(&gw, "/data", &[&format!("X-Api-Key: {key}"), "Authorization: Basic Zm9vOmJhcg=="]).0, 200);
    assert_eq!(get(&gw, &format!("/data?api_key={key}"), &[]).0, 200);
    assert_eq!(up.last().expect("forwarded").path_and_query, "/data");
    let hits = up.hits();
    assert_unauthorized(&get(&gw, "/data?api_key=pcs_nope", &[]), &up, hits);
    assert_unauthorized(&get(&gw, &format!("/data?other_api_key={key}"), &[]), &up, hits);
    assert_not_logged(&gw, &[&key]);
}

/// Writes `allowed_cidrs` of key `id` straight into the store (as a hand edit, an older release or a
/// damaged file could leave it) and bumps the generation so running gateways reload.
fn store_cidrs(store: &Path, id: &str, column: &str) {
    let db = rusqlite::Connection::open(store).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let n = db.execute("UPDATE api_keys SET allowed_cidrs = ?2 WHERE id = ?1", [id, column]).unwrap();
    assert_eq!(n, 1);
    db.execute("UPDATE meta SET v = v + 1 WHERE k = 'generation'", []).unwrap();
}

/// A bare address restricts a key to that address alone, and a restriction the loader cannot read makes
/// the key unusable: it never lifts the restriction.
#[test]
fn bare_addresses_restrict_and_unreadable_restrictions_refuse_the_key() {
    let Setup { up, gw, _dir } = start("");
    let store = _dir.path("keys.db");
    let (_, elsewhere) = create(&gw, &["--cidr", "203.0.113.5"]);
    let (here_id, here) = create(&gw, &["--cidr", "127.0.0.1"]);
    let (v6_id, v6) = create(&gw, &["--cidr", "::1"]);
    let (broken_id, broken) = create(&gw, &["--cidr", "127.0.0.0/8"]);
    assert!(eventually(Duration::from_secs(5), 200, || with_key(&gw, &broken)), "key never accepted");
    assert_eq!(with_key(&gw, &here), 200, "127.0.0.1 is the client's address");
    let hits = up.hits();
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {elsewhere}")]), &up, hits);
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {v6}")]), &up, hits);
    // The CLI refuses what it cannot read, and stores addresses in canonical form.
    let (code, _, stderr) = portcullis(
        &["keys", "-c", gw.config.to_str().unwrap(), "create", "--principal", "x", "--cidr", "127.0.0.1/33"],
        &[(HMAC_ENV, HMAC)],
    );
    assert_ne!(code, 0, "{stderr}");
    let db = rusqlite::Connection::open(&store).unwrap();
    let stored: String =
        db.query_row("SELECT allowed_cidrs FROM api_keys WHERE id = ?1", [&here_id], |r| r.get(0)).unwrap();
    assert_eq!(stored, r#"["127.0.0.1/32"]"#);
    drop(db);

    // Entries as an older release stored them (bare) are read the same way.
    store_cidrs(&store, &v6_id, r#"["203.0.113.5"]"#);
    store_cidrs(&store, &here_id, r#"["127.0.0.1"]"#);
    // Damaged entries: the key is refused, and the log says why.
    store_cidrs(&store, &broken_id, r#"["127.0.0.0/8", "127.0.0.1/99"]"#);
    assert!(eventually(Duration::from_secs(5), 401, || with_key(&gw, &broken)), "a damaged restriction lifted");
    assert!(gw.wait_log("address restriction cannot be read", Duration::from_secs(5)));
    // Rotating it would copy the restriction to the new key: refused rather than made unrestricted.
    let config = gw.config.to_str().unwrap();
    let (code, stdout, stderr) = portcullis(&["keys", "-c", config, "rotate", &broken_id], &[(HMAC_ENV, HMAC)]);
    assert_ne!(code, 0, "{stdout}");
    assert!(stderr.contains("cannot be read"), "{stderr}");
    // A readable one is carried over in canonical form.
    let rotated = keys_cli(&gw.config, &["rotate", &here_id]);
    let db = rusqlite::Connection::open(&store).unwrap();
    let carried: String =
        db.query_row("SELECT allowed_cidrs FROM api_keys WHERE id = ?1", [key_id(&rotated)], |r| r.get(0)).unwrap();
    assert_eq!(carried, r#"["127.0.0.1/32"]"#);
    drop(db);
    let hits = up.hits();
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {broken}")]), &up, hits);
    assert_unauthorized(&get(&gw, "/data", &[&format!("X-API-Key: {v6}")]), &up, hits);
    assert_eq!(with_key(&gw, &here), 200);
    for column in ["not json", "null", "[1]", r#"["10.0.0.0/8,127.0.0.1/32"]"#] {
        // Readable first (so the next 401 is this column's), then damaged.
        store_cidrs(&store, &broken_id, r#"["127.0.0.1"]"#);
        assert!(eventually(Duration::from_secs(5), 200, || with_key(&gw, &broken)), "{column}");
        store_cidrs(&store, &broken_id, column);
        assert!(eventually(Duration::from_secs(5), 401, || with_key(&gw, &broken)), "{column}");
    }
    assert_not_logged(&gw, &[&elsewhere, &here, &broken, &v6]);
}
