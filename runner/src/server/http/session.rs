//! Who is looking at a page: a browser session (signed in with Gitea or an API token) or a
//! bearer token; which repositories they may read and change, and the CSRF token their
//! forms carry.
//!
//! Sessions live in this process's memory only: a map from the SHA-256 of a random 32-byte
//! session id (the cookie `pipewright_session`) to the session, so neither the id nor a
//! user's Gitea token is ever written to disk or the database, and a restart signs everyone
//! out. A session ends after 12 hours without a request, after 7 days in any case, on
//! `POST /logout`, or when Gitea no longer takes the user's token (expired and not
//! refreshable, or revoked).
//!
//! A Gitea user may read what Gitea lets them pull and change what Gitea lets them push:
//! `GET /api/v1/repos/{owner}/{repo}` with the user's token (`permissions.pull`,
//! `permissions.push`; 404 is no access), remembered per session and repository for 60 s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine as _;
use futures_util::StreamExt as _;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::config::{Scope, ScopedToken, Secret};
use crate::gitea::{GiteaError, oauth::RepoAccess};
use crate::server::{
    App,
    http::auth::{Caller, require},
    http::errors::ApiError,
};

/// The session cookie's name.
pub const COOKIE: &str = "pipewright_session";
/// A session ends after this long without a request.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// A session ends after this long in any case.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long Gitea's answer about a user's access to a repository is reused.
const ACCESS_TTL: Duration = Duration::from_secs(60);
/// How long a sign-in with Gitea may take between `/login/gitea` and the callback.
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// A user's Gitea token is refreshed this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// At most this many sessions (and as many pending sign-ins) are kept; past it the one
/// idle longest goes.
const MAX_SESSIONS: usize = 10_000;
/// At most this many repositories' access is remembered per session.
const MAX_CACHED: usize = 1_000;

/// What a viewer may see and do.
#[derive(Clone, Debug)]
enum Access {
    /// A full token, or anyone reading when `read_public` is set (then `write` is false).
    Everything { write: bool },
    /// A `[[api.token]]` entry.
    Scoped(ScopedToken),
    /// A user signed in with Gitea: what Gitea says.
    Gitea(Arc<Session>),
}

/// How the request said who it is, which decides whether its forms need a CSRF token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The session cookie, which a browser sends on its own: forms carry the CSRF token.
    Cookie,
    /// An `Authorization` header, which no other site can make a browser send.
    Bearer,
    /// Nothing (`read_public`): reading only.
    Public,
}

/// The repositories a viewer may read: all, or only these (`owner/name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readable {
    All,
    Only(Vec<String>),
}

/// Someone looking at pages or following a log.
#[derive(Clone, Debug)]
pub struct Viewer {
    name: String,
    csrf: String,
    access: Access,
    via: Via,
}

impl Viewer {
    /// The name the pages show for them (a Gitea login, or `token`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CSRF token their forms must send back in the field `csrf`.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The repositories whose runs they may see.
    pub async fn readable(&self, app: &App) -> Result<Readable, ApiError> {
        let repos = || async {
            app.store
                .run_repos()
                .await
                .map_err(crate::server::http::errors::internal)
        };
        match &self.access {
            Access::Everything { .. } => Ok(Readable::All),
            Access::Scoped(token) => Ok(Readable::Only(
                repos()
                    .await?
                    .into_iter()
                    .filter(|r| token.covers(r))
                    .collect(),
            )),
            Access::Gitea(session) => {
                let checked: Vec<(String, bool)> = futures_util::stream::iter(repos().await?)
                    .map(|repo| async move {
                        let access = session.access(app, &repo).await;
                        (repo, access.pull)
                    })
                    .buffered(8)
                    .collect()
                    .await;
                Ok(Readable::Only(
                    checked
                        .into_iter()
                        .filter_map(|(repo, read)| read.then_some(repo))
                        .collect(),
                ))
            }
        }
    }

    /// Whether they may see a repository's runs.
    pub async fn can_read(&self, app: &App, repo: &str) -> bool {
        match &self.access {
            Access::Everything { .. } => true,
            Access::Scoped(token) => token.covers(repo),
            Access::Gitea(session) => session.access(app, repo).await.pull,
        }
    }

    /// Whether they may cancel, re-run and dispatch a repository's runs.
    pub async fn can_write(&self, app: &App, repo: &str) -> bool {
        match &self.access {
            Access::Everything { write } => *write,
            Access::Scoped(token) => {
                token.covers(repo) && token.allows(Scope::Control) && token.allows(Scope::Dispatch)
            }
            Access::Gitea(session) => may_write(session.access(app, repo).await),
        }
    }
}

/// Whether Gitea's permissions let a user cancel, re-run and dispatch: push (which Gitea
/// never gives without pull).
fn may_write(access: RepoAccess) -> bool {
    access.pull && access.push
}

