//! Checks and parsers of single values: each takes the raw text (or list) of one setting
//! and gives its value or the message of its problem.

use std::{
    net::SocketAddr,
    path::{Component, Path, PathBuf},
};

use pipewright_pipelines::Patterns;

use super::{
    reader::unknown,
    values::{Algorithm, LogFormat, Scope},
};

/// `[[api.token]].repos`: globs over `owner/name`, compiled in lower case.
pub(super) fn repo_globs(globs: Vec<String>) -> Result<Patterns, String> {
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

/// The longest age `[retention]` accepts (100 years): longer is `off`.
const MAX_RETENTION_DAYS: u64 = 36_500;

/// `[retention].logs` and `runs`: an age written as the other durations (`90d`, `36h`,
/// `1d12h`, but not limited to 30 days), or `off` (also `0`) for none.
pub(super) fn retention_age(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    if text == "off" || text == "0" {
        return Ok(None);
    }
    let max = std::time::Duration::from_secs(MAX_RETENTION_DAYS * 86_400);
    match pipewright_pipelines::parse_duration_up_to(text, max) {
        Ok(age) => Ok(Some(age)),
        Err(pipewright_pipelines::DurationError::Malformed) => Err(format!(
            "expected an age such as `90d`, `12h` or `1d12h`, or `off`, found `{text}`"
        )),
        Err(pipewright_pipelines::DurationError::TooLong) => Err(format!(
            "`{text}` is longer than {MAX_RETENTION_DAYS}d; write `off` to keep forever"
        )),
    }
}

/// `[[api.token]].scopes`.
pub(super) fn api_scopes(names: Vec<String>) -> Result<Vec<Scope>, String> {
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

pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("expected an address such as 127.0.0.1:8080, found {text:?}"))
}

pub(super) fn http_url(text: &str) -> Result<String, String> {
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

pub(super) fn path(text: &str) -> Result<PathBuf, String> {
    match text.is_empty() {
        true => Err("expected a path, found an empty string".to_owned()),
        false => Ok(PathBuf::from(text)),
    }
}

pub(super) fn absolute_path(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("expected absolute paths, found {text:?}"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("expected paths without `..`, found {text:?}"));
    }
    Ok(path.to_path_buf())
}

pub(super) fn non_empty(text: &str) -> Result<String, String> {
    match text.trim().is_empty() {
        true => Err("expected a value, found an empty string".to_owned()),
        false => Ok(text.to_owned()),
    }
}

/// A default that must not exceed its ceiling (`[docker].max_…`).
pub(super) fn at_most(value: u64, ceiling: u64, key: &str) -> Result<u64, String> {
    match value <= ceiling {
        true => Ok(value),
        false => Err(format!(
            "{value} is above [docker].{key} ({ceiling}); raise {key} or lower this"
        )),
    }
}

/// A size in bytes, `k`, `m` or `g` (binary units), without Docker's memory minimum.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
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

pub(super) fn positive(n: i64) -> Result<u64, String> {
    match u64::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive integer, found {n}")),
    }
}

pub(super) fn labels(labels: Vec<String>) -> Result<Vec<String>, String> {
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

/// An agent's name: what a person reads in the UI and in "agent <name> lost".
pub(super) fn agent_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match ok {
        true => Ok(text.to_owned()),
        false => Err(format!(
            "expected a name of letters, digits, `-`, `_` and `.` (at most 64), found {text:?}"
        )),
    }
}

/// The default agent name: the kernel's host name (`pipewright` when it cannot be read).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .and_then(|name| agent_name(&name).ok())
        .unwrap_or_else(|| "pipewright".to_owned())
}

/// A Gitea Actions runner's labels: at least one, each as Gitea compares them (exact
/// strings), without act_runner's `:schema` suffix, which Gitea would take as part of it.
pub(super) fn runner_labels(list: Vec<String>) -> Result<Vec<String>, String> {
    let list = labels(list)?;
    if list.is_empty() {
        return Err("expected at least one label".to_owned());
    }
    match list.iter().find(|l| l.contains(':') || l.len() > 255) {
        Some(bad) => Err(format!(
            "expected plain labels (no `:schema`, at most 255 bytes), found {bad:?}"
        )),
        None => Ok(list),
    }
}

