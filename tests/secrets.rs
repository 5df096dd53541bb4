#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Secrets encrypted at rest, through the real binary: `${enc:v1:...}` config values and `${store:NAME}`
//! secrets kept encrypted in the state store (JWT HS256 secret, audit signing key), the `secrets` CLI,
//! refusals (wrong, missing or expired KEK, flipped bits, swapped and copied rows), the raw-bytes
//! proof that no plaintext reaches the SQLite file or its WAL, and a KEK rotation under load.
#[allow(unreachable_pub)]
mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ISSUER: &str = "https://idp.secrets.test";
const T: Duration = Duration::from_secs(15);

/// A fresh KEK (64 hex digits) from `secrets keygen`.
fn keygen() -> String {
    let (code, out, err) = portcullis(&["secrets", "keygen"], &[]);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");
    key
}

/// Runs `portcullis secrets ARGS` with `stdin` and extra environment: (exit code, stdout, stderr).
fn secrets(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("secrets").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "stdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

/// A gateway config: one JWT (HS256) route whose secret is `jwt_secret`, `extra` top-level sections.
fn config(up: std::net::SocketAddr, jwt_secret: &str, extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  sso:
    jwt:
      issuer: {ISSUER}
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {jwt_secret}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: sso
    authorize: authenticated
{extra}
logging:
  level: info
"#
    )
}

fn secrets_section(kek: &str, previous: &str) -> String {
    format!("secrets:\n  kek: {kek}\n{previous}")
}

fn token(secret: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    hs256(secret, &json!({"iss": ISSUER, "aud": "api", "sub": "alice", "iat": now, "exp": now + 600}))
}

fn get(gw: &Gateway, bearer: &str) -> u16 {
    let req = format!("GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n");
    status_of(&raw(gw.addr("main"), req.as_bytes(), Duration::from_secs(10)))
}

fn check(path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    portcullis(&["check", "-c", &path_str(path)], env)
}

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

const JWT_SECRET: &str = "secrets-test-jwt-hs256-key-7f3a9c1e5b2d8046";

// ---------------------------------------------------------------------------------------------------
// ${enc:v1:...}
// ---------------------------------------------------------------------------------------------------

#[test]
fn encrypted_config_value_decrypts_at_load_and_authenticates() {
    let up = Upstream::start("ok");
    let dir = TempDir::new();
    let kek_file = dir.write("kek", &keygen());
    let kek_src = format!("{{ file: {} }}", path_str(&kek_file));
    let cfg = dir.write("portcullis.yaml", &config(up.addr, "placeholder", &secrets_section(&kek_src, "")));
    let enc = ok(secrets(&["encrypt", "-c", &path_str(&cfg)], &format!("{JWT_SECRET}\n"), &[])).trim().to_owned();
    assert!(enc.starts_with("${enc:v1:") && enc.ends_with('}'), "{enc}");
    assert!(!enc.contains(JWT_SECRET));
    let yaml = config(up.addr, &enc, &secrets_section(&kek_src, ""));
    std::fs::write(&cfg, &yaml).unwrap();
    ok(check(&cfg, &[]));
    let gw = Gateway::start_in(dir, &yaml);
    assert_eq!(get(&gw, &token(JWT_SECRET)), 200);
    assert_eq!(get(&gw, &token("another-secret-of-the-right-length-0123456789")), 401);
    assert_eq!(up.hits(), 1, "only the accepted request reached the upstream");
}

