//! `vault.files`: secrets given to steps as files under `/run/secrets/`, each a checked
//! relative path and the Vault value (`path#key`) that is its content.

use crate::{decode::Cx, model::SecretFile, yaml::Node};

/// Where the files appear in every step container.
pub const SECRETS_IN_CONTAINER: &str = "/run/secrets";

/// Longest path of a file (bytes), and most components.
const MAX_PATH: usize = 255;
const MAX_COMPONENTS: usize = 16;

/// Why `path` cannot be a file under `/run/secrets/`, if it cannot: it must be relative,
/// without empty, `.` or `..` components, of letters, digits, `.`, `_` and `-`.
pub fn check_secret_file_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.starts_with('/') {
        return Err("the path must be relative to `/run/secrets/`, not start with `/`".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("the path is longer than {MAX_PATH} bytes"));
    }
    let components: Vec<&str> = path.split('/').collect();
    if components.len() > MAX_COMPONENTS {
        return Err(format!(
            "the path has more than {MAX_COMPONENTS} components"
        ));
    }
    for c in components {
        match c {
            "" => return Err("the path has an empty component (`//` or a trailing `/`)".into()),
            "." | ".." => return Err(format!("the path has a `{c}` component")),
            _ => {}
        }
        if let Some(bad) = c
            .chars()
            .find(|&ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')))
        {
            return Err(format!(
                "the path has the character {bad:?}: use letters, digits, `.`, `_`, `-` and `/`"
            ));
        }
    }
    Ok(())
}

/// Decodes the `vault.files` mapping; `None` when an entry is wrong (each reported).
pub(crate) fn secret_files(cx: &mut Cx, node: &Node) -> Option<Vec<SecretFile>> {
    let mut files = Some(Vec::new());
    for (name, key, value) in cx
        .entries(node, "a mapping of `relative/path: path#key`")
        .unwrap_or_default()
    {
        let parsed = one(cx, key, value, name);
        match (parsed, &mut files) {
            (Some(f), Some(list)) => list.push((f, key.pos)),
            _ => files = None,
        }
    }
    let files = files?;
    // A file cannot also be a directory of another one.
    let mut ok = true;
    for (f, pos) in &files {
        let below = format!("{}/", f.file);
        if let Some((other, _)) = files.iter().find(|(o, _)| o.file.starts_with(&below)) {
            cx.error(
                *pos,
                format!(
                    "`{}` is a file, so `{}` cannot be under it",
                    f.file, other.file
                ),
            );
            ok = false;
        }
    }
    ok.then(|| files.into_iter().map(|(f, _)| f).collect())
}

fn one(cx: &mut Cx, key: &Node, value: &Node, name: &str) -> Option<SecretFile> {
    if let Err(why) = check_secret_file_path(name) {
        cx.error(key.pos, format!("invalid secret file path `{name}`: {why}"));
        return None;
    }
    let text = cx.string(value, "`path#key`")?;
    match text.rsplit_once('#') {
        Some((path, field))
            if !path.trim_matches('/').is_empty() && !field.is_empty() && field != "*" =>
        {
            Some(SecretFile {
                file: name.to_string(),
                path: path.trim_matches('/').to_string(),
                key: field.to_string(),
            })
        }
        _ => {
            cx.error(
                value.pos,
                format!("expected `path#key` (one key of a Vault secret), found `{text}`"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_secret_file_path as check;
    use crate::{SecretFile, parse_file};

    fn diagnostics(files: &str) -> Result<Vec<SecretFile>, String> {
        let text = format!(
            "on: push\nvault:\n  files:\n{files}steps: [{{ name: a, image: busybox, run: x }}]\n"
        );
        match parse_file(".pipewright/p.yml", &text).result {
            Ok(p) => Ok(p.vault.unwrap().files),
            Err(d) => Err(d.iter().map(|d| format!("{d}\n")).collect()),
        }
    }

    #[test]
    fn files_of_a_pipeline() {
        assert_eq!(
            diagnostics("    ssh/id_ed25519: kvv1/gitea/tofu_module_reader#ssh_private_key\n"),
            Ok(vec![SecretFile {
                file: "ssh/id_ed25519".into(),
                path: "kvv1/gitea/tofu_module_reader".into(),
                key: "ssh_private_key".into(),
            }])
        );
        // A pull request's file playing the attacker: every bad path at its line and column.
        expect_test::expect![[r#"
            .pipewright/p.yml:4:5: invalid secret file path `../x`: the path has a `..` component
            .pipewright/p.yml:5:5: invalid secret file path `/etc/x`: the path must be relative to `/run/secrets/`, not start with `/`
            .pipewright/p.yml:6:5: invalid secret file path `a/../../x`: the path has a `..` component
            .pipewright/p.yml:7:9: expected `path#key` (one key of a Vault secret), found `kv/x#*`
            .pipewright/p.yml:8:9: expected `path#key` (one key of a Vault secret), found `kv/x`
            .pipewright/p.yml:9:5: invalid secret file path ``: the path is empty
        "#]]
        .assert_eq(
            &diagnostics(
                "    ../x: kv/x#k\n    /etc/x: kv/x#k\n    a/../../x: kv/x#k\n    ok: kv/x#*\n    no: kv/x\n    \"\": kv/x#k\n",
            )
            .unwrap_err(),
        );
        expect_test::expect![[r#"
            .pipewright/p.yml:4:5: `ssh` is a file, so `ssh/key` cannot be under it
        "#]]
        .assert_eq(&diagnostics("    ssh: kv/x#a\n    ssh/key: kv/x#b\n").unwrap_err());
    }

    #[test]
    fn paths() {
        for good in [
            "id",
            "ssh/id_ed25519",
            ".netrc",
            "a/b/c-d.e_f",
            "..x",
            "x..",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/etc/x", "not start with `/`"),
            ("../x", "`..` component"),
            ("a/../x", "`..` component"),
            ("./x", "`.` component"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a b", "' '"),
            ("a\\b", "'\\\\'"),
            ("é", "'é'"),
            ("a:b", "':'"),
            ("a\nb", "'\\n'"),
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(check(&"a/".repeat(20)).is_err());
        assert!(check(&"a".repeat(256)).is_err());
    }
}
