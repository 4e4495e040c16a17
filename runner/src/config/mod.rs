//! The server's configuration: one typed [`Config`], loaded from a TOML file and
//! `PIPEWRIGHT_<SECTION>__<KEY>` environment variables, with every problem reported at once.
//!
//! Precedence: environment over file over the defaults documented on each field. Values
//! from the environment are text: lists are comma-separated
//! (`PIPEWRIGHT_AGENT__LABELS=linux,arm64`), booleans are `true`/`false`, numbers and
//! durations are written as in the file. `[[repos]]` and `[[api.token]]` exist only in the file.
//!
//! Secrets (`token`, `webhook_secret`, `[api].tokens`, `[[api.token]]`) can be given directly or as a
//! `*_file` whose content is read at load; giving both in one place (the file, or the
//! environment) is an error, and either form given in the environment replaces both forms
//! of the file. Relative paths are relative to the working directory, as the database URL
//! is.
//!
//! The file is parsed into a [`toml::Table`] and decoded by hand rather than by serde's
//! derive, which stops at the first problem: here every unknown key, wrong type and bad value
//! of the file and the environment is collected into one [`ConfigError`].

use std::{
    collections::BTreeMap,
    fmt, fs,
    net::SocketAddr,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use pipewright_pipelines::{Patterns, parse_duration, parse_memory};

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "PIPEWRIGHT_";

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

/// The whole configuration of `pipewright serve` and `pipewright agent`.
///
/// `Config::default()` is what `load(None, [])` gives: the embedded defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[server]`: the HTTP server and where data lives.
    pub server: ServerConfig,
    /// `[database]`: where runs, jobs and deliveries are stored.
    pub database: DatabaseConfig,
    /// `[gitea]`: the forge.
    pub gitea: GiteaConfig,
    /// `[identity]`: the identity tokens Pipewright issues to runs.
    pub identity: IdentityConfig,
    /// `[vault]`: where steps' secrets come from.
    pub vault: VaultConfig,
    /// `[docker]`: the local Docker engine and default step limits.
    pub docker: DockerConfig,
    /// `[agent]`: the jobs this process runs.
    pub agent: AgentConfig,
    /// `[api]`: access to the HTTP API and web UI.
    pub api: ApiConfig,
    /// `[[repos]]`: per-repository policy. Default: none, and then every repository is
    /// allowed; when some are listed, only those are. File only (not settable from the
    /// environment).
    pub repos: Vec<RepoPolicy>,
}

/// `[server]`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `listen`: address of the HTTP server. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `public_url`: how Gitea and users reach this server, used in status links and as
    /// the OIDC issuer (`iss`); an `http://` or `https://` URL, stored without a trailing
    /// `/`. Default: `http://<listen>`.
    pub public_url: String,
    /// `data_dir`: logs, workspaces, signing keys and the SQLite database. Default:
    /// `./pipewright-data`.
    pub data_dir: PathBuf,
    /// `catch_up_interval`: how often branch and pull-request heads are compared with
    /// the statuses set, to run what a missed delivery would have run. Default: `5m`.
    pub catch_up_interval: Duration,
    /// Bounds on HTTP clients.
    pub http: HttpLimits,
}

/// `[server]` bounds on HTTP clients, so that slow or many clients cannot exhaust memory or
/// file descriptors (slowloris, bodies that stall).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// `header_timeout`: a connection that has not sent a request's headers within this
    /// time (also while idle between requests) is closed. Default: `10s`.
    pub header_timeout: Duration,
    /// `body_timeout`: a request whose body has not fully arrived within this time is
    /// answered 408 and its connection closed. Default: `10s` (Gitea gives up after 5 s).
    pub body_timeout: Duration,
    /// `max_connections`: connections served at once; more wait to be accepted. Default:
    /// `512`.
    pub max_connections: usize,
    /// `body_memory`: bytes of request bodies held at once, all requests together (a
    /// body holds what has arrived of it until it is answered); a request that finds it
    /// taken for `body_timeout` gets 503. At least 5 MiB (one delivery). Default: `64m`.
    pub body_memory: u64,
    /// `max_deliveries`: webhook deliveries processed at once once their body arrived
    /// (parsing a payload takes several times its size); more wait, up to `body_timeout`,
    /// then get 503. Default: `32`.
    pub max_deliveries: usize,
}

/// `[database]`.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// `url`: `sqlite://PATH` or `postgres://user:password@host/db` (an agent on another
    /// host needs PostgreSQL). Default: `sqlite://<data_dir>/pipewright.db`. `Debug` hides
    /// the password.
    pub url: String,
}

/// `[gitea]`.
#[derive(Clone, Debug)]
pub struct GiteaConfig {
    /// `url`: Gitea's base URL, `http://` or `https://`, stored without a trailing `/`.
    /// Default: none (no forge: nothing is reported).
    pub url: Option<String>,
    /// `token` or `token_file`: API token for statuses, comments and clones. Default: none.
    pub token: Option<Secret>,
    /// `webhook_secret` or `webhook_secret_file`: the secret deliveries are signed with.
    /// Default: none.
    pub webhook_secret: Option<Secret>,
    /// `ca_file`: an extra CA bundle (PEM) trusted for Gitea, Vault and registries, and
    /// mounted into step containers. Default: none (system roots only).
    pub ca_file: Option<PathBuf>,
    /// `git_timeout`: how long one `git fetch` from Gitea may take before it is stopped
    /// (a stalled remote fails that repository's delivery, which is retried; others go on).
    /// Default: `10m`.
    pub git_timeout: Duration,
}

/// `[identity]`.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// `audience`: the default `aud` of issued tokens. Default: `vault`.
    pub audience: String,
    /// `token_ttl`: lifetime of an issued token (`exp - iat`). Default: `10m`.
    pub token_ttl: Duration,
    /// `algorithm`: signature algorithm, `EdDSA`, `ES256` or `RS256`. Default: `EdDSA`.
    pub algorithm: Algorithm,
}

/// Signature algorithm of issued identity tokens (JWS names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519, accepted by Vault and OpenBao.
    #[default]
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
}

impl Algorithm {
    /// Every algorithm, in the order they are documented.
    pub const ALL: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

    /// The JWS name (`alg` header), as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[vault]`.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// `address`: Vault's (or OpenBao's) URL, `http://` or `https://`, stored without a
    /// trailing `/`. Default: none (steps that need Vault secrets fail).
    pub address: Option<String>,
    /// `mount`: path of the JWT auth mount. Default: `jwt`.
    pub mount: String,
    /// `role_template`: the role a run logs in with when its pipeline names none;
    /// `{repo}` is replaced by the repository's name and `{owner}` by its owner (see
    /// [`Config::role_for`]). Default: `gitea_cicd_{repo}`.
    pub role_template: String,
}

