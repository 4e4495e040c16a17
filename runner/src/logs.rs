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
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// Where logs live.
#[derive(Clone, Debug)]
pub struct LogStore {
    dir: PathBuf,
    limit: u64,
    written: Arc<Written>,
}

/// Per step being written or followed: a counter of lines written, which followers wait on
/// instead of polling the file. An entry lives while its writer or a follower does.
#[derive(Debug, Default)]
struct Written(Mutex<HashMap<(i64, i64), Entry>>);

#[derive(Debug)]
struct Entry {
    lines: tokio::sync::watch::Sender<u64>,
    writing: bool,
}

impl Written {
    fn sender(&self, key: (i64, i64), writing: bool) -> tokio::sync::watch::Sender<u64> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(key).or_insert_with(|| Entry {
            lines: tokio::sync::watch::Sender::new(0),
            writing: false,
        });
        entry.writing |= writing;
        entry.lines.clone()
    }

    /// Forgets a step nobody writes or follows any more.
    fn release(&self, key: (i64, i64), writer_done: bool) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&key) {
            if writer_done {
                entry.writing = false;
            }
            if !entry.writing && entry.lines.receiver_count() == 0 {
                map.remove(&key);
            }
        }
    }
}

/// A follower's wake-up: changes each time a line of its step's log is written (and when
/// the writer goes away).
#[derive(Debug)]
pub struct LogWatch {
    /// `None` only while it is dropped.
    lines: Option<tokio::sync::watch::Receiver<u64>>,
    key: (i64, i64),
    written: Arc<Written>,
}

impl LogWatch {
    /// Marks what was written so far as seen; call before reading the file.
    pub fn seen(&mut self) {
        if let Some(lines) = &mut self.lines {
            lines.borrow_and_update();
        }
    }

    /// Waits until a line is written after [`seen`](LogWatch::seen), or `at_most`.
    pub async fn next(&mut self, at_most: std::time::Duration) {
        if let Some(lines) = &mut self.lines {
            let _ = tokio::time::timeout(at_most, lines.changed()).await;
        }
    }
}

impl Drop for LogWatch {
    fn drop(&mut self) {
        drop(self.lines.take());
        self.written.release(self.key, false);
    }
}

