//! The one list of settings: each key with its parser and its default, decoded into the
//! [`Config`] tree. A key not asked for here is unknown.

use std::path::PathBuf;

use pipewright_pipelines::{parse_duration, parse_memory};

use super::{
    defaults,
    parse::*,
    reader::{Reader, Val, env_name, one_secret_file, read_secret_file},
    values::*,
};

/// Decodes every setting; problems go to the reader, and a setting with a problem takes its
/// default (the result is then discarded).
pub(super) fn decode(r: &mut Reader<'_>) -> Config {
    let listen = r
        .read("server", "listen", |v| socket_addr(v.str()?))
        .unwrap_or(defaults::LISTEN);
    let public_url = r
        .read("server", "public_url", |v| http_url(v.str()?))
        .unwrap_or_else(|| format!("http://{listen}"));
    let data_dir = r
        .read("server", "data_dir", |v| path(v.str()?))
        .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
    let catch_up_interval = r
        .read("server", "catch_up_interval", |v| parse_duration(v.str()?))
        .unwrap_or(defaults::CATCH_UP_INTERVAL);
    let count = |v: &Val<'_>| {
        positive(v.int()?).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
    };
    let http = HttpLimits {
        header_timeout: r
            .read("server", "header_timeout", |v| parse_duration(v.str()?))
            .unwrap_or(defaults::HEADER_TIMEOUT),
        body_timeout: r
            .read("server", "body_timeout", |v| parse_duration(v.str()?))
            .unwrap_or(defaults::BODY_TIMEOUT),
        max_connections: r
            .read("server", "max_connections", count)
            .unwrap_or(defaults::MAX_CONNECTIONS),
        body_memory: r
            .read("server", "body_memory", |v| parse_memory(v.str()?))
            .unwrap_or(defaults::BODY_MEMORY),
        max_deliveries: r
            .read("server", "max_deliveries", count)
            .unwrap_or(defaults::MAX_DELIVERIES),
    };
    let secrets_dir = r
        .read("server", "secrets_dir", |v| path(v.str()?))
        .unwrap_or_else(|| PathBuf::from(defaults::SECRETS_DIR));
    let server = ServerConfig {
        listen,
        public_url,
        data_dir,
        catch_up_interval,
        http,
        secrets_dir,
    };

    let url = r
        .read("database", "url", |v| database_url(v.str()?))
        .unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                server.data_dir.join("pipewright.db").display()
            )
        });
    let database = DatabaseConfig { url };

    let log = LogConfig {
        format: r
            .read("log", "format", |v| log_format(v.str()?))
            .unwrap_or(defaults::LOG_FORMAT),
        level: r
            .read("log", "level", |v| log_level(v.str()?))
            .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned()),
    };

    let gitea = GiteaConfig {
        url: r.read("gitea", "url", |v| http_url(v.str()?)),
        token: r.secret("gitea", "token", "token_file"),
        webhook_secret: r.secret("gitea", "webhook_secret", "webhook_secret_file"),
        ca_file: r.read("gitea", "ca_file", |v| path(v.str()?)),
        git_timeout: r
            .read("gitea", "git_timeout", |v| parse_duration(v.str()?))
            .unwrap_or(defaults::GIT_TIMEOUT),
    };

    let identity = IdentityConfig {
        audience: r
            .read("identity", "audience", |v| non_empty(v.str()?))
            .unwrap_or_else(|| defaults::AUDIENCE.to_owned()),
        token_ttl: r
            .read("identity", "token_ttl", |v| parse_duration(v.str()?))
            .unwrap_or(defaults::TOKEN_TTL),
        algorithm: r
            .read("identity", "algorithm", |v| algorithm(v.str()?))
            .unwrap_or_default(),
    };

    let vault = VaultConfig {
        address: r.read("vault", "address", |v| http_url(v.str()?)),
        mount: r
            .read("vault", "mount", |v| mount(v.str()?))
            .unwrap_or_else(|| defaults::MOUNT.to_owned()),
        role_template: r
            .read("vault", "role_template", |v| role_template(v.str()?))
            .unwrap_or_else(|| defaults::ROLE_TEMPLATE.to_owned()),
        server_role: r.read("vault", "server_role", |v| non_empty(v.str()?)),
    };

    let max_memory = r
        .read("docker", "max_memory", |v| parse_memory(v.str()?))
        .unwrap_or(defaults::MAX_MEMORY);
    let max_pids = r
        .read("docker", "max_pids", |v| positive(v.int()?))
        .unwrap_or(defaults::MAX_PIDS);
    let docker = DockerConfig {
        host: r.read("docker", "host", |v| docker_host(v.str()?)),
        stop_grace: r
            .read("docker", "stop_grace", |v| parse_duration(v.str()?))
            .unwrap_or(defaults::STOP_GRACE),
        default_memory: r
            .read("docker", "default_memory", |v| {
                at_most(parse_memory(v.str()?)?, max_memory, "max_memory")
            })
            .unwrap_or(defaults::DEFAULT_MEMORY.min(max_memory)),
        default_pids: r
            .read("docker", "default_pids", |v| {
                at_most(positive(v.int()?)?, max_pids, "max_pids")
            })
            .unwrap_or(defaults::DEFAULT_PIDS.min(max_pids)),
        network: r.read("docker", "network", |v| network_name(v.str()?)),
        max_memory,
        max_pids,
        max_timeout: r
            .read("docker", "max_timeout", |v| {
                let ceiling = parse_duration(v.str()?)?;
                match ceiling >= pipewright_pipelines::DEFAULT_TIMEOUT {
                    true => Ok(ceiling),
                    false => Err(format!(
                        "{} is below 1h, the timeout of a pipeline that sets none",
                        v.str()?
                    )),
                }
            })
            .unwrap_or(defaults::MAX_TIMEOUT),
        max_log_bytes: r
            .read("docker", "max_log_bytes", |v| parse_size(v.str()?))
            .unwrap_or(defaults::MAX_LOG_BYTES),
        secrets_in_env: r
            .read("docker", "secrets_in_env", Val::bool)
            .unwrap_or(defaults::SECRETS_IN_ENV),
        pin_images: r
            .read("docker", "pin_images", |v| image_references(v.list()?))
            .unwrap_or_default(),
    };

    let agent = AgentConfig {
        name: r.read("agent", "name", |v| agent_name(v.str()?)),
        labels: r
            .read("agent", "labels", |v| labels(v.list()?))
            .unwrap_or_default(),
        capacity: r
            .read("agent", "capacity", |v| {
                let n = v.int()?;
                usize::try_from(n).map_err(|_| format!("expected 0 or more, found {n}"))
            })
            .unwrap_or(defaults::CAPACITY),
        lease: r
            .read("agent", "lease", |v| {
                let lease = parse_duration(v.str()?)?;
                match lease >= std::time::Duration::from_secs(3) {
                    true => Ok(lease),
                    false => Err(format!("{} is below 3s, too short to be renewed", v.str()?)),
                }
            })
            .unwrap_or(defaults::LEASE),
        drain_timeout: r
            .read("agent", "drain_timeout", |v| parse_duration(v.str()?))
            .unwrap_or(defaults::DRAIN_TIMEOUT),
        listen: r.read("agent", "listen", |v| socket_addr(v.str()?)),
    };

    let api = ApiConfig {
        tokens: r.tokens().unwrap_or_default(),
        read_public: r.read("api", "read_public", Val::bool).unwrap_or(false),
        scoped_tokens: r.scoped_tokens(),
    };

    let ui = UiConfig {
        oauth_client_id: r.read("ui", "oauth_client_id", |v| non_empty(v.str()?)),
        oauth_client_secret: r.secret("ui", "oauth_client_secret", "oauth_client_secret_file"),
    };
    if ui.oauth_client_id.is_some() != ui.oauth_client_secret.is_some() {
        let (given, missing) = match ui.oauth_client_id {
            Some(_) => (
                "oauth_client_id",
                "oauth_client_secret` or `oauth_client_secret_file",
            ),
            None => ("oauth_client_secret", "oauth_client_id"),
        };
        let at = match r.file_name {
            "" => "[ui]".to_owned(),
            name => format!("{name}: [ui]"),
        };
        r.problem(
            at,
            format!("`{given}` is given without `{missing}`; give both or neither"),
        );
    }
    if ui.oauth_client_id.is_some() && gitea.url.is_none() {
        let at = match r.file_name {
            "" => "[ui]".to_owned(),
            name => format!("{name}: [ui]"),
        };
        r.problem(at, "signing in with Gitea needs `[gitea].url`");
    }
    let gitea_actions = GiteaActionsConfig {
        registration_token: r.secret(
            "gitea_actions",
            "registration_token",
            "registration_token_file",
        ),
        name: r
            .read("gitea_actions", "name", |v| runner_name(v.str()?))
            .unwrap_or_else(|| defaults::GITEA_ACTIONS_NAME.to_owned()),
        labels: r
            .read("gitea_actions", "labels", |v| runner_labels(v.list()?))
            .unwrap_or_else(|| {
                defaults::GITEA_ACTIONS_LABELS
                    .iter()
                    .map(|l| (*l).to_owned())
                    .collect()
            }),
    };
    if gitea_actions.enabled() && gitea.url.is_none() {
        let at = match r.file_name {
            "" => "[gitea_actions]".to_owned(),
            name => format!("{name}: [gitea_actions]"),
        };
        r.problem(
            at,
            "registering as a Gitea Actions runner needs `[gitea].url`",
        );
    }
    let retention = RetentionConfig {
        logs: r
            .read("retention", "logs", |v| retention_age(v.str()?))
            .unwrap_or(defaults::RETENTION_LOGS),
        runs: r
            .read("retention", "runs", |v| retention_age(v.str()?))
            .unwrap_or(defaults::RETENTION_RUNS),
        interval: r
            .read("retention", "interval", |v| parse_duration(v.str()?))
            .unwrap_or(defaults::RETENTION_INTERVAL),
    };

    let repos = r.repos();
    let registries = r.registries(&vault);

    Config {
        server,
        database,
        log,
        gitea,
        identity,
        vault,
        docker,
        agent,
        api,
        ui,
        gitea_actions,
        retention,
        repos,
        registries,
    }
}

