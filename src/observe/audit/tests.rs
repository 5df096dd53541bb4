#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::chain::Signer;
use super::verify::{verify, Input, Report};
use super::writer::{rotated_name, Writer};
use crate::events::{Event, Kind};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use proptest::prelude::*;
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pcs-audit-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fixed key, so the proptest does not generate keys.
fn key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap()
}

fn public() -> [u8; 32] {
    key().public_key().as_ref().try_into().unwrap()
}

fn writer(path: PathBuf, every: u32, rotate: Option<u64>) -> Writer {
    Writer::new(path, Signer::new(key(), every, 10_000), every, rotate)
}

fn events(n: usize) -> Vec<Event> {
    (0..n).map(|i| Event::new(Kind::AdminAction, "test").attr("i", i as i64)).collect()
}

fn check(bytes: &[u8]) -> Result<Report, super::verify::Bad> {
    verify(&[Input { name: "t", bytes }], &[public()], None)
}

/// Start (1) + 10 records with a checkpoint after each 4: lines 1 S, 2-5 R, 6 C, 7-10 R, 11 C, 12-13 R.
fn sample(name: &str) -> Vec<u8> {
    let path = temp(name).join("audit.log");
    let mut w = writer(path.clone(), 4, None);
    w.append(&events(10)).unwrap();
    std::fs::read(path).unwrap()
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

#[test]
fn an_intact_trail_verifies_with_its_tail() {
    let bytes = sample("intact");
    assert_eq!(lines(&bytes).len(), 13);
    let r = check(&bytes).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unanchored, r.torn_line), (10, 3, 2, None));
    // A torn last line is a warning.
    let mut torn = bytes.clone();
    torn.extend_from_slice(b"{\"seq\":14,\"ti");
    assert_eq!(check(&torn).unwrap().torn_line, Some(14));
    // The wrong key fails at the first signed line.
    let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).unwrap();
    let other: [u8; 32] = other.public_key().as_ref().try_into().unwrap();
    let bad = verify(&[Input { name: "t", bytes: &bytes }], &[other], None);
    assert_eq!(bad.unwrap_err().line, 1);
    // Among several keys, the one each checkpoint names is used.
    assert!(verify(&[Input { name: "t", bytes: &bytes }], &[other, public()], None).is_ok());
}

#[test]
fn each_kind_of_tampering_names_the_first_bad_record() {
    let l = lines(&sample("tamper"));
    let bad_line = |v: Vec<Vec<u8>>| check(&join(&v)).unwrap_err().line;
    // Modified field in record line 3.
    let mut m = l.clone();
    m[2] = String::from_utf8(m[2].clone()).unwrap().replace("\"test\"", "\"tesT\"").into_bytes();
    assert_eq!(bad_line(m), 3);
    // Deleted line 4.
    let mut d = l.clone();
    d.remove(3);
    assert_eq!(bad_line(d), 4);
    // Inserted copy of line 2 after line 4.
    let mut i = l.clone();
    i.insert(4, l[1].clone());
    assert_eq!(bad_line(i), 5);
    // Lines 3 and 4 swapped.
    let mut s = l.clone();
    s.swap(2, 3);
    assert_eq!(bad_line(s), 3);
    // Line 8 cut short.
    let mut t = l.clone();
    t[7].truncate(20);
    assert_eq!(bad_line(t), 8);
    // Checkpoint (line 6) signature altered, or the checkpoint removed.
    let mut c = l.clone();
    let n = c[5].len();
    c[5][n - 5] = if c[5][n - 5] == b'A' { b'B' } else { b'A' };
    assert_eq!(bad_line(c), 6);
    let mut r = l.clone();
    r.remove(5);
    assert_eq!(bad_line(r), 6);
    // Cutting the last checkpoint leaves a tail longer than `every`.
    let mut cut = l.clone();
    cut.remove(10);
    assert!(check(&join(&cut)).is_err());
}

