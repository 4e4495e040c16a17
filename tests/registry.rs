//! A real image registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port with its own storage, optionally behind htpasswd basic authentication,
//! stopped when dropped.
//!
//! The engine treats registries on 127.0.0.0/8 as insecure and talks plain HTTP to them,
//! credentials included, so no TLS is needed. Everything stays on 127.0.0.1.

use std::{
    fs::{self, File},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use pipewright_containers::RegistryAuth;
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry; killed (and its storage deleted) on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: TempDir,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Registry {
    /// A registry that anyone may push to.
    pub async fn start() -> Registry {
        Registry::launch(None).await
    }

    /// A registry that accepts only `username` with `password` (HTTP basic auth).
    pub async fn with_auth(username: &str, password: &str) -> Registry {
        Registry::launch(Some((username.to_owned(), password.to_owned()))).await
    }

    async fn launch(credentials: Option<(String, String)>) -> Registry {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: run scripts/test-env.sh (it installs Debian's docker-registry)"
        );
        let dir = tempfile::tempdir().expect("failed to make the registry's directory");
        let port = free_port();
        let mut auth = String::new();
        if let Some((username, password)) = &credentials {
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, htpasswd_line(username, password))
                .expect("failed to write the htpasswd file");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: pipewright-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n\
             {auth}",
            storage = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("failed to write the registry's config");
        let log = File::create(dir.path().join("registry.log"))
            .expect("failed to create the registry's log");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("failed to share the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start {BINARY}: {err}"));
        let mut registry = Registry {
            child,
            dir,
            port,
            credentials,
        };
        registry.wait_ready().await;
        registry
    }

    /// Polls `GET /v2/` until it answers (200, or 401 with authentication).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((status, _, _)) = self.get("/v2/", false).await
                && (status == 200 || status == 401)
            {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "the registry exited with {exit} before answering:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not answer on 127.0.0.1:{} within 15 s:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The credentials the registry accepts, if it wants any.
    pub fn auth(&self) -> Option<RegistryAuth> {
        self.credentials
            .as_ref()
            .map(|(username, password)| RegistryAuth {
                username: username.clone(),
                password: password.clone(),
                server: self.host(),
            })
    }

    /// What the registry has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The digest the registry serves for `repository:reference` (a tag or digest), asked
    /// of its API directly; `None` when it has no such manifest.
    pub async fn manifest_digest(&self, repository: &str, reference: &str) -> Option<String> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let (status, headers, body) = self
            .get(&path, true)
            .await
            .unwrap_or_else(|err| panic!("GET {path} failed: {err}"));
        match status {
            200 => {}
            404 => return None,
            other => panic!("GET {path} answered {other}: {body}"),
        }
        headers.iter().find_map(|(name, value)| {
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.clone())
        })
    }

    /// The tags of `repository`, sorted, as the registry lists them.
    pub async fn tags(&self, repository: &str) -> Vec<String> {
        let path = format!("/v2/{repository}/tags/list");
        let (status, _, body) = self
            .get(&path, true)
            .await
            .unwrap_or_else(|err| panic!("GET {path} failed: {err}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        let list: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|err| panic!("{path}: {err}: {body}"));
        let mut tags: Vec<String> = list["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tag| tag.as_str().map(str::to_owned))
            .collect();
        tags.sort();
        tags
    }

    /// One HTTP/1.0 GET on loopback: status, headers, body.
    async fn get(
        &self,
        path: &str,
        authenticated: bool,
    ) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json\r\n",
            self.host()
        );
        if let (true, Some((username, password))) = (authenticated, &self.credentials) {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            request.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .map_err(|_| std::io::Error::other("the registry did not answer within 10 s"))??;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("incomplete HTTP response"))?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        Ok((status, headers, body.to_owned()))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on (free when asked; the registry binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("failed to find a free loopback port")
}

/// `username:bcrypt-hash`, made by apache2-utils' `htpasswd -B` (the registry accepts only
/// bcrypt entries).
fn htpasswd_line(username: &str, password: &str) -> String {
    let output = Command::new("htpasswd")
        .args(["-Bbn", username, password])
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "htpasswd is missing ({err}): run scripts/test-env.sh (it installs apache2-utils)"
            )
        });
    assert!(
        output.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).expect("htpasswd printed non-UTF-8");
    format!("{}\n", line.trim())
}
