//! What a run may reach: its identity token (a fresh one per step), its Vault login and
//! secrets (as environment, or as files in the run's directory of `[server].secrets_dir`),
//! and the CA bundle — decided once per run, revoked (and the files removed) when it ends.
//!
//! Pull requests from forks get neither secrets nor a token carrying the base
//! repository's claims, unless `[[repos]].allow_fork_secrets` says otherwise.

use super::Work;
use pipewright_pipelines::{EventKind, GitRef, Pipeline, PlannedStep};

use tracing::{info, warn};

use std::collections::BTreeMap;

use crate::{
    identity::RunClaims,
    mask::Masker,
    run::{ActionServices, BoxFuture, DbCredentials, StepExtras},
    secrets::{ca_for_steps, read_secret_files, read_secrets},
    secrets_dir::RunSecretsDir,
    store::Run,
    vault::RunToken,
    vault::Session,
};

/// A run's credentials. Kept in memory only.
pub struct RunAccess<'a> {
    work: &'a Work<'a>,
    /// `None`: a fork's pull request, which gets no identity token.
    claims: Option<RunClaims>,
    token: Option<RunToken>,
    secrets: Vec<(String, String)>,
    /// Values of `vault.files`, masked like the secrets.
    file_values: Vec<String>,
    /// The run's files (and environment file); removed when this is dropped, however the
    /// run ends.
    dir: Option<RunSecretsDir>,
    masker: Masker,
}

impl std::fmt::Debug for RunAccess<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunAccess")
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

fn claims_for(run: &Run) -> RunClaims {
    let (owner, _) = run.repo.split_once('/').unwrap_or((&run.repo, ""));
    // A comment command on a pull request runs its head, as the pull request's own runs do.
    let pull_request =
        matches!(run.event, EventKind::PullRequest | EventKind::Comment) && run.pr.is_some();
    let (git_ref, base_ref) = match (pull_request, run.pr) {
        (true, Some(n)) => (
            format!("refs/pull/{n}/head"),
            Some(run.git_ref.name().to_string()),
        ),
        _ => (run.git_ref.full(), None),
    };
    RunClaims {
        repository: run.repo.clone(),
        repository_id: run.repo_id,
        repository_owner: owner.to_string(),
        repository_owner_id: run.owner_id,
        ref_type: if matches!(run.git_ref, GitRef::Tag(_)) {
            "tag"
        } else {
            "branch"
        }
        .into(),
        git_ref,
        sha: run.sha.clone(),
        event_name: run.event.as_str().to_string(),
        pipeline: run.pipeline.clone(),
        run_id: run.id,
        run_attempt: run.attempt,
        actor: run.actor.clone(),
        base_ref,
        pull_request,
    }
}

impl<'a> RunAccess<'a> {
    /// Logs in to Vault and reads the pipeline's secrets. `Err` is the run's `error`
    /// description, naming Vault, the role or the path. `adopt`: a run a restart took
    /// over, whose secret files directory is taken over as the earlier process left it,
    /// since a running container may mount it (a new login and new reads all the same).
    pub async fn open_for(
        work: &'a Work<'a>,
        run: &Run,
        pipeline: &Pipeline,
        adopt: bool,
    ) -> Result<RunAccess<'a>, String> {
        let trusted = !run.from_fork
            || work
                .config
                .repo_policy(&run.repo)
                .is_some_and(|p| p.allow_fork_secrets);
        let claims = trusted.then(|| claims_for(run));
        let mut access = RunAccess {
            work,
            claims,
            token: None,
            secrets: Vec::new(),
            file_values: Vec::new(),
            dir: None,
            masker: Masker::default(),
        };
        let Some(spec) = &pipeline.vault else {
            return Ok(access);
        };
        let Some(claims) = access.claims.clone() else {
            info!(
                run_id = run.id,
                "pull request from a fork: no secrets and no identity token"
            );
            return Ok(access);
        };
        let Some(vault) = &work.vault else {
            return Err(
                "the pipeline reads Vault secrets, but no [vault].address is configured".into(),
            );
        };
        // The pipeline's role for this run's event, else `[vault].role_template`.
        let role = spec
            .role_for(run.event)
            .map(str::to_string)
            .unwrap_or_else(|| work.config.role_for(&run.repo));
        let mount = spec
            .mount
            .clone()
            .unwrap_or_else(|| work.config.vault.mount.clone());
        let jwt = work.issuer.mint(&claims).map_err(|e| e.to_string())?;
        let token = vault
            .login_jwt(&mount, &role, &jwt)
            .await
            .map_err(|e| e.to_string())?;
        let read = async {
            let secrets = read_secrets(vault, &token, &spec.secrets).await?;
            let files = read_secret_files(vault, &token, &spec.files).await?;
            Ok::<_, crate::secrets::SecretsError>((secrets, files))
        }
        .await;
        access.token = Some(token);
        let (secrets, files) = match read {
            Ok(read) => read,
            Err(e) => {
                access.close(work).await;
                return Err(e.to_string());
            }
        };
        let in_env = work.config.docker.secrets_in_env;
        access.masker = Masker::new(secrets.iter().chain(&files).map(|(_, v)| v.as_str()));
        access.file_values = files.iter().map(|(_, v)| v.clone()).collect();
        let make = match adopt {
            true => RunSecretsDir::adopt_or_create,
            false => RunSecretsDir::create,
        };
        let dir = make(
            &work.config.server.secrets_dir,
            work.instance,
            &format!("run-{}", run.id),
            &files,
            (!in_env).then_some(secrets.as_slice()),
        );
        access.secrets = secrets;
        match dir {
            Ok(dir) => {
                access.dir = dir;
                Ok(access)
            }
            Err(why) => {
                access.close(work).await;
                Err(why)
            }
        }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// A step's environment and mounts: secrets, a fresh identity token, the CA bundle.
    pub fn extras(&self, work: &Work<'_>, _step: &PlannedStep) -> StepExtras {
        let (mut mounts, mut env) = ca_for_steps(work.config.gitea.ca_file.as_deref());
        if let Some(vault) = &work.vault {
            env.push(("VAULT_ADDR".into(), vault.address().to_string()));
        }
        // The run's files, and its secrets through the environment file when there is one.
        mounts.extend(self.dir.iter().flat_map(RunSecretsDir::mounts));
        let env_file = self
            .dir
            .as_ref()
            .and_then(|d| d.env_file())
            .map(str::to_string);
        let sourced_env = match env_file {
            Some(_) => self.secrets.clone(),
            None => {
                env.extend(self.secrets.iter().cloned());
                Vec::new()
            }
        };
        let mut values: Vec<String> = self.secrets.iter().map(|(_, v)| v.clone()).collect();
        values.extend(self.file_values.iter().cloned());
        // Registry passwords reach no step, but are masked in every one all the same.
        values.extend(work.registries.known_passwords());
        if let Some(claims) = &self.claims {
            match work.issuer.mint(claims) {
                Ok(jwt) => {
                    env.push(("PIPEWRIGHT_ID_TOKEN".into(), jwt.clone()));
                    env.push(("TERRAFORM_VAULT_AUTH_JWT".into(), jwt.clone()));
                    values.push(jwt);
                }
                Err(e) => warn!(error = %e, "failed to mint the step's identity token"),
            }
        }
        StepExtras {
            env,
            mounts,
            secret_values: values,
            env_file,
            sourced_env,
        }
    }

