//! What a step gets besides its plan: Vault secrets as environment variables, the run's
//! identity token, and the homelab CA bundle mounted with the variables tools read.

use std::{collections::BTreeMap, path::Path};

use pipewright_containers::Mount;
use pipewright_pipelines::{SecretFile, SecretRef, SecretTarget};

use crate::vault::{RunToken, Vault, VaultError};

/// Where the CA bundle appears in every step container.
pub const CA_IN_CONTAINER: &str = "/etc/ssl/certs/pipewright-ca.pem";

/// Why a pipeline's secrets cannot be given to its steps. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(
        "the Vault secret `{path}` is given as every key with no prefix: name its variables with one, e.g. `{path_name}_*`"
    )]
    EmptyPrefix { path: String, path_name: String },
    #[error(
        "the Vault secret `{path}` would set `{name}`, which only Pipewright sets: no step runs"
    )]
    Reserved { path: String, name: String },
    #[error("the Vault secret `{path}` has a key `{key}` that cannot be part of a variable name")]
    BadKey { path: String, key: String },
}

/// Whether only Pipewright may set the variable `name` (event facts, the identity token,
/// Vault's address and CA): the rule `validate` applies to `env:` and secret names, here
/// applied again to the names a `PREFIX_*` secret gives once its keys are known.
pub use pipewright_pipelines::is_reserved_env;

/// Reads the pipeline's secrets (each path once) into environment variables. Every final
/// name is checked: a reserved one, or a fan-out without a prefix, refuses them all.
pub async fn read_secrets(
    vault: &Vault,
    token: &RunToken,
    refs: &[SecretRef],
) -> Result<Vec<(String, String)>, SecretsError> {
    let mut cache: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut env = Vec::new();
    for r in refs {
        if !cache.contains_key(r.path.as_str()) {
            let data = vault.read_kv(token, &r.path).await?;
            cache.insert(&r.path, data);
        }
        env.extend(variables(r, &cache[r.path.as_str()])?);
    }
    Ok(env)
}

/// Reads the values of the pipeline's `vault.files` (each path once): `(relative path,
/// value)` pairs, for [`crate::secrets_dir::RunSecretsDir`].
pub async fn read_secret_files(
    vault: &Vault,
    token: &RunToken,
    files: &[SecretFile],
) -> Result<Vec<(String, String)>, SecretsError> {
    let mut cache: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut out = Vec::new();
    for f in files {
        if !cache.contains_key(f.path.as_str()) {
            let data = vault.read_kv(token, &f.path).await?;
            cache.insert(&f.path, data);
        }
        let value = cache[f.path.as_str()]
            .get(&f.key)
            .ok_or_else(|| VaultError::MissingKey {
                path: f.path.clone(),
                key: f.key.clone(),
            })?;
        out.push((f.file.clone(), value.clone()));
    }
    Ok(out)
}

/// The variables one reference gives, from the secret's data.
fn variables(
    r: &SecretRef,
    data: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, SecretsError> {
    let named = |name: String, value: &String| {
        if is_reserved_env(&name) {
            return Err(SecretsError::Reserved {
                path: r.path.clone(),
                name,
            });
        }
        Ok((name, value.clone()))
    };
    match &r.target {
        SecretTarget::Key { env: name, key } => {
            let value = data.get(key).ok_or_else(|| VaultError::MissingKey {
                path: r.path.clone(),
                key: key.clone(),
            })?;
            Ok(vec![named(name.clone(), value)?])
        }
        SecretTarget::All { prefix } if prefix.is_empty() => Err(SecretsError::EmptyPrefix {
            path: r.path.clone(),
            path_name: r
                .path
                .rsplit('/')
                .next()
                .unwrap_or("SECRET")
                .to_ascii_uppercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        }),
        SecretTarget::All { prefix } => data
            .iter()
            .map(|(key, value)| {
                if key.is_empty() || key.contains(['=', '\0']) {
                    return Err(SecretsError::BadKey {
                        path: r.path.clone(),
                        key: key.clone(),
                    });
                }
                named(SecretTarget::env_for(prefix, key), value)
            })
            .collect(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fan_out(prefix: &str, keys: &[&str]) -> Result<Vec<String>, String> {
        let r = SecretRef {
            path: "kvv1/team/app".into(),
            target: SecretTarget::All {
                prefix: prefix.into(),
            },
        };
        let data = keys
            .iter()
            .map(|k| (k.to_string(), format!("value-of-{k}")))
            .collect();
        variables(&r, &data)
            .map(|env| env.into_iter().map(|(name, _)| name).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fan_out_names_are_checked_once_the_keys_are_known() {
        assert_eq!(
            fan_out("OVH_", &["application_key", "consumer_key"]).unwrap(),
            ["OVH_APPLICATION_KEY", "OVH_CONSUMER_KEY"]
        );
        assert_eq!(
            fan_out("TF_VAR_pg_", &["username"]).unwrap(),
            ["TF_VAR_pg_username"]
        );
        // Names that only become reserved with their key, after upper-casing or not.
        for (prefix, key, name) in [
            ("C", "i", "CI"),
            ("TERRAFORM_VAULT_AUTH_", "jwt", "TERRAFORM_VAULT_AUTH_JWT"),
            ("PIPEWRIGHT", "_id_token", "PIPEWRIGHT_ID_TOKEN"),
            ("VAULT", "_addr", "VAULT_ADDR"),
            ("PIPEWRIGHT", "_SHA", "PIPEWRIGHT_SHA"),
        ] {
            let err = fan_out(prefix, &["fine", key]).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "the Vault secret `kvv1/team/app` would set `{name}`, which only Pipewright sets: no step runs"
                )
            );
            assert!(!err.contains("value-of"), "{err}");
        }
        // A lower-case prefix keeps the key: `c` + `I` is not `CI`.
        assert_eq!(fan_out("c", &["I"]).unwrap(), ["cI"]);
        let err = fan_out("", &["CI"]).unwrap_err();
        assert!(
            err.contains("no prefix") && err.contains("`APP_*`"),
            "{err}"
        );
        let err = fan_out("X_", &["a=b"]).unwrap_err();
        assert!(err.contains("key `a=b`"), "{err}");
    }

    #[test]
    fn one_key_into_a_reserved_name_is_refused_too() {
        let r = SecretRef {
            path: "kvv1/x".into(),
            target: SecretTarget::Key {
                env: "VAULT_TOKEN".into(),
                key: "token".into(),
            },
        };
        let data = [("token".to_string(), "t0ken-value".to_string())].into();
        let err = variables(&r, &data).unwrap_err().to_string();
        assert!(
            err.contains("`VAULT_TOKEN`") && !err.contains("t0ken"),
            "{err}"
        );
    }

    #[test]
    fn reserved_names() {
        for name in [
            "CI",
            "PIPEWRIGHT_SHA",
            "VAULT_ADDR",
            "TERRAFORM_VAULT_AUTH_JWT",
        ] {
            assert!(is_reserved_env(name), "{name}");
        }
        for name in ["CIRCLE", "ci", "PIPEWRIGHT", "TF_VAR_x", "MY_VAULT_ADDR"] {
            assert!(!is_reserved_env(name), "{name}");
        }
    }
}