#[test]
fn wrong_missing_or_expired_kek_and_flipped_bits_are_refused_by_check() {
    let up = Upstream::start("ok");
    let dir = TempDir::new();
    let kek = keygen();
    let kek_file = dir.write("kek", &kek);
    let kek_src = format!("{{ file: {} }}", path_str(&kek_file));
    let cfg = dir.write("c.yaml", &config(up.addr, "placeholder", &secrets_section(&kek_src, "")));
    let enc = ok(secrets(&["encrypt", "-c", &path_str(&cfg)], JWT_SECRET, &[])).trim().to_owned();
    let write = |value: &str, secrets: &str| {
        std::fs::write(&cfg, config(up.addr, value, secrets)).unwrap();
        check(&cfg, &[])
    };
    let refused = |r: (i32, String, String), want: &str| {
        assert_eq!(r.0, 1, "{r:?}");
        assert!(r.2.contains(want), "want `{want}` in: {}", r.2);
        assert!(r.2.contains("${enc:...}") || want.contains("KEK"), "{}", r.2);
        // The error is located (file:line:column) and never prints the value or the ciphertext.
        assert!(r.2.contains("c.yaml:"), "{}", r.2);
        assert!(!r.2.contains(JWT_SECRET) && !r.1.contains(JWT_SECRET), "{r:?}");
        assert!(!r.2.contains(&enc[12..]), "{}", r.2);
    };
    assert_eq!(write(&enc, &secrets_section(&kek_src, "")).0, 0);

    // A wrong KEK: the value names another KEK id.
    let other_file = dir.write("other", &keygen());
    let other_src = format!("{{ file: {} }}", path_str(&other_file));
    refused(write(&enc, &secrets_section(&other_src, "")), "neither `kek` nor `previous_kek`");

    // One flipped bit in the ciphertext (a character of the base64 changed).
    let data_start = "${enc:v1:0123456789abcdef:".len();
    for at in [data_start + 2, data_start + 20, enc.len() - 3] {
        let mut bytes = enc.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        refused(write(&flipped, &secrets_section(&kek_src, "")), "does not decrypt");
    }
    // Truncated and malformed.
    // Truncated: 4 characters (3 bytes) cut out before the end, or a length base64 cannot have.
    let cut = format!("{}{}", &enc[..enc.len() - 8], &enc[enc.len() - 4..]);
    refused(write(&cut, &secrets_section(&kek_src, "")), "does not decrypt");
    refused(write(&format!("{}}}", &enc[..data_start + 5]), &secrets_section(&kek_src, "")), "not base64url");
    refused(write("${enc:v1:nothex:abc}", &secrets_section(&kek_src, "")), "16 hex digits");

    // Missing KEK: no `secrets:` section; an unset variable; a missing file; a failing command.
    refused(write(&enc, ""), "no `secrets:` section");
    let r = write(&enc, &secrets_section("{ env: PORTCULLIS_TEST_NO_SUCH_KEK }", ""));
    refused(r, "`PORTCULLIS_TEST_NO_SUCH_KEK` is not set");
    let missing = format!("{{ file: {} }}", path_str(&dir.path("absent")));
    refused(write(&enc, &secrets_section(&missing, "")), "cannot be read");
    let r = write(&enc, &secrets_section("{ command: [sh, -c, 'echo leaked-stderr >&2; exit 2'] }", ""));
    assert!(!r.2.contains("leaked-stderr"), "{}", r.2);
    refused(r, "failed");
    // Even with nothing encrypted in it, a config whose KEK does not load is refused.
    let r = write("plain-literal-secret-of-enough-length-0123456789", &secrets_section(&missing, ""));
    assert_eq!(r.0, 1, "{r:?}");
    assert!(r.2.contains("secrets.kek") && r.2.contains("cannot be read"), "{}", r.2);

    // After rotation: the new KEK with the old as previous decrypts; once the grace is over it does not.
    let new_file = dir.write("new", &keygen());
    let new_src = format!("{{ file: {} }}", path_str(&new_file));
    let grace = |until: &str| format!("  previous_kek: {kek_src}\n  previous_kek_until: {until}\n");
    assert_eq!(write(&enc, &secrets_section(&new_src, &grace("2999-01-01T00:00:00Z"))).0, 0);
    refused(write(&enc, &secrets_section(&new_src, &grace("2001-01-01T00:00:00Z"))), "grace ended at 2001-01-01");
    let r = write(&enc, &secrets_section(&new_src, &grace("next week")));
    assert!(r.2.contains("previous_kek_until"), "{}", r.2);
    // An unknown key in `secrets:` is an error like everywhere else.
    let r = write(&enc, &secrets_section(&kek_src, "  kms: x\n"));
    assert!(r.0 == 1 && r.2.contains("`secrets:` section is invalid") && r.2.contains("kms"), "{r:?}");
    assert_eq!(up.hits(), 0);
}

