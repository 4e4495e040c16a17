//! Manual dispatch: `POST /api/v1/repos/{owner}/{repo}/pipelines/{name}/dispatch` with
//! `{"ref": "...", "inputs": {...}}`, as `pipewright dispatch` and the run page send it.
//! The pipeline is read at the ref's commit; inputs are checked against its declaration
//! (a missing, unknown or ill-typed input is refused, naming it; `confirm` too).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use pipewright_pipelines::{EventKind, GitRef, RunContext, parse_files, resolve_inputs};
use serde::Deserialize;

use super::{
    App,
    api::{ApiError, RunDto, require_write, run_dto},
    ingest::{error_chain, queued_run},
};
use crate::events::RepoInfo;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchRequest {
    /// Branch or tag; default: the repository's default branch.
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
}

fn refused(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

pub async fn dispatch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((owner, name, pipeline_name)): Path<(String, String, String)>,
    Json(request): Json<DispatchRequest>,
) -> Result<(StatusCode, Json<RunDto>), ApiError> {
    require_write(&app, &headers)?;
    let full_name = format!("{owner}/{name}");
    if !app.config.repo_allowed(&full_name) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            format!("{full_name} is not in [[repos]]"),
        ));
    }
    let gitea_down = |e: &(dyn std::error::Error + 'static)| {
        refused(
            StatusCode::BAD_GATEWAY,
            format!("Gitea: {}", error_chain(e)),
        )
    };
    let payload = app
        .gitea
        .repository(&full_name)
        .await
        .map_err(|e| gitea_down(&e))?
        .ok_or_else(|| {
            refused(
                StatusCode::NOT_FOUND,
                format!("Gitea has no repository {full_name}"),
            )
        })?;
    let repo = RepoInfo::from_payload(&payload, "").map_err(|e| {
        refused(
            StatusCode::BAD_GATEWAY,
            format!("Gitea's answer for {full_name} is refused: {e}"),
        )
    })?;
    let wanted = request
        .git_ref
        .clone()
        .unwrap_or_else(|| repo.default_branch.clone());

    let mirror = app
        .git
        .fetch(&repo.full_name, repo.sha256)
        .await
        .map_err(|e| gitea_down(&e))?;
    let (git_ref, sha) = resolve_ref(&app, &mirror, &wanted).await.ok_or_else(|| {
        refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{full_name} has no branch or tag `{wanted}`"),
        )
    })?;
    let files = app
        .git
        .pipeline_files(&mirror, &sha)
        .await
        .map_err(|e| gitea_down(&e))?;
    drop(mirror);
    let texts: Vec<(String, String)> = files
        .into_iter()
        .filter_map(|(p, t)| t.ok().map(|t| (p, t)))
        .collect();
    let parsed = parse_files(&texts)
        .into_iter()
        .find(|f| f.name == pipeline_name)
        .ok_or_else(|| {
            refused(
                StatusCode::NOT_FOUND,
                format!("no pipeline `{pipeline_name}` at {wanted}"),
            )
        })?;
    let pipeline = parsed.result.map_err(|diags| {
        let list: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("pipeline `{pipeline_name}` is invalid: {}", list.join("; ")),
        )
    })?;
    let given: Vec<(String, String)> = request
        .inputs
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect();
    let inputs = resolve_inputs(&pipeline, &given).map_err(|errors| {
        refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("dispatch refused: {}", errors.join("; ")),
        )
    })?;

    let cx = RunContext {
        repo: repo.full_name.clone(),
        sha: sha.clone(),
        git_ref: git_ref.clone(),
        event: EventKind::Dispatch,
        pr: None,
        run_id: String::new(),
        inputs: inputs.clone(),
    };
    let dedupe_key = format!("dispatch:{}:{}", repo.full_name, crate::store::now_ms());
    let run = queued_run(
        &repo,
        &pipeline,
        &cx,
        "api",
        dedupe_key,
        "queued (dispatched)",
    );
    let enqueued = app.enqueue(None, &[run]).await.map_err(|e| {
        tracing::warn!(error = ?e, "failed to enqueue a dispatch");
        refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    let stored = app
        .store
        .run(enqueued.ids[0])
        .await
        .ok()
        .flatten()
        .ok_or_else(|| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    Ok((StatusCode::CREATED, Json(run_dto(&app, &stored, None))))
}

/// A branch, or else a tag. Not a bare commit: a run's identity token names its ref, and a
/// commit on no ref would borrow one it is not on.
async fn resolve_ref(
    app: &App,
    mirror: &crate::git::Mirror,
    wanted: &str,
) -> Option<(GitRef, String)> {
    let name = wanted.trim_start_matches("refs/heads/");
    if let Some(sha) = app.git.resolve(mirror, &format!("refs/heads/{name}")).await {
        return Some((GitRef::Branch(name.to_string()), sha));
    }
    let tag = wanted.trim_start_matches("refs/tags/");
    if let Some(sha) = app.git.resolve(mirror, &format!("refs/tags/{tag}")).await {
        return Some((GitRef::Tag(tag.to_string()), sha));
    }
    None
}
