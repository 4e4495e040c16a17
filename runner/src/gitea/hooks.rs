//! Webhooks in Gitea's API: list a repository's or an organisation's hooks, create the one
//! that sends Pipewright its events, or update the one that already targets it.

use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};

use super::{Gitea, GiteaError, SEGMENT, repo_path};

fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// The events Pipewright acts on, as Gitea's `CreateHookOption.events` names them
/// (`routers/api/v1/utils/hook.go`): pushes, pull requests and their new commits, and
/// comments (comment commands; `pull_request` covers comments on pull requests too).
pub const EVENTS: &[&str] = &["push", "pull_request", "pull_request_sync", "issue_comment"];

/// Whose hooks: a repository's (`owner/name`) or an organisation's.
#[derive(Clone, Debug)]
pub enum HookOwner {
    Repo(String),
    Org(String),
}

impl HookOwner {
    fn path(&self, rest: &[&str]) -> Result<String, GiteaError> {
        match self {
            HookOwner::Repo(repo) => repo_path(repo, &[&["hooks"], rest].concat()),
            HookOwner::Org(org) => {
                if matches!(org.as_str(), "" | "." | "..") || org.contains('/') {
                    return Err(GiteaError::Path(org.clone()));
                }
                let mut path = format!("/orgs/{}/hooks", segment(org));
                for part in rest {
                    path.push('/');
                    path.push_str(&segment(part));
                }
                Ok(path)
            }
        }
    }
}

impl std::fmt::Display for HookOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookOwner::Repo(repo) => write!(f, "repository {repo}"),
            HookOwner::Org(org) => write!(f, "organisation {org}"),
        }
    }
}

/// A hook as Gitea's API shows it (`api.Hook`; the secret is never shown).
#[derive(Clone, Debug, Deserialize)]
pub struct Hook {
    pub id: i64,
    #[serde(default)]
    pub config: HookConfig,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub active: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct HookConfig {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub content_type: String,
}

#[derive(Serialize)]
struct HookOption<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    config: HookOptionConfig<'a>,
    events: &'a [&'a str],
    active: bool,
}

#[derive(Serialize)]
struct HookOptionConfig<'a> {
    url: &'a str,
    content_type: &'a str,
    secret: &'a str,
}

/// What [`Gitea::install_hook`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    Created(i64),
    Updated(i64),
}

impl Gitea {
    /// Every hook of `owner`, page by page.
    pub async fn hooks(&self, owner: &HookOwner) -> Result<Vec<Hook>, GiteaError> {
        let mut all = Vec::new();
        for page in 1..=20 {
            let path = format!("{}?limit=50&page={page}", owner.path(&[])?);
            let resp = self.request(reqwest::Method::GET, &path).send().await?;
            let hooks: Vec<Hook> = Self::check(resp, &format!("the hooks of {owner}"))
                .await?
                .json()
                .await?;
            let done = hooks.len() < 50;
            all.extend(hooks);
            if done {
                break;
            }
        }
        Ok(all)
    }

    /// Makes `owner` send Pipewright's events to `target`, signed with `secret`: updates
    /// the hook that already targets it (events, content type, active and the secret), or
    /// creates one (type `gitea`, JSON).
    pub async fn install_hook(
        &self,
        owner: &HookOwner,
        target: &str,
        secret: &str,
    ) -> Result<Installed, GiteaError> {
        let existing = self
            .hooks(owner)
            .await?
            .into_iter()
            .find(|h| h.config.url == target);
        let config = HookOptionConfig {
            url: target,
            content_type: "json",
            secret,
        };
        let what = format!("the Pipewright hook of {owner}");
        match existing {
            Some(hook) => {
                let body = HookOption {
                    kind: None,
                    config,
                    events: EVENTS,
                    active: true,
                };
                let path = owner.path(&[&hook.id.to_string()])?;
                let resp = self
                    .request(reqwest::Method::PATCH, &path)
                    .json(&body)
                    .send()
                    .await?;
                Self::check(resp, &what).await?;
                Ok(Installed::Updated(hook.id))
            }
            None => {
                let body = HookOption {
                    kind: Some("gitea"),
                    config,
                    events: EVENTS,
                    active: true,
                };
                let resp = self
                    .request(reqwest::Method::POST, &owner.path(&[])?)
                    .json(&body)
                    .send()
                    .await?;
                let hook: Hook = Self::check(resp, &what).await?.json().await?;
                Ok(Installed::Created(hook.id))
            }
        }
    }
}
