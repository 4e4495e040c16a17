//! Tests of the configuration: the documented example, defaults, precedence, and every
//! problem message (snapshots with expect-test).

use std::{fs, path::PathBuf, time::Duration};

use expect_test::{Expect, expect};

use super::{parse::role_template, *};

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
                secrets_dir: "/dev/shm/pipewright",
            },
            database: DatabaseConfig {
                url: "sqlite://./pipewright-data/pipewright.db",
            },
            log: LogConfig {
                format: Text,
                level: "info",
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
                server_role: None,
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
                secrets_in_env: true,
                pin_images: [],
            },
            agent: AgentConfig {
                name: None,
                labels: [
                    "linux",
                    "arm64",
                ],
                capacity: 2,
                lease: 60s,
                drain_timeout: 600s,
                listen: None,
            },
            api: ApiConfig {
                tokens: [
                    ***,
                ],
                read_public: false,
                scoped_tokens: [],
            },
            ui: UiConfig {
                oauth_client_id: None,
                oauth_client_secret: None,
            },
            gitea_actions: GiteaActionsConfig {
                registration_token: None,
                name: "pipewright",
                labels: [
                    "pipewright",
                ],
            },
            retention: RetentionConfig {
                logs: Some(
                    7776000s,
                ),
                runs: Some(
                    7776000s,
                ),
                interval: 3600s,
            },
            repos: [
                RepoPolicy {
                    name: "arcodange-org/factory",
                    host_volumes: [
                        "/mnt/backups",
                    ],
                    allow_fork_secrets: false,
                    apply_requirements: [
                        Approved,
                        Mergeable,
                    ],
                    commenters: None,
                },
            ],
            registries: [],
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
                secrets_dir: "/dev/shm/pipewright",
            },
            database: DatabaseConfig {
                url: "sqlite://./pipewright-data/pipewright.db",
            },
            log: LogConfig {
                format: Text,
                level: "info",
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
                server_role: None,
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
                secrets_in_env: true,
                pin_images: [],
            },
            agent: AgentConfig {
                name: None,
                labels: [],
                capacity: 2,
                lease: 60s,
                drain_timeout: 600s,
                listen: None,
            },
            api: ApiConfig {
                tokens: [],
                read_public: false,
                scoped_tokens: [],
            },
            ui: UiConfig {
                oauth_client_id: None,
                oauth_client_secret: None,
            },
            gitea_actions: GiteaActionsConfig {
                registration_token: None,
                name: "pipewright",
                labels: [
                    "pipewright",
                ],
            },
            retention: RetentionConfig {
                logs: Some(
                    7776000s,
                ),
                runs: Some(
                    7776000s,
                ),
                interval: 3600s,
            },
            repos: [],
            registries: [],
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
capacity = -1
name = "pi 1"
lease = "1s"

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
                config.toml: [agent].name: expected a name of letters, digits, `-`, `_` and `.` (at most 64), found "pi 1"
                config.toml: [agent].labels: expected a list of strings, found integer at index 1
                config.toml: [agent].capacity: expected 0 or more, found -1
                config.toml: [agent].lease: 1s is below 3s, too short to be renewed
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
        &format!("[gitea]\nwebhook_secret_file = {empty:?}\n[api]\ntokens_file = {comments:?}\n"),
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

/// Every field's documented `Default:` is its default: a file that sets the key to the value
/// its doc names gives the configuration of no file at all, so the docs cannot drift from
/// `defaults.rs`.
#[test]
fn documented_defaults_are_the_defaults() {
    let default = format!("{:?}", Config::default());
    let mut checked = Vec::new();
    let mut section: Option<String> = None;
    let mut doc = String::new();
    for line in include_str!("values.rs").lines().map(str::trim) {
        if let Some(text) = line.strip_prefix("///") {
            doc.push_str(text);
            doc.push(' ');
            continue;
        }
        if line.starts_with("#[") {
            continue;
        }
        if line.starts_with("pub struct ") {
            // A section's struct doc starts with it: "`[server]`." (not "`[[repos]]`").
            section = doc
                .trim()
                .strip_prefix("`[")
                .and_then(|rest| rest.split_once(']'))
                .map(|(name, _)| name.to_owned())
                .filter(|name| !name.starts_with('['));
        } else if line.starts_with("pub ")
            && let Some(section) = &section
            && let Some((key, value)) = documented_default(&doc)
        {
            let value = match value.as_str() {
                "true" | "false" => value,
                number if number.parse::<i64>().is_ok() => number.to_owned(),
                text => format!("{text:?}"),
            };
            let text = format!("[{section}]\n{key} = {value}\n");
            let config = from_text(&text, &[]).unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(format!("{config:?}"), default, "{text}");
            checked.push(format!("{section}.{key}"));
        }
        doc.clear();
    }
    expect!["server.listen server.data_dir server.catch_up_interval server.secrets_dir server.header_timeout server.body_timeout server.max_connections server.body_memory server.max_deliveries log.format log.level gitea.git_timeout identity.audience identity.token_ttl identity.algorithm vault.mount vault.role_template docker.stop_grace docker.default_memory docker.default_pids docker.max_memory docker.max_pids docker.max_timeout docker.max_log_bytes docker.secrets_in_env agent.capacity agent.lease agent.drain_timeout api.read_public gitea_actions.name retention.logs retention.runs retention.interval"]
    .assert_eq(&checked.join(" "));
}

