//! Step logs on disk: one file per step under `data_dir/logs/<run>/<step>.log`, written line
//! by line as the step prints, read back whole or followed while the step runs.
//!
//! A step's log holds at most the store's limit (`[docker].max_log_bytes`): past it, one
//! note line says so and further output is dropped while the step goes on running.
//!
//! A write that fails (a full disk) is an error naming the file, which stops the step: a
//! log that cannot be kept is no log. The disk being full is said in so many words
//! ("the log disk is full: …"), since that is what an operator must fix.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

/// Where logs live.
#[derive(Clone, Debug)]
pub struct LogStore {
    dir: PathBuf,
    limit: u64,
}

impl LogStore {
    /// Logs without a size limit.
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore {
            dir,
            limit: u64::MAX,
        }
    }

    /// At most `bytes` of each step's output are kept.
    pub fn with_limit(self, bytes: u64) -> LogStore {
        LogStore {
            limit: bytes,
            ..self
        }
    }

    pub fn path(&self, run: i64, step: i64) -> PathBuf {
        self.dir.join(run.to_string()).join(format!("{step}.log"))
    }

    /// A writer for a step's log (created empty).
    pub fn writer(&self, run: i64, step: i64) -> io::Result<LogWriter> {
        let path = self.path(run, step);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| write_error(&path, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| write_error(&path, e))?;
        Ok(LogWriter {
            file,
            path,
            bytes: 0,
            limit: self.limit,
            full: false,
        })
    }

    /// The directory of the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The whole log of a step so far (`None`: the step never started).
    pub fn read(&self, run: i64, step: i64) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(run, step)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The runs that have a log directory here, in no order.
    pub fn runs(&self) -> Vec<i64> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
            .collect()
    }

    /// Removes a run's logs.
    pub fn remove_run(&self, run: i64) -> io::Result<()> {
        match fs::remove_dir_all(self.dir.join(run.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Appends lines to a step's log. Each line goes straight to the file (no buffer), so a
/// reader following the log sees it at once and a crash loses nothing already printed.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    bytes: u64,
    limit: u64,
    /// The limit was reached: the note is written, lines are dropped.
    full: bool,
}

impl LogWriter {
    pub fn line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.full {
            return Ok(());
        }
        if self.bytes.saturating_add(line.len() as u64 + 1) > self.limit {
            self.full = true;
            let note = format!(
                "pipewright: the log reached its limit of {} bytes ([docker].max_log_bytes); further output is dropped",
                self.limit
            );
            return self.write(note.as_bytes());
        }
        self.write(line)
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.file
            .write_all(&buf)
            .map_err(|e| write_error(&self.path, e))?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A failed write of the log at `path`, said plainly: "the log disk is full: …" when it is
/// (`ENOSPC`, or `EDQUOT`: a quota is a full disk to its user).
fn write_error(path: &Path, e: io::Error) -> io::Error {
    let full = matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    );
    match full {
        true => io::Error::new(
            e.kind(),
            format!(
                "the log disk is full: cannot write {} ({e}); free space there (see [retention])",
                path.display()
            ),
        ),
        false => io::Error::new(
            e.kind(),
            format!("cannot write the log {}: {e}", path.display()),
        ),
    }
}

/// The complete lines a log holds past `offset`, about `budget` bytes of them (a longer
/// line whole), and the offset after them. A last line without its newline yet is left
/// for later.
pub fn read_lines(path: &Path, offset: u64, budget: usize) -> io::Result<(Vec<Vec<u8>>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    loop {
        let before = buf.len();
        (&mut file).take(budget as u64).read_to_end(&mut buf)?;
        let got = buf.len() - before;
        // Stop at a newline, or at the end of what is written so far.
        if buf[before..].contains(&b'\n') || got < budget {
            break;
        }
    }
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(complete);
    let lines = buf
        .split(|b| *b == b'\n')
        .take(buf.iter().filter(|b| **b == b'\n').count())
        .map(<[u8]>::to_vec)
        .collect();
    Ok((lines, offset + complete as u64))
}

/// What a log holds past `offset` (once its step is over: a last line without newline).
pub fn read_rest(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(1 << 20).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_limit_is_dropped_after_one_note() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf()).with_limit(10);
        let mut writer = store.writer(1, 0).unwrap();
        for line in ["1234", "5678", "9", "more", "and more"] {
            writer.line(line.as_bytes()).unwrap();
        }
        let text = String::from_utf8(store.read(1, 0).unwrap().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["1234", "5678"]);
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[2].contains("max_log_bytes"), "{text}");
    }

    /// `/dev/full` answers every write with `ENOSPC`, as a full disk does.
    #[test]
    fn a_full_disk_is_an_error_that_says_so_and_names_the_file() {
        let path = PathBuf::from("/dev/full");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let mut writer = LogWriter {
            file,
            path,
            bytes: 0,
            limit: u64::MAX,
            full: false,
        };
        let err = writer.line(b"hello").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let text = err.to_string();
        assert!(
            text.starts_with("the log disk is full: cannot write /dev/full"),
            "{text}"
        );
        assert_eq!(writer.bytes(), 0);
    }

    #[test]
    fn lines_are_read_whole_and_a_partial_last_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let long = "x".repeat(100);
        fs::write(&path, format!("one\n{long}\ntwo\npart")).unwrap();
        let (mut all, mut at) = (Vec::new(), 0);
        loop {
            let (lines, next) = read_lines(&path, at, 8).unwrap();
            if lines.is_empty() {
                assert_eq!(next, at);
                break;
            }
            all.extend(lines);
            at = next;
        }
        assert_eq!(all, [b"one".to_vec(), long.into_bytes(), b"two".to_vec()]);
        let end = at;
        assert_eq!(read_rest(&path, end).unwrap(), b"part");
    }
}
