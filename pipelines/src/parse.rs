//! From a pipeline file's text to a [`Pipeline`], with every problem reported at once.
//!
//! Each mapping of the format has a field table (key, type, doc) next to its decoder; the
//! decoder reads only keys of its table, unknown keys are reported from the table, and the
//! JSON Schema is generated from the same tables.

use std::collections::HashMap;

use crate::{
    decode::{Cx, Field, Obj, Object, Ty},
    diag::{Diagnostic, Pos, did_you_mean},
    model::*,
    patterns::Patterns,
    template::{Template, is_identifier},
    units::{parse_duration, parse_memory},
    yaml::{self, Node, Value},
};

const STRINGS: Ty = Ty::ListOrOne(&Ty::String);
const GLOBS: Ty = Ty::ListOrOne(&Ty::String);
const ENV: Ty = Ty::MapOf(&Ty::String);
const VOLUMES: Ty = Ty::List(&Ty::String);
const EVENTS: &[&str] = &["push", "pull_request", "dispatch", "schedule", "comment"];

pub(crate) static PIPELINE: Object = Object {
    title: "pipeline",
    fields: &[
        Field::opt(
            "name",
            Ty::String,
            "Pipeline name; default: the file name without extension. The status context is `pipewright/<name>`.",
        ),
        Field::opt(
            "on",
            Ty::OneOf(&[
                Ty::Object(&ON),
                Ty::ListOrOne(&Ty::Enum(&["push", "pull_request", "dispatch"])),
            ]),
            "Events that run the pipeline.",
        ),
        Field::opt(
            "concurrency",
            Ty::OneOf(&[Ty::Template, Ty::Object(&CONCURRENCY)]),
            "Concurrency group; default group: `<repo>/<pipeline>/<ref>`, runs wait their turn.",
        ),
        Field::opt("runs_on", STRINGS, "Agent labels that must all be present."),
        Field::opt(
            "timeout",
            Ty::Duration,
            "Limit for the whole run, e.g. `30m`; default `1h`, at most `30d`.",
        ),
        Field::opt(
            "vault",
            Ty::Object(&VAULT),
            "Vault login and the secrets given to every step.",
        ),
        Field::opt("env", ENV, "Environment variables for every step."),
        Field::opt(
            "volumes",
            VOLUMES,
            "Host paths for every step, `HOST:CONTAINER[:ro]`; only paths the repository's `host_volumes` allow.",
        ),
        Field::req(
            "steps",
            Ty::List(&Ty::Object(&STEP)),
            "The steps, run in order; names unique; at most 256.",
        ),
    ],
};

static ON: Object = Object {
    title: "triggers (`on`)",
    fields: &[
        Field::opt(
            "push",
            Ty::OneOf(&[Ty::Null, Ty::Object(&PUSH)]),
            "Pushes of branches and tags.",
        ),
        Field::opt(
            "pull_request",
            Ty::OneOf(&[Ty::Null, Ty::Object(&PULL_REQUEST)]),
            "Pull requests opened, reopened or pushed to.",
        ),
        Field::opt(
            "dispatch",
            Ty::OneOf(&[Ty::Null, Ty::Object(&DISPATCH)]),
            "Manual runs: comment command, run page, API, `pipewright dispatch`.",
        ),
        Field::opt(
            "schedule",
            Ty::List(&Ty::Object(&SCHEDULE)),
            "Runs on the default branch at cron times (in each entry's `timezone`, default UTC).",
        ),
    ],
};

static PUSH: Object = Object {
    title: "`on.push`",
    fields: &[
        Field::opt(
            "branches",
            GLOBS,
            "Branch globs; default: every branch. `!` excludes again.",
        ),
        Field::opt(
            "tags",
            GLOBS,
            "Tag globs; without it tag pushes do not run the pipeline.",
        ),
        Field::opt(
            "paths",
            GLOBS,
            "Runs only when a changed file matches one of these globs.",
        ),
        Field::opt(
            "paths_ignore",
            GLOBS,
            "Does not run when every changed file matching `paths` matches one of these.",
        ),
    ],
};

static PULL_REQUEST: Object = Object {
    title: "`on.pull_request`",
    fields: &[
        Field::opt(
            "branches",
            GLOBS,
            "Base branch globs; default: every branch.",
        ),
        Field::opt(
            "paths",
            GLOBS,
            "Runs only when a changed file matches one of these globs.",
        ),
        Field::opt(
            "paths_ignore",
            GLOBS,
            "Does not run when every changed file matching `paths` matches one of these.",
        ),
    ],
};

static DISPATCH: Object = Object {
    title: "`on.dispatch`",
    fields: &[
        Field::opt(
            "inputs",
            Ty::MapOf(&Ty::Object(&INPUT)),
            "Typed inputs of a manual run.",
        ),
        Field::opt(
            "confirm",
            Ty::Bool,
            "A dispatch must carry the input `confirm` equal to the pipeline's name.",
        ),
        Field::opt(
            "offline",
            Ty::Bool,
            "When Gitea cannot be reached, a dispatch runs from the mirror's last fetched commit of the ref; its status is sent when Gitea is back.",
        ),
    ],
};

static INPUT: Object = Object {
    title: "dispatch input",
    fields: &[
        Field::opt(
            "type",
            Ty::Enum(&["string", "choice", "boolean", "number"]),
            "Default `string`.",
        ),
        Field::opt(
            "options",
            Ty::List(&Ty::String),
            "The choices of a `choice` input.",
        ),
        Field::opt(
            "required",
            Ty::Bool,
            "A dispatch without it is refused (unless it has a default).",
        ),
        Field::opt(
            "default",
            Ty::String,
            "Value when the dispatch does not give one, and outside dispatches.",
        ),
        Field::opt("description", Ty::String, "Shown on the dispatch form."),
    ],
};

static SCHEDULE: Object = Object {
    title: "schedule entry",
    fields: &[
        Field::req(
            "cron",
            Ty::String,
            "Five-field cron expression (minute hour day month weekday), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` (`@annually`).",
        ),
        Field::opt(
            "timezone",
            Ty::String,
            "IANA time zone the cron is read in, e.g. `Europe/Paris`; default `UTC`.",
        ),
    ],
};

static CONCURRENCY: Object = Object {
    title: "`concurrency`",
    fields: &[
        Field::opt(
            "group",
            Ty::Template,
            "Group name (templated); default `<repo>/<pipeline>/<ref>`.",
        ),
        Field::opt(
            "cancel_in_progress",
            Ty::Bool,
            "A new run cancels queued and running runs of the group; default false: they wait, and queued ones are superseded.",
        ),
    ],
};

static VAULT: Object = Object {
    title: "`vault`",
    fields: &[
        Field::opt(
            "role",
            Ty::OneOf(&[Ty::String, Ty::Object(&VAULT_ROLE)]),
            "Role of the jwt auth method, or a role per event (`{ pull_request: plan, default: apply }`); default from `[vault].role_template`.",
        ),
        Field::opt(
            "mount",
            Ty::String,
            "Mount of the jwt auth method; default `[vault].mount`.",
        ),
        Field::opt(
            "secrets",
            ENV,
            "`ENV: path#key`, or `PREFIX_*: path#*` for every key of the secret.",
        ),
        Field::opt(
            "files",
            ENV,
            "`relative/path: path#key`: the value as the file `/run/secrets/<path>` (mode 0400, read-only) in every step container; the path has no `..`, `.` or empty component and no leading `/`.",
        ),
    ],
};