impl<'a> Reader<'a> {
    fn secret(
        &mut self,
        section: &'static str,
        key: &'static str,
        file_key: &'static str,
    ) -> Option<Secret> {
        let (value, path) = self.pair(section, key, file_key);
        let from_value = self.check(value, |v| non_empty(v.str()?));
        let from_file = self.check(path, one_secret_file);
        from_value.or(from_file).map(Secret::new)
    }

    fn tokens(&mut self) -> Option<Vec<Secret>> {
        let (value, path) = self.pair("api", "tokens", "tokens_file");
        let from_value = self.check(value, |v| {
            let tokens = v.list()?;
            match tokens.iter().any(|t| t.trim().is_empty()) {
                true => Err("expected non-empty tokens, found an empty one".to_owned()),
                false => Ok(tokens),
            }
        });
        let from_file = self.check(path, |v| {
            let (path, text) = read_secret_file(v)?;
            let tokens: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect();
            match tokens.is_empty() {
                true => Err(format!("{path:?} holds no token")),
                false => Ok(tokens),
            }
        });
        let tokens = from_value.or(from_file)?;
        Some(tokens.into_iter().map(Secret::new).collect())
    }

    /// `[[api.token]]`, which exists only in the file (like `[[repos]]`).
    fn scoped_tokens(&mut self) -> Vec<ScopedToken> {
        self.register("api", "token");
        let env_name = env_name("api", "token");
        if self.env.contains_key(&env_name) {
            let message = "[[api.token]] cannot be set from the environment; use the config file";
            self.problem(env_name, message);
        }
        let file: &'a toml::Table = self.file;
        let Some(value) = file
            .get("api")
            .and_then(toml::Value::as_table)
            .and_then(|api| api.get("token"))
        else {
            return Vec::new();
        };
        let at = format!("{}: [api].token", self.file_name);
        let mut tokens: Vec<(usize, ScopedToken)> = Vec::new();
        for (i, mut entry) in self.tables(value, "[[api.token]]", at) {
            let at = entry.at.clone();
            let mut val = |key| entry.val(key);
            let (token, token_file) = (val("token"), val("token_file"));
            let (repos, scopes) = (val("repos"), val("scopes"));
            self.problems.extend(entry.unknown_keys());
            let token = match (token, token_file) {
                (Some(token), Some(_)) => {
                    self.problem(token.at, "`token_file` is also given; keep one of the two");
                    None
                }
                (None, None) => {
                    self.problem(at.clone(), "missing `token` or `token_file`");
                    None
                }
                (token, file) => {
                    let from_value = self.check(token, |v| non_empty(v.str()?));
                    from_value.or_else(|| self.check(file, one_secret_file))
                }
            };
            for (key, given) in [("repos", repos.is_none()), ("scopes", scopes.is_none())] {
                if given {
                    self.problem(at.clone(), format!("missing `{key}`"));
                }
            }
            let repos = self.check(repos, |v| repo_globs(v.list()?));
            let scopes = self.check(scopes, |v| api_scopes(v.list()?));
            let (Some(token), Some(repos), Some(scopes)) = (token, repos, scopes) else {
                continue;
            };
            if let Some((j, _)) = tokens.iter().find(|(_, t)| t.token.expose() == token) {
                let message = format!("the same token is given in [[api.token]][{j}]");
                self.problem(at, message);
                continue;
            }
            let token = Secret::new(token);
            tokens.push((
                i,
                ScopedToken {
                    token,
                    repos,
                    scopes,
                },
            ));
        }
        tokens.into_iter().map(|(_, token)| token).collect()
    }

