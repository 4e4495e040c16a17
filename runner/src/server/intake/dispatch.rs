//! Dispatching a pipeline, whoever asks (the API, the dispatch page, a Gitea Actions task):
//! the pipeline is read at the ref's commit; inputs are checked against its declaration (a
//! missing, unknown or ill-typed input is refused, naming it; `confirm` too).
//!
//! When Gitea cannot be reached (a connection error or a 5xx from its API, or a failed
//! fetch), a pipeline with `on.dispatch.offline: true` runs from the commit the mirror last
//! fetched for the ref, of a repository Pipewright knows from earlier events; any other
//! dispatch is refused with 502 naming Gitea. Its statuses wait in the outbox, which
//! retries until Gitea answers.

use axum::http::StatusCode;
use pipewright_pipelines::{EventKind, GitRef, Pipeline, RunContext, resolve_inputs};

use super::{
    Intake,
    spec::{FileAt, Source},
};
use crate::{error_chain, events::RepoInfo, store::RunSpec};

/// A refused dispatch: the HTTP status an API answers it with, and why.
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub String);

fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused(status, message.into())
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
    intake: &Intake<'_>,
    owner: &str,
    name: &str,
    pipeline_name: &str,
    wanted: Option<&str>,
) -> Result<Dispatchable, Refused> {
    for segment in [owner, name] {
        check_repo_segment(segment)
            .map_err(|why| refused(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    }
    let full_name = format!("{owner}/{name}");
    if let Some(wanted) = wanted {
        check_ref_name(wanted).map_err(|why| refused(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    }
    if !intake.config.repo_allowed(&full_name) {
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
    let (repo, mirror, unreachable) = match intake.gitea.repository(&full_name).await {
        Ok(Some(payload)) => {
            let repo = RepoInfo::from_payload(&payload, "").map_err(|e| {
                refused(
                    StatusCode::BAD_GATEWAY,
                    format!("Gitea's answer for {full_name} is refused: {e}"),
                )
            })?;
            match intake.git.fetch(&repo.full_name, repo.sha256).await {
                Ok(mirror) => {
                    // Known from Gitea's own answer: a later offline dispatch may use it.
                    if let Err(e) = intake.store.remember_repo(&repo.known()).await {
                        tracing::warn!(error = ?e, "failed to remember a repository");
                    }
                    (repo, mirror, None)
                }
                Err(e) => {
                    let why = format!("Gitea: {}", error_chain(&e));
                    let mirror = last_fetched(intake, &full_name, &why).await?;
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
            let known = intake
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
            let mirror = last_fetched(intake, &full_name, &why).await?;
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

    let (git_ref, sha) = resolve_ref(intake, &mirror, &wanted).await.ok_or_else(|| {
        offline_refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{full_name} has no branch or tag `{wanted}`"),
        )
    })?;
    let parsed = intake
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

/// Dispatches a pipeline read by [`dispatchable`] with the inputs given (as text), from
/// `source` (the API's or a page's dispatch, a Gitea Actions task); the new run's id.
pub async fn dispatch(
    intake: &Intake<'_>,
    target: &Dispatchable,
    given: &[(String, String)],
    source: Source<'_>,
) -> Result<i64, Refused> {
    let inputs = resolve_inputs(&target.pipeline, given).map_err(|errors| {
        refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("dispatch refused: {}", errors.join("; ")),
        )
    })?;
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
    let enqueued = intake.queue.enqueue(None, &[run]).await.map_err(|e| {
        tracing::warn!(error = ?e, "failed to enqueue a dispatch");
        refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    enqueued
        .ids
        .first()
        .copied()
        .ok_or_else(|| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// The mirror as the last fetch from Gitea left it (the only writer of its refs: `git
/// fetch --force --prune` from `[gitea].url`), or the 502 naming Gitea when there is none.
async fn last_fetched(
    intake: &Intake<'_>,
    full_name: &str,
    why: &str,
) -> Result<crate::git::Mirror, Refused> {
    match intake.git.open_existing(full_name).await {
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
    intake: &Intake<'_>,
    mirror: &crate::git::Mirror,
    wanted: &str,
) -> Option<(GitRef, String)> {
    let name = wanted.strip_prefix("refs/heads/").unwrap_or(wanted);
    if let Some(sha) = intake
        .git
        .resolve(mirror, &format!("refs/heads/{name}"))
        .await
    {
        return Some((GitRef::Branch(name.to_string()), sha));
    }
    let tag = wanted.strip_prefix("refs/tags/").unwrap_or(wanted);
    if let Some(sha) = intake
        .git
        .resolve(mirror, &format!("refs/tags/{tag}"))
        .await
    {
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
