//! What the API and the pages both do to runs: cancel, re-run and dispatch, each one
//! function whichever answer (JSON or a page) follows.
//!
//! Dispatch reads the pipeline at the ref's commit; inputs are checked against its
//! declaration (a missing, unknown or ill-typed input is refused, naming it; `confirm` too).
//!
//! When Gitea cannot be reached (a connection error or a 5xx from its API, or a failed
//! fetch), a pipeline with `on.dispatch.offline: true` runs from the commit the mirror last
//! fetched for the ref, of a repository Pipewright knows from earlier events; any other
//! dispatch is refused with 502 naming Gitea. Its statuses wait in the outbox, which
//! retries until Gitea answers.

use axum::http::StatusCode;
use pipewright_pipelines::{EventKind, GitRef, Pipeline, RunContext, resolve_inputs};

use crate::server::{
    App,
    http::errors::{ApiError, internal},
    intake::spec::{FileAt, Source},
};
use crate::{
    error_chain,
    events::RepoInfo,
    store::{Run, RunSpec, RunState, now_ms},
};

fn refused(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

/// A pipeline read at a ref's head, ready to be dispatched.
#[derive(Debug)]
pub struct Dispatchable {
    pub repo: RepoInfo,
    pub git_ref: GitRef,
    pub sha: String,
    pub pipeline: Pipeline,
}

/// Reads pipeline `pipeline_name` of `owner/name` at `wanted` (a branch or tag; default:
/// the default branch) as Gitea has it now, or as the mirror last fetched it when Gitea
/// cannot be reached and the pipeline allows an offline dispatch.
pub async fn dispatchable(
    app: &App,
    owner: &str,
    name: &str,
    pipeline_name: &str,
    wanted: Option<&str>,
) -> Result<Dispatchable, ApiError> {
    for segment in [owner, name] {
        check_repo_segment(segment)
            .map_err(|why| refused(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    }
    let full_name = format!("{owner}/{name}");
    if let Some(wanted) = wanted {
        check_ref_name(wanted).map_err(|why| refused(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    }
    if !app.config.repo_allowed(&full_name) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            format!("{full_name} is not in [[repos]]"),
        ));
    }
    let gitea_down = |e: &(dyn std::error::Error + 'static)| {
        refused(
            StatusCode::BAD_GATEWAY,
            format!("Gitea: {}", error_chain(e)),
        )
    };
    // `Some(why)`: Gitea cannot be reached, and only a pipeline that allows it runs from
    // what the mirror last fetched.
    let (repo, mirror, unreachable) = match app.gitea.repository(&full_name).await {
        Ok(Some(payload)) => {
            let repo = RepoInfo::from_payload(&payload, "").map_err(|e| {
                refused(
                    StatusCode::BAD_GATEWAY,
                    format!("Gitea's answer for {full_name} is refused: {e}"),
                )
            })?;
            match app.git.fetch(&repo.full_name, repo.sha256).await {
                Ok(mirror) => {
                    // Known from Gitea's own answer: a later offline dispatch may use it.
                    if let Err(e) = app.store.remember_repo(&repo.known()).await {
                        tracing::warn!(error = ?e, "failed to remember a repository");
                    }
                    (repo, mirror, None)
                }
                Err(e) => {
                    let why = format!("Gitea: {}", error_chain(&e));
                    let mirror = last_fetched(app, &full_name, &why).await?;
                    (repo, mirror, Some(why))
                }
            }
        }
        Ok(None) => {
            return Err(refused(
                StatusCode::NOT_FOUND,
                format!("Gitea has no repository {full_name}"),
            ));
        }
        Err(e) if e.is_transient() => {
            let why = format!("Gitea: {}", error_chain(&e));
            let known = app
                .store
                .known_repos()
                .await
                .map_err(|e| {
                    tracing::warn!(error = ?e, "failed to read the known repositories");
                    refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                })?
                .into_iter()
                .find(|k| k.repo == full_name)
                .ok_or_else(|| refused(StatusCode::BAD_GATEWAY, why.clone()))?;
            let mirror = last_fetched(app, &full_name, &why).await?;
            (RepoInfo::from_known(&known), mirror, Some(why))
        }
        Err(e) => return Err(gitea_down(&e)),
    };
    // Offline, what the mirror lacks may be in Gitea: every refusal names Gitea first.
    let offline_refused = |status: StatusCode, message: String| match &unreachable {
        Some(why) => refused(
            StatusCode::BAD_GATEWAY,
            format!("{why}; offline: {message}"),
        ),
        None => refused(status, message),
    };
    let wanted = wanted.map_or_else(|| repo.default_branch.clone(), str::to_owned);
    check_ref_name(&wanted).map_err(|why| refused(StatusCode::UNPROCESSABLE_ENTITY, why))?;

    let (git_ref, sha) = resolve_ref(app, &mirror, &wanted).await.ok_or_else(|| {
        offline_refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{full_name} has no branch or tag `{wanted}`"),
        )
    })?;
    let parsed = app
        .git
        .pipelines_at(&mirror, &sha)
        .await
        .map_err(|e| gitea_down(&e))?;
    drop(mirror);
    let parsed = parsed
        .into_iter()
        .find(|f| f.name == pipeline_name)
        .ok_or_else(|| {
            offline_refused(
                StatusCode::NOT_FOUND,
                format!("no pipeline `{pipeline_name}` at {wanted}"),
            )
        })?;
    let pipeline = parsed.result.map_err(|diags| {
        let list: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        offline_refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("pipeline `{pipeline_name}` is invalid: {}", list.join("; ")),
        )
    })?;
    if let Some(why) = &unreachable {
        if !pipeline.on.dispatch.as_ref().is_some_and(|d| d.offline) {
            return Err(refused(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{why} (pipeline `{pipeline_name}` does not allow an offline dispatch: `on.dispatch.offline`)"
                ),
            ));
        }
        tracing::warn!(repo = %full_name, pipeline = %pipeline_name, %sha, reason = %why,
            "Gitea cannot be reached: the dispatch runs from the mirror's last fetched commit");
    }
    Ok(Dispatchable {
        repo,
        git_ref,
        sha,
        pipeline,
    })
}

