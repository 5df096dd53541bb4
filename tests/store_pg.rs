#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The PostgreSQL store (`store.postgres`, src/store/postgres.rs) against a real throwaway cluster
//! (tests/common/pg.rs): migrations run once however often and however concurrently they are asked
//! for, a newer schema is refused, the password never shows, and a gateway's API keys with
//! `store: postgres` follow `portcullis keys` changes within a second.

#[allow(unreachable_pub)]
mod common;

use common::pg::PgServer;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const HMAC_ENV: &str = "PORTCULLIS_TEST_PG_HMAC";
const HMAC: &str = "pg-test-server-secret-0123456789abcdef";
const URL_ENV: &str = "PORTCULLIS_TEST_PG_URL";

fn config(dir: &TempDir, up: std::net::SocketAddr, extra_store: &str) -> String {
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
    poll_interval: 500ms
    connect_timeout: 2s
{extra_store}
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HMAC_ENV}}}
      store: postgres
routes:
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
        sqlite = path_str(&dir.path("state.db"))
    )
}

fn env(pg: &PgServer) -> Vec<(&'static str, String)> {
    vec![(HMAC_ENV, HMAC.to_owned()), (URL_ENV, pg.url())]
}

fn cli(config: &Path, pg: &PgServer, args: &[&str]) -> (i32, String, String) {
    // `-c` right after the command (`keys` takes it before its subcommand).
    let mut all: Vec<&str> = vec![args[0], "-c", config.to_str().unwrap()];
    all.extend_from_slice(&args[1..]);
    let e = env(pg);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    portcullis(&all, &e)
}

/// A gateway on `pg`; the directory holds its SQLite file.
fn start_gateway(pg: &PgServer, up: &Upstream) -> (Gateway, TempDir) {
    let dir = TempDir::new();
    let yaml = config(&dir, up.addr, "");
    let e = env(pg);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (Gateway::start_with_env(&yaml, &e), dir)
}

fn get(gw: &Gateway, key: &str) -> u16 {
    let url = format!("http://{}/x", gw.addr("main"));
    curl(&["-H", &format!("x-api-key: {key}"), &url]).0
}

#[test]
fn harness_cluster_answers_and_restarts() {
    let mut pg = PgServer::start();
    assert_eq!(pg.sql("SELECT 1"), "1");
    pg.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (7);");
    pg.stop();
    pg.start_again();
    assert_eq!(pg.sql("SELECT x FROM t"), "7");
}

/// `store migrate` applies every step once; again, nothing; the table says so; the password is not in
/// any output.
#[test]
fn migrations_are_idempotent_and_never_print_the_password() {
    let pg = PgServer::start();
    let dir = TempDir::new();
    let cfg = dir.write("p.yaml", &config(&dir, closed_port(), ""));
    let (code, out, err) = cli(&cfg, &pg, &["store", "migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied 1 api_keys and generations"), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{}/portcullis", pg.port)), "{out}");
    let (code, out2, err2) = cli(&cfg, &pg, &["store", "migrate"]);
    assert_eq!(code, 0, "{err2}");
    assert!(out2.contains("schema up to date"), "{out2}");
    assert!(out.contains("applied 2 admin_tokens"), "{out}");
    assert_eq!(pg.sql("SELECT count(*) FROM schema_migrations"), "2");
    assert_eq!(
        pg.sql("SELECT version, name FROM schema_migrations ORDER BY version"),
        "1|api_keys and generations\n2|admin_tokens"
    );
    for text in [&out, &err, &out2, &err2] {
        assert!(!text.contains(&pg.password), "password printed: {text}");
    }
    // `check` warns when the fleet store shares less than it seems to.
    let keys_db = path_str(&dir.path("keys.db"));
    let local = config(&dir, closed_port(), "").replace("      store: postgres", &format!("      store: {keys_db}"));
    let local = dir.write("local.yaml", &local);
    let (code, out, err) = cli(&local, &pg, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("warning: authenticator `keys` keeps its keys in the SQLite file `{keys_db}`")),
        "{out}"
    );
    assert!(out.contains("warning: store.postgres is set but bans stay on each node"), "{out}");
    assert!(!out.contains(&pg.password) && !err.contains(&pg.password));
}

