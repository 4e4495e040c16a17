//! Signing in to the web UI and out again: the login page, "Sign in with Gitea" (OAuth2
//! authorization code with PKCE S256 against `[gitea].url`), signing in with an API token,
//! and `POST /logout`. Sessions themselves are in `session.rs`.

use std::sync::Arc;

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::config::Scope;
use crate::server::{
    App,
    http::session::{self, COOKIE, Login, PENDING_TTL, check_csrf, constant_time_eq, cookie},
};

/// The cookie holding a pending Gitea sign-in's `state`.
const STATE_COOKIE: &str = "pipewright_oauth_state";

/// What stays unescaped in a query value: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn secure(app: &App) -> &'static str {
    secure_for(&app.config.server.public_url)
}

/// `; Secure` when browsers reach this server over https.
fn secure_for(public_url: &str) -> &'static str {
    match public_url.starts_with("https://") {
        true => "; Secure",
        false => "",
    }
}

/// The session cookie: only for this server's own requests (`SameSite=Strict`), never
/// readable by scripts.
fn session_cookie(app: &App, id: &str) -> String {
    session_cookie_for(&app.config.server.public_url, id)
}

fn session_cookie_for(public_url: &str, id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{}",
        secure_for(public_url)
    )
}

fn clear_cookie(app: &App, name: &str, path: &str, same_site: &str) -> String {
    format!(
        "{name}=; HttpOnly; SameSite={same_site}; Path={path}; Max-Age=0{}",
        secure(app)
    )
}

fn redirect_uri(app: &App) -> String {
    format!("{}/login/oauth/callback", app.config.server.public_url)
}

/// An answer no cache keeps, with the cookies given.
fn answer(status: StatusCode, body: Html<String>, cookies: &[String]) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut response = answer(StatusCode::SEE_OTHER, Html(String::new()), cookies);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The login page, with an error above the forms when given.
fn login_page(app: &App, error: Option<&str>) -> Html<String> {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    let gitea = match app.config.ui.oauth() {
        Some(_) => {
            "<p><a id=\"signin-gitea\" href=\"/login/gitea\">Sign in with Gitea</a></p>\
                    <p>or with an API token:</p>"
        }
        None => "",
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>Sign in · Pipewright</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:28em;padding:0 1em}}\
         .error{{color:#cf222e}}input{{width:100%;box-sizing:border-box;margin:.25em 0 .75em}}\
         a#signin-gitea{{display:inline-block;padding:.5em 1em;border:1px solid #888;border-radius:4px}}\
         </style></head><body><main><h1>Sign in to Pipewright</h1>{error}{gitea}\
         <form id=\"token-login\" method=\"post\" action=\"/login\">\
         <label for=\"token\">API token</label>\
         <input id=\"token\" type=\"password\" name=\"token\" autocomplete=\"off\" required>\
         <button type=\"submit\">Sign in</button></form></main></body></html>"
    ))
}

/// `GET /login`.
pub(super) async fn page(State(app): State<Arc<App>>) -> Response {
    answer(StatusCode::OK, login_page(&app, None), &[])
}

