//! Signing in to the web UI over HTTP, as a browser would (a small cookie jar that keeps
//! `SameSite` and `Path`, no redirects followed on its own): the whole "Sign in with Gitea"
//! flow against the fake Gitea, forged states, what each user sees, API-token sign-in,
//! CSRF on forms, logout, and the session cookie on the live log.

use std::collections::BTreeMap;

use pipewright::store::{RunSpec, RunState, StepState};
use pipewright_pipelines::{EventKind, GitRef};
use pipewright_tests::fake_gitea::{FakeGitea, OAuthApp, Permission, RepoOptions};
use reqwest::{StatusCode, header};

use crate::serve::{API_TOKEN, Server};

/// A cookie as the browser keeps it.
#[derive(Clone, Debug)]
struct Cookie {
    value: String,
    path: String,
    strict: bool,
    attributes: String,
}

/// A browser, for the server's origin only: it keeps the server's cookies (not Gitea's:
/// the fake sets none), sends those whose `Path` matches, and on a cross-site navigation
/// only those that are not `SameSite=Strict`.
struct Browser {
    client: reqwest::Client,
    origin: String,
    cookies: BTreeMap<String, Cookie>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Browser {
    fn new(origin: &str) -> Browser {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
            origin: origin.to_owned(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self, url: &str, cross_site: bool) -> Option<String> {
        let path = url.strip_prefix(&self.origin)?;
        let path = path.split('?').next().unwrap_or("/");
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|(_, c)| path.starts_with(&c.path) && !(cross_site && c.strict))
            .map(|(name, c)| format!("{name}={}", c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn keep(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        let mut cookie = Cookie {
            value: value.to_owned(),
            path: "/".to_owned(),
            strict: false,
            attributes: set_cookie.to_owned(),
        };
        let mut gone = false;
        for attr in parts {
            let lower = attr.to_ascii_lowercase();
            if let Some(path) = lower.strip_prefix("path=") {
                cookie.path = path.to_owned();
            }
            if lower == "samesite=strict" {
                cookie.strict = true;
            }
            if lower == "max-age=0" {
                gone = true;
            }
        }
        if gone {
            self.cookies.remove(name);
        } else {
            self.cookies.insert(name.to_owned(), cookie);
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, url: &str, cross_site: bool) -> Page {
        let req = match self.cookie_header(url, cross_site) {
            Some(cookies) => req.header(header::COOKIE, cookies),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        if url.starts_with(&self.origin) {
            for c in &set_cookies {
                self.keep(c);
            }
        }
        let body = resp.text().await.unwrap();
        Page {
            status,
            location,
            set_cookies,
            body,
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let req = self.client.get(url);
        self.send(req, url, false).await
    }

    /// A top-level navigation that comes from another site (Gitea's redirect back).
    async fn get_from_elsewhere(&mut self, url: &str) -> Page {
        let req = self.client.get(url);
        self.send(req, url, true).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let req = self.client.post(url).form(form);
        self.send(req, url, false).await
    }

    fn session(&self) -> Option<&Cookie> {
        self.cookies.get("pipewright_session")
    }
}

/// The value of the `csrf` field of the page's logout form.
fn csrf_of(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {body}"));
    let rest = &body[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn spec(repo: &str, sha: &str) -> RunSpec {
    RunSpec {
        repo: repo.into(),
        repo_id: 1,
        owner_id: 2,
        default_branch: "main".into(),
        status_repo: repo.into(),
        pipeline: "ci".into(),
        pipeline_file: ".pipewright/ci.yml".into(),
        event: EventKind::Push,
        git_ref: GitRef::Branch("main".into()),
        sha: sha.into(),
        pr: None,
        actor: "someone".into(),
        from_fork: false,
        attempt: 1,
        inputs: Vec::new(),
        input_types: Vec::new(),
        rerun_of: None,
        runs_on: vec!["no-such-label".into()],
        dedupe_key: format!("push:{repo}:{sha}"),
        concurrency_group: format!("{repo}/ci"),
        cancel_in_progress: false,
        state: RunState::Queued,
        description: "queued".into(),
    }
}

/// The fake Gitea with an OAuth application, and a server signing in with it.
struct Setup {
    gitea: FakeGitea,
    server: Server,
    app: OAuthApp,
}

async fn setup() -> Setup {
    let gitea = FakeGitea::start().await;
    let app = gitea.create_oauth_app(&[]);
    let server = Server::start_without_engine(
        &gitea,
        &[
            ("PIPEWRIGHT_UI__OAUTH_CLIENT_ID", &app.client_id),
            ("PIPEWRIGHT_UI__OAUTH_CLIENT_SECRET", &app.client_secret),
        ],
        "",
    )
    .await;
    let callback = format!("{}/login/oauth/callback", server.url);
    gitea.set_redirect_uris(&app, &[&callback]);
    Setup { gitea, server, app }
}

impl Setup {
    async fn enqueue(&self, repo: &str, sha: &str) -> i64 {
        self.server
            .app
            .enqueue(None, &[spec(repo, sha)])
            .await
            .unwrap()
            .ids[0]
    }

    /// Signs `browser` in with Gitea as the fake's browser user; returns the callback page.
    async fn sign_in(&self, browser: &mut Browser) -> Page {
        let start = browser
            .get(&format!("{}/login/gitea", self.server.url))
            .await;
        assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
        let authorize = start.location.unwrap();
        let at_gitea = browser.get(&authorize).await;
        assert_eq!(at_gitea.status, StatusCode::SEE_OTHER, "{}", at_gitea.body);
        let back = at_gitea.location.unwrap();
        assert!(back.starts_with(&format!("{}/login/oauth/callback?", self.server.url)));
        browser.get_from_elsewhere(&back).await
    }

    fn token_requests(&self) -> Vec<String> {
        self.gitea
            .requests()
            .iter()
            .filter(|r| r.path == "/login/oauth/access_token")
            .map(|r| r.body_text())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_with_gitea_shows_only_the_runs_the_user_can_read() {
    let s = setup().await;
    s.gitea
        .create_repo("acme", "app")
        .set_permission("alice", Permission::Read);
    s.gitea.create_repo("bob", "secret");
    s.gitea.create_repo_with(
        "acme",
        "public",
        RepoOptions {
            private: false,
            ..RepoOptions::default()
        },
    );
    let readable = s.enqueue("acme/app", "aaaaaaa1").await;
    let hidden = s.enqueue("bob/secret", "bbbbbbb1").await;
    let public = s.enqueue("acme/public", "ccccccc1").await;
    s.gitea.set_browser_user(Some("alice"));

    let mut browser = Browser::new(&s.server.url);
    let login = browser.get(&format!("{}/login", s.server.url)).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("id=\"signin-gitea\""), "{}", login.body);
    assert!(login.body.contains("id=\"token-login\""), "{}", login.body);

    let start = browser.get(&format!("{}/login/gitea", s.server.url)).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    let authorize = start.location.clone().unwrap();
    assert!(
        authorize.starts_with(&format!("{}/login/oauth/authorize?", s.gitea.url())),
        "{authorize}"
    );
    for part in [
        format!("client_id={}", s.app.client_id),
        "response_type=code".to_owned(),
        "code_challenge_method=S256".to_owned(),
        "redirect_uri=http%3A%2F%2F127.0.0.1".to_owned(),
    ] {
        assert!(authorize.contains(&part), "{part} in {authorize}");
    }
    let state_cookie = &start.set_cookies[0];
    assert!(
        state_cookie.starts_with("pipewright_oauth_state="),
        "{state_cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/login"] {
        assert!(state_cookie.contains(attr), "{attr} in {state_cookie}");
    }

    let at_gitea = browser.get(&authorize).await;
    assert_eq!(at_gitea.status, StatusCode::SEE_OTHER, "{}", at_gitea.body);
    let back = at_gitea.location.unwrap();
    let done = browser.get_from_elsewhere(&back).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body
            .contains("http-equiv=\"refresh\" content=\"0;url=/\""),
        "{}",
        done.body
    );
    let session = browser.session().expect("a session cookie").clone();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            session.attributes.contains(attr),
            "{attr} in {}",
            session.attributes
        );
    }
    assert!(
        !session.attributes.contains("Secure"),
        "public_url is http://"
    );
    assert!(
        !browser.cookies.contains_key("pipewright_oauth_state"),
        "the state cookie is cleared"
    );
    // The code went back with the client's credentials and the PKCE verifier.
    let exchange = s.token_requests();
    assert_eq!(exchange.len(), 1, "{exchange:?}");
    for part in [
        "grant_type=authorization_code",
        "code_verifier=REDACTED",
        "client_secret=REDACTED",
    ] {
        assert!(exchange[0].contains(part), "{part} in {exchange:?}");
    }

    let list = browser.get(&format!("{}/", s.server.url)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(
        list.body.contains("<span id=\"viewer\">alice</span>"),
        "{}",
        list.body
    );
    assert!(
        list.body.contains(&format!("/runs/{readable}\"")),
        "{}",
        list.body
    );
    assert!(
        list.body.contains(&format!("/runs/{public}\"")),
        "{}",
        list.body
    );
    assert!(!list.body.contains("bob/secret"), "{}", list.body);
    assert!(
        !list.body.contains(&format!("/runs/{hidden}\"")),
        "{}",
        list.body
    );

    let own = browser
        .get(&format!("{}/runs/{readable}", s.server.url))
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let other = browser
        .get(&format!("{}/runs/{hidden}", s.server.url))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(!other.body.contains("bob/secret"));

    // Gitea was asked with alice's token, not Pipewright's.
    let asked: Vec<_> = s
        .gitea
        .api_requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/repos/bob/secret")
        .collect();
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|r| r.status == Some(404)), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_mismatched_state_is_refused() {
    let s = setup().await;
    s.gitea.set_browser_user(Some("mallory"));
    // Mallory gets a code and state for her own account...
    let mut attacker = Browser::new(&s.server.url);
    let start = attacker.get(&format!("{}/login/gitea", s.server.url)).await;
    let at_gitea = attacker.get(&start.location.unwrap()).await;
    let mallorys_callback = at_gitea.location.unwrap();

    // ... and sends the link to a victim whose browser started no sign-in: refused.
    let mut victim = Browser::new(&s.server.url);
    let page = victim.get_from_elsewhere(&mallorys_callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(victim.session().is_none());

    // A victim that started its own sign-in, given Mallory's callback: states differ.
    let own = victim.get(&format!("{}/login/gitea", s.server.url)).await;
    assert_eq!(own.status, StatusCode::SEE_OTHER);
    let page = victim.get_from_elsewhere(&mallorys_callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(victim.session().is_none());

    // A state made up, in both the cookie and the query: not one the server handed out.
    let mut forger = Browser::new(&s.server.url);
    forger.keep("pipewright_oauth_state=made-up; Path=/login");
    let page = forger
        .get_from_elsewhere(&format!(
            "{}/login/oauth/callback?code=x&state=made-up",
            s.server.url
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(forger.session().is_none());
    assert!(s.token_requests().is_empty(), "no code was exchanged");

    // Mallory's own callback works once, and not twice.
    let page = attacker.get_from_elsewhere(&mallorys_callback).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let state = mallorys_callback.split("state=").nth(1).unwrap();
    attacker.keep(&format!("pipewright_oauth_state={state}; Path=/login"));
    let again = attacker.get_from_elsewhere(&mallorys_callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_login_works_and_a_wrong_token_is_refused() {
    let s = setup().await;
    let run = s.enqueue("acme/app", "aaaaaaa2").await;
    let mut browser = Browser::new(&s.server.url);
    let wrong = "not-the-token-<script>alert(1)</script>";
    let page = browser
        .post(&format!("{}/login", s.server.url), &[("token", wrong)])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("id=\"token-login\""));
    assert!(page.body.contains("class=\"error\""));
    assert!(
        !page.body.contains("not-the-token"),
        "the token is not echoed"
    );
    assert!(browser.session().is_none());

    let page = browser
        .post(&format!("{}/login", s.server.url), &[("token", API_TOKEN)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/"));
    let session = browser.session().expect("a session cookie").clone();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            session.attributes.contains(attr),
            "{attr} in {}",
            session.attributes
        );
    }
    let list = browser.get(&format!("{}/", s.server.url)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("<span id=\"viewer\">token</span>"));
    assert!(list.body.contains(&format!("/runs/{run}\"")));

    // Another site's form cannot sign a browser in.
    let resp = browser
        .client
        .post(format!("{}/login", s.server.url))
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_needs_the_csrf_token_and_ends_the_session() {
    let s = setup().await;
    let mut browser = Browser::new(&s.server.url);
    browser
        .post(&format!("{}/login", s.server.url), &[("token", API_TOKEN)])
        .await;
    let old = browser.session().unwrap().clone();
    let list = browser.get(&format!("{}/", s.server.url)).await;
    let csrf = csrf_of(&list.body);
    assert!(csrf.len() >= 32, "{csrf}");

    for form in [vec![], vec![("csrf", "")], vec![("csrf", "forged")]] {
        let page = browser
            .post(&format!("{}/logout", s.server.url), &form)
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{form:?}");
    }
    assert_eq!(
        browser.get(&format!("{}/", s.server.url)).await.status,
        StatusCode::OK,
        "a forged logout leaves the session"
    );

    let page = browser
        .post(&format!("{}/logout", s.server.url), &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login"));
    assert!(browser.session().is_none(), "the cookie is cleared");
    let page = browser.get(&format!("{}/", s.server.url)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);

    // The old cookie, kept by someone, is worth nothing now.
    browser.keep(&format!("pipewright_session={}; Path=/", old.value));
    let page = browser.get(&format!("{}/", s.server.url)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_a_session_redirects_to_login() {
    let s = setup().await;
    let run = s.enqueue("acme/app", "aaaaaaa3").await;
    let mut browser = Browser::new(&s.server.url);
    for path in ["/".to_owned(), format!("/runs/{run}")] {
        let page = browser.get(&format!("{}{path}", s.server.url)).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location.as_deref(), Some("/login"), "{path}");
    }
    browser.keep("pipewright_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; Path=/");
    let page = browser.get(&format!("{}/", s.server.url)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "an unknown session id");
    // The API keeps bearer tokens only: a session id is no bearer token.
    let resp = browser
        .client
        .get(format!("{}/api/v1/runs", s.server.url))
        .bearer_auth("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_log_accepts_the_session_cookie_for_readable_runs_only() {
    let s = setup().await;
    s.gitea
        .create_repo("acme", "app")
        .set_permission("alice", Permission::Read);
    s.gitea.create_repo("bob", "secret");
    let mut ids = Vec::new();
    for (repo, sha) in [("acme/app", "aaaaaaa4"), ("bob/secret", "bbbbbbb4")] {
        let id = s.enqueue(repo, sha).await;
        let store = &s.server.app.store;
        store
            .insert_steps(id, &[(0, "build".into())])
            .await
            .unwrap();
        store.step_started(id, 0).await.unwrap();
        let path = s.server.app.logs.path(id, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("hello from {repo}\n")).unwrap();
        store
            .step_finished(id, 0, StepState::Success, "", Some(0))
            .await
            .unwrap();
        ids.push(id);
    }
    let mut browser = Browser::new(&s.server.url);
    let log = |id: i64| format!("{}/api/v1/runs/{id}/steps/0/log?follow=true", s.server.url);
    assert_eq!(
        browser.get(&log(ids[0])).await.status,
        StatusCode::UNAUTHORIZED
    );
    s.gitea.set_browser_user(Some("alice"));
    let done = s.sign_in(&mut browser).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let stream = browser.get(&log(ids[0])).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(
        stream.body.contains("data: hello from acme/app"),
        "{}",
        stream.body
    );
    assert!(stream.body.contains("event: end"), "{}", stream.body);
    let other = browser.get(&log(ids[1])).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(!other.body.contains("hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_gitea_token_is_refreshed_and_a_revoked_one_signs_out() {
    let s = setup().await;
    s.gitea
        .create_repo("acme", "app")
        .set_permission("alice", Permission::Read);
    s.gitea
        .create_repo("acme", "later")
        .set_permission("alice", Permission::Read);
    s.enqueue("acme/app", "aaaaaaa5").await;
    // Tokens that are already within a minute of their end: refreshed before use.
    s.gitea.set_oauth_token_lifetime(30);
    s.gitea.set_browser_user(Some("alice"));
    let mut browser = Browser::new(&s.server.url);
    s.sign_in(&mut browser).await;
    let list = browser.get(&format!("{}/", s.server.url)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("acme/app"), "{}", list.body);
    let refreshes: Vec<String> = s
        .token_requests()
        .into_iter()
        .filter(|b| b.contains("grant_type=refresh_token"))
        .collect();
    assert!(!refreshes.is_empty(), "{:?}", s.token_requests());
    assert!(
        refreshes
            .iter()
            .all(|b| b.contains("refresh_token=REDACTED"))
    );

    // Gitea revokes alice's tokens: the next question to Gitea ends the session.
    s.gitea.revoke_tokens("alice");
    s.enqueue("acme/later", "ddddddd5").await;
    let page = browser.get(&format!("{}/", s.server.url)).await;
    assert!(!page.body.contains("acme/later"), "{}", page.body);
    let page = browser.get(&format!("{}/", s.server.url)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login"));
}

/// The fake's provider is as strict as Gitea's: unregistered redirect URIs, codes used
/// twice, wrong PKCE verifiers and secrets are refused with Gitea's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_gitea_refuses_what_gitea_refuses() {
    let gitea = FakeGitea::start().await;
    let app = gitea.create_oauth_app(&["http://ci.example/cb"]);
    gitea.set_browser_user(Some("alice"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = |redirect: &str, challenge: &str| {
        format!(
            "{}/login/oauth/authorize?client_id={}&redirect_uri={}&response_type=code&state=st&code_challenge={challenge}&code_challenge_method=S256",
            gitea.url(),
            app.client_id,
            pipewright_tests::fake_gitea::form_urlencode(redirect),
        )
    };
    let resp = client
        .get(authorize("http://evil.example/cb", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get(header::LOCATION).is_none());

    // S256 of "verifier".
    use base64::Engine as _;
    use sha2::Digest as _;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(
        b"a-verifier-of-enough-length-0123456789",
    ));
    let code = || async {
        let resp = client
            .get(authorize("http://ci.example/cb", &challenge))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let location = resp.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            location.starts_with("http://ci.example/cb?code="),
            "{location}"
        );
        assert!(location.ends_with("&state=st"), "{location}");
        location["http://ci.example/cb?code=".len()..location.find('&').unwrap()].to_owned()
    };
    let exchange = |code: String, verifier: &'static str, secret: String| {
        let client = client.clone();
        let url = format!("{}/login/oauth/access_token", gitea.url());
        let id = app.client_id.clone();
        async move {
            let resp = client
                .post(url)
                .json(&serde_json::json!({
                    "grant_type": "authorization_code",
                    "client_id": id,
                    "client_secret": secret,
                    "code": code,
                    "redirect_uri": "http://ci.example/cb",
                    "code_verifier": verifier,
                }))
                .send()
                .await
                .unwrap();
            (
                resp.status(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let good = "a-verifier-of-enough-length-0123456789";
    let (status, body) = exchange(code().await, "wrong", app.client_secret.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(body["error_description"], "failed PKCE code challenge");
    let (status, body) = exchange(code().await, good, "gto_wrong".into()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    let once = code().await;
    let (status, body) = exchange(once.clone(), good, app.client_secret.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "bearer");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = exchange(once, good, app.client_secret.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_description"], "client is not authorized");

    // The token is alice's, with either scheme.
    for scheme in ["token", "Bearer"] {
        let user: serde_json::Value = client
            .get(format!("{}/api/v1/user", gitea.url()))
            .header(header::AUTHORIZATION, format!("{scheme} {token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(user["login"], "alice");
    }
    // Users' own credentials: a personal token, or the password with HTTP Basic; the API
    // answers as that user, and hides a private repository they may not read.
    gitea.create_repo("bob", "secret");
    gitea
        .create_repo("acme", "app")
        .set_permission("alice", Permission::Read);
    gitea.set_password("alice", "alice-password");
    let personal = gitea.create_user_token("alice");
    let as_alice = |req: reqwest::RequestBuilder, basic: bool| match basic {
        true => req.basic_auth("alice", Some("alice-password")),
        false => req.header(header::AUTHORIZATION, format!("token {personal}")),
    };
    for basic in [false, true] {
        let get = |path: &str| as_alice(client.get(format!("{}/api/v1{path}", gitea.url())), basic);
        let user: serde_json::Value = get("/user").send().await.unwrap().json().await.unwrap();
        assert_eq!(user["login"], "alice");
        let secret = get("/repos/bob/secret").send().await.unwrap();
        assert_eq!(secret.status(), StatusCode::NOT_FOUND);
        let app: serde_json::Value = get("/repos/acme/app")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            app["permissions"],
            serde_json::json!({"admin": false, "push": false, "pull": true})
        );
    }
    let wrong = client
        .get(format!("{}/api/v1/user", gitea.url()))
        .basic_auth("alice", Some("not-her-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // No secret was recorded.
    for request in gitea.requests() {
        assert!(!request.body_text().contains(&app.client_secret));
        assert!(!request.body_text().contains(good));
    }
}

/// A login is shown escaped wherever it appears (Gitea restricts names, Pipewright does not
/// rely on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_login_is_escaped() {
    let s = setup().await;
    let login = "eve\"><script>alert(1)</script>";
    s.gitea.set_browser_user(Some(login));
    let mut browser = Browser::new(&s.server.url);
    let done = s.sign_in(&mut browser).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let list = browser.get(&format!("{}/", s.server.url)).await;
    for page in [&done.body, &list.body] {
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("eve\">"), "{page}");
        assert!(page.contains("alert(1)"), "the name is shown: {page}");
    }
    assert!(
        list.body.contains("<span id=\"viewer\">eve&"),
        "{}",
        list.body
    );
}

/// What a Gitea user may change follows Gitea's `push`: a reader gets no buttons and a
/// forged cancel or re-run (with their own valid CSRF token) is 403; a writer cancels. A
/// run of a repository they cannot read is a 404 to the forms too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_reader_without_push_cannot_cancel_or_rerun_and_a_writer_can() {
    let s = setup().await;
    let repo = s.gitea.create_repo("acme", "app");
    repo.set_permission("reader", Permission::Read);
    repo.set_permission("writer", Permission::Write);
    s.gitea.create_repo("bob", "secret");
    let run = s.enqueue("acme/app", "aaaaaaa6").await;
    let hidden = s.enqueue("bob/secret", "bbbbbbb6").await;

    s.gitea.set_browser_user(Some("reader"));
    let mut reader = Browser::new(&s.server.url);
    s.sign_in(&mut reader).await;
    let page = reader.get(&format!("{}/runs/{run}", s.server.url)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains("<form id=\"cancel\""), "{}", page.body);
    assert!(!page.body.contains("<form id=\"rerun\""), "{}", page.body);
    let csrf = csrf_of(&page.body);
    for action in ["cancel", "rerun"] {
        let url = format!("{}/runs/{run}/{action}", s.server.url);
        let page = reader.post(&url, &[("csrf", &csrf)]).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{action}: {}",
            page.body
        );
        let url = format!("{}/runs/{hidden}/{action}", s.server.url);
        let page = reader.post(&url, &[("csrf", &csrf)]).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{action}");
    }
    let state = s.server.app.store.run(run).await.unwrap().unwrap().state;
    assert_eq!(state, RunState::Queued);

    s.gitea.set_browser_user(Some("writer"));
    let mut writer = Browser::new(&s.server.url);
    s.sign_in(&mut writer).await;
    let page = writer.get(&format!("{}/runs/{run}", s.server.url)).await;
    assert!(page.body.contains("<form id=\"cancel\""), "{}", page.body);
    let csrf = csrf_of(&page.body);
    // Another session's token is no good.
    let theirs = csrf_of(&reader.get(&format!("{}/", s.server.url)).await.body);
    let url = format!("{}/runs/{run}/cancel", s.server.url);
    let page = writer.post(&url, &[("csrf", &theirs)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = writer.post(&url, &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let state = s.server.app.store.run(run).await.unwrap().unwrap().state;
    assert_eq!(state, RunState::Cancelled);
}
