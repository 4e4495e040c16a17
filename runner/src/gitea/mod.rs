//! Talking to Gitea's REST API: commit statuses, branches, open pull requests. Small typed
//! requests of our own over reqwest, because Gitea's responses are not GitHub's (the state
//! comes back under `status`, users are Gitea's): GitHub-typed clients fail to read them.

pub mod payload;

use std::{path::Path, time::Duration};

use reqwest::{Certificate, Client, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// A Gitea server, reached with Pipewright's API token.
#[derive(Clone, Debug)]
pub struct Gitea {
    base: String,
    token: Option<Secret>,
    client: Client,
}

#[derive(Debug, thiserror::Error)]
pub enum GiteaError {
    #[error("failed to reach Gitea")]
    Http(#[from] reqwest::Error),
    #[error("Gitea answered {status} to {what}: {body}")]
    Status {
        status: StatusCode,
        what: String,
        body: String,
    },
    #[error("failed to read the CA file {path}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
}

impl GiteaError {
    /// Whether trying again later may succeed (Gitea down, overloaded, or timing out).
    pub fn is_transient(&self) -> bool {
        match self {
            GiteaError::Http(_) => true,
            GiteaError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            GiteaError::Ca { .. } => false,
        }
    }
}

#[derive(Debug, Serialize)]
struct CreateStatus<'a> {
    state: &'a str,
    target_url: &'a str,
    description: &'a str,
    context: &'a str,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BranchInfo {
    pub name: String,
    pub commit: CommitRef,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CommitRef {
    pub id: String,
}

/// An HTTP client that trusts the system roots and, when given, the homelab CA.
pub fn http_client(ca_file: Option<&Path>) -> Result<Client, GiteaError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| GiteaError::Ca {
            path: path.display().to_string(),
            source,
        })?;
        for cert in Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

impl Gitea {
    pub fn new(url: &str, token: Option<Secret>, client: Client) -> Gitea {
        Gitea {
            base: format!("{}/api/v1", url.trim_end_matches('/')),
            token,
            client,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        match &self.token {
            Some(token) => req.header("authorization", format!("token {}", token.expose())),
            None => req,
        }
    }

    async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, GiteaError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(300);
        Err(GiteaError::Status {
            status,
            what: what.to_string(),
            body,
        })
    }

    /// `POST /repos/{owner}/{repo}/statuses/{sha}`.
    pub async fn create_status(
        &self,
        repo: &str,
        sha: &str,
        state: &str,
        context: &str,
        description: &str,
        target_url: &str,
    ) -> Result<(), GiteaError> {
        let body = CreateStatus {
            state,
            target_url,
            description,
            context,
        };
        let resp = self
            .request(
                reqwest::Method::POST,
                &format!("/repos/{repo}/statuses/{sha}"),
            )
            .json(&body)
            .send()
            .await?;
        Self::check(resp, &format!("a status for {repo}@{sha}")).await?;
        Ok(())
    }

    /// Creates a comment on an issue or pull request, or edits the one that contains
    /// `marker` (so each push updates one comment instead of adding another).
    pub async fn upsert_comment(
        &self,
        repo: &str,
        number: i64,
        marker: &str,
        body: &str,
    ) -> Result<(), GiteaError> {
        #[derive(Deserialize)]
        struct Comment {
            id: i64,
            #[serde(default)]
            body: String,
        }
        let mut existing = None;
        for page in 1..=20 {
            let path = format!("/repos/{repo}/issues/{number}/comments?limit=50&page={page}");
            let resp = self.request(reqwest::Method::GET, &path).send().await?;
            let comments: Vec<Comment> =
                Self::check(resp, &format!("the comments of {repo}#{number}"))
                    .await?
                    .json()
                    .await?;
            let done = comments.len() < 50;
            if let Some(c) = comments.into_iter().find(|c| c.body.contains(marker)) {
                existing = Some(c.id);
                break;
            }
            if done {
                break;
            }
        }
        let body = serde_json::json!({ "body": body });
        let resp = match existing {
            Some(id) => {
                self.request(
                    reqwest::Method::PATCH,
                    &format!("/repos/{repo}/issues/comments/{id}"),
                )
                .json(&body)
                .send()
                .await?
            }
            None => {
                self.request(
                    reqwest::Method::POST,
                    &format!("/repos/{repo}/issues/{number}/comments"),
                )
                .json(&body)
                .send()
                .await?
            }
        };
        Self::check(resp, &format!("a comment on {repo}#{number}")).await?;
        Ok(())
    }

    /// A repository (`GET /repos/{owner}/{repo}`); `None` when Gitea says it does not exist.
    pub async fn repository(&self, repo: &str) -> Result<Option<payload::Repository>, GiteaError> {
        let resp = self
            .request(reqwest::Method::GET, &format!("/repos/{repo}"))
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            Self::check(resp, &format!("the repository {repo}"))
                .await?
                .json()
                .await?,
        ))
    }

    /// Whether `login` may write to `repo`: Gitea's collaborator permission (`write`,
    /// `admin` or `owner`). Needs Pipewright's user to be a repository admin (Gitea answers
    /// 403 otherwise, which is an error here, never a yes).
    pub async fn can_write(&self, repo: &str, login: &str) -> Result<bool, GiteaError> {
        #[derive(Deserialize)]
        struct Permission {
            #[serde(default)]
            permission: String,
        }
        let resp = self
            .request(
                reqwest::Method::GET,
                &format!("/repos/{repo}/collaborators/{login}/permission"),
            )
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            // No such user (any more): nobody vouches for the pull request.
            return Ok(false);
        }
        let answer: Permission = Self::check(resp, &format!("{login}'s permission on {repo}"))
            .await?
            .json()
            .await?;
        Ok(matches!(
            answer.permission.as_str(),
            "write" | "admin" | "owner"
        ))
    }

    /// Every branch of a repository with its head commit.
    pub async fn branches(&self, repo: &str) -> Result<Vec<BranchInfo>, GiteaError> {
        self.paged(repo, "branches", "").await
    }

    /// Open pull requests of a repository.
    pub async fn open_pulls(&self, repo: &str) -> Result<Vec<payload::PullRequest>, GiteaError> {
        self.paged(repo, "pulls", "&state=open").await
    }

    async fn paged<T: for<'de> Deserialize<'de>>(
        &self,
        repo: &str,
        what: &str,
        query: &str,
    ) -> Result<Vec<T>, GiteaError> {
        let mut out = Vec::new();
        for page in 1..=100 {
            let path = format!("/repos/{repo}/{what}?limit=50&page={page}{query}");
            let resp = self.request(reqwest::Method::GET, &path).send().await?;
            let items: Vec<T> = Self::check(resp, &format!("the {what} of {repo}"))
                .await?
                .json()
                .await?;
            let done = items.len() < 50;
            out.extend(items);
            if done {
                break;
            }
        }
        Ok(out)
    }
}