static VAULT_ROLE: Object = Object {
    title: "`vault.role` by event",
    fields: &[
        Field::opt("push", Ty::String, "Role of push runs."),
        Field::opt("pull_request", Ty::String, "Role of pull-request runs."),
        Field::opt("dispatch", Ty::String, "Role of manual runs."),
        Field::opt("schedule", Ty::String, "Role of scheduled runs."),
        Field::opt(
            "comment",
            Ty::String,
            "Role of runs a comment command starts.",
        ),
        Field::opt(
            "default",
            Ty::String,
            "Role of the other events; without it they use `[vault].role_template`.",
        ),
    ],
};

static STEP: Object = Object {
    title: "step",
    fields: &[
        Field::req("name", Ty::String, "Step name, unique in the pipeline."),
        Field::opt("image", Ty::Template, "Image of a `run` step (templated)."),
        Field::opt(
            "run",
            Ty::String,
            "Script run by `/bin/sh -e` (with `pipefail` where that shell has it) in `/workspace`. Event values reach it only as environment variables.",
        ),
        Field::opt(
            "shell",
            Ty::Enum(Shell::NAMES),
            "Shell of the `run` script: `sh` (default) or `bash` (`bash -eo pipefail`, which the image must have).",
        ),
        Field::opt("uses", Ty::Enum(ACTION_NAMES), "A built-in action."),
        Field::opt(
            "with",
            Ty::OneOf(&[Ty::Object(&TOFU), Ty::Object(&IMAGE), Ty::Object(&POSTGRES)]),
            "Inputs of the action (templated).",
        ),
        Field::opt(
            "env",
            ENV,
            "Environment variables, added to the pipeline's.",
        ),
        Field::opt("volumes", VOLUMES, "Host paths, added to the pipeline's."),
        Field::opt(
            "when",
            Ty::Object(&WHEN),
            "Runs the step only for these events, branches and run states.",
        ),
        Field::opt(
            "timeout",
            Ty::Duration,
            "Default: what is left of the run's; at most `30d`.",
        ),
        Field::opt(
            "memory",
            Ty::Memory,
            "Memory limit, e.g. `512m`; from `6m` to `1024g`.",
        ),
        Field::opt(
            "pids",
            Ty::Integer(MAX_PIDS),
            "Process limit, from 1 to 4194304.",
        ),
        Field::opt(
            "continue_on_error",
            Ty::Bool,
            "A failure of this step does not fail the run.",
        ),
    ],
};

static WHEN: Object = Object {
    title: "`when`",
    fields: &[
        Field::opt("event", Ty::ListOrOne(&Ty::Enum(EVENTS)), "Event kinds."),
        Field::opt(
            "branch",
            GLOBS,
            "Branch globs (the base branch for pull requests).",
        ),
        Field::opt(
            "status",
            Ty::ListOrOne(&Ty::Enum(STATUSES)),
            "`[success]` (default); `[failure]`: only after an earlier step failed or timed out, or the run was cancelled or timed out; both: always. Such steps get their own `timeout` (default `5m`), whatever is left of the run's, and a cancel does not stop them.",
        ),
    ],
};

const STATUSES: &[&str] = &["success", "failure"];

/// Most steps in a pipeline. A plan gives every step its own copy of the pipeline's
/// environment and volumes, so this bounds a plan's size to a few hundred times the file's.
pub const MAX_STEPS: usize = 256;

/// Largest `pids` limit, Linux's `PID_MAX_LIMIT`: a number above it cannot be meant, and
/// it always fits Docker's signed 64-bit limit.
pub const MAX_PIDS: u64 = 4_194_304;

/// Most dispatch inputs a pipeline declares.
pub const MAX_INPUTS: usize = 100;

/// Most `on.schedule` entries a pipeline has: each is checked for a date it fires on (a
/// scan of up to 28 years for one that never does) and looked at every minute.
pub const MAX_SCHEDULES: usize = 100;

/// Most bytes a plan copies from the pipeline into its steps (`env`, `volumes` and input
/// defaults, times the number of steps).
pub const MAX_PLAN_BYTES: usize = 16 << 20;

/// Names of the built-in actions.
pub const ACTION_NAMES: &[&str] = &["tofu", "image", "postgres"];

pub(crate) static TOFU: Object = Object {
    title: "`with` of `uses: tofu`",
    fields: &[
        Field::opt(
            "path",
            Ty::Template,
            "Directory of the root module; default `.`.",
        ),
        Field::opt(
            "version",
            Ty::Template,
            "OpenTofu version of the default image.",
        ),
        Field::opt(
            "image",
            Ty::Template,
            "Image with a `tofu` binary (instead of `version`).",
        ),
        Field::opt(
            "var_files",
            Ty::ListOrOne(&Ty::Template),
            "`-var-file` arguments.",
        ),
        Field::opt(
            "backend_config",
            Ty::OneOf(&[Ty::MapOf(&Ty::Template), Ty::ListOrOne(&Ty::Template)]),
            "`-backend-config` arguments for `init`.",
        ),
        Field::opt(
            "allow_destroy",
            Ty::Bool,
            "Default false: a plan that destroys fails before apply.",
        ),
        Field::opt(
            "command",
            Ty::Enum(&["auto", "plan", "apply"]),
            "`auto` (default): apply on a push to the default branch or a dispatch with `mode: apply`, plan otherwise.",
        ),
        Field::opt(
            "fail_on_changes",
            Ty::Bool,
            "A plan with changes fails (drift detection).",
        ),
    ],
};

pub(crate) static IMAGE: Object = Object {
    title: "`with` of `uses: image`",
    fields: &[
        Field::opt(
            "context",
            Ty::Template,
            "Build context directory; default `.`.",
        ),
        Field::opt(
            "dockerfile",
            Ty::Template,
            "Dockerfile, relative to the context; default `Dockerfile`.",
        ),
        Field::req(
            "tags",
            Ty::ListOrOne(&Ty::Template),
            "Image names with tags (templated).",
        ),
        Field::opt("build_args", Ty::MapOf(&Ty::Template), "Build arguments."),
        Field::opt(
            "push",
            Ty::Bool,
            "Default: push on the default branch only, never on pull requests.",
        ),
        Field::opt("registry", Ty::Template, "Registry host to log in to."),
        Field::opt("username", Ty::Template, "Registry user."),
        Field::opt(
            "password_secret",
            Ty::String,
            "Name of the Vault secret (a `vault.secrets` variable) holding the password.",
        ),
    ],
};

