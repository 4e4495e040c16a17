//! Carries out a `uses:` step: the action's commands in containers (same limits, mounts and
//! environment as a `run:` step), its output in the step's log, its results read back.
//!
//! Every path an action takes from `with:` (`context`, `dockerfile`, `path`, `var_files`,
//! `files`) is resolved on the host, symbolic links followed, and must name something inside
//! the run's workspace; the commands then get the resolved path, so a container reads what
//! was checked. A pull request's checkout is hostile input: a link in it may point anywhere.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use pipewright_actions::{
    Action, ActionContext,
    image::Image,
    postgres::{Credentials, Postgres},
    tofu::{Decision, PlanSummary, Tofu},
};
use pipewright_containers::{
    BuildOutcome, BuildSpec, CancellationToken, ExecError, Executor, LogSink, Outcome, PushOutcome,
    RegistryAuth, StepSpec, Stream,
};
use pipewright_pipelines::{EventKind, Patterns, PlannedStep, Resolved};

use crate::{
    mask::Masker,
    step_io::{RunObserver, RunSetup, StepResult, StepSink},
};

/// An action step about to run.
pub(crate) struct ActionStep<'a> {
    pub step: &'a PlannedStep,
    pub action: &'a str,
    pub with: &'a [(String, Resolved)],
    /// The step's container, without image and command.
    pub spec: StepSpec,
    pub setup: &'a RunSetup<'a>,
    pub secret_values: &'a [String],
    /// Secret variables the step's shell reads from its environment file, not in `spec.env`.
    pub sourced_env: &'a [(String, String)],
}

/// How it went, and what it found out.
pub(crate) struct ActionRan {
    pub result: StepResult,
    /// The status description (`plan: 1 to add, …`, `pushed …@sha256:…`).
    pub summary: Option<String>,
    pub plan: Option<PlanSummary>,
    /// The saved plan file a `tofu` step planned (not one it was given).
    pub saved_plan: Option<Vec<u8>>,
    /// Local images to remove when the run ends (a pull request's builds).
    pub leftovers: Vec<String>,
}

impl ActionRan {
    fn result(result: StepResult) -> ActionRan {
        ActionRan {
            result,
            summary: None,
            plan: None,
            saved_plan: None,
            leftovers: Vec::new(),
        }
    }
}

/// `rel` (a path inside the repository, from `with.KEY`) resolved on the host with its
/// symbolic links followed: the path, relative to the workspace, that it really names. `Err`
/// (for the user) when it does not exist or leads outside the workspace.
fn inside_workspace(workspace: &Path, key: &str, rel: &str) -> Result<String, String> {
    let root =
        fs::canonicalize(workspace).map_err(|e| format!("the workspace cannot be opened: {e}"))?;
    let resolved = match fs::canonicalize(root.join(rel)) {
        Ok(path) => path,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "`with.{key}`: `{rel}` does not exist in the repository (or is a broken link)"
            ));
        }
        Err(e) => return Err(format!("`with.{key}`: `{rel}` cannot be read: {e}")),
    };
    let refused = || {
        format!(
            "`with.{key}`: `{rel}` leads outside the workspace through a symbolic link: refused"
        )
    };
    let inside = resolved.strip_prefix(&root).map_err(|_| refused())?;
    match inside.to_str() {
        Some("") => Ok(".".into()),
        Some(path) => Ok(path.to_string()),
        None => Err(format!("`with.{key}`: `{rel}` is not a UTF-8 path")),
    }
}

