//! Appending to the trail's file. Several processes may append to one file (the gateway, and the
//! `keys` and `bans` commands): every append holds an exclusive `flock` on the file, and when the file
//! changed since this writer's last append (its length, or the inode behind the path after a
//! rotation) the writer re-reads the tail to continue the chain where the other writer left it.
//!
//! A torn last line (a crash in the middle of a write) is cut off before appending: it was never
//! chained into anything, and appending after it would merge two records into one bad line.

use super::chain::{hash_line, hex, Hash, Line, Signer, Start, GENESIS};
use crate::events::Event;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How much of the file's end is read to find the last checkpoint after another writer appended.
const TAIL_WINDOW: u64 = 1 << 20;

pub(super) struct Writer {
    path: PathBuf,
    signer: Signer,
    every: u32,
    rotate_bytes: Option<u64>,
    file: Option<File>,
    /// (inode, length) after this writer's last append; another value means someone else wrote.
    known: Option<(u64, u64)>,
    seq: u64,
    last: Hash,
    /// Records since the last signed line, and when the first of them was written (by this writer).
    pub(super) unanchored: u32,
    pub(super) unanchored_since: Option<Instant>,
    /// Written but not yet fsynced.
    pub(super) dirty: bool,
    /// The checkpoint in the buffer being written, logged once it is.
    logged_checkpoint: Option<(u64, Hash)>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Writer {
    pub(super) fn new(path: PathBuf, signer: Signer, every: u32, rotate_bytes: Option<u64>) -> Writer {
        Writer {
            path,
            signer,
            every: every.max(1),
            rotate_bytes,
            file: None,
            known: None,
            seq: 0,
            last: GENESIS,
            unanchored: 0,
            unanchored_since: None,
            dirty: false,
            logged_checkpoint: None,
        }
    }

    /// Appends one record per event (and a checkpoint each `every` records), under the lock.
    pub(super) fn append(&mut self, events: &[Event]) -> io::Result<()> {
        self.locked(|w, file| {
            let mut buf = Vec::new();
            for e in events {
                w.push_line(&mut buf, |s, seq, prev| s.event_line(seq, now_ms(), prev, e));
                w.unanchored += 1;
                w.unanchored_since.get_or_insert_with(Instant::now);
                if w.unanchored >= w.every {
                    w.push_checkpoint(&mut buf);
                }
            }
            w.write(file, &buf)
        })
    }

    /// Writes a checkpoint when records are unanchored.
    pub(super) fn checkpoint(&mut self) -> io::Result<()> {
        self.locked(|w, file| {
            if w.unanchored == 0 {
                return Ok(());
            }
            let mut buf = Vec::new();
            w.push_checkpoint(&mut buf);
            w.write(file, &buf)
        })
    }

    pub(super) fn sync(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    fn push_line(&mut self, buf: &mut Vec<u8>, make: impl FnOnce(&Signer, u64, &Hash) -> Vec<u8>) {
        let line = make(&self.signer, self.seq + 1, &self.last);
        self.seq += 1;
        self.last = hash_line(&line);
        buf.extend_from_slice(&line);
        buf.push(b'\n');
    }

    fn push_checkpoint(&mut self, buf: &mut Vec<u8>) {
        self.push_line(buf, |s, seq, prev| s.signed_line(seq, now_ms(), prev, None));
        self.unanchored = 0;
        self.unanchored_since = None;
        self.logged_checkpoint = Some((self.seq, self.last));
    }

    fn write(&mut self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        file.write_all(buf)?;
        self.dirty = true;
        // Each checkpoint goes to the log too: a copy outside the file, for `verify --expect`.
        if let Some((seq, hash)) = self.logged_checkpoint.take() {
            tracing::info!(file = %self.path.display(), seq, sha256 = %hex(&hash), "audit checkpoint");
        }
        let meta = file.metadata()?;
        self.known = Some((meta.ino(), meta.len()));
        Ok(())
    }

    /// Runs `f` with the file open, locked, and the chain state in step with its end.
    fn locked(&mut self, f: impl FnOnce(&mut Writer, &mut File) -> io::Result<()>) -> io::Result<()> {
        let mut file = self.open_locked()?;
        let done =
            self.sync_state(&mut file).and_then(|()| f(self, &mut file)).and_then(|()| match self.rotate_bytes {
                Some(limit) if self.known.is_some_and(|(_, len)| len > limit) => self.rotate(&mut file),
                _ => Ok(()),
            });
        if done.is_err() {
            // Whatever was half done, the next append re-reads the file.
            self.known = None;
        }
        let _ = file.unlock();
        self.file = Some(file);
        done
    }

    /// The file at `path`, locked; reopened when the path now names another file (a rotation).
    fn open_locked(&mut self) -> io::Result<File> {
        for _ in 0..8 {
            let file = match self.file.take() {
                Some(f) => f,
                None => open_append(&self.path)?,
            };
            file.lock()?;
            let same = match std::fs::metadata(&self.path) {
                Ok(m) => m.ino() == file.metadata()?.ino(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if same {
                return Ok(file);
            }
            let _ = file.unlock();
            self.known = None;
        }
        Err(io::Error::other("the audit file keeps being replaced"))
    }

    /// Re-reads the tail when another writer appended (or the file is new to this writer).
    fn sync_state(&mut self, file: &mut File) -> io::Result<()> {
        let meta = file.metadata()?;
        if self.known == Some((meta.ino(), meta.len())) {
            return Ok(());
        }
        // Writers only append (a torn line is only ever cut by the writer that finds it, and a line
        // this writer wrote is complete): a file shorter than this writer left it was cut.
        let shrank =
            self.known.filter(|&(ino, len)| ino == meta.ino() && meta.len() < len).map(|(_, len)| (len, self.seq));
        let mut len = meta.len();
        let mut tail = read_tail(file, len)?;
        // Cut a torn last line (a crash mid-write); it was never part of the chain.
        if len > 0 && tail.last() != Some(&b'\n') {
            let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| len - tail.len() as u64 + i as u64 + 1);
            if keep == 0 && len > tail.len() as u64 {
                return Err(io::Error::other("the audit file's last line is too long to be a record"));
            }
            tracing::warn!(path = %self.path.display(), bytes = len - keep, "audit trail: cut an incomplete last line");
            file.set_len(keep)?;
            tail.truncate(tail.len() - (len - keep) as usize);
            len = keep;
        }
        if len == 0 {
            // A new trail (or one cut to nothing: said below).
            self.seq = 0;
            self.last = GENESIS;
            let mut buf = Vec::new();
            self.push_line(&mut buf, |s, seq, prev| s.signed_line(seq, now_ms(), prev, Some(&Start::default())));
            self.unanchored = 0;
            self.unanchored_since = None;
            self.write(file, &buf)?;
        } else {
            self.continue_from(&tail, len)?;
            self.known = Some((meta.ino(), len));
        }
        if let Some((was_len, was_seq)) = shrank {
            tracing::error!(file = %self.path.display(), was_len, len, was_seq, seq = self.seq, "audit trail: the file was cut");
            // Said in the trail itself too, anchored by the next checkpoint.
            let event = Event::new(crate::events::Kind::AdminAction, "audit_trail_cut")
                .severity(crate::events::Severity::Critical)
                .attr("bytes_before", was_len)
                .attr("bytes_after", len)
                .attr("seq_before", was_seq)
                .attr("seq_after", self.seq);
            let mut buf = Vec::new();
            self.push_line(&mut buf, |s, seq, prev| s.event_line(seq, now_ms(), prev, &event));
            self.push_checkpoint(&mut buf);
            self.write(file, &buf)?;
        }
        Ok(())
    }

    /// The chain state from the file's last lines (`tail`, the end of a file of `len` bytes).
    fn continue_from(&mut self, tail: &[u8], len: u64) -> io::Result<()> {
        let lines: Vec<&[u8]> = tail.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let last = lines.last().copied().unwrap_or_default();
        let parsed = Line::parse(last)
            .ok_or_else(|| io::Error::other("the audit file's last line is not a record; refusing to append"))?;
        self.seq = parsed.seq;
        self.last = hash_line(last);
        let after = lines.iter().rev().take_while(|l| !Line::parse(l).is_some_and(|p| p.is_signed())).count();
        // No checkpoint within the window: anchor at the next append.
        self.unanchored = if after == lines.len() && len > tail.len() as u64 { self.every } else { after as u32 };
        self.unanchored_since = (self.unanchored > 0).then(Instant::now);
        Ok(())
    }

    /// Ends the file with a checkpoint, keeps it under a name with its last sequence number, and
    /// starts a new file whose signed first line names it (and whose `prev` is its last hash).
    fn rotate(&mut self, file: &mut File) -> io::Result<()> {
        if self.unanchored > 0 {
            let mut buf = Vec::new();
            self.push_checkpoint(&mut buf);
            self.write(file, &buf)?;
        }
        file.sync_data()?;
        let rotated = rotated_name(&self.path, self.seq);
        match std::fs::hard_link(&self.path, &rotated) {
            // Left by a rotation cut short by a crash: the same file under its rotated name.
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    && std::fs::metadata(&rotated)?.ino() == file.metadata()?.ino() => {}
            other => other?,
        }
        let mut tmp_name = self.path.clone().into_os_string();
        tmp_name.push(".new");
        let tmp = PathBuf::from(tmp_name);
        let mut next = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
        let start = Start { previous_file: rotated.file_name().map(|n| n.to_string_lossy().into_owned()) };
        let mut buf = Vec::new();
        self.push_line(&mut buf, |s, seq, prev| s.signed_line(seq, now_ms(), prev, Some(&start)));
        next.write_all(&buf)?;
        next.sync_data()?;
        drop(next);
        std::fs::rename(&tmp, &self.path)?;
        tracing::info!(rotated = %rotated.display(), "audit trail rotated");
        // The next append opens the new file (the inode behind the path changed).
        self.known = None;
        self.dirty = false;
        Ok(())
    }
}

/// `audit.log` → `audit.log.000000001234`: names sort in chain order.
pub(super) fn rotated_name(path: &Path, last_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{last_seq:012}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)
}

/// The last `TAIL_WINDOW` bytes of the file (all of it when smaller).
fn read_tail(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let from = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity((len - from) as usize);
    file.take(len - from).read_to_end(&mut buf)?;
    // A window that starts mid-line: drop the partial first line.
    if from > 0 {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            buf.drain(..=i);
        }
    }
    Ok(buf)
}
