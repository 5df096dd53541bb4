#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The audit trail end to end: the real gateway and the real `keys` and `bans` commands append to one
//! trail; `portcullis audit verify` accepts it intact, names the first bad record of each kind of
//! tampering, survives a kill -9 (an unanchored tail, a torn last line), follows the chain across
//! rotated files, and refuses the wrong key.
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HMAC: &str = "audit-test-hmac-secret-5b0e7c1d9a2f";

/// Makes a signing key in `dir` with the real `audit keygen`; returns (private, public) paths.
fn keygen(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.path(&format!("{name}.key")), dir.path(&format!("{name}.pub")));
    let (code, out, err) =
        portcullis(&["audit", "keygen", "--out", &path_str(&private), "--public-out", &path_str(&public)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("-----BEGIN PUBLIC KEY-----"), "{out}");
    (private, public)
}

fn config(up: std::net::SocketAddr, dir: &TempDir, key: &Path, audit_extra: &str) -> String {
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
      hmac_secret: {HMAC}
      store: {keys}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: keys
    authorize: authenticated
store:
  sqlite: {state}
audit:
  file: {file}
  signing_key: ${{file:{key}}}
  security_events: true
{audit_extra}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        keys = path_str(&dir.path("keys.db")),
        state = path_str(&dir.path("state.db")),
        file = path_str(&dir.path("audit.log")),
        key = path_str(key),
    )
}

