//! Comment commands (`/pipewright run|plan|apply|help` on a pull request or issue): who may
//! give them (Gitea's collaborator permission, or `[[repos]].commenters`), what they run,
//! what `/pipewright apply` requires of the pull request, and the one reply comment each
//! command gets (the runs it started, or why it refused), through the comment outbox.
//!
//! Nothing of the comment but the command line counts: the commenter is Gitea's `sender`,
//! the pull request's state, head, reviews and statuses are read from Gitea's API, and the
//! head must be `refs/pull/<n>/head` in the mirror just fetched.

use pipewright_pipelines::{
    Changes, EventKind, GitRef, Pipeline, RunContext, StepKind, Trigger, default_inputs,
    resolve_inputs, selects,
};
use tracing::info;

use crate::{
    config::ApplyRequirement,
    events::{Command, Event, RepoInfo, Verb},
    git::Mirror,
    gitea::pulls::{Access, PullState},
    server::{
        intake::{
            Intake,
            ingest::{IngestError, untrusted_pull_request},
            spec::{FileAt, Source},
        },
        present::run_url,
    },
    store::{DeliveryState, RunSpec, comments::NewComment},
};

/// Marks the reply to one comment, so that it is created once (and edited, never added
/// again, when the outbox sends it a second time).
fn reply_marker(comment_id: i64) -> String {
    format!("<!-- pipewright:reply {comment_id} -->")
}

/// Where a command runs: the pull request's head (its base branch as the ref, as for the
/// pull request's own runs), or an issue's default branch.
struct Target {
    git_ref: GitRef,
    sha: String,
    pr: Option<i64>,
    from_fork: bool,
    /// The pull request as Gitea shows it.
    pull: Option<PullState>,
}

/// Answers a command: runs, or a reply saying why not. `Err` only for failures worth trying
/// again (Gitea or git unreachable, the database).
pub async fn answer(
    intake: &Intake<'_>,
    delivery: i64,
    command: &Command,
) -> Result<String, IngestError> {
    let repo = &command.repo;
    if !intake.config.repo_allowed(&repo.full_name) {
        let why = "repository not in [[repos]]: ignored";
        intake
            .store
            .finish_delivery(delivery, DeliveryState::Processed, why)
            .await?;
        return Ok(why.into());
    }
    intake.store.remember_repo(&repo.known()).await?;
    match decide(intake, command).await? {
        Ok(runs) => {
            let public_url = &intake.config.server.public_url;
            let enqueued = intake
                .queue
                .enqueue_replying(Some(delivery), &runs, |enqueued| {
                    (!enqueued.duplicate).then(|| {
                        let links: Vec<String> = runs
                            .iter()
                            .zip(&enqueued.ids)
                            .map(|(run, id)| {
                                format!(
                                    "- [pipewright/{}]({}) at `{}`",
                                    run.pipeline,
                                    run_url(public_url, *id),
                                    short(&run.sha)
                                )
                            })
                            .collect();
                        reply(
                            command,
                            &format!(
                                "`{}` started:\n\n{}\n",
                                command.verb.name(),
                                links.join("\n")
                            ),
                        )
                    })
                })
                .await?;
            if enqueued.duplicate {
                return Ok("the comment already has runs: nothing added".into());
            }
            Ok(format!(
                "{} runs for {}",
                enqueued.ids.len(),
                command.verb.name()
            ))
        }
        Err(refusal) => {
            info!(repo = %repo.full_name, number = command.number, actor = %command.actor, reason = %refusal, "comment command refused");
            let text = match &command.verb {
                Verb::Help { .. } => refusal.clone(),
                _ => format!("`{}` refused: {refusal}", command.verb.name()),
            };
            intake
                .store
                .reply_only(delivery, &reply(command, &text), &refusal)
                .await?;
            intake.queue.reporter_wake.notify_one();
            Ok(refusal)
        }
    }
}