pub(crate) async fn run<E: Executor, O: RunObserver>(
    executor: &E,
    a: ActionStep<'_>,
    sink: &mut StepSink<'_, O>,
    cancel: &CancellationToken,
) -> Result<ActionRan, ExecError> {
    let facts = a.setup.facts;
    let cx = ActionContext {
        event: facts.event,
        git_ref: facts.git_ref,
        default_branch: facts.default_branch,
        inputs: facts.inputs,
        step: &a.step.name,
    };
    let action = match pipewright_actions::prepare(a.action, a.with, &cx) {
        Ok(action) => action,
        Err(e) => {
            return Ok(ActionRan::result(StepResult::Failed(format!(
                "uses {}: {e}",
                a.action
            ))));
        }
    };
    let refused = |why: String| {
        Ok(ActionRan::result(StepResult::Failed(format!(
            "uses {}: {why}",
            a.action
        ))))
    };
    match action {
        Action::Tofu(mut tofu) => {
            if let Err(why) = resolve_tofu(a.setup.workspace, &mut tofu) {
                return refused(why);
            }
            if let Some(reviewed) = facts.reviewed {
                tofu.reviewed = Some(reviewed.reviewed.clone());
                if let Some((_, bytes)) = reviewed.saved.iter().find(|(s, _)| *s == a.step.name) {
                    if let Err(why) = place_saved_plan(a.setup.workspace, &tofu, bytes) {
                        return refused(why);
                    }
                    tofu.saved_plan = true;
                }
            }
            run_tofu(executor, &tofu, a.spec, a.setup.workspace, sink, cancel).await
        }
        Action::Image(image) => run_image(executor, &image, &a, sink, cancel).await,
        Action::Postgres(pg) => run_postgres(executor, &pg, &a, sink, cancel).await,
    }
}

/// Points the tofu commands at the resolved module directory and variable files.
fn resolve_tofu(workspace: &Path, tofu: &mut Tofu) -> Result<(), String> {
    let module = inside_workspace(workspace, "path", &tofu.path)?;
    for file in &mut tofu.var_files {
        let rel = inside_workspace(workspace, "var_files", &format!("{}/{file}", tofu.path))?;
        *file = pipewright_actions::in_workspace(&rel);
    }
    tofu.workdir = pipewright_actions::in_workspace(&module);
    Ok(())
}

/// Where a tofu step's plan file is on the host (its module directory, resolved inside the
/// workspace by [`resolve_tofu`]).
fn plan_path(workspace: &Path, tofu: &Tofu) -> PathBuf {
    let module = tofu
        .workdir
        .strip_prefix(crate::step_io::WORKSPACE)
        .unwrap_or("")
        .trim_start_matches('/');
    workspace.join(module).join(&tofu.plan_file)
}

/// Opens a file of the checkout without following a symbolic link in its last part (the
/// directories were resolved inside the workspace already): a pull request may commit a
/// link where the plan file goes.
fn open_no_follow(options: &mut fs::OpenOptions, path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    options
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Puts the reviewed plan file where the step's `tofu apply` reads it, replacing whatever
/// the checkout has there (never writing through a link).
fn place_saved_plan(workspace: &Path, tofu: &Tofu, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let path = plan_path(workspace, tofu);
    let refused = |e: io::Error| format!("the reviewed plan cannot be put in the workspace: {e}");
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            return Err(format!(
                "the checkout has a directory where the plan file goes ({})",
                tofu.plan_file
            ));
        }
        Ok(_) => fs::remove_file(&path).map_err(refused)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(refused(e)),
    }
    let mut file = open_no_follow(fs::OpenOptions::new().write(true).create_new(true), &path)
        .map_err(refused)?;
    file.write_all(bytes).map_err(refused)
}

