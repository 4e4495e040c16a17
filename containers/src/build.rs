//! The build context of an image build: a host directory streamed to the engine as a tar.
//!
//! What goes into the archive:
//! - Every directory, regular file and symbolic link under the context, except what the
//!   `.dockerignore` at the context root excludes. The Dockerfile and `.dockerignore` are
//!   always sent (the engine reads both), as the Docker CLI does.
//! - Symbolic links are sent as links, never followed. A link whose target is absolute, or
//!   leaves the context (lexically or once resolved on the host), refuses the build.
//! - Sockets, FIFOs and device nodes are left out.
//! - Owner and group are 0; permission bits and modification times are kept.
//!
//! `.dockerignore` support (the Docker CLI's rules for the common cases): one pattern per
//! line; lines starting with `#` are comments; surrounding blanks are trimmed and blank
//! lines skipped; a leading `/` or `./` is ignored (patterns are always relative to the
//! context root); `*` and `?` match within one path component, `**` across components,
//! `[…]` is a character class, `\` escapes; a pattern excludes what it matches and, when it
//! matches a directory, everything below it; `!pattern` re-includes, and the last matching
//! line wins. Not supported: Docker's exact treatment of `{`, `}` (here they form
//! alternatives, `{a,b}`), and patterns that are not valid globs refuse the build.
//!
//! Memory stays bounded whatever the context's size: the archive is written by a blocking
//! task into a channel of a few 64 KiB chunks that the request body reads from, and a file
//! is read in pieces as it is sent. Only names are held: the listing of the directory being
//! sent and the subdirectories still to visit.

use std::{
    ffi::OsString,
    fs::{self, File, Metadata},
    io::{self, Read, Write},
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use bytes::Bytes;
use futures_util::Stream;
use globset::{GlobBuilder, GlobMatcher};
use tar::{EntryType, Header};
use tokio::{sync::mpsc, task::JoinHandle};

/// Size of the chunks handed to the request body.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting in the channel at most: with the one being filled, the archive holds at
/// most `(CHANNEL + 1) * CHUNK` bytes in memory.
const CHANNEL: usize = 4;

/// A checked build context, ready to be streamed.
#[derive(Debug)]
pub(crate) struct Context {
    /// The context directory, canonical.
    root: PathBuf,
    /// The Dockerfile, relative to `root`, normalised, with `/` separators.
    dockerfile: String,
    ignore: DockerIgnore,
}

impl Context {
    /// Checks the context directory (inside `within` once resolved, when given) and the
    /// Dockerfile path, and reads `.dockerignore`. Blocking. `Err` is a reason to refuse the
    /// build, fit for the user.
    pub(crate) fn prepare(
        context: &Path,
        dockerfile: &str,
        within: Option<&Path>,
    ) -> Result<Context, String> {
        let root = fs::canonicalize(context).map_err(|err| {
            format!(
                "the build context {} cannot be opened: {err}",
                context.display()
            )
        })?;
        if let Some(within) = within {
            let allowed = fs::canonicalize(within).map_err(|err| {
                format!(
                    "the directory {} that holds the build context cannot be opened: {err}",
                    within.display()
                )
            })?;
            if !root.starts_with(&allowed) {
                return Err(format!(
                    "the build context {} is outside the workspace once its symbolic links are resolved",
                    context.display()
                ));
            }
        }
        if !root.is_dir() {
            return Err(format!(
                "the build context {} is not a directory",
                context.display()
            ));
        }
        let dockerfile = check_dockerfile(&root, dockerfile)?;
        let ignore = match fs::read_to_string(root.join(".dockerignore")) {
            Ok(text) => DockerIgnore::parse(&text)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => DockerIgnore::default(),
            Err(err) => return Err(format!("failed to read .dockerignore: {err}")),
        };
        Ok(Context {
            root,
            dockerfile,
            ignore,
        })
    }

    /// The Dockerfile's path inside the archive, as the engine's `dockerfile` parameter.
    pub(crate) fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// Starts writing the archive on a blocking task. The stream is the request body; the
    /// task's result says whether the archive is whole. When the stream is dropped, the
    /// task ends with [`ContextError::Closed`] at its next write.
    pub(crate) fn stream(
        self,
    ) -> (
        impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
        JoinHandle<Result<(), ContextError>>,
    ) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = ChannelWriter {
                tx,
                buffer: Vec::with_capacity(CHUNK),
                closed: false,
                poisoned: false,
            };
            write_archive(&self, &mut writer)
        });
        let mut rx = rx;
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (body, task)
    }
}