#[test]
fn kek_from_env_file_and_command() {
    let up = Upstream::start("ok");
    let dir = TempDir::new();
    let kek = keygen();
    let kek_file = dir.write("kek", &format!("{kek}\n"));
    let by_file = format!("{{ file: {} }}", path_str(&kek_file));
    let cfg = dir.write("c.yaml", &config(up.addr, "placeholder", &secrets_section(&by_file, "")));
    let enc = ok(secrets(&["encrypt", "-c", &path_str(&cfg)], JWT_SECRET, &[])).trim().to_owned();
    // The same KEK as base64 in a variable, printed by `cat`, and by `printf`.
    let b64 = {
        use base64::Engine;
        let raw: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&kek[i * 2..i * 2 + 2], 16).unwrap()).collect();
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let sources = [
        by_file.clone(),
        "{ env: PORTCULLIS_TEST_KEK }".to_owned(),
        format!("{{ command: [cat, {}] }}", path_str(&kek_file)),
        format!("{{ command: [printf, '%s', '{b64}'] }}"),
    ];
    for src in sources {
        std::fs::write(&cfg, config(up.addr, &enc, &secrets_section(&src, ""))).unwrap();
        let r = check(&cfg, &[("PORTCULLIS_TEST_KEK", &b64)]);
        assert_eq!(r.0, 0, "{src}: {r:?}");
    }
    // A KEK file others can read is valid but warned about.
    std::fs::write(&cfg, config(up.addr, &enc, &secrets_section(&by_file, ""))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kek_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(ok(check(&cfg, &[])).contains("warning: secrets.kek: "));
    std::fs::set_permissions(&kek_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!ok(check(&cfg, &[])).contains("warning: secrets.kek"));
    // A gateway on the env KEK serves with the decrypted secret.
    let yaml = config(up.addr, &enc, &secrets_section("{ env: PORTCULLIS_TEST_KEK }", ""));
    let gw = Gateway::start_with_env(&yaml, &[("PORTCULLIS_TEST_KEK", &b64)]);
    assert_eq!(get(&gw, &token(JWT_SECRET)), 200);
}

// ---------------------------------------------------------------------------------------------------
// ${store:NAME}
// ---------------------------------------------------------------------------------------------------

struct StoreSetup {
    dir: TempDir,
    cfg: std::path::PathBuf,
    kek_src: String,
}

fn store_setup() -> StoreSetup {
    let dir = TempDir::new();
    let kek_file = dir.write("kek", &keygen());
    let kek_src = format!("{{ file: {} }}", path_str(&kek_file));
    let cfg = dir.path("portcullis.yaml");
    StoreSetup { dir, cfg, kek_src }
}

impl StoreSetup {
    fn sections(&self, kek_src: &str, previous: &str) -> String {
        format!("{}store:\n  sqlite: {}\n", secrets_section(kek_src, previous), path_str(&self.dir.path("state.db")))
    }
    fn secrets(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut all = args.to_vec();
        let cfg = path_str(&self.cfg);
        all.extend(["-c", &cfg]);
        secrets(&all, stdin, &[])
    }
}