/// The plan file a step just wrote, read without following a link, at most `limit` bytes.
fn read_saved_plan(workspace: &Path, tofu: &Tofu, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let path = plan_path(workspace, tofu);
    let file = open_no_follow(fs::OpenOptions::new().read(true), &path)
        .map_err(|e| format!("the plan file cannot be kept: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("the plan file cannot be kept: {e}"))?;
    if !meta.is_file() || meta.len() > limit {
        return Err("the plan file cannot be kept: not a file, or too large".into());
    }
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("the plan file cannot be kept: {e}"))?;
    Ok(bytes)
}

fn log_io(e: std::io::Error) -> ExecError {
    ExecError::Sink(e)
}

/// The step's container running one command of its action.
fn with_command(
    base: &StepSpec,
    image: &str,
    workdir: &str,
    argv: Vec<String>,
    env: &[(String, String)],
) -> StepSpec {
    let mut spec = base.clone();
    spec.image = image.to_string();
    spec.working_dir = workdir.to_string();
    spec.command = argv;
    spec.env.extend(env.iter().cloned());
    spec
}

/// Collects a command's standard output (the plan JSON) instead of logging it; its
/// standard error still goes to the log.
struct Capture<'s, S: LogSink + ?Sized> {
    log: &'s mut S,
    stdout: Vec<u8>,
    limit: usize,
}

impl<S: LogSink + ?Sized> LogSink for Capture<'_, S> {
    fn line(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
        match stream {
            Stream::Stdout if self.stdout.len() + line.len() <= self.limit => {
                self.stdout.extend_from_slice(line);
                Ok(())
            }
            Stream::Stdout => Err(std::io::Error::other(
                "the plan JSON is larger than Pipewright reads",
            )),
            Stream::Stderr => self.log.line(stream, line),
        }
    }

    fn piece(&mut self, stream: Stream, piece: &[u8]) -> std::io::Result<()> {
        match stream {
            Stream::Stdout => self.line(stream, piece),
            Stream::Stderr => self.log.piece(stream, piece),
        }
    }
}

fn failed_outcome(what: &str, outcome: Outcome) -> StepResult {
    match outcome {
        Outcome::Failed { exit_code } => {
            StepResult::Failed(format!("{what} exited with {exit_code}"))
        }
        other => StepResult::Ran(other),
    }
}

async fn run_tofu<E: Executor, O: RunObserver>(
    executor: &E,
    tofu: &Tofu,
    base: StepSpec,
    workspace: &Path,
    sink: &mut StepSink<'_, O>,
    cancel: &CancellationToken,
) -> Result<ActionRan, ExecError> {
    let env = [
        ("TF_IN_AUTOMATION".to_string(), "1".to_string()),
        ("TF_INPUT".to_string(), "0".to_string()),
    ];
    let run = |argv: Vec<String>| (tofu.image.as_str(), tofu.workdir.as_str(), argv);
    let mut commands = vec![("tofu init", tofu.init())];
    if tofu.saved_plan {
        sink.note("applying the reviewed plan: no new plan")
            .map_err(log_io)?;
    } else {
        commands.push(("tofu plan", tofu.plan()));
    }
    for (what, argv) in commands {
        sink.note(&format!("$ {}", argv.join(" ")))
            .map_err(log_io)?;
        let (image, dir, argv) = run(argv);
        let outcome = executor
            .run_step(&with_command(&base, image, dir, argv, &env), sink, cancel)
            .await?;
        if outcome != Outcome::Succeeded {
            return Ok(ActionRan::result(failed_outcome(what, outcome)));
        }
    }
    let mut capture = Capture {
        log: &mut *sink,
        stdout: Vec::new(),
        limit: 256 << 20,
    };
    let (image, dir, argv) = run(tofu.show());
    let outcome = executor
        .run_step(
            &with_command(&base, image, dir, argv, &env),
            &mut capture,
            cancel,
        )
        .await?;
    let json = std::mem::take(&mut capture.stdout);
    if outcome != Outcome::Succeeded {
        return Ok(ActionRan::result(failed_outcome(
            "tofu show -json",
            outcome,
        )));
    }
    let plan = match PlanSummary::from_show_json(&json) {
        Ok(plan) => plan,
        Err(why) => return Ok(ActionRan::result(StepResult::Failed(why))),
    };
    // A plan of a pull request is kept, for `/pipewright apply` to apply exactly it.
    let saved_plan = match (tofu.saved_plan, tofu.apply) {
        (false, false) => match read_saved_plan(workspace, tofu, 256 << 20) {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                sink.note(&why).map_err(log_io)?;
                None
            }
        },
        _ => None,
    };
    sink.note(&plan.describe()).map_err(log_io)?;
    for change in &plan.changes {
        sink.note(&format!("  {} {}", change.action, change.address))
            .map_err(log_io)?;
    }
    let (result, summary) = match tofu.decide(&plan) {
        Decision::Done(description) => (StepResult::Ran(Outcome::Succeeded), description),
        Decision::Fail(why) => {
            sink.note(&why).map_err(log_io)?;
            (StepResult::Failed(why.clone()), why)
        }
        Decision::Apply => {
            let argv = tofu.apply();
            sink.note(&format!("$ {}", argv.join(" ")))
                .map_err(log_io)?;
            let (image, dir, argv) = run(argv);
            let outcome = executor
                .run_step(&with_command(&base, image, dir, argv, &env), sink, cancel)
                .await?;
            let applied = format!(
                "applied: {} to add, {} to change, {} to destroy",
                plan.add, plan.change, plan.destroy
            );
            match outcome {
                Outcome::Succeeded => (StepResult::Ran(Outcome::Succeeded), applied),
                other => (failed_outcome("tofu apply", other), plan.describe()),
            }
        }
    };
    Ok(ActionRan {
        result,
        summary: Some(summary),
        plan: Some(plan),
        saved_plan,
        leftovers: Vec::new(),
    })
}

