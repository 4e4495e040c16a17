//! Table tests of the pipeline compiler: diagnostics for broken files, trigger and path
//! selection, plans. Expectations are inline snapshots (`UPDATE_EXPECT=1` rewrites them).

use expect_test::{Expect, expect};

use crate::*;

fn diagnostics(file: &str, text: &str) -> String {
    match parse_file(file, text).result {
        Ok(_) => "ok".to_string(),
        Err(diags) => diags.iter().map(|d| format!("{d}\n")).collect(),
    }
}

fn check(text: &str, expect: Expect) {
    expect.assert_eq(&diagnostics(".pipewright/broken.yml", text));
}

fn pipeline(text: &str) -> Pipeline {
    match parse_file(".pipewright/p.yml", text).result {
        Ok(p) => p,
        Err(d) => panic!("{d:?}"),
    }
}

const FACTORY: &[(&str, &str)] = &[
    (
        ".pipewright/iac.yml",
        include_str!("../../examples/factory/.pipewright/iac.yml"),
    ),
    (
        ".pipewright/postgres.yml",
        include_str!("../../examples/factory/.pipewright/postgres.yml"),
    ),
    (
        ".pipewright/image.yml",
        include_str!("../../examples/factory/.pipewright/image.yml"),
    ),
    (
        ".pipewright/drift.yml",
        include_str!("../../examples/factory/.pipewright/drift.yml"),
    ),
    (
        ".pipewright/recover-pvc.yml",
        include_str!("../../examples/factory/.pipewright/recover-pvc.yml"),
    ),
    (
        ".pipewright/erp-backup.yml",
        include_str!("../../examples/factory/.pipewright/erp-backup.yml"),
    ),
    (
        ".pipewright/erp-restore.yml",
        include_str!("../../examples/factory/.pipewright/erp-restore.yml"),
    ),
];

fn factory() -> Vec<Pipeline> {
    let files: Vec<(String, String)> = FACTORY
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    parse_files(&files)
        .into_iter()
        .map(|p| p.result.unwrap_or_else(|d| panic!("{}: {d:?}", p.file)))
        .collect()
}

#[test]
fn factory_examples_are_valid() {
    let names: Vec<String> = factory().iter().map(|p| p.name.clone()).collect();
    assert_eq!(
        names,
        [
            "iac",
            "postgres",
            "image",
            "drift",
            "recover-pvc",
            "erp-backup",
            "erp-restore"
        ]
    );
    // iac: the plan role for pull requests, the apply role otherwise; the module key as a
    // file.
    let iac = &factory()[0];
    let vault = iac.vault.as_ref().unwrap();
    assert_eq!(
        vault.role_for(EventKind::PullRequest),
        Some("gitea_cicd_plan")
    );
    assert_eq!(vault.role_for(EventKind::Push), Some("gitea_cicd"));
    assert_eq!(vault.role_for(EventKind::Dispatch), Some("gitea_cicd"));
    assert_eq!(vault.files.len(), 1);
    assert_eq!(vault.files[0].file, "ssh/id_ed25519");
    assert_eq!(vault.files[0].path, "kvv1/gitea/tofu_module_reader");
    assert_eq!(vault.files[0].key, "ssh_private_key");
    // erp-backup: 04:00 in Paris, winter (03:00 UTC) and summer (02:00 UTC), never at
    // 04:00 UTC.
    let backup = &factory()[5];
    let cron = &backup.on.schedule[0];
    assert_eq!(cron.timezone, "Europe/Paris");
    let at = |utc: &str| {
        let t = chrono::DateTime::parse_from_rfc3339(utc)
            .unwrap()
            .timestamp();
        schedule_due(&cron.cron, &cron.timezone, t)
    };
    assert!(at("2026-01-15T03:00:00Z"));
    assert!(at("2026-07-15T02:00:00Z"));
    assert!(!at("2026-01-15T04:00:00Z"));
    assert!(!at("2026-07-15T04:00:00Z"));
    // erp-restore: dispatch only, confirmed by name; erp is scaled back up whatever the
    // restore did.
    let restore = &factory()[6];
    assert!(restore.on.dispatch.as_ref().unwrap().confirm);
    assert!(restore.on.push.is_none() && restore.on.pull_request.is_none());
    assert!(restore.on.schedule.is_empty());
    let steps: Vec<(&str, RunsAfter)> = restore
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.runs_after()))
        .collect();
    let (only_success, always) = (
        RunsAfter {
            success: true,
            failure: false,
        },
        RunsAfter {
            success: true,
            failure: true,
        },
    );
    assert_eq!(
        steps,
        [
            ("scale-down", only_success),
            ("restore", only_success),
            ("scale-back-up", always)
        ]
    );
    assert!(restore.vault.as_ref().unwrap().files[0].file == "kube/config");
    let recover = &factory()[4];
    let dispatch = recover.on.dispatch.as_ref().unwrap();
    assert!(dispatch.confirm);
    assert_eq!(recover.runs_on, ["pi1"]);
    assert_eq!(
        recover.volumes,
        [Volume {
            host: "/mnt/backups/k3s_pvc".into(),
            container: "/backups".into(),
            read_only: true
        }]
    );
    let postgres = &factory()[1];
    let vault = postgres.vault.as_ref().unwrap();
    assert_eq!(
        vault.secrets[1].target,
        SecretTarget::All {
            prefix: "TF_VAR_postgres_".into()
        }
    );
    assert_eq!(
        SecretTarget::env_for("TF_VAR_postgres_", "username"),
        "TF_VAR_postgres_username"
    );
    assert_eq!(
        SecretTarget::env_for("OVH_", "application_key"),
        "OVH_APPLICATION_KEY"
    );
}

