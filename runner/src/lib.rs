//! The `pipewright` program: command line, local runs, and (as it grows) the server.

mod action_steps;
mod ansi;
mod checked;
pub mod cli;
pub mod config;
mod events;
mod exec;
pub mod fuzzing;
mod git;
mod gitea;
pub mod identity;
mod local;
mod logging;
pub mod logs;
mod mask;
mod registries;
pub mod run;
mod secrets;
pub mod secrets_dir;
pub mod server;
mod step_io;
mod time;
mod vault;

/// An error and its sources on one line (`failed to x: because y: because z`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
pub mod store;
