//! The HTTP layer: the connection loop and its limits, the router, API tokens, the webhook
//! receiver, the API, dispatch, the UI and signing in to it.

pub(super) mod api;
pub(super) mod auth;
pub(super) mod conn;
pub(super) mod control;
pub(super) mod dispatch;
pub(super) mod dto;
pub(super) mod errors;
pub(super) mod login;
pub(super) mod metrics;
pub(super) mod router;
pub(super) mod session;
pub(super) mod ui;
pub(super) mod webhook;
