//! What comment commands ask of Gitea: a commenter's permission, a pull request's state,
//! its reviews and the statuses on its head, and the pull request a merge commit merged.

use reqwest::StatusCode;
use serde::Deserialize;

use super::{Gitea, GiteaError, payload, repo_path};

/// A pull request as `GET /repos/{owner}/{repo}/pulls/{index}` shows it (the fields read).
#[derive(Clone, Debug, Deserialize)]
pub struct PullState {
    #[serde(default)]
    pub number: i64,
    #[serde(default)]
    pub user: Option<payload::User>,
    /// `open` or `closed`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub mergeable: bool,
    #[serde(default)]
    pub merged: bool,
    pub base: payload::Branch,
    pub head: payload::Branch,
}

/// A review (`PullReview`): `state` is `APPROVED`, `REQUEST_CHANGES`, `COMMENT`,
/// `PENDING` or `REQUEST_REVIEW`.
#[derive(Clone, Debug, Deserialize)]
pub struct Review {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub user: Option<payload::User>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub commit_id: String,
    #[serde(default)]
    pub stale: bool,
    #[serde(default)]
    pub dismissed: bool,
}

/// One status of a commit (Gitea's state is under `status`).
#[derive(Clone, Debug, Deserialize)]
pub struct CommitStatus {
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub status: String,
}

/// A commenter's access, as far as Pipewright's token may ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// `none`, `read`, `write`, `admin` or `owner`.
    Level(String),
    /// Gitea answered 403: Pipewright's user is not a repository admin.
    CannotAsk,
}

impl Access {
    pub fn may_write(&self) -> bool {
        matches!(self, Access::Level(l) if matches!(l.as_str(), "write" | "admin" | "owner"))
    }
}

impl Gitea {
    /// `GET /repos/{owner}/{repo}/collaborators/{user}/permission`; an unknown user has
    /// no access.
    pub async fn access(&self, repo: &str, login: &str) -> Result<Access, GiteaError> {
        #[derive(Deserialize)]
        struct Permission {
            #[serde(default)]
            permission: String,
        }
        let path = repo_path(repo, &["collaborators", login, "permission"])?;
        let resp = self.request(reqwest::Method::GET, &path).send().await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(Access::Level("none".into())),
            StatusCode::FORBIDDEN => return Ok(Access::CannotAsk),
            _ => {}
        }
        let answer: Permission = Self::check(resp, &format!("{login}'s permission on {repo}"))
            .await?
            .json()
            .await?;
        Ok(Access::Level(answer.permission))
    }

    /// A pull request; `None` when Gitea has none of that number (an issue, say).
    pub async fn pull(&self, repo: &str, number: i64) -> Result<Option<PullState>, GiteaError> {
        let path = repo_path(repo, &["pulls", &number.to_string()])?;
        let resp = self.request(reqwest::Method::GET, &path).send().await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            Self::check(resp, &format!("pull request {repo}#{number}"))
                .await?
                .json()
                .await?,
        ))
    }

    /// Every review of a pull request.
    pub async fn reviews(&self, repo: &str, number: i64) -> Result<Vec<Review>, GiteaError> {
        let mut out = Vec::new();
        for page in 1..=20 {
            let path = format!(
                "{}?limit=50&page={page}",
                repo_path(repo, &["pulls", &number.to_string(), "reviews"])?
            );
            let resp = self.request(reqwest::Method::GET, &path).send().await?;
            let reviews: Vec<Review> =
                Self::check(resp, &format!("the reviews of {repo}#{number}"))
                    .await?
                    .json()
                    .await?;
            let done = reviews.len() < 50;
            out.extend(reviews);
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// The newest status of each context on a commit (`GET …/commits/{sha}/status`).
    pub async fn commit_statuses(
        &self,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<CommitStatus>, GiteaError> {
        #[derive(Deserialize)]
        struct Combined {
            #[serde(default)]
            statuses: Option<Vec<CommitStatus>>,
        }
        let mut out = Vec::new();
        for page in 1..=20 {
            let path = format!(
                "{}?limit=50&page={page}",
                repo_path(repo, &["commits", sha, "status"])?
            );
            let resp = self.request(reqwest::Method::GET, &path).send().await?;
            let combined: Combined = Self::check(resp, &format!("the statuses of {repo}@{sha}"))
                .await?
                .json()
                .await?;
            let statuses = combined.statuses.unwrap_or_default();
            let done = statuses.len() < 50;
            out.extend(statuses);
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// The pull request that `sha` is the merge commit of, if any
    /// (`GET …/commits/{sha}/pull`).
    pub async fn pull_of_merge(
        &self,
        repo: &str,
        sha: &str,
    ) -> Result<Option<PullState>, GiteaError> {
        let path = repo_path(repo, &["commits", sha, "pull"])?;
        let resp = self.request(reqwest::Method::GET, &path).send().await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            Self::check(resp, &format!("the pull request of {repo}@{sha}"))
                .await?
                .json()
                .await?,
        ))
    }
}
