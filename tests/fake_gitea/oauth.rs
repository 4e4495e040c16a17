//! Gitea as an OAuth2 provider (`routers/web/auth/oauth2_provider.go`, gitea-facts.md §6):
//! registered applications, `GET /login/oauth/authorize` for the user signed in to Gitea in
//! "the browser", `POST /login/oauth/access_token` (authorization code with PKCE, refresh),
//! and users' tokens (personal or OAuth) and passwords for the API.
//!
//! Differences from Gitea, on purpose:
//! - Gitea shows a sign-in page to a browser without a Gitea session and a grant page the
//!   first time a user meets an application. The fake has one "browser" whose user tests
//!   set ([`FakeGitea::set_browser_user`]); without one it redirects to `/user/login` as
//!   Gitea does, and with one it grants at once, as Gitea does for a confidential client
//!   the user granted before.
//! - Gitea's access and refresh tokens are JWTs; the fake's are random strings (clients
//!   treat them as opaque).

use super::*;

/// How long an access token lasts: Gitea's `[oauth2] ACCESS_TOKEN_EXPIRATION_TIME` default.
pub const OAUTH_ACCESS_TOKEN_SECS: i64 = 3600;
/// How long an authorization code may wait for its exchange (Gitea: 10 minutes).
const CODE_SECS: i64 = 600;

/// An OAuth2 application registered in the fake (a confidential client, as Gitea makes by
/// default).
#[derive(Clone, Debug)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Clone, Debug)]
pub(super) struct AppRec {
    pub(super) id: i64,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) redirect_uris: Vec<String>,
}

#[derive(Clone, Debug)]
pub(super) struct CodeRec {
    pub(super) app: i64,
    pub(super) login: String,
    pub(super) redirect_uri: String,
    pub(super) challenge: String,
    pub(super) method: String,
    pub(super) created: i64,
}

#[derive(Clone, Debug)]
pub(super) struct TokenRec {
    pub(super) login: String,
    /// When an OAuth access token stops working; personal tokens never do.
    pub(super) expires: Option<i64>,
}

#[derive(Debug, Default)]
pub(super) struct OAuthState {
    pub(super) apps: Vec<AppRec>,
    pub(super) codes: HashMap<String, CodeRec>,
    /// Token → its user.
    pub(super) tokens: HashMap<String, TokenRec>,
    /// Refresh token → (application id, user).
    pub(super) refresh: HashMap<String, (i64, String)>,
    /// Login (lower case) → password.
    pub(super) passwords: HashMap<String, String>,
    pub(super) browser_user: Option<String>,
    /// Lifetime of new access tokens, when a test shortens it.
    pub(super) access_secs: Option<i64>,
}

fn random_token(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random_bytes::<20>()))
}

impl FakeGitea {
    /// Registers an OAuth2 application with its redirect URIs; Gitea gives it a UUID client
    /// id and a `gto_` secret.
    pub fn create_oauth_app(&self, redirect_uris: &[&str]) -> OAuthApp {
        let mut state = self.shared.lock();
        let id = i64::try_from(state.oauth.apps.len()).unwrap_or(0) + 1;
        let rec = AppRec {
            id,
            client_id: uuid_v4(),
            client_secret: random_token("gto_"),
            redirect_uris: redirect_uris.iter().map(|s| (*s).to_owned()).collect(),
        };
        state.oauth.apps.push(rec.clone());
        OAuthApp {
            client_id: rec.client_id,
            client_secret: rec.client_secret,
        }
    }

    /// Replaces an application's redirect URIs (as editing it in Gitea's settings does).
    pub fn set_redirect_uris(&self, app: &OAuthApp, redirect_uris: &[&str]) {
        let mut state = self.shared.lock();
        if let Some(rec) = state
            .oauth
            .apps
            .iter_mut()
            .find(|a| a.client_id == app.client_id)
        {
            rec.redirect_uris = redirect_uris.iter().map(|s| (*s).to_owned()).collect();
        }
    }

    /// The user signed in to Gitea in the tests' "browser" (`None`: nobody).
    pub fn set_browser_user(&self, login: Option<&str>) {
        let mut state = self.shared.lock();
        if let Some(login) = login {
            state.ensure_user(login);
        }
        state.oauth.browser_user = login.map(str::to_owned);
    }

    /// A personal access token of `login` (created if new), for the API.
    pub fn create_user_token(&self, login: &str) -> String {
        let mut state = self.shared.lock();
        state.ensure_user(login);
        let token = random_token("");
        state.oauth.tokens.insert(
            token.clone(),
            TokenRec {
                login: login.to_owned(),
                expires: None,
            },
        );
        token
    }

    /// Sets `login`'s password (created if new), for HTTP Basic on the API.
    pub fn set_password(&self, login: &str, password: &str) {
        let mut state = self.shared.lock();
        state.ensure_user(login);
        state
            .oauth
            .passwords
            .insert(login.to_lowercase(), password.to_owned());
    }

    /// Makes new OAuth access tokens last `secs` instead of an hour.
    pub fn set_oauth_token_lifetime(&self, secs: i64) {
        self.shared.lock().oauth.access_secs = Some(secs);
    }