/// Why the archive was not completed.
#[derive(Debug)]
pub(crate) enum ContextError {
    /// The context breaks a rule (an escaping link, a file swapped while read).
    Refused(String),
    /// Reading the context failed.
    Read { path: PathBuf, source: io::Error },
    /// The reader of the archive went away (the build ended or was cancelled).
    Closed,
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContextError::Refused(reason) => f.write_str(reason),
            ContextError::Read { path, source } => {
                write!(
                    f,
                    "failed to read {} from the build context: {source}",
                    path.display()
                )
            }
            ContextError::Closed => f.write_str("the engine stopped reading the build context"),
        }
    }
}

/// The Dockerfile path, normalised, when it names a regular file inside the context reached
/// through no symbolic link.
fn check_dockerfile(root: &Path, dockerfile: &str) -> Result<String, String> {
    let outside = || format!("the dockerfile {dockerfile:?} is outside the build context");
    let path = Path::new(dockerfile);
    if dockerfile.is_empty() {
        return Err("no dockerfile given".to_owned());
    }
    if path.is_absolute() {
        return Err(outside());
    }
    let parts = normalise(&[], path).ok_or_else(outside)?;
    if parts.is_empty() {
        return Err(format!("the dockerfile {dockerfile:?} is not a file"));
    }
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = fs::symlink_metadata(&at).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                format!("the dockerfile {dockerfile:?} does not exist in the build context")
            } else {
                format!("the dockerfile {dockerfile:?} cannot be read: {err}")
            }
        })?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "the dockerfile {dockerfile:?} is reached through a symbolic link, which is not allowed"
            ));
        }
        let last = i + 1 == parts.len();
        if last && !meta.is_file() {
            return Err(format!(
                "the dockerfile {dockerfile:?} is not a regular file"
            ));
        }
    }
    let names: Vec<String> = parts
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    Ok(names.join("/"))
}

/// `base` joined with `path`, with `.` and `..` resolved lexically; `None` when a `..`
/// climbs above the root or `path` is absolute.
fn normalise(base: &[OsString], path: &Path) -> Option<Vec<OsString>> {
    let mut parts = base.to_vec();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts)
}

/// Writes the whole archive, or poisons the body. Blocking.
fn write_archive(context: &Context, writer: &mut ChannelWriter) -> Result<(), ContextError> {
    let mut tar = tar::Builder::new(&mut *writer);
    if let Err(err) = write_entries(context, &mut tar) {
        // Before the builder's drop appends the end-of-archive blocks: the engine must
        // never see a complete archive of what was written so far.
        tar.get_mut().poison(&err);
        return Err(err);
    }
    tar.finish()
        .map_err(|source| write_error(tar.get_ref(), &context.root, source))?;
    drop(tar);
    writer
        .flush_chunk()
        .map_err(|source| write_error(writer, &context.root, source))
}