/// A runner's name as Gitea keeps it: 1 to 255 characters, no control characters.
pub(super) fn runner_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 255 || text.chars().any(char::is_control) {
        return Err(format!(
            "expected a name of 1 to 255 characters, found {text:?}"
        ));
    }
    Ok(text.to_owned())
}

pub(super) fn database_url(text: &str) -> Result<String, String> {
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

pub(super) fn algorithm(text: &str) -> Result<Algorithm, String> {
    Algorithm::ALL
        .into_iter()
        .find(|a| a.as_str() == text)
        .ok_or_else(|| format!("expected \"EdDSA\", \"ES256\" or \"RS256\", found {text:?}"))
}

pub(super) fn mount(text: &str) -> Result<String, String> {
    let trimmed = text.trim_matches('/');
    match trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
        true => Err(format!(
            "expected an auth mount path such as \"jwt\", found {text:?}"
        )),
        false => Ok(trimmed.to_owned()),
    }
}

pub(super) fn role_template(text: &str) -> Result<String, String> {
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

pub(super) fn network_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("expected a Docker network name, found {v:?}"))
    }
}

pub(super) fn docker_host(text: &str) -> Result<String, String> {
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

pub(super) fn repo_name(text: &str) -> Result<String, String> {
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

/// `[[registries]].host`: `host` or `host:port` as image references name it, kept
/// normalized (lower case, Docker Hub's aliases as `docker.io`).
pub(super) fn registry_host(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        && !text.starts_with(['.', '-', ':'])
        && !text.ends_with(':');
    match ok {
        true => Ok(pipewright_containers::normalize_host(text)),
        false => Err(format!(
            "expected a registry host such as \"gitea.example.lab\" or \"127.0.0.1:5000\" (no scheme, no path), found {text:?}"
        )),
    }
}

/// `[[registries]].username`: HTTP basic authentication cannot carry a `:` in it.
pub(super) fn registry_username(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("expected a user name, found an empty string".to_owned());
    }
    match text.contains(':') || text.contains(char::is_control) {
        true => Err(format!(
            "expected a user name without `:` or control characters, found {text:?}"
        )),
        false => Ok(text.to_owned()),
    }
}

/// `[[registries]].password_vault`: `PATH#KEY` of a KV secret.
pub(super) fn vault_secret_ref(text: &str) -> Result<(String, String), String> {
    let parts = text
        .split_once('#')
        .map(|(path, key)| (path.trim_matches('/'), key))
        .filter(|(path, key)| {
            !path.is_empty()
                && !key.is_empty()
                && !key.contains('#')
                && !text.contains(char::is_whitespace)
        });
    match parts {
        Some((path, key)) => Ok((path.to_owned(), key.to_owned())),
        None => Err(format!(
            "expected `PATH#KEY` of a KV secret, such as \"kvv2/ci/registry#password\", found {text:?}"
        )),
    }
}

/// `[docker].pin_images`: image references (`host/path:tag`, `name@sha256:…`), each once.
pub(super) fn image_references(images: Vec<String>) -> Result<Vec<String>, String> {
    for (i, image) in images.iter().enumerate() {
        if image.is_empty()
            || image.starts_with(['-', '/', ':', '@'])
            || image.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(format!("expected image references, found {image:?}"));
        }
        if images[..i].contains(image) {
            return Err(format!("{image:?} is listed twice"));
        }
    }
    Ok(images)
}

pub(super) fn log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!(
            "unknown log format `{other}`: expected `text` or `json`"
        )),
    }
}

/// A level name, or a filter in `RUST_LOG`'s syntax (checked, so that a typo is a problem
/// at start rather than a silent log).
pub(super) fn log_level(text: &str) -> Result<String, String> {
    crate::logging::filter(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not a level or log filter ({e}): `{text}`"))
}