    /// `[[registries]]`, file only; a password from Vault needs `[vault]`'s address and
    /// server role.
    fn registries(&mut self, vault: &VaultConfig) -> Vec<RegistryCredentials> {
        self.known.push(("registries", Vec::new()));
        let file: &'a toml::Table = self.file;
        let Some(value) = file.get("registries") else {
            return Vec::new();
        };
        let at = match value.is_table() {
            true => format!("{}: [registries]", self.file_name),
            false => format!("{}: registries", self.file_name),
        };
        let mut registries: Vec<(usize, RegistryCredentials)> = Vec::new();
        for (i, mut entry) in self.tables(value, "[[registries]]", at) {
            let at = entry.at.clone();
            let mut val = |key| entry.val(key);
            let (host, username) = (val("host"), val("username"));
            let (file, vault_path) = (val("password_file"), val("password_vault"));
            self.problems.extend(entry.unknown_keys());
            for (key, missing, what) in [
                (
                    "host",
                    host.is_none(),
                    " (the registry as image references name it)",
                ),
                ("username", username.is_none(), ""),
            ] {
                if missing {
                    self.problem(at.clone(), format!("missing `{key}`{what}"));
                }
            }
            let host = self.check(host, |v| registry_host(v.str()?));
            let username = self.check(username, |v| registry_username(v.str()?));
            let password = match (file, vault_path) {
                (Some(_), Some(vault_path)) => {
                    let message = "`password_file` is also given; keep one of the two";
                    self.problem(vault_path.at, message);
                    None
                }
                (None, None) => {
                    let message = "missing `password_file` or `password_vault`";
                    self.problem(at.clone(), message);
                    None
                }
                (Some(file), None) => self
                    .check(Some(file), one_secret_file)
                    .map(|password| RegistryPassword::File(Secret::new(password))),
                (None, Some(vault_path)) => {
                    let needs = match (&vault.address, &vault.server_role) {
                        (None, None) => Some("[vault].address and [vault].server_role"),
                        (None, Some(_)) => Some("[vault].address"),
                        (Some(_), None) => Some("[vault].server_role"),
                        (Some(_), Some(_)) => None,
                    };
                    if let Some(needs) = needs {
                        let message = format!(
                            "a password from Vault needs {needs}: Pipewright reads it with a login of its own"
                        );
                        self.problem(vault_path.at.clone(), message);
                    }
                    self.check(Some(vault_path), |v| vault_secret_ref(v.str()?))
                        .filter(|_| needs.is_none())
                        .map(|(path, key)| RegistryPassword::Vault { path, key })
                }
            };
            let (Some(host), Some(username), Some(password)) = (host, username, password) else {
                continue;
            };
            if let Some((j, _)) = registries.iter().find(|(_, r)| r.host == host) {
                let message = format!("{host:?} is already listed in [[registries]][{j}]");
                self.problem(format!("{at}.host"), message);
                continue;
            }
            registries.push((
                i,
                RegistryCredentials {
                    host,
                    username,
                    password,
                },
            ));
        }
        registries.into_iter().map(|(_, r)| r).collect()
    }

