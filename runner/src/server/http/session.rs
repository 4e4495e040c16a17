//! Who is looking at a page: a browser session (signed in with Gitea or an API token) or a
//! bearer token; which repositories they may read and change, and the CSRF token their
//! forms carry.

#![allow(dead_code)] // until the pages use every part

use axum::{
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};

use crate::config::{Scope, ScopedToken};
use crate::server::{
    App,
    http::auth::{Caller, require},
    http::errors::ApiError,
};

/// What a viewer may see and do.
#[derive(Clone, Debug)]
enum Access {
    /// A full token, or anyone reading when `read_public` is set (then `write` is false).
    Everything { write: bool },
    /// A `[[api.token]]` entry.
    Scoped(ScopedToken),
}

/// The repositories a viewer may read: all, or only these (`owner/name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readable {
    All,
    Only(Vec<String>),
}

/// Someone looking at pages or following a log.
#[derive(Clone, Debug)]
pub struct Viewer {
    name: String,
    csrf: String,
    access: Access,
}

impl Viewer {
    /// The name the pages show for them (a Gitea login, or `token`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CSRF token their forms must send back in the field `csrf`.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The repositories whose runs they may see.
    pub async fn readable(&self, app: &App) -> Result<Readable, ApiError> {
        match &self.access {
            Access::Everything { .. } => Ok(Readable::All),
            Access::Scoped(token) => {
                let repos = app
                    .store
                    .run_repos()
                    .await
                    .map_err(crate::server::http::errors::internal)?;
                Ok(Readable::Only(
                    repos.into_iter().filter(|r| token.covers(r)).collect(),
                ))
            }
        }
    }

    /// Whether they may see a repository's runs.
    pub async fn can_read(&self, _app: &App, repo: &str) -> bool {
        match &self.access {
            Access::Everything { .. } => true,
            Access::Scoped(token) => token.covers(repo),
        }
    }

    /// Whether they may cancel, re-run and dispatch a repository's runs.
    pub async fn can_write(&self, _app: &App, repo: &str) -> bool {
        match &self.access {
            Access::Everything { write } => *write,
            Access::Scoped(token) => {
                token.covers(repo) && token.allows(Scope::Control) && token.allows(Scope::Dispatch)
            }
        }
    }
}

/// The viewer of a page, or the answer for a request without one: a redirect to `/login`.
pub async fn page_viewer(app: &App, headers: &HeaderMap) -> Result<Viewer, Response> {
    reader(app, headers)
        .await
        .map_err(|_| Redirect::to("/login").into_response())
}

/// The viewer of what pages fetch (the log stream, live updates): a session cookie or a
/// bearer token; 401 without either.
pub async fn reader(app: &App, headers: &HeaderMap) -> Result<Viewer, ApiError> {
    let caller = require(app, headers, Scope::Read)?;
    let write = require(app, headers, Scope::Control).is_ok();
    let access = match caller {
        Caller::Everything => Access::Everything { write },
        Caller::Scoped(token) => Access::Scoped(token.clone()),
    };
    Ok(Viewer {
        name: "token".to_owned(),
        csrf: String::new(),
        access,
    })
}

/// Checks the CSRF token a form sent: 403 unless it is the viewer's.
pub fn check_csrf(viewer: &Viewer, given: &str) -> Result<(), ApiError> {
    if given == viewer.csrf {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale; reload the page".into(),
        ))
    }
}
