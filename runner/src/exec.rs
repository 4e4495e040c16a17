//! `pipewright exec`: runs pipelines of a local checkout on the local Docker engine, the
//! way the server will run them, printing each step's output as it comes.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use pipewright_containers::{CancellationToken, DockerConfig, DockerExecutor, Stream};
use pipewright_pipelines::{
    Changes, EventKind, GitRef, Pipeline, PlannedAction, PlannedStep, RunContext, SecretTarget,
    Trigger, default_inputs, plan, resolve_inputs, selects,
};

use crate::{
    config::Secret,
    git::git_facts,
    identity::{Issuer, RunClaims},
    local::{copy_tree, list_files, read_pipelines},
    run::{
        ActionServices, NoServices, RunFacts, RunObserver, RunResult, RunSetup, StepDefaults,
        StepExtras, StepResult, run_plan,
    },
    secrets::{read_secret_files, read_secrets},
    secrets_dir::RunSecretsDir,
    vault::{RunToken, Session, Vault},
};

/// What `exec` was asked to do.
#[derive(Debug)]
pub struct ExecArgs {
    pub dir: PathBuf,
    pub event: EventKind,
    pub pipeline: Option<String>,
    pub inputs: Vec<(String, String)>,
    pub changed: Vec<String>,
    pub branch: Option<String>,
    pub docker_host: Option<String>,
    pub vault_addr: Option<String>,
    pub vault_token: Option<String>,
    /// Docker network of step containers (`host` to reach services on 127.0.0.1).
    pub network: Option<String>,
    /// Where the run's secret files go (a tmpfs, checked when a run has some).
    pub secrets_dir: PathBuf,
    /// `false`: secrets through an environment file in `secrets_dir`.
    pub secrets_in_env: bool,
}

/// Exit statuses: the run's result.
pub const EXIT_SUCCESS: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_ERROR: u8 = 2;
pub const EXIT_CANCELLED: u8 = 130;

