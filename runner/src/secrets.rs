//! What a step gets besides its plan: Vault secrets as environment variables, the run's
//! identity token, and the homelab CA bundle mounted with the variables tools read.

use std::{collections::BTreeMap, path::Path};

use pipewright_containers::Mount;
use pipewright_pipelines::{SecretRef, SecretTarget};

use crate::vault::{RunToken, Vault, VaultError};

/// Where the CA bundle appears in every step container.
pub const CA_IN_CONTAINER: &str = "/etc/ssl/certs/pipewright-ca.pem";

/// Reads the pipeline's secrets (each path once) into environment variables.
pub async fn read_secrets(
    vault: &Vault,
    token: &RunToken,
    refs: &[SecretRef],
) -> Result<Vec<(String, String)>, VaultError> {
    let mut cache: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut env = Vec::new();
    for r in refs {
        if !cache.contains_key(r.path.as_str()) {
            let data = vault.read_kv(token, &r.path).await?;
            cache.insert(&r.path, data);
        }
        let data = &cache[r.path.as_str()];
        match &r.target {
            SecretTarget::Key { env: name, key } => {
                let value = data.get(key).ok_or_else(|| VaultError::MissingKey {
                    path: r.path.clone(),
                    key: key.clone(),
                })?;
                env.push((name.clone(), value.clone()));
            }
            SecretTarget::All { prefix } => {
                for (key, value) in data {
                    env.push((SecretTarget::env_for(prefix, key), value.clone()));
                }
            }
        }
    }
    Ok(env)
}

/// The CA bundle's mount and the variables that make common tools trust it.
pub fn ca_for_steps(ca_file: Option<&Path>) -> (Vec<Mount>, Vec<(String, String)>) {
    let Some(file) = ca_file else {
        return (Vec::new(), Vec::new());
    };
    let mount = Mount {
        host: file.to_path_buf(),
        container: CA_IN_CONTAINER.into(),
        read_only: true,
    };
    let env = [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "VAULT_CACERT",
    ]
    .into_iter()
    .map(|k| (k.to_string(), CA_IN_CONTAINER.to_string()))
    .collect();
    (vec![mount], env)
}
