//! Routing of requests, and git's smart HTTP protocol through `git http-backend`, with
//! Gitea's authentication.

use super::*;

pub(super) async fn handle(shared: Arc<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        return api(shared, request).await;
    }
    if path.starts_with("/api/actions/") {
        return runners::runner_api(shared, request).await;
    }
    if path == "/login/oauth/authorize" || path == "/login/oauth/access_token" {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let index = shared.record(&parts, redacted_token_body(&body));
        let response = match (parts.method.as_str(), path.as_str()) {
            _ if shared.down.load(Ordering::SeqCst) => down_response(),
            ("GET", "/login/oauth/authorize") => authorize(&shared, &parts),
            ("POST", "/login/oauth/access_token") => {
                access_token(&shared, &parts, &body).into_response()
            }
            _ => text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n"),
        };
        shared.set_status(index, response.status().as_u16());
        return response;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        [owner, repo, "info", "refs"] => Some((owner, repo, GitService::InfoRefs)),
        [owner, repo, "git-upload-pack"] => Some((owner, repo, GitService::UploadPack)),
        [owner, repo, "git-receive-pack"] => Some((owner, repo, GitService::ReceivePack)),
        _ => None,
    };
    let (parts, body) = request.into_parts();
    let index = shared.record(&parts, Vec::new());
    let response = match route {
        Some((owner, repo, service)) => {
            let (owner, repo) = (percent_decode(owner), percent_decode(repo));
            git_http(&shared, parts, body, &owner, &repo, service).await
        }
        None if shared.down.load(Ordering::SeqCst) => down_response(),
        None => text_response(StatusCode::NOT_FOUND, "Not found.\n"),
    };
    shared.set_status(index, response.status().as_u16());
    response
}

pub(super) fn text_response(status: StatusCode, text: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text.to_owned()))
        .expect("valid response")
}

pub(super) fn down_response() -> Response {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONNECTION, "close")
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("the fake Gitea is down\n"))
        .expect("valid response")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GitService {
    InfoRefs,
    UploadPack,
    ReceivePack,
}

/// Gitea's `httpBase` then `git http-backend`.
pub(super) async fn git_http(
    shared: &Arc<Shared>,
    parts: Parts,
    body: Body,
    owner: &str,
    repo: &str,
    service: GitService,
) -> Response {
    if shared.down.load(Ordering::SeqCst) {
        return down_response();
    }
    let name = repo.strip_suffix(".git").unwrap_or(repo);
    // A stalled remote: the connection stays open and silent (what a hung Gitea or a
    // half-dead network looks like to git) until the repository is released.
    let key = format!("{owner}/{name}").to_lowercase();
    loop {
        let released = shared.stall_released.notified();
        if !shared
            .stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key)
        {
            break;
        }
        released.await;
    }
    let query = parts.uri.query().unwrap_or("").to_owned();
    let service_param = query_get(&parse_query(&query), "service");
    let is_pull = match service {
        GitService::InfoRefs => match service_param.as_deref() {
            Some("git-upload-pack") | None => true,
            Some("git-receive-pack") => false,
            Some(_) => return text_response(StatusCode::BAD_REQUEST, ""),
        },
        GitService::UploadPack => true,
        GitService::ReceivePack => false,
    };
    let caller = authenticate(shared, &parts.headers, parts.uri.query());
    let found = {
        let state = shared.lock();
        state
            .find_repo(owner, name)
            .map(|r| (r.private, r.path.clone(), state.permission(r, BOT_LOGIN)))
    };
    let public_pull = is_pull && matches!(found, Some((false, _, _)));
    if caller == Caller::Invalid || (!public_pull && caller != Caller::Bot) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, r#"Basic realm="Gitea""#)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("Unauthorized\n"))
            .expect("valid response");
    }
    let Some((_, path, permission)) = found else {
        return text_response(StatusCode::NOT_FOUND, "Repository not found");
    };
    if caller == Caller::Bot && permission < Permission::Read {
        return text_response(StatusCode::NOT_FOUND, "Repository not found");
    }
    if !is_pull {
        return text_response(
            StatusCode::FORBIDDEN,
            "the fake Gitea does not accept pushes over HTTP: write history with Repo::commit",
        );
    }
    if service == GitService::InfoRefs && service_param.is_none() {
        return text_response(
            StatusCode::FORBIDDEN,
            "the fake Gitea does not serve git's dumb HTTP protocol",
        );
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if service == GitService::UploadPack && content_type != "application/x-git-upload-pack-request"
    {
        return text_response(StatusCode::BAD_REQUEST, "");
    }
    let relative = path.strip_prefix(&shared.repos_dir).unwrap_or(&path);
    let path_info = match service {
        GitService::InfoRefs => format!("/{}/info/refs", relative.display()),
        _ => format!("/{}/git-upload-pack", relative.display()),
    };
    let user = if caller == Caller::Bot { BOT_LOGIN } else { "" };
    run_http_backend(
        shared,
        &parts,
        body,
        &path_info,
        &query,
        &content_type,
        user,
    )
    .await
}