/// Appends every entry of the context.
fn write_entries(
    context: &Context,
    tar: &mut tar::Builder<&mut ChannelWriter>,
) -> Result<(), ContextError> {
    let mut dockerfile_sent = false;
    // Directories still to list, as paths relative to the root (empty: the root).
    let mut pending: Vec<Vec<OsString>> = vec![Vec::new()];
    while let Some(dir) = pending.pop() {
        let dir_path = join(&context.root, &dir);
        let mut names: Vec<OsString> = fs::read_dir(&dir_path)
            .and_then(|entries| {
                entries
                    .map(|entry| entry.map(|e| e.file_name()))
                    .collect::<io::Result<_>>()
            })
            .map_err(|source| read_error(&dir_path, source))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let mut rel = dir.clone();
            rel.push(name);
            // Lossy only for matching and messages; the archive has the name as it is.
            let rel_str = slash_path(&rel);
            let rel_path: PathBuf = rel.iter().collect();
            let path = join(&context.root, &rel);
            let meta = fs::symlink_metadata(&path).map_err(|source| read_error(&path, source))?;
            let always = rel_str == context.dockerfile || rel_str == ".dockerignore";
            let excluded = !always && context.ignore.is_excluded(&rel_str);
            let kind = meta.file_type();
            let result = if kind.is_dir() {
                let holds_dockerfile = context
                    .dockerfile
                    .strip_prefix(rel_str.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
                if excluded && !context.ignore.has_exceptions && !holds_dockerfile {
                    continue;
                }
                subdirs.push(rel);
                if excluded {
                    continue;
                }
                let mut header = header(&meta, EntryType::Directory);
                tar.append_data(&mut header, &rel_path, io::empty())
            } else if excluded {
                continue;
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|source| read_error(&path, source))?;
                check_link(&context.root, &dir, &rel_str, &target)?;
                let mut header = header(&meta, EntryType::Symlink);
                tar.append_link(&mut header, &rel_path, &target)
            } else if kind.is_file() {
                let file = File::open(&path).map_err(|source| read_error(&path, source))?;
                let opened = file
                    .metadata()
                    .map_err(|source| read_error(&path, source))?;
                if opened.dev() != meta.dev() || opened.ino() != meta.ino() || !opened.is_file() {
                    return Err(ContextError::Refused(format!(
                        "{rel_str} in the build context changed while it was being sent"
                    )));
                }
                dockerfile_sent |= rel_str == context.dockerfile;
                let mut header = header(&opened, EntryType::Regular);
                let data = Exact {
                    inner: file.take(opened.len()),
                    left: opened.len(),
                };
                tar.append_data(&mut header, &rel_path, data)
            } else {
                tracing::debug!(
                    path = rel_str,
                    "left a special file out of the build context"
                );
                continue;
            };
            result.map_err(|source| write_error(tar.get_ref(), &path, source))?;
        }
        // Reversed so that the directories are listed in name order.
        pending.extend(subdirs.into_iter().rev());
    }
    if !dockerfile_sent {
        return Err(ContextError::Refused(format!(
            "the dockerfile {:?} disappeared from the build context",
            context.dockerfile
        )));
    }
    Ok(())
}

/// Refuses a link whose target is absolute or leads out of the context, lexically from
/// the link's directory or once the host resolves it (through other links).
fn check_link(root: &Path, dir: &[OsString], rel: &str, target: &Path) -> Result<(), ContextError> {
    let escapes = || {
        ContextError::Refused(format!(
            "the symbolic link {rel} in the build context points outside it (to {})",
            target.display()
        ))
    };
    if target.is_absolute() || normalise(dir, target).is_none() {
        return Err(escapes());
    }
    // A dangling link leads nowhere on the host: its lexical check is all there is.
    if let Ok(resolved) = fs::canonicalize(join(root, dir).join(target))
        && !resolved.starts_with(root)
    {
        return Err(escapes());
    }
    Ok(())
}

fn header(meta: &Metadata, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(if kind == EntryType::Regular {
        meta.len()
    } else {
        0
    });
    header
}

fn join(root: &Path, rel: &[OsString]) -> PathBuf {
    let mut path = root.to_path_buf();
    path.extend(rel);
    path
}

/// A relative path with `/` separators, as matched by `.dockerignore` and named in the tar.
fn slash_path(rel: &[OsString]) -> String {
    let names: Vec<_> = rel.iter().map(|name| name.to_string_lossy()).collect();
    names.join("/")
}

