//! Reading settings from the file and the environment: where a value comes from, its raw
//! type, and every problem collected (unknown keys and variables included) instead of
//! stopping at the first.

use std::{collections::BTreeMap, fs};

use super::{ENV_PREFIX, Problem};

/// `PIPEWRIGHT_` variables that are not settings and are not reported as unknown:
/// `PIPEWRIGHT_LOG` (the log filter), `PIPEWRIGHT_API_TOKEN` (`pipewright dispatch`'s token), and the variables Pipewright sets in step containers,
/// so that a server or agent started inside a Pipewright step (an end-to-end pipeline) is
/// not refused because of its own step environment.
const ENV_NOT_SETTINGS: &[&str] = &[
    "PIPEWRIGHT_LOG",
    "PIPEWRIGHT_API_TOKEN",
    "PIPEWRIGHT_BRANCH",
    "PIPEWRIGHT_EVENT",
    "PIPEWRIGHT_ID_TOKEN",
    "PIPEWRIGHT_PIPELINE",
    "PIPEWRIGHT_PR",
    "PIPEWRIGHT_REF",
    "PIPEWRIGHT_REPO",
    "PIPEWRIGHT_RUN_ID",
    "PIPEWRIGHT_SHA",
];

/// Prefixes of step variables (dispatch inputs), skipped for the same reason.
const ENV_NOT_SETTINGS_PREFIXES: &[&str] = &["PIPEWRIGHT_INPUT_"];

/// Looks settings up in the environment, then the file, and collects problems. It records
/// every key asked for, so that what is left in the file or the environment is unknown:
/// the decoder (`decode.rs`) is the only list of settings.
pub(super) struct Reader<'a> {
    pub(super) file_name: &'a str,
    pub(super) file: &'a toml::Table,
    pub(super) env: BTreeMap<String, String>,
    /// Sections and keys asked for, in the order asked.
    pub(super) known: Vec<(&'static str, Vec<&'static str>)>,
    pub(super) problems: Vec<Problem>,
}

/// A raw setting and where it came from.
pub(super) struct Val<'a> {
    /// Where, as printed in problems.
    pub(super) at: String,
    /// The key or environment variable's name, as named in problems about another key.
    pub(super) name: String,
    pub(super) raw: Raw<'a>,
}

