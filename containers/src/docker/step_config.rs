//! The conversion of a [`StepSpec`] into the engine's create request: command, environment,
//! mounts, labels and the confinement every step container gets.

use std::{collections::HashMap, path::Path};

use bollard::models::{ContainerCreateBody, HostConfig};

use crate::{LABEL_MANAGED, StepSpec};

/// Capabilities Docker grants by default that no build step needs: raw sockets (ARP and
/// ICMP spoofing on the bridge), device nodes, and writing to the host's audit log.
const CAP_DROP: [&str; 3] = ["NET_RAW", "MKNOD", "AUDIT_WRITE"];

/// The create request for a step, or why the spec cannot be run.
pub(super) fn create_body(spec: &StepSpec) -> Result<ContainerCreateBody, String> {
    let mut binds = Vec::with_capacity(spec.mounts.len());
    for mount in &spec.mounts {
        binds.push(bind(&mount.host, &mount.container, mount.read_only)?);
    }
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    // Inserted last so that no spec can unset it and hide a container from `reap`.
    labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());

    let command = (!spec.command.is_empty()).then(|| sourcing(spec));
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The step's command is the whole command line: an image's ENTRYPOINT would
        // otherwise receive it as arguments.
        entrypoint: command.as_ref().map(|_| Vec::new()),
        cmd: command,
        env: Some(env_list(&spec.env)?),
        working_dir: (!spec.working_dir.is_empty()).then(|| spec.working_dir.clone()),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            binds: Some(binds),
            memory: spec.memory_bytes,
            memory_swap: spec.memory_bytes,
            pids_limit: spec.pids_limit,
            privileged: Some(false),
            init: Some(true),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            cap_drop: Some(CAP_DROP.iter().map(|&cap| cap.to_owned()).collect()),
            network_mode: Some(spec.network.clone().unwrap_or_else(|| "bridge".to_owned())),
            auto_remove: Some(false),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    })
}

/// The step's command, after the shell reads [`StepSpec::env_file`] when there is one:
/// `/bin/sh -c '. "$0" && exec "$@"' FILE COMMAND...`. The file and every argument are
/// arguments of their own; nothing is spliced into the shell's text.
fn sourcing(spec: &StepSpec) -> Vec<String> {
    match &spec.env_file {
        None => spec.command.clone(),
        Some(file) => {
            let mut argv = vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                SOURCE_THEN_EXEC.to_owned(),
                file.clone(),
            ];
            argv.extend(spec.command.iter().cloned());
            argv
        }
    }
}

/// Reads the file named by `$0`, then replaces the shell with the command (`"$@"`).
const SOURCE_THEN_EXEC: &str = ". \"$0\" && exec \"$@\"";

/// A `host:container[:ro]` bind. Relative host paths are refused because the engine would
/// take them for named volumes, and a `:` would be read as a field separator.
fn bind(host: &Path, container: &str, read_only: bool) -> Result<String, String> {
    let Some(host_str) = host.to_str() else {
        return Err(format!(
            "mount source {} is not valid UTF-8",
            host.display()
        ));
    };
    if !host.is_absolute() || host_str.contains(':') {
        return Err(format!(
            "mount source {host_str} must be an absolute path without ':'"
        ));
    }
    if !container.starts_with('/') || container.contains(':') {
        return Err(format!(
            "mount target {container} must be an absolute path without ':'"
        ));
    }
    let mode = if read_only { ":ro" } else { "" };
    Ok(format!("{host_str}:{container}{mode}"))
}

/// `KEY=value` entries in order, each key once with its last value: with duplicates the
/// process would see whichever its libc finds first.
fn env_list(env: &[(String, String)]) -> Result<Vec<String>, String> {
    let mut list = Vec::with_capacity(env.len());
    for (i, (key, value)) in env.iter().enumerate() {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(format!("invalid environment variable name {key:?}"));
        }
        if env[i + 1..].iter().all(|(later, _)| later != key) {
            list.push(format!("{key}={value}"));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_file_is_read_before_the_command() {
        let mut spec = StepSpec {
            command: vec![
                "/bin/sh".into(),
                "-e".into(),
                "-c".into(),
                "echo \"$A\"".into(),
            ],
            ..StepSpec::default()
        };
        assert_eq!(sourcing(&spec), spec.command);
        spec.env_file = Some("/run/pipewright/secrets.env".into());
        assert_eq!(
            sourcing(&spec),
            [
                "/bin/sh",
                "-c",
                ". \"$0\" && exec \"$@\"",
                "/run/pipewright/secrets.env",
                "/bin/sh",
                "-e",
                "-c",
                "echo \"$A\""
            ]
        );
    }

    #[test]
    fn later_environment_entries_win() {
        let env = [("A", "1"), ("B", "2"), ("A", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(env_list(&env).unwrap(), ["B=2", "A=3"]);
        assert!(env_list(&[("A=B".to_owned(), String::new())]).is_err());
    }
}
