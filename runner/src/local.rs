//! A repository on the local disk: its pipeline files, its git facts, its file list, and
//! a throw-away copy of it for a run (the user's files are never modified).

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
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

/// What git says about a checkout; what it cannot say is filled in plainly.
#[derive(Clone, Debug)]
pub struct GitFacts {
    /// `owner/name` from the `origin` remote, else `local/<directory name>`.
    pub repo: String,
    pub branch: Option<String>,
    pub sha: String,
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn git_facts(root: &Path) -> GitFacts {
    let dir_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let repo = git(root, &["remote", "get-url", "origin"])
        .and_then(|url| repo_from_url(&url))
        .unwrap_or_else(|| format!("local/{}", dir_name.unwrap_or_else(|| "repo".into())));
    GitFacts {
        repo,
        branch: git(root, &["symbolic-ref", "--quiet", "--short", "HEAD"]),
        sha: git(root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "0".repeat(40)),
    }
}

/// `owner/name` of a clone URL (`https://host/owner/name.git`, `git@host:owner/name.git`).
fn repo_from_url(url: &str) -> Option<String> {
    let path = url.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = path.rsplit(['/', ':']);
    let name = parts.next()?;
    let owner = parts.next()?;
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
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

#[cfg(test)]
mod tests {
    use super::repo_from_url;

    #[test]
    fn repo_names_from_clone_urls() {
        assert_eq!(
            repo_from_url("https://gitea.lab/arcodange-org/factory.git").as_deref(),
            Some("arcodange-org/factory")
        );
        assert_eq!(
            repo_from_url("git@gitea.lab:org/app.git").as_deref(),
            Some("org/app")
        );
        assert_eq!(
            repo_from_url("ssh://git@gitea.lab:2222/org/app").as_deref(),
            Some("org/app")
        );
    }
}
