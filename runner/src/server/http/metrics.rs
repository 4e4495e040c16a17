//! `GET /metrics`: the server's metrics in the Prometheus text format 0.0.4, without
//! authentication (they name no repository, run or person).

use std::sync::Arc;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tracing::warn;

use crate::server::{App, metrics::CONTENT_TYPE};

pub async fn scrape(State(app): State<Arc<App>>) -> Response {
    let sizes = async {
        let mut q = app.store.queue_sizes().await?;
        (q.other_agents_live, q.other_agents_draining) =
            app.store.other_agents(&app.instance).await?;
        Ok::<_, crate::store::StoreError>(q)
    };
    let queues = match sizes.await {
        Ok(q) => Some(q),
        Err(e) => {
            warn!(error = ?e, "metrics: failed to read the queues from the database");
            None
        }
    };
    match app.metrics.encode(&app.store.run_ends(), queues) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
