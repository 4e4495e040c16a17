//! How each source of runs builds its [`RunSpec`]: one constructor per source (a delivery's
//! event, a dispatch, a Gitea Actions task, a schedule, a comment command, a re-run), so that the dedupe key, the concurrency group
//! key and the first description of a kind of run are made in one place.

use pipewright_pipelines::{InputKind, Pipeline, RunContext, plan};

use crate::{
    events::{Event, RepoInfo},
    store::{InputType, Run, RunSpec, RunState},
};

/// Where a new run comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// An event from a stored delivery, or catch-up's equivalent of one; `from_fork` is
    /// ingest's verdict on a pull request (see [`RunSpec::from_fork`]).
    Event { event: &'a Event, from_fork: bool },
    /// Asked for through the API at `at_ms`.
    Dispatch { actor: &'a str, at_ms: i64 },
    /// Gitea Actions task `task_id` (from "Run workflow"), started by Gitea user `actor`:
    /// a dispatch in every other respect.
    GiteaTask { actor: &'a str, task_id: i64 },
    /// Due in this minute (epoch minutes).
    Schedule { minute: i64 },
    /// A comment command (`/pipewright run|plan|apply`) by `actor`, comment `comment_id`
    /// of pull request `pr` (`None`: on an issue, run on the default branch); `from_fork`
    /// as for the pull request's own runs.
    Comment {
        actor: &'a str,
        comment_id: i64,
        pr: Option<i64>,
        from_fork: bool,
    },
}

/// A pipeline file as read at the commit.
#[derive(Clone, Copy, Debug)]
pub enum FileAt<'a> {
    Valid(&'a Pipeline),
    /// A file that does not parse: its run ends as `error` with `description` at once.
    Invalid {
        name: &'a str,
        file: &'a str,
        description: &'a str,
    },
}

impl Source<'_> {
    /// The key that makes a second run of the same thing add nothing (see
    /// [`RunSpec::dedupe_key`]).
    pub fn dedupe_key(&self, repo: &str, pipeline: &str) -> String {
        match self {
            Source::Event { event, .. } => event.dedupe_key(),
            Source::Dispatch { at_ms, .. } => format!("dispatch:{repo}:{at_ms}"),
            // A task is handed out once; one taken again after a crash adds nothing.
            Source::GiteaTask { task_id, .. } => format!("gitea-task:{repo}:{task_id}"),
            Source::Schedule { minute } => format!("schedule:{repo}:{pipeline}:{minute}"),
            // A comment runs once, ever: a replayed delivery of it adds nothing.
            Source::Comment { comment_id, .. } => format!("comment:{repo}:{comment_id}"),
        }
    }

    /// Who causes the run (the run's `actor`, its identity token's and `${{ actor }}`):
    /// the event's sender login, the dispatcher, the commenter, or `schedule`.
    pub fn actor(&self) -> &str {
        match self {
            Source::Event { event, .. } => match event {
                Event::Push { actor, .. } | Event::PullRequest { actor, .. } => actor,
            },
            Source::Dispatch { actor, .. } | Source::GiteaTask { actor, .. } => actor,
            Source::Schedule { .. } => "schedule",
            Source::Comment { actor, .. } => actor,
        }
    }
}

impl RunSpec {
    /// A run of one pipeline file of `repo` in the context `cx` (its event kind, ref,
    /// commit and inputs), for `source`.
    pub fn new(repo: &RepoInfo, cx: &RunContext, file: FileAt<'_>, source: Source<'_>) -> RunSpec {
        let input_types = match file {
            FileAt::Valid(pipeline) => input_types(pipeline),
            FileAt::Invalid { .. } => Vec::new(),
        };
        let (name, path, runs_on, group, cancel_in_progress, state, description) = match file {
            FileAt::Valid(pipeline) => {
                let planned = plan(pipeline, cx);
                let description = match source {
                    Source::Event { .. } => "queued".to_owned(),
                    Source::Dispatch { .. } => "queued (dispatched)".to_owned(),
                    Source::GiteaTask { task_id, .. } => {
                        format!("queued (Gitea Actions task {task_id})")
                    }
                    Source::Schedule { .. } => "queued (scheduled)".to_owned(),
                    Source::Comment { .. } => "queued (comment command)".to_owned(),
                };
                (
                    pipeline.name.as_str(),
                    pipeline.file.as_str(),
                    pipeline.runs_on.clone(),
                    planned.concurrency_group,
                    planned.cancel_in_progress,
                    RunState::Queued,
                    description,
                )
            }
            FileAt::Invalid {
                name,
                file,
                description,
            } => (
                name,
                file,
                Vec::new(),
                format!("{}/{name}/{}", repo.full_name, cx.event_ref()),
                false,
                RunState::Error,
                description.to_string(),
            ),
        };
        let (pr, from_fork) = match source {
            Source::Event { event, from_fork } => match event {
                Event::Push { .. } => (None, false),
                Event::PullRequest { number, .. } => (Some(*number), from_fork),
            },
            Source::Dispatch { .. } | Source::GiteaTask { .. } | Source::Schedule { .. } => {
                (None, false)
            }
            Source::Comment { pr, from_fork, .. } => (pr, from_fork),
        };
        let actor = source.actor();
        RunSpec {
            repo: repo.full_name.clone(),
            repo_id: repo.id,
            owner_id: repo.owner_id,
            default_branch: repo.default_branch.clone(),
            status_repo: repo.full_name.clone(),
            pipeline: name.to_string(),
            pipeline_file: path.to_string(),
            event: cx.event,
            git_ref: cx.git_ref.clone(),
            sha: cx.sha.clone(),
            pr,
            actor: actor.to_string(),
            from_fork,
            attempt: 1,
            inputs: cx.inputs.clone(),
            input_types,
            rerun_of: None,
            runs_on,
            dedupe_key: source.dedupe_key(&repo.full_name, name),
            concurrency_group: group_key(&repo.full_name, &group),
            cancel_in_progress,
            state,
            description,
        }
    }

    /// Another attempt of `old`, asked for at `at_ms`: the same event's facts, inputs and
    /// group, a dedupe key of its own.
    pub fn rerun(old: &Run, at_ms: i64) -> RunSpec {
        RunSpec {
            repo: old.repo.clone(),
            repo_id: old.repo_id,
            owner_id: old.owner_id,
            default_branch: old.default_branch.clone(),
            status_repo: old.status_repo.clone(),
            pipeline: old.pipeline.clone(),
            pipeline_file: old.pipeline_file.clone(),
            event: old.event,
            git_ref: old.git_ref.clone(),
            sha: old.sha.clone(),
            pr: old.pr,
            actor: old.actor.clone(),
            from_fork: old.from_fork,
            attempt: old.attempt + 1,
            inputs: old.inputs.clone(),
            input_types: old.input_types.clone(),
            rerun_of: Some(old.id),
            runs_on: old.runs_on.clone(),
            dedupe_key: format!("rerun:{}:{at_ms}", old.id),
            concurrency_group: old.concurrency_group.clone(),
            cancel_in_progress: old.cancel_in_progress,
            state: RunState::Queued,
            description: format!("queued (re-run of run {})", old.id),
        }
    }
}

/// The declared types of a pipeline's dispatch inputs that are not text.
fn input_types(pipeline: &Pipeline) -> Vec<(String, InputType)> {
    let Some(dispatch) = &pipeline.on.dispatch else {
        return Vec::new();
    };
    dispatch
        .inputs
        .iter()
        .filter_map(|input| match input.kind {
            InputKind::Boolean => Some((input.name.clone(), InputType::Boolean)),
            InputKind::Number => Some((input.name.clone(), InputType::Number)),
            InputKind::String | InputKind::Choice(_) => None,
        })
        .collect()
}

/// A concurrency group's key: always within its repository, so that no pipeline can wait
/// on, supersede or cancel another repository's runs by naming their group.
pub fn group_key(repo: &str, group: &str) -> String {
    if group.starts_with(&format!("{repo}/")) {
        group.to_string()
    } else {
        format!("{repo}/{group}")
    }
}
