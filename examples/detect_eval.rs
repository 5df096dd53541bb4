//! Runs the non-SQLi/XSS detectors (`inspect::detect::others`) over the labelled corpus and prints
//! the detection rate per category and the benign false-positive rate at a paranoia level.
//!
//! `cargo run --release --example detect_eval -- [DIR] [--level N] [--misses]`
//! (DIR defaults to tests/corpus). The corpus lines are `{"category","place","payload"}`; payloads
//! are decoded simply (percent-decoding until stable, `+` as space in queries and forms, XML's five
//! entities), not by the gateway's normaliser, so the figures are the detectors' own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use portcullis::inspect::detect::{others, Hits, TargetKind, View};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let level = args
        .iter()
        .position(|a| a == "--level")
        .and_then(|i| args.get(i + 1))
        .and_then(|l| l.parse().ok())
        .unwrap_or(1u8);
    let misses = args.iter().any(|a| a == "--misses");
    let dir = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--level"))
        .map_or("tests/corpus".to_string(), |(_, a)| a.clone());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    // category -> (total, blocked, by its own category)
    let mut stats: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut work = 0u64;
    let mut elapsed = std::time::Duration::ZERO;
    let (mut benign_time, mut benign_bytes) = (std::time::Duration::ZERO, 0u64);
    let mut bytes = 0u64;
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let Ok(rec) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let category = rec["category"].as_str().unwrap_or("").to_string();
            let place = rec["place"].as_str().unwrap_or("");
            let payload = rec["payload"].as_str().unwrap_or("");
            let kind = kind(place);
            let decoded = decode(payload, place);
            let mut hits = Hits::default();
            for value in values(&decoded, place) {
                let folded = value.to_lowercase();
                let v = View { raw: payload, decoded: &value, folded: &folded, kind, paranoia: level };
                // Timed on a second run: the first builds the automata and warms the lazy DFAs.
                let mut warm = Hits::default();
                others::scan(&v, &mut warm);
                let started = std::time::Instant::now();
                others::scan(&v, &mut hits);
                elapsed += started.elapsed();
                if category == "benign" {
                    benign_time += started.elapsed();
                    benign_bytes += value.len() as u64;
                }
                bytes += value.len() as u64;
            }
            work += hits.work;
            let blocked = hits.matched.iter().map(|(r, _)| u32::from(r.score)).sum::<u32>() >= 5;
            let own = hits.matched.iter().any(|(r, _)| r.score > 0 && same(r.category.as_str(), &category));
            let e = stats.entry(category.clone()).or_default();
            e.0 += 1;
            e.1 += u32::from(blocked);
            e.2 += u32::from(own);
            let wrong = if category == "benign" { blocked } else { !blocked };
            if misses && wrong {
                let ids: Vec<u32> = hits.matched.iter().map(|(r, _)| r.id).collect();
                println!(
                    "{} {category:>15} {place:>14} {ids:?} {:?}",
                    if blocked { "FP  " } else { "MISS" },
                    truncate(payload)
                );
            }
        }
    }
    println!("paranoia level {level}");
    println!("{:>16} {:>6} {:>9} {:>9}", "category", "total", "blocked", "own-cat");
    for (c, (t, b, o)) in &stats {
        let pct = |x: u32| 100.0 * f64::from(x) / f64::from((*t).max(1));
        println!("{c:>16} {t:>6} {:>8.1}% {:>8.1}%", pct(*b), pct(*o));
    }
    let values: u32 = stats.values().map(|s| s.0).sum();
    println!(
        "time: {:.0} ns per record on average ({:.2} ns per byte), one thread, warm",
        elapsed.as_nanos() as f64 / f64::from(values.max(1)),
        elapsed.as_nanos() as f64 / bytes.max(1) as f64
    );
    println!(
        "benign only: {:.0} ns per record ({:.2} ns per byte)",
        benign_time.as_nanos() as f64 / f64::from(stats.get("benign").map_or(1, |s| s.0.max(1))),
        benign_time.as_nanos() as f64 / benign_bytes.max(1) as f64
    );
    println!("work: {work} bytes looked at for {bytes} bytes of payload ({:.2}x)", work as f64 / bytes.max(1) as f64);
}

fn same(rule_category: &str, corpus: &str) -> bool {
    rule_category == corpus
        || (corpus == "xpath" && rule_category == "ldap")
        || (corpus == "ldap" && rule_category == "xpath")
}

fn kind(place: &str) -> TargetKind {
    match place {
        "query" => TargetKind::QueryValue,
        "form" => TargetKind::FormValue,
        "json" => TargetKind::JsonString,
        "json_key" => TargetKind::JsonKey,
        "path" => TargetKind::PathSegment,
        "header" => TargetKind::Header,
        "cookie" => TargetKind::Cookie,
        "multipart_file" => TargetKind::FileName,
        "xml" => TargetKind::XmlText,
        _ => TargetKind::QueryValue,
    }
}

fn decode(payload: &str, place: &str) -> String {
    let mut s = if matches!(place, "query" | "form") { payload.replace('+', " ") } else { payload.to_string() };
    for _ in 0..4 {
        let next = percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned();
        if next == s {
            break;
        }
        s = next;
    }
    s
}

/// The values the gateway would inspect: an XML body's text nodes and attribute values (found
/// crudely, between `>` and `<` and in quotes after `=`, then XML's five entities decoded), any
/// other payload whole.
fn values(decoded: &str, place: &str) -> Vec<String> {
    if place != "xml" || !decoded.trim_start().starts_with('<') {
        return vec![decoded.to_string()];
    }
    let mut out = Vec::new();
    for (tag, body) in decoded.split('<').filter_map(|s| s.split_once('>')) {
        if !body.trim().is_empty() {
            out.push(entities(body));
        }
        for (i, part) in tag.split('"').enumerate() {
            if i % 2 == 1 {
                out.push(entities(part));
            }
        }
    }
    if out.is_empty() {
        out.push(decoded.to_string());
    }
    out
}

fn entities(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn truncate(s: &str) -> String {
    s.chars().take(160).collect()
}