pub(super) enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(String),
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        file_name: &'a str,
        file: &'a toml::Table,
        env: BTreeMap<String, String>,
    ) -> Self {
        Reader {
            file_name,
            file,
            env,
            known: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            at: at.into(),
            message: message.into(),
        });
    }

    pub(super) fn register(&mut self, section: &'static str, key: &'static str) {
        match self.known.iter_mut().find(|(s, _)| *s == section) {
            Some((_, keys)) if keys.contains(&key) => {}
            Some((_, keys)) => keys.push(key),
            None => self.known.push((section, vec![key])),
        }
    }

    pub(super) fn env_value(
        &mut self,
        section: &'static str,
        key: &'static str,
    ) -> Option<Val<'a>> {
        self.register(section, key);
        let name = env_name(section, key);
        let value = self.env.get(&name)?.clone();
        Some(Val {
            at: name.clone(),
            name,
            raw: Raw::Env(value),
        })
    }

    pub(super) fn file_value(
        &mut self,
        section: &'static str,
        key: &'static str,
    ) -> Option<Val<'a>> {
        self.register(section, key);
        let file: &'a toml::Table = self.file;
        let value = file.get(section)?.as_table()?.get(key)?;
        Some(Val {
            at: format!("{}: [{section}].{key}", self.file_name),
            name: format!("`{key}`"),
            raw: Raw::Toml(value),
        })
    }

    pub(super) fn get(&mut self, section: &'static str, key: &'static str) -> Option<Val<'a>> {
        let env = self.env_value(section, key);
        let file = self.file_value(section, key);
        env.or(file)
    }

    pub(super) fn check<T>(
        &mut self,
        val: Option<Val<'a>>,
        parse: impl FnOnce(&Val<'a>) -> Result<T, String>,
    ) -> Option<T> {
        let val = val?;
        match parse(&val) {
            Ok(value) => Some(value),
            Err(message) => {
                self.problem(val.at, message);
                None
            }
        }
    }

    pub(super) fn read<T>(
        &mut self,
        section: &'static str,
        key: &'static str,
        parse: impl FnOnce(&Val<'a>) -> Result<T, String>,
    ) -> Option<T> {
        let val = self.get(section, key);
        self.check(val, parse)
    }

    /// A value and its `*_file` form, from the environment if either is set there, else
    /// from the file; both given in one place is a problem.
    pub(super) fn pair(
        &mut self,
        section: &'static str,
        key: &'static str,
        file_key: &'static str,
    ) -> (Option<Val<'a>>, Option<Val<'a>>) {
        let env = (
            self.env_value(section, key),
            self.env_value(section, file_key),
        );
        let file = (
            self.file_value(section, key),
            self.file_value(section, file_key),
        );
        let (value, path) = if env.0.is_some() || env.1.is_some() {
            env
        } else {
            file
        };
        if let (Some(value), Some(path)) = (&value, &path) {
            let message = format!("{} is also given; keep one of the two", path.name);
            self.problem(value.at.clone(), message);
            return (None, None);
        }
        (value, path)
    }

    /// The tables of an array of tables (`what`, at `at`); other entries are problems.
    pub(super) fn tables(
        &mut self,
        value: &'a toml::Value,
        what: &str,
        at: String,
    ) -> Vec<(usize, Entry<'a>)> {
        let Some(entries) = value.as_array() else {
            let found = value.type_str();
            self.problem(at, format!("expected {what} tables, found {found}"));
            return Vec::new();
        };
        let mut tables = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{}: {what}[{i}]", self.file_name);
            match entry.as_table() {
                Some(table) => tables.push((
                    i,
                    Entry {
                        at,
                        table,
                        keys: Vec::new(),
                    },
                )),
                None => self.problem(at, format!("expected a table, found {}", entry.type_str())),
            }
        }
        tables
    }

    /// Reports the file's sections and keys the decoder did not ask for.
    pub(super) fn unknown_file_keys(&mut self) {
        let file: &'a toml::Table = self.file;
        for (section, value) in file {
            if section == "repos" || section == "registries" {
                continue;
            }
            let Some((_, keys)) = self.known.iter().find(|(s, _)| s == section) else {
                let at = match value.is_table() {
                    true => format!("{}: [{section}]", self.file_name),
                    false => format!("{}: {section}", self.file_name),
                };
                // A key of some section written at the top, before any `[section]`.
                let owner = (!value.is_table())
                    .then(|| {
                        self.known
                            .iter()
                            .find(|(_, keys)| keys.contains(&section.as_str()))
                    })
                    .flatten();
                let message = match owner {
                    Some((owner, _)) => {
                        format!("unknown key; did you mean `[{owner}].{section}`?")
                    }
                    None => {
                        let sections = self.known.iter().map(|(s, _)| *s);
                        unknown("section", section, sections, |s| match s {
                            "repos" | "registries" => format!("`[[{s}]]`"),
                            _ => format!("`[{s}]`"),
                        })
                    }
                };
                self.problem(at, message);
                continue;
            };
            let Some(table) = value.as_table() else {
                let at = format!("{}: [{section}]", self.file_name);
                let message = format!("expected a table, found {}", value.type_str());
                self.problem(at, message);
                continue;
            };
            let mut problems = Vec::new();
            for key in table.keys() {
                if !keys.contains(&key.as_str()) {
                    problems.push(Problem {
                        at: format!("{}: [{section}].{key}", self.file_name),
                        message: unknown("key", key, keys.iter().copied(), |k| format!("`{k}`")),
                    });
                }
            }
            self.problems.extend(problems);
        }
    }

    /// Reports `PIPEWRIGHT_` variables that are not settings.
    pub(super) fn unknown_env(&mut self) {
        let known: Vec<String> = self
            .known
            .iter()
            .flat_map(|(section, keys)| keys.iter().map(|key| env_name(section, key)))
            .collect();
        let mut problems = Vec::new();
        for name in self.env.keys() {
            if known.contains(name)
                || ENV_NOT_SETTINGS.contains(&name.as_str())
                || ENV_NOT_SETTINGS_PREFIXES
                    .iter()
                    .any(|p| name.starts_with(p))
            {
                continue;
            }
            let message = if name.starts_with("PIPEWRIGHT_REPOS__") {
                "[[repos]] cannot be set from the environment; use the config file".to_owned()
            } else if name.starts_with("PIPEWRIGHT_REGISTRIES__") {
                "[[registries]] cannot be set from the environment; use the config file".to_owned()
            } else {
                let short = |n: &str| n.strip_prefix(ENV_PREFIX).unwrap_or(n).to_ascii_uppercase();
                let given = short(name);
                let best = known
                    .iter()
                    .map(|k| (strsim::jaro_winkler(&given, &short(k)), k))
                    .filter(|(score, _)| *score >= 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                match best {
                    Some((_, k)) => format!("unknown setting; did you mean `{k}`?"),
                    None => {
                        format!("unknown setting; settings are named {ENV_PREFIX}<SECTION>__<KEY>")
                    }
                }
            };
            problems.push(Problem {
                at: name.clone(),
                message,
            });
        }
        self.problems.extend(problems);
    }
}

/// One table of an array of tables, and the keys asked of it.
pub(super) struct Entry<'a> {
    pub(super) at: String,
    table: &'a toml::Table,
    keys: Vec<&'static str>,
}

