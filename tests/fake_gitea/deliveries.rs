//! Webhook deliveries: a payload with Gitea's headers and signatures, sent as Gitea's
//! webhook client sends it.

use super::*;

/// A webhook delivery: the exact body (Go's `MarshalIndent` with two spaces, HTML
/// characters escaped like Go's encoder) and the delivery id (a fresh UUID v4).
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `X-Gitea-Event`, e.g. `issue_comment`.
    pub event: String,
    /// `X-Gitea-Event-Type`, e.g. `pull_request_comment`.
    pub event_type: String,
    pub body: Vec<u8>,
    /// `X-Gitea-Delivery`.
    pub id: String,
}

/// How [`Delivery::deliver_with`] signs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureMode {
    /// Gitea's headers with the HMACs keyed by the secret; an empty secret gives Gitea's
    /// unsigned headers (`""`, `sha1=`, `sha256=`).
    #[default]
    Correct,
    /// HMACs keyed by another secret.
    Wrong,
    /// The headers present but empty, as Gitea sends them when the hook has no secret.
    Empty,
    /// No signature headers at all.
    Missing,
}

/// The webhook's content type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentType {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`, body `payload=<urlencoded JSON>`; the signature
    /// still covers the JSON.
    Form,
}

/// Options for [`Delivery::deliver_with`].
#[derive(Clone, Debug)]
pub struct DeliverOptions {
    pub secret: String,
    pub signature: SignatureMode,
    pub content_type: ContentType,
    /// The hook's "Authorization Header", sent verbatim.
    pub authorization: Option<String>,
    /// `X-Gitea-Hook-Installation-Target-Type`: `repository`, `organization`, `system`...
    pub target_type: String,
}

impl DeliverOptions {
    pub fn new(secret: &str) -> Self {
        DeliverOptions {
            secret: secret.to_owned(),
            ..DeliverOptions::default()
        }
    }
}

impl Default for DeliverOptions {
    fn default() -> Self {
        DeliverOptions {
            secret: String::new(),
            signature: SignatureMode::Correct,
            content_type: ContentType::Json,
            authorization: None,
            target_type: "repository".to_owned(),
        }
    }
}

impl Delivery {
    /// A delivery of `payload` rendered as Gitea renders it, with a fresh delivery id.
    pub fn new(event_type: &str, payload: &Value) -> Delivery {
        Delivery::from_body(event_type, go_json(payload, true))
    }

    /// A delivery of exactly these bytes (say, a captured payload).
    pub fn from_body(event_type: &str, body: Vec<u8>) -> Delivery {
        Delivery {
            event: event_for_type(event_type).to_owned(),
            event_type: event_type.to_owned(),
            body,
            id: uuid_v4(),
        }
    }

    /// The body parsed.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery's body is JSON")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The same delivery (same id) with its payload changed by `f` and rendered again.
    pub fn edit(&self, f: impl FnOnce(&mut Value)) -> Delivery {
        let mut value = self.json();
        f(&mut value);
        Delivery {
            body: go_json(&value, true),
            ..self.clone()
        }
    }

    /// What Gitea's "Replay" sends: the same body under a new delivery id.
    pub fn replay(&self) -> Delivery {
        Delivery {
            id: uuid_v4(),
            ..self.clone()
        }
    }

    /// The same delivery under the given id.
    pub fn with_id(&self, id: &str) -> Delivery {
        Delivery {
            id: id.to_owned(),
            ..self.clone()
        }
    }