pub(crate) static POSTGRES: Object = Object {
    title: "`with` of `uses: postgres`",
    fields: &[
        Field::req(
            "files",
            Ty::ListOrOne(&Ty::Template),
            "SQL files or globs, run in order, each in one transaction.",
        ),
        Field::req("host", Ty::Template, "Server host."),
        Field::opt("port", Ty::Template, "Server port; default 5432."),
        Field::req("database", Ty::Template, "Database name."),
        Field::opt(
            "version",
            Ty::Template,
            "PostgreSQL client version of the default image `postgres:<version>`.",
        ),
        Field::opt(
            "image",
            Ty::Template,
            "Image with `psql` (instead of `version`).",
        ),
        Field::opt(
            "credentials",
            Ty::Template,
            "Vault KV secret with `username` and `password`, as `path`.",
        ),
        Field::opt(
            "database_role",
            Ty::Template,
            "Vault database secrets engine role: credentials from `<database_mount>/creds/<role>`, revoked after the step.",
        ),
        Field::opt(
            "database_mount",
            Ty::Template,
            "Mount of the database secrets engine; default `database`.",
        ),
        Field::opt(
            "sslmode",
            Ty::Enum(&[
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ]),
            "libpq `sslmode`; default `prefer`.",
        ),
    ],
};

/// The field table of an action's `with:`.
pub(crate) fn action_inputs(action: &str) -> Option<&'static Object> {
    match action {
        "tofu" => Some(&TOFU),
        "image" => Some(&IMAGE),
        "postgres" => Some(&POSTGRES),
        _ => None,
    }
}

/// The outcome of reading one pipeline file.
#[derive(Debug)]
pub struct ParsedFile {
    pub file: String,
    /// The pipeline's name even when the file is invalid (for its status context).
    pub name: String,
    pub result: Result<Pipeline, Vec<Diagnostic>>,
}

/// Reads a set of pipeline files (path relative to the repository root, text), checking
/// each on its own and the set for duplicate names.
pub fn parse_files(files: &[(String, String)]) -> Vec<ParsedFile> {
    let mut out: Vec<ParsedFile> = files
        .iter()
        .map(|(file, text)| parse_file(file, text))
        .collect();
    let mut names: HashMap<String, String> = HashMap::new();
    for parsed in &mut out {
        if let Some(first) = names.get(&parsed.name) {
            let d = Diagnostic {
                file: parsed.file.clone(),
                pos: Pos { line: 1, col: 1 },
                message: format!("pipeline name `{}` is already used by {first}", parsed.name),
            };
            match &mut parsed.result {
                Ok(_) => parsed.result = Err(vec![d]),
                Err(diags) => diags.push(d),
            }
        } else {
            names.insert(parsed.name.clone(), parsed.file.clone());
        }
    }
    out
}

/// Reads one pipeline file.
pub fn parse_file(file: &str, source: &str) -> ParsedFile {
    let stem = file.rsplit('/').next().unwrap_or(file);
    let stem = stem
        .strip_suffix(".yml")
        .or_else(|| stem.strip_suffix(".yaml"))
        .unwrap_or(stem);
    let mut cx = Cx::new(file, source);
    let mut name = stem.to_string();
    let pipeline = match yaml::parse(source) {
        Err(e) => {
            cx.error(e.pos, e.message);
            None
        }
        Ok(None) => {
            cx.error(
                Pos { line: 1, col: 1 },
                "empty pipeline file; expected a mapping with `steps`",
            );
            None
        }
        Ok(Some(root)) => pipeline(&mut cx, &root, stem, &mut name),
    };
    let result = match pipeline {
        Some(p) if cx.diags.is_empty() && cx.dropped == 0 => Ok(p),
        _ => Err(cx.finish()),
    };
    ParsedFile {
        file: file.to_string(),
        name,
        result,
    }
}

fn pipeline(cx: &mut Cx, root: &Node, stem: &str, name_out: &mut String) -> Option<Pipeline> {
    let obj = cx.object(root, &PIPELINE)?;
    let name = match obj.value("name") {
        Some(n) => cx.string(n, "a name").filter(|s| check_name(cx, n, s)),
        None => Some(stem.to_string()).filter(|s| {
            let ok = is_name(s);
            if !ok {
                cx.error(Pos { line: 1, col: 1 }, format!("file name `{s}` is not a valid pipeline name (letters, digits, `.`, `_`, `-`): add `name:`"));
            }
            ok
        }),
    };
    if let Some(n) = &name {
        *name_out = n.clone();
    }
    let on = match obj.value("on") {
        Some(n) => triggers(cx, n),
        None => {
            cx.error(obj.key_pos("steps").unwrap_or(root.pos), "the pipeline has no `on:`; it would never run (add `on: { dispatch: {} }` for manual runs)");
            None
        }
    };
    let inputs: Vec<Input> = match &on {
        Some(t) => t
            .dispatch
            .as_ref()
            .map(|d| d.inputs.clone())
            .unwrap_or_default(),
        // `on:` has errors of its own: templates are checked against the inputs it names,
        // so that a bad input (or trigger) is not reported again at each `${{ inputs.… }}`.
        None => obj.value("on").map(named_inputs).unwrap_or_default(),
    };
    let concurrency = match obj.value("concurrency") {
        None => Some(Concurrency {
            group: None,
            cancel_in_progress: false,
        }),
        Some(n) => concurrency(cx, n, &inputs),
    };
    let runs_on = obj
        .value("runs_on")
        .map(|n| string_list(cx, n, "agent labels"))
        .unwrap_or(Some(Vec::new()));
    let timeout = obj
        .value("timeout")
        .map(|n| duration(cx, n))
        .unwrap_or(Some(DEFAULT_TIMEOUT));
    let vault = match obj.value("vault") {
        None => Some(None),
        Some(n) => vault(cx, n).map(Some),
    };
    let env = obj
        .value("env")
        .map(|n| env(cx, n))
        .unwrap_or(Some(Vec::new()));
    let volumes = obj
        .value("volumes")
        .map(|n| volumes(cx, n))
        .unwrap_or(Some(Vec::new()));
    let steps = obj.get("steps").and_then(|n| steps(cx, n, &inputs));
    if let (Some(env), Some(volumes), Some(list)) = (&env, &volumes, &steps) {
        let shared = shared_bytes(env, volumes, &inputs);
        if shared.saturating_mul(list.len()) > MAX_PLAN_BYTES {
            cx.error(
                obj.key_pos("steps").unwrap_or(root.pos),
                format!(
                    "the pipeline's `env`, `volumes` and input defaults ({} KiB) are given to each of its {} steps: more than {} MiB in all; set variables on the steps that need them",
                    shared >> 10,
                    list.len(),
                    MAX_PLAN_BYTES >> 20
                ),
            );
            return None;
        }
    }
    Some(Pipeline {
        name: name?,
        file: cx.file.clone(),
        on: on?,
        concurrency: concurrency?,
        runs_on: runs_on?,
        timeout: timeout?,
        vault: vault?,
        env: env?,
        volumes: volumes?,
        steps: steps?,
    })
}