#[test]
fn stored_jwt_secret_and_audit_signing_key_work_and_reload_picks_up_changes() {
    let up = Upstream::start("ok");
    let s = store_setup();
    let audit_key = s.dir.path("audit.key");
    let public = s.dir.path("audit.pub");
    ok(portcullis(&["audit", "keygen", "--out", &path_str(&audit_key), "--public-out", &path_str(&public)], &[]));
    let audit = format!(
        "audit:\n  file: {}\n  signing_key: ${{store:audit/signing}}\n  security_events: true\n",
        path_str(&s.dir.path("audit.log"))
    );
    let yaml = config(up.addr, "${store:jwt}", &format!("{}{audit}", s.sections(&s.kek_src, "")));
    std::fs::write(&s.cfg, &yaml).unwrap();

    // Before the secrets exist, the config is refused, naming the reference.
    let r = check(&s.cfg, &[]);
    assert_eq!(r.0, 1);
    assert!(r.2.contains("does not exist") || r.2.contains("no secret `jwt`"), "{}", r.2);
    ok(s.secrets(&["put", "jwt"], JWT_SECRET));
    let r = check(&s.cfg, &[]);
    assert!(r.0 == 1 && r.2.contains("`${store:audit/signing}`: no secret `audit/signing`"), "{}", r.2);
    ok(s.secrets(&["put", "audit/signing"], &std::fs::read_to_string(&audit_key).unwrap()));
    std::fs::remove_file(&audit_key).unwrap();
    ok(check(&s.cfg, &[]));

    // `list` names and dates, never values.
    let list = ok(s.secrets(&["list"], ""));
    assert!(list.contains("jwt") && list.contains("audit/signing"), "{list}");
    assert!(!list.contains(JWT_SECRET) && !list.contains("PRIVATE KEY"), "{list}");

    let mut gw = Gateway::start_in(TempDir::new(), &yaml);
    assert_eq!(get(&gw, &token(JWT_SECRET)), 200);
    assert_eq!(get(&gw, &token("not-the-stored-secret-but-long-enough-0123")), 401);

    // A new value, picked up on SIGHUP (the store is read at load, never per request).
    let rotated = "secrets-test-jwt-hs256-key-rotated-9d8c7b6a5f4e";
    ok(s.secrets(&["put", "jwt"], rotated));
    assert_eq!(get(&gw, &token(JWT_SECRET)), 200, "nothing changes until the reload");
    gw.signal("HUP");
    assert!(eventually(|| gw.count_log("configuration reloaded") >= 1), "{}", gw.logs().join("\n"));
    assert_eq!(get(&gw, &token(rotated)), 200);
    assert_eq!(get(&gw, &token(JWT_SECRET)), 401);
    assert_eq!(up.hits(), 3);
    // The trail was signed with the stored key: it verifies with the public half.
    gw.terminate(T);
    let (code, out, err) =
        portcullis(&["audit", "verify", &path_str(&s.dir.path("audit.log")), "--key", &path_str(&public)], &[]);
    assert_eq!(code, 0, "{out}{err}");
    // The CLI's writes after the config loaded were recorded in the trail (the first puts were not:
    // the config referred to secrets not yet stored).
    let trail = std::fs::read_to_string(s.dir.path("audit.log")).unwrap();
    assert!(trail.contains("secret.put"), "{trail}");
    assert!(!trail.contains(rotated) && !trail.contains(JWT_SECRET));

    // delete
    ok(s.secrets(&["delete", "jwt"], ""));
    let r = s.secrets(&["delete", "jwt"], "");
    assert!(r.0 == 1 && r.2.contains("no secret `jwt`"), "{r:?}");
    assert!(check(&s.cfg, &[]).2.contains("no secret `jwt`"));
}

#[test]
fn store_reference_without_store_or_file_is_refused() {
    let up = Upstream::start("ok");
    let s = store_setup();
    std::fs::write(&s.cfg, config(up.addr, "${store:jwt}", &secrets_section(&s.kek_src, ""))).unwrap();
    let r = check(&s.cfg, &[]);
    assert!(r.0 == 1 && r.2.contains("`${store:jwt}`: the config has no `store:` section"), "{}", r.2);
    std::fs::write(&s.cfg, config(up.addr, "${store:jwt}", &s.sections(&s.kek_src, ""))).unwrap();
    let r = check(&s.cfg, &[]);
    assert!(r.0 == 1 && r.2.contains("does not exist"), "{}", r.2);
    assert!(!s.dir.path("state.db").exists(), "check does not create the store");
    let r = s.secrets(&["put", "bad name"], "x");
    assert!(r.0 == 1 && r.2.contains("a secret name"), "{r:?}");
    let r = s.secrets(&["put", "empty"], "");
    assert!(r.0 == 1 && r.2.contains("empty"), "{r:?}");
}

