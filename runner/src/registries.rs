//! The credentials of `[[registries]]` for pulling images: found by the registry host of
//! an image reference, the password from its file (read with the configuration) or from
//! Vault through Pipewright's own login (`[vault].server_role`), kept in memory only.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use pipewright_containers::{RegistryAuth, registry_host};

use crate::{
    config::{Config, RegistryCredentials, RegistryPassword, Secret},
    identity::Issuer,
    vault::Vault,
};

/// How long a password read from Vault is used before it is read again (a rotated
/// password is picked up within this time, or at the first refusal).
const VAULT_PASSWORD_TTL: Duration = Duration::from_secs(5 * 60);

/// Pipewright's own way into Vault: a token its issuer signs for itself, and the role.
struct ServerVault {
    vault: Vault,
    mount: String,
    role: String,
    issuer: Arc<Issuer>,
}

/// `[[registries]]` at run time.
pub struct Registries {
    entries: Vec<RegistryCredentials>,
    vault: Option<ServerVault>,
    /// Passwords read from Vault, by host, with when they were read.
    from_vault: Mutex<HashMap<String, (Secret, Instant)>>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self.entries.iter().map(|r| r.host.as_str()).collect();
        f.debug_struct("Registries")
            .field("hosts", &hosts)
            .finish_non_exhaustive()
    }
}

impl Registries {
    /// The registries of `config`; `vault` and `issuer` serve `password_vault` (the
    /// configuration guarantees `[vault].address` and `server_role` when one is used).
    pub fn new(config: &Config, vault: Option<Vault>, issuer: Arc<Issuer>) -> Registries {
        let vault = match (vault, &config.vault.server_role) {
            (Some(vault), Some(role)) => Some(ServerVault {
                vault,
                mount: config.vault.mount.clone(),
                role: role.clone(),
                issuer,
            }),
            _ => None,
        };
        Registries {
            entries: config.registries.clone(),
            vault,
            from_vault: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials to pull `image` with: `None` when no entry names its registry.
    /// `Err` says why the password could not be had (naming the registry and where the
    /// password lives, never a secret).
    pub async fn auth_for(&self, image: &str) -> Result<Option<RegistryAuth>, String> {
        let host = registry_host(image);
        let Some(entry) = self.entries.iter().find(|r| r.host == host) else {
            return Ok(None);
        };
        let password = match &entry.password {
            RegistryPassword::File(secret) => secret.expose().to_owned(),
            RegistryPassword::Vault { path, key } => self.vault_password(&host, path, key).await?,
        };
        Ok(Some(RegistryAuth {
            username: entry.username.clone(),
            password,
            server: host,
        }))
    }

    /// After the registry refused a password from Vault: read it again at the next pull.
    pub fn forget(&self, image: &str) {
        let host = registry_host(image);
        self.cache().remove(&host);
    }

    /// Every password known now (from files, and those read from Vault), to mask.
    pub fn known_passwords(&self) -> Vec<String> {
        let mut known: Vec<String> = self
            .entries
            .iter()
            .filter_map(|r| match &r.password {
                RegistryPassword::File(secret) => Some(secret.expose().to_owned()),
                RegistryPassword::Vault { .. } => None,
            })
            .collect();
        known.extend(self.cache().values().map(|(s, _)| s.expose().to_owned()));
        known
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Secret, Instant)>> {
        // A panic while holding it left nothing half-written: each entry is one insert.
        self.from_vault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs in as Pipewright, reads `path#key`, revokes the login.
    async fn vault_password(&self, host: &str, path: &str, key: &str) -> Result<String, String> {
        if let Some((secret, read)) = self.cache().get(host)
            && read.elapsed() < VAULT_PASSWORD_TTL
        {
            return Ok(secret.expose().to_owned());
        }
        let failed =
            |why: String| format!("the password of registry {host} ({path}#{key} in Vault): {why}");
        let Some(server) = &self.vault else {
            return Err(failed(
                "no [vault].address and [vault].server_role are configured".to_owned(),
            ));
        };
        let jwt = server
            .issuer
            .mint_server()
            .map_err(|e| failed(e.to_string()))?;
        let token = server
            .vault
            .login_jwt(&server.mount, &server.role, &jwt)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let read = server.vault.read_kv(&token, path).await;
        if let Err(e) = server.vault.revoke(&token).await {
            tracing::warn!(error = %e, "failed to revoke Pipewright's own Vault token");
        }
        let mut values = read.map_err(|e| failed(e.to_string()))?;
        let password = values
            .remove(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| failed(format!("the secret has no key `{key}`")))?;
        self.cache().insert(
            host.to_owned(),
            (Secret::new(password.clone()), Instant::now()),
        );
        Ok(password)
    }
}
