//! The `pipewright` program: command line, local runs, and (as it grows) the server.

pub mod cli;
pub mod config;
mod exec;
mod local;
pub mod run;
pub mod store;
mod events;
mod git;
mod gitea;
mod logs;
pub mod server;