pub async fn exec(args: ExecArgs, cancel: CancellationToken) -> anyhow::Result<u8> {
    let parsed = read_pipelines(&args.dir)?;
    let facts = git_facts(&args.dir);
    let branch = args
        .branch
        .clone()
        .or(facts.branch.clone())
        .unwrap_or_else(|| "main".into());
    let git_ref = GitRef::Branch(branch.clone());
    let changes = if args.changed.is_empty() {
        Changes::Files(
            list_files(&args.dir)
                .with_context(|| format!("failed to list the files of {}", args.dir.display()))?,
        )
    } else {
        Changes::Files(args.changed.clone())
    };
    let trigger = Trigger {
        kind: args.event,
        git_ref: git_ref.clone(),
        changes,
    };

    let mut worst = EXIT_SUCCESS;
    let mut chosen: Vec<Pipeline> = Vec::new();
    for file in parsed {
        let wanted = match &args.pipeline {
            Some(name) => &file.name == name,
            None => true,
        };
        match file.result {
            Ok(p) if wanted && (args.pipeline.is_some() || selects(&p, &trigger)) => chosen.push(p),
            Ok(_) => {}
            Err(diags) if wanted => {
                for d in diags {
                    eprintln!("{d}");
                }
                eprintln!("pipeline {} is invalid: not run", file.name);
                worst = worst.max(EXIT_ERROR);
            }
            Err(_) => {}
        }
    }
    if let Some(name) = &args.pipeline
        && chosen.is_empty()
        && worst == EXIT_SUCCESS
    {
        bail!(
            "no pipeline named `{name}` in {}",
            args.dir.join(".pipewright").display()
        );
    }
    if chosen.is_empty() {
        println!("no pipeline runs for a {} on {branch}", args.event.as_str());
        return Ok(worst);
    }

    let executor = DockerExecutor::connect(DockerConfig {
        host: args.docker_host.clone(),
        ..DockerConfig::default()
    })
    .await
    .context(
        "failed to reach the Docker engine (is it running? set DOCKER_HOST or --docker-host)",
    )?;
    let defaults = StepDefaults::default();
    for pipeline in chosen {
        if cancel.is_cancelled() {
            break;
        }
        let code = run_one(
            &args,
            &executor,
            &defaults,
            &pipeline,
            &facts.repo,
            &facts.sha,
            &git_ref,
            &cancel,
        )
        .await?;
        worst = worst.max(code);
    }
    Ok(worst)
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    args: &ExecArgs,
    executor: &DockerExecutor,
    defaults: &StepDefaults,
    pipeline: &Pipeline,
    repo: &str,
    sha: &str,
    git_ref: &GitRef,
    cancel: &CancellationToken,
) -> anyhow::Result<u8> {
    let run_id = local_run_id();
    println!(
        "=== pipeline {} ({}, {} on {}) run {run_id}",
        pipeline.name,
        pipeline.file,
        args.event.as_str(),
        git_ref.name()
    );
    if let Some(spec) = &pipeline.vault {
        // `exec` reads with the caller's VAULT_TOKEN; the role is the server's login for
        // this event, shown so that a per-event `vault.role` can be checked locally.
        let role = spec.role_for(args.event).map_or_else(
            || "[vault].role_template's".to_string(),
            |r| format!("`{r}`"),
        );
        println!(
            "=== vault: the server logs in with role {role} for a {}; exec reads with VAULT_TOKEN",
            args.event.as_str()
        );
    }
    let inputs = if args.event == EventKind::Dispatch
        || !args.inputs.is_empty() && pipeline.on.dispatch.is_some()
    {
        match resolve_inputs(pipeline, &args.inputs) {
            Ok(inputs) => inputs,
            Err(errors) => {
                for e in errors {
                    eprintln!("pipeline {}: {e}", pipeline.name);
                }
                println!("=== pipeline {}: error: dispatch refused", pipeline.name);
                return Ok(EXIT_ERROR);
            }
        }
    } else {
        default_inputs(pipeline)
    };
    let (secrets, files) = match local_secrets(args, pipeline).await {
        Ok(read) => read,
        Err(why) => {
            println!("=== pipeline {}: error: not run: {why}", pipeline.name);
            return Ok(EXIT_ERROR);
        }
    };
    // Removed when this function returns, however the run ended.
    let dir = match RunSecretsDir::create(
        &args.secrets_dir,
        "exec",
        &run_id,
        &files,
        (!args.secrets_in_env).then_some(secrets.as_slice()),
    ) {
        Ok(dir) => dir,
        Err(why) => {
            println!("=== pipeline {}: error: not run: {why}", pipeline.name);
            return Ok(EXIT_ERROR);
        }
    };
    // A local run's actor is the local user, in templates as in the identity token.
    let actor = std::env::var("USER").unwrap_or_default();
    let cx = RunContext {
        repo: repo.to_string(),
        sha: sha.to_string(),
        git_ref: git_ref.clone(),
        event: args.event,
        pr: None,
        run_id: run_id.clone(),
        inputs,
        actor: actor.clone(),
    };
    let plan = plan(pipeline, &cx);
    let workspace = tempfile::Builder::new()
        .prefix("pipewright-exec-")
        .tempdir()
        .context("failed to create a workspace")?;
    copy_tree(&args.dir, workspace.path())
        .with_context(|| format!("failed to copy {} into the workspace", args.dir.display()))?;
    // A throw-away key signs local identity tokens: only a test Vault told to trust it
    // (jwt_validation_pubkeys) would accept them.
    let issuer = Issuer::ephemeral(
        "https://pipewright.local",
        "vault",
        Duration::from_secs(600),
    );
    let claims = RunClaims {
        repository: repo.to_string(),
        repository_id: 0,
        repository_owner: repo.split('/').next().unwrap_or_default().to_string(),
        repository_owner_id: 0,
        git_ref: git_ref.full(),
        ref_type: "branch".into(),
        sha: sha.to_string(),
        event_name: args.event.as_str().to_string(),
        pipeline: pipeline.name.clone(),
        run_id: 0,
        run_attempt: 1,
        actor,
        base_ref: None,
        pull_request: false,
    };
    let env_file = dir.as_ref().and_then(|d| d.env_file());
    let extras = |_: &PlannedStep| {
        let (mut env, sourced_env) = match env_file {
            Some(_) => (Vec::new(), secrets.clone()),
            None => (secrets.clone(), Vec::new()),
        };
        let mut values: Vec<String> = secrets
            .iter()
            .chain(&files)
            .map(|(_, v)| v.clone())
            .collect();
        if let Some(addr) = &args.vault_addr {
            env.push(("VAULT_ADDR".into(), addr.clone()));
        }
        if let Ok(jwt) = issuer.mint(&claims) {
            env.push(("PIPEWRIGHT_ID_TOKEN".into(), jwt.clone()));
            env.push(("TERRAFORM_VAULT_AUTH_JWT".into(), jwt.clone()));
            values.push(jwt);
        }
        StepExtras {
            env,
            mounts: dir.iter().flat_map(RunSecretsDir::mounts).collect(),
            secret_values: values,
            env_file: env_file.map(str::to_string),
            sourced_env,
        }
    };
    let local_vault = LocalVault::open(args).await;
    let session = local_vault.as_ref().map(|v| Session {
        vault: &v.vault,
        token: &v.token,
    });
    let default_branch = facts_default_branch(git_ref);
    let services: &dyn ActionServices = match &session {
        Some(s) => s,
        None => &NoServices,
    };
    let setup = RunSetup {
        run_id: &run_id,
        instance: "exec",
        workspace: workspace.path(),
        defaults,
        extras: &extras,
        facts: RunFacts {
            repo,
            from_fork: false,
            event: args.event,
            git_ref,
            default_branch: &default_branch,
            inputs: &cx.inputs,
            reviewed: None,
        },
        remove_pushed: None,
        services,
        network: args.network.as_deref(),
        volumes_resolved: false,
        workspace_ready: None,
    };
    let mut printer = Printer {
        out: io::stdout(),
        err: io::stderr(),
    };
    let ran = run_plan(executor, &plan, &setup, &mut printer, cancel).await;
    if let Some(vault) = &local_vault {
        vault.close().await;
    }
    let (result, reports) = ran.context("the Docker engine failed during the run")?;
    if let (RunResult::Success, Some(summary)) = (&result, &reports.summary) {
        println!("=== pipeline {}: {summary}", pipeline.name);
    }
    let code = match &result {
        RunResult::Success => EXIT_SUCCESS,
        RunResult::Failure { .. } => EXIT_FAILURE,
        RunResult::Error(_) => EXIT_ERROR,
        RunResult::Cancelled => EXIT_CANCELLED,
    };
    let verdict = match result {
        RunResult::Success => "success".to_string(),
        RunResult::Failure { .. } => format!("failure: {}", result.describe()),
        RunResult::Error(_) => format!("error: {}", result.describe()),
        RunResult::Cancelled => "cancelled".to_string(),
    };
    println!("=== pipeline {}: {verdict}", pipeline.name);
    Ok(code)
}