async fn run_image<E: Executor, O: RunObserver>(
    executor: &E,
    image: &Image,
    a: &ActionStep<'_>,
    sink: &mut StepSink<'_, O>,
    cancel: &CancellationToken,
) -> Result<ActionRan, ExecError> {
    let facts = a.setup.facts;
    let workspace = a.setup.workspace;
    let checked = inside_workspace(workspace, "context", &image.context).and_then(|context| {
        let dockerfile = match context.as_str() {
            "." => image.dockerfile.clone(),
            dir => format!("{dir}/{}", image.dockerfile),
        };
        inside_workspace(workspace, "dockerfile", &dockerfile).map(|_| context)
    });
    let context = match checked {
        Ok(context) => context,
        Err(why) => {
            return Ok(ActionRan::result(StepResult::Failed(format!(
                "uses image: {why}"
            ))));
        }
    };
    // A pull request builds under a name of its run only, so that it replaces no image
    // another run uses; a fork's never pushes.
    let local = (facts.event == EventKind::PullRequest).then(|| {
        pipewright_actions::image::pull_request_name(facts.repo, a.setup.run_id, a.step.index)
    });
    let push = image.push && !facts.from_fork;
    let mut tags = Vec::new();
    tags.extend(local.clone());
    if local.is_none() || push {
        tags.extend(image.tags.iter().cloned());
    }
    let spec = BuildSpec {
        context: workspace.join(&context),
        within: Some(PathBuf::from(workspace)),
        dockerfile: image.dockerfile.clone(),
        tags: tags.clone(),
        build_args: image.build_args.clone(),
        labels: vec![("io.pipewright.run".into(), a.setup.run_id.to_string())],
        memory_bytes: a.spec.memory_bytes,
    };
    sink.note(&format!(
        "building {} ({} in {})",
        image.tags.join(", "),
        image.dockerfile,
        image.context
    ))
    .map_err(log_io)?;
    if let Some(local) = &local {
        sink.note(&format!(
            "pull request: built as {local}, not under the pipeline's names; removed when the run ends"
        ))
        .map_err(log_io)?;
    }
    if image.push && facts.from_fork {
        sink.note("pull request from a fork: the image is not pushed")
            .map_err(log_io)?;
    }
    // Removed once the run ends, pushed or not: a pull request leaves no local image.
    let leftovers = if local.is_some() { tags } else { Vec::new() };
    let built = executor.build_image(&spec, sink, cancel).await?;
    let ended = |result: StepResult, summary: Option<String>| ActionRan {
        result,
        summary,
        plan: None,
        saved_plan: None,
        leftovers: leftovers.clone(),
    };
    let image_id = match built {
        BuildOutcome::Built { image_id } => image_id,
        BuildOutcome::Failed { reason } => {
            return Ok(ended(StepResult::Failed(format!("build: {reason}")), None));
        }
        BuildOutcome::Cancelled => {
            return Ok(ended(StepResult::Ran(Outcome::Cancelled), None));
        }
    };
    sink.note(&format!("built {image_id}")).map_err(log_io)?;
    if !push {
        let summary = match &local {
            Some(local) => format!("built {local} for {} (not pushed)", image.tags[0]),
            None => format!("built {} (not pushed)", image.tags[0]),
        };
        return Ok(ended(StepResult::Ran(Outcome::Succeeded), Some(summary)));
    }
    let auth = match (&image.username, &image.password_secret) {
        (Some(username), Some(secret)) => {
            let Some(password) = a
                .spec
                .env
                .iter()
                .chain(a.sourced_env)
                .rev()
                .find(|(k, _)| k == secret)
                .map(|(_, v)| v.clone())
            else {
                let why = format!(
                    "password_secret `{secret}` is not among the step's variables (add it to vault.secrets)"
                );
                return Ok(ended(StepResult::Unrunnable(why), None));
            };
            let server = image
                .registry
                .clone()
                .unwrap_or_else(|| registry_of(&image.tags[0]));
            Some(RegistryAuth {
                username: username.clone(),
                password,
                server,
            })
        }
        _ => None,
    };
    let mut pushed = Vec::new();
    for tag in &image.tags {
        match executor.push_image(tag, auth.as_ref(), sink).await? {
            PushOutcome::Pushed { digest } => {
                sink.note(&format!("pushed {tag}@{digest}"))
                    .map_err(log_io)?;
                pushed.push(format!("{tag}@{digest}"));
            }
            PushOutcome::Failed { reason } => {
                let why = format!("push of {tag}: {reason}");
                return Ok(ended(StepResult::Unrunnable(why), None));
            }
        }
    }
    let summary = format!("pushed {}", pushed[0]);
    // Pushed, the local copies only take space (the registry has them): removed when the
    // run ends, except the references kept from the engine's GC (`[docker].pin_images`).
    let mut ran = ended(StepResult::Ran(Outcome::Succeeded), Some(summary));
    if let Some(kept) = a.setup.remove_pushed {
        let removed: Vec<String> = image
            .tags
            .iter()
            .filter(|tag| !kept.contains(tag) && !ran.leftovers.contains(tag))
            .cloned()
            .collect();
        if !removed.is_empty() {
            sink.note(&format!(
                "removing the local {} when the run ends (pushed)",
                removed.join(", ")
            ))
            .map_err(log_io)?;
        }
        ran.leftovers.extend(removed);
    }
    Ok(ran)
}

