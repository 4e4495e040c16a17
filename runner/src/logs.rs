//! Step logs, behind one seam for both stores: with SQLite, one file per step under
//! `data_dir/logs/<run>/<step>.log`; with PostgreSQL (the database several hosts share), rows
//! of the `log_lines` table, written by whichever process runs the step, so that the
//! server's API and UI read and follow an agent's step. Written line by line as the step
//! prints (already masked), read back whole or as complete lines from a line on, followed
//! while the step runs.
//!
//! A step's log holds at most the store's limit (`[docker].max_log_bytes`): past it, one
//! note line says so and further output is dropped while the step goes on running.
//!
//! A write that fails (a full disk, the database refusing) is an error naming the log,
//! which stops the step: a log that cannot be kept is no log. The disk being full is said
//! in so many words ("the log disk is full: …"), since that is what an operator must fix.
//!
//! In the database, lines are written in batches (every [`FLUSH_EVERY`], or sooner when
//! [`FLUSH_LINES`] lines or [`FLUSH_BYTES`] wait), and [`LogWriter::finish`] writes the
//! rest before the step's end is recorded: a finished step's log is complete. Followers on
//! the host that writes wake at each batch; on other hosts they read again every
//! [`DB_POLL`].

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::store::{Store, StoreError};

/// How long lines wait in memory before they are written to the database, at most.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Lines that are written to the database at once when this many wait.
pub const FLUSH_LINES: usize = 500;
/// Bytes that are written to the database at once when this many wait.
pub const FLUSH_BYTES: usize = 256 << 10;
/// How often a follower of a log in the database reads it again when no line written on
/// this host woke it (the step runs on another).
pub const DB_POLL: Duration = Duration::from_millis(250);

/// Where logs live.
#[derive(Clone, Debug)]
pub struct LogStore {
    dir: PathBuf,
    limit: u64,
    written: Arc<Written>,
    /// With PostgreSQL: the logs are rows of this database, not files in `dir`.
    db: Option<Store>,
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

/// A follower's wake-up: changes each time a line of its step's log is written on this
/// host (and when the writer goes away); with the logs in the database, also every
/// [`DB_POLL`], for steps that run on another host.
#[derive(Debug)]
pub struct LogWatch {
    /// `None` only while it is dropped.
    lines: Option<tokio::sync::watch::Receiver<u64>>,
    key: (i64, i64),
    written: Arc<Written>,
    /// The longest wait: [`DB_POLL`] with the logs in the database.
    poll: Option<Duration>,
}

impl LogWatch {
    /// Marks what was written so far as seen; call before reading the log.
    pub fn seen(&mut self) {
        if let Some(lines) = &mut self.lines {
            lines.borrow_and_update();
        }
    }

    /// Waits until a line is written after [`seen`](LogWatch::seen), or `at_most`.
    pub async fn next(&mut self, at_most: Duration) {
        let at_most = self.poll.map_or(at_most, |poll| poll.min(at_most));
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

/// Where a reader of a step's log is: the number of the next line (and, in a file, where
/// it starts, once known).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCursor {
    line: u64,
    offset: Option<u64>,
}

impl LogCursor {
    /// At line `line` (0: the start).
    pub fn at_line(line: u64) -> LogCursor {
        LogCursor {
            line,
            offset: (line == 0).then_some(0),
        }
    }

    /// The number of the next line read.
    pub fn line(&self) -> u64 {
        self.line
    }
}

impl LogStore {
    /// Logs in files under `dir`, without a size limit.
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore {
            dir,
            limit: u64::MAX,
            written: Arc::default(),
            db: None,
        }
    }

    /// The logs of a process using `store`: rows of the database with PostgreSQL (shared
    /// by several hosts, so that any of them reads any step's log), files under `dir` with
    /// SQLite.
    pub fn for_store(dir: PathBuf, store: &Store) -> LogStore {
        LogStore {
            db: (store.backend() == crate::store::Backend::Postgres).then(|| store.clone()),
            ..LogStore::new(dir)
        }
    }

