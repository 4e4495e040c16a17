//! `POST /hooks/gitea`: verify, classify, store durably, answer — in that order, fast;
//! each answer is counted in the metrics by its result, with its time.
//!
//! Gitea never retries and gives up after 5 s, so a delivery is committed to the database
//! before the 2xx answer; concurrent deliveries share one commit (group commit), which keeps
//! the answer fast under bursts with SQLite's one disk sync per transaction.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use hmac::{Hmac, KeyInit, Mac};
use pipewright_containers::CancellationToken;
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::server::{App, metrics::WebhookResult};
use crate::{
    events::{Decoded, decode},
    store::{NewDelivery, Received, Store},
};

/// Largest body accepted (413 beyond).
pub const MAX_BODY: usize = 5 << 20;

type Reply = oneshot::Sender<Result<Received, String>>;

/// The note of a delivery stored set aside (the same as ingest's for such a delivery).
pub const SET_ASIDE: &str = "repository not in [[repos]]: ignored";

/// Hands deliveries to the one task that writes them, batched.
#[derive(Debug)]
pub struct DeliveryWriter {
    tx: mpsc::Sender<(NewDelivery, Reply)>,
    /// Held by the running writer task; a restarted writer (after a panic) takes it again.
    rx: tokio::sync::Mutex<mpsc::Receiver<(NewDelivery, Reply)>>,
    store: Store,
}

impl DeliveryWriter {
    pub fn new(store: Store) -> DeliveryWriter {
        let (tx, rx) = mpsc::channel(4096);
        DeliveryWriter {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            store,
        }
    }

    /// Stores one delivery; returns once it is durable.
    pub async fn store(&self, delivery: NewDelivery) -> Result<Received, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((delivery, reply))
            .await
            .map_err(|_| "the delivery writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the delivery writer has stopped".to_string())?
    }
}

/// The writer task: takes what is waiting, commits it in one transaction, answers all.
pub async fn run_writer(app: Arc<App>, stop: CancellationToken) {
    let mut rx = app.deliveries.rx.lock().await;
    let store = app.deliveries.store.clone();
    loop {
        let first = tokio::select! {
            item = rx.recv() => item,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (deliveries, replies): (Vec<NewDelivery>, Vec<Reply>) = batch.into_iter().unzip();
        // A delivery of a repository outside `[[repos]]` (an organization's webhook sends
        // every repository's) is stored already set aside, as ingest would set it aside
        // at once: one disk sync instead of two on the one write connection.
        let set_aside = |d: &NewDelivery| (!app.config.repo_allowed(&d.repo)).then_some(SET_ASIDE);
        let to_process = deliveries.iter().any(|d| set_aside(d).is_none());
        match store
            .insert_deliveries_settled(&deliveries, set_aside)
            .await
        {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                if to_process {
                    app.ingest_wake.notify_one();
                }
            }
            Err(e) => {
                warn!(error = ?e, count = deliveries.len(), "failed to store deliveries");
                for reply in replies {
                    let _ = reply.send(Err("failed to store the delivery".into()));
                }
            }
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Checks Gitea's signature in constant time: `X-Gitea-Signature` (bare hex) or
/// `X-Hub-Signature-256` (`sha256=` hex), over the signed bytes.
fn signature_ok(secret: &[u8], headers: &HeaderMap, signed: &[u8]) -> bool {
    let given = header_str(headers, &["x-gitea-signature", "x-gogs-signature"]).or_else(|| {
        header_str(headers, &["x-hub-signature-256"]).and_then(|v| v.strip_prefix("sha256="))
    });
    let Some(given) = given.and_then(|hex_text| hex::decode(hex_text).ok()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(signed);
    mac.verify_slice(&given).is_ok()
}

/// The JSON document of a delivery: the body, or the `payload` field of a form body (which
/// is what Gitea signs in that case).
fn json_of(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Ok(body.to_vec());
    }
    for pair in body.split(|b| *b == b'&') {
        if let Some(value) = pair.strip_prefix(b"payload=") {
            return percent_decode(value)
                .ok_or("the form's payload field is not valid URL encoding");
        }
    }
    Err("a form-encoded delivery without a payload field")
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex_pair = input.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex_pair).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "message": message.into() }).to_string(),
    )
        .into_response()
}

pub async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let (result, response) = handle(&app, &headers, body).await;
    app.metrics.webhook(result, started.elapsed());
    response
}

