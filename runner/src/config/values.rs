//! The value types of the configuration: the [`Config`] tree with each setting's meaning
//! and default, and [`Secret`].

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use pipewright_pipelines::Patterns;

/// The whole configuration of `pipewright serve` and `pipewright agent`.
///
/// `Config::default()` is what `load(None, [])` gives: the embedded defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[server]`: the HTTP server and where data lives.
    pub server: ServerConfig,
    /// `[database]`: where runs, jobs and deliveries are stored.
    pub database: DatabaseConfig,
    /// `[log]`: the server's own log.
    pub log: LogConfig,
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
    /// `[ui]`: signing in to the web UI with Gitea.
    pub ui: UiConfig,
    /// `[gitea_actions]`: Pipewright as a runner of Gitea Actions, behind Gitea's "Run
    /// workflow" button.
    pub gitea_actions: GiteaActionsConfig,
    /// `[retention]`: how long finished runs and their logs are kept.
    pub retention: RetentionConfig,
    /// `[[repos]]`: per-repository policy. Default: none, and then every repository is
    /// allowed; when some are listed, only those are. File only (not settable from the
    /// environment).
    pub repos: Vec<RepoPolicy>,
    /// `[[registries]]`: credentials for pulling step images, by registry host. Default:
    /// none (anonymous pulls). File only (not settable from the environment).
    pub registries: Vec<RegistryCredentials>,
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
    /// `secrets_dir`: where `vault.files` (and, with `[docker].secrets_in_env = false`, the
    /// secrets' environment file) of a run are written, in a private directory per run
    /// removed when the run ends; bind-mounted read-only into the steps. Must be a tmpfs or
    /// ramfs: `serve` refuses to start otherwise. Default: `/dev/shm/pipewright`.
    pub secrets_dir: PathBuf,
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

/// `[log]`: what the server writes to its standard error. `RUST_LOG` (or the older
/// `PIPEWRIGHT_LOG`), when set, is used instead of `level`. Colour codes are written only
/// to a terminal, and never when `NO_COLOR` is set.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `format`: `text` (one readable line per event) or `json` (one JSON object per line,
    /// for log collectors). Default: `text`.
    pub format: LogFormat,
    /// `level`: `error`, `warn`, `info`, `debug` or `trace` for Pipewright's own events
    /// (other libraries' at `warn` or the level when more severe), or a filter in
    /// `RUST_LOG`'s syntax such as `warn,pipewright=debug`. Default: `info`.
    pub level: String,
}

/// `[log].format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    /// `server_role`: the role Pipewright itself logs in with on `mount`, to read
    /// `[[registries]].password_vault`: the JWT is signed by its own issuer, with `sub`
    /// `pipewright:server` and no repository claims (bind the role with
    /// `bound_subject`). Default: none (no password can come from Vault).
    pub server_role: Option<String>,
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
    /// `secrets_in_env`: `vault.secrets` reach step containers as their environment (which
    /// the engine keeps in its on-disk container config). `false` writes them instead to an
    /// environment file in the run's `[server].secrets_dir` that the step's shell reads
    /// before the command (images need `/bin/sh`). Default: `true`.
    pub secrets_in_env: bool,
    /// `pin_images`: image references pulled when `serve` starts (with the credentials of
    /// their `[[registries]]`) and kept from the engine's GC (`docker image prune -a`) by a
    /// stopped container labelled `io.pipewright.pin` that references each. A pull that
    /// fails is logged and retried in the background; start-up does not wait for it.
    /// Default: `[]`.
    pub pin_images: Vec<String>,
}

/// `[agent]`.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `name`: the agent's name in the agents table, in the run JSON's `agent` and in
    /// "agent <name> lost". Default: the host name ([`AgentConfig::name`]).
    pub name: Option<String>,
    /// `labels`: labels of this host that pipelines can require. Default: `[]`.
    pub labels: Vec<String>,
    /// `capacity`: jobs run at once; `0` makes `serve` run none itself (agents run them),
    /// and `pipewright agent` needs at least 1. Default: `2`.
    pub capacity: usize,
    /// `lease`: how long a claimed run stays this agent's without a renewal (renewed every
    /// third of it); a run whose lease expired ends as `error` "agent <name> lost".
    /// Default: `60s`.
    pub lease: Duration,
    /// `drain_timeout`: after SIGTERM, how long running runs may take to finish before the
    /// process exits and leaves them running (for the next start to pick up). Default: `10m`.
    pub drain_timeout: Duration,
    /// `listen`: where `pipewright agent` answers `/healthz` and `/readyz` (`serve` answers
    /// them on `[server].listen`). Default: none (no listener).
    pub listen: Option<SocketAddr>,
}

impl AgentConfig {
    /// `name`, or the host name when none is given.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(super::parse::host_name)
    }
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

/// `[ui]`.
#[derive(Clone, Debug, Default)]
pub struct UiConfig {
    /// `oauth_client_id`: the client id of an OAuth2 application registered in Gitea (user
    /// or organisation settings, Applications; confidential client) whose redirect URI is
    /// `<public_url>/login/oauth/callback`. With it, `GET /login` offers "Sign in with Gitea"
    /// and each user sees the repositories Gitea lets them read. Given with the secret, or
    /// neither. Default: none (signing in with an API token only).
    pub oauth_client_id: Option<String>,
    /// `oauth_client_secret` or `oauth_client_secret_file`: that application's client
    /// secret. Default: none.
    pub oauth_client_secret: Option<Secret>,
}

