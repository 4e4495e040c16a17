//! The server's configuration: one typed [`Config`], loaded from a TOML file and
//! `PIPEWRIGHT_<SECTION>__<KEY>` environment variables, with every problem reported at once.
//!
//! Precedence: environment over file over the defaults documented on each field. Values
//! from the environment are text: lists are comma-separated
//! (`PIPEWRIGHT_AGENT__LABELS=linux,arm64`), booleans are `true`/`false`, numbers and
//! durations are written as in the file. `[[repos]]`, `[[registries]]` and `[[api.token]]`
//! exist only in the file.
//!
//! Secrets (`token`, `webhook_secret`, `[api].tokens`, `[[api.token]]`,
//! `[ui].oauth_client_secret`, `[gitea_actions].registration_token`) can be given directly or as a
//! `*_file` whose content is read at load; giving both in one place (the file, or the
//! environment) is an error, and either form given in the environment replaces both forms
//! of the file. Relative paths are relative to the working directory, as the database URL
//! is.
//!
//! The file is parsed into a [`toml::Table`] and decoded by hand rather than by serde's
//! derive, which stops at the first problem: here every unknown key, wrong type and bad value
//! of the file and the environment is collected into one [`ConfigError`].
//!
//! The parts: the value types (`values.rs`) with every default written once beside them
//! ([`defaults`]); where a value comes from and the collected problems (`reader.rs`); the
//! one list of settings, each with its parser and default (`decode.rs`); the checks of
//! single values (`parse.rs`).

mod decode;
pub mod defaults;
mod parse;
mod reader;
#[cfg(test)]
mod registries_tests;
#[cfg(test)]
mod tests;
mod values;

use std::{collections::BTreeMap, fmt, fs, path::Path};

pub use values::{
    AgentConfig, Algorithm, ApiConfig, ApplyRequirement, Config, DatabaseConfig, DockerConfig,
    GiteaActionsConfig, GiteaConfig, HttpLimits, IdentityConfig, LogConfig, LogFormat,
    RegistryCredentials, RegistryPassword, RepoPolicy, RetentionConfig, Scope, ScopedToken, Secret,
    ServerConfig, UiConfig, VaultConfig,
};

use decode::decode;
use reader::Reader;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "PIPEWRIGHT_";

impl Default for Config {
    fn default() -> Self {
        let empty = toml::Table::new();
        let mut reader = Reader::new("", &empty, BTreeMap::new());
        let config = decode(&mut reader);
        debug_assert!(reader.problems.is_empty(), "{:?}", reader.problems);
        config
    }
}

/// Every problem found in the configuration file and environment; `Display` prints one a
/// line.
#[derive(Debug)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// The problems, in the order found (never empty).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One problem: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `config.toml: [gitea].url`, `config.toml: [[repos]][0].name`, `config.toml:3:7` (a
    /// syntax error), or an environment variable's name.
    pub at: String,
    /// What is wrong (lowercase, no final period).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Loads the configuration from `file` (none: embedded defaults) and the environment
/// (`std::env::vars()` in the binary; variables not starting with `PIPEWRIGHT_` are
/// ignored). Secret files are read here.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    match file {
        None => load_text(None, env),
        Some(path) => {
            let name = path.display().to_string();
            match fs::read_to_string(path) {
                Ok(text) => load_text(Some((&name, &text)), env),
                Err(err) => {
                    let mut errors = load_text(None, env)
                        .err()
                        .map_or(Vec::new(), |e| e.problems);
                    errors.insert(
                        0,
                        Problem {
                            at: name,
                            message: format!("cannot read the config file: {err}"),
                        },
                    );
                    Err(ConfigError { problems: errors })
                }
            }
        }
    }
}

/// [`load`] from a file's name and text.
fn load_text(
    file: Option<(&str, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    let mut syntax = None;
    let (name, table) = match file {
        None => ("", toml::Table::new()),
        Some((name, text)) => match text.parse::<toml::Table>() {
            Ok(table) => (name, table),
            Err(err) => {
                syntax = Some(syntax_error(name, text, &err));
                (name, toml::Table::new())
            }
        },
    };
    let mut reader = Reader::new(name, &table, env);
    reader.problems.extend(syntax);
    let config = decode(&mut reader);
    reader.unknown_file_keys();
    reader.unknown_env();
    if reader.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            problems: reader.problems,
        })
    }
}

fn syntax_error(name: &str, text: &str, err: &toml::de::Error) -> Problem {
    let at = match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("{name}:{line}:{column}")
        }
        None => name.to_owned(),
    };
    let message = err.message().trim().replace('\n', "; ");
    Problem { at, message }
}
