//! `portcullis audit verify`: walks one trail (its files in chain order) and checks every line's
//! sequence number, its `prev` hash and every signature, and bounds the unanchored tail.

use super::chain::{hash_line, hex, key_id, parse_hex, signature_valid, Hash, Line, GENESIS};

/// One file's name and bytes.
pub struct Input<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// An intact trail (maybe with an unanchored tail).
#[derive(Debug, PartialEq)]
pub struct Report {
    pub records: u64,
    pub checkpoints: u64,
    /// Complete records after the last signed line.
    pub unanchored: u64,
    /// A last line without its newline (a crash mid-write), by line number.
    pub torn_line: Option<usize>,
    /// The first file continues a file that was not given (its first `prev` is not checked).
    pub continues: Option<String>,
}

/// The first bad record.
#[derive(Debug, PartialEq)]
pub struct Bad {
    pub file: String,
    pub line: usize,
    pub seq: Option<u64>,
    pub why: String,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "{}: first bad record: line {} (seq {}): {}", self.file, self.line, seq, self.why),
            None => write!(f, "{}: first bad record: line {}: {}", self.file, self.line, self.why),
        }
    }
}

struct Walk {
    seq: Option<u64>,
    last: Option<(Hash, usize, u64)>,
    every: u64,
    since_signed: u64,
    records: u64,
    checkpoints: u64,
}

/// Verifies `files` (in chain order: rotated files oldest first, the live file last) against the
/// public keys `keys` (each checkpoint names the id of the key that signed it; several keys verify a
/// trail whose signing key was replaced).
pub fn verify(files: &[Input<'_>], keys: &[[u8; 32]]) -> Result<Report, Bad> {
    let keys: Vec<(String, &[u8; 32])> = keys.iter().map(|k| (key_id(k), k)).collect();
    let mut w = Walk { seq: None, last: None, every: 0, since_signed: 0, records: 0, checkpoints: 0 };
    let mut report = Report { records: 0, checkpoints: 0, unanchored: 0, torn_line: None, continues: None };
    for (i, file) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        let bad = |line: usize, seq: Option<u64>, why: String| Bad { file: file.name.to_owned(), line, seq, why };
        let (complete, torn) = match file.bytes.iter().rposition(|&b| b == b'\n') {
            Some(end) => (&file.bytes[..end], &file.bytes[end + 1..]),
            None => (&file.bytes[..0], file.bytes),
        };
        let lines: Vec<&[u8]> = if complete.is_empty() && file.bytes.first() != Some(&b'\n') {
            Vec::new()
        } else {
            complete.split(|&b| b == b'\n').collect()
        };
        if lines.is_empty() {
            return Err(bad(
                1,
                None,
                "the file has no complete record (a trail file begins with a signed start)".into(),
            ));
        }
        for (n, bytes) in lines.iter().enumerate() {
            let line_no = n + 1;
            let Some(line) = Line::parse(bytes) else {
                return Err(bad(line_no, seq_of(bytes), "not a well-formed record".into()));
            };
            let seq = Some(line.seq);
            if n == 0 {
                if line.start.is_none() {
                    return Err(bad(line_no, seq, "a trail file must begin with a signed start record".into()));
                }
            } else if line.start.is_some() {
                return Err(bad(line_no, seq, "a start record in the middle of a file".into()));
            }
            check_link(&w, &line, i, &mut report, file.name).map_err(|why| {
                // A broken link usually means the line before was changed: name it when it exists.
                match (&why, w.last) {
                    (Link::Hash, Some((_, prev_line, prev_seq))) if n > 0 => bad(prev_line, Some(prev_seq), format!(
                        "does not match the hash in the next record (line {line_no}): this record, or the next one's `prev`, was changed"
                    )),
                    _ => bad(line_no, seq, why.to_string()),
                }
            })?;
            if let Some(cp) = &line.checkpoint {
                let Some((_, public)) = keys.iter().find(|(id, _)| *id == cp.key) else {
                    let why = format!(
                        "signed by key id {}, not a key given with --key: its signature cannot be checked",
                        cp.key
                    );
                    return Err(bad(line_no, seq, why));
                };
                if !signature_valid(bytes, public) {
                    let why = format!("bad signature (key id {}): this signed record was changed", cp.key);
                    return Err(bad(line_no, seq, why));
                }
                w.every = u64::from(cp.every.max(1));
                w.since_signed = 0;
                w.checkpoints += 1;
            } else {
                w.since_signed += 1;
                w.records += 1;
                if w.since_signed > w.every {
                    return Err(bad(
                        line_no,
                        seq,
                        format!(
                        "more than {} records after a checkpoint: a checkpoint was due before this record (removed?)",
                        w.every
                    ),
                    ));
                }
            }
            w.seq = Some(line.seq);
            w.last = Some((hash_line(bytes), line_no, line.seq));
        }
        if !torn.is_empty() {
            if !is_last {
                return Err(bad(lines.len() + 1, None, "an incomplete line in a rotated file".into()));
            }
            report.torn_line = Some(lines.len() + 1);
        }
        if !is_last && w.since_signed > 0 {
            let (line, seq) = w.last.map_or((lines.len(), None), |(_, l, s)| (l, Some(s)));
            return Err(bad(
                line,
                seq,
                "a rotated file must end with a checkpoint (records were cut from its end)".into(),
            ));
        }
    }
    report.records = w.records;
    report.checkpoints = w.checkpoints;
    report.unanchored = w.since_signed;
    Ok(report)
}

enum Link {
    Seq(u64, u64),
    Hash,
    Genesis,
    BadPrev,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Seq(want, got) if got > want => {
                write!(f, "sequence {got} where {want} was expected: records are missing or out of order")
            }
            Link::Seq(want, got) => {
                write!(f, "sequence {got} where {want} was expected: a record was inserted or reordered")
            }
            Link::Hash => f.write_str("its `prev` does not match the hash of the line before"),
            Link::Genesis => f.write_str("the trail's first record must have a `prev` of zeros"),
            Link::BadPrev => f.write_str("`prev` is not a SHA-256 in lowercase hex"),
        }
    }
}

/// The line's place in the chain: the sequence number after the last, and `prev` = the last's hash.
fn check_link(w: &Walk, line: &Line, file_index: usize, report: &mut Report, name: &str) -> Result<(), Link> {
    let prev = parse_hex(&line.prev).ok_or(Link::BadPrev)?;
    match (w.seq, w.last) {
        (Some(seq), Some((hash, _, _))) => {
            if line.seq != seq + 1 {
                return Err(Link::Seq(seq + 1, line.seq));
            }
            if prev != hash {
                return Err(Link::Hash);
            }
        }
        _ if line.seq == 1 => {
            if prev != GENESIS {
                return Err(Link::Genesis);
            }
        }
        _ => {
            // The first file given continues one that was not given.
            if file_index == 0 {
                report.continues = Some(format!(
                    "{name} continues an earlier file ({}, ending with hash {}) that was not given",
                    line.start.as_ref().and_then(|s| s.previous_file.clone()).unwrap_or_default(),
                    hex(&prev)
                ));
            }
        }
    }
    Ok(())
}

/// The sequence number of a line too damaged to parse, when it can still be read.
fn seq_of(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("seq")?.as_u64()
}