/// `portcullis secrets ARGS` with raw bytes on stdin.
fn secrets_bytes(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .arg("secrets")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Written from a thread: the command may refuse and exit before reading it all.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn odd_stdin_is_refused_whole_and_the_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::start("ok");
    let s = store_setup();
    std::fs::write(&s.cfg, config(up.addr, "${store:jwt}", &s.sections(&s.kek_src, ""))).unwrap();
    let cfg = path_str(&s.cfg);
    // More than 1 MiB: refused, never stored cut short.
    let mut big = vec![b'x'; 1 << 20];
    big.extend_from_slice(b"y\n");
    for cmd in [&["put", "big", "-c", &cfg][..], &["encrypt", "-c", &cfg][..]] {
        let r = secrets_bytes(cmd, &big);
        assert!(r.0 == 1 && r.2.contains("larger than 1 MiB"), "{cmd:?}: {}", r.2);
        assert!(r.1.is_empty(), "nothing printed");
    }
    // Not UTF-8 (every secret field is text): refused, and the bytes are not echoed.
    let r = secrets_bytes(&["put", "binary", "-c", &cfg], b"\xff\xfe\x00secret-bytes");
    assert!(r.0 == 1 && r.2.contains("not UTF-8") && !r.2.contains("secret-bytes"), "{}", r.2);
    // Exactly 1 MiB (and one newline) is accepted.
    let mut max = vec![b'z'; 1 << 20];
    max.push(b'\n');
    let r = secrets_bytes(&["put", "max", "-c", &cfg], &max);
    assert_eq!(r.0, 0, "{}", r.2);
    let list = ok(s.secrets(&["list"], ""));
    assert!(list.contains("max") && !list.contains("big") && !list.contains("binary"), "{list}");
    // The store the CLI created, and its WAL, are private to the owner.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.dir.path("state.db")), 0o600);
    if s.dir.path("state.db-wal").exists() {
        assert_eq!(mode(&s.dir.path("state.db-wal")), 0o600);
    }
    // `keygen --out`: a new file, mode 0600, never over an existing one.
    let out = s.dir.path("kek-new");
    let r = portcullis(&["secrets", "keygen", "--out", &path_str(&out)], &[]);
    assert_eq!(r.0, 0, "{}", r.2);
    assert!(r.1.is_empty(), "the key is not printed");
    assert_eq!(mode(&out), 0o600);
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.trim().len(), 64);
    let r = portcullis(&["secrets", "keygen", "--out", &path_str(&out)], &[]);
    assert!(r.0 == 1 && r.2.contains("exists"), "{}", r.2);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written, "not overwritten");
    // A value holding a reference is stored and read back as that text, never resolved again.
    let literal = format!("${{file:{}}}", path_str(&s.dir.path("kek")));
    ok(s.secrets(&["put", "jwt"], &literal));
    ok(check(&s.cfg, &[]));
    let gw = Gateway::start_in(TempDir::new(), &std::fs::read_to_string(&s.cfg).unwrap());
    let kek_text = std::fs::read_to_string(s.dir.path("kek")).unwrap();
    assert_eq!(get(&gw, &token(kek_text.trim())), 401, "the file it names was not read");
    assert_eq!(up.hits(), 0);
    assert_eq!(get(&gw, &token(&literal)), 200, "the stored text is the secret");
    assert_eq!(up.hits(), 1);
    drop(gw);
    // A sealed reference in a field that is not a secret: refused, naming it, not used as text.
    let yaml =
        config(up.addr, "${store:jwt}", &s.sections(&s.kek_src, "")).replace("- name: app", "- name: ${store:route}");
    std::fs::write(&s.cfg, yaml).unwrap();
    let r = check(&s.cfg, &[]);
    assert!(r.0 == 1 && r.2.contains("`${store:route}` is in a field that is not a secret"), "{}", r.2);
}

// ---------------------------------------------------------------------------------------------------
// Proof: no plaintext in the SQLite file or its WAL
// ---------------------------------------------------------------------------------------------------