/// The registry host of an image reference (`reg.lab:5000/team/app:1` → `reg.lab:5000`).
fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

async fn run_postgres<E: Executor, O: RunObserver>(
    executor: &E,
    pg: &Postgres,
    a: &ActionStep<'_>,
    sink: &mut StepSink<'_, O>,
    cancel: &CancellationToken,
) -> Result<ActionRan, ExecError> {
    let files = match resolve_files(a.setup.workspace, &pg.files) {
        Ok(files) => files,
        Err(why) => return Ok(ActionRan::result(StepResult::Failed(why))),
    };
    let services = a.setup.services;
    let (user, password, lease) = match &pg.credentials {
        Credentials::Kv(path) => match services.read_kv(path).await {
            Ok(data) => match (data.get("username"), data.get("password")) {
                (Some(u), Some(p)) => (u.clone(), p.clone(), None),
                _ => {
                    let why = format!(
                        "the Vault secret `{path}` needs the keys `username` and `password`"
                    );
                    return Ok(ActionRan::result(StepResult::Unrunnable(why)));
                }
            },
            Err(why) => return Ok(ActionRan::result(StepResult::Unrunnable(why))),
        },
        Credentials::DatabaseRole { mount, role } => {
            match services.database_credentials(mount, role).await {
                Ok(c) => (c.username, c.password, Some(c.lease_id)),
                Err(why) => return Ok(ActionRan::result(StepResult::Unrunnable(why))),
            }
        }
    };
    // The password is masked like any secret: in this step's log and its description.
    let mut values: Vec<String> = a.secret_values.to_vec();
    values.push(password.clone());
    sink.masker = Masker::new(values.iter().map(String::as_str));
    sink.note(&format!(
        "connecting to {}:{}/{} as {user}",
        pg.host, pg.port, pg.database
    ))
    .map_err(log_io)?;
    let mut env = pg.env(&user);
    env.push(("PGPASSWORD".into(), password));
    let result = run_sql(executor, pg, &a.spec, &files, &env, sink, cancel).await;
    if let Some(lease) = lease {
        match services.revoke_lease(&lease).await {
            Ok(()) => sink.note("database credentials revoked").map_err(log_io)?,
            Err(why) => sink
                .note(&format!("failed to revoke the database credentials: {why}"))
                .map_err(log_io)?,
        }
    }
    let result = result?;
    let summary = matches!(result, StepResult::Ran(Outcome::Succeeded))
        .then(|| format!("ran {} SQL files", files.len()));
    Ok(ActionRan {
        result,
        summary,
        plan: None,
        saved_plan: None,
        leftovers: Vec::new(),
    })
}

