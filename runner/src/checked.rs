//! Checks for values that arrive from outside (webhook payloads, API requests, Gitea's
//! answers) before they reach git, a URL or a path: repository names, commit ids, ref names.
//!
//! Each check is a whitelist: what passes can be put on a git command line after
//! `--end-of-options`, into a URL path or a file name without being read as anything but
//! the value it is.

/// `owner/name` as Gitea allows them: `[A-Za-z0-9_.-]+` on both sides, neither side `.`,
/// `..` or starting with `-` or `.`, no `..` anywhere (so no path can climb out of the git
/// mirrors' directory).
pub fn is_repo_name(full_name: &str) -> bool {
    full_name
        .split_once('/')
        .is_some_and(|(owner, name)| is_name_part(owner) && is_name_part(name))
}

/// One side of `owner/name` by [`is_repo_name`]'s rules.
pub fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with(['-', '.'])
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_commit_id(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A branch or tag name as git's `check-ref-format` accepts it, and also not starting with
/// `-` (it would read as an option), not `HEAD`, `@` or a full commit id (revisions, not
/// names) and at most 255 bytes: no `..`, `@{`, `//`, control characters, space,
/// `~ ^ : ? * [ \`, no component starting with `.` or ending in `.lock`, no leading or
/// trailing `/`, no trailing `.`.
pub fn is_ref_name(name: &str) -> bool {
    ref_name_problem(name).is_none()
}

/// What makes `name` no branch or tag name by [`is_ref_name`]'s rules, in words.
pub fn ref_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > 255 {
        return Some("it is longer than 255 bytes".into());
    }
    if name.starts_with('-') {
        return Some("it starts with `-`".into());
    }
    if name == "HEAD" || name == "@" {
        return Some(format!("`{name}` is not a branch"));
    }
    if is_commit_id(&name.to_ascii_lowercase()) {
        return Some("it is a commit id; a branch or a tag is needed".into());
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Some(format!("`{}` is not allowed", c.escape_debug()));
    }
    for (bad, why) in [
        ("..", "`..` is not allowed"),
        ("@{", "`@{` is not allowed"),
        ("//", "`//` is not allowed"),
    ] {
        if name.contains(bad) {
            return Some(why.into());
        }
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return Some("it starts or ends with `/`, or ends with `.`".into());
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return Some("a part starts with `.` or ends with `.lock`".into());
    }
    None
}

/// A full ref Pipewright acts on: `refs/heads/<name>` or `refs/tags/<name>` with a checked
/// name.
pub fn is_full_ref(full: &str) -> bool {
    full.strip_prefix("refs/heads/")
        .or_else(|| full.strip_prefix("refs/tags/"))
        .is_some_and(is_ref_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in [
            "arcodange-org/factory",
            "a/b",
            "A_b.c-d/x.y",
            "org/repo.git",
        ] {
            assert!(is_repo_name(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "a/",
            "/b",
            "a/b/c",
            "../b",
            "a/..",
            "a/.git",
            ".a/b",
            "-a/b",
            "a/-b",
            "a/b c",
            "a/b;c",
            "a/b\n",
            "a/..b",
            "ä/b",
            "a/b%2f",
            "a\\b/c",
            "--upload-pack=x/y",
        ] {
            assert!(!is_repo_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0123456789abcdef".repeat(4)));
        for bad in [
            "".to_string(),
            "a".repeat(39),
            "a".repeat(41),
            "A".repeat(40),
            "g".repeat(40),
            format!("--output=/tmp/{}", "a".repeat(26)),
            "HEAD".to_string(),
            format!("{}~1", "a".repeat(38)),
        ] {
            assert!(!is_commit_id(&bad), "{bad:?}");
        }
    }

    #[test]
    fn ref_names() {
        for good in ["main", "feature/x", "v1.2.3", "release-1.0", "a@b", "ünï"] {
            assert!(is_ref_name(good), "{good}");
        }
        for bad in [
            "",
            "@",
            "-x",
            "--upload-pack=y",
            "/a",
            "a/",
            "a.",
            "a..b",
            "a@{1}",
            "a//b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            ".hidden",
            "a/.b",
            "x.lock",
            "a/x.lock/b",
            "a\u{7f}",
            "a\tb",
        ] {
            assert!(!is_ref_name(bad), "{bad:?}");
        }
        assert!(!is_ref_name(&"a".repeat(256)));
        assert!(is_full_ref("refs/heads/main"));
        assert!(is_full_ref("refs/tags/v1"));
        for bad in [
            "main",
            "refs/pull/1/head",
            "refs/heads/",
            "refs/heads/-x",
            "refs/heads/a..b",
        ] {
            assert!(!is_full_ref(bad), "{bad}");
        }
    }
}