/// `[docker]`.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// `host`: the engine's address (`unix://`, `tcp://`, `http://`, `https://`,
    /// `npipe://` or `ssh://`). Default: none, meaning `DOCKER_HOST` or the default socket.
    pub host: Option<String>,
    /// `stop_grace`: how long a stopped step gets between SIGTERM and SIGKILL.
    /// Default: `10s`.
    pub stop_grace: Duration,
    /// `default_memory`: memory limit in bytes of a step that sets none, written as a size
    /// (`512m`, `4g`). Default: `4g` (4 GiB), or `max_memory` when that is lower.
    pub default_memory: u64,
    /// `default_pids`: process and thread limit of a step that sets none. Default: `4096`,
    /// or `max_pids` when that is lower.
    pub default_pids: u64,
    /// `max_memory`: the most memory a step may ask for (`memory:`); a step asking more is
    /// refused (status `error`). Image builds get the step's limit too. Default: `16g`.
    pub max_memory: u64,
    /// `max_pids`: the most processes a step may ask for (`pids:`). Default: `32768`.
    pub max_pids: u64,
    /// `max_timeout`: the longest `timeout` a pipeline or a step may ask for; a run asking
    /// more is refused (status `error`). At least `1h` (a pipeline's default). Default: `6h`.
    pub max_timeout: Duration,
    /// `max_log_bytes`: the most output a step's stored log keeps; past it one note line
    /// says so, further output is dropped and the step goes on. Default: `64m`.
    pub max_log_bytes: u64,
    /// `network`: the Docker network of step containers. Default: none, the engine's
    /// default bridge. `host` shares the host's network (e.g. to reach a database that
    /// listens on 127.0.0.1); `none` cuts steps off.
    pub network: Option<String>,
}

/// `[agent]`.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `labels`: labels of this host that pipelines can require. Default: `[]`.
    pub labels: Vec<String>,
    /// `capacity`: jobs run at once, at least 1. Default: `2`.
    pub capacity: usize,
}

/// `[api]`.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `tokens` or `tokens_file` (one a line; blank lines and `#` comments skipped): bearer
    /// tokens for the API and web UI. Default: `[]`.
    pub tokens: Vec<Secret>,
    /// `read_public`: runs and logs are readable without a token. Default: `false`.
    pub read_public: bool,
    /// `[[api.token]]`: tokens limited to some repositories and scopes. Default: none.
    pub scoped_tokens: Vec<ScopedToken>,
}

/// One `[[api.token]]` entry: a bearer token that may do only what its scopes say, and
/// only on the repositories its globs match. The plain `tokens` are full access.
#[derive(Clone)]
pub struct ScopedToken {
    /// `token` or `token_file` (its content without the final newline): the bearer token
    /// (required, one of the two).
    pub token: Secret,
    /// `repos`: globs over `owner/name`, as in `branches:` (`*` stays within one name,
    /// `!` excludes again), matched without regard to ASCII case: `["arcodange-org/*"]`,
    /// `["*/*"]` for every repository (required).
    pub repos: Patterns,
    /// `scopes`: what the token may do (required, not empty).
    pub scopes: Vec<Scope>,
}

impl ScopedToken {
    /// Whether the token's globs match a repository (`owner/name`).
    pub fn covers(&self, repo: &str) -> bool {
        self.repos.matches(&repo.to_ascii_lowercase())
    }

    /// Whether the token has a scope (`admin` has them all).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

impl fmt::Debug for ScopedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedToken")
            .field("token", &self.token)
            .field("repos", &self.repos.as_strings())
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// What an API token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `read`: runs, steps and logs (API and web UI).
    Read,
    /// `dispatch`: start pipelines by hand.
    Dispatch,
    /// `control`: cancel and re-run runs.
    Control,
    /// `admin`: all of the above.
    Admin,
}

impl Scope {
    const ALL: [(&'static str, Scope); 4] = [
        ("read", Scope::Read),
        ("dispatch", Scope::Dispatch),
        ("control", Scope::Control),
        ("admin", Scope::Admin),
    ];

    pub fn as_str(self) -> &'static str {
        Scope::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("", |(name, _)| name)
    }
}

/// One `[[repos]]` entry: what a repository's pipelines may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPolicy {
    /// `name`: `owner/name` of the repository (required; matched without regard to ASCII
    /// case, as Gitea does).
    pub name: String,
    /// `host_volumes`: absolute host paths this repository's pipelines may mount.
    /// Default: `[]`.
    pub host_volumes: Vec<PathBuf>,
    /// `allow_fork_secrets`: pull requests from forks get Vault secrets and identity tokens.
    /// Default: `false`.
    pub allow_fork_secrets: bool,
}

impl Config {
    /// The policy of a repository (`owner/name`), if `[[repos]]` lists it.
    pub fn repo_policy(&self, full_name: &str) -> Option<&RepoPolicy> {
        self.repos
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(full_name))
    }

    /// Whether Pipewright acts for a repository: always when `[[repos]]` is empty,
    /// otherwise only for the repositories listed.
    pub fn repo_allowed(&self, full_name: &str) -> bool {
        self.repos.is_empty() || self.repo_policy(full_name).is_some()
    }

    /// The Vault role of a repository (`owner/name`) whose pipeline names none:
    /// `[vault].role_template` with `{repo}` replaced by `name` and `{owner}` by `owner`
    /// (`gitea_cicd_{repo}` gives `gitea_cicd_factory` for `arcodange-org/factory`).
    pub fn role_for(&self, repo_full_name: &str) -> String {
        let (owner, repo) = repo_full_name
            .split_once('/')
            .unwrap_or(("", repo_full_name));
        self.vault
            .role_template
            .replace("{repo}", repo)
            .replace("{owner}", owner)
    }

    /// The database file when the database is SQLite (`None` for PostgreSQL and for an
    /// in-memory SQLite database).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = &self.database.url;
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split(['?', '#']).next().unwrap_or(rest);
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }
}

