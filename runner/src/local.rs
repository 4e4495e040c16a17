//! A repository on the local disk: its pipeline files, its file list, and a throw-away copy
//! of it for a run (the user's files are never modified). Its git facts are `git.rs`'s.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use pipewright_pipelines::{PIPELINE_DIR, ParsedFile, is_pipeline_file, parse_files};

/// Reads and checks every pipeline file under `root/.pipewright/`.
pub fn read_pipelines(root: &Path) -> anyhow::Result<Vec<ParsedFile>> {
    let dir = root.join(PIPELINE_DIR);
    if !dir.is_dir() {
        bail!(
            "{} has no {PIPELINE_DIR}/ directory: there are no pipelines to read",
            root.display()
        );
    }
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_pipeline_file(n))
        .collect();
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let bytes =
            fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
        files.push((format!("{PIPELINE_DIR}/{name}"), text));
    }
    Ok(parse_files(&files))
}

/// Every file of the checkout, relative, with `/` separators (`.git` left out).
pub fn list_files(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name();
            if rel.as_os_str().is_empty() && name == ".git" {
                continue;
            }
            let child = rel.join(&name);
            if entry.file_type()?.is_dir() {
                stack.push(child);
            } else {
                out.push(child.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies a tree: files with their modes, symbolic links as links (never followed), and
/// directories made writable by their owner so the copy can be cleaned up.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let mut perms = fs::metadata(to)?.permissions();
    perms.set_mode(perms.mode() | 0o700);
    fs::set_permissions(to, perms)
}
