//! Table tests of `when.status`, `shell` and the template names `actor`, `repo_owner`,
//! `repo_name` and `lower(…)`: what the file says, what `validate` says about bad values,
//! and what plans make of them.

use expect_test::{Expect, expect};

use crate::*;

fn check(text: &str, expect: Expect) {
    let found = match parse_file(".pipewright/restore.yml", text).result {
        Ok(_) => "ok".to_string(),
        Err(diags) => diags.iter().map(|d| format!("{d}\n")).collect(),
    };
    expect.assert_eq(&found);
}

fn pipeline(text: &str) -> Pipeline {
    match parse_file(".pipewright/restore.yml", text).result {
        Ok(p) => p,
        Err(d) => panic!("{d:?}"),
    }
}

const RESTORE: &str = r#"on: dispatch
steps:
  - name: scale-down
    image: bitnami/kubectl:1.31
    run: kubectl scale deploy/erp --replicas=0
  - name: restore
    image: postgres:16.3
    shell: bash
    run: psql -f dump.sql
  - name: scale-back-up
    image: bitnami/kubectl:1.31
    run: kubectl scale deploy/erp --replicas=1
    when: { status: [success, failure] }
  - name: tell
    image: busybox
    run: echo failed
    when:
      status: failure
      event: [dispatch]
    timeout: 1m
"#;

#[test]
fn status_and_shell_are_read() {
    let p = pipeline(RESTORE);
    let after: Vec<RunsAfter> = p.steps.iter().map(Step::runs_after).collect();
    let only_success = RunsAfter {
        success: true,
        failure: false,
    };
    assert_eq!(
        after,
        [
            only_success,
            only_success,
            RunsAfter {
                success: true,
                failure: true
            },
            RunsAfter {
                success: false,
                failure: true
            },
        ]
    );
    let shells: Vec<Option<Shell>> = p
        .steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Run { shell, .. } => Some(*shell),
            StepKind::Uses { .. } => None,
        })
        .collect();
    assert_eq!(
        shells,
        [
            Some(Shell::Sh),
            Some(Shell::Bash),
            Some(Shell::Sh),
            Some(Shell::Sh)
        ]
    );
    let cx = RunContext {
        repo: "arcodange-org/erp".into(),
        sha: "0123456789abcdef".into(),
        git_ref: GitRef::Branch("main".into()),
        event: EventKind::Dispatch,
        pr: None,
        run_id: "1".into(),
        inputs: vec![],
        actor: "api".into(),
    };
    let planned = plan(&p, &cx);
    assert_eq!(planned.steps[3].runs_after, after[3]);
    assert!(planned.steps[3].applies, "`event` and `status` both hold");
    assert_eq!(planned.steps[3].timeout, Some(Duration::from_secs(60)));
    assert!(matches!(
        planned.steps[1].action,
        PlannedAction::Run {
            shell: Shell::Bash,
            ..
        }
    ));
    // `when.event` still decides on its own: on a push the failure step is skipped.
    let push = RunContext {
        event: EventKind::Push,
        ..cx
    };
    assert!(!plan(&p, &push).steps[3].applies);
}

use std::time::Duration;

#[test]
fn bad_status_and_shell_values_are_reported_where_they_are() {
    check(
        "on: push\nsteps:\n  - name: a\n    image: busybox\n    run: x\n    when: { status: [success, always, failed, sucess, 3, success] }\n    shell: zsh\n  - name: b\n    uses: tofu\n    shell: bash\n  - name: c\n    image: busybox\n    run: x\n    when: { status: [] }\n  - name: d\n    image: busybox\n    run: x\n    when: { status: { failure: true } }\n",
        expect![[r#"
            .pipewright/restore.yml:6:31: unknown run state `always`; did you mean `[success, failure]`?
            .pipewright/restore.yml:6:39: unknown run state `failed`; did you mean `failure`?
            .pipewright/restore.yml:6:47: unknown run state `sucess`; did you mean `success`?
            .pipewright/restore.yml:6:55: unknown run state `3`; expected one of: success, failure
            .pipewright/restore.yml:6:58: `success` is listed twice
            .pipewright/restore.yml:7:12: unknown shell `zsh`; expected one of: sh, bash
            .pipewright/restore.yml:10:5: `shell` goes with `run`; an action runs its own commands
            .pipewright/restore.yml:14:21: `status` is empty; expected `success`, `failure` or both
            .pipewright/restore.yml:18:21: expected a list of run states (`success`, `failure`), found a mapping
        "#]],
    );
}

#[test]
fn new_template_names_and_lower() {
    let p = pipeline(
        "on: push\nsteps:\n  - name: a\n    image: \"reg.lab/${{ lower(repo) }}:${{ lower(ref_name) }}\"\n    run: x\n  - name: b\n    uses: image\n    with:\n      tags: \"reg.lab/${{ lower(repo_owner) }}/${{ repo_name }}:${{ actor }}\"\n",
    );
    let cx = RunContext {
        repo: "Arcodange-Org/My-ERP".into(),
        sha: "0123456789abcdef".into(),
        git_ref: GitRef::Branch("Feature/X".into()),
        event: EventKind::Push,
        pr: None,
        run_id: "1".into(),
        inputs: vec![],
        actor: "Gab".into(),
    };
    let planned = plan(&p, &cx);
    assert!(matches!(
        &planned.steps[0].action,
        PlannedAction::Run { image, .. } if image == "reg.lab/arcodange-org/my-erp:feature/x"
    ));
    let PlannedAction::Uses { with, .. } = &planned.steps[1].action else {
        panic!("a uses step");
    };
    assert_eq!(
        with,
        &[(
            "tags".to_string(),
            Resolved::List(vec![Resolved::Str(
                "reg.lab/arcodange-org/My-ERP:Gab".into()
            )])
        )]
    );
}

#[test]
fn unknown_functions_and_names_are_reported_where_they_are() {
    check(
        "on: push\nsteps:\n  - name: a\n    image: \"x/${{ upper(repo) }}:${{ lower(owner) }}\"\n    run: x\n  - name: b\n    image: \"x/${{ lower(repo) }}:${{ sender }}\"\n    run: x\n  - name: c\n    image: \"${{ lower(inputs.nope) }}\"\n    run: x\n",
        expect![[r#"
            .pipewright/restore.yml:4:15: unknown function `upper` in `${{ }}`; expected one of: lower
            .pipewright/restore.yml:7:34: unknown expression `sender` in `${{ }}`; expected one of: sha, short_sha, ref_name, repo, repo_owner, repo_name, actor, inputs.NAME, lower(…)
            .pipewright/restore.yml:10:13: no dispatch input `nope`: `on.dispatch.inputs` declares none
        "#]],
    );
}
