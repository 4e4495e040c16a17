//! Secrets as files on a host tmpfs (`[server].secrets_dir`): a private directory per run
//! with the `vault.files` (mode 0400), and, when `[docker].secrets_in_env = false`, the
//! environment file that step shells read; bind-mounted read-only into every step container
//! and removed when the run ends, whatever its outcome (the directory is a drop guard).

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use pipewright_containers::Mount;
use pipewright_pipelines::SECRETS_IN_CONTAINER;

/// Where a step container sees the run's environment file (when secrets are not given as
/// the container's environment).
pub const ENV_FILE_IN_CONTAINER: &str = "/run/pipewright/secrets.env";

/// `statfs` magic numbers of file systems that live in memory only.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Creates `dir` (private, 0700) if needed and checks that it is on a tmpfs or ramfs, so
/// that no secret written there reaches a disk. `Err` names the directory.
pub fn prepare(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("secrets_dir {}: cannot be created: {e}", dir.display()))?;
    let stat = rustix::fs::statfs(dir)
        .map_err(|e| format!("secrets_dir {}: cannot be examined: {e}", dir.display()))?;
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between targets"
    )]
    let kind = stat.f_type as i64;
    if kind != TMPFS_MAGIC && kind != RAMFS_MAGIC {
        return Err(format!(
            "secrets_dir {} is not on a tmpfs or ramfs (file system type {kind:#x}): secrets written there would reach a disk; choose a directory on one, e.g. under /dev/shm ([server].secrets_dir; `exec --secrets-dir`)",
            dir.display()
        ));
    }
    Ok(())
}

/// Removes what runs of `owner` left in `dir` (a crash: a run's directory is otherwise
/// removed when it ends). Returns how many run directories there were.
pub fn remove_leftovers(dir: &Path, owner: &str) -> io::Result<usize> {
    let mine = dir.join(owner);
    let count = match fs::read_dir(&mine) {
        Ok(entries) => entries.count(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    fs::remove_dir_all(&mine)?;
    Ok(count)
}

/// Removes what runs of `owner` left in `dir`, except the directories named in `keep`
/// (`run-<id>`: runs a restart re-attaches to, whose containers mount them). Returns how
/// many run directories were removed.
pub fn remove_leftovers_except(dir: &Path, owner: &str, keep: &[String]) -> io::Result<usize> {
    if keep.is_empty() {
        return remove_leftovers(dir, owner);
    }
    let mine = dir.join(owner);
    let entries = match fs::read_dir(&mine) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if keep.iter().any(|k| entry.file_name() == k.as_str()) {
            continue;
        }
        fs::remove_dir_all(entry.path())?;
        removed += 1;
    }
    Ok(removed)
}

/// A run's directory under `secrets_dir`: `<owner>/<run>/files/…` (mounted at
/// `/run/secrets`) and `<owner>/<run>/env` (mounted at [`ENV_FILE_IN_CONTAINER`]).
/// Removed on drop.
#[derive(Debug)]
pub struct RunSecretsDir {
    root: PathBuf,
    files: Option<PathBuf>,
    env_file: Option<PathBuf>,
}

impl RunSecretsDir {
    /// Writes the run's files (`(relative path, value)`, paths checked by the pipeline's
    /// parser) and, when given, its environment file. Nothing is created when there is
    /// nothing to write. `Err` names what failed, never a value.
    pub fn create(
        secrets_dir: &Path,
        owner: &str,
        run: &str,
        files: &[(String, String)],
        env: Option<&[(String, String)]>,
    ) -> Result<Option<RunSecretsDir>, String> {
        let env = env.filter(|env| !env.is_empty());
        if files.is_empty() && env.is_none() {
            return Ok(None);
        }
        let env_text = env.map(env_file_text).transpose()?;
        prepare(secrets_dir)?;
        let root = secrets_dir.join(owner).join(run);
        private_dirs(&secrets_dir.join(owner)).map_err(|e| failed(&root, e))?;
        // A directory of this name is a leftover of an earlier process of this owner.
        let _ = fs::remove_dir_all(&root);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| failed(&root, e))?;
        let mut made = RunSecretsDir {
            root,
            files: None,
            env_file: None,
        };
        if !files.is_empty() {
            let base = made.root.join("files");
            private_dirs(&base).map_err(|e| failed(&base, e))?;
            for (rel, value) in files {
                if let Err(why) = pipewright_pipelines::check_secret_file_path(rel) {
                    return Err(format!("secret file `{rel}`: {why}"));
                }
                let path = base.join(rel);
                if let Some(parent) = path.parent() {
                    private_dirs(parent).map_err(|e| failed(parent, e))?;
                }
                write_private(&path, value.as_bytes()).map_err(|e| failed(&path, e))?;
            }
            made.files = Some(base);
        }
        if let Some(text) = env_text {
            let path = made.root.join("env");
            write_private(&path, text.as_bytes()).map_err(|e| failed(&path, e))?;
            made.env_file = Some(path);
        }
        Ok(Some(made))
    }

    /// The directory an earlier process of `owner` made for the run, taken over as it is:
    /// a container that process started mounts it, and replacing it would leave that
    /// container an empty directory (its files keep the values read when the run began).
    /// Without one, a new one as [`create`](RunSecretsDir::create) makes it.
    pub fn adopt_or_create(
        secrets_dir: &Path,
        owner: &str,
        run: &str,
        files: &[(String, String)],
        env: Option<&[(String, String)]>,
    ) -> Result<Option<RunSecretsDir>, String> {
        let root = secrets_dir.join(owner).join(run);
        if !root.is_dir() {
            return RunSecretsDir::create(secrets_dir, owner, run, files, env);
        }
        let files = root.join("files");
        let env_file = root.join("env");
        Ok(Some(RunSecretsDir {
            files: files.is_dir().then_some(files),
            env_file: env_file.is_file().then_some(env_file),
            root,
        }))
    }

    /// The read-only mounts of the run's files and environment file.
    pub fn mounts(&self) -> Vec<Mount> {
        let mut mounts = Vec::new();
        if let Some(files) = &self.files {
            mounts.push(Mount {
                host: files.clone(),
                container: SECRETS_IN_CONTAINER.into(),
                read_only: true,
            });
        }
        if let Some(env) = &self.env_file {
            mounts.push(Mount {
                host: env.clone(),
                container: ENV_FILE_IN_CONTAINER.into(),
                read_only: true,
            });
        }
        mounts
    }

    /// The environment file in the container, when there is one.
    pub fn env_file(&self) -> Option<&'static str> {
        self.env_file.as_ref().map(|_| ENV_FILE_IN_CONTAINER)
    }

    /// The run's directory on the host.
    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for RunSecretsDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.root.display(), error = %e, "failed to remove the run's secrets directory");
        }
    }
}