    /// Revokes the run's Vault token, whatever the run's outcome.
    pub async fn close(&self, work: &Work<'_>) {
        if let (Some(vault), Some(token)) = (&work.vault, &self.token)
            && let Err(e) = vault.revoke(token).await
        {
            warn!(error = %e, "failed to revoke the run's Vault token");
        }
    }
}

impl ActionServices for RunAccess<'_> {
    fn read_kv<'b>(
        &'b self,
        path: &'b str,
    ) -> BoxFuture<'b, Result<BTreeMap<String, String>, String>> {
        Box::pin(async move { self.session(path)?.read_kv(path).await })
    }

    fn database_credentials<'b>(
        &'b self,
        mount: &'b str,
        role: &'b str,
    ) -> BoxFuture<'b, Result<DbCredentials, String>> {
        Box::pin(async move { self.session(role)?.database_credentials(mount, role).await })
    }

    fn revoke_lease<'b>(&'b self, lease_id: &'b str) -> BoxFuture<'b, Result<(), String>> {
        Box::pin(async move { self.session(lease_id)?.revoke_lease(lease_id).await })
    }
}

impl RunAccess<'_> {
    /// The Vault login of this run, which an action needs for `what`.
    fn session(&self, what: &str) -> Result<Session<'_>, String> {
        match (&self.work.vault, &self.token) {
            (Some(vault), Some(token)) => Ok(Session { vault, token }),
            (None, _) => Err(format!(
                "`{what}` is in Vault, but no [vault].address is configured"
            )),
            (Some(_), None) if self.claims.is_none() => Err(format!(
                "`{what}` is in Vault: pull requests from forks get no Vault access"
            )),
            (Some(_), None) => Err(format!(
                "`{what}` is in Vault: the pipeline needs a `vault:` section to log in"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(event: EventKind, pr: Option<i64>, actor: &str) -> Run {
        Run {
            id: 7,
            repo: "org/infra".into(),
            repo_id: 3,
            owner_id: 2,
            default_branch: "main".into(),
            status_repo: "org/infra".into(),
            pipeline: "iac".into(),
            pipeline_file: ".pipewright/iac.yml".into(),
            event,
            git_ref: GitRef::Branch("main".into()),
            sha: "a".repeat(40),
            pr,
            actor: actor.into(),
            from_fork: false,
            attempt: 1,
            inputs: Vec::new(),
            input_types: Vec::new(),
            rerun_of: None,
            runs_on: Vec::new(),
            concurrency_group: "org/infra/iac".into(),
            cancel_in_progress: false,
            state: crate::store::RunState::Running,
            description: String::new(),
            created_at: 0,
            started_at: None,
            finished_at: None,
            lease_owner: None,
            agent: None,
        }
    }

    #[test]
    fn a_comment_command_is_told_apart_and_names_the_ref_it_runs_on() {
        let on_pull = claims_for(&run(EventKind::Comment, Some(5), "alice"));
        assert_eq!(on_pull.event_name, "comment");
        assert_eq!(on_pull.actor, "alice");
        assert_eq!(on_pull.git_ref, "refs/pull/5/head");
        assert_eq!(on_pull.base_ref.as_deref(), Some("main"));
        assert!(on_pull.pull_request, "its `sub` is the pull request's");
        let on_issue = claims_for(&run(EventKind::Comment, None, "alice"));
        assert_eq!(on_issue.event_name, "comment");
        assert_eq!(on_issue.git_ref, "refs/heads/main");
        assert_eq!(on_issue.base_ref, None);
        assert!(!on_issue.pull_request);
        let pushed = claims_for(&run(EventKind::Push, None, "bob"));
        assert_eq!(
            (pushed.event_name.as_str(), pushed.git_ref.as_str()),
            ("push", "refs/heads/main")
        );
    }
}
