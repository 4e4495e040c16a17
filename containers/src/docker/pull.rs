//! Pulling an image, with the registry's credentials, and the pull's progress as a few
//! log lines: each layer's statuses once, its download and extraction in quarters.

use std::collections::HashMap;

use bollard::{
    auth::DockerCredentials, errors::Error as BollardError, models::CreateImageInfo,
    query_parameters::CreateImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{DockerExecutor, engine_error, engine_message, lines::emit_line};
use crate::{ExecError, LogSink, RegistryAuth, Stream, registry_host};

/// Layers whose progress is followed; the statuses of further layers are not shown (an
/// image has a few dozen; a registry that sends more cannot grow this without bound).
const MAX_LAYERS: usize = 512;
/// Lines one pull writes at most; past it one note says so.
const MAX_LINES: usize = 2_000;

/// Why a pull did not give the image. The text names the registry; it never holds the
/// password (the engine's messages do not carry it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PullFailed {
    /// The engine answered: the registry refused, wants credentials, or lacks the image.
    Refused(String),
    Cancelled,
}

/// Turns the engine's pull statuses into log lines, deduplicated: per layer each status
/// once when it changes (`Waiting`, `Verifying Checksum`, `Pull complete`), a status with
/// a byte count (`Downloading`, `Extracting`) when it starts and at each further quarter,
/// and the image's own lines (`Digest: …`, `Status: …`) once each. A pull of any size
/// writes at most a few lines per layer, and at most [`MAX_LINES`] in all.
#[derive(Debug, Default)]
pub(crate) struct PullProgress {
    /// Per layer: its last status and the quarter (0 to 4) last shown of it.
    layers: HashMap<String, (String, u8)>,
    last_image_line: Option<String>,
    written: usize,
}

impl PullProgress {
    /// The line to write for one status of the engine, if any.
    pub(crate) fn line(&mut self, info: &CreateImageInfo) -> Option<String> {
        let line = self.next_line(info)?;
        self.written += 1;
        match self.written {
            n if n < MAX_LINES => Some(line),
            n if n == MAX_LINES => Some(format!(
                "(further pull progress is not shown: {MAX_LINES} lines)"
            )),
            _ => None,
        }
    }

    fn next_line(&mut self, info: &CreateImageInfo) -> Option<String> {
        let status = info.status.as_deref()?.trim();
        if status.is_empty() {
            return None;
        }
        let status: String = status.chars().filter(|c| !c.is_control()).collect();
        let Some(id) = info.id.as_deref().filter(|id| !id.is_empty()) else {
            if self.last_image_line.as_deref() == Some(status.as_str()) {
                return None;
            }
            self.last_image_line = Some(status.clone());
            return Some(status);
        };
        let id: String = id.chars().filter(|c| !c.is_control()).take(80).collect();
        let bytes = info
            .progress_detail
            .as_ref()
            .and_then(|d| Some((d.current?, d.total?)))
            .filter(|&(current, total)| total > 0 && current >= 0);
        let quarter = bytes.map_or(0, |(current, total)| {
            u8::try_from((current.min(total) * 4) / total).unwrap_or(4)
        });
        if !self.layers.contains_key(&id) && self.layers.len() >= MAX_LAYERS {
            return None;
        }
        let seen = self.layers.entry(id.clone()).or_default();
        let same_status = seen.0 == status;
        if same_status && (bytes.is_none() || quarter <= seen.1) {
            return None;
        }
        *seen = (status.clone(), quarter);
        Some(match bytes {
            Some((_, total)) => format!("{id}: {status} {}% of {}", quarter * 25, size(total)),
            None => format!("{id}: {status}"),
        })
    }
}

