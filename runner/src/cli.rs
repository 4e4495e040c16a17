//! The command line: `pipewright serve`, `agent`, `validate`, `exec`, `dispatch` and `gitea install-hook`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use pipewright_containers::CancellationToken;
use pipewright_pipelines::EventKind;

use crate::{
    exec::{self, EXIT_ERROR, ExecArgs},
    local::read_pipelines,
};

#[derive(Debug, Parser)]
#[command(name = "pipewright", version, about = "A CI pipeline runner for Gitea")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive Gitea webhooks, run pipelines on the local Docker engine, report statuses.
    Serve {
        /// Configuration file (TOML); every setting can also come from
        /// PIPEWRIGHT_<SECTION>__<KEY>. Without one: embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run jobs only: claim runs from the server's PostgreSQL database and run them on this
    /// host's Docker engine (no webhooks, API or UI).
    Agent {
        /// Configuration file (TOML), with `[database].url` the server's PostgreSQL; every
        /// setting can also come from PIPEWRIGHT_<SECTION>__<KEY>.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Set up Gitea for Pipewright.
    Gitea {
        #[command(subcommand)]
        command: GiteaCommand,
    },
    /// Ask a running server to run a pipeline by hand (token in PIPEWRIGHT_API_TOKEN).
    Dispatch {
        /// The server's URL, e.g. https://ci.example.lab.
        #[arg(long)]
        server: String,
        /// The repository, OWNER/NAME.
        #[arg(long)]
        repo: String,
        /// The pipeline's name.
        #[arg(long)]
        pipeline: String,
        /// Branch or tag; default: the repository's default branch.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// A dispatch input, KEY=VALUE (repeatable).
        #[arg(long = "input", value_name = "KEY=VALUE", value_parser = exec::key_value)]
        inputs: Vec<(String, String)>,
    },
    /// Check every pipeline file under DIR/.pipewright/; exit 0 only if all are valid.
    Validate {
        /// Repository checkout.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run pipelines of a local checkout on the local Docker engine, without Gitea.
    Exec {
        /// Repository checkout (copied: your files are not modified).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The event to simulate; pipelines are selected by their `on:`.
        #[arg(long, value_enum, default_value_t = Event::Push)]
        event: Event,
        /// Run this pipeline whatever its triggers say.
        #[arg(long)]
        pipeline: Option<String>,
        /// A dispatch input, KEY=VALUE (repeatable).
        #[arg(long = "input", value_name = "KEY=VALUE", value_parser = exec::key_value)]
        inputs: Vec<(String, String)>,
        /// A changed file, relative to DIR (repeatable); none given: every file counts as changed.
        #[arg(long = "changed", value_name = "PATH")]
        changed: Vec<String>,
        /// Branch of the event (the base branch for pull_request); default: the checkout's.
        #[arg(long)]
        branch: Option<String>,
        /// Docker engine address; default: DOCKER_HOST or the local socket.
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
        /// Vault address, for pipelines that read secrets.
        #[arg(long, env = "VAULT_ADDR")]
        vault_addr: Option<String>,
        /// Vault token that reads the secrets (never a command-line argument).
        #[arg(skip)]
        vault_token: Option<String>,
        /// Docker network of step containers (`host` to reach services on 127.0.0.1).
        #[arg(long)]
        network: Option<String>,
        /// Where `vault.files` (and the secrets' environment file) are written for the run;
        /// must be a tmpfs or ramfs, as `[server].secrets_dir`.
        #[arg(long, env = "PIPEWRIGHT_SECRETS_DIR", default_value = crate::config::defaults::SECRETS_DIR)]
        secrets_dir: PathBuf,
        /// `false`: `vault.secrets` reach steps through an environment file in the secrets
        /// directory instead of the container's environment, as `[docker].secrets_in_env`.
        #[arg(long, env = "PIPEWRIGHT_SECRETS_IN_ENV", default_value_t = crate::config::defaults::SECRETS_IN_ENV, action = clap::ArgAction::Set)]
        secrets_in_env: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GiteaCommand {
    /// Create the webhook that sends Pipewright its events (push, pull requests, comments)
    /// to `<public_url>/hooks/gitea`, signed with `[gitea].webhook_secret`, or update the
    /// one that already targets it. Uses `[gitea].url` and `[gitea].token` (which needs
    /// admin rights on the repository, or to own the organisation).
    InstallHook {
        /// Configuration file, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The repository, OWNER/NAME.
        #[arg(long, conflicts_with = "org", required_unless_present = "org")]
        repo: Option<String>,
        /// An organisation: its hook covers all of its repositories.
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Event {
    Push,
    #[value(name = "pull_request")]
    PullRequest,
    Dispatch,
    Schedule,
}

impl From<Event> for EventKind {
    fn from(e: Event) -> EventKind {
        match e {
            Event::Push => EventKind::Push,
            Event::PullRequest => EventKind::PullRequest,
            Event::Dispatch => EventKind::Dispatch,
            Event::Schedule => EventKind::Schedule,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` writes its log as its configuration says, once it is read.
    if !matches!(cli.command, Command::Serve { .. } | Command::Agent { .. }) {
        crate::logging::init(&crate::config::Config::default().log);
    }
    let result = match cli.command {
        Command::Serve { config } => serve_blocking(config.as_deref()),
        Command::Agent { config } => agent_blocking(config.as_deref()),
        Command::Validate { dir } => validate(&dir),
        Command::Gitea {
            command: GiteaCommand::InstallHook { config, repo, org },
        } => install_hook_blocking(config.as_deref(), repo, org),
        Command::Dispatch {
            server,
            repo,
            pipeline,
            git_ref,
            inputs,
        } => dispatch_blocking(&server, &repo, &pipeline, git_ref, inputs),
        Command::Exec {
            dir,
            event,
            pipeline,
            inputs,
            changed,
            branch,
            docker_host,
            vault_addr,
            network,
            secrets_dir,
            secrets_in_env,
            ..
        } => {
            let args = ExecArgs {
                dir,
                event: event.into(),
                pipeline,
                inputs,
                changed,
                branch,
                docker_host,
                vault_addr,
                vault_token: std::env::var("VAULT_TOKEN").ok().filter(|t| !t.is_empty()),
                network,
                secrets_dir,
                secrets_in_env,
            };
            exec_blocking(args)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn validate(dir: &std::path::Path) -> anyhow::Result<u8> {
    let parsed = read_pipelines(dir)?;
    let mut bad = 0;
    for file in &parsed {
        match &file.result {
            Ok(p) => println!("{}: ok ({}, {} steps)", file.file, p.name, p.steps.len()),
            Err(diags) => {
                bad += 1;
                for d in diags {
                    println!("{d}");
                }
            }
        }
    }
    if parsed.is_empty() {
        println!("no pipeline files in {}", dir.join(".pipewright").display());
    }
    if bad > 0 {
        println!("{bad} of {} pipeline files invalid", parsed.len());
        return Ok(1);
    }
    Ok(0)
}

fn exec_blocking(args: ExecArgs) -> anyhow::Result<u8> {
    exec::check_dir(&args.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping the running step (SIGTERM, then SIGKILL after the grace period); steps with `when.status: [failure]` still run (interrupt again to exit at once)");
                on_signal.cancel();
            }
            // Cleanup steps are not stopped by the first interrupt; a second one leaves them.
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted again: exiting; a running step's container (docker ps --filter label={}=exec) and the run's copy of the checkout are left behind",
                    pipewright_containers::LABEL_INSTANCE
                );
                std::process::exit(exec::EXIT_CANCELLED.into());
            }
        });
        exec::exec(args, cancel).await
    })
}

fn install_hook_blocking(
    file: Option<&std::path::Path>,
    repo: Option<String>,
    org: Option<String>,
) -> anyhow::Result<u8> {
    use crate::gitea::hooks::{HookOwner, Installed};
    let config = match crate::config::load(file, std::env::vars()) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(EXIT_ERROR);
        }
    };
    let owner = match (repo, org) {
        (Some(repo), _) if crate::checked::is_repo_name(&repo) => HookOwner::Repo(repo),
        (Some(repo), _) => anyhow::bail!("--repo {repo:?} is not OWNER/NAME"),
        (None, Some(org)) if crate::checked::is_name_part(&org) => HookOwner::Org(org),
        (None, Some(org)) => anyhow::bail!("--org {org:?} is not an organisation name"),
        (None, None) => anyhow::bail!("give --repo OWNER/NAME or --org NAME"),
    };
    let gitea = &config.gitea;
    let url = gitea
        .url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("[gitea].url is not set: which Gitea?"))?;
    let Some(token) = gitea.token.clone() else {
        anyhow::bail!("[gitea].token is not set: Gitea's API needs it to create a hook");
    };
    let Some(secret) = gitea.webhook_secret.as_ref() else {
        anyhow::bail!("[gitea].webhook_secret is not set: the hook must sign its deliveries");
    };
    let target = format!("{}/hooks/gitea", config.server.public_url);
    let client = crate::gitea::http_client(gitea.ca_file.as_deref())?;
    let api = crate::gitea::Gitea::new(url, Some(token), client);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(api.install_hook(&owner, &target, secret.expose()))?;
    match done {
        Installed::Created(id) => println!("created hook {id} of the {owner}: {target}"),
        Installed::Updated(id) => println!("updated hook {id} of the {owner}: {target}"),
    }
    if config.server.public_url.starts_with("http://127.")
        || config.server.public_url.contains("://localhost")
    {
        eprintln!(
            "note: [server].public_url is {}: Gitea must reach it, and its [webhook] ALLOWED_HOST_LIST must allow it",
            config.server.public_url
        );
    }
    Ok(0)
}

fn serve_blocking(file: Option<&std::path::Path>) -> anyhow::Result<u8> {
    let config = match crate::config::load(file, std::env::vars()) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(EXIT_ERROR);
        }
    };
    crate::logging::init(&config.log);
    for missing in crate::logging::missing_essentials(&config) {
        tracing::warn!("{missing}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| anyhow::anyhow!("failed to listen on {}: {e}", config.server.listen))?;
        let app = crate::server::App::new(config).await?;
        let shutdown = CancellationToken::new();
        drain_on_signal(
            shutdown.clone(),
            app.config.agent.drain_timeout,
            "stopping: no new webhooks or runs; waiting for running runs (signal again to exit now)",
        );
        crate::server::serve(listener, app, shutdown).await?;
        Ok(0)
    })
}

/// On SIGTERM (or Ctrl-C): `shutdown` fires, so that nothing new is claimed and the runs
/// under way finish. A second signal, or `drain_timeout` passing, exits the process at
/// once: its step containers are left running (nothing removes them on that path) and
/// its runs stay `running` in the database, for the next start of this instance to take
/// up (or, when it never comes back, for its leases to expire).
fn drain_on_signal(
    shutdown: CancellationToken,
    drain_timeout: std::time::Duration,
    what: &'static str,
) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(drain_timeout = ?drain_timeout, "{what}");
        shutdown.cancel();
        tokio::select! {
            _ = wait_for_signal() => {
                tracing::warn!("exiting now: running runs are left to the next start");
                std::process::exit(130);
            }
            _ = tokio::time::sleep(drain_timeout) => {
                tracing::warn!(drain_timeout = ?drain_timeout, "runs still running after [agent].drain_timeout: exiting and leaving them to the next start");
                std::process::exit(0);
            }
        }
    });
}

fn agent_blocking(file: Option<&std::path::Path>) -> anyhow::Result<u8> {
    let config = match crate::config::load(file, std::env::vars()) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(EXIT_ERROR);
        }
    };
    // Refused before anything is opened: a SQLite file would be created and migrated.
    if !config.database.url.starts_with("postgres") {
        eprintln!(
            "error: pipewright agent needs [database].url to be the server's PostgreSQL database (postgres://…), not {}: an agent claims runs from the queue the server shares with its agents, and a SQLite file is one process's",
            config
                .database
                .url
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
        );
        return Ok(EXIT_ERROR);
    }
    if config.agent.capacity == 0 {
        eprintln!("error: pipewright agent needs [agent].capacity of 1 or more: it only runs jobs");
        return Ok(EXIT_ERROR);
    }
    crate::logging::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let health = match config.agent.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("failed to listen on {addr}: {e}"))?,
            ),
            None => None,
        };
        let app = crate::server::App::new(config).await?;
        let shutdown = CancellationToken::new();
        drain_on_signal(
            shutdown.clone(),
            app.config.agent.drain_timeout,
            "stopping: no new runs; waiting for running runs (signal again to exit now)",
        );
        crate::server::agent(health, app, shutdown).await?;
        Ok(0)
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn dispatch_blocking(
    server: &str,
    repo: &str,
    pipeline: &str,
    git_ref: Option<String>,
    inputs: Vec<(String, String)>,
) -> anyhow::Result<u8> {
    let Ok(token) = std::env::var("PIPEWRIGHT_API_TOKEN") else {
        anyhow::bail!("set PIPEWRIGHT_API_TOKEN to an API token of the server");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::gitea::http_client(None)?;
        let url = format!(
            "{}/api/v1/repos/{repo}/pipelines/{pipeline}/dispatch",
            server.trim_end_matches('/')
        );
        let inputs: serde_json::Map<String, serde_json::Value> =
            inputs.into_iter().map(|(k, v)| (k, v.into())).collect();
        let mut body = serde_json::json!({ "inputs": inputs });
        if let Some(r) = git_ref {
            body["ref"] = r.into();
        }
        let resp = client
            .post(&url)
            .bearer_auth(token.trim())
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        if status.is_success() {
            println!(
                "queued run {} of {pipeline} on {}: {}",
                answer["id"],
                answer["ref"].as_str().unwrap_or("?"),
                answer["url"].as_str().unwrap_or("")
            );
            Ok(0)
        } else {
            eprintln!(
                "dispatch refused ({status}): {}",
                answer["message"].as_str().unwrap_or("no message")
            );
            Ok(EXIT_ERROR)
        }
    })
}
