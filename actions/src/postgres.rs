//! `uses: postgres`: SQL files run with `psql` against a server, each in one transaction,
//! stopping at the first error with its file and line; credentials from a Vault KV secret
//! or a Vault database secrets engine role (whose lease is revoked after the step).

use crate::{ActionContext, ActionError, Inputs, bad, relative_path};

/// PostgreSQL major version of the default image `postgres:<version>`.
pub const DEFAULT_VERSION: &str = "16";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postgres {
    pub image: String,
    /// Files or globs, relative to the workspace, run in the order given (a glob's matches
    /// in name order).
    pub files: Vec<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub credentials: Credentials,
    pub sslmode: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A KV secret path with `username` and `password`.
    Kv(String),
    /// A database secrets engine role: `<mount>/creds/<role>` (mount `database` unless
    /// `database_mount` says otherwise).
    DatabaseRole { mount: String, role: String },
}

/// Mount of the database secrets engine when `database_mount` is not given.
pub const DEFAULT_DATABASE_MOUNT: &str = "database";

/// A mount path: segments without `.`/`..` or empty ones, without surrounding `/`.
fn database_mount(given: Option<&str>) -> Result<String, ActionError> {
    let Some(given) = given else {
        return Ok(DEFAULT_DATABASE_MOUNT.to_string());
    };
    let mount = given.trim().trim_matches('/');
    if mount.is_empty()
        || mount
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || mount
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
    {
        return Err(bad(
            "database_mount",
            format!("`{given}` is not a Vault mount path"),
        ));
    }
    Ok(mount.to_string())
}

impl Postgres {
    pub(crate) fn prepare(with: &Inputs, _cx: &ActionContext) -> Result<Postgres, ActionError> {
        let files = with.list("files")?;
        if files.is_empty() {
            return Err(bad("files", "at least one SQL file or glob"));
        }
        for f in &files {
            relative_path("files", f)?;
        }
        let image = match (with.string("image")?, with.string("version")?) {
            (Some(_), Some(_)) => return Err(bad("image", "give `image` or `version`, not both")),
            (Some(image), None) => image,
            (None, version) => {
                format!("postgres:{}", version.as_deref().unwrap_or(DEFAULT_VERSION))
            }
        };
        let port = match with.string("port")? {
            None => 5432,
            Some(p) => p
                .parse()
                .map_err(|_| bad("port", format!("expected a port number, found `{p}`")))?,
        };
        let mount = with.string("database_mount")?;
        let credentials = match (with.string("credentials")?, with.string("database_role")?) {
            (Some(_), None) if mount.is_some() => {
                return Err(bad(
                    "database_mount",
                    "`database_mount` goes with `database_role`, not with `credentials`",
                ));
            }
            (Some(path), None) => Credentials::Kv(path),
            (None, Some(role)) => {
                let mount = database_mount(mount.as_deref())?;
                if role.is_empty() || role.contains('/') || role.contains("..") {
                    return Err(bad(
                        "database_role",
                        format!("`{role}` is not a role name (no `/`)"),
                    ));
                }
                Credentials::DatabaseRole { mount, role }
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "credentials",
                    "give `credentials` or `database_role`, not both",
                ));
            }
            (None, None) => {
                return Err(bad(
                    "credentials",
                    "a Vault KV path (`credentials`) or a database role (`database_role`)",
                ));
            }
        };
        Ok(Postgres {
            image,
            files,
            host: with
                .string("host")?
                .ok_or_else(|| bad("host", "the server's host"))?,
            port,
            database: with
                .string("database")?
                .ok_or_else(|| bad("database", "the database name"))?,
            credentials,
            sslmode: with.string("sslmode")?.unwrap_or_else(|| "prefer".into()),
        })
    }

    /// Waits for the server (run repeatedly until it succeeds or time runs out).
    pub fn ready(&self) -> Vec<String> {
        vec![
            "pg_isready".into(),
            "-h".into(),
            self.host.clone(),
            "-p".into(),
            self.port.to_string(),
            "-d".into(),
            self.database.clone(),
        ]
    }

    /// One file, in one transaction, stopping at its first error (`psql` reports the file
    /// and line: `psql:/workspace/sql/2.sql:3: ERROR: …`).
    pub fn run_file(&self, file_in_workspace: &str) -> Vec<String> {
        vec![
            "psql".into(),
            "-X".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "--single-transaction".into(),
            "-f".into(),
            crate::in_workspace(file_in_workspace),
        ]
    }

    /// libpq's variables for the connection; the password is added by the runner.
    pub fn env(&self, user: &str) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.host.clone()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGDATABASE".into(), self.database.clone()),
            ("PGUSER".into(), user.to_string()),
            ("PGSSLMODE".into(), self.sslmode.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, ActionContext, prepare};
    use pipewright_pipelines::{EventKind, GitRef, Resolved};

    fn credentials(extra: &[(&str, &str)]) -> Result<Credentials, String> {
        let mut with: Vec<(String, Resolved)> =
            [("files", "db.sql"), ("host", "db"), ("database", "app")]
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), Resolved::Str(v.to_string())))
                .collect();
        with.sort_by(|a, b| a.0.cmp(&b.0));
        let git_ref = GitRef::Branch("main".into());
        let cx = ActionContext {
            event: EventKind::Push,
            git_ref: &git_ref,
            default_branch: "main",
            inputs: &[],
            step: "migrate",
        };
        match prepare("postgres", &with, &cx) {
            Ok(Action::Postgres(pg)) => Ok(pg.credentials),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn the_database_engine_mount_defaults_to_database() {
        assert_eq!(
            credentials(&[("database_role", "migrate")]),
            Ok(Credentials::DatabaseRole {
                mount: "database".into(),
                role: "migrate".into()
            })
        );
        assert_eq!(
            credentials(&[
                ("database_role", "migrate"),
                ("database_mount", "/postgres/lab/")
            ]),
            Ok(Credentials::DatabaseRole {
                mount: "postgres/lab".into(),
                role: "migrate".into()
            })
        );
        for bad in ["", "/", "a//b", "../sys", "a/./b", "a b"] {
            let got = credentials(&[("database_role", "migrate"), ("database_mount", bad)]);
            assert!(
                got.as_ref().is_err_and(
                    |e| e.contains("database_mount") && e.contains("not a Vault mount path")
                ),
                "{bad:?}: {got:?}"
            );
        }
        assert!(
            credentials(&[("database_role", "../../sys/raw")])
                .is_err_and(|e| e.contains("not a role name"))
        );
        assert!(
            credentials(&[("credentials", "kv/db"), ("database_mount", "db")])
                .is_err_and(|e| e.contains("goes with `database_role`"))
        );
    }
}
