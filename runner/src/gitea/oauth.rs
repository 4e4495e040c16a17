//! Signing users in with Gitea (its OAuth2 provider, research: gitea-facts.md §6) and asking
//! Gitea what a signed-in user may do: the code exchange at `/login/oauth/access_token`,
//! `GET /user` and a repository's `permissions` as that user sees them.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::{Gitea, GiteaError, repo_path};
use crate::config::Secret;

/// What Gitea's token endpoint answers: an access token for the user's API calls, how long
/// it lasts (Gitea's default: 3600 s) and the refresh token that gets a new one.
#[derive(Debug)]
pub struct UserToken {
    pub access: Secret,
    pub expires_in: Option<Duration>,
    pub refresh: Option<Secret>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// A user's access to a repository, from the `permissions` Gitea adds to a repository it
/// shows to that user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RepoAccess {
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub push: bool,
    #[serde(default)]
    pub pull: bool,
}

/// The code exchange (or a refresh) failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// Gitea refused it; its OAuth error code and description (RFC 6749 §5.2).
    #[error("Gitea refused the sign-in: {code}: {description}")]
    Refused { code: String, description: String },
    #[error(transparent)]
    Gitea(#[from] GiteaError),
}

impl Gitea {
    /// The same server, reached with a user's token instead of Pipewright's.
    pub fn as_user(&self, token: Secret) -> Gitea {
        Gitea {
            base: self.base.clone(),
            token: Some(token),
            client: self.client.clone(),
        }
    }

    /// Gitea's own base URL (the API's without `/api/v1`).
    pub fn web_url(&self) -> &str {
        self.base.strip_suffix("/api/v1").unwrap_or(&self.base)
    }

    /// `POST /login/oauth/access_token` with `form` (the grant and its fields) and the
    /// client's id and secret in the body, as Gitea reads them.
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<UserToken, OAuthError> {
        let resp = self
            .client
            .post(format!("{}/login/oauth/access_token", self.web_url()))
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .map_err(GiteaError::from)?;
        let status = resp.status();
        if status == StatusCode::BAD_REQUEST {
            // Gitea answers every refusal 400 with {"error", "error_description"}.
            let err: TokenError = resp.json().await.map_err(GiteaError::from)?;
            return Err(OAuthError::Refused {
                code: err.error,
                description: err.error_description,
            });
        }
        let answer: TokenAnswer = Self::check(resp, "the OAuth2 token request")
            .await?
            .json()
            .await
            .map_err(GiteaError::from)?;
        Ok(UserToken {
            access: Secret::new(answer.access_token),
            expires_in: answer
                .expires_in
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            refresh: answer
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        })
    }

    /// Exchanges an authorization code (with the PKCE verifier it was asked with) for the
    /// user's token.
    pub async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &Secret,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<UserToken, OAuthError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ])
        .await
    }

    /// A new access token for a refresh token.
    pub async fn refresh_token(
        &self,
        client_id: &str,
        client_secret: &Secret,
        refresh: &Secret,
    ) -> Result<UserToken, OAuthError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("refresh_token", refresh.expose()),
        ])
        .await
    }

    /// The login of the token's user (`GET /user`).
    pub async fn current_login(&self) -> Result<String, GiteaError> {
        let resp = self.request(reqwest::Method::GET, "/user").send().await?;
        let user: super::payload::User = Self::check(resp, "the signed-in user")
            .await?
            .json()
            .await?;
        Ok(user.login)
    }

    /// The token's user's access to a repository (`GET /repos/{owner}/{repo}`); no access
    /// at all when Gitea answers 404, as it does for a private repository the user may not
    /// see.
    pub async fn repo_access(&self, repo: &str) -> Result<RepoAccess, GiteaError> {
        #[derive(Deserialize)]
        struct WithPermissions {
            #[serde(default)]
            permissions: Option<RepoAccess>,
        }
        let resp = self
            .request(reqwest::Method::GET, &repo_path(repo, &[])?)
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(RepoAccess::default());
        }
        let answer: WithPermissions = Self::check(resp, &format!("the repository {repo}"))
            .await?
            .json()
            .await?;
        Ok(answer.permissions.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_read_as_gitea_writes_them() {
        let json =
            r#"{"id":1,"name":"app","permissions":{"admin":false,"push":false,"pull":true}}"#;
        #[derive(Deserialize)]
        struct R {
            permissions: RepoAccess,
        }
        let r: R = serde_json::from_str(json).unwrap();
        assert_eq!(
            r.permissions,
            RepoAccess {
                admin: false,
                push: false,
                pull: true
            }
        );
    }

    #[test]
    fn the_web_url_is_the_api_url_without_its_suffix() {
        let client = super::super::http_client(None).unwrap();
        let gitea = Gitea::new("https://gitea.example.lab/", None, client);
        assert_eq!(gitea.web_url(), "https://gitea.example.lab");
    }
}
