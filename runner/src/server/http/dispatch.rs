//! Manual dispatch: `POST /api/v1/repos/{owner}/{repo}/pipelines/{name}/dispatch` with
//! `{"ref": "...", "inputs": {...}}`, as `pipewright dispatch` sends it. What a dispatch
//! does (and refuses) is `control::dispatchable` and `control::dispatch`, shared with the
//! dispatch form.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;

use crate::config::Scope;
use crate::server::{
    App,
    http::auth::require,
    http::control,
    http::dto::{RunDto, run_dto},
    http::errors::ApiError,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchRequest {
    /// Branch or tag; default: the repository's default branch.
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
}

pub async fn dispatch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((owner, name, pipeline_name)): Path<(String, String, String)>,
    Json(request): Json<DispatchRequest>,
) -> Result<(StatusCode, Json<RunDto>), ApiError> {
    let caller = require(&app, &headers, Scope::Dispatch)?;
    let full_name = format!("{owner}/{name}");
    if !caller.covers(&full_name) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this token does not cover {full_name}"),
        ));
    }
    let target = control::dispatchable(
        &app,
        &owner,
        &name,
        &pipeline_name,
        request.git_ref.as_deref(),
    )
    .await?;
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
    let run = control::dispatch(&app, &target, &given, "api").await?;
    Ok((StatusCode::CREATED, Json(run_dto(&app, &run, None).await)))
}