fn read_error(path: &Path, source: io::Error) -> ContextError {
    ContextError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// A failed append: either the reader went away, or reading the file failed.
fn write_error(writer: &ChannelWriter, path: &Path, source: io::Error) -> ContextError {
    if writer.closed {
        ContextError::Closed
    } else {
        read_error(path, source)
    }
}

/// Reads exactly the size the tar header announced; a file that shrank while being sent
/// is an error rather than a corrupt archive (one that grew is cut at that size).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hands the archive to the request body in chunks of [`CHUNK`] bytes, waiting while the
/// channel is full.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buffer: Vec<u8>,
    /// The receiver is gone.
    closed: bool,
    /// An error was sent; nothing more may follow it.
    poisoned: bool,
}

impl ChannelWriter {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.send(Ok(Bytes::from(chunk)))
    }

    fn send(&mut self, item: Result<Bytes, io::Error>) -> io::Result<()> {
        if self.tx.blocking_send(item).is_err() {
            self.closed = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the build context is no longer read",
            ));
        }
        Ok(())
    }

    /// Ends the body with an error, so that the engine never sees a complete archive.
    fn poison(&mut self, err: &ContextError) {
        if self.poisoned || self.closed {
            return;
        }
        self.poisoned = true;
        self.buffer.clear();
        let _ = self.send(Err(io::Error::other(err.to_string())));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.poisoned || self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the build context was abandoned",
            ));
        }
        let n = data.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The patterns of a `.dockerignore` (see the module documentation for what is supported).
#[derive(Debug, Default)]
pub(crate) struct DockerIgnore {
    patterns: Vec<Pattern>,
    /// Some pattern starts with `!`: an excluded directory may hold included files.
    has_exceptions: bool,
}

#[derive(Debug)]
struct Pattern {
    glob: GlobMatcher,
    exception: bool,
}

