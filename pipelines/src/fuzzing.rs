//! Entry points for fuzzing: the pipeline compiler driven end to end from arbitrary bytes.
//!
//! Used by the cargo-fuzz target (`fuzz/fuzz_targets/pipeline_parse.rs`) and by the bounded
//! pass in the test suite, so both exercise the same code. Each function must return
//! normally for every input; a panic is a bug.

use crate::{
    Changes, EventKind, GitRef, RunContext, Trigger, default_inputs, parse_files, plan,
    resolve_inputs, selects,
};

/// Reads `data` (lossily as UTF-8) as a pipeline file, next to a small valid one of the
/// same default name (so the duplicate-name check runs too), checks what every diagnostic
/// must hold, and for a valid pipeline selects it for each kind of event and plans a run.
pub fn pipeline_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    // YAML breaks lines at `\n`, `\r` and `\r\n`: an upper bound on the file's lines.
    let lines = 1 + text.bytes().filter(|b| matches!(b, b'\n' | b'\r')).count();
    let files = [
        (".pipewright/fuzz.yml".to_string(), text),
        (
            ".pipewright/fuzz.yaml".to_string(),
            "on: push\nsteps: [{ name: a, image: busybox, run: x }]\n".to_string(),
        ),
    ];
    for parsed in parse_files(&files) {
        let pipeline = match parsed.result {
            Ok(p) => p,
            Err(diags) => {
                assert!(!diags.is_empty(), "an invalid file has diagnostics");
                for d in &diags {
                    assert_eq!(d.file, parsed.file);
                    assert!(!d.message.is_empty(), "{d}");
                    let line = usize::try_from(d.pos.line).unwrap_or(usize::MAX);
                    assert!(line >= 1 && d.pos.col >= 1, "{d}");
                    // The end of the stream may stand on one line past the last.
                    assert!(line <= lines + 1, "{d}");
                }
                continue;
            }
        };
        let branch = GitRef::Branch("main".into());
        for kind in EventKind::ALL {
            let changes = Changes::Files(vec!["iac/main.tf".into(), "README.md".into()]);
            let trigger = Trigger {
                kind,
                git_ref: branch.clone(),
                changes,
            };
            selects(&pipeline, &trigger);
            let tag = Trigger {
                git_ref: GitRef::Tag("v1.0.0".into()),
                changes: Changes::All,
                ..trigger
            };
            selects(&pipeline, &tag);
            let inputs = match kind {
                EventKind::Dispatch => {
                    resolve_inputs(&pipeline, &[]).unwrap_or_else(|_| default_inputs(&pipeline))
                }
                _ => default_inputs(&pipeline),
            };
            let cx = RunContext {
                repo: "org/repo".into(),
                sha: "0123456789abcdef0123456789abcdef01234567".into(),
                git_ref: branch.clone(),
                event: kind,
                pr: (kind == EventKind::PullRequest).then_some(7),
                run_id: "1".into(),
                inputs,
                actor: "someone".into(),
            };
            let planned = plan(&pipeline, &cx);
            assert_eq!(planned.steps.len(), pipeline.steps.len());
        }
    }
}
