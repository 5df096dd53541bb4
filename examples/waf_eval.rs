//! Runs the inspection engine in-process over the labelled corpus (`tests/corpus/*.jsonl`, see its
//! README for the format and how each place is carried) and prints the detection rate per category
//! and the false-positive rate on benign values.
//!
//! `cargo run --release --example waf_eval -- [DIR] [--paranoia N] [--misses CATEGORY] [--fp]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use portcullis::inspect::{Engine, InspectConfig, Mode};
use std::collections::BTreeMap;

const ENC: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn request(place: &str, payload: &str) -> Option<(http::request::Parts, Option<Vec<u8>>)> {
    let enc = || utf8_percent_encode(payload, ENC).to_string();
    let b = http::Request::builder();
    let (b, body) = match place {
        "query" => (b.method("GET").uri(format!("/echo/search?q={}", enc())), None),
        "path" => (b.method("GET").uri(format!("/echo/{}", enc())), None),
        "header" => {
            if !payload.bytes().all(|c| (0x20..0x7f).contains(&c)) {
                return None;
            }
            (b.method("GET").uri("/echo/h").header("user-agent", payload), None)
        }
        "cookie" => (b.method("GET").uri("/echo/c").header("cookie", format!("sid=abc123; q={}", enc())), None),
        "json" => {
            let body = serde_json::to_vec(&serde_json::json!({ "q": payload })).unwrap();
            (b.method("POST").uri("/echo/j").header("content-type", "application/json"), Some(body))
        }
        "json_key" => {
            let mut m = serde_json::Map::new();
            m.insert(payload.to_owned(), "1".into());
            let body = serde_json::to_vec(&serde_json::json!({ "q": m })).unwrap();
            (b.method("POST").uri("/echo/j").header("content-type", "application/json"), Some(body))
        }
        "form" => {
            let body = format!("q={}", enc()).into_bytes();
            (b.method("POST").uri("/echo/f").header("content-type", "application/x-www-form-urlencoded"), Some(body))
        }
        "xml" => (
            b.method("POST").uri("/echo/x").header("content-type", "application/xml"),
            Some(payload.as_bytes().to_vec()),
        ),
        "multipart_file" => {
            if payload.contains(['"', '\r', '\n']) {
                return None;
            }
            let body = format!(
                "--B0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{payload}\"\r\nContent-Type: application/octet-stream\r\n\r\nxx\r\n--B0undary--\r\n"
            );
            (
                b.method("POST").uri("/echo/m").header("content-type", "multipart/form-data; boundary=B0undary"),
                Some(body.into_bytes()),
            )
        }
        _ => return None,
    };
    let parts = b.body(()).ok()?.into_parts().0;
    Some((parts, body))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = "tests/corpus".to_owned();
    let mut paranoia = 1u8;
    let mut misses: Option<String> = None;
    let mut show_fp = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--paranoia" => {
                i += 1;
                paranoia = args[i].parse().unwrap();
            }
            "--misses" => {
                i += 1;
                misses = Some(args[i].clone());
            }
            "--fp" => show_fp = true,
            d => dir = d.to_owned(),
        }
        i += 1;
    }
    let engine = Engine::compile(&InspectConfig { mode: Mode::Detect, paranoia, ..Default::default() }).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    // category -> (total, detected, skipped)
    let mut stats: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut work = 0u64;
    let start = std::time::Instant::now();
    for f in files.iter().filter(|p| p.extension().is_some_and(|e| e == "jsonl")) {
        for line in std::fs::read_to_string(f).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (cat, place, payload) =
                (v["category"].as_str().unwrap(), v["place"].as_str().unwrap(), v["payload"].as_str().unwrap());
            let e = stats.entry(cat.to_owned()).or_default();
            let Some((parts, body)) = request(place, payload) else {
                e.2 += 1;
                continue;
            };
            e.0 += 1;
            let r = engine.inspect(&parts, body.as_deref());
            work += r.work;
            let blocking = r.score >= engine.threshold() || r.must_refuse() || r.malformed.is_some();
            if blocking {
                e.1 += 1;
            }
            if cat == "benign" && blocking && show_fp {
                let rules: Vec<String> = r.detections.iter().map(|d| format!("{}@{}", d.rule.id, d.target)).collect();
                println!("FP {place:>14} {rules:?} {:?} {payload:?}", r.malformed);
            }
            if misses.as_deref() == Some(cat) && !blocking {
                println!("MISS {place:>14} {payload:?}");
            }
        }
    }
    let elapsed = start.elapsed();
    let (mut at, mut ad) = (0, 0);
    println!("paranoia {paranoia}");
    for (cat, (n, d, s)) in &stats {
        let rate = if *n == 0 { 0.0 } else { 100.0 * f64::from(*d) / f64::from(*n) };
        if cat == "benign" {
            println!("{cat:>16}: {d}/{n} false positives = {rate:.2}% (skipped {s})");
        } else {
            at += n;
            ad += d;
            println!("{cat:>16}: {d}/{n} detected = {rate:.1}% (skipped {s})");
        }
    }
    println!("{:>16}: {ad}/{at} = {:.1}%", "all attacks", 100.0 * f64::from(ad) / f64::from(at.max(1)));
    let total: u32 = stats.values().map(|v| v.0).sum();
    println!(
        "{total} requests in {:?} ({:.1} µs each, work {work})",
        elapsed,
        elapsed.as_secs_f64() * 1e6 / f64::from(total.max(1))
    );
}