/// `GET /login/gitea`: off to Gitea's authorize page, with a fresh `state` (kept in a
/// cookie that Gitea's redirect back, a cross-site navigation, still carries: `Lax`) and a
/// PKCE S256 challenge (Gitea supports `plain` and `S256`: gitea-facts.md §6).
pub(super) async fn start_gitea(State(app): State<Arc<App>>) -> Response {
    let (Some((client_id, _)), Some(gitea_url)) = (app.config.ui.oauth(), &app.config.gitea.url)
    else {
        let error = "Signing in with Gitea is not configured here.";
        return answer(StatusCode::NOT_FOUND, login_page(&app, Some(error)), &[]);
    };
    let (state, challenge) = app.sessions.begin();
    let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
    let location = format!(
        "{gitea_url}/login/oauth/authorize?client_id={}&redirect_uri={}&response_type=code&state={}&code_challenge={}&code_challenge_method=S256",
        enc(client_id),
        enc(&redirect_uri(&app)),
        enc(&state),
        enc(&challenge),
    );
    let state_cookie = format!(
        "{STATE_COOKIE}={state}; HttpOnly; SameSite=Lax; Path=/login; Max-Age={}{}",
        PENDING_TTL.as_secs(),
        secure(&app)
    );
    see_other(&location, &[state_cookie])
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /login/oauth/callback`: Gitea sends the browser back with `code` and `state` (or
/// `error`). The state must be the one this browser's cookie holds and one this server
/// handed out (once); the code is exchanged with the PKCE verifier, the user's login read
/// with the token, and the session starts. The answer is a page that moves on to `/` by
/// itself: this request is the end of a cross-site redirect chain, on which a browser would
/// not send a `SameSite=Strict` cookie set here, whereas the page's own navigation is
/// same-site.
pub(super) async fn callback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let clear_state = clear_cookie(&app, STATE_COOKIE, "/login", "Lax");
    let fail = |status: StatusCode, message: &str| {
        answer(
            status,
            login_page(&app, Some(message)),
            std::slice::from_ref(&clear_state),
        )
    };
    let Some((client_id, client_secret)) = app.config.ui.oauth() else {
        return fail(
            StatusCode::NOT_FOUND,
            "Signing in with Gitea is not configured here.",
        );
    };
    let given = q.state.as_deref().unwrap_or("");
    let kept = cookie(&headers, STATE_COOKIE).unwrap_or("");
    if given.is_empty() || kept.is_empty() || !constant_time_eq(given.as_bytes(), kept.as_bytes()) {
        return fail(
            StatusCode::BAD_REQUEST,
            "This sign-in did not start in this browser, or it expired. Try again.",
        );
    }
    let Some(verifier) = app.sessions.finish(given) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "This sign-in did not start in this browser, or it expired. Try again.",
        );
    };
    if let Some(error) = q.error.as_deref() {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        return fail(
            StatusCode::FORBIDDEN,
            &format!("Gitea did not sign you in ({code})."),
        );
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return fail(StatusCode::BAD_REQUEST, "Gitea sent no authorization code.");
    };
    let token = match app
        .gitea
        .exchange_code(
            client_id,
            client_secret,
            code,
            &redirect_uri(&app),
            &verifier,
        )
        .await
    {
        Ok(token) => token,
        Err(err) => {
            tracing::warn!(error = %err, "signing in with Gitea failed at the code exchange");
            return fail(
                StatusCode::BAD_GATEWAY,
                "Gitea did not accept the sign-in. Try again.",
            );
        }
    };
    let login = match app
        .gitea
        .as_user(token.access.clone())
        .current_login()
        .await
    {
        Ok(login) if !login.is_empty() => login,
        Ok(_) => {
            return fail(StatusCode::BAD_GATEWAY, "Gitea did not say who you are.");
        }
        Err(err) => {
            tracing::warn!(error = %err, "signing in with Gitea failed reading the user");
            return fail(StatusCode::BAD_GATEWAY, "Gitea did not say who you are.");
        }
    };
    tracing::info!(user = %login, "signed in with Gitea");
    let page = Html(format!(
        "<!doctype html><html><head><meta charset=utf-8>\
         <meta http-equiv=\"refresh\" content=\"0;url=/\"><title>Signed in · Pipewright</title>\
         </head><body><p>Signed in as {}. <a href=\"/\">Continue</a></p></body></html>",
        escape(&login)
    ));
    let id = app.sessions.create(Login::Gitea { login, token });
    answer(
        StatusCode::OK,
        page,
        &[session_cookie(&app, &id), clear_state],
    )
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    token: String,
}

/// `POST /login` with the field `token`: a configured API token starts a session with that
/// token's access. A wrong one gets the page again (401), never echoing what was typed.
pub(super) async fn token_login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    // Another site's form must not sign this browser in (to an account of its choosing).
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    if cross_site {
        let error = "Sign in from Pipewright's own login page.";
        return answer(StatusCode::FORBIDDEN, login_page(&app, Some(error)), &[]);
    }
    let given = form.token.trim().as_bytes();
    let api = &app.config.api;
    let mut found = None;
    // Every token is compared, each in constant time, whichever matches.
    for token in &api.tokens {
        if constant_time_eq(token.expose().as_bytes(), given) {
            found = Some(None);
        }
    }
    for token in &api.scoped_tokens {
        if constant_time_eq(token.token.expose().as_bytes(), given) {
            found = Some(Some(token));
        }
    }
    let scoped = match found {
        _ if given.is_empty() => None,
        Some(None) => Some(None),
        Some(Some(token)) if token.allows(Scope::Read) => Some(Some(token.clone())),
        Some(Some(_)) => {
            let error = "This token may not read runs (it lacks the `read` scope).";
            return answer(StatusCode::FORBIDDEN, login_page(&app, Some(error)), &[]);
        }
        None => None,
    };
    let Some(scoped) = scoped else {
        let error = "That is not a token Pipewright knows.";
        return answer(StatusCode::UNAUTHORIZED, login_page(&app, Some(error)), &[]);
    };
    let id = app.sessions.create(Login::Token { scoped });
    see_other("/", &[session_cookie(&app, &id)])
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout` with the field `csrf`: ends the session and clears its cookie.
pub(super) async fn logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let clear = clear_cookie(&app, COOKIE, "/", "Strict");
    if let Some(found) = app.sessions.find(&headers) {
        if let Err(err) = check_csrf(&session::viewer_of(&found), &form.csrf) {
            return err.into_response();
        }
        app.sessions.remove(&headers);
    }
    see_other("/login", &[clear])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_secure_behind_https_and_never_for_scripts() {
        assert_eq!(
            session_cookie_for("https://ci.example.lab", "abc"),
            "pipewright_session=abc; HttpOnly; SameSite=Strict; Path=/; Secure"
        );
        assert_eq!(
            session_cookie_for("http://127.0.0.1:8080", "abc"),
            "pipewright_session=abc; HttpOnly; SameSite=Strict; Path=/"
        );
    }

    #[test]
    fn page_text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