    /// At most `bytes` of each step's output are kept.
    pub fn with_limit(self, bytes: u64) -> LogStore {
        LogStore {
            limit: bytes,
            ..self
        }
    }

    /// Whether the logs are rows of the database (PostgreSQL) rather than files.
    pub fn in_database(&self) -> bool {
        self.db.is_some()
    }

    /// The file of a step's log (with the logs in files).
    pub fn path(&self, run: i64, step: i64) -> PathBuf {
        self.dir.join(run.to_string()).join(format!("{step}.log"))
    }

    /// A writer for a step's log (created empty). With the logs in the database, its
    /// batches are written by a task of its own, so this must run inside tokio.
    pub fn writer(&self, run: i64, step: i64) -> io::Result<LogWriter> {
        let notify = Notify {
            lines: self.written.sender((run, step), true),
            key: (run, step),
            written: self.written.clone(),
        };
        if let Some(store) = &self.db {
            return Ok(LogWriter {
                sink: Sink::Db(DbWriter::start(store.clone(), run, step, None, notify)),
                bytes: 0,
                lines: 0,
                limit: self.limit,
                full: false,
                start_file: start_path(&self.path(run, step)),
            });
        }
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
            start_file: start_path(&path),
            sink: Sink::File {
                file,
                path,
                notify: Some(notify),
            },
            bytes: 0,
            lines: 0,
            limit: self.limit,
            full: false,
        })
    }

    /// A writer that goes on with a step's log as an earlier process left it (a restart
    /// re-attaching to the step's container): a last line without its newline (a write
    /// cut by the crash) is dropped, since the container's log has it whole; a log that had
    /// reached its limit stays full. In the database, the lines a crash kept from their
    /// batch are not there either, and come again from the container's log the same way.
    pub async fn appender(&self, run: i64, step: i64) -> io::Result<LogWriter> {
        let notify = Notify {
            lines: self.written.sender((run, step), true),
            key: (run, step),
            written: self.written.clone(),
        };
        let path = self.path(run, step);
        if let Some(store) = &self.db {
            let held = self.read(run, step).await?.unwrap_or_default();
            let lines = count_lines(&held);
            return Ok(LogWriter {
                sink: Sink::Db(DbWriter::start(
                    store.clone(),
                    run,
                    step,
                    Some(lines as i64),
                    notify,
                )),
                bytes: held.len() as u64,
                lines,
                limit: self.limit,
                full: ends_full(&held),
                start_file: start_path(&path),
            });
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| write_error(&path, e))?;
        }
        let held = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(write_error(&path, e)),
        };
        let complete = held.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| write_error(&path, e))?;
        file.set_len(complete as u64)
            .map_err(|e| write_error(&path, e))?;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0))
            .map_err(|e| write_error(&path, e))?;
        let held = &held[..complete];
        Ok(LogWriter {
            start_file: start_path(&path),
            sink: Sink::File {
                file,
                path,
                notify: Some(notify),
            },
            bytes: complete as u64,
            lines: count_lines(held),
            limit: self.limit,
            full: ends_full(held),
        })
    }

    /// How many of a step's log lines came before its container's own output (a pull's
    /// progress), as [`LogWriter::mark_output_start`] recorded it; `None` when nothing was
    /// recorded (the step's container never started). Kept on the host that runs the step
    /// (the one that re-attaches), beside where its log file would be, whatever the backend.
    pub fn output_start(&self, run: i64, step: i64) -> io::Result<Option<u64>> {
        match fs::read_to_string(start_path(&self.path(run, step))) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the output start of step {step} of run {run} is not a number"),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Wakes its owner when a line of the step's log is written.
    pub fn watch(&self, run: i64, step: i64) -> LogWatch {
        LogWatch {
            lines: Some(self.written.sender((run, step), false).subscribe()),
            key: (run, step),
            written: self.written.clone(),
            poll: self.db.as_ref().map(|_| DB_POLL),
        }
    }

    /// The directory of the logs' files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The whole log of a step so far (`None`: the step never wrote to it).
    pub async fn read(&self, run: i64, step: i64) -> io::Result<Option<Vec<u8>>> {
        let Some(store) = &self.db else {
            return match fs::read(self.path(run, step)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            };
        };
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let lines = store
                .log_lines(run, step, from, 1 << 20)
                .await
                .map_err(read_error)?;
            if lines.is_empty() {
                break;
            }
            from += lines.len() as i64;
            for line in lines {
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
        }
        Ok((from > 0).then_some(out))
    }

    /// The whole log of a step as a stream of pieces (empty when the step never wrote),
    /// for an answer that should not hold it all in memory.
    pub async fn stream(
        &self,
        run: i64,
        step: i64,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        use futures_util::StreamExt;
        let Some(store) = &self.db else {
            return match tokio::fs::File::open(self.path(run, step)).await {
                Ok(file) => Ok(tokio_util::io::ReaderStream::new(file).boxed()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Ok(futures_util::stream::empty().boxed())
                }
                Err(e) => Err(e),
            };
        };
        let store = store.clone();
        Ok(futures_util::stream::unfold(Some(0i64), move |from| {
            let store = store.clone();
            async move {
                let from = from?;
                match store.log_lines(run, step, from, 256 << 10).await {
                    Ok(lines) if lines.is_empty() => None,
                    Ok(lines) => {
                        let next = from + lines.len() as i64;
                        let mut piece = Vec::new();
                        for line in lines {
                            piece.extend_from_slice(&line);
                            piece.push(b'\n');
                        }
                        Some((Ok(Bytes::from(piece)), Some(next)))
                    }
                    Err(e) => Some((Err(read_error(e)), None)),
                }
            }
        })
        .boxed())
    }

    /// The complete lines of a step's log from `at`, about `budget` bytes of them (a
    /// longer line whole), and where the next read starts. A last line without its newline
    /// yet (a file written as a crash came) is left for [`read_rest`](LogStore::read_rest).
    pub async fn read_lines(
        &self,
        run: i64,
        step: i64,
        at: LogCursor,
        budget: usize,
    ) -> io::Result<(Vec<Vec<u8>>, LogCursor)> {
        if let Some(store) = &self.db {
            let lines = store
                .log_lines(run, step, at.line as i64, budget as i64)
                .await
                .map_err(read_error)?;
            let next = LogCursor {
                line: at.line + lines.len() as u64,
                offset: None,
            };
            return Ok((lines, next));
        }
        let path = self.path(run, step);
        let Some(offset) = resolve(&path, at)? else {
            return Ok((Vec::new(), at));
        };
        let (lines, next) = read_lines(&path, offset, budget)?;
        let next = LogCursor {
            line: at.line + lines.len() as u64,
            offset: Some(next),
        };
        Ok((lines, next))
    }

    /// What a step's log holds past `at` once the step is over and the complete lines are
    /// read: a last line without its newline (only a file has one).
    pub async fn read_rest(&self, run: i64, step: i64, at: LogCursor) -> io::Result<Vec<u8>> {
        if self.db.is_some() {
            return Ok(Vec::new());
        }
        let path = self.path(run, step);
        match resolve(&path, at)? {
            Some(offset) => read_rest(&path, offset),
            None => Ok(Vec::new()),
        }
    }

    /// How many complete lines of a step's log are stored (0: none, or no log).
    pub async fn line_count(&self, run: i64, step: i64) -> io::Result<u64> {
        if let Some(store) = &self.db {
            let count = store.log_line_count(run, step).await.map_err(read_error)?;
            return Ok(count.unwrap_or(0) as u64);
        }
        use std::io::Read;
        let mut file = match File::open(self.path(run, step)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let (mut count, mut buf) = (0, vec![0; 64 << 10]);
        loop {
            let got = file.read(&mut buf)?;
            if got == 0 {
                return Ok(count);
            }
            count += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
        }
    }

    /// The runs that have a log directory on this host, in no order (none with the logs in
    /// the database: there, removing a run's logs is one statement that any host makes).
    pub fn runs(&self) -> Vec<i64> {
        if self.db.is_some() {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
            .collect()
    }

    /// Removes a run's logs.
    pub async fn remove_run(&self, run: i64) -> io::Result<()> {
        if let Some(store) = &self.db {
            store.log_delete_run(run).await.map_err(|e| {
                io::Error::other(format!(
                    "cannot delete the logs of run {run} from the database: {}",
                    crate::error_chain(&e)
                ))
            })?;
            // What this host kept beside them: the output starts of its steps.
        }
        match fs::remove_dir_all(self.dir.join(run.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The offset of the cursor's line in the file at `path`, found by counting lines when the
/// cursor does not know it (`None`: the file has fewer complete lines).
fn resolve(path: &Path, at: LogCursor) -> io::Result<Option<u64>> {
    if let Some(offset) = at.offset {
        return Ok(Some(offset));
    }
    use std::io::Read;
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (mut seen, mut offset, mut buf) = (0u64, 0u64, vec![0; 64 << 10]);
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            return Ok(None);
        }
        for (i, b) in buf[..got].iter().enumerate() {
            if *b == b'\n' {
                seen += 1;
                if seen == at.line {
                    return Ok(Some(offset + i as u64 + 1));
                }
            }
        }
        offset += got as u64;
    }
}

fn read_error(e: StoreError) -> io::Error {
    io::Error::other(format!(
        "cannot read the log from the database: {}",
        crate::error_chain(&e)
    ))
}

/// Appends lines to a step's log. In a file each line goes straight to the file (no
/// buffer), so a reader following the log sees it at once and a crash loses nothing
/// already printed; in the database lines go in batches (see the module's notes).
#[derive(Debug)]
pub struct LogWriter {
    sink: Sink,
    bytes: u64,
    /// Lines written, those an appender found included.
    lines: u64,
    /// Where [`LogWriter::mark_output_start`] writes.
    start_file: PathBuf,
    limit: u64,
    /// The limit was reached: the note is written, lines are dropped.
    full: bool,
}

#[derive(Debug)]
enum Sink {
    File {
        file: File,
        path: PathBuf,
        /// Tells followers that a line was written.
        notify: Option<Notify>,
    },
    Db(DbWriter),
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
        match &mut self.sink {
            Sink::File { file, path, notify } => {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line);
                buf.push(b'\n');
                file.write_all(&buf).map_err(|e| write_error(path, e))?;
                if let Some(notify) = notify {
                    notify.lines.send_modify(|n| *n += 1);
                }
            }
            Sink::Db(db) => db.push(line)?,
        }
        self.bytes += line.len() as u64 + 1;
        self.lines += 1;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records that the step's container starts here: the lines so far were Pipewright's
    /// (a pull's progress), the rest will be the container's own output, which a restart
    /// re-reads from the engine's log ([`LogStore::output_start`]). Written whole or not at
    /// all (a new file renamed into place), so a kill at any point leaves no torn mark.
    pub fn mark_output_start(&self) -> io::Result<()> {
        let path = &self.start_file;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| write_error(path, e))?;
        }
        let new = path.with_extension("start.new");
        fs::write(&new, self.lines.to_string()).map_err(|e| write_error(&new, e))?;
        fs::rename(&new, path).map_err(|e| write_error(path, e))
    }

    /// Ends the log: what waits is written (in the database), and an error that came after
    /// the last [`line`](LogWriter::line) is returned. Call before the step's end is
    /// recorded, so that a finished step's log is complete.
    pub async fn finish(self) -> io::Result<()> {
        match self.sink {
            Sink::File { .. } => Ok(()),
            Sink::Db(db) => db.finish().await,
        }
    }
}

/// The writing end of a log in the database: lines wait in `shared` and a task writes them
/// in batches.
#[derive(Debug)]
struct DbWriter {
    shared: Arc<DbShared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct DbShared {
    pending: Mutex<DbPending>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct DbPending {
    lines: Vec<Vec<u8>>,
    bytes: usize,
    /// The writer is done: the task writes what waits and ends.
    closed: bool,
    /// Why a batch could not be written; every later line is refused with it.
    failed: Option<(io::ErrorKind, String)>,
}

impl DbShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, DbPending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DbWriter {
    /// Writes from line `first` on, or (`None`) clears the step's log and writes from 0.
    fn start(store: Store, run: i64, step: i64, first: Option<i64>, notify: Notify) -> DbWriter {
        let shared = Arc::new(DbShared::default());
        let task = tokio::spawn(flush_loop(store, run, step, first, shared.clone(), notify));
        DbWriter {
            shared,
            task: Some(task),
        }
    }

    fn push(&mut self, line: &[u8]) -> io::Result<()> {
        let mut pending = self.shared.lock();
        if let Some((kind, why)) = &pending.failed {
            return Err(io::Error::new(*kind, why.clone()));
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.push(line.to_vec());
        pending.bytes += line.len() + 1;
        let big = pending.lines.len() == FLUSH_LINES || pending.bytes >= FLUSH_BYTES;
        drop(pending);
        if was_empty || big {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    async fn finish(mut self) -> io::Result<()> {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| io::Error::other(format!("the log's writer failed: {e}")))?;
        }
        match &self.shared.lock().failed {
            Some((kind, why)) => Err(io::Error::new(*kind, why.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for DbWriter {
    fn drop(&mut self) {
        // Not finished (the step's task ended otherwise): the task writes what waits and
        // ends on its own.
        if self.task.is_some() {
            self.shared.lock().closed = true;
            self.shared.wake.notify_one();
        }
    }
}

/// Writes a step's waiting lines in batches until the writer is done or a write fails.
/// Followers on this host are woken after each batch (`notify`, dropped at the end, wakes
/// them once more).
async fn flush_loop(
    store: Store,
    run: i64,
    step: i64,
    first: Option<i64>,
    shared: Arc<DbShared>,
    notify: Notify,
) {
    let fail = |e: StoreError| {
        shared.lock().failed = Some(db_write_error(run, step, &e));
    };
    let mut next = match first {
        Some(first) => first,
        None => {
            if let Err(e) = store.log_clear(run, step).await {
                return fail(e);
            }
            0
        }
    };
    loop {
        shared.wake.notified().await;
        // Let a batch gather, unless it is big already or the writer is done.
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        loop {
            {
                let pending = shared.lock();
                if pending.closed
                    || pending.lines.len() >= FLUSH_LINES
                    || pending.bytes >= FLUSH_BYTES
                {
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shared.wake.notified() => {}
            }
        }
        let (batch, closed) = {
            let mut pending = shared.lock();
            pending.bytes = 0;
            (std::mem::take(&mut pending.lines), pending.closed)
        };
        if !batch.is_empty() {
            if let Err(e) = store.log_append(run, step, next, &batch).await {
                return fail(e);
            }
            next += batch.len() as i64;
            notify.lines.send_modify(|n| *n += batch.len() as u64);
        }
        if closed {
            return;
        }
    }
}

/// A batch the database refused, said plainly: "the database's disk is full: …" when it
/// is (SQLSTATE 53100), since that is what an operator must fix.
fn db_write_error(run: i64, step: i64, e: &StoreError) -> (io::ErrorKind, String) {
    let full = matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.code().as_deref() == Some("53100"));
    let why = crate::error_chain(e);
    match full {
        true => (
            io::ErrorKind::StorageFull,
            format!(
                "the log disk is full: the database's disk is full, cannot write the log of run {run} step {step} ({why}); free space there (see [retention])"
            ),
        ),
        false => (
            io::ErrorKind::Other,
            format!("cannot write the log of run {run} step {step} to the database: {why}"),
        ),
    }
}

/// The start of the note written when a log reaches its limit.
const LIMIT_NOTE: &str = "pipewright: the log reached its limit of";

/// Where [`LogWriter::mark_output_start`] keeps its count: beside the log's file.
fn start_path(log: &Path) -> PathBuf {
    log.with_extension("start")
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Whether the complete lines `held` end with the limit's note.
fn ends_full(held: &[u8]) -> bool {
    let body = held.strip_suffix(b"\n").unwrap_or(held);
    let last = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    body[last..].starts_with(LIMIT_NOTE.as_bytes())
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

    #[tokio::test]
    async fn output_past_the_limit_is_dropped_after_one_note() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf()).with_limit(10);
        let mut writer = store.writer(1, 0).unwrap();
        for line in ["1234", "5678", "9", "more", "and more"] {
            writer.line(line.as_bytes()).unwrap();
        }
        let text = String::from_utf8(store.read(1, 0).await.unwrap().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["1234", "5678"]);
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[2].contains("max_log_bytes"), "{text}");
    }

    #[tokio::test]
    async fn an_appender_goes_on_after_the_last_whole_line_and_lines_are_counted() {
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
        assert_eq!(store.line_count(1, 0).await.unwrap(), 2);
        assert_eq!(store.output_start(1, 0).unwrap(), Some(1));
        let mut appender = store.appender(1, 0).await.unwrap();
        appender.line(b"line-2").unwrap();
        assert_eq!(
            store.read(1, 0).await.unwrap().unwrap(),
            b"pulling\nline-1\nline-2\n"
        );
        assert_eq!(store.line_count(1, 0).await.unwrap(), 3);
        assert_eq!(store.line_count(1, 9).await.unwrap(), 0);
        assert_eq!(store.output_start(1, 9).unwrap(), None);
    }

    #[tokio::test]
    async fn an_appender_of_a_full_log_stays_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf()).with_limit(10);
        let mut writer = store.writer(1, 0).unwrap();
        for line in ["1234", "5678", "9"] {
            writer.line(line.as_bytes()).unwrap();
        }
        drop(writer);
        let before = store.read(1, 0).await.unwrap().unwrap();
        let mut appender = store.appender(1, 0).await.unwrap();
        appender.line(b"more").unwrap();
        assert_eq!(store.read(1, 0).await.unwrap().unwrap(), before);
    }

    /// `/dev/full` answers every write with `ENOSPC`, as a full disk does.
    #[test]
    fn a_full_disk_is_an_error_that_says_so_and_names_the_file() {
        let path = PathBuf::from("/dev/full");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let mut writer = LogWriter {
            sink: Sink::File {
                file,
                path,
                notify: None,
            },
            bytes: 0,
            lines: 0,
            limit: u64::MAX,
            full: false,
            start_file: PathBuf::from("/dev/null"),
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
    async fn a_cursor_at_a_line_reads_from_it_and_lines_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf());
        assert_eq!(store.line_count(1, 0).await.unwrap(), 0);
        let mut writer = store.writer(1, 0).unwrap();
        for line in ["zero", "one", "two"] {
            writer.line(line.as_bytes()).unwrap();
        }
        writer.finish().await.unwrap();
        assert_eq!(store.line_count(1, 0).await.unwrap(), 3);
        let (lines, next) = store
            .read_lines(1, 0, LogCursor::at_line(1), 1 << 10)
            .await
            .unwrap();
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(next.line(), 3);
        // Past the end: nothing, and the cursor stays.
        let at = LogCursor::at_line(5);
        assert_eq!(
            store.read_lines(1, 0, at, 1 << 10).await.unwrap(),
            (Vec::new(), at)
        );
        assert_eq!(store.read_rest(1, 0, next).await.unwrap(), b"");
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
