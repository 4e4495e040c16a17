//! The HTTP server loop and its bounds on clients, so that neither slow nor many clients
//! exhaust memory or descriptors: a cap on connections (at the cap, the oldest connection
//! that has not sent a request yet makes room for a new one), hyper's header read timeout
//! (which also closes idle keep-alive connections), a body read timeout, body size caps, a
//! memory budget for request bodies (a stalled body holds only what it sent), and a cap on
//! webhook deliveries processed at once.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use pipewright_containers::CancellationToken;
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tracing::{debug, warn};

use crate::config::HttpLimits;

/// Largest body of a request that is not a webhook delivery (dispatch inputs are small).
const MAX_API_BODY: usize = 64 << 10;

/// How long shutdown waits for open connections (a followed log can stay open for long).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bounds for the routes: every request body is read whole, within `body_timeout`, before
/// a handler runs, holding its share of the body memory budget (shared by every route)
/// until the answer; deliveries then also wait for one of `max_deliveries` processing
/// slots (parsing a 5 MiB payload takes several times that).
#[derive(Clone, Debug)]
pub struct BodyBounds {
    timeout: Duration,
    max_bytes: usize,
    /// Body memory in KiB.
    budget: Arc<Semaphore>,
    slots: Option<Arc<Semaphore>>,
}

/// The body memory budget of the whole server, in KiB (room for one largest body at least).
pub fn body_budget(limits: &HttpLimits, largest_body: usize) -> Arc<Semaphore> {
    let kib = usize::try_from(limits.body_memory >> 10).unwrap_or(usize::MAX);
    let kib = kib.clamp(largest_body >> 10, Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(kib))
}

impl BodyBounds {
    pub fn api(limits: &HttpLimits, budget: Arc<Semaphore>) -> BodyBounds {
        BodyBounds {
            timeout: limits.body_timeout,
            max_bytes: MAX_API_BODY,
            budget,
            slots: None,
        }
    }

    pub fn deliveries(limits: &HttpLimits, budget: Arc<Semaphore>, max_bytes: usize) -> BodyBounds {
        BodyBounds {
            timeout: limits.body_timeout,
            max_bytes,
            budget,
            slots: Some(Arc::new(Semaphore::new(limits.max_deliveries.max(1)))),
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    // The rest of a refused body is never read: the connection cannot be reused.
    let body = axum::Json(serde_json::json!({ "message": message }));
    (status, [(header::CONNECTION, "close")], body).into_response()
}

fn busy(message: &str) -> Response {
    let mut answer = refuse(StatusCode::SERVICE_UNAVAILABLE, message);
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    answer
}

/// 413, once the rest of the body is read and dropped (if it arrives before `deadline`).
async fn too_large(body: &mut Body, deadline: tokio::time::Instant, message: &str) -> Response {
    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
    match tokio::time::timeout_at(deadline, drain).await {
        Ok(()) => {
            let body = axum::Json(serde_json::json!({ "message": message }));
            (StatusCode::PAYLOAD_TOO_LARGE, body).into_response()
        }
        Err(_) => refuse(StatusCode::PAYLOAD_TOO_LARGE, message),
    }
}

/// Middleware: reads the request body as [`BodyBounds`] say, then hands the request on.
pub async fn bounded_body(
    State(bounds): State<BodyBounds>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = tokio::time::Instant::now() + bounds.timeout;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, mut body) = request.into_parts();
    let message = format!("the body is over {} bytes", bounds.max_bytes);
    if declared.is_some_and(|n| n > bounds.max_bytes as u64) {
        // Read the rest, in time, so that the client sees the answer (closing with unread
        // bytes resets the connection); a body far over the limit is not worth reading.
        if declared.is_some_and(|n| n <= 4 * bounds.max_bytes as u64) {
            return too_large(&mut body, deadline, &message).await;
        }
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    let mut bytes = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
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
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > bounds.max_bytes {
            drop(held);
            return too_large(&mut body, deadline, &message).await;
        }
        let kib = u32::try_from(data.len().div_ceil(1024)).unwrap_or(u32::MAX);
        let share = bounds.budget.clone().acquire_many_owned(kib);
        match tokio::time::timeout_at(deadline, share).await {
            Ok(Ok(share)) => match &mut held {
                Some(held) => held.merge(share),
                None => held = Some(share),
            },
            _ => {
                warn!("the memory for request bodies is taken: a request refused");
                return busy("too many request bodies at once; try again");
            }
        }
        bytes.extend_from_slice(&data);
    }
    let _slot = match &bounds.slots {
        Some(slots) => {
            match tokio::time::timeout(bounds.timeout, slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    warn!("too many deliveries at once: one refused");
                    return busy("too many deliveries at once; try again");
                }
            }
        }
        None => None,
    };
    let answer = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(held);
    answer
}

/// Connections that have not sent a whole request yet, oldest first: when every slot is
/// taken, a new connection closes the oldest of them (a slowloris connection, most likely),
/// so deliveries keep being answered whatever the number of slow clients.
#[derive(Debug, Default)]
struct Unproven {
    connections: Mutex<BTreeMap<u64, CancellationToken>>,
}

impl Unproven {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn evict_oldest(&self) -> bool {
        match self.lock().pop_first() {
            Some((_, close)) => {
                close.cancel();
                true
            }
            None => false,
        }
    }
}

/// The router as one connection's service: its first request proves the connection.
struct Connection {
    id: u64,
    unproven: Arc<Unproven>,
    proven: AtomicBool,
    inner: TowerToHyperService<Router>,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if !self.proven.swap(true, Ordering::Relaxed) {
            self.unproven.lock().remove(&self.id);
        }
        self.inner.call(request)
    }
}

/// Accepts connections and serves `router` on each over HTTP/1.1 with a header read
/// timeout, at most `max_connections` at once (at the cap, a new connection closes the
/// oldest one that has not sent a request yet, or waits), until `shutdown`; then lets open
/// connections finish their requests for a few seconds.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let unproven = Arc::new(Unproven::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10);
    let builder = Arc::new(builder);
    let mut connections: JoinSet<()> = JoinSet::new();
    for id in 0u64.. {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: wait
                // a little instead of spinning.
                warn!(error = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if unproven.evict_oldest() {
                    debug!("at the connection cap: closed the oldest connection without a request");
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let close = CancellationToken::new();
        unproven.lock().insert(id, close.clone());
        let service = Connection {
            id,
            unproven: unproven.clone(),
            proven: AtomicBool::new(false),
            inner: TowerToHyperService::new(router.clone()),
        };
        let (builder, stop, unproven) = (builder.clone(), shutdown.clone(), unproven.clone());
        connections.spawn(async move {
            let _slot = slot;
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = close.cancelled() => Ok(()),
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            unproven.lock().remove(&id);
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
