//! Glob pattern lists for branches, tags and paths, with GitHub Actions semantics.
//!
//! `*` does not cross `/`, `**` does, `{a,b}` and `[ab]` work. A pattern that starts with
//! `!` excludes again what earlier patterns matched: the last pattern that matches a name
//! decides, so `[docs/**, "!docs/internal/**", docs/internal/keep.md]` does what it reads.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// An ordered list of patterns, compiled.
#[derive(Clone, Debug)]
pub struct Patterns {
    source: Vec<String>,
    negated: Vec<bool>,
    set: GlobSet,
}

impl Patterns {
    /// Compiles patterns; the error names the first bad one and why.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, (usize, String)> {
        let mut builder = GlobSetBuilder::new();
        let mut negated = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let (neg, body) = match pattern.as_ref().strip_prefix('!') {
                Some(body) => (true, body),
                None => (false, pattern.as_ref()),
            };
            if body.is_empty() {
                return Err((i, "empty pattern".into()));
            }
            let glob = GlobBuilder::new(&github_double_star(body))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| (i, e.kind().to_string()))?;
            builder.add(glob);
            negated.push(neg);
        }
        let set = builder.build().map_err(|e| {
            let n = patterns.len();
            (
                0,
                format!("these {n} patterns together are too many or too complex to match: {e}"),
            )
        })?;
        Ok(Patterns {
            source: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
            negated,
            set,
        })
    }

    /// Whether the last pattern matching `name` is a positive one.
    pub fn matches(&self, name: &str) -> bool {
        match self.set.matches(name).into_iter().max() {
            Some(last) => !self.negated[last],
            None => false,
        }
    }

    pub fn as_strings(&self) -> &[String] {
        &self.source
    }
}

/// GitHub's `**` matches any characters, `/` included, also inside a path component
/// (`**.js` matches `src/app.js`); globset reads such a `**` as `*`. Rewrite it as `**/*`.
fn github_double_star(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut rest = pattern;
    while let Some(i) = rest.find("**") {
        let (before, after) = (&rest[..i], &rest[i + 2..]);
        out.push_str(before);
        let starts_component = out.is_empty() || out.ends_with('/');
        let ends_component = after.is_empty() || after.starts_with('/');
        if starts_component && !ends_component && !after.starts_with('*') {
            out.push_str("**/*");
        } else {
            out.push_str("**");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_semantics() {
        let p = Patterns::new(&["docs/**", "!docs/internal/**", "docs/internal/keep.md"]).unwrap();
        assert!(p.matches("docs/a.md"));
        assert!(!p.matches("docs/internal/b.md"));
        assert!(p.matches("docs/internal/keep.md"));
        let star = Patterns::new(&["*.rs"]).unwrap();
        assert!(star.matches("lib.rs"));
        assert!(!star.matches("src/lib.rs"), "* must not cross /");
        let deep = Patterns::new(&["iac/**/*.tf"]).unwrap();
        assert!(deep.matches("iac/main.tf"), "**/ matches zero directories");
        assert!(deep.matches("iac/a/b/main.tf"));
        let any_md = Patterns::new(&["**/*.md"]).unwrap();
        assert!(any_md.matches("README.md"));
        let suffix = Patterns::new(&["**.rs"]).unwrap();
        assert!(suffix.matches("src/a/lib.rs") && suffix.matches("lib.rs"));
        let braces = Patterns::new(&["release/{v1,v2}"]).unwrap();
        assert!(braces.matches("release/v2"));
        assert!(Patterns::new(&["a/[b"]).is_err());
    }
}