/// Remembers the last `psql:FILE:LINE: ERROR` line for the failure's description.
struct LastError<'s, S: LogSink + ?Sized> {
    log: &'s mut S,
    error: Option<String>,
    /// The next standard error line ends a line that came in pieces.
    cut: bool,
}

impl<S: LogSink + ?Sized> LogSink for LastError<'_, S> {
    fn piece(&mut self, stream: Stream, piece: &[u8]) -> std::io::Result<()> {
        // The end of a cut line is no error line of its own (and could hold the end of a
        // secret that its masking cannot recognise alone).
        self.cut |= stream == Stream::Stderr;
        self.log.piece(stream, piece)
    }

    fn line(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
        if stream == Stream::Stderr && std::mem::take(&mut self.cut) {
            return self.log.line(stream, line);
        }
        if stream == Stream::Stderr {
            let text = String::from_utf8_lossy(line);
            if text.starts_with("psql:") && text.contains("ERROR") {
                self.error = Some(text.into_owned());
            }
        }
        self.log.line(stream, line)
    }
}

async fn run_sql<E: Executor, O: RunObserver>(
    executor: &E,
    pg: &Postgres,
    base: &StepSpec,
    files: &[String],
    env: &[(String, String)],
    sink: &mut StepSink<'_, O>,
    cancel: &CancellationToken,
) -> Result<StepResult, ExecError> {
    // Wait until the server accepts connections (a database just started, say).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut quiet = Discard;
        let outcome = executor
            .run_step(
                &with_command(base, &pg.image, "/workspace", pg.ready(), env),
                &mut quiet,
                cancel,
            )
            .await?;
        match outcome {
            Outcome::Succeeded => break,
            Outcome::Failed { .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Outcome::Failed { .. } => {
                return Ok(StepResult::Unrunnable(format!(
                    "PostgreSQL at {}:{} did not accept connections within 60s",
                    pg.host, pg.port
                )));
            }
            other => return Ok(StepResult::Ran(other)),
        }
    }
    for file in files {
        sink.note(&format!("$ psql --single-transaction -f {file}"))
            .map_err(log_io)?;
        let mut watch = LastError {
            log: &mut *sink,
            error: None,
            cut: false,
        };
        let outcome = executor
            .run_step(
                &with_command(base, &pg.image, "/workspace", pg.run_file(file), env),
                &mut watch,
                cancel,
            )
            .await?;
        let error = watch.error.take();
        match outcome {
            Outcome::Succeeded => {}
            Outcome::Failed { .. } => {
                let why = error.unwrap_or_else(|| format!("psql failed on {file}"));
                return Ok(StepResult::Failed(
                    why.trim_start_matches("psql:")
                        .replacen("/workspace/", "", 1),
                ));
            }
            other => return Ok(StepResult::Ran(other)),
        }
    }
    Ok(StepResult::Ran(Outcome::Succeeded))
}