/// Dispatches a pipeline read by [`dispatchable`] with the inputs given (as text), for
/// `actor`; the new run.
pub async fn dispatch(
    app: &App,
    target: &Dispatchable,
    given: &[(String, String)],
    actor: &str,
) -> Result<Run, ApiError> {
    let inputs = resolve_inputs(&target.pipeline, given).map_err(|errors| {
        refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("dispatch refused: {}", errors.join("; ")),
        )
    })?;
    let source = Source::Dispatch {
        actor,
        at_ms: now_ms(),
    };
    let cx = RunContext {
        repo: target.repo.full_name.clone(),
        sha: target.sha.clone(),
        git_ref: target.git_ref.clone(),
        event: EventKind::Dispatch,
        pr: None,
        run_id: String::new(),
        inputs: inputs.clone(),
        actor: source.actor().to_string(),
    };
    let run = RunSpec::new(&target.repo, &cx, FileAt::Valid(&target.pipeline), source);
    let enqueued = app.enqueue(None, &[run]).await.map_err(|e| {
        tracing::warn!(error = ?e, "failed to enqueue a dispatch");
        refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    stored(app, enqueued.ids[0]).await
}

async fn stored(app: &App, id: i64) -> Result<Run, ApiError> {
    app.store
        .run(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// Cancels a queued or running run (`why` becomes its description); 409 when it ended.
pub async fn cancel(app: &App, run: &Run, why: &str) -> Result<(), ApiError> {
    match run.state {
        RunState::Running => {
            app.scheduler.cancel(run.id, why);
        }
        RunState::Queued => {
            app.store
                .finish_run(run.id, RunState::Cancelled, why)
                .await
                .map_err(internal)?;
            app.reporter_wake.notify_one();
            app.scheduler.wake();
        }
        _ => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("run {} has already ended ({})", run.id, run.state.as_str()),
            ));
        }
    }
    Ok(())
}

/// Queues another attempt of a run; the new run.
pub async fn rerun(app: &App, old: &Run) -> Result<Run, ApiError> {
    let new = RunSpec::rerun(old, now_ms());
    let enqueued = app.enqueue(None, &[new]).await.map_err(internal)?;
    stored(app, enqueued.ids[0]).await
}

/// The mirror as the last fetch from Gitea left it (the only writer of its refs: `git
/// fetch --force --prune` from `[gitea].url`), or the 502 naming Gitea when there is none.
async fn last_fetched(
    app: &App,
    full_name: &str,
    why: &str,
) -> Result<crate::git::Mirror, ApiError> {
    match app.git.open_existing(full_name).await {
        Ok(Some(mirror)) => Ok(mirror),
        Ok(None) | Err(_) => Err(refused(
            StatusCode::BAD_GATEWAY,
            format!("{why} (and there is no mirror of {full_name} to run from)"),
        )),
    }
}

/// A branch, or else a tag. Not a bare commit: a run's identity token names its ref, and a
/// commit on no ref would borrow one it is not on.
async fn resolve_ref(
    app: &App,
    mirror: &crate::git::Mirror,
    wanted: &str,
) -> Option<(GitRef, String)> {
    let name = wanted.strip_prefix("refs/heads/").unwrap_or(wanted);
    if let Some(sha) = app.git.resolve(mirror, &format!("refs/heads/{name}")).await {
        return Some((GitRef::Branch(name.to_string()), sha));
    }
    let tag = wanted.strip_prefix("refs/tags/").unwrap_or(wanted);
    if let Some(sha) = app.git.resolve(mirror, &format!("refs/tags/{tag}")).await {
        return Some((GitRef::Tag(tag.to_string()), sha));
    }
    None
}

/// An owner or repository name as Gitea allows them (letters, digits, `-`, `_`, `.`; not
/// `.` or `..`): a name from the URL never reaches Gitea's API or git otherwise.
fn check_repo_segment(segment: &str) -> Result<(), String> {
    if crate::checked::is_name_part(segment) {
        Ok(())
    } else {
        Err(format!("{segment:?} is not an owner or repository name"))
    }
}