impl Default for Config {
    fn default() -> Self {
        let empty = toml::Table::new();
        let mut reader = Reader::new("", &empty, BTreeMap::new());
        let config = decode(&mut reader);
        debug_assert!(reader.problems.is_empty(), "{:?}", reader.problems);
        config
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// A secret (token, webhook secret) that `Debug` and `Display` print as `***`; the value
/// is reachable only through [`Secret::expose`]. Deliberately not `PartialEq`: compare
/// secrets in constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
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

/// Decodes every setting; problems go to the reader, and a setting with a problem takes its
/// default (the result is then discarded).
fn decode(r: &mut Reader<'_>) -> Config {
    let listen = r
        .read("server", "listen", |v| socket_addr(v.str()?))
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let public_url = r
        .read("server", "public_url", |v| http_url(v.str()?))
        .unwrap_or_else(|| format!("http://{listen}"));
    let data_dir = r
        .read("server", "data_dir", |v| path(v.str()?))
        .unwrap_or_else(|| PathBuf::from("./pipewright-data"));
    let catch_up_interval = r
        .read("server", "catch_up_interval", |v| parse_duration(v.str()?))
        .unwrap_or(Duration::from_secs(5 * 60));
    let count = |v: &Val<'_>| {
        positive(v.int()?).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
    };
    let http = HttpLimits {
        header_timeout: r
            .read("server", "header_timeout", |v| parse_duration(v.str()?))
            .unwrap_or(Duration::from_secs(10)),
        body_timeout: r
            .read("server", "body_timeout", |v| parse_duration(v.str()?))
            .unwrap_or(Duration::from_secs(10)),
        max_connections: r.read("server", "max_connections", count).unwrap_or(512),
        body_memory: r
            .read("server", "body_memory", |v| parse_memory(v.str()?))
            .unwrap_or(64 << 20),
        max_deliveries: r.read("server", "max_deliveries", count).unwrap_or(32),
    };
    let server = ServerConfig {
        listen,
        public_url,
        data_dir,
        catch_up_interval,
        http,
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

    let gitea = GiteaConfig {
        url: r.read("gitea", "url", |v| http_url(v.str()?)),
        token: r.secret("gitea", "token", "token_file"),
        webhook_secret: r.secret("gitea", "webhook_secret", "webhook_secret_file"),
        ca_file: r.read("gitea", "ca_file", |v| path(v.str()?)),
        git_timeout: r
            .read("gitea", "git_timeout", |v| parse_duration(v.str()?))
            .unwrap_or(Duration::from_secs(10 * 60)),
    };

    let identity = IdentityConfig {
        audience: r
            .read("identity", "audience", |v| non_empty(v.str()?))
            .unwrap_or_else(|| "vault".to_owned()),
        token_ttl: r
            .read("identity", "token_ttl", |v| parse_duration(v.str()?))
            .unwrap_or(Duration::from_secs(10 * 60)),
        algorithm: r
            .read("identity", "algorithm", |v| algorithm(v.str()?))
            .unwrap_or_default(),
    };

    let vault = VaultConfig {
        address: r.read("vault", "address", |v| http_url(v.str()?)),
        mount: r
            .read("vault", "mount", |v| mount(v.str()?))
            .unwrap_or_else(|| "jwt".to_owned()),
        role_template: r
            .read("vault", "role_template", |v| role_template(v.str()?))
            .unwrap_or_else(|| "gitea_cicd_{repo}".to_owned()),
    };

    let max_memory = r
        .read("docker", "max_memory", |v| parse_memory(v.str()?))
        .unwrap_or(16 << 30);
    let max_pids = r
        .read("docker", "max_pids", |v| positive(v.int()?))
        .unwrap_or(32_768);
    let docker = DockerConfig {
        host: r.read("docker", "host", |v| docker_host(v.str()?)),
        stop_grace: r
            .read("docker", "stop_grace", |v| parse_duration(v.str()?))
            .unwrap_or(Duration::from_secs(10)),
        default_memory: r
            .read("docker", "default_memory", |v| {
                at_most(parse_memory(v.str()?)?, max_memory, "max_memory")
            })
            .unwrap_or((4 << 30).min(max_memory)),
        default_pids: r
            .read("docker", "default_pids", |v| {
                at_most(positive(v.int()?)?, max_pids, "max_pids")
            })
            .unwrap_or(4096.min(max_pids)),
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
            .unwrap_or(Duration::from_secs(6 * 3600)),
        max_log_bytes: r
            .read("docker", "max_log_bytes", |v| parse_size(v.str()?))
            .unwrap_or(64 << 20),
    };

    let agent = AgentConfig {
        labels: r
            .read("agent", "labels", |v| labels(v.list()?))
            .unwrap_or_default(),
        capacity: r
            .read("agent", "capacity", |v| {
                positive(v.int()?).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
            })
            .unwrap_or(2),
    };

    let api = ApiConfig {
        tokens: r.tokens().unwrap_or_default(),
        read_public: r.read("api", "read_public", Val::bool).unwrap_or(false),
        scoped_tokens: r.scoped_tokens(),
    };

    let repos = r.repos();

    Config {
        server,
        database,
        gitea,
        identity,
        vault,
        docker,
        agent,
        api,
        repos,
    }
}

/// Looks settings up in the environment, then the file, and collects problems. It records
/// every key asked for, so that what is left in the file or the environment is unknown:
/// the decoder above is the only list of settings.
struct Reader<'a> {
    file_name: &'a str,
    file: &'a toml::Table,
    env: BTreeMap<String, String>,
    /// Sections and keys asked for, in the order asked.
    known: Vec<(&'static str, Vec<&'static str>)>,
    problems: Vec<Problem>,
}

/// A raw setting and where it came from.
struct Val<'a> {
    /// Where, as printed in problems.
    at: String,
    /// The key or environment variable's name, as named in problems about another key.
    name: String,
    raw: Raw<'a>,
}

enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(String),
}

