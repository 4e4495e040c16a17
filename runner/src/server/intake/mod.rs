//! The intake layer: what turns deliveries, catch-up and schedules into queued runs, and the
//! one `RunSpec` constructor per source of runs.

pub(super) mod catchup;
pub(super) mod ingest;
pub(super) mod schedule;
pub(super) mod spec;
