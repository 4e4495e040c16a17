//! The work layer: the claim loop and the running-run registry, the execution of a run,
//! its Vault access and its pinned images.

pub(super) mod access;
pub(super) mod images;
pub(super) mod registry;
pub(super) mod worker;