/// The reply to `command`: `@actor ` and `text`.
fn reply(command: &Command, text: &str) -> NewComment {
    let marker = reply_marker(command.comment_id);
    NewComment {
        repo: command.repo.full_name.clone(),
        pr: command.number,
        body: format!("{marker}\n@{} {text}", command.actor),
        marker,
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

/// What the commands are; no line of it starts with `/pipewright`, so that Pipewright's
/// own reply is never a command.
pub fn help_text() -> String {
    [
        "Pipewright reads a comment line that starts with one of:",
        "",
        "- `/pipewright run <pipeline> [key=value ...]`: runs a pipeline that has `on.dispatch` with those inputs, at the pull request's head (on an issue: the default branch)",
        "- `/pipewright plan`: runs the pull request's `tofu` pipelines in plan mode",
        "- `/pipewright apply`: runs them in apply mode, once the pull request meets the repository's apply requirements",
        "- `/pipewright help`: this list",
        "",
        "Commands but help need write permission on the repository.",
    ]
    .join("\n")
}

/// The runs a command starts, or why it starts none (`Ok(Err(why))`).
async fn decide(
    intake: &Intake<'_>,
    command: &Command,
) -> Result<Result<Vec<RunSpec>, String>, IngestError> {
    // Help is for anyone; every other command needs the permission.
    if !matches!(command.verb, Verb::Help { .. })
        && let Err(why) = may_command(intake, command).await?
    {
        return Ok(Err(why));
    }
    let pull_only = |verb: &Verb| format!("`{}` works on pull requests only", verb.name());
    match &command.verb {
        Verb::Help { problem } => Ok(Err(match problem {
            Some(problem) => format!("{problem}.\n\n{}", help_text()),
            None => help_text(),
        })),
        Verb::Plan | Verb::Apply if !command.is_pull => Ok(Err(pull_only(&command.verb))),
        verb => {
            let repo = &command.repo;
            let mirror = intake.git.fetch(&repo.full_name, repo.sha256).await?;
            let target = match target(intake, &mirror, command).await? {
                Ok(target) => target,
                Err(why) => return Ok(Err(why)),
            };
            let files = intake.git.pipelines_at(&mirror, &target.sha).await?;
            let chosen = match verb {
                Verb::Run { pipeline, inputs } => {
                    run_pipeline(&files, pipeline, inputs, &target.sha).map(|(p, i)| vec![(p, i)])
                }
                Verb::Plan | Verb::Apply => {
                    let mode = if *verb == Verb::Apply {
                        "apply"
                    } else {
                        "plan"
                    };
                    let selected = tofu_pipelines(intake, &mirror, &files, &target).await?;
                    let checked = match (verb, &target.pull) {
                        (Verb::Apply, Some(pull)) if !selected.is_empty() => {
                            match apply_requirements(intake, &mirror, command, pull, &selected)
                                .await?
                            {
                                Ok(()) => {
                                    reviewed_at_head(intake, command, pull, &selected).await?
                                }
                                refused => refused,
                            }
                        }
                        _ => Ok(()),
                    };
                    checked.and_then(|()| {
                        if selected.is_empty() {
                            return Err(
                                "this pull request selects no pipeline with a `uses: tofu` step"
                                    .into(),
                            );
                        }
                        Ok(selected
                            .into_iter()
                            .map(|p| {
                                let mut inputs = default_inputs(p);
                                inputs.retain(|(k, _)| k != "mode");
                                inputs.push(("mode".into(), mode.into()));
                                (p, inputs)
                            })
                            .collect())
                    })
                }
                Verb::Help { .. } => unreachable!("answered above"),
            };
            let chosen = match chosen {
                Ok(chosen) => chosen,
                Err(why) => return Ok(Err(why)),
            };
            Ok(Ok(chosen
                .into_iter()
                .map(|(pipeline, inputs)| run_spec(repo, command, &target, pipeline, inputs))
                .collect()))
        }
    }
}

fn run_spec(
    repo: &RepoInfo,
    command: &Command,
    target: &Target,
    pipeline: &Pipeline,
    inputs: Vec<(String, String)>,
) -> RunSpec {
    let cx = RunContext {
        repo: repo.full_name.clone(),
        sha: target.sha.clone(),
        git_ref: target.git_ref.clone(),
        event: EventKind::Comment,
        pr: target.pr.map(|n| n as u64),
        run_id: String::new(),
        actor: command.actor.clone(),
        inputs,
    };
    let source = Source::Comment {
        actor: &command.actor,
        comment_id: command.comment_id,
        pr: target.pr,
        from_fork: target.from_fork,
    };
    RunSpec::new(repo, &cx, FileAt::Valid(pipeline), source)
}

/// Whether the commenter may give commands: listed in `[[repos]].commenters` when that is
/// set, else `write` permission or more as Gitea says.
async fn may_command(
    intake: &Intake<'_>,
    command: &Command,
) -> Result<Result<(), String>, IngestError> {
    let repo = &command.repo.full_name;
    let listed = intake
        .config
        .repo_policy(repo)
        .and_then(|p| p.commenters.as_ref());
    if let Some(listed) = listed {
        return Ok(
            match listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&command.actor))
            {
                true => Ok(()),
                false => Err(format!(
                    "@{} is not in [[repos]].commenters of {repo}",
                    command.actor
                )),
            },
        );
    }
    Ok(match intake.gitea.access(repo, &command.actor).await? {
        access if access.may_write() => Ok(()),
        Access::CannotAsk => Err(format!(
            "Gitea does not tell Pipewright's user the permissions of @{} (it must be an admin of {repo}, or [[repos]].commenters must list who may give commands)",
            command.actor
        )),
        Access::Level(level) => Err(format!(
            "@{} may not give commands in {repo}: Gitea gives them `{level}` permission, and `write` is needed",
            command.actor
        )),
    })
}