impl<'a> Reader<'a> {
    fn new(file_name: &'a str, file: &'a toml::Table, env: BTreeMap<String, String>) -> Self {
        Reader {
            file_name,
            file,
            env,
            known: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            at: at.into(),
            message: message.into(),
        });
    }

    fn register(&mut self, section: &'static str, key: &'static str) {
        match self.known.iter_mut().find(|(s, _)| *s == section) {
            Some((_, keys)) if keys.contains(&key) => {}
            Some((_, keys)) => keys.push(key),
            None => self.known.push((section, vec![key])),
        }
    }

    fn env_value(&mut self, section: &'static str, key: &'static str) -> Option<Val<'a>> {
        self.register(section, key);
        let name = env_name(section, key);
        let value = self.env.get(&name)?.clone();
        Some(Val {
            at: name.clone(),
            name,
            raw: Raw::Env(value),
        })
    }

    fn file_value(&mut self, section: &'static str, key: &'static str) -> Option<Val<'a>> {
        self.register(section, key);
        let file: &'a toml::Table = self.file;
        let value = file.get(section)?.as_table()?.get(key)?;
        Some(Val {
            at: format!("{}: [{section}].{key}", self.file_name),
            name: format!("`{key}`"),
            raw: Raw::Toml(value),
        })
    }

    fn get(&mut self, section: &'static str, key: &'static str) -> Option<Val<'a>> {
        let env = self.env_value(section, key);
        let file = self.file_value(section, key);
        env.or(file)
    }

    fn check<T>(
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

    fn read<T>(
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
    fn pair(
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

    fn secret(
        &mut self,
        section: &'static str,
        key: &'static str,
        file_key: &'static str,
    ) -> Option<Secret> {
        let (value, path) = self.pair(section, key, file_key);
        let from_value = self.check(value, |v| non_empty(v.str()?));
        let from_file = self.check(path, one_secret_file);
        from_value.or(from_file).map(Secret)
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
        Some(tokens.into_iter().map(Secret).collect())
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
            if let Some((j, _)) = tokens.iter().find(|(_, t)| t.token.0 == token) {
                let message = format!("the same token is given in [[api.token]][{j}]");
                self.problem(at, message);
                continue;
            }
            let token = Secret(token);
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
            };
            repos.push((i, policy));
        }
        repos.into_iter().map(|(_, policy)| policy).collect()
    }

    /// The tables of an array of tables (`what`, at `at`); other entries are problems.
    fn tables(
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
    fn unknown_file_keys(&mut self) {
        let file: &'a toml::Table = self.file;
        for (section, value) in file {
            if section == "repos" {
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
                            "repos" => "`[[repos]]`".to_owned(),
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
    fn unknown_env(&mut self) {
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
struct Entry<'a> {
    at: String,
    table: &'a toml::Table,
    keys: Vec<&'static str>,
}

impl<'a> Entry<'a> {
    fn val(&mut self, key: &'static str) -> Option<Val<'a>> {
        self.keys.push(key);
        let value = self.table.get(key)?;
        Some(Val {
            at: format!("{}.{key}", self.at),
            name: format!("`{key}`"),
            raw: Raw::Toml(value),
        })
    }

    /// The keys of the table that were not asked for.
    fn unknown_keys(&self) -> Vec<Problem> {
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
    fn str(&self) -> Result<&str, String> {
        match &self.raw {
            Raw::Env(text) | Raw::Toml(toml::Value::String(text)) => Ok(text),
            Raw::Toml(other) => Err(format!("expected a string, found {}", other.type_str())),
        }
    }

    fn bool(&self) -> Result<bool, String> {
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

    fn int(&self) -> Result<i64, String> {
        match &self.raw {
            Raw::Env(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, found {text:?}")),
            Raw::Toml(toml::Value::Integer(n)) => Ok(*n),
            Raw::Toml(other) => Err(format!("expected an integer, found {}", other.type_str())),
        }
    }

    fn list(&self) -> Result<Vec<String>, String> {
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

fn env_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// "unknown key; did you mean `url`?" when a known name is close enough.
fn unknown<'k>(
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

fn read_secret_file(v: &Val<'_>) -> Result<(String, String), String> {
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
fn one_secret_file(v: &Val<'_>) -> Result<String, String> {
    let (path, text) = read_secret_file(v)?;
    let text = text.trim_end_matches(['\n', '\r']);
    match text.is_empty() {
        true => Err(format!("{path:?} is empty")),
        false => Ok(text.to_owned()),
    }
}

/// `[[api.token]].repos`: globs over `owner/name`, compiled in lower case.
fn repo_globs(globs: Vec<String>) -> Result<Patterns, String> {
    if globs.is_empty() {
        return Err("expected at least one repository glob, such as \"org/*\"".to_owned());
    }
    if let Some(glob) = globs.iter().find(|g| !g.contains('/')) {
        return Err(format!(
            "{glob:?} is not an `owner/name` glob (`*` does not cross `/`: \"*/*\" is every repository)"
        ));
    }
    let lower: Vec<String> = globs.iter().map(|g| g.to_ascii_lowercase()).collect();
    Patterns::new(&lower).map_err(|(i, why)| format!("bad glob {:?}: {why}", globs[i]))
}

/// `[[api.token]].scopes`.
fn api_scopes(names: Vec<String>) -> Result<Vec<Scope>, String> {
    if names.is_empty() {
        return Err("expected at least one scope (read, dispatch, control, admin)".to_owned());
    }
    let mut bad = Vec::new();
    let mut scopes = Vec::new();
    for name in &names {
        match Scope::ALL.iter().find(|(n, _)| n == name) {
            Some((_, scope)) => scopes.push(*scope),
            None => {
                let known = Scope::ALL.iter().map(|(n, _)| *n);
                let message = unknown("scope", name, known, |n| format!("`{n}`"));
                bad.push(message.replacen("scope", &format!("scope `{name}`"), 1));
            }
        }
    }
    match bad.is_empty() {
        true => Ok(scopes),
        false => Err(format!(
            "{}; scopes are read, dispatch, control, admin",
            bad.join("; ")
        )),
    }
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("expected an address such as 127.0.0.1:8080, found {text:?}"))
}

fn http_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !text.contains(char::is_whitespace) =>
        {
            Ok(text.trim_end_matches('/').to_owned())
        }
        _ => Err(format!(
            "expected an http:// or https:// URL, found {text:?}"
        )),
    }
}

fn path(text: &str) -> Result<PathBuf, String> {
    match text.is_empty() {
        true => Err("expected a path, found an empty string".to_owned()),
        false => Ok(PathBuf::from(text)),
    }
}

fn absolute_path(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("expected absolute paths, found {text:?}"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("expected paths without `..`, found {text:?}"));
    }
    Ok(path.to_path_buf())
}

fn non_empty(text: &str) -> Result<String, String> {
    match text.trim().is_empty() {
        true => Err("expected a value, found an empty string".to_owned()),
        false => Ok(text.to_owned()),
    }
}

/// A default that must not exceed its ceiling (`[docker].max_…`).
fn at_most(value: u64, ceiling: u64, key: &str) -> Result<u64, String> {
    match value <= ceiling {
        true => Ok(value),
        false => Err(format!(
            "{value} is above [docker].{key} ({ceiling}); raise {key} or lower this"
        )),
    }
}

/// A size in bytes, `k`, `m` or `g` (binary units), without Docker's memory minimum.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t.as_str(), 1),
    };
    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(format!(
            "expected a size such as `64m` or `1g`, found `{text}`"
        )),
    }
}

fn positive(n: i64) -> Result<u64, String> {
    match u64::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive integer, found {n}")),
    }
}

fn labels(labels: Vec<String>) -> Result<Vec<String>, String> {
    match labels
        .iter()
        .find(|l| l.is_empty() || l.contains([',', ' ', '\t']))
    {
        Some(bad) => Err(format!(
            "expected labels without spaces or commas, found {bad:?}"
        )),
        None => Ok(labels),
    }
}

fn database_url(text: &str) -> Result<String, String> {
    let ok = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|prefix| text.len() > prefix.len() && text.starts_with(prefix));
    if ok {
        return Ok(text.to_owned());
    }
    // Never echo the URL: it may hold a password.
    let found = match text.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => {
            format!("a {scheme:?} URL")
        }
        _ => "something else".to_owned(),
    };
    Err(format!(
        "expected a sqlite:// or postgres:// URL, found {found}"
    ))
}

fn algorithm(text: &str) -> Result<Algorithm, String> {
    Algorithm::ALL
        .into_iter()
        .find(|a| a.as_str() == text)
        .ok_or_else(|| format!("expected \"EdDSA\", \"ES256\" or \"RS256\", found {text:?}"))
}

fn mount(text: &str) -> Result<String, String> {
    let trimmed = text.trim_matches('/');
    match trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
        true => Err(format!(
            "expected an auth mount path such as \"jwt\", found {text:?}"
        )),
        false => Ok(trimmed.to_owned()),
    }
}

fn role_template(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("expected a role name template, found an empty string".to_owned());
    }
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .filter(|_| !rest[..open].contains('}'))
            .ok_or_else(|| format!("unbalanced braces in {text:?}"))?;
        let name = &after[..close];
        if name != "repo" && name != "owner" {
            return Err(format!(
                "unknown placeholder `{{{name}}}` in {text:?}; use `{{repo}}` or `{{owner}}`"
            ));
        }
        rest = &after[close + 1..];
    }
    match rest.contains('}') {
        true => Err(format!("unbalanced braces in {text:?}")),
        false => Ok(text.to_owned()),
    }
}

