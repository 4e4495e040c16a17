//! The report layer: the sender of the status and comment outboxes to Gitea.

pub(super) mod sender;