fn b64_forms(v: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    vec![STANDARD.encode(v), URL_SAFE_NO_PAD.encode(v)]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_in_the_sqlite_file_or_its_wal() {
    let up = Upstream::start("ok");
    let s = store_setup();
    let db = s.dir.path("state.db");
    let yaml = config(up.addr, "${store:jwt}", &s.sections(&s.kek_src, ""));
    std::fs::write(&s.cfg, &yaml).unwrap();
    let audit_key = s.dir.path("audit.key");
    ok(portcullis(&["audit", "keygen", "--out", &path_str(&audit_key)], &[]));
    let pem = std::fs::read_to_string(&audit_key).unwrap();
    // The PEM's own base64 body line by line (each is a substring of the key's DER in base64).
    let pem_lines: Vec<String> =
        pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 16).map(str::to_owned).collect();
    assert!(!pem_lines.is_empty());

    ok(s.secrets(&["put", "jwt"], JWT_SECRET));
    // Hold a read transaction open so the WAL is neither checkpointed nor truncated when each command
    // exits (the CLI truncates it after its writes when no reader holds it): every write stays in it.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN").unwrap();
    let _: i64 = holder.query_row("SELECT count(*) FROM secrets", [], |r| r.get(0)).unwrap();
    let planted = [
        ("jwt", JWT_SECRET.to_owned()),
        ("audit/signing", pem.clone()),
        ("after-dek-rotation", "planted-after-dek-rotation-4b1e7d".to_owned()),
        ("after-kek-rotation", "planted-after-kek-rotation-93c0aa".to_owned()),
    ];
    let put = s.secrets(&["put", planted[1].0], &planted[1].1);
    assert!(put.2.contains("WAL could not be truncated"), "{}", put.2);
    ok(put);
    let dek = ok(s.secrets(&["rotate-dek"], ""));
    assert_eq!(dek.trim().len(), 16, "{dek}");
    ok(s.secrets(&["put", planted[2].0], &planted[2].1));
    // A value replaced: the old one must not linger either.
    ok(s.secrets(&["put", "jwt"], "overwritten-jwt-value-with-enough-bytes-0011"));
    ok(s.secrets(&["put", "jwt"], JWT_SECRET));
    // Rotate the KEK.
    let new_kek = keygen();
    let new_file = s.dir.write("kek2", &new_kek);
    let new_src = format!("{{ file: {} }}", path_str(&new_file));
    std::fs::write(
        &s.cfg,
        config(up.addr, "${store:jwt}", &s.sections(&new_src, &format!("  previous_kek: {}\n", s.kek_src))),
    )
    .unwrap();
    let out = ok(s.secrets(&["rotate-kek"], ""));
    assert!(out.contains("2 data keys re-wrapped"), "{out}");
    ok(s.secrets(&["put", planted[3].0], &planted[3].1));
    // A gateway loads them all (so every path was read back too).
    ok(check(&s.cfg, &[]));

    let wal = s.dir.path("state.db-wal");
    let wal_bytes = std::fs::read(&wal).unwrap_or_default();
    assert!(!wal_bytes.is_empty(), "the WAL holds the recent writes");
    let main = std::fs::read(&db).unwrap();
    // Once the reader is gone, the next command copies the WAL into the file and truncates it.
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let list = s.secrets(&["list"], "");
    assert!(!list.2.contains("WAL could not be truncated"), "{}", list.2);
    ok(list);
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "the WAL is truncated");
    let checkpointed = std::fs::read(&db).unwrap();
    let old_kek = std::fs::read_to_string(s.dir.path("kek")).unwrap();
    for (file, bytes) in [("state.db", &main), ("state.db-wal", &wal_bytes), ("state.db after", &checkpointed)] {
        for (name, value) in &planted {
            let mut needles = vec![value.as_bytes().to_vec()];
            needles.extend(b64_forms(value.as_bytes()).into_iter().map(String::into_bytes));
            for n in needles {
                assert!(!contains(bytes, &n[..n.len().min(24)]), "{name} found in {file}");
            }
        }
        for line in &pem_lines {
            assert!(!contains(bytes, line.as_bytes()), "a line of the signing key found in {file}");
        }
        assert!(!contains(bytes, b"overwritten-jwt-value"), "the replaced value lingers in {file}");
        for kek in [&old_kek, &new_kek] {
            assert!(!contains(bytes, kek.trim().as_bytes()), "a KEK found in {file}");
        }
    }
    assert!(contains(&wal_bytes, b"after-kek-rotation"));
    assert!(contains(&checkpointed, b"after-kek-rotation"), "the checkpoint moved the rows into the file");
}

