//! Diagnostics: what is wrong in a pipeline file, and exactly where.

use std::fmt;

/// A position in a file, both 1-based (columns count characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// One problem in one file. Displays as `file:line:col: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

/// Words longer than this get no "did you mean": comparing long strings costs their product.
const MAX_HINT_LEN: usize = 64;

/// Closest candidate to `word` when it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if word.len() > MAX_HINT_LEN {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| c.len() <= MAX_HINT_LEN)
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Names from GitHub Actions that users bring along, and ours.
pub(crate) fn alias(name: &str) -> Option<&'static str> {
    match name {
        "workflow_dispatch" | "repository_dispatch" => Some("dispatch"),
        "pull_request_target" | "pull_request_review" => Some("pull_request"),
        "runs-on" => Some("runs_on"),
        "timeout-minutes" | "timeout_minutes" => Some("timeout"),
        "jobs" => Some("steps"),
        _ => None,
    }
}