/// Runs `git http-backend` as a CGI: the request body streamed to its stdin, its CGI
/// headers parsed, the rest of its stdout streamed back.
pub(super) async fn run_http_backend(
    shared: &Shared,
    parts: &Parts,
    body: Body,
    path_info: &str,
    query: &str,
    content_type: &str,
    user: &str,
) -> Response {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend").env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (key, value) in shared.git_env() {
        cmd.env(key, value);
    }
    cmd.env("GIT_PROJECT_ROOT", &shared.repos_dir)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path_info)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1");
    if !content_type.is_empty() {
        cmd.env("CONTENT_TYPE", content_type);
    }
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(length) = header_text(header::CONTENT_LENGTH) {
        cmd.env("CONTENT_LENGTH", length);
    }
    if let Some(encoding) = header_text(header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = parts
        .headers
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
        && is_safe_git_protocol(protocol)
    {
        cmd.env("GIT_PROTOCOL", protocol)
            .env("HTTP_GIT_PROTOCOL", protocol);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot run git http-backend: {err}"),
            );
        }
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut data = body.into_data_stream();
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = data.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        text
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");

    // CGI headers, up to the first empty line.
    let mut head = Vec::new();
    let (header_end, body_start) = loop {
        if let Some(found) = find_header_end(&head) {
            break found;
        }
        let mut buf = [0u8; 8192];
        match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = child.wait().await;
                let err = stderr_task.await.unwrap_or_default();
                return text_response(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "git http-backend sent no headers: {}",
                        String::from_utf8_lossy(&err)
                    ),
                );
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let mut response = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(&head[..header_end]).lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok());
            if let Some(code) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                response = response.status(code);
            }
        } else {
            response = response.header(key.trim(), value);
        }
    }
    let rest = Bytes::copy_from_slice(&head[body_start..]);
    let output = CgiOutput {
        stdout,
        child,
        stderr_task,
    };
    let stream = futures_util::stream::once(async move { Ok::<Bytes, io::Error>(rest) }).chain(
        futures_util::stream::unfold(Some(output), |output| async move {
            let mut output = output?;
            let mut buf = vec![0u8; 32 * 1024];
            match output.stdout.read(&mut buf).await {
                Ok(0) => {
                    output.finish().await;
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(output)))
                }
                Err(err) => Some((Err(err), None)),
            }
        }),
    );
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|err| {
            text_response(StatusCode::BAD_GATEWAY, &format!("bad CGI headers: {err}"))
        })
}

pub(super) struct CgiOutput {
    pub(super) stdout: tokio::process::ChildStdout,
    pub(super) child: tokio::process::Child,
    pub(super) stderr_task: tokio::task::JoinHandle<Vec<u8>>,
}

impl CgiOutput {
    pub(super) async fn finish(mut self) {
        let status = self.child.wait().await;
        let stderr = (&mut self.stderr_task).await.unwrap_or_default();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!(
                "fake gitea: git http-backend failed: {}",
                String::from_utf8_lossy(&stderr).trim()
            );
        }
    }
}

pub(super) fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Gitea passes `Git-Protocol` on only if it is `key=value(:key=value)*` of alphanumerics.
pub(super) fn is_safe_git_protocol(value: &str) -> bool {
    !value.is_empty()
        && value.split(':').all(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                !k.is_empty()
                    && !v.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric())
                    && v.chars().all(|c| c.is_ascii_alphanumeric())
            })
        })
}

/// Who the credentials name: Gitea's OAuth2 (query token, then `Authorization: token|bearer`)
/// and Basic methods. Unknown schemes are ignored (anonymous).
pub(super) fn authenticate(shared: &Shared, headers: &HeaderMap, query: Option<&str>) -> Caller {
    let params = parse_query(query.unwrap_or(""));
    for key in ["token", "access_token"] {
        if let Some(token) = query_get(&params, key).filter(|t| !t.is_empty()) {
            return shared.check_token(&token);
        }
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Caller::Anonymous;
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "token" | "bearer" => shared.check_token(rest.trim()),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some(decoded) = decoded else {
                return Caller::Invalid;
            };
            let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
            let token = if password.is_empty() || password == "x-oauth-basic" {
                user
            } else {
                password
            };
            match shared.check_token(token) {
                Caller::Invalid if token == password => shared
                    .user_of_password(user, password)
                    .map_or(Caller::Invalid, Caller::User),
                caller => caller,
            }
        }
        _ => Caller::Anonymous,
    }
}

pub(super) fn auth_scheme(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let scheme = value.split_whitespace().next().unwrap_or("");
        return Some(scheme.to_ascii_lowercase());
    }
    let params = parse_query(query.unwrap_or(""));
    ["token", "access_token"]
        .iter()
        .any(|key| query_get(&params, key).is_some())
        .then(|| "query".to_owned())
}

pub(super) fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == "token" || key == "access_token" => format!("{key}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}