struct Discard;

impl LogSink for Discard {
    fn line(&mut self, _: Stream, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// The SQL files, in the order given; a glob's matches in name order; each resolved to what
/// it names inside the workspace (a link leading out refuses the step).
fn resolve_files(workspace: &Path, patterns: &[String]) -> Result<Vec<String>, String> {
    match_files(workspace, patterns)?
        .iter()
        .map(|file| inside_workspace(workspace, "files", file))
        .collect()
}

fn match_files(workspace: &Path, patterns: &[String]) -> Result<Vec<String>, String> {
    let all = crate::local::list_files(workspace)
        .map_err(|e| format!("failed to list the workspace: {e}"))?;
    let mut out = Vec::new();
    for pattern in patterns {
        let pattern = pattern.trim_start_matches("./");
        if pattern.contains(['*', '?', '[', '{']) {
            let globs = Patterns::new(&[pattern])
                .map_err(|(_, why)| format!("invalid glob `{pattern}`: {why}"))?;
            let matched: Vec<&String> = all.iter().filter(|f| globs.matches(f)).collect();
            if matched.is_empty() {
                return Err(format!("no file matches `{pattern}`"));
            }
            out.extend(matched.into_iter().cloned());
        } else if all.iter().any(|f| f == pattern) {
            out.push(pattern.to_string());
        } else {
            return Err(format!("no file `{pattern}` in the repository"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temporary directory, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "pipewright-{name}-{}-{}",
                std::process::id(),
                crate::store::now_ms()
            ));
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_plan_file_is_never_read_or_written_through_a_link() {
        let scratch = Scratch::new("plan-links");
        let (workspace, host) = (scratch.0.join("ws"), scratch.0.join("host-secret"));
        fs::create_dir_all(workspace.join("iac")).unwrap();
        fs::write(&host, "host secret").unwrap();
        // A pull request commits a link where the plan file goes.
        let plan = workspace.join("iac/.pipewright-tofu.tfplan");
        std::os::unix::fs::symlink(&host, &plan).unwrap();
        let tofu = Tofu {
            image: "tofu".into(),
            workdir: "/workspace/iac".into(),
            path: "iac".into(),
            var_files: Vec::new(),
            backend_config: Vec::new(),
            apply: false,
            allow_destroy: false,
            fail_on_changes: false,
            plan_file: ".pipewright-tofu.tfplan".into(),
            saved_plan: false,
            reviewed: None,
        };
        assert!(
            read_saved_plan(&workspace, &tofu, 1 << 20).is_err(),
            "kept the host's file"
        );
        place_saved_plan(&workspace, &tofu, b"the reviewed plan").unwrap();
        assert_eq!(fs::read_to_string(&host).unwrap(), "host secret");
        assert!(fs::symlink_metadata(&plan).unwrap().is_file());
        assert_eq!(
            read_saved_plan(&workspace, &tofu, 1 << 20).unwrap(),
            b"the reviewed plan"
        );
        assert!(
            read_saved_plan(&workspace, &tofu, 4).is_err(),
            "over the limit"
        );
    }

    #[test]
    fn registries_of_references() {
        assert_eq!(
            registry_of("gitea.arcodange.lab/arcodange-org/factory:abc"),
            "gitea.arcodange.lab"
        );
        assert_eq!(registry_of("127.0.0.1:5000/org/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
    }
}