/// A dispatch names a branch or a tag exactly (`main`, `refs/heads/main`, `v1.2`,
/// `refs/tags/v1.2`), by git's `check-ref-format` rules, and never revision syntax that
/// git would resolve to another commit (`main~1`, `main^`, `@{-1}`, `HEAD`, a commit id)
/// or an option (`--upload-pack=…`).
pub fn check_ref_name(wanted: &str) -> Result<(), String> {
    let name = wanted
        .strip_prefix("refs/heads/")
        .or_else(|| wanted.strip_prefix("refs/tags/"))
        .unwrap_or(wanted);
    let why = crate::checked::ref_name_problem(name);
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "`{}` is not a branch or tag name: {why}",
            wanted.escape_debug()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_exact_branch_or_tag_names() {
        let ok = [
            "main",
            "refs/heads/main",
            "feature/new-ui",
            "v1.2.3",
            "refs/tags/v1.2.3",
            "release-2026.11",
            "deadbeef",
            "utf8-é",
        ];
        for name in ok {
            assert_eq!(check_ref_name(name), Ok(()), "{name}");
        }
        let refused = [
            (
                "main~1",
                "`main~1` is not a branch or tag name: `~` is not allowed",
            ),
            (
                "main^",
                "`main^` is not a branch or tag name: `^` is not allowed",
            ),
            (
                "main^{tree}",
                "`main^{tree}` is not a branch or tag name: `^` is not allowed",
            ),
            (
                "@{-1}",
                "`@{-1}` is not a branch or tag name: `@{` is not allowed",
            ),
            (
                "main@{yesterday}",
                "`main@{yesterday}` is not a branch or tag name: `@{` is not allowed",
            ),
            (
                "HEAD",
                "`HEAD` is not a branch or tag name: `HEAD` is not a branch",
            ),
            (
                "refs/heads/HEAD",
                "`refs/heads/HEAD` is not a branch or tag name: `HEAD` is not a branch",
            ),
            ("@", "`@` is not a branch or tag name: `@` is not a branch"),
            (
                "--upload-pack=touch /tmp/x",
                "`--upload-pack=touch /tmp/x` is not a branch or tag name: it starts with `-`",
            ),
            ("-b", "`-b` is not a branch or tag name: it starts with `-`"),
            (
                "main..other",
                "`main..other` is not a branch or tag name: `..` is not allowed",
            ),
            (
                "../../etc",
                "`../../etc` is not a branch or tag name: `..` is not allowed",
            ),
            (
                "0123456789abcdef0123456789abcdef01234567",
                "`0123456789abcdef0123456789abcdef01234567` is not a branch or tag name: it is a commit id; a branch or a tag is needed",
            ),
            (
                "a:b",
                "`a:b` is not a branch or tag name: `:` is not allowed",
            ),
            (
                "a b",
                "`a b` is not a branch or tag name: ` ` is not allowed",
            ),
            (
                "a\nb",
                "`a\\nb` is not a branch or tag name: `\\n` is not allowed",
            ),
            (
                "ma*n",
                "`ma*n` is not a branch or tag name: `*` is not allowed",
            ),
            (
                "ma?n",
                "`ma?n` is not a branch or tag name: `?` is not allowed",
            ),
            (
                "ma[n",
                "`ma[n` is not a branch or tag name: `[` is not allowed",
            ),
            (
                "a\\b",
                "`a\\\\b` is not a branch or tag name: `\\\\` is not allowed",
            ),
            ("", "`` is not a branch or tag name: it is empty"),
            (
                "refs/heads/",
                "`refs/heads/` is not a branch or tag name: it is empty",
            ),
            (
                "a//b",
                "`a//b` is not a branch or tag name: `//` is not allowed",
            ),
            (
                "/main",
                "`/main` is not a branch or tag name: it starts or ends with `/`, or ends with `.`",
            ),
            (
                "main/",
                "`main/` is not a branch or tag name: it starts or ends with `/`, or ends with `.`",
            ),
            (
                "main.",
                "`main.` is not a branch or tag name: it starts or ends with `/`, or ends with `.`",
            ),
            (
                ".hidden",
                "`.hidden` is not a branch or tag name: a part starts with `.` or ends with `.lock`",
            ),
            (
                "a/.b",
                "`a/.b` is not a branch or tag name: a part starts with `.` or ends with `.lock`",
            ),
            (
                "main.lock",
                "`main.lock` is not a branch or tag name: a part starts with `.` or ends with `.lock`",
            ),
        ];
        for (name, message) in refused {
            assert_eq!(check_ref_name(name), Err(message.to_owned()), "{name}");
        }
    }

    #[test]
    fn repository_segments_are_plain_names() {
        for ok in ["org", "my-repo", "a_b.c", "Repo2"] {
            assert_eq!(check_repo_segment(ok), Ok(()));
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "org/../admin",
            "a%2Fb",
            "a?b",
            "a#b",
            "a b",
        ] {
            assert!(check_repo_segment(bad).is_err(), "{bad}");
        }
    }
}