/// The viewer of a page, or the answer for a request without one: a redirect to `/login`.
pub async fn page_viewer(app: &App, headers: &HeaderMap) -> Result<Viewer, Response> {
    reader(app, headers)
        .await
        .map_err(|_| Redirect::to("/login").into_response())
}

/// The viewer of what pages fetch (the log stream, live updates): a session cookie or a
/// bearer token; 401 without either (unless `read_public`: then anyone reads).
pub async fn reader(app: &App, headers: &HeaderMap) -> Result<Viewer, ApiError> {
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(session) = app.sessions.find(headers)
    {
        return Ok(session.viewer());
    }
    let caller = require(app, headers, Scope::Read)?;
    let write = require(app, headers, Scope::Control).is_ok();
    let via = match headers.contains_key(header::AUTHORIZATION) {
        true => Via::Bearer,
        false => Via::Public,
    };
    let access = match caller {
        Caller::Everything => Access::Everything { write },
        Caller::Scoped(token) => Access::Scoped(token.clone()),
    };
    Ok(Viewer {
        name: match via {
            Via::Public => "anonymous".to_owned(),
            _ => "token".to_owned(),
        },
        csrf: String::new(),
        access,
        via,
    })
}

/// Checks the CSRF token a form sent: 403 unless it is the viewer's. A request with a
/// bearer token has the empty one (no other site can make a browser send that header); a
/// viewer without credentials never passes.
pub fn check_csrf(viewer: &Viewer, given: &str) -> Result<(), ApiError> {
    let ok = match viewer.via {
        // A bearer viewer's pages carry an empty token, and so must its forms.
        Via::Cookie | Via::Bearer => constant_time_eq(given.as_bytes(), viewer.csrf.as_bytes()),
        Via::Public => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale; reload the page".into(),
        ))
    }
}

/// Compares secrets without an early exit on the first differing byte; hashing first makes
/// the time independent of the lengths too.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The viewer a session stands for.
pub(super) fn viewer_of(session: &Arc<Session>) -> Viewer {
    session.viewer()
}

/// What a session was signed in with.
#[derive(Debug)]
pub(super) enum Login {
    /// A Gitea user and the token Gitea gave for them.
    Gitea {
        login: String,
        token: crate::gitea::oauth::UserToken,
    },
    /// A configured API token: full (`[api].tokens`, `None`) or scoped.
    Token { scoped: Option<ScopedToken> },
}

/// A user's Gitea token, refreshed when it nears its end.
#[derive(Debug)]
struct GiteaToken {
    access: Secret,
    expires: Option<Instant>,
    refresh: Option<Secret>,
}

#[derive(Debug)]
enum Who {
    Gitea {
        token: tokio::sync::Mutex<GiteaToken>,
        /// Repository (lower case) → when Gitea was asked and what it said.
        cache: Mutex<HashMap<String, (Instant, RepoAccess)>>,
    },
    Token(Access),
}

/// One signed-in browser.
#[derive(Debug)]
pub(super) struct Session {
    name: String,
    csrf: String,
    who: Who,
    created: Instant,
    last_seen: Mutex<Instant>,
    /// Set when Gitea stopped taking the user's token.
    ended: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    fn viewer(self: &Arc<Self>) -> Viewer {
        let access = match &self.who {
            Who::Gitea { .. } => Access::Gitea(self.clone()),
            Who::Token(access) => access.clone(),
        };
        Viewer {
            name: self.name.clone(),
            csrf: self.csrf.clone(),
            access,
            via: Via::Cookie,
        }
    }

    fn is_live(&self, now: Instant) -> bool {
        !self.ended.load(std::sync::atomic::Ordering::Relaxed)
            && now.duration_since(self.created) < LIFETIME
            && now.duration_since(*lock(&self.last_seen)) < IDLE
    }

