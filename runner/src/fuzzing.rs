//! Entry points for fuzzing: Gitea deliveries decoded from arbitrary bytes.
//!
//! Used by the cargo-fuzz target (`fuzz/fuzz_targets/webhook_decode.rs`) and by the bounded
//! pass in the test suite. Each function must return normally for every input; a panic is a
//! bug, and so is an event that breaks what `events::decode` promises about its fields.

use crate::{
    checked,
    events::{Command, Decoded, Event, Verb, decode},
    git::is_zero,
};

/// The event types a fuzz input's first byte chooses from.
const EVENT_TYPES: &[&str] = &[
    "push",
    "pull_request",
    "pull_request_sync",
    "issue_comment",
    "pull_request_comment",
    "status",
    "create",
    "release",
];

/// Decodes `data[1..]` as a delivery of the event type `data[0]` picks, and checks that an
/// event to act on carries only checked values.
pub fn webhook_decode(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let event_type = EVENT_TYPES[usize::from(pick) % EVENT_TYPES.len()];
    let event = match decode(event_type, body) {
        Ok(Decoded::Act(event)) => event,
        Ok(Decoded::Command(command)) => return check_command(&command),
        _ => return,
    };
    let repo = event.repo();
    assert!(checked::is_repo_name(&repo.full_name), "{repo:?}");
    assert!(repo.id > 0 && repo.owner_id > 0, "{repo:?}");
    assert!(checked::is_ref_name(&repo.default_branch), "{repo:?}");
    match &event {
        Event::Push {
            git_ref,
            before,
            after,
            ..
        } => {
            assert!(checked::is_full_ref(&git_ref.full()), "{git_ref:?}");
            assert!(checked::is_commit_id(after) && !is_zero(after), "{after}");
            assert!(checked::is_commit_id(before), "{before}");
        }
        Event::PullRequest {
            number,
            base_branch,
            head_sha,
            ..
        } => {
            assert!(*number > 0);
            assert!(checked::is_ref_name(base_branch), "{base_branch}");
            assert!(checked::is_commit_id(head_sha), "{head_sha}");
        }
    }
    let _ = event.dedupe_key();
}

/// A comment command carries a checked repository, positive ids, a Gitea login as its
/// actor, and bounded names.
fn check_command(command: &Command) {
    let repo = &command.repo;
    assert!(checked::is_repo_name(&repo.full_name), "{repo:?}");
    assert!(repo.id > 0 && repo.owner_id > 0, "{repo:?}");
    assert!(command.number > 0 && command.comment_id > 0, "{command:?}");
    assert!(
        !command.actor.is_empty()
            && command
                .actor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
        "{command:?}"
    );
    if let Verb::Run { pipeline, inputs } = &command.verb {
        assert!(!pipeline.is_empty() && pipeline.len() <= 128, "{pipeline}");
        assert!(inputs.len() <= 101, "{}", inputs.len());
        for (key, value) in inputs {
            assert!(!key.is_empty() && key.len() <= 128 && value.len() <= 8192);
        }
    }
}
