//! The report layer: the sender of the status and comment outboxes to Gitea.

pub(super) mod sender;

use tokio::sync::Notify;

use crate::{gitea::Gitea, store::Store};

/// What the reporter uses: the outbox in the store, Gitea, the public URL its links start
/// with, and the wake-up that a new outbox entry sends.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    pub store: &'a Store,
    pub gitea: &'a Gitea,
    /// `[server].public_url` without a trailing `/`.
    pub public_url: &'a str,
    pub wake: &'a Notify,
}
