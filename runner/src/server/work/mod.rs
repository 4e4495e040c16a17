//! The work layer: the claim loop and the running-run registry, the execution of a run,
//! its Vault access, its pinned images, the images kept from the engine's GC, and the
//! reviewed plans it keeps to.

pub(super) mod access;
pub(super) mod images;
pub(super) mod keep;
pub(super) mod plans;
pub(super) mod registry;
pub(super) mod worker;