/// What a plan copies into every step from the pipeline, roughly in bytes.
fn shared_bytes(env: &[(String, String)], volumes: &[Volume], inputs: &[Input]) -> usize {
    const ENTRY: usize = 64;
    let env: usize = env.iter().map(|(k, v)| k.len() + v.len() + ENTRY).sum();
    let volumes: usize = volumes
        .iter()
        .map(|v| v.host.len() + v.container.len() + ENTRY)
        .sum();
    let inputs: usize = inputs
        .iter()
        .map(|i| i.name.len() + i.default.as_ref().map_or(0, String::len) + ENTRY)
        .sum();
    env + volumes + inputs
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_name(cx: &mut Cx, node: &Node, s: &str) -> bool {
    let ok = is_name(s);
    if !ok {
        cx.error(
            node.pos,
            format!(
                "`{s}` is not a valid name: use letters, digits, `.`, `_` and `-` (at most 100)"
            ),
        );
    }
    ok
}

fn triggers(cx: &mut Cx, node: &Node) -> Option<Triggers> {
    let mut t = Triggers::default();
    if !matches!(node.value, Value::Map(_)) {
        // `on: push` or `on: [push, pull_request]`: those events, unfiltered.
        let items = cx.list_or_one(node, "a mapping of events, or a list of event names")?;
        let mut ok = true;
        for item in items {
            let Some(event) = cx.string(item, "an event name") else {
                ok = false;
                continue;
            };
            match event.as_str() {
                "push" => t.push = Some(PushTrigger::default()),
                "pull_request" => t.pull_request = Some(PullRequestTrigger::default()),
                "dispatch" => t.dispatch = Some(DispatchTrigger::default()),
                other => {
                    unknown_event(cx, item, other);
                    ok = false;
                }
            }
        }
        return ok.then_some(t);
    }
    let obj = cx.object(node, &ON)?;
    let mut ok = true;
    if let Some(n) = obj.get("push") {
        t.push = push(cx, n);
        ok &= t.push.is_some();
    }
    if let Some(n) = obj.get("pull_request") {
        t.pull_request = pull_request(cx, n);
        ok &= t.pull_request.is_some();
    }
    if let Some(n) = obj.get("dispatch") {
        t.dispatch = dispatch(cx, n);
        ok &= t.dispatch.is_some();
    }
    if let Some(n) = obj.value("schedule") {
        match schedules(cx, n) {
            Some(s) => t.schedule = s,
            None => ok = false,
        }
    }
    ok.then_some(t)
}

/// The inputs `on.dispatch.inputs` names, whatever is wrong with them (each as a string
/// input): read from the tree as written, reporting nothing.
fn named_inputs(on: &Node) -> Vec<Input> {
    fn key(node: &Node) -> Option<&str> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
    fn entries(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }
    fn field<'n>(node: &'n Node, name: &str) -> Option<&'n Node> {
        entries(node)
            .iter()
            .find(|(k, _)| key(k) == Some(name))
            .map(|(_, v)| v)
    }
    let Some(inputs) = field(on, "dispatch").and_then(|d| field(d, "inputs")) else {
        return Vec::new();
    };
    entries(inputs)
        .iter()
        .take(MAX_INPUTS)
        .filter_map(|(k, _)| key(k))
        .map(|name| Input {
            name: name.to_string(),
            kind: InputKind::String,
            required: false,
            default: None,
            description: None,
        })
        .collect()
}

fn unknown_event(cx: &mut Cx, node: &Node, name: &str) {
    if name == "schedule" {
        // The list form has no place for the crons.
        cx.error(
            node.pos,
            "`schedule` needs crons: use `on: { schedule: [{ cron: \"…\" }] }`",
        );
        return;
    }
    let hint = crate::diag::alias(name)
        .or_else(|| did_you_mean(name, ["push", "pull_request", "dispatch", "schedule"]));
    match hint {
        Some(h) => cx.error(
            node.pos,
            format!("unknown event `{name}`; did you mean `{h}`?"),
        ),
        None => cx.error(
            node.pos,
            format!(
                "unknown event `{name}`; expected one of: push, pull_request, dispatch, schedule"
            ),
        ),
    }
}

fn patterns(cx: &mut Cx, node: &Node, what: &str) -> Option<Patterns> {
    let items = cx.list_or_one(node, &format!("a list of {what}"))?;
    let mut texts = Vec::new();
    for item in &items {
        texts.push(cx.string(item, "a glob pattern")?);
    }
    match Patterns::new(&texts) {
        Ok(p) => Some(p),
        Err((i, why)) => {
            let pos = items.get(i).map_or(node.pos, |n| n.pos);
            let text = texts.get(i).map_or("", String::as_str);
            cx.error(pos, format!("invalid glob `{text}`: {why}"));
            None
        }
    }
}

fn opt_patterns(cx: &mut Cx, obj: &Obj, key: &str, what: &str, ok: &mut bool) -> Option<Patterns> {
    let node = obj.value(key)?;
    let p = patterns(cx, node, what);
    *ok &= p.is_some();
    p
}

fn push(cx: &mut Cx, node: &Node) -> Option<PushTrigger> {
    if matches!(node.value, Value::Null) {
        return Some(PushTrigger::default());
    }
    let obj = cx.object(node, &PUSH)?;
    let mut ok = true;
    let t = PushTrigger {
        branches: opt_patterns(cx, &obj, "branches", "branch globs", &mut ok),
        tags: opt_patterns(cx, &obj, "tags", "tag globs", &mut ok),
        paths: opt_patterns(cx, &obj, "paths", "path globs", &mut ok),
        paths_ignore: opt_patterns(cx, &obj, "paths_ignore", "path globs", &mut ok),
    };
    ok.then_some(t)
}

fn pull_request(cx: &mut Cx, node: &Node) -> Option<PullRequestTrigger> {
    if matches!(node.value, Value::Null) {
        return Some(PullRequestTrigger::default());
    }
    let obj = cx.object(node, &PULL_REQUEST)?;
    let mut ok = true;
    let t = PullRequestTrigger {
        branches: opt_patterns(cx, &obj, "branches", "branch globs", &mut ok),
        paths: opt_patterns(cx, &obj, "paths", "path globs", &mut ok),
        paths_ignore: opt_patterns(cx, &obj, "paths_ignore", "path globs", &mut ok),
    };
    ok.then_some(t)
}

fn dispatch(cx: &mut Cx, node: &Node) -> Option<DispatchTrigger> {
    if matches!(node.value, Value::Null) {
        return Some(DispatchTrigger::default());
    }
    let obj = cx.object(node, &DISPATCH)?;
    let confirm = obj
        .value("confirm")
        .map(|n| cx.bool(n))
        .unwrap_or(Some(false));
    let offline = obj
        .value("offline")
        .map(|n| cx.bool(n))
        .unwrap_or(Some(false));
    let mut inputs = Some(Vec::new());
    if let Some(n) = obj.value("inputs") {
        let entries = cx.entries(n, "a mapping of inputs").unwrap_or_default();
        if entries.len() > MAX_INPUTS {
            cx.error(
                n.pos,
                format!(
                    "{} inputs, more than the limit of {MAX_INPUTS} dispatch inputs",
                    entries.len()
                ),
            );
            return None;
        }
        for (name, key, value) in entries {
            if !is_identifier(name) {
                cx.error(key.pos, format!("`{name}` is not a valid input name: use letters, digits, `_` and `-`, starting with a letter"));
                inputs = None;
                continue;
            }
            if name == "confirm" && confirm == Some(true) {
                cx.error(
                    key.pos,
                    "the input `confirm` is implied by `confirm: true`; do not declare it",
                );
                inputs = None;
                continue;
            }
            match input(cx, name, value) {
                Some(i) => {
                    if let Some(list) = &mut inputs {
                        list.push(i)
                    }
                }
                None => inputs = None,
            }
        }
    }
    Some(DispatchTrigger {
        inputs: inputs?,
        confirm: confirm?,
        offline: offline?,
    })
}