impl<'a> Entry<'a> {
    pub(super) fn val(&mut self, key: &'static str) -> Option<Val<'a>> {
        self.keys.push(key);
        let value = self.table.get(key)?;
        Some(Val {
            at: format!("{}.{key}", self.at),
            name: format!("`{key}`"),
            raw: Raw::Toml(value),
        })
    }

    /// The keys of the table that were not asked for.
    pub(super) fn unknown_keys(&self) -> Vec<Problem> {
        let known = || self.keys.iter().copied();
        self.table
            .keys()
            .filter(|key| !self.keys.contains(&key.as_str()))
            .map(|key| Problem {
                at: format!("{}.{key}", self.at),
                message: unknown("key", key, known(), |k| format!("`{k}`")),
            })
            .collect()
    }
}

impl Val<'_> {
    pub(super) fn str(&self) -> Result<&str, String> {
        match &self.raw {
            Raw::Env(text) | Raw::Toml(toml::Value::String(text)) => Ok(text),
            Raw::Toml(other) => Err(format!("expected a string, found {}", other.type_str())),
        }
    }

    pub(super) fn bool(&self) -> Result<bool, String> {
        match &self.raw {
            Raw::Env(text) => match text.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("expected true or false, found {text:?}")),
            },
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(other) => Err(format!("expected a boolean, found {}", other.type_str())),
        }
    }

    pub(super) fn int(&self) -> Result<i64, String> {
        match &self.raw {
            Raw::Env(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, found {text:?}")),
            Raw::Toml(toml::Value::Integer(n)) => Ok(*n),
            Raw::Toml(other) => Err(format!("expected an integer, found {}", other.type_str())),
        }
    }

    pub(super) fn list(&self) -> Result<Vec<String>, String> {
        match &self.raw {
            Raw::Env(text) => Ok(text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()),
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    other => Err(format!(
                        "expected a list of strings, found {} at index {i}",
                        other.type_str()
                    )),
                })
                .collect(),
            Raw::Toml(other) => Err(format!(
                "expected a list of strings, found {}",
                other.type_str()
            )),
        }
    }
}

pub(super) fn env_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// "unknown key; did you mean `url`?" when a known name is close enough.
pub(super) fn unknown<'k>(
    what: &str,
    given: &str,
    known: impl IntoIterator<Item = &'k str>,
    show: impl Fn(&str) -> String,
) -> String {
    let best = known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(&given.to_ascii_lowercase(), k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!("unknown {what}; did you mean {}?", show(k)),
        None => format!("unknown {what}"),
    }
}

pub(super) fn read_secret_file(v: &Val<'_>) -> Result<(String, String), String> {
    let path = v.str()?;
    if path.is_empty() {
        return Err("expected a file path, found an empty string".to_owned());
    }
    match fs::read_to_string(path) {
        Ok(text) => Ok((path.to_owned(), text)),
        Err(err) => Err(format!("cannot read {path:?}: {err}")),
    }
}

/// A secret file holding one value (the final newline is not part of it).
pub(super) fn one_secret_file(v: &Val<'_>) -> Result<String, String> {
    let (path, text) = read_secret_file(v)?;
    let text = text.trim_end_matches(['\n', '\r']);
    match text.is_empty() {
        true => Err(format!("{path:?} is empty")),
        false => Ok(text.to_owned()),
    }
}