    fn repos(&mut self) -> Vec<RepoPolicy> {
        self.known.push(("repos", Vec::new()));
        let file: &'a toml::Table = self.file;
        let Some(value) = file.get("repos") else {
            return Vec::new();
        };
        let at = match value.is_table() {
            true => format!("{}: [repos]", self.file_name),
            false => format!("{}: repos", self.file_name),
        };
        // With the index of their entry, for problems about duplicates.
        let mut repos: Vec<(usize, RepoPolicy)> = Vec::new();
        for (i, mut entry) in self.tables(value, "[[repos]]", at) {
            let at = entry.at.clone();
            let mut val = |key| entry.val(key);
            let name = val("name");
            let host_volumes = val("host_volumes");
            let allow_fork_secrets = val("allow_fork_secrets");
            let apply_requirements = val("apply_requirements");
            let commenters = val("commenters");
            if name.is_none() {
                self.problem(
                    at.clone(),
                    "missing `name` (`owner/name` of the repository)",
                );
            }
            let name = self.check(name, |v| repo_name(v.str()?));
            let host_volumes = self.check(host_volumes, |v| {
                v.list()?.iter().map(|p| absolute_path(p)).collect()
            });
            let allow_fork_secrets = self.check(allow_fork_secrets, Val::bool);
            let apply_requirements = self.check(apply_requirements, |v| {
                v.list()?
                    .iter()
                    .map(|r| {
                        ApplyRequirement::parse(r).ok_or_else(|| {
                            format!("unknown requirement {r:?}: expected approved, mergeable or undiverged")
                        })
                    })
                    .collect()
            });
            let commenters = self.check(commenters, |v| {
                v.list()?
                    .into_iter()
                    .map(|login| match crate::checked::is_name_part(&login) {
                        true => Ok(login),
                        false => Err(format!("{login:?} is not a Gitea user name")),
                    })
                    .collect()
            });
            self.problems.extend(entry.unknown_keys());
            let Some(name) = name else { continue };
            if let Some((j, _)) = repos
                .iter()
                .find(|(_, r)| r.name.eq_ignore_ascii_case(&name))
            {
                let message = format!("{name:?} is already listed in [[repos]][{j}]");
                self.problem(format!("{at}.name"), message);
                continue;
            }
            let policy = RepoPolicy {
                name,
                host_volumes: host_volumes.unwrap_or_default(),
                allow_fork_secrets: allow_fork_secrets.unwrap_or(false),
                apply_requirements: apply_requirements
                    .unwrap_or_else(|| defaults::APPLY_REQUIREMENTS.to_vec()),
                commenters,
            };
            repos.push((i, policy));
        }
        repos.into_iter().map(|(_, policy)| policy).collect()
    }
}
