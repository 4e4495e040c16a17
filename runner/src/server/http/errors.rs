//! The error answer of the API and the UI: a status and a message, no internals.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

/// An error answer: a status and a message, no internals.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "message": self.1 }))).into_response()
    }
}

pub(super) fn internal(e: impl std::fmt::Debug) -> ApiError {
    tracing::warn!(error = ?e, "API request failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}
