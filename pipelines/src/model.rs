//! The pipeline model: what a valid pipeline file means, free of YAML.

use std::time::Duration;

use crate::{patterns::Patterns, template::Template};

/// A pipeline: one file under `.pipewright/`.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Its name (the file name without extension unless `name:` says otherwise); the status
    /// context is `pipewright/<name>`.
    pub name: String,
    /// The file it came from, relative to the repository root (`.pipewright/iac.yml`).
    pub file: String,
    pub on: Triggers,
    pub concurrency: Concurrency,
    /// Agent labels that must all be present.
    pub runs_on: Vec<String>,
    /// Limit for the whole run.
    pub timeout: Duration,
    pub vault: Option<VaultSpec>,
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub steps: Vec<Step>,
}

/// Default limit of a whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, Default)]
pub struct Triggers {
    pub push: Option<PushTrigger>,
    pub pull_request: Option<PullRequestTrigger>,
    pub dispatch: Option<DispatchTrigger>,
    pub schedule: Vec<Schedule>,
}

/// `on.push`. Without `branches` and `tags`, every branch push runs and no tag push does;
/// with only `tags`, only tag pushes run.
#[derive(Clone, Debug, Default)]
pub struct PushTrigger {
    pub branches: Option<Patterns>,
    pub tags: Option<Patterns>,
    pub paths: Option<Patterns>,
    pub paths_ignore: Option<Patterns>,
}

/// `on.pull_request`; `branches` filters the base branch.
#[derive(Clone, Debug, Default)]
pub struct PullRequestTrigger {
    pub branches: Option<Patterns>,
    pub paths: Option<Patterns>,
    pub paths_ignore: Option<Patterns>,
}

#[derive(Clone, Debug, Default)]
pub struct DispatchTrigger {
    pub inputs: Vec<Input>,
    /// A dispatch must carry the input `confirm` equal to the pipeline's name.
    pub confirm: bool,
    /// A dispatch may run from the mirror's last known commit of the ref when Gitea cannot
    /// be reached.
    pub offline: bool,
}

/// A typed dispatch input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    pub kind: InputKind,
    pub required: bool,
    pub default: Option<String>,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKind {
    String,
    Choice(Vec<String>),
    Boolean,
    Number,
}

#[derive(Clone, Debug)]
pub struct Schedule {
    /// The cron expression as written (five fields or a macro such as `@daily`), already
    /// checked.
    pub cron: String,
    /// The IANA time zone the cron is read in (`Europe/Paris`); `UTC` by default.
    pub timezone: String,
}

#[derive(Clone, Debug)]
pub struct Concurrency {
    /// The group (default `<repo>/<pipeline>/<ref>`).
    pub group: Option<Template>,
    /// A new run cancels queued and running runs of the group (otherwise they wait).
    pub cancel_in_progress: bool,
}

#[derive(Clone, Debug)]
pub struct VaultSpec {
    /// The role to log in with; `None`: `[vault].role_template`.
    pub role: Option<VaultRole>,
    pub mount: Option<String>,
    pub secrets: Vec<SecretRef>,
    /// `vault.files`: values given as files under `/run/secrets/`.
    pub files: Vec<SecretFile>,
}

/// `relative/path: path#key`: one key of a Vault secret as the file
/// `/run/secrets/<file>` (mode 0400, read-only) in every step container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    /// The path under `/run/secrets/`, checked: relative, no `.`, `..` or empty component.
    pub file: String,
    /// The Vault secret's path.
    pub path: String,
    pub key: String,
}

/// `vault.role`: one role for every event, or a role per event kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultRole {
    One(String),
    /// `{ pull_request: plan, default: apply }`: the event's own entry, else `default`;
    /// with neither, `[vault].role_template` applies.
    PerEvent {
        events: Vec<(EventKind, String)>,
        default: Option<String>,
    },
}

