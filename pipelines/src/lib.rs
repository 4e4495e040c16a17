//! Pipeline files: a pure compiler from `.pipewright/*.yml` text to pipelines, and from a
//! pipeline and an event to a plan of steps.
//!
//! `text → (Pipeline, diagnostics with positions) → selects(event)? → plan(run)`. This crate
//! does no I/O, starts no task and knows nothing of Docker, Gitea or the database.

mod cron;
mod decode;
mod diag;
pub mod fuzzing;
mod model;
mod parse;
mod patterns;
mod plan;
mod schema;
mod select;
mod template;
mod units;
mod vault_files;
mod yaml;
mod yaml_json;

pub use cron::{CRON_MACROS, schedule_due};
pub use diag::{Diagnostic, Pos};
pub use model::*;
pub use parse::{
    ACTION_NAMES, MAX_INPUTS, MAX_PIDS, MAX_PLAN_BYTES, MAX_STEPS, ParsedFile, RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIXES, check_input_value, cron_due, is_reserved_env, parse_file, parse_files,
};
pub use patterns::Patterns;
pub use plan::{
    Plan, PlannedAction, PlannedStep, Resolved, RunContext, default_inputs, input_env_name, plan,
    resolve_inputs,
};
pub use schema::json_schema;
pub use select::{Changes, GitRef, Trigger, paths_match, selects, step_applies};
pub use template::{Template, Var};
pub use units::{
    DurationError, MAX_DURATION, MAX_MEMORY, parse_duration, parse_duration_up_to, parse_memory,
};
pub use vault_files::{SECRETS_IN_CONTAINER, check_secret_file_path};
pub use yaml::{MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MAX_TEXT_BYTES};
pub use yaml_json::yaml_to_json;

/// Where pipeline files live in a repository.
pub const PIPELINE_DIR: &str = ".pipewright";

/// Whether a file name is a pipeline file (`.yml` or `.yaml`).
pub fn is_pipeline_file(name: &str) -> bool {
    name.ends_with(".yml") || name.ends_with(".yaml")
}

#[cfg(test)]
mod step_flow_tests;
#[cfg(test)]
mod tests;
