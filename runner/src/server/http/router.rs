//! The routes: which handler answers which path, within which body bounds. The handlers
//! get the whole `App`; the layers below them get only their parts.

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
};

use crate::server::{
    App,
    http::conn::{BodyBounds, body_budget, bounded_body},
    http::{api, dispatch, login, metrics, ui, webhook},
};

/// `pipewright agent`'s routes: liveness and readiness (the database and the engine), and
/// nothing else: an agent takes no webhooks and serves no API or UI.
pub fn health_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(api::readyz))
        .with_state(app)
}

pub fn router(app: Arc<App>) -> Router {
    let limits = &app.config.server.http;
    let budget = body_budget(limits, webhook::MAX_BODY);
    let deliveries = BodyBounds::deliveries(limits, budget.clone(), webhook::MAX_BODY);
    let hooks = Router::new()
        .route(
            "/hooks/gitea",
            post(webhook::receive).layer(DefaultBodyLimit::max(webhook::MAX_BODY)),
        )
        .route_layer(middleware::from_fn_with_state(deliveries, bounded_body));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/.well-known/openid-configuration", get(api::discovery))
        .route("/.well-known/jwks.json", get(api::jwks))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/api/v1/runs", get(api::list_runs))
        .route("/api/v1/runs/{id}", get(api::get_run))
        .route("/api/v1/runs/{id}/steps/{n}/log", get(api::step_log))
        .route("/api/v1/runs/{id}/cancel", post(api::cancel_run))
        .route("/api/v1/runs/{id}/rerun", post(api::rerun))
        .route(
            "/api/v1/repos/{owner}/{repo}/pipelines/{name}/dispatch",
            post(dispatch::dispatch),
        )
        .route("/", get(ui::index))
        .route("/ui/runs", get(ui::rows))
        .route("/ui/runs/{id}", get(ui::run_json))
        .route("/runs/{id}", get(ui::run_page))
        .route("/runs/{id}/cancel", post(ui::cancel))
        .route("/runs/{id}/rerun", post(ui::rerun))
        .route(
            "/repos/{owner}/{repo}/pipelines/{name}/dispatch",
            get(ui::dispatch_form).post(ui::dispatch_submit),
        )
        .route("/login", get(login::page).post(login::token_login))
        .route("/login/gitea", get(login::start_gitea))
        .route("/login/oauth/callback", get(login::callback))
        .route("/logout", post(login::logout))
        .layer(middleware::from_fn_with_state(
            BodyBounds::api(limits, budget),
            bounded_body,
        ))
        .merge(hooks)
        .fallback(ui::not_found)
        .with_state(app)
}