fn verify(files: &[PathBuf], public: &Path) -> (i32, String, String) {
    let mut args = vec!["audit".to_owned(), "verify".to_owned()];
    args.extend(files.iter().map(|f| path_str(f)));
    args.extend(["--key".to_owned(), path_str(public)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    portcullis(&args, &[])
}

fn unauthorized(gw: &Gateway) {
    let resp = raw(gw.addr("main"), b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n", Duration::from_secs(5));
    assert_eq!(status_of(&resp), 401, "{resp}");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn types(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["event"]["type"].as_str().map(str::to_owned))
        .collect()
}

/// Polls until `verify` reports an intact, fully anchored trail.
fn wait_anchored(files: &[PathBuf], public: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, out, err) = verify(files, public);
        if code == 0 && out.contains(" 0 unanchored") {
            return;
        }
        assert!(Instant::now() < deadline, "never anchored: {code} {out} {err}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn seq(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"].as_u64().unwrap()
}

#[test]
fn commands_and_gateway_share_one_trail_that_verifies_and_every_tampering_is_named() {
    let dir = TempDir::new();
    let (private, public) = keygen(&dir, "audit");
    let up = Upstream::start("audit");
    let yaml = config(up.addr, &dir, &private, "  checkpoint_every: 5\n  checkpoint_interval: 300ms");
    let cfg = dir.write("portcullis.yaml", &yaml);
    let c = path_str(&cfg);
    let gw = Gateway::start(&yaml);
    let trail = dir.path("audit.log");

    // Key lifecycle and bans from the commands (separate processes, same file).
    let (code, key, err) = portcullis(&["keys", "-c", &c, "create", "--principal", "alice"], &[]);
    assert_eq!(code, 0, "{err}");
    let key_id = err.split_whitespace().nth(2).unwrap().to_owned();
    let (code, _, err) = portcullis(&["keys", "-c", &c, "revoke", &key_id], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, ban, err) = portcullis(&["bans", "-c", &c, "add", "--ip", "192.0.2.7", "--for", "1h"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = portcullis(&["bans", "-c", &c, "remove", ban.trim()], &[]);
    assert_eq!(code, 0, "{err}");
    // Security events from the gateway, and a reload.
    for _ in 0..12 {
        unauthorized(&gw);
    }
    gw.signal("HUP");
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(types(&lines(&trail)).iter().filter(|t| *t == "authn.failure").count() >= 12
        && types(&lines(&trail)).contains(&"config.reload".to_owned()))
    {
        assert!(Instant::now() < deadline, "{:?}", types(&lines(&trail)));
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_anchored(std::slice::from_ref(&trail), &public);
    // The gateway logs each checkpoint it writes: a copy of the head outside the file.
    let last_seq = seq(lines(&trail).last().unwrap());
    let logged = |gw: &Gateway| {
        gw.logs().iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| {
            (v["message"] == "audit checkpoint" && v["seq"].as_u64() == Some(last_seq))
                .then(|| format!("{last_seq}:{}", v["sha256"].as_str().unwrap()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let head = loop {
        if let Some(h) = logged(&gw) {
            break h;
        }
        assert!(Instant::now() < deadline, "no `audit checkpoint` log line for seq {last_seq}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let metrics = gw.metrics();
    let sent = metric(&metrics, r#"portcullis_exporter_events_total{exporter="audit",result="sent"}"#);
    assert!(sent.is_some_and(|n| n >= 13.0), "{metrics}");
    drop(gw);

    let all = lines(&trail);
    let kinds = types(&all);
    for k in ["key.lifecycle", "ban.set", "ban.expired", "authn.failure", "config.reload"] {
        assert!(kinds.iter().any(|t| t == k), "{k} missing: {kinds:?}");
    }
    let text = all.join("\n");
    assert!(text.contains(&format!("\"rule\":\"{key_id}\"")), "{text}");
    assert!(!text.contains(key.trim()) && !text.contains(HMAC), "a secret reached the trail");
    assert!(!text.contains("PRIVATE KEY"));
    let (code, out, err) = verify(std::slice::from_ref(&trail), &public);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");

    // A checkpoint (not the first line) followed by more records, and two records before it.
    let is_cp = |l: &String| l.contains("\"checkpoint\":") && !l.contains("\"start\":");
    let cp = (3..all.len() - 1).find(|&i| is_cp(&all[i]) && !is_cp(&all[i - 1]) && !is_cp(&all[i - 2])).unwrap();
    let (a, b) = (cp - 2, cp - 1); // zero-based indexes of two records
    let copy = dir.path("tampered.log");
    let check = |what: &str, tampered: Vec<String>, line: usize, seq: Option<u64>| {
        write_lines(&copy, &tampered);
        let (code, out, err) = verify(std::slice::from_ref(&copy), &public);
        assert_eq!(code, 1, "{what}: {out}{err}");
        let want = match seq {
            Some(s) => format!("line {line} (seq {s})"),
            None => format!("line {line}:"),
        };
        assert!(err.contains(&want), "{what}: want {want}: {err}");
    };
    let mut t = all.clone();
    t[a] = t[a].replace("\"v\":1", "\"v\":2");
    check("modified", t, a + 1, Some(seq(&all[a])));
    let mut t = all.clone();
    t.remove(a);
    check("deleted", t, a + 1, Some(seq(&all[b])));
    let mut t = all.clone();
    t.insert(b, all[1].clone());
    check("inserted", t, b + 1, Some(seq(&all[1])));
    let mut t = all.clone();
    t.swap(a, b);
    check("swapped", t, a + 1, Some(seq(&all[b])));
    let mut t = all.clone();
    let half = t[b].len() / 2;
    t[b].truncate(half);
    check("truncated", t, b + 1, None);
    let mut t = all.clone();
    let sig_at = t[cp].rfind("\"sig\":\"").unwrap() + 8;
    let flipped = if &t[cp][sig_at..=sig_at] == "A" { "B" } else { "A" };
    t[cp].replace_range(sig_at..=sig_at, flipped);
    check("checkpoint signature", t, cp + 1, Some(seq(&all[cp])));
    let mut t = all.clone();
    t.remove(cp);
    check("checkpoint removed", t, cp + 1, Some(seq(&all[cp + 1])));

    // Cutting the file back to an earlier checkpoint leaves a trail intact on its own; the checkpoint
    // known from the log catches it.
    let (code, out, err) =
        portcullis(&["audit", "verify", &path_str(&trail), "--key", &path_str(&public), "--expect", &head], &[]);
    assert_eq!(code, 0, "{out}{err}");
    write_lines(&copy, &all[..=cp]);
    let (code, out, err) = verify(std::slice::from_ref(&copy), &public);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) =
        portcullis(&["audit", "verify", &path_str(&copy), "--key", &path_str(&public), "--expect", &head], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("line {} (seq {})", cp + 2, seq(&all[cp]) + 1)) && err.contains("cut"), "{err}");

    // The wrong public key fails at the first signed line.
    let (_, other) = keygen(&dir, "other");
    let (code, _, err) = verify(std::slice::from_ref(&trail), &other);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 1 (seq 1)") && err.contains("signature"), "{err}");
    // keygen never overwrites a key.
    let (code, _, _) = portcullis(&["audit", "keygen", "--out", &path_str(&private)], &[]);
    assert_eq!(code, 1);
}

#[test]
fn kill_9_mid_write_leaves_a_trail_that_verifies_with_an_unanchored_tail() {
    let dir = TempDir::new();
    let (private, public) = keygen(&dir, "audit");
    let up = Upstream::start("audit");
    // Checkpoints rarely, so the kill lands among unanchored records.
    let yaml = config(up.addr, &dir, &private, "  checkpoint_every: 100000\n  checkpoint_interval: 1h\n  fsync: 50ms");
    let cfg = dir.write("portcullis.yaml", &yaml);
    let mut gw = Gateway::start(&yaml);
    let trail = dir.path("audit.log");
    let stop = Arc::new(AtomicBool::new(false));
    let addr = gw.addr("main");
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
                    let _ = s.read_to_end(&mut Vec::new());
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&trail).len() < 60 {
        assert!(Instant::now() < deadline, "the trail does not grow");
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.signal("KILL");
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let (code, out, err) = verify(std::slice::from_ref(&trail), &public);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("warning: unanchored tail"), "{err}");
    // A torn write (the file cut mid-line) is part of the tail.
    let len = std::fs::metadata(&trail).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&trail).unwrap().set_len(len - 17).unwrap();
    let (code, out, err) = verify(std::slice::from_ref(&trail), &public);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("incomplete") && err.contains("unanchored tail"), "{err}");
    // The next writer cuts the torn line, continues the chain and anchors everything.
    let (code, _, err) = portcullis(&["bans", "-c", &path_str(&cfg), "add", "--ip", "192.0.2.9", "--for", "1m"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = verify(std::slice::from_ref(&trail), &public);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 unanchored") && !err.contains("warning"), "{out}{err}");
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let dir = TempDir::new();
    let (private, public) = keygen(&dir, "audit");
    let up = Upstream::start("audit");
    let yaml =
        config(up.addr, &dir, &private, "  checkpoint_every: 4\n  checkpoint_interval: 200ms\n  rotate_bytes: 3KiB");
    let gw = Gateway::start(&yaml);
    let rotated = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.strip_prefix("audit.log.").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while rotated().len() < 2 {
        assert!(Instant::now() < deadline, "no rotation");
        unauthorized(&gw);
    }
    // Queued records may still rotate the file: list the files again until the whole trail is anchored.
    let all_files = || {
        let mut f = rotated();
        f.push(dir.path("audit.log"));
        f
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let files = loop {
        let files = all_files();
        let (code, out, err) = verify(&files, &public);
        if code == 0 && out.contains(" 0 unanchored") && files == all_files() {
            break files;
        }
        assert!(Instant::now() < deadline, "never anchored: {code} {out} {err}");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(gw);
    // The first line of each later file is signed and names the file before.
    let first = lines(&files[1]).remove(0);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(first.contains(&format!("\"previous_file\":\"{name}\"")), "{first}");
    // A missing file in the middle breaks the chain; the live file alone continues one not given.
    let mut gap = files.clone();
    gap.remove(1);
    let (code, _, err) = verify(&gap, &public);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = verify(&files[files.len() - 1..], &public);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("continues an earlier file"), "{err}");
}

#[test]
fn a_bad_signing_key_is_a_config_error_that_never_shows_the_key() {
    let dir = TempDir::new();
    let bad =
        dir.write("bad.key", "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW5vdC1hLWtleQ==\n-----END PRIVATE KEY-----\n");
    let yaml = config(closed_port(), &dir, &bad, "");
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("signing_key") && !err.contains("c2VjcmV0"), "{err}");
    let bad_fsync = yaml.replace("security_events: true", "security_events: true\n  fsync: sometimes");
    let cfg = dir.write("portcullis.yaml", &bad_fsync);
    let (code, _, err) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("fsync"), "{err}");
}

#[test]
fn a_graceful_stop_anchors_the_tail() {
    let dir = TempDir::new();
    let (private, public) = keygen(&dir, "audit");
    let up = Upstream::start("audit");
    let yaml = config(up.addr, &dir, &private, "  checkpoint_every: 1000\n  checkpoint_interval: 1h");
    let mut gw = Gateway::start(&yaml);
    let trail = dir.path("audit.log");
    for _ in 0..3 {
        unauthorized(&gw);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while types(&lines(&trail)).len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", lines(&trail));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gw.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let (code, out, err) = verify(std::slice::from_ref(&trail), &public);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 record(s)") && out.contains(" 0 unanchored"), "{out}{err}");
}