    /// The headers Gitea sends (`services/webhook/deliver.go`, `addDefaultHeaders`).
    pub fn headers(&self, options: &DeliverOptions) -> Vec<(String, String)> {
        let (sha1, sha256) = match options.signature {
            SignatureMode::Correct if !options.secret.is_empty() => (
                sign_sha1(&options.secret, &self.body),
                sign(&options.secret, &self.body),
            ),
            SignatureMode::Wrong => {
                let wrong = format!("not-{}", options.secret);
                (sign_sha1(&wrong, &self.body), sign(&wrong, &self.body))
            }
            _ => (String::new(), String::new()),
        };
        let signed = options.signature != SignatureMode::Missing;
        let content_type = match options.content_type {
            ContentType::Json => "application/json",
            ContentType::Form => "application/x-www-form-urlencoded",
        };
        let mut headers = vec![
            ("User-Agent", "Go-http-client/1.1".to_owned()),
            ("Content-Type", content_type.to_owned()),
            ("X-Gitea-Delivery", self.id.clone()),
            ("X-Gitea-Event", self.event.clone()),
            ("X-Gitea-Event-Type", self.event_type.clone()),
        ];
        if signed {
            headers.push(("X-Gitea-Signature", sha256.clone()));
        }
        headers.push((
            "X-Gitea-Hook-Installation-Target-Type",
            options.target_type.clone(),
        ));
        headers.extend([
            ("X-Gogs-Delivery", self.id.clone()),
            ("X-Gogs-Event", self.event.clone()),
            ("X-Gogs-Event-Type", self.event_type.clone()),
        ]);
        if signed {
            headers.extend([
                ("X-Gogs-Signature", sha256.clone()),
                ("X-Hub-Signature", format!("sha1={sha1}")),
                ("X-Hub-Signature-256", format!("sha256={sha256}")),
            ]);
        }
        headers.extend([
            ("X-GitHub-Delivery", self.id.clone()),
            ("X-GitHub-Event", self.event.clone()),
            ("X-GitHub-Event-Type", self.event_type.clone()),
            (
                "X-GitHub-Hook-Installation-Target-Type",
                options.target_type.clone(),
            ),
        ]);
        if let Some(authorization) = &options.authorization {
            headers.push(("Authorization", authorization.clone()));
        }
        headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// The request body for the content type: the JSON, or `payload=<urlencoded JSON>`.
    pub fn request_body(&self, content_type: ContentType) -> Vec<u8> {
        match content_type {
            ContentType::Json => self.body.clone(),
            ContentType::Form => format!("payload={}", form_urlencode(&self.text())).into_bytes(),
        }
    }

    /// POSTs the delivery as Gitea would, signed with `secret`, and returns the answer's
    /// status and body. A transport error (refused, timed out after Gitea's 5 s) gives
    /// status 0 and the error's text.
    pub async fn deliver(&self, receiver_url: &str, secret: &str) -> (u16, String) {
        self.deliver_with(receiver_url, &DeliverOptions::new(secret))
            .await
    }

    /// [`Delivery::deliver`] with a chosen signature mode, content type, and so on.
    pub async fn deliver_with(
        &self,
        receiver_url: &str,
        options: &DeliverOptions,
    ) -> (u16, String) {
        let mut request = http_client()
            .post(receiver_url)
            .body(self.request_body(options.content_type));
        for (key, value) in self.headers(options) {
            request = request.header(key, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                (status, body)
            }
            Err(err) => (0, format!("{err:?}")),
        }
    }
}

/// An HTTP client like Gitea's webhook client: 5 s timeout for the whole exchange, Go's
/// user agent, redirects followed (a 301/302/303 turns the POST into a GET), no pooling.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .user_agent("Go-http-client/1.1")
        .pool_max_idle_per_host(0)
        .build()
        .expect("cannot build an HTTP client")
}

/// Lowercase hex HMAC-SHA256 of `body` keyed by `secret`: `X-Gitea-Signature`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    hmac_hex::<Hmac<Sha256>>(secret, body)
}

/// Lowercase hex HMAC-SHA1 of `body` keyed by `secret`: `X-Hub-Signature` without `sha1=`.
pub fn sign_sha1(secret: &str, body: &[u8]) -> String {
    hmac_hex::<Hmac<Sha1>>(secret, body)
}

fn hmac_hex<M: Mac + KeyInit>(secret: &str, body: &[u8]) -> String {
    let mut mac = <M as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