    fn end(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The user's token, refreshed first when it is about to expire; `None` (and the
    /// session ended) when it expired and cannot be refreshed.
    async fn token(&self, app: &App) -> Option<Secret> {
        let Who::Gitea { token, .. } = &self.who else {
            return None;
        };
        let mut token = token.lock().await;
        let due = token
            .expires
            .is_some_and(|at| Instant::now() + REFRESH_MARGIN >= at);
        if !due {
            return Some(token.access.clone());
        }
        let refreshed = match (&token.refresh, app.config.ui.oauth()) {
            (Some(refresh), Some((id, secret))) => {
                app.gitea.refresh_token(id, secret, refresh).await.ok()
            }
            _ => None,
        };
        match refreshed {
            Some(new) => {
                token.expires = new.expires_in.map(|d| Instant::now() + d);
                token.access = new.access;
                if new.refresh.is_some() {
                    token.refresh = new.refresh;
                }
                Some(token.access.clone())
            }
            None => {
                self.end();
                None
            }
        }
    }

    /// Gitea's answer for a repository (lower case) when it is recent enough.
    fn cached(&self, key: &str) -> Option<RepoAccess> {
        let Who::Gitea { cache, .. } = &self.who else {
            return None;
        };
        lock(cache)
            .get(key)
            .filter(|(at, _)| at.elapsed() < ACCESS_TTL)
            .map(|(_, access)| *access)
    }

    /// What Gitea lets the user do in a repository (remembered for [`ACCESS_TTL`]). Any
    /// failure is no access; a token Gitea refuses (401) ends the session.
    async fn access(&self, app: &App, repo: &str) -> RepoAccess {
        let Who::Gitea { cache, .. } = &self.who else {
            return RepoAccess::default();
        };
        let key = repo.to_lowercase();
        if let Some(access) = self.cached(&key) {
            return access;
        }
        let Some(token) = self.token(app).await else {
            return RepoAccess::default();
        };
        match app.gitea.as_user(token).repo_access(repo).await {
            Ok(access) => {
                let mut cache = lock(cache);
                if cache.len() >= MAX_CACHED {
                    cache.retain(|_, (at, _)| at.elapsed() < ACCESS_TTL);
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                }
                cache.insert(key, (Instant::now(), access));
                access
            }
            Err(GiteaError::Status { status, .. }) if status.as_u16() == 401 => {
                tracing::info!(user = %self.name, "Gitea no longer takes the user's token: signed out");
                self.end();
                RepoAccess::default()
            }
            Err(err) => {
                tracing::warn!(repo, user = %self.name, error = %err, "cannot ask Gitea for a user's access; none granted");
                RepoAccess::default()
            }
        }
    }
}

/// A sign-in with Gitea that has started: the PKCE verifier its callback needs.
struct Pending {
    verifier: String,
    created: Instant,
}

#[derive(Default)]
struct Inner {
    /// SHA-256 of the session id → the session.
    sessions: HashMap<[u8; 32], Arc<Session>>,
    /// SHA-256 of the OAuth `state` → the sign-in it belongs to.
    pending: HashMap<[u8; 32], Pending>,
}

/// Every live browser session and pending sign-in.
pub struct Sessions {
    inner: Mutex<Inner>,
    rng: SystemRandom,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            inner: Mutex::default(),
            rng: SystemRandom::new(),
        }
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = lock(&self.inner);
        f.debug_struct("Sessions")
            .field("sessions", &inner.sessions.len())
            .field("pending", &inner.pending.len())
            .finish()
    }
}

