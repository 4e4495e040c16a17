//! The work layer: the claim loop and the running-run registry, the execution of a run,
//! its Vault access, its pinned images, the images kept from the engine's GC, the
//! reviewed plans it keeps to, and retention (old runs, logs, mirrors).

pub(super) mod access;
pub(super) mod agents;
pub(super) mod images;
pub(super) mod keep;
pub(super) mod plans;
pub(super) mod reattach;
pub(super) mod registry;
pub(super) mod retention;
pub(super) mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::{
    config::Config, git::Git, identity::Issuer, logs::LogStore, registries::Registries,
    run::StepDefaults, store::Store, vault::Vault,
};
use pipewright_containers::SharedExecutor;

/// The parts of the work layer, lent by `App::work`: what claiming and running a run
/// needs, and nothing of the HTTP, intake or report layers.
#[derive(Clone, Copy)]
pub struct Work<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub git: &'a Git,
    pub logs: &'a LogStore,
    pub scheduler: &'a registry::Scheduler,
    pub executor: &'a SharedExecutor,
    pub issuer: &'a Issuer,
    pub vault: &'a Option<Vault>,
    pub registries: &'a Arc<Registries>,
    pub defaults: &'a StepDefaults,
    /// This instance's name on the containers it creates.
    pub instance: &'a str,
    /// Wakes the reporter: a status or comment was queued.
    pub reporter_wake: &'a Notify,
    /// `<public_url>` without its trailing `/`.
    pub public_url: &'a str,
    /// Step durations go here.
    pub metrics: &'a crate::server::metrics::Metrics,
}