/// A database migrated by a newer build (a step this one does not know) is refused, by the CLI and at
/// gateway start, and left as it is.
#[test]
fn a_newer_schema_is_refused() {
    let pg = PgServer::start();
    let dir = TempDir::new();
    let cfg = dir.write("p.yaml", &config(&dir, closed_port(), ""));
    assert_eq!(cli(&cfg, &pg, &["store", "migrate"]).0, 0);
    pg.sql("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)");
    let (code, _, err) = cli(&cfg, &pg, &["store", "migrate"]);
    assert_eq!(code, 1);
    assert!(err.contains("schema version 99, newer than this build knows (2)"), "{err}");
    let (code, _, err) = cli(&cfg, &pg, &["run"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("newer than this build knows"), "{err}");
    assert!(!err.contains(&pg.password));
    assert_eq!(pg.sql("SELECT count(*) FROM schema_migrations"), "3");
}

/// Nodes starting together: four migrations at once apply each step once, and all succeed.
#[test]
fn concurrent_migrations_apply_each_step_once() {
    let pg = PgServer::start();
    let dir = TempDir::new();
    let cfg = dir.write("p.yaml", &config(&dir, closed_port(), ""));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| cli(&cfg, &pg, &["store", "migrate"]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, _, err) in &results {
        assert_eq!(*code, 0, "{err}");
    }
    let applied = results.iter().filter(|(_, out, _)| out.contains("applied")).count();
    assert_eq!(applied, 1, "{results:?}");
    assert_eq!(pg.sql("SELECT count(*) FROM schema_migrations"), "2");
}

/// PostgreSQL must answer at start: the error says so and names host:port/db, never the password; a
/// wrong password is refused the same way.
#[test]
fn an_unreachable_store_refuses_to_start_without_printing_the_password() {
    let mut pg = PgServer::start();
    let dir = TempDir::new();
    let cfg = dir.write("p.yaml", &config(&dir, closed_port(), ""));
    pg.stop();
    let (code, out, err) = cli(&cfg, &pg, &["run"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cannot connect at start"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}/portcullis", pg.port)), "{err}");
    assert!(!err.contains(&pg.password) && !out.contains(&pg.password), "{err}");
    pg.start_again();
    let wrong = pg.url().replace(&pg.password, "not-the-password");
    let (code, _, err) =
        portcullis(&["keys", "-c", cfg.to_str().unwrap(), "list"], &[(HMAC_ENV, HMAC), (URL_ENV, &wrong)]);
    assert_eq!(code, 1);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
}

