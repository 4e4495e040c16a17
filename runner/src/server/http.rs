//! The HTTP server loop and its bounds on clients: a cap on connections, a header read
//! timeout (hyper's, which also closes idle keep-alive connections), a body read timeout,
//! body size caps, and a cap on webhook deliveries read at once. A slow or hostile client
//! holds at most one connection slot for `header_timeout` + `body_timeout`, and memory for
//! bodies is bounded by `max_deliveries` × 5 MiB plus `max_connections` × 64 KiB.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use pipewright_containers::CancellationToken;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tracing::{debug, warn};

use crate::config::HttpLimits;

/// Largest body of a request that is not a webhook delivery (dispatch inputs are small).
const MAX_API_BODY: usize = 64 << 10;

/// How long shutdown waits for open connections (a followed log can stay open for long).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bounds for the routes: every request body is read whole, within `body_timeout`, before
/// a handler runs; deliveries (`deliveries: true`) also wait for one of `max_deliveries`
/// slots first.
#[derive(Clone, Debug)]
pub struct BodyBounds {
    timeout: Duration,
    max_bytes: usize,
    slots: Option<Arc<Semaphore>>,
}

impl BodyBounds {
    pub fn api(limits: &HttpLimits) -> BodyBounds {
        BodyBounds {
            timeout: limits.body_timeout,
            max_bytes: MAX_API_BODY,
            slots: None,
        }
    }

    pub fn deliveries(limits: &HttpLimits, max_bytes: usize) -> BodyBounds {
        BodyBounds {
            timeout: limits.body_timeout,
            max_bytes,
            slots: Some(Arc::new(Semaphore::new(limits.max_deliveries.max(1)))),
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    // The rest of a refused body is never read: the connection cannot be reused.
    let body = axum::Json(serde_json::json!({ "message": message }));
    (status, [(header::CONNECTION, "close")], body).into_response()
}

/// Middleware: reads the request body as [`BodyBounds`] say, then hands the request on.
pub async fn bounded_body(
    State(bounds): State<BodyBounds>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > bounds.max_bytes as u64) {
        let message = format!("the body is over {} bytes", bounds.max_bytes);
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    let _slot = match &bounds.slots {
        Some(slots) => {
            match tokio::time::timeout(bounds.timeout, slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    warn!("too many deliveries are being read at once: one refused");
                    let mut answer = refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many deliveries at once; try again",
                    );
                    answer
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                    return answer;
                }
            }
        }
        None => None,
    };
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, bounds.max_bytes).collect();
    let bytes = match tokio::time::timeout(bounds.timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            let message = format!("the body is over {} bytes", bounds.max_bytes);
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, &message);
        }
        Ok(Err(e)) => {
            debug!(error = %e, "failed to read a request body");
            return refuse(StatusCode::BAD_REQUEST, "failed to read the request body");
        }
        Err(_) => {
            debug!(path = %parts.uri.path(), "a request body did not arrive in time");
            let message = format!(
                "the request body did not arrive within {}s",
                bounds.timeout.as_secs_f32()
            );
            return refuse(StatusCode::REQUEST_TIMEOUT, &message);
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Accepts connections (at most `max_connections` at once) and serves `router` on each over
/// HTTP/1.1 with a header read timeout, until `shutdown`; then lets open connections finish
/// their requests for a few seconds.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10);
    let builder = Arc::new(builder);
    let mut connections: JoinSet<()> = JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: wait
                // a little instead of spinning.
                warn!(error = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let (builder, stop) = (builder.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        debug!("closing connections still open at shutdown");
        connections.shutdown().await;
    }
}