// ---------------------------------------------------------------------------------------------------
// Tampering with the raw rows
// ---------------------------------------------------------------------------------------------------

#[test]
fn tampered_rows_are_refused_naming_the_secret() {
    let up = Upstream::start("ok");
    let s = store_setup();
    let db = s.dir.path("state.db");
    let yaml = |name: &str| config(up.addr, &format!("${{store:{name}}}"), &s.sections(&s.kek_src, ""));
    std::fs::write(&s.cfg, yaml("a")).unwrap();
    ok(s.secrets(&["put", "a"], JWT_SECRET));
    ok(s.secrets(&["put", "b"], "the-other-secret-b-of-sufficient-length-000"));
    ok(check(&s.cfg, &[]));
    let gw = Gateway::start_in(TempDir::new(), &yaml("a"));
    assert_eq!(get(&gw, &token(JWT_SECRET)), 200);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let value = |name: &str| -> Vec<u8> {
        conn.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get(0)).unwrap()
    };
    let set = |name: &str, v: &[u8]| {
        conn.execute("UPDATE secrets SET value = ?1 WHERE name = ?2", rusqlite::params![v, name]).unwrap();
    };
    let (a, b) = (value("a"), value("b"));
    let refused = |name: &str| {
        std::fs::write(&s.cfg, yaml(name)).unwrap();
        let r = check(&s.cfg, &[]);
        assert_eq!(r.0, 1, "{name}: {r:?}");
        assert!(r.2.contains(&format!("`${{store:{name}}}`")) && r.2.contains("does not decrypt"), "{}", r.2);
        assert!(!r.2.contains(JWT_SECRET) && !r.1.contains(JWT_SECRET));
    };
    // One flipped bit, in the nonce, the ciphertext and the tag.
    for at in [3, 14, a.len() - 1] {
        let mut bad = a.clone();
        bad[at] ^= 0x01;
        set("a", &bad);
        refused("a");
    }
    // The running gateway refuses to reload onto the tampered value and keeps serving.
    std::fs::write(&gw.config, yaml("a")).unwrap();
    gw.signal("HUP");
    assert!(eventually(|| gw.count_log("configuration reload refused") >= 1), "{}", gw.logs().join("\n"));
    assert!(gw.logs().iter().any(|l| l.contains("${store:a}")));
    assert_eq!(get(&gw, &token(JWT_SECRET)), 200);
    // Swapped rows: both refused.
    set("a", &b);
    set("b", &a);
    refused("a");
    refused("b");
    // A row copied to another name (another id).
    set("a", &a);
    set("b", &b);
    conn.execute_batch(
        "INSERT INTO secrets (name, dek_id, value, created_at, updated_at)
         SELECT 'copied', dek_id, value, created_at, updated_at FROM secrets WHERE name = 'a';",
    )
    .unwrap();
    refused("copied");
    // A row renamed (moved to another id).
    conn.execute_batch(
        "DELETE FROM secrets WHERE name = 'copied'; UPDATE secrets SET name = 'moved' WHERE name = 'b';",
    )
    .unwrap();
    refused("moved");
    // Restored: accepted again.
    std::fs::write(&s.cfg, yaml("a")).unwrap();
    ok(check(&s.cfg, &[]));
    // A tampered wrapped data key.
    conn.execute_batch("UPDATE data_keys SET wrapped = zeroblob(60);").unwrap();
    let r = check(&s.cfg, &[]);
    assert!(r.0 == 1 && r.2.contains("`${store:a}`") && r.2.contains("does not unwrap"), "{}", r.2);
    assert_eq!(up.hits(), 2);
}