/// A byte count as the Docker CLI shows it (decimal units).
fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Whether the engine's message says the registry refused (or wants) credentials.
fn is_auth_refusal(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// The reason a pull failed, naming the registry and what was sent to it (the image is
/// named by whoever shows the reason: `image X is not available: …`).
fn refusal(image: &str, auth: Option<&RegistryAuth>, message: &str) -> String {
    let registry = registry_host(image);
    match auth {
        Some(auth) if is_auth_refusal(message) => format!(
            "the registry {registry} refused the credentials of user {:?}: {message}",
            auth.username
        ),
        None if is_auth_refusal(message) => format!(
            "the registry {registry} wants credentials and none are configured for it: {message}"
        ),
        _ => format!("the pull from {registry} failed: {message}"),
    }
}

impl DockerExecutor {
    /// Pulls `image` (a reference without tag or digest means `latest`) with `auth`, its
    /// progress going to `sink` (see [`PullProgress`]). `Ok(Err)` is the engine's or the
    /// registry's refusal, or the cancellation; `Err` means the engine failed.
    pub(super) async fn pull_with(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Result<(), PullFailed>, ExecError> {
        debug!(image, authenticated = auth.is_some(), "pulling image");
        let mut options = CreateImageOptionsBuilder::default().from_image(image);
        if !super::images::has_tag_or_digest(image) {
            // Without a tag the engine would pull every tag of the repository.
            options = options.tag("latest");
        }
        let credentials = auth.map(|auth| DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.server.clone()),
            ..DockerCredentials::default()
        });
        let who = auth.map_or(String::new(), |a| format!(" as {:?}", a.username));
        let first = format!("pulling {image} from {}{who}", registry_host(image));
        emit_line(Stream::Stdout, first.as_bytes(), sink).map_err(ExecError::Sink)?;
        let mut progress = self
            .docker
            .create_image(Some(options.build()), None, credentials);
        let mut lines = PullProgress::default();
        let pulled = async {
            while let Some(item) = progress.next().await {
                match item {
                    Ok(info) => {
                        if let Some(line) = lines.line(&info) {
                            emit_line(Stream::Stdout, line.as_bytes(), sink)
                                .map_err(ExecError::Sink)?;
                        }
                    }
                    // The engine answered: whatever it says, this image cannot be had.
                    Err(
                        err @ (BollardError::DockerStreamError { .. }
                        | BollardError::DockerResponseServerError { .. }),
                    ) => {
                        let reason = refusal(image, auth, &engine_message(&err));
                        return Ok(Err(PullFailed::Refused(reason)));
                    }
                    Err(source) => {
                        return Err(engine_error(format!("pull image {image}"), source));
                    }
                }
            }
            debug!(image, "pulled image");
            Ok(Ok(()))
        };
        tokio::select! {
            pulled = pulled => pulled,
            () = cancel.cancelled() => Ok(Err(PullFailed::Cancelled)),
        }
    }

    /// Pulls `image` whether or not it is present (the registry's current image for the
    /// reference), with `auth`. `Ok(Err(reason))`: the registry or the engine refused, in
    /// words that name the registry and never hold the password.
    pub(crate) async fn pull_image_now(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        sink: &mut dyn LogSink,
    ) -> Result<Result<(), String>, ExecError> {
        let never = CancellationToken::new();
        Ok(match self.pull_with(image, auth, sink, &never).await? {
            Ok(()) => Ok(()),
            Err(PullFailed::Refused(reason)) => Err(reason),
            Err(PullFailed::Cancelled) => Err("cancelled".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::ProgressDetail;

    use super::*;

    fn info(id: Option<&str>, status: &str, bytes: Option<(i64, i64)>) -> CreateImageInfo {
        CreateImageInfo {
            id: id.map(str::to_owned),
            status: Some(status.to_owned()),
            progress_detail: bytes.map(|(current, total)| ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..CreateImageInfo::default()
        }
    }

    #[test]
    fn a_big_pull_writes_a_few_lines_per_layer() {
        let mut progress = PullProgress::default();
        let mut lines = Vec::new();
        let mut feed = |i: CreateImageInfo| lines.extend(progress.line(&i));
        feed(info(None, "Pulling from org/app", None));
        feed(info(Some("a1"), "Pulling fs layer", None));
        feed(info(Some("a1"), "Waiting", None));
        feed(info(Some("a1"), "Waiting", None));
        let total = 300_000_000;
        for current in (0..=total).step_by(1_000_000) {
            feed(info(Some("a1"), "Downloading", Some((current, total))));
        }
        feed(info(Some("a1"), "Verifying Checksum", None));
        feed(info(Some("a1"), "Download complete", None));
        for current in (0..=total).step_by(500_000) {
            feed(info(Some("a1"), "Extracting", Some((current, total))));
        }
        feed(info(Some("a1"), "Pull complete", None));
        feed(info(None, "Digest: sha256:abc", None));
        feed(info(None, "Digest: sha256:abc", None));
        feed(info(
            None,
            "Status: Downloaded newer image for org/app:1",
            None,
        ));
        assert_eq!(
            lines,
            [
                "Pulling from org/app",
                "a1: Pulling fs layer",
                "a1: Waiting",
                "a1: Downloading 0% of 300.0 MB",
                "a1: Downloading 25% of 300.0 MB",
                "a1: Downloading 50% of 300.0 MB",
                "a1: Downloading 75% of 300.0 MB",
                "a1: Downloading 100% of 300.0 MB",
                "a1: Verifying Checksum",
                "a1: Download complete",
                "a1: Extracting 0% of 300.0 MB",
                "a1: Extracting 25% of 300.0 MB",
                "a1: Extracting 50% of 300.0 MB",
                "a1: Extracting 75% of 300.0 MB",
                "a1: Extracting 100% of 300.0 MB",
                "a1: Pull complete",
                "Digest: sha256:abc",
                "Status: Downloaded newer image for org/app:1",
            ]
        );
    }

    #[test]
    fn endless_layers_are_bounded() {
        let mut progress = PullProgress::default();
        let written = (0..100_000)
            .filter_map(|i| progress.line(&info(Some(&format!("l{i}")), "Waiting", None)))
            .count();
        assert_eq!(written, MAX_LAYERS);
        let mut progress = PullProgress::default();
        let lines: Vec<String> = (0..100_000)
            .filter_map(|i| progress.line(&info(None, &format!("status {i}"), None)))
            .collect();
        assert_eq!(lines.len(), MAX_LINES);
        assert!(lines[MAX_LINES - 1].starts_with("(further pull progress is not shown"));
    }

    #[test]
    fn sizes_in_decimal_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(2_345), "2.3 kB");
        assert_eq!(size(12_300_000), "12.3 MB");
        assert_eq!(size(4_000_000_000), "4.0 GB");
    }

    #[test]
    fn refusals_name_the_registry_and_the_image() {
        let auth = RegistryAuth {
            username: "ci".into(),
            password: "hunter2".into(),
            server: "127.0.0.1:5000".into(),
        };
        let image = "127.0.0.1:5000/org/app:1";
        let refused = refusal(
            image,
            Some(&auth),
            "Head \"http://127.0.0.1:5000/v2/org/app/manifests/1\": unauthorized: authentication required",
        );
        assert!(
            refused.starts_with(
                "the registry 127.0.0.1:5000 refused the credentials of user \"ci\": Head "
            ),
            "{refused}"
        );
        assert!(!refused.contains("hunter2"));
        let anonymous = refusal(image, None, "no basic auth credentials");
        assert!(anonymous.contains("wants credentials"), "{anonymous}");
        let missing = refusal(image, Some(&auth), "manifest unknown");
        assert_eq!(
            missing,
            "the pull from 127.0.0.1:5000 failed: manifest unknown"
        );
    }
}