impl LogStore {
    /// Logs without a size limit.
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore {
            dir,
            limit: u64::MAX,
            written: Arc::default(),
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
            lines: 0,
            limit: self.limit,
            full: false,
            notify: Some(Notify {
                lines: self.written.sender((run, step), true),
                key: (run, step),
                written: self.written.clone(),
            }),
        })
    }

    /// A writer that goes on with a step's log as an earlier process left it (a restart
    /// re-attaching to the step's container): a last line without its newline (a write
    /// cut by the crash) is dropped, since the container's log has it whole; a log that had
    /// reached its limit stays full.
    pub fn appender(&self, run: i64, step: i64) -> io::Result<LogWriter> {
        let path = self.path(run, step);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| write_error(&path, e))?;
        }
        let held = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(write_error(&path, e)),
        };
        let complete = held.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| write_error(&path, e))?;
        file.set_len(complete as u64)
            .map_err(|e| write_error(&path, e))?;
        let mut file = file;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0))
            .map_err(|e| write_error(&path, e))?;
        let held = &held[..complete];
        let last = held[..complete.saturating_sub(1)]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let full = held[last..].starts_with(LIMIT_NOTE.as_bytes());
        Ok(LogWriter {
            file,
            path,
            bytes: complete as u64,
            lines: count_lines(held),
            limit: self.limit,
            full,
            notify: Some(Notify {
                lines: self.written.sender((run, step), true),
                key: (run, step),
                written: self.written.clone(),
            }),
        })
    }

    /// How many lines a step's log holds (complete ones: a last line without its newline
    /// is not counted). 0 when it has none.
    pub fn line_count(&self, run: i64, step: i64) -> io::Result<u64> {
        match fs::read(self.path(run, step)) {
            Ok(bytes) => Ok(count_lines(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// How many of a step's log lines came before its container's own output (a pull's
    /// progress), as [`LogWriter::mark_output_start`] recorded it; 0 when nothing was
    /// recorded.
    pub fn output_start(&self, run: i64, step: i64) -> io::Result<u64> {
        match fs::read_to_string(start_path(&self.path(run, step))) {
            Ok(text) => text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the output start of step {step} of run {run} is not a number"),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Wakes its owner when a line of the step's log is written.
    pub fn watch(&self, run: i64, step: i64) -> LogWatch {
        LogWatch {
            lines: Some(self.written.sender((run, step), false).subscribe()),
            key: (run, step),
            written: self.written.clone(),
        }
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
    /// Lines written, those an appender found included.
    lines: u64,
    limit: u64,
    /// The limit was reached: the note is written, lines are dropped.
    full: bool,
    /// Tells followers that a line was written.
    notify: Option<Notify>,
}

#[derive(Debug)]
struct Notify {
    lines: tokio::sync::watch::Sender<u64>,
    key: (i64, i64),
    written: Arc<Written>,
}

impl Drop for Notify {
    fn drop(&mut self) {
        // Followers wake once more: the step may be over.
        self.lines.send_modify(|n| *n += 1);
        self.written.release(self.key, true);
    }
}

impl LogWriter {
    pub fn line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.full {
            return Ok(());
        }
        if self.bytes.saturating_add(line.len() as u64 + 1) > self.limit {
            self.full = true;
            let note = format!(
                "{LIMIT_NOTE} {} bytes ([docker].max_log_bytes); further output is dropped",
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
        self.lines += 1;
        if let Some(notify) = &self.notify {
            notify.lines.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records that the step's container starts here: the lines so far were Pipewright's
    /// (a pull's progress), the rest will be the container's own output, which a restart
    /// re-reads from the engine's log ([`LogStore::output_start`]).
    pub fn mark_output_start(&self) -> io::Result<()> {
        let path = start_path(&self.path);
        fs::write(&path, self.lines.to_string()).map_err(|e| write_error(&path, e))
    }
}

/// The start of the note written when a log reaches its limit.
const LIMIT_NOTE: &str = "pipewright: the log reached its limit of";

/// Where [`LogWriter::mark_output_start`] keeps its count: beside the log.
fn start_path(log: &Path) -> PathBuf {
    log.with_extension("start")
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
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

    #[test]
    fn an_appender_goes_on_after_the_last_whole_line_and_lines_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf());
        let mut writer = store.writer(1, 0).unwrap();
        writer.line(b"pulling").unwrap();
        writer.mark_output_start().unwrap();
        writer.line(b"line-1").unwrap();
        drop(writer);
        // A crash in the middle of a write.
        let mut file = OpenOptions::new()
            .append(true)
            .open(store.path(1, 0))
            .unwrap();
        file.write_all(b"line-").unwrap();
        assert_eq!(store.line_count(1, 0).unwrap(), 2);
        assert_eq!(store.output_start(1, 0).unwrap(), 1);
        let mut appender = store.appender(1, 0).unwrap();
        appender.line(b"line-2").unwrap();
        assert_eq!(
            store.read(1, 0).unwrap().unwrap(),
            b"pulling\nline-1\nline-2\n"
        );
        assert_eq!(store.line_count(1, 0).unwrap(), 3);
        assert_eq!(store.line_count(1, 9).unwrap(), 0);
        assert_eq!(store.output_start(1, 9).unwrap(), 0);
    }

    #[test]
    fn an_appender_of_a_full_log_stays_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf()).with_limit(10);
        let mut writer = store.writer(1, 0).unwrap();
        for line in ["1234", "5678", "9"] {
            writer.line(line.as_bytes()).unwrap();
        }
        drop(writer);
        let before = store.read(1, 0).unwrap().unwrap();
        let mut appender = store.appender(1, 0).unwrap();
        appender.line(b"more").unwrap();
        assert_eq!(store.read(1, 0).unwrap().unwrap(), before);
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
            lines: 0,
            limit: u64::MAX,
            full: false,
            notify: None,
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

    #[tokio::test]
    async fn a_follower_wakes_when_a_line_is_written_and_nothing_is_kept_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf());
        // A follower may come before the step's writer.
        let mut watch = store.watch(1, 0);
        watch.seen();
        let mut writer = store.writer(1, 0).unwrap();
        let woke = std::time::Instant::now();
        let wait = tokio::spawn(async move {
            watch.next(std::time::Duration::from_secs(30)).await;
            watch
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        writer.line(b"hello").unwrap();
        let watch = wait.await.unwrap();
        assert!(
            woke.elapsed() < std::time::Duration::from_secs(20),
            "not woken by the line"
        );
        drop(writer);
        drop(watch);
        assert!(
            store.written.0.lock().unwrap().is_empty(),
            "an entry outlived its step"
        );
    }
}