#[test]
fn broken_files() {
    check(
        "",
        expect![[r#"
        .pipewright/broken.yml:1:1: empty pipeline file; expected a mapping with `steps`
    "#]],
    );
    check(
        "on: push\nsteps:\n  - name: a\n    image: busybox\n     run: true\n",
        expect![[r#"
        .pipewright/broken.yml:5:9: invalid YAML: mapping values are not allowed in this context
    "#]],
    );
    check(
        r#"
on:
  push:
    branchs: [main]
  workflow_dispatch: {}
stpes: []
"#,
        expect![[r#"
            .pipewright/broken.yml:2:1: pipeline needs the key `steps`
            .pipewright/broken.yml:4:5: unknown key `branchs` in `on.push`; did you mean `branches`?
            .pipewright/broken.yml:5:3: unknown key `workflow_dispatch` in triggers (`on`); did you mean `dispatch`?
            .pipewright/broken.yml:6:1: unknown key `stpes` in pipeline; did you mean `steps`?
        "#]],
    );
    // Wrong types, everywhere at once.
    check(
        r#"
on:
  push:
    branches: { main: true }
timeout: soon
concurrency: { group: g, cancel_in_progress: maybe }
runs_on: [[arm64]]
steps:
  - name: a
    image: busybox
    run: true
    memory: lots
    pids: -1
    continue_on_error: 1
"#,
        expect![[r#"
            .pipewright/broken.yml:4:15: expected a list of branch globs, found a mapping
            .pipewright/broken.yml:5:10: expected a duration such as `90s`, `30m` or `1h30m`, found `soon`
            .pipewright/broken.yml:6:46: expected true or false, found `maybe`
            .pipewright/broken.yml:7:11: expected a string, found a list
            .pipewright/broken.yml:12:13: expected a size such as `512m` or `2g`, found `lots`
            .pipewright/broken.yml:13:11: expected a positive number of processes, found `-1`
            .pipewright/broken.yml:14:24: expected true or false, found `1`
        "#]],
    );
    // Bad globs and bad cron.
    check(
        r#"
on:
  push:
    branches: ["release/[v1"]
    paths: ["ok/**", "bad/{a,b"]
  schedule:
    - cron: "0 4 * *"
    - cron: "61 4 * * *"
    - cron: "0 4 * * mon"
steps:
  - { name: a, image: busybox, run: "true" }
"#,
        expect![[r#"
            .pipewright/broken.yml:4:16: invalid glob `release/[v1`: unclosed character class; missing ']'
            .pipewright/broken.yml:5:22: invalid glob `bad/{a,b`: unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)
            .pipewright/broken.yml:7:13: invalid cron `0 4 * *`: expected 5 fields (minute hour day month weekday) or a macro such as `@daily`, found 4
            .pipewright/broken.yml:8:13: invalid cron `61 4 * * *`: Component error: Number out of bounds.
        "#]],
    );
    // Duplicate step names and duplicate keys.
    check(
        r#"
on: push
steps:
  - name: build
    image: busybox
    run: make
  - name: build
    image: busybox
    image: alpine
    run: make test
"#,
        expect![[r#"
            .pipewright/broken.yml:7:11: duplicate step name `build` (first at line 4)
            .pipewright/broken.yml:9:5: duplicate key `image` (first at line 8)
        "#]],
    );
    // `${{ }}` in run: and env:, and unknown expressions.
    check(
        r#"
on:
  push: {}
  dispatch:
    inputs:
      mode: { type: choice, options: [plan, apply] }
env:
  WHO: "${{ sha }}"
steps:
  - name: deploy
    image: "busybox:${{ inputs.tag }}"
    run: |
      echo start
      echo "deploying ${{ inputs.mode }}"
  - name: tofu
    uses: tofu
    with: { path: "${{ github.workspace }}", command: "${{ inputs.mode }}" }
"#,
        expect![[r#"
            .pipewright/broken.yml:8:9: `${{ }}` is not evaluated in `env`: event values reach the script only as environment variables, e.g. "$PIPEWRIGHT_SHA", "$PIPEWRIGHT_INPUT_<NAME>"
            .pipewright/broken.yml:11:21: no dispatch input `tag`; declared: mode
            .pipewright/broken.yml:14:23: `${{ }}` is not evaluated in `run`: event values reach the script only as environment variables, e.g. "$PIPEWRIGHT_SHA", "$PIPEWRIGHT_INPUT_<NAME>"
            .pipewright/broken.yml:17:20: unknown expression `github.workspace` in `${{ }}`; expected one of: sha, short_sha, ref_name, repo, repo_owner, repo_name, actor, inputs.NAME, lower(…)
        "#]],
    );
    // Steps: run without image, run and uses, unknown action, bad `with`.
    check(
        r#"
on: [push, workflow_dispatch]
steps:
  - name: a
    run: "true"
  - name: b
    image: busybox
    run: "true"
    uses: tofu
  - name: c
    uses: terraform
  - name: d
    uses: tofu
    with: { path: iac, allow_destroy: yes, comand: plan }
  - name: e
    uses: image
    with: { context: . }
  - name: f
"#,
        expect![[r#"
            .pipewright/broken.yml:2:12: unknown event `workflow_dispatch`; did you mean `dispatch`?
            .pipewright/broken.yml:5:5: a `run` step needs `image`
            .pipewright/broken.yml:9:11: a step has either `run` or `uses`, not both
            .pipewright/broken.yml:11:11: unknown action `terraform`; expected one of: tofu, image, postgres
            .pipewright/broken.yml:14:39: expected true or false, found `yes`
            .pipewright/broken.yml:14:44: unknown key `comand` in `with` of `uses: tofu`; did you mean `command`?
            .pipewright/broken.yml:17:11: `with` of `uses: image` needs the key `tags`
            .pipewright/broken.yml:18:5: a step needs `run` (with `image`) or `uses`
        "#]],
    );
    // Vault secrets, env names, volumes, dispatch inputs.
    check(
        r#"
on:
  dispatch:
    confirm: true
    inputs:
      confirm: {}
      when: { type: date }
      size: { type: number, default: big }
      mode: { type: choice }
vault:
  secrets:
    TOKEN: kv/gitea
    ALL: kv/ovh#*
    OVH_*: kv/ovh#key
    PIPEWRIGHT_ID_TOKEN: kv/x#y
env:
  1BAD: x
volumes: ["relative:/data", "/mnt/b:/workspace/b", "/mnt/c:/c:rx"]
steps:
  - { name: a, image: busybox, run: "true" }
"#,
        expect![[r#"
            .pipewright/broken.yml:6:7: the input `confirm` is implied by `confirm: true`; do not declare it
            .pipewright/broken.yml:7:21: unknown input type `date`; expected one of: string, choice, boolean, number
            .pipewright/broken.yml:8:38: default of input `size`: expected a number, found `big`
            .pipewright/broken.yml:9:15: input `mode` of type choice needs a non-empty `options` list
            .pipewright/broken.yml:12:12: expected `path#key` (or `path#*`), found `kv/gitea`
            .pipewright/broken.yml:13:5: `kv/ovh#*` gives every key of the secret: name the variables with a prefix, e.g. `ALL_*`
            .pipewright/broken.yml:14:12: `OVH_*` takes every key of a secret: write `kv/ovh#*`
            .pipewright/broken.yml:15:5: `PIPEWRIGHT_ID_TOKEN` is set by Pipewright and cannot be overridden
            .pipewright/broken.yml:17:3: `1BAD` is not a valid environment variable name
            .pipewright/broken.yml:18:11: invalid volume `relative:/data`: host path `relative` must be absolute, without `..`
            .pipewright/broken.yml:18:29: invalid volume `/mnt/b:/workspace/b`: `/workspace` is the checkout; mount elsewhere
            .pipewright/broken.yml:18:52: invalid volume `/mnt/c:/c:rx`: unknown mode `rx`; expected `ro` or `rw`
        "#]],
    );
    check(
        "on: push\nsteps: [{name: a, image: busybox, run: x}]\nfoo: &a [1]\nbar: *a\n---\nx: 1\n",
        expect![[r#"
        .pipewright/broken.yml:5:1: invalid YAML: a pipeline file holds one YAML document; found a second one
    "#]],
    );
}

#[test]
fn duplicate_pipeline_names_across_files() {
    let step = "steps: [{ name: a, image: busybox, run: x }]\n";
    let files = vec![
        (
            ".pipewright/a.yml".to_string(),
            format!("on: push\nname: deploy\n{step}"),
        ),
        (
            ".pipewright/deploy.yaml".to_string(),
            format!("on: push\n{step}"),
        ),
    ];
    let parsed = parse_files(&files);
    assert!(parsed[0].result.is_ok());
    let errors = parsed[1].result.as_ref().unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        ".pipewright/deploy.yaml:1:1: pipeline name `deploy` is already used by .pipewright/a.yml"
    );
}

fn push(branch: &str, files: &[&str]) -> Trigger {
    Trigger {
        kind: EventKind::Push,
        git_ref: GitRef::Branch(branch.into()),
        changes: Changes::Files(files.iter().map(|f| f.to_string()).collect()),
    }
}

fn selected(pipelines: &[Pipeline], event: &Trigger) -> Vec<String> {
    pipelines
        .iter()
        .filter(|p| selects(p, event))
        .map(|p| p.name.clone())
        .collect()
}

#[test]
fn factory_selection() {
    let all = factory();
    let cases: &[(Trigger, &[&str])] = &[
        // A push to main touching only postgres/ runs postgres, not iac.
        (push("main", &["postgres/iac/main.tf"]), &["postgres"]),
        (push("main", &["iac/main.tf"]), &["iac"]),
        (push("main", &["iac/modules/dns/records.tfvars"]), &["iac"]),
        (push("main", &["iac/README.md"]), &[]),
        (push("main", &["README.md"]), &[]),
        (
            push("main", &["app/index.txt", "postgres/iac/main.tf"]),
            &["postgres", "image"],
        ),
        (push("main", &["Dockerfile"]), &["image"]),
        // Another branch runs nothing: every push trigger is limited to main.
        (push("feature", &["iac/main.tf", "app/index.txt"]), &[]),
        // Unknown changes (a local run without --changed): every path filter matches.
        (
            Trigger {
                kind: EventKind::Push,
                git_ref: GitRef::Branch("main".into()),
                changes: Changes::All,
            },
            &["iac", "postgres", "image"],
        ),
        // A tag runs nothing here: no pipeline lists `tags`.
        (
            Trigger {
                kind: EventKind::Push,
                git_ref: GitRef::Tag("v1".into()),
                changes: Changes::All,
            },
            &[],
        ),
        // Pull requests: base branch filter. image.yml has no branches: any base.
        (
            Trigger {
                kind: EventKind::PullRequest,
                git_ref: GitRef::Branch("main".into()),
                changes: Changes::Files(vec!["iac/main.tf".into(), "app/x".into()]),
            },
            &["iac", "image"],
        ),
        (
            Trigger {
                kind: EventKind::PullRequest,
                git_ref: GitRef::Branch("develop".into()),
                changes: Changes::Files(vec!["iac/main.tf".into(), "app/x".into()]),
            },
            &["image"],
        ),
        (
            Trigger {
                kind: EventKind::Dispatch,
                git_ref: GitRef::Branch("main".into()),
                changes: Changes::All,
            },
            &[
                "iac",
                "postgres",
                "drift",
                "recover-pvc",
                "erp-backup",
                "erp-restore",
            ],
        ),
        (
            Trigger {
                kind: EventKind::Schedule,
                git_ref: GitRef::Branch("main".into()),
                changes: Changes::All,
            },
            &["drift", "erp-backup"],
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(selected(&all, event), *expected, "{event:?}");
    }
}

#[test]
fn path_filters_follow_github_actions() {
    let p = |paths: Option<&[&str]>, ignore: Option<&[&str]>| {
        (
            paths.map(|p| Patterns::new(p).unwrap()),
            ignore.map(|p| Patterns::new(p).unwrap()),
        )
    };
    let files = |f: &[&str]| Changes::Files(f.iter().map(|s| s.to_string()).collect());
    type Case<'a> = (
        Option<&'a [&'a str]>,
        Option<&'a [&'a str]>,
        &'a [&'a str],
        bool,
    );
    let cases: &[Case] = &[
        (None, None, &["a"], true),
        // No file changed at all: runs without filters, not with them.
        (None, None, &[], true),
        (Some(&["src/**"]), None, &[], false),
        (None, Some(&["docs/**"]), &[], false),
        (Some(&["src/**"]), None, &["docs/a.md"], false),
        (Some(&["src/**"]), None, &["docs/a.md", "src/x/y.rs"], true),
        // `*` does not cross `/`.
        (Some(&["*.rs"]), None, &["src/lib.rs"], false),
        (Some(&["**.rs"]), None, &["src/lib.rs"], true),
        // paths_ignore alone: runs unless every changed file is ignored.
        (None, Some(&["**/*.md"]), &["README.md", "docs/a.md"], false),
        (None, Some(&["**/*.md"]), &["README.md", "src/lib.rs"], true),
        // Both: a file must match paths and not be ignored.
        (
            Some(&["src/**"]),
            Some(&["src/**/*.md"]),
            &["src/notes.md"],
            false,
        ),
        (
            Some(&["src/**"]),
            Some(&["src/**/*.md"]),
            &["src/notes.md", "src/lib.rs"],
            true,
        ),
        (
            Some(&["src/**"]),
            Some(&["src/**/*.md"]),
            &["src/notes.md", "README"],
            false,
        ),
        // `!` in paths excludes again, last match wins.
        (
            Some(&["docs/**", "!docs/internal/**"]),
            None,
            &["docs/internal/a.md"],
            false,
        ),
        (
            Some(&["docs/**", "!docs/internal/**", "docs/internal/keep.md"]),
            None,
            &["docs/internal/keep.md"],
            true,
        ),
    ];
    for (paths, ignore, changed, expected) in cases {
        let (paths_p, ignore_p) = p(*paths, *ignore);
        assert_eq!(
            paths_match(paths_p.as_ref(), ignore_p.as_ref(), &files(changed)),
            *expected,
            "{paths:?} {ignore:?} {changed:?}"
        );
    }
}

#[test]
fn branch_and_tag_triggers() {
    let step = "steps: [{ name: a, image: busybox, run: x }]";
    let any = pipeline(&format!("on: push\n{step}"));
    let tags_only = pipeline(&format!("on:\n  push:\n    tags: [\"v*\"]\n{step}"));
    let both = pipeline(&format!(
        "on:\n  push:\n    branches: [main, \"release/**\", \"!release/old\"]\n    tags: [\"v*\"]\n    paths: [src/**]\n{step}"
    ));
    let branch = |b: &str| Trigger {
        kind: EventKind::Push,
        git_ref: GitRef::Branch(b.into()),
        changes: Changes::Files(vec!["src/a".into()]),
    };
    let tag = |t: &str| Trigger {
        kind: EventKind::Push,
        git_ref: GitRef::Tag(t.into()),
        changes: Changes::Files(vec!["docs/a".into()]),
    };
    // A new branch: the runner compares it with the default branch and passes those files.
    assert!(selects(&any, &branch("feature/new")));
    assert!(
        !selects(&any, &tag("v1")),
        "no `tags`: tag pushes do not run"
    );
    assert!(selects(&tags_only, &tag("v1.2")));
    assert!(!selects(&tags_only, &tag("latest")));
    assert!(
        !selects(&tags_only, &branch("main")),
        "only `tags`: branch pushes do not run"
    );
    assert!(selects(&both, &branch("release/2.0")));
    assert!(!selects(&both, &branch("release/old")));
    assert!(!selects(&both, &branch("dev")));
    assert!(
        selects(&both, &tag("v2")),
        "paths are not evaluated for tags"
    );
}

fn context(event: EventKind, git_ref: GitRef, inputs: Vec<(String, String)>) -> RunContext {
    RunContext {
        repo: "org/factory".into(),
        sha: "0123456789abcdef".into(),
        git_ref,
        event,
        pr: None,
        run_id: "42".into(),
        inputs,
        actor: "gab".into(),
    }
}

#[test]
fn plans_render_templates_and_env() {
    let p = pipeline(
        r#"
on:
  push: {}
  pull_request: {}
  dispatch:
    inputs:
      mode: { type: choice, options: [plan, apply], default: plan }
      target-env: { required: true }
concurrency: "deploy-${{ ref_name }}"
env: { A: "1" }
steps:
  - name: lint
    image: busybox
    run: echo lint
    when: { event: pull_request }
  - name: build
    image: "reg/tool:${{ short_sha }}"
    run: echo "$PIPEWRIGHT_INPUT_MODE"
    env: { B: "2" }
  - name: tofu
    uses: tofu
    with: { path: iac, command: "${{ inputs.mode }}", var_files: ["${{ repo }}.tfvars"] }
"#,
    );
    let inputs = resolve_inputs(
        &p,
        &[
            ("target-env".into(), "prod".into()),
            ("mode".into(), "apply".into()),
        ],
    )
    .unwrap();
    let cx = context(EventKind::Dispatch, GitRef::Branch("main".into()), inputs);
    let plan = plan(&p, &cx);
    assert_eq!(plan.concurrency_group, "deploy-main");
    assert!(!plan.steps[0].applies, "lint runs only on pull requests");
    assert_eq!(
        plan.steps[1].action,
        PlannedAction::Run {
            image: "reg/tool:01234567".into(),
            script: "echo \"$PIPEWRIGHT_INPUT_MODE\"".into(),
            shell: Shell::Sh,
        }
    );
    let env = &plan.steps[1].env;
    for (k, v) in [
        ("CI", "true"),
        ("PIPEWRIGHT_EVENT", "dispatch"),
        ("PIPEWRIGHT_REF", "refs/heads/main"),
        ("PIPEWRIGHT_INPUT_MODE", "apply"),
        ("PIPEWRIGHT_INPUT_TARGET_ENV", "prod"),
        ("A", "1"),
        ("B", "2"),
    ] {
        assert!(
            env.contains(&(k.to_string(), v.to_string())),
            "{k}={v} in {env:?}"
        );
    }
    assert_eq!(
        plan.steps[2].action,
        PlannedAction::Uses {
            action: "tofu".into(),
            with: vec![
                ("path".into(), Resolved::Str("iac".into())),
                (
                    "var_files".into(),
                    Resolved::List(vec![Resolved::Str("org/factory.tfvars".into())])
                ),
                ("command".into(), Resolved::Str("apply".into())),
            ]
        }
    );
    // Outside dispatches inputs take their defaults; the default group names the ref.
    let cx = context(
        EventKind::PullRequest,
        GitRef::Branch("main".into()),
        default_inputs(&p),
    );
    assert!(plan_of(&p, &cx).steps[0].applies);
}

fn plan_of(p: &Pipeline, cx: &RunContext) -> Plan {
    plan(p, cx)
}

#[test]
fn dispatch_inputs_are_checked() {
    let recover = factory()
        .into_iter()
        .find(|p| p.name == "recover-pvc")
        .unwrap();
    let errors = resolve_inputs(
        &recover,
        &[
            ("date".into(), "20260413".into()),
            ("dry".into(), "1".into()),
        ],
    )
    .unwrap_err();
    expect![[r#"
        [
            "unknown input `dry`",
            "missing input `confirm`: this pipeline runs only with confirm=recover-pvc",
        ]
    "#]]
    .assert_debug_eq(&errors);
    let ok = resolve_inputs(&recover, &[("confirm".into(), "recover-pvc".into())]).unwrap();
    assert_eq!(
        ok,
        [
            ("date".to_string(), String::new()),
            ("confirm".to_string(), "recover-pvc".to_string())
        ]
    );
    let iac = factory().into_iter().find(|p| p.name == "iac").unwrap();
    let errors = resolve_inputs(&iac, &[("mode".into(), "destroy".into())]).unwrap_err();
    assert_eq!(
        errors,
        ["input `mode`: expected one of: plan, apply, found `destroy`"]
    );
    let image = factory().into_iter().find(|p| p.name == "image").unwrap();
    assert!(resolve_inputs(&image, &[]).unwrap_err()[0].contains("has no `on.dispatch`"));
}

#[test]
fn default_concurrency_group_names_repo_pipeline_and_ref() {
    let p = pipeline("on: push\nsteps: [{ name: a, image: busybox, run: x }]");
    let cx = context(EventKind::Push, GitRef::Branch("main".into()), vec![]);
    assert_eq!(
        plan(&p, &cx).concurrency_group,
        "org/factory/p/refs/heads/main"
    );
    // Each pull request has its own group, so one PR's plan never cancels another's.
    let pr = RunContext {
        pr: Some(7),
        ..context(
            EventKind::PullRequest,
            GitRef::Branch("main".into()),
            vec![],
        )
    };
    let planned = plan(&p, &pr);
    assert_eq!(planned.concurrency_group, "org/factory/p/refs/pull/7/head");
    assert!(
        planned.steps[0]
            .env
            .contains(&("PIPEWRIGHT_REF".to_string(), "refs/pull/7/head".to_string()))
    );
    assert!(
        planned.steps[0]
            .env
            .contains(&("PIPEWRIGHT_BRANCH".to_string(), "main".to_string()))
    );
}

#[test]
fn json_schema_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/pipeline.schema.json"
    );
    let generated = json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schema/pipeline.schema.json is stale: regenerate it with `UPDATE_SCHEMA=1 cargo test -p pipewright-pipelines json_schema`"
    );
}

#[test]
fn cron_schedules_fire_in_their_minute() {
    // 2026-11-22T04:00:30Z
    let at_four = 1_795_320_030;
    assert!(cron_due("0 4 * * *", at_four));
    assert!(!cron_due("0 4 * * *", at_four + 60));
    assert!(cron_due("*/15 * * * *", at_four));
    assert!(
        cron_due("0 4 * * sun", at_four),
        "22 November 2026 is a Sunday"
    );
    assert!(!cron_due("0 4 * * mon", at_four));
}

/// A valid pipeline with `extra` added at the top level.
fn with_top(extra: &str) -> String {
    format!("on: push\nsteps: [{{ name: a, image: busybox, run: x }}]\n{extra}")
}

/// A valid pipeline whose one step has `extra` (YAML flow keys) added.
fn with_step(extra: &str) -> String {
    format!("on: push\nsteps:\n  - {{ name: a, image: busybox, run: x, {extra} }}\n")
}

#[test]
fn limits_on_size_nesting_and_values() {
    // 50 000 levels, flow and block: refused at the 65th, in the parse's first pass.
    check(
        &"[".repeat(50_000),
        expect![[r#"
            .pipewright/broken.yml:1:256: invalid YAML: recursion limit exceeded
        "#]],
    );
    check(
        &"{a: ".repeat(50_000),
        expect![[r#"
            .pipewright/broken.yml:1:1021: invalid YAML: recursion limit exceeded
        "#]],
    );
    check(
        &format!("{}x\n", "- ".repeat(50_000)),
        expect![[r#"
            .pipewright/broken.yml:1:129: nesting deeper than 64 levels; a pipeline file nests lists and mappings at most 64 deep
        "#]],
    );
    let block: String = (0..100)
        .map(|i| format!("{}a:\n", "  ".repeat(i)))
        .collect();
    check(
        &block,
        expect![[r#"
            .pipewright/broken.yml:65:129: nesting deeper than 64 levels; a pipeline file nests lists and mappings at most 64 deep
        "#]],
    );
    // 64 levels are fine (here as an unknown key's value).
    check(
        &with_top(&format!("deep: {}{}\n", "[".repeat(63), "]".repeat(63))),
        expect![[r#"
            .pipewright/broken.yml:3:1: unknown key `deep` in pipeline; expected one of: name, on, concurrency, runs_on, timeout, vault, env, volumes, steps
        "#]],
    );
    // An alias cannot nest deeper than its anchor could.
    check(
        &with_top(&format!(
            "x-deep: &d {}{}\nx-use: [[[*d]]]\n",
            "[".repeat(62),
            "]".repeat(62)
        )),
        expect![[r#"
            .pipewright/broken.yml:4:11: nesting deeper than 64 levels once the alias is expanded; a pipeline file nests lists and mappings at most 64 deep
        "#]],
    );
    // 10 MB: refused from its length, before parsing.
    let big = with_top(&format!("x: \"{}\"\n", "y".repeat(10 << 20)));
    check(
        &big,
        expect![[r#"
            .pipewright/broken.yml:1:1: the file is 10485820 bytes, larger than the limit of 1024 KiB for a pipeline file
        "#]],
    );
    // Billion laughs: ten levels of ten aliases each.
    let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    check(
        &laughs,
        expect![[r#"
            .pipewright/broken.yml:5:40: more than 100000 values in the file (every copy made by an anchor or alias counts)
        "#]],
    );
    // An alias of a long scalar, many times.
    let long = format!(
        "s: &s \"{}\"\nt: [{}]\n",
        "z".repeat(100_000),
        vec!["*s"; 100].join(", ")
    );
    check(
        &long,
        expect![[r#"
            .pipewright/broken.yml:2:161: more than 4 MiB of text in the file's values (every copy made by an anchor or alias counts)
        "#]],
    );
    // Values without any alias count too.
    check(
        &format!("x: [{}]\n", vec!["1"; 100_001].join(",")),
        expect![[r#"
            .pipewright/broken.yml:1:199999: more than 100000 values in the file (every copy made by an anchor or alias counts)
        "#]],
    );
    check(
        "x: *nothing\n",
        expect![[r#"
            .pipewright/broken.yml:1:4: invalid YAML: while parsing node, found unknown anchor
        "#]],
    );
}

#[test]
fn problems_and_messages_are_bounded() {
    let unknown: Vec<String> = (0..150).map(|i| format!("k{i}: 1")).collect();
    let text = with_step(&unknown.join(", "));
    let diags = diagnostics(".pipewright/broken.yml", &text);
    let lines: Vec<&str> = diags.lines().collect();
    assert_eq!(lines.len(), 101, "{diags}");
    expect![".pipewright/broken.yml:3:822: 50 more problems not shown (at most 100 are reported)"]
        .assert_eq(lines[100]);
    // A long value is quoted cut, not whole.
    let text = with_top(&format!("timeout: \"{}\"\n", "é".repeat(5000)));
    let diags = diagnostics(".pipewright/broken.yml", &text);
    assert!(diags.len() < 1200 && diags.ends_with("…\n"), "{diags}");
    // Too many steps.
    let steps: String = (0..300)
        .map(|i| format!("  - {{ name: s{i}, image: busybox, run: x }}\n"))
        .collect();
    check(
        &format!("on: push\nsteps:\n{steps}"),
        expect![[r#"
            .pipewright/broken.yml:3:3: 300 steps, more than the limit of 256 steps in a pipeline
        "#]],
    );
}

#[test]
fn counts_that_multiply_are_bounded() {
    // Dispatch inputs: each one is looked up by every template and becomes a variable.
    let inputs: String = (0..101).map(|i| format!("      i{i}: {{}}\n")).collect();
    check(
        &format!(
            "on:\n  dispatch:\n    inputs:\n{inputs}steps: [{{ name: a, image: busybox, run: x }}]\n"
        ),
        expect![[r#"
            .pipewright/broken.yml:4:7: 101 inputs, more than the limit of 100 dispatch inputs
        "#]],
    );
    // The pipeline's `env` is copied into each step of a plan.
    let env: String = (0..1000).map(|i| format!("  E{i}: v\n")).collect();
    let steps: String = (0..256)
        .map(|i| format!("  - {{ name: s{i}, image: busybox, run: x }}\n"))
        .collect();
    check(
        &format!("on: push\nenv:\n{env}steps:\n{steps}"),
        expect![[r#"
            .pipewright/broken.yml:1003:1: the pipeline's `env`, `volumes` and input defaults (67 KiB) are given to each of its 256 steps: more than 16 MiB in all; set variables on the steps that need them
        "#]],
    );
    // Globs compiled together beyond what the matcher can build: an error, not a hang.
    let globs: String = (0..20_000)
        .map(|i| format!("\"a*b[cd]{{e,f}}{i}\","))
        .collect();
    let diags = diagnostics(
        ".pipewright/p.yml",
        &format!(
            "on:\n  push:\n    paths: [{globs}]\nsteps: [{{ name: a, image: busybox, run: x }}]\n"
        ),
    );
    assert!(diags.contains("too many or too complex"), "{diags}");
    assert!(!cron_due("* * * * *", i64::MIN) && !cron_due("* * * * *", i64::MAX));
}

#[test]
fn numbers_that_do_not_fit_are_refused() {
    // Integers, sizes and durations past their range, past 64 bits, or negative.
    check(
        r#"
on: push
timeout: 9999999999h
steps:
  - name: a
    image: busybox
    run: x
    pids: 18446744073709551615
    memory: 99999999999999999999g
    timeout: 99999999999999999999999m
  - name: b
    image: busybox
    run: x
    pids: 184467440737095516150000
    memory: 1025g
    timeout: 29d24h1s
  - name: c
    image: busybox
    run: x
    pids: 4194305
    memory: 18446744073709551615
  - { name: d, image: busybox, run: x, memory: -1g }
"#,
        expect![[r#"
            .pipewright/broken.yml:3:10: duration `9999999999h` is longer than the longest accepted, 30d
            .pipewright/broken.yml:8:11: `18446744073709551615` is too large: expected a positive number of processes, at most 4194304
            .pipewright/broken.yml:9:13: memory limit `99999999999999999999g` is larger than the largest accepted, 1024g
            .pipewright/broken.yml:10:14: duration `99999999999999999999999m` is longer than the longest accepted, 30d
            .pipewright/broken.yml:14:11: `184467440737095516150000` is too large: expected a positive number of processes, at most 4194304
            .pipewright/broken.yml:15:13: memory limit `1025g` is larger than the largest accepted, 1024g
            .pipewright/broken.yml:16:14: duration `29d24h1s` is longer than the longest accepted, 30d
            .pipewright/broken.yml:20:11: `4194305` is too large: expected a positive number of processes, at most 4194304
            .pipewright/broken.yml:21:13: memory limit `18446744073709551615` is larger than the largest accepted, 1024g
            .pipewright/broken.yml:22:48: expected a size such as `512m` or `2g`, found `-1g`
        "#]],
    );
    assert!(parse_duration("18446744073709551615s").is_err());
    for bad in ["-1", "0", "000", "1e3", "0x10", "+5", "٣"] {
        let diags = diagnostics(".pipewright/p.yml", &with_step(&format!("pids: \"{bad}\"")));
        assert!(
            diags.contains(&format!(
                "expected a positive number of processes, found `{bad}`"
            )),
            "{bad}: {diags}"
        );
    }
    assert_eq!(
        pipeline(&with_step("pids: 4194304")).steps[0].pids,
        Some(MAX_PIDS)
    );
    assert_eq!(pipeline(&with_top("timeout: 30d")).timeout, MAX_DURATION);
    // Cron fields out of range, odd steps and huge numbers are errors, not panics.
    let crons = [
        "*/0 * * * *",
        "99999999999999999999 * * * *",
        "0 0 31 2 *",
        "0-99999 * * * *",
        "5-1 * * * *",
        "*/4294967296 * * * *",
        "0 0 * * 8",
        "0 0 L * *",
        "0 0 * * 5#9",
        "١ * * * *",
    ];
    let entries: String = crons
        .iter()
        .map(|c| format!("    - cron: \"{c}\"\n"))
        .collect();
    check(
        &format!("on:\n  schedule:\n{entries}steps: [{{ name: a, image: busybox, run: x }}]\n"),
        expect![[r#"
            .pipewright/broken.yml:3:13: invalid cron `*/0 * * * *`: Component error: Step cannot be zero.
            .pipewright/broken.yml:4:13: invalid cron `99999999999999999999 * * * *`: Component error: Invalid number.
            .pipewright/broken.yml:5:13: invalid cron `0 0 31 2 *`: it never fires: no date has that day in that month
            .pipewright/broken.yml:6:13: invalid cron `0-99999 * * * *`: Component error: Invalid end of range.
            .pipewright/broken.yml:7:13: invalid cron `5-1 * * * *`: Component error: Range out of bounds.
            .pipewright/broken.yml:8:13: invalid cron `*/4294967296 * * * *`: Component error: Invalid step.
            .pipewright/broken.yml:9:13: invalid cron `0 0 * * 8`: Component error: Number out of bounds.
            .pipewright/broken.yml:11:13: invalid cron `0 0 * * 5#9`: Component error: Nth specifier out of bounds.
            .pipewright/broken.yml:12:13: invalid cron `١ * * * *`: Pattern contains illegal characters: CronPattern contains illegal character '١' in part '١'
        "#]],
    );
    // Dispatch `number` inputs: decimal numbers that fit a 64-bit float.
    let numbers = [
        "1e999",
        "NaN",
        "inf",
        "-infinity",
        "0x10",
        "1_000",
        " 1",
        "1.",
        ".5",
        "+1",
        "1e",
        "--1",
    ];
    let inputs: String = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| format!("      n{i}: {{ type: number, default: \"{n}\" }}\n"))
        .collect();
    check(
        &format!(
            "on:\n  dispatch:\n    inputs:\n{inputs}steps: [{{ name: a, image: busybox, run: x }}]\n"
        ),
        expect![[r#"
            .pipewright/broken.yml:4:36: default of input `n0`: number `1e999` is out of range (it must fit a 64-bit float)
            .pipewright/broken.yml:5:36: default of input `n1`: expected a number, found `NaN`
            .pipewright/broken.yml:6:36: default of input `n2`: expected a number, found `inf`
            .pipewright/broken.yml:7:36: default of input `n3`: expected a number, found `-infinity`
            .pipewright/broken.yml:8:36: default of input `n4`: expected a number, found `0x10`
            .pipewright/broken.yml:9:36: default of input `n5`: expected a number, found `1_000`
            .pipewright/broken.yml:10:36: default of input `n6`: expected a number, found ` 1`
            .pipewright/broken.yml:11:36: default of input `n7`: expected a number, found `1.`
            .pipewright/broken.yml:12:36: default of input `n8`: expected a number, found `.5`
            .pipewright/broken.yml:13:36: default of input `n9`: expected a number, found `+1`
            .pipewright/broken.yml:14:37: default of input `n10`: expected a number, found `1e`
            .pipewright/broken.yml:15:37: default of input `n11`: expected a number, found `--1`
        "#]],
    );
    for good in ["0", "-12", "0.5", "1e3", "-2.5E-3", "18446744073709551616"] {
        assert_eq!(
            check_input_value(&InputKind::Number, good),
            Ok(()),
            "{good}"
        );
    }
}

#[test]
fn fan_out_prefixes_that_give_reserved_names_are_refused() {
    check(
        r#"
on: push
vault:
  secrets:
    "*": kv/x#*
    PIPEWRIGHT_*: kv/x#*
    VAULT_*: kv/x#*
    VAULT_TOKEN: kv/x#token
    1A_*: kv/x#*
    CI_*: kv/ci#*
    app_*: kv/app#*
env:
  VAULT_ADDR: http://evil
  CI: "false"
steps:
  - { name: a, image: busybox, run: x }
"#,
        expect![[r#"
            .pipewright/broken.yml:5:5: `*` needs a prefix, e.g. `APP_*`: without one the keys of `kv/x` could name any variable, Pipewright's included
            .pipewright/broken.yml:6:5: `PIPEWRIGHT_*` would only give names that Pipewright sets (`PIPEWRIGHT_*`); choose another prefix
            .pipewright/broken.yml:7:5: `VAULT_*` would only give names that Pipewright sets (`VAULT_*`); choose another prefix
            .pipewright/broken.yml:8:5: `VAULT_TOKEN` is set by Pipewright and cannot be overridden
            .pipewright/broken.yml:9:5: `1A_` is not a valid prefix of environment variable names
            .pipewright/broken.yml:13:3: `VAULT_ADDR` is set by Pipewright and cannot be overridden
            .pipewright/broken.yml:14:3: `CI` is set by Pipewright and cannot be overridden
        "#]],
    );
    assert!(is_reserved_env("PIPEWRIGHT_SHA") && is_reserved_env("VAULT_ADDR"));
    assert!(is_reserved_env("CI") && is_reserved_env("TERRAFORM_VAULT_AUTH_JWT"));
    assert!(!is_reserved_env("CIRCLE") && !is_reserved_env("vault_addr"));
}

#[test]
fn positions_in_non_ascii_text() {
    check(
        "on: push\nsteps:\n  - name: é\n    image: \"ünïcode ${{ bad }}\"\n    run: \"日本 ${{ sha }}\"\n",
        expect![[r#"
            .pipewright/broken.yml:3:11: `é` is not a valid name: use letters, digits, `.`, `_` and `-` (at most 100)
            .pipewright/broken.yml:4:21: unknown expression `bad` in `${{ }}`; expected one of: sha, short_sha, ref_name, repo, repo_owner, repo_name, actor, inputs.NAME, lower(…)
            .pipewright/broken.yml:5:14: `${{ }}` is not evaluated in `run`: event values reach the script only as environment variables, e.g. "$PIPEWRIGHT_SHA", "$PIPEWRIGHT_INPUT_<NAME>"
        "#]],
    );
}

#[test]
fn list_form_schedule_and_bad_input_types() {
    // The list form names events without filters: a schedule needs its crons.
    check(
        "on: [push, schedule]\nsteps: [{name: a, image: busybox, run: x}]\n",
        expect![[r#"
            .pipewright/broken.yml:1:12: `schedule` needs crons: use `on: { schedule: [{ cron: "…" }] }`
        "#]],
    );
    check(
        "on: schedule\nsteps: [{name: a, image: busybox, run: x}]\n",
        expect![[r#"
            .pipewright/broken.yml:1:5: `schedule` needs crons: use `on: { schedule: [{ cron: "…" }] }`
        "#]],
    );
    // A bad input type is one error, whatever else the input says.
    check(
        "on:\n  dispatch:\n    inputs: { x: { type: strng } }\nsteps: [{name: a, image: busybox, run: x}]\n",
        expect![[r#"
            .pipewright/broken.yml:3:26: unknown input type `strng`; expected one of: string, choice, boolean, number
        "#]],
    );
    check(
        "on:\n  dispatch:\n    inputs: { x: { type: strng, default: a, options: [a, b] } }\nsteps: [{name: a, image: busybox, run: x}]\n",
        expect![[r#"
            .pipewright/broken.yml:3:26: unknown input type `strng`; expected one of: string, choice, boolean, number
        "#]],
    );
    check(
        "on:\n  dispatch:\n    inputs: { x: { type: strng } }\nsteps: [{name: a, image: \"busybox:${{ inputs.x }}\", run: x}]\n",
        expect![[r#"
            .pipewright/broken.yml:3:26: unknown input type `strng`; expected one of: string, choice, boolean, number
        "#]],
    );
    // Nor does any other error of `on:` make declared inputs unknown; undeclared ones
    // still are.
    check(
        "on:\n  push: { branchs: [main] }\n  dispatch: { inputs: { tag: {} } }\nsteps:\n  - name: a\n    image: \"busybox:${{ inputs.tag }}\"\n    run: x\n  - name: b\n    image: \"busybox:${{ inputs.tga }}\"\n    run: x\n",
        expect![[r#"
            .pipewright/broken.yml:2:11: unknown key `branchs` in `on.push`; did you mean `branches`?
            .pipewright/broken.yml:9:21: no dispatch input `tga`; declared: tag
        "#]],
    );
}

#[test]
fn vault_role_per_event_schedules_in_a_zone_and_offline_dispatch() {
    let p = pipeline(
        "on:\n  dispatch: { offline: true }\n  schedule:\n    - cron: \"@daily\"\n      timezone: Europe/Paris\n    - cron: \"0 4 * * 1\"\nvault:\n  role: { pull_request: gitea_cicd_plan, default: gitea_cicd }\nsteps: [{ name: a, image: busybox, run: x }]\n",
    );
    assert!(p.on.dispatch.as_ref().is_some_and(|d| d.offline));
    let zones: Vec<(&str, &str)> =
        p.on.schedule
            .iter()
            .map(|s| (s.cron.as_str(), s.timezone.as_str()))
            .collect();
    assert_eq!(zones, [("@daily", "Europe/Paris"), ("0 4 * * 1", "UTC")]);
    let vault = p.vault.unwrap();
    assert_eq!(
        vault.role_for(EventKind::PullRequest),
        Some("gitea_cicd_plan")
    );
    assert_eq!(vault.role_for(EventKind::Push), Some("gitea_cicd"));
    assert_eq!(vault.role_for(EventKind::Schedule), Some("gitea_cicd"));
    // Without `default`, the other events fall back to `[vault].role_template`.
    let p = pipeline(
        "on: push\nvault:\n  role: { push: apply }\nsteps: [{ name: a, image: busybox, run: x }]\n",
    );
    let vault = p.vault.unwrap();
    assert_eq!(vault.role_for(EventKind::Push), Some("apply"));
    assert_eq!(vault.role_for(EventKind::Dispatch), None);
    let p =
        pipeline("on: push\nvault:\n  role: one\nsteps: [{ name: a, image: busybox, run: x }]\n");
    assert_eq!(
        p.vault.unwrap().role_for(EventKind::PullRequest),
        Some("one")
    );
    // Not offline unless asked.
    let p = pipeline("on: dispatch\nsteps: [{ name: a, image: busybox, run: x }]\n");
    assert!(p.on.dispatch.is_some_and(|d| !d.offline));

    check(
        r#"on:
  dispatch: { offline: yes please }
  schedule:
    - cron: "@dayly"
    - cron: "@daily"
      timezone: Europe/Pariss
    - cron: "0 0 31 2 *"
      timezone: Mars/Olympus
    - cron: "@reboot"
vault:
  role: { pull_requests: plan, default: apply, push: "a b" }
steps: [{ name: a, image: busybox, run: x }]
"#,
        expect![[r#"
            .pipewright/broken.yml:2:24: expected true or false, found `yes please`
            .pipewright/broken.yml:4:13: invalid cron `@dayly`: unknown macro `@dayly`; did you mean `@daily`?
            .pipewright/broken.yml:6:17: unknown time zone `Europe/Pariss`; did you mean `Europe/Paris`?
            .pipewright/broken.yml:7:13: invalid cron `0 0 31 2 *`: it never fires: no date has that day in that month
            .pipewright/broken.yml:8:17: unknown time zone `Mars/Olympus`: expected an IANA name such as `Europe/Paris` or `UTC`
            .pipewright/broken.yml:9:13: invalid cron `@reboot`: unknown macro `@reboot`; expected one of: @hourly, @daily, @weekly, @monthly, @yearly, @annually
            .pipewright/broken.yml:11:11: unknown key `pull_requests` in `vault.role` by event; did you mean `pull_request`?
            .pipewright/broken.yml:11:54: `a b` is not a role name: no spaces or `/`, not empty
        "#]],
    );
}

#[test]
fn schedule_entries_are_bounded() {
    let entries: String = (0..=crate::parse::MAX_SCHEDULES)
        .map(|_| "    - cron: \"0 0 31 2 *\"\n")
        .collect();
    check(
        &format!("on:\n  schedule:\n{entries}steps: [{{ name: a, image: busybox, run: x }}]\n"),
        expect![[r#"
            .pipewright/broken.yml:3:5: 101 schedule entries, more than the limit of 100
        "#]],
    );
}
