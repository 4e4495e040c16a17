//! API tokens: who a request is and what it may do. `[api].tokens` are full access;
//! `[[api.token]]` entries have scopes (`read`, `dispatch`, `control`, `admin`) and cover the
//! repositories their globs match. A run of a repository a token does not cover is, to that
//! token, a run that does not exist (404), and lists leave it out.

use axum::http::{HeaderMap, StatusCode, header};

use crate::config::{Scope, ScopedToken};
use crate::server::{
    App,
    http::errors::{ApiError, internal},
};
use crate::store::{Run, RunFilter, StoreError};

/// Who is asking, once a scope was checked.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    /// A plain `[api].tokens` token, or anyone reading when `read_public` is set.
    Everything,
    /// A `[[api.token]]` entry that has the scope asked for.
    Scoped(&'a ScopedToken),
}

impl Caller<'_> {
    /// Whether the caller may see and act on a repository's runs (`owner/name`).
    pub fn covers(&self, repo: &str) -> bool {
        match self {
            Caller::Everything => true,
            Caller::Scoped(token) => token.covers(repo),
        }
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of the lengths too.
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

enum Known<'a> {
    Full,
    Scoped(&'a ScopedToken),
}

/// The configured token the request carries, if any. Every configured token is compared,
/// each in constant time, whichever matches.
fn known_token<'a>(app: &'a App, headers: &HeaderMap) -> Option<Known<'a>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })?
        .trim()
        .as_bytes();
    let api = &app.config.api;
    let mut found = None;
    for token in &api.tokens {
        if constant_time_eq(token.expose().as_bytes(), given) {
            found = Some(Known::Full);
        }
    }
    for token in &api.scoped_tokens {
        if constant_time_eq(token.token.expose().as_bytes(), given) {
            found = Some(Known::Scoped(token));
        }
    }
    found
}

/// Checks that the request may use `scope`: 401 without a known token (except reads when
/// `read_public`), 403 with a token that lacks the scope.
pub fn require<'a>(
    app: &'a App,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Caller<'a>, ApiError> {
    if scope == Scope::Read && app.config.api.read_public {
        return Ok(Caller::Everything);
    }
    match known_token(app, headers) {
        Some(Known::Full) => Ok(Caller::Everything),
        Some(Known::Scoped(token)) if token.allows(scope) => Ok(Caller::Scoped(token)),
        Some(Known::Scoped(_)) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this token does not have the `{}` scope", scope.as_str()),
        )),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "an API token is required (Authorization: Bearer …)".into(),
        )),
    }
}

/// Runs newest first through `filter`, of one repository or all, limited to what the
/// caller covers (the repositories go into the query, so paging stays in SQL).
pub async fn visible_runs(
    app: &App,
    caller: Caller<'_>,
    repo: Option<&str>,
    mut filter: RunFilter,
) -> Result<Vec<Run>, StoreError> {
    filter.repos = match (caller, repo) {
        (_, Some(repo)) if !caller.covers(repo) => return Ok(Vec::new()),
        (_, Some(repo)) => Some(vec![repo.to_owned()]),
        (Caller::Everything, None) => None,
        (Caller::Scoped(token), None) => Some(
            app.store
                .run_repos()
                .await?
                .into_iter()
                .filter(|r| token.covers(r))
                .collect(),
        ),
    };
    app.store.list_runs(&filter).await
}

/// A run the caller covers; any other is, to the caller, a run that does not exist.
pub async fn load_run(app: &App, caller: Caller<'_>, id: i64) -> Result<Run, ApiError> {
    app.store
        .run(id)
        .await
        .map_err(internal)?
        .filter(|run| caller.covers(&run.repo))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id}")))
}