/// Vault for the `postgres` action's credentials: a child of the caller's token
/// (`VAULT_TOKEN`), revoked when the run ends, and with it every lease obtained through it,
/// as the server revokes a run's token. A caller's token that may not create children is
/// used itself (never revoked); its leases are then revoked one by one after each step,
/// which needs `update` on `sys/leases/revoke`.
struct LocalVault {
    vault: Vault,
    token: RunToken,
    child: bool,
}

/// A child token outlives no run: a run longer than this gets no new credentials.
const CHILD_TTL: &str = "8h";

impl LocalVault {
    async fn open(args: &ExecArgs) -> Option<LocalVault> {
        let (addr, token) = (args.vault_addr.as_ref()?, args.vault_token.as_ref()?);
        let client = crate::gitea::http_client(None).ok()?;
        let vault = Vault::new(addr, client);
        let caller = RunToken {
            token: Secret::new(token.clone()),
            role: "(VAULT_TOKEN)".into(),
        };
        Some(match vault.child_token(&caller, CHILD_TTL).await {
            Ok(token) => LocalVault {
                vault,
                token,
                child: true,
            },
            Err(_) => LocalVault {
                vault,
                token: caller,
                child: false,
            },
        })
    }

    /// Revokes the run's child token (never the caller's own).
    async fn close(&self) {
        if self.child
            && let Err(e) = self.vault.revoke(&self.token).await
        {
            eprintln!("warning: failed to revoke the run's Vault token: {e}");
        }
    }
}