/// `path` and its missing parents, each 0700.
fn private_dirs(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn failed(path: &Path, e: io::Error) -> String {
    format!(
        "failed to write the run's secrets under {}: {e}",
        path.display()
    )
}

/// A new file readable by its owner only (0400), whatever the umask.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The environment file: one `export NAME='value'` line per variable, each value in single
/// quotes (a `'` written `'\''`), so the shell reads every byte back as it was: quotes,
/// newlines, `$`, backslashes. A name that is not a shell identifier, or a value with a NUL
/// byte (which no environment can hold), is refused with its name.
pub fn env_file_text(env: &[(String, String)]) -> Result<String, String> {
    let mut text = String::new();
    for (name, value) in env {
        let mut chars = name.chars();
        let identifier = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            return Err(format!(
                "the secret variable `{name}` is not a shell variable name, which [docker].secrets_in_env = false needs"
            ));
        }
        if value.contains('\0') {
            return Err(format!("the secret variable `{name}` holds a NUL byte"));
        }
        text.push_str("export ");
        text.push_str(name);
        text.push_str("='");
        text.push_str(&value.replace('\'', "'\\''"));
        text.push_str("'\n");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_whole() {
        let env = [("A".to_string(), "it's $HOME\n`x` \\n \"q\"".to_string())];
        assert_eq!(
            env_file_text(&env).unwrap(),
            "export A='it'\\''s $HOME\n`x` \\n \"q\"'\n"
        );
        for bad in ["a-b", "1A", "A;rm -rf /", "", "A B"] {
            let err = env_file_text(&[(bad.to_string(), "v".into())]).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        assert!(env_file_text(&[("A".into(), "a\0b".into())]).is_err());
    }

    #[test]
    fn a_runs_directory_is_private_and_goes_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let shm = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
        let files = [("ssh/id".to_string(), "key\n".to_string())];
        let env = [("A".to_string(), "v".to_string())];
        let dir = RunSecretsDir::create(shm.path(), "pw-x", "run-1", &files, Some(&env))
            .unwrap()
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = dir.path().to_path_buf();
        assert_eq!(root, shm.path().join("pw-x/run-1"));
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("files/ssh")), 0o700);
        assert_eq!(mode(&root.join("files/ssh/id")), 0o400);
        assert_eq!(
            fs::read_to_string(root.join("files/ssh/id")).unwrap(),
            "key\n"
        );
        assert_eq!(mode(&root.join("env")), 0o400);
        assert_eq!(dir.env_file(), Some(ENV_FILE_IN_CONTAINER));
        let targets: Vec<_> = dir
            .mounts()
            .into_iter()
            .map(|m| (m.container, m.read_only))
            .collect();
        assert_eq!(
            targets,
            [
                ("/run/secrets".to_string(), true),
                (ENV_FILE_IN_CONTAINER.to_string(), true)
            ]
        );
        drop(dir);
        assert!(!root.exists());
        // Nothing to write: nothing made. A bad path: refused, and nothing left.
        assert!(
            RunSecretsDir::create(shm.path(), "pw-x", "run-2", &[], Some(&[]))
                .unwrap()
                .is_none()
        );
        let bad = [("../x".to_string(), "v".to_string())];
        assert!(RunSecretsDir::create(shm.path(), "pw-x", "run-3", &bad, None).is_err());
        assert!(!shm.path().join("pw-x/run-3").exists());
        assert!(!shm.path().join("x").exists());
        assert_eq!(remove_leftovers(shm.path(), "pw-x").unwrap(), 0);
        assert!(!shm.path().join("pw-x").exists());
    }

    #[test]
    fn a_directory_on_disk_is_refused() {
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let err = prepare(disk.path()).unwrap_err();
        assert!(
            err.contains(&disk.path().display().to_string()) && err.contains("tmpfs"),
            "{err}"
        );
    }
}
