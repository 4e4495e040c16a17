//! Vault (or OpenBao) for runs: JWT login with the run's identity token, KV v1/v2 reads with
//! the version detected per mount, and revocation of the run's token. Small typed requests
//! over reqwest; every error names Vault, the role or the path, never a secret.

use std::collections::BTreeMap;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::{
    config::Secret,
    run::{ActionServices, BoxFuture, DbCredentials},
};

/// A Vault login as built-in actions use it (the `postgres` action's credentials).
#[derive(Debug)]
pub struct Session<'a> {
    pub vault: &'a Vault,
    pub token: &'a RunToken,
}

impl ActionServices for Session<'_> {
    fn read_kv<'b>(
        &'b self,
        path: &'b str,
    ) -> BoxFuture<'b, Result<BTreeMap<String, String>, String>> {
        Box::pin(async move {
            self.vault
                .read_kv(self.token, path)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn database_credentials<'b>(
        &'b self,
        mount: &'b str,
        role: &'b str,
    ) -> BoxFuture<'b, Result<DbCredentials, String>> {
        Box::pin(async move {
            self.vault
                .database_credentials(self.token, mount, role)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn revoke_lease<'b>(&'b self, lease_id: &'b str) -> BoxFuture<'b, Result<(), String>> {
        Box::pin(async move {
            self.vault
                .revoke_lease(self.token, lease_id)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Vault at {address} is unreachable: {why}")]
    Unreachable { address: String, why: String },
    #[error("Vault refused the login with role `{role}` on auth mount `{mount}`: {message}")]
    LoginRefused {
        role: String,
        mount: String,
        message: String,
    },
    #[error("Vault has no secret at `{path}`")]
    NotFound { path: String },
    #[error("Vault denies reading `{path}` to role `{role}`")]
    Denied { path: String, role: String },
    /// No secrets engine is mounted where the path points (or none that the token may
    /// use at all): Vault answers "permission denied" for those too, which would send the
    /// reader to the policies instead of the mount.
    #[error("Vault has no mount `{mount}` (reading `{path}` with role `{role}`)")]
    NoMount {
        mount: String,
        path: String,
        role: String,
    },
    #[error("the Vault secret `{path}` has no key `{key}`")]
    MissingKey { path: String, key: String },
    #[error("Vault answered {status} to {what}: {message}")]
    Other {
        status: u16,
        what: String,
        message: String,
    },
}

/// A Vault server.
#[derive(Clone, Debug)]
pub struct Vault {
    address: String,
    client: Client,
}

/// A token obtained for one run, with the role it came from (for messages).
#[derive(Debug)]
pub struct RunToken {
    pub token: Secret,
    pub role: String,
}

/// Vault's error text: `{"errors": ["..."]}`.
fn errors_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect())
}

impl Vault {
    pub fn new(address: &str, client: Client) -> Vault {
        Vault {
            address: address.trim_end_matches('/').to_string(),
            client,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<Value>,
    ) -> Result<(StatusCode, String), VaultError> {
        let mut req = self
            .client
            .request(method, format!("{}/v1/{path}", self.address));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| VaultError::Unreachable {
            address: self.address.clone(),
            why: crate::error_chain(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, text))
    }

    /// Logs in with the jwt auth method.
    pub async fn login_jwt(
        &self,
        mount: &str,
        role: &str,
        jwt: &str,
    ) -> Result<RunToken, VaultError> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("auth/{mount}/login"),
                None,
                Some(json!({ "role": role, "jwt": jwt })),
            )
            .await?;
        if !status.is_success() {
            return Err(VaultError::LoginRefused {
                role: role.into(),
                mount: mount.into(),
                message: errors_of(&body),
            });
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let token = v["auth"]["client_token"]
            .as_str()
            .ok_or_else(|| VaultError::LoginRefused {
                role: role.into(),
                mount: mount.into(),
                message: "the answer has no client token".into(),
            })?;
        Ok(RunToken {
            token: Secret::new(token),
            role: role.to_string(),
        })
    }

    /// A child of `parent` (same policies, at most `ttl`): revoking it revokes every lease
    /// obtained with it, which needs no capability on `sys/leases/revoke`.
    pub async fn child_token(&self, parent: &RunToken, ttl: &str) -> Result<RunToken, VaultError> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "auth/token/create",
                Some(&parent.token),
                Some(json!({ "ttl": ttl, "display_name": "pipewright-exec" })),
            )
            .await?;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        match v["auth"]["client_token"].as_str() {
            Some(token) if status.is_success() => Ok(RunToken {
                token: Secret::new(token),
                role: parent.role.clone(),
            }),
            _ => Err(VaultError::Other {
                status: status.as_u16(),
                what: "creating a child token".into(),
                message: errors_of(&body),
            }),
        }
    }

    /// Reads every key of a KV secret (v1 or v2, detected from its mount).
    pub async fn read_kv(
        &self,
        token: &RunToken,
        path: &str,
    ) -> Result<BTreeMap<String, String>, VaultError> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("sys/internal/ui/mounts/{path}"),
                Some(&token.token),
                None,
            )
            .await?;
        let (mount, version) = match status {
            s if s.is_success() => {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                let mount = v["data"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string();
                let version = v["data"]["options"]["version"]
                    .as_str()
                    .unwrap_or("1")
                    .to_string();
                (mount, version)
            }
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                // Vault answers 403 for a path under no mount, whatever the policies.
                if let Some(None) = self.visible_mount(token, path).await {
                    return Err(self.no_mount(token, path, None));
                }
                return Err(if status == StatusCode::FORBIDDEN {
                    VaultError::Denied {
                        path: path.into(),
                        role: token.role.clone(),
                    }
                } else {
                    VaultError::NotFound { path: path.into() }
                });
            }
            s => {
                return Err(VaultError::Other {
                    status: s.as_u16(),
                    what: format!("the mount of `{path}`"),
                    message: errors_of(&body),
                });
            }
        };
        let rest = path
            .strip_prefix(&mount)
            .unwrap_or(path)
            .trim_start_matches('/');
        let api_path = if version == "2" {
            format!("{mount}/data/{rest}")
        } else {
            format!("{mount}/{rest}")
        };
        let (status, body) = self
            .call(reqwest::Method::GET, &api_path, Some(&token.token), None)
            .await?;
        match status {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Err(VaultError::NotFound { path: path.into() }),
            StatusCode::FORBIDDEN => {
                return Err(VaultError::Denied {
                    path: path.into(),
                    role: token.role.clone(),
                });
            }
            s => {
                return Err(VaultError::Other {
                    status: s.as_u16(),
                    what: format!("reading `{path}`"),
                    message: errors_of(&body),
                });
            }
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let data = if version == "2" {
            &v["data"]["data"]
        } else {
            &v["data"]
        };
        let map = data
            .as_object()
            .ok_or_else(|| VaultError::NotFound { path: path.into() })?;
        Ok(map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                )
            })
            .collect())
    }

    /// The secrets engine mount that `path` lies in, among those the token may see
    /// (`sys/internal/ui/mounts`, which every token may read): `Some(None)` when none
    /// holds it, `None` when Vault would not say.
    async fn visible_mount(&self, token: &RunToken, path: &str) -> Option<Option<String>> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                "sys/internal/ui/mounts",
                Some(&token.token),
                None,
            )
            .await
            .ok()?;
        if !status.is_success() {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let mounts = v["data"]["secret"].as_object()?;
        Some(
            mounts
                .keys()
                .map(|m| m.trim_end_matches('/'))
                .filter(|m| {
                    path == *m
                        || path
                            .strip_prefix(*m)
                            .is_some_and(|rest| rest.starts_with('/'))
                })
                .max_by_key(|m| m.len())
                .map(str::to_string),
        )
    }

    /// The error for a path under no mount; `mount` is the one the path was meant for (else
    /// its first segment).
    fn no_mount(&self, token: &RunToken, path: &str, mount: Option<&str>) -> VaultError {
        let mount = mount
            .unwrap_or_else(|| path.split('/').next().unwrap_or(path))
            .to_string();
        VaultError::NoMount {
            mount,
            path: path.to_string(),
            role: token.role.clone(),
        }
    }

    /// Credentials from the database secrets engine at `mount` (`<mount>/creds/<role>`):
    /// user name, password and the lease to revoke when done.
    pub async fn database_credentials(
        &self,
        token: &RunToken,
        mount: &str,
        role: &str,
    ) -> Result<DbCredentials, VaultError> {
        let path = format!("{mount}/creds/{role}");
        let (status, body) = self
            .call(reqwest::Method::GET, &path, Some(&token.token), None)
            .await?;
        match status {
            s if s.is_success() => {}
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                // 404 "no handler for route" when the policy covers the path, 403 when it
                // does not: either way, whether the mount exists decides the message.
                let visible = self.visible_mount(token, &path).await;
                let no_handler = status == StatusCode::NOT_FOUND
                    && errors_of(&body).contains("no handler for route");
                return Err(match visible {
                    Some(Some(m)) if m == mount => {
                        if status == StatusCode::FORBIDDEN {
                            VaultError::Denied {
                                path,
                                role: token.role.clone(),
                            }
                        } else {
                            VaultError::NotFound { path }
                        }
                    }
                    Some(_) => self.no_mount(token, &path, Some(mount)),
                    None if no_handler => self.no_mount(token, &path, Some(mount)),
                    None if status == StatusCode::FORBIDDEN => VaultError::Denied {
                        path,
                        role: token.role.clone(),
                    },
                    None => VaultError::NotFound { path },
                });
            }
            StatusCode::BAD_REQUEST => {
                return Err(VaultError::NotFound { path });
            }
            s => {
                return Err(VaultError::Other {
                    status: s.as_u16(),
                    what: format!("reading `{path}`"),
                    message: errors_of(&body),
                });
            }
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let field = |k: &str| v["data"][k].as_str().map(str::to_string);
        match (field("username"), field("password"), v["lease_id"].as_str()) {
            (Some(username), Some(password), Some(lease)) => Ok(DbCredentials {
                username,
                password,
                lease_id: lease.to_string(),
            }),
            _ => Err(VaultError::MissingKey {
                path,
                key: "username/password".into(),
            }),
        }
    }

    /// Revokes a lease (database credentials) at once.
    pub async fn revoke_lease(&self, token: &RunToken, lease_id: &str) -> Result<(), VaultError> {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                "sys/leases/revoke",
                Some(&token.token),
                Some(json!({ "lease_id": lease_id })),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(VaultError::Other {
                status: status.as_u16(),
                what: "revoking a lease".into(),
                message: errors_of(&body),
            })
        }
    }

    /// Revokes the run's token; a token that is already gone is fine.
    pub async fn revoke(&self, token: &RunToken) -> Result<(), VaultError> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "auth/token/revoke-self",
                Some(&token.token),
                None,
            )
            .await?;
        if status.is_success() || status == StatusCode::FORBIDDEN {
            Ok(())
        } else {
            Err(VaultError::Other {
                status: status.as_u16(),
                what: "revoking the run's token".into(),
                message: errors_of(&body),
            })
        }
    }
}
