//! Kept images (`[docker].pin_images`): pulled when `serve` starts, with the credentials
//! of their registry, and kept from the engine's GC (`docker image prune -a`) by a keeper
//! container each (created, never started, labelled `io.pipewright.pin`; see
//! `pipewright_containers::LABEL_PIN`). Not to be confused with the image pins of
//! `images.rs`, which check that a trusted run's step image is the one it used before.
//!
//! Start-up does not wait: a pull that fails is logged and tried again later (after 1
//! minute, doubling to at most 30), and the image is kept meanwhile if the engine has an
//! older one. Every minute the keepers are checked: a missing one is made again, a gone
//! image pulled again. Keepers of images no longer listed are removed at start.

use super::Work;
use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use pipewright_containers::{CancellationToken, Executor, LogSink, Stream};
use tracing::{debug, info, warn};

use crate::{error_chain, mask::Masker, server::App};

/// How often the keepers are checked.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// The wait after a first failed pull; it doubles up to [`RETRY_AT_MOST`].
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_AT_MOST: Duration = Duration::from_secs(30 * 60);

/// One listed image and where its pull stands.
struct Kept {
    image: String,
    /// Pulled by this process (at start, or again after it went away).
    pulled: bool,
    failures: u32,
    next_pull: Instant,
}

/// The supervised task.
pub(crate) async fn run(app: Arc<App>, stop: CancellationToken) {
    let work = app.work();
    let images = &work.config.docker.pin_images;
    match work.executor.release_images(work.instance, images).await {
        Ok(0) => {}
        Ok(released) => info!(released, "removed the keepers of images no longer kept"),
        Err(e) => warn!(error = %error_chain(&e), "failed to list the keepers of images"),
    }
    let now = Instant::now();
    let mut kept: Vec<Kept> = images
        .iter()
        .map(|image| Kept {
            image: image.clone(),
            pulled: false,
            failures: 0,
            next_pull: now,
        })
        .collect();
    if kept.is_empty() {
        return stop.cancelled().await;
    }
    loop {
        for image in &mut kept {
            tokio::select! {
                () = check(&work, image) => {}
                () = stop.cancelled() => return,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Pulls the image when it is due, then makes sure a keeper references it.
async fn check(work: &Work<'_>, kept: &mut Kept) {
    if !kept.pulled && Instant::now() >= kept.next_pull {
        match pull(work, &kept.image).await {
            Ok(()) => {
                info!(image = kept.image, "pulled a kept image");
                kept.pulled = true;
                kept.failures = 0;
            }
            Err(why) => {
                let wait = RETRY_FIRST
                    .saturating_mul(1 << kept.failures.min(5))
                    .min(RETRY_AT_MOST);
                kept.failures += 1;
                kept.next_pull = Instant::now() + wait;
                warn!(
                    image = kept.image,
                    error = why,
                    retry_in_s = wait.as_secs(),
                    "failed to pull a kept image; trying again later"
                );
            }
        }
    }
    match work.executor.keep_image(work.instance, &kept.image).await {
        Ok(Some(true)) => info!(image = kept.image, "keeping an image from the engine's GC"),
        Ok(Some(false)) => {}
        Ok(None) if kept.pulled => {
            // Removed since (`docker rmi -f`): pulled again at the next check.
            warn!(image = kept.image, "a kept image is gone; pulling it again");
            kept.pulled = false;
            kept.next_pull = Instant::now();
        }
        Ok(None) => {}
        Err(e) => warn!(image = kept.image, error = %error_chain(&e), "failed to keep an image"),
    }
}

/// One pull with the registry's credentials; the reason of a failure names the registry
/// and the image, with the password masked.
async fn pull(work: &Work<'_>, image: &str) -> Result<(), String> {
    let auth = work.registries.auth_for(image).await?;
    let masker = Masker::new(auth.iter().map(|a| a.password.as_str()));
    let mut sink = DebugLines { image };
    match work
        .executor
        .pull_image(image, auth.as_ref(), &mut sink)
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => {
            work.registries.forget(image);
            Err(masker.mask_str(&reason))
        }
        Err(e) => Err(format!("the Docker engine failed: {}", error_chain(&e))),
    }
}

/// The pull's progress, as debug log lines.
struct DebugLines<'a> {
    image: &'a str,
}

impl LogSink for DebugLines<'_> {
    fn line(&mut self, _stream: Stream, line: &[u8]) -> io::Result<()> {
        debug!(image = self.image, line = %String::from_utf8_lossy(line), "pull");
        Ok(())
    }
}