fn input(cx: &mut Cx, name: &str, node: &Node) -> Option<Input> {
    let empty;
    let node = if matches!(node.value, Value::Null) {
        empty = Node {
            value: Value::Map(Vec::new()),
            ..node.clone()
        };
        &empty
    } else {
        node
    };
    let obj = cx.object(node, &INPUT)?;
    let kind_text = match obj.value("type") {
        Some(n) => cx.string(n, "an input type")?,
        None => "string".to_string(),
    };
    let options = match obj.value("options") {
        Some(n) => Some(string_list(cx, n, "options")?),
        None => None,
    };
    let kind = match (kind_text.as_str(), options) {
        ("string", None) => InputKind::String,
        ("boolean", None) => InputKind::Boolean,
        ("number", None) => InputKind::Number,
        ("choice", Some(opts)) if !opts.is_empty() => InputKind::Choice(opts),
        ("choice", _) => {
            cx.error(
                obj.key_pos("type").unwrap_or(node.pos),
                format!("input `{name}` of type choice needs a non-empty `options` list"),
            );
            return None;
        }
        ("string" | "boolean" | "number", Some(_)) => {
            cx.error(
                obj.key_pos("options").unwrap_or(node.pos),
                format!("`options` go with `type: choice` only (input `{name}`)"),
            );
            return None;
        }
        (other, _) => {
            let n = obj.value("type").unwrap_or(node);
            cx.error(
                n.pos,
                format!(
                    "unknown input type `{other}`; expected one of: string, choice, boolean, number"
                ),
            );
            return None;
        }
    };
    let required = obj
        .value("required")
        .map(|n| cx.bool(n))
        .unwrap_or(Some(false))?;
    let default = match obj.value("default") {
        Some(n) => {
            let d = cx.string(n, "a default value")?;
            if let Err(why) = check_input_value(&kind, &d) {
                cx.error(n.pos, format!("default of input `{name}`: {why}"));
                return None;
            }
            Some(d)
        }
        None => None,
    };
    let description = match obj.value("description") {
        Some(n) => Some(cx.string(n, "a description")?),
        None => None,
    };
    Some(Input {
        name: name.to_string(),
        kind,
        required,
        default,
        description,
    })
}

/// Whether `value` fits an input of this kind; the error says what was expected.
pub fn check_input_value(kind: &InputKind, value: &str) -> Result<(), String> {
    match kind {
        InputKind::String => Ok(()),
        InputKind::Boolean if matches!(value, "true" | "false") => Ok(()),
        InputKind::Boolean => Err(format!("expected true or false, found `{value}`")),
        InputKind::Number if !is_decimal(value) => {
            Err(format!("expected a number, found `{value}`"))
        }
        InputKind::Number if !value.parse::<f64>().is_ok_and(f64::is_finite) => Err(format!(
            "number `{value}` is out of range (it must fit a 64-bit float)"
        )),
        InputKind::Number => Ok(()),
        InputKind::Choice(options) if options.iter().any(|o| o == value) => Ok(()),
        InputKind::Choice(options) => Err(format!(
            "expected one of: {}, found `{value}`",
            options.join(", ")
        )),
    }
}