    /// Revokes every token of `login` (as deleting its tokens and grants in Gitea does).
    pub fn revoke_tokens(&self, login: &str) {
        let mut state = self.shared.lock();
        state
            .oauth
            .tokens
            .retain(|_, t| !t.login.eq_ignore_ascii_case(login));
        state
            .oauth
            .refresh
            .retain(|_, (_, l)| !l.eq_ignore_ascii_case(login));
    }
}

impl Shared {
    /// The user of a personal or OAuth token, if it is one and has not expired.
    pub(super) fn user_of_token(&self, token: &str) -> Option<i64> {
        let state = self.lock();
        let rec = state.oauth.tokens.get(token)?;
        if rec.expires.is_some_and(|at| now_secs() >= at) {
            return None;
        }
        state.user(&rec.login).map(|u| u.id)
    }

    /// The user whose password this is.
    pub(super) fn user_of_password(&self, login: &str, password: &str) -> Option<i64> {
        let state = self.lock();
        let known = state.oauth.passwords.get(&login.to_lowercase())?;
        (known == password && !password.is_empty())
            .then(|| state.user(login).map(|u| u.id))
            .flatten()
    }
}

/// An HTML page as Gitea's `user/auth/grant_error` template shows an authorize error.
fn grant_error(code: &str, description: &str) -> Response {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(format!(
            "<!DOCTYPE html><html><body><div class=\"ui negative message\">{code}: {description}</div></body></html>"
        )))
        .expect("valid response")
}

/// Gitea's redirects (`ctx.Redirect`, `services/context/base.go`) are 303 See Other unless
/// told otherwise; the authorize endpoint never says otherwise.
fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .body(Body::empty())
        .expect("valid response")
}

/// `redirect_uri` with `params` added to its query, as Go's `url.Values.Encode` writes them
/// (sorted by key).
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut all = parse_query(query);
    for (key, value) in params {
        all.retain(|(k, _)| k != key);
        all.push(((*key).to_owned(), (*value).to_owned()));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let encoded: Vec<String> = all
        .iter()
        .map(|(k, v)| format!("{}={}", form_urlencode(k), form_urlencode(v)))
        .collect();
    format!("{base}?{}", encoded.join("&"))
}

/// `handleAuthorizeError` with a redirect URI: back to the client with `error`,
/// `error_description` and `state`.
fn authorize_error(redirect_uri: &str, code: &str, description: &str, state: &str) -> Response {
    see_other(&with_query(
        redirect_uri,
        &[
            ("error", code),
            ("error_description", description),
            ("state", state),
        ],
    ))
}

/// `GET /login/oauth/authorize` (`AuthorizeOAuth`).
pub(super) fn authorize(shared: &Shared, parts: &Parts) -> Response {
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let param = |key: &str| query_get(&query, key).unwrap_or_default();
    let mut state = shared.lock();
    // The route needs a signed-in user (`reqSignIn`): to the sign-in page first.
    let Some(login) = state.oauth.browser_user.clone() else {
        let back = format!(
            "{}?{}",
            parts.uri.path(),
            parts.uri.query().unwrap_or_default()
        );
        return see_other(&format!(
            "/user/login?redirect_to={}",
            form_urlencode(&back)
        ));
    };
    let (client_id, redirect_uri, st) = (param("client_id"), param("redirect_uri"), param("state"));
    let Some(app) = state
        .oauth
        .apps
        .iter()
        .find(|a| a.client_id == client_id)
        .cloned()
    else {
        return grant_error("unauthorized_client", "Client ID not registered");
    };
    // Gitea never redirects to a URI the application did not register.
    if !app.redirect_uris.contains(&redirect_uri) {
        return grant_error("invalid_request", "Unregistered Redirect URI");
    }
    if param("response_type") != "code" {
        return authorize_error(
            &redirect_uri,
            "unsupported_response_type",
            "Only code response type is supported.",
            &st,
        );
    }
    let method = param("code_challenge_method");
    if !matches!(method.as_str(), "S256" | "plain" | "") {
        return authorize_error(
            &redirect_uri,
            "invalid_request",
            "unsupported code challenge method",
            &st,
        );
    }
    let code = random_token("");
    state.oauth.codes.insert(
        code.clone(),
        CodeRec {
            app: app.id,
            login,
            redirect_uri: redirect_uri.clone(),
            challenge: param("code_challenge"),
            method,
            created: now_secs(),
        },
    );
    let mut params = vec![("code", code.as_str())];
    if !st.is_empty() {
        params.push(("state", st.as_str()));
    }
    see_other(&with_query(&redirect_uri, &params))
}

/// `handleAccessTokenError`: 400 with `{"error", "error_description"}`.
fn token_error(code: &str, description: &str) -> Reply {
    Reply::json(
        400,
        json!({"error": code, "error_description": description}),
    )
}

/// The fields of a token request: a JSON object or a form, as Gitea's binding reads
/// either by the content type.
fn token_fields(parts: &Parts, body: &[u8]) -> HashMap<String, String> {
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        value
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        parse_query(&String::from_utf8_lossy(body))
            .into_iter()
            .collect()
    }
}