/// 32 random bytes, base64url without padding.
fn random_token(rng: &SystemRandom) -> String {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes)
        .expect("the system's random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The value of a cookie in the request's `Cookie` headers.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

impl Sessions {
    /// Starts a sign-in with Gitea: the random `state` and the PKCE S256 challenge of a
    /// verifier kept here until the callback.
    pub(super) fn begin(&self) -> (String, String) {
        let state = random_token(&self.rng);
        let verifier = random_token(&self.rng);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        inner
            .pending
            .retain(|_, p| now.duration_since(p.created) < PENDING_TTL);
        if inner.pending.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .pending
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| *k)
        {
            inner.pending.remove(&oldest);
        }
        inner.pending.insert(
            digest(&state),
            Pending {
                verifier,
                created: now,
            },
        );
        (state, challenge)
    }

    /// Ends a pending sign-in (once: a state is good for one callback) and gives its PKCE
    /// verifier; `None` for a state that is unknown or too old.
    pub(super) fn finish(&self, state: &str) -> Option<String> {
        let pending = lock(&self.inner).pending.remove(&digest(state))?;
        (pending.created.elapsed() < PENDING_TTL).then_some(pending.verifier)
    }

    /// A new session; returns the id for the cookie.
    pub(super) fn create(&self, login: Login) -> String {
        let id = random_token(&self.rng);
        let now = Instant::now();
        let (name, who) = match login {
            Login::Gitea { login, token } => (
                login,
                Who::Gitea {
                    token: tokio::sync::Mutex::new(GiteaToken {
                        access: token.access,
                        expires: token.expires_in.map(|d| now + d),
                        refresh: token.refresh,
                    }),
                    cache: Mutex::new(HashMap::new()),
                },
            ),
            Login::Token { scoped } => {
                let access = match scoped {
                    Some(token) => Access::Scoped(token),
                    None => Access::Everything { write: true },
                };
                ("token".to_owned(), Who::Token(access))
            }
        };
        let session = Arc::new(Session {
            name,
            csrf: random_token(&self.rng),
            who,
            created: now,
            last_seen: Mutex::new(now),
            ended: Default::default(),
        });
        let mut inner = lock(&self.inner);
        inner.sessions.retain(|_, s| s.is_live(now));
        if inner.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| *lock(&s.last_seen))
                .map(|(k, _)| *k)
        {
            inner.sessions.remove(&oldest);
        }
        inner.sessions.insert(digest(&id), session);
        id
    }

    /// The live session the request's cookie names, marked as seen now.
    pub(super) fn find(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = cookie(headers, COOKIE)?;
        let key = digest(id);
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let session = inner.sessions.get(&key)?.clone();
        if !session.is_live(now) {
            inner.sessions.remove(&key);
            return None;
        }
        *lock(&session.last_seen) = now;
        Some(session)
    }

    /// Ends the session the request's cookie names, if any.
    pub(super) fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            lock(&self.inner).sessions.remove(&digest(id));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gitea_session(cache: &[(&str, RepoAccess)]) -> Arc<Session> {
        let now = Instant::now();
        Arc::new(Session {
            name: "alice".into(),
            csrf: "c".repeat(43),
            who: Who::Gitea {
                token: tokio::sync::Mutex::new(GiteaToken {
                    access: Secret::new("t"),
                    expires: None,
                    refresh: None,
                }),
                cache: Mutex::new(
                    cache
                        .iter()
                        .map(|(r, a)| (r.to_lowercase(), (now, *a)))
                        .collect(),
                ),
            },
            created: now,
            last_seen: Mutex::new(now),
            ended: Default::default(),
        })
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn gitea_permissions_decide_reading_and_writing_per_repository() {
        let reader = RepoAccess {
            admin: false,
            push: false,
            pull: true,
        };
        let writer = RepoAccess {
            push: true,
            ..reader
        };
        let session = gitea_session(&[("org/app", reader), ("Org/Infra", writer)]);
        assert_eq!(session.cached("org/app"), Some(reader));
        assert!(!may_write(session.cached("org/app").unwrap()));
        assert!(may_write(session.cached("org/infra").unwrap()));
        assert!(!may_write(RepoAccess::default()));
        assert_eq!(session.cached("other/repo"), None);
        // An answer older than the TTL is asked again.
        let Who::Gitea { cache, .. } = &session.who else {
            unreachable!()
        };
        let old = Instant::now().checked_sub(ACCESS_TTL).unwrap();
        lock(cache).insert("org/old".into(), (old, writer));
        assert_eq!(session.cached("org/old"), None);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers("a=1; pipewright_session_x=2; pipewright_session=abc; z=9");
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers("xpipewright_session=abc"), COOKIE), None);
    }

    #[test]
    fn csrf_is_checked_for_cookie_viewers_only_and_never_passes_without_credentials() {
        let session = gitea_session(&[]);
        let viewer = session.viewer();
        assert!(check_csrf(&viewer, &"c".repeat(43)).is_ok());
        assert!(check_csrf(&viewer, "").is_err());
        assert!(check_csrf(&viewer, &"c".repeat(42)).is_err());
        assert!(check_csrf(&viewer, &format!("{}d", "c".repeat(42))).is_err());
        let public = Viewer {
            name: "anonymous".into(),
            csrf: String::new(),
            access: Access::Everything { write: false },
            via: Via::Public,
        };
        assert!(check_csrf(&public, "").is_err());
        let bearer = Viewer {
            via: Via::Bearer,
            ..public
        };
        assert!(check_csrf(&bearer, "").is_ok());
        assert!(check_csrf(&bearer, "forged").is_err());
    }

    #[test]
    fn sessions_end_when_idle_too_long_or_too_old_or_ended() {
        let session = gitea_session(&[]);
        let now = Instant::now();
        assert!(session.is_live(now));
        assert!(!session.is_live(now + IDLE));
        *lock(&session.last_seen) = now + IDLE;
        assert!(session.is_live(now + IDLE + Duration::from_secs(1)));
        assert!(!session.is_live(now + LIFETIME));
        session.end();
        assert!(!session.is_live(now));
    }

    #[test]
    fn a_pending_sign_in_is_good_once_and_its_challenge_is_s256_of_its_verifier() {
        let sessions = Sessions::default();
        let (state, challenge) = sessions.begin();
        assert_eq!(state.len(), 43);
        assert_eq!(sessions.finish("forged"), None);
        let verifier = sessions.finish(&state).expect("the pending sign-in");
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, expected);
        assert_eq!(sessions.finish(&state), None, "a state is used once");
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn session_ids_are_kept_only_as_their_digest() {
        let sessions = Sessions::default();
        let id = random_token(&sessions.rng);
        lock(&sessions.inner)
            .sessions
            .insert(digest(&id), gitea_session(&[]));
        let inner = lock(&sessions.inner);
        assert!(inner.sessions.contains_key(&digest(&id)));
        assert!(
            inner.sessions.keys().all(|k| k.as_slice() != id.as_bytes()),
            "the id itself is not a key"
        );
    }
}