/// A number as JSON writes it (`-12`, `0.5`, `1e3`): no `inf`, `NaN`, hex or `_`, so that
/// every program a step hands it to reads the same number.
fn is_decimal(s: &str) -> bool {
    let digits = |s: &str| -> usize { s.bytes().take_while(u8::is_ascii_digit).count() };
    let s = s.strip_prefix('-').unwrap_or(s);
    let int = digits(s);
    if int == 0 {
        return false;
    }
    let mut rest = &s[int..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = digits(frac);
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    if let Some(exp) = rest.strip_prefix(['e', 'E']) {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        let n = digits(exp);
        if n == 0 {
            return false;
        }
        rest = &exp[n..];
    }
    rest.is_empty()
}

fn schedules(cx: &mut Cx, node: &Node) -> Option<Vec<Schedule>> {
    let items = cx.list(node, "a list of `- cron: \"…\"` entries")?;
    if items.len() > MAX_SCHEDULES {
        cx.error(
            node.pos,
            format!(
                "{} schedule entries, more than the limit of {MAX_SCHEDULES}",
                items.len()
            ),
        );
        return None;
    }
    let mut out = Some(Vec::new());
    for item in items {
        let Some(obj) = cx.object(item, &SCHEDULE) else {
            out = None;
            continue;
        };
        let Some(n) = obj.value("cron") else {
            out = None;
            continue;
        };
        let Some(expr) = cx.string(n, "a cron expression") else {
            out = None;
            continue;
        };
        let cron_ok = match crate::cron::check_cron(&expr) {
            Ok(_) => true,
            Err(why) => {
                cx.error(n.pos, format!("invalid cron `{expr}`: {why}"));
                false
            }
        };
        let timezone = match obj.value("timezone") {
            Some(n) => {
                cx.string(n, "a time zone name")
                    .and_then(|name| match crate::cron::check_timezone(&name) {
                        Ok(_) => Some(name),
                        Err(why) => {
                            cx.error(n.pos, why);
                            None
                        }
                    })
            }
            None => Some("UTC".to_string()),
        };
        let (true, Some(timezone)) = (cron_ok, timezone) else {
            out = None;
            continue;
        };
        if let Some(list) = &mut out {
            list.push(Schedule {
                cron: expr,
                timezone,
            });
        }
    }
    out
}

/// Whether a (valid) cron expression fires in the UTC minute that contains `epoch_secs`.
pub fn cron_due(expr: &str, epoch_secs: i64) -> bool {
    crate::cron::schedule_due(expr, "UTC", epoch_secs)
}

fn concurrency(cx: &mut Cx, node: &Node, inputs: &[Input]) -> Option<Concurrency> {
    if let Value::Scalar { .. } = node.value {
        let group = template(cx, node, inputs)?;
        return Some(Concurrency {
            group: Some(group),
            cancel_in_progress: false,
        });
    }
    let obj = cx.object(node, &CONCURRENCY)?;
    let group = match obj.value("group") {
        Some(n) => Some(template(cx, n, inputs)?),
        None => None,
    };
    let cancel_in_progress = obj
        .value("cancel_in_progress")
        .map(|n| cx.bool(n))
        .unwrap_or(Some(false))?;
    Some(Concurrency {
        group,
        cancel_in_progress,
    })
}

fn template(cx: &mut Cx, node: &Node, inputs: &[Input]) -> Option<Template> {
    let text = cx.string(node, "a string")?;
    let t = match Template::parse(&text) {
        Ok(t) => t,
        Err(e) => {
            let pos = cx.locate(node, "${{", e.occurrence);
            cx.error(pos, e.message);
            return None;
        }
    };
    let mut ok = true;
    for (i, var) in t.vars().enumerate() {
        if let crate::template::Var::Input(name) = var
            && !inputs.iter().any(|input| &input.name == name)
        {
            ok = false;
            if cx.full() {
                // Not kept: spare the hint.
                cx.error(node.pos, "");
                continue;
            }
            let pos = cx.locate(node, "${{", i);
            let declared: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            let message = match did_you_mean(name, declared.iter().copied()) {
                Some(close) => format!("no dispatch input `{name}`; did you mean `{close}`?"),
                None if declared.is_empty() => {
                    format!("no dispatch input `{name}`: `on.dispatch.inputs` declares none")
                }
                None => format!(
                    "no dispatch input `{name}`; declared: {}",
                    declared.join(", ")
                ),
            };
            cx.error(pos, message);
        }
    }
    ok.then_some(t)
}

/// Rejects `${{` in places that are never interpolated, saying what to do instead.
fn no_template(cx: &mut Cx, node: &Node, text: &str, place: &str) -> bool {
    if !text.contains("${{") {
        return true;
    }
    let pos = cx.locate(node, "${{", 0);
    cx.error(pos, format!("`${{{{ }}}}` is not evaluated in {place}: event values reach the script only as environment variables, e.g. \"$PIPEWRIGHT_SHA\", \"$PIPEWRIGHT_INPUT_<NAME>\""));
    false
}

fn string_list(cx: &mut Cx, node: &Node, what: &str) -> Option<Vec<String>> {
    let items = cx.list_or_one(node, &format!("a list of {what}"))?;
    let mut out = Some(Vec::new());
    for item in items {
        match cx.string(item, "a string") {
            Some(s) => {
                if let Some(list) = &mut out {
                    list.push(s)
                }
            }
            None => out = None,
        }
    }
    out
}

fn duration(cx: &mut Cx, node: &Node) -> Option<std::time::Duration> {
    let text = cx.string(node, "a duration such as `30m`")?;
    parse_duration(&text)
        .map_err(|why| cx.error(node.pos, why))
        .ok()
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_env_name(cx: &mut Cx, key: &Node, name: &str) -> bool {
    if !is_env_name(name) {
        cx.error(
            key.pos,
            format!("`{name}` is not a valid environment variable name"),
        );
        return false;
    }
    if is_reserved_env(name) {
        cx.error(
            key.pos,
            format!("`{name}` is set by Pipewright and cannot be overridden"),
        );
        return false;
    }
    true
}

/// Variable-name prefixes that only Pipewright sets (the event facts, the identity token,
/// Vault's address and CA for the steps).
pub const RESERVED_ENV_PREFIXES: &[&str] = &["PIPEWRIGHT_", "VAULT_"];
/// Variable names that only Pipewright sets.
pub const RESERVED_ENV_NAMES: &[&str] = &["CI", "TERRAFORM_VAULT_AUTH_JWT"];

/// Whether `name` is a variable that only Pipewright sets, so that neither `env:` nor a
/// secret (one key or a `PREFIX_*` fan-out, checked again on the final names at run time)
/// may set it.
pub fn is_reserved_env(name: &str) -> bool {
    RESERVED_ENV_NAMES.contains(&name) || RESERVED_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The reserved prefix that every name of a `PREFIX_*` fan-out would start with, if any.
fn reserved_fan_out(prefix: &str) -> Option<&'static str> {
    RESERVED_ENV_PREFIXES
        .iter()
        .copied()
        .find(|p| prefix.starts_with(p))
}

fn env(cx: &mut Cx, node: &Node) -> Option<Vec<(String, String)>> {
    let entries = cx.entries(node, "a mapping of environment variables")?;
    let mut out = Some(Vec::new());
    for (name, key, value) in entries {
        let ok = check_env_name(cx, key, name);
        let text = if matches!(value.value, Value::Null) {
            Some(String::new())
        } else {
            cx.string(value, "a string value")
        };
        let ok = ok
            && text
                .as_ref()
                .is_some_and(|t| no_template(cx, value, t, "`env`"));
        match (ok, text, &mut out) {
            (true, Some(t), Some(list)) => list.push((name.to_string(), t)),
            _ => out = None,
        }
    }
    out
}

fn volumes(cx: &mut Cx, node: &Node) -> Option<Vec<Volume>> {
    let items = cx.list(node, "a list of `HOST:CONTAINER[:ro]`")?;
    let mut out = Some(Vec::new());
    for item in items {
        let parsed =
            cx.string(item, "`HOST:CONTAINER[:ro]`")
                .and_then(|text| match parse_volume(&text) {
                    Ok(v) => Some(v),
                    Err(why) => {
                        cx.error(item.pos, format!("invalid volume `{text}`: {why}"));
                        None
                    }
                });
        match (parsed, &mut out) {
            (Some(v), Some(list)) => list.push(v),
            _ => out = None,
        }
    }
    out
}

fn parse_volume(text: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, read_only) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        [_, _, mode] => return Err(format!("unknown mode `{mode}`; expected `ro` or `rw`")),
        _ => return Err("expected `HOST:CONTAINER` or `HOST:CONTAINER:ro`".into()),
    };
    let clean = |p: &str| p.starts_with('/') && !p.split('/').any(|c| c == "..");
    if !clean(host) {
        return Err(format!("host path `{host}` must be absolute, without `..`"));
    }
    if !clean(container) {
        return Err(format!(
            "container path `{container}` must be absolute, without `..`"
        ));
    }
    if container == "/workspace" || container.starts_with("/workspace/") {
        return Err("`/workspace` is the checkout; mount elsewhere".into());
    }
    Ok(Volume {
        host: host.to_string(),
        container: container.to_string(),
        read_only,
    })
}

fn vault(cx: &mut Cx, node: &Node) -> Option<VaultSpec> {
    let obj = cx.object(node, &VAULT)?;
    let role = match obj.value("role") {
        Some(n) => Some(vault_role(cx, n)?),
        None => None,
    };
    let mount = match obj.value("mount") {
        Some(n) => Some(cx.string(n, "a mount path")?),
        None => None,
    };
    let mut secrets = Some(Vec::new());
    if let Some(n) = obj.value("secrets") {
        for (name, key, value) in cx
            .entries(n, "a mapping of `ENV: path#key`")
            .unwrap_or_default()
        {
            let parsed = cx
                .string(value, "`path#key`")
                .and_then(|text| secret(cx, key, value, name, &text));
            match (parsed, &mut secrets) {
                (Some(s), Some(list)) => list.push(s),
                _ => secrets = None,
            }
        }
    }
    let files = match obj.value("files") {
        Some(n) => crate::vault_files::secret_files(cx, n),
        None => Some(Vec::new()),
    };
    Some(VaultSpec {
        role,
        mount,
        secrets: secrets?,
        files: files?,
    })
}

/// `role: name`, or `role: { pull_request: plan, default: apply }`.
fn vault_role(cx: &mut Cx, node: &Node) -> Option<VaultRole> {
    if !matches!(node.value, Value::Map(_)) {
        return Some(VaultRole::One(check_role(cx, node)?));
    }
    let obj = cx.object(node, &VAULT_ROLE)?;
    let mut ok = true;
    let mut events = Vec::new();
    for kind in EventKind::ALL {
        if let Some(n) = obj.value(kind.as_str()) {
            match check_role(cx, n) {
                Some(role) => events.push((kind, role)),
                None => ok = false,
            }
        }
    }
    let default = match obj.value("default") {
        Some(n) => {
            let role = check_role(cx, n);
            ok &= role.is_some();
            role
        }
        None => None,
    };
    ok.then_some(VaultRole::PerEvent { events, default })
}

