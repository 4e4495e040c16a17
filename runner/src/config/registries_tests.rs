//! Tests of `[[registries]]`, `[docker].pin_images` and `[vault].server_role`: what they
//! decode to, and every problem named by its key.

use std::fs;

use expect_test::expect;

use super::*;

fn from_text(text: &str) -> Result<Config, ConfigError> {
    load_text(Some(("config.toml", text)), Vec::new())
}

fn problems(text: &str) -> String {
    match from_text(text) {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn registries_and_kept_images() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry");
    fs::write(&file, "registry-SECRET\n").unwrap();
    let text = format!(
        r#"
[vault]
address = "https://vault.example.lab"
server_role = "pipewright_server"

[docker]
pin_images = ["gitea.arcodange.lab/arcodange-org/runner-images:ubuntu-latest-ca", "busybox:1.36"]

[[registries]]
host = "Gitea.Arcodange.Lab"
username = "ci-bot"
password_file = {file:?}

[[registries]]
host = "index.docker.io"
username = "hub-bot"
password_vault = "kvv2/ci/registry#password"
"#
    );
    let config = from_text(&text).unwrap();
    assert_eq!(
        config.vault.server_role.as_deref(),
        Some("pipewright_server")
    );
    assert_eq!(
        config.docker.pin_images,
        [
            "gitea.arcodange.lab/arcodange-org/runner-images:ubuntu-latest-ca",
            "busybox:1.36"
        ]
    );
    let [gitea, hub] = &config.registries[..] else {
        panic!("{:?}", config.registries)
    };
    assert_eq!(
        (gitea.host.as_str(), gitea.username.as_str()),
        ("gitea.arcodange.lab", "ci-bot")
    );
    match &gitea.password {
        RegistryPassword::File(secret) => assert_eq!(secret.expose(), "registry-SECRET"),
        other => panic!("{other:?}"),
    }
    assert_eq!(hub.host, "docker.io");
    match &hub.password {
        RegistryPassword::Vault { path, key } => {
            assert_eq!(
                (path.as_str(), key.as_str()),
                ("kvv2/ci/registry", "password")
            )
        }
        other => panic!("{other:?}"),
    }
    // Image references find their registry's credentials.
    let found = |image: &str| config.registry_for(image).map(|r| r.username.as_str());
    assert_eq!(
        found("gitea.arcodange.lab/arcodange-org/runner-images:ubuntu-latest-ca"),
        Some("ci-bot")
    );
    assert_eq!(found("busybox:1.36"), Some("hub-bot"));
    assert_eq!(found("docker.io/library/busybox"), Some("hub-bot"));
    assert_eq!(found("127.0.0.1:5000/app:1"), None);
    // The password never shows.
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("SECRET"), "{debug}");

    // No [[registries]], no kept images: the defaults.
    let none = from_text("").unwrap();
    assert!(none.registries.is_empty() && none.docker.pin_images.is_empty());
    assert!(none.vault.server_role.is_none());
    let config = load_text(
        None,
        vec![(
            "PIPEWRIGHT_DOCKER__PIN_IMAGES".to_owned(),
            "a/b:1, c:2".to_owned(),
        )],
    )
    .unwrap();
    assert_eq!(config.docker.pin_images, ["a/b:1", "c:2"]);
}

#[test]
fn registry_problems_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry");
    fs::write(&file, "pw\n").unwrap();
    let empty = dir.path().join("empty");
    fs::write(&empty, "\n").unwrap();
    let text = format!(
        r#"
[docker]
pin_images = ["ok:1", "bad image", "ok:1"]

[[registries]]
host = "https://gitea.lab/"
username = "ci:bot"
password_file = {file:?}
password_vault = "kvv2/ci/registry#password"

[[registries]]
username = "ci"

[[registries]]
host = "gitea.lab"
username = "ci"
password_vault = "kvv2/ci/registry"

[[registries]]
host = "127.0.0.1:5000"
username = "ci"
password_file = {empty:?}
pasword = "x"

[[registries]]
host = "GITEA.lab"
username = "ci"
password_file = {file:?}

[[registries]]
host = "gitea.LAB"
username = "other"
password_file = {file:?}
"#
    );
    let tmp = dir.path().display().to_string();
    expect![[r#"
        config.toml: [docker].pin_images: expected image references, found "bad image"
        config.toml: [[registries]][0].host: expected a registry host such as "gitea.example.lab" or "127.0.0.1:5000" (no scheme, no path), found "https://gitea.lab/"
        config.toml: [[registries]][0].username: expected a user name without `:` or control characters, found "ci:bot"
        config.toml: [[registries]][0].password_vault: `password_file` is also given; keep one of the two
        config.toml: [[registries]][1]: missing `host` (the registry as image references name it)
        config.toml: [[registries]][1]: missing `password_file` or `password_vault`
        config.toml: [[registries]][2].password_vault: a password from Vault needs [vault].address and [vault].server_role: Pipewright reads it with a login of its own
        config.toml: [[registries]][2].password_vault: expected `PATH#KEY` of a KV secret, such as "kvv2/ci/registry#password", found "kvv2/ci/registry"
        config.toml: [[registries]][3].pasword: unknown key; did you mean `password_file`?
        config.toml: [[registries]][3].password_file: "$TMP/empty" is empty
        config.toml: [[registries]][5].host: "gitea.lab" is already listed in [[registries]][4]"#]]
    .assert_eq(&problems(&text).replace(&tmp, "$TMP"));

    expect![[r#"
        PIPEWRIGHT_REGISTRIES__HOST: [[registries]] cannot be set from the environment; use the config file"#]]
    .assert_eq(
        &load_text(
            None,
            vec![("PIPEWRIGHT_REGISTRIES__HOST".to_owned(), "gitea.lab".to_owned())],
        )
        .unwrap_err()
        .to_string(),
    );
}