impl VaultRole {
    /// The role named for runs of `event`, if any.
    pub fn for_event(&self, event: EventKind) -> Option<&str> {
        match self {
            VaultRole::One(role) => Some(role),
            VaultRole::PerEvent { events, default } => events
                .iter()
                .find(|(e, _)| *e == event)
                .map(|(_, r)| r.as_str())
                .or(default.as_deref()),
        }
    }
}

impl VaultSpec {
    /// The role the pipeline names for runs of `event`; `None`: the configured default.
    pub fn role_for(&self, event: EventKind) -> Option<&str> {
        self.role.as_ref().and_then(|r| r.for_event(event))
    }
}

/// `ENV: path#key`, or `PREFIX_*: path#*` for every key of the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub path: String,
    pub target: SecretTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretTarget {
    /// One key into one variable.
    Key { env: String, key: String },
    /// Every key, each into `prefix` + key (upper-cased when the prefix has no lower-case
    /// letter, as stored otherwise).
    All { prefix: String },
}

impl SecretTarget {
    /// The variable name a key of an `All` secret goes to.
    pub fn env_for(prefix: &str, key: &str) -> String {
        if prefix.chars().any(|c| c.is_ascii_lowercase()) {
            format!("{prefix}{key}")
        } else {
            format!("{prefix}{}", key.to_ascii_uppercase())
        }
    }
}

/// A host path mounted into step containers: `HOST:CONTAINER[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub host: String,
    pub container: String,
    pub read_only: bool,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub when: Option<When>,
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub continue_on_error: bool,
}

#[derive(Clone, Debug)]
pub enum StepKind {
    /// `run:` a script in `image`, by the step's `shell`.
    Run {
        image: Template,
        script: String,
        shell: Shell,
    },
    /// `uses:` a built-in action with its `with:` inputs.
    Uses {
        action: String,
        with: Vec<(String, WithValue)>,
    },
}

/// An action input: a templated scalar, a list or a mapping of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WithValue {
    Scalar(Template),
    List(Vec<WithValue>),
    Map(Vec<(String, WithValue)>),
}

/// Step condition: every given part must hold.
#[derive(Clone, Debug, Default)]
pub struct When {
    pub event: Option<Vec<EventKind>>,
    pub branch: Option<Patterns>,
    /// `when.status`; default: after success only.
    pub status: RunsAfter,
}

/// `when.status`: in which state of the run a step runs. `failure` covers an earlier step
/// that failed, timed out or could not run, a run that was cancelled and a run whose
/// timeout ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunsAfter {
    pub success: bool,
    pub failure: bool,
}

impl Default for RunsAfter {
    fn default() -> Self {
        RunsAfter {
            success: true,
            failure: false,
        }
    }
}

/// Limit of a step that runs after a failure (`when.status` with `failure`) and names no
/// `timeout`: such a step is bounded by its own limit, never by what is left of the run's.
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

/// The shell of a `run:` step (`shell:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shell {
    /// `/bin/sh -e`, with `pipefail` where that shell has it (the default).
    #[default]
    Sh,
    /// `bash -eo pipefail`.
    Bash,
}

impl Shell {
    pub const NAMES: &[&str] = &["sh", "bash"];

    pub fn as_str(self) -> &'static str {
        match self {
            Shell::Sh => "sh",
            Shell::Bash => "bash",
        }
    }

    pub fn parse(s: &str) -> Option<Shell> {
        [Shell::Sh, Shell::Bash]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl Step {
    /// The step's `when.status`.
    pub fn runs_after(&self) -> RunsAfter {
        self.when.as_ref().map(|w| w.status).unwrap_or_default()
    }
}

/// The kinds of event a pipeline runs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Push,
    PullRequest,
    Dispatch,
    Schedule,
    Comment,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Push,
        EventKind::PullRequest,
        EventKind::Dispatch,
        EventKind::Schedule,
        EventKind::Comment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::PullRequest => "pull_request",
            EventKind::Dispatch => "dispatch",
            EventKind::Schedule => "schedule",
            EventKind::Comment => "comment",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}