impl DockerIgnore {
    pub(crate) fn parse(text: &str) -> Result<DockerIgnore, String> {
        let mut ignore = DockerIgnore::default();
        for (number, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            if pattern.is_empty() {
                continue;
            }
            let Some(parts) = normalise(&[], Path::new(pattern.trim_start_matches('/'))) else {
                // `..` above the root can match nothing in the context.
                continue;
            };
            let cleaned = slash_path(&parts);
            if cleaned.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|err| format!(".dockerignore line {}: {pattern:?}: {err}", number + 1))?;
            ignore.has_exceptions |= exception;
            ignore.patterns.push(Pattern {
                glob: glob.compile_matcher(),
                exception,
            });
        }
        Ok(ignore)
    }

    /// Whether `rel` (relative to the context root, `/`-separated) is left out: the last
    /// pattern matching it or one of its parent directories decides.
    pub(crate) fn is_excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that would change the verdict needs evaluating.
            if pattern.exception != excluded {
                continue;
            }
            let matches = pattern.glob.is_match(rel)
                || rel
                    .match_indices('/')
                    .any(|(at, _)| pattern.glob.is_match(&rel[..at]));
            if matches {
                excluded = !pattern.exception;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use futures_util::StreamExt;

    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// The archive's entries as `(path, type, content)`, or the error that ended it.
    async fn archive(root: &Path, dockerfile: &str) -> Result<Vec<(String, char, String)>, String> {
        let context = Context::prepare(root, dockerfile, None)?;
        let (body, task) = context.stream();
        let chunks: Vec<Result<Bytes, io::Error>> = body.collect().await;
        let result = task.await.unwrap();
        let mut bytes = Vec::new();
        for chunk in chunks {
            match chunk {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(err) => {
                    assert!(result.is_err(), "the body failed but the task did not");
                    return Err(err.to_string());
                }
            }
        }
        result.map_err(|err| err.to_string())?;
        let mut entries = Vec::new();
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = match entry.header().entry_type() {
                EntryType::Directory => 'd',
                EntryType::Symlink => 'l',
                EntryType::Regular => 'f',
                other => panic!("unexpected entry type {other:?}"),
            };
            let mut content = String::new();
            if kind == 'l' {
                content = entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
            } else {
                entry.read_to_string(&mut content).unwrap();
            }
            entries.push((path, kind, content));
        }
        Ok(entries)
    }

    fn names(entries: &[(String, char, String)]) -> Vec<&str> {
        entries.iter().map(|(path, _, _)| path.as_str()).collect()
    }

    #[tokio::test]
    async fn archive_holds_files_dirs_and_links_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        write(root, "b/two.txt", "2");
        write(root, "a.txt", "1");
        symlink("b/two.txt", root.join("link")).unwrap();
        symlink("../a.txt", root.join("b/up")).unwrap();
        fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o751)).unwrap();

        let entries = archive(root, "Dockerfile").await.unwrap();
        assert_eq!(
            entries,
            [
                ("Dockerfile".into(), 'f', "FROM scratch\n".into()),
                ("a.txt".into(), 'f', "1".into()),
                ("b".into(), 'd', String::new()),
                ("link".into(), 'l', "b/two.txt".into()),
                ("b/two.txt".into(), 'f', "2".into()),
                ("b/up".into(), 'l', "../a.txt".into()),
            ]
        );
        let context = Context::prepare(root, "Dockerfile", None).unwrap();
        let (body, task) = context.stream();
        let bytes: Vec<u8> = body.map(|chunk| chunk.unwrap().to_vec()).concat().await;
        task.await.unwrap().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let modes: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                )
            })
            .collect();
        assert!(modes.contains(&("a.txt".into(), 0o751, 0)), "{modes:?}");
    }

    #[tokio::test]
    async fn dockerignore_excludes_and_reincludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        write(
            root,
            ".dockerignore",
            "# comment\n\n  secret.txt  \n/logs\n!logs/keep.log\n**/*.tmp\ncache/\n./docs/*.md\n",
        );
        for rel in [
            "secret.txt",
            "sub/secret.txt",
            "logs/a.log",
            "logs/keep.log",
            "x.tmp",
            "deep/er/y.tmp",
            "cache/blob",
            "docs/a.md",
            "docs/keep.txt",
            "app.txt",
        ] {
            write(root, rel, rel);
        }
        let entries = archive(root, "Dockerfile").await.unwrap();
        assert_eq!(
            names(&entries),
            [
                ".dockerignore",
                "Dockerfile",
                "app.txt",
                "deep",
                "docs",
                "sub",
                "deep/er",
                "docs/keep.txt",
                "logs/keep.log",
                "sub/secret.txt",
            ]
        );
    }

    #[tokio::test]
    async fn ignored_dockerfile_and_dockerignore_are_sent_anyway() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "build/Dockerfile", "FROM scratch\n");
        write(root, "build/other", "x");
        write(root, ".dockerignore", "build\n.dockerignore\n");
        let entries = archive(root, "./build//Dockerfile").await.unwrap();
        assert_eq!(names(&entries), [".dockerignore", "build/Dockerfile"]);
        let context = Context::prepare(root, "./build//Dockerfile", None).unwrap();
        assert_eq!(context.dockerfile(), "build/Dockerfile");
    }

    #[tokio::test]
    async fn escaping_links_are_refused() {
        for target in ["/etc/passwd", "../outside", "a/../../x"] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            write(root, "Dockerfile", "FROM scratch\n");
            symlink(target, root.join("link")).unwrap();
            let err = archive(root, "Dockerfile").await.unwrap_err();
            assert!(
                err.contains("symbolic link link") && err.contains("outside"),
                "{err}"
            );
        }
        // Lexically inside, but through another link that leads to the root's parent.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        symlink(".", root.join("here")).unwrap();
        symlink("here/..", root.join("up")).unwrap();
        let err = archive(root, "Dockerfile").await.unwrap_err();
        assert!(err.contains("symbolic link up"), "{err}");
        // An ignored link is not sent, so it is not checked either.
        write(root, ".dockerignore", "up\n");
        archive(root, "Dockerfile").await.unwrap();
    }

    #[test]
    fn dockerfile_must_be_a_plain_file_inside_the_context() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("ctx");
        write(&root, "Dockerfile", "FROM scratch\n");
        write(outer.path(), "Dockerfile.outside", "FROM scratch\n");
        symlink("../Dockerfile.outside", root.join("Linked")).unwrap();
        fs::create_dir(root.join("dir")).unwrap();
        for (dockerfile, expected) in [
            ("../Dockerfile.outside", "outside the build context"),
            ("sub/../../Dockerfile.outside", "outside the build context"),
            ("/etc/passwd", "outside the build context"),
            ("Linked", "symbolic link"),
            ("Missing", "does not exist"),
            ("dir", "not a regular file"),
            (".", "not a file"),
            ("", "no dockerfile"),
        ] {
            let err = Context::prepare(&root, dockerfile, None).unwrap_err();
            assert!(err.contains(expected), "{dockerfile}: {err}");
        }
        assert!(Context::prepare(&root, "sub/../Dockerfile", None).is_ok());
        let err = Context::prepare(&root.join("nope"), "Dockerfile", None).unwrap_err();
        assert!(err.contains("cannot be opened"), "{err}");
    }

    #[test]
    fn a_context_leading_out_of_its_workspace_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let workspace = outer.path().join("ws");
        write(&workspace, "app/Dockerfile", "FROM scratch\n");
        write(outer.path(), "secret/Dockerfile", "FROM scratch\n");
        symlink("../secret", workspace.join("out")).unwrap();
        symlink("/", workspace.join("root")).unwrap();
        symlink("app", workspace.join("inside")).unwrap();
        for context in ["out", "root", "app/../out"] {
            let err = Context::prepare(&workspace.join(context), "Dockerfile", Some(&workspace))
                .unwrap_err();
            assert!(err.contains("outside the workspace"), "{context}: {err}");
        }
        // A link that stays in the workspace is followed.
        let context =
            Context::prepare(&workspace.join("inside"), "Dockerfile", Some(&workspace)).unwrap();
        assert_eq!(
            context.root,
            fs::canonicalize(workspace.join("app")).unwrap()
        );
        // Without `within`, the context is taken wherever it leads.
        assert!(Context::prepare(&workspace.join("out"), "Dockerfile", None).is_ok());
    }

    #[test]
    fn bad_dockerignore_patterns_refuse_the_build() {
        let err = DockerIgnore::parse("ok\n[unclosed\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn dockerignore_matching() {
        let ignore = DockerIgnore::parse("*.md\n!README.md\nbuild/**/out\ntarget\n").unwrap();
        for (path, excluded) in [
            ("a.md", true),
            ("README.md", false),
            ("docs/a.md", false),
            ("build/out", true),
            ("build/x/y/out", true),
            ("build/x/y/out/file", true),
            ("target", true),
            ("target/debug/app", true),
            ("targets", false),
            ("src/target", false),
        ] {
            assert_eq!(ignore.is_excluded(path), excluded, "{path}");
        }
    }

    #[tokio::test]
    async fn big_files_stream_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        let big = vec![7u8; 3 * CHUNK + 123];
        fs::write(root.join("big"), &big).unwrap();
        let context = Context::prepare(root, "Dockerfile", None).unwrap();
        let (mut body, task) = context.stream();
        let mut total = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            total += chunk.len();
        }
        task.await.unwrap().unwrap();
        assert!(total > big.len() && total % 512 == 0, "{total}");
    }

    #[tokio::test]
    async fn dropping_the_body_ends_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        fs::write(root.join("big"), vec![0u8; 20 * CHUNK]).unwrap();
        let context = Context::prepare(root, "Dockerfile", None).unwrap();
        let (mut body, task) = context.stream();
        body.next().await.unwrap().unwrap();
        drop(body);
        assert!(matches!(task.await.unwrap(), Err(ContextError::Closed)));
    }
}