impl UiConfig {
    /// The client id and secret, when "Sign in with Gitea" is configured.
    pub fn oauth(&self) -> Option<(&str, &Secret)> {
        Some((
            self.oauth_client_id.as_deref()?,
            self.oauth_client_secret.as_ref()?,
        ))
    }
}

/// `[gitea_actions]`: Pipewright registers with Gitea (`[gitea].url`, Actions enabled) as
/// an Actions runner and runs the tasks of workflows whose job `runs-on` one of its labels
/// as Pipewright pipelines. Off unless a registration token is given.
#[derive(Clone, Debug)]
pub struct GiteaActionsConfig {
    /// `registration_token` or `registration_token_file`: a runner registration token from
    /// Gitea (Settings, Actions, Runners, "Create new runner", of the repository, the
    /// organisation or the instance), used once: the runner's own uuid and token are kept
    /// in `data_dir/gitea-runner.json`. Default: none (off).
    pub registration_token: Option<Secret>,
    /// `name`: the runner's name in Gitea's runner list. Default: `pipewright`.
    pub name: String,
    /// `labels`: the labels declared to Gitea; a job is handed to Pipewright when every
    /// label of its `runs-on` is one of them. Default: `["pipewright"]`.
    pub labels: Vec<String>,
}

impl GiteaActionsConfig {
    /// Whether Pipewright takes Gitea Actions tasks.
    pub fn enabled(&self) -> bool {
        self.registration_token.is_some()
    }
}

/// `[retention]`: what is deleted, and when, so that the data directory does not fill the
/// disk (an SD card on a small runner host). Ages count from a run's end (`finished_at`);
/// queued and running runs are never touched.
#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// `logs`: the step logs of runs that ended longer ago than this are deleted; the run
    /// and its steps stay, and say that their log was removed. A duration (`90d`, `12h`),
    /// or `off` to keep logs as long as their run. Default: `90d`.
    pub logs: Option<Duration>,
    /// `runs`: runs that ended longer ago than this are deleted with their steps, logs,
    /// sent statuses and comments and kept plan files; the newest run of each branch, tag
    /// and pull request stays (catch-up would run its commit again), and so does a run
    /// whose status is still to send or whose plan a pull request's review uses. Processed
    /// webhook deliveries received before then are deleted too. A duration, or `off` to
    /// keep runs forever. Default: `90d`.
    pub runs: Option<Duration>,
    /// `interval`: how often retention is applied (also once at start), and git mirrors
    /// are compacted (`git gc --auto`). Default: `1h`.
    pub interval: Duration,
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
    pub(super) const ALL: [(&'static str, Scope); 4] = [
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
    /// `apply_requirements`: what `/pipewright apply` needs of the pull request
    /// (`approved`, `mergeable`, `undiverged`). Default: `["approved", "mergeable"]`.
    pub apply_requirements: Vec<ApplyRequirement>,
    /// `commenters`: the Gitea users whose comment commands run, instead of asking Gitea
    /// for each commenter's permission (for a token that may not ask). Default: unset
    /// (Gitea's collaborator permission decides: `write` or more).
    pub commenters: Option<Vec<String>>,
}

/// What `/pipewright apply` requires of a pull request (`[[repos]].apply_requirements`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyRequirement {
    /// A review `APPROVED` by someone other than the author, neither stale nor dismissed.
    Approved,
    /// Gitea says it can be merged, and every other status on its head is `success`.
    Mergeable,
    /// The base branch has not changed the pipeline's paths since the pull request's base.
    Undiverged,
}

impl ApplyRequirement {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyRequirement::Approved => "approved",
            ApplyRequirement::Mergeable => "mergeable",
            ApplyRequirement::Undiverged => "undiverged",
        }
    }

    pub fn parse(s: &str) -> Option<ApplyRequirement> {
        [
            ApplyRequirement::Approved,
            ApplyRequirement::Mergeable,
            ApplyRequirement::Undiverged,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One `[[registries]]` entry: the credentials sent when a step image (or a kept image)
/// is pulled from `host`.
#[derive(Clone, Debug)]
pub struct RegistryCredentials {
    /// `host`: the registry as image references name it, `host` or `host:port`
    /// (`gitea.example.lab`, `127.0.0.1:5000`; `docker.io` for Docker Hub), matched
    /// without regard to ASCII case (required).
    pub host: String,
    /// `username`: the user to log in as (required).
    pub username: String,
    /// `password_file` or `password_vault` (required, exactly one of the two).
    pub password: RegistryPassword,
}

/// Where a registry's password comes from.
#[derive(Clone, Debug)]
pub enum RegistryPassword {
    /// `password_file`: its content without the final newline, read when the
    /// configuration is loaded.
    File(Secret),
    /// `password_vault = "PATH#KEY"`: key `KEY` of the KV secret at `PATH`, read through
    /// `[vault].server_role` when a pull needs it.
    Vault { path: String, key: String },
}

impl Config {
    /// The credentials `[[registries]]` has for the registry of an image reference.
    pub fn registry_for(&self, image: &str) -> Option<&RegistryCredentials> {
        let host = pipewright_containers::registry_host(image);
        self.registries.iter().find(|r| r.host == host)
    }

    /// The policy of a repository (`owner/name`), if `[[repos]]` lists it.
    /// What `/pipewright apply` requires in a repository (its `[[repos]]` entry, or the
    /// default).
    pub fn apply_requirements(&self, full_name: &str) -> Vec<ApplyRequirement> {
        self.repo_policy(full_name).map_or_else(
            || super::defaults::APPLY_REQUIREMENTS.to_vec(),
            |p| p.apply_requirements.clone(),
        )
    }

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