/// Verifies, classifies and stores a delivery; says how it was answered, for the metrics.
async fn handle(app: &App, headers: &HeaderMap, body: Bytes) -> (WebhookResult, Response) {
    use WebhookResult::{Accepted, Duplicate, Ignored, Invalid, Ping, Refused, Unavailable};
    let Some(secret) = app.config.gitea.webhook_secret.as_ref() else {
        warn!("webhook refused: no [gitea].webhook_secret is configured");
        return (
            Refused,
            answer(StatusCode::UNAUTHORIZED, "webhook secret not configured"),
        );
    };
    let json = match json_of(headers, &body) {
        Ok(json) => json,
        Err(why) => {
            // The signature cannot be checked without the signed document: refuse as unsigned.
            warn!(reason = why, "webhook refused");
            return (
                Refused,
                answer(StatusCode::UNAUTHORIZED, "invalid signature"),
            );
        }
    };
    if !signature_ok(secret.expose().as_bytes(), headers, &json) {
        warn!("webhook refused: missing or wrong signature");
        return (
            Refused,
            answer(StatusCode::UNAUTHORIZED, "invalid signature"),
        );
    }
    let Some(event_type) = header_str(
        headers,
        &[
            "x-gitea-event-type",
            "x-gogs-event-type",
            "x-gitea-event",
            "x-gogs-event",
        ],
    ) else {
        return (
            Invalid,
            answer(StatusCode::BAD_REQUEST, "no X-Gitea-Event-Type header"),
        );
    };
    if event_type.len() > 64
        || !event_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return (
            Invalid,
            answer(
                StatusCode::BAD_REQUEST,
                "X-Gitea-Event-Type is not an event type (lowercase letters and `_`)",
            ),
        );
    }
    let event_type = event_type.to_string();
    let delivery_id = match header_str(
        headers,
        &["x-gitea-delivery", "x-gogs-delivery", "x-github-delivery"],
    ) {
        Some(id) if id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_string(),
        Some(_) => {
            return (
                Invalid,
                answer(
                    StatusCode::BAD_REQUEST,
                    "X-Gitea-Delivery is not a delivery id (at most 200 printable ASCII characters)",
                ),
            );
        }
        None => {
            use sha2::Digest;
            format!("sha256:{}", hex::encode(Sha256::digest(&json)))
        }
    };
    let decoded = match decode(&event_type, &json) {
        Ok(d) => d,
        Err(e) => {
            let why = crate::error_chain(&e);
            info!(delivery_id = %delivery_id, event_type = %event_type, error = %why, "webhook refused: bad payload");
            return (Invalid, answer(StatusCode::BAD_REQUEST, why));
        }
    };
    match &decoded {
        Decoded::Ping => {
            info!(delivery_id = %delivery_id, "test delivery received");
            (
                Ping,
                answer(
                    StatusCode::OK,
                    "pong: Pipewright received the test delivery",
                ),
            )
        }
        Decoded::Ignore(why) => {
            info!(delivery_id = %delivery_id, event_type = %event_type, reason = %why, "delivery ignored");
            (Ignored, answer(StatusCode::ACCEPTED, why))
        }
        Decoded::Act(_) | Decoded::Command(_) => {
            let repo = decoded
                .repo()
                .map(|r| r.full_name.clone())
                .unwrap_or_default();
            let delivery = NewDelivery {
                delivery_id: delivery_id.clone(),
                event_type,
                repo: repo.clone(),
                payload: json,
            };
            match app.deliveries.store(delivery).await {
                Ok(Received::New(id)) => {
                    info!(delivery_id = %delivery_id, repo = %repo, id, "delivery stored");
                    (
                        Accepted,
                        answer(StatusCode::ACCEPTED, format!("queued as delivery {id}")),
                    )
                }
                Ok(Received::Duplicate) => {
                    info!(delivery_id = %delivery_id, "duplicate delivery ignored");
                    (
                        Duplicate,
                        answer(StatusCode::OK, "duplicate delivery: already received"),
                    )
                }
                Err(why) => (Unavailable, answer(StatusCode::SERVICE_UNAVAILABLE, why)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures() {
        let body = br#"{"a":1}"#;
        let good = sign("s3cret", body);
        let mut h = HeaderMap::new();
        h.insert("x-gitea-signature", good.parse().unwrap());
        assert!(signature_ok(b"s3cret", &h, body));
        assert!(!signature_ok(b"other", &h, body));
        assert!(!signature_ok(b"s3cret", &h, br#"{"a":2}"#));
        let mut hub = HeaderMap::new();
        hub.insert(
            "x-hub-signature-256",
            format!("sha256={good}").parse().unwrap(),
        );
        assert!(signature_ok(b"s3cret", &hub, body));
        for bad in ["", "sha256=", "zz", &good[..10]] {
            let mut h = HeaderMap::new();
            h.insert("x-gitea-signature", bad.parse().unwrap());
            assert!(!signature_ok(b"s3cret", &h, body), "{bad}");
        }
        assert!(!signature_ok(b"s3cret", &HeaderMap::new(), body));
    }

    #[test]
    fn form_bodies_yield_the_signed_json() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert_eq!(
            json_of(&h, b"payload=%7B%22a%22%3A+1%7D").unwrap(),
            br#"{"a": 1}"#
        );
        assert!(json_of(&h, b"other=1").is_err());
    }
}