/// Config errors: `store: postgres` without `store.postgres`, and a remote host without TLS.
#[test]
fn config_errors_name_both_sides() {
    let dir = TempDir::new();
    let no_pg = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: 127.0.0.1:9
store:
  sqlite: {}
authenticators:
  keys:
    api_key:
      hmac_secret: {HMAC}
      store: postgres
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: keys
"#,
        path_str(&dir.path("s.db"))
    );
    let unknown =
        no_pg.replace("store:\n", "store:\n  postgres:\n    url: postgres://gw:pw@127.0.0.1/fleet\n    pool: 3\n");
    let p = dir.write("unknown.yaml", &unknown);
    let (code, _, err) = portcullis(&["check", "-c", p.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown field `pool`"), "{err}");
    let p = dir.write("nopg.yaml", &no_pg);
    let (code, _, err) = portcullis(&["check", "-c", p.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("keys") && err.contains("store.postgres"), "{err}");
    let remote = no_pg.replace(
        "store:\n",
        "store:\n  postgres:\n    url: postgres://gw:hunter2-secret@db.example.internal:5432/fleet\n",
    );
    let p = dir.write("remote.yaml", &remote);
    let (code, _, err) = portcullis(&["check", "-c", p.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("TLS is required") && err.contains("db.example.internal:5432/fleet"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// A gateway with `store: postgres`: a key made with `portcullis keys` works at once, its revocation
/// is refused within 1 s, and `portcullis_store_up` says the store answers.
#[test]
fn keys_made_and_revoked_with_the_cli_reach_a_running_gateway() {
    let pg = PgServer::start();
    let up = Upstream::start("pg-keys");
    let (gw, _dir) = start_gateway(&pg, &up);
    let (code, key, err) = cli(&gw.config, &pg, &["keys", "create", "--principal", "alice", "--role", "reader"]);
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(&gw, &key) != 200 {
        assert!(Instant::now() < deadline, "the new key was not accepted within 2 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(up.hits() > 0);
    let (code, list, _) = cli(&gw.config, &pg, &["keys", "list"]);
    assert_eq!(code, 0);
    let id = &key[4..12];
    assert!(list.contains(id) && list.contains("active"), "{list}");
    let (code, _, err) = cli(&gw.config, &pg, &["keys", "revoke", id]);
    assert_eq!(code, 0, "{err}");
    let revoked = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if get(&gw, &key) == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted 1 s after the revocation ({attempts} tries)"
        );
    }
    let hits_after = up.hits();
    assert_eq!(get(&gw, &key), 401);
    assert_eq!(up.hits(), hits_after, "a revoked key reached the upstream");
    assert_eq!(metric(&gw.metrics(), "portcullis_store_up{backend=\"postgres\"}"), Some(1.0));
    assert!(!gw.logs().join("\n").contains(&pg.password));
    // A second revoke of the same key is an error; rotate of a revoked key too.
    assert_eq!(cli(&gw.config, &pg, &["keys", "revoke", id]).0, 1);
    assert_eq!(cli(&gw.config, &pg, &["keys", "rotate", id]).0, 1);
}

/// A single node moves to a fleet: its SQLite keys and bans are exported (hashes only, file 0600),
/// imported into PostgreSQL (twice: nothing doubles), and a gateway on PostgreSQL accepts the old key.
#[test]
fn export_from_sqlite_import_into_postgres_and_the_old_key_works() {
    use std::os::unix::fs::PermissionsExt;
    let pg = PgServer::start();
    let up = Upstream::start("pg-import");
    let dir = TempDir::new();
    let fleet_yaml = config(&dir, up.addr, "");
    let single_yaml = fleet_yaml
        .replace(
            &format!("  postgres:\n    url: ${{env:{URL_ENV}}}\n    poll_interval: 500ms\n    connect_timeout: 2s\n"),
            "",
        )
        .replace("      store: postgres", &format!("      store: {}", path_str(&dir.path("keys.db"))))
        .replace(&path_str(&dir.path("state.db")), &path_str(&dir.path("single-state.db")));
    assert!(!single_yaml.contains("postgres"), "{single_yaml}");
    let single = dir.write("single.yaml", &single_yaml);
    let fleet = dir.write("fleet.yaml", &fleet_yaml);
    let (code, key, err) = cli(&single, &pg, &["keys", "create", "--principal", "erin", "--role", "reader"]);
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    let (code, _, err) = cli(&single, &pg, &["bans", "add", "--principal", "api_key:eve", "--for", "1h"]);
    assert_eq!(code, 0, "{err}");
    let (code, admin_token, err) = cli(&single, &pg, &["admin", "token", "create", "--role", "viewer"]);
    assert_eq!(code, 0, "{err}");
    let admin_token = admin_token.trim().to_owned();
    let out = dir.path("export.json");
    let out_s = path_str(&out);
    let (code, _, err) = cli(&single, &pg, &["store", "export", "--out", &out_s]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 1 API keys, 1 admin tokens and 1 bans"), "{err}");
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains(&key) && !text.contains(&key[13..45]), "the key itself was exported");
    assert!(!text.contains(&admin_token) && !text.contains(&admin_token[4..]), "the admin token was exported");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["api_keys"][0]["authenticator"], "keys");
    assert_eq!(v["api_keys"][0]["hash"].as_str().unwrap().len(), 64);
    assert_eq!(v["bans"][0]["target"], "api_key:eve");
    for round in 0..2 {
        let (code, _, err) = cli(&fleet, &pg, &["store", "import", "--in", &out_s]);
        assert_eq!(code, 0, "round {round}: {err}");
        let bans = if round == 0 { "1 new bans" } else { "0 new bans" };
        assert!(err.contains("imported 1 API keys, 1 admin tokens") && err.contains(bans), "round {round}: {err}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM api_keys WHERE authenticator = 'keys'"), "1");
    assert_eq!(pg.sql("SELECT count(*) FROM admin_tokens"), "1");
    let (_, list, _) = cli(&fleet, &pg, &["bans", "list"]);
    assert_eq!(list.matches("api_key:eve").count(), 1, "{list}");
    // A file that is not an export is refused, and changes nothing.
    let junk = dir.write("junk.json", r#"{"format":"x","version":1,"exported_at":0,"api_keys":[],"bans":[]}"#);
    let (code, _, err) = cli(&fleet, &pg, &["store", "import", "--in", &path_str(&junk)]);
    assert_eq!(code, 1);
    assert!(err.contains("not a portcullis store export"), "{err}");
    // Hostile files: malformed JSON, an unknown field, a bad hash, a wrong type: refused, nothing written.
    let good: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut bad_hash = good.clone();
    // (the first key is good and new: it must not be written either)
    let mut first = good["api_keys"][0].clone();
    first["id"] = "newid001".into();
    first["hash"] = "ab".repeat(32).into();
    bad_hash["api_keys"][0]["hash"] = "zz".into();
    bad_hash["api_keys"].as_array_mut().unwrap().insert(0, first);
    let mut unknown = good.clone();
    unknown["api_keys"][0]["secret"] = "x".into();
    let mut wrong_type = good.clone();
    wrong_type["api_keys"][0]["created_at"] = "yesterday".into();
    for (name, body) in [
        ("malformed", "{\"format\": ".to_owned()),
        ("bad-hash", bad_hash.to_string()),
        ("unknown", unknown.to_string()),
        ("wrong-type", wrong_type.to_string()),
    ] {
        let f = dir.write(&format!("{name}.json"), &body);
        let (code, _, err) = cli(&fleet, &pg, &["store", "import", "--in", &path_str(&f)]);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(!err.contains(&pg.password), "{name}: {err}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM api_keys"), "1", "a refused import wrote something");
    // A gateway on PostgreSQL accepts the key made on the single node.
    let e = env(&pg);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start_with_env(&fleet_yaml, &e);
    assert_eq!(get(&gw, &key), 200);
    let (code, list, _) = cli(&gw.config, &pg, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(list.contains("erin") && list.contains(&key[4..12]), "{list}");
    // And the admin token made on the single node.
    let listed = common::admin::call(gw.addr("admin"), Some(&admin_token), "GET", "/admin/v1/keys", None, &[]);
    assert_eq!(listed.status, 200, "{listed:?}");
}

/// `tls: { ca: PATH }` verifies the server against that CA (a server that takes TLS logins only), and a
/// server whose certificate another CA issued is refused.
#[test]
fn tls_verifies_the_server_against_the_configured_ca() {
    let mut pg = PgServer::start();
    let ca = pg.enable_tls();
    let dir = TempDir::new();
    let with_ca = |ca: &Path| {
        config(&dir, closed_port(), "").replace(
            "    connect_timeout: 2s\n",
            &format!("    connect_timeout: 2s\n    tls: {{ ca: {} }}\n", path_str(ca)),
        )
    };
    // Plain TCP is refused by the server now (hostssl only).
    let plain = dir.write("plain.yaml", &config(&dir, closed_port(), ""));
    let (code, _, err) = cli(&plain, &pg, &["store", "migrate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no pg_hba.conf entry") || err.contains("SSL off"), "{err}");
    // Over TLS, verified against the CA: works.
    let good = dir.write("tls.yaml", &with_ca(&ca));
    let (code, out, err) = cli(&good, &pg, &["store", "migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied 2 admin_tokens"), "{out}");
    // Another CA: the handshake fails, and nothing is written.
    let other_dir = TempDir::new();
    let other = other_dir.path("other-ca.pem");
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout"])
        .arg(other_dir.path("other.key"))
        .arg("-out")
        .arg(&other)
        .args(["-days", "2", "-subj", "/CN=someone else"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bad = dir.write("bad.yaml", &with_ca(&other));
    let (code, _, err) = cli(&bad, &pg, &["keys", "list"]);
    assert_eq!(code, 1);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains(&pg.password));
}

/// With PostgreSQL away, a reload that leaves the keys' authenticator as it is goes through (its keys
/// stay in memory), and one that changes it (so its keys must be read) is refused: the running config
/// keeps serving.
#[test]
fn a_reload_during_an_outage_keeps_what_it_cannot_read() {
    let mut pg = PgServer::start();
    let up = Upstream::start("pg-reload");
    let (gw, dir) = start_gateway(&pg, &up);
    let (code, key, err) = cli(&gw.config, &pg, &["keys", "create", "--principal", "frank"]);
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(&gw, &key) != 200 {
        assert!(Instant::now() < deadline, "the key was not accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.stop();
    let yaml = config(&dir, up.addr, "");
    gw.rewrite_config(&yaml.replace("level: info", "level: debug"));
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(10)), "{}", gw.logs().join("\n"));
    assert_eq!(get(&gw, &key), 200);
    gw.rewrite_config(&yaml.replace("      store: postgres", "      store: postgres\n      header: x-other-key"));
    assert!(gw.wait_log("configuration reload refused", Duration::from_secs(10)), "{}", gw.logs().join("\n"));
    assert!(gw.logs().iter().any(|l| l.contains("reload refused") && l.contains("cannot")), "{}", gw.logs().join("\n"));
    assert_eq!(get(&gw, &key), 200, "the running config still serves");
    assert!(!gw.logs().join("\n").contains(&pg.password));
}