/// The commit and ref a command runs on, checked against the mirror.
async fn target(
    intake: &Intake<'_>,
    mirror: &Mirror,
    command: &Command,
) -> Result<Result<Target, String>, IngestError> {
    let repo = &command.repo;
    if !command.is_pull {
        let branch = &repo.default_branch;
        let Some(sha) = intake
            .git
            .resolve(mirror, &format!("refs/heads/{branch}"))
            .await
        else {
            return Ok(Err(format!("{} has no branch `{branch}`", repo.full_name)));
        };
        return Ok(Ok(Target {
            git_ref: GitRef::Branch(branch.clone()),
            sha,
            pr: None,
            from_fork: false,
            pull: None,
        }));
    }
    let number = command.number;
    let Some(pull) = intake.gitea.pull(&repo.full_name, number).await? else {
        return Ok(Err(format!("#{number} is not a pull request")));
    };
    if pull.merged {
        return Ok(Err("the pull request is merged".into()));
    }
    if pull.state != "open" {
        return Ok(Err("the pull request is closed".into()));
    }
    let base = pull
        .base
        .git_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&pull.base.git_ref)
        .to_string();
    if !crate::checked::is_ref_name(&base) || !crate::checked::is_commit_id(&pull.head.sha) {
        return Ok(Err(
            "Gitea's answer about the pull request is not usable".into()
        ));
    }
    let pull_ref = format!("refs/pull/{number}/head");
    let head = intake.git.resolve(mirror, &pull_ref).await;
    if head.as_deref() != Some(pull.head.sha.as_str()) {
        return Ok(Err(format!(
            "Gitea says the head is {} but {pull_ref} is {}: try again in a moment",
            short(&pull.head.sha),
            head.as_deref().map_or("missing", short)
        )));
    }
    // The same verdict as for the pull request's own runs: a fork's (or an AGit author's
    // without write access) gets no secrets, whoever comments.
    let event = Event::PullRequest {
        repo: repo.clone(),
        number,
        base_branch: base.clone(),
        head_sha: pull.head.sha.clone(),
        head_repo_id: pull.head.repo_id,
        author: pull
            .user
            .as_ref()
            .map(|u| u.login.clone())
            .unwrap_or_default(),
        action: "comment".into(),
        actor: command.actor.clone(),
    };
    let from_fork = untrusted_pull_request(intake, &event).await?;
    Ok(Ok(Target {
        git_ref: GitRef::Branch(base),
        sha: pull.head.sha.clone(),
        pr: Some(number),
        from_fork,
        pull: Some(pull),
    }))
}

/// A pipeline a command runs, with the run's inputs.
type Chosen<'f> = (&'f Pipeline, Vec<(String, String)>);

/// `/pipewright run`: the pipeline and its inputs, checked like a dispatch's.
fn run_pipeline<'f>(
    files: &'f [pipewright_pipelines::ParsedFile],
    name: &str,
    given: &[(String, String)],
    sha: &str,
) -> Result<Chosen<'f>, String> {
    let shown = format!("{name:?}");
    let Some(file) = files.iter().find(|f| f.name == name) else {
        return Err(format!("there is no pipeline {shown} at `{}`", short(sha)));
    };
    let pipeline = file.result.as_ref().map_err(|diags| {
        let first = diags.first().map(|d| d.to_string()).unwrap_or_default();
        format!("pipeline {shown} is invalid: {first}")
    })?;
    let inputs = resolve_inputs(pipeline, given).map_err(|errors| errors.join("; "))?;
    if has_tofu(pipeline) && inputs.iter().any(|(k, v)| k == "mode" && v == "apply") {
        return Err(
            "`mode=apply` is for `/pipewright apply`, which checks the apply requirements".into(),
        );
    }
    Ok((pipeline, inputs))
}