#[test]
fn a_second_writer_continues_the_chain_and_a_torn_line_is_cut() {
    let path = temp("two").join("audit.log");
    let mut a = writer(path.clone(), 4, None);
    let mut b = writer(path.clone(), 4, None);
    a.append(&events(3)).unwrap();
    b.append(&events(2)).unwrap();
    b.checkpoint().unwrap();
    // A crash mid-write of writer a.
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":99,\"time\"").unwrap();
    a.append(&events(1)).unwrap();
    let r = check(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((r.records, r.unanchored, r.torn_line), (6, 1, None));
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let dir = temp("rotate");
    let path = dir.join("audit.log");
    let mut w = writer(path.clone(), 4, Some(2000));
    for _ in 0..10 {
        w.append(&events(3)).unwrap();
    }
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p != &path).collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let first_name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(first_name.starts_with("audit.log.0000000"), "{first_name}");
    assert_eq!(rotated_name(&path, 12).file_name().unwrap(), "audit.log.000000000012");
    files.push(path.clone());
    let contents: Vec<(String, Vec<u8>)> =
        files.iter().map(|p| (p.display().to_string(), std::fs::read(p).unwrap())).collect();
    let inputs: Vec<Input<'_>> = contents.iter().map(|(n, b)| Input { name: n, bytes: b }).collect();
    let r = verify(&inputs, &[public()], None).unwrap();
    assert_eq!(r.records, 30);
    // The live file alone continues a file not given; dropping a middle file breaks the chain.
    assert!(verify(&inputs[inputs.len() - 1..], &[public()], None).unwrap().continues.is_some());
    let mut gap: Vec<Input<'_>> = contents.iter().map(|(n, b)| Input { name: n, bytes: b }).collect();
    gap.remove(1);
    assert!(verify(&gap, &[public()], None).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The verifier refuses, never panics on, any bytes: cut, spliced or random (what the fuzz target
    /// `audit_verify` does at length).
    #[test]
    fn any_input_is_refused_or_accepted_without_panic(cut in 0usize..4000, junk in prop::collection::vec(any::<u8>(), 0..64)) {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let bytes = BYTES.get_or_init(|| sample("junk"));
        let cut = cut % bytes.len();
        let mut t = bytes[..cut].to_vec();
        t.extend_from_slice(&junk);
        t.extend_from_slice(&bytes[cut..]);
        let _ = check(&t);
        let _ = check(&junk);
        let _ = check(&bytes[..cut]);
    }

    /// Any change of one byte in the anchored part (through the last checkpoint) is detected.
    #[test]
    fn any_byte_changed_in_the_anchored_part_is_detected(pos in 0usize..10_000, byte in any::<u8>()) {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let bytes = BYTES.get_or_init(|| sample("prop"));
        let anchored = lines(bytes).iter().take(11).map(|l| l.len() + 1).sum::<usize>();
        let pos = pos % anchored;
        prop_assume!(bytes[pos] != byte);
        let mut t = bytes.clone();
        t[pos] = byte;
        prop_assert!(check(&t).is_err());
    }
}

#[test]
fn cutting_the_end_is_caught_by_an_expected_checkpoint_and_by_a_running_writer() {
    use super::chain::{hash_line, hex};
    use super::verify::Expect;
    let bytes = sample("cut");
    let l = lines(&bytes);
    let expect: Expect = format!("11:{}", hex(&hash_line(&l[10]))).parse().unwrap();
    assert!(verify(&[Input { name: "t", bytes: &bytes }], &[public()], Some(expect)).is_ok());
    // Cut back to the checkpoint at line 6: intact on its own, not against the expected checkpoint.
    let cut = join(&l[..6]);
    assert!(check(&cut).is_ok());
    let bad = verify(&[Input { name: "t", bytes: &cut }], &[public()], Some(expect)).unwrap_err();
    assert_eq!((bad.line, bad.seq), (7, Some(7)));
    let wrong: Expect = format!("6:{}", hex(&hash_line(&l[10]))).parse().unwrap();
    assert_eq!(verify(&[Input { name: "t", bytes: &bytes }], &[public()], Some(wrong)).unwrap_err().line, 6);

    // A writer that finds the file shorter than it left it says so in the trail.
    let path = temp("cut-live").join("audit.log");
    let mut w = writer(path.clone(), 4, None);
    w.append(&events(10)).unwrap();
    std::fs::write(&path, join(&lines(&std::fs::read(&path).unwrap())[..6])).unwrap();
    w.append(&events(1)).unwrap();
    let after = std::fs::read(&path).unwrap();
    assert!(check(&after).is_ok());
    let text = String::from_utf8(after).unwrap();
    assert!(text.contains("\"reason\":\"audit_trail_cut\""), "{text}");
    // Cut to nothing: a new trail, which begins by saying so.
    std::fs::write(&path, b"").unwrap();
    w.append(&events(1)).unwrap();
    let after = std::fs::read(&path).unwrap();
    assert!(check(&after).is_ok());
    let second = String::from_utf8(lines(&after)[1].clone()).unwrap();
    assert!(second.contains("\"reason\":\"audit_trail_cut\""), "{second}");
}

#[test]
fn a_full_queue_drops_security_events_but_keeps_audited_ones() {
    use super::{Pending, Queue, QUEUE};
    let q = Queue {
        state: std::sync::Mutex::new(Pending::default()),
        ready: std::sync::Condvar::new(),
        dropped: Default::default(),
        depth: Default::default(),
    };
    for _ in 0..QUEUE + 10 {
        q.push(Event::new(Kind::AuthnFailure, "missing_credentials"));
    }
    assert_eq!(q.dropped.get(), 10);
    for _ in 0..5 {
        q.push(Event::new(Kind::BanSet, "command"));
    }
    assert_eq!(q.dropped.get(), 10);
    let (batch, closed) = q.take(Some(std::time::Instant::now()));
    assert_eq!((batch.len(), closed), (QUEUE + 5, false));
    assert_eq!(q.depth.get(), 0);
}
