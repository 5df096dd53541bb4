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

/// A checkpoint known from outside the file (the gateway logs each one): its seq and line hash.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub seq: u64,
    pub hash: Hash,
}

impl std::str::FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Expect, String> {
        let (seq, hash) = s.split_once(':').ok_or("write SEQ:SHA256 (from the `audit checkpoint` log line)")?;
        Ok(Expect {
            seq: seq.parse().map_err(|_| format!("`{seq}` is not a sequence number"))?,
            hash: parse_hex(hash).ok_or("the hash is 64 lowercase hex digits")?,
        })
    }
}

struct Walk<'k> {
    keys: Vec<(String, &'k [u8; 32])>,
    expect: Option<Expect>,
    expect_seen: bool,
    seq: Option<u64>,
    /// The last line's hash, line number and sequence number, and whether it was a signed line.
    last: Option<(Hash, usize, u64, bool)>,
    every: u64,
    since_signed: u64,
    report: Report,
}

/// A bad line: its number, its sequence number when readable, and why.
type Fault = (usize, Option<u64>, String);

/// Verifies `files` (in chain order: rotated files oldest first, the live file last) against the
/// public keys `keys` (each checkpoint names the id of the key that signed it; several keys verify a
/// trail whose signing key was replaced).
///
/// With `expect`, the trail must still hold that checkpoint: cutting the file's end back past it fails.
pub fn verify(files: &[Input<'_>], keys: &[[u8; 32]], expect: Option<Expect>) -> Result<Report, Bad> {
    let mut w = Walk {
        keys: keys.iter().map(|k| (key_id(k), k)).collect(),
        expect,
        expect_seen: false,
        seq: None,
        last: None,
        every: 0,
        since_signed: 0,
        report: Report { records: 0, checkpoints: 0, unanchored: 0, torn_line: None, continues: None },
    };
    for (i, file) in files.iter().enumerate() {
        w.file(i, file, i + 1 == files.len()).map_err(|(line, seq, why)| Bad {
            file: file.name.to_owned(),
            line,
            seq,
            why,
        })?;
    }
    if let (Some(e), false) = (expect, w.expect_seen) {
        let (line, seq) = w.last.map_or((1, None), |(_, l, s, _)| (l + 1, s.checked_add(1)));
        let name = files.last().map_or("", |f| f.name);
        let why = format!("the trail ends before the expected checkpoint (seq {}): records were cut", e.seq);
        return Err(Bad { file: name.to_owned(), line, seq, why });
    }
    w.report.unanchored = w.since_signed;
    Ok(w.report)
}

/// The complete lines of a file, and what follows the last newline (a torn write, or nothing).
fn split(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => (bytes[..end].split(|&b| b == b'\n').collect(), &bytes[end + 1..]),
        None => (Vec::new(), bytes),
    }
}

impl Walk<'_> {
    fn file(&mut self, index: usize, file: &Input<'_>, is_last: bool) -> Result<(), Fault> {
        let (lines, torn) = split(file.bytes);
        if lines.is_empty() {
            return Err((1, None, "the file has no complete record (a trail file begins with a signed start)".into()));
        }
        for (n, bytes) in lines.iter().enumerate() {
            self.line(n + 1, bytes, index, file.name)?;
        }
        if !torn.is_empty() {
            if !is_last {
                return Err((lines.len() + 1, None, "an incomplete line in a rotated file".into()));
            }
            self.report.torn_line = Some(lines.len() + 1);
        }
        if !is_last && self.since_signed > 0 {
            let (line, seq) = self.last.map_or((lines.len(), None), |(_, l, s, _)| (l, Some(s)));
            return Err((
                line,
                seq,
                "a rotated file must end with a checkpoint (records were cut from its end)".into(),
            ));
        }
        Ok(())
    }

    fn line(&mut self, line_no: usize, bytes: &[u8], file_index: usize, name: &str) -> Result<(), Fault> {
        let Some(line) = Line::parse(bytes) else {
            return Err((line_no, seq_of(bytes), "not a well-formed record".into()));
        };
        let seq = Some(line.seq);
        if line_no == 1 && line.start.is_none() {
            return Err((line_no, seq, "a trail file must begin with a signed start record".into()));
        }
        if line_no > 1 && line.start.is_some() {
            return Err((line_no, seq, "a start record in the middle of a file".into()));
        }
        self.link(&line, file_index, name).map_err(|why| match (&why, self.last) {
            // A broken link usually means the line before was changed: name it, unless its
            // signature vouches for it (or it is in another file).
            (Link::Hash, Some((_, prev_line, prev_seq, false))) if line_no > 1 => (
                prev_line,
                Some(prev_seq),
                format!("does not match the hash in the next record (line {line_no}): this record, or the next one's `prev`, was changed"),
            ),
            _ => (line_no, seq, why.to_string()),
        })?;
        let signed = line.checkpoint.is_some();
        if let Some(cp) = &line.checkpoint {
            let Some((_, public)) = self.keys.iter().find(|(id, _)| *id == cp.key) else {
                let why =
                    format!("signed by key id {}, not a key given with --key: its signature cannot be checked", cp.key);
                return Err((line_no, seq, why));
            };
            if !signature_valid(bytes, public) {
                return Err((
                    line_no,
                    seq,
                    format!("bad signature (key id {}): this signed record was changed", cp.key),
                ));
            }
            self.every = u64::from(cp.every.max(1));
            self.since_signed = 0;
            self.report.checkpoints += 1;
        } else {
            self.since_signed += 1;
            self.report.records += 1;
            if self.since_signed > self.every {
                let why = format!(
                    "more than {} records after a checkpoint: a checkpoint was due before this record (removed?)",
                    self.every
                );
                return Err((line_no, seq, why));
            }
        }
        let hash = hash_line(bytes);
        if let Some(e) = self.expect.filter(|e| e.seq == line.seq) {
            if !signed || e.hash != hash {
                return Err((line_no, seq, "not the expected checkpoint (its hash differs)".into()));
            }
            self.expect_seen = true;
        }
        self.seq = Some(line.seq);
        self.last = Some((hash, line_no, line.seq, signed));
        Ok(())
    }

    /// The line's place in the chain: the sequence number after the last, and `prev` = its hash.
    fn link(&mut self, line: &Line, file_index: usize, name: &str) -> Result<(), Link> {
        let prev = parse_hex(&line.prev).ok_or(Link::BadPrev)?;
        match (self.seq, self.last) {
            (Some(seq), Some((hash, ..))) => {
                if line.seq != seq + 1 {
                    return Err(Link::Seq(seq + 1, line.seq));
                }
                if prev != hash {
                    return Err(Link::Hash);
                }
            }
            _ if line.seq == 1 && prev != GENESIS => return Err(Link::Genesis),
            _ if line.seq == 1 => {}
            _ if file_index == 0 => {
                self.report.continues = Some(format!(
                    "{name} continues an earlier file ({}, ending with hash {}) that was not given",
                    line.start.as_ref().and_then(|s| s.previous_file.clone()).unwrap_or_default(),
                    hex(&prev)
                ));
            }
            _ => {}
        }
        Ok(())
    }
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

/// The sequence number of a line too damaged to parse, when it can still be read.
fn seq_of(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("seq")?.as_u64()
}