fn has_tofu(pipeline: &Pipeline) -> bool {
    pipeline
        .steps
        .iter()
        .any(|s| matches!(&s.kind, StepKind::Uses { action, .. } if action == "tofu"))
}

/// The pull request's tofu pipelines: those with a `uses: tofu` step that its
/// `pull_request` event selects (paths included).
async fn tofu_pipelines<'f>(
    intake: &Intake<'_>,
    mirror: &Mirror,
    files: &'f [pipewright_pipelines::ParsedFile],
    target: &Target,
) -> Result<Vec<&'f Pipeline>, IngestError> {
    let base_ref = target.git_ref.full();
    let changes = match intake.git.merge_base(mirror, &base_ref, &target.sha).await {
        Some(base) => intake.git.changed_files(mirror, &base, &target.sha).await?,
        None => intake.git.all_files(mirror, &target.sha).await?,
    };
    let trigger = Trigger {
        kind: EventKind::PullRequest,
        git_ref: target.git_ref.clone(),
        changes: Changes::Files(changes),
    };
    Ok(files
        .iter()
        .filter_map(|f| f.result.as_ref().ok())
        .filter(|p| has_tofu(p) && selects(p, &trigger))
        .collect())
}

/// The applied plan is the reviewed plan: each pipeline's plan in the pull request's
/// comment must have been made on its head (the worker checks it again before applying).
async fn reviewed_at_head(
    intake: &Intake<'_>,
    command: &Command,
    pull: &PullState,
    pipelines: &[&Pipeline],
) -> Result<Result<(), String>, IngestError> {
    let repo = &command.repo.full_name;
    for pipeline in pipelines {
        let plan = intake
            .store
            .reviewed_plan(repo, command.number, &pipeline.name)
            .await?;
        match plan {
            None => {
                return Ok(Err(format!(
                    "there is no plan of `{}` to apply: comment `/pipewright plan` first",
                    pipeline.name
                )));
            }
            Some(plan) if plan.sha != pull.head.sha => {
                return Ok(Err(format!(
                    "re-plan first: head moved from {} to {}",
                    short(&plan.sha),
                    short(&pull.head.sha)
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Ok(()))
}

/// Before a push to the default branch is planned: when it is the merge commit of a pull
/// request (Gitea's `/commits/{sha}/pull`) and the repository has plans applied with
/// `/pipewright apply`, remember it, so that its runs apply only the reviewed changes.
pub async fn remember_merge(
    intake: &Intake<'_>,
    repo: &RepoInfo,
    sha: &str,
) -> Result<(), IngestError> {
    if !intake.store.has_applied_plans(&repo.full_name).await? {
        return Ok(());
    }
    if let Some(pull) = intake.gitea.pull_of_merge(&repo.full_name, sha).await?
        && pull.merged
        && pull.number > 0
    {
        intake
            .store
            .remember_merge(&repo.full_name, sha, pull.number)
            .await?;
    }
    Ok(())
}

/// `[[repos]].apply_requirements`, each read from Gitea (and git, for `undiverged`).
async fn apply_requirements(
    intake: &Intake<'_>,
    mirror: &Mirror,
    command: &Command,
    pull: &PullState,
    pipelines: &[&Pipeline],
) -> Result<Result<(), String>, IngestError> {
    let repo = &command.repo.full_name;
    for requirement in intake.config.apply_requirements(repo) {
        let problem = match requirement {
            ApplyRequirement::Approved => {
                let reviews = intake.gitea.reviews(repo, command.number).await?;
                let author = pull.user.as_ref().map(|u| u.login.as_str()).unwrap_or("");
                (!approved(&reviews, author)).then(|| {
                    "it is not approved: it needs an approving review by someone other than its author that is neither stale nor dismissed".to_string()
                })
            }
            ApplyRequirement::Mergeable => {
                if !pull.mergeable {
                    Some("it is not mergeable: Gitea says it cannot be merged".to_string())
                } else {
                    let ours: Vec<String> = pipelines
                        .iter()
                        .map(|p| format!("pipewright/{}", p.name))
                        .collect();
                    let statuses = intake.gitea.commit_statuses(repo, &pull.head.sha).await?;
                    statuses
                        .iter()
                        .find(|s| !ours.contains(&s.context) && s.status != "success")
                        .map(|s| {
                            format!(
                                "it is not mergeable: `{}` is `{}` on {}",
                                s.context.escape_debug(),
                                s.status.escape_debug(),
                                short(&pull.head.sha)
                            )
                        })
                }
            }
            ApplyRequirement::Undiverged => diverged(intake, mirror, pull, pipelines).await?,
        };
        if let Some(problem) = problem {
            return Ok(Err(problem));
        }
    }
    Ok(Ok(()))
}

/// Whether someone other than `author` approves: each reviewer's latest verdict
/// (`APPROVED` or `REQUEST_CHANGES`) that was not dismissed counts, and an approval counts
/// only while it is not stale.
pub fn approved(reviews: &[crate::gitea::pulls::Review], author: &str) -> bool {
    let mut latest: Vec<(&str, &crate::gitea::pulls::Review)> = Vec::new();
    for review in reviews
        .iter()
        .filter(|r| matches!(r.state.as_str(), "APPROVED" | "REQUEST_CHANGES") && !r.dismissed)
    {
        let Some(login) = review.user.as_ref().map(|u| u.login.as_str()) else {
            continue;
        };
        match latest
            .iter_mut()
            .find(|(l, _)| l.eq_ignore_ascii_case(login))
        {
            Some(entry) if entry.1.id < review.id => entry.1 = review,
            Some(_) => {}
            None => latest.push((login, review)),
        }
    }
    latest.iter().any(|(login, review)| {
        !login.eq_ignore_ascii_case(author)
            && !author.is_empty()
            && review.state == "APPROVED"
            && !review.stale
    })
}

/// `undiverged`: whether the base branch changed, since the pull request's merge base, a
/// path that selects one of the pipelines; the problem when it did.
async fn diverged(
    intake: &Intake<'_>,
    mirror: &Mirror,
    pull: &PullState,
    pipelines: &[&Pipeline],
) -> Result<Option<String>, IngestError> {
    let base_ref = format!(
        "refs/heads/{}",
        pull.base
            .git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(&pull.base.git_ref)
    );
    let Some(tip) = intake.git.resolve(mirror, &base_ref).await else {
        return Ok(Some(format!("its base branch {base_ref} does not exist")));
    };
    let Some(fork_point) = intake
        .git
        .merge_base(mirror, &base_ref, &pull.head.sha)
        .await
    else {
        return Ok(Some("it shares no history with its base branch".into()));
    };
    if fork_point == tip {
        return Ok(None);
    }
    let changed = intake.git.changed_files(mirror, &fork_point, &tip).await?;
    let trigger = Trigger {
        kind: EventKind::PullRequest,
        git_ref: GitRef::Branch(base_ref.trim_start_matches("refs/heads/").to_string()),
        changes: Changes::Files(changed),
    };
    Ok(pipelines
        .iter()
        .find(|p| selects(p, &trigger))
        .map(|p| {
            format!(
                "it has diverged: its base branch changed paths of pipeline `{}` since {}; merge or rebase it, then plan again",
                p.name,
                short(&fork_point)
            )
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitea::{payload::User, pulls::Review};

    fn review(id: i64, login: &str, state: &str, stale: bool, dismissed: bool) -> Review {
        Review {
            id,
            user: Some(User {
                id: 0,
                login: login.into(),
            }),
            state: state.into(),
            commit_id: String::new(),
            stale,
            dismissed,
        }
    }

    #[test]
    fn who_approves() {
        let yes = |reviews: &[Review]| approved(reviews, "mallory");
        assert!(!yes(&[]));
        assert!(yes(&[review(1, "bob", "APPROVED", false, false)]));
        assert!(
            !yes(&[review(1, "mallory", "APPROVED", false, false)]),
            "its author"
        );
        assert!(!yes(&[review(1, "bob", "APPROVED", true, false)]), "stale");
        assert!(
            !yes(&[review(1, "bob", "APPROVED", false, true)]),
            "dismissed"
        );
        assert!(!yes(&[review(1, "bob", "COMMENT", false, false)]));
        assert!(!yes(&[review(1, "bob", "PENDING", false, false)]));
        assert!(
            !yes(&[
                review(1, "bob", "APPROVED", false, false),
                review(2, "Bob", "REQUEST_CHANGES", false, false),
            ]),
            "changes requested later"
        );
        assert!(yes(&[
            review(1, "bob", "APPROVED", true, false),
            review(2, "bob", "APPROVED", false, false),
        ]));
        assert!(yes(&[
            review(1, "carol", "REQUEST_CHANGES", false, true),
            review(2, "bob", "APPROVED", false, false),
        ]));
        assert!(!approved(&[review(1, "bob", "APPROVED", false, false)], ""));
    }

    #[test]
    fn the_help_is_never_a_command() {
        assert_eq!(crate::events::parse_command(&help_text()), None);
    }
}
