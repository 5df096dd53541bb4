//! The access log file (`logging.access_log_file`): append-only, reopened on SIGUSR1 so logrotate can
//! move it away (`mv access.log access.log.1; kill -USR1 PID`): lines written before the reopen land
//! in the moved file, lines after it in a new file of the configured name, none lost.
//!
//! It is only ever written by the log writer thread (behind `tracing_appender`'s bounded, lossy
//! queue), never by a request's task: a slow disk costs dropped log lines, not latency. It never
//! opens anything but the configured path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};

/// The access log file and the flag SIGUSR1 raises. Reopening happens on the writer thread, before the
/// first line written after the signal.
pub struct AccessLogFile {
    path: PathBuf,
    /// Buffered: the writer thread flushes whenever its queue is empty, so under load many lines go out
    /// in one write(2), and at rest every line is on disk.
    file: BufWriter<File>,
    reopen: Arc<AtomicBool>,
}

impl AccessLogFile {
    /// Opens (creating, appending) `path` and starts reopening it on SIGUSR1. Fails when the file
    /// cannot be opened or the signal handler cannot be installed: the caller refuses to start.
    pub fn open(path: &Path) -> io::Result<AccessLogFile> {
        let file = open_append(path)?;
        let reopen = Arc::new(AtomicBool::new(false));
        // Installed at once, before the runtime starts: SIGUSR1's default action ends the process.
        // signal-hook only stores into the flag in the handler (async-signal-safe).
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone())?;
        Ok(AccessLogFile { path: path.to_owned(), file, reopen })
    }

    /// A handle to the reopen flag (what SIGUSR1 sets), for tests.
    #[cfg(test)]
    fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    fn reopen_if_asked(&mut self) {
        if !self.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        // What is buffered belongs to the moved file.
        let _ = self.file.flush();
        match open_append(&self.path) {
            Ok(f) => self.file = f,
            // The old file stays in use: a line in a moved file beats a lost line. The next SIGUSR1
            // tries again. (Logged to stdout: this thread is the access log's writer.)
            Err(e) => tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot reopen the access log file; writing on to the previous one"
            ),
        }
    }
}

/// Where each log line goes: access lines (target `access`) to the access log file's queue when there
/// is one, everything else to `rest` (stdout's queue).
pub struct Split {
    pub access: Option<NonBlocking>,
    pub rest: NonBlocking,
}

impl<'a> MakeWriter<'a> for Split {
    type Writer = EitherWriter<NonBlocking, NonBlocking>;

    fn make_writer(&'a self) -> Self::Writer {
        EitherWriter::B(self.rest.clone())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        match &self.access {
            Some(file) if meta.target() == "access" => EitherWriter::A(file.clone()),
            _ => EitherWriter::B(self.rest.clone()),
        }
    }
}

fn open_append(path: &Path) -> io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(64 * 1024, OpenOptions::new().create(true).append(true).open(path)?))
}

impl Write for AccessLogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reopen_if_asked();
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One line, one reopen check: a line is never split across two files.
        self.reopen_if_asked();
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reopens_a_moved_file_under_its_name_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("portcullis-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let mut log = AccessLogFile::open(&path).unwrap();
        log.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.write_all(b"two\n").unwrap(); // not yet asked: still the moved file
        log.reopen_flag().store(true, Ordering::Release);
        log.write_all(b"three\n").unwrap();
        log.flush().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("access.log.1")).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("portcullis-logfile-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let mut log = AccessLogFile::open(&path).unwrap();
        let moved = std::env::temp_dir().join(format!("portcullis-logfile-moved-{}", std::process::id()));
        std::fs::rename(&dir, &moved).unwrap(); // the directory is gone: the reopen fails
        log.reopen_flag().store(true, Ordering::Release);
        log.write_all(b"kept\n").unwrap();
        log.flush().unwrap();
        assert_eq!(std::fs::read_to_string(moved.join("access.log")).unwrap(), "kept\n");
        std::fs::remove_dir_all(&moved).unwrap();
    }
}