/// A role name: not empty, no `/` (it is a segment of Vault's login path's body, but a
/// name with `/` or spaces is a mistake).
fn check_role(cx: &mut Cx, node: &Node) -> Option<String> {
    let role = cx.string(node, "a role name")?;
    if role.is_empty() || role.chars().any(|c| c.is_whitespace() || c == '/') {
        cx.error(
            node.pos,
            format!("`{role}` is not a role name: no spaces or `/`, not empty"),
        );
        return None;
    }
    Some(role)
}

fn secret(cx: &mut Cx, key: &Node, value: &Node, name: &str, text: &str) -> Option<SecretRef> {
    let Some((path, field)) = text.rsplit_once('#') else {
        cx.error(
            value.pos,
            format!("expected `path#key` (or `path#*`), found `{text}`"),
        );
        return None;
    };
    if path.is_empty() || field.is_empty() {
        cx.error(
            value.pos,
            format!("expected `path#key` (or `path#*`), found `{text}`"),
        );
        return None;
    }
    let target = match (name.strip_suffix('*'), field) {
        (Some(""), "*") => {
            cx.error(key.pos, format!("`*` needs a prefix, e.g. `APP_*`: without one the keys of `{path}` could name any variable, Pipewright's included"));
            return None;
        }
        (Some(prefix), "*") => {
            if let Some(reserved) = reserved_fan_out(prefix) {
                cx.error(key.pos, format!("`{name}` would only give names that Pipewright sets (`{reserved}*`); choose another prefix"));
                return None;
            }
            if !is_env_name(prefix) {
                cx.error(
                    key.pos,
                    format!("`{prefix}` is not a valid prefix of environment variable names"),
                );
                return None;
            }
            SecretTarget::All {
                prefix: prefix.to_string(),
            }
        }
        (Some(_), _) => {
            cx.error(
                value.pos,
                format!("`{name}` takes every key of a secret: write `{path}#*`"),
            );
            return None;
        }
        (None, "*") => {
            cx.error(key.pos, format!("`{path}#*` gives every key of the secret: name the variables with a prefix, e.g. `{name}_*`"));
            return None;
        }
        (None, _) => {
            if !check_env_name(cx, key, name) {
                return None;
            }
            SecretTarget::Key {
                env: name.to_string(),
                key: field.to_string(),
            }
        }
    };
    Some(SecretRef {
        path: path.trim_matches('/').to_string(),
        target,
    })
}

fn steps(cx: &mut Cx, node: &Node, inputs: &[Input]) -> Option<Vec<Step>> {
    let items = cx.list(node, "a list of steps")?;
    if items.is_empty() {
        cx.error(
            node.pos,
            "`steps` is empty; a pipeline needs at least one step",
        );
        return None;
    }
    if items.len() > MAX_STEPS {
        cx.error(
            node.pos,
            format!(
                "{} steps, more than the limit of {MAX_STEPS} steps in a pipeline",
                items.len()
            ),
        );
        return None;
    }
    let mut out = Some(Vec::new());
    let mut names: Vec<(String, Pos)> = Vec::new();
    for item in items {
        let s = step(cx, item, inputs, &mut names);
        match (s, &mut out) {
            (Some(s), Some(list)) => list.push(s),
            _ => out = None,
        }
    }
    out
}

fn step(
    cx: &mut Cx,
    node: &Node,
    inputs: &[Input],
    names: &mut Vec<(String, Pos)>,
) -> Option<Step> {
    let obj = cx.object(node, &STEP)?;
    let mut ok = true;
    let name = obj.get("name").and_then(|n| {
        cx.string(n, "a step name")
            .filter(|s| check_name(cx, n, s))
            .map(|s| (s, n.pos))
    });
    if let Some((s, pos)) = &name {
        if let Some((_, first)) = names.iter().find(|(n, _)| n == s) {
            cx.error(
                *pos,
                format!("duplicate step name `{s}` (first at line {})", first.line),
            );
            ok = false;
        } else {
            names.push((s.clone(), *pos));
        }
    }
    let kind = match (obj.value("run"), obj.value("uses")) {
        (Some(_), Some(u)) => {
            cx.error(u.pos, "a step has either `run` or `uses`, not both");
            None
        }
        (None, None) => {
            cx.error(node.pos, "a step needs `run` (with `image`) or `uses`");
            None
        }
        (Some(run), None) => run_step(cx, &obj, node, run, inputs),
        (None, Some(uses)) => uses_step(cx, &obj, uses, inputs),
    };
    let env = obj
        .value("env")
        .map(|n| env(cx, n))
        .unwrap_or(Some(Vec::new()));
    let volumes = obj
        .value("volumes")
        .map(|n| volumes(cx, n))
        .unwrap_or(Some(Vec::new()));
    let when = match obj.value("when") {
        None => Some(None),
        Some(n) => when(cx, n).map(Some),
    };
    let timeout = match obj.value("timeout") {
        None => Some(None),
        Some(n) => duration(cx, n).map(Some),
    };
    let memory = match obj.value("memory") {
        None => Some(None),
        Some(n) => cx
            .string(n, "a size such as `512m`")
            .and_then(|t| parse_memory(&t).map_err(|why| cx.error(n.pos, why)).ok())
            .map(Some),
    };
    let pids = match obj.value("pids") {
        None => Some(None),
        Some(n) => cx
            .positive_int(n, "a positive number of processes", MAX_PIDS)
            .map(Some),
    };
    let continue_on_error = obj
        .value("continue_on_error")
        .map(|n| cx.bool(n))
        .unwrap_or(Some(false));
    if !ok {
        return None;
    }
    Some(Step {
        name: name?.0,
        kind: kind?,
        env: env?,
        volumes: volumes?,
        when: when?,
        timeout: timeout?,
        memory: memory?,
        pids: pids?,
        continue_on_error: continue_on_error?,
    })
}

fn run_step(cx: &mut Cx, obj: &Obj, step: &Node, run: &Node, inputs: &[Input]) -> Option<StepKind> {
    if obj.value("with").is_some() {
        cx.error(
            obj.key_pos("with").unwrap_or(step.pos),
            "`with` goes with `uses`; a `run` step takes `env`",
        );
    }
    let script = cx.string(run, "a script")?;
    let script_ok = no_template(cx, run, &script, "`run`");
    let Some(image_node) = obj.value("image") else {
        cx.error(
            obj.key_pos("run").unwrap_or(step.pos),
            "a `run` step needs `image`",
        );
        return None;
    };
    let image = template(cx, image_node, inputs)?;
    let shell = match obj.value("shell") {
        None => Some(Shell::Sh),
        Some(n) => shell(cx, n),
    }?;
    script_ok.then_some(StepKind::Run {
        image,
        script,
        shell,
    })
}

fn shell(cx: &mut Cx, node: &Node) -> Option<Shell> {
    let text = cx.string(node, "a shell name")?;
    let found = Shell::parse(&text);
    if found.is_none() {
        let hint = did_you_mean(&text, Shell::NAMES.iter().copied())
            .map(|c| format!("did you mean `{c}`?"))
            .unwrap_or_else(|| format!("expected one of: {}", Shell::NAMES.join(", ")));
        cx.error(node.pos, format!("unknown shell `{text}`; {hint}"));
    }
    found
}

