//! Which pipelines an event concerns: event kind, branch or tag, changed paths.

use crate::{
    model::{EventKind, Pipeline, Step},
    patterns::Patterns,
};

/// The ref an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// Parses `refs/heads/x` / `refs/tags/x`.
    pub fn from_full(full: &str) -> Option<GitRef> {
        if let Some(b) = full.strip_prefix("refs/heads/") {
            Some(GitRef::Branch(b.to_string()))
        } else {
            full.strip_prefix("refs/tags/")
                .map(|t| GitRef::Tag(t.to_string()))
        }
    }

    pub fn full(&self) -> String {
        match self {
            GitRef::Branch(b) => format!("refs/heads/{b}"),
            GitRef::Tag(t) => format!("refs/tags/{t}"),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            GitRef::Branch(n) | GitRef::Tag(n) => n,
        }
    }

    pub fn branch(&self) -> Option<&str> {
        match self {
            GitRef::Branch(b) => Some(b),
            GitRef::Tag(_) => None,
        }
    }
}

/// The files an event changed, computed with git by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// Unknown or everything (a local run without `--changed`): path filters match.
    All,
    Files(Vec<String>),
}

/// What selection needs to know about an event.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub kind: EventKind,
    /// Push: the pushed ref. Pull request: the base branch. Dispatch: the ref dispatched
    /// on. Schedule: the default branch.
    pub git_ref: GitRef,
    pub changes: Changes,
}

/// Whether `pipeline` runs for this event.
pub fn selects(pipeline: &Pipeline, event: &Trigger) -> bool {
    let on = &pipeline.on;
    match event.kind {
        EventKind::Push => {
            let Some(push) = &on.push else { return false };
            match &event.git_ref {
                GitRef::Branch(b) => {
                    let branch_ok = match (&push.branches, &push.tags) {
                        (Some(branches), _) => branches.matches(b),
                        (None, Some(_)) => false,
                        (None, None) => true,
                    };
                    branch_ok
                        && paths_match(
                            push.paths.as_ref(),
                            push.paths_ignore.as_ref(),
                            &event.changes,
                        )
                }
                // Path filters are not evaluated for tags, as in GitHub Actions.
                GitRef::Tag(t) => push.tags.as_ref().is_some_and(|tags| tags.matches(t)),
            }
        }
        EventKind::PullRequest => {
            let Some(pr) = &on.pull_request else {
                return false;
            };
            let base_ok = match (&pr.branches, &event.git_ref) {
                (None, _) => true,
                (Some(branches), GitRef::Branch(b)) => branches.matches(b),
                (Some(_), GitRef::Tag(_)) => false,
            };
            base_ok && paths_match(pr.paths.as_ref(), pr.paths_ignore.as_ref(), &event.changes)
        }
        EventKind::Dispatch | EventKind::Comment => on.dispatch.is_some(),
        EventKind::Schedule => !on.schedule.is_empty(),
    }
}

/// GitHub Actions semantics: the files that `paths` selects (all, without `paths`) must not
/// all be excluded by `paths_ignore`.
pub fn paths_match(paths: Option<&Patterns>, ignore: Option<&Patterns>, changes: &Changes) -> bool {
    // Without filters every event runs, even one that changed no file (an empty commit).
    if paths.is_none() && ignore.is_none() {
        return true;
    }
    let Changes::Files(files) = changes else {
        return true;
    };
    files
        .iter()
        .filter(|f| paths.is_none_or(|p| p.matches(f)))
        .any(|f| ignore.is_none_or(|i| !i.matches(f)))
}

/// Whether a step's `when` holds for this event.
pub fn step_applies(step: &Step, kind: EventKind, git_ref: &GitRef) -> bool {
    let Some(when) = &step.when else { return true };
    let event_ok = when
        .event
        .as_ref()
        .is_none_or(|kinds| kinds.contains(&kind));
    let branch_ok = when
        .branch
        .as_ref()
        .is_none_or(|globs| git_ref.branch().is_some_and(|b| globs.matches(b)));
    event_ok && branch_ok
}