/// The key and default value of a field doc "`key`: … Default: `value`…", when the
/// default is a value (not "none", a list or a value derived from another key).
fn documented_default(doc: &str) -> Option<(String, String)> {
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let key = doc.strip_prefix('`')?.split_once("`:")?.0;
    let value = doc.split_once("Default: `")?.1.split_once('`')?.0;
    let plain = |s: &str| !s.is_empty() && !s.contains(['<', '[', ' ']);
    (key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') && plain(value))
        .then(|| (key.to_owned(), value.to_owned()))
}

/// `[ui]`: the OAuth application's id and secret (from a file, never shown), both or
/// neither.
#[test]
fn ui_oauth_is_both_or_neither_and_its_secret_can_be_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir, "oauth", "gto_secret\n");
    let text = format!(
        "[gitea]\nurl = \"https://gitea.example.lab\"\n[ui]\noauth_client_id = \"cid\"\noauth_client_secret_file = {secret:?}\n"
    );
    let config = from_text(&text, &[]).unwrap();
    let (id, secret) = config.ui.oauth().expect("configured");
    assert_eq!((id, secret.expose()), ("cid", "gto_secret"));
    assert!(!format!("{config:?}").contains("gto_secret"));
    assert!(Config::default().ui.oauth().is_none());
    check_errors(
        "[gitea]\nurl = \"https://gitea.example.lab\"\n[ui]\noauth_client_id = \"cid\"\n",
        &[],
        expect![[r#"
            config.toml: [ui]: `oauth_client_id` is given without `oauth_client_secret` or `oauth_client_secret_file`; give both or neither
        "#]],
    );
    check_errors(
        "[ui]\noauth_client_id = \"cid\"\noauth_client_secret = \"s\"\n",
        &[],
        expect![[r#"
            config.toml: [ui]: signing in with Gitea needs `[gitea].url`
        "#]],
    );
    check_errors(
        "",
        &[("PIPEWRIGHT_UI__OAUTH_CLIENT_SECRET", "s")],
        expect![[r#"
            config.toml: [ui]: `oauth_client_secret` is given without `oauth_client_id`; give both or neither
        "#]],
    );
}

/// `[gitea_actions]`: on with a registration token (from a file, never shown), which needs
/// `[gitea].url`; labels are plain and there is at least one.
#[test]
fn gitea_actions_needs_a_token_and_plain_labels() {
    assert!(!Config::default().gitea_actions.enabled());
    let dir = tempfile::tempdir().unwrap();
    let token = secret_file(&dir, "runner", "reg-token-123\n");
    let text = format!(
        "[gitea]\nurl = \"https://gitea.example.lab\"\n[gitea_actions]\nregistration_token_file = {token:?}\nlabels = [\"pipewright\", \"lab\"]\n"
    );
    let config = from_text(&text, &[]).unwrap();
    assert!(config.gitea_actions.enabled());
    assert_eq!(config.gitea_actions.labels, ["pipewright", "lab"]);
    assert!(!format!("{config:?}").contains("reg-token-123"));
    check_errors(
        "[gitea_actions]\nregistration_token = \"t\"\nlabels = [\"pipewright:host\"]\nname = \"\"\n",
        &[],
        expect![[r#"
            config.toml: [gitea_actions].name: expected a name of 1 to 255 characters, found ""
            config.toml: [gitea_actions].labels: expected plain labels (no `:schema`, at most 255 bytes), found "pipewright:host"
            config.toml: [gitea_actions]: registering as a Gitea Actions runner needs `[gitea].url`
        "#]],
    );
    check_errors(
        "[gitea]\nurl = \"https://gitea.example.lab\"\n",
        &[("PIPEWRIGHT_GITEA_ACTIONS__LABELS", "")],
        expect![[r#"
            PIPEWRIGHT_GITEA_ACTIONS__LABELS: expected at least one label
        "#]],
    );
}
