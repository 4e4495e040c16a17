//! The reviewed plan is the applied plan: the plan files of pull requests' `tofu` runs kept
//! in `data_dir/plans/run-<id>/` (mode 0600: a plan can hold secrets; never served), the
//! reviewed plan a run must keep to (`/pipewright apply` at the head applies the saved file
//! of the plan in the comment; a push that merged an applied pull request applies only the
//! reviewed changes), and their retention.

use super::Work;
use std::{fs, io, io::Write, os::unix::fs::OpenOptionsExt, path::PathBuf, time::Duration};

use pipewright_actions::tofu::Reviewed;
use pipewright_pipelines::EventKind;
use tracing::{info, warn};

use crate::{
    step_io::ReviewedPlan,
    store::{Run, now_ms},
};

/// Reviewed plans (and their files) older than this are forgotten.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

fn plans_dir(work: &Work<'_>) -> PathBuf {
    work.config.server.data_dir.join("plans")
}

fn run_dir(work: &Work<'_>, run_id: i64) -> PathBuf {
    plans_dir(work).join(format!("run-{run_id}"))
}

/// The run's mode input: `apply` for `/pipewright apply`.
fn applies(run: &Run) -> bool {
    run.inputs.iter().any(|(k, v)| k == "mode" && v == "apply")
}

/// Whether the run is `/pipewright apply` at a pull request's head.
pub fn is_comment_apply(run: &Run) -> bool {
    run.event == EventKind::Comment && run.pr.is_some() && applies(run)
}

/// Whether the run plans for a pull request (its plan goes in the comment, and is kept).
pub fn is_pull_request_plan(run: &Run) -> bool {
    run.pr.is_some()
        && match run.event {
            EventKind::PullRequest => true,
            EventKind::Comment => !applies(run),
            _ => false,
        }
}

/// Keeps a run's plan files (by step name, hex-encoded in the file name).
pub fn keep(work: &Work<'_>, run_id: i64, saved: &[(String, Vec<u8>)]) -> io::Result<()> {
    let dir = run_dir(work, run_id);
    fs::create_dir_all(&dir)?;
    for (step, bytes) in saved {
        let path = dir.join(format!("{}.tfplan", hex::encode(step)));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    Ok(())
}

/// A run's kept plan files, by step name.
fn load(work: &Work<'_>, run_id: i64) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(run_dir(work, run_id))? {
        let path = entry?.path();
        let Some(step) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".tfplan"))
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| String::from_utf8(b).ok())
        else {
            continue;
        };
        out.push((step, fs::read(&path)?));
    }
    Ok(out)
}

/// Removes a run's plan files.
pub fn forget(work: &Work<'_>, run_id: i64) {
    let dir = run_dir(work, run_id);
    if let Err(e) = fs::remove_dir_all(&dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(error = %e, path = %dir.display(), "failed to remove kept plan files");
    }
}

/// Forgets reviewed plans past [`RETENTION`] and removes the plan files no reviewed plan
/// uses (a plan replaced by a newer one, a crash between keeping and recording).
pub async fn retain(work: &Work<'_>) {
    let before = now_ms() - RETENTION.as_millis() as i64;
    if let Err(e) = work.store.forget_reviewed_plans(before).await {
        warn!(error = ?e, "failed to forget old reviewed plans");
        return;
    }
    let used = match work.store.reviewed_plan_runs().await {
        Ok(used) => used,
        Err(e) => {
            warn!(error = ?e, "failed to read the reviewed plans");
            return;
        }
    };
    let Ok(entries) = fs::read_dir(plans_dir(work)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        if !used.contains(&id) {
            info!(run_id = id, "removing plan files no reviewed plan uses");
            forget(work, id);
        }
    }
}

/// The reviewed plan a run keeps to: for `/pipewright apply`, the saved plan of the
/// comment's plan, made on the run's very commit (else `Err`: re-plan first); for a push
/// that merged a pull request applied with `/pipewright apply`, that pull request's
/// reviewed changes. `None` for every other run.
pub async fn reviewed_for(work: &Work<'_>, run: &Run) -> Result<Option<ReviewedPlan>, String> {
    let db = |e: crate::store::StoreError| format!("database: {e}");
    let (pr, saved) = if is_comment_apply(run) {
        (run.pr.unwrap_or_default(), true)
    } else if run.event == EventKind::Push
        && run.git_ref.branch() == Some(run.default_branch.as_str())
    {
        match work
            .store
            .merged_pull(&run.repo, &run.sha)
            .await
            .map_err(db)?
        {
            Some(pr) => (pr, false),
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let row = work
        .store
        .reviewed_plan(&run.repo, pr, &run.pipeline)
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return match saved {
            true => Err(format!(
                "pull request #{pr} has no plan of {} to apply: plan it first",
                run.pipeline
            )),
            false => Ok(None),
        };
    };
    let reviewed = Reviewed {
        pr,
        changes: row.changes.clone(),
    };
    if !saved {
        // A merge: only a pull request applied with `/pipewright apply` is held to its
        // reviewed plan; one never applied applies on merge as before.
        return Ok(row.applied_run.map(|_| ReviewedPlan {
            reviewed,
            saved: Vec::new(),
        }));
    }
    if row.sha != run.sha {
        return Err(format!(
            "re-plan first: head moved from {} to {}",
            short(&row.sha),
            short(&run.sha)
        ));
    }
    let files = load(work, row.run_id).unwrap_or_default();
    if files.is_empty() {
        return Err(format!(
            "the reviewed plan (run {}) is no longer kept: plan again",
            row.run_id
        ));
    }
    Ok(Some(ReviewedPlan {
        reviewed,
        saved: files,
    }))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}
