//! Talking to Gitea's REST API: commit statuses, branches, open pull requests. Small typed
//! requests of our own over reqwest, because Gitea's responses are not GitHub's (the state
//! comes back under `status`, users are Gitea's): GitHub-typed clients fail to read them.

pub mod actions;
pub mod hooks;
pub mod oauth;
pub mod payload;
pub mod pulls;

use std::{path::Path, time::Duration};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
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
    #[error("{0:?} cannot be a part of a Gitea API path")]
    Path(String),
}

impl GiteaError {
    /// Whether trying again later may succeed (Gitea down, overloaded, or timing out).
    pub fn is_transient(&self) -> bool {
        match self {
            GiteaError::Http(_) => true,
            GiteaError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            GiteaError::Ca { .. } | GiteaError::Path(_) => false,
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

/// What stays unescaped in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `/repos/{owner}/{name}/{rest…}` with every segment percent-encoded, so that a `/`, `?`,
/// `#` or `%` in a name stays inside its segment (`%` is encoded too, so `%2e%2e` stays a
/// name). `repo` is `owner/name` (a `/` in the name is encoded). Empty, `.` and `..`
/// segments are refused: a URL parser would remove them and change the path.
pub fn repo_path(repo: &str, rest: &[&str]) -> Result<String, GiteaError> {
    let (owner, name) = repo
        .split_once('/')
        .ok_or_else(|| GiteaError::Path(repo.to_owned()))?;
    let mut path = String::from("/repos");
    for segment in [owner, name].iter().chain(rest) {
        if matches!(*segment, "" | "." | "..") {
            return Err(GiteaError::Path((*segment).to_owned()));
        }
        path.push('/');
        path.extend(utf8_percent_encode(segment, SEGMENT));
    }
    Ok(path)
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
            .request(reqwest::Method::POST, &repo_path(repo, &["statuses", sha])?)
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
            let comments = repo_path(repo, &["issues", &number.to_string(), "comments"])?;
            let path = format!("{comments}?limit=50&page={page}");
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
                    &repo_path(repo, &["issues", "comments", &id.to_string()])?,
                )
                .json(&body)
                .send()
                .await?
            }
            None => {
                self.request(
                    reqwest::Method::POST,
                    &repo_path(repo, &["issues", &number.to_string(), "comments"])?,
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
            .request(reqwest::Method::GET, &repo_path(repo, &[])?)
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
    /// `admin` or `owner`). Needs Pipewright's user to be a repository admin: Gitea answers
    /// 403 otherwise, which is a no (with a warning), never a yes; other failures are errors
    /// (the delivery is tried again).
    pub async fn can_write(&self, repo: &str, login: &str) -> Result<bool, GiteaError> {
        #[derive(Deserialize)]
        struct Permission {
            #[serde(default)]
            permission: String,
        }
        let resp = self
            .request(
                reqwest::Method::GET,
                &repo_path(repo, &["collaborators", login, "permission"])?,
            )
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            // No such user (any more): nobody vouches for the pull request.
            return Ok(false);
        }
        if resp.status() == StatusCode::FORBIDDEN {
            // Pipewright's user may not ask: fail closed (the pull request runs untrusted)
            // rather than never running it.
            tracing::warn!(
                repo,
                login,
                "Gitea does not tell Pipewright's user other users' permissions (it needs to be a repository admin): the pull request runs untrusted"
            );
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
            let path = format!("{}?limit=50&page={page}{query}", repo_path(repo, &[what])?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_segment_is_escaped() {
        let ok = |repo: &str, rest: &[&str]| repo_path(repo, rest).unwrap();
        assert_eq!(ok("org/app", &[]), "/repos/org/app");
        assert_eq!(
            ok("org/app", &["statuses", "0a1b"]),
            "/repos/org/app/statuses/0a1b"
        );
        assert_eq!(ok("org/my.app_2-x~", &[]), "/repos/org/my.app_2-x~");
        // Nothing in a segment can change the path or add a query.
        assert_eq!(
            ok("org/a/../../admin", &[]),
            "/repos/org/a%2F..%2F..%2Fadmin"
        );
        assert_eq!(
            ok("org/app", &["statuses", "x?state=y#z"]),
            "/repos/org/app/statuses/x%3Fstate%3Dy%23z"
        );
        assert_eq!(ok("org/a%2Fb", &[]), "/repos/org/a%252Fb");
        assert_eq!(ok("org/%2e%2E", &[]), "/repos/org/%252e%252E");
        assert_eq!(ok("org/é", &[]), "/repos/org/%C3%A9");
        assert_eq!(ok("org/a b", &["issues"]), "/repos/org/a%20b/issues");
        for (repo, rest) in [
            ("org/..", &[][..]),
            ("../app", &[]),
            ("org/.", &[]),
            ("org/", &[]),
            ("/app", &[]),
            ("noslash", &[]),
            ("org/app", &[".."]),
            ("org/app", &[""]),
        ] {
            assert!(
                matches!(repo_path(repo, rest), Err(GiteaError::Path(_))),
                "{repo} {rest:?}"
            );
        }
    }
}