// ---------------------------------------------------------------------------------------------------
// KEK rotation under load
// ---------------------------------------------------------------------------------------------------

#[test]
fn kek_rotation_under_load_loses_no_request() {
    let up = Upstream::start("ok");
    let s = store_setup();
    let yaml_old = config(up.addr, "${store:jwt}", &s.sections(&s.kek_src, ""));
    std::fs::write(&s.cfg, &yaml_old).unwrap();
    ok(s.secrets(&["put", "jwt"], JWT_SECRET));
    ok(s.secrets(&["rotate-dek"], ""));
    ok(s.secrets(&["put", "other"], "a-second-secret-under-the-second-data-key"));
    let gw = Gateway::start_in(TempDir::new(), &yaml_old);
    let addr = gw.addr("main");

    // Requests in a bounded loop (count and time) on another thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let bearer = token(JWT_SECRET);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut statuses = Vec::new();
            while statuses.len() < 5000 && Instant::now() < deadline {
                if stop.load(std::sync::atomic::Ordering::Relaxed) && statuses.len() >= 50 {
                    break;
                }
                let req = format!(
                    "GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
                );
                statuses.push(status_of(&raw(addr, req.as_bytes(), Duration::from_secs(10))));
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            statuses
        })
    };

    // Rotate: new KEK in the config, the old one as previous; re-wrap; reload.
    assert!(eventually(|| sent.load(std::sync::atomic::Ordering::Relaxed) >= 5), "the load runs");
    let before_rotation = sent.load(std::sync::atomic::Ordering::Relaxed);
    let new_file = s.dir.write("kek2", &keygen());
    let new_src = format!("{{ file: {} }}", path_str(&new_file));
    let yaml_grace = config(
        up.addr,
        "${store:jwt}",
        &s.sections(&new_src, &format!("  previous_kek: {}\n  previous_kek_until: 2999-01-01T00:00:00Z\n", s.kek_src)),
    );
    std::fs::write(&s.cfg, &yaml_grace).unwrap();
    let out = ok(s.secrets(&["rotate-kek"], ""));
    assert!(out.contains("2 data keys re-wrapped"), "{out}");
    // Running it again has nothing left to do, and says so.
    let again = s.secrets(&["rotate-kek"], "");
    assert!(again.0 == 1 && again.2.contains("already wrapped"), "{again:?}");
    gw.rewrite_config(&yaml_grace);
    gw.signal("HUP");
    assert!(eventually(|| gw.count_log("configuration reloaded") >= 1), "{}", gw.logs().join("\n"));
    // After the grace: a config without `previous_kek` loads (every data key was re-wrapped) ...
    let yaml_new = config(up.addr, "${store:jwt}", &s.sections(&new_src, ""));
    std::fs::write(&s.cfg, &yaml_new).unwrap();
    ok(check(&s.cfg, &[]));
    let reloads = gw.count_log("configuration reloaded");
    gw.rewrite_config(&yaml_new);
    gw.signal("HUP");
    assert!(eventually(|| gw.count_log("configuration reloaded") > reloads), "{}", gw.logs().join("\n"));
    // ... and the old KEK alone no longer opens anything.
    std::fs::write(&s.cfg, &yaml_old).unwrap();
    let r = check(&s.cfg, &[]);
    assert!(r.0 == 1 && r.2.contains("neither `kek` nor `previous_kek`"), "{}", r.2);

    let after_reloads = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(after_reloads > before_rotation, "requests ran while the KEK rotated and the gateway reloaded");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.join().unwrap();
    assert!(statuses.len() >= 50, "{}", statuses.len());
    let bad: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(bad.is_empty(), "{} of {} requests failed: {bad:?}", bad.len(), statuses.len());
    assert_eq!(up.hits(), statuses.len(), "every request reached the upstream once");
    assert!(!gw.logs().iter().any(|l| l.contains("reload refused")), "{}", gw.logs().join("\n"));
}