fn network_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("expected a Docker network name, found {v:?}"))
    }
}

fn docker_host(text: &str) -> Result<String, String> {
    const SCHEMES: [&str; 6] = [
        "unix://", "npipe://", "tcp://", "http://", "https://", "ssh://",
    ];
    match SCHEMES
        .iter()
        .any(|s| text.len() > s.len() && text.starts_with(s))
    {
        true => Ok(text.to_owned()),
        false => Err(format!(
            "expected an engine address such as unix:///var/run/docker.sock or tcp://host:2375, found {text:?}"
        )),
    }
}

fn repo_name(text: &str) -> Result<String, String> {
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match text.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(text.to_owned()),
        _ => Err(format!("expected `owner/name`, found {text:?}")),
    }
}

/// The URL with the password of its user part and `password` query parameters replaced by
/// `***`.
fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((user, host)) => match user.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    format!("{key}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    /// The example of DESIGN.md, "Configuration file (TOML)", with its secret files
    /// replaced by values.
    const DESIGN_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
public_url = "https://ci.example.lab"   # used in status links and as OIDC issuer
data_dir = "./pipewright-data"           # logs, workspaces, keys, sqlite db

[database]
url = "sqlite://./pipewright-data/pipewright.db"  # or postgres://user:pw@host/db

[gitea]
url = "https://gitea.example.lab"
token_file = "TOKEN_FILE"   # API token: statuses, comments, clone
webhook_secret_file = "WEBHOOK_SECRET_FILE"
ca_file = "/etc/ssl/homelab.pem"          # optional extra CA for Gitea, Vault, registry, and step containers

[identity]
audience = "vault"          # default `aud` of issued tokens
token_ttl = "10m"
algorithm = "EdDSA"         # or "ES256", "RS256"

[vault]
address = "https://vault.example.lab"
mount = "gitea_jwt"          # jwt auth mount
role_template = "gitea_cicd_{repo}"   # default role when a pipeline names none

[docker]
host = "unix:///var/run/docker.sock"

[agent]
labels = ["linux", "arm64"]
capacity = 2                 # jobs at once

[api]
tokens = ["change-me"]       # bearer tokens for the API and UI (or tokens_file, one a line)
read_public = false          # true: runs and logs readable without a token

[[repos]]                    # optional per-repository policy; absent = every repo allowed
name = "arcodange-org/factory"
host_volumes = ["/mnt/backups"]   # host paths this repo's pipelines may mount
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_text(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_text(Some(("config.toml", text)), env(vars))
    }

    /// Checks the problems of a file and environment against a snapshot.
    fn check_errors(text: &str, vars: &[(&str, &str)], expect: Expect) {
        match from_text(text, vars) {
            Ok(config) => panic!("expected problems, got {config:#?}"),
            Err(err) => expect.assert_eq(&format!("{err}\n")),
        }
    }

    /// A file `name` with `content` in a temporary directory.
    fn secret_file(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
        let path = dir.path().join(name);
        fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    #[test]
    fn design_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = DESIGN_EXAMPLE
            .replace("TOKEN_FILE", &secret_file(&dir, "token", "gitea-token\n"))
            .replace(
                "WEBHOOK_SECRET_FILE",
                &secret_file(&dir, "hook", "hook-secret\r\n"),
            );
        let config = from_text(&text, &[]).unwrap();
        expect![[r#"
            Config {
                server: ServerConfig {
                    listen: 127.0.0.1:8080,
                    public_url: "https://ci.example.lab",
                    data_dir: "./pipewright-data",
                    catch_up_interval: 300s,
                    http: HttpLimits {
                        header_timeout: 10s,
                        body_timeout: 10s,
                        max_connections: 512,
                        body_memory: 67108864,
                        max_deliveries: 32,
                    },
                },
                database: DatabaseConfig {
                    url: "sqlite://./pipewright-data/pipewright.db",
                },
                gitea: GiteaConfig {
                    url: Some(
                        "https://gitea.example.lab",
                    ),
                    token: Some(
                        ***,
                    ),
                    webhook_secret: Some(
                        ***,
                    ),
                    ca_file: Some(
                        "/etc/ssl/homelab.pem",
                    ),
                    git_timeout: 600s,
                },
                identity: IdentityConfig {
                    audience: "vault",
                    token_ttl: 600s,
                    algorithm: EdDSA,
                },
                vault: VaultConfig {
                    address: Some(
                        "https://vault.example.lab",
                    ),
                    mount: "gitea_jwt",
                    role_template: "gitea_cicd_{repo}",
                },
                docker: DockerConfig {
                    host: Some(
                        "unix:///var/run/docker.sock",
                    ),
                    stop_grace: 10s,
                    default_memory: 4294967296,
                    default_pids: 4096,
                    max_memory: 17179869184,
                    max_pids: 32768,
                    max_timeout: 21600s,
                    max_log_bytes: 67108864,
                    network: None,
                },
                agent: AgentConfig {
                    labels: [
                        "linux",
                        "arm64",
                    ],
                    capacity: 2,
                },
                api: ApiConfig {
                    tokens: [
                        ***,
                    ],
                    read_public: false,
                    scoped_tokens: [],
                },
                repos: [
                    RepoPolicy {
                        name: "arcodange-org/factory",
                        host_volumes: [
                            "/mnt/backups",
                        ],
                        allow_fork_secrets: false,
                    },
                ],
            }"#]]
        .assert_eq(&format!("{config:#?}"));
        assert_eq!(config.gitea.token.as_ref().unwrap().expose(), "gitea-token");
        assert_eq!(
            config.gitea.webhook_secret.as_ref().unwrap().expose(),
            "hook-secret"
        );
        assert_eq!(config.api.tokens[0].expose(), "change-me");
        assert_eq!(
            config.role_for("arcodange-org/factory"),
            "gitea_cicd_factory"
        );
        assert!(config.repo_allowed("Arcodange-org/Factory"));
        assert!(!config.repo_allowed("arcodange-org/erp"));
        assert_eq!(
            config.sqlite_path(),
            Some(PathBuf::from("./pipewright-data/pipewright.db"))
        );
    }

    #[test]
    fn no_file_gives_the_defaults() {
        let config = load(None, env(&[("HOME", "/root"), ("PIPEWRIGHT_LOG", "debug")])).unwrap();
        expect![[r#"
            Config {
                server: ServerConfig {
                    listen: 127.0.0.1:8080,
                    public_url: "http://127.0.0.1:8080",
                    data_dir: "./pipewright-data",
                    catch_up_interval: 300s,
                    http: HttpLimits {
                        header_timeout: 10s,
                        body_timeout: 10s,
                        max_connections: 512,
                        body_memory: 67108864,
                        max_deliveries: 32,
                    },
                },
                database: DatabaseConfig {
                    url: "sqlite://./pipewright-data/pipewright.db",
                },
                gitea: GiteaConfig {
                    url: None,
                    token: None,
                    webhook_secret: None,
                    ca_file: None,
                    git_timeout: 600s,
                },
                identity: IdentityConfig {
                    audience: "vault",
                    token_ttl: 600s,
                    algorithm: EdDSA,
                },
                vault: VaultConfig {
                    address: None,
                    mount: "jwt",
                    role_template: "gitea_cicd_{repo}",
                },
                docker: DockerConfig {
                    host: None,
                    stop_grace: 10s,
                    default_memory: 4294967296,
                    default_pids: 4096,
                    max_memory: 17179869184,
                    max_pids: 32768,
                    max_timeout: 21600s,
                    max_log_bytes: 67108864,
                    network: None,
                },
                agent: AgentConfig {
                    labels: [],
                    capacity: 2,
                },
                api: ApiConfig {
                    tokens: [],
                    read_public: false,
                    scoped_tokens: [],
                },
                repos: [],
            }"#]]
        .assert_eq(&format!("{config:#?}"));
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
        assert!(config.repo_allowed("anyone/anything"));
        assert_eq!(
            config.sqlite_path(),
            Some(PathBuf::from("./pipewright-data/pipewright.db"))
        );
    }

    #[test]
    fn derived_defaults_follow_their_sources() {
        let config = from_text(
            "[server]\nlisten = \"0.0.0.0:9000\"\ndata_dir = \"/var/lib/pipewright\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.server.public_url, "http://0.0.0.0:9000");
        assert_eq!(
            config.database.url,
            "sqlite:///var/lib/pipewright/pipewright.db"
        );
        assert_eq!(
            config.sqlite_path(),
            Some(PathBuf::from("/var/lib/pipewright/pipewright.db"))
        );
        let config = from_text(
            "[database]\nurl = \"postgres://ci@db/ci\"\n[vault]\nrole_template = \"{owner}-{repo}\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.sqlite_path(), None);
        assert_eq!(config.role_for("arcodange-org/erp"), "arcodange-org-erp");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        check_errors(
            r#"
listen = "127.0.0.1:8080"

[server]
listen = "x"
public_url = "ftp://ci.example.lab"
catch_up_interval = "5 minutes"

[database]
url = "mysql://root:hunter2@db/ci"

[gitea]
urll = "https://gitea.example.lab"
token = "t"
token_file = "/run/secrets/gitea-token"

[identity]
token_ttl = 600
algorithm = "HS256"

[vault]
role_template = "gitea_{name}"

[docker]
host = "/var/run/docker.sock"
default_memory = "1m"
default_pids = 0
max_log_bytes = "lots"

[agent]
labels = ["linux", 64]
capacity = 0

[api]
read_public = "yes"

[gitaa]
url = "x"

[[repos]]
name = "factory"
host_volumes = ["mnt/backups", "/mnt/../etc"]
allow_fork_secret = true

[[repos]]
host_volumes = "/mnt"

[[repos]]
name = "a/b"

[[repos]]
name = "A/B"
"#,
            &[],
            expect![[r#"
                config.toml: [server].listen: expected an address such as 127.0.0.1:8080, found "x"
                config.toml: [server].public_url: expected an http:// or https:// URL, found "ftp://ci.example.lab"
                config.toml: [server].catch_up_interval: expected a duration such as `90s`, `30m` or `1h30m`, found `5 minutes`
                config.toml: [database].url: expected a sqlite:// or postgres:// URL, found a "mysql" URL
                config.toml: [gitea].token: `token_file` is also given; keep one of the two
                config.toml: [identity].token_ttl: expected a string, found integer
                config.toml: [identity].algorithm: expected "EdDSA", "ES256" or "RS256", found "HS256"
                config.toml: [vault].role_template: unknown placeholder `{name}` in "gitea_{name}"; use `{repo}` or `{owner}`
                config.toml: [docker].host: expected an engine address such as unix:///var/run/docker.sock or tcp://host:2375, found "/var/run/docker.sock"
                config.toml: [docker].default_memory: memory limit `1m` is below Docker's minimum of 6m
                config.toml: [docker].default_pids: expected a positive integer, found 0
                config.toml: [docker].max_log_bytes: expected a size such as `64m` or `1g`, found `lots`
                config.toml: [agent].labels: expected a list of strings, found integer at index 1
                config.toml: [agent].capacity: expected a positive integer, found 0
                config.toml: [api].read_public: expected a boolean, found string
                config.toml: [[repos]][0].name: expected `owner/name`, found "factory"
                config.toml: [[repos]][0].host_volumes: expected absolute paths, found "mnt/backups"
                config.toml: [[repos]][0].allow_fork_secret: unknown key; did you mean `allow_fork_secrets`?
                config.toml: [[repos]][1]: missing `name` (`owner/name` of the repository)
                config.toml: [[repos]][1].host_volumes: expected a list of strings, found string
                config.toml: [[repos]][3].name: "A/B" is already listed in [[repos]][2]
                config.toml: [gitaa]: unknown section; did you mean `[gitea]`?
                config.toml: [gitea].urll: unknown key; did you mean `url`?
                config.toml: listen: unknown key; did you mean `[server].listen`?
            "#]],
        );
    }

    #[test]
    fn step_ceilings() {
        let config = from_text(
            "[docker]\nmax_memory = \"8g\"\nmax_pids = 500\nmax_timeout = \"2h\"\nmax_log_bytes = \"1m\"\ndefault_pids = 400\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.docker.max_memory, 8 << 30);
        assert_eq!(config.docker.max_pids, 500);
        assert_eq!(config.docker.max_timeout, Duration::from_secs(7200));
        assert_eq!(config.docker.max_log_bytes, 1 << 20);
        check_errors(
            "[docker]\nmax_memory = \"1g\"\ndefault_memory = \"2g\"\nmax_pids = 10\nmax_timeout = \"30m\"\n",
            &[],
            expect![[r#"
                config.toml: [docker].default_memory: 2147483648 is above [docker].max_memory (1073741824); raise max_memory or lower this
                config.toml: [docker].max_timeout: 30m is below 1h, the timeout of a pipeline that sets none
            "#]],
        );
        // Unset defaults stay within the ceilings.
        let config = from_text("[docker]\nmax_memory = \"1g\"\nmax_pids = 10\n", &[]).unwrap();
        assert_eq!(config.docker.default_memory, 1 << 30);
        assert_eq!(config.docker.default_pids, 10);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        check_errors(
            "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = ./data\n",
            &[("PIPEWRIGHT_AGENT__CAPACITY", "many")],
            expect![[r#"
                config.toml:3:12: invalid mantissa, expected digits
                PIPEWRIGHT_AGENT__CAPACITY: expected an integer, found "many"
            "#]],
        );
        let missing = load(Some(Path::new("/nonexistent/pipewright.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            missing,
            "/nonexistent/pipewright.toml: cannot read the config file: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = from_text(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[agent]\nlabels = [\"linux\"]\ncapacity = 1\n[api]\ntokens = [\"from-file\"]\n",
            &[
                ("PIPEWRIGHT_SERVER__LISTEN", "0.0.0.0:80"),
                ("PIPEWRIGHT_GITEA__URL", "https://gitea.example.lab/"),
                ("PIPEWRIGHT_AGENT__LABELS", "linux, arm64,"),
                ("PIPEWRIGHT_AGENT__CAPACITY", "4"),
                ("PIPEWRIGHT_API__TOKENS", "one,two"),
                ("PIPEWRIGHT_API__READ_PUBLIC", "true"),
                ("PIPEWRIGHT_IDENTITY__TOKEN_TTL", "1h30m"),
                ("PIPEWRIGHT_DOCKER__DEFAULT_MEMORY", "512m"),
                ("PIPEWRIGHT_LOG", "debug"),
                ("PIPEWRIGHT_INPUT_TARGET_ENV", "prod"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(config.server.public_url, "http://0.0.0.0:80");
        assert_eq!(
            config.gitea.url.as_deref(),
            Some("https://gitea.example.lab")
        );
        assert_eq!(config.agent.labels, ["linux", "arm64"]);
        assert_eq!(config.agent.capacity, 4);
        let tokens: Vec<&str> = config.api.tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["one", "two"]);
        assert!(config.api.read_public);
        assert_eq!(config.identity.token_ttl, Duration::from_secs(5400));
        assert_eq!(config.docker.default_memory, 512 << 20);
    }

    #[test]
    fn environment_problems_name_the_variable() {
        check_errors(
            "",
            &[
                ("PIPEWRIGHT_SERVER__LISTEN", "x"),
                ("PIPEWRIGHT_API__READ_PUBLIC", "yes"),
                ("PIPEWRIGHT_GITEA__URLL", "https://gitea.example.lab"),
                ("PIPEWRIGHT_GITEA_TOKEN", "t"),
                ("PIPEWRIGHT_REPOS__NAME", "a/b"),
                ("PIPEWRIGHT_FROBNICATE", "1"),
            ],
            expect![[r#"
                PIPEWRIGHT_SERVER__LISTEN: expected an address such as 127.0.0.1:8080, found "x"
                PIPEWRIGHT_API__READ_PUBLIC: expected true or false, found "yes"
                PIPEWRIGHT_FROBNICATE: unknown setting; settings are named PIPEWRIGHT_<SECTION>__<KEY>
                PIPEWRIGHT_GITEA_TOKEN: unknown setting; did you mean `PIPEWRIGHT_GITEA__TOKEN`?
                PIPEWRIGHT_GITEA__URLL: unknown setting; did you mean `PIPEWRIGHT_GITEA__URL`?
                PIPEWRIGHT_REPOS__NAME: [[repos]] cannot be set from the environment; use the config file
            "#]],
        );
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let token = secret_file(&dir, "token", "s3cret-token\n");
        let hook = secret_file(&dir, "hook", "s3cret-hook");
        let tokens = secret_file(
            &dir,
            "tokens",
            "# API tokens\n\napi-one\n  api-two  \n#api-old\n",
        );
        let text = format!(
            "[gitea]\ntoken_file = {token:?}\nwebhook_secret_file = {hook:?}\n[api]\ntokens_file = {tokens:?}\n"
        );
        let config = from_text(&text, &[]).unwrap();
        assert_eq!(
            config.gitea.token.as_ref().unwrap().expose(),
            "s3cret-token"
        );
        assert_eq!(
            config.gitea.webhook_secret.as_ref().unwrap().expose(),
            "s3cret-hook"
        );
        let api: Vec<&str> = config.api.tokens.iter().map(Secret::expose).collect();
        assert_eq!(api, ["api-one", "api-two"]);

        // The environment's value replaces the file's `token_file`.
        let config = from_text(&text, &[("PIPEWRIGHT_GITEA__TOKEN", "from-env")]).unwrap();
        assert_eq!(config.gitea.token.unwrap().expose(), "from-env");
    }

    #[test]
    fn secret_problems() {
        let dir = tempfile::tempdir().unwrap();
        let empty = secret_file(&dir, "empty", "\n");
        let comments = secret_file(&dir, "comments", "# nothing yet\n");
        let text = format!(
            "[gitea]\ntoken_file = \"/nonexistent/token\"\nwebhook_secret = \"\"\n[api]\ntokens = [\"a\"]\ntokens_file = {comments:?}\n"
        );
        let err = from_text(
            &text,
            &[
                ("PIPEWRIGHT_GITEA__WEBHOOK_SECRET", "x"),
                ("PIPEWRIGHT_GITEA__WEBHOOK_SECRET_FILE", &empty),
            ],
        )
        .unwrap_err();
        let tmp = dir.path().display().to_string();
        expect![[r#"
            config.toml: [gitea].token_file: cannot read "/nonexistent/token": No such file or directory (os error 2)
            PIPEWRIGHT_GITEA__WEBHOOK_SECRET: PIPEWRIGHT_GITEA__WEBHOOK_SECRET_FILE is also given; keep one of the two
            config.toml: [api].tokens: `tokens_file` is also given; keep one of the two"#]]
        .assert_eq(&err.to_string().replace(&tmp, "$TMP"));

        let err = from_text(
            &format!(
                "[gitea]\nwebhook_secret_file = {empty:?}\n[api]\ntokens_file = {comments:?}\n"
            ),
            &[],
        )
        .unwrap_err();
        expect![[r#"
            config.toml: [gitea].webhook_secret_file: "$TMP/empty" is empty
            config.toml: [api].tokens_file: "$TMP/comments" holds no token"#]]
        .assert_eq(&err.to_string().replace(&tmp, "$TMP"));
    }

    #[test]
    fn scoped_api_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let bot = secret_file(&dir, "deploy-bot", "bot-token\n");
        let text = format!(
            "[api]\ntokens = [\"full\"]\n[[api.token]]\ntoken_file = {bot:?}\nrepos = [\"Arcodange-org/*\", \"!arcodange-org/secret\"]\nscopes = [\"read\", \"dispatch\"]\n[[api.token]]\ntoken = \"ops\"\nrepos = [\"*/*\"]\nscopes = [\"admin\"]\n"
        );
        let config = from_text(&text, &[]).unwrap();
        let [bot, ops] = &config.api.scoped_tokens[..] else {
            panic!("{:?}", config.api.scoped_tokens)
        };
        assert_eq!(bot.token.expose(), "bot-token");
        assert!(bot.covers("arcodange-org/factory") && bot.covers("ARCODANGE-ORG/Factory"));
        assert!(!bot.covers("arcodange-org/secret") && !bot.covers("other/factory"));
        assert!(!bot.covers("arcodange-org/a/b"), "`*` does not cross `/`");
        assert!(bot.allows(Scope::Read) && bot.allows(Scope::Dispatch));
        assert!(!bot.allows(Scope::Control) && !bot.allows(Scope::Admin));
        assert!(ops.covers("any/repo") && ops.allows(Scope::Control));
        assert_eq!(
            format!("{bot:?}"),
            r#"ScopedToken { token: ***, repos: ["arcodange-org/*", "!arcodange-org/secret"], scopes: [Read, Dispatch] }"#
        );
    }

    #[test]
    fn scoped_api_token_problems() {
        let text = r#"
[api]
tokens = ["full"]
[[api.token]]
repos = ["org/*"]
scopes = ["read", "reed", "root"]
[[api.token]]
token = "a"
token_file = "/nonexistent"
repos = ["org/[abc"]
scopes = []
[[api.token]]
token = "b"
repo = ["org/*"]
[[api.token]]
token = "c"
repos = ["*", "org/x"]
scopes = ["control"]
[[api.token]]
token = "d"
repos = ["org/x"]
scopes = ["read"]
[[api.token]]
token = "d"
repos = ["org/y"]
scopes = ["read"]
"#;
        check_errors(
            text,
            &[("PIPEWRIGHT_API__TOKEN", "x")],
            expect![[r#"
                PIPEWRIGHT_API__TOKEN: [[api.token]] cannot be set from the environment; use the config file
                config.toml: [[api.token]][0]: missing `token` or `token_file`
                config.toml: [[api.token]][0].scopes: unknown scope `reed`; did you mean `read`?; unknown scope `root`; scopes are read, dispatch, control, admin
                config.toml: [[api.token]][1].token: `token_file` is also given; keep one of the two
                config.toml: [[api.token]][1].repos: bad glob "org/[abc": unclosed character class; missing ']'
                config.toml: [[api.token]][1].scopes: expected at least one scope (read, dispatch, control, admin)
                config.toml: [[api.token]][2].repo: unknown key; did you mean `repos`?
                config.toml: [[api.token]][2]: missing `repos`
                config.toml: [[api.token]][2]: missing `scopes`
                config.toml: [[api.token]][3].repos: "*" is not an `owner/name` glob (`*` does not cross `/`: "*/*" is every repository)
                config.toml: [[api.token]][5]: the same token is given in [[api.token]][4]
            "#]],
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let hook = secret_file(&dir, "hook", "hook-SECRET\n");
        let text = format!(
            "[database]\nurl = \"postgres://ci:db-SECRET@db.lab/ci?sslpassword=ssl-SECRET&sslmode=require\"\n[gitea]\ntoken = \"token-SECRET\"\nwebhook_secret_file = {hook:?}\n[api]\ntokens = [\"api-SECRET\"]\n"
        );
        let config = from_text(&text, &[]).unwrap();
        let debug = format!("{config:?} {config:#?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("postgres://ci:***@db.lab/ci?sslpassword=***&sslmode=require"));
        let token = config.gitea.token.unwrap();
        assert_eq!(format!("{token} {token:?}"), "*** ***");
        assert_eq!(token.expose(), "token-SECRET");
    }

    #[test]
    fn role_templates() {
        for (template, expected) in [
            ("gitea_cicd_{repo}", "gitea_cicd_factory"),
            ("{owner}_{repo}", "arcodange-org_factory"),
            ("ci", "ci"),
        ] {
            let text = format!("[vault]\nrole_template = {template:?}\n");
            let config = from_text(&text, &[]).unwrap();
            assert_eq!(config.role_for("arcodange-org/factory"), expected);
        }
        for bad in ["", "a{repo", "a}{repo}", "{repo}}", "{Repo}"] {
            assert!(role_template(bad).is_err(), "{bad:?}");
        }
    }
}