/// A local run is never on "the default branch": `tofu` plans without applying and
/// `image` builds without pushing unless the pipeline says `command: apply` / `push: true`
/// (or a dispatch asks for `mode: apply`). Applying real infrastructure from a laptop by
/// surprise is worse than typing one more flag.
fn facts_default_branch(_git_ref: &GitRef) -> String {
    String::new()
}

/// The pipeline's `vault.secrets` as variables and its `vault.files` as `(path, value)`.
type LocalSecrets = (Vec<(String, String)>, Vec<(String, String)>);

async fn local_secrets(args: &ExecArgs, pipeline: &Pipeline) -> Result<LocalSecrets, String> {
    let Some(spec) = &pipeline.vault else {
        return Ok(Default::default());
    };
    let names: Vec<String> = spec
        .secrets
        .iter()
        .map(|s| match &s.target {
            SecretTarget::Key { env, .. } => env.clone(),
            SecretTarget::All { prefix } => format!("{prefix}*"),
        })
        .chain(
            spec.files
                .iter()
                .map(|f| format!("/run/secrets/{}", f.file)),
        )
        .collect();
    let (Some(addr), Some(token)) = (&args.vault_addr, &args.vault_token) else {
        return Err(format!(
            "it reads secrets from Vault ({}): give --vault-addr (or VAULT_ADDR) and a token in VAULT_TOKEN",
            names.join(", ")
        ));
    };
    let client = crate::gitea::http_client(None).map_err(|e| crate::error_chain(&e))?;
    let vault = Vault::new(addr, client);
    let token = RunToken {
        token: Secret::new(token.clone()),
        role: "(VAULT_TOKEN)".into(),
    };
    let env = read_secrets(&vault, &token, &spec.secrets)
        .await
        .map_err(|e| e.to_string())?;
    let files = read_secret_files(&vault, &token, &spec.files)
        .await
        .map_err(|e| e.to_string())?;
    Ok((env, files))
}

fn local_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("local-{}-{}", now.as_millis(), std::process::id())
}

/// Prints step output prefixed with the step's name: stdout lines on stdout, stderr lines
/// on stderr.
struct Printer {
    out: io::Stdout,
    err: io::Stderr,
}

impl RunObserver for Printer {
    async fn step_started(&mut self, step: &PlannedStep) {
        let what = match &step.action {
            PlannedAction::Run { image, .. } => format!("image {image}"),
            PlannedAction::Uses { action, .. } => format!("uses {action}"),
        };
        let _ = writeln!(self.out, "--> step {} ({what})", step.name);
    }

    fn step_output(&mut self, step: &PlannedStep, stream: Stream, line: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(step.name.len() + line.len() + 4);
        buf.extend_from_slice(step.name.as_bytes());
        buf.extend_from_slice(b" | ");
        buf.extend_from_slice(line);
        buf.push(b'\n');
        match stream {
            Stream::Stdout => self.out.lock().write_all(&buf),
            Stream::Stderr => self.err.lock().write_all(&buf),
        }
    }

    async fn step_finished(
        &mut self,
        step: &PlannedStep,
        result: &StepResult,
        elapsed: Duration,
    ) -> bool {
        let line = match result {
            StepResult::Skipped => format!(
                "--- step {}: skipped (its `when` excludes this event)",
                step.name
            ),
            StepResult::NotRun => format!("--- step {}: not run", step.name),
            StepResult::NotNeeded => format!(
                "--- step {}: skipped (it runs only after a failure)",
                step.name
            ),
            StepResult::Ran(outcome) => format!(
                "<-- step {}: {outcome} in {:.2}s",
                step.name,
                elapsed.as_secs_f64()
            ),
            StepResult::Failed(why) => format!(
                "<-- step {}: failed: {why} in {:.2}s",
                step.name,
                elapsed.as_secs_f64()
            ),
            StepResult::Unrunnable(why) => format!("<-- step {}: error: {why}", step.name),
        };
        let _ = writeln!(self.out, "{line}");
        true
    }
}

/// Parses `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found `{s}`")),
    }
}

/// `exec`'s directory must exist; say so plainly when it does not.
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(())
}