/// The request body as recorded: the secrets a token request carries are replaced.
pub(super) fn redacted_token_body(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let secret = ["client_secret", "code", "code_verifier", "refresh_token"];
    if text.trim_start().starts_with('{') {
        let mut value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(object) = value.as_object_mut() {
            for key in secret {
                if let Some(v) = object.get_mut(key) {
                    *v = json!("REDACTED");
                }
            }
        }
        return value.to_string().into_bytes();
    }
    parse_query(&text)
        .into_iter()
        .map(|(k, v)| {
            let v = if secret.contains(&k.as_str()) {
                "REDACTED".to_owned()
            } else {
                v
            };
            format!("{}={}", form_urlencode(&k), form_urlencode(&v))
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn pkce_ok(code: &CodeRec, verifier: &str) -> bool {
    match code.method.as_str() {
        "S256" => {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier))
                == code.challenge
        }
        "plain" => verifier == code.challenge,
        // No challenge was asked with: nothing to check.
        _ => true,
    }
}

fn new_tokens(state: &mut State, app: i64, login: &str) -> Value {
    let access = random_token("");
    let refresh = random_token("");
    let secs = state.oauth.access_secs.unwrap_or(OAUTH_ACCESS_TOKEN_SECS);
    state.oauth.tokens.insert(
        access.clone(),
        TokenRec {
            login: login.to_owned(),
            expires: Some(now_secs() + secs),
        },
    );
    state
        .oauth
        .refresh
        .insert(refresh.clone(), (app, login.to_owned()));
    json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": secs,
        "refresh_token": refresh,
    })
}

/// `POST /login/oauth/access_token` (`AccessTokenOAuth`).
pub(super) fn access_token(shared: &Shared, parts: &Parts, body: &[u8]) -> Reply {
    let mut fields = token_fields(parts, body);
    let field = |f: &HashMap<String, String>, k: &str| f.get(k).cloned().unwrap_or_default();
    // Client credentials may come as HTTP Basic instead of in the body.
    if (field(&fields, "client_id").is_empty() || field(&fields, "client_secret").is_empty())
        && let Some(value) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    {
        let decoded = value
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return token_error("invalid_request", "cannot parse basic auth header");
        };
        fields.insert("client_id".into(), id.to_owned());
        fields.insert("client_secret".into(), secret.to_owned());
    }
    let mut state = shared.lock();
    let client_id = field(&fields, "client_id");
    let app = state
        .oauth
        .apps
        .iter()
        .find(|a| a.client_id == client_id)
        .cloned();
    let secret = field(&fields, "client_secret");
    let bad_secret = |app: &AppRec| app.client_secret != secret;
    let secret_error = match secret.is_empty() {
        true => "invalid empty client secret",
        false => "invalid client secret",
    };
    match field(&fields, "grant_type").as_str() {
        "authorization_code" => {
            let Some(app) = app else {
                return token_error(
                    "invalid_client",
                    &format!("cannot load client with client id: '{client_id}'"),
                );
            };
            if bad_secret(&app) {
                return token_error("unauthorized_client", secret_error);
            }
            let redirect_uri = field(&fields, "redirect_uri");
            if !redirect_uri.is_empty() && !app.redirect_uris.contains(&redirect_uri) {
                return token_error("unauthorized_client", "unexpected redirect URI");
            }
            let Some(code) = state.oauth.codes.get(&field(&fields, "code")).cloned() else {
                return token_error("unauthorized_client", "client is not authorized");
            };
            let code_key = field(&fields, "code");
            if now_secs() - code.created >= CODE_SECS {
                state.oauth.codes.remove(&code_key);
                return token_error("invalid_grant", "authorization code expired");
            }
            if !pkce_ok(&code, &field(&fields, "code_verifier")) {
                return token_error("unauthorized_client", "failed PKCE code challenge");
            }
            if redirect_uri != code.redirect_uri {
                return token_error(
                    "invalid_grant",
                    "redirect_uri differs from the original authorization request",
                );
            }
            if code.app != app.id {
                return token_error("invalid_grant", "invalid grant");
            }
            // Codes are deleted when used: a second exchange finds none.
            state.oauth.codes.remove(&code_key);
            Reply::json(200, new_tokens(&mut state, app.id, &code.login))
        }
        "refresh_token" => {
            let Some(app) = app else {
                return token_error(
                    "invalid_client",
                    &format!("cannot load client with client id: {client_id:?}"),
                );
            };
            if bad_secret(&app) {
                return token_error("invalid_client", secret_error);
            }
            let Some((owner, login)) = state
                .oauth
                .refresh
                .get(&field(&fields, "refresh_token"))
                .cloned()
            else {
                return token_error("unauthorized_client", "unable to parse refresh token");
            };
            if owner != app.id {
                return token_error(
                    "invalid_grant",
                    "refresh token belongs to a different client",
                );
            }
            Reply::json(200, new_tokens(&mut state, app.id, &login))
        }
        _ => token_error(
            "unsupported_grant_type",
            "Only refresh_token or authorization_code grant type is supported",
        ),
    }
}