fn uses_step(cx: &mut Cx, obj: &Obj, uses: &Node, inputs: &[Input]) -> Option<StepKind> {
    if let Some(pos) = obj
        .key_pos("image")
        .filter(|_| obj.value("image").is_some())
    {
        cx.error(pos, "`image` goes with `run`; an action chooses its image (`with: { image: … }` where the action offers it)");
    }
    if let Some(pos) = obj
        .key_pos("shell")
        .filter(|_| obj.value("shell").is_some())
    {
        cx.error(
            pos,
            "`shell` goes with `run`; an action runs its own commands",
        );
    }
    let action = cx.string(uses, "an action name")?;
    let Some(table) = action_inputs(&action) else {
        let hint = did_you_mean(&action, ACTION_NAMES.iter().copied())
            .map(|c| format!("did you mean `{c}`?"))
            .unwrap_or_else(|| format!("expected one of: {}", ACTION_NAMES.join(", ")));
        cx.error(uses.pos, format!("unknown action `{action}`; {hint}"));
        return None;
    };
    let empty = Node {
        value: Value::Map(Vec::new()),
        ..uses.clone()
    };
    let with_node = obj.value("with").unwrap_or(&empty);
    let with_obj = cx.object(with_node, table)?;
    let mut with = Some(Vec::new());
    for field in table.fields {
        let Some(n) = with_obj.value(field.name) else {
            continue;
        };
        let v = with_value(cx, n, &field.ty, inputs);
        match (v, &mut with) {
            (Some(v), Some(list)) => list.push((field.name.to_string(), v)),
            _ => with = None,
        }
    }
    Some(StepKind::Uses {
        action,
        with: with?,
    })
}

/// Decodes an action input of type `ty` into a [`WithValue`].
fn with_value(cx: &mut Cx, node: &Node, ty: &Ty, inputs: &[Input]) -> Option<WithValue> {
    match ty {
        Ty::Bool => {
            let text = cx.string(node, "true or false")?;
            // An input may decide it (`${{ inputs.apply }}`); a literal must be a boolean.
            if !text.contains("${{") {
                cx.bool(node)?;
            }
            template(cx, node, inputs).map(WithValue::Scalar)
        }
        Ty::Enum(words) => {
            let text = cx.string(node, "a word")?;
            if !text.contains("${{") && !words.contains(&text.as_str()) {
                cx.error(
                    node.pos,
                    format!("expected one of: {}, found `{text}`", words.join(", ")),
                );
                return None;
            }
            template(cx, node, inputs).map(WithValue::Scalar)
        }
        Ty::ListOrOne(inner) | Ty::List(inner) => {
            let items = cx.list_or_one(node, "a list")?;
            let mut out = Some(Vec::new());
            for item in items {
                match (with_value(cx, item, inner, inputs), &mut out) {
                    (Some(v), Some(list)) => list.push(v),
                    _ => out = None,
                }
            }
            out.map(WithValue::List)
        }
        Ty::MapOf(inner) => {
            let entries = cx.entries(node, "a mapping")?;
            let mut out = Some(Vec::new());
            for (k, _, v) in entries {
                match (with_value(cx, v, inner, inputs), &mut out) {
                    (Some(v), Some(list)) => list.push((k.to_string(), v)),
                    _ => out = None,
                }
            }
            out.map(WithValue::Map)
        }
        Ty::OneOf(options) => {
            let pick = options.iter().find(|t| {
                matches!(
                    (t, &node.value),
                    (Ty::MapOf(_), Value::Map(_))
                        | (
                            Ty::ListOrOne(_) | Ty::List(_),
                            Value::Seq(_) | Value::Scalar { .. }
                        )
                )
            });
            match pick {
                Some(t) => with_value(cx, node, t, inputs),
                None => {
                    cx.error(
                        node.pos,
                        format!("expected a mapping or a list, found {}", node.kind()),
                    );
                    None
                }
            }
        }
        _ => template(cx, node, inputs).map(WithValue::Scalar),
    }
}

fn when(cx: &mut Cx, node: &Node) -> Option<When> {
    let obj = cx.object(node, &WHEN)?;
    let mut ok = true;
    let event = match obj.value("event") {
        None => None,
        Some(n) => {
            let mut kinds = Vec::new();
            for item in cx
                .list_or_one(n, "a list of event kinds")
                .unwrap_or_default()
            {
                let Some(text) = cx.string(item, "an event kind") else {
                    ok = false;
                    continue;
                };
                match EventKind::parse(&text) {
                    Some(k) => kinds.push(k),
                    None => {
                        let hint = crate::diag::alias(&text)
                            .or_else(|| did_you_mean(&text, EVENTS.iter().copied()));
                        match hint {
                            Some(h) => cx.error(
                                item.pos,
                                format!("unknown event `{text}`; did you mean `{h}`?"),
                            ),
                            None => cx.error(
                                item.pos,
                                format!(
                                    "unknown event `{text}`; expected one of: {}",
                                    EVENTS.join(", ")
                                ),
                            ),
                        }
                        ok = false;
                    }
                }
            }
            Some(kinds)
        }
    };
    let branch = opt_patterns(cx, &obj, "branch", "branch globs", &mut ok);
    let status = match obj.value("status") {
        None => RunsAfter::default(),
        Some(n) => run_states(cx, n).unwrap_or_else(|| {
            ok = false;
            RunsAfter::default()
        }),
    };
    ok.then_some(When {
        event,
        branch,
        status,
    })
}

/// `when.status`: `success`, `failure` or both, each at most once.
fn run_states(cx: &mut Cx, node: &Node) -> Option<RunsAfter> {
    let items = cx.list_or_one(node, "a list of run states (`success`, `failure`)")?;
    if items.is_empty() {
        cx.error(
            node.pos,
            "`status` is empty; expected `success`, `failure` or both",
        );
        return None;
    }
    let mut out = RunsAfter {
        success: false,
        failure: false,
    };
    let mut ok = true;
    for item in items {
        let Some(text) = cx.string(item, "a run state") else {
            ok = false;
            continue;
        };
        let seen = match text.as_str() {
            "success" => std::mem::replace(&mut out.success, true),
            "failure" => std::mem::replace(&mut out.failure, true),
            _ => {
                let hint = match text.as_str() {
                    "always" => Some("[success, failure]"),
                    "failed" | "error" | "cancelled" | "canceled" => Some("failure"),
                    _ => did_you_mean(&text, STATUSES.iter().copied()),
                };
                match hint {
                    Some(h) => cx.error(
                        item.pos,
                        format!("unknown run state `{text}`; did you mean `{h}`?"),
                    ),
                    None => cx.error(
                        item.pos,
                        format!(
                            "unknown run state `{text}`; expected one of: {}",
                            STATUSES.join(", ")
                        ),
                    ),
                }
                ok = false;
                continue;
            }
        };
        if seen {
            cx.error(item.pos, format!("`{text}` is listed twice"));
            ok = false;
        }
    }
    ok.then_some(out)
}
